-- scim.core.sys: SIGTERM/SIGHUP handled as Ctrl-C is, core dumps off, isatty, file modes.
-- Signals go to child `lua5.4` processes (never to busted itself), each bounded by
-- `timeout`; the specs assert what the child printed and how it ended, never times.
local core = require "scim.core"
local sys = core.sys

-- Runs `body` (Lua source) in a child after a prelude that loads scim.core.sys and prints
-- "ready". Returns the child's pid, a function reading one line, and one reading the rest
-- and closing (-> output, close's three results).
local function child(body, sh_prelude)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write('package.cpath = "build/?.so;" .. package.cpath\n',
    'local core = require "scim.core"\nlocal sys = core.sys\n',
    'local function busy(s) local t = os.time() + s while os.time() < t do end end\n',
    -- prints "ready" inside a pcall, runs Lua for s seconds, then prints what ended it
    'local function wait_caught(s)\n',
    '  local ok, err = pcall(function() print("ready") io.stdout:flush() busy(s) end)\n',
    '  print("caught", ok, tostring(err):match("interrupted!"), sys.signalled())\n',
    '  io.stdout:flush()\n',
    'end\n',
    body, "\n")
  f:close()
  -- sh prints its pid, then becomes lua5.4 (exec keeps the pid)
  local p = assert(io.popen("timeout 20 sh -c '" .. (sh_prelude or "")
    .. "echo $$; exec lua5.4 " .. path .. "' 2>&1"))
  local pid = assert(math.tointeger(tonumber(p:read("l"))))
  return pid, function() return p:read("l") end, function()
    local out = p:read("a")
    local a, b, c = p:close()
    os.remove(path)
    return out, a, b, c
  end
end

local function kill(sig, pid)
  assert(os.execute(string.format("kill -%s %d", sig, pid)))
end

-- What wait_caught prints for an interruption, less the signal's name.
local CAUGHT = "caught\tfalse\tinterrupted!\t"

-- The child ended by a signal's default action before printing "not reached".
local function assert_killed(finish)
  local out, ok = finish()
  assert.is_nil(out:find("not reached"))
  assert.is_falsy(ok)
end

describe("scim.core.sys", function()
  after_each(function()
    collectgarbage()
    collectgarbage()
  end)

  describe("catch_signals", function()
    it("makes SIGTERM raise 'interrupted!' in the main thread, as Ctrl-C does", function()
      local pid, line, finish = child([[
        assert(sys.catch_signals() == true)
        assert(sys.signalled() == nil)
        wait_caught(15)
        print("still running")]])
      assert.equal("ready", line())
      kill("TERM", pid)
      local out, ok = finish()
      assert.equal(CAUGHT .. "SIGTERM\nstill running\n", out)
      assert.is_true(ok)
    end)

    it("interrupts a wait in C (curl_multi_poll) at once", function()
      -- A 60 s wait under a 20 s timeout: only an interrupted poll lets the child print.
      local pid, line, finish = child([[
        local multi = core.multi()
        sys.catch_signals()
        local ok, err = pcall(function()
          print("ready") io.stdout:flush()
          multi:poll(60)  -- the hook fires as poll returns
          print("not reached")
        end)
        print("caught", ok, err:match("interrupted!"), sys.signalled())
        multi:close()]])
      assert.equal("ready", line())
      -- Wait (bounded) until the child sleeps in poll(), so the signal meets the wait and
      -- not the call before it (where the hook would fire without any wait).
      for _ = 1, 100 do
        local st = io.open("/proc/" .. pid .. "/stat")
        if not st then break end  -- not Linux: the signal may come a little early
        local state = st:read("a"):match("%) (%a)")
        st:close()
        if state == "S" then break end
        os.execute("sleep 0.05")
      end
      kill("TERM", pid)
      local out, ok = finish()
      assert.equal(CAUGHT .. "SIGTERM\n", out)
      assert.is_true(ok)
    end)

    it("handles SIGHUP the same way, and a second signal ends the process", function()
      local pid, line, finish = child([[
        sys.catch_signals()
        wait_caught(15)
        busy(15)
        print("not reached")]])
      assert.equal("ready", line())
      kill("HUP", pid)
      assert.equal(CAUGHT .. "SIGHUP", line())
      kill("HUP", pid)
      assert_killed(finish)
    end)

    it("catches only the signals named", function()
      local pid, line, finish = child([[
        sys.catch_signals{ "SIGINT" }
        wait_caught(15)]])
      assert.equal("ready", line())
      kill("INT", pid)
      assert.equal(CAUGHT .. "SIGINT\n", (finish()))
      pid, line, finish = child([[
        sys.catch_signals{ "SIGHUP" }
        print("ready") io.stdout:flush()
        busy(15)
        print("not reached")]])
      assert.equal("ready", line())
      kill("TERM", pid)
      assert_killed(finish)
    end)

    it("leaves a signal ignored at start ignored (nohup)", function()
      local pid, line, finish = child([[
        sys.catch_signals()
        -- what the kernel holds: SigIgn/SigCgt masks, bit n-1 for signal n (HUP 1, TERM 15)
        local st = io.open("/proc/self/status")
        if st then
          local t = st:read("a")
          st:close()
          local ign = tonumber(t:match("SigIgn:%s*(%x+)"), 16)
          local cgt = tonumber(t:match("SigCgt:%s*(%x+)"), 16)
          print("HUP ignored", ign & 1 ~= 0, "TERM caught", cgt & (1 << 14) ~= 0)
        else
          print("HUP ignored", true, "TERM caught", true)
        end
        wait_caught(15)]], "trap \"\" HUP; ")
      assert.equal("HUP ignored\ttrue\tTERM caught\ttrue", line())
      assert.equal("ready", line())
      kill("TERM", pid)
      local out, ok = finish()
      assert.equal(CAUGHT .. "SIGTERM\n", out)
      assert.is_true(ok)
    end)

    it("refuses names it does not know", function()
      assert.has_error(function() sys.catch_signals{ "SIGKILL" } end,
        "bad argument #1 to 'catch_signals' (item 1: expected \"SIGTERM\", \"SIGHUP\" or "
        .. "\"SIGINT\")")
      assert.has_error(function() sys.catch_signals("SIGTERM") end)
    end)
  end)

  describe("no_core_dumps", function()
    it("sets RLIMIT_CORE to 0 and clears the dumpable flag", function()
      local _, line, finish = child([[
        print("ready")
        print("before", (sys.core_dumps()))
        assert(sys.no_core_dumps() == true)
        print("after", sys.core_dumps())
        local p = io.popen("sh -c 'ulimit -c'")
        print("child limit", p:read("l"))
        p:close()]])
      assert.equal("ready", line())
      local out, ok = finish()
      assert.is_true(ok)
      local linux = io.open("/proc/self/status") ~= nil
      assert.matches("after\tfalse\t" .. (linux and "false" or "true") .. "\t0\n", out, 1, true)
      assert.matches("child limit\t0\n", out, 1, true)
    end)

    it("reports the current state", function()
      local allowed, dumpable, limit = sys.core_dumps()
      assert.equal("boolean", type(allowed))
      assert.equal("boolean", type(dumpable))
      assert.is_true(limit == math.huge or math.type(limit) == "integer")
      assert.equal(dumpable and limit ~= 0, allowed)
    end)
  end)

  describe("isatty", function()
    it("is false for files and pipes, and checks its argument", function()
      local p = assert(io.popen([[lua5.4 -e 'package.cpath = "build/?.so;" .. package.cpath
        local sys = require("scim.core").sys
        print(sys.isatty(0), sys.isatty(1), sys.isatty(99))' < /dev/null]]))
      assert.equal("false\tfalse\tfalse", p:read("l"))
      p:close()
      assert.has_error(function() sys.isatty(-1) end)
      assert.has_error(function() sys.isatty("x") end)
    end)
  end)

  describe("file_mode", function()
    it("gives the permission bits and the kind", function()
      local path = os.tmpname()
      assert(os.execute("chmod 600 " .. path))
      assert.same({ 384, "file" }, { sys.file_mode(path) })  -- 0600
      assert(os.execute("chmod 644 " .. path))
      local mode = sys.file_mode(path)
      assert.equal(420, mode)
      assert.is_true(mode & 0x3F ~= 0)  -- readable by group/others: what the CLI warns about
      os.remove(path)
      assert.equal("directory", select(2, sys.file_mode("tests")))
      local v, err, code = sys.file_mode(path)
      assert.is_nil(v)
      assert.equal(path .. ": No such file or directory", err)
      assert.equal("ENOENT", code)
    end)
  end)
end)
