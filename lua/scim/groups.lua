--- Groups, planned and applied as users are: the file is the truth for every group it
-- names.
--
--     local plan, err, code = scim.plan{ client = client, rows = "groups.csv", job = "groups",
--                                        delete_missing_groups = true, max_removals = "20%" }
--     for c in plan:changes() do print(c.action, c.group, #c.adds, #c.removes) end
--     local result = plan:apply{ concurrency = 8 }
--
-- The rows have the columns `group` (displayName), `member` (the member's key: userName, or
-- the mapping's key attribute; `group:<displayName>` for a nested group; empty for a group
-- with no members) and optionally `group external id`, one row per membership.
--
-- Making the plan sends only reads: the groups with their members (one paged listing; a
-- server that leaves members out of listings has each group read) and the users (one paged
-- listing of their keys: no request per member). Applying it sends, per group: a POST with
-- its members for a new group, a PATCH with `add`/`remove` operations on `members` for a
-- changed one (in as many requests as the provider's limit needs; never a PUT of a whole
-- member list), nothing for an unchanged one, and a DELETE for a group absent from the file
-- with `delete_missing_groups` (guarded like user removals).
-- @module scim.groups
local err_mod = require "scim.error"
local runner = require "scim.runner"
local filter = require "scim.filter"
local idstr = require("scim.directory").idstr

local groups = {}

--- How a nested group is written as a member: `group:<displayName>`.
groups.GROUP_PREFIX = "group:"

--- The columns of a groups file (compared without case).
groups.COLUMNS = { "group", "member", "group external id" }

-- Problems collected at most (as scim.input does).
local MAX_PROBLEMS = 200

-- The PATCH limits assumed until the client or the provider says otherwise.
local DEFAULT_LIMIT = 100

-- Error codes after which sending more is pointless (as scim.apply).
local STOP_CODES = { UNAUTHORIZED = "AUTH", FORBIDDEN = "AUTH", THROTTLED = "THROTTLED" }

local Plan = { __name = "scim.groups.plan" }
Plan.__index = Plan

-- The group a member key names (`group:Sales` -> "Sales"), or nil for a user's key.
function groups.nested_name(key)
  if key:sub(1, #groups.GROUP_PREFIX):lower() == groups.GROUP_PREFIX then
    return (key:sub(#groups.GROUP_PREFIX + 1):match("^%s*(.-)%s*$"))
  end
end

-- A value written by an export's formula guard reads back without its `'` (as scim.input).
local function unguard(v)
  if type(v) == "string" and v:find("^'[ \t\r\n]*[=+%-@\t\r]") then return v:sub(2) end
  return v
end

-- Row sources: a path, a csv reader, an iterator of `row, line`, or an array of keyed rows.
-- Returns a reader (`read() -> row, line | nil | nil, problem`), its header or nil, a name.
local function open_source(rows, opts)
  if type(rows) == "string" then
    local reader, err = require("scim.csv").open(rows, opts.csv)
    if not reader then return nil, err end
    return reader, reader.header, rows
  end
  if type(rows) == "table" and rows.read and rows.header then
    return rows, rows.header, rows.name or "rows"
  end
  local read
  if type(rows) == "function" then
    local done = false
    read = function()
      if done then return nil end
      local ok, row, line = pcall(rows)
      if not ok then done = true; return nil, tostring(row) end
      if row == nil then done = true end
      return row, line
    end
  elseif type(rows) == "table" then
    local i = 0
    read = function()
      i = i + 1
      local row = rows[i]
      if row == nil then return nil end
      return row, type(row) == "table" and row._line or i + 1
    end
  else
    error("scim.plan: 'rows' must be a path, a csv reader, an iterator or an array", 4)
  end
  return { read = read, close = function() end }, nil, opts.source or "rows"
end

--- Reads and checks a groups file: no request is sent.
-- @tparam table opts `rows`, `mapping` (its `key_id` compares member keys), `csv` (reader
--   options for a path), `source` (the name in messages for rows that are no file)
-- @treturn table `{ list = { group... }, by_name = { lowercased name -> group }, source = }`;
--   a group is `{ name =, line =, external_id =, members = { { key =, line = } } }`
-- @treturn[2] nil
-- @treturn[2] scim.error "INVALID" with `problems` (each naming file:line) and `total`
function groups.read(opts)
  local m = opts.mapping
  local source, header, name = open_source(opts.rows, opts)
  if not source then
    return err_mod.fail(header, "INVALID", { problems = { tostring(header) }, total = 1 })
  end
  local problems, total = {}, 0
  local function problem(line, msg)
    total = total + 1
    if #problems < MAX_PROBLEMS then
      problems[#problems + 1] = line and string.format("%s:%s: %s", name, tostring(line), msg)
        or (name .. ": " .. msg)
    end
  end
  local cols  -- canonical column -> the name as written
  local function start(hdr)
    cols = {}
    local known = {}
    for _, c in ipairs(groups.COLUMNS) do known[c] = true end
    for _, h in ipairs(hdr) do
      local c = tostring(h):lower():match("^%s*(.-)%s*$")
      if known[c] then cols[c] = h
      else problem(nil, "unknown column '" .. tostring(h) .. "' (a groups file has the columns "
        .. "group, member and optionally group external id)") end
    end
    for _, c in ipairs{ "group", "member" } do
      if not cols[c] then problem(nil, "missing column '" .. c .. "'") end
    end
  end
  if header then start(header) end
  local list, by_name = {}, {}
  local function take(row, line)
    if not cols then
      local names = {}
      for k in pairs(row) do
        if type(k) == "string" and k ~= "_line" then names[#names + 1] = k end
      end
      table.sort(names)
      start(names)
    end
    if not (cols.group and cols.member) then return end
    local function get(c)
      local v = cols[c] and unguard(row[cols[c]])
      v = v ~= nil and tostring(v):match("^%s*(.-)%s*$") or ""
      return v
    end
    local gname, key, ext = get("group"), get("member"), get("group external id")
    if gname == "" then return problem(line, "the group is empty") end
    if not utf8.len(gname) then return problem(line, "the group is not valid UTF-8") end
    local lname = gname:lower()
    local g = by_name[lname]
    if not g then
      g = { name = gname, line = line, members = {}, seen = {} }
      list[#list + 1] = g
      by_name[lname] = g
    end
    if ext ~= "" then
      if g.external_id and g.external_id ~= ext then
        problem(line, string.format("group '%s' has group external id '%s' on line %s and '%s' "
          .. "here", gname, g.external_id, tostring(g.external_line), ext))
      elseif not g.external_id then
        g.external_id, g.external_line = ext, line
      end
    end
    if key == "" then return end
    local nested = groups.nested_name(key)
    if nested == "" then return problem(line, "member '" .. key .. "' names no group") end
    local lkey = nested and (groups.GROUP_PREFIX .. nested:lower()) or m:key_id(key)
    if g.seen[lkey] then
      return problem(line, string.format("member '%s' of group '%s' already on line %s", key,
        gname, tostring(g.seen[lkey])))
    end
    g.seen[lkey] = line
    g.members[#g.members + 1] = { key = key, lkey = lkey, nested = nested, line = line }
  end
  local last
  while true do
    local row, line, code = source:read()
    if row == nil then
      if line == nil then break end
      -- A parse error names file:line:col. After a row with the wrong number of fields the
      -- reader goes on; after anything else (or the same error again) it can't.
      if line == last then break end
      last = line
      total = total + 1
      if #problems < MAX_PROBLEMS then problems[#problems + 1] = tostring(line) end
      if code ~= "FIELD_COUNT" then break end
    else
      take(row, line)
    end
  end
  source:close()
  if total == 0 and not cols then problem(nil, "no header") end
  if total > 0 then
    return err_mod.fail(string.format("%s: %d problem%s; nothing was sent", name, total,
      total == 1 and "" or "s"), "INVALID", { problems = problems, total = total })
  end
  for _, g in ipairs(list) do g.seen = nil end
  return { list = list, by_name = by_name, source = name, columns = header }
end

-- Runs `fn` and turns what a listing raises into the fail triple.
local function listing(what, fn)
  local ok, err = pcall(fn)
  if ok then return true end
  if err_mod.is_interrupt(err) then
    return err_mod.fail("interrupted while listing the " .. what .. "; nothing was changed",
      "INTERRUPTED", { cause = err })
  end
  local code = type(err) == "table" and err.code or "UNAVAILABLE"
  if code == "UNSUPPORTED" then return err_mod.fail(tostring(err), code, { cause = err }) end
  return err_mod.fail("listing the " .. what .. " failed: " .. tostring(err), code,
    { cause = err })
end

--- Learns what the server has: every group with its members (first: a server without
-- Groups is found before the users are listed), then every user's key (one paged listing
-- asking only for the key attribute). Members are resolved to keys: a user's key, or
-- `group:<displayName>` for a nested group (type "Group", or an id of a listed group).
-- @tparam scim.client client
-- @tparam table m the mapping (`key_attribute`, `key_id`)
-- @treturn table `{ list = { { id=, name=, external_id=, members = { { id=, key=, nested= } } } },
--   by_name = { lowercased name -> group or false (several) }, by_id =, user_ids = { lowercased
--   key -> id }, user_keys = { id -> key } }`
-- @treturn[2] nil, scim.error, code (UNSUPPORTED, UNAUTHORIZED, ..., INTERRUPTED)
function groups.learn(client, m)
  local list, by_name, by_id = {}, {}, {}
  local ok, err, code = listing("groups", function()
    for g in client:groups{ members = true } do
      local id = idstr(g.id)
      local name = type(g.displayName) == "string" and g.displayName or ("(id " .. id .. ")")
      local rec = { id = id, name = name, external_id = g.externalId, members = {} }
      for _, mem in ipairs(type(g.members) == "table" and g.members or {}) do
        if type(mem) == "table" and mem.value ~= nil then
          rec.members[#rec.members + 1] = { id = idstr(mem.value), nested = mem.type == "Group" }
        end
      end
      list[#list + 1] = rec
      by_id[id] = rec
      local lname = name:lower()
      by_name[lname] = by_name[lname] == nil and rec or false
    end
  end)
  if not ok then return nil, err, code end
  local attr = m.key_attribute
  local user_ids, user_keys = {}, {}
  ok, err, code = listing("users", function()
    for u in client:users{ attributes = { attr } } do
      local key = u[attr]
      if type(key) == "string" then
        local id = idstr(u.id)
        local lkey = m:key_id(key)
        -- Two accounts whose keys differ only in case: neither can be named by the file.
        user_ids[lkey] = user_ids[lkey] == nil and id or false
        user_keys[id] = key
      end
    end
  end)
  if not ok then return nil, err, code end
  for _, g in ipairs(list) do
    for _, mem in ipairs(g.members) do
      local sub = by_id[mem.id]
      if sub and (mem.nested or not user_keys[mem.id]) then
        mem.nested, mem.key = true, groups.GROUP_PREFIX .. sub.name
      elseif not mem.nested then
        mem.key = user_keys[mem.id]
      end
    end
  end
  return { list = list, by_name = by_name, by_id = by_id, user_ids = user_ids,
    user_keys = user_keys }
end

-- Checks the options; raises on a programming error.
local function check_options(o)
  if type(o.client) ~= "table" and type(o.connect) ~= "function" then
    error("scim.plan: 'client' is required", 3)
  end
  if o.rows == nil then error("scim.plan: 'rows' is required", 3) end
  if o.max_removals ~= nil then
    local ok, why = require("scim.plan").parse_limit(o.max_removals)
    if not ok then error("scim.plan: " .. why, 3) end
  end
  for _, k in ipairs{ "removals", "upsert", "where", "limit" } do
    if o[k] ~= nil then
      error("scim.plan: '" .. k .. "' is not an option of job = \"groups\"", 3)
    end
  end
end

-- The mapping: the given one, one loaded from a path, or the dialect's default.
local function mapping_of(opts, client)
  local m = opts.mapping
  if type(m) == "table" then return m end
  local mapping = require "scim.mapping"
  if m == nil then return mapping.default{ dialect = client.dialect.name } end
  local mm, merr = mapping.load(m, { dialect = client.dialect.name })
  if not mm then return err_mod.fail(merr, "USAGE") end
  return mm
end

-- What a server member is called in a change: its key, else its id.
local function shown(mem)
  return mem.key or ("id " .. tostring(mem.id))
end

--- Makes the plan of a groups file (called by `scim.plan{ job = "groups", ... }`).
-- @tparam table opts `client` (or `connect()`, called once the file is valid), `rows`,
--   `mapping` (its key attribute says what a member value means; default userName),
--   `delete_missing_groups`, `max_removals` ("10%" default, or a count),
--   `ignore_missing_members` (warn instead of refusing), `csv`, `on_warning(msg)`,
--   `on_phase(name, n)`, `on_step()`
-- @treturn scim.groups.plan
-- @treturn[2] nil
-- @treturn[2] scim.error `problems` for INVALID, `removals` (group names) for GUARD
-- @treturn[2] string "INVALID", "GUARD", "UNSUPPORTED", "USAGE", a client code, "INTERRUPTED"
function groups.new(opts)
  check_options(opts)
  local client = opts.client
  if client == nil and type(opts.mapping) ~= "table" then client = opts.connect() end
  local m, merr, mcode = mapping_of(opts, client or { dialect = {} })
  if not m then return nil, merr, mcode end
  local warnings = {}
  local function warn(msg)
    warnings[#warnings + 1] = msg
    if opts.on_warning then opts.on_warning(msg) end
  end
  local inp, ierr, icode = groups.read{ rows = opts.rows, mapping = m, csv = opts.csv,
    source = opts.source }
  if not inp then return nil, ierr, icode end
  client = client or opts.connect()
  if opts.on_phase then opts.on_phase("listing", 0) end
  local srv, lerr, lcode = groups.learn(client, m)
  if not srv then
    if lcode == "UNSUPPORTED" or lcode == "INTERRUPTED" then return nil, lerr, lcode end
    local url = tostring(client.url or "the server"):gsub("^(%a[%w+.-]*://)[^/@]*@",
      "%1[redacted]@")
    return err_mod.fail(string.format("cannot work with %s: %s", url, tostring(lerr)),
      lcode or "UNAVAILABLE", { cause = lerr })
  end
  local self = setmetatable({ client = client, mapping = m, job = "groups", input = inp,
    server = srv, warnings = warnings, list = {}, counts = {},
    member_counts = { add = 0, remove = 0 }, columns = { "group", "member" },
  }, Plan)
  local ok, err, code = self:decide(opts, warn)
  if not ok then return nil, err, code end
  return self
end

-- Puts a change's member lists in a stable order (by key), the values with them.
local function sort_members(c)
  local function by_key(keys, values)
    local idx = {}
    for i = 1, #keys do idx[i] = i end
    table.sort(idx, function(a, b) return keys[a]:lower() < keys[b]:lower() end)
    local k2, v2 = {}, {}
    for i, j in ipairs(idx) do k2[i], v2[i] = keys[j], values[j] end
    return k2, v2
  end
  c.adds, c.add_values = by_key(c.adds, c.add_values)
  c.removes, c.remove_ids = by_key(c.removes, c.remove_ids)
  -- Nested groups this plan creates have no id yet: they are added after the creates.
  for _, nm in ipairs(c.later) do c.adds[#c.adds + 1] = groups.GROUP_PREFIX .. nm end
end

-- Resolves the file's members to ids and compares every group; then the groups absent from
-- the file. Returns true, or the fail triple (INVALID: missing members; GUARD).
function Plan:decide(opts, warn)
  local inp, srv, name = self.input, self.server, self.input.source
  local problems, total = {}, 0
  local function missing(mem, g, why)
    local msg = string.format("%s:%s: member '%s' of group '%s' %s", name, tostring(mem.line),
      mem.key, g.name, why)
    if opts.ignore_missing_members then return warn(msg .. " (ignored)") end
    total = total + 1
    if #problems < MAX_PROBLEMS then problems[#problems + 1] = msg end
  end
  for _, g in ipairs(inp.list) do
    local cur = srv.by_name[g.name:lower()]
    local c = { group = g.name, key = g.name, line = g.line, adds = {}, removes = {},
      add_values = {}, remove_ids = {}, later = {} }
    self.list[#self.list + 1] = c
    -- The members the file wants, by id (nested groups new in this plan: by name, later).
    local want = {}
    for _, mem in ipairs(g.members) do
      if mem.nested then
        local sub = srv.by_name[mem.nested:lower()]
        if sub then
          want[sub.id] = { key = mem.key, value = { value = sub.id, type = "Group" } }
        elseif sub == false then
          missing(mem, g, "names a group the server has several of")
        elseif inp.by_name[mem.nested:lower()] then
          c.later[#c.later + 1] = mem.nested
        else
          missing(mem, g, "is no group on the server nor in the file")
        end
      else
        local id = srv.user_ids[mem.lkey]
        if id then
          want[id] = { key = mem.key, value = { value = id } }
        else
          missing(mem, g, id == false and "matches several users on the server"
            or "is not a user on the server")
        end
      end
    end
    if cur == false then
      c.action = "failed"
      c.error = err_mod.new(string.format("the server has several groups named '%s'", g.name),
        "AMBIGUOUS")
    elseif not cur then
      c.action, c.external_id = "create", g.external_id
      for id, w in pairs(want) do
        c.adds[#c.adds + 1], c.add_values[#c.add_values + 1] = w.key, w.value
        want[id] = nil
      end
    else
      c.id = cur.id
      local have = {}
      for _, mem in ipairs(cur.members) do
        have[mem.id] = true
        if not want[mem.id] then
          c.removes[#c.removes + 1], c.remove_ids[#c.remove_ids + 1] = shown(mem), mem.id
        end
      end
      for id, w in pairs(want) do
        if not have[id] then
          c.adds[#c.adds + 1], c.add_values[#c.add_values + 1] = w.key, w.value
        end
      end
      if g.external_id and g.external_id ~= cur.external_id then
        c.external_id, c.old_external_id = g.external_id, cur.external_id
      end
      c.action = (#c.adds > 0 or #c.later > 0 or #c.removes > 0 or c.external_id) and "update"
        or "unchanged"
    end
    sort_members(c)
  end
  if total > 0 then
    return err_mod.fail(string.format("%s: %d member%s not found on the server; nothing was sent "
      .. "(--ignore-missing-members to leave them out)", name, total, total == 1 and "" or "s"),
      "INVALID", { problems = problems, total = total })
  end
  -- The groups absent from the file.
  local absent = {}
  for _, g in ipairs(srv.list) do
    if not inp.by_name[g.name:lower()] then absent[#absent + 1] = g end
  end
  if opts.delete_missing_groups and #absent > 0 then
    local plan = require "scim.plan"
    local limit = opts.max_removals and assert(plan.parse_limit(opts.max_removals))
      or plan.DEFAULT_MAX_REMOVALS
    local allowed = plan.allowed_removals(limit, #srv.list)
    if #absent > allowed then
      local names = {}
      for i, g in ipairs(absent) do names[i] = g.name end
      return err_mod.fail(string.format("refusing to delete %d of %d groups absent from %s: "
        .. "more than max_removals %s allows (%d); check the file, or raise the limit; "
        .. "nothing was sent", #absent, #srv.list, name,
        limit.count and tostring(limit.count) or (limit.percent .. "%"), allowed), "GUARD",
        { removals = names, allowed = allowed, count = #absent })
    end
    for _, g in ipairs(absent) do
      local removes = {}
      for i, mem in ipairs(g.members) do removes[i] = shown(mem) end
      self.list[#self.list + 1] = { action = "delete", group = g.name, key = g.name, id = g.id,
        adds = {}, removes = removes, absent = true }
    end
  end
  for _, c in ipairs(self.list) do
    self.counts[c.action] = (self.counts[c.action] or 0) + 1
    if c.action ~= "delete" and c.action ~= "failed" then
      self.member_counts.add = self.member_counts.add + #c.adds
      self.member_counts.remove = self.member_counts.remove + #c.removes
    end
  end
  return true
end

-- The public view of a change.
local function view(c)
  return { action = c.action, group = c.group, key = c.key, id = c.id, line = c.line,
    adds = c.adds, removes = c.removes, external_id = c.external_id,
    old_external_id = c.old_external_id, error = c.error }
end

--- The planned changes: the file's groups in file order, then the groups to delete. Each is
-- `{ action = "create"|"update"|"unchanged"|"delete"|"failed", group =, key = (the group's
-- name too), id =, line =, adds = { member keys }, removes = { member keys }, external_id =,
-- old_external_id =, error = }` (a deleted group's `removes` lists the members it had).
-- @treturn function iterator
function Plan:changes()
  local i = 0
  return function()
    i = i + 1
    local c = self.list[i]
    return c and view(c)
  end
end

--- A change's changes as `{ sign = "+"|"-", column = "member", old =, new = }` (and the
-- external id as `{ column = "group external id", old =, new = }`): what a dry run prints.
function groups.diff(change)
  local out = {}
  if change.external_id then
    out[1] = { column = "group external id", path = "externalId",
      old = change.old_external_id, new = change.external_id }
  end
  if change.action ~= "delete" then
    for _, k in ipairs(change.adds) do
      out[#out + 1] = { sign = "+", column = "member", path = "members", new = k }
    end
  end
  for _, k in ipairs(change.removes) do
    out[#out + 1] = { sign = "-", column = "member", path = "members", old = k }
  end
  return out
end

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
    else unknown[#unknown + 1] = groups.GROUP_PREFIX .. nm end
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
function Plan:apply(opts)
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

-- }========================================================

return groups
