-- A custom sync written against the scim library only: reads an HR export with its own
-- columns (examples/hr_export.csv), derives each login, deactivates the terminated, prints
-- the plan, and with --apply carries it out concurrently with scim.run.
-- Usage: SCIM_URL=... SCIM_TOKEN=... lua5.4 examples/hr_sync.lua hr_export.csv [--apply]
local scim = require "scim"
local csv = require "scim.csv"

local ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
local DOMAIN = os.getenv("HR_DOMAIN") or "example.com"
local file, apply = arg[1], arg[2] == "--apply"
local client <close> = require("scim.client").new{ url = os.getenv("SCIM_URL"),
  token = os.getenv("SCIM_TOKEN") }

-- "Zoë Lefèvre" -> "zoe.lefevre@example.com": fold common accents, keep [a-z0-9.-].
local FOLD = { ["à"] = "a", ["á"] = "a", ["â"] = "a", ["ä"] = "a", ["ç"] = "c", ["è"] = "e",
  ["é"] = "e", ["ê"] = "e", ["ë"] = "e", ["í"] = "i", ["ï"] = "i", ["ñ"] = "n", ["ó"] = "o",
  ["ö"] = "o", ["ø"] = "o", ["ú"] = "u", ["ü"] = "u", ["ł"] = "l", ["ð"] = "d", ["ß"] = "ss",
  ["å"] = "a", ["É"] = "e", ["Ø"] = "o", ["Ö"] = "o", ["Ü"] = "u", ["Ł"] = "l", ["Å"] = "a" }
local function login(first, last)
  local s = (first .. "." .. last):lower():gsub("[\xC3\xC5][\x80-\xBF]", FOLD)
  return s:gsub("[^%w%.%-]", "") .. "@" .. DOMAIN
end

local people, by_emp = {}, {}
for row, line in csv.rows(file) do
  local p = { line = line, manager = row["manager id"], want = {
    userName = login(row["first name"], row["last name"]), externalId = row["employee id"],
    name = { givenName = row["first name"], familyName = row["last name"] }, title = row.position,
    active = row["employment status"]:lower() ~= "terminated",
    [ENT] = { department = row.department } } }
  people[#people + 1], by_emp[row["employee id"]] = p, p
end

local failed = 0
local function check(res, err) if res == nil then error(tostring(err), 0) end return res end
local function run(fn)
  for _, e in ipairs(scim.run(people, fn).errors) do
    io.stderr:write("line ", people[e.index].line, ": ", tostring(e.error), "\n")
    failed = failed + 1
  end
end

-- Plan: look everyone up concurrently, then compare the attributes this sync owns.
run(function(p) p.current = check(client:find_user(p.want.userName)) or nil end)
local OWNED = { title = { "title" }, active = { "active" }, department = { ENT, "department" } }
for _, p in ipairs(people) do
  p.changed = {}
  for attr, path in pairs(OWNED) do
    local c, w = p.current or {}, p.want
    for _, k in ipairs(path) do c, w = (c or {})[k], w[k] end
    if attr == "active" then c = c ~= false end
    if p.current and c ~= w then p.changed[#p.changed + 1] = attr end
  end
  table.sort(p.changed)
  p.action = not p.current and (p.want.active and "create" or "skip (terminated, no account)")
    or #p.changed > 0 and ("update " .. table.concat(p.changed, ", ")) or "unchanged"
  print(string.format("%-32s %s", p.want.userName, p.action))
end
if not apply then return print("(dry run: add --apply to make these changes)") end

-- Apply: creates first (managers need ids), then the changes and manager links.
run(function(p)
  if p.action == "create" then p.current = check(client:create(p.want)) end
end)
run(function(p)
  if not p.current then return end
  local ops, boss = {}, by_emp[p.manager or ""]
  for _, attr in ipairs(p.changed) do
    local path = attr == "department" and ENT .. ":department" or attr
    local value = attr == "department" and p.want[ENT].department or p.want[attr]
    ops[#ops + 1] = { op = "replace", path = path, value = value }
  end
  local has = ((p.current[ENT] or {}).manager or {}).value
  if boss and boss.current and has ~= boss.current.id then
    ops[#ops + 1] = { op = "add", path = ENT .. ":manager", value = { value = boss.current.id } }
  end
  if #ops > 0 then check(client:patch(p.current.id, ops)) end
end)
os.exit(failed == 0 and 0 or 1)
