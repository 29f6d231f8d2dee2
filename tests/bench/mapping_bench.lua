-- Mapping benchmark (`make bench`, run from the repo root by tests/bench/run.lua; alone:
-- `lua5.4 tests/bench/run.lua mapping`). Validation and mapping of rows with the default
-- mapping, the way the jobs read a file: the key, the resource (the create job's) and the
-- references of each row. Two paths side by side:
--   keyed  - the row rebuilt as a table keyed by header name (as Ctx:row does), then
--            m:key, m:to_resource and m:references, each finding its cells again;
--   bound  - m:bind(header) once, then b:read(values) per row: each cell read once.
-- Plus the compact comparison form (fingerprint and changes against it). Times are process
-- CPU (os.clock), best of 3, in µs per row; the rows are generated in memory, so no CSV
-- reading is counted. The issue's goal: bound validation + mapping ≤ 20 µs per row.
-- A benchmark, never a pass/fail test.
local mapping = require "scim.mapping"

local ROWS = tonumber(os.getenv("MAPPING_BENCH_ROWS")) or 20000

local HEADER = { "Email", "First Name", "Last Name", "Job Title", "Department", "Phone Number",
  "Location", "Locale", "Manager Email" }
local FIRST = { "Jane", "John", "Zoë", "Łukasz", "José", "Ana", "Björn", "Chloé" }
local LAST = { "Doe", "Smith", "Müller", "Kowalski", "García", "O'Brien", "Nakamura", "Lee" }
local TITLES = { "Engineer", "Senior Engineer", "Manager, Sales", "Director", "Analyst" }
local DEPTS = { "R&D", "Sales", "Marketing", "Finance", "People", "Support", "Legal" }
local CITIES = { "London", "Paris", "Berlin", "New York, NY", "São Paulo", "Dublin" }
local LOCALES = { "en_GB", "fr_FR", "de_DE", "en_US", "pt_BR", "ja_JP", "pl_PL" }

local rows = {}
do
  local seed = 20240601
  local function rnd(n)   -- deterministic LCG
    seed = (seed * 1103515245 + 12345) % 2147483648
    return (seed >> 8) % n + 1
  end
  for i = 1, ROWS do
    local fi, la = FIRST[rnd(#FIRST)], LAST[rnd(#LAST)]
    rows[i] = {
      string.format("%s.%s%d@example.com", fi:lower(), la:lower():gsub("[ ']", ""), i),
      fi, la, TITLES[rnd(#TITLES)], DEPTS[rnd(#DEPTS)],
      string.format("+44 20 %04d %04d", rnd(9999), rnd(9999)), CITIES[rnd(#CITIES)],
      LOCALES[rnd(#LOCALES)], i > 10 and string.format("boss%d@example.com", rnd(i - 1)) or "",
    }
  end
end

local function best_of(n, fn)
  local best
  for _ = 1, n do
    collectgarbage()
    local t0 = os.clock()
    fn()
    local t = os.clock() - t0
    if not best or t < best then best = t end
  end
  return best
end

local m = mapping.default()
local results = {}
local function case(label, fn)
  local secs = best_of(3, fn)
  results[#results + 1] = { label = label, us = secs / ROWS * 1e6 }
end

case("keyed: row table + key + to_resource + refs", function()
  for i = 1, ROWS do
    local values, row = rows[i], {}
    for c = 1, #HEADER do row[HEADER[c]] = values[c] end
    assert(m:key(row, i + 1))
    assert(m:to_resource(row, i + 1, "create"))
    m:references(row)
  end
end)

local b = m:bind(HEADER, "create")
assert(b.ok, table.concat(b.problems, "; "))
case("bound: b:read (key, resource, refs)", function()
  for i = 1, ROWS do assert(b:read(rows[i], i + 1, "create")) end
end)

case("keyed: to_resource alone", function()
  local keyed = {}
  for i = 1, ROWS do
    local row = {}
    for c = 1, #HEADER do row[HEADER[c]] = rows[i][c] end
    keyed[i] = row
  end
  for i = 1, ROWS do assert(m:to_resource(keyed[i], i + 1, "create")) end
end)

case("bound: b:to_resource alone", function()
  for i = 1, ROWS do assert(b:to_resource(rows[i], i + 1, "create")) end
end)

-- The compact form: the directory's side (fingerprint of each account) and the row's
-- (changes against it, with one title in ten edited).
local current, fps, bytes = {}, {}, 0
for i = 1, ROWS do
  local r = assert(b:to_resource(rows[i], i + 1, "create"))
  r.id = tostring(i)
  m:set_reference(r, "manager", tostring(i))
  current[i] = r
end
case("fingerprint of an account", function()
  for i = 1, ROWS do fps[i] = m:fingerprint(current[i]) end
end)
for i = 1, ROWS do bytes = bytes + #fps[i] end
local desired = {}
for i = 1, ROWS do
  local values = rows[i]
  if i % 10 == 0 then
    values = table.move(values, 1, #values, 1, {})
    values[4] = "Edited"
  end
  desired[i] = assert(b:to_resource(values, i + 1, "update"))
  m:set_reference(desired[i], "manager", tostring(i))
end
local changed = 0
case("changes(fingerprint, desired)", function()
  changed = 0
  for i = 1, ROWS do
    if #m:changes(fps[i], desired[i]) > 0 then changed = changed + 1 end
  end
end)
case("diff(current, desired) (for comparison)", function()
  for i = 1, ROWS do m:diff(current[i], desired[i]) end
end)
assert(changed == ROWS // 10, "changes found " .. changed .. " changed rows")

local out = io.stdout
out:write(string.format("default mapping (scim2), %d rows of the sample's 9 columns; CPU µs per "
  .. "row, best of 3\n\n", ROWS))
out:write(string.format("%-46s %10s\n", "case", "µs/row"))
for _, r in ipairs(results) do out:write(string.format("%-46s %10.1f\n", r.label, r.us)) end
out:write(string.format("\nbound / keyed (validation + mapping): %.2f (goal: bound ≤ 20 µs/row)\n",
  results[2].us / results[1].us))
out:write(string.format("fingerprint: %.0f bytes per account on average; %d of %d rows "
  .. "changed\n", bytes / ROWS, changed, ROWS))
