-- The export job's bounded memory: with the id → email map limited (SCIM_EXPORT_MAP_LIMIT),
-- the map goes to temporary chunk files and the spilled rows are resolved after the
-- listing. Every manager must still come out right, from the listing alone (no request per
-- user), and no temporary file may be left behind, whether the export succeeds or fails.
-- The basic export tests (request counts with the default limit, a manager listed after
-- the person, a failed listing) are in tests/jobs_spec.lua.
local server = require "support.server"
local agent = require "support.agent"

local CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
local ENT2 = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
local PAGE = 50

after_each(function()
  collectgarbage()
  collectgarbage()
end)

-- The people of a test directory, in listing order: `name(i)` and `manager(i)` (an index,
-- "gone" for an id that is not in the directory, or nil). Managers come both before and
-- after their reports, and several managers' names hold the characters the temporary files
-- escape (%, tab, line break).
local ODD = { [3] = "odd%09%25\tname@example.com", [500] = "per%cent@example.com",
              [998] = "line\nbreak@example.com" }
local function name(i)
  return ODD[i] or string.format("p%04d@example.com", i)
end
local function manager(i, n)
  if i % 10 == 1 then return nil end                      -- top of a tree
  if i % 97 == 0 then return n >= 500 and 500 or 3 end   -- the odd names manage people
  if i % 89 == 0 then return 3 end
  if i % 83 == 0 then return n >= 998 and 998 or nil end
  if i % 61 == 0 then return "gone" end                   -- a manager deleted long ago
  local m = (i * 7919) % n + 1                            -- anywhere in the listing
  if m == i then return nil end
  return m
end

-- Seeds `n` people with their managers; returns the stored users by userName. The server
-- hands out numeric ids in insertion order, so the ids are learnt with one seed and used
-- for the managers in a second one after a reset (checked to be the same ids).
local function seed_hierarchy(s, n)
  local plain = {}
  for i = 1, n do
    plain[i] = { schemas = { CORE }, userName = name(i), name = { givenName = "P" .. i,
                 familyName = "Person" } }
  end
  s:reset()
  local first = s:seed(plain)
  s:reset()
  local list, forward, backward = {}, 0, 0
  for i = 1, n do
    local u = { schemas = { CORE, ENT2 }, userName = name(i), name = plain[i].name,
                [ENT2] = { department = "D" .. (i % 7) } }
    local mi = manager(i, n)
    if mi == "gone" then
      u[ENT2].manager = { value = "99999999999999" }
    elseif mi then
      u[ENT2].manager = { value = server.id_string(first[mi].id) }
      if mi > i then forward = forward + 1 else backward = backward + 1 end
    end
    list[i] = u
  end
  local seeded = s:seed(list)
  for i = 1, n do
    assert(server.id_string(seeded[i].id) == server.id_string(first[i].id),
      "the test server no longer hands out the same ids after a reset")
  end
  return forward, backward
end

-- What the export must say: userName → the manager's userName ("" when none or unknown),
-- from the server's own records.
local function expected_managers(s)
  local users = s:users()
  local by_id = {}
  for _, u in ipairs(users) do by_id[server.id_string(u.id)] = u.userName end
  local want = {}
  for _, u in ipairs(users) do
    local m = u[ENT2] and u[ENT2].manager
    want[u.userName] = m and by_id[server.id_string(m.value)] or ""
  end
  return want, #users
end

-- Runs `fn` while recording every name os.tmpname hands out (the agent runs in this
-- process); returns the names, then what `fn` returned.
local function recording_tmpnames(fn)
  local real, made = os.tmpname, {}
  os.tmpname = function()  -- luacheck: ignore 122
    local p = real()
    made[#made + 1] = p
    return p
  end
  local res = table.pack(pcall(fn))
  os.tmpname = real  -- luacheck: ignore 122
  assert(res[1], res[2])
  return made, table.unpack(res, 2, res.n)
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function leftovers(paths)
  local left = {}
  for _, p in ipairs(paths) do if exists(p) then left[#left + 1] = p end end
  return left
end

-- A fresh directory for the output file, so that any file left beside it shows.
local function new_dir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. agent.shell_quote(dir)))
  return dir
end

local function dir_list(dir)
  local p = assert(io.popen("ls -A " .. agent.shell_quote(dir)))
  local names = {}
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  table.sort(names)
  return names
end

local function remove_dir(dir)
  for _, f in ipairs(dir_list(dir)) do os.remove(dir .. "/" .. f) end
  os.remove(dir)
end

