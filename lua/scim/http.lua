--- HTTP engine: policy over scim.core's libcurl multi binding.
--
-- The C side moves bytes; this module decides: how many requests are in
-- flight (a window that shrinks on a bare 429 and grows back slowly), how
-- fast they start (a `rate` ceiling scheduled by target times, and an
-- adaptive rate that backs off on bare 429s and probes upwards again), what
-- is retried (connection failures, timeouts, 429, 502, 503, 504) and after
-- how long (exponential backoff with full jitter, or the server's
-- Retry-After), and which URLs are refused (plain http to anything but
-- loopback).
--
-- Throttling (429 and 503) is not failure: it uses no attempt of the
-- request's budget while the request's `deadline` lasts. When most recent
-- answers are 429s, a 429's Retry-After pauses the whole engine (the provider
-- says this client is over its limit); a 429 among passing answers, and a
-- 503, delay only their own request, which holds no in-flight slot while it
-- sleeps. A Retry-After that ends past the request's deadline fails it at
-- once with code "THROTTLED" and the time to come back.
--
-- Requests are written straight-line. Inside a coroutine run by `http.run`,
-- `engine:request` yields until its response arrives while other coroutines
-- run; anywhere else it drives the engine itself until the response is in.
--
-- Why this module is long: the engine's policy (window, rate, retries, throttling, the
-- body budget) and the scheduler that drives engines and coroutines share the job records,
-- timers and wake-ups of every request; split, those internals would become an interface.
-- Secrets and URL checks, which stand alone, are small sections at the top.
-- @module scim.http
local core = require "scim.core"

local monotime, getdate, walltime = core.monotime, core.getdate, core.walltime
local cocreate, coresume, corunning = coroutine.create, coroutine.resume, coroutine.running
local costatus, coyield, coclose = coroutine.status, coroutine.yield, coroutine.close
local isyieldable = coroutine.isyieldable
local floor, min, max, random, huge = math.floor, math.min, math.max, math.random, math.huge
local type, pairs, ipairs, next, pcall, error = type, pairs, ipairs, next, pcall, error
local tostring, tonumber, setmetatable = tostring, tonumber, setmetatable
local sfind, ssub, slower, sformat, smatch = string.find, string.sub, string.lower,
  string.format, string.match

local http = {}

local DEFAULT_USER_AGENT = "scim-agent/" .. core._VERSION
http.DEFAULT_USER_AGENT = DEFAULT_USER_AGENT

-- The longest a scheduler waits in C before looking again; bounds every loop in time.
local MAX_WAIT = 1.0

-- The token a waiting coroutine yields to its scheduler.
local WAIT = setmetatable({}, { __name = "scim.http.wait" })
-- The token a run's coroutine yields when its item is done: it waits for the next one.
local IDLE = setmetatable({}, { __name = "scim.http.idle" })
-- coroutine -> the scheduler running it (weak: a finished coroutine is
-- forgotten). Only a lookup: each scheduler steps its own engines.
local managed = setmetatable({}, { __mode = "k" })

-- HTTP statuses and transport failures that are worth another attempt.
local RETRY_STATUS = { [429] = true, [502] = true, [503] = true, [504] = true }
-- Of those, the answers that mean "not now" rather than "broken": retried
-- without using an attempt while the request's deadline lasts.
local THROTTLE_STATUS = { [429] = true, [503] = true }
local RETRY_CODE = {
  COULDNT_RESOLVE_HOST = true, COULDNT_RESOLVE_PROXY = true, COULDNT_CONNECT = true,
  OPERATION_TIMEDOUT = true, GOT_NOTHING = true, SEND_ERROR = true, RECV_ERROR = true,
  PARTIAL_FILE = true, SSL_CONNECT_ERROR = true, HTTP2 = true, HTTP2_STREAM = true,
  WEIRD_SERVER_REPLY = true, NO_CONNECTION_AVAILABLE = true,
  BODY_BUDGET = true,  -- the other responses in flight free the budget as they finish
}
http.RETRY_STATUS, http.RETRY_CODE = RETRY_STATUS, RETRY_CODE
http.THROTTLE_STATUS = THROTTLE_STATUS

-- Adaptive rate (bare 429s): the multiplicative decrease, the slowest rate
-- probed, how far back the passed-request rate is measured (seconds), and how
-- late a start may be and still be made up by the next one (seconds).
local RATE_DECREASE, RATE_FLOOR, RATE_SPAN, RATE_LAG = 0.85, 0.5, 5, 0.005

-- Header names whose values are secrets, lower-cased.
local SECRET_HEADERS = { authorization = true, ["proxy-authorization"] = true,
  cookie = true, ["x-api-key"] = true }

local OPTION_TYPES = {
  concurrency = "number", rate = "number", burst = "number", retries = "number",
  timeout = "number", connect_timeout = "number", user_agent = "string", headers = "table",
  ca_file = "string", insecure = "boolean", proxy = "string", allow_http = "boolean",
  max_body = "number", trace = "function", backoff_base = "number", backoff_cap = "number",
  max_retry_after = "number", forbid_reuse = "boolean", max_connects = "number",
  low_speed_time = "number", low_speed_limit = "number", min_window = "number",
  deadline = "number", body_budget = "number",
}

local REQUEST_TYPES = {
  method = "string", url = "string", headers = "table", body = "string",
  timeout = "number", retries = "number", deadline = "number",
}

local function check_options(opts, types, what, level)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(sformat("%s: options table expected, got %s", what, type(opts)), level + 1)
  end
  for k, v in pairs(opts) do
    local t = types[k]
    if not t then
      error(sformat("%s: unknown option '%s'", what, tostring(k)), level + 1)
    elseif t ~= "any" and type(v) ~= t then
      error(sformat("%s: option '%s' must be a %s, got %s", what, k, t, type(v)), level + 1)
    end
  end
  return opts
end

--- Checks an options table: every key must be in `types` (name -> Lua type name, or "any").
-- Raises "<what>: unknown option 'k'" or "<what>: option 'k' must be a T, got U" where
-- `error(msg, level)` in the caller would; nil gives {}. Shared with scim.client.
http.check_options = check_options
--- The type of every `http.new` option (scim.client passes some of them through).
http.OPTION_TYPES = OPTION_TYPES

