--- Applying a plan: exactly the planned writes, concurrently, in an order that needs the
-- fewest requests, and safe to interrupt.
--
-- New accounts are created level by level down the manager tree (managers before their
-- reports, concurrently within a level), each POST carrying its manager's id; a PATCH sets a
-- manager only where no order exists (a cycle, or a person managing themselves). A 409 on a
-- create is a race or a create planned without lookups: the account is looked up and treated
-- as an existing one. Then the updates (PATCH of what changed, or PUT of the merged record),
-- then the removals.
--
-- After Ctrl-C (or SIGTERM/SIGHUP where caught), a refused token (401/403) or a server asking
-- to wait longer than the run may (THROTTLED), no new row starts, the requests in flight
-- finish, and every row not done is reported `skipped`: running the same plan again
-- finishes the work, without duplicating any of it.
-- @module scim.apply
local runner = require "scim.runner"
local is_interrupt = require("scim.error").is_interrupt
local idstr = require("scim.directory").idstr

local apply = {}

-- Error codes after which sending more rows is pointless: every one would be refused too.
local STOP_CODES = { UNAUTHORIZED = "AUTH", FORBIDDEN = "AUTH", THROTTLED = "THROTTLED" }
apply.STOP_CODES = STOP_CODES

local Run = {}
Run.__index = Run

-- Records an entry's final outcome (once), then lets its memory go.
function Run:outcome(e, action, f)
  if e.reported then return end
  e.reported = true
  f = f or {}
  local err = f.error
  local status = f.status
  if type(err) == "table" then status = status or err.status end
  local r = {
    change = e, key = e.key, line = e.line, action = action, status = status,
    id = f.id or e.id, error = err, diff = f.diff,
  }
  local res = self.result
  res.done = res.done + 1
  res.counts[action] = (res.counts[action] or 0) + 1
  if action == "failed" then res.failed = res.failed + 1 end
  if self.on_result then self.on_result(r) end
  -- Done with: let a large run's memory go as it proceeds.
  e.current, e.created = nil, nil
  local i = e.index
  if i then
    local p = self.plan
    p.current[i], p.diff[i], p.same[i] = nil, nil, nil
  end
end

-- Why the rows not done were not done.
function Run:why()
  local err = self.stop_error
  if self.stopped == "AUTH" then return "the server refused the token" end
  if self.stopped == "THROTTLED" then
    -- The engine's message says when to come back.
    return "the server asked to wait: " .. tostring(err)
  end
  return self.stopped or "not done"
end

function Run:fail(e, err, extra)
  local code = type(err) == "table" and err.code
  if code and STOP_CODES[code] and not self.stopped then
    self.stopped, self.stop_error = STOP_CODES[code], err
    -- Rows already waiting for a slot of the engine must not be sent either: they fail
    -- STOPPED, unsent, and are reported skipped.
    local engine = self.plan.client.engine
    if type(engine) == "table" and engine.stop then pcall(engine.stop, engine, self:why()) end
  end
  if self.stopped and (code == "STOPPED" or code == "THROTTLED") then
    return self:outcome(e, "skipped", { error = self:why() })
  end
  if extra then
    local status = type(err) == "table" and err.status or nil
    return self:outcome(e, "failed", { error = tostring(err) .. " (" .. extra .. ")",
      status = status })
  end
  self:outcome(e, "failed", { error = err })
end

