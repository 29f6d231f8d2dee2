--- The SCIM protocol client (RFC 7644, and the SCIM 1.1 shapes of the legacy API).
-- One client talks to one service provider over one `scim.http` engine, so its
-- connections are reused and, inside `scim.run`, its requests from many coroutines
-- share one in-flight window. Every method is straight-line: inside a coroutine run by
-- `scim.run` it yields while its request is in flight.
--
-- Failures are the fail triple `nil, err, code`: `err` is a `scim.error` object that
-- prints (`tostring`, `..`) as its message, e.g.
-- `PATCH http://host/scim/v2/Users/42: 404 Not Found: User 42 not found`, and has the
-- fields `status`, `scim_type`, `detail`, `method`, `url` and `code` (`code` is also the
-- third value). The bearer token never appears in any of them.
--
-- Why this module is long: the Users protocol (CRUD, PatchOp, paging, filters), the error
-- objects and the capabilities share one client's private state (its engine, secrets,
-- ETags and dialect view); Groups and Bulk, which only use it, live in scim.client.groups
-- and scim.client.bulk.
-- @module scim.client
-- @usage
-- local client = require("scim.client").new{ url = "https://example.com/scim/v2/",
--   token = os.getenv("SCIM_TOKEN") }
-- local user = assert(client:find_user("ada@example.com"))
-- for u in client:users{ filter = 'title eq "Engineer"' } do print(u.userName) end

local filter = require "scim.filter"
local http = require "scim.http"
local json = require "scim.json"
local token_mod = require "scim.token"

local type, pairs, ipairs, tostring, tonumber, error = type, pairs, ipairs, tostring,
  tonumber, error
local setmetatable, getmetatable, pcall, require = setmetatable, getmetatable, pcall, require
local math_type, math_tointeger, math_huge = math.type, math.tointeger, math.huge
local string_format, table_concat = string.format, table.concat
local utf8_len = utf8.len

local client = {}

-- client -> its token, kept out of the object so that dumping or serialising a client
-- (a debugger, an inspect() in a trace) cannot show it. Weak keys: it goes with the client.
local secrets = setmetatable({}, { __mode = "k" })
-- client -> "Bearer <token>" when it must go on each request (a shared engine).
local auth_headers = setmetatable({}, { __mode = "k" })
-- client -> its token provider (`token = provider`): asked before each request.
local providers = setmetatable({}, { __mode = "k" })

