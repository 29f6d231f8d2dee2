--- SCIM Bulk for `scim.client` (RFC 7644 §3.7): the method `bulk`, documented with the
-- client. Internal: required by scim.client, which passes its class and helpers.
-- @module scim.client.bulk

local json = require "scim.json"

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local setmetatable, getmetatable = setmetatable, getmetatable
local math_type, math_tointeger, math_huge = math.type, math.tointeger, math.huge
local string_format, table_concat = string.format, table.concat

local M = {}

-- The client's class (methods are added to it by `install`) and its helpers, set by
-- `install`.
local Client = {}
local argerror, check_open, send, local_error, http_error, decode_body, member_url, with_schemas,
  split_operations, patch_schema, PATCHOP, escape, unsupported

-- {====================================================================
-- Bulk
-- =====================================================================

local BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
local BULK_METHODS = { POST = true, PUT = true, PATCH = true, DELETE = true }
-- Fallbacks when a server says it has Bulk but not its limits.
local BULK_MAX_OPERATIONS, BULK_MAX_PAYLOAD = 1000, 1048576

-- Every "bulkId:x" string inside `v` whose x is in `ids` replaced by ids[x]; `missing`
-- collects the references to bulkIds in `failed`. Returns the new value.
local function resolve_refs(v, ids, failed, missing)
  if type(v) == "string" then
    local ref = v:match("^bulkId:(.+)$")
    if ref then
      if ids[ref] then return ids[ref] end
      if failed[ref] then missing[#missing + 1] = ref end
    end
    return v
  end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = resolve_refs(x, ids, failed, missing) end
  return setmetatable(out, getmetatable(v))
end

-- The caller's operation checked and put in BulkRequest shape (without references
-- resolved): `{ method=, path=, bulkId=, version=, data= }`, or nil and an error object
-- (an id that cannot be sent). Misuse raises at the caller of `bulk`.
local function bulk_operation(self, i, o, ids_seen)
  local function bad(what) argerror(1, "bulk", "operation " .. i .. ": " .. what, 4) end
  if type(o) ~= "table" then bad("table expected") end
  local method = type(o.method) == "string" and o.method:upper() or nil
  if not BULK_METHODS[method] then bad("method must be POST, PUT, PATCH or DELETE") end
  local bulk_id = o.bulk_id or o.bulkId
  if bulk_id ~= nil then
    if type(bulk_id) ~= "string" or bulk_id == "" then bad("bulk_id must be a string") end
    if ids_seen[bulk_id] then bad("bulk_id '" .. bulk_id .. "' used twice") end
    ids_seen[bulk_id] = true
  end
  local resource = o.resource or "Users"
  if resource ~= "Users" and resource ~= "Groups" then bad("resource must be Users or Groups") end
  local path = o.path
  if path ~= nil then
    if type(path) ~= "string" or not path:find("^/") then bad("path must start with /") end
  else
    path = "/" .. (resource == "Users" and self.d.users_path or self.d.groups_path)
    if method ~= "POST" then
      local id = o.id
      if math_type(id) == "integer" then id = tostring(id) end
      if type(id) ~= "string" then bad(method .. " needs an id (or a path)") end
      if id:find("^bulkId:") then
        path = path .. "/" .. id
      else
        local url, err = member_url(self, method, self.url .. path:sub(2), id)
        if not url then return nil, err end
        path = path .. "/" .. escape(id)
      end
    end
  end
  local data = o.data
  if method == "DELETE" then
    data = nil
  elseif type(data) ~= "table" then
    bad(method .. " needs data")
  elseif method == "PATCH" then
    if data.Operations == nil then
      data = { schemas = json.array{ patch_schema(self.d) or PATCHOP },
        Operations = json.array(split_operations(data, math_huge, "bulk")) }
    end
  else
    local schema = path:find("^/" .. self.d.groups_path) and self.d.group_schema
      or self.d.core_schema
    data = with_schemas(data, schema, "bulk")
  end
  if method == "POST" and not bulk_id then bulk_id = "op" .. i end
  if o.version ~= nil and type(o.version) ~= "string" then bad("version must be a string") end
  return { method = method, path = path, bulkId = bulk_id, version = o.version, data = data }
end

local function bulk_status(v)
  if type(v) == "string" then v = v:match("^%s*(%d%d%d)") end
  return math_tointeger(tonumber(v))
end

-- One operation's result from its BulkResponse entry.
local function bulk_result(self, op, r)
  local url = self.url .. op.path:sub(2)
  local status = bulk_status(r.status)
  local out = { status = status, bulk_id = op.bulkId, location = type(r.location) == "string"
    and r.location or nil, version = type(r.version) == "string" and r.version or nil }
  local response = type(r.response) == "table" and r.response or nil
  if not status then
    out.error = local_error(self, op.method, url, "the BulkResponse gives no status for this "
      .. "operation", "BAD_JSON")
  elseif status >= 200 and status <= 299 then
    out.ok = true
    out.resource = response
    local id = response and response.id
    if math_type(id) then id = tostring(math_tointeger(id) or id) end
    if type(id) ~= "string" and out.location then
      id = out.location:match("/([^/?#]+)/?$")
      if id then id = id:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end) end
    end
    if type(id) ~= "string" and op.method ~= "POST" then id = op.path:match("/([^/]+)$") end
    out.id = type(id) == "string" and id or nil
  else
    local body = response and json.encode(response) or ""
    out.error = http_error(self, { status = status, body = body,
      headers = { ["content-type"] = "application/scim+json" } }, op.method, url)
  end
  if out.error then out.code = out.error.code end
  return out
