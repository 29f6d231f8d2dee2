--- Test harness for tests/support/proxy.js, a forward proxy on 127.0.0.1.
--
--     local proxy = require "support.proxy"
--     local p = proxy.start()            -- or proxy.start{ refuse = true }
--     -- p.url = "http://127.0.0.1:PORT"
--     local st = p:stats()  -- { forwarded =, connects =, refused =, requests = {...} }
--     p:stop()
--
-- Like support.server, it talks to the proxy with the curl tool (never
-- through any proxy), and node exits when our pipe to its stdin closes.
-- @module support.proxy
local util = require "support.util"

local proxy = {}

local methods = {}
local mt = { __name = "support.proxy", __index = methods }

local CLEAN = util.CLEAN_ENV
local read_file = util.read_file

-- proxy.js beside this file
local function script()
  local src = debug.getinfo(1, "S").source
  return (src:match("^@(.*/)[^/]*$") or "tests/support/") .. "proxy.js"
end

--- Starts a proxy.
-- @tparam[opt] table opts `refuse` (answer 403 to every forward and CONNECT)
-- @return the proxy object; raises if it does not start within 15 s
function proxy.start(opts)
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "refuse" then error("proxy.start: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local tmp = os.tmpname()
  local out, log = tmp .. ".out", tmp .. ".log"
  local pipe = assert(io.popen(table.concat({ "exec", CLEAN, "node", script(),
    opts.refuse and "--refuse" or "", "--exit-on-stdin-eof", ">", out, "2>", log }, " "), "w"))
  util.wait_listening(out, 15)
  local port = tonumber((read_file(out) or ""):match("^listening (%d+)\n"))
  if not port then
    pipe:close()
    local why = read_file(log) or ""
    os.remove(out); os.remove(log); os.remove(tmp)
    error("proxy.start: the proxy did not start: " .. why, 2)
  end
  return setmetatable({ port = port, url = "http://127.0.0.1:" .. port, _pipe = pipe,
    _files = { tmp, out, log } }, mt)
end

local function control(self, method, path)
  if not self._pipe then error("support.proxy: the proxy is stopped", 3) end
  return (util.must("support.proxy", util.control(self.url .. "/_proxy/", method, path)))
end

--- Counters since start or the last reset: `forwarded` (plain HTTP requests
-- passed on), `connects` (tunnels opened), `refused`, and `requests`, each
-- `{ method =, target =, proxy_auth = boolean }` in arrival order.
function methods:stats()
  return control(self, "GET", "stats")
end

--- Zeroes the counters.
function methods:reset()
  control(self, "POST", "reset")
end

--- Stops the proxy (idempotent; also `__close`).
methods.stop = util.release

mt.__close = methods.stop
mt.__gc = util.finalize

return proxy
