// SCIM 2.0 mode: SCIMMY does the protocol (schema validation, filters,
// PatchOp, attributes, errors, /Schemas, /ResourceTypes, /ServiceProviderConfig,
// Groups); the /Users routes are ours so that paging is honest (itemsPerPage =
// what was returned, count capped at the published maxResults), filters on
// quoted values accept JSON escapes, userName is unique case-insensitively,
// and ETag / If-Match work.
import express from "express";
import SCIMMY from "scimmy";
import SCIMMYRouters from "scimmy-routers";
import { person } from "./store.js";

const CORE = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SCIM_TYPE = "application/scim+json; charset=utf-8";

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

/** A matcher for `attr op "json string"` on a known attribute, or null. */
export function simpleFilter(text) {
  const m = SIMPLE_RE.exec(text);
  if (!m) return null;
  const attr = SIMPLE[m[1].toLowerCase()];
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

function scimError(status, scimType, detail) {
  const body = { schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"], status: String(status) };
  if (scimType) body.scimType = scimType;
  if (detail) body.detail = detail;
  return body;
}

function sendError(res, ex) {
  let status = ex.status ?? ex.statusCode ?? 500;
  let body;
  if (ex instanceof SCIMMY.Types.Error) body = new SCIMMY.Messages.Error(ex);
  else if (ex.type === "entity.parse.failed") body = scimError(400, "invalidSyntax", "Request body is not valid JSON");
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

/**
 * Installs the SCIM 2.0 provider on `app` at `base` ("/scim/v2").
 * `cfg` is the live server config (page_size, token...); `store` the user store.
 */
export function install(app, { base, cfg, store, origin }) {
  const groups = new Map();
  const User = SCIMMY.Resources.User;
  User.extend(SCIMMY.Schemas.EnterpriseUser, false);
  const basepath = () => `${origin()}${base}`;

  // Create or replace, atomically with respect to the uniqueness check: no
  // await between the check and the insert, so concurrent creates of one
  // userName give one 201 and 409s.
  function ingress(resource, instance) {
    const data = JSON.parse(JSON.stringify(instance));
    if (typeof data.userName !== "string" || data.userName.trim() === "")
      throw new SCIMMY.Types.Error(400, "invalidValue", "userName is required");
    const owner = store.nameOwner(data.userName);
    const stamp = new Date().toISOString();
    let id = resource.id;
    let created = stamp;
    if (id !== undefined) {
      const current = store.get(id);
      if (!current) throw new SCIMMY.Types.Error(404, null, `Resource ${id} not found`);
      created = current.meta.created;
    } else {
      id = store.newId();
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
      if (!store.delete(resource.id))
        throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
    },
  });

  SCIMMY.Resources.declare(SCIMMY.Resources.Group, {
    ingress: (resource, instance) => {
      const data = JSON.parse(JSON.stringify(instance));
      const id = resource.id ?? store.newId();
      if (resource.id !== undefined && !groups.has(id))
        throw new SCIMMY.Types.Error(404, null, `Resource ${id} not found`);
      for (const [gid, g] of groups)
        if (gid !== id && g.displayName.toLowerCase() === String(data.displayName).toLowerCase())
          throw new SCIMMY.Types.Error(409, "uniqueness", `displayName ${JSON.stringify(data.displayName)} is already taken`);
      const stamp = new Date().toISOString();
      const record = { ...data, id, meta: {
        resourceType: "Group", created: groups.get(id)?.meta.created ?? stamp, lastModified: stamp,
        version: store.nextVersion(), location: `${basepath()}/Groups/${id}`,
      } };
      groups.set(id, record);
      return record;
    },
    egress: (resource) => {
      if (resource.id !== undefined) {
        const g = groups.get(resource.id);
        if (!g) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
        return g;
      }
      const all = Array.from(groups.values());
      return resource.filter ? resource.filter.match(all) : all;
    },
    degress: (resource) => {
      if (!groups.delete(resource.id))
        throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
    },
  });

  const publish = () => SCIMMY.Config.set({
    patch: true,
    filter: { supported: true, maxResults: cfg.page_size },
    etag: true,
    sort: true,
    changePassword: false,
    bulk: { supported: false, maxOperations: 0, maxPayloadSize: 1048576 },
  });

  const json = express.json({ type: ["application/scim+json", "application/json"], limit: "8mb" });
  const users = express.Router();

  const etagOf = (u) => u && u.meta && u.meta.version;
  // A record's full "out" JSON, made by SCIMMY once per version: records are
  // replaced, never changed in place, so the cache is never stale. This keeps
  // GET and paging cheap (the benchmark compares the client with wrk here).
  const jsonOf = (u) => {
    if (u.__json === undefined)
      Object.defineProperty(u, "__json", { value: JSON.stringify(new User.schema(u, "out", User.basepath())) });
    return u.__json;
  };
  const plain = (q) => q.attributes === undefined && q.excludedAttributes === undefined;
  const send = (res, status, body, etag) => {
    res.status(status).type(SCIM_TYPE);
    if (etag) res.set("ETag", etag);
    res.send(body);
  };
  // RFC 7644 3.14: a stale If-Match is 412, so a client can't overwrite a change it hasn't seen.
  const precondition = (req, id) => {
    const want = req.get("If-Match");
    if (!want || want.trim() === "*") return;
    const u = store.get(id);
    if (!u) return;
    const tags = want.split(",").map((t) => t.trim());
    if (!tags.includes(u.meta.version))
      throw new SCIMMY.Types.Error(412, null, `Resource ${id} has changed (version ${u.meta.version})`);
  };

  users.get("/", (req, res) => {
    try {
      const query = { ...req.query };
      let simple = null;
      if (typeof query.filter === "string") {
        simple = simpleFilter(query.filter);
        if (simple) delete query.filter;
      }
      delete query.startIndex;
      delete query.count;
      // SCIMMY parses and validates the filter, attributes and excludedAttributes.
      const resource = new User(query);
      const startIndex = Math.max(intParam(req.query, "startIndex", 1), 1);
      const count = Math.min(Math.max(intParam(req.query, "count", cfg.page_size), 0), cfg.page_size);
      let matched;
      if (simple && simple.isName && simple.op === "eq") {
        const u = store.findByName(simple.value);
        matched = u ? [u] : [];
      } else if (simple) {
        matched = store.all().filter(simple.test);
      } else if (resource.filter) {
        matched = resource.filter.match(store.all());
      } else {
        matched = store.all();
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
      const items = plain(req.query) ? page.map(jsonOf)
        : page.map((u) => JSON.stringify(new User.schema(u, "out", User.basepath(), resource.attributes)));
      send(res, 200, `${head}${items.join(",")}]}`);
    } catch (ex) {
      sendError(res, ex);
    }
  });

  users.get("/:id", async (req, res) => {
    try {
      const u = store.get(req.params.id);
      if (u && plain(req.query)) return send(res, 200, jsonOf(u), etagOf(u));
      const out = await new User(req.params.id, req.query).read();
      send(res, 200, out, etagOf(store.get(req.params.id)));
    } catch (ex) {
      sendError(res, ex);
    }
  });

  users.post("/", json, async (req, res) => {
    try {
      const out = await new User(req.query).write(req.body);
      res.set("Location", out.meta.location);
      send(res, 201, out, etagOf(out));
    } catch (ex) {
      sendError(res, ex);
    }
  });

  users.put("/:id", json, async (req, res) => {
    try {
      precondition(req, req.params.id);
      const out = await new User(req.params.id, req.query).write(req.body);
      send(res, 200, out, etagOf(out));
    } catch (ex) {
      sendError(res, ex);
    }
  });

  users.patch("/:id", json, async (req, res) => {
    try {
      precondition(req, req.params.id);
      const body = normalizePatch(req.body, store.get(req.params.id));
      const out = await new User(req.params.id, req.query).patch(body);
      if (out) send(res, 200, out, etagOf(out));
      else res.status(204).end();
    } catch (ex) {
      sendError(res, ex);
    }
  });

  users.delete("/:id", async (req, res) => {
    try {
      precondition(req, req.params.id);
      await new User(req.params.id).dispose();
      res.status(204).end();
    } catch (ex) {
      sendError(res, ex);
    }
  });

  app.use(`${base}/Users`, users);
  app.use(base, new SCIMMYRouters({
    type: "bearer",
    handler: () => "admin",      // the token was checked in front of everything
    baseUri: () => origin(),
  }));
  publish();
  app.use((ex, req, res, next) => {   // errors from the body parser and others
    if (res.headersSent) return next(ex);
    sendError(res, ex);
  });

  return {
    publish,
    /** Called once the port is known: absolute meta.location URLs. */
    ready: () => User.basepath(basepath()),
    clear: () => groups.clear(),
    /** Inserts users without going through HTTP; returns their SCIM resources. */
    seed(list) {
      const out = [];
      for (const u of list) {
        // The schema constructor validates, as a POST would.
        const schemas = u[ENTERPRISE] ? [CORE, ENTERPRISE] : [CORE];
        out.push(ingress({}, new User.schema({ schemas, ...u }, "in")));
      }
      return out;
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
