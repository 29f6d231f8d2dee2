-- A custom sync on the scim library: the HR export examples/hr_people.csv (keyed by
-- employee id, logins made from names, terminated people deactivated) with its own mapping,
-- planned with scim.plan, printed, and with --apply carried out.
-- Usage: SCIM_URL=... SCIM_TOKEN=... lua5.4 examples/hr_sync.lua hr_people.csv [--apply]
local scim = require "scim"

local file, apply = arg[1], arg[2] == "--apply"
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local client <close> = scim.client.new{ url = os.getenv("SCIM_URL"),
  token = os.getenv("SCIM_TOKEN"), concurrency = 16 }

local plan, err, code = scim.plan{ client = client, rows = file, job = "sync",
  mapping = here .. "/mappings/hr_people.lua" }
if not plan then
  for _, problem in ipairs(err.problems or {}) do io.stderr:write(problem, "\n") end
  io.stderr:write(tostring(err), "\n")
  os.exit(code == "INVALID" and 2 or 3)
end

for change in plan:changes() do
  local row = plan:row(change) or {}
  print(string.format("%-6s %-34s %s", change.key, row["First Name"] and
    (row["First Name"] .. " " .. row["Last Name"]) or "", change.action))
  for _, d in ipairs(change.diff or {}) do
    print(string.format("         %s: %s -> %s", d.column or d.attribute, tostring(d.old),
      tostring(d.new)))
  end
end
if not apply then return print("(dry run: add --apply to make these changes)") end

local result = plan:apply{ concurrency = 16, on_result = function(r)
  if r.action == "failed" then io.stderr:write(r.key, ": ", tostring(r.error), "\n") end
end }
for action, n in pairs(result.counts) do print(action, n) end
os.exit((result.failed == 0 and not result.stopped) and 0 or 1)
