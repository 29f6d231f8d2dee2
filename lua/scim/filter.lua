--- Safe SCIM filter expressions (RFC 7644 §3.4.2.2).
-- Values are never pasted into a filter: each one is written as a JSON literal
-- (strings quoted and escaped), so an email such as `a" or userName pr "` stays one
-- string value instead of becoming filter syntax. Attribute paths are checked
-- against the RFC grammar, so they cannot smuggle operators in either.
-- @module scim.filter
-- @usage
-- local filter = require "scim.filter"
-- filter.eq("userName", 'a" or userName pr "')  --> userName eq "a\" or userName pr \""
-- filter.all(filter.eq("active", true), filter.sw("name.familyName", "O'Br"))

local json = require "scim.json"
local paths = require "scim.mapping.path"

local type, select, error = type, select, error
local string_format, table_concat = string.format, table.concat
local math_huge, utf8_len = math.huge, utf8.len

local filter = {}

-- A short, printable view of a bad string for a message: bytes outside printable ASCII
-- as \xNN.
local function shown(s)
  s = s:sub(1, 40):gsub("[^\32-\126]", function(c) return string_format("\\x%02X", c:byte()) end)
  return '"' .. s .. '"'
end

-- The JSON literal for v (written by scim.json, as request bodies are), or nil and why not.
local function literal(v)
  local t = type(v)
  if v == nil then
    return "null"
  elseif t == "string" then
    if utf8_len(v) == nil then return nil, "value is not valid UTF-8: " .. shown(v) end
  elseif t == "number" then
    if v ~= v or v == math_huge or v == -math_huge then
      return nil, "value must be a finite number"
    end
  elseif t ~= "boolean" then
    return nil, "value must be a string, number, boolean or nil, not " .. t
  end
  return (json.encode(v))
end

--- Write a Lua string as a JSON string literal (quotes included).
-- `/` is left alone (legal either way, and some filter parsers dislike `\/`).
-- @tparam string s a UTF-8 string
-- @treturn string the quoted, escaped literal
-- @raise if `s` is not a valid UTF-8 string (JSON text must be Unicode)
function filter.string(s)
  if type(s) ~= "string" then
    error("bad argument #1 to filter.string (string expected, got " .. type(s) .. ")", 2)
  end
  local lit, why = literal(s)
  if not lit then error(why, 2) end
  return lit
end

--- Write a Lua value as a filter comparison value (a JSON literal).
-- Strings are quoted and escaped; numbers, booleans and nil (null) are written plainly.
-- @param v a string, number, boolean or nil
-- @treturn string the literal
-- @raise on other types, NaN/infinity or invalid UTF-8
function filter.value(v)
  local lit, why = literal(v)
  if not lit then error(why, 2) end
  return lit
end

--- Check an attribute path: `[URN ":"] name ["." subname]` (RFC 7644 3.10 names).
-- Examples: `userName`, `name.givenName`, `meta.lastModified`,
-- `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`.
-- The one check of attribute paths, shared with scim.mapping (scim.mapping.path).
-- @function check_path
-- @tparam string path the attribute path
-- @treturn string|nil the path, or nil when it is not valid
-- @treturn string why not
filter.check_path = paths.check_path

local function path_arg(path, level)
  local ok, why = filter.check_path(path)
  if not ok then error(why, level + 1) end
  return path
end

local function comparison(op)
  return function(path, v)
    path_arg(path, 2)
    local lit, why = literal(v)
    if not lit then error("filter on '" .. path .. "': " .. why, 2) end
    return path .. " " .. op .. " " .. lit
  end
end

--- `path eq value`. Comparisons on userName and emails are case-insensitive on the server.
-- @function eq
-- @tparam string path attribute path
-- @param value a string, number, boolean or nil
-- @treturn string the filter
-- @raise on a bad path or value
filter.eq = comparison("eq")
--- `path ne value`. @function ne
filter.ne = comparison("ne")
--- `path co value` (contains). @function co
filter.co = comparison("co")
--- `path sw value` (starts with). @function sw
filter.sw = comparison("sw")
--- `path ew value` (ends with). @function ew
filter.ew = comparison("ew")
--- `path gt value`. @function gt
filter.gt = comparison("gt")
--- `path ge value`. @function ge
filter.ge = comparison("ge")
--- `path lt value`. @function lt
filter.lt = comparison("lt")
--- `path le value`. @function le
filter.le = comparison("le")

--- `path pr` (the attribute has a value).
-- @tparam string path attribute path
-- @treturn string the filter
function filter.pr(path)
  path_arg(path, 1)
  return path .. " pr"
end

local function join(word, ...)
  local n = select("#", ...)
  if n == 0 then error("filter." .. word .. " needs at least one filter", 3) end
  local parts = {}
  for i = 1, n do
    local f = select(i, ...)
    if type(f) ~= "string" or f == "" then
      error("bad argument #" .. i .. " to filter." .. word .. " (filter string expected)", 3)
    end
    parts[i] = "(" .. f .. ")"
  end
  if n == 1 then return (...) end
  return table_concat(parts, " " .. word .. " ")
end

--- Every filter must hold: `(a) and (b) ...`. Arguments should come from this module.
-- @tparam string ... filters
-- @treturn string the combined filter
function filter.all(...) return join("and", ...) end

--- Any filter may hold: `(a) or (b) ...`.
-- @tparam string ... filters
-- @treturn string the combined filter
function filter.any(...) return join("or", ...) end

--- Negation: `not (f)`.
-- @tparam string f a filter
-- @treturn string the filter
function filter.negate(f)
  if type(f) ~= "string" or f == "" then
    error("bad argument #1 to filter.negate (filter string expected)", 2)
  end
  return "not (" .. f .. ")"
end

--- A value-path filter on a multi-valued attribute: `emails[type eq "work"]`.
-- @tparam string path a multi-valued attribute (no sub-attribute)
-- @tparam string f a filter on its sub-attributes
-- @treturn string the filter
function filter.has(path, f)
  path_arg(path, 1)
  if path:find("%.[^:]*$") then
    error("filter.has needs a multi-valued attribute, not the sub-attribute '" .. path .. "'", 2)
  end
  if type(f) ~= "string" or f == "" then
    error("bad argument #2 to filter.has (filter string expected)", 2)
  end
  return path .. "[" .. f .. "]"
end

return filter
