--- Token providers: where a `scim.client` gets its bearer token.
-- A provider is any object with two methods:
--
--  * `p:get()` → the token to send now (cheap when it is cached), or `nil, err, code`;
--  * `p:refresh(stale)` → a new token after the server refused `stale` (401), or
--    `nil, err, code`. When the provider already holds a token other than `stale` (another
--    request renewed it meanwhile), it returns that one without fetching again.
--
-- Three are built in: a fixed string (`static`), a program that prints the token
-- (`command`) and OAuth 2.0 client credentials (`oauth`, RFC 6749 §4.4). Messages never hold
-- a secret or a token; the secrets are kept out of the provider objects themselves, so
-- dumping one shows none.
-- @module scim.token
-- @usage
-- local p = require("scim.token").oauth{ token_url = "https://idp.example.com/oauth2/token",
--   client_id = "agent", client_secret_file = "/etc/scim-agent/secret", scope = "scim" }
-- local c = require("scim.client").new{ url = url, token = p }

local core = require "scim.core"
local http = require "scim.http"
local json = require "scim.json"

local type, tostring, tonumber, error, pairs, ipairs = type, tostring, tonumber, error,
  pairs, ipairs
local setmetatable, pcall = setmetatable, pcall
local string_format, table_concat = string.format, table.concat
local math_min, math_type = math.min, math.type
local monotime = core.monotime

local token = {}

-- provider -> { secret =, token = } (weak keys: it goes with the provider).
local hidden = setmetatable({}, { __mode = "k" })

local Provider = {}
Provider.__name = "scim.token"
Provider.__index = Provider

function Provider:__tostring()
  return "scim.token." .. self.kind .. (self.what and (" (" .. self.what .. ")") or "")
end

--- The provider's counters: `{ fetches = n, failures = n }` (fetches: tokens obtained).
-- @treturn table
function Provider:stats()
  return { fetches = self.fetches, failures = self.failures }
end

-- One line of text fit for a message: control characters (a hostile endpoint could use
-- them on a terminal) become spaces, at most `max` bytes.
local function one_line(s, max)
  s = tostring(s):gsub("%c", " "):gsub("  +", " ")
  if #s > max then s = s:sub(1, max) .. "..." end
  return s
end

-- Every secret of `h` (and anything that looks like one) replaced in `s`.
local function scrub(s, h)
  s = http.scrub(tostring(s), {})
  for _, k in ipairs{ "secret", "token", "basic" } do
    local v = h[k]
    if type(v) == "string" and #v >= 4 then
      local i, j = s:find(v, 1, true)
      while i do
        s = s:sub(1, i - 1) .. "[redacted]" .. s:sub(j + 1)
        i, j = s:find(v, i + 10, true)
      end
    end
  end
  return s
end

local function check_token_text(t)
  return type(t) == "string" and t ~= "" and not t:find("[%c ]")
end

local function new_provider(kind, what, fields, secrets)
  fields.kind, fields.what, fields.fetches, fields.failures = kind, what, 0, 0
  local p = setmetatable(fields, Provider)
  hidden[p] = secrets or {}
  return p
end

-- {====================================================================
-- static
-- =====================================================================

--- A fixed token (what `token = "..."` in `scim.client.new` means).
-- @tparam string s the token
-- @treturn scim.token the provider; `refresh` fails with "AUTH" (nothing to renew)
-- @raise on an empty token or one with spaces or control characters (not echoed)
function token.static(s)
  if not check_token_text(s) then
    error("scim.token.static: token must be a non-empty string without spaces or control "
      .. "characters", 2)
  end
  local p = new_provider("static", nil, {}, { token = s })
  p.get = function(self) return hidden[self].token end
  p.refresh = function()
    return nil, "the server refused the token (a fixed token cannot be renewed)", "AUTH"
  end
  return p
end

-- }====================================================================

