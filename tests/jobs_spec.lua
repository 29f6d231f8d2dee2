-- The jobs (create, update, export, delete, sync) end to end against the test SCIM server,
-- on the original sample's files (examples/*.csv) in all three dialects, plus validation,
-- exit codes, the report, the removal guard and dry runs. The command-line forms,
-- interruption and the token checks that need a real process are in tests/agent_spec.lua.
local server = require "support.server"
local agent = require "support.agent"
local cjson = require "cjson"

local ENT2 = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
local ENT1 = "urn:scim:schemas:extension:enterprise:1.0"

-- The manager id stored for a user, in either mode's shape.
local function manager_of(u)
  local e = u[ENT2] or u[ENT1]
  local m = e and e.manager
  if type(m) ~= "table" then return nil end
  return server.id_string(m.value or m.managerId)
end

local function by_name(users)
  local t = {}
  for _, u in ipairs(users) do t[u.userName:lower()] = u end
  return t
end

local function count_actions(rows)
  local c = {}
  for _, r in ipairs(rows) do c[r.action] = (c[r.action] or 0) + 1 end
  return c
end

local DIALECTS = {
  { dialect = "scim2", mode = "scim2", update = "PATCH" },
  { dialect = "meta", mode = "meta", update = "PATCH" },
  { dialect = "workplace_v1", mode = "v1", update = "PUT" },
}

after_each(function()   -- every test of this file
  collectgarbage()
  collectgarbage()
end)

