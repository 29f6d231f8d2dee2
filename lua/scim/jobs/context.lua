--- The CLI's run context: options, environment, report, the client, exit codes and `Abort`.
-- Only the CLI layer (scim.cli and scim.jobs.*) knows argv, prompts and exit codes; the
-- library below it (scim.plan, scim.apply, scim.directory) answers with `nil, err, code`.
-- @module scim.jobs.context
local report_mod = require "scim.report"
local err_mod = require "scim.error"
local directory = require "scim.directory"

local context = {}

--- Exit codes (documented in scim.cli).
context.EXIT = { OK = 0, FAILED = 1, USAGE = 2, UNAVAILABLE = 3 }
local EXIT = context.EXIT

context.idstr = directory.idstr
context.is_interrupt = err_mod.is_interrupt

--- Library error codes that mean "nothing could be done at all" (exit 3).
local USAGE_CODES = { INVALID = true, GUARD = true, USAGE = true, BAD_MAPPING = true,
  UNSUPPORTED = true }

--- The exit code for a failed plan.
function context.exit_for(code)
  if code == "INTERRUPTED" then return EXIT.FAILED end
  if USAGE_CODES[code] then return EXIT.USAGE end
  return EXIT.UNAVAILABLE
end

local Ctx = {}
Ctx.__index = Ctx
context.Ctx = Ctx

-- An error raised to end the run with an exit code, after printing its message.
local Abort = {}
Abort.__index = Abort
Abort.__tostring = function(self) return self.message end
context.Abort = Abort

--- Ends the job: prints `message` (if any) and exits with `code`.
function Ctx:abort(code, message) -- luacheck: ignore 212
  error(setmetatable({ code = code, message = message }, Abort), 0)
end

--- Creates the client (token and URL resolved now). Exit 2 for a missing token or URL or a
-- URL the engine would refuse. No request is sent.
-- @treturn scim.client
function Ctx:connect()
  if self.client then return self.client end
  local opts = self.opts
  if not opts.url then
    self:abort(EXIT.USAGE, "no URL: give --url or set SCIM_URL (--dialect meta and "
      .. "workplace_v1 have default URLs)")
  end
  -- A URL the engine would refuse is a usage error (exit 2), said in the CLI's own terms.
  local _, uerr, ucode = require("scim.http").check_url(opts.url, opts.allow_http)
  if ucode == "HTTP_REFUSED" then
    self:abort(EXIT.USAGE, opts.shown_url .. ": plain http is refused except to loopback; "
      .. "use https, or --allow-http")
  elseif uerr then
    self:abort(EXIT.USAGE, opts.shown_url .. ": " .. tostring(uerr))
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
    -- A dialect may know its provider's published ceiling (entra: 40 requests/s).
    rate = opts.rate or require("scim.dialects").load(opts.dialect).default_rate,
    timeout = opts.timeout, retries = opts.retries, ca_file = opts.ca_file,
    insecure = opts.insecure, allow_http = opts.allow_http, trace = trace,
  })
  token = nil -- luacheck: ignore 311
  if not ok or not client then
    self:abort(EXIT.USAGE, "cannot set up the client: " .. tostring(ok and cerr or client))
  end
  self.client = client
  return client
end

