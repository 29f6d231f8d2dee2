// A scriptable hostile SCIM server for the specs, on 127.0.0.1 only.
//
//   node hostile.js [--exit-on-stdin-eof]
//
// Prints "listening PORT" once it accepts connections. It answers what the
// spec scripted, nothing else: a rule matches "METHOD /path?query" of a
// request with a regular expression and serves its answers in order (the last
// one again once they run out). A request no rule matches gets 404. Control
// channel (never scripted):
//   POST /_hostile/script   { rules: [{ match, answers: [{ status, headers,
//                             body (string) | json (any JSON) }] }] }
//                           replaces the rules and clears the request log
//   GET  /_hostile/requests -> [{ method, url, authorization, body }] in arrival order
//   POST /_hostile/reset    -> no rules, empty log
// Bounded: request bodies over 1 MiB are cut off, the log keeps the first
// 10,000 requests, and it listens on loopback only.
"use strict";
const http = require("http");

const MAX_BODY = 1 << 20;
const MAX_LOG = 10000;
let rules = [];
let log = [];

function send(res, status, headers, body) {
  res.writeHead(status, { "content-length": Buffer.byteLength(body), ...headers });
  res.end(body);
}

function compile(doc) {
  if (!doc || !Array.isArray(doc.rules)) throw new Error("rules: array expected");
  return doc.rules.map((r, i) => {
    if (typeof r.match !== "string") throw new Error(`rule ${i + 1}: match must be a string`);
    if (!Array.isArray(r.answers) || r.answers.length === 0) {
      throw new Error(`rule ${i + 1}: answers must be a non-empty array`);
    }
    return { re: new RegExp(r.match), answers: r.answers, next: 0 };
  });
}

function answer(res, a) {
  let body = "";
  const headers = { ...(a.headers || {}) };
  if (a.json !== undefined) {
    body = JSON.stringify(a.json);
    if (!Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) {
      headers["content-type"] = "application/scim+json";
    }
  } else if (typeof a.body === "string") {
    body = a.body;
  }
  send(res, a.status || 200, headers, body);
}

const srv = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on("data", (c) => {
    if (size < MAX_BODY) chunks.push(c.subarray(0, MAX_BODY - size));
    size += c.length;
  });
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    const json = (status, doc) =>
      send(res, status, { "content-type": "application/json" }, JSON.stringify(doc));
    if (req.url.startsWith("/_hostile/")) {
      if (req.method === "GET" && req.url === "/_hostile/requests") return json(200, log);
      if (req.method === "POST" && req.url === "/_hostile/reset") {
        rules = [];
        log = [];
        return json(200, { ok: true });
      }
      if (req.method === "POST" && req.url === "/_hostile/script") {
        try {
          rules = compile(JSON.parse(body));
        } catch (e) {
          return json(400, { error: String(e.message) });
        }
        log = [];
        return json(200, { rules: rules.length });
      }
      return json(404, { error: "no such control path" });
    }
    if (log.length < MAX_LOG) {
      log.push({ method: req.method, url: req.url,
        authorization: req.headers.authorization || null, body });
    }
    const line = req.method + " " + req.url;
    const rule = rules.find((r) => r.re.test(line));
    if (!rule) {
      return send(res, 404, { "content-type": "application/scim+json" }, JSON.stringify({
        schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"], status: "404",
        detail: "nothing scripted for " + line }));
    }
    const a = rule.answers[Math.min(rule.next, rule.answers.length - 1)];
    rule.next += 1;
    answer(res, a);
  });
});

srv.listen(0, "127.0.0.1", () => console.log("listening " + srv.address().port));
if (process.argv.includes("--exit-on-stdin-eof")) {
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}
