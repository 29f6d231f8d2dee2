-- Lists every user of a SCIM service provider, one "id<TAB>userName" line each.
-- Usage: SCIM_URL=https://host/scim/v2/ SCIM_TOKEN=... lua5.4 examples/list_users.lua
-- (SCIM_DIALECT=meta or workplace_v1 for those APIs; default scim2.)
local scim = require "scim"

local url, token = os.getenv("SCIM_URL"), os.getenv("SCIM_TOKEN")
if not url or not token then
  io.stderr:write("list_users: set SCIM_URL and SCIM_TOKEN\n")
  os.exit(2)
end
local client <close> = scim.client.new{ url = url, token = token,
  dialect = os.getenv("SCIM_DIALECT") }
local ok, err = pcall(function()
  for user in client:users() do print(user.id, user.userName) end
end)
if not ok then io.stderr:write("list_users: ", tostring(err), "\n") os.exit(1) end
