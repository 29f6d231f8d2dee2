--- The CLI adapter of create, update, delete, sync and plan: options → `scim.plan` → print →
-- `plan:apply` → report and exit code. Everything else is the library's.
-- @module scim.jobs.plan
local scim_plan = require "scim.plan"
local context = require "scim.jobs.context"
local EXIT = context.EXIT

local job = {}

-- The verbs a dry run prints for each planned action.
local DRY = { create = "create", update = "update", delete = "delete",
  deactivate = "deactivate", upload = "upload" }

-- Whether the person at the terminal agrees to remove `n` accounts. Without a terminal
-- (cron, a pipe) nobody can answer: only --yes removes.
local function confirm(ctx, n, verb)
  local env = ctx.env
  if ctx.opts.yes or ctx.opts.dry_run or n == 0 then return true end
  if not env.isatty(0) then return nil end
  ctx.report:clear()
  env.stderr:write(string.format("%s %d account%s on %s? [y/N] ", verb, n,
    n == 1 and "" or "s", ctx.opts.shown_url))
  env.stderr:flush()
  local answer = env.stdin:read("l") or ""
  return answer:match("^%s*[yY]") ~= nil
end

--- Runs the job.
-- @tparam scim.jobs.context.Ctx ctx
-- @treturn integer exit code
function job.run(ctx)
  local opts, rep = ctx.opts, ctx.report
  local name = opts.command
  ctx:lock()
  local p, err, code = scim_plan.new{
    client = nil, connect = function() return ctx:connect() end,
    rows = opts.file, mapping = ctx.mapping, job = name, upsert = opts.upsert,
    deactivate = opts.deactivate,
    removals = opts.deactivate_missing and "deactivate" or opts.delete_missing and "delete"
      or nil,
    max_removals = opts.max_removals,
    unknown_columns = opts.ignore_unknown_columns and "ignore" or nil,
    where = opts.where, limit = opts.limit,
    csv = opts.encoding and { encoding = opts.encoding } or nil,
    exact = not (name == "create" and not opts.dry_run),
    concurrency = opts.concurrency or 8,
    on_phase = function(phase, n) rep:phase(phase, n) end,
    on_step = function() rep:step() end,
    on_warning = function(msg) rep:warn(msg) end,
  }
  if not p then ctx:refuse(err, code) end
  ctx:open_report_file(p.columns)
  if opts.where or opts.limit then
    rep:info(string.format("%d of %d rows selected", p.input.selected, p.input.rows))
  end
  rep:begin(p.n + #p.absent)

  if opts.dry_run then
    for change in p:changes() do
      rep:outcome{ line = change.line, key = change.key, id = change.id,
        action = DRY[change.action] or change.action, status = change.status,
        error = change.error and tostring(change.error) or change.note, changes = change.diff,
        row = rep.writer and p:row(change) }
    end
    return ctx:finish()
  end

  if name == "delete" then
    local n = (p.counts.delete or 0) + (p.counts.deactivate or 0)
    local verb = opts.deactivate and "Deactivate" or "Delete"
    local yes = confirm(ctx, n, verb)
    if yes == nil then
      rep:abort()
      ctx:abort(EXIT.USAGE, string.format("%s %d account%s needs --yes when no one is at a "
        .. "terminal to confirm; nothing was sent", verb:lower(), n, n == 1 and "" or "s"))
    elseif not yes then
      rep:error("cancelled: nothing was " .. (opts.deactivate and "deactivated" or "deleted"))
      for change in p:changes() do
        rep:outcome{ line = change.line, key = change.key, action = "skipped",
          error = "cancelled", row = rep.writer and p:row(change) }
      end
      ctx:finish()
      return EXIT.FAILED
    end
  end

  local result = p:apply(ctx:apply_options(function(r)
    local e = r.error
    rep:outcome{ line = r.line, key = r.key, action = r.action, status = r.status or
      (type(e) == "table" and e.status or nil), id = r.id,
      error = e ~= nil and tostring(e) or nil, changes = r.diff,
      row = rep.writer and p:row(r.change) }
  end))
  ctx.stopped = result.stopped
  return ctx:finish()
end

return job
