-- The default mapping: the columns of the original Workplace sample's CSV files
-- (email, first name, last name, job title, department, phone number, location, locale,
-- manager email) and its optional ones (timezone, external id, organization, division,
-- cost center, start date). Header names match without regard to case and spaces.
-- scim-agent uses this mapping when no --mapping is given; a copy ships as the module
-- scim.mapping.default.
return {
  key = "userName",

  { "email", "userName", required = true, aliases = { "e-mail", "email address", "mail" } },
  -- The same column is also the work email. The legacy v1 API never took emails from the
  -- sample, so that dialect leaves it out.
  { "email", 'emails[type eq "work"].value', dialects = { "scim2", "meta" } },
  { "first name", "name.givenName", required = { "create" }, aliases = { "given name" } },
  { "last name", "name.familyName", required = { "create" },
    aliases = { "family name", "surname" } },
  -- The display name, from the two columns above when the file has both.
  { attribute = "name.formatted", value = function(row)
      local first, last = row["first name"], row["last name"]
      if first == nil or last == nil then return nil end
      local full = (first .. " " .. last):gsub("^%s+", ""):gsub("%s+$", "")
      return full ~= "" and full or nil
    end },
  { "job title", "title", aliases = { "title" } },
  { "department", "enterprise:department" },
  { "phone number", 'phoneNumbers[type eq "work"].value', aliases = { "phone" } },
  { "location", 'addresses[type eq "work"].formatted' },
  { "locale", "locale" },
  { "manager email", reference = "manager", aliases = { "manager" } },

  -- Optional columns.
  { "timezone", "timezone", aliases = { "time zone" } },
  { "external id", "externalId", aliases = { "externalid" } },
  { "organization", "enterprise:organization" },
  { "division", "enterprise:division" },
  { "cost center", "enterprise:costCenter", aliases = { "cost centre" } },
  { "start date", "starttermdates:startDate", type = "date", format = "%Y-%m-%d" },

  -- A new account starts active, as the sample's create did; updates leave it alone.
  { attribute = "active", constant = true, jobs = { "create" } },
}
