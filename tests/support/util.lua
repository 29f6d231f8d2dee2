--- Small helpers shared by the test harnesses (support.agent, support.server,
-- support.proxy), so each does not keep a private copy.
-- @module support.util
local cjson = require "cjson"

local util = {}

-- Tools we run must not inherit a sanitizer preload (`make asan` sets LD_PRELOAD to
-- libasan for busted): curl hangs at startup under it, node only slows down.
local CLEAN = "env -u LD_PRELOAD -u ASAN_OPTIONS "
util.CLEAN_ENV = CLEAN

--- Quotes a string for a POSIX shell (single quotes; embedded ones escaped).
function util.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- A whole file's bytes, or nil when it cannot be opened.
function util.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

--- Waits, in one bounded shell loop (no busy Lua loop), until the file at `path`
-- has a line starting "listening " (what our node helpers print once they serve).
-- @tparam string path the helper's stdout file
-- @tparam number seconds how long at most
function util.wait_listening(path, seconds)
  os.execute(string.format(
    "i=0; while [ $i -lt %d ]; do grep -q '^listening ' %s 2>/dev/null && break; "
      .. "sleep 0.02; i=$((i+1)); done", math.ceil(seconds / 0.02), util.shell_quote(path)))
end

--- One call on a node helper's control channel with the `curl` tool (never through a
-- proxy), so the harnesses depend on nothing of scim.http.
-- @tparam string base the channel's URL up to the path, e.g. "http://127.0.0.1:N/_control/"
-- @tparam string method "GET", "POST", ...
-- @tparam string path appended to `base`
-- @param[opt] body a table sent as JSON
-- @tparam[opt] string body_file where the body is written for curl (needed with `body`)
-- @return the decoded JSON answer, or nil and a message on a transport error, a bad
--   answer or an HTTP status >= 400
function util.control(base, method, path, body, body_file)
  local cmd = { CLEAN .. "curl -s -S --max-time 10 --noproxy '*' -X", method }
  if body ~= nil then
    local f = assert(io.open(body_file, "wb"))
    f:write(cjson.encode(body))
    f:close()
    cmd[#cmd + 1] = "-H 'Content-Type: application/json' --data-binary @"
      .. util.shell_quote(body_file)
  end
  cmd[#cmd + 1] = "-w '\\n%{http_code}'"
  cmd[#cmd + 1] = util.shell_quote(base .. path)
  cmd[#cmd + 1] = "2>&1"
  local p = assert(io.popen(table.concat(cmd, " ")))
  local out = p:read("a")
  p:close()
  local text, code = out:match("^(.*)\n(%d%d%d)$")
  code = tonumber(code)
  if not code or code == 0 then
    return nil, "control " .. method .. " " .. path .. " failed: " .. out:gsub("%s+$", "")
  end
  local ok, decoded = pcall(cjson.decode, text)
  if not ok then
    return nil, "control " .. method .. " " .. path .. ": bad JSON answer: " .. text:sub(1, 200)
  end
  if code >= 400 then
    return nil, "control " .. method .. " " .. path .. ": " .. code .. " "
      .. tostring(type(decoded) == "table" and decoded.error or text)
  end
  return decoded
end

--- A control answer, or an error "<who>: message" raised at the harness method's
-- caller. Call it as `return (util.must(...))` from the harness's own `control`
-- helper: the parentheses keep that frame (no tail call), so level 4 is the method's caller.
-- @tparam string who the harness, e.g. "support.server"
-- @param doc what `util.control` returned
-- @tparam[opt] string err its message
function util.must(who, doc, err)
  if doc == nil then error(who .. ": " .. err, 4) end
  return doc
end

--- Ends a node helper started with a pipe to its stdin (it exits on EOF; closing the
-- pipe waits for it) and removes its files. Idempotent.
-- @tparam table self with `_pipe` (nil once released) and `_files`
function util.release(self)
  if not self._pipe then return end
  self._pipe:close()
  self._pipe = nil
  for _, f in ipairs(self._files) do os.remove(f) end
end

--- A `__gc` for such helpers: never raises in a finalizer; closing the pipe is
-- enough to end the node process.
function util.finalize(self)
  if self._pipe then pcall(self._pipe.close, self._pipe) end
end

return util
