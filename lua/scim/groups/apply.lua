--- Applying a groups plan (`plan:apply` of `scim.plan{ job = "groups" }`): creates, then
-- member changes in PATCH batches sized for the provider, then deletions.
-- @module scim.groups.apply
local runner = require "scim.runner"
local filter = require "scim.filter"
local idstr = require("scim.directory").idstr
local STOP_CODES = require("scim.apply").STOP_CODES
local M = {}

--- How a nested group is written as a member: `group:<displayName>`.
M.GROUP_PREFIX = "group:"

-- Operations or member values per PATCH when neither the caller nor the client says.
local DEFAULT_LIMIT = 100
M.DEFAULT_LIMIT = DEFAULT_LIMIT

--- The public view of a group change.
function M.view(c)
  return { action = c.action, group = c.group, key = c.key, id = c.id, line = c.line,
    adds = c.adds, removes = c.removes, external_id = c.external_id,
    old_external_id = c.old_external_id, error = c.error }
end
local view = M.view

-- {======================================================== apply

local Run = {}
Run.__index = Run

-- Chops `list` into arrays of at most n.
local function chunks(list, n)
  local out = {}
  for first = 1, #list, n do out[#out + 1] = table.move(list, first, math.min(#list,
    first + n - 1), 1, require("scim.json").array()) end
  return out
end

function Run:outcome(c, action, f)
  if c.reported then return end
  c.reported = true
  f = f or {}
  local res = self.result
  res.done = res.done + 1
  res.counts[action] = (res.counts[action] or 0) + 1
  if action == "failed" then res.failed = res.failed + 1 end
  local err = f.error
  local r = { change = view(c), group = c.group, key = c.key, line = c.line, action = action,
    id = f.id or c.id, status = f.status or (type(err) == "table" and err.status or nil),
    error = err, adds = c.adds, removes = c.removes }
  if self.on_result then self.on_result(r) end
end

function Run:fail(c, err, prefix)
  local code = type(err) == "table" and err.code
  if code and STOP_CODES[code] and not self.stopped then
    self.stopped, self.stop_error = STOP_CODES[code], err
  end
  if prefix then
    return self:outcome(c, "failed", { error = prefix .. tostring(err),
      status = type(err) == "table" and err.status or nil })
  end
  self:outcome(c, "failed", { error = err })
end

