--- Dates for mappings: strptime-like input formats, UTC epoch seconds, ISO 8601.
-- Our own civil-date arithmetic instead of os.time, which works in the local time zone
-- (the original sample's time.mktime did, so its start dates moved with the machine's TZ).
-- @module scim.mapping.date

local date = {}

local function days_from_civil(y, m, d)  -- H. Hinnant's algorithm, proleptic Gregorian
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m > 2 and m - 3 or m + 9) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local MONTH_DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8,
  sep = 9, oct = 10, nov = 11, dec = 12 }

--- Seconds since 1970-01-01T00:00:00Z of a UTC date and time, after range checks.
-- @treturn integer seconds
-- @treturn[2] nil
-- @treturn[2] string which part is out of range
function date.epoch_of(y, mo, d, h, mi, s)
  if mo < 1 or mo > 12 then return nil, "month " .. mo .. " is out of range" end
  local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
  local mdays = (mo == 2 and leap) and 29 or MONTH_DAYS[mo]
  if d < 1 or d > mdays then return nil, "day " .. d .. " is out of range" end
  if h > 23 or mi > 59 or s > 60 then return nil, "time of day is out of range" end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s
end

local DIRECTIVES = {
  Y = { "year", "([+-]?%d%d%d%d)" }, y = { "year2", "(%d%d)" }, m = { "month", "(%d%d?)" },
  d = { "day", "(%d%d?)" }, e = { "day", "%s*(%d%d?)" }, H = { "hour", "(%d%d?)" },
  M = { "min", "(%d%d?)" }, S = { "sec", "(%d%d?)" }, b = { "mon", "(%a%a%a)" },
}

--- Compiles a date format such as "%d/%m/%Y" into a matcher.
-- Directives: %Y %y %m %d %e %b %H %M %S and %%; any other character is literal.
-- @tparam string fmt
-- @treturn table the compiled format (`text` is fmt)
-- @treturn[2] nil
-- @treturn[2] string what is wrong with fmt
function date.compile_format(fmt)
  local pat, fields, seen = { "^" }, {}, {}
  local i, n = 1, #fmt
  while i <= n do
    local c = fmt:sub(i, i)
    if c == "%" then
      local dch = fmt:sub(i + 1, i + 1)
      if dch == "%" then
        pat[#pat + 1] = "%%"
      else
        local dir = DIRECTIVES[dch]
        if not dir then
          return nil, "unsupported directive '%" .. dch .. "' in date format '" .. fmt
            .. "' (use %Y %y %m %d %e %b %H %M %S)"
        end
        if seen[dir[1]] then return nil, "date format '" .. fmt .. "' repeats %" .. dch end
        seen[dir[1]] = true
        pat[#pat + 1] = dir[2]
        fields[#fields + 1] = dir[1]
      end
      i = i + 2
    else
      pat[#pat + 1] = c:match("%w") and c or ("%" .. c)
      i = i + 1
    end
  end
  if not (seen.year or seen.year2) or not (seen.month or seen.mon) or not seen.day then
    return nil, "date format '" .. fmt .. "' needs a year, a month and a day"
  end
  pat[#pat + 1] = "$"
  return { pattern = table.concat(pat), fields = fields, text = fmt }
end

--- Parses s in a compiled format, as UTC.
-- @treturn integer epoch seconds
-- @treturn[2] nil
-- @treturn[2] string|nil why, when s has the format's shape but an impossible date
function date.parse(df, s)
  local caps = { s:match(df.pattern) }
  if #caps == 0 then return nil end
  local v = { hour = 0, min = 0, sec = 0 }
  for k, name in ipairs(df.fields) do
    if name == "mon" then
      v.month = MONTHS[caps[k]:lower()]
      if not v.month then return nil, "no month '" .. caps[k] .. "'" end
    elseif name == "year2" then
      local yy = tonumber(caps[k])
      v.year = yy < 69 and 2000 + yy or 1900 + yy  -- the POSIX strptime pivot
    else
      v[name] = tonumber(caps[k])
    end
  end
  return date.epoch_of(v.year, v.month, v.day, v.hour, v.min, v.sec)
end

--- Formats epoch seconds in a compiled format (UTC).
-- @treturn string
function date.format(df, t)
  return os.date("!" .. df.text, t)
end

--- Parses an ISO 8601 date or date-time (RFC 7643 dateTime): "2024-05-01",
-- "2024-05-01T10:00:00Z", "2024-05-01T10:00:00.123+02:00".
-- @treturn integer|nil epoch seconds
function date.parse_iso(s)
  local y, mo, d, rest = s:match("^%s*([+-]?%d%d%d%d)%-(%d%d)%-(%d%d)(.-)%s*$")
  if not y then return nil end
  local h, mi, sec, zone = 0, 0, 0, ""
  if rest ~= "" then
    local hh, mm, tail = rest:match("^[Tt ](%d%d):(%d%d)(.*)$")
    if not hh then return nil end
    h, mi = tonumber(hh), tonumber(mm)
    local ss, tail2 = tail:match("^:(%d%d)(.*)$")
    if ss then sec, tail = tonumber(ss), tail2 end
    zone = tail:gsub("^[.,]%d+", "")  -- fractions of a second do not reach a cell
  end
  local t = date.epoch_of(tonumber(y), tonumber(mo), tonumber(d), h, mi, sec)
  if not t then return nil end
  if zone == "" or zone == "Z" or zone == "z" then return t end
  local sign, zh, zm = zone:match("^([+-])(%d%d):?(%d%d)$")
  if not sign then return nil end
  local off = tonumber(zh) * 3600 + tonumber(zm) * 60
  return sign == "+" and t - off or t + off
end

--- Epoch seconds of a SCIM value: a number, a string of digits, or an ISO date-time.
-- @treturn integer|nil
function date.epoch(v)
  if type(v) == "number" then return math.tointeger(v) or math.floor(v) end
  if type(v) == "string" then
    if v:match("^%s*[+-]?%d+%s*$") then return math.tointeger(tonumber(v)) end
    return date.parse_iso(v)
  end
  return nil
end

--- The RFC 7643 dateTime of epoch seconds: "2024-05-01T00:00:00Z".
-- @treturn string
function date.iso(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", t)
end

return date
