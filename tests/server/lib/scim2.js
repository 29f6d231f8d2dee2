// SCIM 2.0 mode: SCIMMY does the protocol (schema validation, filters,
// PatchOp, attributes, errors, /Schemas, /ResourceTypes, /ServiceProviderConfig,
// Groups); the /Users routes are ours so that paging is honest (itemsPerPage =
// what was returned, count capped at the published maxResults), filters on
// quoted values accept JSON escapes, userName is unique case-insensitively,
// and ETag / If-Match work. Answers to plain requests are built from a plan of
// SCIMMY's schema (egressOf) rather than a second SCIMMY pass: see README, "Speed".
// Meta mode (install's `meta`) adds Meta's extensions, name.formatted required, a
// server-kept account status, and refuses to delete claimed accounts.
import express from "express";
import SCIMMY from "scimmy";
import SCIMMYRouters from "scimmy-routers";
import { person } from "./store.js";

const CORE = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCHOP = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SCIM_TYPE = "application/scim+json; charset=utf-8";
// Meta's extensions (meta mode), named as lua/scim/dialects/meta.lua names them.
export const DATES = "urn:ietf:params:scim:schemas:extension:facebook:starttermdates:2.0:User";
export const STATUS = "urn:ietf:params:scim:schemas:extension:facebook:accountstatusdetails:2.0:User";
export const AUTH = "urn:ietf:params:scim:schemas:extension:facebook:authmethod:2.0:User";
export const FRONTLINE = "urn:ietf:params:scim:schemas:extension:facebook:frontline:2.0:User";
const STATUS_FIELDS = { invited: "boolean", invitedDate: "integer", claimed: "boolean",
  claimedDate: "integer" };

/** Meta's schema extensions as SCIMMY definitions; SCIMMY validates them like the core's. */
function metaExtensions() {
  const { SchemaDefinition: Def, Attribute: Attr } = SCIMMY.Types;
  // The provider keeps these: "out" only, so a client's values are ignored (RFC 7643 readOnly).
  const status = (type, name, description) => new Attr(type, name,
    { direction: "out", mutable: false, description });
  return [
    new Def("StartTermDates", DATES, "Employment start and termination dates", [
      new Attr("integer", "startDate", { description: "Start date, UNIX seconds" }),
      new Attr("integer", "termDate", { description: "Termination date, UNIX seconds" }),
    ]),
    new Def("AccountStatusDetails", STATUS, "Account status, kept by the provider (read-only)", [
      status("boolean", "invited", "Whether the person was invited"),
      status("integer", "invitedDate", "When the last invitation was sent, UNIX seconds"),
      status("boolean", "claimed", "Whether the person has claimed (activated) the account"),
      status("integer", "claimedDate", "When the account was claimed, UNIX seconds"),
    ]),
    new Def("AuthMethod", AUTH, "How the person logs in", [
      new Attr("string", "authMethod", { canonicalValues: ["password", "sso"],
        description: "\"password\" or \"sso\"" }),
    ]),
    new Def("Frontline", FRONTLINE, "Frontline worker", [
      new Attr("boolean", "isFrontline", { description: "Whether the person is a frontline worker" }),
    ]),
  ];
}

/** A seeded account status: only the known fields, with their types; raises a 400 otherwise. */
function seededStatus(value, where) {
  if (!isObject(value)) throw new SCIMMY.Types.Error(400, "invalidValue", `${where}: ${STATUS} must be an object`);
  const out = {};
  for (const [k, v] of Object.entries(value)) {
    const type = STATUS_FIELDS[k];
    if (!type) throw new SCIMMY.Types.Error(400, "invalidValue", `${where}: unknown attribute '${STATUS}:${k}'`);
    if (type === "boolean" ? typeof v !== "boolean" : !Number.isInteger(v))
      throw new SCIMMY.Types.Error(400, "invalidValue", `${where}: '${STATUS}:${k}' must be ${type === "boolean" ? "a boolean" : "an integer"}`);
    out[k] = v;
  }
  return out;
}

// Attributes a simple `attr op "value"` filter is answered for directly, and
// whether they compare case-exactly (RFC 7643: id and externalId do).
const SIMPLE = {
  id: { get: (u) => u.id, exact: true },
  externalid: { get: (u) => u.externalId, exact: true },
  username: { get: (u) => u.userName, exact: false },
  displayname: { get: (u) => u.displayName, exact: false },
  title: { get: (u) => u.title, exact: false },
  "name.givenname": { get: (u) => u.name && u.name.givenName, exact: false },
  "name.familyname": { get: (u) => u.name && u.name.familyName, exact: false },
  emails: { get: (u) => (u.emails || []).map((e) => e.value), exact: false },
  "emails.value": { get: (u) => (u.emails || []).map((e) => e.value), exact: false },
};
const SIMPLE_RE = /^\s*([A-Za-z][\w.]*)\s+(eq|ne|sw|ew|co)\s+("(?:[^"\\]|\\.)*")\s*$/i;

