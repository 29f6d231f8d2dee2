-- The mapping examples/hr_sync.lua uses for examples/hr_people.csv, an HR export keyed by
-- employee id (the SCIM externalId), with the manager's employee id and no email column:
--
--   Employee ID;First Name;Last Name;Department;Position;Employment Status;Manager ID
--   1004;Zoë;Lefèvre;Engineering;Engineering Manager;Active;1002
--
-- The login is made from the names: "Zoë Lefèvre" -> zoe.lefevre@example.com (HR_DOMAIN).
local DOMAIN = os.getenv("HR_DOMAIN") or "example.com"
local FOLD = { ["à"] = "a", ["á"] = "a", ["â"] = "a", ["ä"] = "a", ["ç"] = "c", ["è"] = "e",
  ["é"] = "e", ["ê"] = "e", ["ë"] = "e", ["í"] = "i", ["ï"] = "i", ["ñ"] = "n", ["ó"] = "o",
  ["ö"] = "o", ["ø"] = "o", ["ú"] = "u", ["ü"] = "u", ["ł"] = "l", ["ð"] = "d", ["ß"] = "ss",
  ["å"] = "a", ["É"] = "e", ["Ø"] = "o", ["Ö"] = "o", ["Ü"] = "u", ["Ł"] = "l", ["Å"] = "a" }
local function login(first, last)
  local s = (first .. "." .. last):lower():gsub("[\xC3\xC5][\x80-\xBF]", FOLD)
  return s:gsub("[^%w%.%-]", "") .. "@" .. DOMAIN
end

return {
  key = "externalId",
  { "Employee ID", "externalId", required = true },
  { "First Name", { "userName", 'emails[type eq "work"].value' }, required = { "create" },
    transform = function(first, row) return login(first, row["last name"]) end },
  { "First Name", "name.givenName", required = { "create" } },
  { "Last Name", "name.familyName", required = { "create" } },
  { "Position", "title" },
  { "Department", "enterprise:department" },
  { "Employment Status", "active", type = "boolean",
    transform = function(status) return status:lower() ~= "terminated" end,
    export = function(active) return active == false and "Terminated" or "Active" end },
  { "Manager ID", reference = "manager" },
}
