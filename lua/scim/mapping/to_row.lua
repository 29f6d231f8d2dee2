--- Resources to rows: the export phase (`Mapping:to_row`) and the cell form of a value that
-- diff and the compact comparison form also compare by.
-- @module scim.mapping.to_row

local date = require "scim.mapping.date"
local path = require "scim.mapping.path"
local util = require "scim.mapping.util"

local int_string = util.int_string

local M = {}

--- The cell a SCIM value makes in the entry's column (the export form). Two values that make
-- the same cell are the same for diff: that is what makes export -> update a no-op.
function M.cell_of(en, v, resource)
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
    if util.TRUE_WORDS[w] then return "true" end
    if util.FALSE_WORDS[w] then return "false" end
    return tostring(v)
  elseif type(v) == "number" then
    return int_string(v)
  elseif type(v) == "table" then
    return ""  -- a complex value where the mapping expects a scalar: nothing to show
  end
  return tostring(v)
end

--- Builds the row a resource makes (see `scim.mapping`).
function M.to_row(m, resource, key_of_id)
  local row, done = {}, {}
  for _, en in ipairs(m.entries) do
    local col = en.column
    if col and not done[col] and not en.unavailable and en.export ~= false then
      done[col] = true
      local c, err
      if en.reference then
        local id = path.reference_id(m.dialect, resource)
        c = (id and key_of_id) and key_of_id(id) or ""
        c = c and tostring(c) or ""
      else
        c, err = M.cell_of(en, path.get(resource, en.targets[1]), resource)
        if not c then return nil, "column '" .. col .. "': " .. err end
      end
      row[col] = c
    end
  end
  return row
end

return M
