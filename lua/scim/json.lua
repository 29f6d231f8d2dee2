--- JSON for SCIM messages, on top of lua-cjson.
-- lua-cjson does the parsing; this module fixes what Debian's lua-cjson 2.1.0 cannot
-- express. It has no array marker (an empty table always encodes as `{}`, and a decoded
-- `[]` is indistinguishable from `{}`), it decodes every number as a float (ids longer than
-- 15 digits lose their last digits), and it hands nulls over as a lightuserdata most code
-- would trip on. So here:
--
-- * arrays carry a marker metatable (`json.array_mt`), decoded ones included, so `[]`
--   and `{}` survive a round trip;
-- * integral numbers decode as Lua integers, exactly up to 64 bits;
-- * decoded nulls are absent fields (RFC 7643 §2.5: null and unassigned are the same);
-- * objects encode with sorted keys, so a resource always gives the same bytes;
-- * text must be valid UTF-8 both ways (RFC 8259 §8.1), and errors name the field.
-- @module scim.json
-- @usage
-- local json = require "scim.json"
-- json.encode{ schemas = json.array{ "urn:…:User" }, groups = json.array() }
-- --> '{"groups":[],"schemas":["urn:…:User"]}'
-- local doc, err = json.decode(body)

local cjson = require "cjson"

local type, next, ipairs, tostring, tonumber, error = type, next, ipairs, tostring,
  tonumber, error
local setmetatable, getmetatable, rawlen, pcall = setmetatable, getmetatable, rawlen, pcall
local math_type, math_tointeger, math_huge = math.type, math.tointeger, math.huge
local string_format, table_concat, table_sort = string.format, table.concat, table.sort
local utf8_len = utf8.len

-- A private decoder instance, so its settings do not change the shared `cjson` module
-- other code uses. NaN, Infinity and hex numbers are not JSON.
local decoder = cjson.new()
decoder.decode_invalid_numbers(false)
local cjson_decode = decoder.decode

local json = {}

