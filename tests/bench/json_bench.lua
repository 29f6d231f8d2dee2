-- JSON benchmark (`make bench`, run from the repo root by tests/bench/run.lua; or
-- `lua5.4 tests/bench/run.lua json`). µs per typical SCIM user resource (~15 attributes:
-- name, emails, phone numbers, the enterprise extension with a manager, meta) for scim.json
-- encode and decode against raw lua-cjson on the same resource. Times are process CPU
-- (os.clock), best of 3 rounds. A benchmark, never a pass/fail test.
local json = require "scim.json"
local cjson = require "cjson"

local ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

local function resource(i)
  local r = {
    schemas = json.array{ "urn:ietf:params:scim:schemas:core:2.0:User", ENT },
    id = string.format("%d", 100012345678900 + i),
    externalId = string.format("E%07d", i),
    userName = string.format("jane.doe%d@example.com", i),
    displayName = "Jane Doe",
    title = "Senior Engineer",
    active = true,
    locale = "en_GB",
    timezone = "Europe/London",
    preferredLanguage = "en",
    name = { givenName = "Jane", familyName = "Doe", formatted = "Jane Doe" },
    emails = json.array{ { value = string.format("jane.doe%d@example.com", i), type = "work",
      primary = true } },
    phoneNumbers = json.array{ { value = "+44 20 7946 0018", type = "work" } },
    addresses = json.array{ { locality = "London", country = "GB", type = "work",
      formatted = "1 Main St, London" } },
    [ENT] = { department = "R&D", employeeNumber = string.format("%d", i),
      manager = { value = string.format("%d", 100012345678900 + i - 1) } },
    meta = { resourceType = "User", created = "2024-01-01T00:00:00Z",
      lastModified = "2024-06-01T12:00:00Z", location = "https://scim.example.com/Users/1" },
  }
  return r
end

local N = 20000
local docs = {}
for i = 1, 200 do docs[i] = resource(i) end
local texts = {}
for i = 1, #docs do texts[i] = assert(json.encode(docs[i])) end

local function best(fn)
  local b = math.huge
  for _ = 1, 3 do
    collectgarbage()
    local t0 = os.clock()
    fn()
    local t = os.clock() - t0
    if t < b then b = t end
  end
  return b / N * 1e6
end

local function per(fn)
  return best(function()
    for i = 1, N do fn(i % #docs + 1) end
  end)
end

local cj = cjson.new()
local rows = {
  { "encode", per(function(i) return json.encode(docs[i]) end),
    per(function(i) return cj.encode(docs[i]) end) },
  { "decode", per(function(i) return json.decode(texts[i]) end),
    per(function(i) return cj.decode(texts[i]) end) },
}
print(string.format("one SCIM user resource, %d bytes of JSON; µs per call (CPU, best of 3)",
  #texts[1]))
print(string.format("%-8s %12s %14s %8s", "", "scim.json", "raw lua-cjson", "ratio"))
for _, r in ipairs(rows) do
  print(string.format("%-8s %12.2f %14.2f %7.2fx", r[1], r[2], r[3], r[2] / r[3]))
end
