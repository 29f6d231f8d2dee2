--- What happened to every row: the results CSV, the progress line, the plan of a dry run,
-- the summary, and `--log-format json` (one JSON object per row outcome).
-- @module scim.report
local cjson = require "cjson"
local json = require "scim.json"  -- encodes empty arrays as []

local report = {}

--- The results CSV's own columns; the input row's columns follow them, so failed rows can
-- be fed back as input (the jobs recognise this header and take only failed/skipped rows).
report.COLUMNS = { "line", "key", "action", "http_status", "scim_id", "error" }

--- Every action a row can end with, in the summary's order. Dry runs use the planned verbs
-- (create, update, delete, deactivate) instead of the past tense.
report.ACTIONS = {
  "create", "update", "delete", "deactivate", "upload",
  "created", "updated", "uploaded", "unchanged", "exists", "deleted", "deactivated", "not_found",
  "failed", "skipped", "exported",
}

local PLAN_VERBS = { create = true, update = true, delete = true, deactivate = true,
  upload = true }

local Report = {}
Report.__index = Report
Report.__name = "scim.report"

--- Whether a stream is a terminal, asked once per process per fd.
local tty_cache = {}
function report.isatty(fd)
  if tty_cache[fd] == nil then
    tty_cache[fd] = require("scim.core").sys.isatty(math.tointeger(fd))
  end
  return tty_cache[fd]
end

--- Creates a report.
-- @tparam table opts `job` (name), `total` (rows expected, for the progress line),
--   `path` (results CSV or nil), `input_columns` (the input header, copied after the report's
--   own columns), `quiet`, `verbose`, `log_format` ("text"|"json"), `dry_run`,
--   `stdout`/`stderr` (file handles), `log` (where JSON lines go; default stdout),
--   `progress` (boolean: draw the progress line; default: stderr is a terminal),
--   `color` (boolean: escape codes allowed; default: progress and NO_COLOR unset),
--   `getenv` (where NO_COLOR is read; default `os.getenv`), `clock` (function returning
--   seconds).
-- @treturn scim.report
-- @treturn[2] nil
-- @treturn[2] string message when the results file cannot be opened
function report.new(opts)
  local self = setmetatable({
    job = opts.job or "job",
    total = opts.total or 0,
    quiet = opts.quiet,
    verbose = opts.verbose,
    json = opts.log_format == "json",
    dry_run = opts.dry_run,
    stdout = opts.stdout or io.stdout,
    stderr = opts.stderr or io.stderr,
    clock = opts.clock or require("scim.core").monotime,
    counts = {},
    done = 0,
    failures = 0,
    planned = {},
    drawn = 0,
    last_draw = nil,
  }, Report)
  self.log = opts.log or self.stdout
  self.started = self.clock()
  local progress = opts.progress
  if progress == nil then progress = report.isatty(2) end
  self.progress_on = progress and not self.quiet and not self.json
  local color = opts.color
  if color == nil then
    color = progress and ((opts.getenv or os.getenv)("NO_COLOR") or "") == ""
  end
  self.color = color and true or false
  if opts.path then
    local ok, err = self:attach(opts.path, opts.input_columns)
    if not ok then return nil, err end
  end
  return self
end

