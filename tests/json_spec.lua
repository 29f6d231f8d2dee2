-- scim.json: the JSON layer over lua-cjson 2.1.0 (array marker, exact integers, nulls,
-- sorted keys, strict UTF-8 and numbers).
local json = require "scim.json"

describe("scim.json", function()
  after_each(function()
    collectgarbage()
    collectgarbage()
  end)

  describe("encode", function()
    it("tells arrays from objects, empty ones included", function()
      assert.equal('{"a":{},"b":[],"emails":[],"schemas":["x"]}',
        json.encode{ a = {}, b = json.array(), emails = {}, schemas = { "x" } })
      assert.equal("[]", json.encode(json.array()))
      assert.equal("{}", json.encode({}))
      assert.equal("[1,2,3]", json.encode{ 1, 2, 3 })
      assert.equal('[[],{},[[]]]', json.encode{ json.array(), {}, { json.array() } })
      assert.equal('{"Operations":[{"op":"add","path":"x","value":[]}]}',
        json.encode{ Operations = { { op = "add", path = "x", value = json.array() } } })
      -- Only an empty table under a multi-valued name is guessed; a full one is what it is.
      assert.equal('{"emails":{"type":"work"}}', json.encode{ emails = { type = "work" } })
    end)

    it("writes object keys sorted, so equal tables give equal bytes", function()
      local a = { zeta = 1, alpha = { y = 2, b = 3 }, Mid = true, ["é"] = 0 }
      local b = {}
      for _, k in ipairs{ "é", "Mid", "alpha", "zeta" } do b[k] = a[k] end
      assert.equal('{"Mid":true,"alpha":{"b":3,"y":2},"zeta":1,"é":0}', json.encode(a))
      assert.equal(json.encode(a), json.encode(b))
    end)

    it("encodes scalars, nulls and integral floats exactly", function()
      assert.equal('{"a":1700000000,"b":0.5,"c":true,"d":null,"e":"x\\"\\n\\u0001/"}',
        json.encode{ a = 1.7e9, b = 0.5, c = true, d = json.null, e = 'x"\n\1/' })
      assert.equal("0.1", json.encode(0.1))
      assert.equal("-3", json.encode(-3.0))
      assert.equal("null", json.encode(json.null))
      assert.equal("[1,null,3]", json.encode{ 1, json.null, 3 })
      assert.equal("1e+300", json.encode(1e300))
      assert.equal(0.1 + 0.2, tonumber(json.encode(0.1 + 0.2)))
      assert.equal('"\\u007f\\t\\\\"', json.encode("\127\t\\"))
    end)

    it("writes 64-bit integers with every digit", function()
      assert.equal("9223372036854775807", json.encode(math.maxinteger))
      assert.equal("-9223372036854775808", json.encode(math.mininteger))
      assert.equal('{"id":100012345678901234}', json.encode{ id = 100012345678901234 })
    end)

    it("keeps valid UTF-8 as it is and refuses invalid UTF-8, naming the field", function()
      assert.equal('"Zoë 日本 😀"', json.encode("Zoë 日本 😀"))
      local s, err = json.encode{ name = { givenName = "ok\255" } }
      assert.is_nil(s)
      assert.equal("field 'name.givenName' is not valid UTF-8", err)
      -- Overlong forms and UTF-16 surrogates written as UTF-8 are not UTF-8 either.
      assert.is_nil(json.encode("\192\175"))
      assert.is_nil(json.encode("\237\160\128"))
      assert.equal("field 'emails[2]' is not valid UTF-8",
        select(2, json.encode{ emails = { "a", "b\128" } }))
      -- Keys too.
      assert.equal("field 'x' is not valid UTF-8", select(2, json.encode{ x = { ["\255"] = 1 } }))
    end)

    it("names the field it cannot encode", function()
      local s, err = json.encode{ emails = { { value = 1 / 0 } } }
      assert.is_nil(s)
      assert.equal("field 'emails[1].value' is not a finite number", err)
      assert.equal("field 'x' is not a finite number", select(2, json.encode{ x = 0 / 0 }))
      assert.equal("field 'x' mixes array items with other keys",
        select(2, json.encode{ x = { 1, 2, y = 3 } }))
      assert.equal("field 'x' mixes array items with other keys",
        select(2, json.encode{ x = json.array{ y = 1 } }))
      assert.equal("field 'x' has a function value, which JSON cannot hold",
        select(2, json.encode{ x = print }))
      assert.equal("field '' has a non-string key true", select(2, json.encode{ [true] = 1 }))
      local cyc = {}
      cyc.self = cyc
      assert.matches("^field 'self%.self.*' is nested too deeply %(a cycle%?%)$",
        select(2, json.encode(cyc)))
    end)
  end)

  describe("decode", function()
    it("marks arrays, empty ones included, and leaves objects plain", function()
      local v = assert(json.decode('{"a":[],"b":{},"c":[ \n ],"f":"[]","g":"\\"[]","h":[{}]}'))
      assert.equal(json.array_mt, getmetatable(v.a))
      assert.is_nil(next(v.a))
      assert.is_true(json.is_array(v.a))
      assert.is_nil(getmetatable(v.b))
      assert.is_false(json.is_array(v.b))
      assert.is_true(json.is_array(v.c))
      assert.equal("[]", v.f)
      assert.equal('"[]', v.g)
      assert.is_true(json.is_array(v.h))
      assert.is_false(json.is_array(v.h[1]))
      assert.is_true(json.is_array(json.decode("[]")))
      assert.is_true(json.is_array(json.decode("[[]]")[1]))
      assert.is_false(json.is_array(json.decode("{}")))
      assert.is_false(json.is_array("[]"))
    end)

    it("drops nulls, closing the gaps they leave in arrays", function()
      local v = assert(json.decode('{"d":null,"e":[1,null,3],"f":[null],"g":[null,null,"x"]}'))
      assert.is_nil(v.d)
      assert.same({ 1, 3 }, v.e)
      assert.is_true(json.is_array(v.f))
      assert.is_nil(next(v.f))
      assert.same({ "x" }, v.g)
      local v2, err = json.decode("null")
      assert.is_nil(v2)
      assert.equal("the document is null", err)
    end)

    it("makes integers of integral numbers and keeps the rest floats", function()
      local v = assert(json.decode('{"n":42.0,"x":1.5,"z":-0,"e":1e3,"s":"7"}'))
      assert.equal("integer", math.type(v.n))
      assert.equal(42, v.n)
      assert.equal(1.5, v.x)
      assert.equal("integer", math.type(v.z))
      assert.equal(1000, v.e)
      assert.equal("integer", math.type(v.e))
      assert.equal("7", v.s)
      assert.equal("integer", math.type(json.decode("17")))
    end)

    it("keeps integers of 15 and more digits exact", function()
      local v = assert(json.decode('{"id":1000123456789012345,"p":1.1234567890123456789,'
        .. '"s":"1234567890123456789","a":[-1000000000000000001],"e":12345678901234567e2,'
        .. '"k15":123456789012345,"k16":9007199254740993,"max":9223372036854775807}'))
      assert.equal(1000123456789012345, v.id)
      assert.equal("integer", math.type(v.id))
      assert.equal("float", math.type(v.p))
      assert.equal("1234567890123456789", v.s)
      assert.equal(-1000000000000000001, v.a[1])
      assert.equal(123456789012345, v.k15)
      -- 2^53 + 1: the first integer a double cannot hold.
      assert.equal(9007199254740993, v.k16)
      assert.equal(math.maxinteger, v.max)
      -- Beyond 64 bits it can only be a double.
      assert.equal("float", math.type(json.decode("92233720368547758070")))
      assert.equal('{"a":[-1000000000000000001],"id":1000123456789012345}',
        json.encode{ id = v.id, a = v.a })
      assert.equal(1000123456789012345, json.decode("1000123456789012345"))
      -- Digits inside strings are left alone, escapes included.
      local t = assert(json.decode('["\\"1000123456789012345", 1000123456789012345]'))
      assert.same({ '"1000123456789012345', 1000123456789012345 }, t)
    end)

    it("refuses what is not JSON, with the position", function()
      local v, err = json.decode('{"a":')
      assert.is_nil(v)
      assert.matches("at character 6", err)
      assert.is_nil(json.decode('{"a": "unterminated [] }'))
      assert.is_nil(json.decode(""))
      assert.equal("JSON text must be a string", select(2, json.decode(nil)))
      -- lua-cjson 2.1.0 takes these by default; JSON has no such numbers.
      for _, bad in ipairs{ "NaN", "[Infinity]", "-Infinity", "0x10", '{"a":nan}' } do
        assert.is_nil(json.decode(bad), bad)
      end
      assert.equal("a number is beyond the range of a double", select(2, json.decode("[1e400]")))
      -- The shared cjson module keeps its own settings.
      assert.equal(16, require("cjson").decode("0x10"))
    end)

    it("refuses invalid UTF-8 and lone surrogates", function()
      assert.equal("invalid UTF-8 at byte 8", select(2, json.decode('{"a":"b\255"}')))
      assert.is_nil(json.decode('"\237\160\128"'))
      assert.is_nil(json.decode('"\\ud800"'))
      assert.equal("😀", json.decode('"\\ud83d\\ude00"'))
      assert.equal("é\0x", json.decode('"\\u00e9\\u0000x"'))
    end)
  end)

  describe("round trip", function()
    it("gives back the same document a server sent", function()
      local text = '{"active":true,"emails":[],"groups":[{"value":"g1"}],"id":1000123456789012345,'
        .. '"meta":{"created":"2024-01-01T00:00:00Z"},"name":{},"roles":[],"x":[[],{}],'
        .. '"y":0.25}'
      assert.equal(text, json.encode(assert(json.decode(text))))
    end)

    it("holds for generated documents", function()
      -- A fixed seed: the same documents every run; bounded in count and size.
      local rnd = math.random
      math.randomseed(20240501)
      local words = { "", "a", "é", "日本", 'q"uote', "back\\slash", "nl\n", "\0nul", "[]",
        "1000123456789012345" }
      local function gen(depth)
        local r = rnd(depth > 3 and 5 or 7)
        if r == 1 then return words[rnd(#words)]
        elseif r == 2 then return rnd(-1000, 1000)
        elseif r == 3 then return rnd(0, 1) == 1
        elseif r == 4 then return rnd() * 1e6
        elseif r == 5 then return math.maxinteger - rnd(0, 1000)
        elseif r == 6 then
          local t = json.array()
          for i = 1, rnd(0, 4) do t[i] = gen(depth + 1) end
          return t
        end
        local t = {}
        for _ = 1, rnd(0, 4) do t["k" .. rnd(1, 9)] = gen(depth + 1) end
        return t
      end
      for i = 1, 300 do
        local doc = gen(0)
        local text = assert(json.encode(doc))
        local back = json.decode(text)
        assert.same(doc, back, text)
        assert.equal(text, json.encode(back), "document " .. i)
      end
    end)
  end)
end)
