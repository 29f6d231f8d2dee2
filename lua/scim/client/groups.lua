--- Groups for `scim.client` (RFC 7643 §4.2, RFC 7644 §3.5.2): the methods `groups`,
-- `find_groups`, `find_group`, `get_group`, `create_group`, `patch_group`, `add_members`,
-- `remove_members` and `delete_group`, documented with the client. Internal: required by
-- scim.client, which passes its class and helpers.
-- @module scim.client.groups

local filter = require "scim.filter"
local json = require "scim.json"

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local math_type = math.type
local utf8_len = utf8.len

local M = {}

-- The client's class (methods are added to it by `install`) and its helpers, set by
-- `install`.
local Client = {}
local argerror, check_open, check_id, call, fail, local_error, member_url, with_schemas,
  split_operations, patch_schema, list_options, pager, projection, send,
  unsupported, raising, collect

-- {====================================================================
-- Groups
-- =====================================================================

-- Has the server Groups? The dialect says no (`groups = false`, or SCIM 1.x unless it says
-- `groups = true`), else the server's /ResourceTypes, read once: a list without a Group
-- type is a no. A server without /ResourceTypes (or a passing failure) is given the benefit
-- of the doubt. Returns true, or the fail triple (UNSUPPORTED).
local function check_groups(self, method, url)
  local d = self.dialect
  if d.groups == false or (d.groups == nil and d.scim_version == 1) then
    return unsupported(self, method, url, "the " .. tostring(d.name or "given")
      .. " dialect has no Groups")
  end
  if self.has_groups == nil then
    local rt = self.url .. (d.resource_types_path or "ResourceTypes")
    local res = send(self, "GET", rt)
    local known
    if res and res.status >= 200 and res.status <= 299 then
      local doc = json.decode(res.body or "")
      local list = type(doc) == "table" and (json.is_array(doc) and doc or doc.Resources)
      if type(list) == "table" then
        known = false
        for _, r in ipairs(list) do
          if type(r) == "table" and (r.name == "Group" or r.endpoint == "/Groups"
              or r.id == "Group") then
            known = true
          end
        end
      end
    elseif res and res.status ~= 429 and res.status < 500 then
      known = true  -- no such endpoint: try the Groups themselves
    end
    self.has_groups = known
    if known == nil then return true end
  end
  if self.has_groups == false then
    return unsupported(self, method, url, "the server has no Group resource type "
      .. "(per its /ResourceTypes)")
  end
  return true
end

local function group_url(self, id, method)
  return member_url(self, method, self.groups_url, id)
end

-- A group request after the Groups check: the document (or true) or the fail triple.
local function group_call(self, method, url, body, empty)
  local ok, err, code = check_groups(self, method, url)
  if not ok then return nil, err, code end
  local doc, res = call(self, method, url, body, nil, empty)
  if not doc then return fail(res) end
  return doc
end

--- Read one group (GET /Groups/{id}).
-- @tparam string id the group's id
-- @tparam[opt] table opts `attributes`, `excluded_attributes`
-- @treturn table the group
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code, e.g. "NOT_FOUND", "UNSUPPORTED", "BAD_ID"
function Client:get_group(id, opts)
  check_open(self, "get_group")
  id = check_id(id, "get_group")
  opts = opts or {}
  local url, bad = group_url(self, id, "GET")
  if not url then return fail(bad) end
  return group_call(self, "GET", url .. projection(opts))
end

-- The attributes a `members = true` listing asks for: the caller's, or the group's usual
-- ones, with members.
local GROUP_ATTRIBUTES = "displayName,externalId,members"

-- The paging loop over /Groups (see `groups`): a step function as `pager` gives.
local function group_pager(self, o)
  local checked, cerr = check_groups(self, "GET", self.groups_url)
  if not checked then return function() return nil, cerr end end
  o.collection = self.groups_url
  local want_members = o.members
  o.members = nil
  if want_members then
    if o.attributes then
      if not ("," .. o.attributes .. ","):find(",members,", 1, true) then
        o.attributes = o.attributes .. ",members"
      end
    else
      o.attributes = GROUP_ATTRIBUTES
    end
  end
  local step = pager(self, o)
  if not want_members then return step end
  -- Groups in listing order, held while it is unknown whether this server lists members:
  -- a group without them is an empty group on a server that does, and one to read on a
  -- server that does not.
  local pending, finished = {}, false
  local listed = self.lists_members
  local hold = o.count or 100
  return function()
    while true do
      if #pending > 0 and (listed ~= nil or finished) then
        local g = table.remove(pending, 1)
        if g.members == nil and not listed and g.id ~= nil then
          local full, err = self:get_group(tostring(g.id), { attributes = { "members" } })
          if not full then return nil, err end
          g.members = full.members
        end
        return g
      end
      if finished then return nil end
      local g, err = step()
      if err then return nil, err end
      if g == nil then
        finished = true
      else
        pending[#pending + 1] = g
        if listed == nil then
          if g.members ~= nil then
            listed = true
            self.lists_members = true
          elseif #pending >= hold then
            listed = false
          end
        end
      end
    end
  end
end

--- Iterate over every matching group, across pages, as `users` does.
-- With `members = true` each group comes with its `members`: the listing asks for them
-- (`attributes=...,members`), and when a server leaves them out of listings (a group
-- without `members` while no group of the listing had any), the group is read
-- (`GET /Groups/{id}?attributes=members`). Nested groups keep their `type = "Group"`.
-- @tparam[opt] table opts `filter`, `count`, `attributes`, `excluded_attributes`,
--   `sort_by`, `sort_order`, `start_index`, `limit`, `members`
-- @return a generic-for iterator yielding groups
-- @raise the `scim.error` of a failed request or bad paging (code "UNSUPPORTED" for a
--   server or dialect without Groups)
function Client:groups(opts)
  check_open(self, "groups")
  return raising(group_pager(self, list_options(opts, "groups", true)))
end

--- Every matching group, all pages, as an array (the non-raising sibling of `groups`).
-- @tparam[opt] table opts as for `groups`
-- @treturn table array of groups
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code
function Client:find_groups(opts)
  check_open(self, "find_groups")
  return collect(group_pager(self, list_options(opts, "find_groups", true)))
end

--- Find a group by displayName (compared without regard to case).
-- @tparam string name the displayName
-- @tparam[opt] table opts `attributes`, `excluded_attributes`, `members`
-- @treturn table|boolean the group, or false when there is none
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code, e.g. "AMBIGUOUS", "UNSUPPORTED"
function Client:find_group(name, opts)
  check_open(self, "find_group")
  if type(name) ~= "string" then
    argerror(1, "find_group", "string expected, got " .. type(name))
  end
  local o = list_options(opts, "find_group", true)
  if name == "" or utf8_len(name) == nil then
    return fail(local_error(self, "GET", self.groups_url, "displayName "
      .. (name == "" and "is empty" or "is not valid UTF-8"), "INVALID_VALUE"))
  end
  o.filter = filter.eq("displayName", name)
  o.count, o.limit = 2, 3
  if o.attributes and not ("," .. o.attributes .. ","):find(",displayName,", 1, true) then
    o.attributes = o.attributes .. ",displayName"
  end
  local step = group_pager(self, o)
  local want, found = name:lower(), nil
  while true do
    local g, err = step()
    if err then return fail(err) end
    if g == nil then break end
    if type(g.displayName) == "string" and g.displayName:lower() == want then
      if found then
        return fail(local_error(self, "GET", self.groups_url, "more than one group has "
          .. "displayName " .. filter.string(name), "AMBIGUOUS"))
      end
      found = g
    end
  end
  return found or false
end

--- Create a group (POST /Groups). A group without `schemas` gets the dialect's group
-- schema; the table is not changed.
-- @tparam table resource e.g. `{ displayName = "Sales", members = { { value = id } } }`
-- @treturn table the created group (with `id`)
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code, e.g. "UNIQUENESS", "UNSUPPORTED"
function Client:create_group(resource)
  check_open(self, "create_group")
  resource = with_schemas(resource, self.d.group_schema, "create_group")
  return group_call(self, "POST", self.groups_url, resource)
end

local DEFAULT_MAX_PATCH = 100

local function batch_limit(v, default, key)
  if v == nil then v = default or DEFAULT_MAX_PATCH end
  if math_type(v) ~= "integer" or v < 1 then
    error("patch_group: " .. key .. " must be a positive integer", 3)
  end
  return v
end

--- Modify a group with PatchOps (PATCH /Groups/{id}), in as many requests as the limits
-- need: at most `max_operations` operations per request, and an `add`/`remove` whose value
-- is an array of more than `max_values` items split into several operations.
-- @tparam string id the group's id
-- @tparam table operations array of `{ op =, path =, value = }` as for `patch`
-- @tparam[opt] table opts `max_operations`, `max_values` (default: the client's
--   `max_patch_operations` / `max_patch_values`, else 100)
-- @treturn table|boolean the group as the last request returned it, or true (204)
-- @treturn[2] nil
-- @treturn[2] scim.error err, with `applied` = the operations already applied by earlier
--   requests
-- @treturn[2] string code, e.g. "NOT_FOUND", "TOO_MANY", "UNSUPPORTED"
function Client:patch_group(id, operations, opts)
  check_open(self, "patch_group")
  id = check_id(id, "patch_group")
  opts = opts or {}
  local max_ops = batch_limit(opts.max_operations, self.max_patch_operations, "max_operations")
  local max_values = batch_limit(opts.max_values, self.max_patch_values, "max_values")
  local ops = split_operations(operations, max_values, "patch_group")
  local url, bad = group_url(self, id, "PATCH")
  if not url then return fail(bad) end
  local has, herr, hcode = check_groups(self, "PATCH", url)
  if not has then return nil, herr, hcode end
  local schema = patch_schema(self.d)
  if not schema then
    return unsupported(self, "PATCH", url, "the " .. tostring(self.d.name)
      .. " dialect has no PATCH")
  end
  local result
  for first = 1, #ops, max_ops do
    local batch = json.array()
    for j = first, math.min(#ops, first + max_ops - 1) do batch[#batch + 1] = ops[j] end
    local doc, err, code = group_call(self, "PATCH", url,
      { schemas = json.array{ schema }, Operations = batch }, true)
    if not doc then
      err.applied = first - 1
      return nil, err, code
    end
    result = doc
  end
  return result
end

-- Member values: ids as given, or `{ value = id, type = "Group" }` kept as they are.
local function member_values(members, name)
  if type(members) ~= "table" then argerror(2, name, "array of member ids expected", 3) end
  local out = json.array()
  for i, m in ipairs(members) do
    if math_type(m) == "integer" then m = tostring(m) end
    if type(m) == "string" and m ~= "" then
      out[i] = { value = m }
    elseif type(m) == "table" and type(m.value) == "string" and m.value ~= "" then
      out[i] = m
    else
      argerror(2, name, "member " .. i .. " must be an id or { value = id }", 3)
    end
  end
  return out
end

--- Add members to a group: `add` on `members`, batched as `patch_group` does.
-- @tparam string id the group's id
-- @tparam table members array of ids (or `{ value = id, type = "Group" }`)
-- @tparam[opt] table opts as for `patch_group`
-- @return as `patch_group`; true when `members` is empty (nothing sent)
function Client:add_members(id, members, opts)
  check_open(self, "add_members")
  local values = member_values(members, "add_members")
  if #values == 0 then return true end
  return self:patch_group(id, { { op = "add", path = "members", value = values } }, opts)
end

--- Remove members from a group, batched as `patch_group` does: one `remove` per member
-- with the path `members[value eq "id"]` (RFC 7644 §3.5.2.2), or with `opts.style =
-- "value"` `remove` on `members` with the values (as Entra ID and others take it).
-- @tparam string id the group's id
-- @tparam table members array of ids
-- @tparam[opt] table opts as for `patch_group`, and `style` ("filter", default, or "value")
-- @return as `patch_group`; true when `members` is empty (nothing sent)
function Client:remove_members(id, members, opts)
  check_open(self, "remove_members")
  local values = member_values(members, "remove_members")
  if #values == 0 then return true end
  opts = opts or {}
  local style = opts.style or "filter"
  local ops = {}
  if style == "value" then
    ops[1] = { op = "remove", path = "members", value = values }
  elseif style == "filter" then
    for i, m in ipairs(values) do
      ops[i] = { op = "remove", path = "members[value eq " .. filter.string(m.value) .. "]" }
    end
  else
    argerror(3, "remove_members", "style must be \"filter\" or \"value\"")
  end
  local po = {}
  for k, v in pairs(opts) do if k ~= "style" then po[k] = v end end
  return self:patch_group(id, ops, po)
end

--- Delete a group (DELETE /Groups/{id}).
-- @tparam string id the group's id
-- @treturn boolean true
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code, e.g. "NOT_FOUND", "UNSUPPORTED"
function Client:delete_group(id)
  check_open(self, "delete_group")
  id = check_id(id, "delete_group")
  local url, bad = group_url(self, id, "DELETE")
  if not url then return fail(bad) end
  local ok, err, code = group_call(self, "DELETE", url, nil, true)
  if not ok then return nil, err, code end
  return true
end

-- }====================================================================

--- Adds the methods to the client class. Called once, by scim.client.
-- @tparam table class the client's methods table
-- @tparam table internals its helpers
function M.install(class, internals)
  local I = internals
  argerror = I.argerror
  check_open = I.check_open
  check_id = I.check_id
  call = I.call
  fail = I.fail
  local_error = I.local_error
  member_url = I.member_url
  with_schemas = I.with_schemas
  split_operations = I.split_operations
  patch_schema = I.patch_schema
  list_options = I.list_options
  pager = I.pager
  projection = I.projection
  send = I.send
  unsupported = I.unsupported
  raising, collect = I.raising, I.collect
  for k, v in pairs(Client) do class[k] = v end
end

return M
