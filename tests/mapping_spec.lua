-- scim.mapping: paths, types, aliases, required columns, references, diff, merge, export.
local mapping = require "scim.mapping"
local cjson = require "cjson"

local FIX = "tests/fixtures/mapping/"
local ENT2 = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
local TERM2 = "urn:ietf:params:scim:schemas:extension:facebook:starttermdates:2.0:User"

local function compile(entries, dialect)
  return mapping.compile(entries, { dialect = dialect or "scim2", source = "spec" })
end

-- What a server sends back: JSON round trip plus an id.
local function stored(resource, id)
  local r = cjson.decode(cjson.encode(resource))
  r.id = id or "42"
  r.meta = { resourceType = "User", version = 'W/"1"' }
  return r
end

local function raises(fn, pattern)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.matches(pattern, tostring(err), 1, true)
end

describe("scim.mapping", function()
  after_each(function()
    collectgarbage()
    collectgarbage()
  end)

  describe("parse_path", function()
    it("parses simple, complex, filtered and extension paths", function()
      local p = assert(mapping.parse_path("name.givenName"))
      assert.same({ "name", "givenName" }, { p.attr, p.sub })
      assert.is_nil(p.schema)

      p = assert(mapping.parse_path('emails[type eq "work"].value'))
      assert.same({ attr = "type", value = "work" }, p.filter)
      assert.equal("value", p.sub)

      p = assert(mapping.parse_path(ENT2 .. ":department"))
      assert.equal(ENT2, p.schema)
      assert.equal("department", p.attr)

      p = assert(mapping.parse_path(ENT2 .. ":manager.value"))
      assert.same({ ENT2, "manager", "value" }, { p.schema, p.attr, p.sub })

      p = assert(mapping.parse_path("enterprise:costCenter"))
      assert.equal("enterprise", p.schema)

      -- A colon inside the filter's string is not a schema separator.
      p = assert(mapping.parse_path('ims[type eq "a:b \\"q\\""].value'))
      assert.is_nil(p.schema)
      assert.equal('a:b "q"', p.filter.value)

      p = assert(mapping.parse_path("x509Certificates[primary eq true].value"))
      assert.is_true(p.filter.value)
    end)

    it("rejects bad syntax, saying where", function()
      local cases = {
        { "", "non-empty string" },
        { "name..givenName", "expected a sub-attribute name at character 6" },
        { "1name", "expected an attribute name at character 1" },
        { 'emails[type eq work].value', "expected a quoted string, true or false at character 16" },
        { 'emails[type ne "work"].value', "only 'eq' filters" },
        { 'emails[type eq "work".value', "expected ']'" },
        { 'emails[type eq "work"]', "needs a sub-attribute" },
        { "name.givenName.x", "unexpected '.' at character 15" },
        { ":userName", "empty schema name" },
        { "title ", "unexpected ' '" },
        { 'emails[type eq "wo\\qrk"].value', "bad string in filter" },
      }
      for _, c in ipairs(cases) do
        local p, err = mapping.parse_path(c[1])
        assert.is_nil(p, c[1])
        assert.matches(c[2], err, 1, true)
      end
    end)
  end)

  describe("compile", function()
    it("resolves short schema names and canonical attribute names", function()
      local m = compile{ { "mail", "USERNAME" }, { "dept", "enterprise:department" } }
      local r = assert(m:to_resource{ mail = "a@x", dept = "R&D" })
      assert.equal("a@x", r.userName)
      assert.equal("R&D", r[ENT2].department)
    end)

    it("names the entry in every error", function()
      local cases = {
        { { { "email", "userName" }, { "t", "tittle" } },
          "mapping spec: entry 2 ('t'): attribute 'tittle': unknown core attribute 'tittle'" },
        { { { "email", "userName" }, { "p", "phoneNumbers.value" } },
          "'phoneNumbers' is multi-valued" },
        { { { "email", "userName" }, { "n", 'name[type eq "x"].givenName' } },
          "'name' is not multi-valued" },
        { { { "email", "userName" }, { "i", "id" } }, "'id' is set by the server" },
        { { { "email", "userName" }, { "d", "enterprice:department" } },
          "unknown schema name 'enterprice'" },
        { { { "email", "userName" }, { "d", "title", type = "float" } }, "unknown type 'float'" },
        { { { "email", "userName" }, { "d", "title", format = "%Y" } },
          "'format' is only for type = \"date\"" },
        { { { "email", "userName" }, { "d", "title", type = "date", format = "%Y-%q" } },
          "unsupported directive '%q'" },
        { { { "email", "userName" }, { "d", "title", type = "date", format = "%Y-%m" } },
          "needs a year, a month and a day" },
        { { { "email", "userName" }, { "t", "title" }, { "t2", "title" } },
          "entry 3 ('t2'): attribute title is already fed by entry 2 ('t')" },
        { { { "email", "userName", aliases = { "t" } }, { "t", "title" } },
          "column 't' is the same header as 'email'" },
        { { { "email", "userName" }, { "x", "title", required = { "deploy" } } },
          "unknown job 'deploy'" },
        { { { "email", "userName" }, { "m", reference = "boss" } }, "unknown reference 'boss'" },
        { { { "email", "userName" }, { attribute = "title" } },
          "give a column, a constant or a value function" },
        { { { "email", "userName" }, { "c", "title", constant = "x" } },
          "a constant takes no column" },
        { { { "email", "userName" }, "title" }, "entry 2: expected a table, got string" },
        { { { "email", "userName" }, { "x", "title", colum = "y" } }, "unknown key 'colum'" },
        { { { "t", "title" } }, "no entry maps a column to the key attribute userName" },
        { { key = "id", { "email", "userName" } }, "key must be \"userName\" or \"externalId\"" },
        { { { "email", "userName" }, dialect = "meta" }, "unknown key 'dialect'" },
        { {}, "no entries" },
        { { { "email", "userName" }, { "t", "title", dialects = { "scim2", "meta2" } } },
          "unknown dialect 'meta2' in 'dialects'" },
        { { { "email", "userName" }, { "t", "title", value = print, transform = print } },
          "give a transform (of the cell) or a value (of the row), not both" },
      }
      for i, c in ipairs(cases) do
        local ok, err = pcall(compile, c[1])
        assert.is_false(ok, "case " .. i)
        assert.matches(c[2], err, 1, true)
        assert.matches("^mapping spec: ", err)
      end
    end)

    it("rejects unknown options and dialects as misuse", function()
      raises(function() mapping.compile({ { "e", "userName" } }, { dialekt = "x" }) end,
        "unknown option 'dialekt'")
      raises(function() mapping.compile({ { "e", "userName" } }, { dialect = "scim3" }) end,
        "unknown dialect 'scim3' (scim2, meta, workplace_v1, entra)")
      raises(function() mapping.compile("x") end, "table expected")
    end)
  end)

  describe("load", function()
    it("loads a file in its own environment", function()
      local m = assert(mapping.load(FIX .. "good_small.lua"))
      assert.equal(FIX .. "good_small.lua", m.source)
      local r = assert(m:to_resource({ ["e-mail"] = "a@x", title = "cto" }, 2))
      assert.equal("CTO", r.title)
    end)

    it("reports a bad file with its name, the entry and a code", function()
      local cases = {
        { "bad_path.lua", "INVALID", "mapping " .. FIX .. "bad_path.lua: entry 2 ('work email'): "
          .. "invalid attribute path 'emails[type eq work].value': expected a quoted string, "
          .. "true or false at character 16" },
        { "bad_entry_key.lua", "INVALID",
          "bad_entry_key.lua: entry 3 ('start date'): unknown key 'fromat'" },
        { "bad_no_key.lua", "INVALID", "no entry maps a column to the key attribute userName" },
        { "bad_syntax.txt", "SYNTAX", FIX .. "bad_syntax.txt:4:" },
        { "bad_runtime.lua", "RUNTIME", FIX .. "bad_runtime.lua:4: attempt to index" },
        { "bad_return.lua", "INVALID", "the file must return a table, not string" },
        { "no_such_file.lua", "NOT_FOUND", "no_such_file.lua: cannot open the file" },
      }
      for _, c in ipairs(cases) do
        local m, err, code = mapping.load(FIX .. c[1])
        assert.is_nil(m, c[1])
        assert.equal(c[2], code, c[1])
        assert.matches(c[3], err, 1, true)
      end
    end)

    it("ships the default mapping as a module identical to the example", function()
      local function slurp(p)
        local f = assert(io.open(p, "rb"))
        local s = f:read("a")
        f:close()
        return s
      end
      assert.equal(slurp("examples/mappings/default.lua"), slurp("lua/scim/mapping/default.lua"))
      for _, d in ipairs{ "scim2", "meta", "workplace_v1" } do
        assert(mapping.load("examples/mappings/default.lua", { dialect = d }))
        assert(mapping.load("examples/mappings/hr_export.lua", { dialect = d }))
        assert.equal("userName", mapping.default{ dialect = d }.key_attribute)
      end
    end)
  end)

  describe("dates", function()
    local date = require "scim.mapping.date"

    it("counts days like the proleptic Gregorian calendar, in UTC", function()
      assert.equal(0, date.epoch_of(1970, 1, 1, 0, 0, 0))
      assert.equal(951782400, date.epoch_of(2000, 2, 29, 0, 0, 0))
      assert.equal(-2208988800, date.epoch_of(1900, 1, 1, 0, 0, 0))
      assert.equal(4107542400, date.epoch_of(2100, 3, 1, 0, 0, 0))
      assert.equal(1709208000 + 3661, date.epoch_of(2024, 2, 29, 13, 1, 1))
      assert.same({ nil, "day 29 is out of range" }, { date.epoch_of(1900, 2, 29, 0, 0, 0) })
      assert.same({ nil, "month 0 is out of range" }, { date.epoch_of(2020, 0, 1, 0, 0, 0) })
    end)

    it("parses ISO 8601 dates and date-times with zones", function()
      assert.equal(86400, date.parse_iso("1970-01-02"))
      assert.equal(86400, date.parse_iso("1970-01-02T00:00:00Z"))
      assert.equal(86400, date.parse_iso("1970-01-02T00:00:00.123Z"))
      assert.equal(86400, date.parse_iso("1970-01-02T02:00:00+02:00"))
      assert.equal(86400, date.parse_iso("1970-01-01T19:00-0500"))
      assert.is_nil(date.parse_iso("1970-01-02T25:00:00Z"))
      assert.is_nil(date.parse_iso("1970-01-02 garbage"))
      assert.is_nil(date.parse_iso("02/01/1970"))
      assert.equal(5, date.epoch("5"))
      assert.equal(5, date.epoch(5.0))
      assert.equal("integer", math.type(date.epoch(5.0)))
    end)

    it("parses and formats strptime-like formats", function()
      local df = assert(date.compile_format("%d.%m.%y %H:%M:%S"))
      assert.equal(date.epoch_of(2068, 3, 4, 5, 6, 7), date.parse(df, "04.03.68 05:06:07"))
      assert.equal(date.epoch_of(1969, 3, 4, 5, 6, 7), date.parse(df, "04.03.69 05:06:07"))
      assert.equal("04.03.69 05:06:07", date.format(df, date.parse(df, "4.3.69 05:06:07")))
      df = assert(date.compile_format("%b %e, %Y"))
      assert.equal(date.epoch_of(2021, 12, 5, 0, 0, 0), date.parse(df, "Dec  5, 2021"))
      assert.same({ nil, "no month 'Foo'" }, { date.parse(df, "Foo 5, 2021") })
      assert.is_nil(date.parse(df, "2021-12-05"))
      assert.same({ nil, "date format '%d%d' repeats %d" }, { date.compile_format("%d%d") })
    end)
  end)

  describe("types", function()
    local m = compile{
      { "email", "userName" },
      { "flag", "active", type = "boolean" },
      { "n", "enterprise:employeeNumber", type = "integer" },
      { "start", TERM2 .. ":startDate", type = "date", format = "%d/%m/%Y" },
      { "hired", "enterprise:hireDate", type = "date", format = "%d %b %y" },
      { "since", "enterprise:since", type = "date", format = "%Y-%m-%d %H:%M", as = "epoch" },
    }

    it("accepts true/false/yes/no/1/0 for booleans, any case", function()
      for word, want in pairs{ ["true"] = true, ["FALSE"] = false, yes = true, No = false,
        ["1"] = true, ["0"] = false } do
        local r = assert(m:to_resource({ email = "a@x", flag = word }, 2))
        assert.equal(want, r.active, word)
      end
      local r, err, code = m:to_resource({ email = "a@x", flag = "maybe" }, 9)
      assert.is_nil(r)
      assert.equal("line 9, field 'flag': 'maybe' is not a boolean (true/false, yes/no, 1/0)", err)
      assert.equal("INVALID_VALUE", code)
    end)

    it("makes integers integers", function()
      local r = assert(m:to_resource({ email = "a@x", n = " 0042 " }, 2))
      assert.equal(42, r[ENT2].employeeNumber)
      assert.equal("integer", math.type(r[ENT2].employeeNumber))
      local _, err = m:to_resource({ email = "a@x", n = "4.5" }, 3)
      assert.equal("line 3, field 'n': '4.5' is not an integer", err)
    end)

    it("parses dates in the given format, as UTC", function()
      -- scim2 sends dateTime strings unless told otherwise...
      local r = assert(m:to_resource({ email = "a@x", start = "29/02/2024", hired = "3 Mar 99" }))
      assert.equal("2024-02-29T00:00:00Z", r[TERM2].startDate)
      assert.equal("1999-03-03T00:00:00Z", r[ENT2].hireDate)
      -- ...and integer seconds with as = "epoch".
      r = assert(m:to_resource({ email = "a@x", since = "1970-01-02 00:01" }))
      assert.equal(86460, r[ENT2].since)
      assert.equal("integer", math.type(r[ENT2].since))
      local cases = {
        { "31/02/2023", "'31/02/2023' is not a date in the format %d/%m/%Y (day 31 is out of "
          .. "range)" },
        { "2023-01-01", "'2023-01-01' is not a date in the format %d/%m/%Y" },
        { "01/13/2023", "'01/13/2023' is not a date in the format %d/%m/%Y (month 13 is out "
          .. "of range)" },
      }
      for _, c in ipairs(cases) do
        local res, err = m:to_resource({ email = "a@x", start = c[1] }, 5)
        assert.is_nil(res)
        assert.matches("line 5, field 'start': " .. c[2], err, 1, true)
      end
    end)

    it("writes the dialect's epoch dates as integer seconds", function()
      local mm = compile({ { "email", "userName" },
        { "start", "starttermdates:startDate", type = "date" } }, "meta")
      local r = assert(mm:to_resource{ email = "a@x", start = "1969-12-31" })
      assert.equal(-86400, r[TERM2].startDate)
      assert.equal("integer", math.type(r[TERM2].startDate))
    end)
  end)

  describe("to_resource", function()
    it("matches headers by alias, case and spaces", function()
      local m = mapping.default()
      for _, h in ipairs{ "Email", " E-MAIL ", "email address", "\239\187\191email" } do
        local r = assert(m:to_resource({ [h] = "a@x", ["First   Name"] = "A" }, 2))
        assert.equal("a@x", r.userName, h)
        assert.equal("A", r.name.givenName)
      end
    end)

    it("writes only the columns the row has, and skips empty cells", function()
      local m = mapping.default()
      local r = assert(m:to_resource({ email = "a@x", ["job title"] = "", locale = "de_DE" }, 2))
      assert.same({ schemas = { "urn:ietf:params:scim:schemas:core:2.0:User" }, userName = "a@x",
        emails = { { type = "work", value = "a@x", primary = true } }, locale = "de_DE" }, r)
    end)

    it("derives schemas from the attributes used", function()
      local m = mapping.default{ dialect = "meta" }
      local r = assert(m:to_resource({ email = "a@x" }, 2))
      assert.same({ "urn:ietf:params:scim:schemas:core:2.0:User" }, r.schemas)
      r = assert(m:to_resource({ email = "a@x", ["start date"] = "2020-01-01", division = "D" }))
      assert.same({ "urn:ietf:params:scim:schemas:core:2.0:User", ENT2, TERM2 }, r.schemas)
    end)

    it("gives filtered multi-valued entries their type, and primary to the first", function()
      local m = compile{ { "email", "userName" },
        { "work", 'phoneNumbers[type eq "work"].value' },
        { "mobile", 'phoneNumbers[type eq "mobile"].value' },
        { "ext", 'phoneNumbers[type eq "work"].display' } }
      local r = assert(m:to_resource{ email = "a@x", work = "1", mobile = "2", ext = "x1" })
      assert.same({ { type = "work", value = "1", primary = true, display = "x1" },
        { type = "mobile", value = "2" } }, r.phoneNumbers)
    end)

    it("applies transforms, whole-row values, defaults, constants and jobs", function()
      local m = compile{
        { "email", "userName", transform = string.lower },
        { "status", "active", type = "boolean",
          value = function(row) return row.status ~= "terminated" end },
        { "nick", "nickName", default = "none" },
        { attribute = "userType", constant = "Employee" },
        { attribute = "preferredLanguage", constant = "en", jobs = { "create" } },
      }
      local r = assert(m:to_resource({ Email = "A@X", Status = "terminated", nick = "" }, 2))
      assert.same({ "a@x", false, "none", "Employee" },
        { r.userName, r.active, r.nickName, r.userType })
      assert.is_nil(r.preferredLanguage)
      r = assert(m:to_resource({ email = "b@x" }, 3, "create"))
      assert.equal("en", r.preferredLanguage)
      assert.is_nil(r.active)  -- no status column: the account is left as it is
      assert.is_nil(r.nickName)
    end)

    it("keeps a function's booleans and numbers when no type is given", function()
      local m = compile{ { "email", "userName" },
        { "status", "active", value = function(row) return row.status ~= "terminated" end },
        { "level", "enterprise:level", transform = function(v) return #v end },
        { attribute = "enterprise:flag", constant = "yes", type = "boolean" } }
      local r = assert(m:to_resource{ email = "a@x", status = "terminated", level = "abc" })
      assert.is_false(r.active)
      assert.equal(3, r[ENT2].level)
      assert.is_true(r[ENT2].flag)
      local row = m:to_row(r)
      assert.equal("false", row.status)
      assert.equal("3", row.level)
    end)

    it("fails only the row whose transform throws, naming line and column", function()
      local m = compile{ { "email", "userName" },
        { "age", "enterprise:age", type = "integer",
          transform = function(v) if v == "boom" then error("cannot parse " .. v, 0) end
            return v end } }
      local rows = { { email = "a@x", age = "1" }, { email = "b@x", age = "boom" },
        { email = "c@x", age = "3" } }
      local ok, failed = 0, {}
      for i, row in ipairs(rows) do
        local r, err = m:to_resource(row, i + 1)
        if r then ok = ok + 1 else failed[#failed + 1] = err end
      end
      assert.equal(2, ok)
      assert.same({ "line 3, field 'age': transform failed: cannot parse boom" }, failed)
    end)

    it("requires values per job", function()
      local m = mapping.default()
      local _, err = m:to_resource({ email = "a@x", ["first name"] = "" }, 4, "create")
      assert.equal("line 4, field 'first name': a value is required", err)
      assert(m:to_resource({ email = "a@x", ["first name"] = "" }, 4, "update"))
      _, err = m:to_resource({ email = " " }, 5)
      assert.equal("line 5, field 'email': a value is required", err)
      _, err = m:to_resource({ ["first name"] = "x" }, 6)
      assert.equal("line 6, field 'email': the key (userName) is empty", err)
    end)
  end)

  describe("check_header", function()
    local m = mapping.default()

    it("accepts the sample's header, and subsets for update and delete", function()
      local ok, warns = m:check_header({ "Email", "First Name", "Last Name", "Job Title",
        "Department", "Phone Number", "Location", "Locale", "Manager Email" }, "create")
      assert.is_true(ok)
      assert.same({}, warns)
      assert.is_true((m:check_header({ "email", "locale" }, "update")))
      assert.is_true((m:check_header({ "EMAIL", "whatever" }, "delete")))
    end)

    it("reports missing, unknown and duplicate columns together", function()
      local ok, errs = m:check_header({ "E-mail", "Email", "Shoe Size", "last name" }, "create")
      assert.is_nil(ok)
      assert.same({
        "columns 'E-mail' and 'Email' (header fields 1 and 2) are both column 'email'",
        "unknown column 'Shoe Size' (header field 3): the mapping default has no such column "
          .. "or alias",
        "missing required column 'first name' (or given name) for create",
      }, errs)
      ok, errs = m:check_header({ "first name" }, "delete")
      assert.is_nil(ok)
      assert.same({ "missing required column 'email' (or e-mail, email address, mail) for delete" },
        errs)
    end)

    it("lets the caller waive unknown columns, and only those", function()
      local ok, errs = m:check_header({ "email", "Shoe Size", "email" }, "create",
        { unknown_columns = "ignore" })
      assert.is_nil(ok)
      assert.same({ "columns 'email' and 'email' (header fields 1 and 3) are both column 'email'",
        "missing required column 'first name' (or given name) for create",
        "missing required column 'last name' (or family name, surname) for create" }, errs)
      assert.is_true((m:check_header({ "email", "first name", "last name", "Shoe Size" },
        "create", { unknown_columns = "ignore" })))
      -- and a mapping that ignores them can be made strict for one check
      local hr = assert(mapping.load("examples/mappings/hr_export.lua"))
      assert.is_nil((hr:check_header({ "Employee ID", "Badge Colour" }, "update",
        { unknown_columns = "error" })))
      assert.has_error(function() m:check_header({ "email" }, "create",
        { unknown_columns = "maybe" }) end)
    end)

    it("warns about columns the dialect cannot use", function()
      local ok, warns = m:check_header({ "email", "start date" }, "update")
      assert.is_true(ok)
      assert.same({ "column 'start date' (header field 2) is ignored: dialect scim2 has no "
        .. "'starttermdates' extension" }, warns)
      local hr = assert(mapping.load("examples/mappings/hr_export.lua"))
      assert.is_true((hr:check_header({ "Employee ID", "Badge Colour" }, "update")))
    end)
  end)

  describe("references", function()
    it("exposes the manager's key and writes the id in each dialect's shape", function()
      local shapes = {
        scim2 = { ENT2, { value = "7" } },
        meta = { ENT2, { value = "7" } },
        workplace_v1 = { "urn:scim:schemas:extension:enterprise:1.0", { managerId = "7" } },
      }
      for d, want in pairs(shapes) do
        local m = mapping.default{ dialect = d }
        assert.same({ manager = "manager email" }, m.reference_columns)
        local row = { email = "a@x", ["manager email"] = "Boss@X" }
        assert.same({ manager = "Boss@X" }, m:references(row))
        local r = assert(m:to_resource(row, 2))
        assert.is_nil(r[want[1]])  -- the id is not known yet
        m:set_reference(r, "manager", "7")
        assert.same(want[2], r[want[1]].manager)
        assert.equal(want[1], r.schemas[2])
        assert.equal("7", m:reference_id(r, "manager"))
      end
      assert.same({}, mapping.default():references{ email = "a@x", ["manager email"] = "" })
    end)

    it("reads the id from value or managerId on meta", function()
      local m = mapping.default{ dialect = "meta" }
      assert.equal("9", m:reference_id({ [ENT2] = { manager = { managerId = "9" } } }, "manager"))
      assert.equal("9", m:reference_id({ [ENT2] = { manager = { value = "9" } } }, "manager"))
      assert.is_nil(mapping.default():reference_id(
        { [ENT2] = { manager = { managerId = "9" } } }, "manager"))
      assert.equal("12", mapping.default{ dialect = "workplace_v1" }:reference_id(
        { ["urn:scim:schemas:extension:enterprise:1.0"] = { manager = { managerId = 12.0 } } },
        "manager"))
    end)
  end)

  describe("diff", function()
    local m = mapping.default()

    local function desired(row, mgr)
      local r = assert(m:to_resource(row, 2))
      if mgr then m:set_reference(r, "manager", mgr) end
      return r
    end

    it("is empty when nothing changed, whatever the case of emails", function()
      local cur = stored(desired({ email = "A@X.com", ["first name"] = "A", ["last name"] = "B",
        ["phone number"] = "1" }, "5"))
      local ops, changes = m:diff(cur, desired({ email = "a@x.COM", ["first name"] = "A",
        ["last name"] = "B", ["phone number"] = "1", ["manager email"] = "m@x" }, "5"))
      assert.same({}, ops)
      assert.same({}, changes)
    end)

    it("replaces changed values at their filtered paths and adds what is absent", function()
      local cur = stored(desired({ email = "a@x", ["phone number"] = "1", ["job title"] = "T" }))
      local ops, changes = m:diff(cur, desired({ email = "a@x", ["phone number"] = "2",
        ["job title"] = "T2", location = "L", department = "D", ["first name"] = "F" }, "5"))
      assert.same({  -- in the mapping's order
        { op = "add", path = "name", value = { givenName = "F" } },
        { op = "replace", path = "title", value = "T2" },
        { op = "add", path = ENT2 .. ":department", value = "D" },
        { op = "replace", path = 'phoneNumbers[type eq "work"].value', value = "2" },
        { op = "add", path = "addresses",
          value = { { type = "work", formatted = "L", primary = true } } },
        { op = "add", path = ENT2 .. ":manager", value = { value = "5" } },
      }, ops)
      assert.equal(6, #changes)
      assert.same({ path = "title", column = "job title", old = "T", new = "T2" }, changes[2])
      assert.same({ path = ENT2 .. ":manager.value", column = "manager email", new = "5" },
        changes[6])
    end)

    it("replaces the whole manager when it changes", function()
      local mm = mapping.default{ dialect = "meta" }
      local cur = { userName = "a@x", emails = { { type = "work", value = "a@x" } },
        [ENT2] = { manager = { managerId = "7" } } }
      local want = assert(mm:to_resource({ email = "a@x" }, 2))
      mm:set_reference(want, "manager", "7")
      assert.same({}, (mm:diff(cur, want)))
      mm:set_reference(want, "manager", "8")
      local ops, changes = mm:diff(cur, want)
      assert.same({ { op = "replace", path = ENT2 .. ":manager", value = { value = "8" } } }, ops)
      assert.same({ { path = ENT2 .. ":manager.value", column = "manager email", old = "7",
        new = "8" } }, changes)
    end)

    it("removes only where the mapping says an empty cell means remove", function()
      local hr = assert(mapping.load("examples/mappings/hr_export.lua"))
      local row = { ["Employee ID"] = "E1", ["Work Email"] = "a@x", ["Manager ID"] = "E0",
        ["Job Title"] = "T" }
      local cur = assert(hr:to_resource(row, 2))
      hr:set_reference(cur, "manager", "100")
      cur = stored(cur)
      local ops, changes = hr:diff(cur, assert(hr:to_resource({ ["Employee ID"] = "E1",
        ["Work Email"] = "a@x", ["Manager ID"] = "", ["Job Title"] = "" }, 3)))
      assert.same({ { op = "remove", path = ENT2 .. ":manager" } }, ops)
      assert.same({ { path = ENT2 .. ":manager.value", column = "Manager ID", old = "100" } },
        changes)
      -- Nothing to remove: no operation.
      cur[ENT2] = nil
      assert.same({}, (hr:diff(cur, assert(hr:to_resource({ ["Employee ID"] = "E1",
        ["Manager ID"] = "" }, 3)))))
    end)

    it("removes a whole multi-valued entry when nothing else is left in it", function()
      local mm = compile{ { "email", "userName" },
        { "phone", 'phoneNumbers[type eq "work"].value', empty = "remove" },
        { "ext", 'phoneNumbers[type eq "work"].display' } }
      local cur = stored(assert(mm:to_resource{ email = "a@x", phone = "1" }))
      assert.same({ { op = "remove", path = 'phoneNumbers[type eq "work"]' } },
        (mm:diff(cur, assert(mm:to_resource{ email = "a@x", phone = "" }))))
      cur = stored(assert(mm:to_resource{ email = "a@x", phone = "1", ext = "9" }))
      assert.same({ { op = "remove", path = 'phoneNumbers[type eq "work"].value' } },
        (mm:diff(cur, assert(mm:to_resource{ email = "a@x", phone = "" }))))
      -- The PUT form agrees.
      local put = mm:merge(cur, assert(mm:to_resource{ email = "a@x", phone = "" }))
      assert.same({ { type = "work", primary = true, display = "9" } }, put.phoneNumbers)
    end)

    it("treats values that make the same cell as equal", function()
      local mm = compile{ { "email", "userName" },
        { "start", "enterprise:startDate", type = "date" },
        { "flag", "active", type = "boolean" },
        { "n", "enterprise:level", type = "integer" } }
      local cur = { userName = "a@x", active = true,
        [ENT2] = { startDate = "2020-05-01T00:00:00.000Z", level = 3.0 } }
      local ops = mm:diff(cur, assert(mm:to_resource{ email = "a@x", start = "2020-05-01",
        flag = "yes", n = "3" }))
      assert.same({}, ops)
      ops = mm:diff(cur, assert(mm:to_resource{ email = "a@x", start = "2020-05-02", flag = "no" }))
      assert.same({ { op = "replace", path = ENT2 .. ":startDate", value = "2020-05-02T00:00:00Z" },
        { op = "replace", path = "active", value = false } }, ops)
    end)
  end)

  describe("merge", function()
    it("drops read-only attributes and keeps other multi-valued entries", function()
      local m = mapping.default{ dialect = "workplace_v1" }
      local cur = { schemas = { "urn:scim:schemas:core:1.0" }, id = 5, meta = { v = 1 },
        groups = { { value = "g" } }, userName = "a@x", externalID = "old",
        phoneNumbers = { { type = "home", value = "9", primary = true } },
        name = { givenName = "A", familyName = "B", formatted = "A B" },
        ["urn:scim:schemas:extension:facebook:accountstatusdetails:1.0"] = { claimed = true } }
      local want = assert(m:to_resource({ email = "a@x", ["phone number"] = "1",
        ["external id"] = "E9", ["first name"] = "C" }, 2))
      local put = m:merge(cur, want)
      assert.same({
        schemas = { "urn:scim:schemas:core:1.0" },
        userName = "a@x", externalId = "E9",
        name = { givenName = "C", familyName = "B", formatted = "A B" },
        phoneNumbers = { { type = "home", value = "9", primary = false },
          { type = "work", value = "1", primary = true } },
      }, put)
      assert.equal(5, cur.id)  -- the current record is not touched
    end)

    it("sends numeric ids it keeps back as digit strings", function()
      local m = mapping.default{ dialect = "workplace_v1" }
      local ent = "urn:scim:schemas:extension:enterprise:1.0"
      local cur = cjson.decode('{"schemas":["urn:scim:schemas:core:1.0","' .. ent .. '"],'
        .. '"id":100040000000002,"userName":"a@x","' .. ent .. '":{"department":"D",'
        .. '"manager":{"managerId":100040000000001}}}')
      local put = m:merge(cur, assert(m:to_resource({ email = "a@x", department = "E" }, 2)))
      assert.same({ managerId = "100040000000001" }, put[ent].manager)
      assert.equal("E", put[ent].department)
      assert.equal("100040000000001", m:reference_id(cur, "manager"))
    end)
  end)

  describe("to_row and round trips", function()
    local fx = dofile("tests/fixtures/mapping/rows.lua")

    -- What each dialect's server hands back (Meta may answer managerId; v1 ids are numbers).
    local function serve(m, resource, id)
      local r = stored(resource, id)
      local d = m.dialect.name
      local ent = m.dialect.enterprise_schema
      if d == "meta" and r[ent] and r[ent].manager then
        r[ent].manager = { managerId = r[ent].manager.value }
      elseif d == "workplace_v1" then
        r.id = tonumber(id)
      end
      return r
    end

    for _, dn in ipairs{ "scim2", "meta", "workplace_v1" } do
      for _, set in ipairs{ { "sample", "examples/mappings/default.lua" },
                            { "hr", "examples/mappings/hr_export.lua" } } do
        it("export -> update changes nothing (" .. dn .. ", " .. set[2] .. ")", function()
          local m = assert(mapping.load(set[2], { dialect = dn }))
          local server, id_of, key_of = {}, {}, {}
          for i, r in ipairs(fx[set[1]]) do
            local id = tostring(5000 + i)
            local key = m:key_id(assert(m:key(r.row)))
            id_of[key], key_of[id] = id, assert(m:key(r.row))
          end
          for k, id in pairs(fx.ids) do id_of[k:lower()], key_of[id] = id, k end
          for i, r in ipairs(fx[set[1]]) do
            local res = assert(m:to_resource(r.row, r.line, "create"))
            for name, key in pairs(m:references(r.row)) do
              m:set_reference(res, name, id_of[m:key_id(key)])
            end
            server[i] = serve(m, res, tostring(5000 + i))
          end
          for i, cur in ipairs(server) do
            local row = assert(m:to_row(cur, function(id) return key_of[id] end))
            local want = assert(m:to_resource(row, i + 1, "update"))
            for name, key in pairs(m:references(row)) do
              m:set_reference(want, name, id_of[m:key_id(key)])
            end
            local ops, changes = m:diff(cur, want)
            assert.same({}, ops, "row " .. i)
            assert.same({}, changes, "row " .. i)
            -- The export has every column, and one edited cell is one operation.
            for _, col in ipairs(m.columns) do assert.is_string(row[col], col) end
            local title = m.columns[1] == "email" and "job title" or "Job Title"
            row[title] = "Changed"
            want = assert(m:to_resource(row, i + 1, "update"))
            for name, key in pairs(m:references(row)) do
              m:set_reference(want, name, id_of[m:key_id(key)])
            end
            ops = m:diff(cur, want)
            assert.equal(1, #ops)
            assert.equal("title", ops[1].path)
          end
        end)
      end
    end

    it("exports booleans, dates and transforms through their export form", function()
      local hr = assert(mapping.load("examples/mappings/hr_export.lua", { dialect = "meta" }))
      local row = hr:to_row({ externalId = "E1", userName = "a@x", active = false,
        [TERM2] = { startDate = 1548979200 } })
      assert.equal("Terminated", row.Status)
      assert.equal("01/02/2019", row["Hire Date"])
      assert.equal("", row["Manager ID"])
      assert.same({ "Employee ID", "Work Email", "Given Name", "Surname", "Job Title",
        "Department", "Cost Center", "Status", "Manager ID", "Hire Date", "Mobile" }, hr.columns)
    end)

    it("exports read-only extension attributes but never sends them", function()
      local m = compile({ { "email", "userName" },
        { "claimed", "accountstatusdetails:claimed", type = "boolean" } }, "meta")
      local st = "urn:ietf:params:scim:schemas:extension:facebook:accountstatusdetails:2.0:User"
      assert.same({ email = "a@x", claimed = "true" },
        m:to_row{ userName = "a@x", [st] = { claimed = true } })
      local r = assert(m:to_resource{ email = "a@x", claimed = "false" })
      assert.is_nil(r[st])
      assert.is_true((m:check_header({ "email", "claimed" }, "update")))
      -- scim2 knows no such extension: the column is known, and ignored with a warning.
      local s2 = compile({ { "email", "userName" },
        { "claimed", "accountstatusdetails:claimed", type = "boolean" } })
      local ok, warns = s2:check_header({ "email", "claimed" }, "update")
      assert.is_true(ok)
      assert.equal(1, #warns)
      assert.same({ "email" }, s2.columns)
    end)
  end)

  describe("with scim.csv", function()
    local csv = require "scim.csv"

    it("reads the sample's files as HR systems write them (BOM, ';', CRLF, quotes)", function()
      local m = mapping.default{ dialect = "workplace_v1" }
      local r <close> = assert(csv.open(FIX .. "sample_semicolon.csv"))
      assert.is_true((m:check_header(r.header, "create")))
      local out = {}
      for row, line in r:rows() do out[#out + 1] = assert(m:to_resource(row, line, "create")) end
      assert.equal(2, #out)
      assert.equal("Building 1, Floor 2", out[1].addresses[1].formatted)
      assert.equal('VP "Sales"', out[2].title)
      assert.equal("Main St 1\r\nSpringfield", out[2].addresses[1].formatted)
      assert.is_nil(out[2].phoneNumbers)
    end)

    it("fails just the bad rows of an HR export, naming line and column", function()
      local m = assert(mapping.load("examples/mappings/hr_export.lua", { dialect = "meta" }))
      local r <close> = assert(csv.open(FIX .. "hr_export.csv"))
      assert.is_true((m:check_header(r.header, "create")))
      local ok, errors = {}, {}
      for row, line in r:rows() do
        local res, err = m:to_resource(row, line, "create")
        if res then ok[#ok + 1] = res.externalId else errors[#errors + 1] = err end
      end
      assert.same({ "E1000", "E1001" }, ok)
      assert.equal(2, #errors)
      assert.equal("line 4, field 'Hire Date': '31/02/2019' is not a date in the format "
        .. "%d/%m/%Y (day 31 is out of range)", errors[1])
      assert.matches("^line 5, field 'Status': transform failed: .*hr_export%.lua:%d+: "
        .. "unknown status 'Retired'$", errors[2])
    end)
  end)

  it("keys compare case-insensitively", function()
    local m = mapping.default()
    assert.equal("Ann@X", m:key{ [" EMAIL "] = " Ann@X " })
    assert.equal(m:key_id("Ann@X"), m:key_id("ann@x"))
    local k, err = m:key({ email = "" }, 7)
    assert.is_nil(k)
    assert.equal("line 7, field 'email': the key (userName) is empty", err)
  end)

  describe("bind", function()
    local fx = dofile(FIX .. "rows.lua")

    -- The row's header in a given order and spelling, and its values in that order.
    local function split(row, order, spell)
      local header, values = {}, {}
      for k in pairs(row) do header[#header + 1] = k end
      table.sort(header, order)
      for i, h in ipairs(header) do values[i] = row[h] end
      for i, h in ipairs(header) do header[i] = spell and spell(h) or h end
      return header, values
    end

    local function clears(r)
      local mt = getmetatable(r)
      return mt and mt.scim_clears
    end

    it("builds the same key, resource and references as a keyed row, for every fixture", function()
      local spellings = { function(h) return h end, string.upper, string.lower,
        function(h) return "  " .. h:gsub(" ", "   ") .. " " end }
      local orders = { nil, function(a, b) return a > b end }
      local n = 0
      for _, dn in ipairs{ "scim2", "meta", "workplace_v1" } do
        local maps = { sample = mapping.default{ dialect = dn },
          hr = assert(mapping.load("examples/mappings/hr_export.lua", { dialect = dn })) }
        for set, m in pairs(maps) do
          for _, f in ipairs(fx[set]) do
            for si, spell in ipairs(spellings) do
              for oi = 1, 2 do
                local header, values = split(f.row, orders[oi], spell)
                local b = m:bind(header, "create")
                assert.is_true(b.ok, table.concat(b.problems, "; "))
                for _, job in ipairs{ "create", "update", "sync" } do
                  local want, werr = m:to_resource(f.row, f.line, job)
                  local got, gerr = b:to_resource(values, f.line, job)
                  local what = dn .. " " .. f.name .. " " .. job .. " " .. si .. "/" .. oi
                  assert.same(want, got, what)
                  assert.equal(werr, gerr, what)
                  assert.same(clears(want), clears(got), what)
                  local key, res, refs = b:read(values, f.line, job)
                  assert.equal(m:key(f.row, f.line), key, what)
                  assert.same(want, res, what)
                  assert.same(m:references(f.row), refs, what)
                  n = n + 1
                end
                assert.equal(m:key(f.row, f.line), b:key(values, f.line))
                assert.same(m:references(f.row), b:references(values))
              end
            end
          end
        end
      end
      assert.equal(3 * (3 + 2) * 4 * 2 * 3, n)
    end)

    it("finds columns by alias, case and spaces, in any order", function()
      local m = mapping.default()
      local b = m:bind({ "Manager", "Surname", "Given Name", " E-MAIL ", "\239\187\191Title" })
      assert.is_true(b.ok)
      assert.same({ "manager email", "last name", "first name", "email", "job title" }, b.columns)
      local r = assert(b:to_resource({ "boss@x", "Lee", "Ann", " ann@x ", "CTO" }, 2, "create"))
      assert.same({ "ann@x", "Ann", "Lee", "Ann Lee", "CTO", true },
        { r.userName, r.name.givenName, r.name.familyName, r.name.formatted, r.title, r.active })
      assert.same({ manager = "boss@x" }, b:references{ "boss@x", "Lee", "Ann", "ann@x", "" })
      assert.equal("ann@x", b:key({ "", "", "", "ann@x" }, 2))
      assert.same({ ["Manager"] = "boss@x", ["Given Name"] = "Ann" },
        b:row{ "boss@x", nil, "Ann" })
    end)

    it("leaves attributes of missing columns alone and reports the header's problems", function()
      local m = mapping.default()
      local b = m:bind({ "email", "Shoe Size", "job title" }, "create")
      assert.is_false(b.ok)
      assert.same({ "unknown column 'Shoe Size' (header field 2): the mapping default has no "
          .. "such column or alias",
        "missing required column 'first name' (or given name) for create",
        "missing required column 'last name' (or family name, surname) for create" }, b.problems)
      assert.same({ "email", false, "job title" }, b.columns)
      -- Still usable (a caller lists the rows' problems too); the unknown column is not read.
      local r = assert(b:to_resource({ "a@x", "44", "T" }, 2, "update"))
      assert.same({ schemas = { "urn:ietf:params:scim:schemas:core:2.0:User" }, userName = "a@x",
        emails = { { type = "work", value = "a@x", primary = true } }, title = "T" }, r)

      b = m:bind({ "email", "Shoe Size" }, "update", { unknown_columns = "ignore" })
      assert.is_true(b.ok)
      assert.same({}, b.problems)
      b = m:bind({ "email", "start date" }, "update")
      assert.same({ "column 'start date' (header field 2) is ignored: dialect scim2 has no "
        .. "'starttermdates' extension" }, b.warnings)
      assert.is_nil(b:to_resource({ "a@x", "2020-01-01" }, 2)[
        "urn:ietf:params:scim:schemas:extension:facebook:starttermdates:2.0:User"])
      b = m:bind({ "E-mail", "Email" }, "update")
      assert.same({ "columns 'E-mail' and 'Email' (header fields 1 and 2) are both column "
        .. "'email'" }, b.problems)
      assert.equal("first@x", b:key{ "first@x", "second@x" })
    end)

    it("keeps surrounding space when the mapping says trim = false, and reads numbers", function()
      local m = compile{ trim = false, { "email", "userName" }, { "t", "title" } }
      local b = m:bind{ "t", "email" }
      local r = assert(b:to_resource({ " T ", 42 }, 2))
      assert.same({ " T ", "42" }, { r.title, r.userName })
      assert.same(m:to_resource{ t = " T ", email = 42 }, r)
    end)

    it("reports bad rows as the keyed path does", function()
      local m = mapping.default()
      local b = m:bind{ "email", "first name", "last name", "start date" }
      assert.same({ nil, "line 4, field 'first name': a value is required", "INVALID_VALUE" },
        { b:to_resource({ "a@x", "", "B" }, 4, "create") })
      assert.same({ nil, "line 5, field 'email': the key (userName) is empty", "INVALID_VALUE" },
        { b:read({ " ", "A", "B" }, 5, "update") })
      assert.same({ nil, "line 6, field 'email': the key (userName) is empty" },
        { b:key({}, 6) })
      local mm = mapping.default{ dialect = "meta" }
      local _, err = mm:bind{ "email", "start date" }:read({ "a@x", "1.1.2020" }, 7, "update")
      assert.matches("^line 7, field 'start date': '1.1.2020' is not a date", err)
      assert.has_error(function() b:to_resource("a@x") end,
        "bad argument #1 to 'to_resource' (table of values expected)")
      assert.has_error(function() b:key("a@x") end)
      assert.has_error(function() m:bind("email") end, "bad argument #1 to 'bind' (table expected)")
    end)

    it("hands value and transform functions a read-only view of the row", function()
      local seen
      local m = compile{
        { "email", "userName", transform = string.lower },
        { "status", "active", type = "boolean", value = function(row)
            seen = {}
            for k, v in pairs(row) do seen[k] = v end
            return row.status ~= "terminated" end },
        { "boss", reference = "manager", transform = function(v, row)
            return v .. "@" .. row.Domain end },
      }
      local b = m:bind({ "EMAIL", "Status", "Domain", "boss" }, "update",
        { unknown_columns = "ignore" })
      local key, r, refs = b:read({ "A@X", " terminated ", "x.org", "b" }, 2)
      assert.equal("a@x", key)
      assert.is_false(r.active)
      assert.same({ manager = "b@x.org" }, refs)
      -- The file's names (raw cells) and the mapping's column names (trimmed cells).
      assert.same({ EMAIL = "A@X", email = "A@X", Status = " terminated ", status = "terminated",
        Domain = "x.org", boss = "b" }, seen)
      assert.same(seen, (function()
        m:to_resource({ EMAIL = "A@X", Status = " terminated ", Domain = "x.org", boss = "b" })
        return seen end)())
      local bad = compile{ { "email", "userName" },
        { "x", "title", transform = function(_, row) row.x = 1 end } }
      local _, err = bad:bind{ "email", "x" }:to_resource({ "a@x", "y" }, 3)
      assert.matches("line 3, field 'x': transform failed: .*the row is read%-only", err)
    end)
  end)

  describe("fingerprint", function()
    local m = mapping.default()
    local hr = assert(mapping.load("examples/mappings/hr_export.lua"))

    local function desired(mm, row, mgr, job)
      local r = assert(mm:to_resource(row, 2, job))
      if mgr then mm:set_reference(r, "manager", mgr) end
      return r
    end

    -- changes from the fingerprint agree with diff's, and are empty exactly when diff is.
    local function agree(mm, cur, want)
      local ops, dchanges = mm:diff(cur, want)
      local changes = mm:changes(mm:fingerprint(cur), want)
      assert.equal(#ops == 0, #changes == 0)
      assert.equal(#dchanges, #changes)
      for i, c in ipairs(changes) do
        assert.same({ dchanges[i].path, dchanges[i].column }, { c.path, c.column })
      end
      return changes
    end

    it("finds no change where diff finds none, and the changed columns where it does", function()
      local row = { email = "A@X.com", ["first name"] = "A", ["last name"] = "B",
        ["phone number"] = "1", ["job title"] = "T", ["start date"] = "2020-01-02" }
      local cur = stored(desired(m, row, "5", "create"))
      assert.same({}, agree(m, cur, desired(m, { email = "a@x.COM", ["first name"] = "A",
        ["last name"] = "B", ["phone number"] = "1", ["job title"] = "T" }, "5")))
      local changes = agree(m, cur, desired(m, { email = "a@x.com", ["job title"] = "CTO",
        location = "L", ["phone number"] = "2" }, "6"))
      assert.same({
        { path = "title", column = "job title", old = "T", new = "CTO" },
        { path = 'phoneNumbers[type eq "work"].value', column = "phone number", old = "1",
          new = "2" },
        { path = 'addresses[type eq "work"].formatted', column = "location", new = "L" },
        { path = ENT2 .. ":manager.value", column = "manager email", old = "5", new = "6" },
      }, changes)
    end)

    it("compares dates, booleans and the manager as diff does", function()
      local mm = mapping.default{ dialect = "meta" }
      local cur = stored(desired(mm, { email = "a@x", ["start date"] = "2020-01-02" }))
      cur[ENT2] = { manager = { managerId = "7" } }
      assert.same({}, agree(mm, cur, desired(mm, { email = "a@x",
        ["start date"] = "2020-01-02" }, "7")))
      assert.same({ { path = "urn:ietf:params:scim:schemas:extension:facebook:starttermdates:"
          .. "2.0:User:startDate", column = "start date", old = "2020-01-02",
          new = "2020-01-03" } },
        agree(mm, cur, desired(mm, { email = "a@x", ["start date"] = "2020-01-03" }, "7")))
      local bm = compile{ { "email", "userName" }, { "on", "active", type = "boolean" } }
      cur = stored(assert(bm:to_resource{ email = "a@x", on = "yes" }))
      assert.same({}, agree(bm, cur, assert(bm:to_resource{ email = "a@x", on = "TRUE" })))
      assert.same({ { path = "active", column = "on", old = "true", new = "false" } },
        agree(bm, cur, assert(bm:to_resource{ email = "a@x", on = "0" })))
    end)

    it("lists removals of empty = \"remove\" cells", function()
      local row = { ["Employee ID"] = "E1", ["Work Email"] = "a@x", ["Manager ID"] = "E0" }
      local cur = stored(desired(hr, row, "100"))
      local changes = agree(hr, cur, assert(hr:to_resource({ ["Employee ID"] = "E1",
        ["Manager ID"] = "" }, 3)))
      assert.same({ { path = ENT2 .. ":manager.value", column = "Manager ID", old = "100" } },
        changes)
      cur[ENT2] = nil
      assert.same({}, agree(hr, cur, assert(hr:to_resource({ ["Employee ID"] = "E1",
        ["Manager ID"] = "" }, 3))))
    end)

    it("is one string whose values survive any bytes", function()
      local cur = stored(desired(m, { email = "a@x", ["job title"] = "x\0y\1z\2",
        department = "" }))
      cur.title = "x\0y\1z\2"
      local fp = m:fingerprint(cur)
      assert.equal("string", type(fp))
      local vals = m:fingerprint_values(fp)
      for i, r in ipairs(m.targets) do
        if r.text == "title" then assert.equal("x\0y\1z\2", vals[i]) end
        if r.text == "userName" then assert.equal("a@x", vals[i]) end
        if r.text == "locale" then assert.is_nil(vals[i]) end
      end
      assert.same({}, m:changes(fp, desired(m, { email = "a@x", ["job title"] = "x\0y\1z\2" })))
      assert.has_error(function() m:fingerprint_values(hr:fingerprint(cur)) end)
      assert.has_error(function() m:fingerprint("x") end)
    end)
  end)
end)
