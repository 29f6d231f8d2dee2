--- What the server has, kept compactly: key → id and id → key for the people a plan meets,
-- the size of the directory, and the choice between one paged listing and one lookup per
-- person (whichever sends fewer requests). The only place that lists users for a plan.
-- @module scim.directory
local err_mod = require "scim.error"
local filter = require "scim.filter"
local runner = require "scim.runner"

local directory = {}

local Directory = { __name = "scim.directory" }
Directory.__index = Directory

--- A SCIM id as a string: the legacy API sends ids as JSON numbers.
function directory.idstr(id)
  if math.type(id) == "float" and math.tointeger(id) then return string.format("%d", id) end
  if id == nil then return nil end
  return tostring(id)
end
local idstr = directory.idstr

--- A directory view.
-- @tparam table opts `client`, `mapping`, `concurrency` (lookups in flight), `on_phase(name,
--   n)`, `on_step()`
-- @treturn scim.directory
function directory.new(opts)
  return setmetatable({
    client = opts.client, mapping = opts.mapping, concurrency = opts.concurrency,
    on_phase = opts.on_phase, on_step = opts.on_step,
    ids = {},        -- lowercased key -> id, or false (known to exist nowhere)
    keys = nil,      -- id -> key as first met (built on demand)
    names = {},      -- lowercased key -> key as written
  }, Directory)
end

--- Records the SCIM id of a person (`false`: known to exist nowhere).
function Directory:set(key, id)
  local lkey = self.mapping:key_id(key)
  self.ids[lkey] = id
  -- The key as written, only where it differs from its lowercased form.
  if lkey ~= key and self.names[lkey] == nil then self.names[lkey] = key end
  self.keys = nil
end

--- The SCIM id of a person: id, false (exists nowhere) or nil (not known).
function Directory:id(key)
  return self.ids[self.mapping:key_id(key)]
end

--- The key of an id (for readable manager changes), or nil.
function Directory:key_of(id)
  local keys = self.keys
  if not keys then
    -- Built once after the last `set`, not per call: per call made large runs quadratic.
    keys = {}
    for lkey, v in pairs(self.ids) do
      if v then keys[v] = self.names[lkey] or lkey end
    end
    self.keys = keys
  end
  return keys[id]
end

--- The key of a resource as the mapping sees it (userName or externalId), or nil.
function Directory:resource_key(res)
  local v = res[self.mapping.key_attribute]
  return type(v) == "string" and v or nil
end

--- The number of accounts (one listing request with count=1; also the preflight that the
-- server answers and takes the token).
-- @treturn integer | nil, err, code
function Directory:size()
  if self.total then return self.total end
  local page, err, code = self.client:list{ start_index = 1, count = 1 }
  local total = page and (page.total or #page.resources)
  if total == nil then return nil, err, code end
  self.total = total
  return total
end

--- What the server supports (ServiceProviderConfig over the dialect's defaults, read once).
function Directory:capabilities()
  if not self.caps then
    local ok, caps = pcall(self.client.capabilities, self.client)
    if not ok and err_mod.is_interrupt(caps) then error(caps, 0) end
    self.caps = ok and type(caps) == "table" and caps or {}
  end
  return self.caps
end

--- Whether an update is a PUT of the merged record (dialect or server without PATCH).
function Directory:use_put()
  return self.client.dialect.update == "put" or self:capabilities().patch == false
end

--- The largest page the server allows.
function Directory:page_size()
  local size = math.tointeger(tonumber(self:capabilities().max_page_size))
  return math.max(1, size or self.client.dialect.max_page_size or 100)
end

--- Whether one paged listing costs fewer requests than `n` lookups (a page costs about as
-- much as a few lookups, which run concurrently).
function Directory:listing_pays(n)
  local total = self.total or 0
  return n > 0 and math.ceil(total / self:page_size()) * 4 <= n
end

--- Pages through every account, calling `fn(resource, key)` for each.
-- @treturn true | nil, err, code
function Directory:list(fn)
  local client = self.client
  local ok, err = pcall(function()
    for user in client:users{ count = self:page_size() } do
      fn(user, self:resource_key(user))
    end
  end)
  if not ok then
    if err_mod.is_interrupt(err) then return err_mod.fail("interrupted while listing the "
      .. "users; nothing was changed", "INTERRUPTED", { cause = err }) end
    -- An error of the caller's `fn` (not of the listing) is returned as it was raised.
    if type(err) == "table" and err.code == nil then return nil, err end
    return err_mod.fail("listing the users failed: " .. tostring(err),
      type(err) == "table" and err.code or "UNAVAILABLE", { cause = err })
  end
  return true
end

--- Finds one person by key: resource | false (none) | nil, err, code ("AMBIGUOUS" when
-- several accounts have the key in another case).
function Directory:lookup(key)
  local client, m = self.client, self.mapping
  local attr = m.key_attribute
  if attr == "userName" then return client:find_user(key) end
  local found, err, code = client:find(filter.eq(attr, key))
  if not found then return nil, err, code end
  local lkey, match = m:key_id(key), nil
  for _, r in ipairs(found) do
    local v = r[attr]
    if type(v) == "string" and m:key_id(v) == lkey then
      if match then
        return err_mod.fail(string.format("several accounts have %s '%s'", attr, key),
          "AMBIGUOUS")
      end
      match = r
    end
  end
  return match or false
end

-- Runs `fn` over items concurrently as one phase; returns the runner's stop reason.
function Directory:each(phase, items, fn)
  if self.on_phase then self.on_phase(phase, #items) end
  return runner.run(items, fn, { concurrency = self.concurrency, on_step = self.on_step,
    on_error = function(item, err) item.lookup_error = item.lookup_error or err end })
end

--- Looks up every entry (one filtered lookup each, concurrently): sets `e.current` (resource
-- or false) or `e.lookup_error`, and records the ids found.
-- @treturn true | nil, err, "INTERRUPTED"
function Directory:look_up(entries)
  local why = self:each("lookup", entries, function(e)
    local cur, err = self:lookup(e.key)
    if cur == nil then e.lookup_error = err else e.current = cur end
    if cur then self:set(e.key, idstr(cur.id)) end
  end)
  if why == "interrupted" then
    return err_mod.fail("interrupted while looking up the users; nothing was changed",
      "INTERRUPTED")
  end
  return true
end

--- Resolves the ids of referenced people that are still unknown (one lookup each,
-- concurrently); calls `on_warning(msg)` for lookups that failed.
-- @tparam table refs keys
-- @treturn true | nil, err, "INTERRUPTED"
function Directory:resolve(refs, on_warning)
  local todo = {}
  for _, ref in ipairs(refs) do
    if self:id(ref) == nil then todo[#todo + 1] = { key = ref } end
  end
  if #todo == 0 then return true end
  local ok, err, code = self:look_up(todo)
  if not ok then return nil, err, code end
  for _, t in ipairs(todo) do
    if t.current == false then
      self:set(t.key, false)
    elseif t.lookup_error and on_warning then
      on_warning(string.format("looking up '%s' failed: %s", t.key, tostring(t.lookup_error)))
    end
  end
  return true
end

return directory
