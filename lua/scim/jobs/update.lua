--- The update job: learns the current accounts (one paged listing when the file covers a
-- large part of the directory, concurrent lookups otherwise), compares, and sends only what
-- changed (PATCH, or PUT of the merged record where the dialect or server needs it). Rows
-- without a change send nothing and are `unchanged`.
-- @module scim.jobs.update
local update = {}

--- Runs the job.
-- @tparam scim.jobs.common.Ctx ctx
-- @treturn integer exit code
function update.run(ctx)
  local entries = ctx:read_input("update")
  ctx:open_report_file()
  ctx:connect()
  ctx:learn_current(entries)
  ctx:resolve_outside_refs()
  ctx:begin(#entries)
  ctx:run(entries, function(e)
    if e.lookup_error then return ctx:fail(e, e.lookup_error) end
    if e.current == false then
      return ctx:outcome(e, "failed", { status = 404, error = string.format(
        "no account with %s '%s' (create it first)", ctx.mapping.key_attribute,
        e.key) })
    end
    ctx:complete_entry(e, "update")
  end, { on_error = function(e, err) ctx:fail(e, err) end })
  ctx:skip_rest(entries, ctx.stopped and "interrupted" or "not done")
  return ctx:finish()
end

return update
