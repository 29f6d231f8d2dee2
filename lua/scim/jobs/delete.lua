--- The delete job: looks the accounts up, asks on a terminal (unless `--yes`), then deletes
-- them concurrently, or with `--deactivate` sets `active` to false instead. An account
-- already gone is `not_found`, not a failure.
-- @module scim.jobs.delete
local common = require "scim.jobs.common"
local idstr = common.idstr

local delete = {}

-- Whether the person at the terminal agrees to remove `n` accounts.
local function confirm(ctx, n, verb)
  local env = ctx.env
  if ctx.opts.yes or ctx.opts.dry_run or n == 0 or not env.isatty(0) then return true end
  ctx.report:_erase()
  env.stderr:write(string.format("%s %d account%s on %s? [y/N] ", verb, n,
    n == 1 and "" or "s", ctx.opts.url))
  env.stderr:flush()
  local answer = env.stdin:read("l") or ""
  return answer:match("^%s*[yY]") ~= nil
end

--- Deactivates (active = false) or deletes one existing account; reports the outcome.
-- Shared with sync's removal of absent accounts.
-- @tparam scim.jobs.common.Ctx ctx
-- @tparam table e entry with `current`
-- @tparam boolean deactivate
function delete.remove(ctx, e, deactivate)
  local cur, client = e.current, ctx.client
  if deactivate then
    if cur.active == false then return ctx:outcome(e, "unchanged", { id = idstr(cur.id) }) end
    local changes = { { path = "active", old = cur.active == nil and true or cur.active,
                        new = false } }
    if ctx.opts.dry_run then
      return ctx:outcome(e, "deactivate", { id = idstr(cur.id), changes = changes })
    end
    local res, err
    if ctx:use_put() then
      res, err = client:replace(idstr(cur.id), ctx.mapping:merge(cur, { active = false }))
    else
      res, err = client:patch(idstr(cur.id), { { op = "replace", path = "active", value = false } })
    end
    if not res then return ctx:fail(e, err) end
    return ctx:outcome(e, "deactivated", { id = idstr(cur.id), changes = changes })
  end
  if ctx.opts.dry_run then return ctx:outcome(e, "delete", { id = idstr(cur.id) }) end
  local ok, err = client:delete(idstr(cur.id))
  if ok then return ctx:outcome(e, "deleted", { id = idstr(cur.id), status = 204 }) end
  if type(err) == "table" and err.code == "NOT_FOUND" then
    return ctx:outcome(e, "not_found", { id = idstr(cur.id), status = 404 })
  end
  local note = ctx.dialect.delete_note
  local status = type(err) == "table" and err.status
  return ctx:fail(e, err, note and status and status >= 400 and status < 500 and note or nil)
end

--- Runs the job.
-- @tparam scim.jobs.common.Ctx ctx
-- @treturn integer exit code
function delete.run(ctx)
  local entries = ctx:read_input("delete")
  ctx:open_report_file()
  ctx:connect()
  ctx:learn_current(entries)
  local deactivate = ctx.opts.deactivate
  local n = 0
  for _, e in ipairs(entries) do
    if e.current then n = n + 1 end
  end
  if not confirm(ctx, n, deactivate and "Deactivate" or "Delete") then
    ctx.report:error("cancelled: nothing was " .. (deactivate and "deactivated" or "deleted"))
    ctx:skip_rest(entries, "cancelled")
    ctx:finish()
    return common.EXIT.FAILED
  end
  ctx:begin(#entries)
  ctx:run(entries, function(e)
    if e.lookup_error then return ctx:fail(e, e.lookup_error) end
    if not e.current then return ctx:outcome(e, "not_found", { status = 404 }) end
    delete.remove(ctx, e, deactivate)
  end, { on_error = function(e, err) ctx:fail(e, err) end })
  ctx:skip_rest(entries, ctx.stopped and "interrupted" or "not done")
  return ctx:finish()
end

return delete
