--- The dialects' one registry: their names, and loading one by name. Each dialect is a data
-- module (`scim.dialects.scim2`, ...) that scim.client reads for the protocol and
-- scim.mapping for the schemas.
-- @module scim.dialects
local dialects = {}

--- Every dialect, the default first.
dialects.NAMES = { "scim2", "meta", "workplace_v1", "entra" }

local KNOWN = {}
for _, n in ipairs(dialects.NAMES) do KNOWN[n] = true end

--- Loads a dialect by name.
-- @tparam string name
-- @treturn table the dialect
-- @treturn[2] nil
-- @treturn[2] string "unknown dialect 'x' (scim2, meta, workplace_v1 or entra)"
function dialects.load(name)
  if not KNOWN[name] then
    return nil, string.format("unknown dialect '%s' (%s)", tostring(name),
      table.concat(dialects.NAMES, ", "))
  end
  return require("scim.dialects." .. name)
end

return dialects
