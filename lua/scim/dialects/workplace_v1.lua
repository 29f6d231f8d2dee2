--- The `workplace_v1` dialect: Workplace's legacy SCIM 1.0 account-management API
-- (https://www.workplace.com/scim/v1/), the API the original Python sample spoke.
--
-- What the sample sent (fbsamples/workplace-platform-samples, AccountManagement/scim_sdk.py,
-- buildUserJSONObj), and so what a create from its columns must produce:
--   schemas = [ core:1.0, then starttermdates:1.0 if a start date, then enterprise:1.0 if
--   any of department/organization/division/costCenter/manager ];
--   userName = email; name = { givenName, familyName, formatted = given .. " " .. family };
--   title; phoneNumbers = [ { value, type = "work", primary = true } ];
--   addresses = [ { type = "work", formatted = location, primary = true } ];
--   locale; timezone; active = true (create only);
--   enterprise:1.0 = { department, organization, division, costCenter,
--                      manager = { managerId = id } };
--   starttermdates:1.0 = { startDate = epoch seconds, termDate = 0 }.
-- Its bugs, fixed here: it spelled `externalID` (the attribute is externalId); it built
-- startDate with time.mktime (local time zone, a float) where this sends integer UTC
-- seconds; an update was GET, merge, PUT of the whole record including read-only
-- attributes (id, meta, ...), and a merge replaced whole multi-valued arrays (losing e.g.
-- a home phone number); a DELETE counted as done only on 200. It sent no emails, so the
-- default mapping writes the work email only in the other dialects.
-- Updates here merge (scim.mapping merge) into the record the job already read (from the
-- listing or a lookup: no extra GET) and PUT the result. List responses are SCIM 1.1:
-- the same totalResults/itemsPerPage/startIndex/Resources fields, no ListResponse schema.
-- @module scim.dialects.workplace_v1

local CORE = "urn:scim:schemas:core:1.0"
local ENTERPRISE = "urn:scim:schemas:extension:enterprise:1.0"
local TERMDATES = "urn:scim:schemas:extension:facebook:starttermdates:1.0"
local STATUS = "urn:scim:schemas:extension:facebook:accountstatusdetails:1.0"
local AUTHMETHOD = "urn:scim:schemas:extension:facebook:auth_method:1.0"
local FRONTLINE = "urn:scim:schemas:extension:facebook:frontline:1.0"

return {
  name = "workplace_v1",
  scim_version = 1,
  default_url = "https://www.workplace.com/scim/v1/",
  content_type = "application/json",
  accept = "application/json",
  update = "put",                       -- GET, merge, PUT: the v1 API has no PATCH
  patch_schema = nil,
  list_schema = nil,                    -- SCIM 1.1 list responses carry no message schema
  error_schema = nil,
  list = { resources = "Resources", total = "totalResults", start = "startIndex",
           per_page = "itemsPerPage" },
  core_schema = CORE,
  enterprise_schema = ENTERPRISE,
  extensions = {
    enterprise = ENTERPRISE,
    starttermdates = TERMDATES,         -- startDate, termDate: integer UNIX seconds
    accountstatusdetails = STATUS,
    authmethod = AUTHMETHOD,
    frontline = FRONTLINE,
  },
  -- A mapping written for SCIM 2.0 URNs still works here: these are translated.
  schema_translate = {
    ["urn:ietf:params:scim:schemas:core:2.0:User"] = CORE,
    ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] = ENTERPRISE,
    ["urn:ietf:params:scim:schemas:extension:facebook:starttermdates:2.0:User"] = TERMDATES,
    ["urn:ietf:params:scim:schemas:extension:facebook:accountstatusdetails:2.0:User"] = STATUS,
    ["urn:ietf:params:scim:schemas:extension:facebook:authmethod:2.0:User"] = AUTHMETHOD,
    ["urn:ietf:params:scim:schemas:extension:facebook:frontline:2.0:User"] = FRONTLINE,
  },
  -- The sample's order: core, then start/term dates, then enterprise.
  schema_order = { CORE, TERMDATES, ENTERPRISE, AUTHMETHOD, FRONTLINE, STATUS },
  manager = { write = "managerId", read = { "managerId", "value" } },
  max_page_size = 100,
  user_agent_required = true,
  etag = false,
  date_format = "epoch",
  epoch_attributes = { TERMDATES .. ":startDate", TERMDATES .. ":termDate" },
  read_only = { "id", "meta", "groups", STATUS },
  case_insensitive = { "userName", "emails.value" },
  name_formatted = true,
  -- The sample sent termDate = 0 ("none") with every start date it created.
  create_defaults = { [TERMDATES] = { termDate = 0 } },
  delete_note = "Workplace deletes only accounts that were never claimed; "
    .. "use --deactivate to deactivate claimed accounts instead",
}
