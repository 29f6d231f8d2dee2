--- Attribute paths: parsing, resolving against a dialect, reading and writing values.
--   path   = [ schema ":" ] attr [ "[" fattr SP "eq" SP value "]" ] [ "." sub ]
--   schema = a URN (urn:...) or a short name the dialect defines (enterprise, ...)
-- The mapping's own paths (`parse`, `resolve`, `get`, `set`) and the plain filter-path check
-- `scim.filter` uses (`check_path`). Private to scim.mapping and scim.filter; the public
-- entry points are `scim.mapping.parse_path` and `scim.filter.check_path`.
-- @module scim.mapping.path

local util = require "scim.mapping.util"

local field, field_key, present = util.field, util.field_key, util.present
local DIALECTS = util.DIALECTS

local path = {}

-- Core User attributes (RFC 7643 4.1), canonical spelling by lower-cased name. Attribute
-- names are case-insensitive in SCIM; a path is rewritten to the canonical spelling so the
-- JSON we send matches what servers return, and a typo ("tittle") is caught at compile time.
local CORE_ATTRS = {}
for _, n in ipairs{ "userName", "name", "displayName", "nickName", "profileUrl", "title",
  "userType", "preferredLanguage", "locale", "timezone", "active", "password", "emails",
  "phoneNumbers", "ims", "photos", "addresses", "groups", "entitlements", "roles",
  "x509Certificates", "externalId", "id", "meta" } do
  CORE_ATTRS[n:lower()] = n
end
local MULTI_VALUED = { emails = true, phoneNumbers = true, ims = true, photos = true,
  addresses = true, groups = true, entitlements = true, roles = true, x509Certificates = true }
local SINGULAR_COMPLEX = { name = true, meta = true }
-- Attributes a mapping may never write (server-assigned or write-only secrets we never read).
local NEVER_WRITE = { id = true, meta = true, groups = true, password = true }

--{====================================================================
-- Plain attribute paths (filters): `[URN ":"] name ["." subname]`
--=====================================================================

-- ATTRNAME = ALPHA *(nameChar), nameChar = "-" / "_" / DIGIT / ALPHA (RFC 7644 3.10);
-- `$ref` is the one RFC 7643 attribute name that starts with "$".
local function valid_name(s)
  return s:find("^[%a][%w_%-]*$") ~= nil or s == "$ref"
end

--- Checks an attribute path as a filter takes it: `[URN ":"] name ["." subname]`.
-- Examples: `userName`, `name.givenName`, `meta.lastModified`,
-- `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`.
-- @tparam string text the attribute path
-- @treturn string the path
-- @treturn[2] nil
-- @treturn[2] string why it is not valid
function path.check_path(text)
  if type(text) ~= "string" or text == "" then
    return nil, "attribute path must be a non-empty string"
  end
  local attr = text
  if text:sub(1, 4):lower() == "urn:" then
    -- The URN is everything up to the last ':'; it may contain dots ("2.0").
    local urn, rest = text:match("^(urn:[%w%.%-_:]+):([^:]+)$")
    if not urn then return nil, "bad attribute path '" .. text .. "'" end
    attr = rest
  end
  local name, sub = attr:match("^([^%.]+)%.([^%.]+)$")
  if not name then name = attr end
  if not valid_name(name) or (sub and not valid_name(sub)) then
    return nil, "bad attribute path '" .. text .. "'"
  end
  return text
end

--}====================================================================

