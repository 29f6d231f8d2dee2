-- `make demo`: starts the local sandbox SCIM server and runs scim-agent from the source tree
-- on the example files: create -> update -> export -> sync dry run -> delete, showing what
-- an administrator sees. Run from the repository root: lua5.4 tests/demo.lua
package.path = "tests/?.lua;lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local server = require "support.server"
local quote = require("support.agent").shell_quote

local s = server.start{ latency_ms = 5 }
local export_path = "build/demo-export.csv"
local report_path = "build/demo-report.csv"

local function banner(text)
  io.stdout:write("\n\27[1m" .. text .. "\27[0m\n")
  io.stdout:flush()
end
if (os.getenv("NO_COLOR") or "") ~= "" or not os.execute("test -t 1") then
  banner = function(text)
    io.stdout:write("\n== " .. text .. "\n")
    io.stdout:flush()
  end
end

local failures = 0
local function agent(args, expect)
  io.stdout:write("$ scim-agent " .. args .. "\n")
  io.stdout:flush()
  local cmd = string.format("SCIM_URL=%s SCIM_TOKEN=%s lua5.4 lua/scim_agent.lua %s",
    quote(s.url), quote(s.token), args)
  s:reset_stats()
  local _, _, code = os.execute(cmd)
  local st = s:stats{ requests = false }
  local methods = {}
  for m, n in pairs(st.by_method) do
    methods[#methods + 1] = string.format("%s %d", m, math.tointeger(n) or 0)
  end
  table.sort(methods)
  io.stdout:write(string.format("(exit %d; the server saw %d requests: %s)\n", code,
    math.tointeger(st.total) or 0,
    #methods > 0 and table.concat(methods, ", ") or "none"))
  if code ~= (expect or 0) then failures = failures + 1 end
end

local ok, err = pcall(function()
  banner("A sandbox SCIM 2.0 server is running at " .. s.url)
  banner("1. create: the original sample's create.csv (30 people, a manager chain)")
  agent("create examples/create.csv --report " .. report_path)
  io.stdout:write("report (first rows of " .. report_path .. "):\n")
  io.stdout:flush()
  os.execute("head -4 " .. report_path .. " | cut -c1-110")

  banner("2. create again: nothing is duplicated, every row is 'exists'")
  agent("create examples/create.csv")

  banner("3. update: update.csv changes five people; only they are sent, as PATCH")
  agent("update examples/update.csv")

  banner("4. export: every account to " .. export_path .. ", managers as emails")
  agent("export " .. export_path)
  io.stdout:flush()
  os.execute("head -6 " .. export_path .. " | cut -c1-110")

  banner("5. sync dry run (plan): what syncing create.csv would change back, with old -> new")
  agent("plan examples/create.csv --deactivate-missing")

  banner("6. delete: the three leavers in delete.csv, then again (not_found is no failure)")
  agent("delete examples/delete.csv --yes")
  agent("delete examples/delete.csv --yes")

  banner("7. a file with mistakes: every problem listed, nothing sent, exit 2")
  local bad = os.tmpname()
  local f = assert(io.open(bad, "w"))
  f:write("email,first name,last name,shoe size\n",
    "a@example.com,Ann,Lee,38\n",
    "A@example.com,Ann,Again,39\n",
    "b@example.com,Bob,,40\n",
    ",Cy,Dee,41\n")
  f:close()
  agent("create " .. bad, 2)
  os.remove(bad)
end)
s:stop()
if not ok then
  io.stderr:write("demo: ", tostring(err), "\n")
  os.exit(1)
end
banner(failures == 0 and "demo finished: every step gave the expected exit code"
  or ("demo: " .. failures .. " step(s) gave an unexpected exit code"))
os.exit(failures == 0 and 0 or 1)
