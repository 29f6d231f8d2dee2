--- The create job: POST every row concurrently; an account that already exists is `exists`
-- (with `--upsert`, it is updated); managers are set in a second pass, one request per
-- person, once every account of the file has an id.
-- @module scim.jobs.create
local create = {}

--- Runs the job.
-- @tparam scim.jobs.common.Ctx ctx
-- @treturn integer exit code
function create.run(ctx)
  local entries = ctx:read_input("create")
  ctx:open_report_file()
  ctx:connect()
  ctx.ids = {}
  ctx:resolve_outside_refs()
  ctx:begin(#entries)
  local function on_error(e, err) ctx:fail(e, err) end
  local mode = ctx.opts.upsert and "update" or "fill"
  ctx:run(entries, function(e)
    ctx:create_entry(e)
    -- Without a manager to set there is no second step: report now, free the memory.
    if not e.refs and (e.created or mode == "fill") then ctx:complete_entry(e, mode) end
  end, { on_error = on_error, phase = "create" })
  ctx:run(entries, function(e) ctx:complete_entry(e, mode) end, { on_error = on_error,
    phase = ctx.opts.upsert and "update" or "managers" })
  ctx:skip_rest(entries, ctx.stopped and "interrupted" or "not done")
  return ctx:finish()
end

return create