-- Runs one phase over `items` (no-op when empty or stopped).
function Run:phase(name, items)
  if #items == 0 or self.stopped then return end
  if self.on_phase then self.on_phase(name, #items) end
  local why = runner.run(items, function(e) self[name](self, e) end, {
    concurrency = self.concurrency,
    stop = function() return self.stopped ~= nil or (self.user_stop and self.user_stop()) end,
    on_step = self.on_step,
    on_error = function(e, err) self:fail(e, err) end,
    on_interrupt = self.on_interrupt,
  })
  if why == "interrupted" then self.stopped = "interrupted" end
  if why == "stopped" and not self.stopped then self.stopped = "stopped" end
end

-- The manager ids of a new account's POST: what the directory knows now.
function Run:set_refs(e, resource, deferred)
  local p, m = self.plan, self.plan.mapping
  local missing
  for name, ref in pairs(p.input.refs[e.index] or {}) do
    if not (deferred and deferred[name]) then
      local id = p.directory:id(ref)
      if id then m:set_reference(resource, name, id)
      else
        missing = missing or {}
        missing[#missing + 1] = string.format("%s '%s' not found", name, ref)
      end
    end
  end
  return missing
end

function Run:create(e)
  local p = self.plan
  local resource = p:resource(e.index, p.input.create_job)
  local deferred = p.deferred[e.index]
  local missing = self:set_refs(e, resource, deferred)
  local res, err = p.client:create(resource)
  if res then
    local id = idstr(res.id)
    e.id = id
    p.directory:set(e.key, id)
    if deferred then
      -- Its manager can only be set once both exist: the link phase does it.
      e.created = { id = res.id }
      self.links[#self.links + 1] = e
      return
    end
    return self:outcome(e, "created", { status = 201, id = id,
      error = missing and table.concat(missing, "; ") .. " (not set)" or nil })
  end
  if type(err) == "table" and err.code == "UNIQUENESS" then
    local cur, ferr = p.directory:lookup(e.key)
    if cur then
      e.current, e.id = cur, idstr(cur.id)
      p.directory:set(e.key, e.id)
      self.conflicts[#self.conflicts + 1] = e
      return
    end
    return self:fail(e, cur == false and "the server says it exists but no account has this "
      .. "key (409)" or ferr)
  end
  return self:fail(e, err)
end

-- Sends the changes that make `current` match `desired`: returns ok, changes (nil, err on
-- failure; true, {} when nothing changed).
function Run:send_update(e, current, desired)
  local p = self.plan
  local m = p.mapping
  local ops, changes = m:diff(current, desired)
  if not ops or #ops == 0 then return true, {} end
  local res, err
  if p.directory:use_put() then
    res, err = p.client:replace(idstr(current.id), m:merge(current, desired))
  else
    res, err = p.client:patch(idstr(current.id), ops)
  end
  if not res then return nil, err, changes end
  return true, p:readable(changes, p.input.refs[e.index])
end

function Run:update(e)
  local p = self.plan
  if e.created then
    -- A link: only the references (the rest was just written).
    local desired = {}
    local missing = self:set_refs(e, desired)
    local ok, changes, chg = self:send_update(e, e.created, desired)
    if not ok then
      return self:outcome(e, "failed", { id = e.id, diff = chg, error = "created, but setting "
        .. "the manager failed: " .. tostring(changes), status = type(changes) == "table"
        and changes.status })
    end
    return self:outcome(e, "created", { status = 201, id = e.id, diff = changes,
      error = missing and table.concat(missing, "; ") .. " (not set)" or nil })
  end
  local existing_only = p.job == "create" and not p.upsert
  if existing_only and not p:needs_fill(e.index, e.current) then
    return self:outcome(e, "exists", { status = 409, id = e.id })
  end
  local desired, missing = p:desired(e.index, false)
  local note = missing and table.concat(missing, "; ") .. " (not set)" or nil
  local ok, changes, chg = self:send_update(e, e.current, desired)
  if not ok then
    if type(changes) == "table" and STOP_CODES[changes.code] then return self:fail(e, changes) end
    return self:outcome(e, "failed", { id = e.id, error = changes, diff = chg })
  end
  if #changes == 0 then
    return self:outcome(e, existing_only and "exists" or "unchanged", { id = e.id,
      status = existing_only and 409 or 200, error = note })
  end
  self:outcome(e, existing_only and "exists" or "updated", { id = e.id, diff = changes,
    status = existing_only and 409 or 200, error = note })
end

function Run:remove(e)
  local p = self.plan
  local cur, client = e.current, p.client
  local id = idstr(cur.id)
  if e.action == "deactivate" then
    local res, err
    if p.directory:use_put() then
      res, err = client:replace(id, p.mapping:merge(cur, { active = false }))
    else
      res, err = client:patch(id, { { op = "replace", path = "active", value = false } })
    end
    if not res then return self:fail(e, err) end
    return self:outcome(e, "deactivated", { id = id, status = 200, diff = e.diff })
  end
  local ok, err = client:delete(id)
  if ok then return self:outcome(e, "deleted", { id = id, status = 204 }) end
  if type(err) == "table" and err.code == "NOT_FOUND" then
    return self:outcome(e, "not_found", { id = id, status = 404 })
  end
  local note = client.dialect.delete_note
  local status = type(err) == "table" and err.status
  return self:fail(e, err, note and status and status >= 400 and status < 500 and note or nil)
end

-- {======================================================= Bulk

-- Whether writes go through SCIM Bulk: asked for and offered by the server (or declared by
-- the dialect). Otherwise a warning, and single requests.
function Run:use_bulk(wanted)
  local client = self.plan.client
  if client.dialect.writes_only then return true end
  if not wanted then return false end
  if type(client.dialect.bulk) == "table" then return true end
  local ok, caps = pcall(client.capabilities, client)
  if ok and type(caps) == "table" and caps.bulk and caps.bulk.supported then return true end
  if self.on_warning then
    self.on_warning("bulk: the server does not offer SCIM Bulk; sending single requests")
  end
  return false
end

-- Sends `ops` (one per row of `rows`) through client:bulk and hands each result to
-- `done(e, result)`. A failure of the whole call fails every row.
function Run:bulk_send(name, rows, ops, done, failed)
  if #ops == 0 or self.stopped then return end
  if self.on_phase then self.on_phase(name, #ops) end
  local results, err = self.plan.client:bulk(ops)
  for i, e in ipairs(rows) do
    local r = results and results[i] or { error = err, code = type(err) == "table" and err.code }
    if r.ok then done(e, r)
    elseif not (failed and failed(e, r)) then self:fail(e, r.error or err) end
    if self.on_step then self.on_step() end
  end
end

-- New accounts in one stream of Bulk POSTs, managers first: a manager created in the same
-- upload is referenced as "bulkId:r<row>" (the server, or the client across requests,
-- resolves it); cycles are linked afterwards.
function Run:bulk_creates(creates)
  local p, m = self.plan, self.plan.mapping
  local writes_only = p.client.dialect.writes_only
  table.sort(creates, function(a, b)
    local la, lb = p.level[a.index] or 0, p.level[b.index] or 0
    if la ~= lb then return la < lb end
    return a.index < b.index
  end)
  local ops = {}
  for k, e in ipairs(creates) do
    local resource = p:resource(e.index, p.input.create_job)
    local deferred = p.deferred[e.index]
    for name, ref in pairs(p.input.refs[e.index] or {}) do
      if not (deferred and deferred[name]) then
        local id = p.directory:id(ref)
        local t = p.input.by_key[m:key_id(ref)]
        if writes_only then
          id = ref  -- the service matches managers by the key it was given
        elseif not id and t and p.act[t] == "create" then
          id = "bulkId:r" .. t
        end
        if id then m:set_reference(resource, name, id) end
      end
    end
    ops[k] = { method = "POST", resource = "Users", bulk_id = "r" .. e.index, data = resource }
  end
  self:bulk_send(writes_only and "upload" or "create", creates, ops, function(e, r)
    if writes_only then
      return self:outcome(e, "uploaded", { status = r.status or 202 })
    end
    local id = idstr(r.id)
    e.id = id
    if id then p.directory:set(e.key, id) end
    if p.deferred[e.index] then
      e.created = { id = r.id }
      self.links[#self.links + 1] = e
      return
    end
    self:outcome(e, "created", { status = r.status or 201, id = id })
  end, function(e, r)
    if r.code ~= "UNIQUENESS" then return false end
    self.taken[#self.taken + 1] = e
    return true
  end)
end

-- A create the server answered 409: the account exists (a race); look it up and treat it
-- as an existing one.
function Run:resolve(e)
  local p = self.plan
  local cur, ferr = p.directory:lookup(e.key)
  if not cur then
    return self:fail(e, cur == false and "the server says it exists but no account has this "
      .. "key (409)" or ferr)
  end
  e.current, e.id = cur, idstr(cur.id)
  p.directory:set(e.key, e.id)
  self.conflicts[#self.conflicts + 1] = e
end

-- Updates (and links) as Bulk PATCH or PUT operations.
function Run:bulk_updates(updates)
  local p = self.plan
  local put = p.directory:use_put()
  local rows, ops, changes_of = {}, {}, {}
  for _, e in ipairs(updates) do
    local current, desired = e.created or e.current
    if e.created then
      desired = {}
      self:set_refs(e, desired)
    else
      desired = p:desired(e.index, false)
    end
    local patch, changes = p.mapping:diff(current, desired)
    if not patch or #patch == 0 then
      if e.created then self:outcome(e, "created", { status = 201, id = e.id })
      else self:update(e) end  -- nothing to send: reported as a single update would be
    else
      rows[#rows + 1] = e
      changes_of[e] = p:readable(changes, p.input.refs[e.index])
      ops[#ops + 1] = put and { method = "PUT", resource = "Users", id = idstr(current.id),
          data = p.mapping:merge(current, desired) }
        or { method = "PATCH", resource = "Users", id = idstr(current.id), data = patch }
    end
  end
  local existing_only = p.job == "create" and not p.upsert
  self:bulk_send("update", rows, ops, function(e, r)
    local action = e.created and "created" or existing_only and "exists" or "updated"
    self:outcome(e, action, { status = e.created and 201 or existing_only and 409
      or r.status or 200, id = e.id, diff = changes_of[e] })
  end)
end

-- Removals as Bulk DELETE or PATCH operations.
function Run:bulk_removals(removals)
  local p = self.plan
  local put = p.directory:use_put()
  local ops = {}
  for k, e in ipairs(removals) do
    local id = idstr(e.current.id)
    if e.action == "deactivate" then
      ops[k] = put and { method = "PUT", resource = "Users", id = id,
          data = p.mapping:merge(e.current, { active = false }) }
        or { method = "PATCH", resource = "Users", id = id,
          data = { { op = "replace", path = "active", value = false } } }
    else
      ops[k] = { method = "DELETE", resource = "Users", id = id }
    end
  end
  self:bulk_send("remove", removals, ops, function(e, r)
    local id = idstr(e.current.id)
    if e.action == "deactivate" then
      return self:outcome(e, "deactivated", { id = id, status = r.status or 200, diff = e.diff })
    end
    self:outcome(e, "deleted", { id = id, status = r.status or 204 })
  end)
end

-- }=======================================================

-- Reports what needs no request: rows the plan already settled.
local SETTLED = { unchanged = true, exists = true, not_found = true, failed = true }

--- Applies a plan.
-- @tparam scim.plan p
-- @tparam[opt] table opts `concurrency` (default 8), `on_result(r)` (each row's outcome: `r.key`,
--   `r.line`, `r.action` — created, updated, unchanged, exists, deleted, deactivated,
--   not_found, failed, skipped —, `r.status`, `r.id`, `r.error`, `r.diff`, `r.change`),
--   `on_phase(name, n)`, `on_step()`, `on_interrupt()`, `stop()` (true: start no more rows),
--   `bulk` (send the writes through SCIM Bulk when the server offers it; else a warning
--   through `on_warning(msg)` and single requests; always for a writes-only dialect)
-- @treturn table `{ done=, failed=, counts=, stopped= }`: `stopped` is nil when every row
--   ran, else "interrupted", "AUTH" (the token was refused; `stop_error` says how),
--   "THROTTLED" (the server asked to wait past the deadline) or "stopped" (by `stop()`)
function apply.run(p, opts)
  opts = opts or {}
  if p.applied then error("scim.plan: this plan was applied already", 3) end
  p.applied = true
  local self = setmetatable({
    plan = p, concurrency = opts.concurrency or 8, on_result = opts.on_result,
    on_phase = opts.on_phase, on_step = opts.on_step, on_interrupt = opts.on_interrupt,
    user_stop = opts.stop,
    result = { done = 0, failed = 0, counts = {} },
    links = {}, conflicts = {}, taken = {}, on_warning = opts.on_warning,
  }, Run)
  local bulk = self:use_bulk(opts.bulk)
  local creates, updates, removals = {}, {}, {}
  for i = 1, p.n do
    local a = p.act[i]
    local e = p:change(i)
    if SETTLED[a] then
      self:outcome(e, a, { status = e.status, id = e.id, error = e.error or e.note })
    else
      e.current = p.current[i]
      if a == "create" or a == "upload" then creates[#creates + 1] = e
      elseif a == "update" then updates[#updates + 1] = e
      else removals[#removals + 1] = e end
    end
  end
  for _, a in ipairs(p.absent) do removals[#removals + 1] = a end
  self.work = { creates, updates, removals }
  -- Creates level by level down the manager tree (see scim.plan's order).
  local levels = {}
  for _, e in ipairs(creates) do
    local l = (p.level[e.index] or 0) + 1
    levels[l] = levels[l] or {}
    table.insert(levels[l], e)
  end
  -- Ctrl-C (or a caught SIGTERM) can also land between phases, in the main thread: it
  -- stops the run the same way, so every row still gets its outcome.
  local ok, err = pcall(function()
    if bulk then
      self:bulk_creates(creates)
      -- A 409 inside a Bulk answer is looked up and compared one at a time (rare: a race).
      self:phase("resolve", self.taken)
    else
      for l = 1, #levels do self:phase("create", levels[l] or {}) end
    end
    for _, e in ipairs(self.conflicts) do updates[#updates + 1] = e end
    for _, e in ipairs(self.links) do updates[#updates + 1] = e end
    if bulk then
      self:bulk_updates(updates)
      self:bulk_removals(removals)
    else
      self:phase("update", updates)
      self:phase("remove", removals)
    end
  end)
  if not ok then
    if not is_interrupt(err) then error(err, 0) end
    if not self.stopped and self.on_interrupt then self.on_interrupt() end
    self.stopped = "interrupted"
  end
  local why = self:why()
  -- Every row not done, in file order (work lists hold each row once: a create that met a
  -- 409 or waits for its link is also in `updates`, and is reported once).
  local left = {}
  for _, list in ipairs(self.work) do
    for _, e in ipairs(list) do
      if not e.reported and not left[e] then left[e] = true; left[#left + 1] = e end
    end
  end
  table.sort(left, function(a, b) return (a.index or math.huge) < (b.index or math.huge) end)
  for _, e in ipairs(left) do
    if e.created then
      -- The account exists; a rerun finds it and sets what is missing (the manager).
      self:outcome(e, "created", { status = 201, id = e.id,
        error = "the manager was not set (" .. why .. "): run again to finish" })
    else
      self:outcome(e, "skipped", { error = why })
    end
  end
  local result = self.result
  result.stopped, result.stop_error = self.stopped, self.stop_error
  return result
end

return apply
