// A tiny forward proxy for the HTTP specs, on 127.0.0.1 only.
//
//   node proxy.js [--refuse] [--exit-on-stdin-eof]
//
// Prints "listening PORT" once it accepts connections. It forwards plain
// HTTP requests in absolute form ("GET http://host:port/path") and tunnels
// CONNECT, and counts both. It never leaves this machine: a target must be
// 127.0.0.1, localhost or a name under .localhost, and is always reached at
// 127.0.0.1 (any other target gets a 502), so tests may name hosts such as
// scim.localhost without a DNS lookup anywhere.
//
// --refuse answers 403 to every forward and every CONNECT (a proxy whose
// policy says no). Requests in origin form are its own control channel:
//   GET /_proxy/stats  -> { forwarded, connects, refused, requests: [{ method,
//                           target, proxy_auth }] }
//   POST /_proxy/reset -> zeroes the counters
"use strict";
const http = require("http");
const net = require("net");

const refuse = process.argv.includes("--refuse");
let stats;
function reset() {
  stats = { forwarded: 0, connects: 0, refused: 0, requests: [] };
}
reset();

// The loopback port a target "host:port" may be reached at, or null.
function local_port(host, port) {
  const h = String(host).toLowerCase().replace(/^\[|\]$/g, "");
  const local = h === "127.0.0.1" || h === "localhost" || h.endsWith(".localhost");
  const p = Number(port);
  return local && Number.isInteger(p) && p > 0 && p < 65536 ? p : null;
}

function record(method, target, headers) {
  stats.requests.push({ method, target, proxy_auth: "proxy-authorization" in headers });
}

function json(res, status, doc) {
  res.writeHead(status, { "content-type": "application/json", connection: "close" });
  res.end(JSON.stringify(doc));
}

const srv = http.createServer((req, res) => {
  if (req.url.startsWith("/")) {  // origin form: the control channel
    if (req.method === "GET" && req.url === "/_proxy/stats") return json(res, 200, stats);
    if (req.method === "POST" && req.url === "/_proxy/reset") {
      reset();
      return json(res, 200, { ok: true });
    }
    return json(res, 404, { error: "not a proxy control path" });
  }
  record(req.method, req.url, req.headers);
  let url;
  try { url = new URL(req.url); } catch (e) { return json(res, 400, { error: "bad target" }); }
  const port = local_port(url.hostname, url.port || 80);
  if (refuse) {
    stats.refused += 1;
    return json(res, 403, { error: "proxy refuses" });
  }
  if (url.protocol !== "http:" || port === null) return json(res, 502, { error: "off limits" });
  stats.forwarded += 1;
  const headers = { ...req.headers };
  delete headers["proxy-connection"];
  delete headers["proxy-authorization"];
  const up = http.request({ host: "127.0.0.1", port, method: req.method,
    path: url.pathname + url.search, headers }, (ures) => {
    res.writeHead(ures.statusCode, ures.headers);
    ures.pipe(res);
  });
  up.on("error", () => { if (!res.headersSent) json(res, 502, { error: "upstream failed" }); });
  req.pipe(up);
});

srv.on("connect", (req, sock, head) => {
  record("CONNECT", req.url, req.headers);
  const m = /^(.*):(\d+)$/.exec(req.url);
  const port = m && local_port(m[1], m[2]);
  const answer = (line) => sock.end("HTTP/1.1 " + line + "\r\nContent-Length: 0\r\n\r\n");
  if (refuse) {
    stats.refused += 1;
    return answer("403 Forbidden");
  }
  if (!port) return answer("502 Bad Gateway");
  stats.connects += 1;
  const up = net.connect(port, "127.0.0.1", () => {
    sock.write("HTTP/1.1 200 Connection Established\r\n\r\n");
    if (head && head.length) up.write(head);
    up.pipe(sock);
    sock.pipe(up);
  });
  up.on("error", () => sock.destroy());
  sock.on("error", () => up.destroy());
});

srv.listen(0, "127.0.0.1", () => console.log("listening " + srv.address().port));
if (process.argv.includes("--exit-on-stdin-eof")) {
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}
