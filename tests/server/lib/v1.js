// Legacy mode: an emulation of Workplace's SCIM 1.0 account-management API
// (the API the original Python sample spoke), at /scim/v1/:
// - schemas urn:scim:schemas:core:1.0, urn:scim:schemas:extension:enterprise:1.0
//   (manager.managerId), urn:scim:schemas:extension:facebook:starttermdates:1.0
//   (startDate/termDate as integer UNIX seconds); accountstatusdetails is
//   returned by the server and read-only;
// - ids are large integers, sent as JSON numbers (numeric_ids, the default);
// - list responses in the SCIM 1.1 shape; the only filter is `userName eq "..."`
//   (plus id/externalId eq);
// - no PATCH (405): updates are GET, merge, PUT of the whole record;
// - errors as {"Errors":[{"description":..., "code":...}]}.
// `strict` (the default) rejects unknown attributes and read-only attributes
// sent back on writes, so a client's typo (the sample's `externalID`) or a
// record echoed back unfiltered is a 400, not silently ignored.
import express from "express";
import { person } from "./store.js";

export const CORE = "urn:scim:schemas:core:1.0";
export const ENTERPRISE = "urn:scim:schemas:extension:enterprise:1.0";
export const DATES = "urn:scim:schemas:extension:facebook:starttermdates:1.0";
export const STATUS = "urn:scim:schemas:extension:facebook:accountstatusdetails:1.0";
const AUTH = "urn:scim:schemas:extension:facebook:auth_method:1.0";
const FRONTLINE = "urn:scim:schemas:extension:facebook:frontline:1.0";
const WRITABLE_SCHEMAS = new Set([CORE, ENTERPRISE, DATES, AUTH, FRONTLINE]);
const JSON_TYPE = "application/json; charset=utf-8";

const CORE_ATTRS = new Set([
  "schemas", "id", "externalId", "userName", "name", "displayName", "nickName", "profileUrl",
  "title", "userType", "preferredLanguage", "locale", "timezone", "active", "emails",
  "phoneNumbers", "addresses", "photos", "ims", "groups", "entitlements", "roles", "meta",
]);
const MULTI = ["emails", "phoneNumbers", "addresses", "photos", "ims"];
const ENTERPRISE_ATTRS = new Set([
  "employeeNumber", "costCenter", "organization", "division", "department", "manager",
]);
const FILTER_RE = /^\s*(userName|id|externalId)\s+eq\s+("(?:[^"\\]|\\.)*")\s*$/i;

class V1Error extends Error {
  constructor(code, description) {
    super(description);
    this.code = code;
  }
}

const bad = (msg) => new V1Error(400, msg);

