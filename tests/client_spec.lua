-- scim.client: unit specs against a fake engine (no network), then integration specs
-- against the real test SCIM server (tests/server) over scim.http.
local client = require "scim.client"
local json = require "scim.json"

local BASE = "http://127.0.0.1:9/scim/v2/"
local TOKEN = "s3cret-t0ken-value"

-- {=== a fake engine: records each request, answers from a handler ===

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse_url(url)
  local path, q = url:match("^[^?]*//[^/]+(/[^?]*)%??(.*)$")
  local params = {}
  for k, v in q:gmatch("([^&=]+)=([^&]*)") do params[k] = unescape(v) end
  return path, params
end

local function response(status, doc, headers)
  local h = headers or {}
  if doc ~= nil and h["content-type"] == nil then h["content-type"] = "application/scim+json" end
  local body = doc
  if type(doc) == "table" then body = assert(json.encode(doc)) end
  return { status = status, headers = h, body = body or "", attempts = 1 }
end

local function fake_engine(handler)
  local e = { sent = {} }
  function e.request(self, req)
    self.sent[#self.sent + 1] = req
    local path, params = parse_url(req.url)
    return handler(req, path, params, #self.sent)
  end
  function e.stats(self) return { requests = #self.sent } end
  return e
end

local function new_client(handler, opts)
  local engine = fake_engine(handler)
  local o = { url = BASE, token = TOKEN, engine = engine }
  for k, v in pairs(opts or {}) do o[k] = v end
  return client.new(o), engine
end

-- A list endpoint over `users` that serves at most `max` per page and honours startIndex.
local function lister(users, max, spc)
  return function(req, path, params)
    if path:find("ServiceProviderConfig") then
      if spc then return response(200, spc) end
      return response(404, { detail = "no such endpoint" })
    end
    assert(req.method == "GET" and path == "/scim/v2/Users", req.method .. " " .. path)
    local start = tonumber(params.startIndex) or 1
    local count = math.min(tonumber(params.count) or max, max)
    local page = json.array()
    for i = start, math.min(#users, start + count - 1) do page[#page + 1] = users[i] end
    return response(200, { schemas = { "urn:ietf:params:scim:api:messages:2.0:ListResponse" },
      totalResults = #users, startIndex = start, itemsPerPage = #page, Resources = page })
  end
end

local function make_users(n)
  local t = {}
  for i = 1, n do t[i] = { id = "id" .. i, userName = "user" .. i .. "@example.com" } end
  return t
end

local function collect(iter)
  local out = {}
  for u in iter do out[#out + 1] = u end
  return out
end

-- }===

describe("scim.client", function()
  after_each(function()
    collectgarbage()
    collectgarbage()
  end)

  describe("construction", function()
    it("validates its options without echoing the token", function()
      assert.has_error(function() client.new{ url = BASE, bogus = 1 } end,
        "scim.client.new: unknown option 'bogus'")
      assert.has_error(function() client.new{ url = "ftp://x/", engine = {} } end)
      assert.has_error(function() client.new{ url = BASE .. "?a=b", engine = {} } end)
      assert.has_error(function() client.new{ token = "t", engine = {} } end,
        "scim.client.new: no url given and the scim2 dialect has no default")
      assert.has_error(function() client.new{ url = BASE, dialect = "nope", engine = {} } end)
      assert.has_error(function() client.new{ url = BASE, dialect = "../x", engine = {} } end,
        "scim.client.new: unknown dialect '../x' (scim2, meta, workplace_v1, entra)")
      local ok, err = pcall(client.new, { url = BASE, token = "abc\r\nX-Evil: 1", engine = {} })
      assert.is_false(ok)
      assert.not_matches("Evil", err)
      assert.has_error(function() client.new{ url = BASE, timeout = "3", engine = {} } end,
        "scim.client.new: option 'timeout' must be a number, got string")
      for _, bad in ipairs{ 0, -1, 2.5, 0 / 0, math.huge } do
        assert.has_error(function() client.new{ url = BASE, max_pages = bad, engine = {} } end,
          "scim.client.new: max_pages must be a whole number, at least 1")
      end
      assert.equal(3, client.new{ url = BASE, max_pages = 3.0, engine = {} }.max_pages)
    end)

    it("keeps the token out of the object", function()
      local c = client.new{ url = BASE, token = TOKEN, engine = {} }
      local function walk(t, seen)
        seen = seen or {}
        if seen[t] then return end
        seen[t] = true
        for k, v in pairs(t) do
          assert.not_equal(TOKEN, v, tostring(k))
          if type(v) == "string" then assert.not_matches(TOKEN, v, 1, true) end
          if type(v) == "table" then walk(v, seen) end
        end
      end
      walk(c)
    end)

    it("adds the trailing slash and takes the dialect's default URL", function()
      local c = client.new{ url = "http://127.0.0.1:9/scim/v2", engine = {} }
      assert.equal(BASE, c.url)
      local m = client.new{ dialect = "meta", engine = {} }
      assert.equal("https://scim.workplace.com/", m.url)
      assert.equal("meta", m.dialect.name)
      assert.matches("scim.client", tostring(c))
    end)

    it("blames the caller for a misused method", function()
      local c = new_client(function() return response(204) end)
      local function raised(f)
        local ok, err = pcall(f)
        assert.is_false(ok)
        return err
      end
      -- The position is the line of the call in this file, not one inside scim.client.
      local here = "^tests/client_spec%.lua:%d+: "
      assert.matches(here .. "bad argument #1 to 'get' %(id string expected, got table%)$",
        raised(function() c:get({}) end))
      assert.matches(here .. "bad argument #2 to 'patch' %(operation 1: remove needs a path%)$",
        raised(function() c:patch("1", { { op = "remove" } }) end))
      assert.matches(here .. "bad argument #1 to 'create' %(resource table expected, got nil%)$",
        raised(function() c:create() end))
      assert.matches(here .. "bad argument #2 to 'replace'",
        raised(function() c:replace("1", "x") end))
      assert.matches(here .. "bad argument #1 to 'find_user'",
        raised(function() c:find_user(7) end))
      assert.matches(here .. "users: count must be a positive integer$",
        raised(function() c:users{ count = 0 } end))
      assert.matches(here .. "bad self to 'get'", raised(function() c.get({}, "1") end))
    end)

    it("raises when used after close", function()
      local c = new_client(function() return response(204) end)
      c:close()
      c:close()
      assert.has_error(function() c:get("1") end, "attempt to use a closed scim.client")
    end)
  end)

  describe("requests", function()
    it("sends SCIM headers, the token and percent-encoded ids", function()
      local c, e = new_client(function(req, path)
        if req.method == "GET" then
          assert.equal("/scim/v2/Users/a%2Fb%20c%3F%23%25%22", path)
          return response(200, { id = 'a/b c?#%"', userName = "x" })
        end
        return response(201, { id = "1" })
      end)
      local u = assert(c:get('a/b c?#%"'))
      assert.equal("x", u.userName)
      assert.equal("application/scim+json, application/json", e.sent[1].headers.Accept)
      assert.equal("Bearer " .. TOKEN, e.sent[1].headers.Authorization)
      assert.is_nil(e.sent[1].headers["Content-Type"])
      assert.is_nil(e.sent[1].body)
      assert(c:create{ userName = "x" })
      assert.equal("application/scim+json", e.sent[2].headers["Content-Type"])
      assert.equal(BASE .. "Users", e.sent[2].url)
      assert.same({ schemas = { "urn:ietf:params:scim:schemas:core:2.0:User" }, userName = "x" },
        json.decode(e.sent[2].body))
      assert.has_error(function() c:get({}) end)
    end)

    it("refuses the ids '', '.' and '..' with BAD_ID, sending nothing", function()
      local c, e = new_client(function() return response(204) end)
      for _, id in ipairs{ "", ".", ".." } do
        for _, call in ipairs{
          function() return c:get(id) end,
          function() return c:delete(id) end,
          function() return c:replace(id, { userName = "x" }) end,
          function() return c:patch(id, { { op = "replace", path = "title", value = "x" } }) end,
        } do
          local v, err, code = call()
          assert.is_nil(v)
          assert.equal("BAD_ID", code)
          assert.matches("refusing the id '" .. id:gsub("%.", "%%.") .. "'", tostring(err))
        end
      end
      assert.equal(0, #e.sent)
      -- Dots inside an id are an ordinary segment; everything else is percent-encoded.
      assert(c:delete("..."))
      assert(c:delete("a.b"))
      assert.equal(BASE .. "Users/...", e.sent[1].url)
      assert.equal(BASE .. "Users/a.b", e.sent[2].url)
    end)

    it("accepts application/json answers and refuses other types", function()
      local ct = "application/json; charset=utf-8"
      local c = new_client(function()
        return response(200, '{"id":"1"}', { ["content-type"] = ct })
      end)
      assert.equal("1", c:get("1").id)
      ct = "text/html"
      local v, err, code = c:get("1")
      assert.is_nil(v)
      assert.equal("BAD_JSON", code)
      assert.equal("GET " .. BASE .. "Users/1: 200 OK: expected a JSON response, got text/html",
        tostring(err))
    end)

    it("reports malformed and empty bodies as BAD_JSON", function()
      local body = "{not json"
      local c = new_client(function() return response(200, body) end)
      local v, err, code = c:get("7")
      assert.is_nil(v)
      assert.equal("BAD_JSON", code)
      assert.matches("^GET http://127%.0%.0%.1:9/scim/v2/Users/7: 200 OK: invalid JSON",
        err.message)
      body = ""
      assert.equal("BAD_JSON", select(3, c:get("7")))
      body = "[1,2]"
      assert.equal("BAD_JSON", select(3, c:create{ userName = "x" }))
    end)

    it("sends attributes and excludedAttributes on get", function()
      local c, e = new_client(function() return response(200, { id = "1" }) end)
      assert(c:get("1", { attributes = { "userName", "name.givenName" } }))
      assert.equal(BASE .. "Users/1?attributes=userName,name.givenName", e.sent[1].url)
      assert.has_error(function() c:get("1", { attributes = { "a b" } }) end)
    end)
  end)

  describe("errors", function()
    it("prints as METHOD URL: status reason: detail and carries the fields", function()
      local c = new_client(function()
        return response(404, { schemas = { "urn:ietf:params:scim:api:messages:2.0:Error" },
          status = "404", detail = "User 42 not found" })
      end)
      local v, err, code = c:patch("42", { { op = "replace", path = "title", value = "x" } })
      assert.is_nil(v)
      assert.equal("NOT_FOUND", code)
      assert.is_true(client.is_error(err))
      assert.equal("PATCH " .. BASE .. "Users/42: 404 Not Found: User 42 not found", tostring(err))
      assert.equal("error: PATCH " .. BASE .. "Users/42: 404 Not Found: User 42 not found",
        "error: " .. err)
      assert.equal(404, err.status)
      assert.equal("User 42 not found", err.detail)
      assert.equal("PATCH", err.method)
      assert.equal(BASE .. "Users/42", err.url)
      assert.equal("NOT_FOUND", err.code)
    end)

    it("maps statuses and scimTypes to stable codes", function()
      local status, doc
      local c = new_client(function() return response(status, doc) end)
      local cases = {
        { 409, { scimType = "uniqueness", detail = "taken" }, "UNIQUENESS",
          "POST " .. BASE .. "Users: 409 Conflict (uniqueness): taken" },
        { 409, nil, "UNIQUENESS", "POST " .. BASE .. "Users: 409 Conflict" },
        { 400, { scimType = "invalidValue", detail = "bad" }, "INVALID_VALUE" },
        { 400, { scimType = "invalidSyntax" }, "INVALID_SYNTAX" },
        { 400, { detail = "?" }, "HTTP_400" },
        { 401, { detail = "no" }, "UNAUTHORIZED" },
        { 403, nil, "FORBIDDEN" },
        { 412, nil, "PRECONDITION_FAILED" },
        { 429, nil, "RATE_LIMITED" },
        { 500, "oops", "HTTP_500" },
        { 418, nil, "HTTP_418", "POST " .. BASE .. "Users: 418 HTTP error" },
      }
      for _, case in ipairs(cases) do
        status, doc = case[1], case[2]
        local v, err, code = c:create{ userName = "x" }
        assert.is_nil(v)
        assert.equal(case[3], code, tostring(err))
        assert.equal(case[3], err.code)
        assert.equal(case[1], err.status)
        if case[4] then assert.equal(case[4], tostring(err)) end
      end
    end)

    it("reads SCIM 1.1, Graph-style and plain-text error bodies", function()
      local res
      local c = new_client(function() return res end)
      res = response(404, { Errors = { { description = "User not found", code = 404 } } })
      assert.equal("GET " .. BASE .. "Users/9: 404 Not Found: User not found",
        tostring(select(2, c:get("9"))))
      res = response(400, { error = { message = "Invalid parameter", code = 100 } })
      assert.equal("Invalid parameter", select(2, c:get("9")).detail)
      res = response(502, "  upstream\n  timed out ", { ["content-type"] = "text/plain" })
      assert.equal("GET " .. BASE .. "Users/9: 502 Bad Gateway: upstream timed out",
        tostring(select(2, c:get("9"))))
      res = response(503, "<html><body>down</body></html>", { ["content-type"] = "text/html" })
      assert.equal("GET " .. BASE .. "Users/9: 503 Service Unavailable",
        tostring(select(2, c:get("9"))))
      res = response(500, "a\27[2Jb\0c", { ["content-type"] = "text/plain" })
      assert.equal("a [2Jb c", select(2, c:get("9")).detail)
      res = response(500, string.rep("x", 2000), { ["content-type"] = "text/plain" })
      assert.is_true(#tostring(select(2, c:get("9"))) < 300)
      -- Not UTF-8: each stray byte shows as "?", and a long body keeps its first 200 bytes.
      res = response(500, "caf\233 \255\254 ok", { ["content-type"] = "text/plain" })
      assert.equal("caf? ?? ok", select(2, c:get("9")).detail)
      res = response(500, "a\255" .. string.rep("x", 2000), { ["content-type"] = "text/plain" })
      assert.equal("a?" .. string.rep("x", 198) .. "...", select(2, c:get("9")).detail)
      -- A character the cut would split is left out whole.
      res = response(500, string.rep("x", 199) .. "é", { ["content-type"] = "text/plain" })
      assert.equal(string.rep("x", 199) .. "...", select(2, c:get("9")).detail)
      res = response(500, string.rep("x", 198) .. "é!", { ["content-type"] = "text/plain" })
      assert.equal(string.rep("x", 198) .. "é", select(2, c:get("9")).detail:sub(1, 200))
    end)

    it("never shows the token, even when a server echoes it", function()
      local c = new_client(function()
        return response(401, { detail = "bad token Bearer " .. TOKEN .. " for " .. TOKEN })
      end)
      local _, err = c:get("1")
      assert.equal("UNAUTHORIZED", err.code)
      assert.not_matches(TOKEN, tostring(err), 1, true)
      assert.not_matches(TOKEN, err.detail, 1, true)
      assert.equal("bad token Bearer [redacted] for [redacted]", err.detail)
    end)

    it("hides credentials written into the URL", function()
      local c = client.new{ url = "http://admin:pw@127.0.0.1:9/scim/", engine = fake_engine(
        function() return response(404) end) }
      local _, err = c:get("1")
      assert.equal("GET http://[redacted]@127.0.0.1:9/scim/Users/1: 404 Not Found", tostring(err))
    end)

    it("turns transport failures into the fail triple with the engine's code", function()
      local c = new_client(function(req)
        return nil, req.method .. " " .. req.url .. ": Couldn't connect to server",
          "COULDNT_CONNECT"
      end)
      local v, err, code = c:delete("5")
      assert.is_nil(v)
      assert.equal("COULDNT_CONNECT", code)
      assert.equal("DELETE " .. BASE .. "Users/5: Couldn't connect to server", tostring(err))
      assert.is_nil(err.status)
    end)

    it("refuses to send what it cannot encode, naming the field", function()
      local c, e = new_client(function() return response(201, { id = "1" }) end)
      local v, err, code = c:create{ userName = "bad\255" }
      assert.is_nil(v)
      assert.equal("ENCODE", code)
      assert.equal("POST " .. BASE .. "Users: cannot encode the request: "
        .. "field 'userName' is not valid UTF-8", tostring(err))
      assert.equal(0, #e.sent)
    end)
  end)

  describe("operations", function()
    it("patches with a PatchOp message; 204 gives true", function()
      local status = 200
      local c, e = new_client(function()
        if status == 204 then return response(204) end
        return response(200, { id = "1", title = "Boss" })
      end)
      local r = assert(c:patch("1", { { op = "Replace", path = "title", value = "Boss" },
        { op = "remove", path = "nickName" }, { op = "add", value = { emails = {} } } }))
      assert.equal("Boss", r.title)
      local sent = e.sent[1]
      assert.equal("PATCH", sent.method)
      assert.equal('{"Operations":[{"op":"replace","path":"title","value":"Boss"},'
        .. '{"op":"remove","path":"nickName"},{"op":"add","value":{"emails":[]}}],'
        .. '"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}', sent.body)
      status = 204
      assert.is_true(c:patch("1", { { op = "replace", path = "title", value = "x" } }))
      assert.has_error(function() c:patch("1", {}) end)
      assert.has_error(function() c:patch("1", { { op = "move" } }) end)
      assert.has_error(function() c:patch("1", { { op = "remove" } }) end)
    end)

    it("refuses PATCH in a dialect without it, sending nothing", function()
      local c, e = new_client(function() return response(200, {}) end,
        { dialect = "workplace_v1", url = "http://127.0.0.1:9/scim/v1/" })
      local v, err, code = c:patch("1", { { op = "replace", path = "title", value = "x" } })
      assert.is_nil(v)
      assert.equal("NOT_SUPPORTED", code)
      assert.matches("workplace_v1 dialect has no PATCH", tostring(err))
      assert.equal(0, #e.sent)
    end)

    it("deletes: 204 and 200 are done, 404 is NOT_FOUND", function()
      local status = 204
      local c = new_client(function() return response(status) end)
      assert.is_true(c:delete("1"))
      status = 200
      assert.is_true(c:delete("1"))
      status = 404
      local v, err, code = c:delete("1")
      assert.is_nil(v)
      assert.equal("NOT_FOUND", code)
      assert.equal("DELETE " .. BASE .. "Users/1: 404 Not Found", tostring(err))
    end)

    it("replaces with If-Match from meta.version, the last read, or not at all", function()
      local spc
      local c, e = new_client(function(req, path)
        if path:find("ServiceProviderConfig") then return response(200, spc) end
        if req.method == "GET" then
          return response(200, { id = "1", meta = { version = 'W/"v1"' } })
        end
        return response(200, { id = "1", meta = { version = 'W/"v2"' } }, { etag = 'W/"v2"' })
      end)
      assert(c:replace("1", { userName = "a", meta = { version = 'W/"v0"' } }))
      assert.equal('W/"v0"', e.sent[1].headers["If-Match"])
      assert(c:get("1"))
      assert(c:replace("1", { userName = "a" }))
      assert.equal('W/"v1"', e.sent[3].headers["If-Match"])
      -- The version the PUT returned is the one the next PUT requires.
      assert(c:replace("1", { userName = "a" }))
      assert.equal('W/"v2"', e.sent[4].headers["If-Match"])
      assert(c:replace("1", { userName = "a" }, { etag = false }))
      assert.is_nil(e.sent[5].headers["If-Match"])
      -- A server that says it has no ETags gets none.
      spc = { etag = { supported = false } }
      assert.is_false(c:capabilities().etag)
      assert(c:replace("1", { userName = "a", meta = { version = "x" } }))
      assert.is_nil(e.sent[#e.sent].headers["If-Match"])
      assert.equal("PUT", e.sent[#e.sent].method)
    end)

    it("finds a user by userName, escaping the value", function()
      local found = {}
      local c, e = new_client(function()
        return response(200, { totalResults = #found, Resources = found, startIndex = 1,
          itemsPerPage = #found })
      end)
      assert.is_false(c:find_user('a" or userName pr "'))
      local _, params = parse_url(e.sent[1].url)
      assert.equal([[userName eq "a\" or userName pr \""]], params.filter)
      assert.equal("2", params.count)
      assert.equal("1", params.startIndex)
      assert.not_matches(" ", e.sent[1].url)
      found = { { id = "7", userName = "Ada@Example.com" } }
      assert.equal("7", c:find_user("ada@example.com").id)
      assert(c:find_user("ada@example.com", { attributes = { "title" } }))
      assert.equal("title,userName", select(2, parse_url(e.sent[#e.sent].url)).attributes)
      found = { { id = "7", userName = "ada@example.com" },
        { id = "8", userName = "ADA@example.com" } }
      local v, err, code = c:find_user("ada@example.com")
      assert.is_nil(v)
      assert.equal("AMBIGUOUS", code)
      assert.matches('more than one user has userName "ada@example.com"', tostring(err))
      -- A server filter that matched something else is not a match.
      found = { { id = "9", userName = "other@example.com" } }
      assert.is_false(c:find_user("ada@example.com"))
      assert.equal("INVALID_VALUE", select(3, c:find_user("bad\255")))
      assert.equal("INVALID_VALUE", select(3, c:find_user("")))
    end)
  end)

  describe("paging", function()
    it("pages by what the server returned when it caps the page size", function()
      local users = make_users(23)
      local c, e = new_client(lister(users, 5))
      local got = collect(c:users{ count = 10 })
      assert.equal(23, #got)
      for i = 1, 23 do assert.equal("id" .. i, got[i].id) end
      -- startIndex 1, 6, 11, 16, 21, and nothing after the total; no capabilities read
      -- since the page size was given.
      local starts = {}
      for i = 1, #e.sent do
        local _, p = parse_url(e.sent[i].url)
        starts[#starts + 1] = tonumber(p.startIndex)
        assert.equal("10", p.count)
      end
      assert.same({ 1, 6, 11, 16, 21 }, starts)
    end)

    it("uses the server's maximum page size and stops exactly at totalResults", function()
      local users = make_users(40)
      local c, e = new_client(lister(users, 1000,
        { filter = { supported = true, maxResults = 20 } }))
      local all = assert(c:find(nil))
      assert.equal(40, #all)
      assert.equal(3, #e.sent)  -- ServiceProviderConfig, then two pages of 20
      local _, p = parse_url(e.sent[3].url)
      assert.equal("21", p.startIndex)
      assert.equal("20", p.count)
    end)

    it("handles an empty result with or without Resources", function()
      local c = new_client(function(_, path)
        if path:find("ServiceProviderConfig") then return response(404) end
        return response(200, { totalResults = 0, itemsPerPage = 0, startIndex = 1 })
      end)
      assert.same({}, assert(c:find('userName eq "nobody"')))
      assert.same({}, collect(c:users()))
    end)

    it("fails on a server that ignores startIndex and pages forever", function()
      local users = make_users(10)
      local c = new_client(function(_, path)
        if path:find("ServiceProviderConfig") then return response(404) end
        return response(200, { totalResults = 1000, startIndex = 1, itemsPerPage = 10,
          Resources = users })
      end)
      local v, err, code = c:find(nil, { count = 10 })
      assert.is_nil(v)
      assert.equal("BAD_PAGING", code)
      assert.matches("the server returned the same page again %(startIndex 11 began with the "
        .. "same user as startIndex 1%)", tostring(err))
      -- Likewise without a startIndex in the answer.
      c = new_client(function(_, path)
        if path:find("ServiceProviderConfig") then return response(404) end
        return response(200, { totalResults = 1000, Resources = users })
      end)
      assert.equal("BAD_PAGING", select(3, c:find(nil, { count = 10 })))
    end)

    it("stops an endless listing at max_pages", function()
      local n = 0
      local c = new_client(function(_, path, params)
        if path:find("ServiceProviderConfig") then return response(404) end
        n = n + 1
        local start = tonumber(params.startIndex)
        -- A total that keeps growing ahead of the reader.
        return response(200, { totalResults = start + 100, startIndex = start,
          Resources = { { id = "u" .. start } } })
      end, { max_pages = 50 })
      local v, err, code = c:find(nil)
      assert.is_nil(v)
      assert.equal("BAD_PAGING", code)
      assert.matches("stopped after 50 pages", tostring(err))
      assert.equal(50, n)
    end)

    it("fails on an empty page before totalResults", function()
      local c = new_client(function(_, path, params)
        if path:find("ServiceProviderConfig") then return response(404) end
        if params.startIndex == "1" then
          return response(200, { totalResults = 5, startIndex = 1, itemsPerPage = 2,
            Resources = { { id = "a" }, { id = "b" } } })
        end
        return response(200, { totalResults = 5, startIndex = 3, itemsPerPage = 0,
          Resources = {} })
      end)
      local seen = {}
      local ok, err = pcall(function()
        for u in c:users() do seen[#seen + 1] = u.id end
      end)
      assert.is_false(ok)
      assert.same({ "a", "b" }, seen)
      assert.is_true(client.is_error(err))
      assert.equal("BAD_PAGING", err.code)
      assert.equal("GET " .. BASE .. "Users?startIndex=3&count=100: page at startIndex 3 has no "
        .. "Resources, but totalResults is 5", tostring(err))
    end)

    it("reads to an empty page when totalResults is missing, and honours limit", function()
      local users = make_users(7)
      local c = new_client(function(_, path, params)
        if path:find("ServiceProviderConfig") then return response(404) end
        local start, count = tonumber(params.startIndex), tonumber(params.count)
        local page = {}
        for i = start, math.min(#users, start + count - 1) do page[#page + 1] = users[i] end
        return response(200, { Resources = page })
      end)
      assert.equal(7, #assert(c:find(nil, { count = 3 })))
      assert.equal(4, #assert(c:find(nil, { count = 3, limit = 4 })))
    end)

    it("advances by what came, whatever startIndex the server claims", function()
      local users = make_users(25)
      local c, e = new_client(function(_, path, params)
        if path:find("ServiceProviderConfig") then return response(404) end
        local start0 = tonumber(params.startIndex) - 1  -- treats our 1 as its 0
        local page = {}
        for i = start0 + 1, math.min(#users, start0 + 10) do page[#page + 1] = users[i] end
        return response(200, { totalResults = 25, startIndex = start0, Resources = page })
      end)
      local got = assert(c:find(nil, { count = 10 }))
      assert.equal(25, #got)
      assert.equal("id25", got[25].id)
      assert.equal(3, #e.sent)
    end)

    it("passes filter, attributes and sorting in the query", function()
      local c, e = new_client(lister({}, 10))
      assert(c:find('userName sw "a&b"', { attributes = { "userName" }, sort_by = "userName",
        sort_order = "descending", count = 3 }))
      assert.equal(BASE .. "Users?filter=userName%20sw%20%22a%26b%22&startIndex=1&count=3"
        .. "&attributes=userName&sortBy=userName&sortOrder=descending", e.sent[1].url)
      assert.has_error(function() c:users{ count = 0 } end)
      assert.has_error(function() c:users{ bogus = 1 } end)
      assert.has_error(function() c:find(42) end)
    end)

    it("raises the error object from the iterator, returns the triple from find", function()
      local c = new_client(function(_, path)
        if path:find("ServiceProviderConfig") then return response(404) end
        return response(400, { scimType = "invalidFilter", detail = "bad filter" })
      end)
      local v, err, code = c:find("bogus")
      assert.is_nil(v)
      assert.equal("INVALID_FILTER", code)
      assert.equal(400, err.status)
      local ok, e2 = pcall(function() for _ in c:users{ filter = "bogus" } do end end)
      assert.is_false(ok)
      assert.equal("INVALID_FILTER", e2.code)
    end)
  end)

  describe("capabilities", function()
    it("reads /ServiceProviderConfig once and lets it override the dialect", function()
      local c, e = new_client(lister({}, 10, {
        patch = { supported = false }, etag = { supported = true },
        filter = { supported = true, maxResults = 250 },
        bulk = { supported = true, maxOperations = 1000, maxPayloadSize = 1048576 },
        sort = { supported = true }, changePassword = { supported = false },
      }))
      local caps = c:capabilities()
      assert.same({ source = "server", patch = false, etag = true, max_page_size = 250,
        filter = true, sort = true, change_password = false,
        bulk = { supported = true, max_operations = 1000, max_payload_size = 1048576 } }, caps)
      assert.equal(caps, c:capabilities())
      assert.equal(1, #e.sent)
      assert.equal(BASE .. "ServiceProviderConfig", e.sent[1].url)
    end)

    it("keeps the dialect's defaults when there is no such endpoint", function()
      local c, e = new_client(lister({}, 10))
      local caps = c:capabilities()
      assert.equal("dialect", caps.source)
      assert.is_true(caps.patch)
      assert.equal(100, caps.max_page_size)
      c:capabilities()
      assert.equal(1, #e.sent)
    end)

    it("asks again after a passing failure", function()
      local status = 503
      local c, e = new_client(function()
        if status == 503 then return response(503) end
        return response(200, { patch = { supported = true }, filter = { maxResults = 7 } })
      end)
      assert.equal("dialect", c:capabilities().source)
      status = 200
      assert.equal(7, c:capabilities().max_page_size)
      assert.equal(2, #e.sent)
    end)

    it("uses the SCIM 1.x endpoint and defaults for workplace_v1", function()
      local c, e = new_client(function() return response(404) end,
        { dialect = "workplace_v1", url = "http://127.0.0.1:9/scim/v1/" })
      local caps = c:capabilities()
      assert.is_false(caps.patch)
      assert.equal("http://127.0.0.1:9/scim/v1/ServiceProviderConfigs", e.sent[1].url)
      assert.equal("application/json", e.sent[1].headers.Accept)
      assert(not c:create{ userName = "x" })
      assert.equal("application/json", e.sent[2].headers["Content-Type"])
      assert.same({ "urn:scim:schemas:core:1.0" }, json.decode(e.sent[2].body).schemas)
    end)
  end)

  -- {=== integration: the real test server over scim.http ===

  describe("against the scim2 test server", function()
    local server = require "support.server"
    local http = require "scim.http"
    local filter = require "scim.filter"
    local s, c
    server.per_describe(_ENV, { mode = "scim2", page_size = 50 },
      function(started) s = started end)

    before_each(function()
      c = client.new{ url = s.url, token = s.token, http = { backoff_base = 0.01 } }
    end)

    after_each(function()
      if c then c:close() end
      c = nil
    end)

    it("does every operation", function()
      local u, err = c:create{ userName = "ada@example.com",
        name = { givenName = "Ada", familyName = "Lovelace" },
        emails = { { value = "ada@example.com", type = "work", primary = true } },
        ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] = { department = "R&D" },
        schemas = { "urn:ietf:params:scim:schemas:core:2.0:User",
          "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User" } }
      assert(u, tostring(err))
      assert.is_string(u.id)
      assert.equal("Ada", u.name.givenName)

      local got = assert(c:get(u.id))
      assert.equal("ada@example.com", got.userName)
      local ent = got["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]
      assert.equal("R&D", ent.department)
      assert.equal(u.id, assert(c:find_user("ADA@example.com")).id)
      assert.is_false(c:find_user("nobody@example.com"))

      local p = assert(c:patch(u.id, { { op = "replace", path = "title", value = "Countess" } }))
      assert.equal("Countess", p == true and c:get(u.id).title or p.title)

      got = assert(c:get(u.id))
      got.meta, got.id = nil, nil
      got.title = "Analyst"
      local r = assert(c:replace(u.id, got))
      assert.equal("Analyst", r.title)

      local dup, derr, dcode = c:create{ userName = "Ada@Example.com" }
      assert.is_nil(dup)
      assert.equal("UNIQUENESS", dcode)
      assert.equal(409, derr.status)
      assert.equal("uniqueness", derr.scim_type)

      assert.is_true(c:delete(u.id))
      local v, gerr, code = c:get(u.id)
      assert.is_nil(v)
      assert.equal("NOT_FOUND", code)
      assert.equal("GET " .. s.url .. "Users/" .. u.id .. ": 404 Not Found: Resource " .. u.id
        .. " not found", tostring(gerr))
      assert.equal("NOT_FOUND", select(3, c:delete(u.id)))
      assert.equal("NOT_FOUND", select(3, c:patch(u.id, { { op = "remove", path = "title" } })))
    end)

    it("reads the server's capabilities", function()
      local caps = c:capabilities()
      assert.equal("server", caps.source)
      assert.is_true(caps.patch)
      assert.is_true(caps.etag)
      assert.equal(50, caps.max_page_size)
    end)

    it("refuses a stale replace with PRECONDITION_FAILED", function()
      local u = assert(c:create{ userName = "etag@example.com" })
      local seen = assert(c:get(u.id))
      -- Someone else changes the user after our read.
      local other = client.new{ url = s.url, token = s.token }
      assert(other:patch(u.id, { { op = "replace", path = "title", value = "theirs" } }))
      other:close()
      seen.title = "ours"
      local v, err, code = c:replace(u.id, { userName = seen.userName, title = "ours",
        meta = seen.meta })
      assert.is_nil(v)
      assert.equal("PRECONDITION_FAILED", code)
      assert.equal(412, err.status)
      assert.equal("theirs", c:get(u.id).title)
    end)

    it("finds nothing with filter injection attempts", function()
      s:seed(5)
      assert.equal(5, #assert(c:find(nil)))
      local attempts = {
        'a" or userName pr "', '" or "1" eq "1', 'x") or (userName pr', "\\",
        'a\\" or userName pr \\"', "x\" or title pr or userName eq \"", "*", "%",
        "user00001@example.com\" or userName pr \"", "') or 1=1 --",
      }
      for _, name in ipairs(attempts) do
        local v, err = c:find_user(name)
        assert.is_false(v, name .. ": " .. tostring(err))
        local all, ferr = c:find(filter.eq("userName", name))
        assert.same({}, all, name .. ": " .. tostring(ferr))
        all = assert(c:find(filter.eq("title", name)))
        assert.same({}, all, name)
      end
      -- The same hostile strings stored as values are found exactly, by themselves.
      for i, name in ipairs(attempts) do
        assert(c:create{ userName = "odd" .. i .. "@example.com", title = name })
      end
      for i, name in ipairs(attempts) do
        local found = assert(c:find(filter.eq("title", name)))
        assert.equal(1, #found, name)
        assert.equal("odd" .. i .. "@example.com", found[1].userName)
      end
    end)

    it("pages by what the server returns when its page size is smaller than asked", function()
      s:configure{ page_size = 7 }
      s:seed(50)
      s:reset_stats()
      local ids, n = {}, 0
      for u in c:users{ count = 20 } do
        n = n + 1
        assert.is_nil(ids[u.id], "duplicate " .. u.id)
        ids[u.id] = true
      end
      assert.equal(50, n)
      local st = s:stats()
      -- ceil(50 / 7) pages, nothing more: no capabilities read since the count was given.
      assert.equal(8, st.total)
      for _, r in ipairs(st.requests) do
        assert.equal("GET", r.method)
        assert.matches("count=20", r.query)
      end
      -- With the server's own maximum (read from ServiceProviderConfig).
      local d = client.new{ url = s.url, token = s.token }
      assert.equal(50, #assert(d:find(nil)))
      d:close()
    end)

    it("reads capabilities once when many coroutines list at the same time", function()
      s:seed(3)
      local items = {}
      for i = 1, 20 do items[i] = i end
      local summary = http.run(items, function()
        assert.equal(3, #assert(c:find(nil)))
      end, { concurrency = 10 })
      assert.equal(20, summary.done)
      local n = 0
      for _, r in ipairs(s:stats().requests) do
        if r.path:find("ServiceProviderConfig") then n = n + 1 end
      end
      assert.equal(1, n)
    end)

    it("lands 200 concurrent creates exactly once, through 503s", function()
      s:faults{ match = "POST /Users", status = 503, fraction = 0.2 }
      local created = {}
      local items = {}
      for i = 1, 200 do items[i] = i end
      local summary = http.run(items, function(_, i)
        local name = string.format("bulk%03d@example.com", i)
        local u = assert(c:create{ userName = name })
        created[i] = u.id
      end, { concurrency = 16 })
      assert.equal(200, summary.done, summary.errors[1] and tostring(summary.errors[1].error))
      assert.equal(0, summary.failed)
      local st = s:stats{ requests = false }
      assert.equal(200, st.by_status["201"])
      assert.is_nil(st.by_status["409"])
      assert.is_true(st.by_status["503"] >= 40)
      assert.equal(200, #s:users())
      local distinct = {}
      for i = 1, 200 do distinct[assert(created[i])] = true end
      local n = 0
      for _ in pairs(distinct) do n = n + 1 end
      assert.equal(200, n)
      s:faults{}
      assert.equal(200, #assert(c:find(filter.sw("userName", "bulk"))))
    end)

    it("keeps the token out of every error and trace", function()
      local lines = {}
      local t = client.new{ url = s.url, token = s.token, retries = 2, timeout = 0.5,
        http = { backoff_base = 0.01 }, trace = function(l) lines[#lines + 1] = l end }
      local errs = {}
      local function keep(_, err) if err then errs[#errs + 1] = err end end
      keep(t:get("missing"))
      keep(t:create{ userName = "dup@example.com" })
      keep(t:create{ userName = "dup@example.com" })
      keep(t:find("userName zz 1"))
      s:faults{ match = "GET /Users", malformed = true, count = 1 }
      keep(t:find(nil))
      s:faults{ match = "GET /Users", stall_ms = 1500, count = 2 }
      keep(t:get("stalled"))
      s:faults{}
      local wrong = client.new{ url = s.url, token = "wrong-" .. s.token }
      keep(wrong:get("x"))
      wrong:close()
      local dead = client.new{ url = "http://127.0.0.1:1/scim/v2/", token = s.token, retries = 1 }
      keep(dead:get("x"))
      dead:close()
      t:close()
      assert.is_true(#errs >= 7)
      local codes = {}
      for _, e in ipairs(errs) do
        codes[#codes + 1] = e.code
        for _, field in ipairs{ "message", "detail", "url", "method", "scim_type" } do
          local v = e[field]
          if v then assert.not_matches(s.token, tostring(v), 1, true) end
        end
      end
      assert.same({ "NOT_FOUND", "UNIQUENESS", "INVALID_FILTER", "BAD_JSON",
        "OPERATION_TIMEDOUT", "UNAUTHORIZED", "COULDNT_CONNECT" }, codes)
      assert.is_true(#lines > 0)
      for _, l in ipairs(lines) do assert.not_matches(s.token, l, 1, true) end
    end)

    it("runs the list_users example", function()
      s:seed(12)
      local cmd = string.format("SCIM_URL='%s' SCIM_TOKEN='%s' "
        .. "LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' "
        .. "lua5.4 examples/list_users.lua 2>&1", s.url, s.token)
      local p = assert(io.popen(cmd))
      local out = p:read("a")
      local ok = p:close()
      assert.is_true(ok, out)
      local names = {}
      for id, name in out:gmatch("([^\t\n]+)\t([^\n]+)\n") do
        assert.is_truthy(id)
        names[#names + 1] = name
      end
      table.sort(names)
      assert.equal(12, #names, out)
      assert.equal("user00001@example.com", names[1])
      -- A bad token is reported, without the token.
      p = assert(io.popen((cmd:gsub("SCIM_TOKEN='[^']*'", "SCIM_TOKEN='bad-token-123'"))))
      out = p:read("a")
      ok = p:close()
      assert.is_falsy(ok)
      assert.matches("list_users: GET .*401 Unauthorized", out)
      assert.not_matches("bad-token-123", out, 1, true)
    end)
  end)

  describe("groups against the scim2 test server", function()
    local server = require "support.server"
    local s, c
    server.per_describe(_ENV, { mode = "scim2" }, function(started) s = started end)

    before_each(function()
      s:configure{ omit_members_in_list = false, max_patch_ops = 0 }
      c = client.new{ url = s.url, token = s.token }
    end)
    after_each(function()
      if c then c:close() end
      c = nil
    end)

    local function route(name)
      return s:stats().by_route[name] or 0
    end

    local function member_ids(g)
      local ids = {}
      for _, m in ipairs(g.members or {}) do ids[#ids + 1] = m.value end
      table.sort(ids)
      return ids
    end

    it("creates, finds, patches members in batches and deletes", function()
      local users = s:seed(7)
      local ids = {}
      for i, u in ipairs(users) do ids[i] = u.id end
      table.sort(ids)
      local g = assert(c:create_group{ displayName = "Sales" })
      assert.is_string(g.id)
      assert.equal(g.id, assert(c:find_group("sALES")).id)
      assert.is_false(c:find_group("Marketing"))
      s:reset_stats()
      -- 7 adds, at most 2 values per operation and 2 operations per request: 2 PATCHes.
      assert(c:add_members(g.id, ids, { max_values = 2, max_operations = 2 }))
      assert.equal(2, route("PATCH /Groups/:id"))
      assert.same(ids, member_ids(assert(c:get_group(g.id))))
      -- 3 removes, one operation each, 2 per request: 2 PATCHes.
      s:reset_stats()
      assert(c:remove_members(g.id, { ids[1], ids[2], ids[3] }, { max_operations = 2 }))
      assert.equal(2, route("PATCH /Groups/:id"))
      assert.same({ ids[4], ids[5], ids[6], ids[7] }, member_ids(assert(c:get_group(g.id))))
      assert(c:remove_members(g.id, { ids[4] }, { style = "value" }))
      assert.same({ ids[5], ids[6], ids[7] }, member_ids(assert(c:get_group(g.id))))
      assert.is_true(c:add_members(g.id, {}))
      assert.is_true(c:delete_group(g.id))
      assert.equal("NOT_FOUND", select(3, c:get_group(g.id)))
      assert.equal("BAD_ID", select(3, c:delete_group("..")))
      assert.equal("BAD_ID", select(3, c:add_members(".", { ids[1] })))
    end)

    it("honours a server's cap on PATCH operations, and says how far it got", function()
      local users = s:seed(5)
      local g = assert(c:create_group{ displayName = "Ops" })
      s:configure{ max_patch_ops = 2 }
      local ids = {}
      for i, u in ipairs(users) do ids[i] = u.id end
      local v, err, code = c:remove_members(g.id, ids, { max_operations = 3 })
      assert.is_nil(v)
      assert.equal("TOO_MANY", code, tostring(err))
      assert.equal(0, err.applied)
      c:close()
      c = client.new{ url = s.url, token = s.token, max_patch_operations = 2,
        max_patch_values = 2 }
      assert(c:add_members(g.id, ids))
      assert.equal(5, #assert(c:get_group(g.id)).members)
      assert(c:remove_members(g.id, ids))
      assert.is_nil(assert(c:get_group(g.id)).members)
    end)

    it("lists groups with their members, reading each group when listings omit them", function()
      local users = s:seed(4)
      local made = s:seed_groups{
        { displayName = "A", members = { { value = users[1].id }, { value = users[2].id } } },
        { displayName = "B", members = { { value = users[3].id } } },
        { displayName = "Empty" },
      }
      s:seed_groups{ { displayName = "Nested", members = { { value = made[1].id } } } }
      for _, omit in ipairs{ false, true } do
        s:configure{ omit_members_in_list = omit }
        c:close()
        c = client.new{ url = s.url, token = s.token }
        s:reset_stats()
        local by_name = {}
        for g in c:groups{ members = true, count = 2 } do by_name[g.displayName] = g end
        assert.equal(2, #by_name.A.members)
        assert.equal(1, #by_name.B.members)
        assert.is_nil(by_name.Empty.members)
        assert.equal("Group", by_name.Nested.members[1].type)
        assert.equal(made[1].id, by_name.Nested.members[1].value)
        -- The listing asks for members (this server then gives them): no group read.
        assert.equal(0, route("GET /Groups/:id"))
        for _, r in ipairs(s:stats().requests) do
          if r.route == "GET /Groups" then
            assert.matches("attributes=displayName,externalId,members", r.query, 1, true)
          end
        end
        local all = assert(c:find_groups())
        assert.equal(4, #all)
      end
    end)
  end)

  describe("groups from a server that never lists members", function()
    it("reads each group without members once, in listing order", function()
      local groups = {
        { id = "g1", displayName = "A" }, { id = "g2", displayName = "B" },
        { id = "g3", displayName = "Empty" },
      }
      local members = { g1 = { { value = "u1" } }, g2 = { { value = "u2" }, { value = "u3" } } }
      local c, e = new_client(function(_, path, params)
        if path:find("ResourceTypes") then return response(404) end
        if path:find("ServiceProviderConfig") then return response(404) end
        local id = path:match("/Groups/(.+)$")
        if id then
          assert.equal("members", params.attributes)
          return response(200, { id = id, members = members[id] })
        end
        assert.equal("displayName,externalId,members", params.attributes)
        local start = tonumber(params.startIndex)
        local page = json.array()
        for i = start, math.min(#groups, start + 1) do page[#page + 1] = groups[i] end
        return response(200, { totalResults = #groups, Resources = page })
      end)
      local got = {}
      for g in c:groups{ members = true, count = 2 } do
        got[#got + 1] = g.displayName .. ":" .. #(g.members or {})
      end
      assert.same({ "A:1", "B:2", "Empty:0" }, got)
      local reads = 0
      for _, r in ipairs(e.sent) do
        if r.url:find("/Groups/") then reads = reads + 1 end
      end
      assert.equal(3, reads)
    end)
  end)

  describe("groups without server support", function()
    it("refuses in a dialect without Groups, sending nothing", function()
      local c, e = new_client(function() return response(200, {}) end,
        { dialect = "workplace_v1", url = "http://127.0.0.1:9/scim/v1/" })
      for _, call in ipairs{
        function() return c:create_group{ displayName = "x" } end,
        function() return c:find_group("x") end,
        function() return c:add_members("1", { "2" }) end,
        function() return c:delete_group("1") end,
      } do
        local v, err, code = call()
        assert.is_nil(v)
        assert.equal("UNSUPPORTED", code)
        assert.matches("dialect has no Groups", tostring(err))
      end
      assert.has_error(function() for _ in c:groups() do end end)
      assert.equal(0, #e.sent)
    end)

    it("refuses when /ResourceTypes has no Group, asking once", function()
      local c, e = new_client(function(_, path)
        if path:find("ResourceTypes") then
          return response(200, { totalResults = 1, Resources = { { name = "User",
            endpoint = "/Users" } } })
        end
        return response(201, { id = "g" })
      end)
      assert.equal("UNSUPPORTED", select(3, c:create_group{ displayName = "x" }))
      assert.equal("UNSUPPORTED", select(3, c:find_groups()))
      assert.equal(1, #e.sent)
      -- A server without /ResourceTypes is tried.
      c, e = new_client(function(_, path)
        if path:find("ResourceTypes") then return response(404) end
        return response(201, { id = "g", displayName = "x" })
      end)
      assert.equal("g", assert(c:create_group{ displayName = "x" }).id)
      assert.equal(2, #e.sent)
    end)
  end)

  describe("bulk against the scim2 test server", function()
    local server = require "support.server"
    local s, c
    local ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    server.per_describe(_ENV, { mode = "scim2" }, function(started) s = started end)

    local function connect(bulk)
      s:configure{ bulk = bulk }
      if c then c:close() end
      c = client.new{ url = s.url, token = s.token }
    end
    after_each(function()
      if c then c:close() end
      c = nil
    end)

    local function person(i, manager)
      local r = { userName = ("p%03d@example.com"):format(i) }
      if manager then
        r.schemas = { "urn:ietf:params:scim:schemas:core:2.0:User", ENT }
        r[ENT] = { manager = { value = "bulkId:p" .. manager } }
      end
      return { method = "POST", bulk_id = "p" .. i, data = r }
    end

    it("splits by maxOperations and links managers inside and across requests", function()
      connect{ max_operations = 10 }
      local ops = { person(1) }
      for i = 2, 25 do ops[i] = person(i, i - 1) end  -- each managed by the one before
      local results = assert(c:bulk(ops))
      assert.equal(3, results.requests)
      assert.equal(3, s:stats().by_route["POST /Bulk"])
      local by_name = {}
      for _, u in ipairs(s:users()) do by_name[u.userName] = u end
      for i = 1, 25 do
        local r = results[i]
        assert.is_true(r.ok, tostring(r.error))
        assert.equal(201, r.status)
        assert.equal("p" .. i, r.bulk_id)
        local u = by_name[("p%03d@example.com"):format(i)]
        assert.equal(u.id, r.id)
        if i > 1 then assert.equal(results[i - 1].id, u[ENT].manager.value) end
      end
    end)

    it("keeps every request under maxPayloadSize", function()
      connect{ max_payload = 1500 }
      local ops = {}
      for i = 1, 30 do ops[i] = person(i) end
      local results = assert(c:bulk(ops))
      assert.is_true(results.requests >= 3)
      for i = 1, 30 do assert.is_true(results[i].ok, tostring(results[i].error)) end
      assert.equal(30, #s:users())
      assert.is_nil(s:stats().by_status["413"])
    end)

    it("maps a partial failure to the right operations", function()
      connect{ max_operations = 3 }
      s:seed{ { userName = "taken@example.com" } }
      local existing = s:users()[1]
      local ops = {
        person(1),
        { method = "POST", bulk_id = "dup", data = { userName = "taken@example.com" } },
        person(3),
        -- next request: refers to the failed POST, so it is not sent
        { method = "POST", bulk_id = "orphan", data = { userName = "o@example.com",
          schemas = { "urn:ietf:params:scim:schemas:core:2.0:User", ENT },
          [ENT] = { manager = { value = "bulkId:dup" } } } },
        { method = "PATCH", id = existing.id, data = { { op = "replace", path = "title",
          value = "Boss" } } },
        { method = "DELETE", id = ".." },
        { method = "PUT", id = "missing-id", data = { userName = "m@example.com" } },
        { method = "PATCH", id = "bulkId:p1", data = { { op = "replace", path = "title",
          value = "First" } } },
        { method = "POST", resource = "Groups", bulk_id = "g", data = { displayName = "G",
          members = { { value = "bulkId:p3" } } } },
        { method = "DELETE", id = existing.id },
      }
      local results = assert(c:bulk(ops))
      assert.is_true(results[1].ok)
      assert.equal("UNIQUENESS", results[2].code)
      assert.equal(409, results[2].status)
      assert.is_true(results[3].ok)
      assert.equal("BULK_REF", results[4].code)
      assert.is_true(results[5].ok, tostring(results[5].error))
      assert.equal("BAD_ID", results[6].code)
      assert.equal("NOT_FOUND", results[7].code)
      assert.matches("^PUT " .. s.url:gsub("%p", "%%%0") .. "Users/missing%-id: 404",
        tostring(results[7].error))
      assert.is_true(results[8].ok, tostring(results[8].error))
      assert.is_true(results[9].ok, tostring(results[9].error))
      assert.is_true(results[10].ok, tostring(results[10].error))
      assert.equal(204, results[10].status)
      local by_name = {}
      for _, u in ipairs(s:users()) do by_name[u.userName] = u end
      assert.is_nil(by_name["o@example.com"])
      assert.is_nil(by_name["taken@example.com"])
      assert.equal("First", by_name["p001@example.com"].title)
      local groups = s:groups()
      assert.equal(1, #groups)
      assert.equal(results[3].id, groups[1].members[1].value)
      -- 10 operations, 3 per request, two not sent: 3 requests, 8 operations.
      assert.equal(3, results.requests)
      assert.equal(8, s:stats().bulk.operations)
    end)

    it("says UNSUPPORTED when the server has no Bulk, sending nothing", function()
      connect(false)
      local v, err, code = c:bulk{ person(1) }
      assert.is_nil(v)
      assert.equal("UNSUPPORTED", code)
      assert.matches("does not offer SCIM Bulk", tostring(err))
      assert.is_nil(s:stats().by_route["POST /Bulk"])
      assert.has_error(function() c:bulk{ { method = "GET" } } end)
      assert.has_error(function() c:bulk{ person(1), person(1) } end)
    end)
  end)

  describe("bulk answers", function()
    it("uses a dialect's declared endpoint and limits; 202 with no body is accepted", function()
      local dialect = setmetatable({ bulk = { url = "https://upload.example.com/bulkUpload",
        max_operations = 2 } }, { __index = require "scim.dialects.scim2" })
      local c, e = new_client(function(req)
        assert.equal("https://upload.example.com/bulkUpload", req.url)
        return response(202)
      end, { dialect = dialect })
      local ops = {}
      for i = 1, 5 do ops[i] = { method = "POST", data = { userName = "u" .. i } } end
      local results = assert(c:bulk(ops))
      assert.equal(3, results.requests)
      assert.equal(3, #e.sent)  -- no ServiceProviderConfig asked
      for i = 1, 5 do
        assert.is_true(results[i].ok)
        assert.is_true(results[i].accepted)
        assert.equal(202, results[i].status)
        assert.equal("op" .. i, results[i].bulk_id)
      end
      assert.same({ "op1", "op2" }, { json.decode(e.sent[1].body).Operations[1].bulkId,
        json.decode(e.sent[1].body).Operations[2].bulkId })
    end)

    local SPC = { bulk = { supported = true, maxOperations = 2, maxPayloadSize = 100000 } }
    it("matches answers by bulkId in any order and fails a refused request's operations", function()
      local n = 0
      local c, e = new_client(function(req, path)
        if path:find("ServiceProviderConfig") then return response(200, SPC) end
        n = n + 1
        local body = json.decode(req.body)
        if n == 2 then return response(500, { detail = "bulk broke" }) end
        local out = {}
        for i = #body.Operations, 1, -1 do  -- answers reversed
          local op = body.Operations[i]
          out[#out + 1] = { method = op.method, bulkId = op.bulkId, status = "201",
            location = BASE .. "Users/id%2F" .. op.bulkId }
        end
        return response(200, { Operations = out })
      end)
      local ops = {}
      for i = 1, 5 do ops[i] = { method = "POST", data = { userName = "u" .. i } } end
      local results = assert(c:bulk(ops))
      assert.equal(3, results.requests)
      assert.equal("id/op1", results[1].id)
      assert.equal("id/op2", results[2].id)
      assert.equal("HTTP_500", results[3].code)
      assert.equal("HTTP_500", results[4].code)
      assert.matches("bulk broke", tostring(results[3].error))
      assert.equal("id/op5", results[5].id)
      assert.equal(4, #e.sent)
    end)
  end)

  describe("against the v1 test server", function()
    local server = require "support.server"
    local s, c
    local CORE = "urn:scim:schemas:core:1.0"
    server.per_describe(_ENV, { mode = "v1", page_size = 10 }, function(started) s = started end)

    before_each(function()
      c = client.new{ url = s.url, token = s.token, dialect = "workplace_v1" }
    end)

    after_each(function()
      if c then c:close() end
      c = nil
    end)

    it("creates, finds, reads, replaces, lists and deletes", function()
      local u, err = c:create{ schemas = { CORE }, userName = "v1@example.com",
        name = { givenName = "Vee", familyName = "One", formatted = "Vee One" }, active = true }
      assert(u, tostring(err))
      assert.equal("integer", math.type(u.id))
      local got = assert(c:get(u.id))
      assert.equal("v1@example.com", got.userName)
      assert.equal(u.id, assert(c:find_user("V1@example.com")).id)
      local r, rerr = c:replace(u.id, { schemas = { CORE }, userName = "v1@example.com",
        name = got.name, title = "Engineer", active = true })
      assert(r, tostring(rerr))
      assert.equal("Engineer", c:get(u.id).title)
      local v, perr, pcode = c:patch(u.id, { { op = "replace", path = "title", value = "x" } })
      assert.is_nil(v)
      assert.equal("NOT_SUPPORTED", pcode, tostring(perr))
      s:seed(24)
      local n = 0
      for _ in c:users() do n = n + 1 end
      assert.equal(25, n)
      assert.is_true(c:delete(u.id))
      local gone, gerr, gcode = c:get(u.id)
      assert.is_nil(gone)
      assert.equal("NOT_FOUND", gcode)
      assert.matches("^GET " .. s.url:gsub("%p", "%%%0") .. "Users/" .. u.id
        .. ": 404 Not Found: .+", tostring(gerr))
      local st = s:stats()
      for _, req in ipairs(st.requests) do
        assert.is_nil(req.path:find("PATCH"))
      end
    end)

    it("reports v1 errors with their description", function()
      local v, err, code = c:create{ schemas = { CORE }, userName = "x@example.com",
        externalID = "typo" }
      assert.is_nil(v)
      assert.equal(400, err.status)
      assert.equal("HTTP_400", code)
      assert.is_string(err.detail)
      assert.matches("externalID", err.detail)
    end)
  end)

  describe("against a hostile server", function()
    local hostile = require "support.hostile"
    local cjson = require "cjson"
    local h, c

    setup(function() h = hostile.start() end)
    teardown(function() if h then h:stop() end end)
    before_each(function()
      h:reset()
      c = client.new{ url = h.url, token = TOKEN, http = { backoff_base = 0.01 } }
    end)
    after_each(function()
      if c then c:close() end
      c = nil
    end)

    local NO_SPC = { match = "ServiceProviderConfig", answers = { { status = 404 } } }

    local function list(resources, total, extra)
      local doc = { schemas = { "urn:ietf:params:scim:api:messages:2.0:ListResponse" },
        totalResults = total, Resources = setmetatable(resources, cjson.array_mt) }
      for k, v in pairs(extra or {}) do doc[k] = v end
      return { json = doc }
    end

    local function sent(method)
      local n = {}
      for _, r in ipairs(h:requests()) do
        if r.method == method and r.url:find("/Users", 1, true) then n[#n + 1] = r end
      end
      return n
    end

    it("never writes to the collection or base path for the ids '.', '..' and ''", function()
      h:script{ NO_SPC,
        { match = "^GET /scim/v2/Users", answers = { list({ { id = "." , userName = "a" },
          { id = "..", userName = "b" }, { id = "", userName = "c" },
          { id = "x/../..", userName = "d" } }, 4) } },
        { match = "^(DELETE|PATCH|PUT) ", answers = { { status = 204 } } } }
      local users = assert(c:find(nil))
      assert.equal(4, #users)
      for i = 1, 3 do
        local id = users[i].id
        for _, call in ipairs{
          function() return c:delete(id) end,
          function() return c:patch(id, { { op = "replace", path = "title", value = "x" } }) end,
          function() return c:replace(id, { userName = "x" }) end,
        } do
          local v, err, code = call()
          assert.is_nil(v)
          assert.equal("BAD_ID", code, tostring(err))
        end
      end
      -- An id with slashes and dots inside stays one encoded segment.
      assert.is_true(c:delete(users[4].id))
      local writes = sent("DELETE")
      assert.equal(1, #writes)
      assert.equal("/scim/v2/Users/x%2F..%2F..", writes[1].url)
      assert.equal(0, #sent("PATCH") + #sent("PUT"))
    end)

    it("stops with BAD_PAGING on a totalResults that is not a non-negative integer", function()
      for _, bad in ipairs{ "many", -1, 1.5, { 3 }, true } do
        h:script{ NO_SPC, { match = "^GET /scim/v2/Users",
          answers = { list({ { id = "a" } }, bad) } } }
        local v, err, code = c:find(nil)
        assert.is_nil(v)
        assert.equal("BAD_PAGING", code, tostring(err))
        assert.matches("'totalResults' is not a non%-negative integer", tostring(err))
        assert.equal(1, #sent("GET"))
      end
      -- A count in a string is read as the count.
      h:script{ NO_SPC, { match = "^GET /scim/v2/Users",
        answers = { list({ { id = "a" } }, "1") } } }
      assert.equal(1, #assert(c:find(nil)))
    end)

    it("stops with BAD_PAGING on pages that repeat ids or do not advance", function()
      -- Overlapping pages: the second starts inside the first.
      h:script{ NO_SPC, { match = "^GET /scim/v2/Users", answers = {
        list({ { id = "a" }, { id = "b" } }, 1000),
        list({ { id = "c" }, { id = "b" } }, 1000) } } }
      local v, err, code = c:find(nil, { count = 2 })
      assert.is_nil(v)
      assert.equal("BAD_PAGING", code)
      assert.matches("startIndex 3 repeats the id 'b' of the page before it", tostring(err))
      assert.equal(2, #sent("GET"))
      -- One page naming an id twice.
      h:script{ NO_SPC, { match = "^GET /scim/v2/Users", answers = {
        list({ { id = "a" }, { id = "a" } }, 2) } } }
      v, err, code = c:find(nil)
      assert.is_nil(v)
      assert.equal("BAD_PAGING", code)
      assert.matches("repeats the id 'a'$", tostring(err))
      -- The same page at every startIndex, without totalResults: no endless listing.
      h:script{ NO_SPC, { match = "^GET /scim/v2/Users", answers = {
        list({ { id = "a" }, { id = "b" } }) } } }
      local seen, ok
      ok, err = pcall(function()
        seen = 0
        for _ in c:users{ count = 2 } do seen = seen + 1 end
      end)
      assert.is_false(ok)
      assert.equal("BAD_PAGING", err.code)
      assert.equal(2, seen)
      assert.equal(2, #sent("GET"))
    end)

    it("keeps user:password out of every message it builds", function()
      c:close()
      local url = h.url:gsub("^http://", "http://admin:s%%40cr3t:pw@")
      c = client.new{ url = url, token = TOKEN }
      h:script{ NO_SPC,
        { match = "^GET /scim/v2/Users/1", answers = { { status = 500, json = {
          detail = "cannot serve " .. url .. "Users/1 for admin:s%40cr3t:pw" } } } },
        { match = "^GET /scim/v2/Users", answers = { list({ { id = "a" } }, "lots") } } }
      local _, err = c:get("1")
      local _, perr = c:find(nil)
      local _, ierr = c:delete("..")
      local dead = client.new{ url = "http://admin:s%40cr3t:pw@127.0.0.1:9/scim/",
        token = TOKEN, retries = 1 }
      local _, terr, tcode = dead:get("1")
      dead:close()
      assert.equal("COULDNT_CONNECT", tcode)
      for _, e in ipairs{ err, perr, ierr, terr } do
        local text = tostring(e) .. " " .. tostring(e.detail) .. " " .. tostring(e.url)
        assert.not_matches("s%40cr3t", text, 1, true)
        assert.not_matches("cr3t:pw", text, 1, true)
        assert.matches("http://[redacted]@127.0.0.1:", tostring(e), 1, true)
      end
    end)
  end)

  -- }===
end)
