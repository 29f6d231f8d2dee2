--- The sync job: the file is the truth for the people in it. One paged listing learns the
-- whole directory; then the missing accounts are created, the changed ones updated (only
-- what changed), and with `--deactivate-missing` or `--delete-missing` the accounts absent
-- from the file are removed — never more than `--max-removals` (default 10% of the
-- directory), so a truncated HR export cannot wipe a company.
-- @module scim.jobs.sync
local common = require "scim.jobs.common"
local idstr = common.idstr
local delete = require "scim.jobs.delete"

local sync = {}

local DEFAULT_MAX_REMOVALS = { percent = 10 }

--- How many accounts a run may remove.
-- @tparam table limit `{ count = N }` or `{ percent = P }`
-- @tparam integer total accounts in the directory
-- @treturn integer
function sync.allowed_removals(limit, total)
  limit = limit or DEFAULT_MAX_REMOVALS
  if limit.count then return limit.count end
  return math.floor(total * limit.percent / 100)
end

local function describe(limit)
  limit = limit or DEFAULT_MAX_REMOVALS
  return limit.count and tostring(limit.count) or (limit.percent .. "%")
end

--- Runs the job.
-- @tparam scim.jobs.common.Ctx ctx
-- @treturn integer exit code
function sync.run(ctx)
  local opts = ctx.opts
  local entries = ctx:read_input("sync")
  ctx:open_report_file()
  ctx:connect()
  local total = ctx:directory_size() or 0
  local removing = opts.deactivate_missing or opts.delete_missing
  local allowed = sync.allowed_removals(opts.max_removals, total)
  local ids = {}
  ctx.ids = ids
  local outside = {}
  for _, ref in ipairs(ctx.outside_refs or {}) do outside[ref:lower()] = true end
  local absent, n_absent, listed = {}, 0, 0
  local ok, err = ctx:each_user(function(user)
    listed = listed + 1
    local key = ctx:resource_key(user)
    if not key then return end
    local k = key:lower()
    local e = ctx.by_key[k]
    if e then
      e.current = user
      ctx:set_id(k, idstr(user.id))
      return
    end
    if outside[k] then ctx:set_id(k, idstr(user.id)) end
    if removing and not (opts.deactivate_missing and user.active == false) then
      n_absent = n_absent + 1
      -- Beyond the limit the run stops anyway: keep no more than that in memory.
      if n_absent <= allowed then
        absent[n_absent] = { key = key, current = user }
      end
    end
  end)
  if not ok then ctx:listing_failed(err) end
  total = math.max(total, listed)
  if n_absent > allowed then
    ctx:abort(common.EXIT.USAGE, string.format(
      "refusing to %s %d of %d accounts absent from %s: more than --max-removals %s allows "
      .. "(%d); check the file, or raise --max-removals; nothing was sent",
      opts.delete_missing and "delete" or "deactivate", n_absent, total, opts.file,
      describe(opts.max_removals), allowed))
  end
  for _, e in ipairs(entries) do
    if e.current == nil then e.current = false end
  end
  for k in pairs(outside) do
    if ids[k] == nil then ctx:set_id(k, false) end
  end
  ctx:resolve_outside_refs()
  ctx:begin(#entries + #absent)
  local function on_error(e, why) ctx:fail(e, why) end
  local missing = {}
  for _, e in ipairs(entries) do
    if e.current == false then missing[#missing + 1] = e end
  end
  ctx:run(missing, function(e)
    ctx:create_entry(e, true)
    if e.created and not e.refs then ctx:complete_entry(e, "update") end
  end, { on_error = on_error, phase = "create" })
  ctx:run(entries, function(e) ctx:complete_entry(e, "update") end,
    { on_error = on_error, phase = "update" })
  if removing then
    ctx:run(absent, function(e) delete.remove(ctx, e, opts.deactivate_missing) end,
      { on_error = on_error, phase = "remove" })
  end
  local why = ctx.stopped and "interrupted" or "not done"
  ctx:skip_rest(entries, why)
  ctx:skip_rest(absent, why)
  return ctx:finish()
end

return sync
