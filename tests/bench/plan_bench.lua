-- The agent's request economy and cost per account (`make bench`, or
-- `lua5.4 tests/bench/run.lua plan`). Each figure comes from the agent run as a process,
-- with its peak RSS and CPU from /usr/bin/time and its requests counted by the server:
--
-- 1. plan of N rows (SCIM_BENCH_PLAN_N, default 100,000) against the same N accounts
--    (page size 1,000): "N unchanged", peak RSS, agent CPU (goal: 100k in <= 100 MB, <= 8 s);
-- 2. create rerun on that populated directory: requests (goal <= 130 for 100k);
-- 3. create of 2,000 people, 1,800 with a manager, on an empty server: requests (goal
--    <= 2,010) and agent CPU per request at --concurrency 64 (goal <= 200 us), beside the
--    cost of the same POSTs through scim.http alone;
-- 4. 300 people with managers at 20 ms latency: the original sample's request pattern (one
--    request at a time on a new connection, a POST per person, then 4 requests per manager
--    link) against the agent at --concurrency 32 (goal >= 25x faster).
local http = require "scim.http"
local core = require "scim.core"
local cjson = require "cjson"
local server = require "support.server"
local util = require "support.util"

local N = tonumber(os.getenv("SCIM_BENCH_PLAN_N")) or 100000
local q = util.shell_quote

