--- The `entra` dialect: Microsoft Entra ID's API-driven inbound provisioning. Not a SCIM
-- service provider: one endpoint (the provisioning job's `bulkUpload` URL, given as the
-- URL) takes SCIM BulkRequests of at most 50 user operations, answers 202 Accepted with no
-- body, and matches and applies them later through the job's own attribute mappings (per
-- user results are in Entra's provisioning logs). So: writes only, every row a POST of the
-- whole user carrying its `externalId` (the service decides create or update), no listing,
-- no lookups, no deletes. Microsoft's Graph reference allows 40 requests per second.
-- @module scim.dialects.entra

local entra = {}
for k, v in pairs(require "scim.dialects.scim2") do entra[k] = v end

entra.name = "entra"
-- Only writes through the bulk endpoint: a plan cannot read the directory.
entra.writes_only = true
entra.bulk = { at_url = true, max_operations = 50, max_payload_size = 4 * 1024 * 1024 }
entra.groups = false
-- Microsoft's published ceiling for bulkUpload: 40 requests per second.
entra.default_rate = 40
-- Attributes a mapping sends that Entra's schemas lack go in this extension; the mapping
-- names it with its short name ("csv:costCenterCode").
entra.custom_schema = "urn:ietf:params:scim:schemas:extension:csv:1.0:User"
entra.extensions = { enterprise = entra.enterprise_schema, csv = entra.custom_schema }
entra.schema_order = { entra.core_schema, entra.enterprise_schema, entra.custom_schema }

return entra