--- The value that encodes as `null` (lua-cjson's `cjson.null`). `decode` never returns
-- it: decoded nulls are absent.
json.null = cjson.null
local null = json.null

--- The metatable that marks a Lua table as a JSON array, so `{}` encodes as `[]`.
-- Arrays decoded by `json.decode` carry it too.
json.array_mt = { __name = "scim.json.array" }
local array_mt = json.array_mt

-- Newer lua-cjson versions have their own markers; honour them when present.
local ARRAY_MTS = { [array_mt] = true }
if type(cjson.array_mt) == "table" then ARRAY_MTS[cjson.array_mt] = true end
if type(cjson.empty_array_mt) == "table" then ARRAY_MTS[cjson.empty_array_mt] = true end

--- Mark a table (or a new empty one) as a JSON array.
-- @tparam[opt] table t the table
-- @treturn table t, with the array marker
function json.array(t)
  return setmetatable(t or {}, array_mt)
end

--- Is `v` a table marked as a JSON array (by `json.array` or `json.decode`)?
-- @param v any value
-- @treturn boolean
function json.is_array(v)
  return ARRAY_MTS[getmetatable(v)] == true
end

-- {====================================================================
-- Encoding
-- =====================================================================

-- RFC 7643/7644 multi-valued attributes and message fields: an unmarked empty table under
-- one of these names is an empty array, never an empty object.
local MULTI_VALUED = {
  schemas = true, emails = true, phoneNumbers = true, ims = true, photos = true,
  addresses = true, groups = true, entitlements = true, roles = true,
  x509Certificates = true, members = true, Operations = true, Resources = true,
  Errors = true,
}

-- What JSON requires escaped, plus DEL; `/` stays as it is.
local ESCAPES = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t", ["\127"] = "\\u007f",
}
for b = 0, 31 do
  local c = string.char(b)
  ESCAPES[c] = ESCAPES[c] or string_format("\\u%04x", b)
end

local MAX_DEPTH = 64

local function path_join(path, k)
  if type(k) == "number" then return path .. "[" .. k .. "]" end
  if path == "" then return k end
  return path .. "." .. k
end

-- Errors are tables so `encode` can tell them from bugs, and turn them into `nil, why`.
local function fail(path, what)
  error({ json = "field '" .. path .. "' " .. what })
end

local function encode_value(v, buf, path, depth, key)
  local t = type(v)
  if t == "string" then
    if utf8_len(v) == nil then fail(path, "is not valid UTF-8") end
    buf[#buf + 1] = '"' .. v:gsub('[%c"\\]', ESCAPES) .. '"'
  elseif t == "number" then
    if v ~= v or v == math_huge or v == -math_huge then fail(path, "is not a finite number") end
    local i = math_type(v) == "integer" and v or math_tointeger(v)
    if i then
      buf[#buf + 1] = string_format("%d", i)
    else
      -- The shortest form that reads back as the same double.
      local s = string_format("%.14g", v)
      if tonumber(s) ~= v then s = string_format("%.17g", v) end
      buf[#buf + 1] = s
    end
  elseif t == "boolean" then
    buf[#buf + 1] = v and "true" or "false"
  elseif v == null then
    buf[#buf + 1] = "null"
  elseif t == "table" then
    if depth > MAX_DEPTH then fail(path, "is nested too deeply (a cycle?)") end
    local n = rawlen(v)
    if n > 0 or ARRAY_MTS[getmetatable(v)] or (next(v) == nil and MULTI_VALUED[key]) then
      for k in next, v do
        if math_type(k) ~= "integer" or k < 1 or k > n then
          fail(path, "mixes array items with other keys")
        end
      end
      buf[#buf + 1] = "["
      for i = 1, n do
        if i > 1 then buf[#buf + 1] = "," end
        encode_value(v[i], buf, path_join(path, i), depth + 1, nil)
      end
      buf[#buf + 1] = "]"
    else
      -- Sorted keys: the same resource always encodes to the same bytes (golden tests,
      -- readable traces).
      local keys = {}
      for k in next, v do
        if type(k) ~= "string" then fail(path, "has a non-string key " .. tostring(k)) end
        keys[#keys + 1] = k
      end
      table_sort(keys)
      buf[#buf + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then buf[#buf + 1] = "," end
        encode_value(k, buf, path, depth, nil)
        buf[#buf + 1] = ":"
        encode_value(v[k], buf, path_join(path, k), depth + 1, k)
      end
      buf[#buf + 1] = "}"
    end
  else
    fail(path, "has a " .. t .. " value, which JSON cannot hold")
  end
end

--- Encode a Lua value as JSON text.
-- Tables with positive integer keys 1..n, and empty tables marked with `json.array` (or
-- under a SCIM multi-valued name such as `emails` or `schemas`), encode as arrays; other
-- tables as objects with sorted keys. `json.null` encodes as `null`, integral floats as
-- integers; NaN, infinities, invalid UTF-8 and functions are refused.
-- @param v the value
-- @treturn string the JSON text
-- @treturn[2] nil
-- @treturn[2] string the problem, naming the field, e.g.
--   "field 'name.givenName' is not valid UTF-8" (the top level is `''`)
-- @usage json.encode{ emails = {}, id = 42.0 }  --> '{"emails":[],"id":42}'
function json.encode(v)
  local buf = {}
  local ok, err = pcall(encode_value, v, buf, "", 0, nil)
  if not ok then
    if type(err) == "table" and err.json then return nil, err.json end
    error(err, 0)
  end
  return table_concat(buf)
end

-- }====================================================================

-- {====================================================================
-- Decoding
-- =====================================================================

-- Decoded strings no real document holds. Before cjson runs, `[]` is rewritten to an
-- array of EMPTY_MARK, so empty arrays can be told from empty objects afterwards, and an
-- integer too long for a double (16+ digits: legacy Workplace ids are JSON numbers) to a
-- string INT_MARK .. digits, so it becomes an exact 64-bit Lua integer instead of a
-- rounded float.
local EMPTY_MARK = "\0scim:empty-array\0"
local EMPTY_MARK_JSON = '["\\u0000scim:empty-array\\u0000"]'
local INT_MARK = "\0scim:int\0"
local INT_MARK_JSON = '"\\u0000scim:int\\u0000'

-- Rewrite every `[ ]` and long integer outside string literals; strings are skipped
-- whole (escapes included).
local function mark_literals(s)
  local out, pos, last = {}, 1, 1
  while true do
    local i = s:find('["%[%-%d]', pos)
    if not i then break end
    local b = s:byte(i)
    if b == 34 then  -- '"'
      local j = i + 1
      while true do
        local q = s:find('["\\]', j)
        if not q then return s end  -- unterminated string: cjson reports it
        if s:byte(q) == 92 then j = q + 2 else j = q + 1 break end
      end
      pos = j
    elseif b == 91 then  -- '['
      local e = s:match("^%[%s*%]()", i)
      if e then
        out[#out + 1] = s:sub(last, i - 1)
        out[#out + 1] = EMPTY_MARK_JSON
        last, pos = e, e
      else
        pos = i + 1
      end
    else
      -- The whole number token; only a plain integer that fits in 64 bits is rewritten
      -- (fractions and exponents stay doubles).
      local digits, e = s:match("^(%-?[%d%.eE%+%-]*)()", i)
      if #digits >= 16 and digits:find("^%-?%d+$")
          and math_type(tonumber(digits)) == "integer" then
        out[#out + 1] = s:sub(last, i - 1)
        out[#out + 1] = INT_MARK_JSON .. digits .. '"'
        last = e
      end
      pos = e
    end
  end
  if last == 1 then return s end
  out[#out + 1] = s:sub(last)
  return table_concat(out)
end

local fix_table

-- One value as cjson decoded it, with the marks undone: empty-array marks become marked
-- empty arrays, long-integer marks exact integers, integral floats integers (ids and epoch
-- dates print as "17", not "17.0").
local function fix(v)
  local t = math_type(v) or type(v)
  if t == "table" then
    if v[1] == EMPTY_MARK and v[2] == nil then return setmetatable({}, array_mt) end
    fix_table(v)
  elseif t == "float" then
    if v == math_huge or v == -math_huge then
      error({ json = "a number is beyond the range of a double" })
    end
    return math_tointeger(v) or v
  elseif t == "string" and v:find(INT_MARK, 1, true) == 1 then
    return math_tointeger(tonumber(v:sub(#INT_MARK + 1)))
  end
  return v
end

-- Nulls removed, arrays marked and compacted (a removed null leaves no hole), and every
-- member fixed in place.
function fix_table(v)
  local is_array = v[1] ~= nil
  local holes = false
  for k, x in next, v do
    if x == null then
      v[k] = nil
      holes = holes or is_array
    else
      v[k] = fix(x)  -- assigning to an existing field is allowed during `next`
    end
  end
  if is_array then
    if holes then
      local n, max = 0, 0
      for k in next, v do if k > max then max = k end end
      for i = 1, max do
        local x = v[i]
        if x ~= nil then n = n + 1 v[i] = nil v[n] = x end
      end
    end
    setmetatable(v, array_mt)
  end
end

--- Decode JSON text.
-- Objects and arrays become tables (arrays marked with `json.array_mt`, empty ones
-- included); nulls become absent fields; integral numbers become integers, exact to 64
-- bits. Strict: NaN, Infinity, hex numbers, numbers beyond a double's range, invalid
-- UTF-8 and a document that is just `null` are refused.
-- @tparam string s JSON text
-- @return the value
-- @treturn[2] nil
-- @treturn[2] string what is wrong, e.g. "Expected value but found T_END at character 1"
--   or "invalid UTF-8 at byte 7"
function json.decode(s)
  if type(s) ~= "string" then return nil, "JSON text must be a string" end
  local _, bad = utf8_len(s)
  if bad then return nil, "invalid UTF-8 at byte " .. bad end
  local marked = s
  if s:find("%[%s*%]") or s:find("%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d") then
    marked = mark_literals(s)
  end
  local ok, v = pcall(cjson_decode, marked)
  if not ok then return nil, (tostring(v):gsub("^[^:]*:%d+: ", "")) end
  if v == null then return nil, "the document is null" end
  ok, v = pcall(fix, v)
  if not ok then
    if type(v) == "table" and v.json then return nil, v.json end
    error(v, 0)
  end
  return v
end

-- }====================================================================

return json