--- Opens the results CSV at `path`: the report's columns, then the input's (`columns`).
-- @treturn true | nil, message
function Report:attach(path, columns)
  local csv = require "scim.csv"
  local header, taken = {}, {}
  for i, c in ipairs(report.COLUMNS) do header[i] = c; taken[c] = true end
  local copied = {}
  for _, c in ipairs(columns or {}) do
    -- An input column named like a report column can't be copied without ambiguity.
    if not taken[c:lower()] then
      taken[c:lower()] = true
      header[#header + 1] = c
      copied[#copied + 1] = c
    end
  end
  -- No formula guard: this file is meant to be read back by scim-agent unchanged.
  local w, err = csv.writer(path, { header = header, formula_guard = false })
  if not w then return nil, "cannot write the report: " .. tostring(err) end
  self.writer, self.copied = w, copied
  return true
end

--- Starts the progress line for `n` rows.
function Report:begin(n)
  self.total = n
  self:draw(true)
end

--- Sets how many rows are done (a job without per-row outcomes: export), and under which
-- action the summary counts them.
function Report:progress(n, action)
  self.done = n
  if action then self.counts[action] = n end
  self:draw(false)
end

--- Prints an error about one row that failed without an outcome of its own (export).
function Report:failure(msg)
  self.failures = self.failures + 1
  self:error(msg)
end

--- Erases the progress line (before a prompt).
function Report:clear()
  self:_erase()
end

--- A server- or file-supplied string made safe for a terminal: control characters and
-- escape sequences are shown escaped, never interpreted.
function report.safe(s)
  s = tostring(s)
  if not s:find("[%c\127]") then return s end
  return (s:gsub("[%c\127]", function(c) return string.format("\\x%02X", c:byte()) end))
end
Report.safe = report.safe

-- Writes a message line to stderr, first erasing the progress line if one is drawn.
function Report:_line(stream, text)
  self:_erase()
  stream:write(text, "\n")
  stream:flush()
end

function Report:_erase()
  if self.drawn > 0 then
    if self.color then
      self.stderr:write("\r\27[2K")
    else
      self.stderr:write("\r", string.rep(" ", self.drawn), "\r")
    end
    self.drawn = 0
  end
end

-- A message line as it may reach a terminal: line breaks and tabs kept, every other control
-- character (an escape sequence in a server's answer) shown escaped.
local function printable(msg)
  return (tostring(msg):gsub("[%z\1-\8\11-\31\127]", function(c)
    return string.format("\\x%02X", c:byte())
  end))
end

--- Prints an error (always, even with `--quiet`).
function Report:error(msg)
  local text = "scim-agent: " .. printable(msg)
  if self.color then text = "\27[31m" .. text .. "\27[0m" end
  self:_line(self.stderr, text)
end

--- Prints a warning (not with `--quiet`).
function Report:warn(msg)
  if self.quiet then return end
  self:_line(self.stderr, "scim-agent: warning: " .. printable(msg))
end

--- Prints an informational line (not with `--quiet`; in JSON mode it goes to stderr).
function Report:info(msg)
  if self.quiet then return end
  self:_line(self.stderr, printable(msg))
end

local function fmt_duration(s)
  s = math.max(0, math.floor(s + 0.5))
  if s >= 3600 then
    return string.format("%d:%02d:%02d", s // 3600, s % 3600 // 60, s % 60)
  end
  return string.format("%d:%02d", s // 60, s % 60)
end

--- Starts a phase of the job (e.g. "create", then "managers"): the progress line counts
-- its items, `n` in all.
function Report:phase(name, n)
  self.phase_name, self.phase_total, self.phase_done = name, n, 0
  self.phase_started = self.clock()
  self:draw(true)
end

--- One item of the current phase is finished.
function Report:step()
  self.phase_done = (self.phase_done or 0) + 1
  self:draw(false)
end

--- The progress text: done/total (of the current phase, if any), rate, ETA, failures.
function Report:progress_text()
  local label, done, total, since = self.job, self.done, self.total, self.started
  if self.phase_name then
    label, done, total, since = self.phase_name, self.phase_done, self.phase_total,
      self.phase_started
    if label ~= self.job then label = self.job .. ": " .. label end
  end
  local elapsed = self.clock() - since
  local rate = elapsed > 0 and done / elapsed or 0
  local parts = { total > 0 and string.format("%s %d/%d", label, done, total)
                  or string.format("%s %d", label, done) }
  if rate > 0 then
    parts[#parts + 1] = string.format("%.1f/s", rate)
    if total > done then
      parts[#parts + 1] = "ETA " .. fmt_duration((total - done) / rate)
    end
  end
  if self.failures > 0 then parts[#parts + 1] = self.failures .. " failed" end
  return table.concat(parts, "  ")
end

--- Redraws the progress line in place (terminal only; at most every 0.2 s unless forced).
function Report:draw(force)
  if not self.progress_on then return end
  local now = self.clock()
  if not force and self.last_draw and now - self.last_draw < 0.2 then return end
  self.last_draw = now
  local text = self:progress_text()
  self:_erase()
  self.stderr:write(text)
  self.stderr:flush()
  self.drawn = #text
end

local function json_value(v)
  if v == nil then return cjson.null end
  return v
end

local function show(v)
  if v == nil or v == cjson.null then return "(none)" end
  if type(v) == "table" then
    local ok, s = pcall(cjson.encode, v)
    return ok and s or tostring(v)
  end
  if type(v) == "string" then return (string.format("%q", v):gsub("\\\n", "\\n")) end
  return tostring(v)
end
report.show = show

--- Records the final outcome of one input row.
-- @tparam table o `line`, `key`, `action` (one of `report.ACTIONS`), `status` (HTTP status),
--   `id` (SCIM id), `error` (detail text), `changes` ({path=, old=, new=} list), `row` (the
--   input row, for the copied columns)
function Report:outcome(o)
  local action = o.action
  self.counts[action] = (self.counts[action] or 0) + 1
  self.done = self.done + 1
  if action == "failed" then self.failures = self.failures + 1 end
  if self.writer then
    local rec = {
      line = o.line and tostring(o.line) or "",
      key = o.key or "",
      action = action,
      http_status = o.status and tostring(o.status) or "",
      scim_id = o.id and tostring(o.id) or "",
      -- Escaped: a server's message must not carry control characters into a file that is
      -- read back as input (the reader refuses them).
      error = o.error and report.safe(tostring(o.error)) or "",
    }
    local row = o.row
    if row then
      for _, c in ipairs(self.copied) do
        local v = row[c]
        rec[c] = v ~= nil and tostring(v) or ""
      end
    else
      for _, c in ipairs(self.copied) do rec[c] = "" end
    end
    self.writer:write(rec)
  end
  if self.json then
    local changes = json.array()
    for i, c in ipairs(o.changes or {}) do
      changes[i] = { path = c.path, column = c.column, old = json_value(c.old),
                     new = json_value(c.new) }
    end
    self.log:write(assert(json.encode({
      job = self.job, line = json_value(o.line), key = json_value(o.key), action = action,
      status = json_value(o.status), id = json_value(o.id), error = json_value(o.error and
        tostring(o.error)), changes = changes, dry_run = self.dry_run and true or false,
    })), "\n")
    self.log:flush()
  elseif action == "failed" then
    self:error(string.format("line %s (%s): %s", tostring(o.line or "-"),
      report.safe(o.key or "-"), report.safe(o.error or "failed")))
  elseif self.verbose and not self.quiet then
    self:_line(self.stderr, string.format("line %s (%s): %s%s", tostring(o.line or "-"),
      report.safe(o.key or "-"), action, o.id and (" id " .. report.safe(o.id)) or ""))
  end
  if self.dry_run and not self.json and PLAN_VERBS[action] then
    self.planned[#self.planned + 1] = { line = o.line or 0, key = o.key, action = action,
                                        changes = o.changes }
  end
  self:draw(false)
end

--- Number of rows that failed so far.
function Report:failed()
  return self.failures
end

--- Prints a dry run's plan on stdout: counts per action, then each planned change with its
-- attributes' old → new values.
function Report:print_plan()
  if self.json then return end
  self:_erase()
  local out = self.stdout
  local parts = {}
  for _, a in ipairs(report.ACTIONS) do
    local n = self.counts[a]
    if n then
      parts[#parts + 1] = PLAN_VERBS[a] and (n .. " to " .. a) or (n .. " " .. a:gsub("_", " "))
    end
  end
  out:write("plan: ", #parts > 0 and table.concat(parts, ", ") or "nothing to do", "\n")
  -- File rows in line order, then the accounts absent from the file (no line).
  local function line_of(p) return (p.line and p.line > 0) and p.line or math.huge end
  table.sort(self.planned, function(a, b)
    if line_of(a) ~= line_of(b) then return line_of(a) < line_of(b) end
    return tostring(a.key) < tostring(b.key)
  end)
  for _, p in ipairs(self.planned) do
    out:write(string.format("  %-10s %s%s\n", p.action, report.safe(p.key),
      (p.line and p.line > 0) and ("  (line " .. p.line .. ")") or ""))
    for _, c in ipairs(p.changes or {}) do
      if c.sign then
        -- A member added (+) or removed (-): a groups plan.
        out:write(string.format("      %s %s\n", c.sign, report.safe(c.new or c.old)))
      else
        -- The column the admin edits reads better than a long attribute path.
        out:write(string.format("      %s: %s \u{2192} %s\n", report.safe(c.column or c.path),
          show(c.old), show(c.new)))
      end
    end
  end
  out:flush()
end

--- Prints the summary (counts per outcome, time, requests sent, retries) on stderr, or as
-- one JSON object with `--log-format json`.
-- @tparam[opt] table stats `requests`, `retries` (from the client's engine)
function Report:summary(stats)
  stats = stats or {}
  local elapsed = self.clock() - self.started
  self:_erase()
  if self.json then
    local counts = {}
    for k, v in pairs(self.counts) do counts[k] = v end
    self.log:write(assert(json.encode({ job = self.job, summary = {
      rows = self.done, counts = counts,
      seconds = elapsed, requests = stats.requests or 0, retries = stats.retries or 0,
      dry_run = self.dry_run and true or false,
    } })), "\n")
    self.log:flush()
    return
  end
  if self.quiet then return end
  local lines = { string.format("%s%s: %d row%s in %s", self.job,
    self.dry_run and " (dry run)" or "", self.done, self.done == 1 and "" or "s",
    fmt_duration(elapsed)) }
  for _, a in ipairs(report.ACTIONS) do
    local n = self.counts[a]
    if n then lines[#lines + 1] = string.format("  %-12s %8d", a, n) end
  end
  lines[#lines + 1] = string.format("  %-12s %8d", "requests", stats.requests or 0)
  lines[#lines + 1] = string.format("  %-12s %8d", "retries", stats.retries or 0)
  self:_line(self.stderr, table.concat(lines, "\n"))
end

--- Closes the results file (renamed into place only now).
-- @treturn true
-- @treturn[2] nil
-- @treturn[2] string message
function Report:close()
  self:_erase()
  local w = self.writer
  self.writer = nil
  if w then
    local ok, a, b = pcall(w.close, w)
    if not ok then return nil, tostring(a) end
    if a == nil and b ~= nil then return nil, tostring(b) end
  end
  return true
end

--- Drops the results file (the previous one, if any, stays).
function Report:abort()
  self:_erase()
  local w = self.writer
  self.writer = nil
  if w and w.abort then pcall(w.abort, w) end
end

Report.__close = Report.abort

return report
