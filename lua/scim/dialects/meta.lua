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

-- Everything scim2 says (protocol, content types, list fields, ...) unless changed below.
local meta = {}
for k, v in pairs(require "scim.dialects.scim2") do meta[k] = v end

meta.name = "meta"
meta.default_url = "https://scim.workplace.com/"
meta.extensions = {
  enterprise = ENTERPRISE,
  starttermdates = TERMDATES,         -- startDate, termDate: integer UNIX seconds
  accountstatusdetails = STATUS,      -- read-only: invited, claimed, ... (exportable)
  authmethod = AUTHMETHOD,            -- authMethod: "password" or "sso"
  frontline = FRONTLINE,              -- frontline worker flag
}
meta.schema_order = { CORE, ENTERPRISE, TERMDATES, AUTHMETHOD, FRONTLINE, STATUS }
meta.manager = { write = "value", read = { "value", "managerId" } }
meta.user_agent_required = true
meta.etag = false
meta.epoch_attributes = { TERMDATES .. ":startDate", TERMDATES .. ":termDate" }
meta.read_only = { "id", "meta", "groups", STATUS }
meta.name_formatted = true
meta.delete_note = "Meta deletes only accounts that were never claimed; "
  .. "use --deactivate to deactivate claimed accounts instead"

return meta
