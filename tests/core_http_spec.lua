-- scim.core's libcurl multi binding (csrc/lhttp.c), used directly: object
-- lifetimes, closing, anchoring, caps and the redacting trace. The engine's
-- policy is in tests/http_spec.lua.
local core = require "scim.core"
local server = require "support.server"
local proxy = require "support.proxy"

local TOKEN = "core-spec-token-5d1f0a"

describe("scim.core HTTP binding", function()
  local s
  server.per_describe(_ENV, { token = TOKEN }, function(started) s = started end)

  after_each(function()
    collectgarbage()
    collectgarbage()
  end)

  -- Drives multi until one transfer is done; bounded by `limit` seconds.
  local function wait_done(multi, limit)
    local deadline = core.monotime() + (limit or 10)
    while core.monotime() < deadline do
      multi:perform()
      local req, ok, msg, code = multi:next_done()
      if req then return req, ok, msg, code end
      multi:poll(0.05)
    end
    error("transfer did not finish in time")
  end

  local function auth()
    return { Authorization = "Bearer " .. TOKEN }
  end

  describe("core.request", function()
    it("rejects unknown options, a missing url and bad headers", function()
      assert.has_error(function() core.request{ url = s.url, colour = "red" } end,
        "request: unknown option 'colour'")
      assert.has_error(function() core.request{ method = "GET" } end,
        "request: option 'url' is required")
      assert.has_error(function()
        core.request{ url = s.url, headers = { ["Bad Name"] = "x" } }
      end, "bad header name 'Bad Name'")
      assert.has_error(function()
        core.request{ url = s.url, timeout = -1 }
      end)
      assert.has_error(function()
        core.request{ url = s.url, method = "GET /x" }
      end)
    end)

    it("refuses header injection without echoing the value", function()
      local ok, err = pcall(core.request, {
        url = s.url, headers = { Authorization = "Bearer " .. TOKEN .. "\r\nX-Evil: 1" } })
      assert.is_false(ok)
      assert.matches("bad value for header 'Authorization'", err, 1, true)
      assert.is_nil(err:find(TOKEN, 1, true))
    end)

    it("closes idempotently, and a closed request raises on use", function()
      local req = core.request{ url = s.url .. "Users" }
      assert.matches("^scim.request %(", tostring(req))
      req:close()
      req:close()
      assert.equals("scim.request (closed)", tostring(req))
      assert.has_error(function() req:status() end, "attempt to use a closed scim.request")
      assert.has_error(function() req:body() end, "attempt to use a closed scim.request")
    end)

    it("supports to-be-closed variables", function()
      local m
      do
        local multi <close> = core.multi()
        m = multi
        local req <close> = core.request{ url = s.url .. "Users" }
        assert.is_true(multi:add(req))
      end
      assert.equals("scim.multi (closed)", tostring(m))
      assert.has_error(function() m:perform() end, "attempt to use a closed scim.multi")
    end)
  end)

  describe("core.multi", function()
    it("rejects unknown options", function()
      assert.has_error(function() core.multi{ pipelining = 1 } end,
        "multi: unknown option 'pipelining'")
      assert.has_error(function() core.multi{ max_connects = -1 } end)
    end)

    it("performs a transfer: status, lower-cased headers, body", function()
      local multi <close> = core.multi{ max_connects = 4, max_host_connections = 2 }
      local req <close> = core.request{ url = s.url .. "Users", headers = auth(),
        user_agent = "core-spec/1" }
      assert.is_true(multi:add(req))
      assert.equals(1, multi:count())
      local done, ok = wait_done(multi)
      assert.equals(req, done)
      assert.is_true(ok)
      assert.equals(0, multi:count())
      assert.equals(200, req:status())
      local h = req:headers()
      assert.matches("application/scim%+json", h["content-type"])
      assert.is_nil(h["Content-Type"])
      assert.matches('"totalResults":0', req:body())
      local info = req:info()
      assert.equals(1, info.num_connects)
      assert.equals("1.1", info.http_version)
      assert.equals("127.0.0.1", info.primary_ip)
      assert.is_nil(multi:next_done())
    end)

    it("sends a body with POST and any method by name", function()
      local multi <close> = core.multi()
      local body = '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],'
        .. '"userName":"body@example.com"}'
      local h = auth()
      h["Content-Type"] = "application/scim+json"
      local req <close> = core.request{ method = "POST", url = s.url .. "Users", headers = h,
        body = body }
      multi:add(req)
      wait_done(multi)
      assert.equals(201, req:status())
      local id = req:body():match('"id":"([^"]+)"')
      assert.truthy(id)
      local del <close> = core.request{ method = "DELETE", url = s.url .. "Users/" .. id,
        headers = auth() }
      multi:add(del)
      wait_done(multi)
      assert.equals(204, del:status())
      assert.equals("", del:body())
    end)

    it("reuses the connection for the next request", function()
      local multi <close> = core.multi()
      local a <close> = core.request{ url = s.url .. "Users", headers = auth() }
      multi:add(a)
      wait_done(multi)
      local b <close> = core.request{ url = s.url .. "Users", headers = auth() }
      multi:add(b)
      wait_done(multi)
      assert.equals(200, b:status())
      assert.equals(0, b:info().num_connects)
    end)

    it("sends a finished request again when it is added again", function()
      local multi <close> = core.multi()
      local req <close> = core.request{ url = s.url .. "Users", headers = auth() }
      multi:add(req)
      wait_done(multi)
      multi:add(req)
      wait_done(multi)
      assert.equals(200, req:status())
      assert.equals(2, s:stats().by_method.GET)
    end)

    it("refuses to add a request twice", function()
      local multi <close> = core.multi()
      local req <close> = core.request{ url = s.url .. "Users" }
      multi:add(req)
      assert.has_error(function() multi:add(req) end)
      local other <close> = core.multi()
      assert.has_error(function() other:add(req) end)
    end)

    it("reports transport failures as req, nil, message, code", function()
      local multi <close> = core.multi()
      local req <close> = core.request{ url = "http://127.0.0.1:1/", connect_timeout = 5 }
      multi:add(req)
      local done, ok, msg, code = wait_done(multi)
      assert.equals(req, done)
      assert.is_nil(ok)
      assert.equals("COULDNT_CONNECT", code)
      assert.matches("onnect", msg)
    end)

    it("reports a proxy's refused CONNECT as PROXY, other failures by name", function()
      local refusing <close> = proxy.start{ refuse = true }
      local multi <close> = core.multi()
      -- the proxy says no before any target is reached: none need exist
      local req <close> = core.request{ url = "https://scim.localhost:1/", proxy = refusing.url }
      multi:add(req)
      local _, ok, msg, code = wait_done(multi)
      assert.is_nil(ok)
      assert.equals("PROXY", code)
      assert.equals("CONNECT tunnel failed, response 403", msg)
      -- proxy = "" (none, whatever the environment says): a plain failure
      local direct <close> = core.request{ url = "http://127.0.0.1:1/", connect_timeout = 5,
        proxy = "" }
      multi:add(direct)
      _, ok, _, code = wait_done(multi)
      assert.is_nil(ok)
      assert.equals("COULDNT_CONNECT", code)
      assert.equals(1, refusing:stats().refused)
    end)

    it("times out a stalled transfer", function()
      s:faults{ stall_ms = 3000, count = 1 }
      local multi <close> = core.multi()
      local req <close> = core.request{ url = s.url .. "Users", headers = auth(), timeout = 0.3 }
      multi:add(req)
      local _, ok, _, code = wait_done(multi)
      assert.is_nil(ok)
      assert.equals("OPERATION_TIMEDOUT", code)
    end)

    it("caps the response body (Content-Length and chunked)", function()
      local multi <close> = core.multi()
      for _, chunked in ipairs{ false, true } do
        s:faults{ oversize_bytes = 200000, chunked = chunked, count = 1 }
        local req <close> = core.request{ url = s.url .. "Users", headers = auth(),
          max_body = 1000 }
        multi:add(req)
        local _, ok, msg, code = wait_done(multi)
        assert.is_nil(ok)
        assert.equals("BODY_TOO_LARGE", code)
        assert.equals("response body larger than max_body (1000 bytes)", msg)
        assert.is_true(#req:body() <= 1000)
      end
      -- within the cap it arrives whole
      s:faults{ oversize_bytes = 5000, chunked = true, count = 1 }
      local req <close> = core.request{ url = s.url .. "Users", headers = auth(),
        max_body = 5000 }
      multi:add(req)
      local _, ok = wait_done(multi)
      assert.is_true(ok)
      assert.equals(5000, #req:body())
    end)

    it("holds the responses of a multi to its body budget", function()
      local multi <close> = core.multi{ body_budget = 300000 }
      s:faults{ oversize_bytes = 150000, chunked = true, count = 3 }
      local reqs = {}
      for i = 1, 3 do
        reqs[i] = core.request{ url = s.url .. "Users", headers = auth() }
        multi:add(reqs[i])
      end
      -- finished transfers keep their bodies (counted) until next_done takes them
      local deadline = core.monotime() + 10
      while multi:perform() > 0 and core.monotime() < deadline do multi:poll(0.05) end
      local held, over = 0, 0
      for _ = 1, 3 do
        local req, ok, msg, code = multi:next_done()
        if ok then
          held = held + #req:body()
        else
          assert.equals("BODY_BUDGET", code)
          assert.equals("the responses in flight would exceed the engine's body budget"
            .. " (300000 bytes)", msg)
          over = over + 1
        end
      end
      assert.is_true(over >= 1)
      assert.is_true(held <= 300000)
      -- taken out, they free the budget: the same request now fits
      for i = 1, 3 do reqs[i]:close() end
      s:faults{ oversize_bytes = 150000, chunked = true, count = 1 }
      local again <close> = core.request{ url = s.url .. "Users", headers = auth() }
      multi:add(again)
      local _, ok = wait_done(multi)
      assert.is_true(ok)
      assert.equals(150000, #again:body())
      -- one response over the budget alone is too large, not a full budget
      local small <close> = core.multi{ body_budget = 1000 }
      s:faults{ oversize_bytes = 5000, chunked = true, count = 1 }
      local big <close> = core.request{ url = s.url .. "Users", headers = auth() }
      small:add(big)
      local _, ok2, msg, code = wait_done(small)
      assert.is_nil(ok2)
      assert.equals("BODY_TOO_LARGE", code)
      assert.equals("response body larger than the engine's body budget (1000 bytes)", msg)
      assert.has_error(function() core.multi{ body_budget = -1 } end)
    end)

    it("decodes compressed responses it asked for", function()
      local multi <close> = core.multi()
      local req <close> = core.request{ url = s.url .. "Users", headers = auth(), trace = true }
      multi:add(req)
      wait_done(multi)
      local sent = table.concat(req:trace(), "\n")
      assert.matches("> Accept%-Encoding: [%w, -]*gzip", sent)
    end)

    it("traces with the Authorization value redacted", function()
      local multi <close> = core.multi()
      local req <close> = core.request{ url = s.url .. "Users", headers = auth(), trace = true,
        user_agent = "core-spec/1" }
      multi:add(req)
      wait_done(multi)
      local lines = req:trace()
      local all = table.concat(lines, "\n")
      assert.is_nil(all:find(TOKEN, 1, true))
      assert.matches("> Authorization: %[redacted%]", all)
      assert.matches("> GET /scim/v2/Users HTTP/1.1", all, 1, true)
      assert.matches("> User-Agent: core-spec/1", all, 1, true)
      assert.matches("< HTTP/1.1 200", all, 1, true)
      assert.same({}, req:trace())  -- drained
    end)

    it("polls as a sleep when idle, and wakes for other multis' sockets", function()
      local a <close> = core.multi()
      local t0 = core.monotime()
      assert.equals(0, a:poll(0.1))
      assert.is_true(core.monotime() - t0 >= 0.09)
      s:faults{ latency_ms = 200, count = 1 }
      local b <close> = core.multi()
      local req <close> = core.request{ url = s.url .. "Users", headers = auth() }
      b:add(req)
      b:perform()
      t0 = core.monotime()
      local done
      for _ = 1, 50 do  -- each wait is on a's (no) sockets plus b's, in one core.wait
        core.wait({ a, b }, 5)
        b:perform()
        done = b:next_done()
        if done then break end
      end
      assert.equals(req, done)
      assert.is_true(core.monotime() - t0 < 3, "woke after " .. (core.monotime() - t0))
      assert.has_error(function() a:poll(-1) end)
      assert.has_error(function() core.wait({ "not a multi" }, 1) end)
    end)

    it("survives a request closed mid-flight", function()
      s:faults{ stall_ms = 2000, count = 2 }
      local multi <close> = core.multi()
      local a = core.request{ url = s.url .. "Users", headers = auth() }
      local b <close> = core.request{ url = s.url .. "Users", headers = auth() }
      multi:add(a)
      multi:add(b)
      for _ = 1, 5 do multi:perform() multi:poll(0.01) end
      a:close()
      assert.equals(1, multi:count())
      a = nil  -- luacheck: ignore 311
      collectgarbage()
      b:close()
      assert.equals(0, multi:count())
      assert.is_nil(multi:next_done())
    end)

    it("survives a multi closed or collected with transfers outstanding", function()
      s:faults{ stall_ms = 2000, count = 6 }
      local multi = core.multi()
      local kept = core.request{ url = s.url .. "Users", headers = auth() }
      multi:add(kept)
      for _ = 1, 2 do
        multi:add(core.request{ url = s.url .. "Users", headers = auth() })
      end
      multi:perform()
      multi:close()
      -- the request outlives its multi, detached and still usable
      assert.equals(0, kept:status())
      local m2 <close> = core.multi()
      m2:add(kept)
      m2:close()
      kept:close()
      -- dropped while in flight: both finalizers run in one cycle, in any order
      for _ = 1, 3 do
        local m = core.multi()
        for _ = 1, 3 do m:add(core.request{ url = s.url .. "Users", headers = auth() }) end
        m:perform()
      end
      collectgarbage()
      collectgarbage()
    end)
  end)

  describe("helpers", function()
    it("parse_url uses curl's parser", function()
      local u = core.parse_url("http://127.0.0.1:8080/scim/v2/Users?x=1")
      assert.same({ scheme = "http", host = "127.0.0.1", port = 8080, path = "/scim/v2/Users",
        query = "x=1" }, u)
      assert.equals(443, core.parse_url("https://example.com/").port)
      assert.equals("[::1]", core.parse_url("http://[::1]:5/").host)
      local no, msg, code = core.parse_url("http://exa mple.com/")
      assert.is_nil(no)
      assert.equals("URL_MALFORMAT", code)
      assert.matches("^bad URL", msg)
      assert.is_nil((core.parse_url("no scheme here")))
    end)

    it("getdate parses HTTP dates; monotime moves forward", function()
      assert.equals(784111777, core.getdate("Sun, 06 Nov 1994 08:49:37 GMT"))
      assert.is_nil(core.getdate("not a date"))
      local a = core.monotime()
      assert.is_true(core.monotime() >= a)
      assert.is_true(math.abs(core.walltime() - os.time()) < 2)
      assert.matches("^libcurl/", core.curl_version)
    end)
  end)
end)
