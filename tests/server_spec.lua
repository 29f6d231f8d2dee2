-- The test SCIM server (tests/server/) and its harness (tests/support/server.lua).
-- Requests go through the harness's curl-based `request`, never scim.http, so
-- these specs prove the server on its own.
local server = require "support.server"
local cjson = require "cjson"

local CURL = server.CLEAN_ENV .. "curl "   -- never under make asan's LD_PRELOAD

local CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
local ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
local PATCHOP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
local ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
local V1_CORE = "urn:scim:schemas:core:1.0"
local V1_ENTERPRISE = "urn:scim:schemas:extension:enterprise:1.0"
local V1_DATES = "urn:scim:schemas:extension:facebook:starttermdates:1.0"
local V1_STATUS = "urn:scim:schemas:extension:facebook:accountstatusdetails:1.0"
local FB = "urn:ietf:params:scim:schemas:extension:facebook:"
local DATES = FB .. "starttermdates:2.0:User"
local STATUS = FB .. "accountstatusdetails:2.0:User"
local AUTH = FB .. "authmethod:2.0:User"
local FRONTLINE = FB .. "frontline:2.0:User"

local function user(name, extra)
  local u = { schemas = { CORE }, userName = name, name = { givenName = "G", familyName = "F" },
              emails = { { value = name, type = "work", primary = true } } }
  for k, v in pairs(extra or {}) do u[k] = v end
  return u
end

local function v1_user(name, extra)
  local u = { schemas = { V1_CORE }, userName = name,
              name = { givenName = "G", familyName = "F", formatted = "G F" }, active = true }
  for k, v in pairs(extra or {}) do u[k] = v end
  return u
end

local function escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- Wall-clock milliseconds, from the shell (os.clock is CPU time).
local function now_ms()
  local p = io.popen("date +%s%3N")
  local v = tonumber(p:read("l"))
  p:close()
  return v
end

after_each(function()
  collectgarbage()
  collectgarbage()
end)

describe("support.server harness", function()
  it("starts quickly on a free loopback port and stops, reaping node", function()
    local t0 = now_ms()
    local s = server.start{}
    local took = now_ms() - t0
    assert.matches("^http://127%.0%.0%.1:%d+/scim/v2/$", s.url)
    assert.equal("test-token", s.token)
    assert.is_true(took < 10000, "start took " .. took .. " ms")
    local res = s:request{ path = "ServiceProviderConfig" }
    assert.equal(200, res.status)
    local origin = s.origin
    s:stop()
    s:stop()   -- idempotent
    assert.matches("stopped", tostring(s))
    -- Nothing listens there any more.
    local p = io.popen(CURL .. "-s -o /dev/null -w '%{http_code}' --max-time 2 "
      .. origin .. "/_control/ping")
    local code = p:read("a")
    p:close()
    assert.equal("000", code)
  end)

  it("runs two servers side by side on different ports", function()
    local a = server.start{}
    local b = server.start{ mode = "v1" }
    assert.are_not.equal(a.port, b.port)
    assert.matches("/scim/v1/$", b.url)
    a:stop()
    b:stop()
  end)

  it("rejects unknown options and bad modes", function()
    assert.has_error(function() server.start{ prot = 1 } end,
      "server.start: unknown option 'prot'")
    assert.has_error(function() server.start{ mode = "v3" } end,
      'server.start: mode must be "scim2", "meta", "v1", "entra" or "minimal", got v3')
    assert.has_error(function() server.start{ page_size = 0 } end,
      "server.start: page_size must be an integer >= 1, got 0")
  end)

  it("keeps a quiet log, and the server refuses a non-loopback address", function()
    local s = server.start{}
    s:request{ path = "Users" }
    assert.equal("", s:log())
    s:stop()
    local p = io.popen(server.CLEAN_ENV
      .. "node tests/server/server.js --host 0.0.0.0 --port 0 2>&1; echo rc=$?")
    local out = p:read("a")
    p:close()
    assert.matches("--host must be a loopback address", out, 1, true)
    assert.matches("rc=2", out, 1, true)
  end)

  it("server exits when the Lua process that started it dies", function()
    -- A child Lua starts a server, prints its origin and exits without stop().
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
      package.path = "tests/?.lua;" .. package.path
      local s = require("support.server").start{}
      io.write(s.origin, "\n")
      io.stdout:flush()
      os.exit(0, false)   -- no close, no finalizers: as if busted crashed
    ]])
    f:close()
    local p = io.popen("lua5.4 " .. script)
    local origin = p:read("l")
    p:close()
    os.remove(script)
    assert.matches("^http://127%.0%.0%.1:%d+$", origin)
    -- Bounded wait (at most 5 s) for it to go away.
    local q = io.popen("for i in $(seq 1 100); do " .. CURL .. "-s -o /dev/null --max-time 1 "
      .. origin .. "/_control/ping || { echo gone; exit; }; sleep 0.05; done; echo alive")
    local state = q:read("l")
    q:close()
    assert.equal("gone", state)
  end)
end)