-- {====================================================================
-- command
-- =====================================================================

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Has this system a `timeout` program (coreutils)? Asked once.
local has_timeout
local function timeout_prefix(seconds)
  if has_timeout == nil then
    local ok = os.execute("command -v timeout >/dev/null 2>&1")
    has_timeout = ok == true
  end
  if not has_timeout then return "" end
  return string_format("timeout -k 2 %g ", seconds)
end

--- A program that prints the token: the first line of its standard output (trailing
-- spaces and CR dropped). It runs on the first `get` and again on each `refresh`; in
-- between the token is reused. Its standard error goes where ours goes.
-- The program is given as an argv array (run as it is, no shell involved), or as a
-- string: a plain path (no spaces or shell characters) is run as it is, anything else is a
-- shell command line (`sh -c`).
-- While it runs, the process waits (requests in flight elsewhere wait too).
-- @tparam string|table cmd a path, a shell command line, or `{ "/path/prog", "arg", ... }`
-- @tparam[opt] table opts `timeout` (seconds the program may take, default 60; needs the
--   `timeout` program, else unbounded)
-- @treturn scim.token the provider
-- @raise on a malformed command
-- @usage local p = token.command{ "/usr/local/bin/get-token", "--audience", "scim" }
function token.command(cmd, opts)
  opts = http.check_options(opts or {}, { timeout = "number" }, "scim.token.command", 2)
  local line, name
  if type(cmd) == "table" then
    if type(cmd[1]) ~= "string" or cmd[1] == "" then
      error("scim.token.command: argv[1] must be the program's path", 2)
    end
    local words = {}
    for i, a in ipairs(cmd) do
      if type(a) ~= "string" or a:find("%z") then
        error("scim.token.command: argv[" .. i .. "] must be a string without NUL", 2)
      end
      words[i] = shell_quote(a)
    end
    line, name = table_concat(words, " "), cmd[1]
  elseif type(cmd) == "string" and cmd:find("%S") and not cmd:find("[%z\n\r]") then
    if cmd:find("^[%w%-%._/+,:=@]+$") then
      line = shell_quote(cmd)
    else
      line = "sh -c " .. shell_quote(cmd)
    end
    name = cmd:match("^%s*(%S+)")
  else
    error("scim.token.command: command must be a non-empty string (one line) or an argv "
      .. "array", 2)
  end
  local seconds = opts.timeout or 60
  if seconds <= 0 then error("scim.token.command: timeout must be positive", 2) end
  -- Only the program's name goes into messages: its arguments may hold secrets.
  name = name:match("([^/]+)$") or name
  local p = new_provider("command", name, {}, {})

  local function run(self)
    local h = hidden[self]
    local f, why = io.popen(timeout_prefix(seconds) .. line, "r")
    if not f then
      self.failures = self.failures + 1
      return nil, "token command " .. name .. ": " .. one_line(why, 200), "AUTH"
    end
    local out = f:read("a") or ""
    local _, how, status = f:close()
    local first = out:match("^([^\n]*)") or ""
    first = first:gsub("[\r%s]+$", ""):gsub("^%s+", "")
    local fail
    if how == "exit" and status == 124 and seconds then
      fail = string_format("did not finish within %g s", seconds)
    elseif how ~= "exit" or status ~= 0 then
      fail = string_format("%s with status %s", how == "signal" and "was killed" or "exited",
        tostring(status))
    elseif first == "" then
      fail = "printed no token on its first line"
    elseif not check_token_text(first) then
      fail = "printed a token with spaces or control characters"
    end
    if fail then
      self.failures = self.failures + 1
      return nil, "token command " .. name .. " " .. fail, "AUTH"
    end
    h.token = first
    self.fetches = self.fetches + 1
    return first
  end

  function p.get(self)
    local t = hidden[self].token
    if t then return t end
    return run(self)
  end

  function p.refresh(self, stale)
    local t = hidden[self].token
    if t and t ~= stale then return t end
    return run(self)
  end
  return p
end

-- }====================================================================

