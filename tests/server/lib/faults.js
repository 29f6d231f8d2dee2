// Fault injection and request statistics: the middleware every request passes
// first. With no fault rules set, the per-request cost is one counter update
// and one small record pushed at response end, so the benchmark against `wrk`
// measures the SCIM service, not this layer.

const MAX_RECORDS = 200000;           // request log cap; counters keep counting
const CHUNK = 64 * 1024;              // oversize bodies are streamed in chunks

const RULE_KEYS = new Set([
  "match", "count", "fraction", "latency_ms", "status", "retry_after", "retry_after_date",
  "drop", "stall_ms", "stall_then", "stall_at", "malformed", "oversize_bytes", "chunked", "body",
  "detail", "rate_limit", "burst",
]);

// A rule with none of these only adds latency.
const ACTIONS = ["status", "drop", "stall_ms", "malformed", "oversize_bytes", "rate_limit"];
const hasAction = (spec) => ACTIONS.some((k) => spec[k] !== undefined && spec[k] !== false);

const t0 = process.hrtime.bigint();

/** Milliseconds since the server started, to 0.01 ms. */
export function now() {
  return Math.round(Number(process.hrtime.bigint() - t0) / 1e4) / 100;
}

function fail(msg) {
  const err = new Error(msg);
  err.status = 400;
  throw err;
}

// "POST /Users", "/Users/", "GET", "* /Users" -> { method, prefix }
function parseMatch(match) {
  if (match === undefined || match === null || match === "") return { method: null, prefix: null };
  if (typeof match !== "string") fail("fault 'match' must be a string like \"POST /Users\"");
  const parts = match.trim().split(/\s+/);
  if (parts.length > 2) fail(`fault 'match' ${JSON.stringify(match)}: expected "METHOD /path"`);
  let method = null;
  let prefix = null;
  for (const p of parts) {
    if (p.startsWith("/")) prefix = p;
    else if (p === "*") method = null;
    else if (/^[A-Za-z]+$/.test(p)) method = p.toUpperCase();
    else fail(`fault 'match' ${JSON.stringify(match)}: bad part ${JSON.stringify(p)}`);
  }
  return { method, prefix };
}

function checkNumber(rule, key, min, max) {
  const v = rule[key];
  if (v === undefined) return;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || (max !== undefined && v > max))
    fail(`fault '${key}' must be a number in [${min}, ${max ?? "inf"}], got ${JSON.stringify(v)}`);
}

/** Validates one rule as sent by /_control/faults and returns its compiled form. */
export function compileRule(rule, index) {
  if (rule === null || typeof rule !== "object" || Array.isArray(rule))
    fail(`fault rule ${index + 1}: expected an object`);
  for (const k of Object.keys(rule))
    if (!RULE_KEYS.has(k)) fail(`fault rule ${index + 1}: unknown key '${k}'`);
  checkNumber(rule, "count", 0);
  checkNumber(rule, "fraction", 0, 1);
  checkNumber(rule, "latency_ms", 0, 600000);
  checkNumber(rule, "status", 100, 599);
  checkNumber(rule, "stall_ms", 0, 600000);
  checkNumber(rule, "oversize_bytes", 0, 1024 * 1024 * 1024);
  checkNumber(rule, "retry_after_date", 0);
  checkNumber(rule, "rate_limit", 0.001);
  checkNumber(rule, "burst", 1);
  if (rule.stall_at !== undefined && !["request", "body"].includes(rule.stall_at))
    fail("fault 'stall_at' must be \"request\" or \"body\"");
  if (rule.stall_at === "body" && rule.stall_then === "serve")
    fail("fault 'stall_then' = \"serve\" needs stall_at = \"request\"");
  if (rule.burst !== undefined && rule.rate_limit === undefined)
    fail("fault 'burst' needs 'rate_limit'");
  if (rule.retry_after !== undefined && typeof rule.retry_after !== "number"
      && typeof rule.retry_after !== "string")
    fail("fault 'retry_after' must be seconds (number) or a literal header value (string)");
  if (rule.stall_then !== undefined && !["drop", "serve"].includes(rule.stall_then))
    fail("fault 'stall_then' must be \"drop\" or \"serve\"");
  // With rate_limit, `status` is the answer over the limit (default 429), not an action.
  const actions = ACTIONS
    .filter((k) => rule[k] !== undefined && rule[k] !== false)
    .filter((k) => !(k === "status" && rule.rate_limit !== undefined));
  if (actions.length > 1) fail(`fault rule ${index + 1}: choose one of ${actions.join(", ")}`);
  if (actions.length === 0 && rule.latency_ms === undefined)
    fail(`fault rule ${index + 1}: nothing to inject (set latency_ms, status, drop, stall_ms,`
      + " malformed, oversize_bytes or rate_limit)");
  const { method, prefix } = parseMatch(rule.match);
  return {
    spec: { ...rule },
    method,
    prefix,
    remaining: rule.count === undefined ? Infinity : rule.count,
    fraction: rule.fraction,
    seen: 0,          // matching requests seen, for the deterministic fraction
    applied: 0,
    // rate_limit: a token bucket of `burst` (default 1) tokens refilled at
    // rate_limit per second; a request finding it empty gets a 429.
    tokens: rule.burst ?? 1,
    refilled: now(),
  };
}