-- Learns a smaller PATCH limit from a provider's "too many" answer: the number it states
-- ("at most N operations" / "values"), else half. Returns whether the limit went down.
function Run:learn_limit(err, used)
  local limits = self.limits
  -- Another group's request learned a smaller limit meanwhile: try again with it.
  if limits.ops < used.ops or limits.values < used.values then return true end
  local msg = tostring(type(err) == "table" and (err.detail or err.message) or err)
  local n = math.tointeger(tonumber(msg:match("at most (%d+)") or ""))
  local which = msg:lower():find("values? per operation") and "values" or "ops"
  local old = limits[which]
  local new = (n and n < old) and n or (old // 2)
  if new < 1 or new >= old then
    if which == "ops" and limits.values > 1 then
      -- Too many of something unnamed: try fewer values too.
      limits.values = limits.values // 2
      return true
    end
    return false
  end
  limits[which] = new
  -- A provider that caps operations rarely takes more values in one: cap those alike.
  if which == "ops" then limits.values = math.min(limits.values, new) end
  return true
end

-- The PatchOp operations of a change: the external id, adds (values in chunks) and
-- removes (one filtered `remove` each, RFC 7644 §3.5.2.2).
function Run:operations(c, values)
  local ops = {}
  if c.external_id and c.action ~= "create" then
    ops[#ops + 1] = { op = "replace", path = "externalId", value = c.external_id }
  end
  for _, part in ipairs(chunks(values, self.limits.values)) do
    ops[#ops + 1] = { op = "add", path = "members", value = part }
  end
  for _, id in ipairs(c.remove_ids) do
    ops[#ops + 1] = { op = "remove", path = "members[value eq " .. filter.string(id) .. "]" }
  end
  return ops
end

-- Sends the operations, learning a provider's smaller limit on the way. Returns true, or
-- nil, err (with `applied`: how many operations were applied before it).
function Run:send(id, ops)
  local client, limits, applied = self.plan.client, self.limits, 0
  while true do
    local used = { ops = limits.ops, values = limits.values }
    local okc, res, err = pcall(client.patch_group, client, id, ops,
      { max_operations = used.ops, max_values = used.values })
    if not okc then return nil, res, applied end
    if res then return true end
    local code = type(err) == "table" and err.code
    local done = type(err) == "table" and err.applied or 0
    applied = applied + done
    if code ~= "TOO_MANY" or not self:learn_limit(err, used) then
      return nil, err, applied
    end
    -- What is left, split again to the new limit of values per operation.
    local rest = {}
    for j = done + 1, #ops do
      local o = ops[j]
      if o.op == "add" and type(o.value) == "table" and #o.value > limits.values then
        for _, part in ipairs(chunks(o.value, limits.values)) do
          rest[#rest + 1] = { op = o.op, path = o.path, value = part }
        end
      else
        rest[#rest + 1] = o
      end
    end
    ops = rest
  end
end

-- The values of `later` adds: nested groups created by this plan.
function Run:later_values(c)
  local values, unknown = {}, {}
  for _, nm in ipairs(c.later) do
    local id = self.new_ids[nm:lower()]
    if id then values[#values + 1] = { value = id, type = "Group" }
    else unknown[#unknown + 1] = M.GROUP_PREFIX .. nm end
  end
  return values, unknown
end

function Run:create(c)
  local client = self.plan.client
  local cap = self.limits.ops * self.limits.values
  local first = table.move(c.add_values, 1, math.min(#c.add_values, cap), 1,
    require("scim.json").array())
  local resource = { displayName = c.group, externalId = c.external_id }
  if #first > 0 then resource.members = first end
  local res, err = client:create_group(resource)
  if not res and #first > 0 and type(err) == "table"
      and (err.code == "TOO_MANY" or err.status == 413) then
    -- A provider that takes no large member list in a POST: the members go by PATCH.
    resource.members, first = nil, {}
    res, err = client:create_group(resource)
  end
  if not res then return self:fail(c, err) end
  c.id = idstr(res.id)
  self.new_ids[c.group:lower()] = c.id
  c.rest = table.move(c.add_values, #first + 1, #c.add_values, 1, {})
  if #c.rest > 0 or #c.later > 0 then
    self.followups[#self.followups + 1] = c
    return
  end
  self:outcome(c, "created", { status = 201, id = c.id })
end

function Run:update(c)
  local values, unknown = c.add_values, {}
  if c.rest then
    local later
    later, unknown = self:later_values(c)
    values = table.move(later, 1, #later, #c.rest + 1, c.rest)
  elseif #c.later > 0 then
    local later
    later, unknown = self:later_values(c)
    values = table.move(later, 1, #later, #values + 1, table.move(values, 1, #values, 1, {}))
  end
  local ops = self:operations(c, values)
  local note = #unknown > 0 and ("not added (the group was not created): "
    .. table.concat(unknown, ", ")) or nil
  if #ops == 0 then
    return self:outcome(c, c.rest and "created" or "unchanged", { id = c.id, error = note,
      status = c.rest and 201 or nil })
  end
  local ok, err, applied = self:send(c.id, ops)
  if not ok then
    local what = c.rest and "created, but adding its other members failed" or "failed"
    return self:fail(c, err, string.format("%s after %d of %d operations (run again to "
      .. "finish): ", what, applied or 0, #ops))
  end
  self:outcome(c, c.rest and "created" or "updated", { id = c.id, error = note,
    status = c.rest and 201 or 200 })
end

function Run:remove(c)
  local ok, err = self.plan.client:delete_group(c.id)
  if ok then return self:outcome(c, "deleted", { status = 204, id = c.id }) end
  if type(err) == "table" and err.code == "NOT_FOUND" then
    return self:outcome(c, "not_found", { status = 404, id = c.id })
  end
  self:fail(c, err)
end

-- Runs one phase over items (nothing when empty or stopped).
function Run:phase(name, items, concurrency)
  if #items == 0 or self.stopped then return end
  if self.on_phase then self.on_phase(name, #items) end
  local why = runner.run(items, function(c) self[name](self, c) end, {
    concurrency = concurrency or self.concurrency,
    stop = function() return self.stopped ~= nil or (self.user_stop and self.user_stop()) end,
    on_step = self.on_step,
    on_error = function(c, err) self:fail(c, err) end,
    on_interrupt = self.on_interrupt,
  })
  if why == "interrupted" then self.stopped = "interrupted" end
  if why == "stopped" and not self.stopped then self.stopped = "stopped" end
end

--- Applies the plan: creates (a POST each, with its members), then the changed groups (the
-- largest first and alone, so a provider's limit of operations per PATCH is learned once,
-- then the rest concurrently), then the deletions. A refused token (401/403), a server
-- asking to wait too long, Ctrl-C or `stop()` start no new group; the groups not done are
-- reported `skipped`.
-- @tparam[opt] table opts `concurrency` (default 8), `on_result(r)` (per group: `r.group`,
--   `r.key`, `r.line`, `r.action` — created, updated, unchanged, deleted, not_found, failed,
--   skipped —, `r.status`, `r.id`, `r.error`, `r.adds`, `r.removes`, `r.change`),
--   `on_phase(name, n)`, `on_step()`, `on_interrupt()`, `stop()`, `max_patch_operations`,
--   `max_patch_values` (default: the client's, else 100; lowered on a provider's
--   `tooMany`)
-- @treturn table `{ done =, failed =, counts =, stopped =, stop_error =, limits = { ops =,
--   values = } }` (`stopped` as scim.apply's)
function M.run(self, opts)
  opts = opts or {}
  if self.applied then error("scim.plan: this plan was applied already", 2) end
  self.applied = true
  local client = self.client
  local run = setmetatable({ plan = self, concurrency = opts.concurrency or 8,
    on_result = opts.on_result, on_phase = opts.on_phase, on_step = opts.on_step,
    on_interrupt = opts.on_interrupt, user_stop = opts.stop,
    result = { done = 0, failed = 0, counts = {} }, new_ids = {}, followups = {},
    limits = {
      ops = opts.max_patch_operations or client.max_patch_operations or DEFAULT_LIMIT,
      values = opts.max_patch_values or client.max_patch_values or DEFAULT_LIMIT,
    },
  }, Run)
  local creates, updates, removes = {}, {}, {}
  for _, c in ipairs(self.list) do
    c.reported, c.rest = nil, nil
    if c.action == "create" then creates[#creates + 1] = c
    elseif c.action == "update" then updates[#updates + 1] = c
    elseif c.action == "delete" then removes[#removes + 1] = c
    elseif c.action == "failed" then run:outcome(c, "failed", { error = c.error })
    else run:outcome(c, c.action) end
  end
  run:phase("create", creates)
  -- Groups that got members a POST could not carry, and those whose nested groups are new.
  for _, c in ipairs(updates) do run.followups[#run.followups + 1] = c end
  -- The largest change first, alone: if the provider caps operations per PATCH, it is the
  -- one refused, and every other group is sent within the cap it states.
  local later = run.followups
  local size = {}
  for _, c in ipairs(later) do
    size[c] = math.ceil((#(c.rest or c.add_values) + #c.later) / run.limits.values)
      + #c.remove_ids + (c.external_id and 1 or 0)
  end
  table.sort(later, function(a, b)
    if size[a] ~= size[b] then return size[a] > size[b] end
    return a.group < b.group
  end)
  run:phase("update", { later[1] }, 1)
  run:phase("update", table.move(later, 2, #later, 1, {}))
  run:phase("remove", removes)
  local why = run.stopped == "AUTH" and "the server refused the token"
    or run.stopped == "THROTTLED" and ("the server asked to wait: " .. tostring(run.stop_error))
    or run.stopped or "not done"
  for _, c in ipairs(self.list) do
    if not c.reported then
      if c.id and c.action == "create" then
        run:outcome(c, "created", { status = 201, id = c.id,
          error = "some members were not added (" .. why .. "): run again to finish" })
      else
        run:outcome(c, "skipped", { error = why })
      end
    end
  end
  local result = run.result
  result.stopped, result.stop_error = run.stopped, run.stop_error
  result.limits = { ops = run.limits.ops, values = run.limits.values }
  return result
end


return M
