--- What the jobs share: the run context, reading and validating the input file, connecting,
-- learning the server's current state, manager references, updates, and the concurrent
-- row loop with interruption handling.
-- @module scim.jobs.common
local http = require "scim.http"
local report_mod = require "scim.report"

local common = {}

--- Exit codes (documented in scim.cli).
common.EXIT = { OK = 0, FAILED = 1, USAGE = 2, UNAVAILABLE = 3 }
local EXIT = common.EXIT

-- Collect at most this many validation problems; one more line says how many were left.
local MAX_PROBLEMS = 200

local Ctx = {}
Ctx.__index = Ctx

--- A SCIM id as a string: the legacy API sends ids as JSON numbers.
function common.idstr(id)
  if math.type(id) == "float" and math.tointeger(id) then return string.format("%d", id) end
  if id == nil then return nil end
  return tostring(id)
end
local idstr = common.idstr

-- Whether an error is the Lua interpreter's answer to Ctrl-C (SIGINT).
local function is_interrupt(err)
  return type(err) == "string" and err:find("interrupted!", 1, true) ~= nil
end
common.is_interrupt = is_interrupt

local function lower(s)
  return type(s) == "string" and s:lower() or s
end

-- An error raised to end the run with an exit code, after printing its message.
local Abort = {}
Abort.__index = Abort
Abort.__tostring = function(self) return self.message end

--- Ends the job: prints `message` (if any) and exits with `code`.
function Ctx:abort(code, message) -- luacheck: ignore 212
  error(setmetatable({ code = code, message = message }, Abort), 0)
end

-- ===================================================================== input

-- A value written by an export's formula guard (`'` before = + - @ tab CR) reads back as the
-- value without the `'`, so export → edit → update round-trips.
local function unguard(v)
  if type(v) == "string" and v:find("^'[=+%-@\t\r]") then return v:sub(2) end
  return v
end

-- Whether a header is a results CSV of ours (its rows can be fed back).
local function is_report_header(header)
  for i, c in ipairs(report_mod.COLUMNS) do
    if not header[i] or header[i]:lower() ~= c then return false end
  end
  return true
end

