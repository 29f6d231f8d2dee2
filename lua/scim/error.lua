--- The library's error value: what the second result of every `nil, err, code` triple is.
-- It prints as its message (`tostring`, `..`, `print`), carries its `code`, and any details
-- a caller may want (`problems` of an invalid file, `removals` over the guard, ...).
-- @module scim.error
local error_mod = {}

local Error = { __name = "scim.error" }
Error.__index = Error
function Error.__tostring(e) return e.message end
function Error.__concat(a, b) return tostring(a) .. tostring(b) end
error_mod.Error = Error

--- A new error.
-- @tparam string message
-- @tparam string code e.g. "INVALID", "GUARD", "UNAVAILABLE", "INTERRUPTED"
-- @tparam[opt] table fields more details (copied in)
-- @treturn scim.error
function error_mod.new(message, code, fields)
  local e = { message = tostring(message), code = code }
  for k, v in pairs(fields or {}) do e[k] = v end
  return setmetatable(e, Error)
end

--- The fail triple of a new error: `nil, err, code`.
function error_mod.fail(message, code, fields)
  if getmetatable(message) == Error then return nil, message, message.code end
  local e = error_mod.new(message, code, fields)
  return nil, e, code
end

--- Whether v is one of ours.
function error_mod.is(v)
  return getmetatable(v) == Error
end

--- Whether an error is the Lua interpreter's answer to Ctrl-C (or a caught SIGTERM/SIGHUP).
function error_mod.is_interrupt(err)
  if type(err) == "table" then return err.code == "INTERRUPTED" end
  return type(err) == "string" and err:find("interrupted!", 1, true) ~= nil
end

return error_mod
