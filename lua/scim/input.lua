--- Reading and validating a plan's input: every row of a CSV file (or of any iterator or
-- array of keyed rows) is checked against the mapping before anything is sent. Problems are
-- collected (each naming its file and line), never raised one at a time.
--
-- An entry keeps only what the later phases need: its line, key, the row's values in column
-- order (an array is smaller than a keyed table) and the references it makes. The resource is
-- checked now and built again when it is sent: resources are three times the size of their
-- rows, and a large file must not hold them all.
-- @module scim.input
local err_mod = require "scim.error"
local csv = require "scim.csv"
local report_columns = { "line", "key", "action", "http_status", "scim_id", "error" }

local input = {}

-- Collect at most this many problems; one more line says how many were left.
input.MAX_PROBLEMS = 200

--- The report columns a results CSV of ours starts with (its rows can be fed back).
input.REPORT_COLUMNS = report_columns

local function is_report_header(header)
  for i, c in ipairs(report_columns) do
    if type(header[i]) ~= "string" or header[i]:lower() ~= c then return false end
  end
  return true
end

-- Report rows that a rerun takes again: what failed or was skipped, and created accounts
-- whose manager could not be set yet.
local function rerun_wanted(row)
  local action = row.action
  if action == "failed" or action == "skipped" then return true end
  return action == "created" and (row.error or ""):find("not set", 1, true) ~= nil
end

