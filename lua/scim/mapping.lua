--- Field mappings: CSV rows to SCIM resources and back.
--
-- A mapping is a Lua table (usually a file returning one) that says which CSV column feeds
-- which SCIM attribute path. `compile` checks it once and turns every attribute path into a
-- small parsed form, so the per-row work is table lookups. The same compiled mapping builds a
-- resource from a row (`to_resource`), a row from a resource (`to_row`, for export), the
-- PatchOp operations that bring a resource in line with a row (`diff`) and the full record
-- for a PUT (`merge`). Provider differences come from the dialect (`scim.dialects.*`).
-- @module scim.mapping

local date = require "scim.mapping.date"

local mapping = {}

local Mapping = {}
local Mapping_mt = {
  __name = "scim.mapping",
  __index = Mapping,
  __tostring = function(m) return "scim.mapping (" .. m.source .. ")" end,
}

local DIALECTS = { "scim2", "meta", "workplace_v1" }
local JOBS = { create = true, update = true, delete = true, export = true, sync = true }
-- `required = true` means: wherever the row's attributes are written.
local WRITE_JOBS = { "create", "update", "sync" }
local TYPES = { string = true, boolean = true, integer = true, date = true }

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

local ENTRY_KEYS = {
  column = true, attribute = true, aliases = true, type = true, format = true, as = true,
  transform = true, value = true, export = true, default = true, constant = true,
  required = true, empty = true, reference = true, jobs = true, dialects = true,
  ignore_case = true, export_only = true,
}
local TOP_KEYS = { key = true, unknown_columns = true, trim = true, description = true }

-- The targets a row asked to clear (`empty = "remove"`) ride in the resource's metatable:
-- invisible to the JSON encoder and to pairs, and kept by copies that keep the metatable.
local function clears_of(resource)
  local mt = getmetatable(resource)
  return type(mt) == "table" and mt.scim_clears or nil
end

--{====================================================================
-- Small helpers
--=====================================================================

local SPACE_BYTE = { [9] = true, [10] = true, [11] = true, [12] = true, [13] = true, [32] = true }
local function trim(s)
  -- Runs on every cell: most have no surrounding space, so skip the two gsubs for those.
  if not (SPACE_BYTE[s:byte(1)] or SPACE_BYTE[s:byte(-1)]) then return s end
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- cjson decodes JSON null as a lightuserdata sentinel; for reading values it is "absent".
local function present(v)
  return v ~= nil and type(v) ~= "userdata"
end

local norm_cache, norm_cache_n = {}, 0
--- Normalizes a header name: lower-case, no BOM, surrounding space gone, inner runs of
-- space collapsed, so "  First   Name" matches "first name".
local function norm(s)
  local n = norm_cache[s]
  if n then return n end
  n = trim(s:gsub("^\239\187\191", "")):gsub("%s+", " "):lower()
  if norm_cache_n >= 4096 then norm_cache, norm_cache_n = {}, 0 end  -- bound the memo
  norm_cache[s], norm_cache_n = n, norm_cache_n + 1
  return n
end

-- Reads t[name], falling back to a case-insensitive match: SCIM attribute names and schema
-- URNs are case-insensitive and servers do not all answer in our spelling.
local function field(t, name)
  if type(t) ~= "table" then return nil end
  local v = t[name]
  if v ~= nil then return v end
  local lname = name:lower()
  for k, val in pairs(t) do
    if type(k) == "string" and k:lower() == lname then return val end
  end
  return nil
end

-- The key under which t holds name (case-insensitively), or nil.
local function field_key(t, name)
  if t[name] ~= nil then return name end
  local lname = name:lower()
  for k in pairs(t) do
    if type(k) == "string" and k:lower() == lname then return k end
  end
  return nil
end

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = deep_copy(x) end
  return c
end

local function is_array(t)
  return type(t) == "table" and (t[1] ~= nil or next(t) == nil)
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list or {}) do s[v] = true end
  return s
end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function int_string(n)
  local i = math.tointeger(n)
  return i and tostring(i) or tostring(n)
end

--}====================================================================

--{====================================================================
-- Attribute paths
--   path   = [ schema ":" ] attr [ "[" fattr SP "eq" SP value "]" ] [ "." sub ]
--   schema = a URN (urn:...) or a short name the dialect defines (enterprise, ...)
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
function mapping.parse_path(text)
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

-- The text of a parsed path, as a PatchOp `path` (RFC 7644 3.5.2).
local function path_text(p, with_sub)
  local t = (p.schema and (p.schema .. ":") or "") .. p.attr
  if p.filter then
    local v = p.filter.value
    t = t .. "[" .. p.filter.attr .. " eq "
      .. (type(v) == "string" and json_string(v) or tostring(v)) .. "]"
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
local function resolve_path(p, d)
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
  r.text = path_text(r)
  r.key = r.text:lower()
  return r
end

--}====================================================================

--{====================================================================
-- Reading and writing values at a path
--=====================================================================

-- The table holding r.attr in resource (the resource itself or an extension object).
local function container(resource, r, create)
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
local function find_element(arr, f)
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

local function get_value(resource, r)
  local c = container(resource, r, false)
  if type(c) ~= "table" then return nil end
  local v = field(c, r.attr)
  if r.filter then v = find_element(v, r.filter) end
  if r.sub then v = field(v, r.sub) end
  if not present(v) then return nil end
  return v
end

local function set_value(resource, r, value)
  local c = container(resource, r, true)
  if r.filter then
    local arr = c[r.attr]
    if arr == nil then arr = {}; c[r.attr] = arr end
    local el = find_element(arr, r.filter)
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

--}====================================================================

