-- scim.csv: the streaming reader (C tokenizer + binding) and the writer.
local csv = require "scim.csv"

local FIX = "tests/fixtures/csv/"
local BLOCK = 256 * 1024   -- the binding's read size (lcsv.c BLOCK)

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- All rows of a string as arrays, with their lines.
local function parse(text, opts)
  opts = opts or {}
  local o = { header = false }
  for k, v in pairs(opts) do o[k] = v end
  local r <close> = assert(csv.from_string(text, o))
  local rows, lines = {}, {}
  for row, line in r:rows() do
    rows[#rows + 1] = row
    lines[#lines + 1] = line
  end
  return rows, lines
end

-- The error a full read of `text` raises (header mode unless opts say otherwise).
local function parse_error(text, opts)
  local ok, err = pcall(function()
    local r <close> = assert(csv.from_string(text, opts))
    for _ in r:rows() do end
  end)
  assert.is_false(ok)
  return err
end

-- Files in a directory, for checking that no temporary file is left behind.
local function listdir(dir)
  local p = assert(io.popen("ls -A '" .. dir .. "'"))
  local t = {}
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  return t
end

-- Open descriptors of this process (the shell's parent).
local function open_fds()
  local d = assert(io.popen("ls /proc/$PPID/fd"))
  local n = 0
  for _ in d:lines() do n = n + 1 end
  d:close()
  return n
end

describe("scim.csv reader", function()
  after_each(function()
    collectgarbage()
    collectgarbage()
  end)

  describe("RFC 4180", function()
    it("reads quoted fields, doubled quotes, delimiters and line breaks inside quotes", function()
      local rows, lines = parse('a,"b,c","say ""hi""","x\ny\r\nz"\n1,2,3,4\n')
      assert.same({ { "a", "b,c", 'say "hi"', "x\ny\r\nz" }, { "1", "2", "3", "4" } }, rows)
      assert.same({ 1, 4 }, lines)
    end)

    it("keeps empty fields, quoted and unquoted", function()
      assert.same({ { "", "", "" }, { "a", "", "" } }, parse(',"",\na,,""\n'))
    end)

    it("reads a last record without a line break", function()
      assert.same({ { "a", "b" }, { "c", "d" } }, parse("a,b\nc,d"))
      assert.same({ { "a", "b" }, { "c", "d" } }, parse('a,b\r\nc,"d"'))
    end)

    it("skips blank lines but not a quoted empty record", function()
      local rows, lines = parse('\n\na\n\r\n\r\n""\n\nb\n\n')
      assert.same({ { "a" }, { "" }, { "b" } }, rows)
      assert.same({ 3, 6, 8 }, lines)
    end)
  end)

  describe("line ends", function()
    it("accepts LF, CRLF and CR-only, mixed in one file", function()
      local rows, lines = parse("a\nb\r\nc\rd\r\ne")
      assert.same({ { "a" }, { "b" }, { "c" }, { "d" }, { "e" } }, rows)
      assert.same({ 1, 2, 3, 4, 5 }, lines)
    end)

    it("reads the original sample's CR-only upload.csv", function()
      local r <close> = assert(csv.open(FIX .. "upload_cr.csv"))
      assert.equal(9, #r.header)
      local got = {}
      for row, line in r:rows() do got[#got + 1] = { row.email, row["job title"], line } end
      assert.same({ { "jane@example.com", "Engineer", 2 },
                    { "john@example.com", "Manager, Sales", 3 },
                    { "boss@example.com", "CEO", 4 } }, got)
    end)

    it("reads a file mixing all three with a CRLF inside quotes", function()
      local rows = {}
      for row, line in csv.rows(FIX .. "mixed_endings.csv") do rows[#rows + 1] = { row, line } end
      assert.equal(3, #rows)
      assert.equal("Cy\r\nLine 2", rows[3][1]["first name"])
      assert.same({ 2, 3, 4 }, { rows[1][2], rows[2][2], rows[3][2] })
    end)

    -- The binding reads 256 KiB blocks: put a CR LF pair across that boundary (every split
    -- point of every case is covered by the C test, tests/csv_test.c).
    for _, source in ipairs({ "string", "file" }) do
      it("treats a CR LF pair split across read blocks as one line end (" .. source .. ")",
        function()
          local head = "h1,h2\r\n"
          local filler = string.rep("x", BLOCK - #head - 2 - 1)
          local text = head .. "1," .. filler .. "\r\n2,b\r\n3,c\r\n"
          assert.equal("\r", text:sub(BLOCK, BLOCK))
          assert.equal("\n", text:sub(BLOCK + 1, BLOCK + 1))
          local r
          if source == "string" then
            r = assert(csv.from_string(text))
          else
            local path = tmpname()
            write_file(path, text)
            r = assert(csv.open(path))
            os.remove(path)
          end
          local got = {}
          for row, line in r:rows() do got[#got + 1] = { row.h1, #row.h2, line } end
          r:close()
          assert.same({ { "1", #filler, 2 }, { "2", 1, 3 }, { "3", 1, 4 } }, got)
        end)
    end
  end)

  describe("encoding and delimiters", function()
    it("skips a UTF-8 byte-order mark and detects ';' from the header", function()
      local r <close> = assert(csv.open(FIX .. "hr_bom_semicolon.csv"))
      assert.equal(";", r.delimiter)
      assert.same({ "Email", "First Name", "Last Name", "Notes" }, r.header)
      local a = assert(r:read())
      assert.equal("Zoë", a["First Name"])
      assert.equal('likes "quotes"; and\r\nline breaks', a.notes)
      local b, line = assert(r:read())
      assert.equal("王", b["first name"])
      assert.equal("", b.Notes)
      assert.equal(5, line)
      assert.is_nil(r:read())
    end)

    it("detects tab and pipe", function()
      local r <close> = assert(csv.open(FIX .. "tab.tsv"))
      assert.equal("\t", r.delimiter)
      local rows = {}
      for row in r:rows() do rows[#rows + 1] = row["last name"] end
      assert.same({ "Aa", "B\tb" }, rows)
      local p <close> = assert(csv.open(FIX .. "pipe.csv"))
      assert.equal("|", p.delimiter)
      assert.same({ "email", "first name" }, p.header)
    end)

    it("uses a given delimiter instead of detecting", function()
      assert.same({ { "a;b", "c" } }, parse("a;b,c\n", { delimiter = "," }))
      assert.same({ { "a", "b,c" } }, parse("a;b,c\n", { delimiter = ";" }))
    end)

    it("rejects invalid UTF-8 with line and column, or accepts it by option", function()
      local err = parse_error("name,x\nZoë,\xC3(\n", { name = "u.csv" })
      assert.equal("u.csv:2:5: invalid UTF-8 (check_utf8 = false accepts it)", err)
      local rows = parse("\xFF,\xC3\n", { check_utf8 = false })
      assert.same({ { "\xFF", "\xC3" } }, rows)
    end)

    it("rejects C0 control characters in any value with line, column and code", function()
      local r <close> = assert(csv.from_string("email,name\na@x,ok\nb@x\0,Bob\n",
        { name = "c.csv" }))
      assert.same({ email = "a@x", name = "ok" }, r:read())
      local ok, err, code = r:read()
      assert.is_nil(ok)
      assert.equal("c.csv:3:4: control character U+0000 (NUL) in a value"
        .. " (check_control = false accepts it)", err)
      assert.equal("CONTROL", code)
      -- in the header, inside quotes on a later line, an escape sequence
      local _, herr, hcode = csv.from_string("id,na\x01me\n1,2\n", { name = "h.csv" })
      assert.equal("h.csv:1:6: control character U+0001 (SOH) in a value"
        .. " (check_control = false accepts it)", herr)
      assert.equal("CONTROL", hcode)
      assert.matches("^<string>:3:2: control character U%+001B %(ESC%)",
        parse_error('a,b\n1,"x\ny\x1B[31m"\n'))
    end)

    it("accepts tab, CR and LF where RFC 4180 does, and controls by option", function()
      assert.same({ { "a\tb", "c\r\nd" }, { "\te\t", "f" } },
        parse('a\tb,"c\r\nd"\r\n\te\t,f\n', { delimiter = "," }))
      assert.same({ { "a\0", "\27[1m" } }, parse("a\0,\27[1m\n", { check_control = false }))
    end)

    it("names a byte-order mark that contradicts the given encoding", function()
      local _, err, code = csv.from_string("\xFF\xFEe\0m\0\n\0",
        { name = "w.csv", encoding = "utf-8" })
      assert.equal("w.csv:1:1: the file starts with a UTF-16LE byte-order mark, but encoding"
        .. " 'utf-8' was given (leave the encoding out to read it as UTF-16LE)", err)
      assert.equal("BOM", code)
      local _, e2, c2 = csv.from_string("\xEF\xBB\xBFname\n", { encoding = "cp1252" })
      assert.matches("starts with a UTF%-8 byte%-order mark, but encoding 'cp1252'", e2)
      assert.equal("BOM", c2)
    end)
  end)

  describe("encodings", function()
    local function utf16le(s)
      local out = {}
      for _, cp in utf8.codes(s) do
        if cp >= 0x10000 then
          cp = cp - 0x10000
          out[#out + 1] = string.pack("<I2I2", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF))
        else
          out[#out + 1] = string.pack("<I2", cp)
        end
      end
      return table.concat(out)
    end
    local function swap(s) return (s:gsub("(.)(.)", "%2%1")) end

    it("reads a Windows-1252 file given its encoding", function()
      local path = tmpname()
      write_file(path, "Email,Last Name,Note\r\nm@x,M\xFCller,\x93caf\xE9\x94 \x80\r\n")
      for _, name in ipairs({ "cp1252", "windows-1252", "WINDOWS-1252" }) do
        local r <close> = assert(csv.open(path, { encoding = name }))
        assert.equal(name, r.encoding)
        local row = r:read()
        assert.equal("Müller", row["last name"])
        assert.equal("“café” €", row.note)
      end
      local r <close> = assert(csv.open(path, { encoding = "latin1" }))
      assert.equal("Müller", r:read()["last name"])
      -- the same file read as UTF-8 fails where the first non-UTF-8 byte is
      local r8 <close> = assert(csv.open(path))
      local _, err, code = r8:read()
      assert.equal(path .. ":2:6: invalid UTF-8 (check_utf8 = false accepts it)", err)
      assert.equal("UTF8", code)
      os.remove(path)
    end)

    it("detects UTF-16LE, UTF-16BE and UTF-32 from the byte-order mark", function()
      local text = "email,name\r\nz@x,\"Zoë\n😀\"\r\nw@x,王\r\n"
      local want = { { email = "z@x", name = "Zoë\n😀" }, { email = "w@x", name = "王" } }
      local function rows_of(data, opts)
        local r <close> = assert(csv.from_string(data, opts))
        local rows, lines = {}, {}
        for row, line in r:rows() do
          rows[#rows + 1] = { email = row.email, name = row.name }
          lines[#lines + 1] = line
        end
        return rows, lines, r.encoding
      end
      local le = utf16le(text)
      local rows, lines, enc = rows_of("\xFF\xFE" .. le)
      assert.same(want, rows)
      assert.same({ 2, 4 }, lines)
      assert.equal("UTF-16LE", enc)
      rows, lines, enc = rows_of("\xFE\xFF" .. swap(le))
      assert.same(want, rows)
      assert.same({ 2, 4 }, lines)
      assert.equal("UTF-16BE", enc)
      assert.same(want, (rows_of(swap(le), { encoding = "utf-16be" })))
      assert.same(want, (rows_of(le, { encoding = "UTF-16LE" })))
      assert.same(want, (rows_of("\xFF\xFE" .. le, { encoding = "utf-16" })))
      local u32 = { "\xFF\xFE\0\0" }
      for _, cp in utf8.codes(text) do u32[#u32 + 1] = string.pack("<I4", cp) end
      rows, lines, enc = rows_of(table.concat(u32))
      assert.same(want, rows)
      assert.same({ 2, 4 }, lines)
      assert.equal("UTF-32LE", enc)
    end)

    it("converts sequences cut across the 256 KiB read blocks of a file", function()
      -- 12 bytes a row after a 2-byte BOM: the block boundary falls inside the emoji's
      -- surrogate pair
      local n = BLOCK // 12 + 100
      local path = tmpname()
      write_file(path, "\xFF\xFE" .. utf16le("a,b\n") .. utf16le("😀é,x\n"):rep(n))
      local count, bad = 0, 0
      for row in csv.rows(path) do
        count = count + 1
        if row.a ~= "😀é" or row.b ~= "x" then bad = bad + 1 end
      end
      assert.equal(n, count)
      assert.equal(0, bad)
      os.remove(path)
    end)

    it("names the line, column and byte offset of an invalid sequence", function()
      local r <close> = assert(csv.from_string("a,b\nx,y\x81z\n",
        { encoding = "cp1252", name = "h.csv" }))
      local _, err, code = r:read()
      assert.equal("h.csv:2:4: invalid cp1252: byte 0x81 (byte offset 7) is not a cp1252"
        .. " character (is the encoding right?)", err)
      assert.equal("ENCODING", code)
      local r2 <close> = assert(csv.from_string("\xFF\xFE" .. utf16le("a\nb") .. "c",
        { name = "t.csv" }))
      _, err, code = r2:read()
      assert.equal("t.csv:2:2: the input ends inside a UTF-16LE character (byte 0x63 at byte"
        .. " offset 8)", err)
      assert.equal("ENCODING", code)
    end)

    it("refuses an unknown encoding name", function()
      local r, err, code = csv.from_string("a\n", { encoding = "klingon-8" })
      assert.is_nil(r)
      assert.matches("^unknown encoding 'klingon%-8'", err)
      assert.equal("UNKNOWN_ENCODING", code)
      assert.has_error(function() csv.from_string("a\n", { encoding = 8 }) end,
        "option 'encoding' must be a string")
    end)
  end)

  describe("header", function()
    it("trims names and looks them up in any case", function()
      local r <close> = assert(csv.from_string(" Email ,\tFirst Name\n a@b , x \n"))
      assert.same({ "Email", "First Name" }, r.header)
      local row = r:read()
      assert.equal(" a@b ", row.Email)         -- values are not trimmed
      assert.equal(" a@b ", row.email)
      assert.equal(" a@b ", row.EMAIL)
      assert.equal(" x ", row["first name"])
      assert.is_nil(row.missing)
      assert.is_nil(rawget(row, "email"))       -- stored under the name as written
      assert.equal(2, r:field_index("FIRST NAME"))
      assert.is_nil(r:field_index("nope"))
    end)

    it("rejects duplicate names, naming both columns", function()
      local r, err, code = csv.from_string("email,name,Email\n", { name = "u.csv" })
      assert.is_nil(r)
      assert.equal("DUPLICATE_HEADER", code)
      assert.equal("u.csv:1: duplicate column name: column 1 'email' and column 3 'Email'"
        .. " (names compare case-insensitively)", err)
    end)

    it("rejects empty names, naming the neighbouring column", function()
      local _, err, code = csv.from_string("email, ,name\n")
      assert.equal("EMPTY_HEADER", code)
      assert.equal("<string>:1: empty name for column 2 (after column 1 'email')", err)
      _, err = csv.from_string("email,name,\n")
      assert.equal("<string>:1: empty name for column 3 of 3", err)
    end)

    it("fails on an empty file", function()
      local r, err, code = csv.from_string("\xEF\xBB\xBF\n\n")
      assert.is_nil(r)
      assert.equal("NO_HEADER", code)
      assert.equal("<string>: no header line (empty file)", err)
    end)
  end)

  describe("errors", function()
    it("reports an unterminated quote at the line where it opened", function()
      local err = parse_error('a,b\n1,"x\ny\nz\n', { name = "users.csv" })
      assert.equal("users.csv:2:3: quoted field opened here is never closed"
        .. " (unterminated quote)", err)
    end)

    it("rejects a quote inside an unquoted field in strict mode", function()
      local err = parse_error('a,b\n1,x"y\n', { name = "users.csv" })
      assert.equal("users.csv:2:4: quote inside unquoted field (strict = false reads it as"
        .. " text)", err)
      assert.matches("users.csv:2:6: unexpected character after closing quote",
        parse_error('a,b\n1,"x"y\n', { name = "users.csv" }))
    end)

    it("reads stray quotes as text in lenient mode (as Python's csv does)", function()
      assert.same({ { "a", 'x"y' }, { 'xy', "b" } },
        parse('a,x"y\n"x"y,b\n', { strict = false }))
    end)

    it("reports a row whose field count differs from the header", function()
      local err = parse_error("a,b,c\n1,2,3\n1,2\n", { name = "u.csv" })
      assert.equal("u.csv:3:4: row has 2 fields, the header has 3", err)
      err = parse_error("a,b\n1,2,3\n", { name = "u.csv" })
      assert.equal("u.csv:2:5: row has 3 fields, the header has 2", err)
    end)

    it("limits a field to 1 MiB by default, and by option", function()
      local big = string.rep("x", 1024 * 1024)
      local r <close> = assert(csv.from_string("a\n" .. big .. "\n" .. big .. "y\n"))
      assert.equal(#big, #r:read().a)
      local row, err, code = r:read()
      assert.is_nil(row)
      assert.equal("FIELD_TOO_LARGE", code)
      assert.equal("<string>:3:1: field too large (max_field)", err)
      assert.matches("<string>:2:3: field too large",
        parse_error('a,b\nx,"12345"\n', { max_field = 4 }))
    end)

    it("keeps an unterminated quote from growing memory past the limits", function()
      local text = 'a\n"' .. string.rep("y", 3 * 1024 * 1024)
      collectgarbage()
      local before = collectgarbage("count")
      local err = parse_error(text, { max_field = 1000 })
      assert.matches("<string>:2:1: field too large", err)
      assert.is_true(collectgarbage("count") - before < 8 * 1024)
    end)

    it("read() returns the fail triple and keeps returning it", function()
      local r <close> = assert(csv.from_string('a\n1\n"2\n'))
      assert.equal("1", r:read().a)
      local row, err, code = r:read()
      assert.is_nil(row)
      assert.equal("UNTERMINATED", code)
      assert.matches("^<string>:3:1: ", err)
      local _, err2, code2 = r:read()
      assert.equal(err, err2)
      assert.equal(code, code2)
    end)

    it("names a missing file with its errno", function()
      local r, err, code = csv.open("/nonexistent/users.csv")
      assert.is_nil(r)
      assert.equal("ENOENT", code)
      assert.equal("/nonexistent/users.csv: No such file or directory", err)
      local _, _, dcode = csv.open("tests")
      assert.equal("EISDIR", dcode)
    end)

    it("raises on misuse", function()
      assert.has_error(function() csv.open("x.csv", { bogus = 1 }) end, "unknown option 'bogus'")
      assert.has_error(function() csv.open("x.csv", { delimiter = '"' }) end)
      assert.has_error(function() csv.open("x.csv", { max_field = 0 }) end,
        "option 'max_field' must be a positive integer")
      assert.has_error(function() csv.open(42) end)
      assert.has_error(function() csv.rows("/nonexistent.csv") end,
        "/nonexistent.csv: No such file or directory")
      local r = assert(csv.from_string("a\n1\n"))
      r:close()
      r:close()   -- idempotent
      assert.has_error(function() r:read() end, "attempt to use a closed scim.csv.reader")
    end)
  end)

  describe("rows", function()
    local TEXT = "Email,First,Last,Manager\na@x,Ann,Lee,b@x\nb@x,Bob,,\n"

    it("yields keyed rows by default and arrays with opts.array", function()
      local r <close> = assert(csv.from_string(TEXT, { array = true }))
      assert.same({ "a@x", "Ann", "Lee", "b@x" }, r:read())
      assert.same({ "b@x", "Bob", "", "" }, r:read())
    end)

    it("has an iterator that works called alone, without generic-for's state", function()
      local r <close> = assert(csv.from_string(TEXT))
      local next_row = r:rows()
      local row, line = next_row()
      assert.equal("a@x", row.email)
      assert.equal(2, line)
      assert.equal("b@x", next_row().email)
      assert.is_nil(next_row())
      local it = csv.rows(FIX .. "upload_cr.csv")
      local n = 0
      while it() do n = n + 1 end
      assert.is_true(n > 0)
    end)

    it("makes strings only for opts.columns", function()
      local r <close> = assert(csv.from_string(TEXT, { columns = { "email", "MANAGER", "x" } }))
      local row = r:read()
      local keys = {}
      for k in pairs(row) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.same({ "Email", "Manager" }, keys)
      assert.equal("b@x", row.manager)
      local a <close> = assert(csv.from_string(TEXT,
        { array = true, columns = { "last", "email" } }))
      assert.same({ "Lee", "a@x" }, a:read())
    end)

    it("leaves unquoted empty fields out with empty_is_nil", function()
      local r <close> = assert(csv.from_string('a,b,c\n,"",x\n', { empty_is_nil = true }))
      local row = r:read()
      assert.is_nil(row.a)
      assert.equal("", row.b)
      assert.equal("x", row.c)
    end)

    it("reads without a header", function()
      local r <close> = assert(csv.from_string("a,b\n1,2\n", { header = false }))
      assert.is_nil(r.header)
      assert.same({ "a", "b" }, r:read())
      assert.same({ "1", "2" }, r:read())
    end)

    it("reads an open file handle and leaves it open", function()
      local f = assert(io.open(FIX .. "pipe.csv", "rb"))
      local n = 0
      for row in csv.rows(f) do n = n + 1; assert.is_string(row.email) end
      assert.equal(2, n)
      assert.equal("file", io.type(f))
      f:close()
    end)

    it("fails cleanly when the file handle is closed under the reader", function()
      local path = tmpname()
      write_file(path, "a\n" .. string.rep("x\n", 300000))   -- more than one read block
      local f = assert(io.open(path, "rb"))
      local r <close> = assert(csv.open(f))
      assert.equal("x", r:read().a)
      f:close()
      local n, row, err, code = 0, true, nil, nil
      while row do
        row, err, code = r:read()
        n = n + 1
      end
      os.remove(path)
      assert.is_true(n < 300000)
      assert.equal("IO", code)
      assert.equal("<file>: read error: Bad file descriptor", err)
    end)

    it("reads stdin with '-'", function()
      local cmd = "lua5.4 -e 'package.path=\"lua/?.lua;\"..package.path;"
        .. " package.cpath=\"" .. package.cpath:gsub('"', '\\"') .. "\";"
        .. " local csv = require \"scim.csv\";"
        .. " for row, line in csv.rows(\"-\") do io.write(line, \":\", row.EMAIL, \" \") end'"
        .. " < " .. FIX .. "upload_cr.csv"
      local p = assert(io.popen(cmd))
      local out = p:read("a")
      p:close()
      assert.equal("2:jane@example.com 3:john@example.com 4:boss@example.com ", out)
    end)

    it("csv.rows closes its reader when the loop breaks", function()
      local before = open_fds()
      for _ = 1, 3 do
        for _ in csv.rows(FIX .. "upload_cr.csv") do break end -- luacheck: ignore 512
      end
      assert.equal(before, open_fds())
    end)

    it("closes a to-be-closed reader at the end of its block", function()
      local keep
      do
        local r <close> = assert(csv.from_string("a\n1\n"))
        keep = r
      end
      assert.has_error(function() keep:read() end, "attempt to use a closed scim.csv.reader")
      assert.matches("closed", tostring(keep))
    end)

    it("counts parser memory in the Lua heap", function()
      local before = collectgarbage("count")
      local r = assert(csv.from_string("a\n" .. string.rep("1\n", 100000)))
      assert.is_true(collectgarbage("count") - before > 190)   -- its buffer
      r:close()
    end)
  end)

  describe("constant memory", function()
    -- A separate process reads a generated stream from stdin, so the peak resident size
    -- (VmHWM) is the reader's alone. SCIM_CSV_STREAM_MB sets the size (default 1024).
    -- Skipped under valgrind or ASan (LD_PRELOAD), whose own memory use is what it would see.
    local mb = tonumber(os.getenv("SCIM_CSV_STREAM_MB") or "1024")
    local preload = os.getenv("LD_PRELOAD") or ""
    local instrumented = preload:find("vgpreload") or preload:find("asan")
    local run = (instrumented or mb == 0) and pending or it
    run("reads a " .. mb .. " MB stream with resident memory under 32 MB", function()
      local line = "jane.doe@example.com,Jane,Doe,Engineer,R&D,+1 555 0100,"
        .. '"London, UK",en_GB,boss@example.com,Zoë\n'
      local n = math.floor(mb * 1024 * 1024 / #line)
      local script = "package.path=\"lua/?.lua;\"..package.path;"
        .. " package.cpath=\"" .. package.cpath:gsub('"', '\\"') .. "\";"
        .. " local csv = require \"scim.csv\"; local n = 0;"
        .. " for row in csv.rows(\"-\", { columns = { \"email\", \"manager\" } }) do"
        .. " if row.email then n = n + 1 end end;"
        .. " local s = io.open(\"/proc/self/status\"):read(\"a\");"
        .. " io.write(n, \" \", s:match(\"VmHWM:%s*(%d+)\"))"
      local cmd = "{ printf 'email,first,last,title,dept,phone,location,locale,manager,name\\n';"
        .. " yes '" .. line:sub(1, -2) .. "' | head -n " .. n .. "; } | lua5.4 -e '"
        .. script:gsub("'", "'\\''") .. "'"
      local p = assert(io.popen(cmd))
      local out = p:read("a")
      p:close()
      local rows, hwm = out:match("^(%d+) (%d+)$")
      assert.equal(n, tonumber(rows), out)
      assert.is_true(tonumber(hwm) < 32 * 1024, "VmHWM " .. tostring(hwm) .. " kB")
    end)
  end)
end)

describe("scim.csv writer", function()
  local dir

  before_each(function()
    dir = tmpname()
    assert(os.execute("mkdir -p '" .. dir .. "'"))
  end)

  after_each(function()
    os.execute("rm -rf '" .. dir .. "'")
    collectgarbage()
    collectgarbage()
  end)

  it("quotes minimally and writes the header first", function()
    local path = dir .. "/out.csv"
    local w = assert(csv.writer(path, { header = { "email", "note" } }))
    assert.is_true(w:write({ "a@x", 'say "hi", twice' }))
    assert.is_true(w:write({ email = "b@x", note = "two\nlines" }))
    assert.is_true(w:write({ email = "c@x" }))
    assert.is_true(w:write({ 12, true }))
    assert.is_true(w:close())
    assert.equal('email,note\na@x,"say ""hi"", twice"\nb@x,"two\nlines"\nc@x,\n12,true\n',
      read_file(path))
    assert.same({ "out.csv" }, listdir(dir))
  end)

  it("writes CRLF and another delimiter by option", function()
    local path = dir .. "/out.csv"
    local w = assert(csv.writer(path, { crlf = true, delimiter = ";" }))
    w:write({ "a;b", "c,d", "" })
    assert(w:close())
    assert.equal('"a;b";c,d;\r\n', read_file(path))
  end)

  it("guards against formula injection by default, and not when told", function()
    local path = dir .. "/out.csv"
    local w = assert(csv.writer(path))
    w:write({ "=1+2", "+1 555", "-x", "@SUM(A1)", "\tx", "ok", -5 })
    w:write({ " =1", "\t+1", "\n@x", "  \r\n-2", "a =1", " ok", "\r" })
    assert(w:close())
    assert.equal("'=1+2,'+1 555,'-x,'@SUM(A1),'\tx,ok,-5\n"
      .. "' =1,'\t+1,\"'\n@x\",\"'  \r\n-2\",a =1, ok,\"'\r\"\n", read_file(path))
    -- what the guard added, csv.unguard takes away; nothing else
    local rows = parse(read_file(path))
    for i, v in ipairs({ " =1", "\t+1", "\n@x", "  \r\n-2", "a =1", " ok", "\r" }) do
      assert.equal(v, csv.unguard(rows[2][i]))
    end
    for _, v in ipairs({ "'x", "'", "' ok", "''=1", "x'=1" }) do
      assert.equal(v, csv.unguard(v))
    end
    assert.equal(5, csv.unguard(5))
    local w2 = assert(csv.writer(path, { formula_guard = false }))
    w2:write({ "=1+2", "\rx" })
    assert(w2:close())
    assert.equal('=1+2,"\rx"\n', read_file(path))
  end)

  it("writes a lone empty field as \"\" so it is not read back as a blank line", function()
    local path = dir .. "/out.csv"
    local w = assert(csv.writer(path))
    w:write({ "" })
    w:write({ "a" })
    assert(w:close())
    assert.same({ { "" }, { "a" } }, parse(read_file(path)))
  end)

  it("never touches the target until a successful close", function()
    local path = dir .. "/users.csv"
    write_file(path, "previous good file\n")
    local w = assert(csv.writer(path))
    w:write({ "new" })
    assert.equal("previous good file\n", read_file(path))
    assert.equal(2, #listdir(dir))            -- the target and the temporary file
    w:abort()
    assert.equal("previous good file\n", read_file(path))
    assert.same({ "users.csv" }, listdir(dir))
    assert.is_true(w:close())                 -- closed already: nothing to do
    assert.has_error(function() w:write({ "x" }) end, "attempt to use a closed scim.csv.writer")
  end)

  it("aborts when a to-be-closed block raises, and commits when it ends", function()
    local path = dir .. "/users.csv"
    write_file(path, "old\n")
    local ok = pcall(function()
      local w <close> = assert(csv.writer(path))
      w:write({ "new" })
      w:write({ {} })                         -- not text: raises
    end)
    assert.is_false(ok)
    assert.equal("old\n", read_file(path))
    assert.same({ "users.csv" }, listdir(dir))
    do
      local w <close> = assert(csv.writer(path))
      w:write({ "new" })
    end
    assert.equal("new\n", read_file(path))
  end)

  it("removes the temporary file of a writer collected without close", function()
    local path = dir .. "/users.csv"
    write_file(path, "old\n")
    do
      local w = assert(csv.writer(path))
      w:write({ "new" })
    end
    collectgarbage()
    collectgarbage()
    assert.equal("old\n", read_file(path))
    assert.same({ "users.csv" }, listdir(dir))
  end)

  describe("file modes", function()
    local core = require "scim.core"

    local function mode_of(path)
      local p = assert(io.popen("stat -c %a '" .. path .. "'"))
      local m = p:read("l")
      p:close()
      return m
    end

    -- Runs a writer in a child process under `umask`, so this process's umask is untouched.
    local function write_under_umask(umask, path, opts)
      local script = "package.path=\"" .. package.path:gsub('"', '\\"') .. "\";"
        .. " package.cpath=\"" .. package.cpath:gsub('"', '\\"') .. "\";"
        .. " local w = assert(require(\"scim.csv\").writer(" .. string.format("%q", path)
        .. ", " .. opts .. ")); w:write({ \"new\" }); assert(w:close())"
      assert(os.execute("umask " .. umask .. " && lua5.4 -e '" .. script:gsub("'", "'\\''")
        .. "'"))
    end

    it("creates files readable by the owner only under umask 022", function()
      local path = dir .. "/export.csv"
      write_under_umask("022", path, "{}")
      assert.equal("600", mode_of(path))
      assert.equal("new\n", read_file(path))
      -- a replaced file that was world-readable is not any more
      os.execute("chmod 644 '" .. path .. "'")
      write_under_umask("022", path, "{}")
      assert.equal("600", mode_of(path))
    end)

    it("keeps a replaced file's stricter mode, and an explicit mode wins", function()
      local path = dir .. "/report.csv"
      write_file(path, "old\n")
      os.execute("chmod 600 '" .. path .. "'")
      write_under_umask("022", path, "{}")
      assert.equal("600", mode_of(path))
      os.execute("chmod 400 '" .. path .. "'")
      write_under_umask("022", path, "{}")
      assert.equal("400", mode_of(path))
      assert.equal("new\n", read_file(path))
      write_under_umask("022", path, "{ mode = 420 }")
      assert.equal("644", mode_of(path))
      write_under_umask("077", path, "{ mode = 420 }")  -- the umask still applies
      assert.equal("600", mode_of(path))
      assert.same({ "report.csv" }, listdir(dir))
      assert.has_error(function() csv.writer(path, { mode = 4096 }) end,
        "option 'mode' must be an integer from 0 to 0777 (511)")
    end)

    it("never follows or opens a symlink or file at the temporary path", function()
      local victim, link = dir .. "/victim", dir .. "/out.csv.tmp-1"
      write_file(victim, "keep\n")
      assert(os.execute("ln -s '" .. victim .. "' '" .. link .. "'"))
      local f, err, code = core.csv_create(link, 384)
      assert.is_nil(f)
      assert.equal("EEXIST", code)
      assert.equal(link .. ": File exists", err)
      assert.equal("keep\n", read_file(victim))
      -- dangling: the link's target is not created either
      assert(os.execute("ln -s '" .. dir .. "/nowhere' '" .. dir .. "/d.tmp'"))
      assert.is_nil(core.csv_create(dir .. "/d.tmp", 384))
      assert.is_nil(io.open(dir .. "/nowhere", "rb"))
      -- a plain file there is not truncated
      local f2 = assert(core.csv_create(dir .. "/fresh", 384))
      assert(f2:write("x"))
      assert(f2:close())
      local _, _, code2 = core.csv_create(dir .. "/fresh", 384)
      assert.equal("EEXIST", code2)
      assert.equal("x", read_file(dir .. "/fresh"))
    end)

    it("removes the temporary file when close fails", function()
      local path = dir .. "/sub/out.csv"
      os.execute("mkdir '" .. dir .. "/sub'")
      local w = assert(csv.writer(path))
      w:write({ "x" })
      os.execute("mkdir '" .. path .. "'")    -- rename over a directory fails
      local ok, err, code = w:close()
      assert.is_nil(ok)
      assert.matches("^" .. path:gsub("%p", "%%%0") .. ": ", err)
      assert.equal("EISDIR", code)
      assert.same({ "out.csv" }, listdir(dir .. "/sub"))
    end)
  end)

  describe("encoding", function()
    it("writes Windows-1252 and names the row and field it cannot represent", function()
      local path = dir .. "/out.csv"
      local w = assert(csv.writer(path, { header = { "email", "name" }, encoding = "cp1252" }))
      assert.is_true(w:write({ email = "m@x", name = "Müller €" }))
      local ok, err, code = w:write({ email = "l@x", name = "Łukasz" })
      assert.is_nil(ok)
      assert.equal(path .. ": row 2, 'name' (column 2): character U+0141 (Ł) cannot be"
        .. " written in cp1252", err)
      assert.equal("ENCODING", code)
      assert.is_true(w:write({ "z@x", "Zoë" }))   -- the writer goes on; the row is left out
      assert.is_true(w:close())
      assert.equal("email,name\nm@x,M\xFCller \x80\nz@x,Zo\xEB\n", read_file(path))
      local r <close> = assert(csv.open(path, { encoding = "cp1252" }))
      assert.equal("Müller €", r:read().name)
      local w2 = assert(csv.writer(dir .. "/b.csv", { encoding = "latin1" }))
      local _, err2 = w2:write({ "ok", "x😀" })
      assert.equal(dir .. "/b.csv: row 1, column 2: character U+1F600 (😀) cannot be written"
        .. " in latin1", err2)
      w2:abort()
    end)

    it("writes UTF-16 with one byte-order mark, read back by detection", function()
      local path = dir .. "/out.csv"
      local w = assert(csv.writer(path, { encoding = "utf-16", crlf = true }))
      assert(w:write({ "email", "name" }))
      assert(w:write({ "a@x", "王 😀" }))
      assert(w:close())
      local data = read_file(path)
      assert.equal("\xFF\xFEe\0m\0", data:sub(1, 6))   -- glibc's UTF-16 is little-endian
      assert.is_nil(data:find("\xFF\xFE", 3, true))
      local rows = parse(data)
      assert.same({ { "email", "name" }, { "a@x", "王 😀" } }, rows)
      assert.is_nil(csv.writer(dir .. "/u.csv", { encoding = "utf-8" }).conv)
    end)

    it("refuses an unknown encoding before creating anything", function()
      local w, err, code = csv.writer(dir .. "/out.csv", { encoding = "klingon-8" })
      assert.is_nil(w)
      assert.matches("^unknown encoding 'klingon%-8'", err)
      assert.equal("UNKNOWN_ENCODING", code)
      assert.same({}, listdir(dir))
    end)
  end)

  it("fails with the errno code when the directory does not exist", function()
    local w, err, code = csv.writer(dir .. "/no/such/dir/out.csv")
    assert.is_nil(w)
    assert.equal("ENOENT", code)
    assert.equal(dir .. "/no/such/dir/out.csv: No such file or directory", err)
  end)

  it("reports a failed write and keeps the target", function()
    if not io.open("/dev/full", "wb") then return pending("no /dev/full") end
    local f = assert(io.open("/dev/full", "wb"))
    f:setvbuf("no")
    local w = assert(csv.writer(f, { name = "full" }))
    local ok, err, code = w:write({ "x" })
    assert.is_nil(ok)
    assert.matches("^full: ", err)
    assert.equal("ENOSPC", code)
    assert.is_nil((w:close()))
    f:close()
  end)

  it("round-trips random rows (quotes, delimiters, line breaks, UTF-8)", function()
    local pieces = { "a", "Z", "0", " ", ",", ";", '"', "\r", "\n", "\r\n", "é", "王", "😀",
                     "\t", "|", "=", "x@example.com", "''" }
    local seed = 42
    local function rnd(n)   -- deterministic LCG, independent of math.random
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n + 1
    end
    for trial = 1, 40 do
      local delim = ({ ",", ";", "\t", "|" })[rnd(4)]
      local ncols, nrows = rnd(6), rnd(30)
      local header, rows = {}, {}
      for c = 1, ncols do header[c] = "col" .. c .. ({ "", " name", "é" })[rnd(3)] end
      for r = 1, nrows do
        local row = {}
        for c = 1, ncols do
          local t = {}
          for i = 1, rnd(12) - 1 do t[i] = pieces[rnd(#pieces)] end
          row[c] = table.concat(t)
        end
        rows[r] = row
      end
      local path = dir .. "/rt.csv"
      local w = assert(csv.writer(path, { header = header, delimiter = delim,
        crlf = rnd(2) == 1, formula_guard = false }))
      for _, row in ipairs(rows) do assert(w:write(row)) end
      assert(w:close())
      local r <close> = assert(csv.open(path, { array = true,
        delimiter = (trial % 2 == 0 or ncols == 1) and delim or nil }))
      assert.same(header, r.header)
      local back = {}
      for row in r:rows() do back[#back + 1] = row end
      assert.same(rows, back)
    end
  end)
end)