for _, d in ipairs(DIALECTS) do
  describe("jobs on the original sample's files, dialect " .. d.dialect, function()
    local s, tmp
    setup(function()
      s = server.start{ mode = d.mode }
      tmp = os.tmpname()
    end)
    teardown(function()
      s:stop()
      for _, suffix in ipairs{ "", ".report.csv", ".export.csv" } do os.remove(tmp .. suffix) end
    end)

    local function run(args)
      local full = { table.unpack(args) }
      full[#full + 1] = "--dialect"
      full[#full + 1] = d.dialect
      s:reset_stats()
      local code, out, err = agent.main(full, agent.vars(s))
      return code, out, err, s:stats()
    end

    it("create -> create again -> update -> update again -> export -> plan -> delete", function()
      -- create: every row, managers set in a second pass
      local report = tmp .. ".report.csv"
      local code, _, err, st = run{ "create", "examples/create.csv", "--report", report }
      assert.equal(0, code, err)
      assert.equal(30, st.by_method.POST)
      local users = by_name(s:users())
      assert.equal(30, #s:users())
      local amelie = users["amelie.durand@example.com"]
      local jurgen = users["jurgen.muller@example.com"]
      local lukasz = users["lukasz.kowalski@example.com"]
      local zoe = users["zoe.lefevre@example.com"]
      assert.equal("Jürgen", jurgen.name.givenName)
      assert.equal(server.id_string(amelie.id), manager_of(jurgen))
      assert.equal(server.id_string(zoe.id), manager_of(lukasz))
      assert.is_nil(manager_of(amelie))
      local rows = agent.read_csv(report)
      assert.same({ created = 30 }, count_actions(rows))
      -- one report row per input line (in the order the rows finished)
      local lines = {}
      for _, r in ipairs(rows) do lines[#lines + 1] = tonumber(r.line) end
      table.sort(lines)
      for i = 1, 30 do assert.equal(i + 1, lines[i]) end
      assert.truthy(#rows[1].scim_id > 0)

      -- the same file again: every row `exists`, nothing changed, exit 0
      code, _, err, st = run{ "create", "examples/create.csv", "--report", report }
      assert.equal(0, code, err)
      assert.equal(30, #s:users())
      assert.same({ exists = 30 }, count_actions(agent.read_csv(report)))
      assert.is_nil(st.by_method.PATCH)
      assert.is_nil(st.by_method.PUT)

      -- update: five people changed (title, department + manager, phone, location, title)
      code, _, err, st = run{ "update", "examples/update.csv", "--report", report }
      assert.equal(0, code, err)
      assert.equal(5, st.by_method[d.update])
      assert.equal(5, agent.writes(st))
      rows = agent.read_csv(report)
      assert.same({ updated = 5, unchanged = 25 }, count_actions(rows))
      users = by_name(s:users())
      assert.equal("Senior Software Engineer", users["lukasz.kowalski@example.com"].title)
      assert.equal(server.id_string(users["oystein.bjornstad@example.com"].id),
        manager_of(users["ngozi.okonkwo@example.com"]))

      -- again: nothing to send, and no request per row (the directory is one listing page)
      code, _, err, st = run{ "update", "examples/update.csv" }
      assert.equal(0, code, err)
      assert.equal(0, agent.writes(st))
      assert.same({}, agent.per_user_requests(st))
      assert.matches("unchanged%s+30", err)

      -- export: every user, managers as emails, then the plan of that file changes nothing
      local out = tmp .. ".export.csv"
      code, _, err, st = run{ "export", out }
      assert.equal(0, code, err)
      assert.equal(0, agent.writes(st))
      local exported, header = agent.read_csv(out)
      assert.equal(30, #exported)
      assert.equal("email", header[1])
      local ex = {}
      for _, r in ipairs(exported) do ex[r.email] = r end
      local ngozi = ex["ngozi.okonkwo@example.com"]
      assert.equal("oystein.bjornstad@example.com", ngozi["manager email"])
      assert.equal("", ex["amelie.durand@example.com"]["manager email"])
      assert.equal("Guðmundsdóttir", ex["bjork.gudmundsdottir@example.com"]["last name"])
      local plan_out
      code, plan_out, err, st = run{ "plan", out }
      assert.equal(0, code, err)
      assert.equal(0, agent.writes(st))
      assert.matches("plan: 30 unchanged", plan_out, 1, true)

      -- delete three, then again: not_found is not a failure
      code, _, err, st = run{ "delete", "examples/delete.csv", "--report", report, "--yes" }
      assert.equal(0, code, err)
      assert.equal(3, st.by_method.DELETE)
      assert.same({ deleted = 3 }, count_actions(agent.read_csv(report)))
      assert.equal(27, #s:users())
      code, _, err, st = run{ "delete", "examples/delete.csv", "--report", report, "--yes" }
      assert.equal(0, code, err)
      assert.equal(0, agent.writes(st))
      assert.same({ not_found = 3 }, count_actions(agent.read_csv(report)))
    end)

    it("sync creates the missing, updates the changed, and deactivates the absent", function()
      s:reset()
      assert.equal(0, (run{ "create", "examples/create.csv" }))
      -- the three leavers are absent from this file; one changed title
      local f = assert(io.open("examples/update.csv"))
      local lines = {}
      for l in f:lines() do lines[#lines + 1] = l end
      f:close()
      local keep = { lines[1] }
      for i = 2, #lines do
        if not lines[i]:find("^ana%.lucia") and not lines[i]:find("^tomas%.novak")
          and not lines[i]:find("^aroha%.ngata") then keep[#keep + 1] = lines[i] end
      end
      keep[#keep + 1] = "new.hire@example.com,Nuno,Novo,Intern,Engineering,+1 555 0000,Lisbon,"
        .. "pt_PT,zoe.lefevre@example.com"
      local file = agent.tmpfile(table.concat(keep, "\n") .. "\n", ".csv")
      -- the dry run sends no write and shows the plan with old -> new
      local report = tmp .. ".report.csv"
      local code, out, err, st = run{ "sync", file, "--deactivate-missing", "--dry-run" }
      assert.equal(0, code, err)
      assert.equal(0, agent.writes(st))
      assert.matches("plan: 1 to create, 5 to update, 3 to deactivate, 22 unchanged", out, 1, true)
      assert.truthy(out:find('job title: "Software Engineer" \u{2192} "Senior Software Engineer"',
        1, true), out)
      assert.truthy(out:find('department: "Engineering" \u{2192} "Platform"', 1, true), out)
      -- file rows first, in line order, then the absent accounts
      assert.truthy(out:find("lukasz", 1, true) < out:find("tomas.novak", 1, true))
      assert.truthy(out:find('manager email: "zoe.lefevre@example.com" \u{2192} '
        .. '"oystein.bjornstad@example.com"', 1, true), out)
      -- 3 of 30 is 10%: allowed by the default guard
      code, _, err = run{ "sync", file, "--deactivate-missing", "--report", report }
      assert.equal(0, code, err)
      local rows = agent.read_csv(report)
      assert.same({ created = 1, updated = 5, unchanged = 22, deactivated = 3 },
        count_actions(rows))
      local users = by_name(s:users())
      assert.equal(31, #s:users())
      assert.is_false(users["tomas.novak@example.com"].active)
      assert.equal(server.id_string(users["zoe.lefevre@example.com"].id),
        manager_of(users["new.hire@example.com"]))
      -- and once more: nothing left to do
      code, _, err, st = run{ "sync", file, "--deactivate-missing" }
      assert.equal(0, code, err)
      assert.equal(0, agent.writes(st))
      os.remove(file)
    end)
  end)
end

describe("validation before any request", function()
  local s
  setup(function() s = server.start{} end)
  teardown(function() s:stop() end)
  before_each(function() s:reset() end)

  it("lists every problem with its line, sends nothing and exits 2", function()
    local file = agent.tmpfile(table.concat({
      "email,first name,last name,start date,shoe size",
      "a@example.com,Ann,Lee,2024-01-15,38",
      "b@example.com,Bob,Ray,15/01/2024,44",
      "A@example.com,Ann,Again,2024-02-01,38",
      ",No,Email,2024-01-01,40",
      "c@example.com,Cy,Dee,2024-03-01,41",
    }, "\n") .. "\n", ".csv")
    local code, out, err = agent.main({ "create", file }, agent.vars(s))
    local _
    assert.equal(2, code)
    assert.equal("", out)
    assert.truthy(err:find("unknown column 'shoe size'", 1, true), err)
    -- with the unknown column allowed, the row problems are listed, each with its line
    -- (meta: its dialect takes the start date the mapping checks)
    code, _, err = agent.main({ "create", file, "--ignore-unknown-columns", "--dialect", "meta" },
      agent.vars(s))
    assert.equal(2, code)
    assert.truthy(err:find(file .. ":3: field 'start date'", 1, true), err)
    assert.truthy(err:find(file .. ":4: userName 'A@example.com' already on line 2", 1, true), err)
    assert.truthy(err:find(file .. ":5:", 1, true), err)
    assert.truthy(err:find("3 problems; nothing was sent", 1, true), err)
    assert.equal(0, s:stats().total)
    os.remove(file)
  end)

  it("sends nothing in any job when the file has a problem", function()
    s:seed(5)
    s:reset_stats()
    local file = agent.tmpfile("email,job title\nuser00001@example.com,Pilot\n"
      .. "USER00001@example.com,Pilot\n,Pilot\n", ".csv")
    local runs = { { "create" }, { "update" }, { "delete", "--yes" },
      { "sync", "--delete-missing", "--max-removals", "100%" }, { "plan", "--delete-missing" } }
    for _, args in ipairs(runs) do
      local job = args[1]
      local code, out, err = agent.main({ job, file, table.unpack(args, 2) }, agent.vars(s))
      assert.equal(2, code, job .. ": " .. err)
      assert.equal("", out)
      assert.truthy(err:find(file .. ":3: userName 'USER00001@example.com' already on line 2",
        1, true), job .. ": " .. err)
      assert.truthy(err:find(file .. ":4:", 1, true), job .. ": " .. err)
    end
    assert.equal(0, s:stats().total)
    os.remove(file)
  end)

  it("reports a missing required column and a ragged row", function()
    local file = agent.tmpfile("email,first name\na@example.com,Ann\n", ".csv")
    local code, _, err = agent.main({ "create", file }, agent.vars(s))
    assert.equal(2, code)
    assert.truthy(err:find("missing required column 'last name'", 1, true), err)
    os.remove(file)
    file = agent.tmpfile("email,first name,last name\na@example.com,Ann,Lee\nb@example.com,Bob\n",
      ".csv")
    code, _, err = agent.main({ "create", file }, agent.vars(s))
    assert.equal(2, code)
    assert.truthy(err:find(":3:", 1, true), err)
    assert.equal(0, s:stats().total)
    os.remove(file)
  end)

  it("exits 2 for a file that cannot be read, without prompting or sending", function()
    local code, _, err = agent.main({ "update", "/nonexistent/users.csv" }, agent.vars(s))
    assert.equal(2, code)
    assert.truthy(err:find("/nonexistent/users.csv", 1, true), err)
    assert.equal(0, s:stats().total)
  end)

  it("warns about a manager that is neither in the file nor on the server", function()
    local file = agent.tmpfile("email,first name,last name,manager email\n"
      .. "a@example.com,Ann,Lee,ghost@example.com\n", ".csv")
    local code, _, err = agent.main({ "create", file }, agent.vars(s))
    assert.equal(0, code, err)
    assert.truthy(err:find("'ghost@example.com' is referenced", 1, true), err)
    os.remove(file)
  end)

  it("exits 2 for a bad mapping file, naming it", function()
    local m = agent.tmpfile("return { { 'email', 'userName[' } }", ".lua")
    local code, _, err = agent.main({ "create", "examples/create.csv", "--mapping", m },
      agent.vars(s))
    assert.equal(2, code)
    assert.truthy(err:find(m, 1, true), err)
    assert.equal(0, s:stats().total)
    os.remove(m)
  end)
end)

describe("update", function()
  local s
  setup(function() s = server.start{ page_size = 50 } end)
  teardown(function() s:stop() end)

  it("looks a few rows up with filters in a large directory, and lists a small one", function()
    s:reset()
    local seeded = s:seed(400)
    local lines = { "email,job title" }
    for i = 1, 3 do lines[#lines + 1] = seeded[i].userName .. ",Astronaut" end
    local file = agent.tmpfile(table.concat(lines, "\n") .. "\n", ".csv")
    s:reset_stats()
    local code, _, err = agent.main({ "update", file }, agent.vars(s))
    assert.equal(0, code, err)
    local st = s:stats()
    assert.equal(3, st.by_method.PATCH)
    local filtered = 0
    for _, r in ipairs(st.requests) do
      if r.method == "GET" and (r.query or ""):find("filter", 1, true) then
        filtered = filtered + 1
      end
    end
    assert.equal(3, filtered)
    os.remove(file)

    -- a file covering the directory: one listing (400 / 50 = 8 pages) instead of 400 lookups
    lines = { "email,job title" }
    for i = 1, 400 do lines[#lines + 1] = seeded[i].userName .. ",Astronaut" end
    file = agent.tmpfile(table.concat(lines, "\n") .. "\n", ".csv")
    s:reset_stats()
    code, _, err = agent.main({ "update", file, "--concurrency", "16" }, agent.vars(s))
    assert.equal(0, code, err)
    st = s:stats()
    assert.equal(397, st.by_method.PATCH)
    assert.truthy(st.by_method.GET <= 8 + 3, "GETs: " .. st.by_method.GET)
    os.remove(file)
  end)

  it("reports a row without an account as failed (exit 1) and the rest done", function()
    s:reset()
    local seeded = s:seed(2)
    local file = agent.tmpfile("email,job title\n" .. seeded[1].userName .. ",Pilot\n"
      .. "nobody@example.com,Pilot\n", ".csv")
    local report = os.tmpname()
    local code = agent.main({ "update", file, "--report", report }, agent.vars(s))
    assert.equal(1, code)
    local rows = {}
    for _, r in ipairs(agent.read_csv(report)) do rows[r.line] = r end
    assert.equal("updated", rows["2"].action)
    assert.equal("failed", rows["3"].action)
    assert.truthy(rows["3"].error:find("no account", 1, true))
    os.remove(file)
    os.remove(report)
  end)
end)

describe("export", function()
  local s
  setup(function() s = server.start{ page_size = 100 } end)
  teardown(function() s:stop() end)

  it("sends exactly ceil(5000 / page size) listing requests for 5,000 users", function()
    s:reset()
    s:seed(5000)
    s:reset_stats()
    local out = os.tmpname()
    local code, _, err = agent.main({ "export", out }, agent.vars(s))
    assert.equal(0, code, err)
    local st = s:stats()
    -- Besides the listing, at most the one read of the server's page limit.
    local listing, config, other = agent.classify_requests(st)
    assert.equal(50, listing)
    assert.truthy(config <= 1, "ServiceProviderConfig read " .. config .. " times")
    assert.same({}, other)
    assert.equal(listing + config, st.total)
    local rows = agent.read_csv(out)
    assert.equal(5000, #rows)
    os.remove(out)
  end)

  it("resolves a manager listed after the person from the listing itself", function()
    s:reset()
    local early = s:seed{ { schemas = { "urn:ietf:params:scim:schemas:core:2.0:User" },
                            userName = "report@example.com", name = { givenName = "Re",
                            familyName = "Port" } } }[1]
    local boss = s:seed{ { schemas = { "urn:ietf:params:scim:schemas:core:2.0:User" },
                           userName = "boss@example.com", name = { givenName = "Bo",
                           familyName = "Ss" } } }[1]
    local r = s:request{ method = "PATCH", path = "Users/" .. early.id, body = {
      schemas = { "urn:ietf:params:scim:api:messages:2.0:PatchOp" },
      Operations = { { op = "add", path = ENT2 .. ":manager", value = { value = boss.id } } } } }
    assert.equal(200, r.status, r.body)
    s:reset_stats()
    local out = os.tmpname()
    local code, _, err = agent.main({ "export", out }, agent.vars(s))
    assert.equal(0, code, err)
    local rows = agent.read_csv(out)
    local ex = {}
    for _, row in ipairs(rows) do ex[row.email] = row end
    assert.equal("boss@example.com", ex["report@example.com"]["manager email"])
    assert.equal(0, agent.writes(s:stats()))
    os.remove(out)
  end)

  it("leaves the previous file intact when the listing fails", function()
    s:reset()
    s:seed(250)
    local out = agent.tmpfile("previous content\n", ".csv")
    s:faults{ status = 502, match = "GET /Users", count = 1000 }
    local code, _, err = agent.main({ "export", out, "--retries", "1" }, agent.vars(s))
    s:faults()
    assert.equal(3, code)
    assert.truthy(err:find("left as it was", 1, true), err)
    assert.equal("previous content\n", agent.read_file(out))
    os.remove(out)
  end)
end)

describe("delete", function()
  local s
  setup(function() s = server.start{} end)
  teardown(function() s:stop() end)

  it("refuses without --yes when no one is at a terminal, sending no DELETE", function()
    s:seed{ { userName = "keep@example.com" } }
    local file = agent.tmpfile("email\nkeep@example.com\n", ".csv")
    s:reset_stats()
    local code, _, err = agent.main({ "delete", file }, agent.vars(s))
    assert.equal(2, code, err)
    assert.truthy(err:find("--yes", 1, true), err)
    assert.equal(0, s:stats().by_method.DELETE or 0)
    assert.equal(1, #s:users())
    os.remove(file)
  end)
end)

describe("delete", function()
  local s
  setup(function() s = server.start{} end)
  teardown(function() s:stop() end)

  it("--deactivate sets active to false instead of deleting", function()
    s:reset()
    local seeded = s:seed(3)
    local file = agent.tmpfile("email\n" .. seeded[1].userName .. "\n" .. seeded[2].userName
      .. "\nnot-there@example.com\n", ".csv")
    local report = os.tmpname()
    local code, _, err = agent.main({ "delete", file, "--deactivate", "--report", report, "--yes" },
      agent.vars(s))
    assert.equal(0, code, err)
    assert.same({ deactivated = 2, not_found = 1 }, count_actions(agent.read_csv(report)))
    local st = s:stats()
    assert.is_nil(st.by_method.DELETE)
    local users = by_name(s:users())
    assert.is_false(users[seeded[1].userName:lower()].active)
    assert.equal(3, #s:users())
    os.remove(file)
    os.remove(report)
  end)

  it("--dry-run deletes nothing and lists who would go", function()
    s:reset()
    local seeded = s:seed(2)
    local file = agent.tmpfile("email\n" .. seeded[1].userName .. "\n", ".csv")
    s:reset_stats()
    local code, out = agent.main({ "delete", file, "--dry-run" }, agent.vars(s))
    assert.equal(0, code)
    assert.matches("plan: 1 to delete", out, 1, true)
    assert.truthy(out:find(seeded[1].userName, 1, true))
    assert.equal(0, agent.writes(s:stats()))
    os.remove(file)
  end)
end)

describe("sync removal guard", function()
  local s
  setup(function() s = server.start{} end)
  teardown(function() s:stop() end)

  it("refuses to remove more than 10% of the directory unless --max-removals allows", function()
    s:reset()
    local seeded = s:seed(100)
    -- a truncated HR export: only the first 50 people
    local lines = { "email" }
    for i = 1, 50 do lines[#lines + 1] = seeded[i].userName end
    local file = agent.tmpfile(table.concat(lines, "\n") .. "\n", ".csv")
    s:reset_stats()
    local code, _, err = agent.main({ "sync", file, "--delete-missing" }, agent.vars(s))
    assert.equal(2, code)
    assert.truthy(err:find("refusing to delete 50 of 100 accounts", 1, true), err)
    assert.equal(0, agent.writes(s:stats()))
    assert.equal(100, #s:users())
    -- an explicit limit below the need still refuses; one above it lets the run go
    code = agent.main({ "sync", file, "--delete-missing", "--max-removals", "49" }, agent.vars(s))
    assert.equal(2, code)
    code, _, err = agent.main({ "sync", file, "--delete-missing", "--max-removals", "50%" },
      agent.vars(s))
    assert.equal(0, code, err)
    assert.equal(50, #s:users())
    os.remove(file)
  end)
end)

describe("the results report", function()
  local s
  setup(function() s = server.start{} end)
  teardown(function() s:stop() end)

  it("holds one row per input row, and its failed rows can be fed back as input", function()
    s:reset()
    local lines = { "email,first name,last name,job title" }
    for i = 1, 6 do
      lines[#lines + 1] = string.format("p%d@example.com,P%d,Person,=cmd|' /C calc'!A0", i, i)
    end
    local file = agent.tmpfile(table.concat(lines, "\n") .. "\n", ".csv")
    local report = os.tmpname()
    -- two creates fail for good (502 with retries exhausted; a 503 is throttling)
    s:faults{ status = 502, match = "POST /Users", count = 2 }
    local code, _, err = agent.main({ "create", file, "--report", report, "--retries", "1",
      "--concurrency", "1" }, agent.vars(s))
    s:faults()
    assert.equal(1, code, err)
    local rows, header = agent.read_csv(report)
    assert.same({ "line", "key", "action", "http_status", "scim_id", "error", "email",
                  "first name", "last name", "job title" }, header)
    assert.equal(6, #rows)
    assert.same({ created = 4, failed = 2 }, count_actions(rows))
    for _, r in ipairs(rows) do
      if r.action == "failed" then
        assert.equal("502", r.http_status)
        assert.truthy(r.error:find("502", 1, true))
        assert.equal("", r.scim_id)
      else
        assert.equal("201", r.http_status)
        assert.truthy(#r.scim_id > 0)
      end
      assert.equal("=cmd|' /C calc'!A0", r["job title"])
      assert.equal(r.key, r.email)
      assert.equal(tonumber(r.line), tonumber(r.email:match("^p(%d)")) + 1)
    end
    -- the report as input: only the two failed rows are tried again
    s:reset_stats()
    local report2 = os.tmpname()
    code, _, err = agent.main({ "create", report, "--report", report2 }, agent.vars(s))
    assert.equal(0, code, err)
    assert.equal(2, s:stats().by_method.POST)
    assert.same({ created = 2 }, count_actions(agent.read_csv(report2)))
    assert.equal(6, #s:users())
    os.remove(file); os.remove(report); os.remove(report2)
  end)

  it("writes one JSON object per row with --log-format json", function()
    s:reset()
    local file = agent.tmpfile("email,first name,last name\nj@example.com,J,Son\n", ".csv")
    local code, out = agent.main({ "create", file, "--log-format", "json" }, agent.vars(s))
    assert.equal(0, code)
    local objs = {}
    for l in out:gmatch("[^\n]+") do objs[#objs + 1] = cjson.decode(l) end
    assert.equal(2, #objs)
    assert.equal("created", objs[1].action)
    assert.equal("j@example.com", objs[1].key)
    assert.equal(2, objs[1].line)
    assert.equal(1, objs[2].summary.counts.created)
    os.remove(file)
  end)
end)

describe("cannot work at all", function()

  -- Every job, on a file it could work on: the refusal is found before any write.
  local JOBS = {
    { "create", "examples/create.csv" }, { "update", "examples/update.csv" },
    { "delete", "examples/delete.csv", "--yes" }, { "sync", "examples/update.csv" },
    { "sync", "examples/update.csv", "--delete-missing", "--max-removals", "100%" },
    { "export", "EXPORT" },
  }

  it("exits 3 when the token is refused, before any write, in every job", function()
    local s = server.start{}
    assert.equal(0, (agent.main({ "create", "examples/create.csv" }, agent.vars(s))))
    local previous = agent.tmpfile("previous\n", ".csv")
    for _, args in ipairs(JOBS) do
      args = { table.unpack(args) }
      if args[2] == "EXPORT" then args[2] = previous end
      s:reset_stats()
      local code, out, err = agent.main(args, { SCIM_URL = s.url,
        SCIM_TOKEN = "wrong-token-value" })
      local st = s:stats()
      local what = table.concat(args, " ")
      assert.equal(3, code, what .. ": " .. err)
      -- the first answer was the refusal, and nothing followed it
      assert.same({ ["401"] = st.total }, st.by_status, what)
      assert.equal(0, agent.writes(st), what)
      assert.truthy(err:find("401", 1, true), err)
      assert.is_nil((out .. err):find("wrong-token-value", 1, true))
    end
    assert.equal("previous\n", agent.read_file(previous))
    assert.equal(30, #s:users())
    s:stop()
    os.remove(previous)
  end)

  it("exits 3 when the server cannot be reached, in every job", function()
    local s = server.start{}
    local url = s.url
    s:stop()
    local previous = agent.tmpfile("previous\n", ".csv")
    for _, args in ipairs(JOBS) do
      args = { table.unpack(args) }
      if args[2] == "EXPORT" then args[2] = previous end
      args[#args + 1] = "--retries"
      args[#args + 1] = "1"
      local code, _, err = agent.main(args, { SCIM_URL = url, SCIM_TOKEN = "t" })
      assert.equal(3, code, table.concat(args, " ") .. ": " .. err)
      assert.truthy(err:find("Couldn't connect", 1, true), err)
    end
    assert.equal("previous\n", agent.read_file(previous))
    os.remove(previous)
  end)

  it("exits 2 without a token when stdin is not a terminal", function()
    local code, _, err = agent.main({ "create", "examples/create.csv" },
      { SCIM_URL = "http://127.0.0.1:9/scim/v2/" })
    assert.equal(2, code)
    assert.truthy(err:find("no token", 1, true), err)
  end)

  it("exits 2 for plain http to another host, or no URL, before any traffic", function()
    -- Refused while parsing the URL: no name is looked up, nothing is sent anywhere.
    local code, _, err = agent.main({ "create", "examples/create.csv" },
      { SCIM_URL = "http://scim.example.invalid/scim/v2/", SCIM_TOKEN = "t" })
    assert.equal(2, code)
    assert.truthy(err:find("use https, or --allow-http", 1, true), err)
    code, _, err = agent.main({ "-c", "examples/create.csv", "t" }, {})
    assert.equal(2, code)
    assert.truthy(err:find("no URL", 1, true), err)
    assert.truthy(err:find("--dialect meta", 1, true), err)
  end)
end)

describe("terminal interaction and the config file", function()
  local s
  setup(function() s = server.start{ token = "prompted-token-42" } end)
  teardown(function() s:stop() end)
  before_each(function() s:reset() end)

  -- Runs cli.main as if stdin were a terminal holding `input`.
  local function with_terminal(args, vars, input)
    return agent.main(args, vars, { tty = { [0] = true }, input = input })
  end

  it("prompts for the token when none is given and stdin is a terminal", function()
    local file = agent.tmpfile("email,first name,last name\np@example.com,P,Q\n", ".csv")
    local code, out, err = with_terminal({ "create", file }, { SCIM_URL = s.url },
      "prompted-token-42\n")
    assert.equal(0, code, err)
    assert.truthy(err:find("SCIM access token: ", 1, true))
    assert.is_nil((out .. err):find("prompted-token-42", 1, true))
    assert.equal(1, #s:users())
    os.remove(file)
  end)

  it("draws progress on a terminal: escape codes unless NO_COLOR, nothing when quiet",
    function()
    local file = agent.tmpfile("email,first name,last name\na@example.com,A,B\n"
      .. "b@example.com,B,C\nc@example.com,C,D\n", ".csv")
    local function create(vars, term)
      s:reset()
      local code, out, err = agent.main({ "create", file, table.unpack(vars.args or {}) },
        agent.vars(s, vars.env), term)
      assert.equal(0, code, err)
      assert.equal(3, #s:users())
      return out, err
    end
    -- not a terminal: plain lines only
    local _
    local out, err = create({})
    assert.equal("", out)
    assert.is_nil(err:find("[\r\27]"), err)
    assert.matches("created%s+3", err)
    -- stderr a terminal: the progress line redrawn in place, erased with an escape code
    _, err = create({}, { tty = { [2] = true } })
    assert.matches("^create %d/3", err)
    assert.truthy(err:find("\r\27[2K", 1, true), err)
    assert.matches("created%s+3", err)
    -- NO_COLOR: the same progress, erased with spaces
    _, err = create({ env = { NO_COLOR = "1" } }, { tty = { [2] = true } })
    assert.matches("^create %d/3\r +\r", err)
    assert.is_nil(err:find("\27", 1, true), err)
    -- --quiet: nothing at all when every row is done
    out, err = create({ args = { "--quiet" } }, { tty = { [2] = true } })
    assert.equal("", out .. err)
    os.remove(file)
  end)

  it("asks before deleting on a terminal; 'n' deletes nothing, --yes does not ask", function()
    local seeded = s:seed(2)
    local file = agent.tmpfile("email\n" .. seeded[1].userName .. "\n" .. seeded[2].userName
      .. "\n", ".csv")
    local vars = agent.vars(s)
    local code, _, err = with_terminal({ "delete", file }, vars, "n\n")
    assert.equal(1, code)
    assert.truthy(err:find("Delete 2 accounts on " .. s.url .. "? [y/N]", 1, true), err)
    assert.truthy(err:find("cancelled", 1, true), err)
    assert.equal(2, #s:users())
    code, _, err = with_terminal({ "delete", file, "--deactivate" }, vars, "y\n")
    assert.equal(0, code, err)
    assert.truthy(err:find("Deactivate 2 accounts", 1, true), err)
    assert.equal(2, #s:users())
    code, _, err = with_terminal({ "delete", file, "--yes" }, vars, "")
    assert.equal(0, code, err)
    assert.is_nil(err:find("[y/N]", 1, true))
    assert.equal(0, #s:users())
    os.remove(file)
  end)

  it("takes the URL, token file and options from --config", function()
    local tf = agent.tmpfile("prompted-token-42\n")
    local cfg = agent.tmpfile(string.format("url = %q\ntoken_file = %q\nconcurrency = 2\n"
      .. "dialect = 'meta'\n", s.url, tf), ".lua")
    local file = agent.tmpfile("email,first name,last name\nc@example.com,C,D\n", ".csv")
    local code, _, err = agent.main({ "create", file, "--config", cfg }, {})
    assert.equal(0, code, err)
    assert.equal(1, #s:users())
    -- SCIM_TOKEN comes before the config's token file
    code, _, err = agent.main({ "update", file, "--config", cfg }, { SCIM_TOKEN = "nope" })
    assert.equal(3, code, err)
    os.remove(tf); os.remove(cfg); os.remove(file)
  end)

end)

describe("Meta's API (the test server's meta mode)", function()
  local STATUS = "urn:ietf:params:scim:schemas:extension:facebook:accountstatusdetails:2.0:User"
  local s
  setup(function() s = server.start{ mode = "meta" } end)
  teardown(function() s:stop() end)

  it("deletes only never-claimed accounts, explains the refusal, and can deactivate", function()
    s:reset()
    local function person(name, claimed)
      return { schemas = { "urn:ietf:params:scim:schemas:core:2.0:User", STATUS },
               userName = name, name = { givenName = "G", familyName = "F", formatted = "G F" },
               [STATUS] = { invited = true, claimed = claimed } }
    end
    s:seed{ person("claimed@example.com", true), person("fresh@example.com", false) }
    local file = agent.tmpfile("email\nclaimed@example.com\nfresh@example.com\n", ".csv")
    local report = os.tmpname()
    local vars = agent.vars(s)
    local code, _, err = agent.main({ "delete", file, "--dialect", "meta", "--report", report,
      "--yes" }, vars)
    assert.equal(1, code, err)
    local rows = {}
    for _, r in ipairs(agent.read_csv(report)) do rows[r.key] = r end
    assert.equal("deleted", rows["fresh@example.com"].action)
    assert.equal("failed", rows["claimed@example.com"].action)
    assert.equal("400", rows["claimed@example.com"].http_status)
    assert.truthy(rows["claimed@example.com"].error:find("claimed", 1, true))
    assert.truthy(err:find("use --deactivate", 1, true), err)
    -- what the message says to do works, and the account already deleted is no failure
    code, _, err = agent.main({ "delete", file, "--dialect", "meta", "--deactivate",
      "--report", report, "--yes" }, vars)
    assert.equal(0, code, err)
    rows = {}
    for _, r in ipairs(agent.read_csv(report)) do rows[r.key] = r end
    assert.equal("deactivated", rows["claimed@example.com"].action)
    assert.equal("not_found", rows["fresh@example.com"].action)
    local users = s:users()
    assert.equal(1, #users)
    assert.is_false(users[1].active)
    assert.is_true(users[1][STATUS].claimed)
    os.remove(file)
    os.remove(report)
  end)
end)

describe("--dry-run and --upsert", function()
  local s
  setup(function() s = server.start{} end)
  teardown(function() s:stop() end)

  it("sends no write on any job, and says what it would do", function()
    s:reset()
    assert.equal(0, (agent.main({ "create", "examples/create.csv" }, agent.vars(s))))
    local new = agent.tmpfile("email,first name,last name\nnew@example.com,New,Person\n"
      .. "amelie.durand@example.com,Amélie,Durand\n", ".csv")
    local cases = {
      { { "create", new, "--dry-run" }, "plan: 1 to create, 1 exists" },
      { { "create", new, "--dry-run", "--upsert" }, "plan: 1 to create, 1 unchanged" },
      { { "update", "examples/update.csv", "--dry-run" }, "plan: 5 to update, 25 unchanged" },
      { { "delete", "examples/delete.csv", "--dry-run" }, "plan: 3 to delete" },
      { { "delete", "examples/delete.csv", "--dry-run", "--deactivate" }, "plan: 3 to deactivate" },
      { { "sync", new, "--dry-run", "--delete-missing", "--max-removals", "100%" },
        "plan: 1 to create, 29 to delete, 1 unchanged" },
    }
    for _, c in ipairs(cases) do
      s:reset_stats()
      local code, out, err = agent.main(c[1], agent.vars(s))
      assert.equal(0, code, err)
      assert.truthy(out:find(c[2], 1, true), table.concat(c[1], " ") .. ":\n" .. out)
      assert.equal(0, agent.writes(s:stats()), table.concat(c[1], " "))
    end
    assert.equal(30, #s:users())
    os.remove(new)
  end)

  it("create --upsert updates the accounts that exist", function()
    s:reset()
    assert.equal(0, (agent.main({ "create", "examples/create.csv" }, agent.vars(s))))
    local report = os.tmpname()
    local code, _, err = agent.main({ "create", "examples/update.csv", "--upsert", "--report",
      report }, agent.vars(s))
    assert.equal(0, code, err)
    assert.same({ updated = 5, unchanged = 25 }, count_actions(agent.read_csv(report)))
    assert.equal(30, #s:users())
    os.remove(report)
  end)
end)

describe("the example files", function()
  local s
  setup(function() s = server.start{} end)
  teardown(function() s:stop() end)

  it("examples/hr_export.csv goes with examples/mappings/hr_export.lua", function()
    local args = { "create", "examples/hr_export.csv", "--mapping",
      "examples/mappings/hr_export.lua" }
    local code, _, err = agent.main(args, agent.vars(s))
    assert.equal(0, code, err)
    local users = by_name(s:users())
    assert.equal(6, #s:users())
    assert.equal(server.id_string(users["grace.hopper@example.com"].id),
      manager_of(users["alan.turing@example.com"]))
    assert.is_false(users["edsger.dijkstra@example.com"].active)
    code, _, err = agent.main({ "update", "examples/hr_export.csv", "--mapping",
      "examples/mappings/hr_export.lua" }, agent.vars(s))
    assert.equal(0, code, err)
    assert.matches("unchanged%s+6", err)
  end)
end)

describe("row selection, trial runs and operator safety", function()
  local s
  setup(function() s = server.start{} end)
  teardown(function() s:stop() end)
  before_each(function() s:reset() end)

  local function people_file(n)
    local lines = { "email,first name,last name,department" }
    for i = 1, n do
      lines[#lines + 1] = string.format("p%d@example.com,F%d,L%d,%s", i, i, i,
        i % 2 == 0 and "Sales" or "Engineering")
    end
    return agent.tmpfile(table.concat(lines, "\n") .. "\n", ".csv")
  end

  it("create --where department=Sales --limit 20 creates exactly 20 accounts", function()
    local file = people_file(100)
    s:reset_stats()
    local code, _, err = agent.main({ "create", file, "--where", "department=Sales",
      "--limit", "20" }, agent.vars(s))
    assert.equal(0, code, err)
    assert.truthy(err:find("20 of 100 rows selected", 1, true), err)
    assert.equal(20, #s:users())
    for _, u in ipairs(s:users()) do
      assert.equal("Sales", u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]
        .department)
    end
    assert.equal(20, s:stats().by_method.POST)
    os.remove(file)
  end)

  it("sync --where never removes accounts outside the selection", function()
    local file = people_file(40)
    assert.equal(0, (agent.main({ "create", file }, agent.vars(s))))
    s:seed{ { userName = "extra@example.com", name = { givenName = "E", familyName = "X" },
      ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] = {
        department = "Engineering" } } }
    local code, _, err = agent.main({ "sync", file, "--where", "department!=Sales",
      "--deactivate-missing", "--max-removals", "100%" }, agent.vars(s))
    assert.equal(0, code, err)
    -- the 20 Sales accounts are outside the selection: kept; the extra engineer goes
    assert.matches("deactivated%s+1\n", err)
    local active = 0
    for _, u in ipairs(s:users()) do if u.active ~= false then active = active + 1 end end
    assert.equal(40, active)
    code, _, err = agent.main({ "sync", file, "--limit", "5", "--deactivate-missing" },
      agent.vars(s))
    assert.equal(2, code, err)
    os.remove(file)
  end)

  it("never lets a server's escape codes reach the terminal", function()
    local file = people_file(20)
    assert.equal(0, (agent.main({ "create", file }, agent.vars(s))))
    s:seed{ { userName = "evil\27[2J\27]0;pwned\7@example.com",
      name = { givenName = "E", familyName = "V" } } }
    local code, out, err = agent.main({ "plan", file, "--deactivate-missing",
      "--max-removals", "100%" }, agent.vars(s))
    assert.equal(0, code, err)
    assert.truthy(out:find("evil\\x1B[2J", 1, true), out)
    assert.is_nil((out .. err):find("\27", 1, true))
    assert.is_nil((out .. err):find("\7", 1, true))
    os.remove(file)
  end)

  it("--insecure is warned about on every run, even with --quiet", function()
    local file = people_file(1)
    local _, _, err = agent.main({ "create", file, "--insecure", "--quiet" }, agent.vars(s))
    assert.truthy(err:find("--insecure", 1, true), err)
    os.remove(file)
  end)

  it("a config file that never ends is stopped with a clear message", function()
    local cfg = agent.tmpfile("while true do end\n", ".lua")
    local file = people_file(1)
    local code, _, err = agent.main({ "create", file, "--config", cfg }, agent.vars(s))
    assert.equal(2, code)
    assert.truthy(err:find("too long to evaluate", 1, true), err)
    os.remove(cfg)
    os.remove(file)
  end)

  it("export --no-formula-guard writes values as they are", function()
    s:seed{ { userName = "f@example.com", title = "=SUM(A1)", name = { givenName = "F",
      familyName = "G" } } }
    local out = os.tmpname()
    assert.equal(0, (agent.main({ "export", out }, agent.vars(s))))
    assert.truthy(agent.read_file(out):find("'=SUM(A1)", 1, true))
    assert.equal(0, (agent.main({ "export", out, "--no-formula-guard" }, agent.vars(s))))
    local text = agent.read_file(out)
    assert.truthy(text:find("=SUM(A1)", 1, true))
    assert.falsy(text:find("'=SUM(A1)", 1, true))
    os.remove(out)
  end)
end)

describe("plan over the removal guard", function()
  it("names the accounts it would remove, then exits 2 with nothing sent", function()
    local s = server.start{}
    s:seed(30)
    local file = agent.tmpfile("email,first name,last name\nuser00001@example.com,A,B\n", ".csv")
    s:reset_stats()
    local code, _, err = agent.main({ "plan", file, "--deactivate-missing" }, agent.vars(s))
    assert.equal(2, code, err)
    assert.truthy(err:find("the 29 accounts it would remove", 1, true), err)
    assert.truthy(err:find("user00030@example.com", 1, true), err)
    assert.equal(0, agent.writes(s:stats()))
    s:stop()
    os.remove(file)
  end)

  it("fills http_status for updated and deactivated rows, in the report and the JSON log",
    function()
    local s = server.start{}
    local file = agent.tmpfile("email,first name,last name,job title\n"
      .. "a@example.com,A,B,X\nb@example.com,C,D,Y\n", ".csv")
    assert.equal(0, (agent.main({ "create", file }, agent.vars(s))))
    local edited = agent.tmpfile("email,first name,last name,job title\n"
      .. "a@example.com,A,B,Z\n", ".csv")
    local report = os.tmpname()
    local code, out, err = agent.main({ "sync", edited, "--deactivate-missing",
      "--max-removals", "100%", "--report", report, "--log-format", "json" }, agent.vars(s))
    assert.equal(0, code, err)
    for _, r in ipairs(agent.read_csv(report)) do
      if r.action == "updated" or r.action == "deactivated" then
        assert.equal("200", r.http_status, r.action)
      end
    end
    for line in out:gmatch("[^\n]+") do
      local o = cjson.decode(line)
      if o.action == "updated" or o.action == "deactivated" then
        assert.equal(200, o.status)
      end
    end
    s:stop()
    for _, f in ipairs{ file, edited, report } do os.remove(f) end
  end)
end)
