--- Field mappings: CSV rows to SCIM resources and back.
--
-- A mapping is a Lua table (usually a file returning one) that says which CSV column feeds
-- which SCIM attribute path. `compile` checks it once and turns every attribute path into a
-- small parsed form, so the per-row work is table lookups. The same compiled mapping builds a
-- resource from a row (`to_resource`), a row from a resource (`to_row`, for export), the
-- PatchOp operations that bring a resource in line with a row (`diff`) and the full record
-- for a PUT (`merge`). Provider differences come from the dialect (`scim.dialects.*`).
--
-- For many rows of one file, bind the mapping to the file's header once (`bind`): the bound
-- object takes each row as the array of values it was read as. For many accounts, keep each
-- one's `fingerprint` instead of the whole record and compare rows against it (`changes`).
--
-- This module is the facade; the work is done by phase in scim.mapping.path (attribute
-- paths), .compile (checking a mapping), .header (header check, binding), .to_resource
-- (row -> resource), .to_row (resource -> row), .diff (diff, merge) and .compact
-- (the comparison form).
-- @module scim.mapping

local compile = require "scim.mapping.compile"
local compact = require "scim.mapping.compact"
local diff = require "scim.mapping.diff"
local header = require "scim.mapping.header"
local paths = require "scim.mapping.path"
local to_resource = require "scim.mapping.to_resource"
local to_row = require "scim.mapping.to_row"

local mapping = {}

local Mapping = {}
local Mapping_mt = {
  __name = "scim.mapping",
  __index = Mapping,
  __tostring = function(m) return "scim.mapping (" .. m.source .. ")" end,
}

--- Parses an attribute path into its parts (no dialect needed).
-- @tparam string text e.g. `emails[type eq "work"].value`
-- @treturn table `{ text=, schema=, attr=, filter={attr=,value=}, sub= }`
-- @treturn[2] nil
-- @treturn[2] string what is wrong and where
mapping.parse_path = paths.parse

