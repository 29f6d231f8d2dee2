// An OAuth 2.0 token endpoint (client credentials, RFC 6749 §4.4) that is also a reverse
// proxy in front of the test SCIM server, on 127.0.0.1 only.
//
//   node oauth.js --upstream http://127.0.0.1:PORT --upstream-token T
//                 --client-id ID --client-secret S [--expires-in N] [--exit-on-stdin-eof]
//
// Prints "listening PORT" once it accepts connections.
//   POST /token     form body, grant_type=client_credentials; the client authenticates with
//                   HTTP Basic or with client_id/client_secret form fields (not both).
//                   Issues a fresh token living --expires-in seconds (default 3600).
//   anything else   needs "Authorization: Bearer <an issued, unexpired token>" (else a SCIM
//                   401) and is forwarded to --upstream with the upstream's own token.
// Control channel:
//   GET  /_oauth/stats   -> { issued, refused_clients, rejected, forwarded, by_auth: { basic,
//                             form }, scopes: [...], tokens_used: n }
//   POST /_oauth/config  { expires_in, revoke: true (every issued token stops working) }
//   POST /_oauth/reset   -> counters zeroed, issued tokens forgotten
// Bounded: bodies to /token over 64 KiB are refused; the upstream must be loopback.
"use strict";
const http = require("http");
const crypto = require("crypto");

function arg(name, dflt) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const upstream = new URL(arg("upstream"));
if (upstream.hostname !== "127.0.0.1") throw new Error("--upstream must be 127.0.0.1");
const upstreamToken = arg("upstream-token");
const clientId = arg("client-id");
const clientSecret = arg("client-secret");
let expiresIn = Number(arg("expires-in", "3600"));

let tokens;  // token -> expiry (ms, monotonic)
let stats;
function reset() {
  tokens = new Map();
  stats = { issued: 0, refused_clients: 0, rejected: 0, forwarded: 0,
    by_auth: { basic: 0, form: 0 }, scopes: [], tokens_used: 0 };
}
reset();
const used = new Set();

const now = () => Number(process.hrtime.bigint() / 1000000n);

function json(res, status, doc, headers) {
  const body = JSON.stringify(doc);
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store",
    "content-length": Buffer.byteLength(body), ...(headers || {}) });
  res.end(body);
}

// RFC 6749 appendix B: form-urlencoded id and secret inside the Basic credentials.
function formDecode(s) {
  return decodeURIComponent(String(s).replace(/\+/g, " "));
}

function tokenEndpoint(req, res, body) {
  const form = new URLSearchParams(body);
  const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization || "");
  let id, secret, how;
  if (basic && form.has("client_secret")) {
    return json(res, 400, { error: "invalid_request",
      error_description: "more than one client authentication method" });
  }
  if (basic) {
    const text = Buffer.from(basic[1], "base64").toString("utf8");
    const i = text.indexOf(":");
    try {
      id = formDecode(text.slice(0, i));
      secret = formDecode(text.slice(i + 1));
    } catch (e) {
      id = undefined;
    }
    how = "basic";
  } else {
    id = form.get("client_id");
    secret = form.get("client_secret");
    how = "form";
  }
  if (form.get("grant_type") !== "client_credentials") {
    return json(res, 400, { error: "unsupported_grant_type",
      error_description: "only client_credentials is served here" });
  }
  if (id !== clientId || secret !== clientSecret) {
    stats.refused_clients += 1;
    return json(res, 401, { error: "invalid_client",
      error_description: "client authentication failed" },
      how === "basic" ? { "www-authenticate": 'Basic realm="test"' } : {});
  }
  stats.by_auth[how] += 1;
  stats.issued += 1;
  if (form.has("scope")) stats.scopes.push(form.get("scope"));
  const tok = "at-" + stats.issued + "-" + crypto.randomBytes(12).toString("hex");
  tokens.set(tok, now() + expiresIn * 1000);
  json(res, 200, { access_token: tok, token_type: "Bearer", expires_in: expiresIn });
}

function proxy(req, res, body) {
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization || "");
  const expiry = m && tokens.get(m[1]);
  if (!expiry || expiry <= now()) {
    stats.rejected += 1;
    return json(res, 401, { schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"],
      status: "401", detail: expiry ? "token expired" : "unknown token" },
      { "content-type": "application/scim+json" });
  }
  if (!used.has(m[1])) {
    used.add(m[1]);
    stats.tokens_used += 1;
  }
  const headers = { ...req.headers, authorization: "Bearer " + upstreamToken,
    host: upstream.host };
  const up = http.request({ host: "127.0.0.1", port: upstream.port, method: req.method,
    path: req.url, headers }, (ures) => {
    stats.forwarded += 1;
    res.writeHead(ures.statusCode, ures.headers);
    ures.pipe(res);
  });
  up.on("error", () => { if (!res.headersSent) json(res, 502, { error: "upstream failed" }); });
  up.end(body);
}

const srv = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on("data", (c) => {
    size += c.length;
    if (size <= (1 << 26)) chunks.push(c);
  });
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    if (req.url.startsWith("/_oauth/")) {
      if (req.method === "GET" && req.url === "/_oauth/stats") return json(res, 200, stats);
      if (req.method === "POST" && req.url === "/_oauth/reset") {
        reset();
        return json(res, 200, { ok: true });
      }
      if (req.method === "POST" && req.url === "/_oauth/config") {
        let doc;
        try { doc = JSON.parse(body.toString("utf8")); } catch (e) { doc = null; }
        if (!doc) return json(res, 400, { error: "bad JSON" });
        if (doc.expires_in !== undefined) expiresIn = Number(doc.expires_in);
        if (doc.revoke) tokens.clear();
        return json(res, 200, { expires_in: expiresIn });
      }
      return json(res, 404, { error: "no such control path" });
    }
    if (req.url === "/token") {
      if (req.method !== "POST") return json(res, 405, { error: "invalid_request" });
      if (size > 65536) return json(res, 413, { error: "invalid_request" });
      return tokenEndpoint(req, res, body.toString("utf8"));
    }
    proxy(req, res, body);
  });
});

srv.listen(0, "127.0.0.1", () => console.log("listening " + srv.address().port));
if (process.argv.includes("--exit-on-stdin-eof")) {
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}
