-- Unattended runs: tokens that renew themselves (OAuth client credentials, a token
-- command), end to end through the agent as a scheduler would run it.
local server = require "support.server"
local oauth = require "support.oauth"
local agent = require "support.agent"

local function people_file(n)
  local lines = { "email,first name,last name,manager email" }
  for i = 1, n do
    lines[#lines + 1] = string.format("u%d@example.com,F%d,L%d,%s", i, i, i,
      i > 1 and ("u" .. (i // 2) .. "@example.com") or "")
  end
  return agent.tmpfile(table.concat(lines, "\n") .. "\n", ".csv")
end

describe("tokens that renew themselves", function()
  local s
  setup(function() s = server.start{ latency_ms = 15 } end)
  teardown(function() s:stop() end)

  it("creates 300 through OAuth client credentials whose token lives 2 s", function()
    s:reset()
    local o = oauth.start{ upstream = s, expires_in = 2 }
    local secret_file = agent.tmpfile(o.client_secret .. "\n")
    local file = people_file(300)
    local code, out, err = agent.spawn({ "create", file, "--url", o.url, "--concurrency", "2",
      "--oauth-token-url", o.token_url, "--client-id", o.client_id, "--client-secret-file",
      secret_file, "--oauth-auth", "form" }, {})
    local st = o:stats()
    o:stop()
    assert.equal(0, code, err)
    assert.matches("created%s+300", err)
    assert.equal(300, #s:users())
    assert.truthy(st.issued > 1, "tokens issued: " .. tostring(st.issued))
    assert.is_nil((out .. err):find(o.client_secret, 1, true))
    assert.is_nil((out .. err):find("Bearer", 1, true))
    os.remove(secret_file)
    os.remove(file)
  end)

  it("a refused client secret is exit 3 with the endpoint's error, the secret unsaid", function()
    local o = oauth.start{ upstream = s }
    local secret_file = agent.tmpfile("not-the-secret\n")
    local file = people_file(2)
    local code, out, err = agent.spawn({ "create", file, "--url", o.url, "--oauth-token-url",
      o.token_url, "--client-id", o.client_id, "--client-secret-file", secret_file }, {})
    o:stop()
    assert.equal(3, code, err)
    assert.truthy(err:find("invalid_client", 1, true), err)
    assert.is_nil((out .. err):find("not-the-secret", 1, true))
    os.remove(secret_file)
    os.remove(file)
  end)

  it("export works with --token-command", function()
    s:reset()
    s:seed(12)
    local cmd = agent.tmpfile("#!/bin/sh\necho " .. s.token .. "\n", ".sh")
    os.execute("chmod 700 " .. cmd)
    local out_file = os.tmpname()
    local code, _, err = agent.spawn({ "export", out_file, "--url", s.url, "--token-command",
      cmd }, {})
    assert.equal(0, code, err)
    assert.equal(12, #agent.read_csv(out_file))
    os.remove(cmd)
    os.remove(out_file)
  end)
end)
