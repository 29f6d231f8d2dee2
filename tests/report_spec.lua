-- scim.report: outcomes, progress line, plan, summary, JSON log lines, the results CSV.
local report = require "scim.report"
local cjson = require "cjson"

local sink = require("support.agent").sink

local function new(opts)
  local out, err = sink(), sink()
  local t = 0
  opts.stdout, opts.stderr = out, err
  opts.clock = opts.clock or function() t = t + 1; return t end
  if opts.progress == nil then opts.progress = false end
  local r = assert(report.new(opts))
  return r, out, err
end

after_each(function()   -- every test of this file
  collectgarbage()
  collectgarbage()
end)

describe("scim.report", function()

  it("counts outcomes and prints failures with line and key", function()
    local r, out, err = new{ job = "create", total = 3 }
    r:outcome{ line = 2, key = "a@example.com", action = "created", status = 201, id = "1" }
    r:outcome{ line = 3, key = "b@example.com", action = "exists", status = 409, id = "2" }
    r:outcome{ line = 4, key = "c@example.com", action = "failed", status = 400,
               error = "POST /Users: 400 Bad Request: bad title" }
    assert.equal(3, r.done)
    assert.equal(1, r:failed())
    assert.same({ created = 1, exists = 1, failed = 1 }, r.counts)
    assert.equal("", out:text())
    assert.matches("line 4 %(c@example.com%): POST /Users: 400", err:text())
    assert.is_nil(err:text():find("a@example.com", 1, true))
  end)

  it("prints only errors when quiet", function()
    local r, out, err = new{ job = "update", total = 2, quiet = true }
    r:warn("something odd")
    r:info("hello")
    r:outcome{ line = 2, key = "a", action = "updated" }
    r:summary{ requests = 3, retries = 0 }
    assert.equal("", err:text())
    r:outcome{ line = 3, key = "b", action = "failed", error = "boom" }
    assert.matches("boom", err:text())
    assert.equal("", out:text())
  end)

  it("writes one JSON object per outcome and a JSON summary", function()
    local r, out = new{ job = "update", total = 2, log_format = "json" }
    r:outcome{ line = 7, key = "a@example.com", action = "updated", status = 200, id = "42",
               changes = { { path = "title", old = "Engineer", new = "Senior Engineer" } } }
    r:outcome{ line = 8, key = "b@example.com", action = "unchanged", id = "43" }
    r:summary{ requests = 5, retries = 1 }
    local lines = {}
    for l in out:text():gmatch("[^\n]+") do lines[#lines + 1] = cjson.decode(l) end
    assert.equal(3, #lines)
    assert.equal("updated", lines[1].action)
    assert.equal(7, lines[1].line)
    assert.equal("42", lines[1].id)
    assert.equal("Senior Engineer", lines[1].changes[1].new)
    assert.equal(cjson.null, lines[2].error)
    assert.equal(5, lines[3].summary.requests)
    assert.equal(1, lines[3].summary.counts.unchanged)
  end)

  it("prints the plan of a dry run with old -> new values, in line order", function()
    local r, out = new{ job = "sync", total = 3, dry_run = true }
    r:outcome{ line = 5, key = "b@example.com", action = "update",
               changes = { { path = "title", column = "job title", old = "Dev", new = "Lead" },
                           { path = "phoneNumbers[type eq \"work\"].value", new = "+1" } } }
    r:outcome{ line = 2, key = "a@example.com", action = "create", changes = {} }
    r:outcome{ line = 9, key = "c@example.com", action = "unchanged" }
    r:print_plan()
    local text = out:text()
    assert.matches("plan: 1 to create, 1 to update, 1 unchanged", text, 1, true)
    local a = text:find("a@example.com", 1, true)
    local b = text:find("b@example.com", 1, true)
    assert.truthy(a and b and a < b)
    assert.truthy(text:find('job title: "Dev" \u{2192} "Lead"', 1, true))
    assert.truthy(text:find('(none) \u{2192} "+1"', 1, true))
    assert.is_nil(text:find("c@example.com", 1, true))
  end)

  it("draws the progress line only when enabled, with escape codes only in color", function()
    local r, _, err = new{ job = "create", total = 4, progress = true, color = false }
    r:outcome{ line = 2, key = "a", action = "created" }
    assert.matches("create 1/4", err:text())
    assert.is_nil(err:text():find("\27", 1, true))
    local r2, _, err2 = new{ job = "create", total = 4, progress = true, color = true }
    r2:outcome{ line = 2, key = "a", action = "failed", error = "x" }
    assert.truthy(err2:text():find("\27[", 1, true))
    local r3, _, err3 = new{ job = "create", total = 4, progress = false }
    r3:outcome{ line = 2, key = "a", action = "created" }
    assert.equal("", err3:text())
  end)

  it("shows rate and ETA in the progress text", function()
    local now = 0
    local r = new{ job = "create", total = 10, clock = function() return now end }
    now = 2
    for i = 1, 4 do r:outcome{ line = i, key = "k" .. i, action = "created" } end
    local text = r:progress_text()
    assert.matches("create 4/10", text, 1, true)
    assert.matches("2.0/s", text, 1, true)
    assert.matches("ETA 0:03", text, 1, true)
  end)

  it("prints a summary with counts, requests and retries", function()
    local r, _, err = new{ job = "delete", total = 2 }
    r:outcome{ line = 2, key = "a", action = "deleted" }
    r:outcome{ line = 3, key = "b", action = "not_found" }
    r:summary{ requests = 4, retries = 2 }
    local text = err:text()
    assert.matches("delete: 2 rows", text)
    assert.matches("deleted%s+1", text)
    assert.matches("not_found%s+1", text)
    assert.matches("requests%s+4", text)
    assert.matches("retries%s+2", text)
  end)

  describe("results CSV", function()
    local path
    before_each(function() path = os.tmpname() end)
    after_each(function() os.remove(path) end)

    it("has the report columns then the input's, and reads back", function()
      local csv = require "scim.csv"
      local r = new{ job = "create", total = 2, path = path,
                     input_columns = { "email", "first name", "Line" } }
      r:outcome{ line = 2, key = "a@example.com", action = "created", status = 201, id = "7",
                 row = { email = "a@example.com", ["first name"] = "Ann, \"Jr\"", Line = "x" } }
      r:outcome{ line = 3, key = "b@example.com", action = "failed", status = 400,
                 error = "bad =value", row = { email = "b@example.com",
                 ["first name"] = "+Bob" } }
      assert(r:close())
      local reader = assert(csv.open(path))
      assert.same({ "line", "key", "action", "http_status", "scim_id", "error", "email",
                    "first name" }, reader.header)
      local rows = {}
      for row in reader:rows() do rows[#rows + 1] = row end
      reader:close()
      assert.equal(2, #rows)
      assert.equal("created", rows[1].action)
      assert.equal("201", rows[1].http_status)
      assert.equal("Ann, \"Jr\"", rows[1]["first name"])
      assert.equal("failed", rows[2].action)
      assert.equal("+Bob", rows[2]["first name"])   -- no formula guard in the report
      assert.equal("bad =value", rows[2].error)
    end)

    it("abort leaves a previous file untouched", function()
      local f = assert(io.open(path, "w")); f:write("previous\n"); f:close()
      local r = new{ job = "create", total = 1, path = path, input_columns = { "email" } }
      r:outcome{ line = 2, key = "a", action = "created", row = { email = "a" } }
      r:abort()
      f = assert(io.open(path)); local text = f:read("a"); f:close()
      assert.equal("previous\n", text)
    end)
  end)
end)
