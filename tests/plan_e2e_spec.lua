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
