--- Streaming CSV reading and writing.
--
-- Reading is done in C (`scim.core`): the input is read in 256 KiB blocks and tokenized as
-- RFC 4180, so memory stays constant whatever the file size. It accepts what HR systems
-- export: a UTF-8 byte-order mark; `,` `;` tab or `|` delimiters (detected from the header
-- line unless given); LF, CRLF and CR-only line ends, mixed; quoted fields with doubled
-- quotes, delimiters and line breaks inside. Blank lines are skipped.
--
-- Rows are tables keyed by the header names as written (trimmed of spaces and tabs).
-- Lookups ignore ASCII case: each keyed row has a metatable whose `__index` finds
-- `row.email` when the header says `Email` (`pairs` shows the names as written). With
-- `opts.array` rows are arrays in column order.
--
-- Positions in messages are `source:line:column`: the source is the path, `<stdin>`,
-- `<file>`, `<string>` or `opts.name`; lines are physical lines (a record may span several);
-- columns count UTF-8 characters from 1.
--
-- Failures follow the project's conventions: `csv.open` and `reader:read()` return the fail
-- triple `nil, message, code`; the iterators raise the message.
-- @module scim.csv
local core = require "scim.core"

local csv = {}

local type, pairs, ipairs, tostring, error, setmetatable = type, pairs, ipairs, tostring,
  error, setmetatable
local io_type, remove, rename = io.type, os.remove, os.rename
local concat, random, mtype = table.concat, math.random, math.type

