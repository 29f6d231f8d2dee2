--- An in-memory SCIM client for unit specs of scim.plan and scim.apply: the same methods
-- and fail triples as scim.client, no HTTP. It counts every call as the request it stands
-- for, so specs can assert request economy without a server.
--
--     local fake = require("support.fake_client").new{ page_size = 100 }
--     fake:seed{ { userName = "a@example.com", title = "X" } }
--     local p = scim.plan{ client = fake, rows = {...}, job = "sync" }
--     fake.calls.POST, fake.calls.PATCH, fake:user("a@example.com")
-- @module support.fake_client
local json = require "scim.json"

local fake = {}

local ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
fake.ENT = ENT

local Fake = {}
Fake.__index = Fake

local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return setmetatable(t, getmetatable(v))
end

local function err(status, code, message)
  return nil, setmetatable({ status = status, code = code, message = message },
    { __tostring = function(e) return e.message end }), code
end

--- A fake client.
-- @tparam[opt] table opts `page_size` (default 100), `dialect` (default "scim2"),
--   `fail` (function(method, resource_or_id) -> status, code | nil: injected failures)
function fake.new(opts)
  opts = opts or {}
  return setmetatable({
    dialect = require("scim.dialects." .. (opts.dialect or "scim2")),
    url = "https://fake.example/scim/v2/",
    page_size = opts.page_size or 100,
    fail = opts.fail,
    store = {}, order = {}, next_id = 1,
    calls = { GET = 0, POST = 0, PATCH = 0, PUT = 0, DELETE = 0, total = 0 },
  }, Fake)
end

function Fake:count(method)
  self.calls[method] = self.calls[method] + 1
  self.calls.total = self.calls.total + 1
end

function Fake:injected(method, what)
  if self.fail then
    local status, code = self.fail(method, what)
    if status then return err(status, code, method .. ": injected " .. status) end
  end
end

--- Stores users directly (no call counted); returns them with ids.
function Fake:seed(list)
  for _, u in ipairs(list) do
    local r = copy(u)
    r.id = r.id or ("id" .. self.next_id)
    self.next_id = self.next_id + 1
    r.active = r.active == nil and true or r.active
    self.store[r.id] = r
    self.order[#self.order + 1] = r.id
  end
  return list
end

--- The stored user with this userName (any case), or nil.
function Fake:user(name)
  for _, id in ipairs(self.order) do
    local u = self.store[id]
    if u and u.userName:lower() == name:lower() then return u end
  end
end

--- Every stored user, in creation order.
function Fake:all()
  local out = {}
  for _, id in ipairs(self.order) do
    if self.store[id] then out[#out + 1] = self.store[id] end
  end
  return out
end

function Fake:capabilities()
  return { patch = true, max_page_size = self.page_size, source = "fake" }
end

function Fake:list(o)
  self:count("GET")
  local all = self:all()
  local start, count = o.start_index or 1, o.count or self.page_size
  local page = {}
  for i = start, math.min(#all, start + count - 1) do page[#page + 1] = copy(all[i]) end
  return { total = #all, resources = page }
end

function Fake:users(o)
  local size = math.min(o and o.count or self.page_size, self.page_size)
  local start, buf, i = 1, {}, 0
  local total
  return function()
    i = i + 1
    if buf[i] then return buf[i] end
    if total and start > total then return nil end
    local p = self:list{ start_index = start, count = size }
    total = p.total
    buf, i = p.resources, 1
    start = start + #buf
    return buf[1]
  end
end

function Fake:find_user(name)
  self:count("GET")
  local found
  for _, u in ipairs(self:all()) do
    if u.userName:lower() == name:lower() then
      if found then return err(200, "AMBIGUOUS", "more than one user has userName " .. name) end
      found = u
    end
  end
  return found and copy(found) or false
end

function Fake:create(resource)
  self:count("POST")
  local f = { self:injected("POST", resource) }
  if f[2] then return table.unpack(f, 1, 3) end
  if self:user(resource.userName) then return err(409, "UNIQUENESS", "POST: 409 exists") end
  local r = copy(resource)
  r.id = "id" .. self.next_id
  self.next_id = self.next_id + 1
  if r.active == nil then r.active = true end
  self.store[r.id] = r
  self.order[#self.order + 1] = r.id
  return copy(r)
end

-- Applies PatchOp operations the way the plans send them (paths of one or two levels,
-- extension URN prefixes, and filtered multi-valued paths replaced whole).
local function set_path(r, path, value, remove)
  local urn, rest = path:match("^(urn:.*):([^:]+)$")
  local target = r
  if urn then
    r[urn] = r[urn] or {}
    target, path = r[urn], rest
  end
  local attr, sub = path:match("^([^%.%[]+)%.(.+)$")
  if path:find("[", 1, true) then
    attr = path:match("^([^%[]+)")
    target[attr] = nil  -- filtered paths: the fake keeps it simple
    if not remove then target[attr] = { value } end
    return
  end
  if remove then value = nil end
  if attr then
    target[attr] = target[attr] or {}
    target[attr][sub] = value
  else
    target[path] = value
  end
end

function Fake:patch(id, ops)
  self:count("PATCH")
  local f = { self:injected("PATCH", id) }
  if f[2] then return table.unpack(f, 1, 3) end
  local r = self.store[id]
  if not r then return err(404, "NOT_FOUND", "PATCH: 404") end
  for _, op in ipairs(ops) do
    if op.path then set_path(r, op.path, copy(op.value), op.op == "remove")
    elseif type(op.value) == "table" then
      for k, v in pairs(op.value) do r[k] = copy(v) end
    end
  end
  return copy(r)
end

function Fake:replace(id, resource)
  self:count("PUT")
  if not self.store[id] then return err(404, "NOT_FOUND", "PUT: 404") end
  local r = copy(resource)
  r.id = id
  self.store[id] = r
  return copy(r)
end

function Fake:delete(id)
  self:count("DELETE")
  local f = { self:injected("DELETE", id) }
  if f[2] then return table.unpack(f, 1, 3) end
  if not self.store[id] then return err(404, "NOT_FOUND", "DELETE: 404") end
  self.store[id] = nil
  return true
end

function Fake:stats() return { requests = self.calls.total, retries = 0 } end
function Fake.close() end

fake.json = json
return fake
