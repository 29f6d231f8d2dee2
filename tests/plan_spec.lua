-- scim.plan and plan:apply against an in-memory client (support.fake_client): the job logic
-- without HTTP, with request counts. The end-to-end specs (jobs_spec, plan_e2e_spec) check the
-- same against the test server.
local scim = require "scim"
local fake_client = require "support.fake_client"

local ENT = fake_client.ENT

-- n people: person i is "p<i>@example.com"; `manager(i)` gives the manager's index or nil.
local function people(n, manager, title)
  local rows = {}
  for i = 1, n do
    local m = manager and manager(i)
    rows[i] = { email = "p" .. i .. "@example.com", ["first name"] = "First" .. i,
      ["last name"] = "Last" .. i, ["job title"] = title and title(i) or "Engineer",
      ["manager email"] = m and ("p" .. m .. "@example.com") or "" }
  end
  return rows
end

-- The accounts people(n) describes, as a server holds them.
local function accounts(n)
  local list = {}
  for i = 1, n do
    list[i] = { userName = "p" .. i .. "@example.com", title = "Engineer",
      name = { givenName = "First" .. i, familyName = "Last" .. i } }
  end
  return list
end

local function manager_of(u)
  return u[ENT] and u[ENT].manager and u[ENT].manager.value
end