// Takes a token if one is there; true when the request is over the limit.
function overLimit(rule) {
  const spec = rule.spec;
  const t = now();
  const cap = spec.burst ?? 1;
  rule.tokens = Math.min(cap, rule.tokens + ((t - rule.refilled) / 1000) * spec.rate_limit);
  rule.refilled = t;
  if (rule.tokens >= 1) {
    rule.tokens -= 1;
    return false;
  }
  return true;
}

// A fraction is applied evenly, not at random, so tests are deterministic:
// fraction 0.25 hits the 4th, 8th, 12th... matching request.
function selects(rule) {
  rule.seen += 1;
  if (rule.remaining <= 0) return false;
  if (rule.spec.rate_limit !== undefined && !overLimit(rule)) return false;
  if (rule.fraction !== undefined
      && Math.floor(rule.seen * rule.fraction) === Math.floor((rule.seen - 1) * rule.fraction))
    return false;
  rule.remaining -= 1;
  rule.applied += 1;
  return true;
}

// Added latency stands for the network and the provider's own work, so the
// request is served at once and only its answer waits until `due` (ms, as
// now()). Waiting before serving instead would make the requests that arrive
// together wait together and then queue for the CPU together: with a window of
// 32 the server would idle through each 20 ms wait, then do 32 requests' work
// while no wait runs, and added latency and CPU time would add up instead of
// overlapping as they do at a real provider with many workers.
function holdResponse(res, due) {
  const end = res.end;
  res.end = function heldEnd(...args) {
    const wait = due - now();
    if (wait <= 0.5 || this.destroyed) return end.apply(this, args);
    const timer = setTimeout(() => end.apply(this, args), Math.ceil(wait));
    this.once("close", () => clearTimeout(timer));
    return this;
  };
}

function scimError(status, detail, mode) {
  if (mode === "v1") return JSON.stringify({ Errors: [{ description: detail, code: status }] });
  return JSON.stringify({
    schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"],
    status: String(status),
    detail,
  });
}

/**
 * The shape of a request path relative to the SCIM base, for per-route counts:
 * "/Users" -> "/Users", "/Users/abc" -> "/Users/:id", "/Users/" -> "/Users/",
 * "/Groups/g1/x" -> "/Groups/:id/x", "/" -> "/".
 */
export function routeOf(rel) {
  if (rel === "/" || rel === "") return "/";
  const parts = rel.split("/");            // ["", "Users", "abc", ...]
  let out = `/${parts[1]}`;
  if (parts.length > 2) out += parts[2] === "" && parts.length === 3 ? "/" : "/:id";
  for (let i = 3; i < parts.length; i += 1) out += `/${parts[i]}`;
  return out;
}

/**
 * Validates a live rate limiter setting (`rate_limit` of /_control/config):
 * null/false turns it off; else `{rps, burst = 1, retry_after, status = 429}`.
 * Returns the compiled limiter (a token bucket, full at first) or null.
 */
export function compileLimiter(spec) {
  if (spec === null || spec === undefined || spec === false) return null;
  if (typeof spec !== "object" || Array.isArray(spec)) fail("rate_limit must be an object {rps, burst, retry_after, status} or null");
  for (const k of Object.keys(spec))
    if (!["rps", "burst", "retry_after", "status"].includes(k)) fail(`rate_limit: unknown key '${k}'`);
  const num = (k, min, max) => {
    const v = spec[k];
    if (v === undefined || v === null) return;
    if (typeof v !== "number" || !Number.isFinite(v) || v < min || (max !== undefined && v > max))
      fail(`rate_limit.${k} must be a number in [${min}, ${max ?? "inf"}], got ${JSON.stringify(v)}`);
  };
  if (spec.rps === undefined) fail("rate_limit.rps is required (requests per second)");
  num("rps", 0.001);
  num("burst", 1);
  num("retry_after", 0);
  num("status", 400, 599);
  const burst = spec.burst ?? 1;
  return {
    spec: { rps: spec.rps, burst, retry_after: spec.retry_after ?? null, status: spec.status ?? 429 },
    tokens: burst,
    refilled: now(),
  };
}

