--- The `meta` dialect: Meta's SCIM 2.0 account-management API (Workplace, Work Accounts,
-- Admin Center; https://scim.workplace.com/, only /Users).
-- As scim2, plus: a User-Agent on every request is mandatory; Meta's schema extensions;
-- `name.formatted` is required there, so it is always sent; the manager is written as
-- `manager.value` but Meta's own material shows both `value` and `managerId` in
-- responses, so both are read. Only never-claimed accounts can be deleted.
-- @module scim.dialects.meta

local CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
local ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
local TERMDATES = "urn:ietf:params:scim:schemas:extension:facebook:starttermdates:2.0:User"
local STATUS = "urn:ietf:params:scim:schemas:extension:facebook:accountstatusdetails:2.0:User"
local AUTHMETHOD = "urn:ietf:params:scim:schemas:extension:facebook:authmethod:2.0:User"
local FRONTLINE = "urn:ietf:params:scim:schemas:extension:facebook:frontline:2.0:User"

return {
  name = "meta",
  scim_version = 2,
  default_url = "https://scim.workplace.com/",
  content_type = "application/scim+json",
  accept = "application/scim+json, application/json",
  update = "patch",
  patch_schema = "urn:ietf:params:scim:api:messages:2.0:PatchOp",
  list_schema = "urn:ietf:params:scim:api:messages:2.0:ListResponse",
  error_schema = "urn:ietf:params:scim:api:messages:2.0:Error",
  list = { resources = "Resources", total = "totalResults", start = "startIndex",
           per_page = "itemsPerPage" },
  core_schema = CORE,
  enterprise_schema = ENTERPRISE,
  extensions = {
    enterprise = ENTERPRISE,
    starttermdates = TERMDATES,         -- startDate, termDate: integer UNIX seconds
    accountstatusdetails = STATUS,      -- read-only: invited, claimed, ... (exportable)
    authmethod = AUTHMETHOD,            -- authMethod: "password" or "sso"
    frontline = FRONTLINE,              -- frontline worker flag
  },
  schema_order = { CORE, ENTERPRISE, TERMDATES, AUTHMETHOD, FRONTLINE, STATUS },
  manager = { write = "value", read = { "value", "managerId" } },
  max_page_size = 100,
  user_agent_required = true,
  delete_ok = { 200, 204 },
  etag = false,
  date_format = "iso",
  epoch_attributes = { TERMDATES .. ":startDate", TERMDATES .. ":termDate" },
  read_only = { "id", "meta", "groups", STATUS },
  case_insensitive = { "userName", "emails.value" },
  name_formatted = true,
  create_defaults = {},
  delete_note = "Meta deletes only accounts that were never claimed; "
    .. "use --deactivate to deactivate claimed accounts instead",
}
