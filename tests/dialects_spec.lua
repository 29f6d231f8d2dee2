-- The three dialects: their data, and golden JSON for the same input rows in each.
local mapping = require "scim.mapping"
local cjson = require "cjson"

local GOLDEN = "tests/fixtures/golden/"
local DIALECTS = { "scim2", "meta", "workplace_v1" }
local fx = dofile("tests/fixtures/mapping/rows.lua")

local function read_json(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return cjson.decode(s)
end

-- Through the encoder and back: what goes on the wire, compared as data.
local function wire(v)
  return cjson.decode(cjson.encode(v))
end

local function build(m, r)
  local res = assert(m:to_resource(r.row, r.line, "create"))
  for name, key in pairs(m:references(r.row)) do
    local id = fx.ids[key]
    if id then m:set_reference(res, name, id) end
  end
  return res
end

-- The original sample's buildUserJSONObj (AccountManagement/scim_sdk.py), ported to Lua as
-- an independent oracle for the workplace_v1 dialect, with its bugs fixed: `externalId`
-- (it wrote externalID) and integer UTC seconds for startDate (it used local-time
-- time.mktime, a float). `user` is keyed by its lower-case column names; empty cells are
-- absent, as its addColumnVal left them.
local function sample_json(user, create)
  local CORE, NTP = "urn:scim:schemas:core:1.0", "urn:scim:schemas:extension:enterprise:1.0"
  local TERM = "urn:scim:schemas:extension:facebook:starttermdates:1.0"
  local data, schemas, ent = {}, { CORE }, {}
  if create then user.active = true end
  data.userName = user["email"]
  data.externalId = user["external id"]
  if user["first name"] or user["last name"] then
    data.name = { givenName = user["first name"], familyName = user["last name"],
      formatted = user["first name"] .. " " .. user["last name"] }
  end
  data.title = user["job title"]
  if user["phone number"] then
    data.phoneNumbers = { { value = user["phone number"], type = "work", primary = true } }
  end
  if user["start date"] then
    local y, m, d = user["start date"]:match("^(%d+)-(%d+)-(%d+)$")
    local t = os.time{ year = tonumber(y), month = tonumber(m), day = tonumber(d), hour = 0 }
    local utc = os.time(os.date("!*t", t))  -- os.time is local: undo the zone offset
    data[TERM] = { startDate = t + (t - utc), termDate = 0 }
    schemas[#schemas + 1] = TERM
  end
  ent.department = user["department"]
  ent.organization = user["organization"]
  ent.division = user["division"]
  ent.costCenter = user["cost center"]
  if user["location"] then
    data.addresses = { { type = "work", formatted = user["location"], primary = true } }
  end
  data.locale = user["locale"]
  data.timezone = user["timezone"]
  data.active = user.active
  if user.managerId then ent.manager = { managerId = user.managerId } end
  if next(ent) then
    data[NTP] = ent
    schemas[#schemas + 1] = NTP
  end
  data.schemas = schemas
  return data
end

describe("scim.dialects", function()
  after_each(function()
    collectgarbage()
    collectgarbage()
  end)

  it("hold the agreed fields", function()
    local want = {
      scim2 = { default_url = nil, content_type = "application/scim+json", update = "patch",
        user_agent_required = false, core_schema = "urn:ietf:params:scim:schemas:core:2.0:User",
        enterprise_schema = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        manager = { write = "value", read = { "value" } } },
      meta = { default_url = "https://scim.workplace.com/", content_type = "application/scim+json",
        update = "patch", user_agent_required = true,
        core_schema = "urn:ietf:params:scim:schemas:core:2.0:User",
        enterprise_schema = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        manager = { write = "value", read = { "value", "managerId" } } },
      workplace_v1 = { default_url = "https://www.workplace.com/scim/v1/",
        content_type = "application/json", update = "put", user_agent_required = true,
        core_schema = "urn:scim:schemas:core:1.0",
        enterprise_schema = "urn:scim:schemas:extension:enterprise:1.0",
        manager = { write = "managerId", read = { "managerId", "value" } } },
    }
    for name, w in pairs(want) do
      local d = require("scim.dialects." .. name)
      assert.equal(name, d.name)
      for k, v in pairs(w) do assert.same(v, d[k], name .. "." .. k) end
      if name == "scim2" then assert.is_nil(d.default_url) end
      assert.equal("number", type(d.max_page_size))
      assert.equal("string", type(d.accept))
      assert.is_table(d.read_only)
      for _, ro in ipairs{ "id", "meta", "groups" } do
        local found = false
        for _, x in ipairs(d.read_only) do found = found or x == ro end
        assert.is_true(found, name .. " read_only " .. ro)
      end
      if d.update == "patch" then
        assert.equal("urn:ietf:params:scim:api:messages:2.0:PatchOp", d.patch_schema)
        assert.equal("urn:ietf:params:scim:api:messages:2.0:ListResponse", d.list_schema)
      end
      assert.same({ resources = "Resources", total = "totalResults", start = "startIndex",
        per_page = "itemsPerPage" }, d.list)
    end
    local meta = require "scim.dialects.meta"
    for _, ext in ipairs{ "starttermdates", "accountstatusdetails", "authmethod", "frontline" } do
      assert.equal("urn:ietf:params:scim:schemas:extension:facebook:" .. ext .. ":2.0:User",
        meta.extensions[ext])
    end
  end)

  for _, dn in ipairs(DIALECTS) do
    describe(dn, function()
      it("builds the golden JSON from the sample's rows", function()
        local m = mapping.default{ dialect = dn }
        for _, r in ipairs(fx.sample) do
          assert.same(read_json(GOLDEN .. dn .. "/create_" .. r.name .. ".json"),
            wire(build(m, r)), r.name)
        end
      end)

      it("builds the golden JSON from the HR export's rows", function()
        local m = assert(mapping.load("examples/mappings/hr_export.lua", { dialect = dn }))
        for _, r in ipairs(fx.hr) do
          assert.same(read_json(GOLDEN .. dn .. "/create_" .. r.name .. ".json"),
            wire(build(m, r)), r.name)
        end
      end)

      it("builds the golden update", function()
        local m = mapping.default{ dialect = dn }
        local row = { ["Email"] = "ann.lee@example.com", ["First Name"] = "Ann",
          ["Last Name"] = "Lee", ["Job Title"] = "Senior Engineer", ["Department"] = "R&D",
          ["Phone Number"] = "+1 555 0100", ["Location"] = "Building 1, Floor 2",
          ["Locale"] = "en_US", ["Manager Email"] = "boss@example.com" }
        local desired = assert(m:to_resource(row, 2, "update"))
        m:set_reference(desired, "manager", "1003")
        local current = read_json(GOLDEN .. dn .. "/current_ann.json")
        local body
        if m.dialect.update == "put" then
          body = m:merge(current, desired)
        else
          body = { schemas = { m.dialect.patch_schema }, Operations = (m:diff(current, desired)) }
        end
        assert.same(read_json(GOLDEN .. dn .. "/update_ann.json"), wire(body))
        -- Either way the plan lists the same five changes.
        local _, changes = m:diff(current, desired)
        assert.equal(5, #changes)
      end)
    end)
  end

  describe("workplace_v1", function()
    local m = mapping.default{ dialect = "workplace_v1" }

    it("creates what the original sample created, minus its bugs", function()
      for _, r in ipairs(fx.sample) do
        local user = {}
        for k, v in pairs(r.row) do
          if v ~= "" and k:lower() ~= "manager email" then user[k:lower()] = v end
        end
        local res = assert(m:to_resource(r.row, r.line, "create"))
        assert.same(wire(sample_json(user, true)), wire(res), r.name)
        assert.is_nil(res.externalID)
        local term = res["urn:scim:schemas:extension:facebook:starttermdates:1.0"]
        if term then assert.equal("integer", math.type(term.startDate)) end
      end
    end)

    it("sets a manager as the sample's updateManager did", function()
      local res = assert(m:to_resource({ email = "ann.lee@example.com" }, 2))
      m:set_reference(res, "manager", "1003")
      assert.same(wire(sample_json({ email = "ann.lee@example.com", managerId = "1003" })),
        wire(res))
    end)

    it("never sends read-only attributes back on PUT", function()
      local current = read_json(GOLDEN .. "workplace_v1/current_ann.json")
      local put = m:merge(current, assert(m:to_resource({ email = "ann.lee@example.com" }, 2)))
      assert.is_nil(put.id)
      assert.is_nil(put.meta)
      assert.is_nil(put["urn:scim:schemas:extension:facebook:accountstatusdetails:1.0"])
      for _, s in ipairs(put.schemas) do assert.is_nil(s:find("accountstatusdetails")) end
      assert.equal("Research", put["urn:scim:schemas:extension:enterprise:1.0"].department)
    end)

    it("takes SCIM 2.0 URNs in a mapping and writes the 1.0 ones", function()
      local mm = mapping.compile({ { "email", "userName" },
        { "dept", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department" },
        { "start", "urn:ietf:params:scim:schemas:extension:facebook:starttermdates:2.0:User:"
          .. "startDate", type = "date" } }, { dialect = "workplace_v1" })
      local res = assert(mm:to_resource{ email = "a@x", dept = "D", start = "1970-01-02" })
      assert.same({ "urn:scim:schemas:core:1.0",
        "urn:scim:schemas:extension:facebook:starttermdates:1.0",
        "urn:scim:schemas:extension:enterprise:1.0" }, res.schemas)
      assert.equal("D", res["urn:scim:schemas:extension:enterprise:1.0"].department)
      assert.equal(86400,
        res["urn:scim:schemas:extension:facebook:starttermdates:1.0"].startDate)
    end)
  end)

  describe("meta", function()
    it("always sends name.formatted, even when the mapping has none", function()
      local hr = assert(mapping.load("examples/mappings/hr_export.lua", { dialect = "meta" }))
      local res = assert(hr:to_resource(fx.hr[1].row, 2))
      assert.equal("Ada Lovelace", res.name.formatted)
      local s2 = assert(mapping.load("examples/mappings/hr_export.lua", { dialect = "scim2" }))
      assert.is_nil(assert(s2:to_resource(fx.hr[1].row, 2)).name.formatted)
      -- and an update that only renames compares against what the server derived.
      local cur = wire(res)
      local ops = hr:diff(cur, assert(hr:to_resource({ ["Employee ID"] = "E1001",
        ["Given Name"] = "Ada", ["Surname"] = "King" }, 3)))
      assert.same({ { op = "replace", path = "name.familyName", value = "King" },
        { op = "replace", path = "name.formatted", value = "Ada King" } }, ops)
    end)

    it("writes start dates as integer UNIX seconds", function()
      local m = mapping.default{ dialect = "meta" }
      local res = assert(m:to_resource({ email = "a@x", ["start date"] = "2019-03-01" }, 2))
      local term = res["urn:ietf:params:scim:schemas:extension:facebook:starttermdates:2.0:User"]
      assert.equal(1551398400, term.startDate)
      assert.equal("integer", math.type(term.startDate))
      assert.is_nil(term.termDate)  -- unlike v1's create, nothing is invented
    end)
  end)
end)
