--- The export job: pages through every account with the largest page the server allows and
-- streams rows into the CSV (columns from the mapping), written atomically (a failure
-- leaves the previous file intact; `-` writes to stdout).
--
-- Managers are written as their key (email), resolved from the listing itself, never with
-- a request per user. Memory stays bounded for any directory size:
--
-- * only an id → key map is kept, and only up to a limit (`SCIM_EXPORT_MAP_LIMIT`, default
--   100,000 people); when it is full it is written to a temporary chunk file and a new map
--   is started;
-- * a row whose manager is not in the map in memory (listed later, or in a chunk already
--   written out) is spilled to a temporary file, the manager's id in front of the user's
--   JSON, so a pass can test it without decoding;
-- * after the listing, one streaming pass per map (the one in memory, then each chunk)
--   rewrites the spill with the managers that map resolves, and the last pass writes the
--   spilled rows.
--
-- Below the limit (the common case) there are no chunks and no extra pass: the spill is
-- written once at the end with the map in memory, as it always was. Rows come in listing
-- order, except the spilled ones, which follow, also in listing order. Every temporary
-- file is removed when the job ends, however it ends (a kill -9 excepted).
-- @module scim.jobs.export
local json = require "scim.json"  -- keeps ids and empty arrays as they came
local context = require "scim.jobs.context"
local idstr, EXIT, is_interrupt = context.idstr, context.EXIT, context.is_interrupt

local export = {}

--- How many people the id → key map holds before it goes to a chunk file (~0.4 KB each).
export.MAP_LIMIT = 100000

-- The environment variable that lowers or raises it.
local LIMIT_VAR = "SCIM_EXPORT_MAP_LIMIT"

-- Spill line tags: "U<manager id>\t<json>" still to resolve, "R<manager key>\t<json>" done.
local UNRESOLVED, RESOLVED = ("U"):byte(), "R"

-- Ids and keys are written in lines with a tab after them: escape what would break that.
local ESCAPES = { ["%"] = "%25", ["\t"] = "%09", ["\n"] = "%0A", ["\r"] = "%0D" }
local function esc(s)
  return (s:gsub("[%%\t\n\r]", ESCAPES))
end
local function unesc(s)
  if not s:find("%", 1, true) then return s end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- ============================================================ temporary files

-- A failed write to a temporary file (disk full): the export fails, it is not a listing error.
local TempError = {}
TempError.__tostring = function(self) return self.message end

