--- The CLI adapter of `groups`: options → `scim.plan{ job = "groups" }` → print → apply →
-- report and exit code. The file is checked, and the server's groups and users listed,
-- before any write; a dry run prints per group `+ member` and `- member`.
-- @module scim.jobs.groups
local groups = require "scim.groups"

local job = {}

-- The results file's columns after the report's own: one row per group.
local REPORT_COLUMNS = { "group", "members added", "members removed" }

-- The verbs a dry run prints for each planned action.
local DRY = { create = "create", update = "update", delete = "delete" }

-- One row of the results file for a group.
local function report_row(c)
  return { group = c.group, ["members added"] = tostring(#c.adds),
    ["members removed"] = tostring(#c.removes) }
end

--- Runs the job.
-- @tparam scim.jobs.context.Ctx ctx
-- @treturn integer exit code
function job.run(ctx)
  local opts, rep = ctx.opts, ctx.report
  local p, err, code = groups.new{
    job = "groups", connect = function() return ctx:connect() end,
    rows = opts.file, mapping = ctx.mapping,
    delete_missing_groups = opts.delete_missing_groups, max_removals = opts.max_removals,
    ignore_missing_members = opts.ignore_missing_members,
    csv = opts.encoding and { encoding = opts.encoding } or nil,
    on_phase = function(phase, n) rep:phase(phase, n) end,
    on_step = function() rep:step() end,
    on_warning = function(msg) rep:warn(msg) end,
  }
  if not p then ctx:refuse(err, code, "group", "delete") end
  ctx:open_report_file(REPORT_COLUMNS)
  rep:begin(#p.list)
  if p.member_counts.add + p.member_counts.remove > 0 then
    rep:info(string.format("%d membership%s to add, %d to remove", p.member_counts.add,
      p.member_counts.add == 1 and "" or "s", p.member_counts.remove))
  end

  if opts.dry_run then
    for c in p:changes() do
      rep:outcome{ line = c.line, key = c.group, id = c.id, action = DRY[c.action] or c.action,
        error = c.error and tostring(c.error) or nil, changes = groups.diff(c),
        row = report_row(c) }
    end
    return ctx:finish()
  end

  local result = p:apply(ctx:apply_options(function(r)
    local e = r.error
    local done = r.action ~= "failed" and r.action ~= "skipped"
    rep:outcome{ line = r.line, key = r.group, action = r.action, status = r.status, id = r.id,
      error = e ~= nil and tostring(e) or nil,
      changes = done and groups.diff(r.change) or nil, row = report_row(r.change) }
  end))
  ctx.stopped = result.stopped
  return ctx:finish()
end

return job