--- Reads and checks the whole input file before anything is sent.
-- Every problem is collected (with its line); warnings are printed; on any problem the run
-- ends with exit code 2.
-- An entry keeps only what the later passes need: its line, key, the row's values in header
-- order (`Ctx:row` rebuilds the row: an array is smaller than a keyed table) and the
-- references it makes (nil when none). The resource is checked now and built again when sent:
-- resources are three times the size of their rows, and a large file must not hold them all.
-- @tparam string job "create", "update", "delete" or "sync"
-- @treturn table entries: `{ line=, key=, values=, refs= }` in file order
function Ctx:read_input(job)
  local csv = require "scim.csv"
  local m, opts = self.mapping, self.opts
  local path = self.opts.file
  local reader, err = csv.open(path)
  if not reader then self:abort(EXIT.USAGE, tostring(err)) end
  self.reader = reader
  local problems = {}
  local function problem(msg)
    if #problems < MAX_PROBLEMS then problems[#problems + 1] = msg end
    problems.total = (problems.total or 0) + 1
  end
  local header = reader.header
  local from_report = is_report_header(header)
  local data_header = header
  if from_report then
    data_header = table.move(header, #report_mod.COLUMNS + 1, #header, 1, {})
  end
  self.input_columns = data_header
  local ok, msgs = m:check_header(data_header, job,
    { unknown_columns = opts.ignore_unknown_columns and "ignore" or nil })
  if not ok then
    for _, msg in ipairs(msgs) do problem(path .. ": " .. msg) end
  else
    for _, msg in ipairs(msgs or {}) do self.report:warn(path .. ": " .. tostring(msg)) end
  end
  local entries, seen, refs_needed = {}, {}, {}
  local validate_resource = job ~= "delete"
  -- The mapping's job for new accounts and for existing ones (create-only entries such as
  -- active=true apply to the first only).
  self.create_job = job == "update" and "update" or "create"
  self.update_job = (job == "sync" and "sync") or ((job == "update" or opts.upsert) and "update")
    or "create"
  do
    local last_error
    while true do
      local row, line, code = reader:read()
      if row == nil then
        if line == nil then break end       -- end of file
        -- A parse error names file:line:col. After a row with the wrong number of fields
        -- the reader goes on; after anything else (or the same error again) it can't.
        if line == last_error then break end
        last_error = line
        problem(tostring(line))
        if code ~= "FIELD_COUNT" then break end
      else
        local take = true
        if from_report then
          local action = row.action
          take = action == "failed" or action == "skipped"
        end
        if take then
          local values = {}
          for i, c in ipairs(data_header) do values[i] = unguard(row[c]) end
          row = self:row(values)
          local key, kerr = m:key(row, line)
          if key == nil or key == "" then
            problem(string.format("%s:%d: %s", path, line,
              (tostring(kerr or "the key is empty"):gsub("^line %d+, ", ""))))
          else
            local lkey = key:lower()
            local first = seen[lkey]
            if first then
              problem(string.format("%s:%d: %s '%s' already on line %d", path, line,
                m.key_attribute, key, first.line))
            else
              local e = { line = line, key = key, values = values }
              seen[lkey] = e
              entries[#entries + 1] = e
              if validate_resource then
                -- The resource a new account gets, and the one an existing account is
                -- compared with (create-only defaults such as active=true left out).
                local res, rerr = m:to_resource(row, line, self.create_job)
                if res and self.update_job ~= self.create_job then
                  res, rerr = m:to_resource(row, line, self.update_job)
                end
                if not res then
                  problem(string.format("%s:%d: %s", path, line,
                    (tostring(rerr):gsub("^line %d+, ", ""))))
                else
                  local refs = m:references(row)
                  if next(refs) then e.refs = refs end
                  for _, ref in pairs(refs) do
                    local lref = ref:lower()
                    refs_needed[lref] = refs_needed[lref] or ref
                  end
                end
              end
            end
          end
        end
      end
    end
  end
  reader:close()
  self.reader = nil
  if problems.total then
    for _, msg in ipairs(problems) do self.report:error(msg) end
    if problems.total > #problems then
      self.report:error(string.format("... and %d more problems", problems.total - #problems))
    end
    self:abort(EXIT.USAGE, string.format("%s: %d problem%s; nothing was sent", path,
      problems.total, problems.total == 1 and "" or "s"))
  end
  self.entries, self.by_key = entries, seen
  -- References to people outside the file are looked up on the server later.
  local outside = {}
  for lref, ref in pairs(refs_needed) do
    if not seen[lref] then outside[#outside + 1] = ref end
  end
  table.sort(outside)
  self.outside_refs = outside
  return entries
end

-- ================================================================ connection

--- Creates the client (token and URL resolved now) and checks the server answers and takes
-- the token, before any write. Exit 3 when it can't; exit 2 for a missing token or URL.
-- @tparam[opt] boolean skip_check no preflight request (export: its first page is the check)
-- @treturn scim.client
function Ctx:connect(skip_check)
  if self.client then return self.client end
  local opts = self.opts
  if not opts.url then
    self:abort(EXIT.USAGE, "no URL: give --url or set SCIM_URL (--dialect meta and "
      .. "workplace_v1 have default URLs)")
  end
  -- A URL the engine would refuse is a usage error (exit 2), said in the CLI's own terms.
  local _, uerr, ucode = require("scim.http").check_url(opts.url, opts.allow_http)
  if ucode == "HTTP_REFUSED" then
    self:abort(EXIT.USAGE, opts.url .. ": plain http is refused except to loopback; "
      .. "use https, or --allow-http")
  elseif uerr then
    self:abort(EXIT.USAGE, opts.url .. ": " .. tostring(uerr))
  end
  local token, terr = opts.get_token()
  if not token then self:abort(EXIT.USAGE, terr) end
  local report = self.report
  local trace
  if opts.verbose then
    trace = function(line) report:info(line) end
  end
  local ok, client, cerr = pcall(require("scim.client").new, {
    url = opts.url, token = token, dialect = opts.dialect, concurrency = opts.concurrency,
    rate = opts.rate, timeout = opts.timeout, retries = opts.retries, ca_file = opts.ca_file,
    insecure = opts.insecure, allow_http = opts.allow_http, trace = trace,
  })
  token = nil -- luacheck: ignore 311
  if not ok or not client then
    self:abort(EXIT.USAGE, "cannot set up the client: " .. tostring(ok and cerr or client))
  end
  self.client = client
  if not skip_check then
    -- Refused token, unreachable or failing server: nothing can be done, and nothing
    -- has been written yet.
    local total, err = self:directory_size()
    if not total then
      if is_interrupt(err) then self:abort(EXIT.FAILED, "interrupted") end
      self:abort(EXIT.UNAVAILABLE, "cannot work with " .. opts.url .. ": " .. tostring(err))
    end
  end
  return client
end

--- The number of users on the server (one listing request, count=1), also the preflight.
-- @treturn integer|nil total
-- @treturn any error when the request failed
function Ctx:directory_size()
  if self.total_users then return self.total_users end
  local page, err = self.client:list{ start_index = 1, count = 1 }
  local total = page and (page.total or #page.resources)
  if total == nil then return nil, err end
  self.total_users = total
  return total
end

--- What the server supports (its ServiceProviderConfig over the dialect's defaults; the
-- client reads it once). A failure to read it leaves the dialect's defaults.
function Ctx:capabilities()
  if not self.caps then
    local ok, caps = pcall(self.client.capabilities, self.client)
    if not ok and is_interrupt(caps) then error(caps, 0) end
    self.caps = ok and type(caps) == "table" and caps or {}
  end
  return self.caps
end

--- Whether an update is a PUT of the merged record (dialect or server without PATCH).
function Ctx:use_put()
  return self.dialect.update == "put" or self:capabilities().patch == false
end

--- The largest page the server allows.
function Ctx:page_size()
  local size = math.tointeger(tonumber(self:capabilities().max_page_size))
  return math.max(1, size or self.dialect.max_page_size or 100)
end

-- ============================================================ server state

--- The key of a resource as the mapping sees it (userName or externalId).
function Ctx:resource_key(res)
  local attr = self.mapping.key_attribute
  local v = res[attr]
  return type(v) == "string" and v or nil
end

--- Finds one person by key: resource | false (none) | nil, err.
function Ctx:find_by_key(key)
  local client = self.client
  local attr = self.mapping.key_attribute
  if attr == "userName" then return client:find_user(key) end
  local filter = require "scim.filter"
  local ok, found, err = pcall(client.find, client, filter.eq(attr, key))
  if not ok then return nil, found end
  if not found then return nil, err end
  for _, r in ipairs(found) do
    if lower(r[attr]) == key:lower() then return r end
  end
  return false
end

--- Pages through every user (largest page), calling `fn(resource)` for each.
-- @treturn true | nil, err
function Ctx:each_user(fn)
  local client = self.client
  local ok, err = pcall(function()
    for user in client:users{ count = self:page_size() } do fn(user) end
  end)
  if not ok then return nil, err end
  return true
end

--- Ends the run after a failed listing. Every listing comes before any write (and an
-- export's file is left as it was), so this is "cannot work": exit 3; exit 1 on Ctrl-C.
function Ctx:listing_failed(err, what)
  if is_interrupt(err) then
    self:abort(EXIT.FAILED, "interrupted while listing the users; nothing was changed")
  end
  self:abort(EXIT.UNAVAILABLE, (what or "listing the users failed") .. ": " .. tostring(err))
end

--- Learns the current resources for `entries`: one paged listing when the file covers a
-- large part of the directory (fewer requests), else concurrent filtered lookups.
-- Sets `entry.current` (resource or false) or `entry.lookup_error`. Also records the ids of
-- referenced people outside the file that the listing meets (`self.ids`).
function Ctx:learn_current(entries)
  local total = self:directory_size() or 0
  local pages = math.ceil(total / self:page_size())
  self.ids = self.ids or {}
  local ids = self.ids
  -- A listing page costs about as much as a few lookups, which run concurrently.
  if #entries > 0 and pages * 4 <= #entries then
    self.strategy = "listing"
    local want = {}
    for _, e in ipairs(entries) do want[e.key:lower()] = e end
    local outside = {}
    for _, ref in ipairs(self.outside_refs or {}) do outside[ref:lower()] = true end
    local ok, err = self:each_user(function(user)
      local k = lower(self:resource_key(user))
      if not k then return end
      local e = want[k]
      if e then e.current = user end
      if e or outside[k] then self:set_id(k, idstr(user.id)) end
    end)
    if not ok then self:listing_failed(err) end
    for _, e in ipairs(entries) do
      if e.current == nil then e.current = false end
    end
    for _, ref in ipairs(self.outside_refs or {}) do
      if ids[ref:lower()] == nil then self:set_id(ref:lower(), false) end
    end
  else
    self.strategy = "lookups"
    self:run(entries, function(e)
      local cur, err = self:find_by_key(e.key)
      if cur == nil then e.lookup_error = err else e.current = cur end
      if cur then self:set_id(e.key:lower(), idstr(cur.id)) end
    end, { phase = "lookup" })
  end
end

--- Resolves the ids of referenced people outside the file that are still unknown (one
-- filtered lookup each, concurrently), and warns about the ones that exist nowhere.
function Ctx:resolve_outside_refs()
  self.ids = self.ids or {}
  local ids = self.ids
  local todo = {}
  for _, ref in ipairs(self.outside_refs or {}) do
    if ids[ref:lower()] == nil then todo[#todo + 1] = ref end
  end
  if #todo > 0 then
    self:run(todo, function(ref)
      local r, err = self:find_by_key(ref)
      if r then
        self:set_id(ref:lower(), idstr(r.id))
      elseif r == false then
        self:set_id(ref:lower(), false)
      else
        self.report:warn(string.format("looking up '%s' failed: %s", ref, tostring(err)))
      end
    end, { phase = "lookup" })
  end
  for _, ref in ipairs(self.outside_refs or {}) do
    if ids[ref:lower()] == false then
      self.report:warn(string.format("'%s' is referenced (e.g. as a manager) but is neither "
        .. "in the file nor on the server", ref))
    end
  end
end

--- Puts the referenced people's ids (managers) into `desired`; returns the names of the
-- references that could not be resolved.
function Ctx:set_references(entry, desired)
  local missing
  for name, ref in pairs(entry.refs or {}) do
    if ref ~= "" then
      local id = self.ids and self.ids[ref:lower()]
      if id then
        self.mapping:set_reference(desired, name, id)
      else
        missing = missing or {}
        missing[#missing + 1] = string.format("%s '%s' not found", name, ref)
      end
    end
  end
  return missing
end

--- Sends the changes from `current` to `desired` (PATCH with only the changed attributes,
-- or PUT of the merged record), or nothing when nothing changed; `--dry-run` sends nothing.
-- @treturn string action "updated", "unchanged", "update" (dry run) or "failed"
-- @treturn table|nil the response resource, or the error object when failed
-- @treturn table changes ({path=, old=, new=})
function Ctx:update_resource(current, desired)
  local m = self.mapping
  local ops, changes = m:diff(current, desired)
  if not ops or #ops == 0 then return "unchanged", current, {} end
  if self.opts.dry_run then return "update", current, changes end
  local client = self.client
  local res, err
  if self:use_put() then
    res, err = client:replace(idstr(current.id), m:merge(current, desired))
  else
    res, err = client:patch(idstr(current.id), ops)
  end
  if not res then return "failed", err, changes end
  return "updated", type(res) == "table" and res or current, changes
end

--- An input row (keyed by the file's column names) from its values in header order.
-- @tparam table values an entry's `values`
-- @treturn table
function Ctx:row(values)
  local row = {}
  for i, c in ipairs(self.input_columns) do row[c] = values[i] end
  return row
end

--- The resource an entry's row describes for a job of the mapping (it passed validation).
function Ctx:resource(e, job)
  return assert(self.mapping:to_resource(self:row(e.values), e.line, job))
end

--- Creates an entry's account (POST). A 409 uniqueness answer is `exists`: the current
-- resource is then looked up (the second phase may set a missing manager or, with
-- `--upsert`/sync, update it). Dry run: a lookup decides create or exists, unless `missing`
-- says a listing already found no account. Sets `e.created` or `e.current`, records the id,
-- and reports failures.
function Ctx:create_entry(e, missing)
  if self.opts.dry_run then
    local cur, err = false, nil
    if not missing then cur, err = self:find_by_key(e.key) end
    if cur == nil then return self:fail(e, err) end
    if cur then
      e.current = cur
      self:set_id(e.key:lower(), idstr(cur.id))
    else
      self:set_id(e.key:lower(), "(new: " .. e.key .. ")")
      self:outcome(e, "create", { changes = {} })
    end
    return
  end
  local res, err = self.client:create(self:resource(e, self.create_job))
  if res then
    e.created = res
    self:set_id(e.key:lower(), idstr(res.id))
    return
  end
  if type(err) == "table" and err.code == "UNIQUENESS" then
    local cur, ferr = self:find_by_key(e.key)
    if cur then
      e.current = cur
      self:set_id(e.key:lower(), idstr(cur.id))
      return
    end
    return self:fail(e, cur == false and "the server says it exists but no account has "
      .. "this key (409)" or ferr)
  end
  return self:fail(e, err)
end

--- Second phase of an entry after `create_entry` or a lookup: sets the manager of a new
-- account (one request), fills a missing manager of an existing one (`mode` "fill") or
-- brings an existing one up to date (`mode` "update"), and reports the outcome.
function Ctx:complete_entry(e, mode)
  if e.reported then return end
  local m = self.mapping
  if e.created then
    -- Only the references: the rest was just written (and a copy of the server's answer
    -- would carry read-only attributes into a PUT).
    local desired = {}
    local missing = self:set_references(e, desired)
    local action, res, changes = self:update_resource(e.created, desired)
    if action == "failed" then
      return self:outcome(e, "failed", { id = idstr(e.created.id), error = "created, but setting "
        .. "the manager failed: " .. tostring(res), status = type(res) == "table" and res.status })
    end
    return self:outcome(e, "created", { status = 201, id = idstr(e.created.id), changes = changes,
      error = missing and table.concat(missing, "; ") .. " (not set)" or nil })
  end
  local cur = e.current
  if not cur then return end
  local desired, base_action
  if mode == "update" then
    desired = self:resource(e, self.update_job)
    base_action = "unchanged"
  else
    -- Without --upsert an existing account keeps its attributes; only a manager an
    -- interrupted run didn't get to set is filled in.
    desired = {}
    for name in pairs(e.refs or {}) do
      if m:reference_id(cur, name) then return self:outcome(e, "exists", { status = 409,
        id = idstr(cur.id) }) end
    end
    base_action = "exists"
  end
  local missing = self:set_references(e, desired)
  local action, res, changes = self:update_resource(cur, desired)
  local note = missing and table.concat(missing, "; ") .. " (not set)" or nil
  if action == "failed" then
    return self:outcome(e, "failed", { id = idstr(cur.id), error = res, changes = changes })
  elseif action == "unchanged" then
    return self:outcome(e, base_action, { status = base_action == "exists" and 409 or nil,
      id = idstr(cur.id), error = note })
  elseif base_action == "exists" and not self.opts.dry_run then
    return self:outcome(e, "exists", { status = 409, id = idstr(cur.id), changes = changes,
      error = note })
  end
  return self:outcome(e, action, { id = idstr(cur.id), changes = changes, error = note })
end

-- ================================================================ outcomes

--- Records the SCIM id of a person (`false`: known to exist nowhere).
-- @tparam string lkey the person's key, lowercased
-- @tparam string|false id
function Ctx:set_id(lkey, id)
  self.ids[lkey] = id
  self.key_of = nil  -- stale: `key_of_ids` builds it again when next asked
end

--- The reverse of `ids`: id → the person's key as the file writes it. Built once after the
-- last `set_id`, not per outcome: that made a run with many manager changes quadratic.
function Ctx:key_of_ids()
  local key_of = self.key_of
  if not key_of then
    key_of = {}
    for lkey, id in pairs(self.ids or {}) do
      if id then key_of[id] = self.by_key and self.by_key[lkey] and self.by_key[lkey].key
        or lkey end
    end
    self.key_of = key_of
  end
  return key_of
end

--- Rewrites the changes of reference attributes (the manager's SCIM id) to the people's
-- keys, so a plan reads "manager: a@example.com -> b@example.com".
function Ctx:readable_changes(e, changes)
  local cols = self.mapping.reference_columns
  if not changes or #changes == 0 or not next(cols) then return changes end
  local by_col = {}
  for name, col in pairs(cols) do by_col[col] = name end
  local key_of
  for _, c in ipairs(changes) do
    local name = c.column and by_col[c.column]
    if name then
      key_of = key_of or self:key_of_ids()
      c.old = c.old ~= nil and (key_of[c.old] or ("id " .. tostring(c.old))) or nil
      c.new = e.refs and e.refs[name] or c.new
    end
  end
  return changes
end

--- Records an entry's final outcome (once).
-- @tparam table e the entry
-- @tparam string action
-- @tparam[opt] table f `status`, `id`, `error` (string or error object), `changes`
function Ctx:outcome(e, action, f)
  if e.reported then return end
  local row = self.report.writer and e.values and self:row(e.values)  -- for the results CSV
  -- No longer needed: let a large run's memory go as it proceeds.
  e.created, e.current, e.values = nil, nil, nil
  e.reported = true
  f = f or {}
  if f.changes then self:readable_changes(e, f.changes) end
  local status = f.status
  local errv = f.error
  if type(errv) == "table" then
    status = status or errv.status
    errv = tostring(errv)
  end
  self.report:outcome{
    line = e.line, key = e.key, action = action, status = status, id = f.id,
    error = errv, changes = f.changes, row = row,
  }
end

--- Reports a failed request for an entry, from an error object.
function Ctx:fail(e, err, extra)
  local msg = tostring(err)
  if extra then msg = msg .. " (" .. extra .. ")" end
  self:outcome(e, "failed", { status = type(err) == "table" and err.status or nil, error = msg })
end

-- ================================================================== running

--- Runs `fn(item)` for every item concurrently (scim.http's scheduler). After Ctrl-C no new
-- item starts (the job reports them `skipped`) and the requests in flight finish.
-- An error raised in `fn` fails that item: `opts.on_error(item, err)` reports it.
--
-- How Ctrl-C is caught without C code: the standalone interpreter answers SIGINT by making
-- the *main* thread raise "interrupted!" at its next instruction. The scheduler runs in a
-- coroutine of its own here, and the main thread only runs when the scheduler asks for the
-- next item; so the error surfaces in `drive` below, between two items, where it is caught
-- and turned into "no more items" while the scheduler finishes the transfers in flight.
-- (A second Ctrl-C ends the process, as lua.c makes it.)
-- @tparam table items
-- @tparam function fn
-- @tparam[opt] table opts `on_error`, `phase`
function Ctx:run(items, fn, opts)
  opts = opts or {}
  local on_error = opts.on_error
  local report = self.report
  local function body(item, i)
    local ok, err = pcall(fn, item, i)
    report:step()
    if not ok then
      if on_error then on_error(item, err) else error(err, 0) end
    end
  end
  report:phase(opts.phase or self.job, #items)
  local i = 0
  local function source()
    if self.stopped then return nil end
    if coroutine.yield() then   -- the main thread says stop
      self.stopped = true
      return nil
    end
    i = i + 1
    return items[i]
  end
  local summary
  local sched = coroutine.create(function()
    summary = http.run(source, body, { concurrency = self.opts.concurrency or 8 })
  end)
  local function drive()
    while coroutine.status(sched) == "suspended" do
      local ok, err = coroutine.resume(sched, self.stopped)
      if not ok then error(err, 0) end
    end
  end
  local ok, err = pcall(drive)
  if not ok and is_interrupt(err) then
    self.stopped = true
    self.report:error("interrupted: finishing the requests in flight (Ctrl-C again to quit "
      .. "at once)")
    ok, err = pcall(drive)
  end
  if not ok then error(err, 0) end
  for _, e in ipairs(summary and summary.errors or {}) do
    if on_error then on_error(e.item, e.error)
    else self.report:error(string.format("%s: %s", opts.phase or "work", tostring(e.error))) end
  end
end

--- Reports every entry without an outcome yet as skipped (after an interruption or a
-- phase that could not run).
function Ctx:skip_rest(entries, why)
  for _, e in ipairs(entries) do
    if not e.reported then
      if e.created then
        -- The account exists; a rerun finds it and sets what is missing (the manager).
        self:outcome(e, "created", { status = 201, id = idstr(e.created.id),
          error = "the manager was not set (" .. why .. "): run again to finish" })
      else
        self:outcome(e, "skipped", { error = why })
      end
    end
  end
end

-- ================================================================= execute

--- Runs a job from the parsed command-line options (called by scim.cli).
-- @tparam table opts merged options (`command`, `file`, `dialect`, `get_token`, ...)
-- @tparam table env `stdout`, `stderr`, `stdin`, `getenv`, `isatty`
-- @treturn integer exit code
function common.execute(opts, env)
  local function fail(msg, code)
    env.stderr:write("scim-agent: ", msg, "\n")
    env.stderr:flush()
    return code
  end
  local mapping = require "scim.mapping"
  local ok, m, merr
  if opts.mapping then
    ok, m, merr = pcall(mapping.load, opts.mapping, { dialect = opts.dialect })
  else
    ok, m, merr = pcall(mapping.default, { dialect = opts.dialect })
  end
  if not ok or not m then return fail(tostring(ok and merr or m), EXIT.USAGE) end

  local job = require("scim.jobs." .. opts.command)
  local to_stdout = opts.command == "export" and opts.file == "-"
  local ctx = setmetatable({
    opts = opts, env = env, mapping = m, job = opts.command,
    dialect = require("scim.dialects." .. opts.dialect),
  }, Ctx)
  local rep, rerr = report_mod.new{
    job = opts.command, path = nil, quiet = opts.quiet, verbose = opts.verbose,
    log_format = opts.log_format, dry_run = opts.dry_run, stdout = env.stdout,
    stderr = env.stderr, log = to_stdout and env.stderr or env.stdout,
    progress = env.isatty(2) and not to_stdout or false, getenv = env.getenv,
  }
  if not rep then return fail(rerr, EXIT.USAGE) end
  ctx.report = rep

  local rok, code = xpcall(job.run, function(e)
    if getmetatable(e) == Abort then return e end
    return debug.traceback(tostring(e), 2)
  end, ctx)
  if ctx.reader then pcall(ctx.reader.close, ctx.reader) end
  if ctx.writer then pcall(ctx.writer.abort, ctx.writer) end
  if not rok then
    if ctx.report.writer then ctx.report:abort() end
    if ctx.client then pcall(ctx.client.close, ctx.client) end
    if getmetatable(code) == Abort then
      if code.message then ctx.report:error(code.message) end
      return code.code
    end
    if is_interrupt(code) then
      ctx.report:error("interrupted")
      return EXIT.FAILED
    end
    ctx.report:error("internal error: " .. tostring(code))
    return EXIT.FAILED
  end
  if ctx.client then pcall(ctx.client.close, ctx.client) end
  return code
end

--- Opens the results CSV (after the input is read: it copies the input's columns).
function Ctx:open_report_file()
  local path = self.opts.report
  if not path then return end
  local r, err = report_mod.new{
    job = self.job, path = path, input_columns = self.input_columns, quiet = self.opts.quiet,
    verbose = self.opts.verbose, log_format = self.opts.log_format, dry_run = self.opts.dry_run,
    stdout = self.env.stdout, stderr = self.env.stderr, log = self.report.log,
    progress = self.report.progress_on, color = self.report.color,
  }
  if not r then self:abort(EXIT.USAGE, err) end
  self.report = r
end

--- Finishes a job: totals, the plan of a dry run, the summary, the results file, and the
-- exit code (1 when any row failed or the run was interrupted).
-- @treturn integer exit code
function Ctx:finish()
  local rep = self.report
  if self.opts.dry_run then rep:print_plan() end
  local stats = self.client and self.client:stats() or {}
  rep:summary(stats)
  local ok, err = rep:close()
  if not ok then
    rep:error(err)
    return EXIT.FAILED
  end
  if self.stopped then
    rep:error("interrupted: the rows not done are reported 'skipped'; run the same command "
      .. "again to finish")
    return EXIT.FAILED
  end
  return rep:failed() > 0 and EXIT.FAILED or EXIT.OK
end

--- Starts the progress line for `n` rows.
function Ctx:begin(n)
  self.report.total = n
  self.report:draw(true)
end

common.Ctx = Ctx
return common
