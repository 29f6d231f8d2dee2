-- scim.http benchmark (`make bench`, or `lua5.4 tests/bench/run.lua http`).
--
-- 1. Creates per second for N users (default 2,000; SCIM_BENCH_USERS) against
--    the test server with 20 ms added latency: one at a time on a new
--    connection per request (how the original sample worked), then at the
--    default window (8) and at 32 on reused connections.
-- 2. With no added latency: our GETs per second against what `wrk` gets from
--    the same server with the same number of connections.
-- 3. The same window comparison with GETs (cheap for the server), to show
--    the client's scaling apart from the server's cost per create.
-- 4. Throttling (issue 12): 300 creates through the server's limiter at 20
--    req/s answering bare 429s (refused per passed request, rate where the
--    requests arrive), and the `rate = 50` ceiling measured at the server.
-- 5. Agent CPU per request (os.clock: this process only) for GETs at windows
--    8 and 64, no added latency (issue 9).
-- Targets (issue 3): default >= 8x sequential, 32 >= 25x, GETs >= 70% of wrk;
-- (issue 12) <= 0.2 refused per passed, rate 47.5-52.5 req/s.
-- SCIM_BENCH_ONLY=throttle,cpu (comma list of create, throttle, cpu) runs a part.
local http = require "scim.http"
local core = require "scim.core"
local cjson = require "cjson"
local server = require "support.server"

local N = tonumber(os.getenv("SCIM_BENCH_USERS")) or 2000
local GETS = tonumber(os.getenv("SCIM_BENCH_GETS")) or 20000
local WRK_SECONDS = tonumber(os.getenv("SCIM_BENCH_WRK_SECONDS")) or 5
local LATENCY_MS = 20
local ONLY = os.getenv("SCIM_BENCH_ONLY")
local function part(name)
  return not ONLY or ("," .. ONLY .. ","):find("," .. name .. ",", 1, true) ~= nil
end

local s = server.start{ latency_ms = LATENCY_MS }
local auth = { Authorization = "Bearer " .. s.token }
local headers = { ["Content-Type"] = "application/scim+json" }
local CORE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"

local function body(i, tag)
  return cjson.encode{ schemas = { CORE_SCHEMA }, userName = string.format("%s%05d@example.com",
    tag, i), name = { givenName = "Bench", familyName = tostring(i) }, active = true }
end

-- The server's mean time from a request's arrival to its response (ms): the
-- part of each request's time that no client can shorten.
local function server_ms()
  local sum, n = 0, 0
  for _, r in ipairs(s:stats().requests) do
    sum, n = sum + r.ms, n + 1
  end
  return n > 0 and sum / n or 0
end

-- Creates N users; returns seconds taken and the server's mean ms. Every create must land: the
-- server's count is checked, so a fast wrong answer cannot win.
local function creates(tag, concurrency, forbid_reuse)
  s:reset()
  local engine = http.new{ concurrency = concurrency, headers = auth,
    forbid_reuse = forbid_reuse }
  local failures = 0
  local t0 = core.monotime()
  if concurrency == 1 then
    for i = 1, N do
      local res = engine:request{ method = "POST", url = s.url .. "Users", headers = headers,
        body = body(i, tag) }
      if not res or res.status ~= 201 then failures = failures + 1 end
    end
  else
    local items = {}
    for i = 1, N do items[i] = i end
    local summary = http.run(items, function(i)
      local res = engine:request{ method = "POST", url = s.url .. "Users", headers = headers,
        body = body(i, tag) }
      if not res or res.status ~= 201 then failures = failures + 1 end
    end, { concurrency = concurrency })
    failures = failures + summary.failed
  end
  local dt = core.monotime() - t0
  engine:close()
  local landed = #s:users()
  if failures > 0 or landed ~= N then
    error(string.format("bench %s: %d failures, %d of %d users stored", tag, failures, landed, N))
  end
  return dt, server_ms()
