-- scim-agent as a process: the original sample's command-line forms, environment and token
-- sources, export to stdout, the token never in any output, and interruption (kill -9 and
-- Ctrl-C in the middle of a run, then the same command again).
local server = require "support.server"
local agent = require "support.agent"

local TOKEN = "s3cret-T0ken-for-tests-only"

local function no_token(...)
  for i = 1, select("#", ...) do
    local text = select(i, ...)
    assert.is_nil(text:find(TOKEN, 1, true), "the token appears in: " .. text:sub(1, 300))
  end
end

local function lines_of(n, first)
  local t = { "email,first name,last name" }
  for i = first or 1, n do
    t[#t + 1] = string.format("user%05d@example.com,Given%d,Family%d", i, i, i)
  end
  return table.concat(t, "\n") .. "\n"
end

after_each(function()   -- every test of this file
  collectgarbage()
  collectgarbage()
end)

describe("scim-agent command line", function()
  local s
  setup(function() s = server.start{ token = TOKEN } end)
  teardown(function() s:stop() end)
  before_each(function() s:reset() end)

  it("runs the original forms -c FILE TOKEN URL and -e FILE, warning about the token", function()
    local code, out, err = agent.spawn({ "-c", "examples/create.csv", TOKEN, s.url })
    local _
    assert.equal(0, code, err)
    assert.truthy(err:find("visible to other users in the process list", 1, true), err)
    assert.equal(30, #s:users())
    no_token(out, (err:gsub("^[^\n]*\n", "")))   -- (the command line itself is not output)
    -- -u FILE TOKEN with the URL from SCIM_URL
    code, _, err = agent.spawn({ "-u", "examples/update.csv", TOKEN }, { SCIM_URL = s.url })
    assert.equal(0, code, err)
    assert.matches("updated%s+5", err)
    -- -e FILE with token and URL from the environment: no warning
    local path = os.tmpname()
    code, out, err = agent.spawn({ "-e", path }, { SCIM_URL = s.url, SCIM_TOKEN = TOKEN })
    assert.equal(0, code, err)
    assert.is_nil(err:find("process list", 1, true))
    assert.equal(30, #agent.read_csv(path))
    no_token(out, err, agent.read_file(path))
    -- -d FILE with --token-file: with no terminal to confirm, only --yes deletes
    local tf = agent.tmpfile(TOKEN .. "\n")
    code, _, err = agent.spawn({ "-d", "examples/delete.csv", "--token-file", tf, "--url", s.url })
    assert.equal(2, code, err)
    assert.equal(30, #s:users())
    code, _, err = agent.spawn({ "-d", "examples/delete.csv", "--token-file", tf, "--url", s.url,
      "--yes" })
    assert.equal(0, code, err)
    assert.equal(27, #s:users())
    os.remove(path)
    os.remove(tf)
  end)

  it("exports to stdout with '-', the messages on stderr", function()
    s:seed(3)
    local code, out, err = agent.spawn({ "export", "-" }, { SCIM_URL = s.url, SCIM_TOKEN = TOKEN })
    assert.equal(0, code, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(4, #lines)
    assert.matches("^email,first name,last name", lines[1])
    assert.truthy(err:find("exported%s+3"), err)
  end)

  it("keeps the token out of --verbose traces, errors, JSON logs and the report", function()
    local report = os.tmpname()
    s:faults{ status = 502, match = "POST /Users", count = 3 }
    local code, out, err = agent.spawn({ "create", "examples/create.csv", "--verbose",
      "--retries", "1", "--report", report, "--log-format", "json" },
      { SCIM_URL = s.url, SCIM_TOKEN = TOKEN })
    s:faults()
    assert.equal(1, code, err)
    assert.truthy(#err > 0)
    -- the trace shows the header, with its value redacted
    assert.truthy(err:find("> Authorization: [redacted]", 1, true), err:sub(1, 2000))
    no_token(out, err, agent.read_file(report))
    -- a refused token: exit 3, still not echoed
    code, out, err = agent.spawn({ "update", "examples/update.csv" },
      { SCIM_URL = s.url, SCIM_TOKEN = TOKEN .. "-wrong" })
    assert.equal(3, code)
    no_token(out, err)
    os.remove(report)
  end)

  it("prints the help of each command and the version", function()
    for _, c in ipairs{ "create", "update", "export", "delete", "sync", "plan" } do
      local code, out = agent.spawn({ c, "--help" })
      assert.equal(0, code)
      assert.truthy(out:find("usage: scim-agent " .. c, 1, true), out)
    end
    local code, out = agent.spawn({ "--version" })
    assert.equal(0, code)
    assert.matches("^scim%-agent %d+%.%d+%.%d+\n$", out)
  end)
end)

describe("interruption", function()
  local s
  setup(function() s = server.start{ latency_ms = 20 } end)
  teardown(function() s:stop() end)

  it("kill -9 in the middle of a 2,000-user create, then a rerun: exactly 2,000 users", function()
    s:reset()
    local file = agent.tmpfile(lines_of(2000), ".csv")
    local vars = agent.vars(s)
    local job = agent.start({ "create", file, "--concurrency", "16" }, vars)
    -- Wait (bounded) until a part is done, then kill without warning.
    for _ = 1, 400 do
      if (s:stats{ requests = false }.by_method.POST or 0) >= 300 then break end
      server.sleep(0.05)
    end
    os.execute("kill -9 " .. job.pid)
    assert.equal(137, agent.wait(job, 10))
    agent.collect(job)
    local before = #s:users()
    assert.truthy(before > 0 and before < 2000, "users after the kill: " .. before)
    local code, _, err = agent.spawn({ "create", file, "--concurrency", "32", "--quiet" }, vars)
    assert.equal(0, code, err)
    local users = s:users()
    assert.equal(2000, #users)
    local seen = {}
    for _, u in ipairs(users) do
      assert.is_nil(seen[u.userName:lower()], "duplicate " .. u.userName)
      seen[u.userName:lower()] = true
    end
    os.remove(file)
  end)

  it("Ctrl-C stops new work, finishes what is in flight, writes the report and exits 1",
    function()
    s:reset()
    local file = agent.tmpfile(lines_of(600), ".csv")
    local report = os.tmpname()
    local vars = agent.vars(s)
    local job = agent.start({ "create", file, "--concurrency", "8", "--report", report }, vars)
    for _ = 1, 400 do
      if (s:stats{ requests = false }.by_method.POST or 0) >= 100 then break end
      server.sleep(0.05)
    end
    os.execute("kill -INT " .. job.pid)
    assert.equal(1, agent.wait(job, 30))
    local _, err = agent.collect(job)
    assert.truthy(err:find("interrupted", 1, true), err)
    local rows = agent.read_csv(report)
    assert.equal(600, #rows)
    local created, skipped = 0, 0
    for _, r in ipairs(rows) do
      if r.action == "created" then created = created + 1
      elseif r.action == "skipped" then skipped = skipped + 1 end
    end
    assert.truthy(skipped > 0, "nothing was skipped")
    -- every request that was sent finished and is in the report: none lost in flight
    assert.equal(#s:users(), created)
    assert.equal(600, created + skipped)
    -- the same command again finishes the rest, with no duplicate
    local code, _, err2 = agent.spawn({ "create", file, "--concurrency", "16", "--report",
      report }, vars)
    assert.equal(0, code, err2)
    assert.equal(600, #s:users())
    local again = {}
    for _, r in ipairs(agent.read_csv(report)) do again[r.action] = (again[r.action] or 0) + 1 end
    assert.same({ exists = created, created = skipped }, again)
    os.remove(file)
    os.remove(report)
  end)
end)

describe("examples/hr_sync.lua (a custom script on the library alone)", function()
  local s
  setup(function() s = server.start{ strict = true } end)
  teardown(function() s:stop() end)

  local function hr_sync(...)
    local cpath = os.getenv("SCIM_CPATH") or "build/?.so"
    local cmd = string.format("SCIM_URL=%s SCIM_TOKEN=%s LUA_PATH='lua/?.lua;lua/?/init.lua;;' "
      .. "LUA_CPATH=%s lua5.4 examples/hr_sync.lua examples/hr_people.csv %s 2>&1",
      agent.shell_quote(s.url), agent.shell_quote(s.token), agent.shell_quote(cpath .. ";;"),
      table.concat({ ... }, " "))
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    local _, _, code = p:close()
    return code, out
  end

  it("plans, applies, deactivates the terminated, and then has nothing to do", function()
    s:reset()
    s:seed{ { schemas = { "urn:ietf:params:scim:schemas:core:2.0:User" }, externalId = "1007",
              userName = "bjork.gudmundsdottir@example.com", title = "Account Executive",
              active = true,
              name = { givenName = "Björk", familyName = "Guðmundsdóttir" } } }
    s:reset_stats()
    local code, out = hr_sync()
    assert.equal(0, code, out)
    assert.equal(0, agent.writes(s:stats()))
    assert.matches("1004%s+Zoë Lefèvre%s+create", out)
    assert.matches("1005%s+Łukasz Kowalski%s+create", out)
    assert.matches("1007%s+Björk Guðmundsdóttir%s+update", out)
    assert.matches("Employment Status: true %-> false", out)
    code, out = hr_sync("--apply")
    assert.equal(0, code, out)
    local users = {}
    for _, u in ipairs(s:users()) do users[u.userName] = u end
    assert.equal(8, #s:users())
    assert.is_false(users["bjork.gudmundsdottir@example.com"].active)
    local ent = users["ngozi.okonkwo@example.com"]["urn:ietf:params:scim:schemas:extension:"
      .. "enterprise:2.0:User"]
    assert.equal(users["zoe.lefevre@example.com"].id, ent.manager.value)
    assert.equal("Platform", ent.department)
    s:reset_stats()
    code, out = hr_sync("--apply")
    assert.equal(0, code, out)
    assert.equal(0, agent.writes(s:stats()))
    assert.is_nil(out:find("create", 1, true))
  end)
end)
