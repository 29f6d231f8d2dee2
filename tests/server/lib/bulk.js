// SCIM Bulk (RFC 7644 3.7) for the SCIM 2.0 modes: POST /Bulk with a BulkRequest
// of POST/PUT/PATCH/DELETE operations on /Users and /Groups, run through the
// same operations as the single-resource routes (so strict mode, uniqueness,
// max_patch_ops and If-Match (`version`) apply to each). `bulkId` references
// ("bulkId:xyz" as any string value in `data`, or as the id in `path`) are
// resolved whatever the order of the operations; an operation whose reference
// names no POST of the request, a failed one or a cycle fails with 409.

const BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";
const HARD_LIMIT = 64 * 1024 * 1024;     // bodies above this are not even read
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const REF_RE = /^bulkId:(.+)$/;

/** Reads the raw body, counting bytes (Content-Length or not); null past `limit`. */
export function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    let over = false;
    req.on("data", (c) => {
      size += c.length;
      if (size > limit) over = true;
      else chunks.push(c);
      if (size > HARD_LIMIT) req.destroy();
    });
    req.on("end", () => resolve(over ? { size } : { size, text: Buffer.concat(chunks).toString("utf8") }));
    req.on("error", reject);
  });
}

/** Every "bulkId:x" the value holds (strings anywhere inside), as x. */
function refsIn(value, out = new Set()) {
  if (typeof value === "string") {
    const m = REF_RE.exec(value);
    if (m) out.add(m[1]);
  } else if (Array.isArray(value)) {
    for (const v of value) refsIn(v, out);
  } else if (isObject(value)) {
    for (const k in value) refsIn(value[k], out);
  }
  return out;
}

function resolve(value, ids) {
  if (typeof value === "string") {
    const m = REF_RE.exec(value);
    return m && ids.has(m[1]) ? ids.get(m[1]) : value;
  }
  if (Array.isArray(value)) return value.map((v) => resolve(v, ids));
  if (isObject(value)) {
    const out = {};
    for (const k in value) out[k] = resolve(value[k], ids);
    return out;
  }
  return value;
}

