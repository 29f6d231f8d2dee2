-- CSV reader benchmark (`make bench`, run from the repo root by tests/bench/run.lua).
-- Generates a deterministic ~100 MB HR-style CSV in build/bench/ (reused when present) and
-- prints MB/s and rows/s for each way of reading it, plus the issue's ratio targets. Times
-- are process CPU seconds (os.clock; Python's time.process_time), best of 2 runs (3 for the
-- C-only passes (a) and (e), which take milliseconds); the file is in the page cache after
-- generation. A benchmark, never a pass/fail test.
-- The module built with -DSCIM_BENCH (`make bench`): it has core.csv_scan, which the
-- production module leaves out. Loaded before anything else requires scim.core.
package.cpath = "build/bench/?.so;" .. package.cpath
local core = require "scim.core"
if not core.csv_scan then
  error("scim.core has no csv_scan: run `make bench`, which builds build/bench/scim/core.so"
    .. " with -DSCIM_BENCH (and scim.core must not be loaded before this file)", 0)
end
local csv = require "scim.csv"

local PATH = "build/bench/hr.csv"
local TARGET_BYTES = 100 * 1000 * 1000
local MAPPED = { "email", "first name", "last name", "manager email" }

-- {====================================================== the file

local FIRST = { "Jane", "John", "Zoë", "Łukasz", "José", "Ana", "Björn", "Chloé", "Mohammed",
  "Priya", "王", "Søren", "Nguyễn", "Olga", "Émile", "Aoife" }
local LAST = { "Doe", "Smith", "Müller", "Kowalski", "García", "O'Brien", "Nakamura", "李",
  "Dubois", "Andersson", "Rossi", "Novák", "Øvergaard", "Silva", "Van der Berg", "Lee" }
local TITLES = { "Engineer", "Senior Engineer", "Manager, Sales", "Director", "Analyst",
  "Designer", "Head of \"Growth\"", "Accountant", "Recruiter", "Support Specialist" }
local DEPTS = { "R&D", "Sales", "Marketing", "Finance", "People", "Support", "Legal" }
local CITIES = { "London", "Paris", "Berlin", "New York, NY", "São Paulo", "Tōkyō", "Dublin",
  "Kraków" }
local LOCALES = { "en_GB", "fr_FR", "de_DE", "en_US", "pt_BR", "ja_JP", "pl_PL" }
local NOTES = { "", "", "", "", "part-time", "on leave until March, back in April",
  "prefers \"Jo\"", "line one\nline two", "remote; UTC+1", "contractor\r\nrenewal due" }

local function quote(s)
  if s:find('[",\r\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

local function generate(path)
  os.execute("mkdir -p build/bench")
  local tmp = path .. ".part"
  local f = assert(io.open(tmp, "wb"))
  local seed = 20240601
  local function rnd(n)   -- deterministic LCG
    seed = (seed * 1103515245 + 12345) % 2147483648
    return (seed >> 8) % n + 1
  end
  f:write("employee id,email,first name,last name,job title,department,phone number,",
    "location,locale,manager email,start date,notes\n")
  local bytes, rows, buf = 0, 0, {}
  while bytes < TARGET_BYTES do
    rows = rows + 1
    local fi, la = FIRST[rnd(#FIRST)], LAST[rnd(#LAST)]
    local email = string.format("%s.%s%d@example.com", fi:lower(), la:lower():gsub("[ ']", ""),
      rows)
    local line = table.concat({
      string.format("E%07d", rows), email, quote(fi), quote(la), quote(TITLES[rnd(#TITLES)]),
      quote(DEPTS[rnd(#DEPTS)]), string.format("+44 20 %04d %04d", rnd(9999), rnd(9999)),
      quote(CITIES[rnd(#CITIES)]), LOCALES[rnd(#LOCALES)],
      rows > 10 and string.format("boss%d@example.com", rnd(rows - 1)) or "",
      string.format("20%02d-%02d-%02d", rnd(24), rnd(12), rnd(28)), quote(NOTES[rnd(#NOTES)]),
    }, ",") .. "\n"
    buf[#buf + 1] = line
    bytes = bytes + #line
    if #buf == 2000 then f:write(table.concat(buf)) buf = {} end
  end
  f:write(table.concat(buf))
  assert(f:close())
  assert(os.rename(tmp, path))
end

-- }======================================================

local function size_of(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

local function best_of(n, fn)
  local best, count
  for _ = 1, n do
    local t0 = os.clock()
    count = fn()
    local t = os.clock() - t0
    if not best or t < best then best = t end
  end
  return best, count
end

if not size_of(PATH) then
  io.stdout:write("generating ", PATH, " ...\n")
  io.stdout:flush()
  generate(PATH)
end
local bytes = size_of(PATH)
local MB = bytes / 1e6

local results = {}
local function record(key, label, secs, rows)
  results[key] = { label = label, secs = secs, rows = rows }
end

local t, n
t = best_of(3, function() local _, recs = core.csv_scan(PATH, "memchr") return recs end)
record("e", "(e) memchr newline pass (the floor)", t, nil)
t, n = best_of(3, function() local _, recs = core.csv_scan(PATH, "tokenize") return recs end)
record("a", "(a) C tokenizer alone, every field", t, n)
local rows_total = n
t, n = best_of(2, function()
  local c = 0
  for _ in csv.rows(PATH) do c = c + 1 end
  return c
end)
record("b", "(b) rows as keyed Lua tables", t, n)
t, n = best_of(2, function()
  local c = 0
  for _ in csv.rows(PATH, { array = true }) do c = c + 1 end
  return c
end)
record("c", "(c) rows as arrays", t, n)
t, n = best_of(2, function()
  local c = 0
  for _ in csv.rows(PATH, { columns = MAPPED }) do c = c + 1 end
  return c
end)
record("d", "(d) keyed rows, opts.columns (" .. #MAPPED .. " of 12)", t, n)
results.e.rows = rows_total

-- (f) Python's csv module, the original tool's parser
local py = io.popen("command -v python3 2>/dev/null"):read("l")
if py and py ~= "" then
  local script = [[
import csv, sys, time
path = sys.argv[1]
def run(kind):
    best = None
    for _ in range(2):
        t0 = time.process_time()
        n = 0
        with open(path, newline="", encoding="utf-8") as f:
            r = csv.reader(f) if kind == "reader" else csv.DictReader(f)
            for _row in r:
                n += 1
        t = time.process_time() - t0
        best = t if best is None or t < best else best
    print(kind, best, n)
run("reader")
run("dict")
]]
  local sf = os.tmpname()
  local f = assert(io.open(sf, "w"))
  f:write(script)
  f:close()
  local p = io.popen("python3 " .. sf .. " " .. PATH)
  for line in p:lines() do
    local kind, secs, rows = line:match("^(%a+) ([%d%.e%-]+) (%d+)$")
    if kind == "reader" then
      record("f1", "(f) Python csv.reader", tonumber(secs), tonumber(rows))
    elseif kind == "dict" then
      record("f2", "(f) Python csv.DictReader", tonumber(secs), tonumber(rows))
    end
  end
  p:close()
  os.remove(sf)
end

local out = io.stdout
out:write(string.format("%s: %.1f MB, %d records, 12 columns;"
  .. " CPU seconds, best of 2 (a, e: 3)\n\n", PATH, MB, rows_total))
out:write(string.format("%-44s %10s %12s %8s\n", "case", "MB/s", "rows/s", "seconds"))
for _, k in ipairs({ "a", "b", "c", "d", "e", "f1", "f2" }) do
  local r = results[k]
  if r then
    out:write(string.format("%-44s %10.0f %12s %8.3f\n", r.label, MB / r.secs,
      r.rows and string.format("%.0f", r.rows / r.secs) or "-", r.secs))
  end
end

local function ratio(label, num, den, target)
  if not (results[num] and results[den]) then
    out:write(string.format("%-34s %s\n", label, "n/a (python3 missing)"))
    return
  end
  local x = results[den].secs / results[num].secs   -- speed ratio
  out:write(string.format("%-34s %6.2fx  (target >= %.1fx: %s)\n", label, x, target,
    x >= target and "met" or "MISSED"))
end
out:write("\n")
ratio("(a) tokenizer / (e) memchr", "a", "e", 0.3)
ratio("(b) keyed rows / DictReader", "b", "f2", 2.5)
ratio("(d) opts.columns / (b) keyed rows", "d", "b", 1.5)
