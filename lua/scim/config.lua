--- Options of the scim-agent command line: their names, checks, the `--config` file,
-- and where the token and the URL come from.
-- One table (`config.OPTIONS`) describes every option once; the argument parser, the
-- config-file loader and the help text all read it.
-- @module scim.config
local config = {}

local DIALECTS = require("scim.dialects").NAMES

--- Every option: command-line name (without `--`) → spec.
-- `kind` is "flag", "string", "integer", "number", "choice" or "removals"; `key` is the
-- field of the options table (and of a config file); `jobs` limits an option to some jobs.
config.OPTIONS = {
  { name = "url", kind = "string", arg = "URL", help = "SCIM base URL (else SCIM_URL, the config, "
      .. "the dialect's default)" },
  { name = "token-file", kind = "string", arg = "FILE", help = "read the bearer token from FILE" },
  { name = "token-command", kind = "string", arg = "CMD",
    help = "run CMD for the token (first line of its output); again after a 401" },
  { name = "oauth-token-url", kind = "string", arg = "URL",
    help = "OAuth 2.0 client credentials: the token endpoint (renewed as it expires)" },
  { name = "client-id", kind = "string", arg = "ID", help = "OAuth client id" },
  { name = "client-secret-file", kind = "string", arg = "FILE",
    help = "OAuth client secret, read from FILE" },
  { name = "scope", kind = "string", arg = "S", help = "OAuth scope to ask for" },
  { name = "oauth-auth", kind = "choice", choices = { "basic", "form" }, arg = "basic|form",
    help = "how the client authenticates to the token endpoint (default basic)" },
  { name = "dialect", kind = "choice", choices = DIALECTS, arg = "NAME",
    help = "scim2 (default), meta, workplace_v1 or entra" },
  { name = "mapping", kind = "string", arg = "FILE.lua", help = "column mapping (default: the "
      .. "original sample's columns)" },
  { name = "concurrency", kind = "integer", min = 1, max = 256, arg = "N",
    help = "requests in flight (default 8)" },
  { name = "rate", kind = "number", min = 0.01, arg = "N", help = "at most N requests per second" },
  { name = "timeout", kind = "number", min = 0.1, arg = "S", help = "seconds per request attempt "
      .. "(default 30)" },
  { name = "retries", kind = "integer", min = 1, max = 20, arg = "N",
    help = "attempts per request, the first included (default 5)" },
  { name = "report", kind = "string", arg = "FILE.csv",
    jobs = { create = true, update = true, delete = true, sync = true, plan = true,
      groups = true },
    help = "write one result row per input row" },
  { name = "dry-run", kind = "flag", help = "read the server, send no write, print the plan" },
  { name = "yes", kind = "flag", help = "do not ask before deleting" },
  { name = "quiet", kind = "flag", help = "print only errors" },
  { name = "verbose", kind = "flag", help = "trace every request (the token is redacted)" },
  { name = "log-format", kind = "choice", choices = { "text", "json" }, arg = "text|json",
    help = "json: one JSON object per row outcome on stdout" },
  { name = "ca-file", kind = "string", arg = "FILE", help = "CA certificates to trust" },
  { name = "insecure", kind = "flag", help = "do not verify the server's TLS certificate" },
  { name = "allow-http", kind = "flag", help = "allow plain http:// to a non-loopback host" },
  { name = "config", kind = "string", arg = "FILE.lua", help = "a Lua file setting any of these" },
  { name = "ignore-unknown-columns", kind = "flag",
    help = "accept columns the mapping doesn't know" },
  { name = "upsert", kind = "flag", jobs = { create = true },
    help = "create: update the accounts that already exist" },
  { name = "deactivate", kind = "flag", jobs = { delete = true },
    help = "delete: set active=false instead of deleting" },
  { name = "deactivate-missing", kind = "flag", jobs = { sync = true, plan = true },
    help = "sync: deactivate accounts absent from the file" },
  { name = "delete-missing", kind = "flag", jobs = { sync = true, plan = true },
    help = "sync: delete accounts absent from the file" },
  { name = "where", kind = "where", arg = "COL=VALUE", repeatable = true,
    jobs = { create = true, update = true, delete = true, sync = true, plan = true },
    help = "only rows whose COL is VALUE (or COL!=VALUE; repeatable, all must hold)" },
  { name = "limit", kind = "integer", min = 1, arg = "N",
    jobs = { create = true, update = true, delete = true, sync = true, plan = true },
    help = "only the first N selected rows (a trial run)" },
  { name = "encoding", kind = "string", arg = "NAME",
    help = "the file's character set: utf-8 (default), cp1252, latin1, utf-16, ..." },
  { name = "no-formula-guard", kind = "flag", jobs = { export = true },
    help = "export: write values starting with = + - @ as they are" },
  { name = "lock", kind = "string", arg = "FILE",
    jobs = { create = true, update = true, delete = true, sync = true, groups = true },
    help = "the run's lock file (default: beside --report, else one per URL in $TMPDIR)" },
  { name = "lock-wait", kind = "number", min = 0, arg = "S",
    jobs = { create = true, update = true, delete = true, sync = true, groups = true },
    help = "wait up to S seconds for another run against the same URL (default 0)" },
  { name = "bulk", kind = "flag",
    jobs = { create = true, update = true, delete = true, sync = true },
    help = "send the writes through SCIM Bulk when the server offers it" },
  { name = "delete-missing-groups", kind = "flag", jobs = { groups = true },
    help = "groups: delete the groups absent from the file (within --max-removals)" },
  { name = "ignore-missing-members", kind = "flag", jobs = { groups = true },
    help = "groups: warn about members that are not on the server instead of refusing" },
  { name = "max-removals", kind = "removals", arg = "N|P%",
    jobs = { sync = true, plan = true, groups = true },
    help = "sync: most accounts to remove in one run (default 10%)" },
}

