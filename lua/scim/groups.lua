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
local guard = require "scim.guard"
local apply = require "scim.groups.apply"
local idstr = require("scim.directory").idstr

local groups = {}

--- How a nested group is written as a member: `group:<displayName>`.
groups.GROUP_PREFIX = apply.GROUP_PREFIX

--- The columns of a groups file (compared without case).
groups.COLUMNS = { "group", "member", "group external id" }

-- Problems collected at most (as scim.input does).
local MAX_PROBLEMS = 200

-- The PATCH limits assumed until the client or the provider says otherwise.


local Plan = { __name = "scim.groups.plan" }
Plan.__index = Plan

-- The group a member key names (`group:Sales` -> "Sales"), or nil for a user's key.
function groups.nested_name(key)
  if key:sub(1, #groups.GROUP_PREFIX):lower() == groups.GROUP_PREFIX then
    return (key:sub(#groups.GROUP_PREFIX + 1):match("^%s*(.-)%s*$"))
  end
end

-- A value written by an export's formula guard reads back without its `'`.
local unguard = require("scim.csv").unguard

-- Row sources as scim.input opens them, as keyed rows.
local function open_source(rows, opts)
  return require("scim.input").open_source(rows, opts, true)
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
    local ok, why = guard.parse(o.max_removals)
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
    local limit = opts.max_removals and assert(guard.parse(opts.max_removals)) or guard.DEFAULT
    local allowed = guard.allowed(limit, #srv.list)
    if #absent > allowed then
      local names = {}
      for i, g in ipairs(absent) do names[i] = g.name end
      return err_mod.fail(string.format("refusing to delete %d of %d groups absent from %s: "
        .. "more than max_removals %s allows (%d); check the file, or raise the limit; "
        .. "nothing was sent", #absent, #srv.list, name,
        guard.describe(limit), allowed), "GUARD",
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
groups.view = apply.view

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
    return c and groups.view(c)
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

--- Applies the plan (see scim.groups.apply).
function Plan:apply(opts)
  return apply.run(self, opts)
end

return groups