--{====================================================================
-- Mapping paths
--=====================================================================

local function path_error(text, pos, msg)
  return nil, string.format("invalid attribute path '%s': %s at character %d", text, msg, pos)
end

local function scan_name(s, pos)
  local name = s:match("^[%a][%w_%-]*", pos)
  return name, name and pos + #name
end

local function scan_json_string(s, pos)  -- pos is at the opening quote
  local out, i = {}, pos + 1
  while i <= #s do
    local c = s:sub(i, i)
    if c == '"' then return table.concat(out), i + 1 end
    if c == "\\" then
      local e = s:sub(i + 1, i + 1)
      local simple = ({ ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
        n = "\n", r = "\r", t = "\t" })[e]
      if simple then
        out[#out + 1], i = simple, i + 2
      elseif e == "u" and s:match("^%x%x%x%x", i + 2) then
        out[#out + 1], i = utf8.char(tonumber(s:sub(i + 2, i + 5), 16)), i + 6
      else
        return nil, i
      end
    else
      out[#out + 1], i = c, i + 1
    end
  end
  return nil, i
end

--- Parses an attribute path into its parts (no dialect needed).
-- @tparam string text e.g. `emails[type eq "work"].value`
-- @treturn table `{ text=, schema=, attr=, filter={attr=,value=}, sub= }`
-- @treturn[2] nil
-- @treturn[2] string what is wrong and where
function path.parse(text)
  if type(text) ~= "string" or text == "" then
    return nil, "invalid attribute path: expected a non-empty string"
  end
  local p = { text = text }
  local bracket = text:find("[", 1, true) or (#text + 1)
  local head = text:sub(1, bracket - 1)
  local colon = head:match("^.*():")
  local pos = 1
  if colon then
    p.schema = text:sub(1, colon - 1)
    if p.schema == "" then return path_error(text, 1, "empty schema name") end
    if not p.schema:lower():match("^urn:") and not p.schema:match("^[%a][%w_%-]*$") then
      return path_error(text, 1, "a schema is a URN (urn:...) or a short name like enterprise")
    end
    pos = colon + 1
  end
  local name, npos = scan_name(text, pos)
  if not name then return path_error(text, pos, "expected an attribute name") end
  p.attr, pos = name, npos
  if text:sub(pos, pos) == "[" then
    pos = pos + 1
    pos = text:match("^%s*()", pos)
    local fattr, fpos = scan_name(text, pos)
    if not fattr then return path_error(text, pos, "expected a filter attribute name") end
    pos = fpos
    local op, opos = text:match("^%s+(%a+)%s+()", pos)
    if not op or op:lower() ~= "eq" then
      return path_error(text, pos, "only 'eq' filters are supported, e.g. [type eq \"work\"]")
    end
    pos = opos
    local value
    if text:sub(pos, pos) == '"' then
      local v, vpos = scan_json_string(text, pos)
      if not v then return path_error(text, vpos, "bad string in filter") end
      value, pos = v, vpos
    else
      local word = text:match("^%a+", pos)
      if word == "true" or word == "false" then
        value, pos = word == "true", pos + #word
      else
        return path_error(text, pos, "expected a quoted string, true or false")
      end
    end
    pos = text:match("^%s*()", pos)
    if text:sub(pos, pos) ~= "]" then return path_error(text, pos, "expected ']'") end
    pos = pos + 1
    p.filter = { attr = fattr, value = value }
  end
  if text:sub(pos, pos) == "." then
    local sub, spos = scan_name(text, pos + 1)
    if not sub then return path_error(text, pos + 1, "expected a sub-attribute name") end
    p.sub, pos = sub, spos
  end
  if pos <= #text then
    return path_error(text, pos, "unexpected '" .. text:sub(pos, pos) .. "'")
  end
  if p.filter and not p.sub then
    return path_error(text, #text + 1,
      "a filtered path needs a sub-attribute, e.g. " .. text .. ".value")
  end
  return p
end

--- The text of a parsed path, as a PatchOp `path` (RFC 7644 3.5.2); `with_sub = false`
-- leaves the sub-attribute out (the path of a filtered element).
function path.text(p, with_sub)
  local t = (p.schema and (p.schema .. ":") or "") .. p.attr
  if p.filter then
    local v = p.filter.value
    t = t .. "[" .. p.filter.attr .. " eq "
      .. (type(v) == "string" and util.json_string(v) or tostring(v)) .. "]"
  end
  if p.sub and with_sub ~= false then t = t .. "." .. p.sub end
  return t
end

local known_aliases  -- short schema name -> true, over all shipped dialects (lazy)
local function alias_known_anywhere(alias)
  if not known_aliases then
    known_aliases = {}
    for _, dn in ipairs(DIALECTS) do
      local ok, d = pcall(require, "scim.dialects." .. dn)
      if ok then
        for a in pairs(d.extensions or {}) do known_aliases[a:lower()] = true end
      end
    end
  end
  return known_aliases[alias:lower()]
end

-- Resolves a parsed path against the dialect: schema short names and translations,
-- canonical core names, and the checks that need to know core from extension.
-- Returns the resolved path, or nil plus a reason the dialect cannot take it ("skip"),
-- or nil, a message and "error" for a path no dialect could take.
function path.resolve(p, d)
  local r = { filter = p.filter, sub = p.sub, attr = p.attr }
  local schema = p.schema
  if schema and not schema:lower():match("^urn:") then
    local urn
    for a, u in pairs(d.extensions or {}) do
      if a:lower() == schema:lower() then urn = u end
    end
    if not urn then
      if alias_known_anywhere(schema) then
        return nil, "dialect " .. d.name .. " has no '" .. schema .. "' extension", "skip"
      end
      local names = {}
      for a in pairs(d.extensions or {}) do names[#names + 1] = a end
      table.sort(names)
      return nil, "unknown schema name '" .. schema .. "' (this dialect knows: "
        .. table.concat(names, ", ") .. "; or write the full URN)", "error"
    end
    schema = urn
  end
  if schema then
    for from, to in pairs(d.schema_translate or {}) do
      if from:lower() == schema:lower() then schema = to end
    end
    if schema:lower() == d.core_schema:lower() then schema = nil end
  end
  r.schema = schema
  if not schema then
    local canon = CORE_ATTRS[p.attr:lower()]
    if not canon then
      return nil, "unknown core attribute '" .. p.attr .. "' (extension attributes need "
        .. "their schema, e.g. enterprise:" .. p.attr .. ")", "error"
    end
    r.attr = canon
    if NEVER_WRITE[canon] then
      return nil, "'" .. canon .. "' is set by the server and cannot be mapped", "error"
    end
    if p.filter and SINGULAR_COMPLEX[canon] then
      return nil, "'" .. canon .. "' is not multi-valued: it takes no [filter]", "error"
    end
    if MULTI_VALUED[canon] and not p.filter then
      return nil, "'" .. canon .. "' is multi-valued: say which entry, e.g. " .. canon
        .. '[type eq "work"].value', "error"
    end
    if canon == "name" and not p.sub then
      return nil, "'name' is complex: map a part such as name.givenName", "error"
    end
  end
  r.text = path.text(r)
  r.key = r.text:lower()
  return r
end

--}====================================================================

--{====================================================================
-- Reading and writing values at a path (a resolved path `r`)
--=====================================================================

-- The table holding r.attr in resource (the resource itself or an extension object).
function path.container(resource, r, create)
  if not r.schema then return resource end
  local k = field_key(resource, r.schema)
  if k then return resource[k] end
  if not create then return nil end
  local c = {}
  resource[r.schema] = c
  return c
end

local function filter_match(el, f)
  if type(el) ~= "table" then return false end
  local v = field(el, f.attr)
  if type(v) == "string" and type(f.value) == "string" then
    return v:lower() == f.value:lower()
  end
  return v == f.value
end

-- The multi-valued element a filter selects (the primary one if several match).
function path.find_element(arr, f)
  if type(arr) ~= "table" then return nil end
  local first
  for i, el in ipairs(arr) do
    if filter_match(el, f) then
      if field(el, "primary") == true then return el, i end
      first = first or i
    end
  end
  if first then return arr[first], first end
  return nil
end

--- The value at a resolved path, or nil (JSON null counts as absent).
function path.get(resource, r)
  local c = path.container(resource, r, false)
  if type(c) ~= "table" then return nil end
  local v = field(c, r.attr)
  if r.filter then v = path.find_element(v, r.filter) end
  if r.sub then v = field(v, r.sub) end
  if not present(v) then return nil end
  return v
end

--- The value at a resolved path of a resource spelled as `to_resource` builds it (our
-- canonical names): keys are looked up as they are, without the case-insensitive fallback
-- `get` pays for on every absent attribute.
function path.get_own(resource, r)
  local c = resource
  if r.schema then c = resource[r.schema] end
  if type(c) ~= "table" then return nil end
  local v = c[r.attr]
  if v == nil then return nil end
  if r.filter then v = path.find_element(v, r.filter) end
  if r.sub then
    if type(v) ~= "table" then return nil end
    v = v[r.sub]
  end
  if not present(v) then return nil end
  return v
end

--- Writes a value at a resolved path of a resource being built (spelled with our canonical
-- names, as `to_resource` builds it: keys are used as they are), creating the extension
-- object, complex value or multi-valued entry it needs.
function path.set(resource, r, value)
  local c = resource
  local schema = r.schema
  if schema then
    c = resource[schema]
    if c == nil then c = {}; resource[schema] = c end
  end
  if r.filter then
    local arr = c[r.attr]
    if arr == nil then arr = {}; c[r.attr] = arr end
    local el = path.find_element(arr, r.filter)
    if not el then
      el = { [r.filter.attr] = r.filter.value }
      -- The first entry the row creates is the primary one (RFC 7643 allows one).
      if #arr == 0 then el.primary = true end
      arr[#arr + 1] = el
    end
    el[r.sub] = value
  elseif r.sub then
    local o = c[r.attr]
    if type(o) ~= "table" then o = {}; c[r.attr] = o end
    o[r.sub] = value
  else
    c[r.attr] = value
  end
end

--- Reads a reference's SCIM id from a resource (`value` or, for Meta, `managerId`).
-- @tparam table d the dialect
-- @tparam table resource
-- @treturn string|nil the id
function path.reference_id(d, resource)
  local mgr = field(field(resource, d.enterprise_schema), "manager")
  if type(mgr) ~= "table" then
    return (type(mgr) == "string" and mgr ~= "") and mgr or nil  -- Azure-style plain id
  end
  for _, k in ipairs(d.manager.read) do
    local v = field(mgr, k)
    if type(v) == "number" then return util.int_string(v) end  -- v1 ids are numbers
    if present(v) and v ~= "" then return tostring(v) end
  end
  return nil
end

--}====================================================================

return path