--{====================================================================
-- Compiling a mapping
--=====================================================================

local function load_dialect(dialect)
  if type(dialect) == "table" then return dialect end
  dialect = dialect or "scim2"
  if type(dialect) ~= "string" or not dialect:match("^[%w_]+$") then
    error("unknown dialect '" .. tostring(dialect) .. "' (known: "
      .. table.concat(DIALECTS, ", ") .. ")", 3)
  end
  local ok, d = pcall(require, "scim.dialects." .. dialect)
  if not ok then
    error("unknown dialect '" .. dialect .. "' (known: " .. table.concat(DIALECTS, ", ")
      .. ")", 3)
  end
  return d
end

local MappingError = {}  -- marker for errors raised while compiling

local function fail(msg)
  error(setmetatable({ msg = msg }, MappingError), 0)
end

local function check_jobs(where, v, what)
  if v == true then return set_of(WRITE_JOBS) end
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then fail(where .. ": '" .. what .. "' must be true or a list of jobs") end
  local s = {}
  for _, j in ipairs(v) do
    if not JOBS[j] then
      fail(where .. ": unknown job '" .. tostring(j) .. "' in '" .. what
        .. "' (jobs: create, update, delete, export, sync)")
    end
    s[j] = true
  end
  return s
end

local function compile_entry(d, i, e)
  local label = "entry " .. i
  if type(e) ~= "table" then fail(label .. ": expected a table, got " .. type(e)) end
  local column = e.column or e[1]
  local attribute = e.attribute or e[2]
  if column ~= nil and (type(column) ~= "string" or trim(column) == "") then
    fail(label .. ": the column must be a non-empty string")
  end
  label = label .. (column and (" ('" .. column .. "')") or
    (type(attribute) == "string" and (" (" .. attribute .. ")") or ""))
  for k in pairs(e) do
    if not (k == 1 or k == 2 or ENTRY_KEYS[k]) then
      fail(label .. ": unknown key '" .. tostring(k) .. "'")
    end
  end
  if e.column and e[1] then fail(label .. ": column given twice ([1] and column=)") end
  if e.attribute and e[2] then fail(label .. ": attribute given twice ([2] and attribute=)") end
  local en = { index = i, label = label, column = column, targets = {} }

  local function opt(k, t)
    local v = e[k]
    if v ~= nil and type(v) ~= t then
      fail(label .. ": '" .. k .. "' must be a " .. t .. ", got " .. type(v))
    end
    return v
  end
  en.transform = opt("transform", "function")
  en.value_fn = opt("value", "function")
  en.export = e.export
  if en.export ~= nil and en.export ~= false and type(en.export) ~= "function" then
    fail(label .. ": 'export' must be a function or false")
  end
  en.type = opt("type", "string") or "string"
  en.type_given = e.type ~= nil
  if not TYPES[en.type] then
    fail(label .. ": unknown type '" .. en.type .. "' (string, boolean, integer, date)")
  end
  local fmt = opt("format", "string")
  if fmt and en.type ~= "date" then fail(label .. ": 'format' is only for type = \"date\"") end
  if en.type == "date" then
    local df, err = date.compile_format(fmt or "%Y-%m-%d")
    if not df then fail(label .. ": " .. err) end
    en.date_format = df
  end
  en.as = opt("as", "string")
  if en.as and en.as ~= "epoch" and en.as ~= "iso" and en.as ~= "date" then
    fail(label .. ": 'as' must be \"epoch\", \"iso\" or \"date\"")
  end
  if en.as and en.type ~= "date" then fail(label .. ": 'as' is only for type = \"date\"") end
  en.default = e.default
  en.constant = e.constant
  en.empty = opt("empty", "string")
  if en.empty and en.empty ~= "remove" and en.empty ~= "ignore" then
    fail(label .. ": 'empty' must be \"remove\" or \"ignore\"")
  end
  en.ignore_case = opt("ignore_case", "boolean")
  en.export_only = opt("export_only", "boolean")
  en.aliases = opt("aliases", "table") or {}
  for _, a in ipairs(en.aliases) do
    if type(a) ~= "string" then fail(label .. ": aliases must be strings") end
  end
  if e.required ~= nil and e.required ~= false then
    en.required = check_jobs(label, e.required, "required")
    en.required_always = e.required == true
  end
  if e.jobs ~= nil then en.jobs = check_jobs(label, e.jobs, "jobs") end
  if e.dialects ~= nil then
    local ds = opt("dialects", "table")
    local ok = false
    for _, dn in ipairs(ds) do
      if type(dn) ~= "string" then fail(label .. ": dialects must be names") end
      local known = dn == d.name
      for _, k in ipairs(DIALECTS) do known = known or k == dn end
      if not known then
        fail(label .. ": unknown dialect '" .. dn .. "' in 'dialects' (known: "
          .. table.concat(DIALECTS, ", ") .. ")")
      end
      if dn == d.name then ok = true end
    end
    if not ok then en.unavailable = "only used with dialect " .. table.concat(ds, ", ") end
  end

  -- Where the value comes from: exactly one of a column, a constant, a value function.
  if en.constant ~= nil and (column or en.value_fn or en.transform) then
    fail(label .. ": a constant takes no column, value or transform")
  end
  if en.value_fn and en.transform then
    fail(label .. ": give a transform (of the cell) or a value (of the row), not both")
  end
  if column == nil and en.constant == nil and not en.value_fn then
    fail(label .. ": give a column, a constant or a value function")
  end
  if en.default ~= nil and not column then fail(label .. ": 'default' needs a column") end
  if en.required and not column then fail(label .. ": 'required' needs a column") end

  if e.reference ~= nil then
    if e.reference ~= "manager" then
      fail(label .. ": unknown reference '" .. tostring(e.reference) .. "' (supported: manager)")
    end
    if attribute ~= nil then fail(label .. ": a reference takes no attribute path") end
    if not column then fail(label .. ": a reference needs a column") end
    en.reference = "manager"
    local ent = d.enterprise_schema
    en.targets[1] = { schema = ent, attr = "manager", sub = d.manager.write,
      text = ent .. ":manager." .. d.manager.write,
      key = (ent .. ":manager." .. d.manager.write):lower(), entry = en }
    return en
  end

  if type(attribute) == "string" then attribute = { attribute } end
  if type(attribute) ~= "table" or #attribute == 0 then
    fail(label .. ": give the SCIM attribute path (e.g. \"name.givenName\") or reference =")
  end
  local skipped  -- why a target is left out in this dialect
  for _, text in ipairs(attribute) do
    local p, perr = mapping.parse_path(text)
    if not p then fail(label .. ": " .. perr) end
    local r, why, kind = resolve_path(p, d)
    if not r then
      if kind == "error" then fail(label .. ": attribute '" .. text .. "': " .. why) end
      skipped = skipped or why
    else
      r.entry = en
      en.targets[#en.targets + 1] = r
      -- Read-only on this provider (accountstatusdetails): exported, never written.
      for _, ro in ipairs(d.read_only or {}) do
        if ro:lower() == (r.schema or r.attr):lower() then en.export_only = true end
      end
      if en.type == "date" and not en.as then
        r.as = d.date_format
        for _, ea in ipairs(d.epoch_attributes or {}) do
          if ea:lower() == r.key then r.as = "epoch" end
        end
      else
        r.as = en.as
      end
    end
  end
  -- An entry this dialect can take none of the targets of is kept (its column is known,
  -- check_header says why it is ignored) but never evaluated.
  if #en.targets == 0 then en.unavailable = en.unavailable or skipped end
  if en.ignore_case == nil then
    -- caseExact = false attributes (RFC 7643): userName, emails.value, per dialect.
    local first = en.targets[1]
    if first then
      local k = (first.schema and first.key) or (first.attr .. (first.sub and ("." .. first.sub)
        or "")):lower()
      for _, ci in ipairs(d.case_insensitive or {}) do
        if ci:lower() == k then en.ignore_case = true end
      end
    end
  end
  return en
end

local function compile(tbl, opts)
  local d = load_dialect(opts.dialect)
  local m = setmetatable({
    source = opts.source or "mapping",
    dialect = d,
    entries = {},
    columns = {},
    reference_columns = {},
    reference_entries = {},  -- the entry behind each of reference_columns
    unknown_columns = "error",
    trim = true,
  }, Mapping_mt)
  for k in pairs(tbl) do
    if not (math.type(k) == "integer" and k >= 1 and k <= #tbl) and not TOP_KEYS[k] then
      fail("unknown key '" .. tostring(k) .. "' (expected key, unknown_columns, trim, "
        .. "description and a list of entries)")
    end
  end
  if #tbl == 0 then fail("no entries: list at least one { column, attribute }") end
  m.key_attribute = tbl.key or "userName"
  if m.key_attribute ~= "userName" and m.key_attribute ~= "externalId" then
    fail("key must be \"userName\" or \"externalId\", got " .. tostring(m.key_attribute))
  end
  if tbl.unknown_columns ~= nil then
    if tbl.unknown_columns ~= "error" and tbl.unknown_columns ~= "ignore" then
      fail("unknown_columns must be \"error\" or \"ignore\"")
    end
    m.unknown_columns = tbl.unknown_columns
  end
  if tbl.trim ~= nil then m.trim = tbl.trim and true or false end

  local by_path, names = {}, {}  -- target key -> entry; normalized name -> column
  m.column_names = {}             -- column -> { normalized names }
  for i = 1, #tbl do
    local en = compile_entry(d, i, tbl[i])
    m.entries[i] = en
    if en.column then
      local col = en.column
      local list = m.column_names[col]
      if not list then
        local ncol = norm(col)
        list = { ncol }
        m.column_names[col] = list
        if names[ncol] and names[ncol] ~= col then
          fail(en.label .. ": column '" .. col .. "' is the same header as '" .. names[ncol] .. "'")
        end
        names[ncol] = col
      end
      for _, a in ipairs(en.aliases) do
        local na = norm(a)
        if names[na] and names[na] ~= col then
          fail(en.label .. ": alias '" .. a .. "' is also column '" .. names[na] .. "'")
        end
        if not names[na] then
          names[na] = col
          list[#list + 1] = na
        end
      end
    end
    if not en.unavailable then
      for _, r in ipairs(en.targets) do
        local prev = by_path[r.key]
        if prev and not (prev.export_only or en.export_only) then
          fail(en.label .. ": attribute " .. r.text .. " is already fed by " .. prev.label)
        end
        if not prev or prev.export_only then by_path[r.key] = en end
      end
      if en.reference then
        m.reference_columns[en.reference] = en.column
        m.reference_entries[en.reference] = en
      end
    end
    if en.column and not en.unavailable and en.export ~= false then
      local listed = false
      for _, c in ipairs(m.columns) do if c == en.column then listed = true end end
      if not listed then m.columns[#m.columns + 1] = en.column end
    end
  end
  m.header_names = names

  -- The key: the entry that writes userName (or externalId) from a column.
  local key_path = m.key_attribute:lower()
  local ken = by_path[key_path]
  if not ken or not ken.column or ken.export_only then
    fail("no entry maps a column to the key attribute " .. m.key_attribute)
  end
  m.key_entry, m.key_column = ken, ken.column

  -- Targets diff and merge walk: every written path, plus name.formatted where the dialect
  -- derives it.
  m.targets = {}
  for _, en in ipairs(m.entries) do
    if not en.unavailable and not en.export_only then
      for _, r in ipairs(en.targets) do m.targets[#m.targets + 1] = r end
    end
  end
  if d.name_formatted and not by_path["name.formatted"] then
    m.derive_formatted = true
    m.targets[#m.targets + 1] = { attr = "name", sub = "formatted", text = "name.formatted",
      key = "name.formatted", entry = { type = "string", label = "name.formatted" } }
  end
  return m
end

--- Compiles a mapping table.
-- @tparam table tbl the mapping (see the README's mapping reference)
-- @tparam[opt] table opts `dialect` (name or dialect table, default "scim2"), `source`
--   (a name for messages, e.g. the file name)
-- @treturn scim.mapping the compiled mapping
-- @raise on a bad mapping, with a message naming the source and the entry
-- @usage local m = mapping.compile({ { "email", "userName" } }, { dialect = "meta" })
function mapping.compile(tbl, opts)
  if type(tbl) ~= "table" then error("bad argument #1 to 'compile' (table expected)", 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #2 to 'compile' (table expected)", 2) end
  for k in pairs(opts) do
    if k ~= "dialect" and k ~= "source" then
      error("bad argument #2 to 'compile' (unknown option '" .. tostring(k) .. "')", 2)
    end
  end
  local ok, res = pcall(compile, tbl, opts)
  if ok then return res end
  if getmetatable(res) == MappingError then
    error("mapping " .. (opts.source or "table") .. ": " .. res.msg, 0)
  end
  error(res, 0)
end

--- Loads and compiles a mapping file (a Lua file returning a mapping table).
-- The file runs in its own environment (reads fall back to the globals, writes stay local).
-- @tparam string path the file
-- @tparam[opt] table opts as for `compile` (`source` defaults to the path)
-- @treturn scim.mapping the compiled mapping
-- @treturn[2] nil
-- @treturn[2] string message naming the file (and entry)
-- @treturn[2] string code: "NOT_FOUND", "SYNTAX", "RUNTIME" or "INVALID"
function mapping.load(path, opts)
  if type(path) ~= "string" then error("bad argument #1 to 'load' (string expected)", 2) end
  opts = opts or {}
  local f = io.open(path, "rb")
  if not f then return nil, "mapping " .. path .. ": cannot open the file", "NOT_FOUND" end
  local src = f:read("a")
  f:close()
  local env = setmetatable({}, { __index = _G })
  local chunk, serr = load(src, "@" .. path, "t", env)
  if not chunk then return nil, "mapping " .. serr, "SYNTAX" end
  local ok, tbl = pcall(chunk)
  if not ok then return nil, "mapping " .. path .. ": " .. tostring(tbl), "RUNTIME" end
  if type(tbl) ~= "table" then
    return nil, "mapping " .. path .. ": the file must return a table, not " .. type(tbl),
      "INVALID"
  end
  local o = { dialect = opts.dialect, source = opts.source or path }
  local cok, m = pcall(mapping.compile, tbl, o)
  if not cok then return nil, tostring(m), "INVALID" end
  return m
end

--- The default mapping: the original sample's columns (examples/mappings/default.lua).
-- @tparam[opt] table opts as for `compile`
-- @treturn scim.mapping
function mapping.default(opts)
  opts = opts or {}
  return mapping.compile(require("scim.mapping.default"),
    { dialect = opts.dialect, source = opts.source or "default" })
end

--}====================================================================

--{====================================================================
-- Rows to resources
--=====================================================================

-- A row keyed by normalized header name.
local function normalized_row(row)
  local n = {}
  for k, v in pairs(row) do
    if type(k) == "string" then n[norm(k)] = v end
  end
  return n
end

-- The cell of a column: nil when the row has no such column.
local function cell(m, nrow, column)
  for _, name in ipairs(m.column_names[column]) do
    local v = nrow[name]
    if v ~= nil then
      if type(v) ~= "string" then v = tostring(v) end
      return m.trim and trim(v) or v
    end
  end
  return nil
end

-- Every column's cell, once per row: to_resource reads each of them and, when the mapping
-- has value or transform functions, hands them all to row_view as well.
local function cells_of(m, nrow)
  local cells = {}
  for col in pairs(m.column_names) do cells[col] = cell(m, nrow, col) end
  return cells
end

-- The row handed to value and transform functions: the file's own header names plus the
-- mapping's column names (as written and lower-cased), so row.status and row["Status"] work.
local function row_view(row, cells)
  local view = {}
  for k, v in pairs(row) do view[k] = v end
  for col, v in pairs(cells) do
    view[col] = v
    view[col:lower()] = v
  end
  return view
end

local function where(line, en)
  return (line and ("line " .. line .. ", ") or "")
    .. (en.column and ("field '" .. en.column .. "'") or en.label)
end

local TRUE_WORDS = { ["true"] = true, yes = true, ["1"] = true, y = true, on = true }
local FALSE_WORDS = { ["false"] = true, no = true, ["0"] = true, n = true, off = true }

-- Converts a cell or a transform's result to the entry's type. Dates become epoch seconds
-- here and take their wire form per target (`encode`).
local function convert(en, v)
  local t = en.type
  if t == "string" then
    if not en.type_given and (type(v) == "boolean" or type(v) == "number") then
      -- No type said: a function's boolean or number goes out as it is (active = false).
      return math.tointeger(v) or v
    end
    if type(v) == "number" then return int_string(v) end
    if type(v) == "boolean" then return tostring(v) end
    if type(v) ~= "string" then return nil, "expected a string, got " .. type(v) end
    return v
  elseif t == "boolean" then
    if type(v) == "boolean" then return v end
    if type(v) == "number" then v = int_string(v) end
    if type(v) == "string" then
      local w = v:lower()
      if TRUE_WORDS[w] then return true end
      if FALSE_WORDS[w] then return false end
    end
    return nil, "'" .. tostring(v) .. "' is not a boolean (true/false, yes/no, 1/0)"
  elseif t == "integer" then
    if type(v) == "number" and math.tointeger(v) then return math.tointeger(v) end
    if type(v) == "string" and v:match("^%s*[+-]?%d+%s*$") then
      local i = math.tointeger(tonumber(v))
      if i then return i end
    end
    return nil, "'" .. tostring(v) .. "' is not an integer"
  else  -- date
    if type(v) == "number" then return math.tointeger(v) or math.floor(v) end
    if type(v) ~= "string" then return nil, "expected a date, got " .. type(v) end
    local e, why = date.parse(en.date_format, v)
    if e then return e end
    return nil, "'" .. v .. "' is not a date in the format " .. en.date_format.text
      .. (why and (" (" .. why .. ")") or "")
  end
end

local function encode(r, v)
  if r.as == "epoch" then return v end
  if r.as == "date" then return os.date("!%Y-%m-%d", v) end
  if r.as == "iso" then return date.iso(v) end
  return v
end

local function job_allows(en, job)
  if not en.jobs then return true end
  return job ~= nil and en.jobs[job] == true
end

local function is_required(en, job)
  if not en.required then return false end
  if job == nil then return en.required_always end
  return en.required[job] == true
end

-- Evaluates one entry for a row (`view` is the row_view, given when the entry has a value
-- or transform function). Returns "value", v; or "clear" (an empty cell that means
-- remove); or "error", message; or nothing when there is nothing to write.
local function entry_value(en, cells, view, line, job)
  local v
  if en.constant ~= nil then
    local cv, err = convert(en, en.constant)
    if cv == nil then return "error", where(line, en) .. ": constant: " .. err end
    return "value", cv
  end
  if en.column then
    v = cells[en.column]
    if v == nil then return nil end                 -- column absent: leave the attribute be
    if v == "" and is_required(en, job) then
      return "error", where(line, en) .. ": a value is required"
    end
  end
  if en.value_fn then
    local ok, res = pcall(en.value_fn, view)
    if not ok then
      return "error", where(line, en) .. ": value function failed: " .. tostring(res)
    end
    v = res
    if v == nil or v == "" then return nil end
  elseif v == "" then
    if en.default ~= nil then
      v = en.default
    elseif en.empty == "remove" then
      return "clear"
    else
      return nil
    end
  elseif en.transform then
    local ok, res = pcall(en.transform, v, view)
    if not ok then return "error", where(line, en) .. ": transform failed: " .. tostring(res) end
    v = res
    if v == nil then return nil end
  end
  local cv, err = convert(en, v)
  if cv == nil then return "error", where(line, en) .. ": " .. err end
  return "value", cv
end

local function order_schemas(m, resource)
  local d = m.dialect
  local used, list = {}, { d.core_schema }
  for k, v in pairs(resource) do
    if type(k) == "string" and k:find(":", 1, true) and type(v) == "table" then used[k] = true end
  end
  for _, s in ipairs(d.schema_order or {}) do
    if used[s] then list[#list + 1] = s; used[s] = nil end
  end
  local rest = {}
  for s in pairs(used) do rest[#rest + 1] = s end
  table.sort(rest)
  for _, s in ipairs(rest) do list[#list + 1] = s end
  return list
end

local function derive_formatted(resource)
  local name = resource.name
  if type(name) ~= "table" or name.formatted ~= nil then return end
  local g, f = name.givenName, name.familyName
  if type(g) == "string" and type(f) == "string" then
    name.formatted = (g .. " " .. f):gsub("^ +", ""):gsub(" +$", "")
  end
end

--- Builds the SCIM resource a row describes.
-- Only columns the row has are written, so a file with a few columns updates only those.
-- References (the manager) are not written: resolve `references(row)` and `set_reference`.
-- @tparam table row the CSV row, keyed by header name
-- @tparam[opt] integer line the row's line in the file, for messages
-- @tparam[opt] string job "create", "update", ...: selects `jobs =` entries, `required`
--   checks and the dialect's create defaults
-- @treturn table the resource, including `schemas`
-- @treturn[2] nil
-- @treturn[2] string "line 7, field 'start date': ..."
-- @treturn[2] string code: "INVALID_VALUE"
function Mapping:to_resource(row, line, job)
  if type(row) ~= "table" then error("bad argument #1 to 'to_resource' (table expected)", 2) end
  local cells = cells_of(self, normalized_row(row))
  local view
  local resource, cleared = {}, nil
  for _, en in ipairs(self.entries) do
    if not en.unavailable and not en.export_only and not en.reference and job_allows(en, job) then
      if (en.value_fn or en.transform) and not view then view = row_view(row, cells) end
      local what, v = entry_value(en, cells, view, line, job)
      if what == "error" then return nil, v, "INVALID_VALUE" end
      if what == "value" then
        for _, r in ipairs(en.targets) do
          set_value(resource, r, en.type == "date" and encode(r, v) or v)
        end
      elseif what == "clear" then
        cleared = cleared or {}
        for _, r in ipairs(en.targets) do cleared[#cleared + 1] = r end
      end
    elseif en.reference and job_allows(en, job) then
      local v = cells[en.column]
      if v == "" and is_required(en, job) then
        return nil, where(line, en) .. ": a value is required", "INVALID_VALUE"
      end
      if v == "" and en.empty == "remove" then
        cleared = cleared or {}
        cleared[#cleared + 1] = en.targets[1]
      end
    end
  end
  local key = field(resource, self.key_attribute)
  if key == nil or key == "" then
    return nil, where(line, self.key_entry) .. ": the key (" .. self.key_attribute
      .. ") is empty", "INVALID_VALUE"
  end
  if self.derive_formatted then derive_formatted(resource) end
  if job == "create" then
    for schema, defaults in pairs(self.dialect.create_defaults or {}) do
      local ext = resource[schema]
      if type(ext) == "table" then
        for k, v in pairs(defaults) do
          if ext[k] == nil then ext[k] = v end
        end
      end
    end
  end
  resource.schemas = order_schemas(self, resource)
  if cleared then setmetatable(resource, { scim_clears = cleared }) end
  return resource
end

--- The row's key: the value it gives the key attribute (userName or externalId).
-- Keys compare case-insensitively: use `key_id` to compare.
-- @tparam table row
-- @tparam[opt] integer line
-- @treturn string the key
-- @treturn[2] nil
-- @treturn[2] string message
function Mapping:key(row, line)
  local en = self.key_entry
  local nrow = normalized_row(row)
  local v = cell(self, nrow, en.column)
  if v == nil or v == "" then
    return nil, where(line, en) .. ": the key (" .. self.key_attribute .. ") is empty"
  end
  if en.transform then
    local ok, res = pcall(en.transform, v, row_view(row, cells_of(self, nrow)))
    if not ok then return nil, where(line, en) .. ": transform failed: " .. tostring(res) end
    if res == nil then return nil, where(line, en) .. ": the key is empty" end
    v = tostring(res)
  end
  return v
end

--- The form of a key used for comparisons (SCIM userName is case-insensitive).
-- @tparam string key
-- @treturn string
function Mapping.key_id(_, key)
  return key and key:lower()
end

--- The references a row makes: the keys of other people, by reference name.
-- @tparam table row
-- @treturn table e.g. `{ manager = "boss@example.com" }` (empty cells left out)
function Mapping:references(row)
  local refs = {}
  local nrow
  for name, column in pairs(self.reference_columns) do
    nrow = nrow or normalized_row(row)
    local v = cell(self, nrow, column)
    if v and v ~= "" then
      local en = self.reference_entries[name]
      if en.transform then
        local ok, res = pcall(en.transform, v, row_view(row, cells_of(self, nrow)))
        v = ok and res ~= nil and tostring(res) or v
      end
      refs[name] = v
    end
  end
  return refs
end

--- Writes a reference's SCIM id into a resource, in the dialect's shape
-- (`<enterprise>:manager.value`, or `manager.managerId` for workplace_v1).
-- @tparam table resource
-- @tparam string name "manager"
-- @tparam string id the referenced person's SCIM id
function Mapping:set_reference(resource, name, id)
  if name ~= "manager" then error("bad argument #2 to 'set_reference' (unknown reference)", 2) end
  if id == nil then return end
  local d = self.dialect
  local ext = container(resource, { schema = d.enterprise_schema }, true)
  local k = field_key(ext, "manager") or "manager"
  ext[k] = { [d.manager.write] = tostring(id) }
  local schemas = resource.schemas
  if type(schemas) == "table" then
    for _, s in ipairs(schemas) do if s == d.enterprise_schema then return end end
    resource.schemas = order_schemas(self, resource)
  end
end

--- Reads a reference's SCIM id from a resource (`value` or, for Meta, `managerId`).
-- @tparam table resource
-- @tparam string name "manager"
-- @treturn string|nil the id
function Mapping:reference_id(resource, name)
  if name ~= "manager" then error("bad argument #2 to 'reference_id' (unknown reference)", 2) end
  local d = self.dialect
  local mgr = field(field(resource, d.enterprise_schema), "manager")
  if type(mgr) ~= "table" then
    return (type(mgr) == "string" and mgr ~= "") and mgr or nil  -- Azure-style plain id
  end
  for _, k in ipairs(d.manager.read) do
    local v = field(mgr, k)
    if type(v) == "number" then return int_string(v) end  -- v1 ids are numbers
    if present(v) and v ~= "" then return tostring(v) end
  end
  return nil
end

--}====================================================================

--{====================================================================
-- Resources to rows
--=====================================================================

-- The cell a SCIM value makes in the entry's column (the export form). Two values that make
-- the same cell are the same for diff: that is what makes export -> update a no-op.
local function cell_of(en, v, resource)
  if en.export then
    local ok, res = pcall(en.export, v, resource)
    if not ok then return nil, "export function failed: " .. tostring(res) end
    if res == nil then return "" end
    return type(res) == "number" and int_string(res) or tostring(res)
  end
  if v == nil then return "" end
  if en.type == "date" then
    local t = date.epoch(v)
    if t then return date.format(en.date_format, t) end
    return tostring(v)
  elseif en.type == "boolean" then
    if type(v) == "boolean" then return tostring(v) end
    local w = tostring(v):lower()
    if TRUE_WORDS[w] then return "true" end
    if FALSE_WORDS[w] then return "false" end
    return tostring(v)
  elseif type(v) == "number" then
    return int_string(v)
  elseif type(v) == "table" then
    return ""  -- a complex value where the mapping expects a scalar: nothing to show
  end
  return tostring(v)
end

--- Builds the row a resource makes (export). Columns are `m.columns`.
-- @tparam table resource a SCIM resource as the server returned it
-- @tparam[opt] function key_of_id maps a referenced id (the manager's) to that person's key;
--   without it reference columns are left empty
-- @treturn table row keyed by column name (every column present, "" when empty)
-- @treturn[2] nil
-- @treturn[2] string message naming the column
function Mapping:to_row(resource, key_of_id)
  local row, done = {}, {}
  for _, en in ipairs(self.entries) do
    local col = en.column
    if col and not done[col] and not en.unavailable and en.export ~= false then
      done[col] = true
      local c, err
      if en.reference then
        local id = self:reference_id(resource, en.reference)
        c = (id and key_of_id) and key_of_id(id) or ""
        c = c and tostring(c) or ""
      else
        c, err = cell_of(en, get_value(resource, en.targets[1]), resource)
        if not c then return nil, "column '" .. col .. "': " .. err end
      end
      row[col] = c
    end
  end
  return row
end

--}====================================================================

--{====================================================================
-- Comparing and merging
--=====================================================================

local function same(en, a, b, ca, cb)
  if a == nil or b == nil then return a == b end
  local x = cell_of(en, a, ca)
  local y = cell_of(en, b, cb)
  if x == nil or y == nil then return a == b end
  if en.ignore_case then return x:lower() == y:lower() end
  return x == y
end

-- PatchOp path of the element a filter selects (no sub-attribute).
local function element_path(r)
  return path_text(r, false)
end

--- The PatchOp operations that make `current` match `desired`, and what changes.
-- Only attributes the mapping writes and the row gave are compared; values that make the
-- same cell (dates, booleans, the case of an email) are equal. A new multi-valued entry is
-- an `add` of the whole entry (RFC 7644 3.5.2.3: a `replace` with a filter that matches
-- nothing fails); an existing one gets `replace` at the filtered path. `remove` only for
-- entries with `empty = "remove"` whose cell was empty.
-- @tparam table current the resource as the server has it
-- @tparam table desired the resource `to_resource` built (with references set)
-- @treturn table operations `{ {op=, path=, value=}, ... }` (empty when nothing changed)
-- @treturn table changes `{ {path=, column=, old=, new=}, ... }`
function Mapping:diff(current, desired)
  local ops, changes = {}, {}
  local adds = {}  -- grouped adds: path -> op (a new complex value or multi-valued entry)
  for _, r in ipairs(self.targets) do
    local en = r.entry
    local d = get_value(desired, r)
    if d ~= nil then
      local c, equal
      if en.reference then
        c = self:reference_id(current, en.reference)
        d = tostring(d)
        equal = c == d
      else
        c = get_value(current, r)
        equal = same(en, c, d, current, desired)
      end
      if not equal then
        changes[#changes + 1] = { path = r.text, column = en.column, old = c, new = d }
        local cont = container(current, r, false)
        local top = cont and field(cont, r.attr)
        if not present(top) then top = nil end
        if r.filter then
          local el = top and find_element(top, r.filter)
          if el then
            ops[#ops + 1] = { op = "replace", path = r.text, value = d }
          else
            local p = (r.schema and (r.schema .. ":") or "") .. r.attr
            local key = element_path(r):lower()
            local op = adds[key]
            if not op then
              local newel = { [r.filter.attr] = r.filter.value }
              local dl = get_value(desired, { schema = r.schema, attr = r.attr })
              local del = dl and find_element(dl, r.filter)
              if del and del.primary ~= nil then newel.primary = del.primary end
              op = { op = "add", path = p, value = { newel } }
              adds[key] = op
              ops[#ops + 1] = op
            end
            op.value[1][r.sub] = d
          end
        elseif en.reference then
          -- The whole manager: Meta answers with managerId where we write value, and a
          -- replace of manager.value would leave both behind.
          ops[#ops + 1] = { op = top == nil and "add" or "replace",
            path = r.schema .. ":" .. r.attr, value = { [r.sub] = d } }
        elseif r.sub and top == nil then
          local p = (r.schema and (r.schema .. ":") or "") .. r.attr
          local op = adds[p:lower()]
          if not op then
            op = { op = "add", path = p, value = {} }
            adds[p:lower()] = op
            ops[#ops + 1] = op
          end
          op.value[r.sub] = d
        else
          ops[#ops + 1] = { op = (c == nil and not r.sub) and "add" or "replace",
            path = r.text, value = d }
        end
      end
    end
  end
  for _, r in ipairs(clears_of(desired) or {}) do
    local en = r.entry
    local c
    if en and en.reference then c = self:reference_id(current, "manager")
    else c = get_value(current, r) end
    if c ~= nil then
      local path = r.text
      if en and en.reference then
        path = r.schema .. ":manager"
      elseif r.filter then
        -- Drop the whole entry when nothing but its type and primary flag would remain.
        local cont = container(current, r, false)
        local el = find_element(field(cont, r.attr), r.filter)
        local others = false
        for k in pairs(el) do
          local lk = type(k) == "string" and k:lower() or ""
          if lk ~= r.filter.attr:lower() and lk ~= "primary" and lk ~= r.sub:lower() then
            others = true
          end
        end
        if not others then path = element_path(r) end
      end
      ops[#ops + 1] = { op = "remove", path = path }
      changes[#changes + 1] = { path = r.text, column = en and en.column, old = c, new = nil }
    end
  end
  return ops, changes
end

local function remove_at(res, r, whole_reference)
  local cont = container(res, r, false)
  if type(cont) ~= "table" then return end
  local k = field_key(cont, r.attr)
  if not k then return end
  if whole_reference then cont[k] = nil; return end
  if r.filter then
    local arr = cont[k]
    local el, i = find_element(arr, r.filter)
    if not el then return end
    local sk = field_key(el, r.sub)
    if sk then el[sk] = nil end
    for ek in pairs(el) do
      local lk = type(ek) == "string" and ek:lower() or ""
      if lk ~= r.filter.attr:lower() and lk ~= "primary" then return end
    end
    table.remove(arr, i)
  elseif r.sub then
    local o = cont[k]
    if type(o) == "table" then
      local sk = field_key(o, r.sub)
      if sk then o[sk] = nil end
    end
  else
    cont[k] = nil
  end
end

-- Overlays desired onto result (both plain JSON-shaped tables), key by key.
local function overlay(result, desired)
  for k, dv in pairs(desired) do
    local rk = type(k) == "string" and field_key(result, k) or k
    local cv = rk and result[rk]
    if rk and rk ~= k then result[rk] = nil end   -- respell to ours (externalID -> externalId)
    if type(dv) == "table" and is_array(dv) and dv[1] ~= nil and type(dv[1]) == "table" then
      -- Multi-valued: update the entry of the same type, keep the others.
      local arr = type(cv) == "table" and is_array(cv) and cv or {}
      for _, de in ipairs(dv) do
        local t = de.type
        local el = t ~= nil and find_element(arr, { attr = "type", value = t }) or nil
        if el then
          overlay(el, de)
        else
          if de.primary == true then
            for _, other in ipairs(arr) do
              if type(other) == "table" and other.primary == true then other.primary = false end
            end
          end
          arr[#arr + 1] = deep_copy(de)
        end
      end
      result[k] = arr
    elseif type(dv) == "table" and not is_array(dv) and type(cv) == "table" and not is_array(cv)
    then
      result[k] = cv
      overlay(cv, dv)
    else
      result[k] = deep_copy(dv)
    end
  end
end

--- The full record to PUT: the current resource with the row's values laid over it,
-- without the attributes the server owns (id, meta, ... — the dialect's `read_only`).
-- Multi-valued attributes are merged by `type`, so a home phone survives a work-phone
-- update; `schemas` keeps the current ones and adds the new.
-- @tparam table current the resource as the server has it
-- @tparam table desired the resource `to_resource` built (with references set)
-- @treturn table the record for PUT
function Mapping:merge(current, desired)
  local res = deep_copy(current)
  for _, ro in ipairs(self.dialect.read_only or {}) do
    local k = field_key(res, ro)
    while k do
      res[k] = nil
      k = field_key(res, ro)
    end
  end
  for k, v in pairs(res) do
    if type(v) == "userdata" then res[k] = nil end  -- JSON nulls: nothing to send back
  end
  local schemas = {}
  local seen = {}
  for _, list in ipairs{ type(res.schemas) == "table" and res.schemas or {},
    desired.schemas or {} } do
    for _, s in ipairs(list) do
      if not seen[s:lower()] then
        seen[s:lower()] = true
        schemas[#schemas + 1] = s
      end
    end
  end
  local want = {}
  for k, v in pairs(desired) do if k ~= "schemas" then want[k] = v end end
  overlay(res, want)
  for _, r in ipairs(clears_of(desired) or {}) do
    remove_at(res, r, r.entry and r.entry.reference ~= nil)
  end
  -- Drop schemas read_only removed (accountstatusdetails) and keep the dialect's order.
  local final = {}
  for _, s in ipairs(schemas) do
    if s == self.dialect.core_schema or field_key(res, s) then final[#final + 1] = s end
  end
  res.schemas = final
  -- Ids kept from the current record go back as digit strings: the legacy API's 15-digit
  -- numeric ids do not survive an encoder that prints numbers with 14 significant digits.
  local d = self.dialect
  local mgr = field(field(res, d.enterprise_schema), "manager")
  if type(mgr) == "table" then
    for k, v in pairs(mgr) do
      if type(v) == "number" then mgr[k] = int_string(v) end
    end
  end
  return res
end

--}====================================================================

--{====================================================================
-- Headers
--=====================================================================

--- Checks a CSV header against the mapping for a job.
-- @tparam table header the header names, in file order
-- @tparam[opt] string job "create", "update", "delete", "sync" (default "create")
-- @tparam[opt] table opts `unknown_columns`: "error" or "ignore", overriding the mapping's
--   own setting for this check (the command line's `--ignore-unknown-columns`)
-- @treturn true
-- @treturn table warnings (possibly empty): columns the dialect cannot use
-- @treturn[2] nil
-- @treturn[2] table error messages: unknown, duplicate and missing required columns
function Mapping:check_header(header, job, opts)
  if type(header) ~= "table" then
    error("bad argument #1 to 'check_header' (table expected)", 2)
  end
  job = job or "create"
  if not JOBS[job] then error("bad argument #2 to 'check_header' (unknown job)", 2) end
  local unknown = opts and opts.unknown_columns or self.unknown_columns
  if unknown ~= "error" and unknown ~= "ignore" then
    error("bad argument #3 to 'check_header' (unknown_columns must be \"error\" or "
      .. "\"ignore\")", 2)
  end
  local errs, warns, seen = {}, {}, {}
  for i, h in ipairs(header) do
    local col = self.header_names[norm(tostring(h))]
    if not col then
      if unknown == "error" and job ~= "delete" then
        errs[#errs + 1] = string.format("unknown column '%s' (header field %d): the mapping %s "
          .. "has no such column or alias", h, i, self.source)
      end
    elseif seen[col] then
      errs[#errs + 1] = string.format("columns '%s' and '%s' (header fields %d and %d) are "
        .. "both column '%s'", header[seen[col]], h, seen[col], i, col)
    else
      seen[col] = i
    end
  end
  for _, en in ipairs(self.entries) do
    local col = en.column
    if col and not en.unavailable and (is_required(en, job) or (en == self.key_entry
      and job ~= "export")) and not seen[col] and not en.export_only then
      local aliases = #self.column_names[col] > 1 and
        (" (or " .. table.concat(self.column_names[col], ", ", 2) .. ")") or ""
      local msg = "missing required column '" .. col .. "'" .. aliases .. " for " .. job
      local dup = false
      for _, e in ipairs(errs) do if e == msg then dup = true end end
      if not dup then errs[#errs + 1] = msg end
    end
  end
  if job ~= "delete" then
    for col, i in pairs(seen) do
      local used, why = false, nil
      for _, en in ipairs(self.entries) do
        if en.column == col then
          if en.unavailable then why = why or en.unavailable else used = true end
        end
      end
      if not used and why then
        warns[#warns + 1] = string.format("column '%s' (header field %d) is ignored: %s",
          header[i], i, why)
      end
    end
    table.sort(warns)
  end
  if #errs > 0 then return nil, errs end
  return true, warns
end

--}====================================================================

return mapping