--- Opens a row source: a path (read here, every parse problem collected), a csv reader, an
-- iterator yielding `row, line` (e.g. `scim.csv.rows(path)`) or an array of keyed rows.
-- A path is read as arrays in column order unless `keyed`.
-- @treturn table a reader (`read() -> row, line | nil, problem, code | nil`, `close()`)
-- @treturn table|nil the header (nil: taken from the first row's names)
-- @treturn string the source's name for messages
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code
function input.open_source(rows, opts, keyed)
  if type(rows) == "string" then
    local ropts = { array = not keyed }
    for k, v in pairs(opts.csv or {}) do ropts[k] = v end
    local reader, err, code = csv.open(rows, ropts)
    if not reader then return nil, err, code end
    return reader, reader.header, rows
  end
  if type(rows) == "table" and rows.read and rows.header then
    return rows, rows.header, rows.name
  end
  local next_row
  if type(rows) == "function" then
    local done = false
    next_row = function()
      if done then return nil end
      local ok, row, line = pcall(rows)
      if not ok then done = true; return nil, tostring(row), "PARSE" end
      if row == nil then done = true end
      return row, line
    end
  elseif type(rows) == "table" then
    local i = 0
    next_row = function()
      i = i + 1
      local row = rows[i]
      if row == nil then return nil end
      local line = type(row) == "table" and (row._line or i + 1)
      return row, line
    end
  else
    error("scim.plan: 'rows' must be a path, a csv reader, an iterator or an array", 3)
  end
  return { read = next_row, close = function() end }, nil, opts.source or "rows"
end

-- The names of a keyed row, as written, in a stable order.
local function names_of(row)
  local names = {}
  for k in pairs(row) do
    if type(k) == "string" then names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

--- Whether a row passes a selection (`where`: `{ {column=, op="="|"!=", value=} }`; column
-- names compare without case, values too).
function input.selected(where, row)
  for _, w in ipairs(where) do
    local v = row[w.column]
    if v == nil then
      local lc = w.column:lower()
      for k, x in pairs(row) do
        if type(k) == "string" and k:lower() == lc then v = x break end
      end
    end
    local equal = tostring(v or ""):lower() == w.value:lower()
    if (w.op == "=") ~= equal then return false end
  end
  return true
end

-- Whether a row valid for `first` may still be invalid for `second`: only when some entry
-- applies to (or is required by) the second job alone. Usually not, and a large file's
-- second check per row is skipped.
local function second_check_needed(m, first, second)
  if first == second then return false end
  local util = require "scim.mapping.util"
  for _, en in ipairs(m.entries) do
    if util.job_allows(en, second) and not util.job_allows(en, first) then return true end
    if util.is_required(en, second) and not util.is_required(en, first) then return true end
  end
  return false
end

--- Reads and checks every row.
-- @tparam table opts `rows` (path, csv reader, iterator or array of keyed rows), `mapping`,
--   `job` ("create", "update", "delete" or "sync"), `upsert` (create: existing accounts are
--   updated), `unknown_columns` ("error" or "ignore", default: the mapping's setting),
--   `where` (list of `{ column=, op="="|"!=", value= }`), `limit` (the first N selected rows),
--   `csv` (options for the CSV reader when `rows` is a path), `on_warning(msg)`
-- @treturn table `{ n=, keys=, lines=, packed=, refs=, by_key= (lowercased key -> index),
--   bound=, columns=, outside_refs=, selected=, rows=, source=, create_job=, update_job= }`:
--   row `i` has key `keys[i]`, line `lines[i]`, references `refs[i]` (nil when none) and
--   values `input.values(inp, i)`; `bound` is the mapping bound to `columns`
-- @treturn[2] nil
-- @treturn[2] scim.error code "INVALID" with `problems` (strings) and `total`
-- @treturn[2] string code
function input.read(opts)
  local m, job = opts.mapping, opts.job
  local source, header, name = input.open_source(opts.rows, opts)
  if not source then
    -- A file that cannot be read is invalid input too: nothing is sent.
    return err_mod.fail(header, "INVALID", { cause_code = name })
  end
  name = name or "rows"
  local problems, total = {}, 0
  local function problem(msg)
    total = total + 1
    if #problems < input.MAX_PROBLEMS then problems[#problems + 1] = msg end
  end
  local function warn(msg)
    if opts.on_warning then opts.on_warning(msg) end
  end
  local create_job = job == "update" and "update" or "create"
  local update_job = (job == "sync" and "sync") or ((job == "update" or opts.upsert) and "update")
    or "create"
  -- Rows are kept as parallel arrays, each row's values packed into one string: a large
  -- file costs a few hundred bytes a row, not a table per row and per value.
  local keys, lines, packed, refs_of, by_key, refs_needed = {}, {}, {}, {}, {}, {}
  local n, fmt, bound = 0, nil, nil
  local columns, from_report, ncols, offset
  local where, limit = {}, opts.limit
  local second = second_check_needed(m, create_job, update_job)
  local n_selected, n_rows = 0, 0

  local function start(hdr)
    from_report = is_report_header(hdr)
    offset = from_report and #report_columns or 0
    columns = table.move(hdr, offset + 1, #hdr, 1, {})
    ncols = #columns
    fmt = ("s4"):rep(ncols)
    bound = m:bind(columns, job, { unknown_columns = opts.unknown_columns })
    if not bound.ok then
      for _, msg in ipairs(bound.problems) do problem(name .. ": " .. msg) end
    else
      for _, msg in ipairs(bound.warnings or {}) do warn(name .. ": " .. tostring(msg)) end
    end
    -- Each selection's column, found once (names compare without case).
    for _, w in ipairs(opts.where or {}) do
      local at
      for i, c in ipairs(columns) do
        if tostring(c):lower() == w.column:lower() then at = i break end
      end
      if not at then problem(string.format("%s: no column '%s' to select rows by", name,
        w.column)) end
      where[#where + 1] = { at = at, op = w.op, value = w.value:lower() }
    end
  end
  if header then start(header) end

  local function take(arr, line)
    n_rows = n_rows + 1
    -- A results CSV of ours: take what failed, was skipped, or lacks its manager.
    if from_report and not rerun_wanted{ action = arr[3], error = arr[6] } then return end
    local values = {}
    for i = 1, ncols do values[i] = csv.unguard(arr[offset + i]) or "" end
    for _, w in ipairs(where) do
      if (w.op == "=") ~= ((values[w.at or 0] or ""):lower() == w.value) then return end
    end
    if limit and n_selected >= limit then return end
    n_selected = n_selected + 1
    local key, res, refs = bound:read(values, line, create_job)
    if key == nil then
      return problem(string.format("%s:%s: %s", name, tostring(line),
        (tostring(res or "the key is empty"):gsub("^line %d+, ", ""))))
    end
    if res and second and job ~= "delete" then
      local rerr
      res, rerr = bound:to_resource(values, line, update_job)
      if not res then refs = rerr end
    end
    local lkey = m:key_id(key)
    local first = by_key[lkey]
    if first then
      return problem(string.format("%s:%s: %s '%s' already on line %s", name, tostring(line),
        m.key_attribute, key, tostring(lines[first])))
    end
    n = n + 1
    by_key[lkey], keys[n], lines[n] = n, key, line
    packed[n] = string.pack(fmt, table.unpack(values, 1, ncols))
    if job == "delete" then return end
    if not res then
      return problem(string.format("%s:%s: %s", name, tostring(line),
        (tostring(refs):gsub("^line %d+, ", ""))))
    end
    if next(refs) then
      refs_of[n] = refs
      for _, ref in pairs(refs) do
        local lref = m:key_id(ref)
        refs_needed[lref] = refs_needed[lref] or ref
      end
    end
  end

  local last_error
  while true do
    local row, line, code = source:read()
    if row == nil then
      if line == nil then break end       -- end of input
      -- A parse error names file:line:col. After a row with the wrong number of fields the
      -- reader goes on; after anything else (or the same error again) it can't.
      if line == last_error then break end
      last_error = line
      problem(tostring(line))
      if code ~= "FIELD_COUNT" then break end
    else
      if not columns then start(names_of(row)) end
      if row[1] == nil and next(row) ~= nil then
        -- A keyed row (from a script): its values in column order.
        local arr = {}
        for i, c in ipairs(from_report and report_columns or {}) do arr[i] = row[c] end
        for i, c in ipairs(columns) do arr[offset + i] = row[c] end
        row = arr
      end
      take(row, line)
    end
  end
  source:close()
  if total > 0 then
    local msg = string.format("%s: %d problem%s; nothing was sent", name, total,
      total == 1 and "" or "s")
    return err_mod.fail(msg, "INVALID", { problems = problems, total = total })
  end
  -- References to people outside the file are looked up on the server later.
  local outside = {}
  for lref, ref in pairs(refs_needed) do
    if not by_key[lref] then outside[#outside + 1] = ref end
  end
  table.sort(outside)
  return {
    n = n, keys = keys, lines = lines, packed = packed, refs = refs_of, by_key = by_key,
    referenced = refs_needed,
    fmt = fmt, bound = bound, columns = columns or {}, outside_refs = outside,
    selected = n_selected, rows = n_rows, source = name, from_report = from_report,
    create_job = create_job, update_job = update_job,
  }
end

--- The values of row `i` in column order.
-- @tparam table inp what `input.read` returned
-- @tparam integer i
-- @treturn table
function input.values(inp, i)
  local v = { string.unpack(inp.fmt, inp.packed[i]) }
  v[#v] = nil  -- string.unpack's last result is the next position
  return v
end

--- Parses a row selection `COLUMN=VALUE` or `COLUMN!=VALUE`.
-- @tparam string text
-- @treturn table `{ column=, op=, value= }`
-- @treturn[2] nil
-- @treturn[2] string what is wrong
function input.parse_where(text)
  local column, op, value = tostring(text):match("^%s*(.-)%s*(!?=)(.*)$")
  if not column or column == "" then
    return nil, "expected COLUMN=VALUE or COLUMN!=VALUE, got '" .. tostring(text) .. "'"
  end
  return { column = column, op = op, value = value }
end

return input
