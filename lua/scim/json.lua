--- JSON for SCIM messages, encoded and decoded in C (scim.core, csrc/ljson.c).
-- Debian's lua-cjson 2.1.0 cannot express what SCIM needs: it has no array marker (an
-- empty table always encodes as `{}`, and a decoded `[]` is indistinguishable from `{}`),
-- it decodes every number as a float (ids longer than 15 digits lose their last digits),
-- and it hands nulls over as a lightuserdata most code would trip on. So here:
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

local core = require "scim.core"

local type, setmetatable, getmetatable, pcall = type, setmetatable, getmetatable, pcall

local json = {}

--- The value that encodes as `null` (a NULL lightuserdata, equal to lua-cjson's
-- `cjson.null`). `decode` never returns it: decoded nulls are absent.
json.null = core.json_null

--- The metatable that marks a Lua table as a JSON array, so `{}` encodes as `[]`
-- (`__name` "scim.json.array"). Arrays decoded by `json.decode` carry it too.
json.array_mt = core.json_array_mt
local array_mt = json.array_mt

-- The set of array markers the encoder honours (shared with the C encoder): ours, and
-- newer lua-cjson versions' own when present.
local ARRAY_MTS = core.json_array_mts
local has_cjson, cjson = pcall(require, "cjson")
if has_cjson and type(cjson) == "table" then
  if type(cjson.array_mt) == "table" then ARRAY_MTS[cjson.array_mt] = true end
  if type(cjson.empty_array_mt) == "table" then ARRAY_MTS[cjson.empty_array_mt] = true end
end

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
-- Encoding and decoding (csrc/ljson.c, csrc/ljsondec.c)
-- =====================================================================

-- RFC 7643/7644 multi-valued attributes and message fields under which an unmarked empty
-- table encodes as an empty array: schemas, emails, phoneNumbers, ims, photos, addresses,
-- groups, entitlements, roles, x509Certificates, members, Operations, Resources, Errors
-- (the list is in csrc/ljson.c).

--- Encode a Lua value as JSON text.
-- Tables with positive integer keys 1..n, and empty tables marked with `json.array` (or
-- under a SCIM multi-valued name such as `emails` or `schemas`), encode as arrays; other
-- tables as objects with keys sorted bytewise. `json.null` encodes as `null`, integral
-- floats as integers, other floats in the shortest of `%.14g` and `%.17g` that reads back
-- the same; NaN, infinities, invalid UTF-8, functions and tables nested deeper than 64
-- (a cycle) are refused. Tables are read raw (no metamethods).
-- @param v the value
-- @treturn string the JSON text
-- @treturn[2] nil
-- @treturn[2] string the problem, naming the field, e.g.
--   "field 'name.givenName' is not valid UTF-8" (the top level is `''`)
-- @usage json.encode{ emails = {}, id = 42.0 }  --> '{"emails":[],"id":42}'
json.encode = core.json_encode

--- Decode JSON text.
-- Objects and arrays become tables (arrays marked with `json.array_mt`, empty ones
-- included); nulls become absent fields (and leave no hole in an array); integral numbers
-- become integers, exact to 64 bits. Strict: the RFC 8259 number grammar (no NaN,
-- Infinity, hex, leading zeros or `1.`), numbers beyond a double's range, invalid UTF-8,
-- bad escapes and lone surrogates, nesting deeper than 1000 and a document that is just
-- `null` are refused. Raw control characters inside strings are accepted, as lua-cjson
-- accepts them.
-- @tparam string s JSON text
-- @return the value
-- @treturn[2] nil
-- @treturn[2] string what is wrong, e.g. "Expected value but found T_END at character 1"
--   or "invalid UTF-8 at byte 7"
json.decode = core.json_decode

-- }====================================================================

return json