describe("scim2 mode", function()
  local s
  setup(function()
    s = server.start{ page_size = 10 }
  end)
  teardown(function()
    s:stop()
  end)
  before_each(function()
    s:reset()
  end)

  describe("authentication", function()
    it("answers 401 with a SCIM error without the token", function()
      local res = s:request{ path = "Users", token = false }
      assert.equal(401, res.status)
      assert.same({ ERROR }, res.json.schemas)
      assert.equal("401", res.json.status)
      assert.equal('Bearer realm="scim"', res.headers["www-authenticate"])
    end)

    it("answers 401 to a wrong token, and never echoes it", function()
      local res = s:request{ path = "Users", token = "wrong-secret-123" }
      assert.equal(401, res.status)
      assert.is_nil(res.body:find("wrong-secret-123", 1, true))
      assert.is_nil(res.body:find(s.token, 1, true))
    end)

    it("accepts the scheme name in any case", function()
      local res = s:request{ path = "Users", token = false,
                             headers = { Authorization = "bearer " .. s.token } }
      assert.equal(200, res.status)
    end)
  end)

  describe("users", function()
    it("creates a user: 201, id, Location, ETag, enterprise extension", function()
      local u = user("ada@example.com", { schemas = { CORE, ENTERPRISE },
        [ENTERPRISE] = { department = "R&D", manager = { value = "boss-id" } } })
      local res = s:request{ method = "POST", path = "Users", body = u }
      assert.equal(201, res.status)
      assert.matches("application/scim%+json", res.headers["content-type"])
      local id = res.json.id
      assert.is_string(id)
      assert.equal(s.url .. "Users/" .. id, res.headers.location)
      assert.equal(res.json.meta.version, res.headers.etag)
      assert.equal(s.url .. "Users/" .. id, res.json.meta.location)
      assert.equal("R&D", res.json[ENTERPRISE].department)
      assert.equal("boss-id", res.json[ENTERPRISE].manager.value)
      local got = s:request{ path = "Users/" .. id }
      assert.equal(200, got.status)
      assert.equal("ada@example.com", got.json.userName)
    end)

    it("enforces userName uniqueness case-insensitively with 409 uniqueness", function()
      assert.equal(201, s:request{ method = "POST", path = "Users",
                                   body = user("Bob@Example.com") }.status)
      local res = s:request{ method = "POST", path = "Users", body = user("bob@example.COM") }
      assert.equal(409, res.status)
      assert.equal("uniqueness", res.json.scimType)
      assert.equal(1, #s:users())
    end)

    it("rejects a body that is not a user, and malformed JSON, with 400", function()
      local res = s:request{ method = "POST", path = "Users", body = { schemas = { CORE } } }
      assert.equal(400, res.status)
      assert.same({ ERROR }, res.json.schemas)
      res = s:request{ method = "POST", path = "Users", body = '{"userName": ' }
      assert.equal(400, res.status)
      assert.equal("invalidSyntax", res.json.scimType)
      res = s:request{ method = "POST", path = "Users", body = '  "a string"' }
      assert.equal(400, res.status)
      assert.equal("invalidSyntax", res.json.scimType)
      -- Bodies the fast parser leaves to express.json: chunked, another charset.
      res = s:request{ method = "POST", path = "Users", body = user("chunked@example.com"),
                       headers = { ["Transfer-Encoding"] = "chunked" } }
      assert.equal(201, res.status, res.body)
      res = s:request{ method = "POST", path = "Users", body = user("latin@example.com"),
                       content_type = "application/scim+json; charset=koi8-r" }
      assert.equal(415, res.status, res.body)
      assert.equal(1, #s:users())
    end)

    it("finds by userName eq, case-insensitively, and escapes cannot inject", function()
      s:seed(3)
      local res = s:request{ path = "Users?filter="
        .. escape('userName eq "USER00002@example.com"') }
      assert.equal(200, res.status)
      assert.equal(1, res.json.totalResults)
      assert.equal("user00002@example.com", res.json.Resources[1].userName)
      -- A JSON-escaped quote stays inside the string: matches nothing.
      res = s:request{ path = "Users?filter=" .. escape('userName eq "a\\" or userName pr \\""') }
      assert.equal(200, res.status)
      assert.equal(0, res.json.totalResults)
      -- A value with an escaped quote is found exactly.
      s:seed{ user('we"ird@example.com') }
      res = s:request{ path = "Users?filter=" .. escape('userName eq "WE\\"IRD@example.com"') }
      assert.equal(1, res.json.totalResults)
    end)

    it("evaluates other filters with SCIMMY, and rejects bad ones", function()
      s:seed(4)
      local res = s:request{ path = "Users?filter="
        .. escape('title eq "Designer" or title eq "Manager"') }
      assert.equal(200, res.status)
      assert.equal(3, res.json.totalResults)
      res = s:request{ path = "Users?filter=" .. escape('userName sw "user0000"') }
      assert.equal(4, res.json.totalResults)
      res = s:request{ path = "Users?filter=" .. escape('userName eq "x" and (') }
      assert.equal(400, res.status)
      assert.equal("invalidFilter", res.json.scimType)
    end)

    it("pages honestly: count capped at the page size, itemsPerPage as returned", function()
      s:seed(25)
      local res = s:request{ path = "Users?startIndex=1&count=100" }
      assert.equal(25, res.json.totalResults)
      assert.equal(10, res.json.itemsPerPage)
      assert.equal(10, #res.json.Resources)
      res = s:request{ path = "Users?startIndex=21&count=10" }
      assert.equal(21, res.json.startIndex)
      assert.equal(5, res.json.itemsPerPage)
      assert.equal(5, #res.json.Resources)
      assert.equal("user00021@example.com", res.json.Resources[1].userName)
      res = s:request{ path = "Users?startIndex=26" }
      assert.equal(0, res.json.itemsPerPage)
      assert.equal(0, #res.json.Resources)
      res = s:request{ path = "Users?count=0" }
      assert.equal(25, res.json.totalResults)
      assert.equal(0, #res.json.Resources)
      res = s:request{ path = "Users?count=abc" }
      assert.equal(400, res.status)
      -- Pages in order cover every user exactly once.
      local seen, start = {}, 1
      for _ = 1, 10 do
        local page = s:request{ path = "Users?count=7&startIndex=" .. start }.json
        if #page.Resources == 0 then break end
        for _, u in ipairs(page.Resources) do
          assert.is_nil(seen[u.id])
          seen[u.id] = true
        end
        start = start + math.tointeger(page.itemsPerPage)
      end
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      assert.equal(25, n)
    end)

    it("publishes its capabilities and a live page size", function()
      local spc = s:request{ path = "ServiceProviderConfig" }.json
      assert.is_true(spc.patch.supported)
      assert.is_true(spc.filter.supported)
      assert.equal(10, spc.filter.maxResults)
      assert.is_true(spc.etag.supported)
      s:configure{ page_size = 3 }
      assert.equal(3, s:request{ path = "ServiceProviderConfig" }.json.filter.maxResults)
      s:seed(5)
      assert.equal(3, s:request{ path = "Users" }.json.itemsPerPage)
      s:configure{ page_size = 10 }
    end)

    it("applies PatchOp, with If-Match checked against the ETag", function()
      local u = s:seed{ user("pat@example.com", { title = "Old" }) }[1]
      local res = s:request{ method = "PATCH", path = "Users/" .. u.id, body = {
        schemas = { PATCHOP },
        Operations = { { op = "replace", path = "title", value = "New" },
                       { op = "add", path = "displayName", value = "Pat" } } } }
      assert.equal(200, res.status)
      assert.equal("New", res.json.title)
      assert.equal("Pat", res.json.displayName)
      assert.are_not.equal(u.meta.version, res.headers.etag)
      -- The old ETag is stale now.
      local stale = s:request{ method = "PATCH", path = "Users/" .. u.id,
        headers = { ["If-Match"] = u.meta.version },
        body = { schemas = { PATCHOP },
                 Operations = { { op = "replace", path = "title", value = "X" } } } }
      assert.equal(412, stale.status)
      local fresh = s:request{ method = "PATCH", path = "Users/" .. u.id,
        headers = { ["If-Match"] = res.headers.etag },
        body = { schemas = { PATCHOP },
                 Operations = { { op = "replace", path = "title", value = "Y" } } } }
      assert.equal(200, fresh.status)
      assert.equal("Y", fresh.json.title)
      local bad = s:request{ method = "PATCH", path = "Users/" .. u.id,
        body = { schemas = { PATCHOP }, Operations = { { op = "frob", path = "title" } } } }
      assert.equal(400, bad.status)
      -- Operations that change nothing: 204, and the version stays.
      local same = s:request{ method = "PATCH", path = "Users/" .. u.id,
        body = { schemas = { PATCHOP },
                 Operations = { { op = "replace", path = "title", value = "Y" } } } }
      assert.equal(204, same.status)
      assert.equal(fresh.headers.etag, s:request{ path = "Users/" .. u.id }.headers.etag)
    end)

    it("patches a sub-attribute of an absent extension value, as RFC 7644 says", function()
      local u = s:seed{ user("m@example.com") }[1]
      local path = "Users/" .. u.id
      local res = s:request{ method = "PATCH", path = path, body = { schemas = { PATCHOP },
        Operations = {
          { op = "replace", path = ENTERPRISE .. ":manager.value", value = "boss-1" },
          { op = "add", path = ENTERPRISE .. ":manager.displayName", value = "Boss" },
          { op = "replace", path = ENTERPRISE .. ":department", value = "Ops" } } } }
      assert.equal(200, res.status, res.body)
      assert.same({ value = "boss-1", displayName = "Boss" }, res.json[ENTERPRISE].manager)
      assert.equal("Ops", res.json[ENTERPRISE].department)
      res = s:request{ method = "PATCH", path = path, body = { schemas = { PATCHOP },
        Operations = { { op = "remove", path = ENTERPRISE .. ":manager.displayName" } } } }
      assert.same({ value = "boss-1" }, res.json[ENTERPRISE].manager)
      res = s:request{ method = "PATCH", path = path, body = { schemas = { PATCHOP },
        Operations = { { op = "remove", path = ENTERPRISE .. ":manager.value" } } } }
      assert.equal(200, res.status, res.body)
      assert.is_nil(res.json[ENTERPRISE].manager)
      assert.equal("Ops", s:request{ path = path }.json[ENTERPRISE].department)
      -- A value filter that matches nothing is noTarget (RFC 7644 3.5.2.3).
      res = s:request{ method = "PATCH", path = path, body = { schemas = { PATCHOP },
        Operations = { { op = "replace", path = 'phoneNumbers[type eq "work"].value',
                         value = "1" } } } }
      assert.equal(400, res.status)
      assert.equal("noTarget", res.json.scimType)
    end)

    it("replaces with PUT, keeping uniqueness", function()
      local a, b = table.unpack(s:seed{ user("a@example.com"), user("b@example.com") })
      local res = s:request{ method = "PUT", path = "Users/" .. a.id,
                             body = user("a@example.com", { title = "Boss" }) }
      assert.equal(200, res.status)
      assert.equal("Boss", res.json.title)
      assert.equal(a.id, res.json.id)
      assert.equal(a.meta.created, res.json.meta.created)
      res = s:request{ method = "PUT", path = "Users/" .. b.id, body = user("A@example.com") }
      assert.equal(409, res.status)
      assert.equal("uniqueness", res.json.scimType)
      res = s:request{ method = "PUT", path = "Users/nope", body = user("c@example.com") }
      assert.equal(404, res.status)
    end)

    it("deletes with 204, then 404", function()
      local u = s:seed{ user("gone@example.com") }[1]
      assert.equal(204, s:request{ method = "DELETE", path = "Users/" .. u.id }.status)
      local res = s:request{ path = "Users/" .. u.id }
      assert.equal(404, res.status)
      assert.same({ ERROR }, res.json.schemas)
      assert.equal(404, s:request{ method = "DELETE", path = "Users/" .. u.id }.status)
      -- The userName is free again.
      assert.equal(201, s:request{ method = "POST", path = "Users",
                                   body = user("gone@example.com") }.status)
    end)

    it("gzips answers when configured and asked", function()
      s:seed(20)
      local plain = s:request{ path = "Users", compressed = true }
      assert.is_nil(plain.headers["content-encoding"])
      s:configure{ compress = true }
      local res = s:request{ path = "Users", compressed = true }
      s:configure{ compress = false }
      assert.equal("gzip", res.headers["content-encoding"])
      assert.is_true(tonumber(res.headers["content-length"]) < #plain.body)
      assert.equal(plain.body, res.body)
      assert.matches("application/scim%+json", res.headers["content-type"])
    end)

    it("serves Groups with displayName uniqueness", function()
      local g = { schemas = { "urn:ietf:params:scim:schemas:core:2.0:Group" }, displayName = "Ops" }
      local res = s:request{ method = "POST", path = "Groups", body = g }
      assert.equal(201, res.status)
      assert.equal(409, s:request{ method = "POST", path = "Groups", body = g }.status)
      assert.equal(1, s:request{ path = "Groups" }.json.totalResults)
    end)

    it("lands 200 concurrent creates exactly once each, and one of 50 duplicates", function()
      -- curl --parallel sends them all at once over 200 connections.
      local cfg = os.tmpname()
      local f = assert(io.open(cfg, "w"))
      local body = os.tmpname()
      for i = 1, 250 do
        local name = i <= 200 and string.format("c%03d@example.com", i) or "same@example.com"
        local file = body .. "." .. i
        local bf = assert(io.open(file, "w"))
        bf:write(cjson.encode(user(name)))
        bf:close()
        f:write(string.format('url = "%sUsers"\nrequest = "POST"\n'
          .. 'header = "Authorization: Bearer %s"\nheader = "Content-Type: application/scim+json"\n'
          .. 'data-binary = "@%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n%s',
          s.url, s.token, file, i < 250 and "next\n" or ""))
      end
      f:close()
      local p = io.popen(CURL .. "-s --parallel --parallel-max 250 --max-time 30 -K " .. cfg
        .. " 2>/dev/null")
      local codes = {}
      for line in p:lines() do codes[line] = (codes[line] or 0) + 1 end
      p:close()
      os.remove(cfg)
      for i = 1, 250 do os.remove(body .. "." .. i) end
      os.remove(body)
      assert.same({ ["201"] = 201, ["409"] = 49 }, codes)
      assert.equal(201, #s:users())
      local st = s:stats{ requests = false }
      assert.equal(250, st.by_method.POST)
    end)
  end)

  describe("statistics", function()
    it("counts requests by method and status; control calls and seeding are not counted", function()
      s:seed(2)
      s:request{ path = "Users" }
      s:request{ path = "Users/missing" }
      s:request{ method = "POST", path = "Users", body = user("x@example.com") }
      s:request{ path = "Users", token = false }
      s:users()
      local st = s:stats()
      assert.equal(4, st.total)
      assert.same({ GET = 3, POST = 1 }, st.by_method)
      assert.same({ ["200"] = 1, ["404"] = 1, ["201"] = 1, ["401"] = 1 }, st.by_status)
      assert.equal(4, #st.requests)
      local r1, r2 = st.requests[1], st.requests[3]
      assert.equal("GET", r1.method)
      assert.equal("/scim/v2/Users", r1.path)
      assert.equal(200, r1.status)
      assert.equal("POST", r2.method)
      assert.is_true(r2.t >= r1.t)
      s:reset_stats()
      assert.equal(0, s:stats().total)
      assert.equal(3, #s:users())   -- users survive a stats reset
    end)

    it("can leave out the per-request list", function()
      s:request{ path = "Users" }
      local st = s:stats{ requests = false }
      assert.equal(1, st.total)
      assert.same({}, st.requests or {})
    end)
  end)

  describe("faults", function()
    it("answers 429 with Retry-After seconds for the next n matching requests", function()
      s:faults{ status = 429, retry_after = 2, count = 2, match = "POST /Users" }
      assert.equal(200, s:request{ path = "Users" }.status)   -- GET does not match
      local r1 = s:request{ method = "POST", path = "Users", body = user("r@example.com") }
      assert.equal(429, r1.status)
      assert.equal("2", r1.headers["retry-after"])
      assert.same({ ERROR }, r1.json.schemas)
      local post = { method = "POST", path = "Users", body = user("r@example.com") }
      assert.equal(429, s:request(post).status)
      assert.equal(201, s:request(post).status)
      local st = s:stats()
      assert.same({ ["200"] = 1, ["429"] = 2, ["201"] = 1 }, st.by_status)
      assert.equal(2, st.by_fault["429"])
      assert.equal("429", st.requests[2].fault)
      assert.equal(2, st.faults[1].applied)
      assert.equal(0, #s:users() - 1)   -- the 429s created nothing
    end)

    it("lets a test measure a client's Retry-After wait on the server's side", function()
      -- curl's own --retry honours Retry-After: the gap between the two arrivals is it.
      s:faults{ status = 429, retry_after = 1, count = 1 }
      -- (No -o /dev/null: curl cannot truncate it to retry.)
      local p = io.popen(CURL .. "-s -w '\\n%{http_code}' --retry 2 --max-time 20 -H "
        .. "'Authorization: Bearer " .. s.token .. "' " .. s.url .. "Users")
      local code = p:read("a"):match("(%d+)$")
      p:close()
      assert.equal("200", code)
      local r = s:stats().requests
      assert.equal(2, #r)
      assert.same({ 429, 200 }, { r[1].status, r[2].status })
      local gap = r[2].t - r[1].t
      assert.is_true(gap >= 990 and gap < 15000, "gap " .. gap .. " ms")
    end)

    it("sends Retry-After as an HTTP-date", function()
      s:faults{ status = 429, retry_after_date = 30, count = 1 }
      local res = s:request{ path = "Users" }
      assert.equal(429, res.status)
      local date = res.headers["retry-after"]
      assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", date)
    end)

    it("applies a fraction evenly: 503 on every 2nd request", function()
      s:faults{ status = 503, fraction = 0.5 }
      local got = {}
      for i = 1, 6 do got[i] = s:request{ path = "Users" }.status end
      assert.same({ 200, 503, 200, 503, 200, 503 }, got)
    end)

    it("drops the connection without a response", function()
      s:faults{ drop = true, count = 1, match = "GET /Users" }
      local res = s:request{ path = "Users" }
      assert.equal(0, res.status)
      assert.equal(52, res.curl_exit)            -- CURLE_GOT_NOTHING
      assert.equal(200, s:request{ path = "Users" }.status)
      local st = s:stats()
      assert.equal(1, st.by_status["0"])
      assert.equal("drop", st.requests[1].fault)
    end)

    it("stalls longer than the client's timeout, then drops without serving", function()
      s:faults{ stall_ms = 3000, count = 1, match = "POST" }
      local t0 = now_ms()
      local res = s:request{ method = "POST", path = "Users", body = user("st@example.com"),
                             max_time = 1 }
      local waited = now_ms() - t0
      assert.equal(28, res.curl_exit)            -- CURLE_OPERATION_TIMEDOUT
      assert.is_true(waited >= 900 and waited < 2900, "waited " .. waited .. " ms")
      assert.equal(0, #s:users())                -- the stalled create never landed
      assert.equal(201, s:request{ method = "POST", path = "Users",
                                   body = user("st@example.com") }.status)
    end)

    it("stalls and then serves when asked", function()
      s:faults{ stall_ms = 300, stall_then = "serve", count = 1 }
      local res = s:request{ path = "Users" }
      assert.equal(200, res.status)
      local rec = s:stats().requests[1]
      assert.is_true(rec.ms >= 290, "took " .. rec.ms .. " ms")
    end)

    it("stalls after the headers and part of the body", function()
      s:faults{ stall_ms = 3000, stall_at = "body", count = 1 }
      local res = s:request{ path = "Users", max_time = 1 }
      assert.equal(28, res.curl_exit)
      assert.equal(200, res.status)
      assert.matches("^{\"schemas\"", res.body)
      assert.equal(200, s:request{ path = "Users" }.status)
    end)

    it("enforces a rate limit with 429 and Retry-After over it", function()
      -- A burst of 3, refilled at one per 10 s: the 4th to 7th requests are over
      -- the limit however slowly this machine runs them (well under 10 s).
      s:faults{ rate_limit = 0.1, burst = 3, retry_after = 1, match = "GET /Users" }
      local got = {}
      for i = 1, 6 do got[i] = s:request{ path = "Users" }.status end
      assert.same({ 200, 200, 200, 429, 429, 429 }, got)
      assert.equal("1", s:request{ path = "Users" }.headers["retry-after"])
      assert.equal(4, s:stats().by_fault["429"])
    end)

    it("adds latency, measured on the server side", function()
      s:faults{ latency_ms = 500, count = 1 }
      assert.equal(200, s:request{ path = "Users" }.status)
      assert.equal(200, s:request{ path = "Users" }.status)
      local st = s:stats()
      assert.is_true(st.requests[1].ms >= 495, "took " .. st.requests[1].ms)
      assert.is_true(st.requests[2].ms < 450, "took " .. st.requests[2].ms)
    end)

    it("serves a delayed request at once and holds only its answer", function()
      -- As at a real provider, a client that gives up has not undone its request.
      s:faults{ latency_ms = 1500, count = 1, match = "POST /Users" }
      local res = s:request{ method = "POST", path = "Users", body = user("late@example.com"),
                             max_time = 0.5 }
      assert.equal(0, res.status)
      assert.equal(1, #s:users())
      local st
      for _ = 1, 50 do   -- the server sees the client's close within a moment
        st = s:stats()
        if st.by_status["0"] then break end
        server.sleep(0.05)
      end
      assert.equal(1, st.by_status["0"])
      assert.is_true(st.requests[1].ms < 1400, "took " .. st.requests[1].ms)
      -- The same latency before a fault action still comes first.
      s:faults{ latency_ms = 300, status = 503, count = 1 }
      assert.equal(503, s:request{ path = "Users" }.status)
      assert.is_true(s:stats().requests[2].ms >= 295)
    end)

    it("sends malformed JSON", function()
      s:faults{ malformed = true, count = 1 }
      local res = s:request{ path = "Users" }
      assert.equal(200, res.status)
      assert.is_nil(res.json)
      assert.is_false((pcall(cjson.decode, res.body)))
    end)

    it("sends an oversized body of exactly n bytes, with or without Content-Length", function()
      s:faults{ oversize_bytes = 3 * 1024 * 1024 + 5, count = 1 }
      local res = s:request{ path = "Users" }
      assert.equal(200, res.status)
      assert.equal(3 * 1024 * 1024 + 5, #res.body)
      assert.equal(tostring(3 * 1024 * 1024 + 5), res.headers["content-length"])
      assert.is_table(res.json)
      s:faults{ oversize_bytes = 100000, chunked = true, count = 1 }
      res = s:request{ path = "Users" }
      assert.equal(100000, #res.body)
      assert.is_nil(res.headers["content-length"])
      assert.equal("chunked", res.headers["transfer-encoding"])
    end)

    it("takes a list of rules, the first matching one wins, and clears", function()
      local rules = s:faults{
        { status = 503, count = 1, match = "DELETE" },
        { status = 429, retry_after = 1, match = "GET /Users/" },
      }
      assert.equal(2, #rules)
      assert.equal(200, s:request{ path = "Users" }.status)   -- "/Users" is not "/Users/"
      assert.equal(429, s:request{ path = "Users/x" }.status)
      assert.equal(503, s:request{ method = "DELETE", path = "Users/x" }.status)
      assert.equal(404, s:request{ method = "DELETE", path = "Users/x" }.status)
      s:faults()
      assert.equal(404, s:request{ path = "Users/x" }.status)
    end)

    it("refuses a bad rule with a clear message", function()
      assert.has_error(function() s:faults{ status = 429, drop = true } end,
        "support.server: control POST faults: 400 fault rule 1: choose one of status, drop")
      assert.has_error(function() s:faults{ stauts = 429 } end,
        "support.server: control POST faults: 400 fault rule 1: unknown key 'stauts'")
    end)
  end)
end)

describe("scim2 mode answers as SCIMMY would (verify_egress)", function()
  -- The server builds plain answers itself from a plan of SCIMMY's schema; with
  -- verify_egress each one is compared with SCIMMY's own, a 500 on a difference.
  it("creates, reads, lists, patches and replaces users of every shape", function()
    local s = server.start{ verify_egress = true }
    local full = user("full@example.com", {
      schemas = { CORE, ENTERPRISE }, externalId = "E1", displayName = "Full", nickName = "F",
      title = "T", active = true, password = "secret-never-shown", locale = "en-GB",
      name = { givenName = "Fu", familyName = "Ll", formatted = "Fu Ll", middleName = "M" },
      phoneNumbers = { { value = "+1 555", type = "work" } },
      addresses = { { streetAddress = "1 Road", locality = "Town", type = "work",
                      primary = true } },
      [ENTERPRISE] = { department = "D", employeeNumber = "7", manager = { value = "boss" } } })
    local res = s:request{ method = "POST", path = "Users", body = full }
    assert.equal(201, res.status, res.body)
    assert.is_nil(res.json.password)
    local id = res.json.id
    for _, path in ipairs{ "Users/" .. id, "Users", "Users?filter=" .. escape('title eq "T"'),
                           "Users/" .. id .. "?attributes=userName,title",
                           "Users?excludedAttributes=emails" } do
      res = s:request{ path = path }
      assert.equal(200, res.status, path .. ": " .. res.body)
    end
    res = s:request{ method = "PATCH", path = "Users/" .. id, body = { schemas = { PATCHOP },
      Operations = { { op = "remove", path = ENTERPRISE .. ":manager" },
                     { op = "add", path = "emails", value = { { value = "b@example.com" } } },
                     { op = "replace", path = "active", value = false } } } }
    assert.equal(200, res.status, res.body)
    assert.is_nil(res.json[ENTERPRISE].manager)
    res = s:request{ method = "PUT", path = "Users/" .. id, body = user("full@example.com") }
    assert.equal(200, res.status, res.body)
    assert.is_nil(res.json[ENTERPRISE])
    assert.same({ CORE }, res.json.schemas)
    res = s:request{ method = "PATCH", path = "Users/" .. id .. "?attributes=title",
      body = { schemas = { PATCHOP },
               Operations = { { op = "add", path = "title", value = "N" } } } }
    assert.equal(200, res.status, res.body)
    assert.equal("N", res.json.title)
    assert.is_nil(res.json.userName)     -- only what was asked for (and id)
    assert.equal("full@example.com", s:request{ path = "Users/" .. id }.json.userName)
    assert.equal("", s:log())
    s:stop()
  end)
end)

describe("v1 mode (Workplace SCIM 1.0)", function()
  local s
  setup(function()
    s = server.start{ mode = "v1", page_size = 5 }
  end)
  teardown(function()
    s:stop()
  end)
  before_each(function()
    s:reset()
  end)

  local function ua() return { ["User-Agent"] = "scim-agent-test/1" } end

  it("creates with numeric ids, 1.0 schemas and server-set account status", function()
    local res = s:request{ method = "POST", path = "Users", headers = ua(), body = v1_user(
      "ann@example.com", { schemas = { V1_CORE, V1_ENTERPRISE, V1_DATES },
        [V1_ENTERPRISE] = { department = "Sales" }, [V1_DATES] = { startDate = 1700000000 } }) }
    assert.equal(201, res.status)
    assert.matches("application/json", res.headers["content-type"])
    assert.equal("number", type(res.json.id))
    local id = server.id_string(res.json.id)
    assert.matches("^%d+$", id)
    assert.matches('"id":' .. id .. ",", res.body)   -- a JSON number, not a string
    assert.equal(s.url .. "Users/" .. id, res.headers.location)
    assert.equal(false, res.json[V1_STATUS].claimed)
    assert.equal(1700000000, res.json[V1_DATES].startDate)
    local got = s:request{ path = "Users/" .. id, headers = ua() }
    assert.equal(200, got.status)
    assert.equal("Sales", got.json[V1_ENTERPRISE].department)
  end)

  it("requires a User-Agent", function()
    local res = s:request{ path = "Users", headers = { ["User-Agent"] = "" } }
    assert.equal(400, res.status)
    assert.matches("User%-Agent", res.json.Errors[1].description)
  end)

  it("answers errors in the 1.1 shape: 401, 404, 409", function()
    local res = s:request{ path = "Users", token = false, headers = ua() }
    assert.equal(401, res.status)
    assert.equal(401, res.json.Errors[1].code)
    res = s:request{ path = "Users/123", headers = ua() }
    assert.equal(404, res.status)
    assert.equal(404, res.json.Errors[1].code)
    s:seed{ v1_user("dup@example.com") }
    res = s:request{ method = "POST", path = "Users", headers = ua(),
                     body = v1_user("DUP@example.com") }
    assert.equal(409, res.status)
  end)

  it("lists in the SCIM 1.1 shape, pages and filters userName eq", function()
    s:seed(7)
    local res = s:request{ path = "Users?count=100", headers = ua() }
    assert.same({ V1_CORE }, res.json.schemas)
    assert.equal(7, res.json.totalResults)
    assert.equal(5, res.json.itemsPerPage)
    assert.equal(5, #res.json.Resources)
    res = s:request{ path = "Users?startIndex=6", headers = ua() }
    assert.equal(2, #res.json.Resources)
    res = s:request{ path = "Users?filter=" .. escape('userName eq "USER00003@EXAMPLE.COM"'),
                     headers = ua() }
    assert.equal(1, res.json.totalResults)
    assert.equal("user00003@example.com", res.json.Resources[1].userName)
    res = s:request{ path = "Users?filter=" .. escape('title eq "x"'), headers = ua() }
    assert.equal(400, res.status)
  end)

  it("has no PATCH: 405 with Allow", function()
    local u = s:seed{ v1_user("p@example.com") }[1]
    local res = s:request{ method = "PATCH", path = "Users/" .. server.id_string(u.id),
                           headers = ua(), body = { active = false } }
    assert.equal(405, res.status)
    assert.equal("GET, PUT, DELETE", res.headers.allow)
  end)

  it("replaces with PUT; read-only attributes and unknown ones are refused", function()
    local boss, u = table.unpack(s:seed{ v1_user("boss@example.com"), v1_user("e@example.com") })
    local id, boss_id = server.id_string(u.id), server.id_string(boss.id)
    local body = v1_user("e@example.com", { schemas = { V1_CORE, V1_ENTERPRISE }, title = "Dev",
      -- A digit string: lua-cjson cannot encode a 15-digit number exactly.
      [V1_ENTERPRISE] = { manager = { managerId = boss_id } } })
    local res = s:request{ method = "PUT", path = "Users/" .. id, headers = ua(), body = body }
    assert.equal(200, res.status)
    assert.equal("Dev", res.json.title)
    assert.equal(boss_id, server.id_string(res.json[V1_ENTERPRISE].manager.managerId))
    -- Echoing the GET back (with meta and account status) is a client bug.
    local echo = s:request{ path = "Users/" .. id, headers = ua() }.json
    res = s:request{ method = "PUT", path = "Users/" .. id, headers = ua(), body = echo }
    assert.equal(400, res.status)
    assert.matches("read%-only", res.json.Errors[1].description)
    -- The original sample's misspelling.
    res = s:request{ method = "PUT", path = "Users/" .. id, headers = ua(),
                     body = v1_user("e@example.com", { externalID = "42" }) }
    assert.equal(400, res.status)
    assert.matches("Unknown attribute 'externalID'", res.json.Errors[1].description)
    -- A manager id that is no user (e.g. one mangled by float formatting).
    res = s:request{ method = "PUT", path = "Users/" .. id, headers = ua(),
      body = v1_user("e@example.com", { schemas = { V1_CORE, V1_ENTERPRISE },
        [V1_ENTERPRISE] = { manager = { managerId = "1" } } }) }
    assert.equal(400, res.status)
    -- Dates must be integers.
    res = s:request{ method = "PUT", path = "Users/" .. id, headers = ua(),
      body = v1_user("e@example.com", { schemas = { V1_CORE, V1_DATES },
        [V1_DATES] = { startDate = "2024-01-01" } }) }
    assert.equal(400, res.status)
  end)

  it("deletes with 204, then 404", function()
    local u = s:seed{ v1_user("d@example.com") }[1]
    local id = server.id_string(u.id)
    assert.equal(204, s:request{ method = "DELETE", path = "Users/" .. id, headers = ua() }.status)
    assert.equal(404, s:request{ method = "DELETE", path = "Users/" .. id, headers = ua() }.status)
  end)

  it("injects faults and counts them in v1 too", function()
    s:faults{ status = 503, count = 1, match = "GET /Users" }
    local res = s:request{ path = "Users", headers = ua() }
    assert.equal(503, res.status)
    assert.equal(503, res.json.Errors[1].code)
    assert.equal(200, s:request{ path = "Users", headers = ua() }.status)
    assert.same({ ["503"] = 1, ["200"] = 1 }, s:stats().by_status)
  end)

  it("can use string ids and lenient validation when asked", function()
    local t = server.start{ mode = "v1", numeric_ids = false, strict = false,
                            require_user_agent = false }
    local res = t:request{ method = "POST", path = "Users",
                           body = v1_user("x@example.com", { externalID = "1" }) }
    assert.equal(201, res.status)
    assert.equal("string", type(res.json.id))
    t:stop()
  end)
end)

describe("meta mode (Meta's SCIM 2.0)", function()
  local s
  setup(function()
    s = server.start{ mode = "meta", verify_egress = true }
  end)
  teardown(function()
    s:stop()
  end)
  before_each(function()
    s:reset()
  end)

  local UA = { ["User-Agent"] = "scim-agent-test/1" }
  local function meta_user(name)
    return user(name, { name = { givenName = "G", familyName = "F", formatted = "G F" } })
  end
  local function with(u, extra)
    for k, v in pairs(extra) do u[k] = v end
    return u
  end

  it("serves SCIM 2.0 at the root of its host, with numeric string ids", function()
    assert.matches("^http://127%.0%.0%.1:%d+/$", s.url)
    local res = s:request{ method = "POST", path = "Users", headers = UA,
                           body = meta_user("ann@example.com") }
    assert.equal(201, res.status)
    assert.equal("string", type(res.json.id))
    assert.matches("^%d+$", res.json.id)
    assert.equal(s.url .. "Users/" .. res.json.id, res.headers.location)
    assert.equal(s.url .. "Users/" .. res.json.id, res.json.meta.location)
    -- The provider's account status comes with every user, unclaimed at first.
    assert.same({ invited = false, claimed = false }, res.json[STATUS])
    assert.truthy(table.concat(res.json.schemas, " "):find(STATUS, 1, true))
  end)

  it("requires a User-Agent on every request, before anything else is done", function()
    for _, req in ipairs{
      { path = "Users" },
      { method = "POST", path = "Users", body = meta_user("x@example.com") },
      { method = "DELETE", path = "Users/100040000000001" },
    } do
      req.headers = { ["User-Agent"] = "" }
      local res = s:request(req)
      assert.equal(400, res.status, req.method)
      assert.equal(ERROR, res.json.schemas[1])
      assert.matches("User%-Agent header is required", res.json.detail)
    end
    assert.same({}, s:users())
    assert.equal(401, s:request{ path = "Users", headers = UA, token = false }.status)
  end)

  it("publishes Meta's extensions and validates their values", function()
    local types = s:request{ path = "ResourceTypes/User", headers = UA }.json
    local exts = {}
    for _, e in ipairs(types.schemaExtensions) do exts[e.schema] = e.required end
    for _, urn in ipairs{ ENTERPRISE, DATES, STATUS, AUTH, FRONTLINE } do
      assert.equal(false, exts[urn], urn)
    end
    local u = with(meta_user("bo@example.com"), {
      schemas = { CORE, DATES, AUTH, FRONTLINE },
      [DATES] = { startDate = 1700000000, termDate = 1800000000 },
      [AUTH] = { authMethod = "sso" }, [FRONTLINE] = { isFrontline = true } })
    local res = s:request{ method = "POST", path = "Users", headers = UA, body = u }
    assert.equal(201, res.status, res.body)
    assert.same({ startDate = 1700000000, termDate = 1800000000 }, res.json[DATES])
    assert.equal("sso", res.json[AUTH].authMethod)
    assert.equal(true, res.json[FRONTLINE].isFrontline)
    local bad = {
      { AUTH, { authMethod = "magic" }, "authMethod" },
      { DATES, { startDate = "soon" }, "startDate" },
      { FRONTLINE, { isFrontline = "yes" }, "isFrontline" },
      { "name", { givenName = "No", familyName = "Formatted" }, "name.formatted is required" },
    }
    for i, case in ipairs(bad) do
      local body = with(meta_user("bad" .. i .. "@example.com"), { [case[1]] = case[2] })
      res = s:request{ method = "POST", path = "Users", headers = UA, body = body }
      assert.equal(400, res.status, res.body)
      assert.equal("invalidValue", res.json.scimType)
      assert.truthy(res.json.detail:find(case[3], 1, true), res.json.detail)
    end
    assert.equal(1, #s:users())
  end)

  it("keeps the account status read-only: clients cannot set it, /_control/seed can", function()
    local u = with(meta_user("cy@example.com"), { [STATUS] = { claimed = true, invited = true } })
    local res = s:request{ method = "POST", path = "Users", headers = UA, body = u }
    assert.equal(201, res.status)
    assert.same({ invited = false, claimed = false }, res.json[STATUS])
    local id = res.json.id
    res = s:request{ method = "PATCH", path = "Users/" .. id, headers = UA, body = {
      schemas = { PATCHOP }, Operations = { { op = "replace", path = "title", value = "Boss" },
        { op = "replace", path = STATUS .. ":claimed", value = true } } } }
    assert.equal(400, res.status)
    assert.equal("mutability", res.json.scimType)
    local got = s:request{ path = "Users/" .. id, headers = UA }.json
    assert.equal(false, got[STATUS].claimed)
    assert.is_nil(got.title)    -- a PatchOp applies whole or not at all
    res = s:request{ method = "PUT", path = "Users/" .. id, headers = UA,
                     body = with(meta_user("cy@example.com"), { [STATUS] = { claimed = true } }) }
    assert.equal(200, res.status, res.body)
    assert.equal(false, res.json[STATUS].claimed)

    local seeded = s:seed{ with(meta_user("di@example.com"),
      { [STATUS] = { claimed = true, claimedDate = 1700000000, invited = true } }) }
    res = s:request{ path = "Users/" .. seeded[1].id, headers = UA }
    assert.same({ claimed = true, claimedDate = 1700000000, invited = true }, res.json[STATUS])
    local ok, err = pcall(s.seed, s, { with(meta_user("ed@example.com"),
      { [STATUS] = { claimed = "yes" } }) })
    assert.is_false(ok)
    assert.truthy(err:find("seed user 1: '" .. STATUS .. ":claimed' must be a boolean", 1, true),
      err)
    ok, err = pcall(s.seed, s, { with(meta_user("ed@example.com"), { [STATUS] = { foo = 1 } }) })
    assert.is_false(ok)
    assert.matches("unknown attribute", err)
    assert.equal(2, #s:users())
  end)

  it("refuses to delete a claimed account, with a detail pointing at deactivation", function()
    local seeded = s:seed{
      with(meta_user("claimed@example.com"), { [STATUS] = { claimed = true } }),
      meta_user("fresh@example.com"),
    }
    local res = s:request{ method = "DELETE", path = "Users/" .. seeded[1].id, headers = UA }
    assert.equal(400, res.status)
    assert.equal(ERROR, res.json.schemas[1])
    assert.matches("claimed", res.json.detail)
    assert.matches("deactivate", res.json.detail)
    -- Deactivating it works, and it is still there.
    res = s:request{ method = "PATCH", path = "Users/" .. seeded[1].id, headers = UA, body = {
      schemas = { PATCHOP }, Operations = { { op = "replace", path = "active", value = false } } } }
    assert.equal(200, res.status, res.body)
    assert.equal(false, res.json.active)
    assert.equal(true, res.json[STATUS].claimed)
    -- An unclaimed account goes.
    assert.equal(204, s:request{ method = "DELETE", path = "Users/" .. seeded[2].id,
                                 headers = UA }.status)
    assert.equal(404, s:request{ method = "DELETE", path = "Users/" .. seeded[2].id,
                                 headers = UA }.status)
    assert.equal(1, #s:users())
    assert.same({ ["400"] = 1, ["200"] = 1, ["204"] = 1, ["404"] = 1 }, s:stats().by_status)
  end)

  it("pages, filters and answers exactly as SCIMMY would (verify_egress on)", function()
    s:seed(7)
    local res = s:request{ path = "Users?count=3&startIndex=2", headers = UA }
    assert.equal(200, res.status)
    assert.equal(7, res.json.totalResults)
    assert.equal(3, res.json.itemsPerPage)
    assert.equal("user00002@example.com", res.json.Resources[1].userName)
    assert.same({ invited = false, claimed = false }, res.json.Resources[1][STATUS])
    res = s:request{ path = "Users?filter=" .. escape('userName eq "USER00005@example.com"'),
                     headers = UA }
    assert.equal(1, res.json.totalResults)
    res = s:request{ path = "Users?attributes=userName", headers = UA }
    assert.equal(200, res.status)
    assert.is_nil(res.json.Resources[1][STATUS])
    assert.equal("", s:log())
  end)
end)

describe("strict mode in SCIM 2.0 (scim2 and meta)", function()
  local s
  server.per_describe(_ENV, { strict = true, page_size = 5 }, function(started) s = started end)

  local GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"

  it("refuses writes without the core schema in `schemas`, and PATCH without PatchOp", function()
    local res = s:request{ method = "POST", path = "Users",
                           body = { userName = "a@example.com" } }
    assert.equal(400, res.status)
    assert.same({ ERROR }, res.json.schemas)
    assert.equal("invalidSyntax", res.json.scimType)
    assert.matches("schemas", res.json.detail)
    res = s:request{ method = "POST", path = "Users",
                     body = { schemas = { ENTERPRISE }, userName = "a@example.com" } }
    assert.equal(400, res.status)
    assert.equal("invalidValue", res.json.scimType)
    res = s:request{ method = "POST", path = "Users", body = user("a@example.com") }
    assert.equal(201, res.status, res.body)
    local id = res.json.id
    res = s:request{ method = "PUT", path = "Users/" .. id, body = { userName = "a@example.com" } }
    assert.equal(400, res.status)
    assert.equal("invalidSyntax", res.json.scimType)
    res = s:request{ method = "PATCH", path = "Users/" .. id,
                     body = { Operations = { { op = "replace", path = "title", value = "T" } } } }
    assert.equal(400, res.status)
    assert.equal("invalidSyntax", res.json.scimType)
    res = s:request{ method = "POST", path = "Groups", body = { displayName = "G" } }
    assert.equal(400, res.status)
    assert.equal("invalidSyntax", res.json.scimType)
    res = s:request{ method = "POST", path = "Groups",
                     body = { schemas = { GROUP }, displayName = "G" } }
    assert.equal(201, res.status, res.body)
    assert.equal(1, #s:users())
    assert.equal(1, #s:groups())
  end)

  it("filters on one `attr eq \"value\"` only, on Users and Groups", function()
    s:seed(3)
    local res = s:request{ path = "Users?filter=" .. escape('userName eq "user00002@example.com"') }
    assert.equal(200, res.status)
    assert.equal(1, res.json.totalResults)
    for _, f in ipairs{ 'userName co "user"', 'userName sw "user"', "userName pr",
                        'userName eq "a" or userName eq "b"', 'userName eq "a" and title eq "b"',
                        '(userName eq "a")', 'emails[value eq "a"]', 'userName ne "a"' } do
      for _, res_path in ipairs{ "Users", "Groups" } do
        res = s:request{ path = res_path .. "?filter=" .. escape(f) }
        assert.equal(400, res.status, f)
        assert.equal("invalidFilter", res.json.scimType, f)
      end
    end
    res = s:request{ path = "Groups?filter=" .. escape('displayName eq "x"') }
    assert.equal(200, res.status)
  end)

  it("clips count to the page size and says so in itemsPerPage", function()
    s:seed(12)
    local res = s:request{ path = "Users?count=50" }
    assert.equal(12, res.json.totalResults)
    assert.equal(5, res.json.itemsPerPage)
    assert.equal(5, #res.json.Resources)
  end)

  it("answers 404 to a resource path with a trailing slash", function()
    local u = s:seed(1)[1]
    for _, req in ipairs{ { path = "Users/" }, { path = "Users/" .. u.id .. "/" },
                          { path = "Groups/" }, { path = "Users/?count=1" },
                          { method = "POST", path = "Users/", body = user("t@example.com") } } do
      local res = s:request(req)
      assert.equal(404, res.status, req.path)
      assert.same({ ERROR }, res.json.schemas)
    end
    assert.equal(200, s:request{ path = "Users/" .. u.id }.status)
    assert.equal(1, #s:users())
  end)

  it("switches live through /_control/config", function()
    s:configure{ strict = false }
    local res = s:request{ method = "POST", path = "Users", body = { userName = "l@example.com" } }
    assert.equal(201, res.status, res.body)
    assert.equal(200, s:request{ path = "Users/" }.status)
    assert.equal(200, s:request{ path = "Users?filter=" .. escape('userName co "l"') }.status)
    s:configure{ strict = true }
    assert.equal(400, s:request{ method = "POST", path = "Users",
                                 body = { userName = "m@example.com" } }.status)
  end)

  it("counts requests per method and path shape", function()
    local u = s:seed(1)[1]
    s:request{ method = "POST", path = "Users", body = user("c@example.com") }
    s:request{ method = "POST", path = "Users", body = user("d@example.com") }
    s:request{ path = "Users" }
    s:request{ path = "Users/" .. u.id }
    s:request{ path = "Users/" }
    s:request{ method = "PATCH", path = "Users/" .. u.id, body = { schemas = { PATCHOP },
      Operations = { { op = "replace", path = "title", value = "X" } } } }
    local g = s:request{ method = "POST", path = "Groups",
                         body = { schemas = { GROUP }, displayName = "G" } }.json
    s:request{ method = "PATCH", path = "Groups/" .. g.id, body = { schemas = { PATCHOP },
      Operations = { { op = "add", path = "members", value = { { value = u.id } } } } } }
    s:request{ path = "ServiceProviderConfig" }
    local st = s:stats()
    assert.same({ ["POST /Users"] = 2, ["GET /Users"] = 1, ["GET /Users/:id"] = 1,
                  ["GET /Users/"] = 1, ["PATCH /Users/:id"] = 1, ["POST /Groups"] = 1,
                  ["PATCH /Groups/:id"] = 1, ["GET /ServiceProviderConfig"] = 1 }, st.by_route)
    assert.equal("PATCH /Groups/:id", st.requests[8].route)
    assert.equal(9, st.total)
  end)

  it("works in meta mode too", function()
    local m = server.start{ mode = "meta", strict = true }
    local UA = { ["User-Agent"] = "t/1" }
    local body = user("x@example.com", { name = { givenName = "G", familyName = "F",
                                                  formatted = "G F" } })
    body.schemas = nil
    local res = m:request{ method = "POST", path = "Users", headers = UA, body = body }
    assert.equal(400, res.status)
    assert.equal("invalidSyntax", res.json.scimType)
    body.schemas = { CORE }
    assert.equal(201,
      m:request{ method = "POST", path = "Users", headers = UA, body = body }.status)
    assert.equal(404, m:request{ path = "Users/", headers = UA }.status)
    assert.same({ ["POST /Users"] = 2, ["GET /Users/"] = 1 }, m:stats().by_route)
    m:stop()
  end)
end)

describe("rate limiter", function()
  local s
  server.per_describe(_ENV, {}, function(started) s = started end)

  it("refuses requests over the rate with a bare 429, counted apart", function()
    -- A burst of 3 refilled at one per 100 s: requests 4.. are over however slow the machine.
    s:configure{ rate_limit = { rps = 0.01, burst = 3 } }
    local got = {}
    for i = 1, 5 do got[i] = s:request{ path = "Users" } end
    assert.same({ 200, 200, 200, 429, 429 }, { got[1].status, got[2].status, got[3].status,
                                              got[4].status, got[5].status })
    assert.is_nil(got[4].headers["retry-after"])
    assert.same({ ERROR }, got[4].json.schemas)
    local st = s:stats()
    assert.equal(3, st.limiter.passed)
    assert.equal(2, st.limiter.refused)
    assert.equal(5, st.total)
    assert.equal(2, st.by_fault.rate_limit)
    assert.equal("rate_limit", st.requests[4].fault)
    assert.equal(0.01, st.limiter.rps)
    -- The arrival rate of the passed requests, from their arrival times.
    assert.equal(st.requests[1].t, st.limiter.first)
    assert.equal(st.requests[3].t, st.limiter.last)
    local want = 2 / ((st.limiter.last - st.limiter.first) / 1000)
    assert.is_true(math.abs(st.limiter.rate - want) <= want * 0.01 + 0.001,
      st.limiter.rate .. " vs " .. want)
  end)

  it("sends Retry-After and another status when configured, and turns off", function()
    s:configure{ rate_limit = { rps = 0.01, retry_after = 7, status = 503 } }
    assert.equal(200, s:request{ path = "Users" }.status)
    local res = s:request{ path = "Users" }
    assert.equal(503, res.status)
    assert.equal("7", res.headers["retry-after"])
    s:configure{ rate_limit = false }
    assert.equal(200, s:request{ path = "Users" }.status)
    assert.equal(cjson.null, s:stats().limiter.rps)
    assert.has_error(function() s:configure{ rate_limit = { burst = 2 } } end,
      "support.server: control POST config: 400 rate_limit.rps is required (requests per second)")
  end)

  it("is a start option, and reset restores it with a full bucket", function()
    local t = server.start{ rate_limit = { rps = 0.01, burst = 2 } }
    local codes = {}
    for i = 1, 3 do codes[i] = t:request{ path = "Users" }.status end
    assert.same({ 200, 200, 429 }, codes)
    t:reset()
    assert.equal(200, t:request{ path = "Users" }.status)
    assert.equal(1, t:stats().limiter.passed)
    t:stop()
  end)
end)

describe("groups (scim2 and meta)", function()
  local s
  server.per_describe(_ENV, { page_size = 4, verify_egress = true },
    function(started) s = started end)

  local GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
  local function group(name, members)
    local g = { schemas = { GROUP }, displayName = name }
    if members then
      g.members = {}
      for i, m in ipairs(members) do
        g.members[i] = type(m) == "table" and m or { value = m }
      end
    end
    return g
  end
  local function patch(ops) return { schemas = { PATCHOP }, Operations = ops } end
  local function member_ids(g)
    local out = {}
    for _, m in ipairs(g.members or {}) do out[#out + 1] = m.value end
    table.sort(out)
    return out
  end
  local function sorted(t) table.sort(t) return t end

  it("creates groups with user and group members, keeping each member's type", function()
    local a, b = table.unpack(s:seed(2))
    local inner = s:request{ method = "POST", path = "Groups",
                             body = group("Inner", { { value = b.id, type = "User" } }) }
    assert.equal(201, inner.status, inner.body)
    assert.equal(s.url .. "Groups/" .. inner.json.id, inner.headers.location)
    local res = s:request{ method = "POST", path = "Groups", body = group("Outer", {
      { value = a.id, display = "A" }, { value = inner.json.id, type = "Group" } }) }
    assert.equal(201, res.status, res.body)
    local got = s:request{ path = "Groups/" .. res.json.id }
    assert.equal(200, got.status)
    assert.equal(res.json.meta.version, got.headers.etag)
    local types = {}
    for _, m in ipairs(got.json.members) do types[m.value] = m.type end
    assert.same({ [a.id] = "User", [inner.json.id] = "Group" }, types)
    assert.equal("A", got.json.members[1].display)
    -- Members that are not here, a wrong type, or the group itself: 400 invalidValue.
    for _, bad in ipairs{ { { value = "nobody" } }, { { value = a.id, type = "Group" } } } do
      res = s:request{ method = "POST", path = "Groups", body = group("Bad", bad) }
      assert.equal(400, res.status, res.body)
      assert.equal("invalidValue", res.json.scimType)
    end
    res = s:request{ method = "PATCH", path = "Groups/" .. inner.json.id, body = patch{
      { op = "add", path = "members", value = { { value = inner.json.id } } } } }
    assert.equal(400, res.status)
    assert.equal(2, #s:groups())
  end)

  it("lists with honest paging, members on request, and omits them when configured", function()
    local users = s:seed(3)
    local list = {}
    for i = 1, 6 do list[i] = { displayName = "G" .. i, members = { { value = users[1].id } } } end
    s:seed_groups(list)
    local res = s:request{ path = "Groups?count=10" }
    assert.equal(6, res.json.totalResults)
    assert.equal(4, res.json.itemsPerPage)
    assert.equal(4, #res.json.Resources)
    assert.equal(1, #res.json.Resources[1].members)
    res = s:request{ path = "Groups?startIndex=5&count=3" }
    assert.equal(2, res.json.itemsPerPage)
    assert.equal("G5", res.json.Resources[1].displayName)
    s:configure{ omit_members_in_list = true }
    res = s:request{ path = "Groups" }
    assert.is_nil(res.json.Resources[1].members)
    assert.equal("G1", res.json.Resources[1].displayName)
    res = s:request{ path = "Groups?attributes=members" }
    assert.equal(users[1].id, res.json.Resources[1].members[1].value)
    -- A single group still has its members.
    assert.equal(1, #s:request{ path = "Groups/" .. res.json.Resources[1].id }.json.members)
    s:configure{ omit_members_in_list = false }
    res = s:request{ path = "Groups?filter=" .. escape('displayName eq "g3"') }
    assert.equal(1, res.json.totalResults)
    res = s:request{ path = "Groups?filter=" .. escape('members.value eq "' .. users[1].id .. '"') }
    assert.equal(6, res.json.totalResults)
  end)

  it("patches members with add and remove, by value filter too", function()
    local u = s:seed(4)
    local g = s:seed_groups{ { displayName = "Team", members = { { value = u[1].id } } } }[1]
    local path = "Groups/" .. g.id
    local res = s:request{ method = "PATCH", path = path, body = patch{
      { op = "add", path = "members", value = { { value = u[2].id }, { value = u[3].id } } },
      { op = "add", path = "members", value = { { value = u[1].id } } } } }    -- already in
    assert.equal(200, res.status, res.body)
    assert.same(sorted{ u[1].id, u[2].id, u[3].id }, member_ids(res.json))
    res = s:request{ method = "PATCH", path = path, body = patch{
      { op = "remove", path = 'members[value eq "' .. u[2].id .. '"]' } } }
    assert.equal(200, res.status, res.body)
    assert.same(sorted{ u[1].id, u[3].id }, member_ids(res.json))
    res = s:request{ method = "PATCH", path = path, body = patch{
      { op = "remove", path = "members", value = { { value = u[1].id } } },
      { op = "add", path = "members", value = { { value = u[4].id, type = "User" } } } } }
    assert.equal(200, res.status, res.body)
    assert.same(sorted{ u[3].id, u[4].id }, member_ids(s:request{ path = path }.json))
    res = s:request{ method = "PATCH", path = path, body = patch{
      { op = "replace", path = "displayName", value = "Team 2" } } }
    assert.equal("Team 2", res.json.displayName)
    assert.same(sorted{ u[3].id, u[4].id }, member_ids(res.json))
  end)

  it("drops a deleted user or group from every group's members", function()
    local u = s:seed(2)
    local inner = s:seed_groups{ { displayName = "In", members = { { value = u[1].id } } } }[1]
    local outer = s:seed_groups{ { displayName = "Out", members = {
      { value = u[1].id }, { value = u[2].id }, { value = inner.id } } } }[1]
    assert.equal(204, s:request{ method = "DELETE", path = "Users/" .. u[1].id }.status)
    assert.same(sorted{ u[2].id, inner.id },
      member_ids(s:request{ path = "Groups/" .. outer.id }.json))
    assert.is_nil(s:request{ path = "Groups/" .. inner.id }.json.members)
    assert.equal(204, s:request{ method = "DELETE", path = "Groups/" .. inner.id }.status)
    assert.same({ u[2].id }, member_ids(s:request{ path = "Groups/" .. outer.id }.json))
    assert.equal(404, s:request{ path = "Groups/" .. inner.id }.status)
  end)

  it("caps PATCH operations and values per operation with max_patch_ops", function()
    local u = s:seed(4)
    local g = s:seed_groups{ { displayName = "Cap" } }[1]
    s:configure{ max_patch_ops = 2 }
    local function add(ids)
      local v = {}
      for i, id in ipairs(ids) do v[i] = { value = id } end
      return { op = "add", path = "members", value = v }
    end
    local res = s:request{ method = "PATCH", path = "Groups/" .. g.id,
                           body = patch{ add{ u[1].id }, add{ u[2].id }, add{ u[3].id } } }
    assert.equal(400, res.status)
    assert.equal("tooMany", res.json.scimType)
    assert.matches("at most 2 operations", res.json.detail)
    res = s:request{ method = "PATCH", path = "Groups/" .. g.id,
                     body = patch{ add{ u[1].id, u[2].id, u[3].id } } }
    assert.equal(400, res.status)
    assert.matches("at most 2 values", res.json.detail)
    res = s:request{ method = "PATCH", path = "Groups/" .. g.id,
                     body = patch{ add{ u[1].id, u[2].id }, add{ u[3].id } } }
    assert.equal(200, res.status, res.body)
    assert.equal(3, #res.json.members)
    s:configure{ max_patch_ops = 0 }
  end)

  it("serves the same in meta mode, with the options given at start", function()
    local m = server.start{ mode = "meta", omit_members_in_list = true, max_patch_ops = 1 }
    local UA = { ["User-Agent"] = "t/1" }
    local u = m:seed(2)
    local res = m:request{ method = "POST", path = "Groups", headers = UA,
                           body = group("M", { u[1].id }) }
    assert.equal(201, res.status, res.body)
    assert.matches("^%d+$", res.json.id)
    local list = m:request{ path = "Groups", headers = UA }.json
    assert.is_nil(list.Resources[1].members)
    res = m:request{ method = "PATCH", path = "Groups/" .. res.json.id, headers = UA,
      body = patch{ { op = "add", path = "members", value = { { value = u[2].id } } },
                    { op = "remove", path = 'members[value eq "' .. u[1].id .. '"]' } } }
    assert.equal(400, res.status)
    assert.equal("tooMany", res.json.scimType)
    assert.is_false(m:request{ path = "ServiceProviderConfig", headers = UA }.json.bulk.supported)
    m:stop()
  end)
end)

describe("bulk (RFC 7644 3.7)", function()
  local s
  server.per_describe(_ENV, { verify_egress = true }, function(started) s = started end)

  local GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
  local BULK_REQ = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
  local BULK_RES = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
  local function bulk(ops, extra)
    local body = { schemas = { BULK_REQ }, Operations = ops }
    for k, v in pairs(extra or {}) do body[k] = v end
    return s:request{ method = "POST", path = "Bulk", body = body }
  end
  local function statuses(res)
    local out = {}
    for i, op in ipairs(res.json.Operations) do out[i] = op.status end
    return out
  end

  it("is advertised in ServiceProviderConfig, live", function()
    local spc = s:request{ path = "ServiceProviderConfig" }.json
    assert.same({ supported = true, maxOperations = 1000, maxPayloadSize = 1048576 }, spc.bulk)
    s:configure{ bulk = { max_operations = 50, max_payload = 4096 } }
    spc = s:request{ path = "ServiceProviderConfig" }.json
    assert.same({ supported = true, maxOperations = 50, maxPayloadSize = 4096 }, spc.bulk)
    s:configure{ bulk = false }
    assert.is_false(s:request{ path = "ServiceProviderConfig" }.json.bulk.supported)
    local res = bulk{}
    assert.equal(501, res.status)
    assert.same({ ERROR }, res.json.schemas)
    s:configure{ bulk = { max_operations = 1000, max_payload = 1048576 } }
  end)

  it("resolves bulkId references in any order: manager, members, paths", function()
    local boss_ref = { value = "bulkId:boss" }
    local res = bulk{
      { method = "POST", path = "/Users", bulkId = "ann",
        data = user("ann@example.com", { schemas = { CORE, ENTERPRISE },
                                         [ENTERPRISE] = { manager = boss_ref } }) },
      { method = "POST", path = "/Groups", bulkId = "team",
        data = { schemas = { GROUP }, displayName = "Team",
                 members = { { value = "bulkId:ann", type = "User" },
                             { value = "bulkId:inner", type = "Group" } } } },
      { method = "POST", path = "/Users", bulkId = "boss", data = user("boss@example.com") },
      { method = "POST", path = "/Groups", bulkId = "inner",
        data = { schemas = { GROUP }, displayName = "Inner" } },
      { method = "PATCH", path = "/Groups/bulkId:inner", data = { schemas = { PATCHOP },
        Operations = { { op = "add", path = "members",
                         value = { { value = "bulkId:boss" } } } } } },
    }
    assert.equal(200, res.status, res.body)
    assert.same({ BULK_RES }, res.json.schemas)
    assert.same({ "201", "201", "201", "201", "200" }, statuses(res))
    local ops = res.json.Operations
    assert.equal("ann", ops[1].bulkId)
    assert.equal("POST", ops[1].method)
    local ann, team, boss, inner = ops[1].response, ops[2].response, ops[3].response,
                                   ops[4].response
    assert.equal(s.url .. "Users/" .. ann.id, ops[1].location)
    assert.equal(ann.meta.version, ops[1].version)
    assert.equal(boss.id, s:request{ path = "Users/" .. ann.id }.json[ENTERPRISE].manager.value)
    local types = {}
    for _, m in ipairs(s:request{ path = "Groups/" .. team.id }.json.members) do
      types[m.value] = m.type
    end
    assert.same({ [ann.id] = "User", [inner.id] = "Group" }, types)
    assert.equal(boss.id, s:request{ path = "Groups/" .. inner.id }.json.members[1].value)
    local st = s:stats()
    assert.same({ ["POST /Bulk"] = 1, ["GET /Users/:id"] = 1, ["GET /Groups/:id"] = 2 },
                st.by_route)
    assert.equal(1, st.by_method.POST)
    assert.same({ requests = 1, operations = 5, by_route = { ["POST /Users"] = 2,
      ["POST /Groups"] = 2, ["PATCH /Groups/:id"] = 1 } }, st.bulk)
  end)

  it("runs PUT, PATCH and DELETE with version checks, and reports each failure", function()
    local a, b = table.unpack(s:seed(2))
    local res = bulk{
      { method = "PUT", path = "/Users/" .. a.id, version = a.meta.version,
        data = user(a.userName, { title = "Put" }) },
      { method = "PATCH", path = "/Users/" .. b.id, version = 'W/"999"', data = {
        schemas = { PATCHOP }, Operations = { { op = "replace", path = "title", value = "X" } } } },
      { method = "DELETE", path = "/Users/" .. b.id },
      { method = "DELETE", path = "/Users/nobody" },
      { method = "POST", path = "/Users", bulkId = "dup", data = user(a.userName) },
      { method = "GET", path = "/Users" },
      { method = "POST", path = "/Things", bulkId = "t", data = {} },
      { method = "POST", path = "/Users", data = user("nobulkid@example.com") },
      { method = "PATCH", path = "/Users/bulkId:unknown", data = { schemas = { PATCHOP },
        Operations = { { op = "replace", path = "title", value = "X" } } } },
    }
    assert.equal(200, res.status, res.body)
    assert.same({ "200", "412", "204", "404", "409", "400", "400", "400", "409" }, statuses(res))
    local ops = res.json.Operations
    assert.equal("Put", ops[1].response.title)
    assert.equal(s.url .. "Users/" .. b.id, ops[3].location)
    assert.is_nil(ops[3].response)
    assert.same({ ERROR }, ops[5].response.schemas)
    assert.equal("uniqueness", ops[5].response.scimType)
    assert.equal("409", ops[5].response.status)
    assert.equal("invalidPath", ops[7].response.scimType)
    assert.matches("bulkId:unknown names no POST", ops[9].response.detail)
    assert.equal(1, #s:users())
  end)

  it("stops after failOnErrors errors, and fails references to failed POSTs or cycles", function()
    local res = bulk({
      { method = "POST", path = "/Users", bulkId = "x", data = { schemas = { CORE } } },
      { method = "POST", path = "/Users", bulkId = "y", data = user("y@example.com") },
      { method = "POST", path = "/Users", bulkId = "z", data = { schemas = { CORE } } },
      { method = "POST", path = "/Users", bulkId = "w", data = user("w@example.com") },
    }, { failOnErrors = 2 })
    assert.same({ "400", "201", "400" }, statuses(res))
    assert.equal(1, #s:users())
    res = bulk{
      { method = "POST", path = "/Users", bulkId = "bad", data = { schemas = { CORE } } },
      { method = "POST", path = "/Groups", bulkId = "g", data = { schemas = { GROUP },
        displayName = "G", members = { { value = "bulkId:bad" } } } },
      { method = "POST", path = "/Groups", bulkId = "c1", data = { schemas = { GROUP },
        displayName = "C1", members = { { value = "bulkId:c2" } } } },
      { method = "POST", path = "/Groups", bulkId = "c2", data = { schemas = { GROUP },
        displayName = "C2", members = { { value = "bulkId:c1" } } } },
    }
    assert.same({ "400", "409", "409", "409" }, statuses(res))
    assert.matches("failed", res.json.Operations[2].response.detail)
    assert.matches("circular", res.json.Operations[3].response.detail)
    assert.same({}, s:groups())
  end)

  it("enforces maxOperations and maxPayloadSize with 413, and the BulkRequest schema", function()
    s:configure{ bulk = { max_operations = 2, max_payload = 1000 } }
    local ops = {}
    for i = 1, 3 do
      ops[i] = { method = "POST", path = "/Users", bulkId = "u" .. i,
                 data = user("u" .. i .. "@example.com") }
    end
    local res = bulk(ops)
    assert.equal(413, res.status)
    assert.same({ ERROR }, res.json.schemas)
    assert.matches("maxOperations %(2%)", res.json.detail)
    ops[3] = nil
    ops[2].data.title = string.rep("x", 1000)
    res = bulk(ops)
    assert.equal(413, res.status)
    assert.matches("maxPayloadSize %(1000%)", res.json.detail)
    -- Chunked (no Content-Length): counted while read.
    res = s:request{ method = "POST", path = "Bulk",
                     headers = { ["Transfer-Encoding"] = "chunked" },
                     body = { schemas = { BULK_REQ }, Operations = ops } }
    assert.equal(413, res.status)
    assert.same({}, s:users())
    s:configure{ bulk = { max_operations = 1000, max_payload = 1048576 } }
    res = s:request{ method = "POST", path = "Bulk", body = { Operations = {} } }
    assert.equal(400, res.status)
    assert.equal("invalidSyntax", res.json.scimType)
    assert.equal(400, bulk({}, { failOnErrors = 0 }).status)
  end)

  it("applies strict mode and max_patch_ops to each operation", function()
    s:configure{ strict = true, max_patch_ops = 1 }
    local u = s:seed(1)[1]
    local res = bulk{
      { method = "POST", path = "/Users", bulkId = "a", data = { userName = "a@example.com" } },
      { method = "PATCH", path = "/Users/" .. u.id, data = { schemas = { PATCHOP }, Operations = {
        { op = "replace", path = "title", value = "A" },
        { op = "replace", path = "nickName", value = "B" } } } },
    }
    s:configure{ strict = false, max_patch_ops = 0 }
    assert.same({ "400", "400" }, statuses(res))
    assert.equal("invalidSyntax", res.json.Operations[1].response.scimType)
    assert.equal("tooMany", res.json.Operations[2].response.scimType)
  end)
end)

describe("entra mode (API-driven inbound provisioning)", function()
  local s
  server.per_describe(_ENV, { mode = "entra" }, function(started) s = started end)

  local BULK_REQ = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
  local CUSTOM = "urn:ietf:params:scim:schemas:extension:contoso:1.0:User"
  local function op(i, extra)
    local data = { schemas = { CORE, ENTERPRISE, CUSTOM }, externalId = "E" .. i,
      userName = "u" .. i .. "@example.com", name = { givenName = "G", familyName = "F" .. i },
      active = true, [ENTERPRISE] = { employeeNumber = tostring(i), department = "D" },
      [CUSTOM] = { costCenter = "C" .. i } }
    for k, v in pairs(extra or {}) do data[k] = v end
    return { method = "POST", bulkId = "b" .. i, path = "/Users", data = data }
  end
  local function upload(ops, req)
    req = req or {}
    req.method, req.path = "POST", s.bulk_upload_url
    req.body = req.body or { schemas = { BULK_REQ }, Operations = ops }
    return s:request(req)
  end
  local function by_external()
    local out = {}
    for _, u in ipairs(s:users()) do out[u.externalId] = u end
    return out
  end

  it("takes a BulkRequest of POSTs with 202 and no body, upserting by externalId", function()
    assert.matches("^http://127%.0%.0%.1:%d+/scim/bulkUpload$", s.bulk_upload_url)
    local ops = {}
    for i = 1, 50 do ops[i] = op(i) end
    local res = upload(ops)
    assert.equal(202, res.status, res.body)
    assert.equal("", res.body)
    assert.matches("^" .. s.origin, res.headers.location)
    local users = by_external()
    assert.equal(50, #s:users())
    assert.equal("C7", users.E7[CUSTOM].costCenter)
    assert.equal("7", users.E7[ENTERPRISE].employeeNumber)
    local id = users.E7.id
    -- The same externalId again: an update of the same user, not a second one.
    res = upload{ op(7, { active = false, [CUSTOM] = { costCenter = "X" } }), op(51) }
    assert.equal(202, res.status)
    users = by_external()
    assert.equal(51, #s:users())
    assert.equal(id, users.E7.id)
    assert.equal(false, users.E7.active)
    assert.equal("X", users.E7[CUSTOM].costCenter)
    assert.equal(2, users.E7.meta.uploads)
    local st = s:stats()
    assert.same({ ["POST /bulkUpload"] = 2 }, st.by_route)
    assert.equal(52, st.bulk.operations)
    assert.equal(2, st.bulk.requests)
  end)

  it("refuses more than 50 operations, and malformed requests, storing nothing", function()
    local ops = {}
    for i = 1, 51 do ops[i] = op(i) end
    local res = upload(ops)
    assert.equal(400, res.status)
    assert.same({ ERROR }, res.json.schemas)
    assert.matches("at most 50", res.json.detail)
    local cases = {
      { { op(1) }, { content_type = "application/json" }, "Content%-Type" },
      { nil, { body = { Operations = { op(1) } } }, "schemas" },
      { { op(1), { method = "PUT", path = "/Users/x", bulkId = "p", data = {} } }, nil, "method" },
      { { op(1, { externalId = cjson.null }) }, nil, "externalId is required" },
      { { op(1, { schemas = { CORE } }) }, nil, "schemas do not list it" },
      { { op(1), { method = "POST", path = "/Groups", bulkId = "g", data = {} } }, nil, "path" },
      { {}, nil, "non%-empty" },
    }
    for i, c in ipairs(cases) do
      res = upload(c[1], c[2])
      assert.equal(400, res.status, "case " .. i .. ": " .. res.body)
      assert.matches(c[3], res.json.detail, 1)
    end
    assert.same({}, s:users())
    -- Nothing else is served.
    assert.equal(404, s:request{ path = "Users" }.status)
    assert.equal(401, upload({ op(1) }, { token = false }).status)
  end)

  it("throttles like the real service when a rate limit is set", function()
    s:configure{ rate_limit = { rps = 0.01, burst = 2 } }
    local codes = {}
    for i = 1, 3 do codes[i] = upload{ op(i) }.status end
    assert.same({ 202, 202, 429 }, codes)
    assert.equal(2, #s:users())
    assert.equal(1, s:stats().limiter.refused)
  end)
end)

-- The same behaviour from two independent implementations: the SCIMMY-based scim2 mode made
-- strict, and the hand-written minimal mode.
for _, opts in ipairs{
  { mode = "minimal", page_size = 5 },
  { mode = "scim2", page_size = 5, strict = true, omit_members_in_list = true, max_patch_ops = 10 },
} do
  describe("strict SCIM 2.0 behaviour, " .. opts.mode .. " mode", function()
    local s
    server.per_describe(_ENV, opts, function(started) s = started end)

    local GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
    local function patch(ops) return { schemas = { PATCHOP }, Operations = ops } end
    local function post(path, body)
      return s:request{ method = "POST", path = path, body = body }
    end

    it("creates, reads, replaces and deletes users, with uniqueness and ETags", function()
      local res = post("Users", user("ann@example.com", { schemas = { CORE, ENTERPRISE },
        password = "never-shown", [ENTERPRISE] = { department = "R&D" } }))
      assert.equal(201, res.status, res.body)
      local id = res.json.id
      assert.equal(s.url .. "Users/" .. id, res.headers.location)
      assert.equal(res.json.meta.version, res.headers.etag)
      assert.is_nil(res.json.password)
      assert.equal("R&D", res.json[ENTERPRISE].department)
      assert.equal(409, post("Users", user("ANN@example.com")).status)
      local put = s:request{ method = "PUT", path = "Users/" .. id,
                             body = user("ann@example.com", { title = "Boss" }) }
      assert.equal(200, put.status, put.body)
      assert.equal("Boss", put.json.title)
      assert.is_nil(put.json[ENTERPRISE])
      local stale = s:request{ method = "PUT", path = "Users/" .. id,
                               body = user("ann@example.com"),
                               headers = { ["If-Match"] = res.json.meta.version } }
      assert.equal(412, stale.status)
      assert.equal(204, s:request{ method = "DELETE", path = "Users/" .. id }.status)
      res = s:request{ path = "Users/" .. id }
      assert.equal(404, res.status)
      assert.same({ ERROR }, res.json.schemas)
    end)

    it("requires schemas, filters on one eq only, pages honestly, routes exactly", function()
      assert.equal("invalidSyntax", post("Users", { userName = "x@example.com" }).json.scimType)
      s:seed(7)
      local res = s:request{ path = "Users?filter="
                             .. escape('userName eq "USER00003@example.com"') }
      assert.equal(1, res.json.totalResults)
      res = s:request{ path = "Users?filter=" .. escape('userName sw "user"') }
      assert.equal(400, res.status)
      assert.equal("invalidFilter", res.json.scimType)
      res = s:request{ path = "Users?count=50&startIndex=6" }
      assert.equal(7, res.json.totalResults)
      assert.equal(2, res.json.itemsPerPage)
      assert.equal(6, res.json.startIndex)
      assert.equal("user00006@example.com", res.json.Resources[1].userName)
      assert.equal(5, s:request{ path = "Users" }.json.itemsPerPage)
      assert.equal(404, s:request{ path = "Users/" }.status)
      assert.equal(404, s:request{ path = "Groups/" }.status)
      local spc = s:request{ path = "ServiceProviderConfig" }.json
      assert.is_true(spc.patch.supported)
      assert.equal(5, spc.filter.maxResults)
    end)

    it("patches users: absent extension values, value filters, no-op 204", function()
      local u = s:seed{ user("p@example.com", { emails = {
        { value = "p@example.com", type = "work" },
        { value = "p@home.example", type = "home" } } }) }[1]
      local path = "Users/" .. u.id
      local res = s:request{ method = "PATCH", path = path, body = patch{
        { op = "replace", path = ENTERPRISE .. ":manager.value", value = "boss-1" },
        { op = "replace", path = 'emails[type eq "work"].value', value = "new@example.com" },
        { op = "add", path = "title", value = "T" } } }
      assert.equal(200, res.status, res.body)
      assert.equal("boss-1", res.json[ENTERPRISE].manager.value)
      local emails = {}
      for _, e in ipairs(res.json.emails) do emails[e.type] = e.value end
      assert.same({ work = "new@example.com", home = "p@home.example" }, emails)
      local same = s:request{ method = "PATCH", path = path, body = patch{
        { op = "replace", path = "title", value = "T" } } }
      assert.equal(204, same.status)
      res = s:request{ method = "PATCH", path = path, body = patch{
        { op = "remove", path = ENTERPRISE .. ":manager" } } }
      assert.equal(200, res.status, res.body)
      assert.is_nil((res.json[ENTERPRISE] or {}).manager)
      res = s:request{ method = "PATCH", path = path,
                       body = { Operations = { { op = "add", path = "title", value = "X" } } } }
      assert.equal(400, res.status)
    end)

    it("keeps groups: members checked and typed, omitted from listings, PATCH capped", function()
      local u = s:seed(12)
      local inner = post("Groups", { schemas = { GROUP }, displayName = "Inner" }).json
      local res = post("Groups", { schemas = { GROUP }, displayName = "Outer", members = {
        { value = u[1].id }, { value = inner.id, type = "Group" } } })
      assert.equal(201, res.status, res.body)
      local id = res.json.id
      assert.equal("Group", res.json.members[2].type)
      assert.equal("User", res.json.members[1].type)
      assert.equal(400, post("Groups", { schemas = { GROUP }, displayName = "Bad",
                                         members = { { value = "nobody" } } }).status)
      assert.equal(409, post("Groups", { schemas = { GROUP }, displayName = "outer" }).status)
      local list = s:request{ path = "Groups" }.json
      assert.equal(2, list.totalResults)
      for _, g in ipairs(list.Resources) do assert.is_nil(g.members) end
      list = s:request{ path = "Groups?attributes=members&filter="
                        .. escape('displayName eq "outer"') }.json
      assert.equal(2, #list.Resources[1].members)
      local ten, eleven = {}, {}
      for i = 2, 12 do
        if i <= 11 then ten[#ten + 1] = { value = u[i].id } end
        eleven[#eleven + 1] = { value = u[i].id }
      end
      res = s:request{ method = "PATCH", path = "Groups/" .. id, body = patch{
        { op = "add", path = "members", value = eleven } } }
      assert.equal(400, res.status)
      assert.equal("tooMany", res.json.scimType)
      res = s:request{ method = "PATCH", path = "Groups/" .. id, body = patch{
        { op = "add", path = "members", value = ten },
        { op = "remove", path = 'members[value eq "' .. u[1].id .. '"]' } } }
      assert.equal(200, res.status, res.body)
      assert.equal(11, #s:request{ path = "Groups/" .. id }.json.members)
      res = s:request{ method = "PATCH", path = "Groups/" .. id, body = patch{
        { op = "remove", path = "members", value = { { value = u[2].id } } } } }
      assert.equal(200, res.status, res.body)
      assert.equal(204, s:request{ method = "DELETE", path = "Users/" .. u[3].id }.status)
      assert.equal(9, #s:request{ path = "Groups/" .. id }.json.members)
      local ops = {}
      for i = 1, 11 do ops[i] = { op = "replace", path = "displayName", value = "N" .. i } end
      assert.equal(400,
        s:request{ method = "PATCH", path = "Groups/" .. id, body = patch(ops) }.status)
      local st = s:stats()
      assert.equal(4, st.by_route["PATCH /Groups/:id"])
      assert.equal(4, st.by_route["POST /Groups"])
    end)
  end)
end

describe("minimal mode's own strictness", function()
  it("refuses unknown and mistyped attributes, advertises no Bulk, lists its types", function()
    local s = server.start{ mode = "minimal" }
    local res = s:request{ method = "POST", path = "Users",
                           body = user("a@example.com", { externalID = "1", [ENTERPRISE] = {} }) }
    assert.equal(400, res.status)
    assert.equal("invalidValue", res.json.scimType)
    res = s:request{ method = "POST", path = "Users", body = user("a@example.com",
      { [ENTERPRISE] = { department = "D" } }) }
    assert.equal(400, res.status)
    assert.matches("not listed in 'schemas'", res.json.detail)
    res = s:request{ method = "POST", path = "Users", body = user("a@example.com",
      { active = "yes" }) }
    assert.equal(400, res.status)
    assert.matches("'active' must be a boolean", res.json.detail)
    assert.is_false(s:request{ path = "ServiceProviderConfig" }.json.bulk.supported)
    assert.equal(404, s:request{ method = "POST", path = "Bulk", body = {} }.status)
    local types = s:request{ path = "ResourceTypes" }.json
    assert.equal(2, types.totalResults)
    assert.equal("/Groups", types.Resources[2].endpoint)
    assert.equal(ENTERPRISE, types.Resources[1].schemaExtensions[1].schema)
    assert.equal("", s:log())
    s:stop()
  end)
end)