--- Compiles a mapping table.
-- @tparam table tbl the mapping (see the README's mapping reference)
-- @tparam[opt] table opts `dialect` (name or dialect table, default "scim2"), `source`
--   (a name for messages, e.g. the file name)
-- @treturn scim.mapping the compiled mapping
-- @raise on a bad mapping, with a message naming the source and the entry
-- @usage local m = mapping.compile({ { "email", "userName" } }, { dialect = "meta" })
function mapping.compile(tbl, opts)
  if type(tbl) ~= "table" then error("bad argument #1 to 'compile' (table expected)", 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #2 to 'compile' (table expected)", 2) end
  for k in pairs(opts) do
    if k ~= "dialect" and k ~= "source" then
      error("bad argument #2 to 'compile' (unknown option '" .. tostring(k) .. "')", 2)
    end
  end
  return compile.compile(tbl, opts, Mapping_mt)
end

--- Loads and compiles a mapping file (a Lua file returning a mapping table).
-- The file runs in its own environment (reads fall back to the globals, writes stay local).
-- @tparam string path the file
-- @tparam[opt] table opts as for `compile` (`source` defaults to the path)
-- @treturn scim.mapping the compiled mapping
-- @treturn[2] nil
-- @treturn[2] string message naming the file (and entry)
-- @treturn[2] string code: "NOT_FOUND", "SYNTAX", "RUNTIME" or "INVALID"
function mapping.load(path, opts)
  if type(path) ~= "string" then error("bad argument #1 to 'load' (string expected)", 2) end
  opts = opts or {}
  local f = io.open(path, "rb")
  if not f then return nil, "mapping " .. path .. ": cannot open the file", "NOT_FOUND" end
  local src = f:read("a")
  f:close()
  local env = setmetatable({}, { __index = _G })
  local chunk, serr = load(src, "@" .. path, "t", env)
  if not chunk then return nil, "mapping " .. serr, "SYNTAX" end
  local ok, tbl = pcall(chunk)
  if not ok then return nil, "mapping " .. path .. ": " .. tostring(tbl), "RUNTIME" end
  if type(tbl) ~= "table" then
    return nil, "mapping " .. path .. ": the file must return a table, not " .. type(tbl),
      "INVALID"
  end
  local o = { dialect = opts.dialect, source = opts.source or path }
  local cok, m = pcall(mapping.compile, tbl, o)
  if not cok then return nil, tostring(m), "INVALID" end
  return m
end

--- The default mapping: the original sample's columns (examples/mappings/default.lua).
-- @tparam[opt] table opts as for `compile`
-- @treturn scim.mapping
function mapping.default(opts)
  opts = opts or {}
  return mapping.compile(require("scim.mapping.default"),
    { dialect = opts.dialect, source = opts.source or "default" })
end


--- Checks a CSV header against the mapping for a job.
-- @tparam table header the header names, in file order
-- @tparam[opt] string job "create", "update", "delete", "sync" (default "create")
-- @tparam[opt] table opts `unknown_columns`: "error" or "ignore", overriding the mapping's
--   own setting for this check (the command line's `--ignore-unknown-columns`)
-- @treturn true
-- @treturn table warnings (possibly empty): columns the dialect cannot use
-- @treturn[2] nil
-- @treturn[2] table error messages: unknown, duplicate and missing required columns
Mapping.check_header = header.check_header

--- Binds the mapping to a CSV header, resolving each column's index once.
-- The bound object's per-row functions take the row as read: an array of values in header
-- order (`values[i]` under `header[i]`). Header names match as in `check_header` (without
-- regard to case and spaces, aliases included); columns the mapping does not know are left
-- alone, and a column the header lacks is absent in every row (its attribute untouched).
-- The header check runs once, here: its outcome is in `b.ok`, `b.problems` and `b.warnings`
-- (the bound object works either way, so a caller can list the rows' problems too).
--
-- Fields: `b.mapping`, `b.header`, `b.ok` (boolean), `b.problems` (messages, empty when
-- ok), `b.warnings`, `b.columns` (header index -> mapping column, or false).
-- Methods (each as the unbound method of the same name, with `values` for `row`):
-- `b:key(values, line)`, `b:to_resource(values, line, job)`, `b:references(values)`,
-- `b:read(values, line, job)` → key, resource, references in one pass (or nil, err, code),
-- `b:row(values)` → the row keyed by header name.
-- @tparam table header the file's column names, in file order
-- @tparam[opt] string job as for `check_header` (default "create")
-- @tparam[opt] table opts as for `check_header`: `unknown_columns`
-- @treturn scim.mapping.bound
-- @raise on a bad argument (as `check_header`)
-- @usage
-- local b = m:bind(reader.header, "update")
-- if not b.ok then for _, p in ipairs(b.problems) do print(p) end end
-- for values, line in rows do
--   local key, resource, refs = b:read(values, line, "update")
-- end
Mapping.bind = header.bind

--- Builds the SCIM resource a row describes.
-- Only columns the row has are written, so a file with a few columns updates only those.
-- References (the manager) are not written: resolve `references(row)` and `set_reference`.
-- @tparam table row the CSV row, keyed by header name
-- @tparam[opt] integer line the row's line in the file, for messages
-- @tparam[opt] string job "create", "update", ...: selects `jobs =` entries, `required`
--   checks and the dialect's create defaults
-- @treturn table the resource, including `schemas`
-- @treturn[2] nil
-- @treturn[2] string "line 7, field 'start date': ..."
-- @treturn[2] string code: "INVALID_VALUE"
Mapping.to_resource = to_resource.to_resource

--- The row's key: the value it gives the key attribute (userName or externalId).
-- Keys compare case-insensitively: use `key_id` to compare.
-- @tparam table row
-- @tparam[opt] integer line
-- @treturn string the key
-- @treturn[2] nil
-- @treturn[2] string message
Mapping.key = to_resource.key

--- The form of a key used for comparisons (SCIM userName is case-insensitive).
-- @tparam string key
-- @treturn string
function Mapping.key_id(_, key)
  return key and key:lower()
end

--- The references a row makes: the keys of other people, by reference name.
-- @tparam table row
-- @treturn table e.g. `{ manager = "boss@example.com" }` (empty cells left out)
Mapping.references = to_resource.references

--- Writes a reference's SCIM id into a resource, in the dialect's shape
-- (`<enterprise>:manager.value`, or `manager.managerId` for workplace_v1).
-- @tparam table resource
-- @tparam string name "manager"
-- @tparam string id the referenced person's SCIM id
Mapping.set_reference = to_resource.set_reference

--- Reads a reference's SCIM id from a resource (`value` or, for Meta, `managerId`).
-- @tparam table resource
-- @tparam string name "manager"
-- @treturn string|nil the id
function Mapping:reference_id(resource, name)
  if name ~= "manager" then error("bad argument #2 to 'reference_id' (unknown reference)", 2) end
  return paths.reference_id(self.dialect, resource)
end

--- Builds the row a resource makes (export). Columns are `m.columns`.
-- @tparam table resource a SCIM resource as the server returned it
-- @tparam[opt] function key_of_id maps a referenced id (the manager's) to that person's key;
--   without it reference columns are left empty
-- @treturn table row keyed by column name (every column present, "" when empty)
-- @treturn[2] nil
-- @treturn[2] string message naming the column
Mapping.to_row = to_row.to_row

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
Mapping.diff = diff.diff

--- The full record to PUT: the current resource with the row's values laid over it,
-- without the attributes the server owns (id, meta, ... — the dialect's `read_only`).
-- Multi-valued attributes are merged by `type`, so a home phone survives a work-phone
-- update; `schemas` keeps the current ones and adds the new.
-- @tparam table current the resource as the server has it
-- @tparam table desired the resource `to_resource` built (with references set)
-- @treturn table the record for PUT
Mapping.merge = diff.merge

--- The compact comparison form of a resource as the server has it: one string with, for
-- each attribute the mapping writes, the cell its value makes (or "absent"). Keep it with
-- the key and id instead of the whole record; `changes` compares a row against it.
-- @tparam table resource
-- @treturn string
-- @usage known[m:key_id(key)] = { id = res.id, fp = m:fingerprint(res) }
Mapping.fingerprint = compact.fingerprint

--- The values a fingerprint holds: `{ [i] = cell }` for `m.targets[i]` (nil where absent).
-- @tparam string fp
-- @treturn table
-- @raise when `fp` is not a fingerprint of this mapping
Mapping.fingerprint_values = compact.fingerprint_values

--- What `diff(current, desired)` would change, knowing only the current resource's
-- `fingerprint`: empty exactly when `diff` has nothing to send.
-- @tparam string fp `m:fingerprint(current)`
-- @tparam table desired the resource `to_resource` built (with references set)
-- @treturn table `{ {path=, column=, old=, new=}, ... }`; `old` and `new` are the column's
--   cells as export writes them (SCIM ids for a reference; `new` nil for a removal)
Mapping.changes = compact.changes

return mapping