-- {====================================================================
-- oauth (client credentials)
-- =====================================================================

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local k = #out
    for j = 1, 4 do
      local v = (n >> (6 * (4 - j))) & 63
      out[k + j] = B64:sub(v + 1, v + 1)
    end
    if not c then out[k + 4] = "=" end
    if not b then out[k + 3] = "=" end
  end
  return table_concat(out)
end
token._base64 = base64

-- application/x-www-form-urlencoded (RFC 6749 appendix B).
local function form_encode(s)
  return (s:gsub("[^%w%-%._~ ]", function(ch)
    return string_format("%%%02X", ch:byte())
  end):gsub(" ", "+"))
end
token._form_encode = form_encode

local OAUTH_OPTIONS = {
  token_url = "string", client_id = "string", client_secret = "string",
  client_secret_file = "string", scope = "any", auth = "string", params = "table",
  ca_file = "string", insecure = "boolean", allow_http = "boolean", timeout = "number",
  proxy = "string", user_agent = "string", retries = "number", engine = "table",
  trace = "function",
}

-- The secret, from the option or read now from its file (so a rotated file is picked up).
local function read_secret(h, file)
  if not file then return h.secret end
  local f, why = io.open(file, "rb")
  if not f then return nil, "cannot read the client secret file: " .. one_line(why, 300) end
  local s = f:read("a") or ""
  f:close()
  s = s:match("^([^\r\n]*)") or ""
  if s == "" then return nil, "the client secret file " .. file .. " is empty" end
  h.secret = s
  return s
end

-- Seconds a token lives from an `expires_in` value (number or digit string), or nil.
local function lifetime(v)
  if type(v) == "string" and v:find("^%s*%d+%s*$") then v = tonumber(v) end
  if math_type(v) and v > 0 and v < 1e9 then return v end
  return nil
end

--- OAuth 2.0 client credentials (RFC 6749 §4.4): a form POST of
-- `grant_type=client_credentials` to the token endpoint. The token is cached and used
-- until shortly before `expires_in` runs out (the last tenth, at most 30 s, is not used);
-- from three quarters of its life on (at most 5 minutes before the end) the next `get`
-- renews it ahead of time while the others go on with the current one. Without
-- `expires_in` it is kept until a `refresh`.
-- @tparam table opts options:
--
--  * `token_url` the token endpoint (https; plain http only to loopback or with `allow_http`)
--  * `client_id`
--  * `client_secret` or `client_secret_file` (its first line; read at each fetch)
--  * `scope` a string or an array of scopes (joined by spaces)
--  * `auth` "basic" (HTTP Basic, default) or "form" (client_id and client_secret in the body)
--  * `params` further form fields (e.g. `{ resource = "..." }`, `{ audience = "..." }`)
--  * `ca_file`, `insecure`, `allow_http`, `timeout`, `proxy`, `user_agent`, `retries`,
--    `trace`: for the `scim.http` engine the provider makes, or `engine` to use one
-- @treturn scim.token the provider. Its `get`/`refresh` fail with code "AUTH" when the
--   endpoint refuses (err holds its `error` and `error_description`) or answers something
--   that is not a bearer token, or with the transport's code (e.g. "COULDNT_CONNECT")
-- @raise on a missing or malformed option
function token.oauth(opts)
  local what = "scim.token.oauth"
  if type(opts) ~= "table" then error(what .. ": options table expected", 2) end
  http.check_options(opts, OAUTH_OPTIONS, what, 2)
  local url = opts.token_url
  if not url then error(what .. ": token_url is required", 2) end
  local u, why = http.check_url(url, opts.allow_http)
  if not u then error(what .. ": token_url: " .. http.scrub(why, {}), 2) end
  if type(opts.client_id) ~= "string" or opts.client_id == "" then
    error(what .. ": client_id is required", 2)
  end
  if (opts.client_secret == nil) == (opts.client_secret_file == nil) then
    error(what .. ": give one of client_secret and client_secret_file", 2)
  end
  if opts.client_secret == "" then error(what .. ": client_secret is empty", 2) end
  local auth = opts.auth or "basic"
  if auth ~= "basic" and auth ~= "form" then
    error(what .. ": auth must be \"basic\" or \"form\"", 2)
  end
  local scope = opts.scope
  if type(scope) == "table" then
    for i, s in ipairs(scope) do
      if type(s) ~= "string" then error(what .. ": scope[" .. i .. "] must be a string", 2) end
    end
    scope = table_concat(scope, " ")
  elseif scope ~= nil and type(scope) ~= "string" then
    error(what .. ": scope must be a string or an array of strings", 2)
  end
  local fixed = { "grant_type=client_credentials" }
  if scope and scope ~= "" then fixed[#fixed + 1] = "scope=" .. form_encode(scope) end
  for k, v in pairs(opts.params or {}) do
    if type(k) ~= "string" or (type(v) ~= "string" and not math_type(v)) then
      error(what .. ": params must map names to strings", 2)
    end
    fixed[#fixed + 1] = form_encode(k) .. "=" .. form_encode(tostring(v))
  end
  local engine = opts.engine
  if not engine then
    engine = http.new{ timeout = opts.timeout or 30, ca_file = opts.ca_file,
      insecure = opts.insecure, allow_http = opts.allow_http, proxy = opts.proxy,
      user_agent = opts.user_agent, retries = opts.retries, trace = opts.trace,
      concurrency = 2 }
  end
  local shown = http.scrub(url, {}):gsub("%?.*$", "")
  local p = new_provider("oauth", shown, { engine = engine },
    { secret = opts.client_secret })
  local client_id, secret_file = opts.client_id, opts.client_secret_file

  -- One token request: the token and its lifetime, or nil, err, code.
  local function fetch(self)
    local h = hidden[self]
    local secret, serr = read_secret(h, secret_file)
    if not secret then return nil, "POST " .. shown .. ": " .. serr, "AUTH" end
    local body = { table_concat(fixed, "&") }
    local headers = { ["Content-Type"] = "application/x-www-form-urlencoded",
      Accept = "application/json" }
    if auth == "basic" then
      h.basic = base64(form_encode(client_id) .. ":" .. form_encode(secret))
      headers.Authorization = "Basic " .. h.basic
    else
      body[2] = "client_id=" .. form_encode(client_id)
      body[3] = "client_secret=" .. form_encode(secret)
    end
    local started = monotime()
    local res, err, code = engine:request{ method = "POST", url = url, headers = headers,
      body = table_concat(body, "&") }
    if not res then return nil, scrub(err, h), code or "TRANSPORT" end
    local head = string_format("POST %s: %d", shown, res.status)
    local doc = json.decode(res.body or "")
    if type(doc) ~= "table" then doc = {} end
    if res.status < 200 or res.status > 299 then
      local e = type(doc.error) == "string" and doc.error or nil
      local d = type(doc.error_description) == "string" and doc.error_description or nil
      local msg = head .. (e and (" " .. one_line(e, 100)) or "")
        .. (d and (": " .. one_line(d, 300)) or "")
      if not e and not d then msg = head .. " (the token endpoint gave no error field)" end
      local c = (res.status >= 400 and res.status < 500) and "AUTH" or ("HTTP_" .. res.status)
      return nil, scrub(msg, h), c
    end
    local t = doc.access_token
    if not check_token_text(t) then
      return nil, head .. ": the answer holds no usable access_token", "AUTH"
    end
    local tt = doc.token_type
    if tt ~= nil and (type(tt) ~= "string" or tt:lower() ~= "bearer") then
      return nil, head .. ": token_type is not Bearer: " .. one_line(tostring(tt), 40), "AUTH"
    end
    return t, lifetime(doc.expires_in), started
  end

  -- Fetch and cache; clears the in-progress flag whatever happens (pcall yields in 5.4).
  local function renew(self)
    local h = hidden[self]
    h.fetching = true
    local ok, t, life, started = pcall(fetch, self)
    h.fetching = nil
    if not ok then error(t, 0) end
    if not t then
      self.failures = self.failures + 1
      return nil, life, started  -- err, code
    end
    self.fetches = self.fetches + 1
    h.token = t
    if life then
      h.hard = started + life - math_min(30, life * 0.1)
      h.soft = started + life - math_min(300, life * 0.25)
    else
      h.hard, h.soft = nil, nil
    end
    return t
  end

  function p.get(self)
    local h = hidden[self]
    local t = h.token
    if t then
      local now = monotime()
      if not h.soft or now < h.soft then return t end
      if now < h.hard then
        if h.fetching then return t end
        local new = renew(self)
        if new then return new end
        -- Renewal ahead of time failed: go on with the current token, try again in 1 s.
        h.soft = math_min(h.hard, now + 1)
        return t
      end
    end
    return renew(self)
  end

  function p.refresh(self, stale)
    local t = hidden[self].token
    if t and t ~= stale then return t end
    return renew(self)
  end

  --- Close the provider's own engine (not one it was given).
  function p.close(self)
    if not opts.engine and self.engine then self.engine:close() end
  end
  return p
end

-- }====================================================================

--- Is `v` a token provider (an object with `get` and `refresh` methods)?
-- @param v any value
-- @treturn boolean
function token.is_provider(v)
  if type(v) ~= "table" and type(v) ~= "userdata" then return false end
  local ok, g, r = pcall(function() return v.get, v.refresh end)
  return ok and type(g) == "function" and type(r) == "function"
end


return token
