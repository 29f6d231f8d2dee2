-- scim.http: the engine's policy (window, retries, Retry-After, rate, AIMD,
-- http refusal, redaction) and the coroutine scheduler, against the real
-- test SCIM server with injected faults.
local http = require "scim.http"
local core = require "scim.core"
local cjson = require "cjson"
local server = require "support.server"
local proxy = require "support.proxy"

local TOKEN = "http-spec-token-8c2e77b1"

describe("scim.http", function()
  local s, engines
  server.per_describe(_ENV, { token = TOKEN }, function(started) s = started end)

  before_each(function()
    engines = {}
  end)

  after_each(function()
    for _, e in ipairs(engines) do e:close() end
    collectgarbage()
    collectgarbage()
  end)

  -- An engine with fast backoff for tests; closed after each test.
  local function new(opts)
    opts = opts or {}
    if opts.headers == nil then opts.headers = { Authorization = "Bearer " .. TOKEN } end
    if opts.backoff_base == nil then opts.backoff_base = 0.01 end
    if opts.backoff_cap == nil then opts.backoff_cap = 0.05 end
    local e = http.new(opts)
    engines[#engines + 1] = e
    return e
  end

  local function users() return s.url .. "Users" end

  local function user_json(name)
    return cjson.encode{ schemas = { "urn:ietf:params:scim:schemas:core:2.0:User" },
      userName = name }
  end

  local SCIM = { ["Content-Type"] = "application/scim+json" }

  -- Server-side request records, optionally only those of one method.
  local function records(method)
    local out = {}
    for _, r in ipairs(s:stats().requests) do
      if not method or r.method == method then out[#out + 1] = r end
    end
    return out
  end

  describe("http.new", function()
    it("rejects unknown and ill-typed options", function()
      assert.has_error(function() http.new{ concurency = 4 } end,
        "scim.http.new: unknown option 'concurency'")
      assert.has_error(function() http.new{ concurrency = "4" } end,
        "scim.http.new: option 'concurrency' must be a number, got string")
      assert.has_error(function() http.new{ concurrency = 0 } end)
      assert.has_error(function() http.new{ retries = 1.5 } end)
      assert.has_error(function() http.new{ rate = -1 } end)
      assert.has_error(function() http.new{ headers = { Authorization = {} } } end)
    end)

    it("rejects bad request specs", function()
      local e = new()
      assert.has_error(function() e:request{ url = users(), verb = "GET" } end,
        "request: unknown option 'verb'")
      assert.has_error(function() e:request{} end, "request: option 'url' is required")
      assert.has_error(function() e:request{ url = users(), retries = 0 } end,
        "request: option 'retries' must be a positive whole number")
      -- engine:each checks each spec the same way, before sending anything
      assert.has_error(function() e:each{ { url = users() }, { url = users(), retries = 1.5 } } end,
        "request 2: option 'retries' must be a positive whole number")
      assert.has_error(function() e:each{ { url = users() }, {} } end,
        "request 2: option 'url' is required")
      assert.equals(0, e:stats().requests)
    end)
  end)

  describe("engine:request", function()
    it("returns a response table for a GET", function()
      local e = new()
      local res, err = e:request{ url = users() }
      assert.is_nil(err)
      assert.equals(200, res.status)
      assert.equals("GET", res.method)
      assert.equals(users(), res.url)
      assert.equals(1, res.attempts)
      assert.matches("application/scim%+json", res.headers["content-type"])
      assert.equals(0, cjson.decode(res.body).totalResults)
    end)

    it("watches every new socket when each request has a connection of its own", function()
      -- Sockets stay in the engine's epoll set between transfers: a new socket that got a
      -- closed one's number must be watched anew, or its request would wait for its timeout.
      local e = new{ forbid_reuse = true, timeout = 5, retries = 1 }
      local t0 = core.monotime()
      for _ = 1, 20 do assert.equals(200, assert(e:request{ url = users() }).status) end
      local summary = http.run({ 1, 2, 3, 4, 5, 6, 7, 8 }, function()
        assert.equals(200, assert(e:request{ url = users() }).status)
      end, { concurrency = 3 })
      assert.equals(8, summary.done)
      assert.is_true(core.monotime() - t0 < 4, "a request waited for its timeout")
      assert.equals(28, s:stats().total)
    end)

    it("POSTs a body and returns any status as a response", function()
      local e = new()
      local res = assert(e:request{ method = "POST", url = users(), headers = SCIM,
        body = user_json("post@example.com") })
      assert.equals(201, res.status)
      res = assert(e:request{ method = "POST", url = users(), headers = SCIM,
        body = user_json("post@example.com") })
      assert.equals(409, res.status)  -- uniqueness: data, not a failure, not retried
      assert.equals(1, res.attempts)
      res = assert(e:request{ url = users() .. "/nope" })
      assert.equals(404, res.status)
      assert.same({ requests = 3, retries = 0, throttled = 0,
        by_status = { [201] = 1, [409] = 1, [404] = 1 }, errors = {}, max_inflight = 1,
        window = 8, inflight = 0 }, e:stats())
    end)

    it("sends the default User-Agent that Meta's API requires", function()
      local v1 = server.start{ mode = "v1", token = TOKEN, require_user_agent = true }
      finally(function() v1:stop() end)
      local e = new()
      local res = assert(e:request{ url = v1.url .. "Users" })
      assert.equals(200, res.status)
      local bare = new{ user_agent = "" }
      res = assert(bare:request{ url = v1.url .. "Users" })
      assert.is_true(res.status >= 400)
    end)

    it("lets a per-request header override the engine's", function()
      local e = new()
      local res = assert(e:request{ url = users(), headers = { authorization = "Bearer wrong" } })
      assert.equals(401, res.status)
    end)

    it("works from a plain coroutine too (synchronously)", function()
      local e = new()
      local co = coroutine.wrap(function()
        local res = assert(e:request{ url = users() })
        coroutine.yield(res.status)
        return "end"
      end)
      assert.equals(200, co())
      assert.equals("end", co())
    end)
  end)

  describe("refusal before traffic", function()
    it("refuses plain http to non-loopback hosts without sending anything", function()
      local e = new()
      local t0 = core.monotime()
      for _, url in ipairs{ "http://10.255.255.1/scim/v2/Users", "http://example.com/Users",
          "http://127.0.0.1.example.com/", "http://[::2]/", "http://0.0.0.0:8080/",
          "http://167772161/", "HTTP://192.168.1.1/" } do
        local res, err, code = e:request{ url = url }
        assert.is_nil(res)
        assert.equals("HTTP_REFUSED", code, url)
        assert.matches("^GET ", err)
        assert.matches("plain http refused", err)
      end
      assert.is_true(core.monotime() - t0 < 1)  -- nothing connected, nothing resolved
      assert.equals(0, e:stats().requests)
      local _, _, code = e:request{ url = "ftp://127.0.0.1/x" }
      assert.equals("UNSUPPORTED_PROTOCOL", code)
      _, _, code = e:request{ url = "http://exa mple.com/" }
      assert.equals("URL_MALFORMAT", code)
      assert.equals(0, e:stats().requests)
      assert.equals(0, s:stats().total)
    end)

    it("checks every URL, also once another on the same server passed", function()
      local e = new()
      assert.equals(200, assert(e:request{ url = users() }).status)
      local host = s.url:match("^http://([^/]+)/")
      for url, want in pairs{
        ["http://" .. host .. ".example.com/Users"] = "URL_MALFORMAT",  -- a port then more
        ["http://" .. host .. ".example.com/Users"] = "URL_MALFORMAT",  -- a port then more
        ["http://" .. host .. "\\@example.com/Users"] = "HTTP_REFUSED",
        [s.url .. "Us ers"] = "URL_MALFORMAT",
        [s.url .. "Users\n"] = "URL_MALFORMAT",
      } do
        local res, _, code = e:request{ url = url }
        assert.is_nil(res, url)
        assert.equals(want, code, url)
      end
      assert.equals(1, e:stats().requests)
    end)

    it("allows loopback in every spelling, and others only with allow_http", function()
      assert.is_true(http.is_loopback("127.0.0.1"))
      assert.is_true(http.is_loopback("127.3.2.1"))
      assert.is_true(http.is_loopback("LOCALHOST"))
      assert.is_true(http.is_loopback("[::1]"))
      assert.is_false(http.is_loopback("127.0.0.1.nip.io"))
      assert.is_false(http.is_loopback("128.0.0.1"))
      assert.is_false(http.is_loopback("127.0.0.256"))
      assert.truthy(http.check_url("http://10.0.0.1/", true))
      assert.truthy(http.check_url("https://10.0.0.1/", false))
      -- curl's parser reads 2130706433 as 127.0.0.1, and so does the check
      assert.equals("127.0.0.1", http.check_url("http://2130706433/").host)
      local localhost = s.url:gsub("127%.0%.0%.1", "localhost")
      local res = assert(new():request{ url = localhost .. "Users" })
      assert.equals(200, res.status)
    end)
  end)

  describe("retries", function()
    it("recovers each injected fault with the right number of attempts", function()
      local cases = {
        { fault = { status = 503, count = 2 }, attempts = 3 },
        { fault = { status = 502, count = 1 }, attempts = 2 },
        { fault = { status = 504, count = 1 }, attempts = 2 },
        { fault = { status = 429, retry_after = 0, count = 2 }, attempts = 3 },
        { fault = { drop = true, count = 1 }, attempts = 2 },
        { fault = { stall_ms = 3000, count = 1 }, attempts = 2 },
      }
      for _, case in ipairs(cases) do
        s:reset()
        s:faults(case.fault)
        local e = new{ timeout = 0.4 }
        local res, err = e:request{ url = users() }
        local what = cjson.encode(case.fault)
        assert.is_nil(err, what)
        assert.equals(200, res.status, what)
        assert.equals(case.attempts, res.attempts, what)
        assert.equals(case.attempts, #records("GET"), what)
        assert.equals(case.attempts - 1, e:stats().retries, what)
      end
    end)

    it("retries a POST that got no answer: the same request again", function()
      s:faults{ drop = true, count = 1, match = "POST /Users" }
      local e = new()
      local res = assert(e:request{ method = "POST", url = users(), headers = SCIM,
        body = user_json("dropped@example.com") })
      assert.equals(201, res.status)
      assert.equals(2, res.attempts)
      assert.equals(1, #s:users())
    end)

    it("returns the last response when attempts run out", function()
      s:faults{ status = 502, count = 10 }
      local e = new{ retries = 3 }
      local res = assert(e:request{ url = users() })
      assert.equals(502, res.status)
      assert.equals(3, res.attempts)
      assert.equals(3, s:stats().total)
      res = assert(e:request{ url = users(), retries = 1 })
      assert.equals(1, res.attempts)
    end)

    it("does not retry other statuses", function()
      s:faults{ status = 500, count = 1 }
      local e = new()
      local res = assert(e:request{ url = users() })
      assert.equals(500, res.status)
      assert.equals(1, res.attempts)
      assert.equals(1, s:stats().total)
    end)

    it("gives up on transport failures with nil, message, code", function()
      local e = new{ retries = 3 }
      local res, err, code = e:request{ url = "http://127.0.0.1:1/Users" }
      assert.is_nil(res)
      assert.equals("COULDNT_CONNECT", code)
      assert.matches("^GET http://127%.0%.0%.1:1/Users: .*onnect", err)
      local st = e:stats()
      assert.equals(3, st.requests)
      assert.equals(2, st.retries)
      assert.equals(3, st.errors.COULDNT_CONNECT)
    end)

    it("waits as long as Retry-After says (seconds), measured by the server", function()
      s:faults{ status = 429, retry_after = 1, count = 1 }
      local e = new()
      local cpu0 = os.clock()
      local res = assert(e:request{ url = users() })
      assert.is_true(os.clock() - cpu0 < 0.5, "busy waiting for Retry-After")
      assert.equals(200, res.status)
      local r = records("GET")
      assert.equals(2, #r)
      local gap = r[2].t - r[1].t
      assert.is_true(gap >= 995, "retried after " .. gap .. " ms")
      assert.is_true(gap < 5000, "retried after " .. gap .. " ms")
    end)

    it("waits as long as Retry-After says (HTTP date)", function()
      s:faults{ status = 503, retry_after_date = 2, count = 1 }
      local e = new()
      local res = assert(e:request{ url = users() })
      assert.equals(200, res.status)
      local r = records("GET")
      local gap = r[2].t - r[1].t
      -- the date has 1 s resolution: 2 s from now is 1 to 2 s away
      assert.is_true(gap >= 995, "retried after " .. gap .. " ms")
      assert.is_true(gap < 6000, "retried after " .. gap .. " ms")
    end)

    it("holds every request of the engine during Retry-After", function()
      s:faults{ status = 429, retry_after = 1, count = 1, match = "GET /Users" }
      local e = new()
      http.run({ 1, 2 }, function(i)
        if i == 1 then
          assert(e:request{ url = users() })
        else
          -- starts after the 429 is in: must wait for the hold too
          while e:stats().by_status[429] == nil do
            assert(e:request{ url = s.url .. "ServiceProviderConfig" })
          end
          assert(e:request{ method = "POST", url = users(), headers = SCIM,
            body = user_json("held@example.com") })
        end
      end)
      local first429, post
      for _, r in ipairs(records()) do
        if r.status == 429 then first429 = r.t end
        if r.method == "POST" then post = r.t end
      end
      assert.is_true(post - first429 >= 995, "POST after " .. (post - first429) .. " ms")
    end)

    it("fails THROTTLED at once for a Retry-After beyond max_retry_after", function()
      s:faults{ status = 429, retry_after = 3600, count = 1 }
      local e = new{ max_retry_after = 10 }
      local before = core.walltime()
      local res, err, code, info = e:request{ url = users() }
      assert.is_nil(res)
      assert.equals("THROTTLED", code)
      assert.matches("come back in 3600 s", err)
      assert.equals(3600, info.retry_after)
      assert.equals(429, info.status)
      assert.is_true(info.retry_at >= before + 3600)
      assert.equals(1, s:stats().total)
    end)

    it("parses Retry-After in both forms", function()
      assert.equals(7, http.retry_after{ ["retry-after"] = "7" })
      assert.equals(5, http.retry_after{ ["retry-after"] = "Sun, 06 Nov 1994 08:49:42 GMT",
        date = "Sun, 06 Nov 1994 08:49:37 GMT" })
      assert.equals(0, http.retry_after{ ["retry-after"] = "Sun, 06 Nov 1994 08:49:32 GMT",
        date = "Sun, 06 Nov 1994 08:49:37 GMT" })
      assert.is_nil(http.retry_after{ ["retry-after"] = "soon" })
      assert.is_nil(http.retry_after{})
    end)
  end)

  describe("response size cap", function()
    it("fails a body over max_body cleanly, and the engine goes on", function()
      s:faults{ oversize_bytes = 100000, chunked = true, count = 1 }
      local e = new{ max_body = 4096 }
      local res, err, code = e:request{ url = users() }
      assert.is_nil(res)
      assert.equals("BODY_TOO_LARGE", code)
      assert.equals("GET " .. users() .. ": response body larger than max_body (4096 bytes)", err)
      assert.equals(200, assert(e:request{ url = users() }).status)
    end)

    it("enforces the 64 MiB default", function()
      s:faults{ oversize_bytes = 64 * 1024 * 1024 + 1, count = 1 }
      local e = new()
      local res, _, code = e:request{ url = users() }
      assert.is_nil(res)
      assert.equals("BODY_TOO_LARGE", code)
      s:faults{ oversize_bytes = 1024 * 1024, count = 1 }
      res = assert(e:request{ url = users() })
      assert.equals(1024 * 1024, #res.body)
    end)
  end)

  describe("body budget", function()
    it("retries a transfer the budget had no room for, and fails one over it alone", function()
      -- 4 x 100 kB at once through a 250 kB budget: some wait for room, all arrive
      s:faults{ oversize_bytes = 100000, chunked = true, count = 1000 }
      local e = new{ concurrency = 4, body_budget = 250000, retries = 20 }
      local sizes = {}
      http.run({ 1, 2, 3, 4 }, function(i)
        sizes[i] = #assert(e:request{ url = users() }).body
      end)
      assert.same({ 100000, 100000, 100000, 100000 }, sizes)
      local st = e:stats()
      assert.equals(st.requests - 4, st.errors.BODY_BUDGET or 0)
      s:faults{ oversize_bytes = 300000, chunked = true, count = 1 }
      local res, err, code = e:request{ url = users(), retries = 1 }
      assert.is_nil(res)
      assert.equals("BODY_TOO_LARGE", code)
      assert.matches("larger than the engine's body budget %(250000 bytes%)", err)
      assert.has_error(function() http.new{ body_budget = 0 } end)
    end)
  end)

  describe("secrets", function()
    it("never puts the token in an error or a trace line", function()
      local lines = {}
      local e = new{ trace = function(line) lines[#lines + 1] = line end, retries = 2,
        timeout = 0.3 }
      s:faults{ { status = 502, count = 1 }, { stall_ms = 2000, count = 1 } }
      local outcomes = {
        { e:request{ url = users() } },
        { e:request{ url = "http://127.0.0.1:1/Users" } },
        { e:request{ url = "http://10.1.1.1/Users" } },
        { e:request{ url = "http://user:" .. TOKEN .. "@10.1.1.1/Users" } },
        { e:request{ url = "http://user:" .. TOKEN .. "@127.0.0.1:1/Users" } },
      }
      s:faults{ stall_ms = 2000, count = 5 }
      outcomes[#outcomes + 1] = { e:request{ url = users() } }
      local seen_redacted = false
      for _, line in ipairs(lines) do
        assert.is_nil(line:find(TOKEN, 1, true), line)
        if line:find("Authorization: [redacted]", 1, true) then seen_redacted = true end
      end
      assert.is_true(seen_redacted)
      assert.is_true(#lines > 20)
      local failures = 0
      for _, o in ipairs(outcomes) do
        if o[1] == nil then
          failures = failures + 1
          assert.is_nil(o[2]:find(TOKEN, 1, true), o[2])
        end
      end
      assert.equals(6, failures)  -- the first: 502, then a stall past the timeout
    end)

    it("traces retries with the request id", function()
      local lines = {}
      local e = new{ trace = function(line) lines[#lines + 1] = line end }
      s:faults{ { status = 502, count = 1 }, { status = 503, count = 1 } }
      assert(e:request{ url = users() })
      local all = table.concat(lines, "\n")
      assert.matches("%[1%] retry 2/5 in [%d.]+ s after 502", all)
      assert.matches("%[1%] throttled %(503%): retry in [%d.]+ s, no attempt used", all)
      assert.matches("[1] > GET /scim/v2/Users HTTP/1.1", all, 1, true)
    end)

    it("keeps going when the trace function fails", function()
      local e = new{ trace = function() error("boom") end }
      local old = _G.warn
      local warned = 0
      _G.warn = function() warned = warned + 1 end  -- luacheck: ignore 122
      finally(function() _G.warn = old end)          -- luacheck: ignore 122
      assert.equals(200, assert(e:request{ url = users() }).status)
      assert.is_true(warned > 0)
    end)
  end)

  describe("window, rate and AIMD", function()
    it("keeps at most `concurrency` requests in flight", function()
      s:faults{ latency_ms = 50, count = 40 }
      local e = new{ concurrency = 4 }
      local summary = http.run(setmetatable({}, { __len = function() return 0 end }), print)
      assert.equals(0, summary.done)
      summary = http.run({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, function()
        assert.equals(200, assert(e:request{ url = users() }).status)
      end, { concurrency = 12 })
      assert.equals(12, summary.done)
      assert.equals(4, e:stats().max_inflight)
      -- the server agrees: never more than 4 overlapped
      local r = records("GET")
      for i = 1, #r do
        local overlap = 0
        for j = 1, #r do
          if r[j].t <= r[i].t and r[j].t + r[j].ms > r[i].t then overlap = overlap + 1 end
        end
        assert.is_true(overlap <= 4, "overlap " .. overlap)
      end
    end)

    it("stays under the rate ceiling", function()
      local e = new{ concurrency = 8, rate = 20 }
      local items = {}
      for i = 1, 21 do items[i] = i end
      local t0, cpu0 = core.monotime(), os.clock()
      local summary = http.run(items, function()
        assert(e:request{ url = users() })
      end)
      local wall, cpu = core.monotime() - t0, os.clock() - cpu0
      assert.is_true(cpu < 0.5 * wall, "busy waiting: " .. cpu .. " s CPU in " .. wall .. " s")
      assert.equals(21, summary.done)
      local r = records("GET")
      local span = (r[#r].t - r[1].t) / 1000
      assert.is_true(span >= 0.95, "21 requests in " .. span .. " s")
      assert.is_true(core.monotime() - t0 < 10)
      -- no half second holds more than 10 + 1 starts
      for i = 1, #r do
        local n = 0
        for j = i, #r do if r[j].t - r[i].t < 500 then n = n + 1 end end
        assert.is_true(n <= 11)
      end
    end)

    it("halves the window on a bare 429 and grows it back slowly", function()
      local e = new{ concurrency = 8 }
      s:faults{ status = 429, retry_after = 0, count = 1 }
      assert(e:request{ url = users() })
      assert.equals(8, e:stats().window)  -- a Retry-After pauses; the window stays
      assert.is_nil(e:stats().rate)
      s:faults{ status = 429, count = 1 }
      assert(e:request{ url = users() })
      assert.equals(4, e:stats().window)
      assert.is_number(e:stats().rate)
      s:faults{ status = 429, count = 1 }
      assert(e:request{ url = users() })
      assert.equals(2, e:stats().window)
      for _ = 1, 3 do assert(e:request{ url = users() }) end
      assert.equals(3, e:stats().window)
      for _ = 1, 40 do assert(e:request{ url = users() }) end
      assert.equals(8, e:stats().window)
    end)

    it("halves once for a burst of 429s from one window", function()
      s:faults{ status = 429, count = 8 }
      local e = new{ concurrency = 8 }
      local items = { 1, 2, 3, 4, 5, 6, 7, 8 }
      local summary = http.run(items, function()
        assert.equals(200, assert(e:request{ url = users() }).status)
      end)
      assert.equals(8, summary.done)
      assert.is_true(e:stats().window >= 4)
    end)
  end)

  describe("throttling", function()
    -- n creates through http.run; returns the summary and every outcome's code.
    local function creates(e, n, tag, concurrency)
      local codes = {}
      local summary = http.run(function()
        if #codes < n then
          codes[#codes + 1] = false
          return #codes
        end
      end, function(i)
        local res, _, code = e:request{ method = "POST", url = users(), headers = SCIM,
          body = user_json(tag .. i .. "@example.com") }
        codes[i] = res and res.status or code
      end, { concurrency = concurrency or 16 })
      return summary, codes
    end

    local function count(codes, what)
      local n = 0
      for _, c in ipairs(codes) do if c == what then n = n + 1 end end
      return n
    end

    it("settles under a limiter answering bare 429s: every row lands, few refusals", function()
      s:configure{ rate_limit = { rps = 50 } }
      local e = new{ concurrency = 8, retries = 1 }  -- a refusal must not use an attempt
      local summary, codes = creates(e, 120, "lim")
      assert.equals(120, summary.done)
      assert.equals(120, count(codes, 201))
      assert.equals(120, #s:users())
      local lim = s:stats{ requests = false }.limiter
      assert.equals(120, lim.passed)
      assert.is_true(lim.refused <= 0.2 * lim.passed, lim.refused .. " refused")
      assert.equals(lim.refused, e:stats().throttled)
      assert.is_number(e:stats().rate)
    end)

    it("retries 429 and 503 with Retry-After without using attempts", function()
      s:faults{ { status = 429, retry_after = 0, fraction = 0.3, match = "POST /Users" },
        { status = 503, retry_after = 0, fraction = 0.3, match = "POST /Users" } }
      local e = new{ concurrency = 8, retries = 1 }
      local summary, codes = creates(e, 60, "ra")
      assert.equals(60, count(codes, 201))
      assert.equals(60, summary.done)
      local st = e:stats()
      assert.is_true(st.throttled > 0)
      assert.equals(st.throttled, (st.by_status[429] or 0) + (st.by_status[503] or 0))
      assert.equals(8, st.window)  -- a Retry-After is obeyed, not punished
    end)

    it("a 503's Retry-After delays its own request only", function()
      s:faults{ status = 503, retry_after = 2, count = 1, match = "POST /Users" }
      local e = new{ concurrency = 1 }
      local order = {}
      http.run({ 1, 2, 3, 4, 5 }, function(i)
        if i == 1 then
          assert.equals(201, assert(e:request{ method = "POST", url = users(), headers = SCIM,
            body = user_json("sleeper@example.com") }).status)
        else  -- queued behind the POST
          assert.equals(200, assert(e:request{ url = users() }).status)
        end
        order[#order + 1] = i
      end)
      -- the sleeper held no in-flight slot of the window of 1: the GETs went on
      assert.same({ 2, 3, 4, 5, 1 }, order)
    end)

    it("fails THROTTLED at once when Retry-After ends past the deadline, and holds the rest",
      function()
      s:faults{ status = 429, retry_after = 30, count = 1, match = "POST /Users" }
      local e = new{ concurrency = 1, deadline = 5 }
      local summary, codes = creates(e, 10, "late", 4)
      assert.equals(10, summary.done)
      assert.equals(10, count(codes, "THROTTLED"))
      -- only the first was sent: the others would have ended inside the engine's pause
      assert.equals(1, s:stats().total)
      local st = e:stats()
      assert.equals(10, st.errors.THROTTLED)
      assert.is_true(st.retry_at > core.walltime() + 20)
      -- a request whose own deadline covers the pause is kept (and stopped here)
      local res, err, code
      http.run({ 1, 2 }, function(i)
        if i == 1 then
          res, err, code = e:request{ url = users(), deadline = 60 }
        else
          e:stop("test over")
        end
      end)
      assert.is_nil(res)
      assert.equals("STOPPED", code)
      assert.matches("engine stopped %(test over%)", err)
      assert.equals(1, s:stats().total)
    end)

    it("gives up THROTTLED when bare refusals outlast the deadline", function()
      s:faults{ status = 503, count = 1000 }
      local e = new{ deadline = 1 }  -- backoff of at most 0.05 s: dozens of tries
      local res, err, code, info = e:request{ url = users() }
      assert.is_nil(res)
      assert.equals("THROTTLED", code)
      assert.matches("until the request's deadline", err)
      assert.equals(503, info.status)
      assert.is_nil(info.retry_at)
      assert.is_true(s:stats().total > 5)  -- retried without using the 5 attempts
    end)

    it("engine:stop fails what waits, lets what is in flight finish, refuses new work", function()
      s:faults{ latency_ms = 300, count = 2, match = "POST /Users" }
      local e = new{ concurrency = 2 }
      local summary, codes = creates(e, 6, "stop", 6)
      assert.equals(6, summary.done)
      assert.equals(6, count(codes, 201))
      s:reset()
      s:faults{ latency_ms = 300, count = 2, match = "POST /Users" }
      codes = {}
      http.run({ 1, 2, 3, 4, 5, 6, 7 }, function(i)
        if i == 7 then  -- another engine's requests let the first two start
          local f = new()
          for _ = 1, 50 do
            if e:stats().inflight == 2 then break end
            assert(f:request{ url = s.url .. "ServiceProviderConfig" })
          end
          e:stop()
          return
        end
        local res, _, code = e:request{ method = "POST", url = users(), headers = SCIM,
          body = user_json("stop2-" .. i .. "@example.com") }
        codes[i] = res and res.status or code
      end)
      assert.equals(2, count(codes, 201))
      assert.equals(4, count(codes, "STOPPED"))
      assert.equals(2, #s:users())
      local _, err, code = e:request{ url = users() }
      assert.equals("STOPPED", code)
      assert.matches("not started: engine stopped %(stopped%)", err)
      assert.equals("stopped", e:stats().stopped)
    end)
  end)

  describe("engine:each", function()
    it("returns every request as it finishes, through the window", function()
      s:faults{ latency_ms = 30, count = 4, match = "GET /Users" }
      local e = new{ concurrency = 4 }
      local specs = {}
      for i = 1, 12 do specs[i] = { url = users() .. "?count=" .. i } end
      specs[6] = { url = "http://10.9.9.9/Users" }
      specs[9] = { method = "POST", url = users(), headers = SCIM, body = user_json("each@x.org") }
      local order, statuses = {}, {}
      for i, res, err, code in e:each(specs) do
        order[#order + 1] = i
        statuses[i] = res and res.status or code
        if i == 6 then assert.matches("plain http refused", err) end
      end
      assert.equals(12, #order)
      for i = 1, 12 do
        local want = i == 6 and "HTTP_REFUSED" or (i == 9 and 201 or 200)
        assert.equals(want, statuses[i], "request " .. i)
      end
      assert.equals(6, order[1])  -- refused at once: first out
      assert.is_true(e:stats().max_inflight <= 4)
      assert.equals(11, s:stats().total)
    end)

    it("cancels what is left when the loop is left early", function()
      s:faults{ stall_ms = 1500, stall_then = "serve", count = 100 }
      local e = new{ concurrency = 2 }
      local specs = {}
      for i = 1, 10 do specs[i] = { url = users() } end
      specs[1] = { url = "http://10.9.9.9/" }  -- finishes at once
      local t0 = core.monotime()
      local seen = 0
      for i in e:each(specs) do
        seen = seen + 1
        assert.equals(1, i)
        if seen == 1 then break end
      end
      assert.is_true(core.monotime() - t0 < 1)
      local st = e:stats()
      assert.equals(0, st.inflight)
      assert.is_true(st.requests <= 2)
      assert.equals(200, assert(e:request{ url = s.url .. "ServiceProviderConfig" }).status)
    end)

    it("yields to http.run inside a scheduled coroutine", function()
      local e = new{ concurrency = 4 }
      local got = {}
      local summary = http.run({ "a", "b" }, function(tag)
        local specs = {}
        for i = 1, 5 do specs[i] = { url = users() } end
        local n = 0
        for _, res in e:each(specs) do
          assert.equals(200, res.status)
          n = n + 1
        end
        got[tag] = n
      end)
      assert.equals(2, summary.done)
      assert.same({ a = 5, b = 5 }, got)
      assert.has_error(function() e:each{ { verb = "GET" } } end,
        "request 1: unknown option 'verb'")
    end)
  end)

  describe("TLS and proxies", function()
    -- A throwaway HTTPS server (node's http2 module, HTTP/1.1 allowed) with a
    -- self-signed certificate for 127.0.0.1 and scim.localhost (a name curl
    -- resolves to loopback itself, without DNS), made with the openssl tool.
    local dir, pipe, base, ca

    local TLS_SERVER = [[
const http2 = require("http2"), fs = require("fs"), zlib = require("zlib");
let sessions = 0;
const srv = http2.createSecureServer({ key: fs.readFileSync(process.argv[2]),
  cert: fs.readFileSync(process.argv[3]), allowHTTP1: true }, (req, res) => {
  const bomb = req.url.match(/^\/gzip\/(\d+)$/);
  if (bomb) {  // n bytes of JSON, gzip-compressed when the client accepts it
    const body = JSON.stringify({ pad: "x".repeat(Number(bomb[1]) - 10) });
    const gz = /gzip/.test(req.headers["accept-encoding"] || "");
    res.writeHead(200, { "content-type": "application/json",
      ...(gz ? { "content-encoding": "gzip" } : {}) });
    res.end(gz ? zlib.gzipSync(body) : body);
    return;
  }
  setTimeout(() => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ version: req.httpVersion, sessions }));
  }, 50);
});
srv.on("session", () => { sessions += 1; });
srv.listen(0, "127.0.0.1", () => console.log(srv.address().port));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
]]

    -- tools never run under `make asan`'s LD_PRELOAD
    local CLEAN = server.CLEAN_ENV or ""

    setup(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. dir))
      local f = assert(io.open(dir .. "/tls.js", "w"))
      f:write(TLS_SERVER)
      f:close()
      ca = dir .. "/cert.pem"
      assert(os.execute(CLEAN .. "openssl req -x509 -newkey rsa:2048 -nodes -days 1"
        .. " -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:scim.localhost"
        .. " -keyout " .. dir .. "/key.pem -out " .. ca .. " >/dev/null 2>&1"))
      pipe = assert(io.popen("exec " .. CLEAN .. "node " .. dir .. "/tls.js " .. dir
        .. "/key.pem " .. ca .. " > " .. dir .. "/port 2> " .. dir .. "/log", "w"))
      os.execute("i=0; while [ $i -lt 500 ] && ! [ -s " .. dir .. "/port ]; do sleep 0.02;"
        .. " i=$((i+1)); done")
      local pf = assert(io.open(dir .. "/port"))
      local port = pf:read("l")
      pf:close()
      base = "https://127.0.0.1:" .. assert(tonumber(port), "TLS server did not start")
    end)

    teardown(function()
      if pipe then pipe:close() end
      if dir then os.execute("rm -rf " .. dir) end
    end)

    it("verifies the certificate unless told otherwise, and never retries that", function()
      local e = new()
      local res, err, code = e:request{ url = base .. "/" }
      assert.is_nil(res)
      assert.equals("PEER_FAILED_VERIFICATION", code)
      assert.matches("^GET https://127%.0%.0%.1:%d+/: .*certificate", err)
      assert.equals(1, e:stats().requests)
      res = assert(new{ ca_file = ca }:request{ url = base .. "/" })
      assert.equals(200, res.status)
      -- a trusted certificate for other names: the host name is checked too
      local other = base:gsub("127%.0%.0%.1", "localhost")
      res, err, code = new{ ca_file = ca }:request{ url = other .. "/" }
      assert.is_nil(res)
      assert.equals("PEER_FAILED_VERIFICATION", code)
      assert.matches("'localhost'", err)
      res = assert(new{ insecure = true }:request{ url = base .. "/" })
      assert.equals(200, res.status)
      res = assert(new{ insecure = true }:request{ url = other .. "/" })
      assert.equals(200, res.status)
    end)

    it("decodes compressed bodies and caps their decoded size", function()
      local e = new{ ca_file = ca, max_body = 100000 }
      local res = assert(e:request{ url = base .. "/gzip/50000" })
      assert.equals("gzip", res.headers["content-encoding"])
      assert.equals(50000, #res.body)
      assert.equals(49990, #cjson.decode(res.body).pad)
      -- 1 MB that compresses to about 1 KB: the cap counts what it decodes to
      local _, err, code = e:request{ url = base .. "/gzip/1000000" }
      assert.equals("BODY_TOO_LARGE", code)
      assert.matches("max_body %(100000 bytes%)", err)
    end)

    it("speaks HTTP/2 when offered, multiplexing on one connection", function()
      local e = new{ ca_file = ca, concurrency = 8 }
      local first = cjson.decode(assert(e:request{ url = base .. "/" }).body)
      assert.equals("2.0", first.version)
      local specs = {}
      for i = 1, 8 do specs[i] = { url = base .. "/" .. i } end
      for _, res in e:each(specs) do
        assert.equals(200, res.status)
        local doc = cjson.decode(res.body)
        assert.equals("2.0", doc.version)
        assert.equals(first.sessions, doc.sessions)  -- no new connection
      end
      assert.equals(8, e:stats().max_inflight)
    end)

    describe("proxies", function()
      -- tests/support/proxy.js: forwards plain http, tunnels CONNECT, counts
      -- both, and reaches every target (127.0.0.1, *.localhost) on loopback.
      local p, refusing, tls_port

      setup(function()
        p = proxy.start()
        refusing = proxy.start{ refuse = true }
        tls_port = tonumber(base:match(":(%d+)$"))
      end)

      teardown(function()
        if p then p:stop() end
        if refusing then refusing:stop() end
      end)

      before_each(function()
        p:reset()
        refusing:reset()
      end)

      local function targets(st)
        local out = {}
        for i, r in ipairs(st.requests) do out[i] = r.method .. " " .. r.target end
        return out
      end

      it("sends plain http through the `proxy` option, loopback included", function()
        local e = new{ proxy = p.url }
        for _ = 1, 3 do assert.equals(200, assert(e:request{ url = users() }).status) end
        local st = p:stats()
        assert.equals(3, st.forwarded)
        assert.same({ "GET " .. users(), "GET " .. users(), "GET " .. users() }, targets(st))
        assert.equals(3, #records("GET"))  -- and each reached the server once
        assert.equals(200, assert(new():request{ url = users() }).status)
        assert.equals(3, p:stats().forwarded)  -- no option, no proxy
        assert.equals(4, #records("GET"))
      end)

      it("tunnels https through the `proxy` option, HTTP/2 multiplexed inside", function()
        local e = new{ proxy = p.url, ca_file = ca, concurrency = 4 }
        local first = cjson.decode(assert(e:request{ url = base .. "/" }).body)
        assert.equals("2.0", first.version)
        local specs = {}
        for i = 1, 4 do specs[i] = { url = base .. "/" .. i } end
        for _, res in e:each(specs) do
          assert.equals(first.sessions, cjson.decode(res.body).sessions)
        end
        local st = p:stats()
        assert.equals(1, st.connects)  -- one tunnel carried all five
        assert.same({ "CONNECT 127.0.0.1:" .. tls_port }, targets(st))
        assert.equals(4, e:stats().max_inflight)
      end)

      -- Runs one child lua5.4 with `env` set (libcurl reads proxy variables
      -- from the process environment, which Lua cannot change): the child
      -- GETs each URL once and returns `{ status=, code= }` per URL.
      local CHILD = [=[
local http, cjson = require "scim.http", require "cjson"
local e = http.new{ headers = { Authorization = "Bearer " .. arg[1] }, ca_file = arg[2],
  allow_http = true, retries = 1, proxy = os.getenv("CHILD_PROXY") }
local out = {}
for i = 3, #arg do
  local res, err, code = e:request{ url = arg[i] }
  out[#out + 1] = { status = res and res.status or 0, code = code or "", err = err or "" }
end
e:close()
io.write(cjson.encode(out))
]=]
      local PROXY_VARS = { "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
        "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY" }
      local function child(env, urls)
        local script = dir .. "/child.lua"
        local f = assert(io.open(script, "w"))
        f:write(CHILD)
        f:close()
        -- the sanitizer preload is kept: the child loads the same build of the module
        local cmd = { "env" }
        for _, v in ipairs(PROXY_VARS) do cmd[#cmd + 1] = "-u " .. v end
        for k, v in pairs(env) do cmd[#cmd + 1] = k .. "='" .. v .. "'" end
        cmd[#cmd + 1] = "LUA_PATH_5_4='" .. package.path .. "'"
        cmd[#cmd + 1] = "LUA_CPATH_5_4='" .. package.cpath .. "'"
        cmd[#cmd + 1] = "lua5.4 " .. script .. " " .. TOKEN .. " " .. ca
        for _, u in ipairs(urls) do cmd[#cmd + 1] = "'" .. u .. "'" end
        local ph = assert(io.popen(table.concat(cmd, " ") .. " 2>&1"))
        local text = ph:read("a")
        ph:close()
        local ok, doc = pcall(cjson.decode, text)
        assert(ok, "child failed: " .. text)
        assert.is_nil(text:find(TOKEN, 1, true))
        return doc
      end

      it("bypasses environment proxies for loopback URLs", function()
        local all = { http_proxy = p.url, HTTP_PROXY = p.url, HTTPS_PROXY = p.url,
          ALL_PROXY = p.url }
        local got = child(all, { users(), base .. "/" })
        assert.same({ 200, 200 }, { got[1].status, got[2].status })
        local st = p:stats()
        assert.same({ 0, 0 }, { st.forwarded, st.connects })
        assert.equals(1, #records("GET"))
      end)

      it("uses http_proxy and HTTPS_PROXY for other hosts, as libcurl does", function()
        -- scim.localhost is not loopback to check_url, so it takes the environment's proxy
        local plain = "http://scim.localhost:" .. s.port .. "/scim/v2/Users"
        local secure = "https://scim.localhost:" .. tls_port .. "/"
        local got = child({ http_proxy = p.url, HTTPS_PROXY = p.url }, { plain, secure })
        assert.same({ 200, 200 }, { got[1].status, got[2].status })
        local st = p:stats()
        assert.same({ "GET " .. plain, "CONNECT scim.localhost:" .. tls_port }, targets(st))
        assert.equals(1, #records("GET"))
      end)

      it("ignores upper-case HTTP_PROXY (libcurl's CGI safeguard)", function()
        local plain = "http://scim.localhost:" .. s.port .. "/scim/v2/Users"
        local got = child({ HTTP_PROXY = p.url }, { plain })
        assert.equals(200, got[1].status)
        assert.same({}, p:stats().requests)
      end)

      it("honours no_proxy", function()
        local plain = "http://scim.localhost:" .. s.port .. "/scim/v2/Users"
        local secure = "https://scim.localhost:" .. tls_port .. "/"
        local got = child({ http_proxy = p.url, HTTPS_PROXY = p.url, no_proxy = "localhost" },
          { plain, secure })
        assert.same({ 200, 200 }, { got[1].status, got[2].status })
        assert.same({}, p:stats().requests)
      end)

      it("lets the `proxy` option win over the environment", function()
        local secure = "https://scim.localhost:" .. tls_port .. "/"
        local dead = "http://127.0.0.1:1"
        local got = child({ HTTPS_PROXY = dead }, { secure })
        assert.equals("COULDNT_CONNECT", got[1].code)  -- the variable is used...
        got = child({ HTTPS_PROXY = dead, http_proxy = dead, CHILD_PROXY = p.url },
          { secure, users() })
        assert.same({ 200, 200 }, { got[1].status, got[2].status })  -- ...until the option
        assert.same({ "CONNECT scim.localhost:" .. tls_port, "GET " .. users() },
          targets(p:stats()))
        -- except that libcurl still applies no_proxy to the option's proxy
        p:reset()
        got = child({ no_proxy = "localhost", CHILD_PROXY = p.url }, { secure, users() })
        assert.same({ 200, 200 }, { got[1].status, got[2].status })
        assert.same({ "GET " .. users() }, targets(p:stats()))  -- 127.0.0.1 is not "localhost"
      end)

      it("fails with COULDNT_CONNECT, retried, when the proxy is down", function()
        local dead = proxy.start()
        local url = dead.url
        dead:stop()  -- its port is now closed
        local e = new{ proxy = url, retries = 2 }
        local res, err, code = e:request{ url = users() }
        assert.is_nil(res)
        assert.equals("COULDNT_CONNECT", code)
        assert.matches("^GET " .. users():gsub("%p", "%%%0") .. ": Failed to connect to "
          .. "127%.0%.0%.1 port " .. url:match("%d+$"), err)
        assert.is_nil(err:find(TOKEN, 1, true))
        assert.equals(2, e:stats().requests)
        assert.same({}, records())
      end)

      it("fails with PROXY, not retried, when the proxy refuses a tunnel", function()
        local lines = {}
        local e = new{ proxy = refusing.url, ca_file = ca,
          trace = function(line) lines[#lines + 1] = line end }
        local res, err, code = e:request{ url = base .. "/" }
        assert.is_nil(res)
        assert.equals("PROXY", code)
        assert.equals("GET " .. base .. "/: CONNECT tunnel failed, response 403", err)
        assert.equals(1, e:stats().requests)
        assert.equals(1, refusing:stats().refused)
        local all = table.concat(lines, "\n")
        assert.matches("CONNECT 127%.0%.0%.1:" .. tls_port, all)
        assert.is_nil(all:find(TOKEN, 1, true))
        -- plain http has no tunnel: the proxy's 403 is the response, like any status
        res = assert(new{ proxy = refusing.url }:request{ url = users() })
        assert.equals(403, res.status)
        assert.equals(2, refusing:stats().refused)
        assert.same({}, records())
      end)

      it("keeps proxy credentials out of traces and errors", function()
        local lines = {}
        local user_url = p.url:gsub("^http://", "http://agent:pr0xy-s3cret@")
        local e = new{ proxy = user_url, ca_file = ca,
          trace = function(line) lines[#lines + 1] = line end }
        assert.equals(200, assert(e:request{ url = base .. "/" }).status)
        assert.equals(200, assert(e:request{ url = users() }).status)
        local st = p:stats()
        assert.same({ true, true }, { st.requests[1].proxy_auth, st.requests[2].proxy_auth })
        local all = table.concat(lines, "\n")
        assert.matches("Proxy%-Authorization: %[redacted%]", all)
        assert.is_nil(all:find("pr0xy-s3cret", 1, true))
        assert.is_nil(all:find("YWdlbnQ6cHIweHktczNjcmV0", 1, true))
        local _, err, code = new{ proxy = "http://agent:pr0xy-s3cret@127.0.0.1:1", retries = 1 }
          :request{ url = users() }
        assert.equals("COULDNT_CONNECT", code)
        assert.is_nil(err:find("pr0xy-s3cret", 1, true))
      end)
    end)
  end)

  describe("http.run", function()
    it("runs 200 concurrent creates, each landing exactly once", function()
      s:configure{ latency_ms = 20 }
      finally(function() s:configure{ latency_ms = 0 } end)
      local e = new{ concurrency = 32 }
      local items = {}
      for i = 1, 200 do items[i] = string.format("user%03d@example.com", i) end
      local summary = http.run(items, function(name)
        local res = assert(e:request{ method = "POST", url = users(), headers = SCIM,
          body = user_json(name) })
        assert.equals(201, res.status)
      end, { concurrency = 200 })
      assert.same({ done = 200, failed = 0, started = 200, errors = {} }, summary)
      assert.equals(200, s:stats().by_method.POST)
      local names = {}
      for _, u in ipairs(s:users()) do
        assert.is_nil(names[u.userName])
        names[u.userName] = true
      end
      for _, name in ipairs(items) do assert.is_true(names[name], name) end
      assert.equals(32, e:stats().max_inflight)
    end)

    it("lets an item sleeping on a Retry-After hold no place: the next items run", function()
      s:faults{ status = 429, retry_after = 1, count = 1, match = "GET /ServiceProviderConfig" }
      local e = new()
      local finished = {}
      local summary = http.run({ 1, 2, 3, 4, 5, 6 }, function(i)
        -- item 3 is answered 429 (after two passed answers: no engine-wide hold)
        local url = i == 3 and s.url .. "ServiceProviderConfig" or users()
        assert.equals(200, assert(e:request{ url = url }).status)
        finished[#finished + 1] = i
      end, { concurrency = 1 })
      assert.equals(6, summary.done)
      -- items 4 to 6 ran while item 3 waited, one at a time
      assert.same({ 1, 2, 4, 5, 6, 3 }, finished)
      assert.equals(1, e:stats().max_inflight)
    end)

    it("fails only the item whose fn raises, and closes its variables", function()
      local closed = 0
      local summary = http.run({ "a", "b", "c" }, function(item, index)
        local _ <close> = setmetatable({}, { __close = function() closed = closed + 1 end })
        if item == "b" then error({ reason = "bad", index = index }) end
      end)
      assert.equals(2, summary.done)
      assert.equals(1, summary.failed)
      assert.equals(2, summary.errors[1].index)
      assert.equals("b", summary.errors[1].item)
      assert.same({ reason = "bad", index = 2 }, summary.errors[1].error)
      assert.equals(3, closed)
    end)

    it("takes items from an iterator and passes index", function()
      local e = new()
      local n = 0
      local seen = {}
      local summary = http.run(function()
        n = n + 1
        if n <= 5 then return "item" .. n end
      end, function(item, index)
        assert(e:request{ url = users() })
        seen[index] = item
      end, { concurrency = 2 })
      assert.equals(5, summary.done)
      assert.same({ "item1", "item2", "item3", "item4", "item5" }, seen)
    end)

    it("re-raises an iterator error after the started items finish", function()
      local e = new()
      local finished = 0
      local n = 0
      assert.has_error(function()
        http.run(function()
          n = n + 1
          if n == 3 then error("row 3: bad CSV", 0) end
          return n
        end, function()
          assert(e:request{ url = users() })
          finished = finished + 1
        end)
      end, "row 3: bad CSV")
      assert.equals(2, finished)
    end)

    it("limits fns in progress to opts.concurrency", function()
      s:faults{ latency_ms = 20, count = 30 }
      local e = new{ concurrency = 16 }
      local now, peak = 0, 0
      local items = {}
      for i = 1, 30 do items[i] = i end
      http.run(items, function()
        now = now + 1
        if now > peak then peak = now end
        assert(e:request{ url = users() })
        now = now - 1
      end, { concurrency = 3 })
      assert.equals(3, peak)
    end)

    it("drives several engines at once", function()
      s:faults{ latency_ms = 30, count = 40 }
      local a, b = new{ concurrency = 4 }, new{ concurrency = 4 }
      local items = {}
      for i = 1, 16 do items[i] = i end
      local t0 = core.monotime()
      local summary = http.run(items, function(i)
        local e = (i % 2 == 0) and a or b
        assert.equals(200, assert(e:request{ url = users() }).status)
      end)
      assert.equals(16, summary.done)
      assert.equals(8, a:stats().requests)
      assert.equals(8, b:stats().requests)
      assert.is_true(core.monotime() - t0 < 5)
    end)

    it("waits in place where fn cannot yield (inside a C call)", function()
      local e = new()
      local statuses = {}
      local summary = http.run({ 1, 2 }, function(i)
        -- gsub's callback runs inside a C function: a yield there would fail
        local out = ("x"):gsub("x", function()
          return tostring(assert(e:request{ url = users() }).status)
        end)
        statuses[i] = out
      end)
      assert.same({ done = 2, failed = 0, started = 2, errors = {} }, summary)
      assert.same({ "200", "200" }, statuses)
    end)

    it("stops starting items on scheduler:stop, from fn or on_error", function()
      local e = new{ concurrency = 2 }
      local seen = {}
      local summary = http.run({ 1, 2, 3, 4, 5, 6, 7, 8 }, function(i, index, run)
        assert.equals(i, index)
        seen[#seen + 1] = i
        assert(e:request{ url = users() })
        if i == 3 then run:stop("enough") end
      end, { concurrency = 2 })
      assert.equals("enough", summary.stopped)
      assert.equals(summary.started, summary.done)
      assert.is_true(summary.started <= 4, summary.started .. " started")
      assert.equals(summary.started, s:stats().total)
      -- on_error sees fn's error and may stop the run
      local errors = {}
      summary = http.run({ 1, 2, 3, 4, 5, 6 }, function(i)
        assert(e:request{ url = users() })
        if i == 2 then error("row " .. i .. " is bad", 0) end
      end, { concurrency = 1, on_error = function(err, item, index, run)
        errors[#errors + 1] = { err, item, index }
        run:stop("error")
      end })
      assert.same({ { "row 2 is bad", 2, 2 } }, errors)
      assert.same({ done = 1, failed = 1, started = 2, stopped = "error" },
        { done = summary.done, failed = summary.failed, started = summary.started,
          stopped = summary.stopped })
      -- a scheduler made up front: its own handle to stop
      local sched = http.scheduler{ concurrency = 4 }
      local n = 0
      summary = sched:run(function() n = n + 1 return n end, function()
        assert(e:request{ url = users() })
        if n >= 10 then sched:stop() end
      end)
      assert.equals("stopped", summary.stopped)
      assert.equals(summary.started, summary.done)
      assert.is_true(summary.started >= 10 and summary.started <= 14)
      assert.has_error(function() http.scheduler{ concurency = 2 } end,
        "scim.http.run: unknown option 'concurency'")
    end)

    it("treats a stray yield in fn as that item's failure", function()
      local summary = http.run({ 1, 2 }, function(i)
        if i == 1 then coroutine.yield("not a request") end
      end)
      assert.equals(1, summary.done)
      assert.equals(1, summary.failed)
      assert.matches("yielded outside scim.http", summary.errors[1].error)
    end)

    it("supports nested runs and synchronous requests inside fn", function()
      local e = new()
      local inner_done = 0
      local summary = http.run({ 1, 2 }, function()
        local sub = http.run({ 1, 2, 3 }, function()
          assert(e:request{ url = users() })
        end)
        inner_done = inner_done + sub.done
        -- a coroutine of fn's own: its request runs synchronously
        local co = coroutine.wrap(function() return assert(e:request{ url = users() }).status end)
        assert.equals(200, co())
      end)
      assert.equals(2, summary.done)
      assert.equals(6, inner_done)
      assert.equals(8, s:stats().by_method.GET)
    end)

    it("fails waiting requests with CLOSED when their engine closes", function()
      s:faults{ stall_ms = 1500, stall_then = "serve", count = 3 }
      local e = new()
      local results = {}
      local summary = http.run({ 1, 2, 3, 4 }, function(i)
        if i == 4 then
          e:close()
          return
        end
        local res, _, code = e:request{ url = users() }
        results[i] = res and res.status or code
      end)
      assert.equals(4, summary.done)
      assert.same({ "CLOSED", "CLOSED", "CLOSED" }, results)
      assert.has_error(function() e:request{ url = users() } end,
        "attempt to use a closed scim.http.engine")
    end)
  end)
end)
