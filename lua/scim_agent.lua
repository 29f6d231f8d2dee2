#!/usr/bin/env lua5.4
-- scim-agent entry point. From a source checkout it finds its modules and
-- build/scim/core.so beside itself; once installed, LuaRocks' paths apply.
do
  local dir = (arg and arg[0] or ""):match("^(.*)[/\\]") or "."
  local f = io.open(dir .. "/scim/init.lua")
  if f then
    f:close()
    package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
    package.cpath = dir .. "/../build/?.so;" .. package.cpath
  end
end
os.exit(require("scim.cli").main(arg))
