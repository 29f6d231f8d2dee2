--- The scim-agent command line.
-- @module scim.cli
local scim = require "scim"

local cli = {}

local USAGE = [==[
usage: scim-agent COMMAND FILE [options]
       scim-agent -c|-u|-e|-d FILE [TOKEN [URL]]

  --version   print the version and exit
  --help      print this help and exit
]==]

--- Runs the command line.
-- @tparam table argv the script's `arg` table
-- @treturn integer the process exit code
function cli.main(argv)
  local first = argv[1]
  if first == "--version" then
    io.stdout:write("scim-agent ", scim._VERSION, "\n")
    return 0
  elseif first == "--help" or first == "-h" then
    io.stdout:write(USAGE)
    return 0
  end
  io.stderr:write("scim-agent: no command given\n", USAGE)
  return 2
end

return cli