function sendError(res, ex) {
  let code = ex instanceof V1Error ? ex.code : (ex.status ?? 500);
  let msg = ex.message;
  if (ex.type === "entity.parse.failed") { code = 400; msg = "Request body is not valid JSON"; }
  if (!(code >= 400 && code < 600)) code = 500;
  res.status(code).type(JSON_TYPE).send({ Errors: [{ description: msg, code }] });
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function isInt(v) {
  return typeof v === "number" && Number.isInteger(v);
}

/**
 * Installs the legacy API on `app` at `base` ("/scim/v1").
 */
export function install(app, { base, cfg, store, origin }) {
  const numeric = store.numericIds;
  const outId = (id) => (numeric ? Number(id) : id);
  const location = (id) => `${origin()}${base}/Users/${id}`;

  // Validates a POST/PUT body and returns the record to store (without id/meta).
  function validate(body, id) {
    if (!isObject(body)) throw bad("Request body must be a JSON object");
    if (!Array.isArray(body.schemas) || !body.schemas.includes(CORE))
      throw bad(`'schemas' must be an array including "${CORE}"`);
    for (const s of body.schemas) {
      if (s === STATUS && cfg.strict) throw bad(`Schema "${STATUS}" is read-only`);
      if (s !== STATUS && !WRITABLE_SCHEMAS.has(s)) throw bad(`Unknown schema ${JSON.stringify(s)}`);
    }
    const record = {};
    for (const [k, v] of Object.entries(body)) {
      if (k.startsWith("urn:")) {
        if (k === STATUS) {
          if (cfg.strict) throw bad(`Attribute "${STATUS}" is read-only`);
          continue;
        }
        if (!WRITABLE_SCHEMAS.has(k)) throw bad(`Unknown schema ${JSON.stringify(k)}`);
        if (!body.schemas.includes(k)) throw bad(`Extension "${k}" is used but not listed in 'schemas'`);
        if (!isObject(v)) throw bad(`"${k}" must be an object`);
        record[k] = v;
      } else if (!CORE_ATTRS.has(k)) {
        if (cfg.strict) throw bad(`Unknown attribute '${k}'`);
      } else if (k === "meta") {
        if (cfg.strict) throw bad("Attribute 'meta' is read-only");
      } else if (k === "id") {
        if (id === undefined || String(v) !== String(id)) throw bad("Attribute 'id' is read-only");
      } else {
        record[k] = v;
      }
    }
    record.schemas = body.schemas.filter((s) => s !== STATUS);
    if (typeof record.userName !== "string" || record.userName.trim() === "")
      throw bad("'userName' is required and must be a non-empty string");
    if (record.name !== undefined && !isObject(record.name)) throw bad("'name' must be an object");
    if (record.active !== undefined && typeof record.active !== "boolean")
      throw bad("'active' must be a boolean");
    if (record.externalId !== undefined && typeof record.externalId !== "string")
      throw bad("'externalId' must be a string");
    for (const m of MULTI) {
      if (record[m] === undefined) continue;
      if (!Array.isArray(record[m]) || !record[m].every(isObject))
        throw bad(`'${m}' must be an array of objects`);
    }
    const ent = record[ENTERPRISE];
    if (ent) {
      for (const k of Object.keys(ent))
        if (!ENTERPRISE_ATTRS.has(k) && cfg.strict) throw bad(`Unknown attribute '${ENTERPRISE}:${k}'`);
      if (ent.manager !== undefined) {
        if (!isObject(ent.manager) || ent.manager.managerId === undefined)
          throw bad(`'${ENTERPRISE}:manager' must be {"managerId": <id>}`);
        const mid = ent.manager.managerId;
        if (!(isInt(mid) || (typeof mid === "string" && /^\d+$/.test(mid))))
          throw bad(`'manager.managerId' must be a user id, got ${JSON.stringify(mid)}`);
        if (!store.get(String(mid)))
          throw bad(`'manager.managerId' ${mid} is not a known user`);
        ent.manager = { managerId: outId(String(mid)) };
      }
    }
    const dates = record[DATES];
    if (dates) {
      for (const [k, v] of Object.entries(dates)) {
        if (k !== "startDate" && k !== "termDate") throw bad(`Unknown attribute '${DATES}:${k}'`);
        if (!isInt(v) || v < 0) throw bad(`'${DATES}:${k}' must be an integer UNIX time, got ${JSON.stringify(v)}`);
      }
    }
    return record;
  }

  function save(id, record, created) {
    const stamp = new Date().toISOString();
    const full = {
      ...record,
      id: outId(id),
      [STATUS]: store.get(id)?.[STATUS] ?? { invited: false, claimed: false },
      meta: { created: created ?? stamp, lastModified: stamp, location: location(id) },
    };
    if (!full.schemas.includes(STATUS)) full.schemas = [...full.schemas, STATUS];
    store.put(id, full, record.userName);
    return full;
  }

  function create(body) {
    const record = validate(body);
    if (store.nameOwner(record.userName) !== undefined)
      throw new V1Error(409, `User with userName ${JSON.stringify(record.userName)} already exists`);
    return save(store.newId(), record);
  }

  const r = express.Router();
  const json = express.json({ type: ["application/json", "application/scim+json"], limit: "8mb" });
  const send = (res, status, body) => res.status(status).type(JSON_TYPE).send(body);

  r.get("/Users", (req, res) => {
    try {
      const { filter } = req.query;
      let matched;
      if (filter === undefined) {
        matched = store.all();
      } else {
        const m = typeof filter === "string" && FILTER_RE.exec(filter);
        if (!m) throw bad(`Unsupported filter ${JSON.stringify(filter)}: only userName eq "..." is supported`);
        let value;
        try { value = JSON.parse(m[2]); } catch { throw bad(`Bad string in filter ${JSON.stringify(filter)}`); }
        const attr = m[1].toLowerCase();
        if (attr === "username") {
          const u = store.findByName(value);
          matched = u ? [u] : [];
        } else if (attr === "id") {
          const u = store.get(value);
          matched = u ? [u] : [];
        } else {
          matched = store.all().filter((u) => u.externalId === value);
        }
      }
      const num = (name, dflt) => {
        const v = req.query[name];
        if (v === undefined || v === "") return dflt;
        if (typeof v !== "string" || !/^-?\d+$/.test(v)) throw bad(`'${name}' must be an integer`);
        return Number.parseInt(v, 10);
      };
      const startIndex = Math.max(num("startIndex", 1), 1);
      const count = Math.min(Math.max(num("count", cfg.page_size), 0), cfg.page_size);
      const page = matched.slice(startIndex - 1, startIndex - 1 + count);
      send(res, 200, {
        schemas: [CORE], totalResults: matched.length, itemsPerPage: page.length, startIndex,
        Resources: page,
      });
    } catch (ex) {
      sendError(res, ex);
    }
  });

  r.get("/Users/:id", (req, res) => {
    const u = store.get(req.params.id);
    if (!u) return sendError(res, new V1Error(404, `User ${req.params.id} not found`));
    send(res, 200, u);
  });

  r.post("/Users", json, (req, res) => {
    try {
      const u = create(req.body);
      res.set("Location", u.meta.location);
      send(res, 201, u);
    } catch (ex) {
      sendError(res, ex);
    }
  });

  r.put("/Users/:id", json, (req, res) => {
    try {
      const id = req.params.id;
      const current = store.get(id);
      if (!current) throw new V1Error(404, `User ${id} not found`);
      const record = validate(req.body, id);
      const owner = store.nameOwner(record.userName);
      if (owner !== undefined && owner !== id)
        throw new V1Error(409, `User with userName ${JSON.stringify(record.userName)} already exists`);
      send(res, 200, save(id, record, current.meta.created));
    } catch (ex) {
      sendError(res, ex);
    }
  });

  r.delete("/Users/:id", (req, res) => {
    if (!store.delete(req.params.id))
      return sendError(res, new V1Error(404, `User ${req.params.id} not found`));
    res.status(204).end();
  });

  r.all(["/Users", "/Users/:id"], (req, res) => {
    res.set("Allow", req.params.id ? "GET, PUT, DELETE" : "GET, POST");
    sendError(res, new V1Error(405, `Method ${req.method} is not supported by this API`));
  });
  r.use((req, res) => sendError(res, new V1Error(404, `No endpoint ${req.method} ${req.path}`)));
  r.use((ex, req, res, next) => {
    if (res.headersSent) return next(ex);
    sendError(res, ex);
  });
  app.use(base, r);

  return {
    publish() {},
    ready() {},
    clear() {},
    seed(list) {
      return list.map((u) => create({ schemas: [CORE, ...Object.keys(u).filter((k) => k.startsWith("urn:"))], ...u }));
    },
    generated(i, prefix) {
      const p = person(i, prefix);
      return {
        schemas: [CORE, ENTERPRISE],
        userName: p.userName,
        name: { givenName: p.given, familyName: p.family, formatted: p.formatted },
        title: p.title,
        active: true,
        emails: [{ value: p.email, type: "work", primary: true }],
        [ENTERPRISE]: { department: p.department },
      };
    },
  };
}
