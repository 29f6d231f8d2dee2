--- Test harness for the SCIM test server in tests/server/ (node).
--
-- Starts `node tests/server/server.js` on 127.0.0.1 on a port chosen by the
-- OS and talks to its /_control/ channel with the `curl` command-line tool,
-- so the harness depends on nothing of scim.http. The node process reads our
-- pipe on its stdin and watches our pid: it exits when this Lua process exits
-- or crashes, even if `stop` is never called.
--
--     local server = require "support.server"
--     local s = server.start{ mode = "scim2", page_size = 50 }
--     -- s.url = "http://127.0.0.1:PORT/scim/v2/", s.token = "test-token"
--     -- (entra mode: s.bulk_upload_url = "http://127.0.0.1:PORT/scim/bulkUpload")
--     s:faults{ status = 429, retry_after = 1, count = 1, match = "POST /Users" }
--     ...
--     s:stop()
--
-- @module support.server
-- Note: lua-cjson encodes every number with at most 14 significant digits, so
-- the legacy API's 15-digit ids cannot be sent back as JSON numbers: send them
-- as digit strings (the v1 server accepts "managerId": "100040000000001").
local cjson = require "cjson"
local util = require "support.util"

local server = {}

local methods = {}
local mt = { __name = "support.server", __index = methods }

-- The test server's directory, from this file's own path (tests/support/).
local function server_dir()
  local src = debug.getinfo(1, "S").source
  local dir = src:match("^@(.*)/support/[^/]*$")
  if dir then return dir .. "/server" end
  return "tests/server"
end

-- Tools we run must not inherit a sanitizer preload (see support.util).
local CLEAN = util.CLEAN_ENV
server.CLEAN_ENV = CLEAN

local shell_quote, read_file = util.shell_quote, util.read_file

local function sleep(seconds)
  os.execute("sleep " .. string.format("%.3f", seconds))
end

-- Our own pid, so the server can watch it: $PPID of a shell we spawn.
local function own_pid()
  local p = io.popen("echo $PPID")
  local pid = p and p:read("l")
  if p then p:close() end
  return tonumber(pid)
end

local START_OPTIONS = {
  mode = true, token = true, page_size = true, latency_ms = true, numeric_ids = true,
  strict = true, require_user_agent = true, node = true, start_timeout = true, compress = true,
  verify_egress = true, rate_limit = true, bulk = true, omit_members_in_list = true,
  max_patch_ops = true,
}

