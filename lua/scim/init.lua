--- scim-agent: keep a SCIM service provider's users in step with a CSV file.
-- The public facade: `local scim = require "scim"`.
-- @module scim
local core = require "scim.core"

local scim = {
  _VERSION = core._VERSION,
}

return scim