end

-- GETs of one user with `conns` in flight (reused connections unless fresh).
local function gets(url, conns, count, fresh)
  count = count or GETS
  local engine = http.new{ concurrency = conns, headers = auth, forbid_reuse = fresh }
  local ok = 0
  local items = {}
  for i = 1, count do items[i] = i end
  local t0 = core.monotime()
  http.run(items, function()
    local res = engine:request{ url = url }
    if res and res.status == 200 then ok = ok + 1 end
  end, { concurrency = conns })
  local dt = core.monotime() - t0
  engine:close()
  assert(ok == count, "bench: " .. (count - ok) .. " GETs failed")
  return dt
end

local function wrk(url, conns)
  local cmd = string.format("wrk -t %d -c %d -d %ds -H %q %q 2>&1", math.min(2, conns), conns,
    WRK_SECONDS, "Authorization: Bearer " .. s.token, url)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  local rps = tonumber(out:match("Requests/sec:%s*([%d.]+)"))
  local non2xx = out:match("Non%-2xx or 3xx responses:%s*(%d+)")
  if not rps then return nil, "wrk failed: " .. out end
  if non2xx then return nil, "wrk got " .. non2xx .. " non-2xx responses" end
  return rps
end

local rows = {}
local function row(name, conns, requests, seconds, ratio, target, sms)
  rows[#rows + 1] = { name, conns, requests, seconds, requests / seconds, ratio, target, sms }
end
local notes = {}
local function note(fmt, ...)
  notes[#notes + 1] = string.format(fmt, ...)
  io.stdout:write(notes[#notes], "\n")
  io.stdout:flush()
end

-- The arrival rate at the server (req/s) of the requests of one method.
local function arrival_rate(method)
  local first, last, n
  for _, r in ipairs(s:stats().requests) do
    if r.method == method then
      first = first or r.t
      last, n = r.t, (n or 0) + 1
    end
  end
  return n and n > 1 and (n - 1) / ((last - first) / 1000) or 0
end

-- 300 creates through a 20 req/s limiter answering bare 429s; every one must land.
local function throttle()
  local NT, RPS = 300, 20
  s:reset()
  s:configure{ latency_ms = 0, rate_limit = { rps = RPS } }
  local engine = http.new{ concurrency = 8, headers = auth }
  local t0 = core.monotime()
  local n = 0
  local summary = http.run(function()  -- an iterator, as a CSV reader would be
    n = n + 1
    if n <= NT then return n end
  end, function(i)
    local res = engine:request{ method = "POST", url = s.url .. "Users", headers = headers,
      body = body(i, "thr") }
    assert(res and res.status == 201, "throttle bench: a create failed")
  end, { concurrency = 16 })
  local dt = core.monotime() - t0
  local st = s:stats()
  engine:close()
  s:configure{ rate_limit = false }
  local lim = st.limiter
  assert(summary.done == NT and #s:users() == NT, "throttle bench: not every create landed")
  note("throttle: %d creates through a %d req/s limiter (bare 429): %d/%d landed, %d refused,"
    .. " %.3f refused per passed (target <= 0.2), %.1f req/s at the server, %.1f s",
    NT, RPS, #s:users(), NT, lim.refused, lim.refused / lim.passed, tonumber(lim.rate) or 0, dt)
  -- the rate ceiling, measured where the requests arrive
  s:reset()
  local NR, RATE = 250, 50
  engine = http.new{ concurrency = 8, headers = auth, rate = RATE }
  local items = {}
  for i = 1, NR do items[i] = i end
  http.run(items, function()
    assert(engine:request{ url = s.url .. "ServiceProviderConfig" })
  end, { concurrency = 16 })
  engine:close()
  note("rate: %d GETs at rate = %d: %.2f req/s at the server (target 47.5-52.5)", NR, RATE,
    arrival_rate("GET"))
end

-- Agent CPU per request (this process: os.clock) for GETs of one user, with
-- no added latency and with 20 ms (where the whole window is in flight).
local function cpu()
  s:reset()
  local user = s:seed(1)[1]
  local url = s.url .. "Users/" .. user.id
  for _, latency in ipairs{ 0, LATENCY_MS } do
    s:configure{ latency_ms = latency }
    local NC = latency == 0 and math.max(2000, GETS // 2) or math.max(1000, N)
    for _, conns in ipairs{ 8, 64 } do
      local c0 = os.clock()
      local dt = gets(url, conns, NC)
      local us = (os.clock() - c0) / NC * 1e6
      note("cpu: GET, %d ms latency, window %d: %.1f us of agent CPU per request, %.0f req/s",
        latency, conns, us, NC / dt)
    end
  end
  s:configure{ latency_ms = 0 }
end

local ok, err = pcall(function()
  if part("throttle") then throttle() end
  if part("cpu") then cpu() end
  if not part("create") then return end
  s:reset()
  s:configure{ latency_ms = LATENCY_MS }
  io.stdout:write(string.format("creates: %d users, %d ms added latency ...\n", N, LATENCY_MS))
  io.stdout:flush()
  local seq, seq_ms = creates("seq", 1, true)
  row("create, sequential, new connection each", 1, N, seq, 1, "", seq_ms)
  local def, def_ms = creates("def", 8, false)
  row("create, default window", 8, N, def, seq / def, ">= 8x", def_ms)
  local w32, w32_ms = creates("w32", 32, false)
  row("create, window 32", 32, N, w32, seq / w32, ">= 25x", w32_ms)

  -- The same with GETs, which cost the server far less than creates: how
  -- the window scales when the server is not the bottleneck.
  s:reset()
  local user = s:seed(1)[1]
  local url = s.url .. "Users/" .. user.id
  local NG = math.max(100, N // 4)
  io.stdout:write(string.format("GETs: %d, %d ms added latency ...\n", NG, LATENCY_MS))
  io.stdout:flush()
  local gseq = gets(url, 1, NG, true)
  row("GET user, sequential, new connection", 1, NG, gseq, 1, "")
  for _, conns in ipairs{ 8, 32 } do
    local g = gets(url, conns, NG)
    row("GET user, window " .. conns, conns, NG, g, gseq / g, "")
  end

  s:configure{ latency_ms = 0 }
  for _, conns in ipairs{ 8, 32 } do
    io.stdout:write(string.format("GET, no latency, %d connections ...\n", conns))
    io.stdout:flush()
    s:reset_stats()
    local ours = gets(url, conns)
    s:reset_stats()
    local rps, werr = wrk(url, conns)
    local our_rps = GETS / ours
    row("GET user, scim.http", conns, GETS, ours, rps and our_rps / rps or 0, ">= 0.70 of wrk")
    if rps then
      rows[#rows + 1] = { "GET user, wrk", conns, math.floor(rps * WRK_SECONDS), WRK_SECONDS,
        rps, 1, "" }
    else
      io.stdout:write(werr, "\n")
    end
  end
end)
s:stop()
if not ok then error(err, 0) end

io.stdout:write("\n", string.format("%-40s %5s %8s %8s %9s %7s %9s  %s\n", "scenario", "conns",
  "requests", "seconds", "req/s", "ratio", "server ms", "target"))
for _, r in ipairs(rows) do
  io.stdout:write(string.format("%-40s %5d %8d %8.2f %9.0f %6.2fx %9s  %s\n", r[1], r[2], r[3],
    r[4], r[5], r[6], r[8] and string.format("%.1f", r[8]) or "", r[7]))
end
for _, n in ipairs(notes) do io.stdout:write(n, "\n") end
io.stdout:write(string.format("(%s; %s; ratio: creates vs sequential, GETs vs wrk;\n"
  .. " server ms: mean time from arrival to response at the server)\n",
  _VERSION, core.curl_version))
