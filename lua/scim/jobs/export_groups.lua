--- The export-groups job: every group and member as `group,member` rows, written atomically
-- (a failure leaves the previous file). Members are written as keys (userName, or the
-- mapping's key attribute), resolved from one listing of the users, never with a request
-- per member; a nested group as `group:<displayName>`; a group with no member as one row
-- with an empty member. The file can be given back to `scim-agent groups` as it is.
-- @module scim.jobs.export_groups
local groups = require "scim.groups"
local context = require "scim.jobs.context"
local EXIT = context.EXIT

local job = {}

--- Runs the job.
-- @tparam scim.jobs.context.Ctx ctx
-- @treturn integer exit code
function job.run(ctx)
  local opts, rep = ctx.opts, ctx.report
  if opts.report then rep:warn("--report has no rows to describe in an export; ignored") end
  local client = ctx:connect()
  rep:begin(0)
  local srv, err, code = groups.learn(client, ctx.mapping)
  if not srv then
    if code == "UNSUPPORTED" then ctx:abort(EXIT.USAGE, tostring(err)) end
    ctx:abort(code == "INTERRUPTED" and EXIT.FAILED or EXIT.UNAVAILABLE,
      "export-groups failed (" .. opts.file .. " left as it was): " .. tostring(err))
  end
  local writer, werr = require("scim.csv").writer(opts.file, { header = { "group", "member" },
    formula_guard = not opts.no_formula_guard })
  if not writer then
    ctx:abort(EXIT.USAGE, "cannot write " .. opts.file .. ": " .. tostring(werr))
  end
  ctx.writer = writer
  local written, n_groups = 0, 0
  for _, g in ipairs(srv.list) do
    n_groups = n_groups + 1
    local keys = {}
    for _, mem in ipairs(g.members) do
      if mem.key then
        keys[#keys + 1] = mem.key
      else
        rep:failure(string.format("group %s: member id %s is neither a listed user nor a group; "
          .. "not exported", rep.safe(g.name), rep.safe(tostring(mem.id))))
      end
    end
    table.sort(keys, function(a, b) return a:lower() < b:lower() end)
    if #keys == 0 then keys[1] = "" end
    for _, k in ipairs(keys) do
      writer:write{ group = g.name, member = k }
      written = written + 1
    end
    rep:progress(written)
  end
  local cok, closed, cerr = pcall(writer.close, writer)
  ctx.writer = nil
  if not (cok and closed) then
    ctx:abort(EXIT.FAILED, "cannot write " .. opts.file .. ": " .. tostring(cok and cerr or closed))
  end
  rep:progress(written, "exported")
  if opts.file ~= "-" then
    rep:info(string.format("exported %d groups (%d rows) to %s", n_groups, written, opts.file))
  end
  return ctx:finish()
end

return job