local function positive(opts, key, what, integer, allow_zero)
  local v = opts[key]
  if v == nil then return end
  if v ~= v or v == huge or v < 0 or (v == 0 and not allow_zero)
      or (integer and v ~= floor(v)) then
    error(sformat("%s: option '%s' must be a %s%s number", what, key,
      allow_zero and "non-negative" or "positive", integer and " whole" or ""), 3)
  end
end

-- Checks one request spec (for engine:request and engine:each).
local function check_spec(spec, what, level)
  check_options(spec, REQUEST_TYPES, what, level + 1)
  if type(spec) ~= "table" or type(spec.url) ~= "string" then
    error(what .. ": option 'url' is required", level + 1)
  end
  local r = spec.retries
  if r ~= nil and (r < 1 or r ~= floor(r)) then
    error(what .. ": option 'retries' must be a positive whole number", level + 1)
  end
  local d = spec.deadline
  if d ~= nil and not (d > 0 and d < huge) then
    error(what .. ": option 'deadline' must be a positive number", level + 1)
  end
end

-- == Secrets and redaction ==

--- Replaces every occurrence of each secret in s (plain text, no patterns)
-- and the user:password part of any URL with "[redacted]".
-- @tparam string s text
-- @tparam {string,...} secrets
-- @treturn string
local function scrub(s, secrets)
  if type(s) ~= "string" then return s end
  for i = 1, #secrets do
    local secret = secrets[i]
    local from = 1
    while true do
      local a, b = sfind(s, secret, from, true)
      if not a then break end
      s = ssub(s, 1, a - 1) .. "[redacted]" .. ssub(s, b + 1)
      from = a + 10
    end
  end
  -- user:password@ in a URL
  s = s:gsub("(%a[%w+.-]*://)[^/@%s]+@", "%1[redacted]@")
  return s
end
http.scrub = scrub