local function actions(p)
  local list = {}
  for c in p:changes() do list[#list + 1] = c.action end
  return list
end

describe("scim.plan", function()
  it("lists every problem of a bad input and sends nothing", function()
    local fake = fake_client.new()
    local rows = people(3)
    rows[2].email = ""
    rows[3].email = "p1@example.com"
    local p, err, code = scim.plan{ client = fake, rows = rows, job = "create" }
    assert.is_nil(p)
    assert.equal("INVALID", code)
    assert.equal(2, #err.problems)
    assert.truthy(err.problems[1]:find(":3:", 1, true), err.problems[1])
    assert.truthy(err.problems[2]:find("already on line 2", 1, true), err.problems[2])
    assert.truthy(tostring(err):find("nothing was sent", 1, true))
    assert.equal(0, fake.calls.total)
  end)

  it("plans 200 creates on an empty directory with one request, and applies them", function()
    local fake = fake_client.new()
    local p = assert(scim.plan{ client = fake, rows = people(200), job = "create" })
    assert.equal(200, p.counts.create)
    assert.equal(1, fake.calls.total)   -- the preflight; an empty directory needs no listing
    local seen = 0
    local result = p:apply{ concurrency = 8, on_result = function(r)
      assert.equal("created", r.action)
      assert.equal(201, r.status)
      seen = seen + 1
    end }
    assert.equal(200, seen)
    assert.same({ created = 200 }, result.counts)
    assert.equal(200, fake.calls.POST)
    assert.equal(200, #fake:all())
    assert.has_error(function() p:apply{} end)
  end)

  it("creates managers before their reports, with the manager in the POST", function()
    -- Reports come before their managers in the file: person i reports to i + 1.
    local fake = fake_client.new()
    local rows = people(50, function(i) return i < 50 and i + 1 or nil end)
    local p = assert(scim.plan{ client = fake, rows = rows, job = "create" })
    local result = p:apply{}
    assert.equal(50, result.counts.created)
    assert.equal(50, fake.calls.POST)
    assert.equal(0, fake.calls.PATCH)
    for i = 1, 49 do
      assert.equal(fake:user("p" .. (i + 1) .. "@example.com").id,
        manager_of(fake:user("p" .. i .. "@example.com")))
    end
  end)

  it("warns about cycles and self-managers, and links them with one PATCH each", function()
    local fake = fake_client.new()
    local rows = people(4, function(i) return ({ 2, 1, 3 })[i] end)  -- 1 <-> 2, 3 -> 3
    local warnings = {}
    local p = assert(scim.plan{ client = fake, rows = rows, job = "create",
      on_warning = function(w) warnings[#warnings + 1] = w end })
    assert.equal(2, #warnings)
    assert.truthy(table.concat(warnings, "\n"):find("themselves", 1, true))
    assert.truthy(table.concat(warnings, "\n"):find("cycle", 1, true))
    local result = p:apply{}
    assert.equal(4, result.counts.created)
    assert.equal(4, fake.calls.POST)
    assert.equal(2, fake.calls.PATCH)
    local u = function(i) return fake:user("p" .. i .. "@example.com") end
    assert.equal(u(2).id, manager_of(u(1)))
    assert.equal(u(1).id, manager_of(u(2)))
    assert.equal(u(3).id, manager_of(u(3)))
  end)

  it("plans updates with each column's old and new value, and applies them", function()
    local fake = fake_client.new()
    local p = assert(scim.plan{ client = fake, rows = people(200), job = "create" })
    p:apply{}
    local edited = people(200, nil, function(i) return i <= 20 and "Manager" or "Engineer" end)
    local before = fake.calls.total
    p = assert(scim.plan{ client = fake, rows = edited, job = "update" })
    assert.equal(1 + 2, fake.calls.total - before)  -- preflight + two listing pages
    assert.equal(20, p.counts.update)
    assert.equal(180, p.counts.unchanged)
    for c in p:changes() do
      if c.action == "update" then
        assert.same({ { column = "job title", attribute = "title", path = "title",
          old = "Engineer", new = "Manager" } }, c.diff)
      end
    end
    local result = p:apply{}
    assert.equal(20, result.counts.updated)
    assert.equal(20, fake.calls.PATCH)
    assert.equal("Manager", fake:user("p7@example.com").title)
  end)

  it("plans deactivations for the people left out, under the guard", function()
    local fake = fake_client.new()
    assert(scim.plan{ client = fake, rows = people(200), job = "create" }):apply{}
    local kept = {}
    for i, r in ipairs(people(200)) do if i > 5 then kept[#kept + 1] = r end end
    local p = assert(scim.plan{ client = fake, rows = kept, job = "sync",
      removals = "deactivate" })
    assert.equal(5, p.counts.deactivate)
    assert.equal(195, p.counts.unchanged)
    local list = actions(p)
    assert.equal("deactivate", list[#list])   -- the absent come last
    p:apply{}
    assert.is_false(fake:user("p1@example.com").active)
    assert.is_true(fake:user("p6@example.com").active)

    -- Over the guard: nothing written, and the accounts it would remove are named.
    local few = { people(200)[200] }
    local writes = fake.calls.PATCH
    local none, err, code = scim.plan{ client = fake, rows = few, job = "sync",
      removals = "delete", max_removals = "10%" }
    assert.is_nil(none)
    assert.equal("GUARD", code)
    assert.equal(199, err.count)
    assert.equal(199, #err.removals)
    assert.equal(writes, fake.calls.PATCH)
    assert.equal(0, fake.calls.DELETE)
  end)

  it("a rerun of create on a populated directory lists it and creates only what is missing",
    function()
    local fake = fake_client.new()
    local all = people(1000)
    local first = {}
    for i = 1, 990 do first[i] = all[i] end
    assert(scim.plan{ client = fake, rows = first, job = "create" }):apply{}
    local before = fake.calls.total
    local p = assert(scim.plan{ client = fake, rows = all, job = "create", exact = false })
    local result = p:apply{}
    assert.equal(10, result.counts.created)
    assert.equal(990, result.counts.exists)
    assert.equal(1 + 10 + 10, fake.calls.total - before)  -- preflight, 10 pages, 10 POSTs
  end)

  it("a create without lookups treats a 409 as an existing account", function()
    local fake = fake_client.new()
    fake:seed(accounts(300))
    local rows = { people(301)[301], people(1)[1] }
    local p = assert(scim.plan{ client = fake, rows = rows, job = "create", exact = false })
    assert.equal("optimistic", p.strategy)
    local result = p:apply{}
    assert.same({ created = 1, exists = 1 }, result.counts)
    assert.equal(2, fake.calls.POST)
  end)

  it("stops starting rows once the token is refused, and skips the rest", function()
    local posts = 0
    local fake = fake_client.new{ fail = function(method)
      if method == "POST" then
        posts = posts + 1
        if posts > 4 then return 401, "UNAUTHORIZED" end
      end
    end }
    local p = assert(scim.plan{ client = fake, rows = people(100), job = "create" })
    local result = p:apply{ concurrency = 4 }
    assert.equal("AUTH", result.stopped)
    assert.equal(4, result.counts.created)
    assert.truthy(fake.calls.POST <= 12, fake.calls.POST)
    assert.equal(100, result.done)
    assert.truthy(result.counts.skipped >= 80)
  end)

  it("two accounts whose keys differ only in case are ambiguous on the listing path", function()
    local fake = fake_client.new()
    fake:seed(accounts(20))
    fake:seed{ { userName = "P3@EXAMPLE.COM" } }
    local p = assert(scim.plan{ client = fake, rows = people(20), job = "update" })
    assert.equal("listing", p.strategy)
    local ambiguous
    for c in p:changes() do
      if c.key == "p3@example.com" then ambiguous = c end
    end
    assert.equal("failed", ambiguous.action)
    assert.equal("AMBIGUOUS", ambiguous.error.code)
  end)

  it("delete: not_found for the absent, one DELETE for each present", function()
    local fake = fake_client.new()
    fake:seed(accounts(3))
    local p = assert(scim.plan{ client = fake, job = "delete", rows = {
      { email = "p1@example.com" }, { email = "p2@example.com" }, { email = "gone@example.com" },
    } })
    assert.same({ delete = 2, not_found = 1 }, p.counts)
    local result = p:apply{}
    assert.same({ deleted = 2, not_found = 1 }, result.counts)
    assert.equal(2, fake.calls.DELETE)
    assert.equal(1, #fake:all())
  end)

  it("reads a CSV path and names file and line in its problems", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("email,first name,last name\na@example.com,A,B\n,C,D\n")
    f:close()
    local fake = fake_client.new()
    local p, err, code = scim.plan{ client = fake, rows = path, job = "create" }
    assert.is_nil(p)
    assert.equal("INVALID", code)
    assert.truthy(err.problems[1]:find(path .. ":3:", 1, true), err.problems[1])
    os.remove(path)
  end)
end)
