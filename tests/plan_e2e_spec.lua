-- scim.plan and plan:apply end to end, exactly as the README shows them, against the test
-- server in strict mode (schemas required in every body, eq-only filters, pages capped at
-- 100, no trailing slash): what a strict third-party SCIM 2.0 provider does.
local scim = require "scim"
local server = require "support.server"

local function write_people(path, n, title_of)
  local lines = { "email,first name,last name,job title,manager email" }
  for i = 1, n do
    lines[#lines + 1] = string.format("p%d@example.com,First%d,Last%d,%s,%s", i, i, i,
      title_of and title_of(i) or "Engineer", i > 1 and ("p" .. (i // 2) .. "@example.com") or "")
  end
  local f = assert(io.open(path, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
end

describe("scim.plan against a strict SCIM 2.0 server", function()
  local s, path
  setup(function()
    s = server.start{ strict = true, page_size = 100 }
    path = os.tmpname()
  end)
  teardown(function()
    s:stop()
    os.remove(path)
  end)

  it("creates 200, updates 20 with old -> new, deactivates the 5 left out", function()
    local client <close> = scim.client.new{ url = s.url, token = s.token, concurrency = 16 }
    write_people(path, 200)
    s:reset_stats()
    local plan = assert(scim.plan{ client = client, rows = scim.csv.rows(path), job = "sync",
      removals = "deactivate", max_removals = "10%" })
    assert.equal(200, plan.counts.create)
    local result = plan:apply{ concurrency = 16 }
    assert.equal(200, result.counts.created)
    assert.equal(0, result.failed)
    local st = s:stats()
    assert.equal(200, st.by_method.POST)
    assert.equal(0, st.by_method.PATCH or 0)   -- every manager went in its POST
    assert.equal(200, #s:users())

    -- 20 job titles edited
    write_people(path, 200, function(i) return i % 10 == 0 and "Lead" or "Engineer" end)
    plan = assert(scim.plan{ client = client, rows = scim.csv.rows(path), job = "sync",
      removals = "deactivate" })
    assert.equal(20, plan.counts.update)
    assert.equal(180, plan.counts.unchanged)
    for change in plan:changes() do
      if change.action == "update" then
        assert.equal(1, #change.diff)
        assert.equal("job title", change.diff[1].column)
        assert.equal("title", change.diff[1].attribute)
        assert.equal("Engineer", change.diff[1].old)
        assert.equal("Lead", change.diff[1].new)
      end
    end
    s:reset_stats()
    result = plan:apply{}
    assert.equal(20, result.counts.updated)
    assert.equal(20, s:stats().by_method.PATCH)

    -- 5 people left out of the file (the last five: nobody reports to them)
    write_people(path, 195, function(i) return i % 10 == 0 and "Lead" or "Engineer" end)
    plan = assert(scim.plan{ client = client, rows = scim.csv.rows(path), job = "sync",
      removals = "deactivate" })
    assert.equal(5, plan.counts.deactivate)
    assert.equal(195, plan.counts.unchanged)
    assert.is_nil(plan.counts.update)
    result = plan:apply{}
    assert.equal(5, result.counts.deactivated)
    local inactive = 0
    for _, u in ipairs(s:users()) do if u.active == false then inactive = inactive + 1 end end
    assert.equal(5, inactive)
  end)
end)

describe("Bulk and Entra's inbound provisioning", function()
  local function people_file(n, with_external)
    local lines = { "email,first name,last name,manager email"
      .. (with_external and ",external id" or "") }
    for i = 1, n do
      lines[#lines + 1] = string.format("b%d@example.com,F%d,L%d,%s%s", i, i, i,
        i > 100 and ("b" .. (i // 10) .. "@example.com") or "",
        with_external and (",E" .. i) or "")
    end
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
    return path
  end
  local agent = require "support.agent"

  it("create --bulk of 1,000 people with 900 managers: few requests, every manager set", function()
    local s = server.start{ bulk = { max_operations = 1000, max_payload = 4194304 } }
    local file = people_file(1000)
    local code, _, err = agent.main({ "create", file, "--bulk" }, agent.vars(s))
    local st = s:stats()
    assert.equal(0, code, err)
    assert.matches("created%s+1000", err)
    assert.truthy(st.total <= 12, "requests: " .. st.total)
    local by_name, managed = {}, 0
    for _, u in ipairs(s:users()) do by_name[u.userName] = u end
    assert.equal(1000, #s:users())
    for i = 101, 1000 do
      local u = by_name["b" .. i .. "@example.com"]
      local m = u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"].manager
      local boss = by_name["b" .. (i // 10) .. "@example.com"]
      if m and m.value == boss.id then managed = managed + 1 end
    end
    assert.equal(900, managed)
    -- again: everything exists, nothing is written
    s:reset_stats()
    code, _, err = agent.main({ "create", file, "--bulk" }, agent.vars(s))
    assert.equal(0, code, err)
    assert.equal(0, agent.writes(s:stats()))
    s:stop()
    os.remove(file)
  end)

  it("--dialect entra uploads BulkRequests of at most 50 to the bulkUpload URL", function()
    local s = server.start{ mode = "entra" }
    local file = people_file(120, true)
    local code, out, err = agent.main({ "sync", file, "--dialect", "entra", "--url",
      s.bulk_upload_url }, agent.vars(s, { SCIM_URL = s.bulk_upload_url }))
    assert.equal(0, code, err .. out)
    assert.matches("uploaded%s+120", err)
    local st = s:stats()
    assert.equal(3, st.by_route["POST /bulkUpload"])
    assert.equal(120, #s:users())
    s:stop()
    os.remove(file)
  end)
end)
