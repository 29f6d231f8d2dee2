--- A mapping and a CSV header: the header check, and the mapping bound to a header.
--
-- `Mapping:bind(header)` resolves every column the mapping knows to its index in the header
-- once (header names matched without regard to case and spaces, aliases included), so the
-- per-row functions take the row as it is read: an array of values in header order. Each
-- of them reads a cell once, trims it once, and builds no keyed copy of the row (value and
-- transform functions get a read-only view that looks names up in the values).
-- @module scim.mapping.header

local to_resource = require "scim.mapping.to_resource"
local util = require "scim.mapping.util"

local norm, trim, JOBS, is_required = util.norm, util.trim, util.JOBS, util.is_required
local type, tostring, rawget, next = type, tostring, rawget, next

local H = {}

-- Checks a CSV header against the mapping for a job (see `scim.mapping`); `fname` names
-- the public function for argument errors. Also returns where each known column is:
-- column -> header index (the first, when the file has it twice).
local function check(m, header, job, opts, fname)
  if type(header) ~= "table" then
    error("bad argument #1 to '" .. fname .. "' (table expected)", 3)
  end
  job = job or "create"
  if not JOBS[job] then error("bad argument #2 to '" .. fname .. "' (unknown job)", 3) end
  local unknown = opts and opts.unknown_columns or m.unknown_columns
  if unknown ~= "error" and unknown ~= "ignore" then
    error("bad argument #3 to '" .. fname .. "' (unknown_columns must be \"error\" or "
      .. "\"ignore\")", 3)
  end
  local errs, warns, seen = {}, {}, {}
  for i, h in ipairs(header) do
    local col = m.header_names[norm(tostring(h))]
    if not col then
      if unknown == "error" and job ~= "delete" then
        errs[#errs + 1] = string.format("unknown column '%s' (header field %d): the mapping %s "
          .. "has no such column or alias", h, i, m.source)
      end
    elseif seen[col] then
      errs[#errs + 1] = string.format("columns '%s' and '%s' (header fields %d and %d) are "
        .. "both column '%s'", header[seen[col]], h, seen[col], i, col)
    else
      seen[col] = i
    end
  end
  for _, en in ipairs(m.entries) do
    local col = en.column
    if col and not en.unavailable and (is_required(en, job) or (en == m.key_entry
      and job ~= "export")) and not seen[col] and not en.export_only then
      local aliases = #m.column_names[col] > 1 and
        (" (or " .. table.concat(m.column_names[col], ", ", 2) .. ")") or ""
      local msg = "missing required column '" .. col .. "'" .. aliases .. " for " .. job
      local dup = false
      for _, e in ipairs(errs) do if e == msg then dup = true end end
      if not dup then errs[#errs + 1] = msg end
    end
  end
  if job ~= "delete" then
    for col, i in pairs(seen) do
      local used, why = false, nil
      for _, en in ipairs(m.entries) do
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
  if #errs > 0 then return nil, errs, seen end
  return true, warns, seen
end

--- Checks a CSV header against the mapping for a job (see `scim.mapping`).
function H.check_header(m, header, job, opts)
  local ok, msgs = check(m, header, job, opts, "check_header")
  return ok, msgs
end

--{====================================================================
-- The mapping bound to a header
--=====================================================================

local Bound = {}
local Bound_mt = {
  __name = "scim.mapping.bound",
  __index = Bound,
  __tostring = function(b) return "scim.mapping.bound (" .. b.mapping.source .. ")" end,
}

-- Private keys of a row view: the row's values and its cells.
local VALUES, CELLS = {}, {}

-- The metatable of the row views of a bound mapping: `names` maps a name to a cell slot
-- (> 0) or to minus a header index (< 0, the raw value of a column the mapping doesn't use
-- under that name). As the keyed row's view: the file's header names, and the mapping's
-- column names as written and lower-cased.
local function view_meta(names)
  local function get(t, k)
    local s = names[k]
    if not s then return nil end
    if s > 0 then return rawget(t, CELLS)[s] end
    return rawget(t, VALUES)[-s]
  end
  return {
    __index = get,
    __newindex = function() error("the row is read-only", 2) end,
    __pairs = function(t)
      return function(_, k)
        local v
        repeat
          k = next(names, k)
          if k == nil then return nil end
          v = get(t, k)
        until v ~= nil
        return k, v
      end, t, nil
    end,
  }
end

--- Binds the mapping to a CSV header.
-- @tparam scim.mapping m
-- @tparam table header the file's column names, in file order
-- @tparam[opt] string job as for `check_header` (default "create")
-- @tparam[opt] table opts as for `check_header` (`unknown_columns`)
-- @treturn scim.mapping.bound
function H.bind(m, header, job, opts)
  local ok, msgs, seen = check(m, header, job, opts, "bind")
  local b = setmetatable({
    mapping = m,
    header = header,
    ok = ok == true,
    problems = ok and {} or msgs,
    warnings = ok and msgs or {},
    columns = {},      -- header index -> the mapping column it feeds, or false
  }, Bound_mt)
  for i, h in ipairs(header) do b.columns[i] = m.header_names[norm(tostring(h))] or false end
  -- One slot per known column the header has, in header order.
  local index, slot_of = {}, {}          -- slot -> header index; column -> slot
  for i = 1, #header do
    local col = b.columns[i]
    if col and seen[col] == i then
      index[#index + 1] = i
      slot_of[col] = #index
    end
  end
  b.index, b.nslots = index, #index
  b.slots = {}
  for i, en in ipairs(m.row_entries) do b.slots[i] = en.column and slot_of[en.column] or false end
  b.key_slot = slot_of[m.key_column]
  b.ref_slots = {}
  for name, col in pairs(m.reference_columns) do b.ref_slots[name] = slot_of[col] end
  local names = {}
  for i, h in ipairs(header) do
    if type(h) == "string" then names[h] = -i end
  end
  for col, s in pairs(slot_of) do
    names[col], names[col:lower()] = s, s
  end
  local mt = view_meta(names)
  b.view_of = function(values, cells)
    return setmetatable({ [VALUES] = values, [CELLS] = cells }, mt)
  end
  b.trim = m.trim
  return b
end

-- The cell in header position i: a string (trimmed as the mapping says), or nil.
local function read_cell(b, values, i)
  local v = values[i]
  if v == nil then return nil end
  if type(v) ~= "string" then v = tostring(v) end
  if b.trim then return trim(v) end
  return v
end

-- Every known column's cell, by slot: each cell read and trimmed once.
local function cells_of(b, values, fname)
  if type(values) ~= "table" then
    error("bad argument #1 to '" .. fname .. "' (table of values expected)", 3)
  end
  local cells, index = {}, b.index
  for s = 1, b.nslots do cells[s] = read_cell(b, values, index[s]) end
  return cells
end

--- The row's key (as `Mapping:key`).
-- @tparam table values the row's values in header order
-- @tparam[opt] integer line
-- @treturn string the key
-- @treturn[2] nil
-- @treturn[2] string message
function Bound:key(values, line)
  local m = self.mapping
  if m.key_entry.transform then
    local cells = cells_of(self, values, "key")
    return to_resource.key_of(m, cells[self.key_slot], line, self.view_of, values, cells)
  end
  if type(values) ~= "table" then
    error("bad argument #1 to 'key' (table of values expected)", 2)
  end
  local s, v = self.key_slot, nil
  if s then v = read_cell(self, values, self.index[s]) end
  return to_resource.key_of(m, v, line)
end

--- The resource the row describes (as `Mapping:to_resource`).
-- @tparam table values the row's values in header order
-- @tparam[opt] integer line
-- @tparam[opt] string job
-- @treturn table the resource
-- @treturn[2] nil
-- @treturn[2] string "line 7, field 'start date': ..."
-- @treturn[2] string "INVALID_VALUE"
function Bound:to_resource(values, line, job)
  local cells = cells_of(self, values, "to_resource")
  return to_resource.build(self.mapping, cells, self.slots, self.view_of, values, line, job)
end

--- The references the row makes (as `Mapping:references`).
-- @tparam table values the row's values in header order
-- @treturn table e.g. `{ manager = "boss@example.com" }`
function Bound:references(values)
  local m = self.mapping
  if not next(m.reference_entries) then return {} end
  local cells = cells_of(self, values, "references")
  return to_resource.references_of(m, cells, self.ref_slots, self.view_of, values)
end

--- Key, resource and references of a row in one pass (each cell read once).
-- @tparam table values the row's values in header order
-- @tparam[opt] integer line
-- @tparam[opt] string job
-- @treturn string the key
-- @treturn table the resource
-- @treturn table the references
-- @treturn[2] nil
-- @treturn[2] string message ("line 7, field 'email': ...")
-- @treturn[2] string "INVALID_VALUE"
function Bound:read(values, line, job)
  local m = self.mapping
  local cells = cells_of(self, values, "read")
  local key, kerr = to_resource.key_of(m, cells[self.key_slot or 0], line, self.view_of,
    values, cells)
  if not key then return nil, kerr, "INVALID_VALUE" end
  local res, err, code = to_resource.build(m, cells, self.slots, self.view_of, values, line, job)
  if not res then return nil, err, code end
  local refs = next(m.reference_entries)
    and to_resource.references_of(m, cells, self.ref_slots, self.view_of, values) or {}
  return key, res, refs
end

--- The row keyed by the file's header names (for reports and scripts wanting a keyed row).
-- @tparam table values
-- @treturn table
function Bound:row(values)
  local row = {}
  for i, h in ipairs(self.header) do row[h] = values[i] end
  return row
end

--}====================================================================

return H