function compare(op, actual, expected, exact) {
  if (actual === undefined || actual === null) return op === "ne";
  let a = String(actual);
  let e = expected;
  if (!exact) { a = a.toLowerCase(); e = e.toLowerCase(); }
  switch (op) {
    case "eq": return a === e;
    case "ne": return a !== e;
    case "sw": return a.startsWith(e);
    case "ew": return a.endsWith(e);
    default: return a.includes(e);
  }
}

// The same for Groups.
const GROUP_SIMPLE = {
  id: { get: (g) => g.id, exact: true },
  externalid: { get: (g) => g.externalId, exact: true },
  displayname: { get: (g) => g.displayName, exact: false },
  "members.value": { get: (g) => (g.members || []).map((m) => m.value), exact: true },
};

// What a strict provider filters on: one `attr eq "value"`, nothing else.
const STRICT_FILTER_RE = /^\s*[A-Za-z][\w.:$-]*\s+eq\s+"(?:[^"\\]|\\.)*"\s*$/i;

/** A matcher for `attr op "json string"` on a known attribute, or null. */
export function simpleFilter(text, table = SIMPLE) {
  const m = SIMPLE_RE.exec(text);
  if (!m) return null;
  const attr = table[m[1].toLowerCase()];
  if (!attr) return null;
  let value;
  try { value = JSON.parse(m[3]); } catch { return null; }
  const op = m[2].toLowerCase();
  const isName = m[1].toLowerCase() === "username";
  return {
    op, value, isName,
    test: (u) => {
      const actual = attr.get(u);
      if (Array.isArray(actual)) {
        const hit = actual.some((v) => compare(op === "ne" ? "eq" : op, v, value, attr.exact));
        return op === "ne" ? !hit : hit;
      }
      return compare(op, actual, value, attr.exact);
    },
  };
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const EXT_SUB_RE = /^(urn:[^[\]"]+):([A-Za-z$][\w$-]*)\.([A-Za-z$][\w$-]*)$/;

/**
 * Works around a SCIMMY 1.3 gap: an add/replace/remove whose path is a
 * sub-attribute of a complex extension attribute (`…:enterprise:2.0:User:manager.value`)
 * fails with noTarget when the complex value is absent, where RFC 7644 3.5.2.1/3.5.2.3
 * say to create it. Such ops are rewritten to act on the whole complex
 * attribute (`…:User:manager`), tracking earlier ops of the same request.
 */
export function normalizePatch(body, current) {
  if (!isObject(body) || !Array.isArray(body.Operations) || !current) return body;
  const state = new Map();              // "urn:attr" -> the complex value as ops leave it
  const valueOf = (urn, attr) => {
    const key = `${urn}:${attr}`;
    if (!state.has(key)) {
      const ext = isObject(current[urn]) ? current[urn] : {};
      state.set(key, isObject(ext[attr]) ? { ...ext[attr] } : undefined);
    }
    return state.get(key);
  };
  const Operations = body.Operations.map((op) => {
    if (!isObject(op) || typeof op.path !== "string") return op;
    const kind = String(op.op).toLowerCase();
    const m = EXT_SUB_RE.exec(op.path);
    if (!m) {
      // A whole-attribute op on a complex extension attribute: remember its effect.
      const whole = /^(urn:[^[\]"]+):([A-Za-z$][\w$-]*)$/.exec(op.path);
      if (whole && (kind === "add" || kind === "replace") && isObject(op.value))
        state.set(op.path, { ...(kind === "add" ? valueOf(whole[1], whole[2]) : {}), ...op.value });
      else if (whole && kind === "remove") state.set(op.path, undefined);
      return op;
    }
    const [, urn, attr, sub] = m;
    const cur = valueOf(urn, attr);
    if (kind === "add" || kind === "replace") {
      const next = { ...(cur || {}), [sub]: op.value };
      state.set(`${urn}:${attr}`, next);
      return { op: kind, path: `${urn}:${attr}`, value: next };
    }
    if (kind === "remove" && cur && sub in cur) {
      const next = { ...cur };
      delete next[sub];
      const empty = Object.keys(next).length === 0;
      state.set(`${urn}:${attr}`, empty ? undefined : next);
      return empty ? { op: "remove", path: `${urn}:${attr}` }
        : { op: "replace", path: `${urn}:${attr}`, value: next };
    }
    return op;
  });
  return { ...body, Operations };
}

// ---- responses without a second SCIMMY pass ----
// SCIMMY builds a response by constructing a full schema instance ("out"),
// which costs as much as validating the request did. Our records are made by
// SCIMMY's own inbound coercion (ingress below), so their values are already
// coerced; what "out" adds is only the shape: attributes in definition order,
// "in"-only and never-returned attributes (password) left out, `schemas`
// listing the extensions present, meta.resourceType and meta.location. A plan
// compiled once from the schema definition does just that. `verify` mode
// compares every answer with SCIMMY's (a spec runs with it on).

const shown = (a) => a.config.direction !== "in" && a.config.returned !== false
  && a.config.returned !== "never";

function planOf(attributes) {
  const plan = [];
  for (const a of attributes) {
    if (a instanceof SCIMMY.Types.SchemaDefinition) {
      plan.push({ name: a.id, ext: true, sub: planOf(a.attributes) });
    } else if (shown(a)) {
      plan.push({ name: a.name, multi: a.config.multiValued === true,
        sub: a.type === "complex" ? planOf(a.subAttributes) : null });
    }
  }
  return plan;
}

function isEmpty(v) {
  if (v === undefined || v === null) return true;
  if (typeof v !== "object") return false;
  if (Array.isArray(v)) return v.length === 0;
  for (const k in v) if (!isEmpty(v[k])) return false;
  return true;
}

function shape(plan, src) {
  const out = {};
  for (const p of plan) {
    const v = src[p.name];
    if (v === undefined || v === null) continue;
    if (p.ext) {
      if (typeof v !== "object" || isEmpty(v)) continue;
      out[p.name] = shape(p.sub, v);
    } else if (p.sub === null) {
      out[p.name] = v;
    } else if (p.multi) {
      out[p.name] = v.map((e) => shape(p.sub, e));
    } else {
      out[p.name] = shape(p.sub, v);
    }
  }
  return out;
}

/**
 * A function record -> response object for a SCIMMY resource class, as
 * `new Resource.schema(record, "out", basepath)` would serialise it.
 */
export function egressOf(Resource) {
  let plan = null;
  let extIds = null;
  let def = null;
  return (record) => {
    if (plan === null) {        // compiled on first use: after every extension is declared
      def = Resource.schema.definition;
      plan = planOf(def.attributes);
      extIds = plan.filter((p) => p.ext).map((p) => p.name);
    }
    const schemas = [def.id];
    for (const id of extIds) if (!isEmpty(record[id])) schemas.push(id);
    if (Array.isArray(record.schemas)) for (const id of record.schemas) schemas.push(id);
    const src = { ...record, schemas: [...new Set(schemas)], meta: { ...record.meta,
      resourceType: def.name, location: `${Resource.basepath()}${record.id ? `/${record.id}` : ""}` } };
    return shape(plan, src);
  };
}

// A JSON body parser for the common case only: Content-Length within the
// limit, no Content-Encoding, a JSON or SCIM type in UTF-8. It reads the body
// in one piece and parses it as body-parser's strict mode does; anything else
// (chunked, gzip, other charsets or types, too large) goes to `fallback`
// (express.json), which answers those cases as before. This saves
// body-parser's per-request stream, type and charset machinery.
const JSON_TYPE_RE = /^application\/(?:scim\+)?json\s*(?:;\s*charset\s*=\s*"?utf-8"?\s*)?$/i;
const STRICT_RE = /^[\x20\x09\x0a\x0d]*[{[]/;

export function jsonBody(fallback, limit) {
  return (req, res, next) => {
    const h = req.headers;
    const length = h["content-length"];
    if (req._body || length === undefined || h["transfer-encoding"] !== undefined
        || (h["content-encoding"] !== undefined && h["content-encoding"].toLowerCase() !== "identity")
        || !JSON_TYPE_RE.test(h["content-type"] || "") || !(Number(length) <= limit))
      return fallback(req, res, next);
    req._body = true;
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      const text = chunks.length === 1 ? chunks[0].toString("utf8") : Buffer.concat(chunks).toString("utf8");
      if (text === "") {
        req.body = {};
        return next();
      }
      try {
        if (!STRICT_RE.test(text)) throw new SyntaxError("JSON body must be an object or an array");
        req.body = JSON.parse(text);
      } catch (ex) {
        return next(Object.assign(ex, { status: 400, type: "entity.parse.failed" }));
      }
      return next();
    });
    // A client that disconnects mid-body gets no answer; nothing else to do.
  };
}

function scimError(status, scimType, detail) {
  const body = { schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"], status: String(status) };
  if (scimType) body.scimType = scimType;
  if (detail) body.detail = detail;
  return body;
}

function sendError(res, ex) {
  let status = ex.status ?? ex.statusCode ?? 500;
  let body;
  if (ex instanceof SCIMMY.Types.Error) {
    // SCIMMY's message refuses some pairs RFC 7644 allows (400 tooMany): ours then.
    try { body = new SCIMMY.Messages.Error(ex); } catch { body = scimError(status, ex.scimType, ex.message); }
  } else if (ex.type === "entity.parse.failed") body = scimError(400, "invalidSyntax", "Request body is not valid JSON");
  else if (ex.type === "entity.too.large") body = scimError(413, null, "Request body too large");
  else {
    if (!(status >= 400 && status < 600)) status = 500;
    body = scimError(status, null, ex.message);
  }
  res.status(status).type(SCIM_TYPE).send(body);
}

function intParam(query, name, dflt) {
  const v = query[name];
  if (v === undefined || v === "") return dflt;
  if (Array.isArray(v) || !/^-?\d+$/.test(v))
    throw new SCIMMY.Types.Error(400, "invalidValue", `'${name}' must be an integer, got ${JSON.stringify(v)}`);
  return Number.parseInt(v, 10);
}

const SCIMError = (status, scimType, detail) => new SCIMMY.Types.Error(status, scimType, detail);

/**
 * Installs the SCIM 2.0 provider on `app` at `base` ("/scim/v2").
 * `cfg` is the live server config (page_size, token, strict, omit_members_in_list,
 * max_patch_ops...); `store` the user store; `faults` the stats (Bulk counts).
 */
export function install(app, { base, cfg, store, origin, faults, meta = false, verify = false, bulk }) {
  const groups = new Map();
  const User = SCIMMY.Resources.User;
  const Group = SCIMMY.Resources.Group;
  User.extend(SCIMMY.Schemas.EnterpriseUser, false);
  if (meta) for (const ext of metaExtensions()) User.extend(ext, false);
  const basepath = () => `${origin()}${base}`;

  // Strict providers want `schemas` naming the resource's core schema in every write.
  function checkSchemas(body, core, what) {
    if (!cfg.strict || !isObject(body)) return;
    if (!Array.isArray(body.schemas))
      throw SCIMError(400, "invalidSyntax", `${what} body must carry "schemas" including "${core}"`);
    if (!body.schemas.includes(core))
      throw SCIMError(400, "invalidValue", `${what} body "schemas" must include "${core}"`);
  }
  // A PATCH with more operations, or an operation with more values, than max_patch_ops.
  function checkPatchSize(body) {
    const max = cfg.max_patch_ops;
    if (!max || !isObject(body) || !Array.isArray(body.Operations)) return;
    if (body.Operations.length > max)
      throw SCIMError(400, "tooMany", `PATCH with ${body.Operations.length} operations;`
        + ` this server takes at most ${max} operations per request`);
    for (const op of body.Operations) {
      let n = 0;
      if (isObject(op) && Array.isArray(op.value)) n = op.value.length;
      else if (isObject(op) && isObject(op.value) && Array.isArray(op.value.members)) n = op.value.members.length;
      if (n > max)
        throw SCIMError(400, "tooMany", `PATCH operation with ${n} values;`
          + ` this server takes at most ${max} values per operation`);
    }
  }

  // Create or replace, atomically with respect to the uniqueness check: no
  // await between the check and the insert, so concurrent creates of one
  // userName give one 201 and 409s.
  function ingress(resource, instance, seedStatus) {
    const data = JSON.parse(JSON.stringify(instance));
    if (typeof data.userName !== "string" || data.userName.trim() === "")
      throw new SCIMMY.Types.Error(400, "invalidValue", "userName is required");
    // Meta requires name.formatted (its reference marks it required).
    if (meta && !(isObject(data.name) && typeof data.name.formatted === "string"
                  && data.name.formatted.trim() !== ""))
      throw new SCIMMY.Types.Error(400, "invalidValue", "name.formatted is required");
    const owner = store.nameOwner(data.userName);
    const stamp = new Date().toISOString();
    let id = resource.id;
    let created = stamp;
    if (meta) delete data[STATUS];              // the provider's to set, never the client's
    if (id !== undefined) {
      const current = store.get(id);
      if (!current) throw new SCIMMY.Types.Error(404, null, `Resource ${id} not found`);
      created = current.meta.created;
      if (meta) data[STATUS] = current[STATUS];
    } else {
      id = store.newId();
      if (meta) data[STATUS] = { invited: false, claimed: false, ...seedStatus };
    }
    if (owner !== undefined && owner !== id)
      throw new SCIMMY.Types.Error(409, "uniqueness", `userName ${JSON.stringify(data.userName)} is already taken`);
    const record = { ...data, id, meta: {
      resourceType: "User", created, lastModified: stamp, version: store.nextVersion(),
      location: `${basepath()}/Users/${id}`,
    } };
    store.put(id, record, data.userName);
    return record;
  }

  // Groups: displayName unique case-insensitively; every member must be a stored
  // user or group (not the group itself); `type` kept as sent, or filled in.
  function groupIngress(id, instance) {
    const data = JSON.parse(JSON.stringify(instance));
    if (typeof data.displayName !== "string" || data.displayName.trim() === "")
      throw SCIMError(400, "invalidValue", "displayName is required");
    const current = id === undefined ? undefined : groups.get(id);
    if (id !== undefined && !current) throw SCIMError(404, null, `Resource ${id} not found`);
    const gid = id ?? store.newId();
    const wanted = data.displayName.toLowerCase();
    for (const [other, g] of groups)
      if (other !== gid && g.displayName.toLowerCase() === wanted)
        throw SCIMError(409, "uniqueness", `displayName ${JSON.stringify(data.displayName)} is already taken`);
    if (Array.isArray(data.members)) {
      const seen = new Set();
      const members = [];
      for (const m of data.members) {
        const value = m.value;
        if (typeof value !== "string" || value === "")
          throw SCIMError(400, "invalidValue", "every member needs a 'value' (the member's id)");
        const isUser = store.get(value) !== undefined;
        const isGroup = groups.has(value) && value !== gid;
        if (value === gid) throw SCIMError(400, "invalidValue", `group ${gid} cannot be a member of itself`);
        if (!isUser && !isGroup) throw SCIMError(400, "invalidValue", `member ${JSON.stringify(value)} is no user or group here`);
        if (m.type !== undefined && m.type !== (isUser ? "User" : "Group"))
          throw SCIMError(400, "invalidValue", `member ${value} is a ${isUser ? "User" : "Group"}, not a ${m.type}`);
        if (seen.has(value)) continue;          // adding a present member changes nothing
        seen.add(value);
        members.push({ ...m, type: isUser ? "User" : "Group" });
      }
      if (members.length > 0) data.members = members;
      else delete data.members;
    }
    const stamp = new Date().toISOString();
    const record = { ...data, id: gid, meta: {
      resourceType: "Group", created: current ? current.meta.created : stamp, lastModified: stamp,
      version: store.nextVersion(), location: `${basepath()}/Groups/${gid}`,
    } };
    groups.set(gid, record);
    return record;
  }

  // A user or group gone: out of every group's members too, as providers do.
  function dropMember(id) {
    for (const [gid, g] of groups) {
      if (!Array.isArray(g.members) || !g.members.some((m) => m.value === id)) continue;
      const members = g.members.filter((m) => m.value !== id);
      const record = { ...g, meta: { ...g.meta, version: store.nextVersion(),
        lastModified: new Date().toISOString() } };
      if (members.length > 0) record.members = members;
      else delete record.members;
      groups.set(gid, record);
    }
  }

  SCIMMY.Resources.declare(User, {
    ingress,
    egress: (resource) => {
      if (resource.id !== undefined) {
        const u = store.get(resource.id);
        if (!u) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
        return structuredClone(u);    // PatchOp must never touch the stored record
      }
      return resource.filter ? resource.filter.match(store.all()) : store.all();
    },
    degress: (resource) => {
      // Meta deletes only accounts never claimed; claimed ones can only be deactivated.
      const u = store.get(resource.id);
      if (meta && u && u[STATUS] && u[STATUS].claimed === true)
        throw new SCIMMY.Types.Error(400, null, `User ${resource.id} has claimed the account and`
          + " cannot be deleted; deactivate it instead (active = false)");
      if (!store.delete(resource.id))
        throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
      dropMember(resource.id);
    },
  });

  // Declared for /Schemas and /ResourceTypes; our own routes below serve /Groups.
  SCIMMY.Resources.declare(Group, {
    ingress: (resource, instance) => groupIngress(resource.id, instance),
    egress: (resource) => {
      if (resource.id !== undefined) {
        const g = groups.get(resource.id);
        if (!g) throw SCIMError(404, null, `Resource ${resource.id} not found`);
        return structuredClone(g);
      }
      const all = Array.from(groups.values());
      return resource.filter ? resource.filter.match(all) : all;
    },
    degress: (resource) => {
      if (!groups.delete(resource.id)) throw SCIMError(404, null, `Resource ${resource.id} not found`);
      dropMember(resource.id);
    },
  });

  // Bulk (RFC 7644 3.7): live settings; `false` turns it off.
  const bulkCfg = { supported: true, max_operations: 1000, max_payload: 1048576 };
  function setBulk(b) {
    if (b === false || b === null) { bulkCfg.supported = false; return publish(); }
    if (b === true) { bulkCfg.supported = true; return publish(); }
    if (!isObject(b)) throw Object.assign(new Error("bulk must be false or {max_operations, max_payload}"), { status: 400 });
    for (const [k, v] of Object.entries(b)) {
      if (k === "supported" && typeof v === "boolean") continue;
      if (!["max_operations", "max_payload"].includes(k))
        throw Object.assign(new Error(`bulk: unknown key '${k}'`), { status: 400 });
      if (!Number.isInteger(v) || v < 1)
        throw Object.assign(new Error(`bulk.${k} must be an integer >= 1`), { status: 400 });
    }
    Object.assign(bulkCfg, { supported: true }, b);
    return publish();
  }

  const publish = () => SCIMMY.Config.set({
    patch: true,
    filter: { supported: true, maxResults: cfg.page_size },
    etag: true,
    sort: true,
    changePassword: false,
    bulk: { supported: bulkCfg.supported, maxOperations: bulkCfg.supported ? bulkCfg.max_operations : 0,
      maxPayloadSize: bulkCfg.max_payload },
  });

  const json = jsonBody(express.json({ type: ["application/scim+json", "application/json"],
    limit: "8mb" }), 8 * 1024 * 1024);

  const etagOf = (r) => r && r.meta && r.meta.version;
  // A record's full "out" JSON, made once per version: records are replaced,
  // never changed in place, so the cache is never stale. This keeps GET and
  // paging cheap (the benchmark compares the client with wrk here).
  function cachedJson(Resource, key) {
    const egress = egressOf(Resource);
    return (r) => {
      if (r[key] === undefined) {
        const text = JSON.stringify(egress(r));
        if (verify) verifyEgress(Resource, r, text);
        Object.defineProperty(r, key, { value: text });
      }
      return r[key];
    };
  }
  // --verify-egress: every answer made by `egress` must equal SCIMMY's own.
  function verifyEgress(Resource, r, text) {
    const want = JSON.stringify(new Resource.schema(r, "out", Resource.basepath()));
    if (want === text) return;
    process.stderr.write(`server.js: egress differs from SCIMMY for ${r.id}:\n ours   ${text}\n SCIMMY ${want}\n`);
    throw SCIMError(500, null, `egress of ${r.id} differs from SCIMMY's`);
  }
  const userJson = cachedJson(User, "__json");
  const groupJson = cachedJson(Group, "__json");
  // A group's JSON without its members (omit_members_in_list), also cached per version.
  const groupJsonBare = (() => {
    const egress = egressOf(Group);
    return (g) => {
      if (g.__bare === undefined) {
        const { members, ...rest } = g;
        Object.defineProperty(g, "__bare", { value: JSON.stringify(egress(rest)) });
      }
      return g.__bare;
    };
  })();

  // What SCIMMY's Resource#write does around ingress (its checks and error
  // mapping), minus building the "out" instance: the cached JSON does that.
  function write(Resource, id, instance, into) {
    const verb = id !== undefined ? "PUT" : "POST";
    if (instance === undefined)
      throw SCIMError(400, "invalidSyntax", `Missing request body payload for ${verb} operation`);
    if (Object(instance) !== instance || Array.isArray(instance))
      throw SCIMError(400, "invalidSyntax",
        `Operation ${verb} expected request body payload to be single complex value`);
    try {
      return into(new Resource.schema(instance, "in"));
    } catch (ex) {
      if (ex instanceof SCIMMY.Types.Error) throw ex;
      if (ex instanceof TypeError) throw SCIMError(400, "invalidValue", ex.message);
      throw SCIMError(404, null, `Resource ${id} not found`);
    }
  }
  const plain = (q) => q.attributes === undefined && q.excludedAttributes === undefined;
  // RFC 7644 3.14: a stale If-Match is 412, so a client can't overwrite a change it hasn't seen.
  const precondition = (ifMatch, current, id) => {
    if (!ifMatch || ifMatch.trim() === "*" || !current) return;
    const tags = ifMatch.split(",").map((t) => t.trim());
    if (!tags.includes(current.meta.version))
      throw SCIMError(412, null, `Resource ${id} has changed (version ${current.meta.version})`);
  };

  /**
   * The operations on one resource type, shared by the HTTP routes and /Bulk.
   * Each returns `{status, body, etag, location}` (body: a JSON string, an
   * object or undefined) or throws a SCIMMY error.
   */
  function operations({ Resource, core, name, get, put, jsonOf }) {
    const answer = (query, resource, r) => (plain(query) ? jsonOf(r)
      : new Resource.schema(r, "out", Resource.basepath(), resource.attributes));
    return {
      get(id, query = {}) {
        const r = get(id);
        if (r && plain(query)) return { status: 200, body: jsonOf(r), etag: etagOf(r) };
        if (!r) throw SCIMError(404, null, `Resource ${id} not found`);
        const resource = new Resource(id, query);
        return { status: 200, body: new Resource.schema(r, "out", Resource.basepath(), resource.attributes),
          etag: etagOf(r) };
      },
      create(body, query = {}) {
        const resource = new Resource(query);
        checkSchemas(body, core, `POST /${name}`);
        const r = write(Resource, undefined, body, (inst) => put(undefined, inst));
        return { status: 201, body: answer(query, resource, r), etag: etagOf(r), location: r.meta.location };
      },
      replace(id, body, query = {}, ifMatch) {
        precondition(ifMatch, get(id), id);
        const resource = new Resource(id, query);
        checkSchemas(body, core, `PUT /${name}/${id}`);
        const r = write(Resource, id, body, (inst) => put(id, inst));
        return { status: 200, body: answer(query, resource, r), etag: etagOf(r), location: r.meta.location };
      },
      async patch(id, rawBody, query = {}, ifMatch) {
        const current = get(id);
        precondition(ifMatch, current, id);
        if (cfg.strict && isObject(rawBody)
            && !(Array.isArray(rawBody.schemas) && rawBody.schemas.includes(PATCHOP)))
          throw SCIMError(400, "invalidSyntax", `PATCH body must carry "schemas": ["${PATCHOP}"]`);
        checkPatchSize(rawBody);
        const body = Resource === User ? normalizePatch(rawBody, current) : rawBody;
        const resource = new Resource(id, query);
        if (!current || !isObject(body)) {
          await resource.patch(body);     // SCIMMY's own 404 / 400 for these
          throw SCIMError(404, null, `Resource ${id} not found`);
        }
        // SCIMMY's Resource#patch reads (with the request's attribute filter, so
        // ?attributes= would lose the rest of the resource), applies, always writes
        // and builds the answer twice. We apply to the whole resource, write only
        // when the operations changed something (a no-op PATCH leaves the version
        // alone) and answer from the stored record.
        const message = new SCIMMY.Messages.PatchOp(body);
        const target = await message.apply(new Resource.schema(structuredClone(current), "out", Resource.basepath()));
        if (!target) return { status: 204, etag: etagOf(current), location: current.meta.location };
        const r = write(Resource, id, target, (inst) => put(id, inst));
        return { status: 200, body: answer(query, resource, r), etag: etagOf(r), location: r.meta.location };
      },
      async remove(id, ifMatch) {
        const current = get(id);
        precondition(ifMatch, current, id);
        await new Resource(id).dispose();
        return { status: 204, location: `${Resource.basepath()}/${id}` };
      },
    };
  }

  const userOps = operations({ Resource: User, core: CORE, name: "Users",
    get: (id) => store.get(id), put: (id, inst) => ingress({ id }, inst), jsonOf: userJson });
  const groupOps = operations({ Resource: Group, core: GROUP, name: "Groups",
    get: (id) => groups.get(String(id)), put: groupIngress, jsonOf: groupJson });

  const send = (res, out) => {
    if (out.status === 204) return res.status(204).end();
    res.status(out.status).type(SCIM_TYPE);
    if (out.etag) res.set("ETag", out.etag);
    if (out.status === 201 && out.location) res.set("Location", out.location);
    res.send(out.body);
  };

  // Honest paging over `all()`: count defaults to and is capped at the page size.
  function list(req, res, { Resource, table, all, byName, jsonOf, lean }) {
    const query = { ...req.query };
    let simple = null;
    if (typeof query.filter === "string") {
      if (cfg.strict && !STRICT_FILTER_RE.test(query.filter))
        throw SCIMError(400, "invalidFilter", "This server filters only on one"
          + ` 'attribute eq "value"', not ${JSON.stringify(query.filter)}`);
      simple = simpleFilter(query.filter, table);
      if (simple) delete query.filter;
    }
    delete query.startIndex;
    delete query.count;
    // SCIMMY parses and validates the filter, attributes and excludedAttributes.
    const resource = new Resource(query);
    const startIndex = Math.max(intParam(req.query, "startIndex", 1), 1);
    const count = Math.min(Math.max(intParam(req.query, "count", cfg.page_size), 0), cfg.page_size);
    let matched;
    if (simple && simple.isName && simple.op === "eq" && byName) {
      const u = byName(simple.value);
      matched = u ? [u] : [];
    } else if (simple) {
      matched = all().filter(simple.test);
    } else if (resource.filter) {
      matched = resource.filter.match(all());
    } else {
      matched = all();
    }
    if (resource.constraints && resource.constraints.sortBy) {
      matched = new SCIMMY.Messages.ListResponse(matched, {
        sortBy: resource.constraints.sortBy, sortOrder: resource.constraints.sortOrder,
        startIndex: 1, count: matched.length, totalResults: matched.length,
      }).Resources;
    }
    const page = matched.slice(startIndex - 1, startIndex - 1 + count);
    const head = `{"schemas":["${LIST}"],"totalResults":${matched.length},`
      + `"itemsPerPage":${page.length},"startIndex":${startIndex},"Resources":[`;
    const items = plain(req.query) ? page.map(lean ? lean() : jsonOf)
      : page.map((r) => JSON.stringify(new Resource.schema(r, "out", Resource.basepath(), resource.attributes)));
    res.status(200).type(SCIM_TYPE).send(`${head}${items.join(",")}]}`);
  }

  function routes(ops, listing) {
    const router = express.Router();
    const wrap = (fn) => async (req, res) => {
      try {
        const out = await fn(req);
        if (out) send(res, out);
      } catch (ex) {
        sendError(res, ex);
      }
    };
    router.get("/", (req, res) => {
      try { list(req, res, listing); } catch (ex) { sendError(res, ex); }
    });
    router.get("/:id", wrap((req) => ops.get(req.params.id, req.query)));
    router.post("/", json, wrap((req) => ops.create(req.body, req.query)));
    router.put("/:id", json, wrap((req) => ops.replace(req.params.id, req.body, req.query, req.get("If-Match"))));
    router.patch("/:id", json, wrap((req) => ops.patch(req.params.id, req.body, req.query, req.get("If-Match"))));
    router.delete("/:id", wrap((req) => ops.remove(req.params.id, req.get("If-Match"))));
    return router;
  }

  // Strict providers route exactly: a trailing slash on a resource path is a 404.
  app.use((req, res, next) => {
    if (!cfg.strict || !req.path.startsWith(`${base}/`)) return next();
    const rel = req.path.slice(base.length);
    if (rel.length > 1 && rel.endsWith("/"))
      return sendError(res, SCIMError(404, null, `No resource at ${req.path} (no trailing slash here)`));
    next();
  });
  app.use(`${base}/Users`, routes(userOps, { Resource: User, table: SIMPLE, all: () => store.all(),
    byName: (n) => store.findByName(n), jsonOf: userJson }));
  app.use(`${base}/Groups`, routes(groupOps, { Resource: Group, table: GROUP_SIMPLE,
    all: () => Array.from(groups.values()), jsonOf: groupJson,
    lean: () => (cfg.omit_members_in_list ? groupJsonBare : groupJson) }));
  if (bulk) {
    app.post(`${base}/Bulk`, bulk.handler({ cfg, bulkCfg, faults, userOps, groupOps,
      sendError, SCIMError, SCIM_TYPE, basepath }));
  }
  app.use(base || "/", new SCIMMYRouters({
    type: "bearer",
    handler: () => "admin",      // the token was checked in front of everything
    baseUri: () => origin(),
  }));
  if (meta) bulkCfg.supported = false;   // Meta's SCIM API has no /Bulk
  publish();
  app.use((ex, req, res, next) => {   // errors from the body parser and others
    if (res.headersSent) return next(ex);
    sendError(res, ex);
  });

  return {
    publish,
    setBulk,
    bulkConfig: () => (bulkCfg.supported ? { ...bulkCfg } : false),
    /** Called once the port is known: absolute meta.location URLs. */
    ready: () => {
      User.basepath(basepath());
      Group.basepath(basepath());
    },
    clear: () => groups.clear(),
    groups: () => Array.from(groups.values()),
    /** Inserts users without going through HTTP; returns their SCIM resources. */
    seed(list) {
      const out = [];
      // Meta's read-only account status can only be set here (checked before any insert).
      const statuses = list.map((u, i) => (meta && isObject(u) && u[STATUS] !== undefined
        ? seededStatus(u[STATUS], `seed user ${i + 1}`) : undefined));
      list.forEach((u, i) => {
        if (!isObject(u)) throw new SCIMMY.Types.Error(400, "invalidValue", `seed user ${i + 1}: expected an object`);
        // The schema constructor validates, as a POST would.
        const schemas = Array.isArray(u.schemas) ? u.schemas
          : [CORE, ...Object.keys(u).filter((k) => k.startsWith("urn:") && k !== STATUS)];
        out.push(ingress({}, new User.schema({ ...u, schemas }, "in"), statuses[i]));
      });
      return out;
    },
    /** Inserts groups without going through HTTP (members must exist). */
    seedGroups(list) {
      return list.map((g, i) => {
        if (!isObject(g)) throw SCIMError(400, "invalidValue", `seed group ${i + 1}: expected an object`);
        return groupIngress(undefined, new Group.schema({ schemas: [GROUP], ...g }, "in"));
      });
    },
    generated(i, prefix) {
      const p = person(i, prefix);
      return {
        schemas: [CORE, ENTERPRISE],
        userName: p.userName,
        name: { givenName: p.given, familyName: p.family, formatted: p.formatted },
        displayName: p.formatted,
        title: p.title,
        active: true,
        emails: [{ value: p.email, type: "work", primary: true }],
        [ENTERPRISE]: { department: p.department },
      };
    },
  };
}
