--- Small helpers shared by the scim.mapping modules (private: not part of the public API).
-- Cell trimming, header-name normalisation, case-insensitive reads of SCIM objects, copies
-- and the constants several phases need.
-- @module scim.mapping.util

local util = {}

--- The shipped dialects, by name.
util.DIALECTS = require("scim.dialects").NAMES
--- The jobs a mapping entry may name.
util.JOBS = { create = true, update = true, delete = true, export = true, sync = true }

-- Words a boolean cell may hold (lower case).
util.TRUE_WORDS = { ["true"] = true, yes = true, ["1"] = true, y = true, on = true }
util.FALSE_WORDS = { ["false"] = true, no = true, ["0"] = true, n = true, off = true }

local SPACE_BYTE = { [9] = true, [10] = true, [11] = true, [12] = true, [13] = true, [32] = true }

--- A string without surrounding white space.
-- Runs on every cell: most have no surrounding space, so the two gsubs are skipped for those.
function util.trim(s)
  if not (SPACE_BYTE[s:byte(1)] or SPACE_BYTE[s:byte(-1)]) then return s end
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end
local trim = util.trim

--- Whether a decoded JSON value is there: cjson decodes null as a lightuserdata sentinel,
-- which for reading values is "absent".
function util.present(v)
  return v ~= nil and type(v) ~= "userdata"
end

local norm_cache, norm_cache_n = {}, 0
--- Normalizes a header name: lower-case, no BOM, surrounding space gone, inner runs of
-- space collapsed, so "  First   Name" matches "first name".
function util.norm(s)
  local n = norm_cache[s]
  if n then return n end
  n = trim(s:gsub("^\239\187\191", "")):gsub("%s+", " "):lower()
  if norm_cache_n >= 4096 then norm_cache, norm_cache_n = {}, 0 end  -- bound the memo
  norm_cache[s], norm_cache_n = n, norm_cache_n + 1
  return n
end

--- Reads t[name], falling back to a case-insensitive match: SCIM attribute names and schema
-- URNs are case-insensitive and servers do not all answer in our spelling.
function util.field(t, name)
  if type(t) ~= "table" then return nil end
  local v = t[name]
  if v ~= nil then return v end
  local lname, n = name:lower(), #name
  for k, val in pairs(t) do  -- the length first: most keys differ in it, and it's cheap
    if type(k) == "string" and #k == n and k:lower() == lname then return val end
  end
  return nil
end

--- The key under which t holds name (case-insensitively), or nil.
function util.field_key(t, name)
  if t[name] ~= nil then return name end
  local lname, n = name:lower(), #name
  for k in pairs(t) do
    if type(k) == "string" and #k == n and k:lower() == lname then return k end
  end
  return nil
end

function util.deep_copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = util.deep_copy(x) end
  return c
end

function util.is_array(t)
  return type(t) == "table" and (t[1] ~= nil or next(t) == nil)
end

function util.set_of(list)
  local s = {}
  for _, v in ipairs(list or {}) do s[v] = true end
  return s
end

function util.json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

--- A number as the digits of an integer when it is one (no ".0").
function util.int_string(n)
  local i = math.tointeger(n)
  return i and tostring(i) or tostring(n)
end

--- The targets a row asked to clear (`empty = "remove"`). They ride in the resource's
-- metatable: invisible to the JSON encoder and to pairs, and kept by copies that keep the
-- metatable.
function util.clears_of(resource)
  local mt = getmetatable(resource)
  return type(mt) == "table" and mt.scim_clears or nil
end

--- "line 7, field 'start date'" (or the entry's label when it has no column).
function util.where(line, en)
  return (line and ("line " .. line .. ", ") or "")
    .. (en.column and ("field '" .. en.column .. "'") or en.label)
end

--- Whether an entry with `jobs =` takes part in a job.
function util.job_allows(en, job)
  if not en.jobs then return true end
  return job ~= nil and en.jobs[job] == true
end

--- Whether an entry's column must have a value for a job.
function util.is_required(en, job)
  if not en.required then return false end
  if job == nil then return en.required_always end
  return en.required[job] == true
end

return util
