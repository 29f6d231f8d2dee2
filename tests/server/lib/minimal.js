// Minimal mode: a second, independent SCIM 2.0 service provider, written by
// hand (no SCIMMY), so the agent can be proven against two implementations
// that share no code in their protocol handling. It is strict as some real
// providers are, and differs from the scim2 mode where real servers differ:
// - every POST/PUT body needs `schemas` with the core schema, and every
//   extension object present must be listed there; unknown attributes and
//   sub-attributes, wrong types and read-only ones (`id`, `meta`) are 400;
// - filters: one `attr eq "value"` on a few attributes, nothing else (400 invalidFilter);
// - group listings leave out `members` unless `attributes=members` is asked;
// - a PATCH may carry at most `max_patch_ops` operations and values per operation
//   (10 unless configured);
// - no /Bulk, no sorting; `attributes`/`excludedAttributes` on top-level names.
// Users and Groups live in the shared Store / a Map as in scim2 mode.
import express from "express";
import { person } from "./store.js";

const CORE = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCHOP = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR = "urn:ietf:params:scim:api:messages:2.0:Error";
const SCIM_TYPE = "application/scim+json; charset=utf-8";
export const DEFAULT_MAX_PATCH_OPS = 10;

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

class ScimError extends Error {
  constructor(status, scimType, detail) {
    super(detail);
    this.status = status;
    this.scimType = scimType;
  }
}
const invalid = (detail) => new ScimError(400, "invalidValue", detail);

// ---- schemas: attribute name -> type, "complex" with sub, multi-valued flag ----
const str = { type: "string" };
const bool = { type: "boolean" };
const multi = (sub) => ({ type: "complex", multi: true, sub });
const complex = (sub) => ({ type: "complex", sub });
const typed = { value: str, display: str, type: str, primary: bool };
const USER_ATTRS = {
  externalId: str, userName: str,
  name: complex({ formatted: str, familyName: str, givenName: str, middleName: str,
    honorificPrefix: str, honorificSuffix: str }),
  displayName: str, nickName: str, profileUrl: str, title: str, userType: str,
  preferredLanguage: str, locale: str, timezone: str, active: bool,
  password: { type: "string", writeOnly: true },
  emails: multi(typed), phoneNumbers: multi(typed), ims: multi(typed), photos: multi(typed),
  addresses: multi({ formatted: str, streetAddress: str, locality: str, region: str,
    postalCode: str, country: str, type: str, primary: bool }),
  entitlements: multi(typed), roles: multi(typed), x509Certificates: multi(typed),
};
const ENTERPRISE_ATTRS = {
  employeeNumber: str, costCenter: str, organization: str, division: str, department: str,
  manager: complex({ value: str, $ref: str, displayName: str }),
};
const GROUP_ATTRS = {
  externalId: str, displayName: str,
  members: multi({ value: str, $ref: str, display: str, type: str }),
};
// Lower-cased name -> canonical name, per attribute table (SCIM names are case-insensitive).
const canon = (table) => Object.fromEntries(Object.keys(table).map((k) => [k.toLowerCase(), k]));

function checkValue(def, v, where) {
  if (def.multi) {
    if (!Array.isArray(v)) throw invalid(`'${where}' must be an array`);
    return v.map((e, i) => checkValue({ ...def, multi: false }, e, `${where}[${i}]`));
  }
  if (def.type === "complex") {
    if (!isObject(v)) throw invalid(`'${where}' must be an object`);
    const names = canon(def.sub);
    const out = {};
    for (const [k, x] of Object.entries(v)) {
      const name = names[k.toLowerCase()];
      if (!name) throw invalid(`unknown attribute '${where}.${k}'`);
      if (x === null) continue;
      out[name] = checkValue(def.sub[name], x, `${where}.${name}`);
    }
    return out;
  }
  if (typeof v !== def.type) throw invalid(`'${where}' must be a ${def.type}`);
  return v;
}

