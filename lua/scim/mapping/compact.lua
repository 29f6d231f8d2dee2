--- The compact comparison form of a resource: one string holding, for each attribute the
-- mapping compares (`m.targets`), the cell it makes (the export form diff compares by) or
-- "absent". A planner holding many accounts keeps per account only its key, its id and this
-- string, and still gets old -> new per column for the rows that changed (`changes`).
-- @module scim.mapping.compact

local path = require "scim.mapping.path"
local to_row = require "scim.mapping.to_row"
local util = require "scim.mapping.util"

local get, get_own = path.get, path.get_own
local reference_id, cell_of = path.reference_id, to_row.cell_of
local clears_of = util.clears_of
local concat, char = table.concat, string.char

local M = {}

-- Fields are joined with "\0"; an absent value is "\1"; the bytes 0, 1 and 2 inside a cell
-- are written "\2" followed by the byte + 48.
local SEP, ABSENT, ESC = "\0", "\1", "\2"

local function escape(s)
  if not s:find("[%z\1\2]") then return s end
  return (s:gsub("[%z\1\2]", function(c) return ESC .. char(c:byte() + 48) end))
end

local function unescape(s)
  if not s:find(ESC, 1, true) then return s end
  return (s:gsub("\2(.)", function(c) return char(c:byte() - 48) end))
end

-- The compared form of target r's value in resource (nil when absent). A reference is read
-- as the server answers it in a current resource, at the written path in a desired one; a
-- desired resource is spelled as to_resource and set_reference write it (exact names).
local function compared(m, r, resource, desired)
  local en = r.entry
  if en.reference and not desired then return reference_id(m.dialect, resource) end
  local v = (desired and get_own or get)(resource, r)
  if en.reference then return v ~= nil and tostring(v) or nil end
  if v == nil then return nil end
  return cell_of(en, v, resource) or tostring(v)
end

--- The compact form of a resource as the server has it.
-- @tparam scim.mapping m
-- @tparam table resource
-- @treturn string
function M.fingerprint(m, resource)
  if type(resource) ~= "table" then
    error("bad argument #1 to 'fingerprint' (table expected)", 2)
  end
  local parts = {}
  for i, r in ipairs(m.targets) do
    local c = compared(m, r, resource)
    parts[i] = c == nil and ABSENT or escape(c)
  end
  return concat(parts, SEP)
end

--- The compared values a fingerprint holds, by target index (nil where absent).
-- @tparam scim.mapping m
-- @tparam string fp a `fingerprint`
-- @treturn table `{ [i] = cell }` for `m.targets[i]`
function M.fingerprint_values(m, fp)
  if type(fp) ~= "string" then
    error("bad argument #1 to 'fingerprint_values' (string expected)", 2)
  end
  local out, i = {}, 0
  for f in (fp .. SEP):gmatch("(.-)%z") do
    i = i + 1
    if f ~= ABSENT then out[i] = unescape(f) end
  end
  if i ~= #m.targets then
    error("bad argument #1 to 'fingerprint_values' (not a fingerprint of this mapping)", 2)
  end
  return out
end

local function index_of(m, r)
  local idx = m.target_index
  if not idx then
    idx = {}
    for i, t in ipairs(m.targets) do idx[t] = i end
    m.target_index = idx
  end
  return idx[r]
end

--- What `diff(current, desired)` would change, from the current resource's fingerprint.
-- Empty exactly when `diff` finds nothing to send. `old` and `new` are the column's cells
-- (as export writes them); for a reference they are the SCIM ids.
-- @tparam scim.mapping m
-- @tparam string fp the current resource's `fingerprint`
-- @tparam table desired the resource `to_resource` built (with references set)
-- @treturn table `{ {path=, column=, old=, new=}, ... }` in the mapping's order
function M.changes(m, fp, desired)
  local old = M.fingerprint_values(m, fp)
  local changes = {}
  for i, r in ipairs(m.targets) do
    local new = compared(m, r, desired, true)
    if new ~= nil then
      local o = old[i]
      local equal
      if o == nil then
        equal = false
      elseif r.entry.ignore_case then
        equal = o:lower() == new:lower()
      else
        equal = o == new
      end
      if not equal then
        changes[#changes + 1] = { path = r.text, column = r.entry.column, old = o, new = new }
      end
    end
  end
  for _, r in ipairs(clears_of(desired) or {}) do
    local i = index_of(m, r)
    if i and old[i] ~= nil then
      changes[#changes + 1] = { path = r.text, column = r.entry.column, old = old[i], new = nil }
    end
  end
  return changes
end

return M