/**
 * The fault and stats state of one server. `base` is the SCIM base path
 * ("/scim/v2"); rules match paths relative to it ("/Users").
 */
export class Faults {
  constructor({ base, mode, latency_ms = 0 }) {
    this.base = base;
    this.mode = mode;
    this.latency_ms = latency_ms;
    this.rules = [];
    this.limiter = null;
    this.reset();
  }

  reset() {
    this.rules = [];
    this.clearStats();
  }

  /** Clears the counters and the log; rules and the limiter stay. */
  clearStats() {
    this.total = 0;
    this.by_method = Object.create(null);
    this.by_route = Object.create(null);
    this.limited = { passed: 0, refused: 0, first: null, last: null };
    this.bulk = { requests: 0, operations: 0, by_route: Object.create(null) };
    this.by_status = Object.create(null);
    this.by_fault = Object.create(null);
    this.records = [];
  }

  setRules(list) {
    const compiled = list.map(compileRule);
    this.rules = compiled;
  }

  describe() {
    return this.rules.map((r) => ({ ...r.spec, applied: r.applied, seen: r.seen }));
  }

  stats(withRequests) {
    const out = {
      total: this.total,
      by_method: this.by_method,
      by_status: this.by_status,
      by_fault: this.by_fault,
      by_route: this.by_route,
      limiter: this.limiterStats(),
      bulk: this.bulk,
      faults: this.describe(),
    };
    if (withRequests) out.requests = this.records;
    return out;
  }

  /**
   * `{passed, refused, first, last, rate, rps}`: requests the limiter let through
   * (every SCIM request when none is set) and refused; `first`/`last` are the
   * arrival times (ms, as `t`) of the first and last passed one; `rate` is
   * (passed - 1) / (last - first) per second, the rate measured where the
   * requests arrive (null below 2 requests).
   */
  limiterStats() {
    const l = this.limited;
    const span = l.last === null ? 0 : l.last - l.first;
    return { ...l, rate: l.passed >= 2 && span > 0 ? Math.round(((l.passed - 1) / span) * 1e6) / 1e3 : null,
      rps: this.limiter ? this.limiter.spec.rps : null };
  }

  /** Counts the operations of one Bulk request (`routes`: "POST /Users", ...). */
  countBulk(routes) {
    this.bulk.requests += 1;
    this.bulk.operations += routes.length;
    for (const r of routes) this.bulk.by_route[r] = (this.bulk.by_route[r] || 0) + 1;
  }

  setLimiter(spec) {
    this.limiter = compileLimiter(spec);
  }

  // The live limiter's token bucket, refilled by arrival time; true if the request passes.
  admit() {
    const lim = this.limiter;
    if (lim === null) return true;
    const t = now();
    lim.tokens = Math.min(lim.spec.burst, lim.tokens + ((t - lim.refilled) / 1000) * lim.spec.rps);
    lim.refilled = t;
    if (lim.tokens >= 1) {
      lim.tokens -= 1;
      return true;
    }
    return false;
  }

  record(req, status, fault) {
    this.by_status[status] = (this.by_status[status] || 0) + 1;
    if (fault) this.by_fault[fault] = (this.by_fault[fault] || 0) + 1;
    if (this.records.length < MAX_RECORDS) {
      const rec = req._rec;
      rec.status = status;
      rec.ms = Math.round((now() - rec.t) * 100) / 100;
      if (fault) rec.fault = fault;
      this.records.push(rec);
    }
  }