-- {====================================================== reading

local READ_OPTS = {
  delimiter = "string", header = "boolean", array = "boolean", columns = "table",
  strict = "boolean", check_utf8 = "boolean", check_control = "boolean",
  empty_is_nil = "boolean", name = "string", encoding = "string",
  max_field = "integer", max_row = "integer", max_fields = "integer",
}

-- Checks a reader's options (unknown keys are misuse) and returns the C option table.
local function read_options(opts, level)
  local c = {}
  if opts == nil then return c end
  if type(opts) ~= "table" then error("bad argument #2 (options table expected)", level) end
  for k, v in pairs(opts) do
    local want = READ_OPTS[k]
    if not want then error("unknown option '" .. tostring(k) .. "'", level) end
    local ok
    if want == "integer" then ok = mtype(v) == "integer" and v > 0
    else ok = type(v) == want end
    if not ok then error("option '" .. k .. "' must be " .. (want == "integer"
      and "a positive integer" or "a " .. want), level) end
    c[k] = v
  end
  if opts.delimiter and (#opts.delimiter ~= 1 or opts.delimiter:find('^["\r\n]')) then
    error("option 'delimiter' must be one character other than a quote, CR or LF", level)
  end
  if opts.columns then
    if opts.header == false then error("option 'columns' needs a header", level) end
    for i = 1, #opts.columns do  -- not ipairs: a hole must be reported, not skipped
      local name = opts.columns[i]
      if type(name) ~= "string" then
        error("option 'columns' must be a list of names (entry " .. i .. ")", level)
      end
    end
  end
  c.lenient = opts.strict == false
  c.strict = nil
  return c
end

--- Opens a CSV source for reading and reads its header line.
-- @param source a path, `"-"` for stdin, or an open Lua file (which stays open: the caller
--   owns it)
-- @tparam[opt] table opts
--   `delimiter` (one character; detected from the header line among `,` `;` tab `|` when
--   absent);
--   `header` (default true; false: no header line, rows are arrays, `reader.header` is nil);
--   `array` (rows as arrays in column order);
--   `columns` (list of header names, any case: only these fields become Lua strings; keyed
--   rows hold only them, arrays hold them in this order; names absent from the header read
--   as nil, see `reader:field_index`);
--   `strict` (default true; false reads a quote inside an unquoted field, or text after a
--   closing quote, as text);
--   `check_utf8` (default true; false accepts invalid UTF-8 and does not look for a UTF-16
--   or UTF-32 byte-order mark);
--   `check_control` (default true: a C0 control character, U+0000 to U+001F, in any value,
--   header included, is the error `CONTROL` naming its line and column; tab is always
--   accepted, CR and LF as line ends and inside quoted fields; false accepts them as data);
--   `empty_is_nil` (default false; true leaves unquoted empty fields out of rows, so only
--   a quoted `""` reads as an empty string);
--   `max_field` (bytes, default 1 MiB), `max_row` (bytes, default 16 MiB), `max_fields`
--   (default 16384);
--   `name` (the source name in messages);
--   `encoding` (the source's encoding: any name iconv knows, e.g. `utf-8`, `cp1252` or
--   `windows-1252`, `latin1` or `iso-8859-1`, `utf-16`, `utf-16le`, `utf-16be`, `utf-32`;
--   converted to UTF-8 in C as it is read. Absent: UTF-8, or UTF-16/UTF-32 when the file
--   starts with their byte-order mark. An unknown name fails with `UNKNOWN_ENCODING`; a byte
--   sequence invalid in the encoding fails with `ENCODING` at the line and column of the
--   character it would have been (they count characters, so they are the same in the
--   original file), with its byte offset in the file; a byte-order mark the given encoding
--   contradicts, e.g. UTF-16's with `utf-8` or any with `cp1252`, fails with `BOM`).
-- @treturn reader with `reader.header` (list of names), `reader.delimiter`, `reader.name`,
--   `reader.encoding` (the given one, or the one detected: `UTF-8`, `UTF-16LE`, ...),
--   `:rows()`, `:read()`, `:field_index(name)` and `:close()` (also to-be-closed)
-- @treturn[2] nil
-- @treturn[2] string message, e.g. `users.csv: No such file or directory`,
--   `users.csv:1: duplicate column name: ...`
-- @treturn[2] string code: `ENOENT`, `EACCES`, `EISDIR`, `OPEN_FAILED`, `UNKNOWN_ENCODING`,
--   `NO_HEADER`,
--   `EMPTY_HEADER`, `DUPLICATE_HEADER`, or a parse code: `QUOTE`, `AFTER_QUOTE`,
--   `UNTERMINATED`, `FIELD_TOO_LARGE`, `ROW_TOO_LARGE`, `TOO_MANY_FIELDS`, `FIELD_COUNT`,
--   `UTF8`, `CONTROL`, `ENCODING`, `BOM`, `IO`, `NOMEM`
-- @raise on bad arguments or options
-- @usage local r <close> = assert(csv.open("users.csv"))
-- for row, line in r:rows() do print(line, row.email) end
function csv.open(source, opts)
  local c = read_options(opts, 3)
  if source == "-" then return core.csv_open("stdin", source, c) end
  if type(source) == "string" then return core.csv_open("path", source, c) end
  local t = io_type(source)
  if t == "file" then return core.csv_open("file", source, c) end
  if t == "closed file" then error("bad argument #1 to 'open' (file is closed)", 2) end
  error("bad argument #1 to 'open' (path, \"-\" or file expected, got " .. type(source)
    .. ")", 2)
end

--- Reads CSV text held in a string, like `csv.open` (the source name is `<string>`).
-- @tparam string text
-- @tparam[opt] table opts as for `csv.open`
-- @treturn reader
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code
-- @raise on bad arguments or options
function csv.from_string(text, opts)
  if type(text) ~= "string" then
    error("bad argument #1 to 'from_string' (string expected, got " .. type(text) .. ")", 2)
  end
  return core.csv_open("string", text, read_options(opts, 3))
end

--- Iterates over the rows of a source in one line: `for row, line in csv.rows(path) do`.
-- The reader is closed when the loop ends, also by `break` or an error.
-- @param source as for `csv.open`
-- @tparam[opt] table opts as for `csv.open`
-- @return a generic-for iterator yielding `row, line` (line: where the record began)
-- @raise when the source cannot be opened or a line cannot be parsed
function csv.rows(source, opts)
  local r, err = csv.open(source, opts)
  if not r then error(err, 2) end
  local iter, state = r:rows()
  return iter, state, nil, r
end

-- }======================================================

-- {====================================================== writing

local Writer = { __name = "scim.csv.writer" }
Writer.__index = Writer

local WRITE_OPTS = {
  header = "table", crlf = "boolean", formula_guard = "boolean", delimiter = "string",
  name = "string", mode = "number", encoding = "string",
}

-- Whether an encoding name means UTF-8 (no conversion).
local function is_utf8(name)
  return name:lower():gsub("[^%w]", "") == "utf8"
end

-- The message for a line the converter refused at byte `at` (0-based): which field, which
-- character.
local function unconvertible(w, cells, n, line, at, kind)
  local i, pos = n, 0
  for k = 1, n do
    if at < pos + #cells[k] + #w.sep then i = k break end
    pos = pos + #cells[k] + #w.sep
  end
  local field = w.header and ("'" .. tostring(w.header[i]) .. "' (column " .. i .. ")")
    or ("column " .. i)
  local ok, cp = pcall(utf8.codepoint, line, at + 1)
  local what = ok and string.format("character U+%04X (%s) cannot be written in %s", cp,
      utf8.char(cp), w.encoding)
    or (kind == "incomplete" and "truncated" or "invalid") .. " UTF-8"
  return string.format("%s: %s, %s: %s", w.name,
    w.rows == 0 and w.header and "header" or "row " .. w.rows, field, what)
end

local PRIVATE = 384   -- 0600: output files are personal data

-- Creates the temporary file beside `target` for a writer: a fresh random name, created
-- exclusively (never a file or symlink already there) with the mode the target will have.
-- Returns file, temporary path | nil, message, code.
local function create_temp(target, mode)
  if not mode then   -- 0600, or the replaced file's mode where that is stricter
    local cur = core.csv_mode(target)
    mode = cur and cur & PRIVATE or PRIVATE
  end
  local f, err, code
  for _ = 1, 100 do   -- EEXIST: another name (collisions need an attacker or bad luck)
    local tmp = string.format("%s.tmp-%08x", target, random(0, 0x7fffffff))
    f, err, code = core.csv_create(tmp, mode)
    if f then return f, tmp end
    if code ~= "EEXIST" then break end
  end
  return nil, err:gsub("%.tmp%-%x+", ""), code
end

-- Whether a spreadsheet could take a string cell for a formula: it starts with tab or CR,
-- or its first character after any spaces, tabs, CRs and LFs is = + - or @.
local function formula_like(v)
  return v:find("^[\t\r]") ~= nil or v:find("^[ \t\r\n]*[=+%-@]") ~= nil
end

--- Undoes the writer's formula guard: a value written as `'` followed by a formula-like
-- value (see `csv.writer`'s `formula_guard`) reads back without the `'`; any other value is
-- returned as it is.
-- @param v a value read from a CSV file (non-strings are returned unchanged)
-- @return the value as it was before the guard
function csv.unguard(v)
  if type(v) == "string" and v:byte(1) == 39 and formula_like(v:sub(2)) then
    return v:sub(2)
  end
  return v
end

-- A cell as text: spreadsheet formula guard, then minimal RFC 4180 quoting.
local function cell(w, v, i)
  local t = type(v)
  if t == "string" then
    if w.guard and formula_like(v) then v = "'" .. v end
  elseif t == "nil" then
    return ""
  elseif t == "number" or t == "boolean" then
    return tostring(v)   -- numbers are data, never formulas: no guard
  else
    error("cannot write a " .. t .. " in field " .. tostring(i), 3)
  end
  if v:find(w.special) then return '"' .. v:gsub('"', '""') .. '"' end
  return v
end

local function errcode(errno)
  return errno and core.csv_errno_name(errno) or "IO"
end

local function write_line(w, cells, n)
  if n == 1 and cells[1] == "" then cells[1] = '""' end  -- else it reads back as blank
  local line = concat(cells, w.sep, 1, n) .. w.eol
  if w.conv then   -- nothing of a row that cannot be converted is written
    local out, at, kind = w.conv:convert(line)
    if not out then return nil, unconvertible(w, cells, n, line, at, kind), "ENCODING" end
    line = out
  end
  local ok, err, errno = w.f:write(line)
  if not ok then
    w.failed, w.failed_code = w.name .. ": " .. tostring(err), errcode(errno)
    return nil, w.failed, w.failed_code
  end
  return true
end

--- Opens a CSV writer. Writing to a path goes to a temporary file in the same directory,
-- renamed over the target only by a successful `close`, so a failed run never destroys a
-- previous good file. The temporary file gets a random name and is created exclusively
-- (`O_CREAT|O_EXCL|O_NOFOLLOW`: a file or symlink already there is never opened), with mode
-- 0600, or the replaced target's mode where that has fewer bits (0400 stays 0400), before
-- the umask; it is removed on every path that does not rename it (`abort`, a failed `close`,
-- a raising to-be-closed block, a writer collected unclosed).
-- @param target a path, `"-"` for stdout, or an open Lua file (left open: the caller owns it)
-- @tparam[opt] table opts
--   `header` (list of column names: written first, and the order of keyed rows);
--   `crlf` (default false: LF line ends);
--   `formula_guard` (default true: string cells starting with tab or CR, or whose first
--   character after leading spaces, tabs, CRs and LFs is `=` `+` `-` or `@`, get a leading
--   `'` so spreadsheets do not run them; numbers are never changed; `csv.unguard` undoes
--   it; false writes every value as it is);
--   `delimiter` (default `,`);
--   `name` (the target name in messages);
--   `mode` (an integer such as `tonumber("644", 8)`: the new file's permission bits instead
--   of the private default; the umask still applies);
--   `encoding` (default UTF-8; any name iconv knows, e.g. `cp1252`, `latin1`, `utf-16`: the
--   output is converted to it; a value it cannot represent fails that `write` with the code
--   `ENCODING`, naming the row and field, and nothing of the row is written; an unknown name
--   fails the open with `UNKNOWN_ENCODING`)
-- @treturn writer with `:write(row)`, `:close()`, `:abort()` (also to-be-closed: closed on
--   normal exit, aborted when the block raises)
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code (`ENOENT`, `EACCES`, ..., `OPEN_FAILED`)
-- @raise on bad arguments or options
-- @usage local w <close> = assert(csv.writer("out.csv", { header = { "email", "name" } }))
-- w:write{ email = "a@example.com", name = "Ann" }
function csv.writer(target, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #2 to 'writer' (table expected)", 2) end
  for k, v in pairs(opts) do
    if not WRITE_OPTS[k] then error("unknown option '" .. tostring(k) .. "'", 2) end
    if type(v) ~= WRITE_OPTS[k] then
      error("option '" .. k .. "' must be a " .. WRITE_OPTS[k], 2)
    end
  end
  local sep = opts.delimiter or ","
  if opts.mode and (mtype(opts.mode) ~= "integer" or opts.mode < 0 or opts.mode > 511) then
    error("option 'mode' must be an integer from 0 to 0777 (511)", 2)
  end
  if #sep ~= 1 or sep:find('^["\r\n]') then
    error("option 'delimiter' must be one character other than a quote, CR or LF", 2)
  end
  local w = {
    sep = sep, eol = opts.crlf and "\r\n" or "\n", guard = opts.formula_guard ~= false,
    special = "[\"\r\n" .. (sep:find("%w") and sep or "%" .. sep) .. "]",
    header = opts.header, rows = 0,
  }
  if opts.encoding and not is_utf8(opts.encoding) then
    w.conv, w.encoding = core.csv_converter(opts.encoding, "UTF-8"), opts.encoding
    if not w.conv then
      return nil, "unknown encoding '" .. opts.encoding .. "' (iconv does not know it; e.g."
        .. " utf-8, cp1252, latin1, utf-16)", "UNKNOWN_ENCODING"
    end
  end
  if opts.header then
    for i, name in ipairs(opts.header) do
      if type(name) ~= "string" then
        error("option 'header' must be a list of names (entry " .. i .. ")", 2)
      end
    end
  end
  if target == "-" then
    w.f, w.name = io.stdout, opts.name or "<stdout>"
  elseif type(target) == "string" then
    w.path, w.name = target, opts.name or target
    local f, tmp, code = create_temp(target, opts.mode)
    if not f then return nil, tmp, code end
    w.f, w.tmp = f, tmp
  else
    local t = io_type(target)
    if t ~= "file" then
      error("bad argument #1 to 'writer' (path, \"-\" or open file expected)", 2)
    end
    w.f, w.name = target, opts.name or "<file>"
  end
  setmetatable(w, Writer)
  if opts.header then
    local cells = {}
    for i, name in ipairs(opts.header) do cells[i] = cell(w, name, i) end
    local ok, err, code = write_line(w, cells, #opts.header)
    if not ok then w:abort() return nil, err, code end
  end
  return w
end

--- Writes one row.
-- @tparam table row an array of values in column order, or (with `opts.header`) a table
--   keyed by the header names; values are strings, numbers, booleans or nil (empty)
-- @treturn true
-- @treturn[2] nil
-- @treturn[2] string message (the write failed: the writer is then failed and `close`
--   removes the temporary file)
-- @treturn[2] string code
-- @raise on a closed writer or a value that is not text
function Writer:write(row)
  if self.closed then error("attempt to use a closed scim.csv.writer", 2) end
  if type(row) ~= "table" then error("bad argument #1 to 'write' (table expected)", 2) end
  if self.failed then return nil, self.failed, self.failed_code end
  local cells, n = {}
  local h = self.header
  if h and row[1] == nil then
    n = #h
    for i = 1, n do cells[i] = cell(self, row[h[i]], h[i]) end
  else
    n = #row
    for i = 1, n do cells[i] = cell(self, row[i], i) end
  end
  self.rows = self.rows + 1
  return write_line(self, cells, n)
end

--- Aborts: closes and removes the temporary file (the target is untouched). Idempotent.
function Writer:abort()
  if self.closed then return end
  self.closed = true
  if self.tmp then
    if io_type(self.f) == "file" then self.f:close() end
    remove(self.tmp)
  end
end

--- Finishes: flushes, and for a path renames the temporary file over the target.
-- @treturn true
-- @treturn[2] nil
-- @treturn[2] string message (a write, the flush or the rename failed; the temporary file is
--   removed and the target left as it was)
-- @treturn[2] string code
function Writer:close()
  if self.closed then return true end
  if self.failed then
    self:abort()
    return nil, self.failed, self.failed_code
  end
  local ok, err, errno
  local tail = self.conv and self.conv:convert()   -- a stateful encoding's reset
  if tail and tail ~= "" then
    ok, err, errno = self.f:write(tail)
    if not ok then
      self.failed, self.failed_code = self.name .. ": " .. tostring(err), errcode(errno)
      return self:close()
    end
  end
  if self.tmp then
    ok, err, errno = self.f:close()
    if ok then ok, err, errno = rename(self.tmp, self.path) end
    if not ok then
      remove(self.tmp)
      self.closed = true
      return nil, self.name .. ": " .. tostring(err), errcode(errno)
    end
  else
    ok, err, errno = self.f:flush()
    if not ok then
      self.closed = true
      return nil, self.name .. ": " .. tostring(err), errcode(errno)
    end
  end
  self.closed = true
  return true
end

-- to-be-closed: close on normal exit (raising if that fails), abort when the block raised.
function Writer:__close(err)
  if err ~= nil then return self:abort() end
  local ok, msg = self:close()
  if not ok then error(msg, 0) end
end

-- Collected without close: abort, so an unfinished file never replaces the target.
function Writer:__gc()
  if not self.closed then pcall(self.abort, self) end
end

function Writer:__tostring()
  return "scim.csv.writer (" .. self.name .. (self.closed and ", closed" or "") .. ")"
end

-- }======================================================

return csv
