--- Test harness for tests/support/hostile.js, a SCIM server that answers only what a
-- spec scripts (loopback only).
--
--     local hostile = require "support.hostile"
--     local h = hostile.start()        -- h.url = "http://127.0.0.1:PORT/scim/v2/"
--     h:script{ { match = "^GET /scim/v2/Users", answers = { { json = { ... } } } } }
--     local reqs = h:requests()        -- { { method =, url =, authorization =, body = } }
--     h:stop()
--
-- A rule's `match` is a JavaScript regular expression tested against "METHOD /path?query";
-- its answers (`status`, `headers`, `body` string or `json` value) are served in order, the
-- last again once they run out. Unmatched requests get a SCIM 404.
-- @module support.hostile
local cjson = require "cjson"
local util = require "support.util"

local hostile = {}

local methods = {}
local mt = { __name = "support.hostile", __index = methods }

local function script_path()
  local src = debug.getinfo(1, "S").source
  return (src:match("^@(.*/)[^/]*$") or "tests/support/") .. "hostile.js"
end

--- Starts a hostile server.
-- @return the server object; raises if it does not start within 15 s
function hostile.start()
  local tmp = os.tmpname()
  local out, log = tmp .. ".out", tmp .. ".log"
  local pipe = assert(io.popen(table.concat({ "exec", util.CLEAN_ENV, "node",
    util.shell_quote(script_path()), "--exit-on-stdin-eof", ">", out, "2>", log }, " "), "w"))
  util.wait_listening(out, 15)
  local port = tonumber((util.read_file(out) or ""):match("^listening (%d+)\n"))
  if not port then
    pipe:close()
    local why = util.read_file(log) or ""
    os.remove(out); os.remove(log); os.remove(tmp)
    error("hostile.start: the server did not start: " .. why, 2)
  end
  local origin = "http://127.0.0.1:" .. port
  return setmetatable({ port = port, origin = origin, url = origin .. "/scim/v2/",
    _pipe = pipe, _files = { tmp, out, log, tmp .. ".body" }, _body = tmp .. ".body" }, mt)
end

local function control(self, method, path, body)
  if not self._pipe then error("support.hostile: the server is stopped", 3) end
  return (util.must("support.hostile", util.control(self.origin .. "/_hostile/", method, path,
    body, self._body)))
end

--- Replaces the rules (and clears the request log).
-- @tparam table rules array of
--   `{ match = "regex", answers = { { status =, headers =, body = or json = } } }`
function methods:script(rules)
  for _, r in ipairs(rules) do setmetatable(r.answers, cjson.array_mt) end
  return control(self, "POST", "script", { rules = setmetatable(rules, cjson.array_mt) })
end

--- The requests received since the last script or reset, in arrival order.
function methods:requests()
  return control(self, "GET", "requests")
end

--- No rules, empty log.
function methods:reset()
  return control(self, "POST", "reset")
end

--- Stops the server (idempotent; also `__close`).
methods.stop = util.release

mt.__close = methods.stop
mt.__gc = util.finalize

return hostile