-- {====================================================================
-- Errors
-- =====================================================================

local REASONS = {
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [406] = "Not Acceptable", [408] = "Request Timeout",
  [409] = "Conflict", [410] = "Gone", [412] = "Precondition Failed",
  [413] = "Payload Too Large", [415] = "Unsupported Media Type", [422] = "Unprocessable Entity",
  [429] = "Too Many Requests", [500] = "Internal Server Error", [501] = "Not Implemented",
  [502] = "Bad Gateway", [503] = "Service Unavailable", [504] = "Gateway Timeout",
  [200] = "OK", [201] = "Created", [204] = "No Content",
}

-- HTTP statuses whose meaning does not depend on the body.
local STATUS_CODES = {
  [401] = "UNAUTHORIZED", [403] = "FORBIDDEN", [404] = "NOT_FOUND",
  [412] = "PRECONDITION_FAILED", [413] = "TOO_LARGE", [429] = "RATE_LIMITED",
  [501] = "NOT_IMPLEMENTED",
}

-- RFC 7644 §3.12 scimType values.
local SCIM_TYPE_CODES = {
  invalidfilter = "INVALID_FILTER", toomany = "TOO_MANY", uniqueness = "UNIQUENESS",
  mutability = "MUTABILITY", invalidsyntax = "INVALID_SYNTAX", invalidpath = "INVALID_PATH",
  notarget = "NO_TARGET", invalidvalue = "INVALID_VALUE", invalidvers = "INVALID_VERS",
  sensitive = "SENSITIVE",
}

--- Every `code` a client failure can carry besides the transport codes of `scim.http`
-- (e.g. "COULDNT_CONNECT", "OPERATION_TIMEDOUT", "BODY_TOO_LARGE", "HTTP_REFUSED") and the
-- generic "HTTP_<status>" for statuses not listed.
-- @table codes
client.codes = {
  "NOT_FOUND", "UNIQUENESS", "UNAUTHORIZED", "FORBIDDEN", "PRECONDITION_FAILED", "TOO_LARGE",
  "RATE_LIMITED", "NOT_IMPLEMENTED", "INVALID_FILTER", "TOO_MANY", "MUTABILITY",
  "INVALID_SYNTAX", "INVALID_PATH", "NO_TARGET", "INVALID_VALUE", "INVALID_VERS", "SENSITIVE",
  "BAD_JSON", "BAD_PAGING", "AMBIGUOUS", "NOT_SUPPORTED", "ENCODE", "BAD_ID", "AUTH",
  "UNSUPPORTED", "BULK_REF", "NO_RESULT",
}

-- The library's one error type (scim.error).
local Error = require("scim.error").Error

--- Is `v` an error object made by this module?
-- @param v any value
-- @treturn boolean
function client.is_error(v)
  return getmetatable(v) == Error
end

-- Redaction has one home, scim.http's scrub: secrets and URL credentials never reach a
-- message.
local scrub = require("scim.http").scrub
local function safe_url(url)
  return scrub(url, {})
end

-- An error object whose message and detail hold none of `hidden` (the tokens this client
-- has sent, the userinfo of its URL) and no URL credentials, wherever they came from (a
-- server may echo the request back).
local function new_error(fields, hidden)
  local e = setmetatable(fields, Error)
  for _, k in ipairs({ "message", "detail" }) do
    local s = e[k]
    if type(s) == "string" then
      local long = {}
      for _, secret in ipairs(hidden or {}) do
        if #secret >= 4 then long[#long + 1] = secret end
      end
      e[k] = scrub(s, long)
    end
  end
  return e
end

-- Collapse a text body into one short line for a message (control characters, which a
-- hostile server could use to rewrite a terminal, become spaces). Bytes that are not
-- UTF-8 (a Latin-1 body) become "?", so the message can go into JSON logs.
local function squeeze(s, max)
  s = s:gsub("%c", " "):gsub(" +", " "):gsub("^ ", ""):gsub(" $", "")
  local cut = #s > max
  if cut then s = s:sub(1, max) end
  local _, bad = utf8_len(s)
  while bad do
    -- A sequence the cut split in half is dropped, not shown as "?".
    if cut and bad > #s - 3 and not s:find("[\192-\255]", bad + 1) then
      s = s:sub(1, bad - 1)
      break
    end
    s = s:sub(1, bad - 1) .. "?" .. s:sub(bad + 1)
    _, bad = utf8_len(s, bad + 1)
  end
  if cut then s = s .. "..." end
  return s
end

local function is_json_type(ct)
  if not ct then return true end  -- no Content-Type: try it as JSON
  ct = ct:lower()
  return ct:find("json", 1, true) ~= nil
end

-- The details of an HTTP error response: scimType and detail from a SCIM 2.0 error
-- (RFC 7644 §3.12), a SCIM 1.1 `Errors` array, or a Graph-style `error` object; or a
-- short piece of a plain-text body.
local function error_details(res)
  local body = res.body or ""
  local ct = res.headers and res.headers["content-type"]
  if body == "" then return nil, nil end
  if is_json_type(ct) then
    local doc = json.decode(body)
    if type(doc) == "table" then
      local scim_type, detail = doc.scimType, doc.detail
      if detail == nil and type(doc.Errors) == "table" and type(doc.Errors[1]) == "table" then
        detail = doc.Errors[1].description or doc.Errors[1].detail
      end
      if detail == nil and type(doc.error) == "table" then detail = doc.error.message end
      if detail == nil and type(doc.message) == "string" then detail = doc.message end
      if type(scim_type) ~= "string" then scim_type = nil end
      if detail ~= nil and type(detail) ~= "string" then detail = tostring(detail) end
      return scim_type, detail and squeeze(detail, 500)
    end
  end
  if ct and ct:lower():find("^text/plain") then return nil, squeeze(body, 200) end
  return nil, nil
end

local function http_error(self, res, method, url)
  local status = res.status
  local scim_type, detail = error_details(res)
  local code = STATUS_CODES[status]
    or (scim_type and SCIM_TYPE_CODES[scim_type:lower()])
    or (status == 409 and "UNIQUENESS")
    or ("HTTP_" .. tostring(status))
  local head = string_format("%s %s: %d %s", method, safe_url(url), status,
    REASONS[status] or "HTTP error")
  if scim_type then head = head .. " (" .. scim_type .. ")" end
  local message = detail and (head .. ": " .. detail) or head
  if res.token_error then
    message = message .. " (renewing the token failed: " .. res.token_error .. ")"
  end
  return new_error({
    message = message,
    status = status, scim_type = scim_type, detail = detail, method = method,
    url = safe_url(url), code = code, attempts = res.attempts,
  }, secrets[self])
end

local function local_error(self, method, url, text, code, status)
  local msg = string_format("%s %s: ", method, safe_url(url))
  if status then msg = msg .. string_format("%d %s: ", status, REASONS[status] or "") end
  return new_error({
    message = msg .. text, status = status, detail = text, method = method,
    url = safe_url(url), code = code,
  }, secrets[self])
end

-- }====================================================================