end

--- Send operations through SCIM Bulk (RFC 7644 §3.7, POST /Bulk), in as many
-- BulkRequests as the server's `maxOperations` and `maxPayloadSize` need (from
-- `/ServiceProviderConfig`), with `failOnErrors` unset so one bad operation does not stop
-- the others. Operations keep their order: a reference `"bulkId:x"` in `data` (or as an
-- `id`) to a POST in the same request is resolved by the server; to a POST of an earlier
-- request, by the client before it sends. An operation referring to a POST that failed is
-- not sent (code "BULK_REF"). A dialect may declare the endpoint and limits
-- (`bulk = { url = or path =, max_operations =, max_payload_size = }`); then no
-- ServiceProviderConfig is read, and a 2xx answer without a body (202 Accepted) gives each
-- operation of that request `{ ok = true, accepted = true, status = 202 }`.
-- @tparam table operations array of `{ method = "POST"|"PUT"|"PATCH"|"DELETE",
--   resource = "Users"|"Groups" (default "Users"), id = (PUT/PATCH/DELETE), path = (instead
--   of resource and id, e.g. "/Users/42"), bulk_id = (POST; default "op<index>"),
--   data = resource (POST/PUT) or array of PatchOp operations (PATCH), version = ETag }`
-- @tparam[opt] table opts `max_operations`, `max_payload_size`: lower caps than the server's
-- @treturn table results in operation order, each `{ ok = true|nil, status = n, id =,
--   location =, version =, bulk_id =, resource = (the response, when given), error =
--   scim.error, code = }` (`code` e.g. "UNIQUENESS", "BAD_ID", "BULK_REF", "TOO_LARGE",
--   "NO_RESULT", or a whole request's failure); `results.requests` = BulkRequests sent
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code "UNSUPPORTED" (the server does not offer Bulk; nothing sent)
-- @raise on a malformed operation
function Client:bulk(operations, opts)
  check_open(self, "bulk")
  if type(operations) ~= "table" then argerror(1, "bulk", "array of operations expected") end
  opts = opts or {}
  for k, v in pairs(opts) do
    if (k ~= "max_operations" and k ~= "max_payload_size") or math_type(v) ~= "integer"
        or v < 1 then
      error("bulk: option '" .. tostring(k) .. "' unknown or not a positive integer", 2)
    end
  end
  -- A dialect may declare its Bulk endpoint and limits (`bulk = { url = or path =,
  -- max_operations =, max_payload_size = }`): then no ServiceProviderConfig is needed.
  local declared = type(self.dialect.bulk) == "table" and self.dialect.bulk or nil
  local bulk_url = declared and declared.url
    or (declared and declared.at_url and (self.url:gsub("/$", "")))
    or self.url .. (declared and declared.path or self.d.bulk_path or "Bulk")
  local ops, results, seen = {}, { requests = 0 }, {}
  for i, o in ipairs(operations) do
    local op, err = bulk_operation(self, i, o, seen)
    ops[i] = op
    if not op then results[i] = { error = err, code = err.code } end
  end
  local limits = declared or self:capabilities().bulk
  if not declared and not limits.supported then
    return unsupported(self, "POST", bulk_url, "the server does not offer SCIM Bulk "
      .. "(per its ServiceProviderConfig)")
  end
  local function limit(v, fallback)
    return (math_type(v) and v > 0) and v or fallback
  end
  local max_ops = math.min(opts.max_operations or math_huge,
    limit(limits.max_operations, BULK_MAX_OPERATIONS))
  local max_bytes = math.min(opts.max_payload_size or math_huge,
    limit(limits.max_payload_size, BULK_MAX_PAYLOAD))
  local head = '{"Operations":['
  local tail = '],"schemas":["' .. BULK_REQUEST .. '"]}'
  local created, failed = {}, {}  -- bulkId -> id of a POST in an earlier request / failed
  local n, next_i = #operations, 1
  while next_i <= n do
    -- One request's worth: whole operations, in order, under both limits.
    local batch, parts, bytes = {}, {}, #head + #tail
    while next_i <= n and #batch < max_ops do
      local i, op = next_i, ops[next_i]
      if op and not results[i] then
        local missing = {}
        local wire = resolve_refs(op, created, failed, missing)
        local ref = op.path:match("/bulkId:([^/]+)$")
        if ref and created[ref] then
          wire.path = op.path:sub(1, (op.path:find("/bulkId:[^/]+$"))) .. escape(created[ref])
        elseif ref and failed[ref] then
          missing[#missing + 1] = ref
        end
        local text, why
        if missing[1] then
          results[i] = { error = local_error(self, op.method, bulk_url, "refers to bulkId:"
            .. missing[1] .. ", whose POST failed", "BULK_REF"), code = "BULK_REF" }
        else
          text, why = json.encode(wire)
          if not text then
            results[i] = { error = local_error(self, op.method, bulk_url,
              "cannot encode the operation: " .. why, "ENCODE"), code = "ENCODE" }
          elseif #head + #tail + #text > max_bytes then
            results[i] = { error = local_error(self, op.method, bulk_url, string_format(
              "the operation alone is %d bytes, over the server's maxPayloadSize %d",
              #text, max_bytes), "TOO_LARGE"), code = "TOO_LARGE" }
          elseif bytes + #text + 1 > max_bytes and batch[1] then
            break
          else
            batch[#batch + 1], parts[#parts + 1] = i, text
            bytes = bytes + #text + 1
          end
        end
        if results[i] and op.bulkId then failed[op.bulkId] = true end
      end
      next_i = next_i + 1
    end
    if batch[1] then
      results.requests = results.requests + 1
      local res, err = send(self, "POST", bulk_url, head .. table_concat(parts, ",") .. tail)
      local doc, derr
      if res and (res.status < 200 or res.status > 299) then
        err = http_error(self, res, "POST", bulk_url)
      elseif res and (res.body or ""):find("^%s*$") then
        -- Accepted for later processing (202 and no body, as Entra's bulkUpload answers):
        -- success as far as this request can tell.
        for _, i in ipairs(batch) do
          results[i] = { ok = true, accepted = true, status = res.status,
            bulk_id = ops[i].bulkId }
        end
      elseif res then
        doc, derr = decode_body(self, res, "POST", bulk_url)
        err = derr
        if doc and type(doc.Operations) ~= "table" then
          err = local_error(self, "POST", bulk_url, "the BulkResponse has no Operations array",
            "BAD_JSON", res.status)
        end
      end
      if err then
        for _, i in ipairs(batch) do
          results[i] = { error = err, code = err.code, status = err.status }
          if ops[i].bulkId then failed[ops[i].bulkId] = true end
        end
      elseif doc then
        -- Answers by bulkId first, then the rest in order, method by method.
        local by_id, rest = {}, {}
        for _, r in ipairs(doc.Operations) do
          if type(r) == "table" then
            if type(r.bulkId) == "string" and not by_id[r.bulkId] then by_id[r.bulkId] = r
            else rest[#rest + 1] = r end
          end
        end
        local pos = 1
        for _, i in ipairs(batch) do
          local op = ops[i]
          local r = op.bulkId and by_id[op.bulkId]
          if not r then
            while rest[pos] and type(rest[pos].method) == "string"
                and rest[pos].method:upper() ~= op.method do
              pos = pos + 1
            end
            r = rest[pos]
            pos = pos + 1
          end
          if r then
            results[i] = bulk_result(self, op, r)
          else
            local e = local_error(self, op.method, bulk_url, "the BulkResponse has no result "
              .. "for this operation", "NO_RESULT")
            results[i] = { error = e, code = e.code }
          end
          if op.bulkId then
            if results[i].ok and results[i].id then created[op.bulkId] = results[i].id
            elseif not results[i].ok then failed[op.bulkId] = true end
          end
        end
      end
    end
  end
  return results
end

-- }====================================================================

--- Adds the methods to the client class. Called once, by scim.client.
-- @tparam table class the client's methods table
-- @tparam table internals its helpers
function M.install(class, internals)
  local I = internals
  argerror = I.argerror
  check_open = I.check_open
  send = I.send
  local_error = I.local_error
  http_error = I.http_error
  decode_body = I.decode_body
  member_url = I.member_url
  with_schemas = I.with_schemas
  split_operations = I.split_operations
  patch_schema = I.patch_schema
  PATCHOP = I.PATCHOP
  escape = I.escape
  unsupported = I.unsupported
  for k, v in pairs(Client) do class[k] = v end
end

return M
