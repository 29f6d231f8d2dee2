-- A mapping for an HR system's export, shaped unlike the sample's files:
--
--   Employee ID,Given Name,Surname,Work Email,Job Title,Department,Cost Center,
--   Status,Manager ID,Hire Date,Mobile
--   E1001,Ada,Lovelace,ada@example.com,CTO,Engineering,CC-10,Active,,01/02/2019,+44 20 7946 0001
--
-- People are identified by their employee id (the SCIM externalId), the manager column
-- holds the manager's employee id, and a terminated status deactivates the account.
-- Columns the mapping does not list (an HR export has many) are ignored.
local ACTIVE = { active = true, ["on leave"] = true, probation = true }

return {
  key = "externalId",
  unknown_columns = "ignore",

  { "Employee ID", "externalId", required = true, aliases = { "employee number", "emp id" } },
  -- Logins are lower-case here, whatever the HR system typed.
  { "Work Email", { "userName", 'emails[type eq "work"].value' }, required = { "create" },
    transform = string.lower },
  { "Given Name", "name.givenName", required = { "create" }, aliases = { "first name" } },
  { "Surname", "name.familyName", required = { "create" },
    aliases = { "last name", "family name" } },
  { "Job Title", "title" },
  { "Department", "enterprise:department" },
  { "Cost Center", "enterprise:costCenter" },
  -- Status is a word in the export and a boolean in SCIM; export writes it back as a word
  -- so that export -> update changes nothing. Unknown statuses fail the row.
  { "Status", "active", type = "boolean",
    transform = function(status)
      local s = status:lower()
      if s == "terminated" or s == "inactive" then return false end
      if ACTIVE[s] then return true end
      error("unknown status '" .. status .. "'")
    end,
    export = function(active) return active == false and "Terminated" or "Active" end },
  { "Manager ID", reference = "manager", empty = "remove" },
  { "Hire Date", "starttermdates:startDate", type = "date", format = "%d/%m/%Y" },
  { "Mobile", 'phoneNumbers[type eq "mobile"].value' },
}
