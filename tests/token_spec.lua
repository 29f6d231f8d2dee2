-- scim.token: the token providers, alone and through scim.client (a token endpoint in
-- front of the test SCIM server, and a hostile server for scripted 401s).
local token = require "scim.token"
local client = require "scim.client"

local function tmpfile(content, mode)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
  if mode then os.execute("chmod " .. mode .. " " .. path) end
  return path
end

-- A token program: each run bumps a counter file and prints "<prefix>-<n>".
local function counting_command(prefix, extra)
  local counter = tmpfile("0")
  local script = tmpfile(table.concat({
    "#!/bin/sh",
    "n=$(($(cat '" .. counter .. "') + 1))",
    "echo $n > '" .. counter .. "'",
    extra or "",
    "printf '%s\\r\\nsecond line\\n' \"" .. prefix .. "-$n\"",
  }, "\n") .. "\n", "700")
  local function runs()
    local f = assert(io.open(counter))
    local n = tonumber(f:read("l"))
    f:close()
    return n
  end
  return script, runs, function() os.remove(counter) os.remove(script) end
end

describe("scim.token", function()
  after_each(function()
    collectgarbage()
    collectgarbage()
  end)

  describe("static", function()
    it("gives its token and cannot renew it", function()
      local p = token.static("abcd-1234")
      assert.equal("abcd-1234", p:get())
      local v, err, code = p:refresh("abcd-1234")
      assert.is_nil(v)
      assert.equal("AUTH", code)
      assert.not_matches("abcd", err, 1, true)
      for k, val in pairs(p) do assert.not_equal("abcd-1234", val, k) end
      assert.is_true(token.is_provider(p))
      assert.is_false(token.is_provider("abcd"))
    end)

    it("refuses empty tokens and tokens with spaces, without echoing them", function()
      for _, bad in ipairs{ "", "two words", "line\nbreak", 7 } do
        local ok, err = pcall(token.static, bad)
        assert.is_false(ok)
        assert.matches("token must be a non%-empty string", err)
        if type(bad) == "string" and bad ~= "" then assert.not_matches(bad, err, 1, true) end
      end
    end)
  end)

  describe("command", function()
    it("runs once, reuses the token, and runs again on refresh of the current one", function()
      local script, runs, clean = counting_command("tok")
      local p = token.command(script)
      assert.equal("tok-1", p:get())
      assert.equal("tok-1", p:get())
      assert.equal(1, runs())
      assert.equal("tok-2", p:refresh("tok-1"))
      -- Another request refreshed meanwhile: the newer token, no new run.
      assert.equal("tok-2", p:refresh("tok-1"))
      assert.equal(2, runs())
      assert.same({ fetches = 2, failures = 0 }, p:stats())
      clean()
    end)

    it("takes an argv array (no shell) and a shell command line", function()
      local p = token.command{ "/bin/echo", "it's $HOME;" }
      assert.equal(nil, p:get())  -- a token with spaces is refused
      p = token.command{ "/usr/bin/printf", "%s", "a;b$c" }
      assert.equal("a;b$c", p:get())
      p = token.command("echo abc | tr a x")
      assert.equal("xbc", p:get())
    end)

    it("fails with AUTH naming only the program, never its arguments", function()
      local p = token.command{ "/bin/sh", "-c", "exit 3", "s3cret-arg" }
      local v, err, code = p:get()
      assert.is_nil(v)
      assert.equal("AUTH", code)
      assert.equal("token command sh exited with status 3", err)
      v, err, code = token.command("printf ''"):get()
      assert.is_nil(v)
      assert.equal("AUTH", code)
      assert.equal("token command printf printed no token on its first line", err)
      v, err = token.command("/nonexistent/get-token"):get()
      assert.is_nil(v)
      assert.matches("^token command get%-token exited with status 12[67]$", err)
      assert.equal("token command false exited with status 1",
        select(2, token.command("/bin/false"):get()))
      assert.has_error(function() token.command("") end)
      assert.has_error(function() token.command{ "" } end)
      assert.has_error(function() token.command("a\nb") end)
    end)

    it("stops a program that does not finish within its timeout", function()
      local v, err, code = token.command("sleep 5; echo late", { timeout = 0.3 }):get()
      assert.is_nil(v)
      assert.equal("AUTH", code)
      assert.matches("did not finish within 0.3 s", err, 1, true)
    end)
  end)

  describe("oauth options", function()
    it("raises on a missing or malformed option", function()
      local base = { token_url = "https://idp.example.com/token", client_id = "a",
        client_secret = "b" }
      local function with(k, v)
        local o = {}
        for kk, vv in pairs(base) do o[kk] = vv end
        o[k] = v
        local ok, err = pcall(token.oauth, o)
        assert.is_false(ok)
        return err
      end
      assert.matches("token_url is required", with("token_url", nil))
      assert.matches("plain http refused", with("token_url", "http://idp.example.com/token"))
      assert.matches("client_id is required", with("client_id", nil))
      assert.matches("give one of client_secret and client_secret_file",
        with("client_secret_file", "/x"))
      assert.matches("auth must be", with("auth", "digest"))
      assert.matches("unknown option 'secret'", with("secret", "x"))
      local p = token.oauth(base)
      assert.equal("scim.token.oauth (https://idp.example.com/token)", tostring(p))
      for _, v in pairs(p) do assert.not_equal("b", v) end
      p:close()
    end)
  end)

  describe("through a token endpoint in front of the test server", function()
    local server = require "support.server"
    local oauth = require "support.oauth"
    local http = require "scim.http"
    local s, o
    setup(function()
      s = server.start{ mode = "scim2" }
      o = oauth.start{ upstream = s, expires_in = 2 }
    end)
    teardown(function()
      if o then o:stop() end
      if s then s:stop() end
    end)
    before_each(function()
      s:reset()
      o:reset()
      o:configure{ expires_in = 2 }
    end)

    local function provider(extra)
      local opts = { token_url = o.token_url, client_id = o.client_id,
        client_secret = o.client_secret }
      for k, v in pairs(extra or {}) do
        if v == false then v = nil end
        opts[k] = v
      end
      return token.oauth(opts)
    end

    it("gets a token with HTTP Basic (default) or form fields and caches it", function()
      local p = provider{ scope = { "scim.read", "scim.write" } }
      local t = assert(p:get())
      assert.matches("^at%-1%-", t)
      assert.equal(t, p:get())
      local st = o:stats()
      assert.equal(1, st.issued)
      assert.equal(1, st.by_auth.basic)
      assert.same({ "scim.read scim.write" }, st.scopes)
      p:close()
      local secret_file = tmpfile(o.client_secret .. "\n", "600")
      p = provider{ auth = "form", client_secret = false, client_secret_file = secret_file }
      assert(p:get())
      assert.equal(1, o:stats().by_auth.form)
      p:close()
      os.remove(secret_file)
    end)

    it("reports a refused client secret with the endpoint's error, never the secret", function()
      for _, auth in ipairs{ "basic", "form" } do
        local p = provider{ auth = auth, client_secret = "wr0ng-s3cret-value" }
        local v, err, code = p:get()
        assert.is_nil(v)
        assert.equal("AUTH", code)
        assert.equal("POST " .. o.token_url .. ": 401 invalid_client: client authentication "
          .. "failed", err)
        assert.not_matches("wr0ng", err, 1, true)
        -- Through a client: the request is not sent, the error says why.
        local c = client.new{ url = o.url, token = p }
        local u, cerr, ccode = c:get("1")
        assert.is_nil(u)
        assert.equal("AUTH", ccode)
        assert.matches("no token: POST .*invalid_client", tostring(cerr))
        assert.not_matches("wr0ng", tostring(cerr), 1, true)
        c:close()
        p:close()
      end
      assert.equal(0, o:stats().forwarded)
      local f = provider{ client_secret = false, client_secret_file = "/nonexistent/secret" }
      local v, err, code = f:get()
      assert.is_nil(v)
      assert.equal("AUTH", code)
      assert.matches("cannot read the client secret file: /nonexistent/secret", err)
    end)

    it("renews a 2 s token during a long run: every request succeeds", function()
      s:configure{ latency_ms = 25 }
      local lines = {}
      local p = provider()
      local c = client.new{ url = o.url, token = p, concurrency = 2,
        trace = function(l) lines[#lines + 1] = l end }
      local n, items = 120, {}
      for i = 1, n do items[i] = i end
      local created = 0
      local summary = http.run(items, function(i)
        local u, err = c:create{ userName = ("user%03d@example.com"):format(i) }
        assert(u, tostring(err))
        created = created + 1
      end, { concurrency = 2 })
      -- 120 requests held 25 ms each, two at a time, last at least 1.5 s: longer than the
      -- part of a 2 s token's life that is used.
      s:configure{ latency_ms = 0 }
      assert.equal(n, summary.done)
      assert.equal(n, created)
      local st = o:stats()
      assert.is_true(st.issued >= 2, "issued " .. st.issued)
      assert.is_true(st.issued <= 20, "issued " .. st.issued)
      assert.equal(n, st.forwarded)
      assert.equal(p:stats().fetches, st.issued)
      for _, l in ipairs(lines) do
        assert.not_matches("Bearer at%-", l)
        assert.not_matches(o.client_secret, l, 1, true)
        assert.not_matches(p:get(), l, 1, true)
      end
      assert.is_true(#lines > 0)
      c:close()
      p:close()
    end)

    it("renews once after a 401 (token revoked) and resends", function()
      local p = provider{ }
      o:configure{ expires_in = 3600 }
      local c = client.new{ url = o.url, token = p }
      assert(c:create{ userName = "a@example.com" })
      o:configure{ revoke = true }
      local u, err = c:create{ userName = "b@example.com" }
      assert(u, tostring(err))
      local st = o:stats()
      assert.equal(2, st.issued)
      assert.equal(1, st.rejected)
      assert.equal(2, #s:users())
      c:close()
      p:close()
    end)
  end)

  describe("through a client against scripted 401s", function()
    local hostile = require "support.hostile"
    local h
    setup(function() h = hostile.start() end)
    teardown(function() if h then h:stop() end end)

    local NO_SPC = { match = "ServiceProviderConfig", answers = { { status = 404 } } }
    local USER = { json = { id = "1", userName = "a" } }
    local DENIED = { status = 401, json = { detail = "token refused" } }

    it("runs the token command again after a 401 and resends once", function()
      local script, runs, clean = counting_command("cmd-token")
      h:script{ NO_SPC, { match = "^GET /scim/v2/Users/1", answers = { DENIED, USER } } }
      local c = client.new{ url = h.url, token = token.command(script) }
      local u = assert(c:get("1"))
      assert.equal("a", u.userName)
      local reqs = h:requests()
      assert.equal(2, #reqs)
      assert.equal("Bearer cmd-token-1", reqs[1].authorization)
      assert.equal("Bearer cmd-token-2", reqs[2].authorization)
      assert.equal(2, runs())
      c:close()
      clean()
    end)

    it("renews at most once per request, and says so when renewing fails", function()
      local script, runs, clean = counting_command("cmd-token")
      h:script{ NO_SPC, { match = "^GET /scim/v2/Users/1", answers = { DENIED } } }
      local c = client.new{ url = h.url, token = token.command(script) }
      local v, err, code = c:get("1")
      assert.is_nil(v)
      assert.equal("UNAUTHORIZED", code)
      assert.equal(2, #h:requests())
      assert.not_matches("cmd%-token", tostring(err))
      c:close()
      -- A provider that cannot renew: one request, the 401 says why.
      h:script{ NO_SPC, { match = "^GET /scim/v2/Users/1", answers = { DENIED } } }
      c = client.new{ url = h.url, token = token.static("fixed-token") }
      v, err, code = c:get("1")
      assert.is_nil(v)
      assert.equal("UNAUTHORIZED", code)
      assert.matches("renewing the token failed: the server refused the token", tostring(err))
      assert.equal(1, #h:requests())
      c:close()
      -- A plain string token behaves as before: no renewal, one request.
      h:script{ NO_SPC, { match = "^GET /scim/v2/Users/1", answers = { DENIED } } }
      c = client.new{ url = h.url, token = "plain-token" }
      assert.equal("UNAUTHORIZED", select(3, c:get("1")))
      assert.equal(1, #h:requests())
      assert.equal("Bearer plain-token", h:requests()[1].authorization)
      c:close()
      assert.equal(2, runs())
      clean()
    end)
  end)
end)
