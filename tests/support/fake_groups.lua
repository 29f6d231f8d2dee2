--- An in-memory client with users and Groups for unit specs of scim.groups: the methods a
-- groups plan calls (`capabilities`, `users`, `groups`, `create_group`, `patch_group`,
-- `delete_group`), with the client's fail triples and batching, no HTTP. Every call is
-- counted as the requests it stands for.
--
--     local fake = require("support.fake_groups").new{ max_ops = 10 }
--     fake:seed_users{ "a@example.com", "b@example.com" }
--     fake:seed_group("Sales", { "a@example.com" })
--     fake.calls.PATCH, fake:members("Sales")
-- @module support.fake_groups
local fake = {}

local Fake = {}
Fake.__index = Fake

local function err(status, code, message, extra)
  local e = setmetatable({ status = status, code = code, message = message },
    { __tostring = function(x) return x.message end })
  for k, v in pairs(extra or {}) do e[k] = v end
  return nil, e, code
end

--- A fake client.
-- @tparam[opt] table opts `max_ops` (the provider's cap of operations per PATCH and values
--   per operation; 0 none), `no_groups` (the server has no Groups), `fail(method, what)`
--   (-> status, code: an injected failure), `page_size` (default 100)
function fake.new(opts)
  opts = opts or {}
  return setmetatable({
    dialect = require "scim.dialects.scim2", url = "https://fake.example/scim/v2/",
    max_ops = opts.max_ops or 0, no_groups = opts.no_groups, fail = opts.fail,
    page_size = opts.page_size or 100,
    users_list = {}, user_by_id = {}, groups_list = {}, group_by_id = {}, next_id = 1,
    calls = { GET = 0, POST = 0, PATCH = 0, DELETE = 0, total = 0 },
  }, Fake)
end

function Fake:count(method, n)
  n = n or 1
  self.calls[method] = self.calls[method] + n
  self.calls.total = self.calls.total + n
end

function Fake:new_id(prefix)
  local id = prefix .. self.next_id
  self.next_id = self.next_id + 1
  return id
end