--- Starts a server.
-- @tparam[opt] table opts `mode` ("scim2", "meta", "v1" or "entra", default "scim2"; meta:
--   SCIM 2.0 at the root as Meta serves it, with Meta's extensions, a User-Agent required and
--   claimed accounts undeletable; entra: only `POST s.bulk_upload_url`
--   ("http://127.0.0.1:PORT/scim/bulkUpload"), Entra's API-driven inbound provisioning: a
--   BulkRequest of at most 50 POSTs to /Users, answered 202 with no body, users upserted by
--   externalId and read back with `s:users()`; minimal: a second, hand-written SCIM 2.0
--   server at /scim/v2/ sharing no protocol code with scim2: always strict, unknown attributes
--   refused, `omit_members_in_list` and `max_patch_ops = 10` by default, no Bulk), `token`
--   (default "test-token"), `page_size` (maximum page size, default 100),
--   `latency_ms` (every answer waits until this long after its request arrived, default 0),
--   `numeric_ids` (default: true in v1 and meta modes), `strict` (v1: reject unknown and
--   read-only attributes; default true in v1), `require_user_agent` (default true in v1 and
--   meta), `compress` (gzip answers when the
--   client accepts it; default false), `verify_egress` (check every SCIM 2.0 answer the
--   server builds itself against SCIMMY's own serialisation, a 500 on a difference; default:
--   on when the environment sets SCIM_SERVER_VERIFY_EGRESS=1), `node` (the node binary),
--   `start_timeout` (seconds, default 15).
--   `strict` in scim2 and meta modes (default false): every POST/PUT body must carry
--   `schemas` with the core User/Group schema and every PATCH the PatchOp schema (else 400
--   `invalidSyntax`/`invalidValue`), filters are one `attr eq "value"` only (else 400
--   `invalidFilter`), and a resource path with a trailing slash (`Users/`) is a 404.
--   `rate_limit = { rps = 20, burst = 1, retry_after = nil, status = 429 }`: a token bucket
--   in front of every SCIM request, by arrival time; over it a bare 429 (a SCIM error body,
--   `Retry-After` only when `retry_after` is set). `bulk = { max_operations = 1000,
--   max_payload = 1048576 }` or `false` (/Bulk; default on in scim2, off in meta).
--   `omit_members_in_list` (group listings leave out `members` unless asked with
--   `attributes=members`), `max_patch_ops` (a PATCH with more operations, or an operation
--   with more values, is a 400 `tooMany`; default 0 = no limit). All but `mode`, `node` and
--   `start_timeout` can be changed later with `s:configure{...}`.
-- @return the server object; raises if the server cannot start.
function server.start(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("server.start: options must be a table", 2) end
  for k in pairs(opts) do
    if not START_OPTIONS[k] then
      error("server.start: unknown option '" .. tostring(k) .. "'", 2)
    end
  end
  local mode = opts.mode or "scim2"
  local MODES = { scim2 = true, meta = true, v1 = true, entra = true, minimal = true }
  if not MODES[mode] then
    error("server.start: mode must be \"scim2\", \"meta\", \"v1\", \"entra\" or \"minimal\", got "
      .. tostring(mode), 2)
  end
  for _, key in ipairs{ "page_size", "latency_ms", "max_patch_ops" } do
    local v = opts[key]
    if v ~= nil and not (math.tointeger(v) and v >= (key == "page_size" and 1 or 0)) then
      error("server.start: " .. key .. " must be an integer >= "
        .. (key == "page_size" and "1" or "0") .. ", got " .. tostring(v), 2)
    end
  end
  local token = opts.token or "test-token"
  if type(token) ~= "string" or token == "" or token:find("[%s'\"]") then
    error("server.start: token must be a non-empty string without spaces or quotes", 2)
  end
  local dir = server_dir()
  if not read_file(dir .. "/node_modules/scimmy/package.json") then
    error("server.start: " .. dir .. "/node_modules is missing: run `make server-deps`"
      .. " (npm ci in tests/server)", 2)
  end
  local tmp = os.tmpname()          -- a file we own; the server's stdout/stderr go beside it
  local out, log = tmp .. ".out", tmp .. ".log"
  local args = {
    "exec", CLEAN, shell_quote(opts.node or "node"), shell_quote(dir .. "/server.js"),
    "--port", "0", "--mode", mode, "--token", shell_quote(token), "--exit-on-stdin-eof",
  }
  local pid = own_pid()
  if pid then args[#args + 1] = "--parent-pid " .. pid end
  if opts.page_size then args[#args + 1] = "--page-size " .. math.tointeger(opts.page_size) end
  if opts.latency_ms then args[#args + 1] = "--latency-ms " .. math.tointeger(opts.latency_ms) end
  if opts.max_patch_ops then
    args[#args + 1] = "--max-patch-ops " .. math.tointeger(opts.max_patch_ops)
  end
  for _, key in ipairs{ "rate_limit", "bulk" } do
    local v = opts[key]
    if v ~= nil then
      if type(v) ~= "table" and not (key == "bulk" and type(v) == "boolean") then
        error("server.start: " .. key .. " must be a table"
          .. (key == "bulk" and " or a boolean" or ""), 2)
      end
      local text = v == false and "off" or v == true and "{}" or cjson.encode(v)
      args[#args + 1] = "--" .. key:gsub("_", "-") .. " " .. shell_quote(text)
    end
  end
  local flags = { numeric_ids = "numeric-ids", strict = "strict",
                  require_user_agent = "require-user-agent",
                  omit_members_in_list = "omit-members-in-list" }
  if opts.compress then args[#args + 1] = "--compress" end
  local verify = opts.verify_egress
  if verify == nil then verify = os.getenv("SCIM_SERVER_VERIFY_EGRESS") == "1" end
  if verify then args[#args + 1] = "--verify-egress" end
  for key, flag in pairs(flags) do
    if opts[key] ~= nil then args[#args + 1] = (opts[key] and "--" or "--no-") .. flag end
  end
  args[#args + 1] = "> " .. shell_quote(out) .. " 2> " .. shell_quote(log)
  -- Writing end of the pipe stays with us: closing it (or our death) ends the server.
  local pipe = assert(io.popen(table.concat(args, " "), "w"))

  -- Wait for the first stdout line, in one bounded shell loop (no busy Lua loop).
  local timeout = opts.start_timeout or 15
  util.wait_listening(out, timeout)
  local line = read_file(out) or ""
  local origin = line:match("^listening (http://127%.0%.0%.1:%d+)\n")
  if not origin then
    pipe:close()
    local why = (read_file(log) or ""):gsub("%s+$", "")
    os.remove(out); os.remove(log); os.remove(tmp)
    error("server.start: the test server did not start within " .. timeout .. " s"
      .. (why ~= "" and (": " .. why) or ""), 2)
  end
  local self = setmetatable({
    mode = mode,
    token = token,
    origin = origin,
    port = tonumber(origin:match(":(%d+)$")),
    url = origin .. (mode == "v1" and "/scim/v1/" or mode == "meta" and "/"
                     or mode == "entra" and "/scim/" or "/scim/v2/"),
    bulk_upload_url = mode == "entra" and origin .. "/scim/bulkUpload" or nil,
    _pipe = pipe,
    _files = { tmp, out, log },
    _body = tmp .. ".body",
  }, mt)
  self._files[#self._files + 1] = self._body
  local ok, err = self:_control("GET", "ping")
  if not ok then
    self:stop()
    error("server.start: " .. tostring(err), 2)
  end
  return self
end

-- One control call: the decoded JSON answer, or nil and a message on a
-- transport error or an HTTP status >= 400 (`control` below raises it).
function methods:_control(method, path, body)
  if not self._pipe then error("support.server: the server is stopped", 3) end
  return util.control(self.origin .. "/_control/", method, path, body, self._body)
end

local function control(self, method, path, body)
  return (util.must("support.server", self:_control(method, path, body)))
end

--- Sets the fault rules, replacing any set before.
-- One rule (a table with named fields) or a list of rules; `s:faults()` or
-- `s:faults{}` clears them. Rule fields: `match` ("POST /Users", "/Users",
-- "GET"; paths relative to the SCIM base, prefix match), `count` (apply to
-- the next n matching requests) or `fraction` (0..1, applied evenly: 0.5 hits
-- every 2nd matching request), `latency_ms`, and one action: `status` (e.g.
-- 429 or 503, with `retry_after` seconds or `retry_after_date` seconds from now
-- sent as an HTTP-date), `drop = true` (close the connection, no response),
-- `stall_ms` (hold the request, then drop it, or serve it with
-- `stall_then = "serve"`), `malformed = true` (200 with truncated JSON, or the
-- given string), `oversize_bytes = n` (200 with a valid JSON body of n bytes;
-- `chunked = true` omits Content-Length).
-- @return the rules as the server holds them
function methods:faults(rules)
  if rules == nil or next(rules) == nil then return control(self, "DELETE", "faults") end
  return control(self, "POST", "faults", rules)
end

--- Request statistics since start or the last reset (control calls not counted).
-- @tparam[opt] table opts `requests = false` leaves out the per-request list
-- @return `{ total =, by_method = { GET = n }, by_status = { ["200"] = n },
--   by_route = { ["POST /Users"] = n, ["GET /Users"] = n, ["PATCH /Users/:id"] = n,
--   ["PATCH /Groups/:id"] = n, ["POST /Bulk"] = n, ["GET /Users/"] = n (trailing slash) },
--   by_fault = { ["429"] = n, drop = n, rate_limit = n, ... },
--   limiter = { passed =, refused =, first =, last =, rate =, rps = },
--   bulk = { requests =, operations =, by_route = { ["POST /Users"] = n, ... } },
--   requests = { {method=, path=, route=, query=, status=, t=, ms=, fault=}, ... } }`;
--   `t` is ms since the server started (arrival), `ms` the time to the response; status 0 =
--   no response. `total`, `by_method` and `by_route` count at arrival (requests the limiter
--   refuses included); `limiter.passed`/`refused` split them by the rate limiter (every
--   request passes when none is set), `first`/`last` are the arrival `t` of the first and
--   last passed request and `rate` = (passed - 1) / (last - first) per second, the rate
--   measured where the requests arrive (cjson.null below two). A Bulk request is one
--   request ("POST /Bulk"); its operations are counted in `bulk` (as `METHOD /Users[/:id]`).
function methods:stats(opts)
  local all = not (opts and opts.requests == false)
  local s = control(self, "GET", "stats" .. (all and "" or "?requests=0"))
  if all and s.requests == nil then s.requests = {} end
  return s
end

--- Clears the statistics only (users and faults stay).
function methods:reset_stats()
  return control(self, "POST", "stats/reset")
end

--- Clears users, groups, faults and statistics.
function methods:reset()
  return control(self, "POST", "reset")
end

--- Inserts users directly (no counted requests).
-- @param what a number n (generated users user00001@example.com, ... numbered
--   on from the current size) or an array of resources in the mode's shape
-- @return the created resources (with ids)
function methods:seed(what)
  local body
  if type(what) == "number" then
    body = { count = math.tointeger(what) }
  elseif type(what) == "table" then
    body = { users = setmetatable(what, cjson.array_mt) }
  else
    error("seed: expected a count or an array of users", 2)
  end
  return control(self, "POST", "seed", body).users
end

--- Every stored user, as stored (no counted requests).
function methods:users()
  return control(self, "GET", "users")
end

--- Every stored group, as stored (no counted requests; scim2 and meta modes).
function methods:groups()
  return control(self, "GET", "groups")
end

--- Inserts groups directly (no counted requests): an array of `{ displayName =,
-- members = { { value = id }, ... }, externalId = }`; members must exist.
-- @return the created groups (with ids)
function methods:seed_groups(list)
  if type(list) ~= "table" then error("seed_groups: expected an array of groups", 2) end
  return control(self, "POST", "seed", { groups = setmetatable(list, cjson.array_mt) }).groups
end

--- Changes live settings: `page_size`, `latency_ms`, `token`, `strict`,
-- `require_user_agent`, `compress`, `rate_limit` (a table as for `start`, or false to
-- turn it off; a fresh bucket each time), `bulk` (a table or false), `omit_members_in_list`,
-- `max_patch_ops`. `s:reset()` puts `rate_limit` back to the start option.
function methods:configure(settings)
  return control(self, "POST", "config", settings)
end

--- A raw SCIM request with the `curl` tool (counted in the stats like any other).
-- For checks that must not depend on scim.http.
-- @tparam table req `method` (default "GET"), `path` (relative to `s.url`, e.g.
--   "Users?count=5", or a full URL), `body` (a table, sent as JSON, or a string),
--   `headers` (name -> value; "" removes one), `token` (default the server's; `false`
--   sends no Authorization), `content_type` (default the mode's), `max_time` (seconds,
--   default 10), `compressed` (ask for gzip and decode it).
-- @return `{ status =, headers = { lower-case name = value }, body =, json = decoded or nil,
--   curl_exit = n }` (status 0 and curl_exit > 0 when no response arrived)
function methods:request(req)
  if not self._pipe then error("support.server: the server is stopped", 2) end
  local method = req.method or "GET"
  local url = req.path or ""
  if not url:match("^https?://") then url = self.url .. url:gsub("^/", "") end
  local hdr_file, body_file = self._body .. ".h", self._body .. ".b"
  local cmd = { CLEAN .. "curl -s -X", shell_quote(method), "--max-time",
                tostring(req.max_time or 10),
                req.compressed and "--compressed" or "",
                "-D", shell_quote(hdr_file), "-o", shell_quote(body_file), "-w '%{http_code}'" }
  local token = req.token
  if token == nil then token = self.token end
  if token then cmd[#cmd + 1] = "-H " .. shell_quote("Authorization: Bearer " .. token) end
  for name, value in pairs(req.headers or {}) do
    -- An empty value removes the header (curl's own User-Agent, say).
    cmd[#cmd + 1] = "-H " .. shell_quote(name .. ":" .. (value == "" and "" or " " .. value))
  end
  if req.body ~= nil then
    local data = type(req.body) == "table" and cjson.encode(req.body) or tostring(req.body)
    local f = assert(io.open(self._body, "wb"))
    f:write(data)
    f:close()
    local ctype = req.content_type
      or (self.mode == "v1" and "application/json" or "application/scim+json")
    cmd[#cmd + 1] = "-H " .. shell_quote("Content-Type: " .. ctype)
    cmd[#cmd + 1] = "--data-binary @" .. shell_quote(self._body)
  end
  cmd[#cmd + 1] = shell_quote(url)
  local p = assert(io.popen(table.concat(cmd, " ")))
  local code = p:read("a")
  local _, _, exit = p:close()
  local res = { status = tonumber(code) or 0, headers = {}, body = read_file(body_file) or "",
                curl_exit = exit or 0 }
  -- Headers of the last response only (curl -D also writes 100-continue blocks).
  for line in (read_file(hdr_file) or ""):gmatch("[^\r\n]+") do
    if line:match("^HTTP/") then
      res.headers = {}
    else
      local name, value = line:match("^([^:]+):%s*(.-)%s*$")
      if name then res.headers[name:lower()] = value end
    end
  end
  local ok, decoded = pcall(cjson.decode, res.body)
  if ok then res.json = decoded end
  os.remove(hdr_file)
  os.remove(body_file)
  return res
end

--- What the server wrote to stderr so far (startup problems, uncaught errors).
function methods:log()
  return read_file(self._files[3]) or ""
end

--- Stops the server and reaps the node process; safe to call twice.
function methods:stop()
  if not self._pipe then return end
  self:_control("POST", "shutdown")   -- best effort; closing stdin stops it anyway
  util.release(self)
end

mt.__close = methods.stop
mt.__gc = util.finalize
mt.__tostring = function(self)
  return "support.server(" .. self.mode .. ", " .. (self._pipe and self.url or "stopped") .. ")"
end

--- Shares one server across a busted `describe` block: started in `setup`, reset
-- before each test (before the block's own `before_each` hooks registered after this
-- call), stopped in `teardown`. Busted keeps its hooks in the spec's environment, not
-- in _G, so the spec passes its `_ENV`.
--
--     local s
--     server.per_describe(_ENV, { mode = "v1" }, function(started) s = started end)
--
-- @tparam table env the spec's `_ENV` (its `setup`, `teardown` and `before_each`)
-- @tparam[opt] table opts for `server.start`
-- @tparam function use called with the server once it has started
function server.per_describe(env, opts, use)
  local s
  env.setup(function()
    s = server.start(opts)
    use(s)
  end)
  env.teardown(function()
    if s then s:stop() end
  end)
  env.before_each(function()
    s:reset()
  end)
end

server.sleep = sleep

--- An id as a string, whatever JSON made of it: the legacy API sends ids as
-- JSON numbers, which lua-cjson decodes as floats (100040000000001.0).
function server.id_string(id)
  if math.type(id) == "float" and math.tointeger(id) then return string.format("%d", id) end
  return tostring(id)
end

return server
