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

describe("scheduled runs", function()
  local s
  setup(function() s = server.start{} end)
  teardown(function() s:stop() end)

  it("a second run against the same URL exits 3 while the first holds the lock", function()
    local file = people_file(3)
    local lockfile = os.tmpname()
    local sys = require("scim.core").sys
    local held = assert(sys.lock(lockfile))   -- as a running agent would hold it
    local code, _, err = agent.spawn({ "create", file, "--lock", lockfile }, agent.vars(s))
    assert.equal(3, code, err)
    assert.truthy(err:find("another run holds this lock", 1, true), err)
    assert.equal(0, #s:users())
    held:release()
    code, _, err = agent.spawn({ "create", file, "--lock", lockfile }, agent.vars(s))
    assert.equal(0, code, err)
    os.remove(lockfile)
    os.remove(file)
  end)

  it("warns about a token file other users can read", function()
    local tf = agent.tmpfile(s.token .. "\n")
    os.execute("chmod 644 " .. tf)
    local file = people_file(1)
    local _, _, err = agent.spawn({ "create", file, "--token-file", tf, "--url", s.url }, {})
    assert.truthy(err:find("can be read by other users", 1, true), err)
    os.remove(tf)
    os.remove(file)
  end)

  it("SIGTERM mid-run stops like Ctrl-C: a report, exit 1, no temporary file", function()
    s:reset()
    s:configure{ latency_ms = 50 }
    local file = people_file(400)
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local report = dir .. "/report.csv"
    local job = agent.start({ "create", file, "--report", report, "--concurrency", "2" },
      agent.vars(s))
    -- wait until some accounts exist, then TERM it
    for _ = 1, 100 do
      if #s:users() >= 5 then break end
      os.execute("sleep 0.1")
    end
    os.execute("kill -TERM " .. job.pid)
    local code = agent.wait(job, 30)
    local _, err = agent.collect(job)
    s:configure{ latency_ms = 0 }
    assert.equal(1, code, err)
    local rows = agent.read_csv(report)
    assert.equal(400, #rows)
    local skipped = 0
    for _, r in ipairs(rows) do if r.action == "skipped" then skipped = skipped + 1 end end
    assert.truthy(skipped > 0)
    local p = io.popen("ls -a " .. dir)
    local listing = p:read("a")
    p:close()
    assert.is_nil(listing:find("tmp", 1, true), listing)
    os.execute("rm -rf " .. dir)
    os.remove(file)
  end)
end)

describe("real-world HR files", function()
  local s
  setup(function() s = server.start{} end)
  teardown(function() s:stop() end)

  it("a Windows-1252 file with --encoding cp1252 creates Müller as Müller", function()
    s:reset()
    -- "Müller" and "Zoë" in Windows-1252: ü = 0xFC, ë = 0xEB
    local file = agent.tmpfile("email;first name;last name\r\n"
      .. "j.mueller@example.com;J\xFCrgen;M\xFCller\r\nz@example.com;Zo\xEB;Lef\xE8vre\r\n", ".csv")
    local code, _, err = agent.main({ "create", file }, agent.vars(s))
    assert.equal(2, code, err)          -- not UTF-8: refused, nothing sent
    assert.equal(0, #s:users())
    code, _, err = agent.main({ "create", file, "--encoding", "cp1252" }, agent.vars(s))
    assert.equal(0, code, err)
    local names = {}
    for _, u in ipairs(s:users()) do names[u.userName] = u.name end
    assert.equal("Müller", names["j.mueller@example.com"].familyName)
    assert.equal("Jürgen", names["j.mueller@example.com"].givenName)
    assert.equal("Zoë", names["z@example.com"].givenName)
    -- and back out in the same character set
    local out = os.tmpname()
    code, _, err = agent.main({ "export", out, "--encoding", "cp1252" }, agent.vars(s))
    assert.equal(0, code, err)
    assert.truthy(agent.read_file(out):find("M\xFCller", 1, true))
    os.remove(out)
    os.remove(file)
  end)

  it("a UTF-16 file with a byte-order mark is read without being told", function()
    s:reset()
    local text = "email,first name,last name\nu16@example.com,Ünal,Öz\n"
    local path = os.tmpname() .. ".csv"
    local conv = assert(io.popen("iconv -f utf-8 -t utf-16 > " .. agent.shell_quote(path), "w"))
    conv:write(text)
    conv:close()
    local code, _, err = agent.main({ "create", path }, agent.vars(s))
    assert.equal(0, code, err)
    assert.equal("Ünal", s:users()[1].name.givenName)
    os.remove(path)
  end)
end)

describe("hardening", function()
  local s
  setup(function() s = server.start{} end)
  teardown(function() s:stop() end)
  before_each(function() s:reset() end)

  it("a token refused mid-run ends it with exit 3 after few POSTs, the rest skipped", function()
    s:configure{ latency_ms = 60 }
    local file = people_file(200)
    local report = os.tmpname()
    local job = agent.start({ "create", file, "--concurrency", "2", "--report", report },
      agent.vars(s))
    for _ = 1, 200 do
      if #s:users() >= 4 then break end
      os.execute("sleep 0.05")
    end
    -- (timing: how many landed before the revocation depends on the machine's speed; what
    -- is asserted is what happens after it)
    local before = s:stats{ requests = false }.by_method.POST or 0
    s:configure{ token = "revoked-" .. s.token }
    local code = agent.wait(job, 60)
    local _, err = agent.collect(job)
    s:configure{ token = s.token, latency_ms = 0 }
    assert.equal(3, code, err)
    local after = s:stats{ requests = false }.by_method.POST - before
    -- the requests in flight (2) are refused, a few more may have been on their way; the
    -- rows waiting for a slot are never sent
    assert.truthy(after <= 8, "POSTs after the revocation: " .. tostring(after))
    local skipped = 0
    for _, r in ipairs(agent.read_csv(report)) do
      if r.action == "skipped" then skipped = skipped + 1 end
    end
    assert.truthy(skipped >= 180, "skipped: " .. skipped)
    os.remove(report)
    os.remove(file)
  end)

  it("a control character in a key is exit 2 with no request", function()
    local file = agent.tmpfile("email,first name,last name\nbad\1key@example.com,A,B\n", ".csv")
    s:reset_stats()
    local code, _, err = agent.main({ "create", file }, agent.vars(s))
    assert.equal(2, code, err)
    assert.truthy(err:find(":2:4", 1, true), err)
    assert.equal(0, s:stats().total)
    os.remove(file)
  end)

  it("a rerun from the report also finishes the rows whose manager was not set", function()
    local file = people_file(3)
    assert.equal(0, (agent.main({ "create", file }, agent.vars(s))))
    -- as an interrupted run leaves it: u3 created, its manager u1 not set yet
    local u3
    for _, u in ipairs(s:users()) do if u.userName == "u3@example.com" then u3 = u end end
    local ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    s:reset()
    u3[ent] = nil
    u3.id, u3.meta = nil, nil
    s:seed{ u3, { userName = "u1@example.com", name = { givenName = "F1", familyName = "L1" } } }
    local report = agent.tmpfile("line,key,action,http_status,scim_id,error,email,first name,"
      .. "last name,manager email\n"
      .. "2,u1@example.com,created,201,x,,u1@example.com,F1,L1,\n"
      .. "4,u3@example.com,created,201,y,the manager was not set (interrupted): run again to "
      .. "finish,u3@example.com,F3,L3,u1@example.com\n", ".csv")
    s:reset_stats()
    local code, _, err = agent.main({ "create", report }, agent.vars(s))
    assert.equal(0, code, err)
    assert.equal(1, s:stats().by_method.PATCH)
    local by = {}
    for _, u in ipairs(s:users()) do by[u.userName] = u end
    assert.equal(by["u1@example.com"].id, by["u3@example.com"][ent].manager.value)
    os.remove(report)
    os.remove(file)
  end)
end)

describe("a server asking to wait longer than the run may", function()
  it("stops starting rows and reports them skipped with the time to come back", function()
    local s = server.start{}
    s:faults{ status = 429, retry_after = 999999, count = 1, match = "POST /Users" }
    local file = people_file(30)
    local report = os.tmpname()
    local code, _, err = agent.main({ "create", file, "--report", report, "--concurrency", "2" },
      agent.vars(s))
    assert.equal(1, code, err)
    assert.truthy(err:find("asked to wait", 1, true), err)
    local skipped = 0
    for _, r in ipairs(agent.read_csv(report)) do
      if r.action == "skipped" then
        skipped = skipped + 1
        assert.truthy(r.error:find("come back in 999999 s (at ", 1, true), r.error)
      end
    end
    assert.truthy(skipped >= 20, "skipped: " .. skipped)
    assert.truthy(s:stats().by_method.POST <= 4, "POSTs: " .. s:stats().by_method.POST)
    s:stop()
    os.remove(file)
    os.remove(report)
  end)
end)
