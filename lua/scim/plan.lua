--- The library's workflow, what the CLI and custom scripts both use: validate the input,
-- learn what the server has, compare, and apply exactly the planned writes.
--
--     local plan, err, code = scim.plan{ client = client, rows = "people.csv", job = "sync",
--                                        removals = "deactivate", max_removals = "10%" }
--     for change in plan:changes() do print(change.action, change.key) end
--     local result = plan:apply{ concurrency = 16 }
--
-- Making a plan sends only reads (the preflight, a listing or lookups); a bad file returns
-- `nil, err, "INVALID"` with every problem in `err.problems` and sends nothing at all.
-- `plan:apply` is in scim.apply.
-- @module scim.plan
local err_mod = require "scim.error"
local input = require "scim.input"
local directory = require "scim.directory"
local guard = require "scim.guard"

local idstr = directory.idstr
local plan = {}

local Plan = { __name = "scim.plan" }
Plan.__index = Plan

local JOBS = { create = true, update = true, delete = true, sync = true }
local REMOVALS = { deactivate = true, delete = true }

-- The removal guard (scim.guard), also here for scripts: `plan.parse_limit("10%")`.
plan.parse_limit, plan.allowed_removals = guard.parse, guard.allowed
plan.DEFAULT_MAX_REMOVALS = guard.DEFAULT

-- Checks the options; raises on a programming error (wrong type, unknown job).
local function check_options(o)
  if type(o) ~= "table" then error("scim.plan: options must be a table", 3) end
  if type(o.client) ~= "table" and type(o.connect) ~= "function" then
    error("scim.plan: 'client' is required", 3)
  end
  if o.max_removals ~= nil and not plan.parse_limit(o.max_removals) then
    error("scim.plan: " .. select(2, plan.parse_limit(o.max_removals)), 3)
  end
  if o.rows == nil then error("scim.plan: 'rows' is required", 3) end
  if o.job == "groups" then
    error("scim.plan: groups are planned by scim.groups.new (or the facade, scim.plan{})", 3)
  end
  if not JOBS[o.job] then
    error("scim.plan: 'job' must be create, update, delete or sync, got " .. tostring(o.job), 3)
  end
  if o.removals ~= nil and not REMOVALS[o.removals] then
    error("scim.plan: 'removals' must be nil, \"deactivate\" or \"delete\"", 3)
  end
  if o.removals and o.job ~= "sync" then error("scim.plan: 'removals' is for sync only", 3) end
  if o.removals and o.limit then
    error("scim.plan: 'limit' and 'removals' cannot go together (what is absent is unknown)", 3)
  end
end