-- {====================================================================
-- URLs
-- =====================================================================

local function pct_char(c) return string_format("%%%02X", c:byte()) end

--- Percent-encode a string for a URL path segment or query value (RFC 3986: only the
-- unreserved characters stay as they are).
-- @tparam string s the text
-- @treturn string the encoded text
function client.escape(s)
  return (s:gsub("[^%w%-%._~]", pct_char))
end
local escape = client.escape

-- Attribute lists keep their commas: they are the list syntax (RFC 7644 §3.9), and a
-- comma is legal in a query.
local LIST_PARAMS = { attributes = true, excludedAttributes = true }

local function query_string(params)
  local parts = {}
  for _, p in ipairs(params) do
    local v = p[2]
    if v ~= nil then
      if math_type(v) == "float" then v = math_tointeger(v) or v end
      v = escape(tostring(v))
      if LIST_PARAMS[p[1]] then v = v:gsub("%%2C", ",") end
      parts[#parts + 1] = p[1] .. "=" .. v
    end
  end
  if #parts == 0 then return "" end
  return "?" .. table_concat(parts, "&")
end

local function attribute_list(v, what, level)
  if v == nil then return nil end
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then
    error(what .. " must be a list of attribute paths", level or 3)
  end
  for i, a in ipairs(v) do
    local ok, why = filter.check_path(a)
    if not ok then error(what .. "[" .. i .. "]: " .. why, level or 3) end
  end
  return table_concat(v, ",")
end

-- The query of a single-resource read: `attributes` and `excludedAttributes` from `opts`
-- (a bad list raises at the caller of the public method).
local function projection(opts)
  return query_string{
    { "attributes", attribute_list(opts.attributes, "attributes", 4) },
    { "excludedAttributes", attribute_list(opts.excluded_attributes, "excluded_attributes", 4) },
  }
end

-- }====================================================================

-- {====================================================================
-- Dialects and capabilities
-- =====================================================================

-- What a dialect that leaves a field out means (the scim2 behaviour).
local DIALECT_DEFAULTS = {
  content_type = "application/scim+json",
  accept = "application/scim+json, application/json",
  update = "patch",
  core_schema = "urn:ietf:params:scim:schemas:core:2.0:User",
  max_page_size = 100,
  list = { resources = "Resources", total = "totalResults", start = "startIndex",
           per_page = "itemsPerPage" },
  users_path = "Users",
  groups_path = "Groups",
  group_schema = "urn:ietf:params:scim:schemas:core:2.0:Group",
}

local PATCHOP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

-- A dialect that says nothing gets PatchOp, unless it updates by PUT or is SCIM 1.x (whose
-- PATCH is a different message): there `patch_schema = nil` means "no PATCH".
local function patch_schema(d)
  if d.patch_schema then return d.patch_schema end
  if d.update == "put" or d.scim_version == 1 then return nil end
  return PATCHOP
end

-- The dialect table as given, and a view of it that falls back to DIALECT_DEFAULTS.
local function load_dialect(d)
  if d == nil then d = "scim2" end
  if type(d) == "string" then
    local mod, err = require("scim.dialects").load(d)
    if not mod then error("scim.client.new: " .. err, 3) end
    d = mod
  end
  if type(d) ~= "table" then error("scim.client.new: dialect must be a name or a table", 3) end
  return d, setmetatable({}, { __index = function(_, k)
    local v = d[k]
    if v == nil then v = DIALECT_DEFAULTS[k] end
    return v
  end })
end

-- The SCIM 1.x endpoint is plural (SCIM 1.1 core §4); 2.0 made it singular.
local function spc_path(d)
  if d.service_provider_config then return d.service_provider_config end
  if d.scim_version == 1 or (d.core_schema or ""):find("^urn:scim:") then
    return "ServiceProviderConfigs"
  end
  return "ServiceProviderConfig"
end

local function dialect_capabilities(d)
  return {
    source = "dialect",
    patch = d.update == "patch" and patch_schema(d) ~= nil,
    max_page_size = d.max_page_size,
    etag = d.etag ~= false,
    filter = true,
    sort = false,
    change_password = false,
    bulk = { supported = false, max_operations = 0, max_payload_size = 0 },
  }
end

local function positive(n)
  n = tonumber(n)
  if n and n > 0 and n == n and n ~= math_huge then return math_tointeger(n) or n end
  return nil
end

local function supported(section)
  if type(section) == "boolean" then return section end
  if type(section) ~= "table" then return nil end
  local s = section.supported
  if type(s) == "string" then s = s:lower() == "true" end
  if type(s) == "boolean" then return s end
  return nil
end

-- ServiceProviderConfig sections that are a plain "supported" flag -> capability field.
local SPC_FLAGS = { patch = "patch", etag = "etag", sort = "sort",
  changePassword = "change_password", filter = "filter" }

-- RFC 7643 §5 ServiceProviderConfig on top of the dialect's defaults: whatever the server
-- states wins; whatever it leaves out keeps the dialect's value.
local function merge_capabilities(caps, spc)
  caps.source = "server"
  for name, field in pairs(SPC_FLAGS) do
    local v = supported(spc[name])
    if v ~= nil then caps[field] = v end
  end
  if type(spc.filter) == "table" then
    local max = positive(spc.filter.maxResults)
    if max then caps.max_page_size = max end
  end
  if type(spc.bulk) == "table" then
    caps.bulk = {
      supported = supported(spc.bulk) or false,
      max_operations = positive(spc.bulk.maxOperations) or 0,
      max_payload_size = positive(spc.bulk.maxPayloadSize) or 0,
    }
  end
  return caps
end

-- }====================================================================

-- {====================================================================
-- The client object
-- =====================================================================

local Client = {}
Client.__name = "scim.client"
Client.__index = Client

-- Options passed on to `scim.http.new` as they are.
local ENGINE_OPTIONS = { "concurrency", "rate", "timeout", "connect_timeout", "retries",
  "user_agent", "ca_file", "insecure", "allow_http", "proxy", "max_body", "trace" }
-- Every option `client.new` takes, with its type ("any": checked where it is used).
local OPTIONS = {
  url = "string", token = "any", dialect = "any", engine = "table", max_pages = "number",
  headers = "table", http = "table", max_patch_operations = "number",
  max_patch_values = "number",
}
for _, k in ipairs(ENGINE_OPTIONS) do OPTIONS[k] = http.OPTION_TYPES[k] end

-- The ETag cache is bounded so a million-user run does not keep a million versions.
local ETAG_CACHE_MAX = 4096

-- The base URL, checked and ending in "/". Raises at the caller of `client.new`.
local function base_url(url, d)
  if not url then
    error("scim.client.new: no url given and the " .. tostring(d.name or "scim2")
      .. " dialect has no default", 3)
  end
  if not url:find("^[hH][tT][tT][pP][sS]?://[^/%s]+") or url:find("[%s%c]") then
    error("scim.client.new: url must be an http:// or https:// URL, got '" .. safe_url(url)
      .. "'", 3)
  end
  if url:find("[?#]") then
    error("scim.client.new: url must not have a query or fragment: '" .. safe_url(url) .. "'", 3)
  end
  if url:sub(-1) ~= "/" then url = url .. "/" end
  return url
end

-- A `scim.http` engine of our own: `opts.http`, then the pass-through options, then the
-- headers with the token.
local function new_engine(opts, auth)
  local eo = {}
  for k, v in pairs(opts.http or {}) do eo[k] = v end
  for _, k in ipairs(ENGINE_OPTIONS) do
    if opts[k] ~= nil then eo[k] = opts[k] end
  end
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  headers.Authorization = auth
  eo.headers = headers
  return http.new(eo)
end

--- Make a client.
-- @tparam table opts options:
--
--  * `url` base URL of the SCIM API, e.g. "https://host/scim/v2/" (default: the dialect's)
--  * `token` the bearer token (never appears in messages or traces), or a token provider
--    (`scim.token`): asked before each request, and once more after a 401, when the
--    request is sent again with the new token
--  * `dialect` "scim2" (default), "meta", "workplace_v1", or a dialect table
--  * `concurrency`, `rate`, `timeout`, `connect_timeout`, `retries`, `user_agent`,
--    `ca_file`, `insecure`, `proxy`, `allow_http`, `max_body`, `trace`: passed to `scim.http`
--  * `headers` extra headers sent on every request
--  * `http` further `scim.http.new` options (e.g. `backoff_base`, `max_connects`)
--  * `engine` an existing `scim.http` engine to use (and not close) instead of a new one
--  * `max_pages` how many pages one listing may take before it is judged endless
--    (default 100000)
-- @treturn scim.client the client
-- @raise on a missing URL, unknown option or bad option value
-- @usage local c = require("scim.client").new{ url = url, token = token, concurrency = 16 }
function client.new(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'scim.client.new' (table expected, got " .. type(opts) .. ")", 2)
  end
  http.check_options(opts, OPTIONS, "scim.client.new", 2)
  local dialect, d = load_dialect(opts.dialect)
  local url = base_url(opts.url or d.default_url, d)
  local token, provider = opts.token, nil
  if token ~= nil and type(token) ~= "string" then
    if not token_mod.is_provider(token) then
      error("scim.client.new: token must be a string or a provider (see scim.token)", 2)
    end
    token, provider = nil, opts.token
  end
  if token and (token == "" or token:find("%c")) then
    -- Never echo the token itself.
    error("scim.client.new: token must be non-empty and free of control characters", 2)
  end
  local max_pages = opts.max_pages and math_tointeger(opts.max_pages)
  if opts.max_pages and not (max_pages and max_pages >= 1) then
    error("scim.client.new: max_pages must be a whole number, at least 1", 2)
  end
  local auth = token and ("Bearer " .. token) or nil
  for _, k in ipairs{ "max_patch_operations", "max_patch_values" } do
    local v = opts[k]
    if v ~= nil and not (math_tointeger(v) and v >= 1) then
      error("scim.client.new: " .. k .. " must be a whole number, at least 1", 2)
    end
  end

  local self = setmetatable({
    url = url,
    dialect = dialect,  -- the dialect table as its module returned it
    d = d,              -- the same with defaults for the fields it leaves out
    users_url = url .. d.users_path,
    groups_url = url .. d.groups_path,
    max_pages = max_pages or 100000,
    etags = {}, n_etags = 0,
    max_patch_operations = opts.max_patch_operations and math_tointeger(opts.max_patch_operations),
    max_patch_values = opts.max_patch_values and math_tointeger(opts.max_patch_values),
  }, Client)
  local hidden = { token }
  local userinfo = url:match("^%a[%w+.-]*://([^/?#]*)@")
  if userinfo then
    hidden[#hidden + 1] = userinfo
    hidden[#hidden + 1] = userinfo:match(":(.*)$")
  end
  hidden.fixed = #hidden
  secrets[self] = hidden
  providers[self] = provider
  if opts.engine then
    -- A shared engine does not know our token or headers: they go on each request.
    self.engine, self.owns_engine = opts.engine, false
    self.extra_headers = opts.headers
    auth_headers[self] = auth
  else
    self.engine, self.owns_engine = new_engine(opts, auth), true
  end
  return self
end

-- Raise "bad argument #n to 'name' (what)" where `error(_, level)` would (default 2: at
-- the caller of the method that calls this).
local function argerror(n, name, what, level)
  error(string_format("bad argument #%d to '%s' (%s)", n, name, what), (level or 2) + 1)
end

local function check_open(self, name)
  if getmetatable(self) ~= Client then
    error("bad self to '" .. name .. "' (scim.client expected)", 3)
  end
  if self.closed then error("attempt to use a closed scim.client", 3) end
end

local function check_id(id, name)
  if math_type(id) == "integer" then id = tostring(id) end
  if type(id) ~= "string" then argerror(1, name, "id string expected, got " .. type(id), 3) end
  return id
end

local function remember_etag(self, id, version)
  if math_type(id) == "integer" then id = tostring(id) end
  if type(id) ~= "string" then return end
  if version == nil then
    if self.etags[id] then self.etags[id] = nil self.n_etags = self.n_etags - 1 end
    return
  end
  if not self.etags[id] then
    if self.n_etags >= ETAG_CACHE_MAX then self.etags, self.n_etags = {}, 0 end
    self.n_etags = self.n_etags + 1
  end
  self.etags[id] = version
end

-- A resource's version: its meta.version, else the response's ETag.
local function version_of(resource, res)
  local meta = type(resource) == "table" and resource.meta
  local v = type(meta) == "table" and meta.version or nil
  if type(v) ~= "string" and res and res.headers then v = res.headers.etag end
  return type(v) == "string" and v ~= "" and v or nil
end

-- How many of the tokens a provider gave are kept to scrub from messages (the newest).
local KEEP_TOKENS = 4

-- The provider's token now, remembered among the client's secrets: the token, or nil and
-- an error object.
local function provider_token(self, provider, method, url, stale)
  local tok, err, code
  if stale then tok, err, code = provider:refresh(stale) else tok, err, code = provider:get() end
  if type(tok) ~= "string" or tok == "" or tok:find("%c") then
    local why = tok and "the token provider gave an unusable token" or tostring(err)
    return nil, new_error({ message = method .. " " .. safe_url(url) .. ": no token: " .. why,
      method = method, url = safe_url(url), code = tok and "AUTH" or code or "AUTH",
      detail = why }, secrets[self])
  end
  local hidden = secrets[self]
  local known = false
  for i = hidden.fixed + 1, #hidden do if hidden[i] == tok then known = true break end end
  if not known then
    if #hidden - hidden.fixed >= KEEP_TOKENS then table.remove(hidden, hidden.fixed + 1) end
    hidden[#hidden + 1] = tok
  end
  return tok
end

-- One HTTP exchange. Returns the response for any status, or nil and an error object for
-- a transport failure (or a token provider's failure). With a token provider, a 401 makes
-- it renew the token once and the request is sent again.
local function send(self, method, url, body, headers)
  local h = { Accept = self.d.accept }
  if self.extra_headers then for k, v in pairs(self.extra_headers) do h[k] = v end end
  local auth = auth_headers[self]
  if auth then h.Authorization = auth end
  local provider, tok = providers[self], nil
  if provider then
    local terr
    tok, terr = provider_token(self, provider, method, url)
    if not tok then return nil, terr end
    h.Authorization = "Bearer " .. tok
  end
  if body then h["Content-Type"] = self.d.content_type end
  if headers then for k, v in pairs(headers) do h[k] = v end end
  local spec = { method = method, url = url, headers = h, body = body }
  local res, err, code = self.engine:request(spec)
  if res and res.status == 401 and provider then
    local new, terr = provider_token(self, provider, method, url, tok)
    if new and new ~= tok then
      h.Authorization = "Bearer " .. new
      res, err, code = self.engine:request(spec)
    elseif not new then
      res.token_error = terr.detail  -- told in the 401's message
    end
  end
  if not res then
    local msg = tostring(err or "request failed")
    if not msg:find(method, 1, true) then msg = method .. " " .. safe_url(url) .. ": " .. msg end
    return nil, new_error({ message = msg, method = method, url = safe_url(url),
      code = code or "TRANSPORT", detail = tostring(err) }, secrets[self])
  end
  return res
end

-- Decode a successful response's body: a table, or nil and an error object. An empty body
-- gives `empty` (nil means it is an error).
local function decode_body(self, res, method, url, empty)
  local body = res.body or ""
  if body:find("^%s*$") then
    if empty ~= nil then return empty end
    return nil, local_error(self, method, url, "empty response body", "BAD_JSON", res.status)
  end
  local ct = res.headers and res.headers["content-type"]
  if not is_json_type(ct) then
    return nil, local_error(self, method, url, "expected a JSON response, got " .. ct,
      "BAD_JSON", res.status)
  end
  local doc, why = json.decode(body)
  if doc == nil then
    return nil, local_error(self, method, url, "invalid JSON in response: " .. why, "BAD_JSON",
      res.status)
  end
  if type(doc) ~= "table" or json.is_array(doc) then
    return nil, local_error(self, method, url, "the response is JSON but not an object",
      "BAD_JSON", res.status)
  end
  return doc
end

-- Request + status check (any 2xx succeeds) + decode: the document (or `empty` for an
-- empty body) and the response, or nil and an error object.
local function call(self, method, url, body_tbl, headers, empty)
  local body
  if body_tbl ~= nil then
    local why
    body, why = json.encode(body_tbl)
    if not body then
      return nil, local_error(self, method, url, "cannot encode the request: " .. why, "ENCODE")
    end
  end
  local res, err = send(self, method, url, body, headers)
  if not res then return nil, err end
  if res.status < 200 or res.status > 299 then return nil, http_error(self, res, method, url) end
  local doc, derr = decode_body(self, res, method, url, empty)
  if doc == nil then return nil, derr end
  return doc, res
end

local function fail(err) return nil, err, err.code end

-- The end of a request on user `id` that `call` made: the fail triple, or the result
-- (`true` for an empty 2xx) with the version it came back with remembered (none for
-- `true`: the old one is stale).
local function settle(self, id, doc, res)
  if not doc then return fail(res) end
  remember_etag(self, id, doc ~= true and version_of(doc, res) or nil)
  return doc
end

-- Ids that would not name a resource under the collection: "" is the collection itself,
-- and "." and ".." are dot segments that curl (and servers) resolve to the collection or
-- the base path (RFC 3986 §5.2.4), so a DELETE would go there.
local DOT_IDS = { [""] = true, ["."] = true, [".."] = true }

-- The URL of resource `id` in `collection` (a full URL), every byte outside RFC 3986's
-- unreserved set percent-encoded; or nil and a BAD_ID error (nothing is sent).
local function member_url(self, method, collection, id)
  if DOT_IDS[id] then
    return nil, local_error(self, method, collection, string_format(
      "refusing the id '%s': it would address %s, not a resource in it", id,
      id == ".." and "the base path" or "the collection"), "BAD_ID")
  end
  return collection .. "/" .. escape(id)
end

-- `resource`, or a copy of it with `schemas = { schema }` when it has none (the caller's
-- table is not changed). A non-table raises at the caller of method `name`.
local function with_schemas(resource, schema, name)
  if type(resource) ~= "table" then
    argerror(1, name, "resource table expected, got " .. type(resource), 3)
  end
  if resource.schemas ~= nil then return resource end
  local copy = {}
  for k, v in pairs(resource) do copy[k] = v end
  copy.schemas = json.array{ schema }
  return copy
end

local function user_url(self, id, method)
  return member_url(self, method, self.users_url, id)
end

--- Create a user (POST /Users).
-- A resource without `schemas` gets the dialect's core schema; the table is not changed.
-- @tparam table resource the SCIM resource
-- @treturn table the created resource as the server returned it (with `id`)
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code, e.g. "UNIQUENESS" (409), "INVALID_VALUE"
function Client:create(resource)
  check_open(self, "create")
  resource = with_schemas(resource, self.d.core_schema, "create")
  local doc, res = call(self, "POST", self.users_url, resource)
  return settle(self, doc and doc.id, doc, res)
end

--- Read one user (GET /Users/{id}).
-- @tparam string id the user's id (percent-encoded in the URL)
-- @tparam[opt] table opts `attributes`, `excluded_attributes`: lists of attribute paths
-- @treturn table the resource
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code, e.g. "NOT_FOUND"
function Client:get(id, opts)
  check_open(self, "get")
  id = check_id(id, "get")
  opts = opts or {}
  local url, bad = user_url(self, id, "GET")
  if not url then return fail(bad) end
  return settle(self, id, call(self, "GET", url .. projection(opts)))
end

--- Replace a user (PUT /Users/{id}).
-- Sends `If-Match` when a version is known: `opts.etag`, else the resource's
-- `meta.version`, else the ETag of this client's last read or write of that id (unless the
-- server said it does not support ETags). The resource is sent as given: drop read-only
-- attributes first (`scim.mapping` merge does).
-- @tparam string id the user's id
-- @tparam table resource the full resource
-- @tparam[opt] table opts `etag`: the version to require (false: send no If-Match)
-- @treturn table the resource as stored
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code, e.g. "PRECONDITION_FAILED" (someone changed it), "NOT_FOUND"
function Client:replace(id, resource, opts)
  check_open(self, "replace")
  id = check_id(id, "replace")
  if type(resource) ~= "table" then
    argerror(2, "replace", "resource table expected, got " .. type(resource))
  end
  opts = opts or {}
  local version = opts.etag
  if version == nil then version = version_of(resource) or self.etags[id] end
  local headers
  local etag_ok = not (self.caps and self.caps.etag == false)
  if version and etag_ok then headers = { ["If-Match"] = version } end
  local url, bad = user_url(self, id, "PUT")
  if not url then return fail(bad) end
  return settle(self, id, call(self, "PUT", url, resource, headers, true))
end

local PATCH_OPS = { add = "add", remove = "remove", replace = "replace" }

-- The operations of `patch` and `patch_group`, checked (misuse raises at the caller of
-- `name`), with an array value longer than `max_values`
-- split into several operations of the same op and path.
local function split_operations(operations, max_values, name)
  if type(operations) ~= "table" or operations[1] == nil then
    argerror(2, name, "non-empty array of operations expected", 3)
  end
  local out = {}
  for i, o in ipairs(operations) do
    local op = type(o) == "table" and type(o.op) == "string" and PATCH_OPS[o.op:lower()]
    if not op then
      argerror(2, name, "operation " .. i .. " needs op add, remove or replace", 3)
    elseif o.path ~= nil and type(o.path) ~= "string" then
      argerror(2, name, "operation " .. i .. ": path must be a string", 3)
    elseif op == "remove" and o.path == nil then
      argerror(2, name, "operation " .. i .. ": remove needs a path", 3)
    end
    local v = o.value
    if op ~= "replace" and type(v) == "table" and v[1] ~= nil and #v > max_values then
      for first = 1, #v, max_values do
        local part = json.array()
        for j = first, math.min(#v, first + max_values - 1) do part[#part + 1] = v[j] end
        out[#out + 1] = { op = op, path = o.path, value = part }
      end
    else
      out[#out + 1] = { op = op, path = o.path, value = v }
    end
  end
  return out
end

--- Modify a user with an RFC 7644 PatchOp (PATCH /Users/{id}).
-- @tparam string id the user's id
-- @tparam table operations array of `{ op = "add"|"remove"|"replace", path = ..., value = ... }`
-- @treturn table|boolean the resource (200), or true (204 No Content)
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code, e.g. "NOT_FOUND", "NO_TARGET", "INVALID_PATH", "NOT_SUPPORTED"
-- @raise on a malformed operation list (a programming error)
function Client:patch(id, operations)
  check_open(self, "patch")
  id = check_id(id, "patch")
  local ops = json.array(split_operations(operations, math_huge, "patch"))
  local url, bad = user_url(self, id, "PATCH")
  if not url then return fail(bad) end
  local schema = patch_schema(self.d)
  if not schema then
    return fail(local_error(self, "PATCH", url, "the " .. tostring(self.d.name)
      .. " dialect has no PATCH; use replace", "NOT_SUPPORTED"))
  end
  return settle(self, id, call(self, "PATCH", url,
    { schemas = json.array{ schema }, Operations = ops }, nil, true))
end

--- Delete a user (DELETE /Users/{id}).
-- 204 and 200 both count as done (RFC 7644 says 204; some servers answer 200).
-- @tparam string id the user's id
-- @treturn boolean true
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code, e.g. "NOT_FOUND"
function Client:delete(id)
  check_open(self, "delete")
  id = check_id(id, "delete")
  local url, bad = user_url(self, id, "DELETE")
  if not url then return fail(bad) end
  local res, err = send(self, "DELETE", url)
  if not res then return fail(err) end
  if res.status < 200 or res.status > 299 then return fail(http_error(self, res, "DELETE", url)) end
  remember_etag(self, id, nil)
  return true
end

--- The server's capabilities: the dialect's defaults, overridden by what the server's
-- `/ServiceProviderConfig` states. Read once, on first need; a server without that
-- endpoint (404 and the like) keeps the dialect's defaults. A transport failure also
-- gives the defaults, and the next call tries again.
-- @treturn table `{ source = "server"|"dialect", patch = bool, max_page_size = n,
--   etag = bool, filter = bool, sort = bool, change_password = bool,
--   bulk = { supported = bool, max_operations = n, max_payload_size = n } }`
function Client:capabilities()
  check_open(self, "capabilities")
  if self.caps then return self.caps end
  local caps = dialect_capabilities(self.d)
  -- Another coroutine is reading it now: go on with the defaults rather than send a
  -- second request (there is no way to wait for that one here).
  if self.caps_loading then return caps end
  self.caps_loading = true
  local url = self.url .. spc_path(self.d)
  -- pcall (yieldable in 5.4) so a raising engine cannot leave the flag set for good.
  local ok, res = pcall(send, self, "GET", url)
  self.caps_loading = nil
  if not ok then error(res, 0) end
  if not res then return caps end
  if res.status >= 200 and res.status <= 299 then
    local doc = decode_body(self, res, "GET", url)
    if type(doc) == "table" then merge_capabilities(caps, doc) end
  elseif res.status >= 500 or res.status == 429 or res.status == 408 then
    return caps  -- passing trouble: ask again next time
  end
  self.caps = caps
  return caps
end

local function list_url(self, o, start, count)
  return (o.collection or self.users_url) .. query_string{
    { "filter", o.filter },
    { "startIndex", start },
    { "count", count },
    { "attributes", o.attributes },
    { "excludedAttributes", o.excluded_attributes },
    { "sortBy", o.sort_by },
    { "sortOrder", o.sort_order },
  }
end

local function list_options(opts, name, groups)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #1 to '" .. name .. "' (table expected)", 3) end
  local o = {}
  for k, v in pairs(opts) do
    if k == "members" and groups then
      if type(v) ~= "boolean" then error(name .. ": members must be a boolean", 3) end
      o[k] = v
    elseif k == "filter" or k == "sort_by" then
      if type(v) ~= "string" then error(name .. ": " .. k .. " must be a string", 3) end
      o[k] = v
    elseif k == "sort_order" then
      if v ~= "ascending" and v ~= "descending" then
        error(name .. ": sort_order must be 'ascending' or 'descending'", 3)
      end
      o[k] = v
    elseif k == "count" or k == "start_index" or k == "limit" then
      if math_type(v) ~= "integer" or v < 1 then
        error(name .. ": " .. k .. " must be a positive integer", 3)
      end
      o[k] = v
    elseif k == "attributes" or k == "excluded_attributes" then
      o[k] = attribute_list(v, name .. ": " .. k)
    else
      error(name .. ": unknown option '" .. tostring(k) .. "'", 3)
    end
  end
  return o
end

local function page_of(self, o, start, count)
  local url = list_url(self, o, start, count)
  local doc, res = call(self, "GET", url)
  if not doc then return fail(res) end
  local f = self.d.list
  local resources = doc[f.resources]
  if resources == nil and f.resources ~= "resources" then resources = doc.resources end
  if resources == nil then
    resources = json.array()
  elseif type(resources) ~= "table" then
    return fail(local_error(self, "GET", url, "'" .. f.resources .. "' is not an array",
      "BAD_JSON", res.status))
  end
  for i = 1, #resources do
    if type(resources[i]) ~= "table" then
      return fail(local_error(self, "GET", url, "resource " .. i .. " of the page is not an object",
        "BAD_JSON", res.status))
    end
  end
  local total = doc[f.total]
  if total ~= nil then
    -- A count, or (some legacy servers) a count in a string; anything else would make the
    -- end of the listing unknowable.
    local n = type(total) == "string" and total:find("^%d+$") and tonumber(total) or total
    n = math_type(n) and math_tointeger(n)
    if not n or n < 0 then
      return fail(local_error(self, "GET", url, string_format(
        "'%s' is not a non-negative integer: %s", f.total,
        squeeze(type(total) == "string" and total or tostring(json.encode(total)), 40)),
        "BAD_PAGING", res.status))
    end
    total = n
  end
  return {
    resources = resources,
    total = total,
    start_index = positive(doc[f.start]),
    items_per_page = tonumber(doc[f.per_page]),
    url = url,
  }
end

--- Read one page of users (GET /Users?startIndex=&count=...). The non-raising building
-- block of `users` and `find`.
-- @tparam[opt] table opts `filter`, `start_index` (1-based, default 1), `count`,
--   `attributes`, `excluded_attributes`, `sort_by`, `sort_order`
-- @treturn table `{ resources = {...}, total = n|nil, start_index = n|nil,
--   items_per_page = n|nil, url = "..." }` as the server sent them
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code, e.g. "INVALID_FILTER", "BAD_JSON"
function Client:list(opts)
  check_open(self, "list")
  local o = list_options(opts, "list")
  return page_of(self, o, o.start_index or 1, o.count or self:capabilities().max_page_size)
end

-- The paging loop shared by `users` and `find`: a function returning the next resource,
-- nil at the end, or nil and an error object.
local function pager(self, o)
  local count = o.count or self:capabilities().max_page_size
  local start = o.start_index or 1
  local limit = o.limit
  local page, pos, delivered, pages = nil, 0, 0, 0
  local prev_first, prev_start, done = nil, nil, false
  local total
  -- The ids of the last page: a page that repeats one of them, or its own, is a server
  -- that does not advance. (Only the last page is kept, so memory stays bounded whatever
  -- the directory's size; an endless cycle still ends at totalResults or max_pages.)
  local prev_ids = {}

  local function fetch()
    if pages >= self.max_pages then
      return local_error(self, "GET", list_url(self, o, start, count), string_format(
        "stopped after %d pages: the server keeps paging (totalResults %s)", pages,
        tostring(total)), "BAD_PAGING")
    end
    local p, err = page_of(self, o, start, count)
    if not p then return err end
    pages = pages + 1
    local n = #p.resources
    total = p.total
    if n == 0 then
      if total and start <= total then
        return local_error(self, "GET", p.url, string_format(
          "page at startIndex %d has no Resources, but totalResults is %d", start, total),
          "BAD_PAGING")
      end
      done = true
      return nil
    end
    -- The next page starts after what actually came (RFC 7644 §3.4.2.4), whatever was
    -- asked for or claimed in itemsPerPage. A server that ignores startIndex serves the
    -- same first resource again: stop rather than loop.
    local first = p.resources[1].id
    if first ~= nil and first == prev_first then
      return local_error(self, "GET", p.url, string_format(
        "the server returned the same page again (startIndex %d began with the same user as "
        .. "startIndex %d)", start, prev_start), "BAD_PAGING")
    end
    local ids = {}
    for i = 1, n do
      local id = p.resources[i].id
      if math_type(id) then id = tostring(math_tointeger(id) or id) end
      if type(id) == "string" then
        if ids[id] or prev_ids[id] then
          return local_error(self, "GET", p.url, string_format(
            "the page at startIndex %d repeats the id '%s'%s", start, squeeze(id, 80),
            ids[id] and "" or " of the page before it"), "BAD_PAGING")
        end
        ids[id] = true
      end
    end
    prev_ids = ids
    prev_first, prev_start = first, start
    start = start + n
    if total and start > total then done = true end
    page, pos = p.resources, 0
    return nil
  end

  return function()
    while true do
      if limit and delivered >= limit then return nil end
      if page and pos < #page then
        pos = pos + 1
        delivered = delivered + 1
        return page[pos]
      end
      page = nil
      if done then return nil end
      local err = fetch()
      if err then done = true return nil, err end
    end
  end
end

-- A generic-for iterator over a step function's resources that raises its errors.
local function raising(step)
  return function()
    local r, err = step()
    if err then error(err, 0) end
    return r
  end
end

-- Every resource of a step function as an array, or the fail triple.
local function collect(step)
  local out = json.array()
  while true do
    local r, err = step()
    if err then return fail(err) end
    if r == nil then return out end
    out[#out + 1] = r
  end
end

--- Iterate over every matching user, across pages (RFC 7644 §3.4.2.4).
-- Pages start at 1 and advance by the number of Resources the server actually returned;
-- the loop stops at totalResults, and fails on a server that pages forever or returns an
-- empty page before totalResults.
-- @tparam[opt] table opts `filter`, `count` (page size; default the server's maximum),
--   `attributes`, `excluded_attributes`, `sort_by`, `sort_order`, `start_index`, `limit`
-- @return a generic-for iterator yielding resources
-- @raise the `scim.error` object of a failed request or bad paging
-- @usage for u in client:users{ filter = filter.sw("userName", "a") } do print(u.id) end
function Client:users(opts)
  check_open(self, "users")
  return raising(pager(self, list_options(opts, "users")))
end

--- Every matching user, all pages, as an array (the non-raising sibling of `users`).
-- @tparam string|nil f a filter (build it with `scim.filter`), or nil for all users
-- @tparam[opt] table opts as for `users`
-- @treturn table array of resources
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code
function Client:find(f, opts)
  check_open(self, "find")
  if f ~= nil and type(f) ~= "string" then
    argerror(1, "find", "filter string or nil expected")
  end
  local o = list_options(opts, "find")
  o.filter = f
  return collect(pager(self, o))
end

--- Find a user by userName (compared without regard to case, as SCIM's userName is).
-- @tparam string user_name the userName (any text: it is quoted and escaped)
-- @tparam[opt] table opts `attributes`, `excluded_attributes`
-- @treturn table|boolean the resource, or false when there is none
-- @treturn[2] nil
-- @treturn[2] scim.error err
-- @treturn[2] string code, e.g. "AMBIGUOUS" (two users match), "INVALID_VALUE"
function Client:find_user(user_name, opts)
  check_open(self, "find_user")
  if type(user_name) ~= "string" then
    argerror(1, "find_user", "string expected, got " .. type(user_name))
  end
  local o = list_options(opts, "find_user")
  if user_name == "" or utf8_len(user_name) == nil then
    return fail(local_error(self, "GET", self.users_url, "userName "
      .. (user_name == "" and "is empty" or "is not valid UTF-8"), "INVALID_VALUE"))
  end
  o.filter = filter.eq("userName", user_name)
  -- The match is checked here too, so userName must come back.
  if o.attributes and not ("," .. o.attributes .. ","):find(",userName,", 1, true) then
    o.attributes = o.attributes .. ",userName"
  end
  -- Two are enough to tell "one" from "ambiguous".
  local p, err = page_of(self, o, 1, 2)
  if not p then return fail(err) end
  local want, found = user_name:lower(), nil
  for _, r in ipairs(p.resources) do
    if type(r.userName) == "string" and r.userName:lower() == want then
      if found then
        return fail(local_error(self, "GET", p.url, "more than one user has userName "
          .. filter.string(user_name), "AMBIGUOUS"))
      end
      found = r
    end
  end
  if found then remember_etag(self, found.id, version_of(found)) end
  return found or false
end


-- Groups and Bulk live in their own files (scim.client.groups, scim.client.bulk) to keep
-- this one near its core; they add their methods to Client with the helpers below.
local internals = {
  argerror = argerror, check_open = check_open, check_id = check_id, send = send,
  call = call, fail = fail, local_error = local_error, http_error = http_error,
  decode_body = decode_body, member_url = member_url, with_schemas = with_schemas,
  split_operations = split_operations, patch_schema = patch_schema, PATCHOP = PATCHOP,
  list_options = list_options, pager = pager, raising = raising, collect = collect,
  projection = projection, escape = escape,
}
function internals.unsupported(self, method, url, what)
  return fail(local_error(self, method, url, what, "UNSUPPORTED"))
end
require("scim.client.groups").install(Client, internals)
require("scim.client.bulk").install(Client, internals)

--- The engine's counters: `{ requests = n, retries = n, by_status = { [200] = n } }`.
-- @treturn table
function Client:stats()
  check_open(self, "stats")
  if self.engine.stats then return self.engine:stats() end
  return {}
end

--- Close the client and (unless it was given one) its engine. Safe to call twice.
function Client:close()
  if self.closed then return end
  self.closed = true
  if self.owns_engine and self.engine and self.engine.close then self.engine:close() end
end

Client.__close = Client.close

function Client:__tostring()
  return string_format("scim.client (%s%s)", safe_url(self.url),
    self.closed and ", closed" or "")
end

-- }====================================================================

return client
