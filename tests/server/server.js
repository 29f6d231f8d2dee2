#!/usr/bin/env node
// scim-agent's test SCIM service provider. See README.md beside this file.
//
//   node server.js [--port 0] [--mode scim2|meta|v1|entra|minimal] [--token T] [--page-size N]
//                  [--latency-ms N] [--numeric-ids|--no-numeric-ids] [--strict|--no-strict]
//                  [--require-user-agent|--no-require-user-agent]
//                  [--compress] [--verify-egress] [--exit-on-stdin-eof] [--parent-pid PID]
//                  [--rate-limit RPS|JSON] [--bulk JSON|off] [--omit-members-in-list]
//                  [--max-patch-ops N]
//
// Binds 127.0.0.1 only. The first stdout line is `listening http://127.0.0.1:PORT`;
// nothing else goes to stdout. Control endpoints live under /_control/ (no token).
import http from "node:http";
import zlib from "node:zlib";
import express from "express";
import { Faults } from "./lib/faults.js";
import { Store } from "./lib/store.js";

const USAGE = "usage: node server.js [--port N] [--mode scim2|meta|v1|entra|minimal] [--token T] [--page-size N]"
  + " [--latency-ms N] [--[no-]numeric-ids] [--[no-]strict] [--[no-]require-user-agent]"
  + " [--compress] [--verify-egress] [--exit-on-stdin-eof] [--parent-pid PID]"
  + " [--rate-limit RPS|JSON] [--bulk JSON|off] [--[no-]omit-members-in-list] [--max-patch-ops N]";