local function temp_failed(path, err)
  local detail = tostring(err)
  if detail:sub(1, #path + 2) == path .. ": " then detail = detail:sub(#path + 3) end  -- io.open's
  error(setmetatable({ message = "cannot write temporary file " .. path .. ": " .. detail },
    TempError), 0)
end

-- The temporary files of one run: a to-be-closed value that closes and removes them all when
-- the job's block is left, normally or by an error (Ctrl-C, a failed listing, an abort).
local Temps = {}
Temps.__index = Temps

local function new_temps()
  return setmetatable({ paths = {}, files = {} }, Temps)
end

-- A new temporary file (os.tmpname's directory) open for writing: path, file.
function Temps:open()
  local path = os.tmpname()
  self.paths[path] = true
  local f, err = io.open(path, "w")
  if not f then temp_failed(path, err) end
  self.files[f] = path
  return path, f
end

function Temps:write(f, ...)
  local ok, err = f:write(...)
  if not ok then temp_failed(self.files[f], err) end
end

function Temps:close_file(f)
  local path = self.files[f]
  self.files[f] = nil
  local ok, err = f:close()
  if not ok then temp_failed(path, err) end
end

-- Removes a file no longer needed (a chunk after its pass, a spill after its rewrite).
function Temps:remove(path)
  os.remove(path)
  self.paths[path] = nil
end

function Temps:__close()
  for f in pairs(self.files) do pcall(f.close, f) end
  for path in pairs(self.paths) do os.remove(path) end
  self.files, self.paths = {}, {}
end

-- ================================================================ the maps

-- The map limit from the environment (a usage error when it is not a whole number ≥ 1).
local function map_limit(ctx)
  local getenv = ctx.env and ctx.env.getenv
  local v = getenv and getenv(LIMIT_VAR)
  if v == nil or v == "" then return export.MAP_LIMIT end
  local n = math.tointeger(tonumber(tostring(v):match("^%s*(%d+)%s*$")))
  if not n or n < 1 then
    ctx:abort(EXIT.USAGE, LIMIT_VAR .. ": expected a whole number of at least 1, got '"
      .. tostring(v) .. "'")
  end
  return n
end

-- Writes a map to a new chunk file ("<id>\t<key>" lines); returns its path.
local function write_chunk(temps, keys)
  local path, f = temps:open()
  for id, key in pairs(keys) do temps:write(f, esc(id), "\t", esc(key), "\n") end
  temps:close_file(f)
  return path
end

-- Reads a chunk file back into a map (and removes the file: it is read once).
local function read_chunk(temps, path)
  local map = {}
  for line in io.lines(path) do
    local tab = line:find("\t", 1, true)
    map[unesc(line:sub(1, tab - 1))] = unesc(line:sub(tab + 1))
  end
  temps:remove(path)
  return map
end

-- One pass: copies the spill, turning the lines whose manager `map` knows into resolved
-- ones. Returns the new spill's path and how many lines are still unresolved.
local function resolve_pass(temps, path, map)
  local out_path, out = temps:open()
  local left = 0
  for line in io.lines(path) do
    if line:byte(1) == UNRESOLVED then
      local tab = line:find("\t", 2, true)
      local key = map[unesc(line:sub(2, tab - 1))]
      if key then
        temps:write(out, RESOLVED, esc(key), line:sub(tab), "\n")
      else
        temps:write(out, line, "\n")
        left = left + 1
      end
    else
      temps:write(out, line, "\n")
    end
  end
  temps:close_file(out)
  temps:remove(path)
  return out_path, left
end

-- Takes map `i` of `maps` out of the list (a chunk is read from its file).
local function take_map(temps, maps, i)
  local map = maps[i]
  maps[i] = nil
  if type(map) == "string" then map = read_chunk(temps, map) end
  return map
end

-- Resolves the spill with each map but the last (one pass each, stopping early when nothing
-- is left to resolve), then writes the spilled rows with the last map. Only one map is held
-- at a time. Returns the new count of rows written and the number of passes made.
local function write_spilled(temps, writer, m, spill_path, spilled, maps, written)
  local n, i, left = #maps, 1, spilled
  while i < n and left > 0 do
    spill_path, left = resolve_pass(temps, spill_path, take_map(temps, maps, i))
    collectgarbage()  -- the map just used is garbage; free it before the next is read
    i = i + 1
  end
  local last = left > 0 and take_map(temps, maps, n) or {}
  for line in io.lines(spill_path) do
    -- It made a row once already; with the manager known it makes one again.
    local tab = line:find("\t", 2, true)
    local k = unesc(line:sub(2, tab - 1))
    if line:byte(1) == UNRESOLVED then k = last[k] end  -- nil: not in the directory
    writer:write(assert(m:to_row(json.decode(line:sub(tab + 1)), function() return k end)))
    written = written + 1
  end
  return written, i - 1
end

-- ==================================================================== run

--- Runs the job.
-- @tparam scim.jobs.context.Ctx ctx
-- @treturn integer exit code
function export.run(ctx)
  local opts, m, rep = ctx.opts, ctx.mapping, ctx.report
  -- The command line refuses --report for export, but a --config file can still set it.
  if opts.report then rep:warn("--report has no rows to describe in an export; ignored") end
  local limit = map_limit(ctx)
  -- The first listing page is the preflight: an export sends nothing else.
  local dir = ctx:directory()
  local csv = require "scim.csv"
  local writer, werr = csv.writer(opts.file, { header = m.columns,
    formula_guard = not opts.no_formula_guard, encoding = opts.encoding })
  if not writer then ctx:abort(EXIT.USAGE, "cannot write " .. opts.file .. ": "
    .. tostring(werr)) end
  ctx.writer = writer
  local temps <close> = new_temps()
  local keys, nkeys = {}, 0  -- the map in memory: id → key, nkeys ≤ limit
  local chunks = {}          -- paths of the maps written out, in listing order
  local spill_path, spill
  local written, spilled, listed = 0, 0, 0
  -- (Its own function, so no register of the caller still holds the old map when the
  -- garbage is collected.)
  local function flush_keys()
    chunks[#chunks + 1] = write_chunk(temps, keys)
    keys, nkeys = {}, 0
  end

  rep:begin(0)
  local ok, err = dir:list(function(user, key)
    listed = listed + 1
    local id = idstr(user.id)
    if id ~= nil and key then
      if nkeys >= limit then
        flush_keys()
        collectgarbage()  -- free the old map now, not while the next one grows
      end
      keys[id] = key
      nkeys = nkeys + 1
    end
    local missing
    local row, rerr = m:to_row(user, function(mid)
      local k = keys[mid]
      if k == nil then missing = mid end
      return k
    end)
    if not row then
      -- One odd account doesn't stop the export; it is named and the run exits 1.
      rep:failure(string.format("user %s (id %s) not exported: %s", rep.safe(tostring(key)),
        rep.safe(tostring(id)), tostring(rerr)))
    elseif missing then
      if not spill then spill_path, spill = temps:open() end
      temps:write(spill, "U", esc(missing), "\t", assert(json.encode(user)), "\n")
      spilled = spilled + 1
    else
      writer:write(row)
      written = written + 1
      rep:progress(written)
    end
  end)
  if not ok and getmetatable(err) ~= TempError then
    writer:abort()
    ctx.writer = nil
    local what = "export failed after " .. written .. " rows (" .. opts.file .. " left as it was)"
    if err.code == "INTERRUPTED" then ctx:abort(EXIT.FAILED, "interrupted: " .. what) end
    -- Every listing comes before any write: "cannot work", exit 3.
    ctx:abort(EXIT.UNAVAILABLE, what .. ": " .. tostring(err.cause or err))
  end

  if ok and spill then
    ok, err = pcall(function()
      temps:close_file(spill)
      spill = nil
      -- The maps to resolve with: the one in memory, then the chunks in listing order.
      local maps = { keys }
      for i, path in ipairs(chunks) do maps[i + 1] = path end
      keys = nil
      local passes
      written, passes = write_spilled(temps, writer, m, spill_path, spilled, maps, written)
      if #chunks > 0 and opts.verbose then
        rep:info(string.format("%d users listed; the id → key map went to %d temporary "
          .. "chunk%s of %d; %d rows written after %d resolving pass%s", listed, #chunks,
          #chunks == 1 and "" or "s", limit, spilled, passes, passes == 1 and "" or "es"))
      end
    end)
  end
  if not ok then
    writer:abort()
    ctx.writer = nil
    local what = "export failed after " .. written .. " rows (" .. opts.file .. " left as it was)"
    if is_interrupt(err) then ctx:abort(EXIT.FAILED, "interrupted: " .. what) end
    ctx:abort(EXIT.FAILED, what .. ": " .. tostring(err))
  end
  -- close answers nil, message when the flush or the rename fails.
  local cok, closed, cerr = pcall(writer.close, writer)
  ctx.writer = nil
  if not (cok and closed) then ctx:abort(EXIT.FAILED, "cannot write " .. opts.file .. ": "
    .. tostring(cok and cerr or closed)) end
  rep:progress(written, "exported")
  if opts.file ~= "-" then rep:info(string.format("exported %d users to %s", written,
    opts.file)) end
  return ctx:finish()
end

return export