--- A directory view over the client (export's listing).
function Ctx:directory()
  self.dir = self.dir or directory.new{ client = self:connect(), mapping = self.mapping,
    concurrency = self.opts.concurrency }
  return self.dir
end

-- FNV-1a of a string, as 8 hex digits: a stable file name for a URL.
local function fnv1a(s)
  local h = 2166136261
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  return string.format("%08x", h)
end

--- Takes the run's lock, so two scheduled runs never work on the same accounts at once:
-- `--lock FILE`, else beside the report, else one per URL in $TMPDIR. With `--lock-wait S`
-- it waits up to S seconds for the other run; then (or at once) exit 3 with who holds it.
function Ctx:lock()
  local opts = self.opts
  if opts.dry_run then return end
  local sys = require("scim.core").sys
  local path = opts.lock or (opts.report and opts.report .. ".lock")
    or ((self.env.getenv("TMPDIR") or "/tmp") .. "/scim-agent-" .. fnv1a(opts.shown_url
      or "") .. ".lock")
  local deadline = require("scim.core").monotime() + (opts.lock_wait or 0)
  while true do
    local lock, err, code = sys.lock(path)
    if lock then
      self.held = lock
      return
    end
    if code ~= "LOCKED" then self:abort(EXIT.USAGE, "cannot take the lock: " .. tostring(err)) end
    if require("scim.core").monotime() >= deadline then
      self:abort(EXIT.UNAVAILABLE, tostring(err) .. "; nothing was sent (--lock-wait S waits "
        .. "for it)")
    end
    os.execute("sleep 1")
  end
end

--- The options of a plan's apply that show its progress: phases and steps on the progress
-- line, warnings, and the Ctrl-C message; `on_result` is the job's.
-- @tparam function on_result
-- @treturn table options for `plan:apply`
function Ctx:apply_options(on_result)
  local rep, opts = self.report, self.opts
  return {
    concurrency = opts.concurrency or 8, bulk = opts.bulk, on_result = on_result,
    on_warning = function(msg) rep:warn(msg) end,
    on_phase = function(phase, n) rep:phase(phase, n) end,
    on_step = function() rep:step() end,
    on_interrupt = function()
      rep:error("interrupted: finishing the requests in flight (Ctrl-C again to quit at once)")
    end,
  }
end

--- Prints why a plan could not be made and ends the run with its exit code: every problem
-- of an invalid file, or what the guard would have removed (`noun`, `verb`: "account",
-- "remove" or "group", "delete").
function Ctx:refuse(err, code, noun, verb)
  local rep = self.report
  if code == "INVALID" then
    for _, msg in ipairs(err.problems or {}) do rep:error(msg) end
    if (err.total or 0) > #(err.problems or {}) then
      rep:error(string.format("... and %d more problems", err.total - #err.problems))
    end
  elseif code == "GUARD" then
    local names = err.removals or {}
    local count = err.count or #names
    rep:error(string.format("the %d %s%s it would %s%s:", count, noun or "account",
      count == 1 and "" or "s", verb or "remove",
      #names < count and (" (the first " .. #names .. ")") or ""))
    for _, k in ipairs(names) do rep:error("  " .. rep.safe(k)) end
  end
  self:abort(context.exit_for(code), tostring(err))
end

--- Opens the results CSV (once the input's columns are known: it copies them).
function Ctx:open_report_file(columns)
  local path = self.opts.report
  if not path then return end
  local ok, err = self.report:attach(path, columns)
  if not ok then self:abort(EXIT.USAGE, err) end
end

--- Finishes a job: the plan of a dry run, the summary, the results file, and the exit code
-- (1 when any row failed or the run was interrupted, 3 when the token was refused mid-run).
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
  if self.stopped == "AUTH" then
    rep:error("the server refused the token during the run: the rows not done are reported "
      .. "'skipped'; renew the token and run the same command again to finish")
    return EXIT.UNAVAILABLE
  end
  if self.stopped then
    rep:error((self.stopped == "THROTTLED" and "the server asked to wait longer than the run "
      .. "may: " or "interrupted: ") .. "the rows not done are reported 'skipped'; run the "
      .. "same command again to finish")
    return EXIT.FAILED
  end
  return rep:failed() > 0 and EXIT.FAILED or EXIT.OK
end

--- Creates the context of one run.
-- @tparam table opts merged options
-- @tparam table env `stdout`, `stderr`, `stdin`, `getenv`, `isatty`
-- @tparam table m the mapping
-- @treturn Ctx | nil, message
function context.new(opts, env, m)
  local to_stdout = (opts.command == "export" or opts.command == "export-groups")
    and opts.file == "-"
  local rep, rerr = report_mod.new{
    job = opts.command, quiet = opts.quiet, verbose = opts.verbose,
    log_format = opts.log_format, dry_run = opts.dry_run, stdout = env.stdout,
    stderr = env.stderr, log = to_stdout and env.stderr or env.stdout,
    progress = env.isatty(2) and not to_stdout or false, getenv = env.getenv,
  }
  if not rep then return nil, rerr end
  return setmetatable({ opts = opts, env = env, mapping = m, job = opts.command,
    report = rep }, Ctx)
end

--- Runs `fn(ctx)` and turns what it raises into an exit code; always closes what it opened.
-- @treturn integer exit code
function Ctx:protect(fn)
  local rok, code = xpcall(fn, function(e)
    if getmetatable(e) == Abort then return e end
    return debug.traceback(tostring(e), 2)
  end, self)
  if self.writer then pcall(self.writer.abort, self.writer) end
  if self.held then self.held:release() end
  if not rok then
    self.report:abort()
    if self.client then pcall(self.client.close, self.client) end
    if getmetatable(code) == Abort then
      if code.message then self.report:error(code.message) end
      return code.code
    end
    if err_mod.is_interrupt(code) then
      self.report:error("interrupted")
      return EXIT.FAILED
    end
    self.report:error("internal error: " .. tostring(code))
    return EXIT.FAILED
  end
  if self.client then pcall(self.client.close, self.client) end
  return code
end

return context
