-- scim.json: JSON in C (csrc/ljson.c) with SCIM's semantics (array marker, exact integers,
-- nulls, sorted keys, strict UTF-8 and numbers), and a decoder that survives any input.
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

  describe("decode errors", function()
    -- lua-cjson's words and 1-based character positions, which scim.json has always given.
    local cases = {
      { "", "Expected value but found T_END at character 1" },
      { "   ", "Expected value but found T_END at character 4" },
      { "{", "Expected object key string but found T_END at character 2" },
      { '{"a" 1}', "Expected colon but found T_NUMBER at character 6" },
      { '{"a":1,}', "Expected object key string but found T_OBJ_END at character 8" },
      { '{"a":1 "b":2}', "Expected comma or object end but found T_STRING at character 8" },
      { "[1,]", "Expected value but found T_ARR_END at character 4" },
      { "[1 2]", "Expected comma or array end but found T_NUMBER at character 4" },
      { "[1}", "Expected comma or array end but found T_OBJ_END at character 3" },
      { "{} x", "Expected the end but found invalid token at character 4" },
      { "[] []", "Expected the end but found T_ARR_BEGIN at character 4" },
      { "1 :", "Expected the end but found T_COLON at character 3" },
      { "tru", "Expected value but found invalid token at character 1" },
      { "nul", "Expected value but found invalid token at character 1" },
      { "01", "Expected value but found invalid number at character 1" },
      { "[-]", "Expected value but found invalid number at character 2" },
      { "0x10", "Expected value but found invalid number at character 1" },
      { "1.", "Expected value but found invalid number at character 1" },
      { "1e+", "Expected value but found invalid number at character 1" },
      { ".5", "Expected value but found invalid token at character 1" },
      { '"abc', "Expected value but found unexpected end of string at character 5" },
      { '["a\\q"]', "Expected value but found invalid escape code at character 4" },
      { '"\\u12"', "Expected value but found invalid unicode escape code at character 2" },
      { '"\\udc00"', "Expected value but found invalid unicode escape code at character 2" },
      { '"\\ud800\\u0041"', "Expected value but found invalid unicode escape code at character 2" },
      { '{"a\\x":1}', "Expected object key string but found invalid escape code at character 4" },
      { '{"a" "b\\x"}', "Expected colon but found invalid escape code at character 8" },
      { '1 "', "Expected the end but found unexpected end of string at character 4" },
      -- A NUL byte is not the end of the text.
      { "88\0", "Expected the end but found invalid token at character 3" },
      { '"a\0b"', "Expected value but found unexpected end of string at character 3" },
      -- Invalid UTF-8 comes first, wherever it is.
      { '[1,,"\255"]', "invalid UTF-8 at byte 6" },
      { "\239\187\191{}", "Expected value but found invalid token at character 1" },
    }
    for _, c in ipairs(cases) do
      it(string.format("%q", c[1]), function()
        local v, err = json.decode(c[1])
        assert.is_nil(v)
        assert.equal(c[2], err)
      end)
    end

    it("limits nesting to 1000 levels", function()
      assert.is_true(json.is_array(assert(json.decode(("["):rep(1000) .. ("]"):rep(1000)))))
      assert.equal("Found too many nested data structures (1001) at character 1001",
        select(2, json.decode(("["):rep(1001) .. ("]"):rep(1001))))
      assert.equal("Found too many nested data structures (1001) at character 5001",
        select(2, json.decode(('{"a":'):rep(1001) .. "1" .. ("}"):rep(1001))))
      -- Unclosed: the depth is reached before the end.
      assert.matches("^Found too many nested", select(2, json.decode(("["):rep(100000))))
    end)
  end)

  describe("decode details", function()
    it("lets a later duplicate key win, a null one removing the earlier value", function()
      assert.same({ a = 2 }, json.decode('{"a":1,"a":2}'))
      assert.same({}, json.decode('{"a":1,"a":null}'))
    end)

    it("reads every escape, raw control characters and long number tokens", function()
      assert.equal('"\\/\b\f\n\r\tAé', json.decode([["\"\\\/\b\f\n\r\t\u0041\u00E9"]]))
      assert.equal("a\tb\1", json.decode('"a\tb\1"'))
      local long = "0." .. ("0"):rep(100) .. "1"
      assert.equal(tonumber(long), json.decode(long))
      local big = ("9"):rep(300)
      assert.equal("float", math.type(json.decode(big)))
      assert.equal(tonumber(big), json.decode(big))
      assert.equal(math.mininteger, json.decode("-9223372036854775808"))
      assert.equal("float", math.type(json.decode("9223372036854775808")))
      assert.equal(1234567890123456768, json.decode("12345678901234567e2"))
      assert.equal("integer", math.type(json.decode("1e-400")))
      assert.equal("a number is beyond the range of a double", select(2, json.decode("-1e400")))
      -- A syntax error is reported before a number's range.
      assert.matches("Expected comma", select(2, json.decode("[1e400 1]")))
    end)

    it("gives long strings and large documents back whole", function()
      local s = ('x"é'):rep(5000)
      assert.equal(s, json.decode(assert(json.encode(s))))
      local t = {}
      for i = 1, 2000 do t["k" .. i] = { i, "v" .. i } end
      local text = assert(json.encode(t))
      assert.same(t, json.decode(text))
      assert.equal(text, json.encode(json.decode(text)))
    end)

    it("uses lua-cjson's null", function()
      assert.equal(require("cjson").null, json.null)
      assert.equal("[null]", json.encode{ require("cjson").null })
    end)
  end)

  describe("encode details", function()
    it("sorts many keys as bytes", function()
      local t, keys = {}, {}
      for i = 1, 100 do
        local k = string.format("%c%d", 64 + i % 60, i)
        t[k] = i
        keys[#keys + 1] = k
      end
      table.sort(keys)
      local parts = {}
      for i, k in ipairs(keys) do parts[i] = string.format("%q:%d", k, t[k]) end
      assert.equal("{" .. table.concat(parts, ",") .. "}", json.encode(t))
      assert.equal('{"a":1,"a\\u0000":2,"ab":3}', json.encode{ ab = 3, ["a\0"] = 2, a = 1 })
    end)

    it("names the path through arrays and the top level", function()
      assert.equal("field '[2].x' is not a finite number",
        select(2, json.encode{ 1, { x = 0 / 0 } }))
      assert.equal("field '' has a nil value, which JSON cannot hold", select(2, json.encode(nil)))
      assert.equal("field '' has a thread value, which JSON cannot hold",
        select(2, json.encode(coroutine.create(print))))
      assert.equal("field 'u' has a userdata value, which JSON cannot hold",
        select(2, json.encode{ u = io.stdout }))
    end)

    it("writes floats in the shortest form that reads back", function()
      for _, x in ipairs{ 0.1, 1 / 3, 2 ^ 60 + 0.5, 1e-300, -2.5e-10, 123456.789 } do
        assert.equal(x, tonumber(json.encode(x)))
      end
      assert.equal("1.5e+20", json.encode(1.5e20))
      assert.equal("1.2345678901234568e+20", json.encode(123456789012345678901))
    end)
  end)

  describe("robustness", function()
    -- Truncated and mutated documents: decode returns a value or nil and a message, never
    -- raises nor crashes (run under ASan and valgrind by `make sanitize` / `make valgrind`).
    it("survives truncated and mutated documents", function()
      local docs = {
        '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":1000123456789012345,'
          .. '"userName":"zoë@example.com","name":{"givenName":"Zo\\u00EB","familyName":"D"},'
          .. '"emails":[{"value":"z@example.com","primary":true}],"groups":[],"x":null,'
          .. '"n":[1.5e3,-0,0.25,null,{"a":[[],{}]}],"s":"\\ud83d\\ude00\\n\\"q"}',
        '[[[[{"a":[1,2,{"b":"c"}]}]]]]',
        '{"Resources":[{"id":"1"},{"id":"2"}],"totalResults":2,"itemsPerPage":100}',
      }
      local pieces = { "[", "]", "{", "}", ",", ":", '"', "\\", "\\u", "\\ud800", "-", "0",
        "1e999", "e", ".", "null", "true", " ", "\0", "\255", "\xc3", "\xed\xa0\x80" }
      math.randomseed(42)
      local rnd = math.random
      local n, decoded = 0, 0
      local function try(s)
        n = n + 1
        local ok, v, err = pcall(json.decode, s)
        assert(ok, v)
        if v == nil then
          assert.equal("string", type(err), s)
        else
          decoded = decoded + 1
          assert(json.encode(v))
        end
      end
      for _, d in ipairs(docs) do
        for i = 0, #d do try(d:sub(1, i)) try(d:sub(i + 1)) end
        for _ = 1, 1500 do
          local s, p = d, rnd(#d)
          local m = rnd(4)
          if m == 1 then s = s:sub(1, p - 1) .. string.char(rnd(0, 255)) .. s:sub(p + 1)
          elseif m == 2 then s = s:sub(1, p) .. pieces[rnd(#pieces)] .. s:sub(p + 1)
          elseif m == 3 then s = s:sub(1, p - 1) .. s:sub(p + rnd(1, 8))
          else s = s:sub(1, p) .. s:sub(rnd(#s)) end
          try(s)
        end
      end
      assert.is_true(n > 4500)
      assert.is_true(decoded > 0 and decoded < n)
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