// "/Users", "/Users/abc", "/Groups/bulkId:x" -> { type, id }; null if not ours.
function parsePath(path) {
  const m = typeof path === "string" && /^\/?(Users|Groups)(?:\/([^/?#]+))?$/.exec(path);
  if (!m) return null;
  return { type: m[1], id: m[2] === undefined ? undefined : decodeURIComponent(m[2]) };
}

/** The express handler for POST <base>/Bulk; `ctx` from scim2.install. */
export function handler(ctx) {
  const { cfg, bulkCfg, faults, userOps, groupOps, sendError, SCIMError, SCIM_TYPE } = ctx;
  return async (req, res) => {
    try {
      if (!bulkCfg.supported) throw SCIMError(501, null, "Bulk operations are not supported by this server");
      const declared = Number(req.headers["content-length"]);
      if (declared > bulkCfg.max_payload) {
        res.set("Connection", "close");     // the body is not read
        throw SCIMError(413, null, `The size of the bulk operation (${declared} bytes)`
          + ` exceeds the maxPayloadSize (${bulkCfg.max_payload})`);
      }
      const { size, text } = await readBody(req, bulkCfg.max_payload);
      if (text === undefined)
        throw SCIMError(413, null, `The size of the bulk operation (${size} bytes) exceeds the maxPayloadSize (${bulkCfg.max_payload})`);
      let body;
      try { body = JSON.parse(text); } catch { throw SCIMError(400, "invalidSyntax", "Request body is not valid JSON"); }
      if (!isObject(body) || !Array.isArray(body.schemas) || !body.schemas.includes(BULK_REQUEST))
        throw SCIMError(400, "invalidSyntax", `A BulkRequest must carry "schemas": ["${BULK_REQUEST}"]`);
      if (!Array.isArray(body.Operations))
        throw SCIMError(400, "invalidSyntax", "A BulkRequest needs an 'Operations' array");
      if (body.Operations.length > bulkCfg.max_operations)
        throw SCIMError(413, null, `The number of operations (${body.Operations.length})`
          + ` exceeds the maxOperations (${bulkCfg.max_operations})`);
      const failOnErrors = body.failOnErrors;
      if (failOnErrors !== undefined && !(Number.isInteger(failOnErrors) && failOnErrors >= 1))
        throw SCIMError(400, "invalidValue", "failOnErrors must be an integer >= 1");
      const results = await run(body.Operations, failOnErrors ?? Infinity, { cfg, faults, userOps, groupOps, SCIMError });
      res.status(200).type(SCIM_TYPE).send({ schemas: [BULK_RESPONSE], Operations: results });
    } catch (ex) {
      sendError(res, ex);
    }
  };
}

async function run(list, failOnErrors, { faults, userOps, groupOps, SCIMError }) {
  const results = new Array(list.length);
  const ids = new Map();                  // bulkId -> created id
  const failed = new Set();               // bulkIds whose POST failed
  const posts = new Map();                // bulkId -> index of its POST
  const routes = [];
  let errors = 0;
  const ops = list.map((op, i) => {
    const o = isObject(op) ? op : {};
    const method = typeof o.method === "string" ? o.method.toUpperCase() : undefined;
    const path = parsePath(o.path);
    const refs = refsIn(o.data);
    if (path && path.id && REF_RE.test(path.id)) refs.add(REF_RE.exec(path.id)[1]);
    if (method === "POST" && typeof o.bulkId === "string" && !posts.has(o.bulkId)) posts.set(o.bulkId, i);
    return { i, raw: o, method, path, refs };
  });
  const outcome = (op, status, extra) => {
    const r = { method: op.method ?? String(op.raw.method), ...extra, status: String(status) };
    if (op.raw.bulkId !== undefined) r.bulkId = op.raw.bulkId;
    if (op.raw.version !== undefined && r.version === undefined && status >= 400) r.version = op.raw.version;
    results[op.i] = r;
  };
  const fail = (op, ex) => {
    errors += 1;
    const status = ex.status ?? 500;
    const response = { schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"], status: String(status) };
    if (ex.scimType) response.scimType = ex.scimType;
    response.detail = ex.message;
    outcome(op, status, { response });
    if (op.method === "POST" && typeof op.raw.bulkId === "string") failed.add(op.raw.bulkId);
  };
  async function exec(op) {
    const { raw, method, path } = op;
    if (!["POST", "PUT", "PATCH", "DELETE"].includes(method))
      throw SCIMError(400, "invalidSyntax", `operation ${op.i + 1}: method must be POST, PUT, PATCH or DELETE`);
    if (!path)
      throw SCIMError(400, "invalidPath", `operation ${op.i + 1}: path must be /Users[/id] or`
        + ` /Groups[/id], got ${JSON.stringify(raw.path)}`);
    if (method === "POST" && path.id !== undefined)
      throw SCIMError(400, "invalidPath", `operation ${op.i + 1}: POST goes to /${path.type}`);
    if (method !== "POST" && path.id === undefined)
      throw SCIMError(400, "invalidPath", `operation ${op.i + 1}: ${method} needs /${path.type}/id`);
    if (method === "POST" && typeof raw.bulkId !== "string")
      throw SCIMError(400, "invalidValue", `operation ${op.i + 1}: a POST needs a bulkId`);
    if (method === "POST" && posts.get(raw.bulkId) !== op.i)
      throw SCIMError(400, "uniqueness", `operation ${op.i + 1}: bulkId ${JSON.stringify(raw.bulkId)} is used twice`);
    const ops = path.type === "Users" ? userOps : groupOps;
    const id = path.id === undefined ? undefined : resolve(path.id, ids);
    const data = resolve(raw.data, ids);
    routes.push(`${method} /${path.type}${id === undefined ? "" : "/:id"}`);
    let out;
    if (method === "POST") out = ops.create(data);
    else if (method === "PUT") out = ops.replace(id, data, {}, raw.version);
    else if (method === "PATCH") out = await ops.patch(id, data, {}, raw.version);
    else out = await ops.remove(id, raw.version);
    if (method === "POST") ids.set(raw.bulkId, JSON.parse(out.body).id);
    const extra = { location: out.location };
    if (out.etag) extra.version = out.etag;
    if (out.body !== undefined) extra.response = typeof out.body === "string" ? JSON.parse(out.body) : out.body;
    outcome(op, out.status, extra);
  }

  let pending = ops;
  while (pending.length > 0 && errors < failOnErrors) {
    const later = [];
    let progress = false;
    for (const op of pending) {
      if (errors >= failOnErrors) break;
      const refs = [...op.refs];
      const missing = refs.find((r) => !posts.has(r));
      const broken = refs.find((r) => failed.has(r));
      try {
        if (missing !== undefined)
          throw SCIMError(409, "invalidValue", `operation ${op.i + 1}: bulkId:${missing} names no POST of this request`);
        if (broken !== undefined)
          throw SCIMError(409, "invalidValue", `operation ${op.i + 1}: the POST of bulkId:${broken} failed`);
        if (refs.some((r) => !ids.has(r))) {
          later.push(op);
          continue;
        }
        progress = true;
        await exec(op);
      } catch (ex) {
        progress = true;
        fail(op, ex);
      }
    }
    if (!progress) {        // every one left waits on another: a cycle
      for (const op of later) {
        if (errors >= failOnErrors) break;
        fail(op, SCIMError(409, "invalidValue", `operation ${op.i + 1}: circular bulkId references`));
      }
      break;
    }
    pending = later;
  }
  faults.countBulk(routes);
  return results.filter((r) => r !== undefined);
}
