local filter = require "scim.filter"

describe("scim.filter", function()
  after_each(function()
    collectgarbage()
    collectgarbage()
  end)

  describe("values", function()
    it("quotes and escapes strings as JSON", function()
      assert.equal('userName eq "ada@example.com"', filter.eq("userName", "ada@example.com"))
      assert.equal([[userName eq "a\" or userName pr \""]],
        filter.eq("userName", 'a" or userName pr "'))
      assert.equal([[title eq "back\\slash"]], filter.eq("title", "back\\slash"))
      assert.equal([[title eq "t\tn\nr\rb\bf\fz\u0000\u001f\u007f"]],
        filter.eq("title", "t\tn\nr\rb\bf\fz\0\31\127"))
    end)

    it("keeps UTF-8 and slashes as they are", function()
      assert.equal('displayName eq "Zoë/Łukasz 日本"', filter.eq("displayName", "Zoë/Łukasz 日本"))
    end)

    it("writes numbers, booleans and null plainly", function()
      assert.equal("active eq true", filter.eq("active", true))
      assert.equal("active eq false", filter.eq("active", false))
      assert.equal("x gt 42", filter.gt("x", 42))
      assert.equal("x lt 0.5", filter.lt("x", 0.5))
      assert.equal("x eq 0.1", filter.eq("x", 0.1))
      assert.equal("x eq 1e+300", filter.eq("x", 1e300))
      assert.equal("title eq null", filter.eq("title", nil))
      -- Written as request bodies are: integral floats as integers, long ids exactly.
      assert.equal("x eq 3", filter.eq("x", 3.0))
      assert.equal("id eq 1000123456789012345", filter.eq("id", 1000123456789012345))
      assert.equal("x eq -9223372036854775808", filter.eq("x", math.mininteger))
    end)

    it("refuses values that are not JSON literals", function()
      assert.has_error(function() filter.eq("x", {}) end,
        "filter on 'x': value must be a string, number, boolean or nil, not table")
      assert.has_error(function() filter.eq("x", 0 / 0) end,
        "filter on 'x': value must be a finite number")
      assert.has_error(function() filter.eq("x", math.huge) end,
        "filter on 'x': value must be a finite number")
      assert.has_error(function() filter.eq("x", "\255abc") end)
      local ok, err = pcall(filter.eq, "x", "ok\255")
      assert.is_false(ok)
      assert.matches("not valid UTF%-8", err)
    end)

    it("quotes with filter.string and filter.value", function()
      assert.equal('"a\\"b"', filter.string('a"b'))
      assert.equal("7", filter.value(7))
      assert.has_error(function() filter.string(7) end)
    end)
  end)

  describe("attribute paths", function()
    it("accepts the RFC grammar", function()
      for _, p in ipairs{ "userName", "name.givenName", "meta.lastModified", "emails.value",
          "x509Certificates",
          "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
          "urn:ietf:params:scim:schemas:core:2.0:User:userName", "$ref", "a-b_c" } do
        assert.equal(p, filter.check_path(p), p)
      end
    end)

    it("refuses anything that could carry syntax", function()
      for _, p in ipairs{ "", "user name", 'userName"', "userName)", "emails[type eq x]",
          "a.b.c", "1abc", "a or b", "urn:x", "name.", ".name", "a\nb" } do
        local ok, why = filter.check_path(p)
        assert.is_nil(ok, p)
        assert.is_string(why)
      end
      assert.has_error(function() filter.eq("userName pr or x", "v") end,
        "bad attribute path 'userName pr or x'")
      assert.has_error(function() filter.pr(nil) end)
    end)
  end)

  describe("operators", function()
    it("builds every comparison", function()
      for _, op in ipairs{ "eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le" } do
        assert.equal('title ' .. op .. ' "x"', filter[op]("title", "x"))
      end
      assert.equal("title pr", filter.pr("title"))
    end)

    it("combines with and, or, not and value paths", function()
      local f = filter.all(filter.eq("active", true), filter.any(filter.sw("userName", "a"),
        filter.negate(filter.pr("title"))))
      assert.equal('(active eq true) and ((userName sw "a") or (not (title pr)))', f)
      assert.equal('emails[type eq "work"]', filter.has("emails", filter.eq("type", "work")))
      assert.equal("title pr", filter.all("title pr"))
      assert.has_error(function() filter.all() end, "filter.and needs at least one filter")
      assert.has_error(function() filter.any("a pr", 3) end)
      assert.has_error(function() filter.has("emails.value", "type pr") end)
      assert.has_error(function() filter.negate("") end)
    end)
  end)
end)
