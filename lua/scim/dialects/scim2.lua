--- The `scim2` dialect: plain RFC 7643/7644 SCIM 2.0 (the default).
-- Data only: scim.client reads the protocol fields, scim.mapping the schema fields.
-- @module scim.dialects.scim2

local CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
local ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

return {
  name = "scim2",
  scim_version = 2,
  default_url = nil,                    -- the user must give one
  content_type = "application/scim+json",
  accept = "application/scim+json, application/json",
  update = "patch",                     -- PUT only when the server says PATCH is unsupported
  patch_schema = "urn:ietf:params:scim:api:messages:2.0:PatchOp",
  list_schema = "urn:ietf:params:scim:api:messages:2.0:ListResponse",
  error_schema = "urn:ietf:params:scim:api:messages:2.0:Error",
  -- Field names of a list response (SCIM 1.1 and 2.0 agree on these).
  list = { resources = "Resources", total = "totalResults", start = "startIndex",
           per_page = "itemsPerPage" },
  core_schema = CORE,
  enterprise_schema = ENTERPRISE,
  -- Short schema names a mapping may write instead of the URN ("enterprise:department").
  extensions = { enterprise = ENTERPRISE },
  -- Order of the `schemas` array in a resource built from a row.
  schema_order = { CORE, ENTERPRISE },
  -- The manager reference: the sub-attribute of `<enterprise>:manager` holding the id.
  manager = { write = "value", read = { "value" } },
  max_page_size = 100,
  user_agent_required = false,
  etag = true,                          -- use If-Match when the server gives an ETag
  -- How a `type = "date"` attribute is sent unless the mapping says otherwise (RFC 7643
  -- dateTime); `epoch_attributes` lists the ones this provider wants as integer seconds.
  date_format = "iso",
  epoch_attributes = {},
  -- Never sent back in a PUT (RFC 7643 mutability readOnly, and server-managed).
  read_only = { "id", "meta", "groups" },
  -- Attributes whose values compare without regard to case (RFC 7643 caseExact = false).
  case_insensitive = { "userName", "emails.value" },
  -- Always derive name.formatted from the name parts when the mapping gives none.
  name_formatted = false,
  -- Attributes set only when a resource is created (`job = "create"`), if absent.
  create_defaults = {},
  -- Deleting is refused for these reasons (meta explains; nothing special here).
  delete_note = nil,
}
