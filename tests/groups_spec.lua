-- scim.plan{ job = "groups" } and its apply against an in-memory client with Groups
-- (support.fake_groups): validation, the per-group plan, batching and the guard, without
-- HTTP. groups_e2e_spec proves the same against two test servers.
local scim = require "scim"
local fake_groups = require "support.fake_groups"

-- Rows of `{ group, member[, external id] }` as keyed rows on lines 2, 3, ...
local function rows(list)
  local out = {}
  for i, r in ipairs(list) do
    out[i] = { group = r[1], member = r[2] or "", ["group external id"] = r[3] or "",
      _line = i + 1 }
  end
  return out
end

local function writes(fake)
  return fake.calls.POST + fake.calls.PATCH + fake.calls.DELETE
end

local function by_group(p)
  local t = {}
  for c in p:changes() do t[c.group] = c end
  return t
end

describe("scim.plan{ job = \"groups\" }", function()
  local fake
  before_each(function()
    fake = fake_groups.new()
    fake:seed_users{ "a@example.com", "b@example.com", "c@example.com", "d@example.com" }
  end)

  it("plans create, + member, - member, unchanged and delete per group", function()
    fake:seed_group("Sales", { "a@example.com", "b@example.com" })
    fake:seed_group("Ops", { "c@example.com" })
    fake:seed_group("Old", { "d@example.com" })
    local p = assert(scim.plan{ client = fake, job = "groups", delete_missing_groups = true,
      max_removals = "50%", rows = rows{
        { "Sales", "A@example.com" }, { "Sales", "c@example.com" },   -- b out, c in
        { "ops", "c@example.com" },                                   -- unchanged (any case)
        { "New", "d@example.com" }, { "New", "a@example.com" }, { "Empty" },
      } })
    local c = by_group(p)
    assert.same({ "create", "create", "delete", "unchanged", "update" },
      (function() local l = {} for x in p:changes() do l[#l + 1] = x.action end
        table.sort(l) return l end)())
    assert.same({ "c@example.com" }, c.Sales.adds)
    assert.same({ "b@example.com" }, c.Sales.removes)
    assert.equal(2, c.Sales.line)
    assert.same({ "a@example.com", "d@example.com" }, c.New.adds)
    assert.same({}, c.Empty.adds)
    assert.same({ "d@example.com" }, c.Old.removes)
    assert.same({ create = 2, update = 1, unchanged = 1, delete = 1 }, p.counts)
    -- Planning read the groups and the users once each: no request per member, no write.
    assert.equal(0, writes(fake))
    assert.equal(2, fake.calls.GET)

    local seen = {}
    local result = p:apply{ on_result = function(r) seen[r.group] = r.action end }
    assert.same({ Sales = "updated", ops = "unchanged", New = "created", Empty = "created",
      Old = "deleted" }, seen)
    assert.equal(0, result.failed)
    assert.equal(5, result.done)
    assert.same({ "a@example.com", "c@example.com" }, fake:members("Sales"))
    assert.same({ "a@example.com", "d@example.com" }, fake:members("New"))
    assert.same({}, fake:members("Empty"))
    assert.is_nil(fake:group("Old"))
    -- One POST per new group, one PATCH for Sales, one DELETE.
    assert.same({ 2, 1, 1 }, { fake.calls.POST, fake.calls.PATCH, fake.calls.DELETE })

    -- Again: nothing to send.
    local before = writes(fake)
    p = assert(scim.plan{ client = fake, job = "groups", rows = rows{
      { "Sales", "a@example.com" }, { "Sales", "c@example.com" }, { "Ops", "c@example.com" },
      { "New", "d@example.com" }, { "New", "a@example.com" }, { "Empty", "" } } })
    assert.same({ unchanged = 4 }, p.counts)
    p:apply{}
    assert.equal(before, writes(fake))
  end)

  it("refuses a bad file before any request, naming file:line", function()
    local p, err, code = scim.plan{ client = fake, job = "groups", source = "g.csv", rows = rows{
      { "Sales", "a@example.com" }, { "", "b@example.com" }, { "Sales", "A@EXAMPLE.COM" },
      { "Sales", "group:" }, { "Ops", "c@example.com", "x1" }, { "Ops", "d@example.com", "x2" },
    } }
    assert.is_nil(p)
    assert.equal("INVALID", code)
    assert.equal(4, err.total)
    assert.matches("g.csv:3: the group is empty", err.problems[1], 1, true)
    assert.matches("g.csv:4: member 'A@EXAMPLE.COM' of group 'Sales' already on line 2",
      err.problems[2], 1, true)
    assert.matches("g.csv:5: member 'group:' names no group", err.problems[3], 1, true)
    assert.matches("g.csv:7: group 'Ops' has group external id 'x1' on line 6 and 'x2' here",
      err.problems[4], 1, true)
    assert.equal(0, fake.calls.total)
  end)

  it("refuses a file without the group and member columns", function()
    local p, err, code = scim.plan{ client = fake, job = "groups",
      rows = { { team = "Sales", email = "a@example.com" } } }
    assert.is_nil(p)
    assert.equal("INVALID", code)
    assert.matches("unknown column 'email'", table.concat(err.problems, "\n"), 1, true)
    assert.matches("missing column 'group'", table.concat(err.problems, "\n"), 1, true)
    assert.matches("missing column 'member'", table.concat(err.problems, "\n"), 1, true)
    assert.equal(0, fake.calls.total)
  end)

  it("reads a CSV file with a header in any case and a formula-guarded value", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("GROUP,Member,Group External ID\n'=Sales,a@example.com,s1\n'=Sales,,\n")
    f:close()
    local p = assert(scim.plan{ client = fake, job = "groups", rows = path })
    os.remove(path)
    local c = by_group(p)["=Sales"]
    assert.equal("create", c.action)
    assert.equal("s1", c.external_id)
    assert.same({ "a@example.com" }, c.adds)
  end)

  it("names a CSV parse error with its file:line:column", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("group,member\nSales,a@example.com,extra\n,b@example.com\n")
    f:close()
    local p, err, code = scim.plan{ client = fake, job = "groups", rows = path }
    os.remove(path)
    assert.is_nil(p)
    assert.equal("INVALID", code)
    assert.equal(1, err.total)
    assert.matches(path .. ":2:21: row has 3 fields, the header has 2", err.problems[1], 1, true)
    assert.equal(0, fake.calls.total)
  end)

  it("refuses members that are no users on the server, unless told to ignore them", function()
    local p, err, code = scim.plan{ client = fake, job = "groups", source = "g.csv", rows = rows{
      { "Sales", "a@example.com" }, { "Sales", "ghost@example.com" }, { "Ops", "group:Nope" } } }
    assert.is_nil(p)
    assert.equal("INVALID", code)
    assert.equal(2, err.total)
    assert.matches("g.csv:3: member 'ghost@example.com' of group 'Sales' is not a user on the "
      .. "server", err.problems[1], 1, true)
    assert.matches("g.csv:4: member 'group:Nope' of group 'Ops' is no group", err.problems[2], 1,
      true)
    assert.equal(0, writes(fake))

    local warnings = {}
    p = assert(scim.plan{ client = fake, job = "groups", ignore_missing_members = true,
      on_warning = function(m) warnings[#warnings + 1] = m end,
      rows = rows{ { "Sales", "a@example.com" }, { "Sales", "ghost@example.com" } } })
    assert.equal(1, #warnings)
    assert.matches("ghost@example.com", warnings[1], 1, true)
    assert.same({ "a@example.com" }, by_group(p).Sales.adds)
  end)

  it("guards group deletions like user removals (GUARD, nothing written)", function()
    for i = 1, 10 do fake:seed_group("G" .. i, { "a@example.com" }) end
    local keep = {}
    for i = 1, 7 do keep[#keep + 1] = { "G" .. i, "a@example.com" } end
    local p, err, code = scim.plan{ client = fake, job = "groups", rows = rows(keep),
      delete_missing_groups = true, max_removals = "20%" }
    assert.is_nil(p)
    assert.equal("GUARD", code)
    assert.same({ "G8", "G9", "G10" }, err.removals)
    assert.equal(2, err.allowed)
    assert.equal(0, writes(fake))
    -- The default guard is 10%: one of ten.
    keep[#keep + 1] = { "G8", "a@example.com" }
    keep[#keep + 1] = { "G9", "a@example.com" }
    p = assert(scim.plan{ client = fake, job = "groups", rows = rows(keep),
      delete_missing_groups = true })
    assert.equal(1, p.counts.delete)
    -- Without delete_missing_groups the absent groups are left alone.
    p = assert(scim.plan{ client = fake, job = "groups", rows = rows{ { "G1", "a@example.com" } } })
    assert.same({ unchanged = 1 }, p.counts)
  end)

  it("says UNSUPPORTED for a server without Groups", function()
    fake = fake_groups.new{ no_groups = true }
    local p, err, code = scim.plan{ client = fake, job = "groups", rows = rows{ { "G", "" } } }
    assert.is_nil(p)
    assert.equal("UNSUPPORTED", code)
    assert.matches("no Group", tostring(err))
  end)

  it("sends member changes in PATCH batches, learning the provider's cap once", function()
    local names = {}
    for i = 1, 60 do names[i] = "u" .. i .. "@example.com" end
    fake = fake_groups.new{ max_ops = 10 }
    fake:seed_users(names)
    -- Three groups each with u1..u30; the file keeps u1..u5 and adds u31..u52.
    for g = 1, 3 do fake:seed_group("G" .. g, table.move(names, 1, 30, 1, {})) end
    local list = {}
    for g = 1, 3 do
      for i = 1, 5 do list[#list + 1] = { "G" .. g, names[i] } end
      for i = 31, 52 do list[#list + 1] = { "G" .. g, names[i] } end
    end
    local p = assert(scim.plan{ client = fake, job = "groups", rows = rows(list) })
    for c in p:changes() do
      assert.equal(22, #c.adds)
      assert.equal(25, #c.removes)
    end
    local result = p:apply{ concurrency = 4 }
    assert.equal(0, result.failed)
    assert.same({ ops = 10, values = 10 }, result.limits)
    local want = {}
    for i = 1, 5 do want[#want + 1] = names[i] end
    for i = 31, 52 do want[#want + 1] = names[i] end
    table.sort(want)
    for g = 1, 3 do assert.same(want, fake:members("G" .. g)) end
    -- Per group: 3 adds of <= 10 values + 25 removes = 28 operations = 3 requests of 10; the
    -- first group's first request (27 operations... of 100) was refused once: 10 in all.
    assert.equal(10, fake.calls.PATCH)
  end)

  it("keeps nested groups as members, written group:<name>", function()
    fake:seed_group("Admins", { "a@example.com" })
    fake:seed_group("All", { "b@example.com", "group:Admins" })
    local p = assert(scim.plan{ client = fake, job = "groups", rows = rows{
      { "Admins", "a@example.com" }, { "All", "b@example.com" }, { "All", "group:admins" },
      { "All", "group:Leads" }, { "Leads", "c@example.com" } } })
    local c = by_group(p)
    assert.equal("unchanged", c.Admins.action)
    assert.equal("update", c.All.action)
    assert.same({ "group:Leads" }, c.All.adds)
    assert.same({}, c.All.removes)
    assert.equal("create", c.Leads.action)
    local result = p:apply{}
    assert.equal(0, result.failed)
    assert.same({ "b@example.com", "group:Admins", "group:Leads" }, fake:members("All"))
    -- A nested group left out of the file is removed like a user.
    p = assert(scim.plan{ client = fake, job = "groups", rows = rows{
      { "All", "b@example.com" }, { "All", "group:Leads" } } })
    assert.same({ "group:Admins" }, by_group(p).All.removes)
  end)

  it("creates a group whose nested member is created by the same plan", function()
    local p = assert(scim.plan{ client = fake, job = "groups", rows = rows{
      { "Top", "group:Sub" }, { "Top", "a@example.com" }, { "Sub", "b@example.com" } } })
    assert.same({ "a@example.com", "group:Sub" }, by_group(p).Top.adds)
    local seen = {}
    local result = p:apply{ on_result = function(r) seen[r.group] = r.action end }
    assert.equal(0, result.failed)
    assert.same({ Top = "created", Sub = "created" }, seen)
    assert.same({ "a@example.com", "group:Sub" }, fake:members("Top"))
    assert.same({ 2, 1 }, { fake.calls.POST, fake.calls.PATCH })
  end)

  it("updates a changed group external id with the members", function()
    fake:seed_group("Sales", { "a@example.com" }, "old")
    local p = assert(scim.plan{ client = fake, job = "groups", rows = rows{
      { "Sales", "a@example.com", "new" } } })
    local c = by_group(p).Sales
    assert.equal("update", c.action)
    assert.equal("old", c.old_external_id)
    assert.equal("new", c.external_id)
    p:apply{}
    assert.equal("new", fake:group("Sales").externalId)
    assert.equal(1, fake.calls.PATCH)
  end)

  it("stops at a refused token and reports the rest skipped", function()
    for i = 1, 6 do fake:seed_group("G" .. i, { "a@example.com" }) end
    fake.fail = function(method) if method == "PATCH" then return 401, "UNAUTHORIZED" end end
    local list = {}
    for i = 1, 6 do list[i] = { "G" .. i, "b@example.com" } end
    local p = assert(scim.plan{ client = fake, job = "groups", rows = rows(list) })
    local result = p:apply{ concurrency = 2 }
    assert.equal("AUTH", result.stopped)
    assert.equal(1, result.counts.failed)
    assert.equal(5, result.counts.skipped)
    assert.equal(1, fake.calls.PATCH)
    assert.has_error(function() p:apply{} end)
  end)

  it("reports a failed PATCH with how much of it was applied", function()
    fake = fake_groups.new{ max_ops = 2 }
    local names = {}
    for i = 1, 9 do names[i] = "u" .. i .. "@example.com" end
    fake:seed_users(names)
    fake:seed_group("G", names)
    local n = 0
    fake.fail = function(method)
      if method == "PATCH" then n = n + 1 if n == 3 then return 500, "SERVER_ERROR" end end
    end
    local p = assert(scim.plan{ client = fake, job = "groups", rows = rows{ { "G", "" } } })
    local got
    local result = p:apply{ max_patch_operations = 2, max_patch_values = 2,
      on_result = function(r) got = r end }
    assert.equal(1, result.failed)
    assert.matches("failed after 4 of 9 operations %(run again to finish%)", tostring(got.error))
  end)
end)

describe("scim-agent groups (no server needed)", function()
  local agent = require "support.agent"

  it("refuses a bad file with exit 2 before asking for a token", function()
    local f = agent.tmpfile("group,member\nSales,a@example.com\n,b@example.com\n"
      .. "Sales,a@example.com\n", ".csv")
    local code, _, err = agent.main({ "groups", f, "--url", "http://127.0.0.1:9/scim/v2/" }, {})
    os.remove(f)
    assert.equal(2, code)
    assert.matches(f .. ":3: the group is empty", err, 1, true)
    assert.matches(f .. ":4: member 'a@example.com' of group 'Sales' already on line 2", err, 1,
      true)
    assert.not_matches("token", err)
  end)

  it("says a dialect without Groups has none: exit 2, nothing sent", function()
    local f = agent.tmpfile("group,member\nSales,\n", ".csv")
    for _, cmd in ipairs{ { "groups", f }, { "export-groups", f .. ".out" } } do
      table.move({ "--dialect", "workplace_v1", "--url", "http://127.0.0.1:9/scim/v1/" }, 1, 4,
        #cmd + 1, cmd)
      local code, _, err = agent.main(cmd, { SCIM_TOKEN = "t" })
      assert.equal(2, code, err)
      assert.matches("workplace_v1 dialect has no Groups", err, 1, true)
    end
    assert.is_nil(io.open(f .. ".out"))
    os.remove(f)
  end)
end)