function die(msg) {
  process.stderr.write(`server.js: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    port: 0, host: "127.0.0.1", mode: "scim2", token: "test-token", page_size: 100,
    latency_ms: 0, numeric_ids: undefined, strict: undefined, require_user_agent: undefined,
    exit_on_stdin_eof: false, parent_pid: undefined, compress: false, verify_egress: false,
    rate_limit: null, bulk: undefined, omit_members_in_list: undefined, max_patch_ops: undefined,
  };
  const ints = { "--port": "port", "--page-size": "page_size", "--latency-ms": "latency_ms",
    "--parent-pid": "parent_pid", "--max-patch-ops": "max_patch_ops" };
  const flags = { "--numeric-ids": "numeric_ids", "--strict": "strict",
    "--require-user-agent": "require_user_agent", "--exit-on-stdin-eof": "exit_on_stdin_eof",
    "--compress": "compress", "--verify-egress": "verify_egress",
    "--omit-members-in-list": "omit_members_in_list" };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (ints[a]) {
      const v = argv[++i];
      if (v === undefined || !/^\d+$/.test(v)) die(`${a} needs a non-negative integer`);
      opts[ints[a]] = Number(v);
    } else if (flags[a]) {
      opts[flags[a]] = true;
    } else if (a.startsWith("--no-") && flags[`--${a.slice(5)}`]) {
      opts[flags[`--${a.slice(5)}`]] = false;
    } else if (a === "--mode" || a === "--token" || a === "--host") {
      const v = argv[++i];
      if (v === undefined) die(`${a} needs a value`);
      opts[a.slice(2)] = v;
    } else if (a === "--rate-limit" || a === "--bulk") {
      const v = argv[++i];
      if (v === undefined) die(`${a} needs a value`);
      let parsed;
      if (a === "--rate-limit" && /^\d+(\.\d+)?$/.test(v)) parsed = { rps: Number(v) };
      else if (a === "--bulk" && v === "off") parsed = false;
      else {
        const want = a === "--bulk" ? "a JSON object or off" : "requests per second or a JSON object";
        try { parsed = JSON.parse(v); } catch { die(`${a} needs ${want}, got ${v}`); }
      }
      opts[a.slice(2).replace("-", "_")] = parsed;
    } else if (a === "--help" || a === "-h") {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else {
      die(`unknown argument ${JSON.stringify(a)}`);
    }
  }
  if (!["scim2", "meta", "v1", "entra", "minimal"].includes(opts.mode))
    die(`--mode must be scim2, meta, v1, entra or minimal, got ${opts.mode}`);
  if (!/^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(opts.host)) die("--host must be a loopback address");
  if (opts.page_size < 1) die("--page-size must be at least 1");
  if (opts.token === "") die("--token must not be empty");
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const v1 = opts.mode === "v1";
const meta = opts.mode === "meta";
const entra = opts.mode === "entra";
const minimal = opts.mode === "minimal";
// Meta serves SCIM at the root of its host (https://scim.workplace.com/Users).
// Entra's bulkUpload lives at <base>/bulkUpload (see lib/entra.js).
const base = v1 ? "/scim/v1" : meta ? "" : entra ? "/scim" : "/scim/v2";
// Live settings; /_control/config changes them.
const cfg = {
  token: opts.token,
  page_size: opts.page_size,
  strict: opts.strict ?? v1,
  require_user_agent: opts.require_user_agent ?? (v1 || meta),
  compress: opts.compress,
  // The minimal mode's defaults are a strict provider's (see lib/minimal.js).
  omit_members_in_list: opts.omit_members_in_list ?? minimal,
  max_patch_ops: opts.max_patch_ops ?? (minimal ? 10 : 0),
};
const store = new Store({ numericIds: opts.numeric_ids ?? (v1 || meta) });
const faults = new Faults({ base, mode: opts.mode, latency_ms: opts.latency_ms });
try {
  faults.setLimiter(opts.rate_limit);
} catch (ex) {
  die(`--rate-limit: ${ex.message}`);
}
let port = 0;
const origin = () => `http://${opts.host}:${port}`;

const app = express();
app.disable("x-powered-by");
app.set("etag", false);              // ours are meta.version; no body hashing per response
app.set("query parser", "simple");

// ---- control channel: never counted, never faulted, no token ----
const control = express.Router();
const controlJson = express.json({ limit: "256mb" });
let mode;                             // the installed SCIM mode, set below

control.get("/ping", (req, res) => res.send({ ok: true, mode: opts.mode, base: `${base}/`, pid: process.pid }));
control.get("/stats", (req, res) => res.send(faults.stats(req.query.requests !== "0")));
control.get("/faults", (req, res) => res.send(faults.describe()));
control.post("/faults", controlJson, (req, res) => {
  const body = req.body ?? {};
  const list = Array.isArray(body) ? body : (Object.keys(body).length === 0 ? [] : [body]);
  faults.setRules(list);
  res.send(faults.describe());
});
control.delete("/faults", (req, res) => { faults.setRules([]); res.send([]); });
control.post("/reset", (req, res) => {
  store.clear();
  mode.clear();
  faults.reset();
  faults.setLimiter(opts.rate_limit);   // back to the start setting, with a full bucket
  res.send({ ok: true });
});
control.post("/stats/reset", (req, res) => {
  faults.clearStats();
  res.send({ ok: true });
});
control.post("/seed", controlJson, (req, res) => {
  const body = req.body ?? {};
  let list;
  if (Array.isArray(body.groups)) {
    if (!mode.seedGroups) throw Object.assign(new Error("no groups in this mode"), { status: 400 });
    const made = mode.seedGroups(body.groups);
    return res.send(body.quiet ? { count: made.length } : { count: made.length, groups: made });
  }
  if (Array.isArray(body.users)) {
    list = body.users;
  } else if (Number.isInteger(body.count) && body.count >= 0 && body.count <= 1000000) {
    const from = Number.isInteger(body.start) ? body.start : store.size + 1;
    list = [];
    for (let i = 0; i < body.count; i += 1) list.push(mode.generated(from + i, body.prefix || "user"));
  } else {
    const err = new Error("seed expects {\"count\": n} or {\"users\": [...]}");
    err.status = 400;
    throw err;
  }
  const users = mode.seed(list);
  res.send(body.quiet ? { count: users.length } : { count: users.length, users });
});
control.get("/users", (req, res) => res.send(store.all()));
control.get("/groups", (req, res) => res.send(mode.groups ? mode.groups() : []));
control.get("/config", (req, res) => res.send({ ...cfg, token: undefined, latency_ms: faults.latency_ms,
  mode: opts.mode, rate_limit: faults.limiter ? faults.limiter.spec : null,
  bulk: mode.bulkConfig ? mode.bulkConfig() : false }));
control.post("/config", controlJson, (req, res) => {
  const b = req.body ?? {};
  const known = ["page_size", "latency_ms", "token", "strict", "require_user_agent", "compress",
    "rate_limit", "omit_members_in_list", "max_patch_ops", "bulk"];
  for (const k of Object.keys(b)) {
    if (!known.includes(k)) {
      const err = new Error(`unknown config key '${k}'`);
      err.status = 400;
      throw err;
    }
  }
  if (b.page_size !== undefined) {
    if (!Number.isInteger(b.page_size) || b.page_size < 1) throw Object.assign(new Error("page_size must be >= 1"), { status: 400 });
    cfg.page_size = b.page_size;
    mode.publish();
  }
  if (b.latency_ms !== undefined) faults.latency_ms = Number(b.latency_ms) || 0;
  if (typeof b.token === "string" && b.token !== "") cfg.token = b.token;
  if (typeof b.strict === "boolean") cfg.strict = b.strict;
  if (typeof b.require_user_agent === "boolean") cfg.require_user_agent = b.require_user_agent;
  if (typeof b.compress === "boolean") cfg.compress = b.compress;
  if (b.rate_limit !== undefined) faults.setLimiter(b.rate_limit);
  if (typeof b.omit_members_in_list === "boolean") cfg.omit_members_in_list = b.omit_members_in_list;
  if (b.max_patch_ops !== undefined) {
    if (!Number.isInteger(b.max_patch_ops) || b.max_patch_ops < 0)
      throw Object.assign(new Error("max_patch_ops must be an integer >= 0 (0: no limit)"), { status: 400 });
    cfg.max_patch_ops = b.max_patch_ops;
  }
  if (b.bulk !== undefined) {
    if (!mode.setBulk) throw Object.assign(new Error("bulk: no /Bulk in this mode"), { status: 400 });
    mode.setBulk(b.bulk);
  }
  res.send({ ok: true });
});
control.post("/shutdown", (req, res) => {
  res.set("Connection", "close");
  res.send({ ok: true });
  setImmediate(shutdown);
});
control.use((req, res) => res.status(404).send({ error: `no control endpoint ${req.method} ${req.path}` }));
control.use((ex, req, res, _next) => res.status(ex.status ?? 500).send({ error: ex.message }));
app.use("/_control", control);

// ---- faults and stats, then the token, then the SCIM service ----
app.use(faults.middleware());

// gzip answers for clients that accept it (off by default: it costs CPU per request).
app.use((req, res, next) => {
  if (!cfg.compress || !/\bgzip\b/.test(req.headers["accept-encoding"] || "")) return next();
  const send = res.send.bind(res);
  res.send = (body) => {
    // res.send(object) comes back here with the JSON string.
    if (typeof body !== "string" && !Buffer.isBuffer(body)) return send(body);
    res.set("Content-Encoding", "gzip");
    res.vary("Accept-Encoding");
    if (!res.get("Content-Type")) res.type("application/json");
    return send(zlib.gzipSync(body));
  };
  next();
});

const expected = () => `Bearer ${cfg.token}`;
app.use((req, res, next) => {
  const auth = req.headers.authorization;
  // Scheme names are case-insensitive (RFC 7235); the token is not.
  if (typeof auth === "string" && auth.length === expected().length
      && auth.slice(0, 7).toLowerCase() === "bearer " && auth.slice(7) === cfg.token)
    return checkAgent(req, res, next);
  res.set("WWW-Authenticate", 'Bearer realm="scim"');
  const detail = auth === undefined ? "Authorization header missing" : "Invalid bearer token";
  if (v1) res.status(401).type("application/json").send({ Errors: [{ description: detail, code: 401 }] });
  else res.status(401).type("application/scim+json").send({
    schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"], status: "401", detail });
});

// Meta's APIs refuse requests without a User-Agent.
function checkAgent(req, res, next) {
  if (!cfg.require_user_agent || (req.headers["user-agent"] || "").trim() !== "") return next();
  const detail = "A User-Agent header is required";
  if (v1) res.status(400).type("application/json").send({ Errors: [{ description: detail, code: 400 }] });
  else res.status(400).type("application/scim+json").send({
    schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"], status: "400", detail });
}

const impl = await import(v1 ? "./lib/v1.js" : entra ? "./lib/entra.js"
  : minimal ? "./lib/minimal.js" : "./lib/scim2.js");
const bulk = v1 || entra || minimal ? null : await import("./lib/bulk.js");
mode = impl.install(app, { base, cfg, store, origin, faults, meta, verify: opts.verify_egress, bulk });
if (opts.bulk !== undefined) {
  if (!mode.setBulk) die(`--bulk: no /Bulk in ${opts.mode} mode (scim2 and meta have it)`);
  try { mode.setBulk(opts.bulk); } catch (ex) { die(`--bulk: ${ex.message}`); }
}

app.use((req, res) => {
  res.status(404).type("application/json").send({ error: `no endpoint ${req.method} ${req.path}` });
});

const server = http.createServer(app);
// Long keep-alive: clients reuse connections across a whole job.
server.keepAliveTimeout = 65000;
server.headersTimeout = 66000;
server.requestTimeout = 0;           // stall faults hold requests on purpose

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 500).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

// A server must not outlive its test process: when the harness's pipe to our
// stdin closes (the Lua process exited or crashed), or the parent dies, exit.
if (opts.exit_on_stdin_eof) {
  process.stdin.on("end", shutdown);
  process.stdin.on("close", shutdown);
  process.stdin.on("error", shutdown);
  process.stdin.resume();
}
if (opts.parent_pid) {
  setInterval(() => {
    try { process.kill(opts.parent_pid, 0); } catch { shutdown(); }
  }, 500).unref();
}

// A bug here must not take down every spec after it: log (to the harness's log
// file) and go on; the request in question fails with a 500 or a reset.
process.on("uncaughtException", (err) => {
  process.stderr.write(`server.js: uncaught: ${err && err.stack ? err.stack : err}\n`);
});

server.on("error", (err) => {
  process.stderr.write(`server.js: ${err.message}\n`);
  process.exit(1);
});
server.listen(opts.port, opts.host, 1024, () => {
  port = server.address().port;
  mode.ready();
  process.stdout.write(`listening ${origin()}\n`);
});
