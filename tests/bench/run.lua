-- `make bench`: runs every tests/bench/*_bench.lua in turn, from the
-- source tree, each printing its own table. Benchmarks compare ratios within
-- one run; they are never pass/fail tests.
package.path = "lua/?.lua;lua/?/init.lua;tests/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local only = arg[1]
local p = assert(io.popen("ls tests/bench/*_bench.lua 2>/dev/null"))
local files = {}
for f in p:lines() do
  if not only or f:find(only, 1, true) then files[#files + 1] = f end
end
p:close()
for _, f in ipairs(files) do
  io.stdout:write("== ", f, "\n")
  dofile(f)
  io.stdout:write("\n")
end
