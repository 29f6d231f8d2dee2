-- Issue 10's "done when" for Groups, on two independent SCIM 2.0 servers (the scim2 mode in
-- strict mode, SCIMMY-based, and the hand-written minimal mode, which leaves members out of
-- group listings and takes at most 10 operations per PATCH): `scim-agent groups` with 10
-- groups and ~650 memberships over 300 people makes every group's members equal the file; a
-- second file (a seventh of the memberships dropped, some added, one group gone) goes in
-- <= 25 write requests with --delete-missing-groups --max-removals 20%; running it again
-- sends no write; `export-groups` writes exactly the file's memberships.
local server = require "support.server"
local agent = require "support.agent"

local PEOPLE, GROUPS = 300, 10

local function person(i) return string.format("user%05d@example.com", i) end

-- The first file: group g has person i when a fixed hash puts i in g's ~22%.
local function first_memberships()
  local list = {}
  for g = 1, GROUPS do
    for i = 1, PEOPLE do
      if (i * 37 + g * 101) % 100 < 22 then list[#list + 1] = { "Team " .. g, person(i) } end
    end
  end
  return list
end

-- The second: every 7th membership dropped, 4 people added to each of groups 1..9, the
-- group "Team 10" gone.
local function second_memberships(first)
  local list, has = {}, {}
  local n = 0
  for _, m in ipairs(first) do
    if m[1] ~= "Team " .. GROUPS then
      n = n + 1
      has[m[1] .. "|" .. m[2]] = true
      if n % 7 ~= 0 then list[#list + 1] = m end
    end
  end
  for g = 1, GROUPS - 1 do
    local added, i = 0, 1
    while added < 4 do
      if not has["Team " .. g .. "|" .. person(i)] then
        list[#list + 1] = { "Team " .. g, person(i) }
        added = added + 1
      end
      i = i + 1
    end
  end
  return list
end

local function write_file(list)
  local lines = { "group,member" }
  for _, m in ipairs(list) do lines[#lines + 1] = m[1] .. "," .. m[2] end
  return agent.tmpfile(table.concat(lines, "\n") .. "\n", ".csv")
end

-- Memberships as a sorted list of "group|member" strings.
local function set_of(list)
  local out = {}
  for _, m in ipairs(list) do out[#out + 1] = m[1] .. "|" .. m[2] end
  table.sort(out)
  return out
end

-- What the server holds, read through its control channel (no counted request).
local function server_memberships(s)
  local names = {}
  for _, u in ipairs(s:users()) do names[server.id_string(u.id)] = u.userName end
  local list = {}
  for _, g in ipairs(s:groups()) do
    for _, m in ipairs(g.members or {}) do
      list[#list + 1] = { g.displayName, names[server.id_string(m.value)] or ("?" .. m.value) }
    end
  end
  return set_of(list)
end

local function group_names(s)
  local out = {}
  for _, g in ipairs(s:groups()) do out[#out + 1] = g.displayName end
  table.sort(out)
  return out
end

local function group_writes(stats)
  local r = stats.by_route
  return (r["POST /Groups"] or 0) + (r["PATCH /Groups/:id"] or 0)
    + (r["DELETE /Groups/:id"] or 0) + (r["PUT /Groups/:id"] or 0), agent.writes(stats)
end

for _, setup_opts in ipairs{ { mode = "scim2", strict = true }, { mode = "minimal" } } do
  describe("groups on the " .. setup_opts.mode .. " server", function()
    local s
    local files = {}
    setup(function() s = server.start(setup_opts) end)
    before_each(function() s:reset() end)
    teardown(function()
      s:stop()
      for _, f in ipairs(files) do os.remove(f) end
    end)

    it("applies 10 groups, then a changed file in <= 25 writes, then nothing; exports it",
        function()
      s:seed(PEOPLE)
      local vars = agent.vars(s)
      local first = first_memberships()
      assert.is_true(#first >= 600 and #first <= 700, "memberships: " .. #first)
      local f1 = write_file(first)
      files[#files + 1] = f1

      s:reset_stats()
      local code, _, err = agent.main({ "groups", f1 }, vars)
      assert.equal(0, code, err)
      assert.same(set_of(first), server_memberships(s))
      local st = s:stats{ requests = false }
      -- One POST per group, each with its members; no request per member.
      assert.equal(GROUPS, st.by_route["POST /Groups"])
      assert.equal(GROUPS, (group_writes(st)))
      assert.is_nil(st.by_route["GET /Users/:id"])

      local second = second_memberships(first)
      local f2 = write_file(second)
      files[#files + 1] = f2
      -- The dry run prints + and - per group and sends no write.
      s:reset_stats()
      local out
      code, out, err = agent.main({ "groups", f2, "--dry-run", "--delete-missing-groups",
        "--max-removals", "20%" }, vars)
      assert.equal(0, code, err)
      assert.matches("plan: 9 to update, 1 to delete\n", out, 1, true)
      assert.matches("\n      %+ user%d+@example.com\n", out)
      assert.matches("\n      %- user%d+@example.com\n", out)
      assert.matches("  delete     Team 10\n", out, 1, true)
      assert.equal(0, select(2, group_writes(s:stats{ requests = false })))

      -- Without the guard raised, deleting 1 group of 10 is within the 10% default; at
      -- --max-removals 0 it is refused: exit 2, nothing sent.
      s:reset_stats()
      code, _, err = agent.main({ "groups", f2, "--delete-missing-groups", "--max-removals",
        "0" }, vars)
      assert.equal(2, code)
      assert.matches("Team 10", err, 1, true)
      assert.equal(0, select(2, group_writes(s:stats{ requests = false })))

      s:reset_stats()
      local report = os.tmpname()
      files[#files + 1] = report
      code, _, err = agent.main({ "groups", f2, "--delete-missing-groups", "--max-removals",
        "20%", "--report", report }, vars)
      assert.equal(0, code, err)
      assert.same(set_of(second), server_memberships(s))
      local names = {}
      for g = 1, GROUPS - 1 do names[g] = "Team " .. g end
      table.sort(names)
      assert.same(names, group_names(s))
      st = s:stats{ requests = false }
      local gw, all = group_writes(st)
      assert.equal(gw, all)
      assert.is_true(gw <= 25, "write requests: " .. gw)
      assert.equal(1, st.by_route["DELETE /Groups/:id"])
      assert.is_nil(st.by_route["POST /Groups"])
      assert.is_nil(st.by_route["PUT /Groups/:id"])
      local rows = agent.read_csv(report)
      assert.equal(GROUPS, #rows)
      local actions = {}
      for _, r in ipairs(rows) do actions[r.action] = (actions[r.action] or 0) + 1 end
      assert.same({ updated = 9, deleted = 1 }, actions)
      print(string.format("\n%s: first file %d memberships in %d writes; second file "
        .. "(%d memberships) in %d writes (%d PATCH, 1 DELETE)", setup_opts.mode, #first,
        GROUPS, #second, gw, st.by_route["PATCH /Groups/:id"]))

      -- Again: no write at all.
      s:reset_stats()
      code, _, err = agent.main({ "groups", f2, "--delete-missing-groups", "--max-removals",
        "20%" }, vars)
      assert.equal(0, code, err)
      assert.equal(0, select(2, group_writes(s:stats{ requests = false })))

      -- export-groups writes exactly the file's memberships (no request per member).
      local out_path = os.tmpname()
      files[#files + 1] = out_path
      s:reset_stats()
      code, _, err = agent.main({ "export-groups", out_path }, vars)
      assert.equal(0, code, err)
      local exported, header = agent.read_csv(out_path)
      assert.same({ "group", "member" }, header)
      local list = {}
      for _, r in ipairs(exported) do list[#list + 1] = { r.group, r.member } end
      assert.same(set_of(second), set_of(list))
      st = s:stats{ requests = false }
      assert.is_nil(st.by_route["GET /Users/:id"])
      -- Members came with the listing (the minimal server gives them when asked by name).
      assert.is_nil(st.by_route["GET /Groups/:id"])
      assert.equal(0, select(2, group_writes(st)))
    end)

    it("keeps nested groups and empty groups through export and back", function()
      local users = s:seed(3)
      local vars = agent.vars(s)
      local f = write_file{ { "Leads", users[1].userName }, { "All", users[2].userName },
        { "All", "group:Leads" }, { "Nobody", "" } }
      files[#files + 1] = f
      local code, _, err = agent.main({ "groups", f }, vars)
      assert.equal(0, code, err)
      local out_path = os.tmpname()
      files[#files + 1] = out_path
      code, _, err = agent.main({ "export-groups", out_path }, vars)
      assert.equal(0, code, err)
      local text = agent.read_file(out_path)
      assert.matches("\nAll,group:Leads\n", text, 1, true)
      assert.matches("\nNobody,\n", text, 1, true)
      -- The export, given back, changes nothing.
      s:reset_stats()
      code, _, err = agent.main({ "groups", out_path }, vars)
      assert.equal(0, code, err)
      assert.equal(0, select(2, group_writes(s:stats{ requests = false })))
    end)

    it("refuses a member that is no user, before any write (exit 2)", function()
      s:seed(2)
      local f = write_file{ { "G", "nobody@example.com" } }
      files[#files + 1] = f
      s:reset_stats()
      local code, _, err = agent.main({ "groups", f }, agent.vars(s))
      assert.equal(2, code)
      assert.matches(":2: member 'nobody@example.com' of group 'G' is not a user on the server",
        err, 1, true)
      assert.equal(0, select(2, group_writes(s:stats{ requests = false })))
      code = agent.main({ "groups", f, "--ignore-missing-members" }, agent.vars(s))
      assert.equal(0, code)
      assert.same({ "G" }, group_names(s))
    end)
  end)
end

describe("examples/groups.csv", function()
  it("applies after examples/create.csv, nested groups and an empty group included", function()
    local s <close> = server.start{ mode = "minimal" }
    local vars = agent.vars(s)
    assert.equal(0, (agent.main({ "create", "examples/create.csv" }, vars)))
    local _, code, out, err
    code, out, err = agent.main({ "groups", "examples/groups.csv", "--dry-run" }, vars)
    assert.equal(0, code, err)
    assert.matches("plan: 6 to create", out, 1, true)
    assert.matches("      + group:Leadership\n", out, 1, true)
    code, _, err = agent.main({ "groups", "examples/groups.csv" }, vars)
    assert.equal(0, code, err)
    local by_name = {}
    for _, g in ipairs(s:groups()) do by_name[g.displayName] = g end
    assert.equal(4, #by_name.Everyone.members)
    for _, m in ipairs(by_name.Everyone.members) do assert.equal("Group", m.type) end
    assert.equal("grp-eng", by_name.Engineering.externalId)
    assert.is_nil(by_name.Alumni.members)
    s:reset_stats()
    code, _, err = agent.main({ "groups", "examples/groups.csv" }, vars)
    assert.equal(0, code, err)
    assert.equal(0, agent.writes(s:stats{ requests = false }))
  end)
end)