--- Makes a plan.
-- @tparam table opts
--   `client` (scim.client), `rows` (a CSV path, a csv reader, an iterator of keyed rows such
--   as `scim.csv.rows(path)`, or an array of keyed rows), `job` ("create", "update",
--   "delete" or "sync"), `mapping` (default: the default mapping of the client's dialect),
--   `removals` (sync: nil, "deactivate" or "delete" the accounts absent from the rows),
--   `max_removals` (the guard: a count or "P%", default "10%"), `upsert` (create: existing
--   accounts are updated), `deactivate` (delete: set active=false instead),
--   `unknown_columns` ("error"|"ignore"), `where` and `limit` (row selection, see
--   scim.input), `exact` (create: false skips the lookups a large directory would need and
--   lets apply handle 409s; default true), `concurrency` (lookups in flight), `csv`
--   (reader options for a path), `on_phase(name, n)`, `on_step()`, `on_warning(msg)`
-- @treturn scim.plan
-- @treturn[2] nil
-- @treturn[2] scim.error printable; `problems` for INVALID, `removals` (keys) for GUARD
-- @treturn[2] string code: "INVALID" (nothing sent), "GUARD" (nothing written), a client
--   error code (the preflight failed: UNAUTHORIZED, FORBIDDEN, COULDNT_CONNECT, ...),
--   "INTERRUPTED"
function plan.new(opts)
  check_options(opts)
  local client = opts.client
  local m = opts.mapping
  if m == nil or type(m) == "string" then client = client or opts.connect() end
  if m == nil then
    m = require("scim.mapping").default{ dialect = client.dialect.name }
  elseif type(m) == "string" then
    local mm, merr = require("scim.mapping").load(m, { dialect = client.dialect.name })
    if not mm then return err_mod.fail(merr, "USAGE") end
    m = mm
  end
  local job = opts.job
  local warnings = {}
  local function warn(msg)
    warnings[#warnings + 1] = msg
    if opts.on_warning then opts.on_warning(msg) end
  end
  local inp, ierr, icode = input.read{
    rows = opts.rows, mapping = m, job = job, upsert = opts.upsert,
    unknown_columns = opts.unknown_columns, where = opts.where, limit = opts.limit,
    csv = opts.csv, on_warning = warn,
  }
  if not inp then return nil, ierr, icode end
  -- Connected only now: a bad file is reported without asking for a token.
  client = client or opts.connect()

  local self = setmetatable({
    client = client, mapping = m, job = job, input = inp, n = inp.n,
    columns = inp.columns,
    -- Row i's state, in arrays (a large plan must not cost a table per row): its action,
    -- and only where needed the account as kept (`current`), whether only references can
    -- differ (`same`), the changes (`diff`), an error, a status, a note, its level in the
    -- manager tree and the references that close a cycle (`deferred`).
    act = {}, current = {}, same = {}, diff = {}, err = {}, status = {}, note = {},
    level = {}, deferred = {}, removals = opts.removals, upsert = opts.upsert,
    deactivate = opts.deactivate or opts.removals == "deactivate",
    warnings = warnings, warn = warn, absent = {}, counts = {},
    selected = inp.selected,
  }, Plan)
  local dir = directory.new{ client = client, mapping = m, concurrency = opts.concurrency,
    on_phase = opts.on_phase, on_step = opts.on_step }
  self.directory = dir

  if client.dialect.writes_only then
    -- Entra's inbound provisioning: no directory to read; every row is an upload the
    -- service matches itself (by externalId), so each needs one.
    if job ~= "create" and job ~= "update" and job ~= "sync" or opts.removals then
      return err_mod.fail(string.format("the %s dialect only takes uploads: create, update or "
        .. "sync without removals", client.dialect.name), "USAGE")
    end
    local problems = {}
    for i = 1, inp.n do
      local res = self:resource(i, inp.create_job)
      if not res.externalId then
        problems[#problems + 1] = string.format("%s:%s: no externalId (the %s dialect "
          .. "matches people by it)", inp.source, tostring(inp.lines[i]), client.dialect.name)
      end
      self.act[i] = "upload"
    end
    if #problems > 0 then
      return err_mod.fail(string.format("%s: %d problem%s; nothing was sent", inp.source,
        #problems, #problems == 1 and "" or "s"), "INVALID",
        { problems = problems, total = #problems })
    end
    self.strategy, self.total, self.n_absent = "upload", 0, 0
    self.counts = { upload = inp.n }
    return self
  end

  local total, serr, scode = dir:size()
  if not total then
    if err_mod.is_interrupt(serr) then
      return err_mod.fail("interrupted; nothing was changed", "INTERRUPTED")
    end
    local shown = require("scim.http").scrub(tostring(client.url or "the server"), {})
    return err_mod.fail(string.format("cannot work with %s: %s", shown, tostring(serr)),
      scode or "UNAVAILABLE",
      { cause = serr })
  end

  local ok, lerr, lcode = self:learn(total, opts)
  if not ok then return nil, lerr, lcode end
  ok, lerr, lcode = dir:resolve(inp.outside_refs, warn)
  if not ok then return nil, lerr, lcode end
  for _, ref in ipairs(inp.outside_refs) do
    local id = dir:id(ref)
    if id == nil then dir:set(ref, false) end
    if not id then
      warn(string.format("'%s' is referenced (e.g. as a manager) but is neither in the file "
        .. "nor on the server", ref))
    end
  end
  self:decide()
  if self.removals then
    local allowed = plan.allowed_removals(self.max_removals, self.total)
    if self.n_absent > allowed then
      local verb = self.removals
      return err_mod.fail(string.format(
        "refusing to %s %d of %d accounts absent from %s: more than max_removals %s allows "
        .. "(%d); check the file, or raise the limit; nothing was sent", verb, self.n_absent,
        self.total, inp.source, guard.describe(self.max_removals), allowed), "GUARD",
        { removals = self.absent_keys, allowed = allowed, count = self.n_absent })
    end
    self.absent_keys = nil
  end
  return self
end

-- The resource row i describes for a job of the mapping (it passed validation).
function Plan:resource(i, job)
  local inp = self.input
  return assert(inp.bound:to_resource(input.values(inp, i), inp.lines[i], job))
end

--- A change's input row, keyed by the input's column names (nil for an absent account).
function Plan:row(change)
  local i = change.index
  return i and self.input.bound:row(input.values(self.input, i)) or nil
end

-- The record kept of an existing account: the whole resource where a PUT may need it
-- (`keep`), else only its id, `active` and references: unchanged accounts of a large
-- directory must not hold their whole records.
local function stub_of(m, cur, keep)
  if keep then return cur end
  local stub = { id = cur.id, active = cur.active }
  for name in pairs(m.reference_columns) do
    local id = m:reference_id(cur, name)
    if id then m:set_reference(stub, name, id) end
  end
  return stub
end

-- Learns the current accounts of the rows: one paged listing when it pays (always for
-- sync: it must see the absent), lookups otherwise; a create may skip them (`exact` false).
-- Sets `current[i]` (the account, or false when there is none) or `err[i]`.
function Plan:learn(total, opts)
  local dir, m, job = self.directory, self.mapping, self.job
  local n, keys, current, errs = self.n, self.input.keys, self.current, self.err
  self.total, self.n_absent = total, 0
  self.max_removals = opts.max_removals and assert(plan.parse_limit(opts.max_removals))
    or plan.DEFAULT_MAX_REMOVALS
  local put = dir:use_put()
  local full = job == "sync" or dir:listing_pays(n)
  if not full and job == "create" and opts.exact == false then
    self.strategy = "optimistic"
    return true
  end
  if not full then
    self.strategy = "lookups"
    local items = {}
    for i = 1, n do items[i] = { key = keys[i], index = i } end
    local ok, err, code = dir:look_up(items)
    if not ok then return nil, err, code end
    for i, item in ipairs(items) do
      if item.lookup_error then errs[i] = item.lookup_error
      else current[i] = item.current end
    end
    return true
  end
  self.strategy = "listing"
  if total == 0 then
    for i = 1, n do current[i] = false end
    return true
  end
  local by_key = self.input.by_key
  local outside = {}
  for _, ref in ipairs(self.input.outside_refs) do outside[m:key_id(ref)] = true end
  local removing, deactivating = self.removals ~= nil, self.removals == "deactivate"
  local where = opts.where and #opts.where > 0 and opts.where or nil
  local allowed = plan.allowed_removals(self.max_removals, total)
  local absent, absent_keys, n_absent, listed = self.absent, {}, 0, 0
  -- Keys met on the listing, to catch two accounts whose keys differ only in case.
  -- Keys met on the listing outside the file, to catch two accounts whose keys differ only
  -- in case (a file row's own are caught by its state).
  local met, act, referenced = {}, self.act, self.input.referenced
  local settled = (job == "create" and not self.upsert) and "exists" or "unchanged"
  local refs_of = self.input.refs
  local ok, err, code = dir:list(function(user, key)
    listed = listed + 1
    if not key then return end
    local k = m:key_id(key)
    local i = by_key[k]
    if met[k] or (i and (current[i] ~= nil or act[i] ~= nil)) then
      if i then
        errs[i] = err_mod.new(string.format("several accounts have %s '%s'", m.key_attribute,
          keys[i]), "AMBIGUOUS")
        act[i], current[i] = nil, nil
      end
      dir:set(key, nil)
      return
    end
    if i then
      local keep = put or self:differs(i, user)
      if not keep and not refs_of[i] and job ~= "delete" then
        -- Settled now: the account matches its row and has no manager to compare. Only its
        -- id is kept, and only if someone refers to it.
        act[i] = settled
        if settled == "exists" then self.status[i] = 409 end
        if referenced[k] then dir:set(key, idstr(user.id)) end
        return
      end
      -- `same`: only references can differ, compared once every id is known.
      current[i], self.same[i] = stub_of(m, user, keep), not keep or nil
      dir:set(key, idstr(user.id))
      return
    end
    if outside[k] then
      met[k] = true
      dir:set(key, idstr(user.id))
    end
    -- With a row selection, only accounts the selection would take can be absent from it.
    if removing and not (deactivating and user.active == false)
        and (not where or input.selected(where, m:to_row(user) or {})) then
      n_absent = n_absent + 1
      if #absent_keys < 1000 then absent_keys[#absent_keys + 1] = key end
      -- Beyond the limit the plan is refused anyway: keep no more than that in memory.
      if n_absent <= allowed then
        absent[n_absent] = { key = key, current = stub_of(m, user, put), absent = true }
      end
    end
  end)
  if not ok then return nil, err, code end
  self.total = math.max(total, listed)
  self.n_absent, self.absent_keys = n_absent, absent_keys
  for i = 1, n do
    if errs[i] then current[i] = nil
    elseif current[i] == nil and not act[i] then current[i] = false end
  end
  return true
end

-- The job of the mapping an existing account is compared with, or nil when an existing
-- account is not compared (create without upsert: only a missing manager is filled in).
function Plan:update_job()
  local job = self.job
  if job == "delete" then return nil end
  if job == "create" and not self.upsert then return nil end
  return self.input.update_job
end

-- Whether an account differs from row i in anything but references (those are compared
-- once every id is known).
function Plan:differs(i, current)
  local ujob = self:update_job()
  if not ujob then return false end
  local ops = self.mapping:diff(current, self:resource(i, ujob))
  return ops ~= nil and #ops > 0
end

-- The desired state of row i's account: the row's resource for the update job (or only the
-- references when none, or when only they can differ), with references set from the
-- directory. `placeholder`: people still to be created get "(new: key)" so a dry run can
-- show them. Returns the resource and the list of references that could not be set.
function Plan:desired(i, placeholder)
  local m, dir = self.mapping, self.directory
  local ujob = not self.same[i] and self:update_job()
  local desired = ujob and self:resource(i, ujob) or {}
  local missing
  for name, ref in pairs(self.input.refs[i] or {}) do
    local id = dir:id(ref)
    if not id and placeholder then
      local t = self.input.by_key[m:key_id(ref)]
      if t and self.act[t] == "create" then id = "(new: " .. self.input.keys[t] .. ")" end
    end
    if id then
      m:set_reference(desired, name, id)
    else
      missing = missing or {}
      missing[#missing + 1] = string.format("%s '%s' not found", name, ref)
    end
  end
  return desired, missing
end

--- Rewrites the changes of reference attributes (the manager's SCIM id) to people's keys,
-- so a plan reads "manager: a@example.com -> b@example.com", and names each change's
-- attribute.
-- @tparam table changes as `mapping:diff` returns them
-- @tparam[opt] table refs the row's references (name -> key)
function Plan:readable(changes, refs)
  local m, dir = self.mapping, self.directory
  local by_col
  for _, c in ipairs(changes or {}) do
    c.attribute = c.attribute or c.path
    if next(m.reference_columns) then
      if not by_col then
        by_col = {}
        for name, col in pairs(m.reference_columns) do by_col[col] = name end
      end
      local name = c.column and by_col[c.column]
      if name then
        c.old = c.old ~= nil and (dir:key_of(c.old) or ("id " .. tostring(c.old))) or nil
        c.new = refs and refs[name] or c.new
      end
    end
  end
  return changes
end

--- Whether an existing account, without upsert, needs its missing manager filled in.
-- @tparam integer i the row
-- @tparam table current the account
function Plan:needs_fill(i, current)
  local refs = self.input.refs[i]
  if not refs then return false end
  for name in pairs(refs) do
    if self.mapping:reference_id(current, name) then return false end
  end
  return true
end

local function diff_active(cur)
  return { { attribute = "active", path = "active",
    old = cur.active == nil and true or cur.active, new = false } }
end

-- Decides every row's action from what was learned.
function Plan:decide()
  local job, m, inp = self.job, self.mapping, self.input
  local act, current = self.act, self.current
  -- Creates first: an update's manager may be a person created by this plan.
  for i = 1, self.n do
    if self.err[i] then
      act[i] = "failed"
    elseif current[i] == false or (current[i] == nil and self.strategy == "optimistic") then
      if job == "update" then
        act[i], self.status[i] = "failed", 404
        self.err[i] = string.format("no account with %s '%s' (create it first)",
          m.key_attribute, inp.keys[i])
      elseif job == "delete" then
        act[i], self.status[i] = "not_found", 404
      else
        act[i] = "create"
      end
    end
  end
  for i = 1, self.n do
    local cur = current[i]
    if not act[i] and cur then
      if job == "delete" then
        if self.deactivate and cur.active == false then act[i] = "unchanged"
        else act[i] = self.deactivate and "deactivate" or "delete" end
        if act[i] == "deactivate" then self.diff[i] = diff_active(cur) end
      elseif job == "create" and not self.upsert and not self:needs_fill(i, cur) then
        act[i], self.status[i] = "exists", 409
      else
        local desired, missing = self:desired(i, true)
        local ops, changes = m:diff(cur, desired)
        self.note[i] = missing and table.concat(missing, "; ") .. " (not set)" or nil
        if ops and #ops > 0 then
          act[i], self.diff[i] = "update", self:readable(changes, inp.refs[i])
        else
          act[i] = (job == "create" and not self.upsert) and "exists" or "unchanged"
          self.status[i] = act[i] == "exists" and 409 or nil
        end
      end
      -- Only what apply needs stays: the account of a row it writes.
      if act[i] ~= "update" and act[i] ~= "delete" and act[i] ~= "deactivate" then
        current[i], self.same[i] = nil, nil
      end
    end
  end
  for _, a in ipairs(self.absent) do
    a.id = idstr(a.current.id)
    a.action = self.removals
    if a.action == "deactivate" then a.diff = diff_active(a.current) end
  end
  self:order()
  local counts = {}
  for k = 1, self.n do counts[act[k]] = (counts[act[k]] or 0) + 1 end
  for _, a in ipairs(self.absent) do counts[a.action] = (counts[a.action] or 0) + 1 end
  self.counts = counts
end

-- Orders the creates down the manager tree: `level[i]` is 0 for a person whose manager is
-- not created by this plan, else one more than the manager's. A reference that closes a
-- cycle (a person managing themselves, or A managing B managing A) is `deferred`: set by a
-- PATCH once both exist. Cycles are warned about before anything is sent.
function Plan:order()
  local m, inp, act = self.mapping, self.input, self.act
  local level, deferred = self.level, self.deferred
  local state = {}  -- row -> "visiting" | "done"
  local function target_of(ref)
    local t = inp.by_key[m:key_id(ref)]
    return t and act[t] == "create" and t or nil
  end
  local function visit(i)
    -- Iterative depth-first walk up the manager chain (a chain can be long).
    local stack = { i }
    while #stack > 0 do
      local top = stack[#stack]
      if state[top] == "done" then
        stack[#stack] = nil
      else
        state[top] = "visiting"
        local pending, lvl = nil, 0
        for name, ref in pairs(inp.refs[top] or {}) do
          local t = target_of(ref)
          if t and not (deferred[top] and deferred[top][name]) then
            if state[t] == "visiting" then
              deferred[top] = deferred[top] or {}
              deferred[top][name] = true
              self.warn(string.format("%s:%s: %s '%s' %s", inp.source, tostring(inp.lines[top]),
                name, ref, t == top and "is the person themselves"
                or "closes a cycle of managers; it is set after both accounts exist"))
            elseif state[t] == "done" then
              lvl = math.max(lvl, level[t] + 1)
            else
              pending = t
            end
          end
        end
        if pending then
          stack[#stack + 1] = pending
        else
          level[top], state[top] = lvl, "done"
          stack[#stack] = nil
        end
      end
    end
  end
  for i = 1, self.n do
    if act[i] == "create" and not state[i] then visit(i) end
  end
end

--- The change of row i: a new table with `index`, `action`, `key`, `line`, `id` (existing
-- accounts), `diff`, `error`, `status`, `note`.
function Plan:change(i)
  local key = self.input.keys[i]
  local err = self.err[i]
  return { index = i, action = self.act[i], key = key, line = self.input.lines[i],
    id = self.directory:id(key) or nil, diff = self.diff[i] or (self.act[i] == "create" and {}
    or nil), error = err, status = self.status[i], note = self.note[i] }
end

--- The planned changes: every input row in file order, then the absent accounts (sync with
-- removals). Each is a table with `action` ("create", "update", "unchanged", "exists",
-- "delete", "deactivate", "not_found", "failed"), `key`, `line` (nil for an absent account),
-- `id` (existing accounts), `diff` (`{ column=, attribute=, old=, new= }` list), `error`.
-- @treturn function iterator
function Plan:changes()
  local absent = self.absent
  local i, n = 0, self.n
  return function()
    i = i + 1
    if i <= n then return self:change(i) end
    return absent[i - n]
  end
end

--- Applies the plan (see scim.apply).
function Plan:apply(opts)
  return require("scim.apply").run(self, opts)
end

return setmetatable(plan, { __call = function(_, opts) return plan.new(opts) end })
