--- Comparing and merging: the PatchOp operations that bring a resource in line with a row
-- (`diff`) and the full record for a PUT (`merge`).
-- @module scim.mapping.diff

local path = require "scim.mapping.path"
local to_row = require "scim.mapping.to_row"
local util = require "scim.mapping.util"

local field, field_key, present = util.field, util.field_key, util.present
local deep_copy, is_array, clears_of = util.deep_copy, util.is_array, util.clears_of
local int_string = util.int_string
local get, container, find_element = path.get, path.container, path.find_element
local reference_id, cell_of = path.reference_id, to_row.cell_of

local M = {}

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
  return path.text(r, false)
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
function M.diff(m, current, desired)
  local ops, changes = {}, {}
  local adds = {}  -- grouped adds: path -> op (a new complex value or multi-valued entry)
  for _, r in ipairs(m.targets) do
    local en = r.entry
    local d = get(desired, r)
    if d ~= nil then
      local c, equal
      if en.reference then
        c = reference_id(m.dialect, current)
        d = tostring(d)
        equal = c == d
      else
        c = get(current, r)
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
              local dl = get(desired, { schema = r.schema, attr = r.attr })
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
    if en and en.reference then c = reference_id(m.dialect, current)
    else c = get(current, r) end
    if c ~= nil then
      local at = r.text
      if en and en.reference then
        at = r.schema .. ":manager"
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
        if not others then at = element_path(r) end
      end
      ops[#ops + 1] = { op = "remove", path = at }
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
function M.merge(m, current, desired)
  local res = deep_copy(current)
  for _, ro in ipairs(m.dialect.read_only or {}) do
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
    if s == m.dialect.core_schema or field_key(res, s) then final[#final + 1] = s end
  end
  res.schemas = final
  -- Ids kept from the current record go back as digit strings: the legacy API's 15-digit
  -- numeric ids do not survive an encoder that prints numbers with 14 significant digits.
  local d = m.dialect
  local mgr = field(field(res, d.enterprise_schema), "manager")
  if type(mgr) == "table" then
    for k, v in pairs(mgr) do
      if type(v) == "number" then mgr[k] = int_string(v) end
    end
  end
  return res
end

return M
