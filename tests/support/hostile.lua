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

-- A script's path beside this file.
local function beside(name)
  local src = debug.getinfo(1, "S").source
  return (src:match("^@(.*/)[^/]*$") or "tests/support/") .. name
end

--- Starts one of the node helpers beside this file that print "listening PORT" (also
-- used by support.oauth). Raises (naming `who`) if it does not start within 15 s.
-- @tparam string who the harness, for messages
-- @tparam string name the script's file name, e.g. "hostile.js"
-- @tparam table args further arguments, already shell-quoted
-- @return the object's fields: `port`, `origin`, `_pipe`, `_files`, `_body`
function hostile.spawn(who, name, args)
  local tmp = os.tmpname()
  local out, log = tmp .. ".out", tmp .. ".log"
  local pipe = assert(io.popen(table.concat({ "exec", util.CLEAN_ENV, "node",
    util.shell_quote(beside(name)), table.concat(args, " "), "--exit-on-stdin-eof",
    ">", out, "2>", log }, " "), "w"))
  util.wait_listening(out, 15)
  local port = tonumber((util.read_file(out) or ""):match("^listening (%d+)\n"))
  if not port then
    pipe:close()
    local why = util.read_file(log) or ""
    os.remove(out); os.remove(log); os.remove(tmp)
    error(who .. ": the server did not start: " .. why, 3)
  end
  return { port = port, origin = "http://127.0.0.1:" .. port, _pipe = pipe,
    _files = { tmp, out, log, tmp .. ".body" }, _body = tmp .. ".body" }
end

--- Starts a hostile server.
-- @return the server object; raises if it does not start within 15 s
function hostile.start()
  local self = hostile.spawn("hostile.start", "hostile.js", {})
  self.url = self.origin .. "/scim/v2/"
  return setmetatable(self, mt)
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
