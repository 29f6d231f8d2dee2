--- The removal guard shared by user syncs and group syncs: how many accounts (or groups) one
-- run may remove, so a truncated HR export cannot wipe a company.
-- @module scim.guard
local guard = {}

--- The default: at most this share of what the server has.
guard.DEFAULT = { percent = 10 }

--- Parses a limit: a count (`25`, `"25"`) or a share (`"10%"`).
-- @treturn table `{ count = n }` or `{ percent = p }` | nil, message
function guard.parse(v)
  if type(v) == "table" and (v.count or v.percent) then return v end
  local s = tostring(v)
  local p = s:match("^%s*(%d+%.?%d*)%s*%%%s*$")
  if p and tonumber(p) <= 100 then return { percent = tonumber(p) } end
  local n = math.tointeger(tonumber(s:match("^%s*(%d+)%s*$")))
  if n then return { count = n } end
  return nil, "expected a number or a percentage such as 10%, got '" .. s .. "'"
end

--- How many a run may remove out of `total`.
function guard.allowed(limit, total)
  limit = limit or guard.DEFAULT
  if limit.count then return limit.count end
  return math.floor(total * limit.percent / 100)
end

--- The limit as written: "25" or "10%".
function guard.describe(limit)
  limit = limit or guard.DEFAULT
  return limit.count and tostring(limit.count) or (limit.percent .. "%")
end

return guard
