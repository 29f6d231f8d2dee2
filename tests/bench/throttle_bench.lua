-- Throttling as the agent lives it (`lua5.4 tests/bench/run.lua throttle`): the agent run as a
-- process, requests counted by the test server.
--
-- 1. 300 creates through a 20 req/s limiter answering bare 429s (goal: 300/300, exit 0,
--    <= 0.2 refused per passed request);
-- 2. 2,000 creates with 30% of requests answered 429 or 503 (Retry-After: 1) against the same
--    2,000 on a clean server (goal: 2,000/2,000 in one run, exit 0, well under 16x the clean
--    run's time).
local core = require "scim.core"
local server = require "support.server"
local util = require "support.util"

local q = util.shell_quote

local function people(n, tag)
  local lines = { "email,first name,last name" }
  for i = 1, n do lines[#lines + 1] = string.format("%s%d@example.com,F%d,L%d", tag, i, i, i) end
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  return path
end

local function agent(s, args)
  local cmd = string.format("SCIM_URL=%s SCIM_TOKEN=%s LUA_PATH='lua/?.lua;lua/?/init.lua;;' "
    .. "LUA_CPATH='build/?.so;;' lua5.4 lua/scim_agent.lua %s --quiet > /dev/null 2>&1",
    q(s.url), q(s.token), args)
  local t0 = core.monotime()
  local _, _, code = os.execute(cmd)
  return code, core.monotime() - t0
end

local s = server.start{}
local file = people(300, "r")
s:configure{ rate_limit = { rps = 20 } }
local code, secs = agent(s, "create " .. q(file))
local lim = s:stats{ requests = false }.limiter
print(string.format("300 creates through a 20 req/s limiter (bare 429): exit %d, %d accounts, "
  .. "%.2f refused per passed, %.1f req/s at the server, %.1f s", code, #s:users(),
  lim.refused / math.max(1, lim.passed), tonumber(lim.rate) or 0, secs))
s:configure{ rate_limit = false }
os.remove(file)

s:reset()
file = people(2000, "c")
local _, clean = agent(s, "create " .. q(file))
s:reset()
s:faults{ { status = 429, retry_after = 1, fraction = 0.15, match = "POST /Users" },
          { status = 503, retry_after = 1, fraction = 0.15 / 0.85, match = "POST /Users" } }
local faulted
code, faulted = agent(s, "create " .. q(file))
print(string.format("2,000 creates, 30%% answered 429/503 (Retry-After: 1): exit %d, %d accounts, "
  .. "%.1f s against %.1f s clean: %.1fx", code, #s:users(), faulted, clean, faulted / clean))
os.remove(file)
s:stop()