/** A checked copy of a resource body: known attributes only, canonical names. */
function checkResource(body, { core, attrs, extensions }) {
  if (!isObject(body)) throw new ScimError(400, "invalidSyntax", "the body must be a JSON object");
  if (!Array.isArray(body.schemas))
    throw new ScimError(400, "invalidSyntax", `'schemas' is required and must include "${core}"`);
  if (!body.schemas.includes(core)) throw invalid(`'schemas' must include "${core}"`);
  for (const s of body.schemas)
    if (s !== core && !extensions[s]) throw invalid(`unknown schema ${JSON.stringify(s)}`);
  const names = canon(attrs);
  const out = { schemas: [core] };
  for (const [k, v] of Object.entries(body)) {
    if (k === "schemas") continue;
    if (k === "id" || k === "meta") continue;   // read-only: ignored on input (RFC 7643 2.2)
    if (extensions[k]) {
      if (!body.schemas.includes(k)) throw invalid(`'${k}' is present but not listed in 'schemas'`);
      if (v === null) continue;
      out[k] = checkValue(complex(extensions[k]), v, k);
      if (Object.keys(out[k]).length === 0) delete out[k];
      else out.schemas.push(k);
      continue;
    }
    const name = names[k.toLowerCase()];
    if (!name) throw invalid(`unknown attribute '${k}'`);
    if (v === null) continue;
    out[name] = checkValue(attrs[name], v, name);
  }
  return out;
}

// ---- filters: `attr eq "value"` only ----
const FILTER_RE = /^\s*([A-Za-z][\w.]*)\s+eq\s+("(?:[^"\\]|\\.)*")\s*$/;
const USER_FILTERS = {
  username: { get: (u) => [u.userName], exact: false },
  externalid: { get: (u) => [u.externalId], exact: true },
  id: { get: (u) => [u.id], exact: true },
  emails: { get: (u) => (u.emails || []).map((e) => e.value), exact: false },
  "emails.value": { get: (u) => (u.emails || []).map((e) => e.value), exact: false },
};
const GROUP_FILTERS = {
  displayname: { get: (g) => [g.displayName], exact: false },
  externalid: { get: (g) => [g.externalId], exact: true },
  id: { get: (g) => [g.id], exact: true },
  "members.value": { get: (g) => (g.members || []).map((m) => m.value), exact: true },
};

function parseFilter(text, table) {
  const m = FILTER_RE.exec(text);
  if (!m) throw new ScimError(400, "invalidFilter", `only 'attribute eq "value"' filters are supported, not ${JSON.stringify(text)}`);
  const attr = table[m[1].toLowerCase()];
  if (!attr) throw new ScimError(400, "invalidFilter", `cannot filter on '${m[1]}'`);
  let want;
  try { want = JSON.parse(m[2]); } catch { throw new ScimError(400, "invalidFilter", "bad string in filter"); }
  const norm = (s) => (attr.exact ? s : String(s).toLowerCase());
  want = norm(want);
  return (r) => attr.get(r).some((v) => v !== undefined && norm(v) === want);
}