-- Adds the secret parts of a header value: the whole value and the
-- credentials after an auth scheme ("Bearer <token>"). Short values are
-- skipped: redacting "ab" everywhere would mangle traces, not protect.
local function add_secret(secrets, value)
  value = tostring(value)
  local cred = smatch(value, "^%S+%s+(%S.*)$")
  for _, v in ipairs{ value, cred } do
    if #v >= 4 and not secrets[v] then
      secrets[v] = true
      secrets[#secrets + 1] = v
    end
  end
end

-- A copy of a headers option with values as strings; secret values are added
-- to `secrets`. `what` names the option's owner in the error (raised at `level`).
local function copy_headers(src, secrets, what, level)
  local dst = {}
  for name, value in pairs(src or {}) do
    if type(name) ~= "string" or (type(value) ~= "string" and type(value) ~= "number") then
      error(what .. ": option 'headers' must map names to string values", level + 1)
    end
    dst[name] = tostring(value)
    if SECRET_HEADERS[slower(name)] then add_secret(secrets, value) end
  end
  return dst
end

-- == URL policy ==

--- True for a host name that is surely this machine: localhost, 127.x.y.z, [::1].
-- @tparam string host as curl's URL parser gives it
-- @treturn boolean
local function is_loopback(host)
  host = slower(host)
  if host == "localhost" or host == "[::1]" then return true end
  local a, b, c, d = smatch(host, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return false end
  a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  return a == 127 and b <= 255 and c <= 255 and d <= 255
end
http.is_loopback = is_loopback

--- Checks a URL before any traffic, with curl's own parser (so the host
-- checked is the host curl would connect to).
-- @tparam string url
-- @tparam[opt] boolean allow_http allow plain http to any host
-- @treturn table the parsed URL `{ scheme=, host=, port=, path=, query=, loopback= }`
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string "URL_MALFORMAT", "UNSUPPORTED_PROTOCOL" or "HTTP_REFUSED"
local function check_url(url, allow_http)
  local u, err, code = core.parse_url(url)
  if not u then return nil, err, code end
  local scheme = slower(u.scheme or "")
  if scheme ~= "http" and scheme ~= "https" then
    return nil, "unsupported scheme '" .. scheme .. "' (http or https expected)",
      "UNSUPPORTED_PROTOCOL"
  end
  u.loopback = is_loopback(u.host or "")
  if scheme == "http" and not u.loopback and not allow_http then
    return nil, "plain http refused to non-loopback host " .. tostring(u.host)
      .. " (use https, or allow_http)", "HTTP_REFUSED"
  end
  return u
end
http.check_url = check_url

--- The wait a Retry-After header asks for: seconds, or an HTTP date (measured
-- against the response's own Date header when there is one, so the two
-- clocks need not agree).
-- @tparam table headers response headers, lower-case names
-- @treturn ?number seconds, or nil when absent or unreadable
local function retry_after(headers)
  local v = headers["retry-after"]
  if not v then return nil end
  local secs = tonumber(smatch(v, "^%s*(%d+)%s*$"))
  if secs then return secs end
  local at = getdate(v)
  if not at then return nil end
  local now = headers.date and getdate(headers.date) or walltime()
  return max(0, at - now)
end
http.retry_after = retry_after

-- == The engine ==

local Engine = {}
Engine.__index = Engine
Engine.__name = "scim.http.engine"

local function push_back(self, job)
  self.qtail = self.qtail + 1
  self.queue[self.qtail] = job
end

local function push_front(self, job)
  self.qhead = self.qhead - 1
  self.queue[self.qhead] = job
end

local function pop(self)
  local h = self.qhead
  if h > self.qtail then return nil end
  local job = self.queue[h]
  self.queue[h] = nil
  self.qhead = h + 1
  return job
end

local function emit(self, line)
  local ok, err = pcall(self.trace, scrub(line, self.secrets))
  if not ok then
    warn("scim.http: trace function failed: ", tostring(err))
  end
end

local function wake(co)
  local sched = co and managed[co]
  if sched then
    sched.rtail = sched.rtail + 1
    sched.ready[sched.rtail] = co
  end
end

-- A job waiting out a retry delay: its coroutine holds no place of its run's
-- concurrency (see Scheduler:run) until the job is queued again or done.
local function nap(job)
  local sched = job.waiter and not job.notify and managed[job.waiter]  -- `each` waits on many
  if sched and not job.napping then
    job.napping = sched
    sched.napping = sched.napping + 1
  end
end

local function unnap(job)
  local sched = job.napping
  if sched then
    job.napping = nil
    sched.napping = sched.napping - 1
  end
end

local function finish(self, job, res, err, code)
  unnap(job)
  job.done, job.res, job.err, job.code = true, res, err, code
  if job.req then
    job.req:close()
    job.req = nil
  end
  self.pending = self.pending - 1
  self.finished = self.finished + 1
  local q = job.notify  -- an engine:each iterator collecting completions
  if q then
    q.n = q.n + 1
    q[q.n] = job
  end
  wake(job.waiter)
end

-- "METHOD url: reason", scrubbed: the message of every failure.
local function failure(self, method, url, msg)
  return method .. " " .. scrub(url, self.secrets) .. ": " .. scrub(tostring(msg), self.secrets)
end

local function fail(self, job, msg, code)
  finish(self, job, nil, failure(self, job.method, job.url, msg), code)
end

local function backoff(self, tries)
  return random() * min(self.backoff_cap, self.backoff_base * 2 ^ (tries - 1))
end

-- Schedules another attempt of job at time `due`. A throttled retry gives
-- back the attempt it used: throttling is bounded by the deadline instead.
local function retry(self, job, due, why, throttled)
  local counters = self.counters
  counters.retries = counters.retries + 1
  if throttled then
    job.attempts = job.attempts - 1
    counters.throttled = counters.throttled + 1
  end
  job.due = due
  nap(job)
  self.delayed[#self.delayed + 1] = job
  if due < self.next_delayed then self.next_delayed = due end
  if self.trace then
    local wait = max(0, due - monotime())
    if throttled then
      emit(self, sformat("[%d] throttled (%s): retry in %.3f s, no attempt used (%.0f s of"
        .. " the deadline left)", job.id, tostring(why), wait, job.deadline - monotime()))
    else
      emit(self, sformat("[%d] retry %d/%d in %.3f s after %s", job.id, job.attempts + 1,
        job.max_attempts, wait, tostring(why)))
    end
  end
end

-- Fails job with code "THROTTLED": the server asked for a pause of `wait`
-- seconds (nil: unknown) that its deadline cannot cover. The 4th value of
-- the failure says when to come back.
local function throttled(self, job, status, wait)
  local info = { status = status }
  local msg
  if wait then
    local at = walltime() + wait
    info.retry_after, info.retry_at = wait, at
    if not self.retry_at or at > self.retry_at then self.retry_at = at end
    msg = sformat("throttled (%s): the server asks to come back in %d s (at %s),"
      .. " past the request's deadline", tostring(status), math.ceil(wait),
      os.date("!%Y-%m-%dT%H:%M:%SZ", floor(at)))
  else
    msg = sformat("throttled (%s) until the request's deadline (%g s) passed",
      tostring(status), self.deadline)
  end
  job.info = info
  self.counters.errors.THROTTLED = (self.counters.errors.THROTTLED or 0) + 1
  fail(self, job, msg, "THROTTLED")
end

local function response(job, req, headers)
  return {
    status = req:status(),
    headers = headers or req:headers(),
    body = req:body(),
    attempts = job.sends,
    method = job.method,
    url = job.url,
    elapsed = monotime() - job.created,
  }
end

-- Stops tracking req as in flight; returns its job, or nil if untracked.
local function untrack(self, req)
  local job = req and self.jobs[req]
  if job then
    self.jobs[req] = nil
    self.inflight = self.inflight - 1
  end
  return job
end

-- The rate of passed (not throttled) answers over the last RATE_SPAN
-- seconds, measured over at least 0.1 s.
local function passed_rate(self, now)
  local ring, n, size = self.passed, self.npassed, #self.passed
  local from = now - RATE_SPAN
  local count = 0
  for i = n, max(1, n - size + 1), -1 do
    if ring[(i - 1) % size + 1] < from then break end
    count = count + 1
  end
  local span = min(RATE_SPAN, now - (self.first_start or now))
  return count / max(span, 0.1)
end

-- How many recent answers `over_limit` weighs.
local RECENT = 8

-- Records whether an answer was a 429 and says whether the provider is refusing most of
-- what it gets (at least half of the last answers): then its Retry-After means "this client
-- is over its limit" and holds the whole engine. A 429 among mostly passing answers (a
-- provider refusing a share of requests whatever the rate) delays only its own request:
-- pausing everything for each of them would cut throughput to a window per pause.
local function over_limit(self, refused)
  local ring = self.recent
  local n = self.nrecent + 1
  self.nrecent = n
  local slot = (n - 1) % RECENT + 1
  if ring[slot] then self.nrefused = self.nrefused - 1 end
  ring[slot] = refused
  if refused then self.nrefused = self.nrefused + 1 end
  return self.nrefused * 2 >= min(n, RECENT)
end

-- A bare 429 (no Retry-After): the provider is over its limit and does not
-- say for how long. Once per round of requests (those sent after the last
-- decrease), halve the window and set the rate to a fraction of the rate it
-- had (at first: of the rate of passed answers).
local function slow_down(self, job, now)
  if job.epoch ~= self.epoch then return end
  self.epoch = self.epoch + 1
  self.cwnd = max(self.min_window, self.cwnd / 2)
  -- from the rate we were held to, unless far more than what passed (then
  -- something else held us back, and what passed is the better measure)
  local base = passed_rate(self, now)
  if self.arate and self.arate < 1.5 * base then base = self.arate end
  local r = self.arate
  -- where refusals began, once the rate grew since the last decrease (the
  -- first refusals of a burst say nothing about the provider's rate)
  if r and r > self.rset then self.rmax = r end
  self.arate = max(RATE_FLOOR, base * RATE_DECREASE)
  self.rset = self.arate
end

-- A passed answer: the window grows (about +1 request in flight per window)
-- and so does the adaptive rate: by 50% per second until the rate where
-- refusals begin is known, by 25% per second below 95% of it, then by
-- max(1, 5%) req/s per second, probing for more. Answers come at about the rate, so a
-- per-answer step of (growth per second) / rate does that.
local function speed_up(self, now)
  local n = self.npassed + 1
  local ring = self.passed
  ring[(n - 1) % #ring + 1] = now
  self.npassed = n
  if self.cwnd < self.max_window then
    self.cwnd = min(self.max_window, self.cwnd + 1 / self.cwnd)
  end
  local r = self.arate
  if r then
    local rmax = self.rmax
    local grow = not rmax and 0.5 * r or r < 0.95 * rmax and 0.25 * r or max(1, 0.05 * r)
    self.arate = r + grow / r
  end
end

-- Fails every waiting job whose deadline ends before the engine's hold.
local function expire_held(self)
  local hold = self.hold_until
  local wait = hold - monotime()
  for i = self.qhead, self.qtail do
    local job = self.queue[i]
    if job and not job.done and job.deadline < hold then throttled(self, job, 429, wait) end
  end
  for _, job in ipairs(self.delayed) do
    if not job.done and job.deadline < hold then throttled(self, job, 429, wait) end
  end
end

-- One finished transfer: account, then retry or hand the result over.
local function complete(self, req, ok, msg, code)
  local job = untrack(self, req)
  if not job then req:close() return end  -- not ours (cannot happen): just free it
  if self.trace then
    local lines = req:trace()
    for i = 1, #lines do emit(self, "[" .. job.id .. "] " .. lines[i]) end
  end
  local now = monotime()
  local stats = self.counters
  if ok then
    local status = req:status()
    stats.by_status[status] = (stats.by_status[status] or 0) + 1
    if not RETRY_STATUS[status] then
      over_limit(self, false)
      speed_up(self, now)
      return finish(self, job, response(job, req))
    end
    local headers = req:headers()
    local wait = retry_after(headers)
    local over = status == 429 and over_limit(self, true)
    if self.stopped then
      return fail(self, job, "not retried: engine stopped (" .. self.stopped .. ")", "STOPPED")
    end
    if THROTTLE_STATUS[status] then
      local due
      if wait then
        due = now + wait
        if over and due > self.hold_until then
          self.hold_until = due  -- the whole engine waits, then goes on as it was
          expire_held(self)
        end
        if due > job.deadline or (self.max_retry_after and wait > self.max_retry_after) then
          return throttled(self, job, status, wait)
        end
      elseif status == 429 then
        slow_down(self, job, now)
        due = now  -- the adaptive rate spaces it
      else
        due = now + backoff(self, job.sends)
      end
      if due > job.deadline then return throttled(self, job, status) end
      return retry(self, job, due, status, true)
    end
    if job.attempts < job.max_attempts
        and (not wait or not self.max_retry_after or wait <= self.max_retry_after) then
      return retry(self, job, now + max(wait or 0, backoff(self, job.sends)), status)
    end
    return finish(self, job, response(job, req, headers))
  end
  stats.errors[code] = (stats.errors[code] or 0) + 1
  if RETRY_CODE[code] and job.attempts < job.max_attempts then
    if self.stopped then
      return fail(self, job, msg .. " (not retried: engine stopped)", code)
    end
    return retry(self, job, now + backoff(self, job.sends), code)
  end
  return fail(self, job, msg, code)
end

-- Starts queued jobs as far as the window, the hold and the rate allow.
-- The rate is met by target times (GCRA): a start that wakes up late moves
-- the next target by less, so late wake-ups are made up, not lost.
-- Returns the time at which a timer-blocked job could start, or nil.
local function start(self, now)
  local due
  while self.qhead <= self.qtail do
    local head = self.queue[self.qhead]
    if head.done then  -- cancelled while queued
      pop(self)
      goto continue
    end
    if self.inflight >= floor(self.cwnd) then break end  -- a completion reopens it
    if now < self.hold_until then
      if head.deadline < self.hold_until then
        throttled(self, pop(self), 429, self.hold_until - now)
        goto continue
      end
      due = self.hold_until
      break
    end
    do
      local r, tau, lag = self.rate, self.tau, RATE_LAG
      local ar = self.arate
      -- the adaptive rate keeps every gap: it probes for the provider's limit,
      -- and a gap made short to catch up could be refused
      if ar and (not r or ar < r) then r, tau, lag = ar, 0, 0 end
      if r then
        local tat = self.tat
        if now < tat - tau then due = tat - tau break end
        self.tat = max(tat, now - lag) + 1 / r
      end
    end
    do
      local job = pop(self)
      job.attempts = job.attempts + 1
      job.sends = job.sends + 1
      job.epoch = self.epoch
      if not self.first_start then self.first_start = now end
      local counters = self.counters
      counters.requests = counters.requests + 1
      local ok, msg, code = self.multi:add(job.req)
      if ok then
        self.jobs[job.req] = job
        self.inflight = self.inflight + 1
        if self.inflight > counters.max_inflight then counters.max_inflight = self.inflight end
      else
        fail(self, job, msg, code)
      end
    end
    ::continue::
  end
  return due
end

-- Moves retries whose backoff is over to the front of the queue.
local function release(self, now)
  if now < self.next_delayed then return end
  local delayed, keep, nd = self.delayed, {}, huge
  for i = #delayed, 1, -1 do  -- reversed, so push_front keeps their order
    local job = delayed[i]
    if not job.done then  -- a job cancelled while waiting is forgotten
      if job.due <= now then
        unnap(job)
        push_front(self, job)
      else
        keep[#keep + 1] = job
        if job.due < nd then nd = job.due end
      end
    end
  end
  self.delayed, self.next_delayed = keep, nd
end

-- One round for one engine: release due retries, start what may start, let
-- curl work, collect every finished transfer. Completions reopen the window,
-- so this repeats while they do (bounded). It always ends with next_done
-- drained after the last perform: a finished transfer left unread would
-- make the following poll sleep with nothing to wake it.
-- Returns the next time a timer needs attention, or nil.
local function pump(self, now)
  local multi = self.multi
  local due
  for _ = 1, 64 do
    release(self, now)
    due = start(self, now)
    if self.inflight == 0 then break end
    multi:perform()
    local completed = false
    while not self.closed do  -- a trace function may close the engine
      local req, ok, msg, code = multi:next_done()
      if not req then break end
      complete(self, req, ok, msg, code)
      completed = true
    end
    if not completed or self.closed then break end
    now = monotime()
  end
  if self.next_delayed < huge and (not due or self.next_delayed < due) then
    due = self.next_delayed
  end
  return due
end

-- == The scheduler ==
--
-- A scheduler drives the engines bound to it (those with work for its
-- coroutines, or, for a request made outside any run, the engine's own) and
-- resumes its coroutines as their responses arrive. `http.run` makes one per
-- run; nothing steps engines behind a scheduler's back.

local Scheduler = {}
Scheduler.__index = Scheduler
Scheduler.__name = "scim.http.scheduler"

local function new_scheduler(concurrency)
  return setmetatable({
    concurrency = concurrency,
    ready = {}, rhead = 1, rtail = 0,                   -- coroutines to resume
    napping = 0,                                        -- of its coroutines: waiting out a delay
    engines = setmetatable({}, { __mode = "k" }),       -- engine -> true while it has work
    stopped = nil,
  }, Scheduler)
end

-- Binds engine to sched: sched drives it until its work is done.
local function bind(engine, sched)
  sched.engines[engine] = true
end

-- One round over the scheduler's engines, then (unless a request finished)
-- one wait in C on their sockets until a transfer makes progress or the
-- next timer is due. Returns false when no engine has work.
local function step(sched)
  local engines, n = {}, 0
  for e in pairs(sched.engines) do
    if e.closed or e.pending == 0 then
      sched.engines[e] = nil
    else
      n = n + 1
      engines[n] = e
    end
  end
  if n == 0 then return false end
  local now = monotime()
  local wait = MAX_WAIT
  local active, na, progressed = {}, 0, false
  local napping = sched.napping
  for i = 1, n do
    local e = engines[i]
    local before = e.finished
    local due = pump(e, now)
    if e.finished ~= before then progressed = true end
    if due then wait = min(wait, max(0, due - monotime())) end
    if e.inflight > 0 and not e.closed then
      na = na + 1
      active[na] = e.multi
    end
  end
  -- A request that began to sleep frees its item's place: the run may start another.
  if progressed or sched.napping > napping then return true end
  if na == 1 then
    active[1]:poll(wait)
  elseif na > 1 or wait > 0 then
    core.wait(active, wait)  -- with no socket (only timers pending) it is a sleep
  end
  return true
end

-- The scheduler a request made now belongs to: the running coroutine's
-- when it may yield (the coroutine waits), else the engine's own (the
-- caller drives it until the response is in). Binds the engine to it.
local function driver(self)
  local co = corunning()
  local sched = co and managed[co]
  if sched and isyieldable() then
    bind(self, sched)
    return sched, co
  end
  local own = self.own
  if not own then
    own = new_scheduler(1)
    self.own = own
  end
  bind(self, own)
  return own, nil
end

--- Creates an engine.
-- @tparam[opt] table opts `concurrency` (in-flight window, default 8), `rate` (requests
--   per second ceiling), `burst` (token bucket size, default 1), `retries` (max attempts
--   including the first, default 5), `timeout` (seconds per attempt, default 30),
--   `connect_timeout` (default 10), `user_agent`, `headers` (sent on every request; secret
--   values are redacted), `ca_file`, `insecure`, `proxy` (every request goes through it,
--   loopback included; without it libcurl's http_proxy, HTTPS_PROXY, ALL_PROXY and
--   no_proxy variables apply, except to loopback URLs), `allow_http`, `max_body` (default
--   64 MiB), `trace` (function receiving redacted trace lines), `backoff_base` (0.5 s),
--   `backoff_cap` (30 s), `deadline` (seconds, default 300: how long a request may be
--   throttled, by 429/503 answers, before it fails "THROTTLED"; throttled retries use no
--   attempt), `max_retry_after` (default none: a longer Retry-After fails the request
--   "THROTTLED" at once, as one past the deadline does), `forbid_reuse` (a new connection
--   per request), `max_connects`, `min_window` (1), `body_budget` (bytes all responses in
--   flight may hold together, default 256 MiB: past it a transfer fails "BODY_BUDGET" and
--   is retried; one response over it alone fails "BODY_TOO_LARGE").
-- @treturn scim.http.engine
-- @raise on a bad option
-- @usage local engine = http.new{ concurrency = 16, headers = { Authorization = "Bearer " .. t } }
function http.new(opts)
  local what = "scim.http.new"
  opts = check_options(opts, OPTION_TYPES, what, 2)
  positive(opts, "concurrency", what, true)
  positive(opts, "rate", what)
  positive(opts, "burst", what)
  if opts.burst and opts.burst < 1 then
    error("scim.http.new: option 'burst' must be at least 1", 2)
  end
  positive(opts, "retries", what, true)
  positive(opts, "timeout", what)
  positive(opts, "connect_timeout", what)
  positive(opts, "max_body", what, true, true)
  positive(opts, "backoff_base", what, false, true)
  positive(opts, "backoff_cap", what, false, true)
  positive(opts, "max_retry_after", what, false, true)
  positive(opts, "deadline", what)
  positive(opts, "body_budget", what, true)
  positive(opts, "max_connects", what, true)
  positive(opts, "min_window", what, true)
  local concurrency = opts.concurrency or 8
  local secrets = {}
  local headers = copy_headers(opts.headers, secrets, what, 2)
  local self = setmetatable({
    multi = core.multi{
      max_connects = opts.max_connects or max(concurrency, 8),
      body_budget = opts.body_budget or 256 * 1024 * 1024,
    },
    headers = headers,
    secrets = secrets,
    trace = opts.trace,
    user_agent = opts.user_agent or DEFAULT_USER_AGENT,
    timeout = opts.timeout or 30,
    connect_timeout = opts.connect_timeout or 10,
    low_speed_time = opts.low_speed_time,
    low_speed_limit = opts.low_speed_limit,
    ca_file = opts.ca_file,
    insecure = opts.insecure or false,
    proxy = opts.proxy,
    allow_http = opts.allow_http or false,
    max_body = opts.max_body or 64 * 1024 * 1024,
    forbid_reuse = opts.forbid_reuse or false,
    max_attempts = opts.retries or 5,
    backoff_base = opts.backoff_base or 0.5,
    backoff_cap = opts.backoff_cap or 30,
    max_retry_after = opts.max_retry_after,
    deadline = opts.deadline or 300,
    -- window (AIMD)
    max_window = concurrency,
    min_window = min(opts.min_window or 1, concurrency),
    cwnd = concurrency,
    epoch = 0,
    -- rate: the ceiling, its burst as a time allowance, the next target time,
    -- the adaptive rate (nil until a bare 429) and the passed answers' times
    rate = opts.rate,
    tau = opts.rate and ((opts.burst or 1) - 1) / opts.rate or 0,
    tat = -huge,
    arate = nil, rmax = nil, rset = huge,
    passed = {}, npassed = 0,
    first_start = nil,
    hold_until = -huge,
    recent = {}, nrecent = 0, nrefused = 0,  -- the last answers: 429 or not (over_limit)
    retry_at = nil,
    stopped = nil,
    -- work
    queue = {}, qhead = 1, qtail = 0,
    delayed = {}, next_delayed = huge,
    jobs = {},       -- C request -> job, for transfers in flight
    origins = {}, norigins = 0,  -- "scheme://authority/" -> loopback, for URLs that passed
    inflight = 0,
    pending = 0,     -- jobs not yet finished
    finished = 0,    -- jobs finished, ever (a driver checks it before waiting)
    own = nil,       -- the scheduler that drives requests made outside any run
    next_id = 0,
    closed = false,
    counters = { requests = 0, retries = 0, throttled = 0, by_status = {}, errors = {},
      max_inflight = 0 },
  }, Engine)
  for i = 1, 256 do self.passed[i] = 0 end
  return self
end

-- Whether url goes to loopback, once it passed check_url; nil, message, code if it fails.
-- curl's parser is costly for every request to the same server, so an origin that passed
-- is remembered: a URL starting with the very same "scheme://authority/" has the same host
-- whatever its path (the authority ends at the first '/'). Anything unusual is parsed.
local function url_loopback(self, url)
  local origin
  if not sfind(url, "[%s%c]") then origin = smatch(url, "^(https?://[^/?#\\]+/)") end
  if origin and self.origins[origin] ~= nil then return self.origins[origin] end
  local u, err, code = check_url(url, self.allow_http)
  if not u then return nil, err, code end
  if origin and self.norigins < 64 then
    self.origins[origin] = u.loopback
    self.norigins = self.norigins + 1
  end
  return u.loopback
end

-- Builds a job for spec, or returns nil, message, code (nothing sent).
local function submit(self, spec)
  local method = spec.method or (spec.body and "POST" or "GET")
  local url = spec.url
  local loopback, err, code = url_loopback(self, url)
  if loopback == nil then
    return nil, failure(self, method, url, err), code
  end
  if self.stopped then
    return nil, failure(self, method, url, "not started: engine stopped (" .. self.stopped
      .. ")"), "STOPPED"
  end
  local headers = copy_headers(spec.headers, self.secrets, "request", 3)
  local seen = {}
  for name in pairs(headers) do seen[slower(name)] = true end
  for name, value in pairs(self.headers) do
    if not seen[slower(name)] then headers[name] = value end
  end
  local req = core.request{
    method = method, url = url, headers = headers, body = spec.body,
    timeout = spec.timeout or self.timeout, connect_timeout = self.connect_timeout,
    low_speed_time = self.low_speed_time, low_speed_limit = self.low_speed_limit,
    ca_file = self.ca_file, insecure = self.insecure, proxy = self.proxy,
    -- loopback never goes through an environment proxy
    noproxy = (loopback and not self.proxy) and "*" or nil,
    max_body = self.max_body, user_agent = self.user_agent,
    trace = self.trace ~= nil, forbid_reuse = self.forbid_reuse,
  }
  self.next_id = self.next_id + 1
  local job = {
    id = self.next_id, req = req, method = method, url = url, attempts = 0, sends = 0,
    max_attempts = spec.retries or self.max_attempts, created = monotime(),
  }
  job.deadline = job.created + (spec.deadline or self.deadline)
  self.pending = self.pending + 1
  push_back(self, job)
  return job
end

--- Sends a request, retrying as the policy says, and returns its response.
-- Inside a coroutine run by `http.run` it yields until the response is in;
-- elsewhere it drives the engine itself (only this engine).
-- @tparam table spec `method` (default GET, or POST with a body), `url`, `headers`,
--   `body` (string), `timeout` (seconds, per attempt), `retries` (max attempts),
--   `deadline` (seconds this request may be throttled; default the engine's)
-- @treturn table `{ status=, headers= (lower-case names), body=, attempts= (sends),
--   method=, url=, elapsed= }` for any HTTP status (after retries of 502/504 the last
--   response; 429 and 503 are retried until the deadline)
-- @treturn[2] nil
-- @treturn[2] string message "METHOD url: reason", never holding a secret
-- @treturn[2] string code: the CURLE name (e.g. "COULDNT_CONNECT"), "PROXY" (a proxy
--   refused the tunnel; not retried), "BODY_TOO_LARGE", "BODY_BUDGET" (the responses in
--   flight held the engine's `body_budget`, still so after the retries), "THROTTLED"
--   (429/503 past the deadline, or a Retry-After ending past it), "STOPPED" (`engine:stop()`),
--   "HTTP_REFUSED", "UNSUPPORTED_PROTOCOL", "URL_MALFORMAT" or "CLOSED"
-- @treturn[2] ?table for "THROTTLED": `{ status=, retry_after= (seconds), retry_at= (epoch
--   seconds) }`, the times nil when the server named none
-- @raise on a bad spec or a closed engine
-- @usage local res, err = engine:request{ method = "GET", url = base .. "Users/42" }
function Engine:request(spec)
  if self.closed then error("attempt to use a closed scim.http.engine", 2) end
  check_spec(spec, "request", 2)
  local job, err, code = submit(self, spec)
  if not job then return nil, err, code end
  local sched, co = driver(self)
  if co then
    job.waiter = co
    repeat coyield(WAIT) until job.done
  else
    -- Synchronous: bounded in time by timeouts x attempts; each step waits in C.
    while not job.done do
      if not step(sched) then error("scim.http: request lost (engine has no work)") end
    end
  end
  return job.res, job.err, job.code, job.info
end

--- Stops starting requests: queued and delayed ones (retries included) fail
-- with code "STOPPED" at once, new ones fail so without being sent; those in
-- flight finish (and are not retried). For a caller that must stop, e.g.
-- after a "THROTTLED" failure or a revoked token. Idempotent.
-- @tparam[opt] string reason shown in the failures (default "stopped")
function Engine:stop(reason)
  if self.stopped or self.closed then return end
  self.stopped = tostring(reason or "stopped")
  local jobs = {}
  for i = self.qhead, self.qtail do jobs[#jobs + 1] = self.queue[i] end
  for _, job in ipairs(self.delayed) do jobs[#jobs + 1] = job end
  self.queue, self.qhead, self.qtail = {}, 1, 0
  self.delayed, self.next_delayed = {}, huge
  for _, job in ipairs(jobs) do
    if not job.done then
      fail(self, job, "not started: engine stopped (" .. self.stopped .. ")", "STOPPED")
    end
  end
end

-- Cancels an unfinished job: it finishes with code "CANCELLED"; a transfer
-- in flight is taken out of the multi (closing the request detaches it).
local function cancel(self, job)
  if job.done then return end
  untrack(self, job.req)
  fail(self, job, "cancelled", "CANCELLED")
end

--- Sends many requests through the window and returns them as they finish.
-- A generic-for iterator in completion order; at most twice the window is
-- prepared ahead. Breaking out of the loop cancels what is left (the 4th
-- value closes the iterator). Inside `http.run` it yields like `request`.
-- @tparam table specs an array of request specs (as for `engine:request`)
-- @treturn function iterator giving `index, response` or `index, nil, message, code[, info]`
-- @raise on a bad spec or a closed engine
-- @usage for i, res, err in engine:each(specs) do print(i, res and res.status or err) end
function Engine:each(specs)
  if self.closed then error("attempt to use a closed scim.http.engine", 2) end
  if type(specs) ~= "table" then error("bad argument #1 to 'each' (table expected)", 2) end
  local n = #specs
  for i = 1, n do check_spec(specs[i], "request " .. i, 2) end
  local done = { n = 0 }       -- finished jobs, in completion order
  local open = {}              -- index -> unfinished job
  local submitted, returned, head = 0, 0, 1
  local sched, waiter = driver(self)
  local ahead = 2 * self.max_window

  local function fill()
    bind(self, sched)
    while submitted < n and submitted - returned < ahead and not self.closed do
      submitted = submitted + 1
      local job, err, code = submit(self, specs[submitted])
      if job then
        job.index, job.notify, job.waiter = submitted, done, waiter
        open[submitted] = job
      else
        done.n = done.n + 1
        done[done.n] = { index = submitted, err = err, code = code }
      end
    end
  end

  local function iter()
    if returned >= n then return nil end
    fill()
    while head > done.n do
      if self.closed and next(open) == nil then return nil end
      if waiter then
        coyield(WAIT)
      elseif not step(sched) then
        error("scim.http: request lost (engine has no work)")
      end
    end
    local job = done[head]
    done[head] = nil
    head = head + 1
    returned = returned + 1
    open[job.index] = nil
    return job.index, job.res, job.err, job.code, job.info
  end

  local closer = setmetatable({}, { __close = function()
    for _, job in pairs(open) do
      if not self.closed then cancel(self, job) end
    end
  end })
  return iter, nil, nil, closer
end

--- Counters: `requests` (attempts sent), `retries` (throttled ones included),
-- `throttled` (429/503 answers retried without using an attempt), `by_status`
-- ({[200] = n}), `errors` (by code), `max_inflight`, `window` (current AIMD window),
-- `inflight`, `rate` (the adaptive rate in requests per second, nil until a bare 429),
-- `retry_at` (epoch seconds: the latest time a server asked to come back at, when a
-- request failed "THROTTLED" for it), `stopped` (the reason, once `stop` was called).
-- @treturn table a copy
function Engine:stats()
  local s = self.counters
  local by_status, errors = {}, {}
  for k, v in pairs(s.by_status) do by_status[k] = v end
  for k, v in pairs(s.errors) do errors[k] = v end
  return { requests = s.requests, retries = s.retries, throttled = s.throttled,
    by_status = by_status, errors = errors, max_inflight = s.max_inflight,
    window = floor(self.cwnd), inflight = self.inflight, rate = self.arate,
    retry_at = self.retry_at, stopped = self.stopped }
end

--- Closes the engine: unfinished requests fail with code "CLOSED" and their
-- connections are closed. Idempotent; also `__close` and `__gc`.
function Engine:close()
  if self.closed then return end
  self.closed = true
  local jobs = {}
  for _, job in pairs(self.jobs) do jobs[#jobs + 1] = job end
  for i = self.qhead, self.qtail do jobs[#jobs + 1] = self.queue[i] end
  for _, job in ipairs(self.delayed) do jobs[#jobs + 1] = job end
  self.jobs, self.queue, self.delayed = {}, {}, {}
  self.qhead, self.qtail, self.inflight = 1, 0, 0
  for _, job in ipairs(jobs) do
    if not job.done then fail(self, job, "engine closed", "CLOSED") end
  end
  self.multi:close()
end

Engine.__close = Engine.close

-- A collected engine cannot have waiters (they would keep it alive): only
-- the C handles need closing, and their own finalizers do that too.
function Engine.__gc(self)
  self.closed = true
  if self.multi then self.multi:close() end
end

function Scheduler.__tostring(self)
  return sformat("scim.http.scheduler (%s)", self.stopped and "stopped"
    or self.running and "running" or "idle")
end

function Engine.__tostring(self)
  return sformat("scim.http.engine (%s, %d in flight)", self.closed and "closed" or "open",
    self.inflight)
end

-- == Runs ==

-- Item source: an array, or an iterator function returning item values.
local function items_source(items)
  if type(items) == "function" then return items end
  if type(items) ~= "table" then
    error("scim.http.run: items must be an array or an iterator function", 3)
  end
  local i, n = 0, #items
  return function()
    i = i + 1
    if i <= n then return items[i] end
  end
end

local RUN_OPTIONS = { concurrency = "number", on_error = "function" }

--- Creates a scheduler: it runs items on coroutines and drives the engines
-- their requests use. `http.run` makes one per call; make one yourself to
-- keep a handle for `stop`.
-- @tparam[opt] table opts `concurrency` (items at once, default 16; an item whose request
--   waits out a Retry-After or a backoff does not count, up to 16x `concurrency` in all),
--   `on_error` (called as `on_error(err, item, index, scheduler)` when `fn` raises)
-- @treturn scim.http.scheduler
-- @raise on a bad option
function http.scheduler(opts)
  opts = check_options(opts, RUN_OPTIONS, "scim.http.run", 2)
  positive(opts, "concurrency", "scim.http.run", true)
  local sched = new_scheduler(opts.concurrency or 16)
  sched.on_error = opts.on_error
  return sched
end

--- Stops starting items: those running finish (their requests too), no
-- further item is taken from the source. Callable from `fn`, `on_error` or
-- anywhere else. Idempotent; the first reason is kept.
-- @tparam[opt] string reason given back as `summary.stopped` (default "stopped")
function Scheduler:stop(reason)
  if not self.stopped then self.stopped = tostring(reason or "stopped") end
end

--- Runs `fn(item, index, scheduler)` for every item (see `http.run`).
function Scheduler:run(items, fn)
  if type(fn) ~= "function" then error("scim.http.run: fn must be a function", 2) end
  if self.running then error("scim.http.run: this scheduler is already running", 2) end
  local source = items_source(items)
  local concurrency, on_error = self.concurrency, self.on_error
  local active, nactive = {}, 0  -- coroutine -> { index, item } (strong: they are running)
  -- Coroutines are reused, item after item: a new one per item cost its creation and the
  -- growth of its stack each time. One whose fn raised is dead and not reused.
  local idle, nidle = {}, 0
  local function worker(item, i, sched)
    while true do
      fn(item, i, sched)
      item, i, sched = coyield(IDLE)
    end
  end
  local summary = { done = 0, failed = 0, started = 0, errors = {} }
  local index, exhausted, source_error = 0, false, nil
  self.running = true

  local function failed(info, err, traceback)
    summary.failed = summary.failed + 1
    summary.errors[#summary.errors + 1] = { index = info[1], item = info[2], error = err,
      traceback = traceback }
    if on_error then
      local ok, e = pcall(on_error, err, info[2], info[1], self)
      if not ok then self:stop("on_error raised: " .. tostring(e)) end
    end
  end

  local function settle(co, ok, res)
    if ok and res == IDLE then
      active[co] = nil
      nactive = nactive - 1
      summary.done = summary.done + 1
      nidle = nidle + 1
      idle[nidle] = co
    elseif costatus(co) == "dead" then
      local info = active[co]
      active[co] = nil
      nactive = nactive - 1
      managed[co] = nil
      if ok then
        summary.done = summary.done + 1
      else
        local tb = debug.traceback(co, tostring(res))
        coclose(co)  -- runs its pending to-be-closed variables
        failed(info, res, tb)
      end
    elseif res ~= WAIT then
      -- Something inside fn yielded to us that is not a request: fail the item.
      local info = active[co]
      active[co] = nil
      nactive = nactive - 1
      managed[co] = nil
      coclose(co)
      failed(info, "fn yielded outside scim.http (a coroutine inside fn must not yield to run)")
    end
  end

  while true do
    -- An item whose request waits out a Retry-After or a backoff holds no place: a
    -- provider throttling a share of requests must not stall the run (up to 16x more).
    while not exhausted and not self.stopped
        and nactive < concurrency + min(self.napping, 15 * concurrency) do
      local ok, item = pcall(source)
      if not ok then
        exhausted, source_error = true, item
      elseif item == nil then
        exhausted = true
      else
        index = index + 1
        local co
        if nidle > 0 then
          co, idle[nidle] = idle[nidle], nil
          nidle = nidle - 1
        else
          co = cocreate(worker)
        end
        managed[co] = self
        active[co] = { index, item }
        nactive = nactive + 1
        settle(co, coresume(co, item, index, self))
      end
    end
    if self.rhead <= self.rtail then
      local h = self.rhead
      local co = self.ready[h]
      self.ready[h] = nil
      self.rhead = h + 1
      if active[co] then settle(co, coresume(co)) end
    elseif nactive == 0 then
      break
    elseif not step(self) then
      -- Coroutines wait but no engine has work: an engine was closed under them.
      self.running = false
      error("scim.http.run: coroutines waiting with no request in flight", 2)
    end
  end
  for k = 1, nidle do
    managed[idle[k]] = nil
    coclose(idle[k])
  end
  self.running = false
  summary.started = index
  summary.stopped = self.stopped
  if source_error ~= nil then error(source_error, 0) end
  return summary
end

--- Runs `fn(item, index, scheduler)` for every item on coroutines, at most
-- `opts.concurrency` at once. Requests made inside `fn` (by any engine or
-- client) yield to this run's scheduler, which drives the engines they use.
-- An error raised in `fn` fails that item only.
--
-- Stopping: the run takes no further item when the source returns nil (an
-- iterator can end early), or once `scheduler:stop(reason)` is called (`fn`
-- gets the scheduler as its 3rd argument; `opts.on_error` as its 4th). Items
-- already running finish; `summary.started` says how many were taken.
-- @tparam table|function items an array, or an iterator returning items (e.g. `reader:rows()`)
-- @tparam function fn called as `fn(item, index, scheduler)`
-- @tparam[opt] table opts `concurrency` (default 16), `on_error` (called as
--   `on_error(err, item, index, scheduler)` when `fn` raises; may call `scheduler:stop()`)
-- @treturn table `{ done = n, failed = n, started = n, stopped = reason or nil,
--   errors = { {index=, item=, error=, traceback=}, ... } }`
-- @raise on bad arguments; an error raised by the `items` iterator is re-raised
--   after the items already started have finished
-- @usage local summary = http.run(rows, function(row, _, run)
--   local res, err, code = client:create(m:to_resource(row))
--   if code == "THROTTLED" then run:stop(code) end
-- end, { concurrency = 16 })
function http.run(items, fn, opts)
  if type(fn) ~= "function" then error("scim.http.run: fn must be a function", 2) end
  opts = check_options(opts, RUN_OPTIONS, "scim.http.run", 2)
  local sched = http.scheduler(opts)
  return sched:run(items, fn)
end

return http