local BY_NAME, BY_KEY = {}, {}
for _, spec in ipairs(config.OPTIONS) do
  spec.key = spec.name:gsub("-", "_")
  BY_NAME[spec.name] = spec
  BY_KEY[spec.key] = spec
end
-- A config file may also hold the token itself (never on the command line's option list).
BY_KEY.token = { name = "token", key = "token", kind = "string" }

--- The spec of a command-line option name (without `--`), or nil.
function config.option(name)
  return BY_NAME[name]
end

-- Parses "N" or "P%" into { count = N } or { percent = P }.
local function parse_removals(text)
  local n = tostring(text):match("^%s*(%d+)%s*$")
  if n then return { count = tonumber(n) } end
  local p = tostring(text):match("^%s*(%d+%.?%d*)%s*%%%s*$")
  if p and tonumber(p) <= 100 then return { percent = tonumber(p) } end
  return nil
end

--- Checks and converts one option value.
-- @tparam table spec an entry of `config.OPTIONS`
-- @param value a string from the command line, or any Lua value from a config file
-- @treturn any the converted value
-- @treturn[2] nil
-- @treturn[2] string what is wrong (without the option's name)
function config.convert(spec, value)
  local kind = spec.kind
  if kind == "flag" then
    if type(value) == "boolean" then return value end
    return nil, "expects true or false"
  elseif kind == "string" then
    if type(value) == "string" and value ~= "" then return value end
    return nil, "expects a non-empty string"
  elseif kind == "choice" then
    for _, c in ipairs(spec.choices) do
      if value == c then return value end
    end
    return nil, "expects one of " .. table.concat(spec.choices, ", ")
  elseif kind == "integer" or kind == "number" then
    local n = tonumber(value)
    if n and kind == "integer" and math.type(n) == "float" then
      n = n == math.floor(n) and math.tointeger(n) or nil
    end
    if not n or n ~= n or (spec.min and n < spec.min) or (spec.max and n > spec.max) then
      local range = spec.max and (" from " .. spec.min .. " to " .. spec.max)
                    or (" of at least " .. spec.min)
      return nil, "expects " .. (kind == "integer" and "an integer" or "a number") .. range
    end
    return n
  elseif kind == "where" then
    local list = type(value) == "table" and value or { value }
    local out = {}
    for i, text in ipairs(list) do
      if type(text) ~= "string" then return nil, "expects COLUMN=VALUE strings" end
      local w, why = require("scim.input").parse_where(text)
      if not w then return nil, why end
      out[i] = w
    end
    return out
  elseif kind == "removals" then
    if type(value) == "number" then value = tostring(value) end
    local r = type(value) == "string" and parse_removals(value)
    if r then return r end
    return nil, "expects a count N or a percentage P%"
  end
  error("unknown option kind " .. tostring(kind))
end

--- How many VM instructions a config file may run.
config.MAX_INSTRUCTIONS = 10000000

--- Loads a `--config` file: a Lua file that either returns a table of options or assigns
-- them as globals (`url = "https://..."`, `concurrency = 16`, `token_file = "..."`).
-- It runs in an empty environment (only `os.getenv` is reachable).
-- @tparam string path the file
-- @treturn table options keyed like `config.OPTIONS` keys (`token_file`, `dry_run`, ...)
-- @treturn[2] nil
-- @treturn[2] string message naming the file and the offending entry
function config.load(path)
  local env = { os = { getenv = os.getenv } }
  local chunk, err = loadfile(path, "t", env)
  if not chunk then return nil, "config " .. tostring(err) end
  -- A config is data: an endless loop in it must end the run, not hang it.
  local co = coroutine.create(chunk)
  debug.sethook(co, function() error("takes too long to evaluate (a loop?)", 2) end, "",
    config.MAX_INSTRUCTIONS)
  local ok, ret = coroutine.resume(co)
  if not ok then return nil, "config " .. path .. ": " .. tostring(ret) end
  local source = env
  if ret ~= nil then
    if type(ret) ~= "table" then
      return nil, "config " .. path .. ": must return a table of options"
    end
    source = ret
  end
  local out = {}
  for k, v in pairs(source) do
    if not (source == env and k == "os") then
      local key = type(k) == "string" and k:gsub("-", "_") or k
      local spec = BY_KEY[key]
      if not spec then
        return nil, "config " .. path .. ": unknown option '" .. tostring(k) .. "'"
      end
      local value, why = config.convert(spec, v)
      if value == nil then
        return nil, "config " .. path .. ": option '" .. tostring(k) .. "' " .. why
      end
      out[key] = value
    end
  end
  return out
end

--- Reads a token file: its first line, surrounding blanks removed.
-- @treturn string the token
-- @treturn[2] nil
-- @treturn[2] string message (names the file, never its content)
function config.read_token_file(path)
  local f, err = io.open(path, "r")
  if not f then return nil, "cannot read the token file: " .. tostring(err) end
  local line = f:read("l")
  f:close()
  line = line and line:match("^%s*(.-)%s*$")
  if not line or line == "" then return nil, "the token file " .. path .. " is empty" end
  return line
end

--- Chooses the token: `--token-file`, `SCIM_TOKEN`, the config (`token_file` or `token`), the
-- positional argument; nil when none (the caller may then prompt).
-- @tparam table cmdline options given on the command line
-- @tparam table cfg options from the config file (may be empty)
-- @tparam function getenv like `os.getenv`
-- @treturn string|nil token
-- @treturn string|nil where it came from ("--token-file", "SCIM_TOKEN", "config", "argument"),
--   or an error message when a named source could not be read
-- @treturn boolean true when the second value is an error
function config.token(cmdline, cfg, getenv)
  -- Sources that renew themselves: a token command, then OAuth client credentials.
  for _, src in ipairs{ cmdline, cfg } do
    local where = src == cmdline and "command line" or "config"
    if src.token_command then
      return require("scim.token").command(src.token_command), "--token-command (" .. where .. ")"
    end
    if src.oauth_token_url then
      if not ((cmdline.client_id or cfg.client_id)
          and (cmdline.client_secret_file or cfg.client_secret_file)) then
        return nil, "--oauth-token-url needs --client-id and --client-secret-file", true
      end
      local function pick(k) if cmdline[k] ~= nil then return cmdline[k] end return cfg[k] end
      local ok, p = pcall(require("scim.token").oauth, {
        token_url = src.oauth_token_url, client_id = pick("client_id"),
        client_secret_file = pick("client_secret_file"), scope = pick("scope"),
        auth = pick("oauth_auth"), allow_http = pick("allow_http"), ca_file = pick("ca_file"),
        insecure = pick("insecure"), timeout = pick("timeout") })
      if not ok then return nil, "OAuth: " .. tostring(p), true end
      return p, "OAuth (" .. where .. ")"
    end
    if src == cmdline then
      if src.token_file then
        local t, err = config.read_token_file(src.token_file)
        if not t then return nil, err, true end
        return t, "--token-file"
      end
      local env = getenv("SCIM_TOKEN")
      if env and env ~= "" then return env, "SCIM_TOKEN" end
    end
  end
  if cmdline.token_file then
    local t, err = config.read_token_file(cmdline.token_file)
    if not t then return nil, err, true end
    return t, "--token-file"
  end
  local env = getenv("SCIM_TOKEN")
  if env and env ~= "" then return env, "SCIM_TOKEN" end
  if cfg.token_file then
    local t, err = config.read_token_file(cfg.token_file)
    if not t then return nil, err, true end
    return t, "config"
  end
  if cfg.token then return cfg.token, "config" end
  if cmdline.token then return cmdline.token, "argument" end
  return nil
end

--- Chooses the URL: `--url` (or the positional URL of the original form), `SCIM_URL`, the
-- config, the dialect's default.
-- @treturn string|nil the URL
function config.url(cmdline, cfg, getenv, dialect)
  if cmdline.url then return cmdline.url end
  local env = getenv("SCIM_URL")
  if env and env ~= "" then return env end
  if cfg.url then return cfg.url end
  return dialect and dialect.default_url or nil
end

return config