describe("export with a bounded id → email map", function()
  local s
  setup(function() s = server.start{ page_size = PAGE, numeric_ids = true } end)
  teardown(function() s:stop() end)

  it("resolves every manager of 1,000 people with a map of 100, from the listing alone",
    function()
    local n = 1000
    local forward, backward = seed_hierarchy(s, n)
    assert.truthy(forward > 200 and backward > 200, forward .. " / " .. backward)
    local want, total = expected_managers(s)
    assert.equal(n, total)
    local dir = new_dir()
    local out = dir .. "/out.csv"
    s:reset_stats()
    local made, code, _, err = recording_tmpnames(function()
      return agent.main({ "export", out, "--verbose" },
        agent.vars(s, { SCIM_EXPORT_MAP_LIMIT = "100" }))
    end)
    assert.equal(0, code, err)

    -- the bounded path ran: nine full maps went to chunk files, resolved in passes
    assert.truthy(err:find("went to 9 temporary chunks of 100", 1, true), err)
    assert.truthy(#made >= 10, #made .. " temporary files")
    -- ... and left nothing behind, beside the output or in the temporary directory
    assert.same({}, leftovers(made))
    assert.same({ "out.csv" }, dir_list(dir))

    -- exactly the listing pages, at most one read of the page limit, nothing else
    local st = s:stats()
    local listing, config, other = agent.classify_requests(st)
    assert.equal(math.ceil(n / PAGE), listing)
    assert.truthy(config <= 1, "ServiceProviderConfig read " .. config .. " times")
    assert.same({}, other)
    assert.equal(listing + config, st.total)

    -- every row once, every manager right
    local rows = agent.read_csv(out)
    assert.equal(n, #rows)
    local seen, resolved = {}, 0
    for _, r in ipairs(rows) do
      assert.is_nil(seen[r.email], r.email)
      seen[r.email] = true
      assert.equal(want[r.email], r["manager email"], r.email)
      if r["manager email"] ~= "" then resolved = resolved + 1 end
    end
    assert.truthy(resolved > 800, resolved .. " managers")
    -- the managers whose names hold what the temporary files escape
    local odd = { ["p0097@example.com"] = "per%cent@example.com",
                  ["p0178@example.com"] = "odd%09%25\tname@example.com",
                  ["p0083@example.com"] = "line\nbreak@example.com" }
    for _, r in ipairs(rows) do
      if odd[r.email] then
        assert.equal(odd[r.email], r["manager email"])
        odd[r.email] = nil
      end
    end
    assert.same({}, odd)

    -- order: the listing order, then the spilled rows, also in listing order (two runs)
    local index = {}
    for i = 1, n do index[name(i)] = i end
    local runs = 1
    for k = 2, n do
      if index[rows[k].email] < index[rows[k - 1].email] then runs = runs + 1 end
    end
    assert.equal(2, runs)
    remove_dir(dir)
  end)

  it("writes the same rows as an export with the default limit, and the same to stdout",
    function()
    seed_hierarchy(s, 300)
    local dir = new_dir()
    local small, full = dir .. "/small.csv", dir .. "/full.csv"
    local code, _, err = agent.main({ "export", small },
      agent.vars(s, { SCIM_EXPORT_MAP_LIMIT = "7" }))
    assert.equal(0, code, err)
    code, _, err = agent.main({ "export", full }, agent.vars(s))
    assert.equal(0, code, err)
    local function sorted_lines(text)
      local lines = {}
      for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
      local header = table.remove(lines, 1)
      table.sort(lines)
      return header, lines
    end
    local h1, l1 = sorted_lines(agent.read_file(small))
    local h2, l2 = sorted_lines(agent.read_file(full))
    assert.equal(h2, h1)
    assert.same(l2, l1)
    -- with `-` (a separate process: the rows go to the real stdout)
    local out
    code, out, err = agent.spawn({ "export", "-" },
      agent.vars(s, { SCIM_EXPORT_MAP_LIMIT = "7" }))
    assert.equal(0, code, err)
    assert.equal(agent.read_file(small), out)
    remove_dir(dir)
  end)

  it("works with a map of one person", function()
    seed_hierarchy(s, 60)
    local want = expected_managers(s)
    local out = os.tmpname()
    local made, code, _, err = recording_tmpnames(function()
      return agent.main({ "export", out }, agent.vars(s, { SCIM_EXPORT_MAP_LIMIT = "1" }))
    end)
    assert.equal(0, code, err)
    local rows = agent.read_csv(out)
    assert.equal(60, #rows)
    for _, r in ipairs(rows) do assert.equal(want[r.email], r["manager email"], r.email) end
    assert.same({}, leftovers(made))
    os.remove(out)
  end)

  it("removes its temporary files and keeps the previous file when the listing fails",
    function()
    seed_hierarchy(s, 1000)
    local dir = new_dir()
    local out = dir .. "/out.csv"
    local f = assert(io.open(out, "w"))
    f:write("previous content\n")
    f:close()
    -- the 8th listing page is refused (400 is not retried): 350 people listed by then
    s:faults{ status = 400, match = "GET /Users", fraction = 0.125 }
    local made, code, _, err = recording_tmpnames(function()
      return agent.main({ "export", out }, agent.vars(s, { SCIM_EXPORT_MAP_LIMIT = "100" }))
    end)
    s:faults()
    assert.equal(3, code, err)
    assert.truthy(err:find("left as it was", 1, true), err)
    assert.truthy(#made >= 4, #made .. " temporary files")  -- chunks and the spill existed
    assert.same({}, leftovers(made))
    assert.same({ "out.csv" }, dir_list(dir))
    assert.equal("previous content\n", agent.read_file(out))
    remove_dir(dir)
  end)

  it("removes its temporary files and keeps the previous file when a spilled row fails",
    function()
    seed_hierarchy(s, 200)
    local dir = new_dir()
    local out, mapping = dir .. "/out.csv", dir .. "/mapping.lua"
    -- The department's export function fails the second time it sees p0163 (the second
    -- time is the spilled row's, written after the listing; its manager comes later).
    assert.truthy(manager(163, 200) > 163)
    local f = assert(io.open(mapping, "w"))
    f:write([[
local seen = 0
return {
  key = "userName",
  { "email", "userName", required = true },
  { "department", "enterprise:department", export = function(v, user)
      if user.userName == "p0163@example.com" then
        seen = seen + 1
        if seen == 2 then error("second look at p0163") end
      end
      return v
    end },
  { "manager email", reference = "manager" },
}
]])
    f:close()
    f = assert(io.open(out, "w"))
    f:write("previous content\n")
    f:close()
    local made, code, _, err = recording_tmpnames(function()
      return agent.main({ "export", out, "--mapping", mapping },
        agent.vars(s, { SCIM_EXPORT_MAP_LIMIT = "30" }))
    end)
    assert.equal(1, code, err)
    assert.truthy(err:find("second look at p0163", 1, true), err)
    assert.truthy(err:find("left as it was", 1, true), err)
    assert.truthy(#made >= 4, #made .. " temporary files")
    assert.same({}, leftovers(made))
    assert.same({ "mapping.lua", "out.csv" }, dir_list(dir))
    assert.equal("previous content\n", agent.read_file(out))
    remove_dir(dir)
  end)

  it("ends with exit 1 naming a temporary file it cannot write, and cleans up", function()
    seed_hierarchy(s, 300)
    local dir = new_dir()
    local out = dir .. "/out.csv"
    local f = assert(io.open(out, "w"))
    f:write("previous content\n")
    f:close()
    -- The third temporary file is in a directory that does not exist.
    local bad = dir .. "/missing/chunk"
    local real, made = os.tmpname, {}
    os.tmpname = function()  -- luacheck: ignore 122
      if #made == 2 then
        made[#made + 1] = bad
        return bad
      end
      local p = real()
      made[#made + 1] = p
      return p
    end
    local ok, code, _, err = pcall(agent.main, { "export", out },
      agent.vars(s, { SCIM_EXPORT_MAP_LIMIT = "50" }))
    os.tmpname = real  -- luacheck: ignore 122
    assert(ok, code)
    assert.equal(1, code, err)
    assert.truthy(err:find("cannot write temporary file " .. bad, 1, true), err)
    assert.truthy(err:find("left as it was", 1, true), err)
    assert.equal(3, #made)
    assert.same({}, leftovers(made))
    assert.same({ "out.csv" }, dir_list(dir))
    assert.equal("previous content\n", agent.read_file(out))
    remove_dir(dir)
  end)

  it("removes its temporary files on Ctrl-C", function()
    seed_hierarchy(s, 2000)
    local dir = new_dir()
    local out = dir .. "/out.csv"
    -- The agent runs as a process of its own here: LUA_INIT makes it name its temporary
    -- files on stderr.
    local vars = agent.vars(s, { SCIM_EXPORT_MAP_LIMIT = "100", LUA_INIT_5_4 = "local r = "
      .. "os.tmpname; os.tmpname = function() local p = r(); io.stderr:write('TMP ', p, '\\n'); "
      .. "io.stderr:flush(); return p end" })
    s:configure{ latency_ms = 50 }  -- 40 pages: two seconds at least
    local job = agent.start({ "export", out }, vars)
    -- Wait (bounded) until the spill and two chunks exist, then interrupt.
    local function named()
      local list = {}
      for p in (agent.read_file(job.err) or ""):gmatch("TMP (%S+)") do list[#list + 1] = p end
      return list
    end
    for _ = 1, 400 do
      if #named() >= 3 then break end
      server.sleep(0.05)
    end
    os.execute("kill -INT " .. job.pid)
    local code = agent.wait(job, 30)
    s:configure{ latency_ms = 0 }
    local made = named()
    local _, err = agent.collect(job)
    assert.equal(1, code, err)
    assert.truthy(err:find("interrupted", 1, true), err)
    assert.truthy(#made >= 3, err)
    assert.same({}, leftovers(made))
    assert.same({}, dir_list(dir))
    remove_dir(dir)
  end)

  it("refuses a limit that is not a whole number of at least 1, sending nothing", function()
    s:reset()
    s:seed(5)
    for _, bad in ipairs{ "0", "ten", "-5", "1.5", "100k" } do
      s:reset_stats()
      local out = os.tmpname()
      local code, _, err = agent.main({ "export", out },
        agent.vars(s, { SCIM_EXPORT_MAP_LIMIT = bad }))
      assert.equal(2, code, bad)
      assert.truthy(err:find("SCIM_EXPORT_MAP_LIMIT", 1, true), err)
      assert.truthy(err:find("'" .. bad .. "'", 1, true), err)
      assert.equal(0, s:stats().total)
      os.remove(out)
    end
  end)
end)