--- Stores users by userName (no call counted); returns their ids.
function Fake:seed_users(names)
  local ids = {}
  for i, name in ipairs(names) do
    local u = { id = self:new_id("u"), userName = name }
    self.users_list[#self.users_list + 1] = u
    self.user_by_id[u.id] = u
    ids[i] = u.id
  end
  return ids
end

--- The id of a user or (with `group:` in front) a group.
function Fake:id_of(key)
  local g = key:match("^group:(.*)$")
  if g then return self:group(g).id end
  for _, u in ipairs(self.users_list) do
    if u.userName:lower() == key:lower() then return u.id end
  end
  error("fake_groups: no user " .. key)
end

--- Stores a group (no call counted): members by key (`group:Name` for a nested group).
function Fake:seed_group(name, keys, external_id)
  local g = { id = self:new_id("g"), displayName = name, externalId = external_id, members = {} }
  for _, k in ipairs(keys or {}) do
    local id = self:id_of(k)
    g.members[#g.members + 1] = { value = id, type = self.group_by_id[id] and "Group" or "User" }
  end
  self.groups_list[#self.groups_list + 1] = g
  self.group_by_id[g.id] = g
  return g
end

--- The stored group of a displayName, or nil.
function Fake:group(name)
  for _, g in ipairs(self.groups_list) do
    if g.displayName:lower() == name:lower() then return g end
  end
end

--- A group's members as sorted keys (`group:Name` for nested groups), or nil.
function Fake:members(name)
  local g = self:group(name)
  if not g then return nil end
  local out = {}
  for _, m in ipairs(g.members) do
    local u = self.user_by_id[m.value]
    out[#out + 1] = u and u.userName or ("group:" .. self.group_by_id[m.value].displayName)
  end
  table.sort(out)
  return out
end

function Fake:capabilities() return { patch = true, max_page_size = self.page_size } end

-- A paging iterator over a list: one GET counted per page.
function Fake:pages(list, shape)
  local i = 0
  return function()
    i = i + 1
    if list[i] == nil then return nil end
    if (i - 1) % self.page_size == 0 then self:count("GET") end
    return shape(list[i])
  end
end

function Fake:users()
  return self:pages(self.users_list, function(u) return { id = u.id, userName = u.userName } end)
end

function Fake:groups()
  if self.no_groups then
    error(setmetatable({ code = "UNSUPPORTED", message = "GET Groups: the server has no Group "
      .. "resource type" }, { __tostring = function(x) return x.message end }), 0)
  end
  return self:pages(self.groups_list, function(g)
    local members = {}
    for i, m in ipairs(g.members) do members[i] = { value = m.value, type = m.type } end
    return { id = g.id, displayName = g.displayName, externalId = g.externalId,
      members = #members > 0 and members or nil }
  end)
end

function Fake:injected(method, what)
  if self.fail then
    local status, code = self.fail(method, what)
    if status then return err(status, code, method .. ": injected " .. status) end
  end
end

local function add_member(self, g, v)
  for _, m in ipairs(g.members) do if m.value == v.value then return end end
  g.members[#g.members + 1] = { value = v.value, type = self.group_by_id[v.value] and "Group"
    or "User" }
end

function Fake:create_group(resource)
  self:count("POST")
  local f = { self:injected("POST", resource) }
  if f[2] then return table.unpack(f, 1, 3) end
  if self:group(resource.displayName) then return err(409, "UNIQUENESS", "POST: 409") end
  local g = { id = self:new_id("g"), displayName = resource.displayName,
    externalId = resource.externalId, members = {} }
  self.groups_list[#self.groups_list + 1] = g
  self.group_by_id[g.id] = g
  for _, v in ipairs(resource.members or {}) do add_member(self, g, v) end
  return { id = g.id, displayName = g.displayName }
end

-- One operation on a stored group.
local function apply_op(self, g, op)
  if op.path == "externalId" then g.externalId = op.value return end
  if op.op == "add" and op.path == "members" then
    for _, v in ipairs(op.value) do add_member(self, g, v) end
    return
  end
  local id = op.op == "remove" and op.path:match('^members%[value eq "(.*)"%]$')
  assert(id, "fake_groups: unexpected operation " .. tostring(op.op) .. " " .. tostring(op.path))
  for i, m in ipairs(g.members) do
    if m.value == id then table.remove(g.members, i) return end
  end
end

-- As scim.client's patch_group: requests of at most opts.max_operations operations.
function Fake:patch_group(id, ops, opts)
  local max_ops, max_values = opts.max_operations or 100, opts.max_values or 100
  local split = {}
  for _, o in ipairs(ops) do
    if o.op == "add" and type(o.value) == "table" and #o.value > max_values then
      for first = 1, #o.value, max_values do
        split[#split + 1] = { op = o.op, path = o.path,
          value = table.move(o.value, first, math.min(#o.value, first + max_values - 1), 1, {}) }
      end
    else
      split[#split + 1] = o
    end
  end
  local g = self.group_by_id[id]
  for first = 1, #split, max_ops do
    self:count("PATCH")
    local f = { self:injected("PATCH", id) }
    if f[2] then f[2].applied = first - 1 return table.unpack(f, 1, 3) end
    if not g then return err(404, "NOT_FOUND", "PATCH: 404", { applied = first - 1 }) end
    local last = math.min(#split, first + max_ops - 1)
    local cap = self.max_ops
    if cap > 0 and last - first + 1 > cap then
      return err(400, "TOO_MANY", string.format("PATCH with %d operations; at most %d "
        .. "operations per request", last - first + 1, cap), { applied = first - 1 })
    end
    for j = first, last do
      local v = split[j].value
      if cap > 0 and type(v) == "table" and #v > cap then
        return err(400, "TOO_MANY", string.format("PATCH operation with %d values; at most %d "
          .. "values per operation", #v, cap), { applied = first - 1 })
      end
    end
    for j = first, last do apply_op(self, g, split[j]) end
  end
  return true
end

function Fake:delete_group(id)
  self:count("DELETE")
  local f = { self:injected("DELETE", id) }
  if f[2] then return table.unpack(f, 1, 3) end
  local g = self.group_by_id[id]
  if not g then return err(404, "NOT_FOUND", "DELETE: 404") end
  self.group_by_id[id] = nil
  for i, x in ipairs(self.groups_list) do
    if x == g then table.remove(self.groups_list, i) break end
  end
  return true
end

function Fake:stats() return { requests = self.calls.total, retries = 0 } end
function Fake.close() end

return fake
