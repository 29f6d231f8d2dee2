--- Compiling a mapping table: checks every entry once and turns it into the compiled form
-- the per-row phases use (entries with resolved target paths, the column index, the key).
-- Each entry option has its own checker in `OPTIONS` (as `scim.config.OPTIONS` describes the
-- command line's options), run in that order; the rules between options follow them.
-- Private to scim.mapping, which sets the compiled table's metatable.
-- @module scim.mapping.compile

local date = require "scim.mapping.date"
local path = require "scim.mapping.path"
local util = require "scim.mapping.util"

local trim, norm, set_of = util.trim, util.norm, util.set_of
local DIALECTS, JOBS = util.DIALECTS, util.JOBS

local compile = {}

-- `required = true` means: wherever the row's attributes are written.
local WRITE_JOBS = { "create", "update", "sync" }
local TYPES = { string = true, boolean = true, integer = true, date = true }
local TOP_KEYS = { key = true, unknown_columns = true, trim = true, description = true }

--- Loads a dialect by name ("scim2" when nil); a table is taken as the dialect itself.
-- @raise on an unknown name (at the caller's caller's level)
function compile.load_dialect(dialect)
  if type(dialect) == "table" then return dialect end
  local d, err = require("scim.dialects").load(dialect or "scim2")
  if not d then error(err, 3) end
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

-- A checker for an option that must be of one Lua type, stored under `field`.
local function typed(t, field)
  return function(en, v, label, k)
    if v ~= nil and type(v) ~= t then
      fail(label .. ": '" .. k .. "' must be a " .. t .. ", got " .. type(v))
    end
    en[field or k] = v
  end
end

-- A checker for a string option taking one of a few words.
local function one_of(words, msg)
  return function(en, v, label, k)
    typed("string")(en, v, label, k)
    if v ~= nil and not words[v] then fail(label .. ": " .. msg) end
  end
end

--- Every entry option but column, attribute and reference: name → checker, run in this order
-- (later checkers see what earlier ones stored: `format` and `as` need `type`).
-- A checker is `function(en, value, label, name, dialect)`; it stores the checked value in the
-- compiled entry `en` or raises (through `fail`) naming the entry.
compile.OPTIONS = {
  { "transform", typed("function") },
  { "value", typed("function", "value_fn") },
  { "export", function(en, v, label)
    if v ~= nil and v ~= false and type(v) ~= "function" then
      fail(label .. ": 'export' must be a function or false")
    end
    en.export = v
  end },
  { "type", function(en, v, label, k)
    typed("string")(en, v, label, k)
    en.type, en.type_given = v or "string", v ~= nil
    if not TYPES[en.type] then
      fail(label .. ": unknown type '" .. en.type .. "' (string, boolean, integer, date)")
    end
  end },
  { "format", function(en, v, label, k)
    typed("string", "format_text")(en, v, label, k)
    if v and en.type ~= "date" then fail(label .. ": 'format' is only for type = \"date\"") end
    if en.type == "date" then
      local df, err = date.compile_format(v or "%Y-%m-%d")
      if not df then fail(label .. ": " .. err) end
      en.date_format = df
    end
  end },
  { "as", function(en, v, label, k)
    one_of({ epoch = true, iso = true, date = true },
      "'as' must be \"epoch\", \"iso\" or \"date\"")(en, v, label, k)
    if v and en.type ~= "date" then fail(label .. ": 'as' is only for type = \"date\"") end
  end },
  { "default", function(en, v) en.default = v end },
  { "constant", function(en, v) en.constant = v end },
  { "empty", one_of({ remove = true, ignore = true }, "'empty' must be \"remove\" or \"ignore\"") },
  { "ignore_case", typed("boolean") },
  { "export_only", typed("boolean") },
  { "aliases", function(en, v, label, k)
    typed("table")(en, v, label, k)
    en.aliases = v or {}
    for _, a in ipairs(en.aliases) do
      if type(a) ~= "string" then fail(label .. ": aliases must be strings") end
    end
  end },
  { "required", function(en, v, label)
    if v ~= nil and v ~= false then
      en.required = check_jobs(label, v, "required")
      en.required_always = v == true
    end
  end },
  { "jobs", function(en, v, label)
    if v ~= nil then en.jobs = check_jobs(label, v, "jobs") end
  end },
  { "dialects", function(en, v, label, k, d)
    if v == nil then return end
    if type(v) ~= "table" then
      fail(label .. ": '" .. k .. "' must be a table, got " .. type(v))
    end
    local ok = false
    for _, dn in ipairs(v) do
      if type(dn) ~= "string" then fail(label .. ": dialects must be names") end
      local known = dn == d.name
      for _, kd in ipairs(DIALECTS) do known = known or kd == dn end
      if not known then
        fail(label .. ": unknown dialect '" .. dn .. "' in 'dialects' (known: "
          .. table.concat(DIALECTS, ", ") .. ")")
      end
      if dn == d.name then ok = true end
    end
    if not ok then en.unavailable = "only used with dialect " .. table.concat(v, ", ") end
  end },
}

local ENTRY_KEYS = { column = true, attribute = true, reference = true }
for _, o in ipairs(compile.OPTIONS) do ENTRY_KEYS[o[1]] = true end

-- Where the value comes from: exactly one of a column, a constant, a value function.
local function check_source(en, label)
  local column = en.column
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
end

-- A `reference = "manager"` entry: one target, the dialect's manager attribute.
local function compile_reference(en, e, d, attribute, label)
  if e.reference ~= "manager" then
    fail(label .. ": unknown reference '" .. tostring(e.reference) .. "' (supported: manager)")
  end
  if attribute ~= nil then fail(label .. ": a reference takes no attribute path") end
  if not en.column then fail(label .. ": a reference needs a column") end
  en.reference = "manager"
  local ent, sub = d.enterprise_schema, d.manager.write
  local text = ent .. ":manager." .. sub
  en.targets[1] = { schema = ent, attr = "manager", sub = sub, text = text, key = text:lower(),
    entry = en }
end

-- The entry's attribute paths, resolved for the dialect.
local function compile_targets(en, d, attribute, label)
  if type(attribute) == "string" then attribute = { attribute } end
  if type(attribute) ~= "table" or #attribute == 0 then
    fail(label .. ": give the SCIM attribute path (e.g. \"name.givenName\") or reference =")
  end
  local skipped  -- why a target is left out in this dialect
  for _, text in ipairs(attribute) do
    local p, perr = path.parse(text)
    if not p then fail(label .. ": " .. perr) end
    local r, why, kind = path.resolve(p, d)
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
      r.as = en.as
      if en.type == "date" and not en.as then
        r.as = d.date_format
        for _, ea in ipairs(d.epoch_attributes or {}) do
          if ea:lower() == r.key then r.as = "epoch" end
        end
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
  for _, o in ipairs(compile.OPTIONS) do o[2](en, e[o[1]], label, o[1], d) end
  en.format_text = nil
  check_source(en, label)
  if e.reference ~= nil then
    compile_reference(en, e, d, attribute, label)
  else
    compile_targets(en, d, attribute, label)
  end
  return en
end

-- Records an entry's column and aliases in the header-name index (normalized name → column).
local function index_column(m, names, en)
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

local function check_top(m, tbl)
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
end

local function build(tbl, opts, mt)
  local d = compile.load_dialect(opts.dialect)
  local m = setmetatable({
    source = opts.source or "mapping",
    dialect = d,
    entries = {},
    columns = {},
    reference_columns = {},
    reference_entries = {},  -- the entry behind each of reference_columns
    unknown_columns = "error",
    trim = true,
    column_names = {},       -- column -> { normalized names }
  }, mt)
  check_top(m, tbl)
  local by_path, names = {}, {}  -- target key -> entry; normalized name -> column
  for i = 1, #tbl do
    local en = compile_entry(d, i, tbl[i])
    m.entries[i] = en
    if en.column then index_column(m, names, en) end
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
  local ken = by_path[m.key_attribute:lower()]
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
  -- The entries to_resource evaluates.
  m.row_entries = {}
  for _, en in ipairs(m.entries) do
    if not en.unavailable and not en.export_only then m.row_entries[#m.row_entries + 1] = en end
  end
  return m
end

--- Compiles a mapping table into an object with metatable `mt`.
-- @tparam table tbl the mapping
-- @tparam table opts `dialect`, `source` (checked by the caller)
-- @tparam table mt the compiled mapping's metatable
-- @raise "mapping SOURCE: entry N ('column'): ..." on a bad mapping
function compile.compile(tbl, opts, mt)
  local ok, res = pcall(build, tbl, opts, mt)
  if ok then return res end
  if getmetatable(res) == MappingError then
    error("mapping " .. (opts.source or "table") .. ": " .. res.msg, 0)
  end
  error(res, 0)
end

return compile