  /** The express middleware; control requests never reach it. */
  middleware() {
    return (req, res, next) => {
      const url = req.url;
      const q = url.indexOf("?");
      const path = q < 0 ? url : url.slice(0, q);
      this.total += 1;
      this.by_method[req.method] = (this.by_method[req.method] || 0) + 1;
      const rel = path.startsWith(this.base) ? path.slice(this.base.length) || "/" : path;
      const route = `${req.method} ${routeOf(rel)}`;
      this.by_route[route] = (this.by_route[route] || 0) + 1;
      const t = now();
      req._rec = { method: req.method, path, route, t };
      if (q >= 0) req._rec.query = url.slice(q + 1);
      let fault = null;
      let done = false;
      const finish = (status) => {
        if (done) return;
        done = true;
        this.record(req, status, fault);
      };
      res.on("finish", () => finish(res.statusCode));
      // A connection closed before the response was complete counts as status 0.
      res.on("close", () => finish(res.writableFinished ? res.statusCode : 0));

      // The live rate limiter comes first, as at a provider's front door.
      if (!this.admit()) {
        this.limited.refused += 1;
        fault = "rate_limit";
        const lim = this.limiter.spec;
        const headers = { "Content-Type": "application/scim+json" };
        if (lim.retry_after !== null) headers["Retry-After"] = String(lim.retry_after);
        res.writeHead(lim.status, headers);
        res.end(scimError(lim.status, "Too many requests", this.mode));
        return;
      }
      const l = this.limited;
      l.passed += 1;
      if (l.first === null) l.first = t;
      l.last = t;

      let rule = null;
      if (this.rules.length > 0) {
        for (const r of this.rules) {
          if (r.method && r.method !== req.method) continue;
          if (r.prefix && !rel.startsWith(r.prefix)) continue;
          if (selects(r)) { rule = r.spec; break; }
        }
      }
      const latency = (rule && rule.latency_ms) || this.latency_ms;
      if (!rule || !hasAction(rule)) {
        // Plain latency: serve now, answer no earlier than `latency` after arrival.
        if (latency > 0) holdResponse(res, req._rec.t + latency);
        next();
        return;
      }
      const act = () => this.inject(rule, req, res, next, (f) => { fault = f; });
      if (latency > 0) setTimeout(act, latency);
      else act();
    };
  }

  inject(rule, req, res, next, mark) {
    if (rule.status !== undefined || rule.rate_limit !== undefined) {
      const status = rule.status ?? 429;
      mark(String(status));
      const headers = { "Content-Type": "application/scim+json" };
      if (rule.retry_after !== undefined) headers["Retry-After"] = String(rule.retry_after);
      if (rule.retry_after_date !== undefined)
        headers["Retry-After"] = new Date(Date.now() + rule.retry_after_date * 1000).toUTCString();
      const detail = rule.detail || (status === 429 ? "Too many requests" : "Injected fault");
      res.writeHead(status, headers);
      res.end(rule.body !== undefined ? String(rule.body) : scimError(status, detail, this.mode));
    } else if (rule.drop) {
      mark("drop");
      req.socket.destroy();
    } else if (rule.stall_ms !== undefined) {
      mark("stall");
      if (rule.stall_at === "body") {
        // Headers and the start of a body, then nothing: a low-speed/total timeout case.
        res.writeHead(200, { "Content-Type": "application/scim+json", "Content-Length": "1000" });
        res.write('{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],');
      }
      const timer = setTimeout(() => {
        if (rule.stall_then === "serve") next();
        else req.socket.destroy();
      }, rule.stall_ms);
      // The client gave up first: nothing left to serve.
      res.on("close", () => clearTimeout(timer));
    } else if (rule.malformed) {
      mark("malformed");
      const body = typeof rule.malformed === "string" ? rule.malformed
        : '{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":';
      res.writeHead(200, { "Content-Type": "application/scim+json" });
      res.end(body);
    } else if (rule.oversize_bytes !== undefined) {
      mark("oversize");
      this.oversize(rule, res);
    } else {
      next();
    }
  }

  // A valid JSON object of exactly n bytes (for n >= 12), streamed so the
  // server never holds it; Content-Length unless `chunked` is set.
  oversize(rule, res) {
    const n = rule.oversize_bytes;
    const head = '{"pad":"';
    const tail = '"}';
    const headers = { "Content-Type": "application/scim+json" };
    if (!rule.chunked) headers["Content-Length"] = String(Math.max(n, head.length + tail.length));
    res.writeHead(200, headers);
    let left = Math.max(n - head.length - tail.length, 0);
    const chunk = Buffer.alloc(CHUNK, "x");
    res.write(head);
    const pump = () => {
      while (left > 0) {
        const size = Math.min(left, CHUNK);
        left -= size;
        if (!res.write(size === CHUNK ? chunk : chunk.subarray(0, size))) {
          res.once("drain", pump);
          return;
        }
      }
      res.end(tail);
    };
    res.on("close", () => { left = 0; });
    pump();
  }
}
