--- The export job: pages through every account with the largest page the server allows and
-- streams rows into the CSV (columns from the mapping), written atomically (a failure
-- leaves the previous file intact; `-` writes to stdout).
--
-- Managers are written as their key (email), resolved from the listing itself, never with
-- a request per user. Memory stays bounded: only an id → key map is kept (a few dozen
-- bytes per person); a row whose manager has not been listed yet is spilled to a temporary
-- file as JSON and written at the end, when every id is known.
-- @module scim.jobs.export
local json = require "scim.json"  -- keeps ids and empty arrays as they came
local common = require "scim.jobs.common"
local idstr = common.idstr

local export = {}

--- Runs the job.
-- @tparam scim.jobs.common.Ctx ctx
-- @treturn integer exit code
function export.run(ctx)
  local opts, m, rep = ctx.opts, ctx.mapping, ctx.report
  if opts.report then rep:warn("--report has no rows to describe in an export; ignored") end
  -- The first listing page is the preflight: an export sends nothing else.
  ctx:connect(true)
  local csv = require "scim.csv"
  local writer, werr = csv.writer(opts.file, { header = m.columns, formula_guard = true })
  if not writer then ctx:abort(common.EXIT.USAGE, "cannot write " .. opts.file .. ": "
    .. tostring(werr)) end
  ctx.writer = writer
  local keys = {}
  local spill_path, spill
  local written, spilled = 0, 0
  local function key_of(id)
    return keys[id]
  end
  ctx:begin(0)
  local ok, err = ctx:each_user(function(user)
    local key = ctx:resource_key(user)
    if idstr(user.id) ~= nil and key then keys[idstr(user.id)] = key end
    local unresolved = false
    local row, rerr = m:to_row(user, function(id)
      local k = keys[id]
      if k == nil then unresolved = true end
      return k
    end)
    if not row then
      -- One odd account doesn't stop the export; it is named and the run exits 1.
      rep.failures = rep.failures + 1
      rep:error(string.format("user %s (id %s) not exported: %s", tostring(key),
        tostring(idstr(user.id)), tostring(rerr)))
    elseif unresolved then
      if not spill then
        spill_path = os.tmpname()
        spill = assert(io.open(spill_path, "w"))
      end
      spill:write(assert(json.encode(user)), "\n")
      spilled = spilled + 1
    else
      writer:write(row)
      written = written + 1
      rep.done = written
      rep:draw(false)
    end
  end)
  if ok and spill then
    spill:close()
    spill = nil
    ok, err = pcall(function()
      for line in io.lines(spill_path) do
        -- It made a row once already; with every id known it makes one again.
        writer:write(assert(m:to_row(json.decode(line), key_of)))
        written = written + 1
      end
    end)
  end
  if spill then spill:close() end
  if spill_path then os.remove(spill_path) end
  if not ok then
    writer:abort()
    ctx.writer = nil
    ctx:listing_failed(err, "export failed after " .. written .. " rows (" .. opts.file
      .. " left as it was)")
  end
  local cok, cerr = pcall(writer.close, writer)
  ctx.writer = nil
  if not cok then ctx:abort(common.EXIT.FAILED, "cannot write " .. opts.file .. ": "
    .. tostring(cerr)) end
  rep.done = written
  rep.counts.exported = written
  if opts.file ~= "-" then rep:info(string.format("exported %d users to %s", written,
    opts.file)) end
  return ctx:finish()
end

return export
