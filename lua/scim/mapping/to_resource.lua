--- Rows to resources: the per-row phase.
-- One evaluator (`build`) serves both ways a row arrives: keyed by header name
-- (`Mapping:to_resource(row)`, which first gathers the mapping's cells from the row) and as
-- an array of values in header order through a mapping bound to the header
-- (`scim.mapping.header`, which reads each cell once by its column index). Both hand `build`
-- the row's cells, indexed by `slots[i]` for the i-th of the mapping's `row_entries`.
-- @module scim.mapping.to_resource

local date = require "scim.mapping.date"
local path = require "scim.mapping.path"
local util = require "scim.mapping.util"

local trim, norm, int_string = util.trim, util.norm, util.int_string
local where, job_allows, is_required = util.where, util.job_allows, util.is_required
local TRUE_WORDS, FALSE_WORDS = util.TRUE_WORDS, util.FALSE_WORDS
local set_value = path.set
local type, pcall, tostring, tointeger = type, pcall, tostring, math.tointeger

local M = {}

-- Converts a cell or a transform's result to the entry's type. Dates become epoch seconds
-- here and take their wire form per target (`encode`).
local function convert(en, v)
  local t = en.type
  if t == "string" then
    local tv = type(v)
    if tv == "string" then return v end
    if not en.type_given and (tv == "boolean" or tv == "number") then
      -- No type said: a function's boolean or number goes out as it is (active = false).
      return tointeger(v) or v
    end
    if tv == "number" then return int_string(v) end
    if tv == "boolean" then return tostring(v) end
    return nil, "expected a string, got " .. tv
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
    if type(v) == "number" and tointeger(v) then return tointeger(v) end
    if type(v) == "string" and v:match("^%s*[+-]?%d+%s*$") then
      local i = tointeger(tonumber(v))
      if i then return i end
    end
    return nil, "'" .. tostring(v) .. "' is not an integer"
  else  -- date
    if type(v) == "number" then return tointeger(v) or math.floor(v) end
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

-- Evaluates one entry for a row: `v` is its cell (nil when the file has no such column),
-- `view()` the row handed to value and transform functions. Returns "value", v; or "clear"
-- (an empty cell that means remove); or "error", message; or nothing when there is nothing
-- to write.
local function entry_value(en, v, view, line, job)
  if en.constant ~= nil then
    local cv, err = convert(en, en.constant)
    if cv == nil then return "error", where(line, en) .. ": constant: " .. err end
    return "value", cv
  end
  if en.column then
    if v == nil then return nil end                 -- column absent: leave the attribute be
    if v == "" and is_required(en, job) then
      return "error", where(line, en) .. ": a value is required"
    end
  end
  if en.value_fn then
    local ok, res = pcall(en.value_fn, view())
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
    local ok, res = pcall(en.transform, v, view())
    if not ok then return "error", where(line, en) .. ": transform failed: " .. tostring(res) end
    v = res
    if v == nil then return nil end
  end
  local cv, err = convert(en, v)
  if cv == nil then return "error", where(line, en) .. ": " .. err end
  return "value", cv
end

--- The `schemas` list of a resource: the core schema, the extensions it uses in the
-- dialect's order, then any others sorted.
function M.order_schemas(m, resource)
  local d = m.dialect
  local used, list, n = nil, { d.core_schema }, 0
  for k, v in pairs(resource) do
    if type(k) == "string" and type(v) == "table" and k:find(":", 1, true) then
      used = used or {}
      used[k] = true
      n = n + 1
    end
  end
  if not used then return list end
  for _, s in ipairs(d.schema_order or {}) do
    if used[s] then list[#list + 1] = s; used[s] = nil; n = n - 1 end
  end
  if n > 0 then
    local rest = {}
    for s in pairs(used) do rest[#rest + 1] = s end
    table.sort(rest)
    for _, s in ipairs(rest) do list[#list + 1] = s end
  end
  return list
end
local order_schemas = M.order_schemas

local function derive_formatted(resource)
  local name = resource.name
  if type(name) ~= "table" or name.formatted ~= nil then return end
  local g, f = name.givenName, name.familyName
  if type(g) == "string" and type(f) == "string" then
    name.formatted = (g .. " " .. f):gsub("^ +", ""):gsub(" +$", "")
  end
end

--- Builds the resource of one row.
-- @tparam scim.mapping m
-- @tparam table cells the row's cells (trimmed strings, nil for an absent column)
-- @tparam table slots `slots[i]`: the index in `cells` of `m.row_entries[i]`'s column
-- @tparam function view_of `view_of(src, cells)` → the row for value/transform functions
--   (called at most once, only when an entry needs it)
-- @param src the row as given, for `view_of`
-- @treturn table|nil the resource, or nil, message, "INVALID_VALUE"
function M.build(m, cells, slots, view_of, src, line, job)
  local viewed
  local function view()
    if not viewed then viewed = view_of(src, cells) end
    return viewed
  end
  local resource, cleared = {}, nil
  local entries = m.row_entries
  for i = 1, #entries do
    local en = entries[i]
    if not en.jobs or job_allows(en, job) then
      local slot, v = slots[i], nil
      if slot then v = cells[slot] end
      if not en.reference then
        local what, x = entry_value(en, v, view, line, job)
        if what == "value" then
          local targets = en.targets
          if en.type == "date" then
            for t = 1, #targets do set_value(resource, targets[t], encode(targets[t], x)) end
          else
            for t = 1, #targets do set_value(resource, targets[t], x) end
          end
        elseif what == "error" then
          return nil, x, "INVALID_VALUE"
        elseif what == "clear" then
          cleared = cleared or {}
          for _, r in ipairs(en.targets) do cleared[#cleared + 1] = r end
        end
      elseif v == "" then
        if is_required(en, job) then
          return nil, where(line, en) .. ": a value is required", "INVALID_VALUE"
        end
        if en.empty == "remove" then
          cleared = cleared or {}
          cleared[#cleared + 1] = en.targets[1]
        end
      end
    end
  end
  local key = resource[m.key_attribute]
  if key == nil or key == "" then
    return nil, where(line, m.key_entry) .. ": the key (" .. m.key_attribute
      .. ") is empty", "INVALID_VALUE"
  end
  if m.derive_formatted then derive_formatted(resource) end
  if job == "create" and m.dialect.create_defaults then
    for schema, defaults in pairs(m.dialect.create_defaults) do
      local ext = resource[schema]
      if type(ext) == "table" then
        for k, v in pairs(defaults) do
          if ext[k] == nil then ext[k] = v end
        end
      end
    end
  end
  resource.schemas = order_schemas(m, resource)
  if cleared then setmetatable(resource, { scim_clears = cleared }) end
  return resource
end

--- The key of a row from its key cell `v` (the key entry's transform applied).
function M.key_of(m, v, line, view_of, src, cells)
  local en = m.key_entry
  if v == nil or v == "" then
    return nil, where(line, en) .. ": the key (" .. m.key_attribute .. ") is empty"
  end
  if en.transform then
    local ok, res = pcall(en.transform, v, view_of(src, cells))
    if not ok then return nil, where(line, en) .. ": transform failed: " .. tostring(res) end
    if res == nil then return nil, where(line, en) .. ": the key is empty" end
    v = tostring(res)
  end
  return v
end

--- The references of a row: `cells[slots[name]]` is the cell of reference `name`.
function M.references_of(m, cells, slots, view_of, src)
  local refs = {}
  for name, en in pairs(m.reference_entries) do
    local slot, v = slots[name], nil
    if slot then v = cells[slot] end
    if v and v ~= "" then
      if en.transform then
        local ok, res = pcall(en.transform, v, view_of(src, cells))
        v = ok and res ~= nil and tostring(res) or v
      end
      refs[name] = v
    end
  end
  return refs
end

--{====================================================================
-- Rows keyed by header name (the unbound path)
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

-- Every column's cell, keyed by column name.
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

-- Entry i's slot in a keyed row's cells is its column name.
local function column_slots(m)
  local slots = m.column_slots
  if not slots then
    slots = {}
    for i, en in ipairs(m.row_entries) do slots[i] = en.column or false end
    m.column_slots = slots
  end
  return slots
end

--- Builds the SCIM resource a row describes (see `scim.mapping`).
function M.to_resource(m, row, line, job)
  if type(row) ~= "table" then error("bad argument #1 to 'to_resource' (table expected)", 2) end
  return M.build(m, cells_of(m, normalized_row(row)), column_slots(m), row_view, row, line, job)
end

--- The row's key (see `scim.mapping`).
function M.key(m, row, line)
  local nrow = normalized_row(row)
  local v = cell(m, nrow, m.key_column)
  return M.key_of(m, v, line, function(r) return row_view(r, cells_of(m, nrow)) end, row)
end

--- The references a row makes (see `scim.mapping`).
function M.references(m, row)
  if not next(m.reference_entries) then return {} end
  local nrow, cells = normalized_row(row), {}
  for _, col in pairs(m.reference_columns) do cells[col] = cell(m, nrow, col) end
  return M.references_of(m, cells, m.reference_columns,
    function(r) return row_view(r, cells_of(m, nrow)) end, row)
end

--}====================================================================

--- Writes a reference's SCIM id into a resource, in the dialect's shape.
function M.set_reference(m, resource, name, id)
  if name ~= "manager" then error("bad argument #2 to 'set_reference' (unknown reference)", 2) end
  if id == nil then return end
  local d = m.dialect
  local ext = path.container(resource, { schema = d.enterprise_schema }, true)
  local k = util.field_key(ext, "manager") or "manager"
  ext[k] = { [d.manager.write] = tostring(id) }
  local schemas = resource.schemas
  if type(schemas) == "table" then
    for _, s in ipairs(schemas) do if s == d.enterprise_schema then return end end
    resource.schemas = order_schemas(m, resource)
  end
end

return M