// ---- PATCH paths: attr, attr.sub, urn:...:attr[.sub], attr[sub eq "v"][.sub] ----
const PATH_RE = /^(?:(urn:[^[\]]+):)?([A-Za-z$][\w$-]*)(?:\[\s*([A-Za-z$][\w$-]*)\s+eq\s+("(?:[^"\\]|\\.)*")\s*\])?(?:\.([A-Za-z$][\w$-]*))?$/;

function parsePath(path, extensions) {
  if (typeof path !== "string") throw new ScimError(400, "invalidPath", "'path' must be a string");
  // A bare extension URN names the whole extension object.
  if (extensions[path]) return { urn: path, attr: null };
  const m = PATH_RE.exec(path);
  if (!m || (m[1] && !extensions[m[1]])) throw new ScimError(400, "invalidPath", `unsupported path ${JSON.stringify(path)}`);
  let filter = null;
  if (m[3]) {
    let v;
    try { v = JSON.parse(m[4]); } catch { throw new ScimError(400, "invalidPath", `bad filter in ${path}`); }
    filter = { attr: m[3], value: v };
  }
  return { urn: m[1] || null, attr: m[2], filter, sub: m[5] || null };
}

const findKey = (obj, name) => Object.keys(obj).find((k) => k.toLowerCase() === name.toLowerCase()) ?? name;
const matches = (e, f) => isObject(e) && String(e[findKey(e, f.attr)]).toLowerCase() === String(f.value).toLowerCase();

/** Applies one operation to `doc` (a plain copy of the resource); throws on a bad one. */
function applyOp(doc, op, extensions) {
  if (!isObject(op)) throw new ScimError(400, "invalidSyntax", "each operation must be an object");
  const kind = String(op.op).toLowerCase();
  if (!["add", "replace", "remove"].includes(kind))
    throw new ScimError(400, "invalidSyntax", `unknown op ${JSON.stringify(op.op)}`);
  if (op.path === undefined) {
    if (kind === "remove") throw new ScimError(400, "noTarget", "remove needs a path");
    if (!isObject(op.value)) throw new ScimError(400, "invalidValue", `${kind} without a path needs an object value`);
    for (const [k, v] of Object.entries(op.value)) applyOp(doc, { op: kind, path: k, value: v }, extensions);
    return;
  }
  const p = parsePath(op.path, extensions);
  let parent = doc;
  if (p.urn) {
    if (p.attr === null) {          // the whole extension
      if (kind === "remove") delete doc[p.urn];
      else doc[p.urn] = kind === "add" && isObject(doc[p.urn]) ? { ...doc[p.urn], ...op.value } : op.value;
      return;
    }
    if (!isObject(doc[p.urn])) {
      if (kind === "remove") return;
      doc[p.urn] = {};
    }
    parent = doc[p.urn];
  }
  const key = findKey(parent, p.attr);
  const cur = parent[key];
  if (p.filter) {
    if (!Array.isArray(cur)) throw new ScimError(400, "noTarget", `no ${p.attr} matches ${op.path}`);
    const hits = cur.filter((e) => matches(e, p.filter));
    if (hits.length === 0) {
      if (kind === "remove") return;
      throw new ScimError(400, "noTarget", `no ${p.attr} matches ${op.path}`);
    }
    if (kind === "remove") {
      if (p.sub) for (const e of hits) delete e[findKey(e, p.sub)];
      else parent[key] = cur.filter((e) => !hits.includes(e));
    } else if (p.sub) {
      for (const e of hits) e[findKey(e, p.sub)] = op.value;
    } else {
      for (const e of hits) Object.assign(e, op.value);
    }
    return;
  }
  if (p.sub) {
    if (kind === "remove") {
      if (isObject(cur)) delete cur[findKey(cur, p.sub)];
      return;
    }
    parent[key] = { ...(isObject(cur) ? cur : {}), [p.sub]: op.value };
    return;
  }
  if (kind === "remove") {
    // remove with a value on a multi-valued attribute: those values (by `value`).
    if (Array.isArray(cur) && Array.isArray(op.value)) {
      const gone = new Set(op.value.map((v) => (isObject(v) ? v.value : v)));
      parent[key] = cur.filter((e) => !gone.has(isObject(e) ? e.value : e));
    } else {
      delete parent[key];
    }
    return;
  }
  if (kind === "add" && Array.isArray(cur)) {
    parent[key] = [...cur, ...(Array.isArray(op.value) ? op.value : [op.value])];
  } else if (kind === "add" && isObject(cur) && isObject(op.value)) {
    parent[key] = { ...cur, ...op.value };
  } else {
    parent[key] = op.value;
  }
}

function sendError(res, ex) {
  let status = ex.status ?? 500;
  let detail = ex.message;
  let scimType = ex.scimType;
  if (ex.type === "entity.parse.failed") { status = 400; scimType = "invalidSyntax"; detail = "the body is not valid JSON"; }
  if (!(status >= 400 && status < 600)) status = 500;
  const body = { schemas: [ERROR], status: String(status) };
  if (scimType) body.scimType = scimType;
  body.detail = detail;
  res.status(status).type(SCIM_TYPE).send(body);
}

function intParam(q, name, dflt) {
  const v = q[name];
  if (v === undefined || v === "") return dflt;
  if (Array.isArray(v) || !/^-?\d+$/.test(v)) throw invalid(`'${name}' must be an integer`);
  return Number(v);
}

/** Shapes a stored record for output: no write-only attributes, attributes= / excludedAttributes=. */
function present(r, q, always) {
  const out = {};
  const names = (v) => (typeof v === "string" ? new Set(v.split(",").map((a) => a.trim().toLowerCase())) : null);
  const pick = names(q.attributes);
  const drop = names(q.excludedAttributes);
  for (const [k, v] of Object.entries(r)) {
    if (k === "password") continue;
    const lk = k.toLowerCase();
    if (!always.includes(k)) {
      if (pick && !pick.has(lk)) continue;
      if (drop && drop.has(lk)) continue;
    }
    out[k] = v;
  }
  return out;
}

export function install(app, { base, cfg, store, origin }) {
  const groups = new Map();
  const userSpec = { core: CORE, attrs: USER_ATTRS, extensions: { [ENTERPRISE]: ENTERPRISE_ATTRS } };
  const groupSpec = { core: GROUP, attrs: GROUP_ATTRS, extensions: {} };
  const location = (type, id) => `${origin()}${base}/${type}/${id}`;
  const json = express.json({ type: ["application/scim+json", "application/json"], limit: "8mb" });

  function stamp(type, id, current) {
    const now = new Date().toISOString();
    return { resourceType: type === "Users" ? "User" : "Group", created: current ? current.meta.created : now,
      lastModified: now, version: store.nextVersion(), location: location(type, id) };
  }

  const users = {
    type: "Users", spec: userSpec, filters: USER_FILTERS, always: ["schemas", "id", "meta"],
    get: (id) => store.get(id),
    all: () => store.all(),
    save(id, data) {
      if (typeof data.userName !== "string" || data.userName.trim() === "") throw invalid("'userName' is required");
      const owner = store.nameOwner(data.userName);
      const current = id === undefined ? undefined : store.get(id);
      if (id !== undefined && !current) throw new ScimError(404, null, `User ${id} not found`);
      const uid = id ?? store.newId();
      if (owner !== undefined && owner !== uid)
        throw new ScimError(409, "uniqueness", `userName ${JSON.stringify(data.userName)} is taken`);
      const record = { ...data, id: uid, meta: stamp("Users", uid, current) };
      store.put(uid, record, data.userName);
      return record;
    },
    remove(id) {
      if (!store.delete(id)) throw new ScimError(404, null, `User ${id} not found`);
      dropMember(id);
    },
  };
  const groupRes = {
    type: "Groups", spec: groupSpec, filters: GROUP_FILTERS, always: ["schemas", "id", "meta"],
    get: (id) => groups.get(id),
    all: () => Array.from(groups.values()),
    save(id, data) {
      if (typeof data.displayName !== "string" || data.displayName.trim() === "") throw invalid("'displayName' is required");
      const current = id === undefined ? undefined : groups.get(id);
      if (id !== undefined && !current) throw new ScimError(404, null, `Group ${id} not found`);
      const gid = id ?? store.newId();
      for (const [other, g] of groups)
        if (other !== gid && g.displayName.toLowerCase() === data.displayName.toLowerCase())
          throw new ScimError(409, "uniqueness", `displayName ${JSON.stringify(data.displayName)} is taken`);
      const members = [];
      const seen = new Set();
      for (const m of data.members || []) {
        if (typeof m.value !== "string") throw invalid("every member needs a 'value'");
        const type = store.get(m.value) ? "User" : groups.has(m.value) && m.value !== gid ? "Group" : null;
        if (!type) throw invalid(`member ${JSON.stringify(m.value)} is no user or group`);
        if (m.type !== undefined && m.type !== type) throw invalid(`member ${m.value} is a ${type}, not a ${m.type}`);
        if (seen.has(m.value)) continue;
        seen.add(m.value);
        members.push({ ...m, type, $ref: location(type === "User" ? "Users" : "Groups", m.value) });
      }
      const record = { ...data, id: gid, meta: stamp("Groups", gid, current) };
      if (members.length > 0) record.members = members;
      else delete record.members;
      groups.set(gid, record);
      return record;
    },
    remove(id) {
      if (!groups.delete(id)) throw new ScimError(404, null, `Group ${id} not found`);
      dropMember(id);
    },
  };

  function dropMember(id) {
    for (const [gid, g] of groups) {
      if (!(g.members || []).some((m) => m.value === id)) continue;
      const record = { ...g, members: g.members.filter((m) => m.value !== id), meta: { ...g.meta, version: store.nextVersion() } };
      if (record.members.length === 0) delete record.members;
      groups.set(gid, record);
    }
  }

  const send = (res, status, body, r) => {
    res.status(status).type(SCIM_TYPE);
    if (r) res.set("ETag", r.meta.version);
    res.send(body);
  };
  const ifMatch = (req, r) => {
    const want = req.get("If-Match");
    if (!want || want.trim() === "*" || !r) return;
    if (!want.split(",").map((t) => t.trim()).includes(r.meta.version))
      throw new ScimError(412, null, `${r.id} has changed (version ${r.meta.version})`);
  };

  function router(R) {
    const r = express.Router({ strict: true });
    const handle = (fn) => async (req, res) => {
      try { await fn(req, res); } catch (ex) { sendError(res, ex); }
    };
    r.get("/", handle((req, res) => {
      let all = R.all();
      if (typeof req.query.filter === "string") all = all.filter(parseFilter(req.query.filter, R.filters));
      if (req.query.sortBy !== undefined) throw invalid("sorting is not supported");
      const start = Math.max(intParam(req.query, "startIndex", 1), 1);
      const count = Math.min(Math.max(intParam(req.query, "count", cfg.page_size), 0), cfg.page_size);
      const page = all.slice(start - 1, start - 1 + count);
      let q = req.query;
      // Listings leave out members unless they are asked for.
      if (R === groupRes && cfg.omit_members_in_list
          && !(typeof q.attributes === "string" && /(^|,)\s*members\s*(,|$)/i.test(q.attributes)))
        q = { ...q, excludedAttributes: `${q.excludedAttributes ? `${q.excludedAttributes},` : ""}members` };
      send(res, 200, { schemas: [LIST], totalResults: all.length, itemsPerPage: page.length, startIndex: start,
        Resources: page.map((x) => present(x, q, R.always)) });
    }));
    r.get("/:id", handle((req, res) => {
      const x = R.get(req.params.id);
      if (!x) throw new ScimError(404, null, `${R.type.slice(0, -1)} ${req.params.id} not found`);
      send(res, 200, present(x, req.query, R.always), x);
    }));
    r.post("/", json, handle((req, res) => {
      const x = R.save(undefined, checkResource(req.body, R.spec));
      res.set("Location", x.meta.location);
      send(res, 201, present(x, req.query, R.always), x);
    }));
    r.put("/:id", json, handle((req, res) => {
      ifMatch(req, R.get(req.params.id));
      const x = R.save(req.params.id, checkResource(req.body, R.spec));
      send(res, 200, present(x, req.query, R.always), x);
    }));
    r.patch("/:id", json, handle((req, res) => {
      const body = req.body;
      if (!isObject(body) || !Array.isArray(body.schemas) || !body.schemas.includes(PATCHOP))
        throw new ScimError(400, "invalidSyntax", `a PATCH body needs "schemas": ["${PATCHOP}"]`);
      if (!Array.isArray(body.Operations) || body.Operations.length === 0)
        throw new ScimError(400, "invalidSyntax", "a PATCH body needs a non-empty 'Operations' array");
      const max = cfg.max_patch_ops;
      if (max && body.Operations.length > max)
        throw new ScimError(400, "tooMany", `PATCH with ${body.Operations.length} operations; at most ${max} operations per request`);
      for (const op of body.Operations)
        if (max && isObject(op) && Array.isArray(op.value) && op.value.length > max)
          throw new ScimError(400, "tooMany", `PATCH operation with ${op.value.length} values; at most ${max} values per operation`);
      const current = R.get(req.params.id);
      if (!current) throw new ScimError(404, null, `${R.type.slice(0, -1)} ${req.params.id} not found`);
      ifMatch(req, current);
      const { id, meta, ...rest } = current;
      const doc = structuredClone(rest);
      for (const op of body.Operations) applyOp(doc, op, R.spec.extensions);
      // Extensions the operations created or emptied.
      doc.schemas = [R.spec.core, ...Object.keys(R.spec.extensions).filter((u) => isObject(doc[u]) && Object.keys(doc[u]).length > 0)];
      for (const u of Object.keys(R.spec.extensions)) if (doc[u] !== undefined && !doc.schemas.includes(u)) delete doc[u];
      const checked = checkResource(doc, R.spec);
      if (JSON.stringify(checked) === JSON.stringify(checkResource({ ...rest }, R.spec)))
        return res.status(204).set("ETag", current.meta.version).end();
      const x = R.save(req.params.id, checked);
      send(res, 200, present(x, req.query, R.always), x);
    }));
    r.delete("/:id", handle((req, res) => {
      ifMatch(req, R.get(req.params.id));
      R.remove(req.params.id);
      res.status(204).end();
    }));
    r.use((req, res) => sendError(res, new ScimError(404, null, `no endpoint ${req.method} ${req.originalUrl.split("?")[0]}`)));
    return r;
  }

  const spc = () => ({
    schemas: ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
    patch: { supported: true }, bulk: { supported: false, maxOperations: 0, maxPayloadSize: 0 },
    filter: { supported: true, maxResults: cfg.page_size }, changePassword: { supported: false },
    sort: { supported: false }, etag: { supported: true },
    authenticationSchemes: [{ type: "oauthbearertoken", name: "OAuth Bearer Token",
      description: "Authentication with a bearer token" }],
    meta: { resourceType: "ServiceProviderConfig", location: `${origin()}${base}/ServiceProviderConfig` },
  });
  const resourceTypes = () => [
    { schemas: ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], id: "User", name: "User",
      endpoint: "/Users", schema: CORE, schemaExtensions: [{ schema: ENTERPRISE, required: false }],
      meta: { resourceType: "ResourceType", location: `${origin()}${base}/ResourceTypes/User` } },
    { schemas: ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], id: "Group", name: "Group",
      endpoint: "/Groups", schema: GROUP,
      meta: { resourceType: "ResourceType", location: `${origin()}${base}/ResourceTypes/Group` } },
  ];
  const schemaList = () => [[CORE, "User", USER_ATTRS], [ENTERPRISE, "EnterpriseUser", ENTERPRISE_ATTRS],
    [GROUP, "Group", GROUP_ATTRS]].map(([id, name, attrs]) => ({
    schemas: ["urn:ietf:params:scim:schemas:core:2.0:Schema"], id, name,
    attributes: Object.entries(attrs).map(([n, d]) => ({ name: n, type: d.type, multiValued: !!d.multi,
      required: n === "userName" || n === "displayName", mutability: d.writeOnly ? "writeOnly" : "readWrite",
      returned: d.writeOnly ? "never" : "default" })),
    meta: { resourceType: "Schema", location: `${origin()}${base}/Schemas/${id}` } }));
  const listOf = (items) => ({ schemas: [LIST], totalResults: items.length, itemsPerPage: items.length,
    startIndex: 1, Resources: items });

  const meta = express.Router({ strict: true });
  meta.get("/ServiceProviderConfig", (req, res) => send(res, 200, spc()));
  meta.get("/ResourceTypes", (req, res) => send(res, 200, listOf(resourceTypes())));
  meta.get("/ResourceTypes/:id", (req, res) => {
    const t = resourceTypes().find((x) => x.id === req.params.id);
    if (t) send(res, 200, t); else sendError(res, new ScimError(404, null, `no resource type ${req.params.id}`));
  });
  meta.get("/Schemas", (req, res) => send(res, 200, listOf(schemaList())));
  meta.get("/Schemas/:id", (req, res) => {
    const s = schemaList().find((x) => x.id === req.params.id);
    if (s) send(res, 200, s); else sendError(res, new ScimError(404, null, `no schema ${req.params.id}`));
  });

  // Exact routes: a trailing slash on a resource path is a 404, as at strict providers.
  app.use(base, (req, res, next) => {
    if (req.path.length > 1 && req.path.endsWith("/"))
      return sendError(res, new ScimError(404, null, `no resource at ${req.originalUrl.split("?")[0]}`));
    next();
  });
  app.use(`${base}/Users`, router(users));
  app.use(`${base}/Groups`, router(groupRes));
  app.use(base, meta);
  app.use(base, (req, res) => sendError(res, new ScimError(404, null, `no endpoint ${req.method} ${req.path}`)));
  app.use((ex, req, res, next) => {
    if (res.headersSent) return next(ex);
    sendError(res, ex);
  });

  return {
    publish: () => {},
    ready: () => {},
    clear: () => groups.clear(),
    groups: () => Array.from(groups.values()),
    seed: (list) => list.map((u, i) => {
      try {
        return users.save(undefined, checkResource({ schemas: [CORE, ...Object.keys(u).filter((k) => k === ENTERPRISE)], ...u }, userSpec));
      } catch (ex) {
        ex.message = `seed user ${i + 1}: ${ex.message}`;
        throw ex;
      }
    }),
    seedGroups: (list) => list.map((g) => groupRes.save(undefined, checkResource({ schemas: [GROUP], ...g }, groupSpec))),
    generated(i, prefix) {
      const p = person(i, prefix);
      return {
        schemas: [CORE, ENTERPRISE], userName: p.userName,
        name: { givenName: p.given, familyName: p.family, formatted: p.formatted },
        displayName: p.formatted, title: p.title, active: true,
        emails: [{ value: p.email, type: "work", primary: true }],
        [ENTERPRISE]: { department: p.department },
      };
    },
  };
}