local function write(path, lines)
  local f = assert(io.open(path, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
end

-- Runs the agent; returns exit code, peak RSS (MB), CPU seconds, wall seconds, stderr tail.
local function agent(s, args)
  local base = os.tmpname()
  local cmd = string.format("SCIM_URL=%s SCIM_TOKEN=%s LUA_PATH='lua/?.lua;lua/?/init.lua;;' "
    .. "LUA_CPATH='build/?.so;;' /usr/bin/time -o %s -f '%%M %%U %%S' lua5.4 lua/scim_agent.lua "
    .. "%s --quiet > /dev/null 2> %s", q(s.url), q(s.token), q(base .. ".time"), args,
    q(base .. ".err"))
  local t0 = core.monotime()
  local _, _, code = os.execute(cmd)
  local wall = core.monotime() - t0
  local tf = io.open(base .. ".time")
  local rss, user, sys = 0, 0, 0
  if tf then
    for line in tf:lines() do
      local a, b, c = line:match("^(%d+) ([%d.]+) ([%d.]+)$")
      if a then rss, user, sys = tonumber(a), tonumber(b), tonumber(c) end
    end
    tf:close()
  end
  local err = util.read_file(base .. ".err") or ""
  for _, f in ipairs{ base, base .. ".time", base .. ".err" } do os.remove(f) end
  return code, rss / 1024, user + sys, wall, err:sub(-300)
end

local rows = {}
local function line(...) rows[#rows + 1] = string.format(...) end

-- 1 and 2: a populated directory.
do
  local s = server.start{ page_size = 1000 }
  for i = 1, N, 10000 do s:seed(math.min(10000, N - i + 1)) end
  local lines = { "email,first name,last name,job title,department" }
  for i = 1, N do
    local n = string.format("%05d", i)
    lines[#lines + 1] = string.format("user%s@example.com,Given%s,Family%s,%s,Dept%d", n, n, n,
      i % 3 == 0 and "Engineer" or i % 3 == 1 and "Designer" or "Manager", i % 10)
  end
  local file = os.tmpname()
  write(file, lines)
  lines = nil -- luacheck: ignore 311
  collectgarbage()
  s:reset_stats()
  local code, rss, cpu, _, err = agent(s, "plan " .. q(file))
  local st = s:stats{ requests = false }
  line("plan %d rows x %d accounts: exit %d, %d requests, peak RSS %.0f MB, agent CPU %.1f s",
    N, N, code, st.total, rss, cpu)
  if code ~= 0 then line("  %s", err) end
  s:reset_stats()
  code, rss, cpu = agent(s, "create " .. q(file))
  st = s:stats{ requests = false }
  line("create rerun on the populated directory: exit %d, %d requests (%d POST), "
    .. "peak RSS %.0f MB, CPU %.1f s", code, st.total, st.by_method.POST or 0, rss, cpu)
  os.remove(file)
  s:stop()
end

-- 3: 2,000 people, 1,800 with a manager (person i reports to i // 10 + 1 for i > 200). The
-- machine's speed drifts, so the create runs 5 times (median and best), and the engine's
-- own cost for the same number of POSTs at the same window is measured beside it.
do
  local s = server.start{}
  local lines = { "email,first name,last name,manager email" }
  for i = 1, 2000 do
    lines[#lines + 1] = string.format("m%d@example.com,F%d,L%d,%s", i, i, i,
      i > 200 and ("m" .. (i // 10 + 1) .. "@example.com") or "")
  end
  local file = os.tmpname()
  write(file, lines)
  local per, code, total, managed = {}, nil, 0, 0
  for run = 1, 5 do
    if run > 1 then s:reset() end
    local _, cpu
    code, _, cpu = agent(s, "create " .. q(file) .. " --concurrency 64")
    total = s:stats{ requests = false }.total
    per[run] = cpu * 1e6 / math.max(1, total)
  end
  for _, u in ipairs(s:users()) do
    local e = u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]
    if e and e.manager then managed = managed + 1 end
  end
  table.sort(per)
  -- The floor: the same number of POSTs through scim.http alone, window 64, in this process.
  s:reset()
  local engine = http.new{ concurrency = 64, headers = { Authorization = "Bearer " .. s.token,
    ["Content-Type"] = "application/scim+json" } }
  local items = {}
  for i = 1, total do items[i] = i end
  local c0 = os.clock()
  http.run(items, function(i)
    engine:request{ method = "POST", url = s.url .. "Users", body = cjson.encode{
      schemas = { "urn:ietf:params:scim:schemas:core:2.0:User" },
      userName = "floor" .. i .. "@example.com", name = { givenName = "F", familyName = "L" } } }
  end, { concurrency = 64 })
  local floor = (os.clock() - c0) * 1e6 / total
  engine:close()
  line("create 2,000 (1,800 with a manager), --concurrency 64: exit %d, %d requests, "
    .. "%d managers set, agent CPU per request %.0f us (median of 5; best %.0f); "
    .. "scim.http alone: %.0f us per POST (agent / engine %.1fx)", code, total, managed,
    per[3], per[1], floor, per[3] / floor)
  os.remove(file)
  s:stop()
end

-- 4: the original sample's pattern against the agent, 20 ms latency, 300 people.
do
  local P = 300
  local s = server.start{ latency_ms = 20 }
  local lines = { "email,first name,last name,manager email" }
  for i = 1, P do
    lines[#lines + 1] = string.format("s%d@example.com,F%d,L%d,%s", i, i, i,
      i > 1 and ("s" .. (i // 2) .. "@example.com") or "")
  end
  local file = os.tmpname()
  write(file, lines)
  local _, _, _, agent_wall = agent(s, "create " .. q(file) .. " --concurrency 32")
  s:reset()
  -- The sample: sequential, a new connection per request.
  local engine = http.new{ concurrency = 1, forbid_reuse = true,
    headers = { Authorization = "Bearer " .. s.token, ["Content-Type"] = "application/scim+json" } }
  local t0 = core.monotime()
  local ids = {}
  for i = 1, P do
    local res = engine:request{ method = "POST", url = s.url .. "Users", body = cjson.encode{
      schemas = { "urn:ietf:params:scim:schemas:core:2.0:User" },
      userName = "s" .. i .. "@example.com", name = { givenName = "F", familyName = "L" } } }
    ids[i] = res and res.status == 201 and cjson.decode(res.body).id
  end
  for i = 2, P do
    local filter = function(k) return s.url .. "Users?filter=" .. require("scim.client").escape(
      'userName eq "s' .. k .. '@example.com"') end
    engine:request{ method = "GET", url = filter(i) }
    engine:request{ method = "GET", url = filter(i // 2) }
    engine:request{ method = "GET", url = s.url .. "Users/" .. tostring(ids[i]) }
    engine:request{ method = "PATCH", url = s.url .. "Users/" .. tostring(ids[i]),
      body = cjson.encode{ schemas = { "urn:ietf:params:scim:api:messages:2.0:PatchOp" },
        Operations = { { op = "add", path =
          "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
          value = { value = ids[i // 2] } } } } }
  end
  local sample_wall = core.monotime() - t0
  line("300 people with managers at 20 ms latency: sample pattern %.1f s, agent (--concurrency "
    .. "32) %.2f s: %.0fx", sample_wall, agent_wall, sample_wall / agent_wall)
  os.remove(file)
  s:stop()
end

for _, l in ipairs(rows) do print(l) end
