// Entra mode: Microsoft Entra API-driven inbound provisioning, as its Graph
// endpoint `POST /servicePrincipals/{id}/synchronization/jobs/{jobId}/bulkUpload`
// behaves for a client (see README, "Entra mode"): one endpoint, `<base>/bulkUpload`,
// taking a SCIM BulkRequest (Content-Type application/scim+json) of at most 50
// operations, each a POST to /Users of a user with an externalId; answered 202
// Accepted with no body. The real service processes uploads later and matches
// users by its attribute mapping; here every upload is applied at once, upserting
// by externalId, so a test reads the result from /_control/users.
import { readBody } from "./bulk.js";
import { person } from "./store.js";

const BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const CORE = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const MAX_OPERATIONS = 50;               // Microsoft: "a maximum of 50 user operations"
const MAX_PAYLOAD = 8 * 1024 * 1024;     // ours; Microsoft publishes none we could find
const SCIM_TYPE = /^application\/scim\+json\s*(;.*)?$/i;
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

class Refusal extends Error {
  constructor(status, detail, scimType) {
    super(detail);
    this.status = status;
    this.scimType = scimType;
  }
}

function errorBody(status, detail, scimType) {
  const body = { schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"], status: String(status) };
  if (scimType) body.scimType = scimType;
  body.detail = detail;
  return body;
}

/** Checks one operation; returns its user data. Throws a Refusal naming the operation. */
function checkOperation(op, i) {
  const where = `Operations[${i}]`;
  if (!isObject(op)) throw new Refusal(400, `${where}: expected an object`, "invalidSyntax");
  if (typeof op.method !== "string" || op.method.toUpperCase() !== "POST")
    throw new Refusal(400, `${where}: method must be POST, got ${JSON.stringify(op.method)}`, "invalidSyntax");
  if (op.path !== "/Users")
    throw new Refusal(400, `${where}: path must be "/Users", got ${JSON.stringify(op.path)}`, "invalidPath");
  if (typeof op.bulkId !== "string" || op.bulkId === "")
    throw new Refusal(400, `${where}: bulkId is required`, "invalidSyntax");
  const data = op.data;
  if (!isObject(data)) throw new Refusal(400, `${where}: data must be a user object`, "invalidSyntax");
  if (!Array.isArray(data.schemas) || !data.schemas.includes(CORE))
    throw new Refusal(400, `${where}: data.schemas must include "${CORE}"`, "invalidValue");
  for (const key of Object.keys(data)) {
    if (key.startsWith("urn:") && !data.schemas.includes(key))
      throw new Refusal(400, `${where}: data has "${key}" but its schemas do not list it`, "invalidValue");
    if (key.startsWith("urn:") && !isObject(data[key]))
      throw new Refusal(400, `${where}: "${key}" must be an object`, "invalidValue");
  }
  if (typeof data.externalId !== "string" || data.externalId.trim() === "")
    throw new Refusal(400, `${where}: data.externalId is required (the matching key)`, "invalidValue");
  if (data.id !== undefined)
    throw new Refusal(400, `${where}: data.id is the service's, not the client's`, "mutability");
  return data;
}

export function install(app, { base, store, origin, faults }) {
  const byExternal = new Map();          // externalId -> id
  let uploads = 0;

  // Stores one user: a new one, or the replacement of the one with its externalId.
  function upsert(data) {
    const stamp = new Date().toISOString();
    const known = byExternal.get(data.externalId);
    const current = known === undefined ? undefined : store.get(known);
    const id = current ? current.id : store.newId();
    const record = { ...structuredClone(data), id, meta: { resourceType: "User",
      created: current ? current.meta.created : stamp, lastModified: stamp,
      version: store.nextVersion(), uploads: current ? current.meta.uploads + 1 : 1 } };
    store.put(id, record, undefined);
    byExternal.set(data.externalId, id);
    return record;
  }

  app.post(`${base}/bulkUpload`, async (req, res) => {
    try {
      // Microsoft: a missing or other Content-Type is a 400 ("Invalid Data Format").
      if (!SCIM_TYPE.test(req.headers["content-type"] || ""))
        throw new Refusal(400, "Invalid Data Format: Content-Type must be application/scim+json", "invalidSyntax");
      const { size, text } = await readBody(req, MAX_PAYLOAD);
      if (text === undefined) throw new Refusal(413, `Request body of ${size} bytes is too large (max ${MAX_PAYLOAD})`);
      let body;
      try { body = JSON.parse(text); } catch { throw new Refusal(400, "Invalid Data Format: the body is not JSON", "invalidSyntax"); }
      if (!isObject(body) || !Array.isArray(body.schemas) || !body.schemas.includes(BULK_REQUEST))
        throw new Refusal(400, `schemas must be ["${BULK_REQUEST}"]`, "invalidSyntax");
      if (!Array.isArray(body.Operations) || body.Operations.length === 0)
        throw new Refusal(400, "Operations must be a non-empty array", "invalidSyntax");
      if (body.Operations.length > MAX_OPERATIONS)
        throw new Refusal(400, `${body.Operations.length} operations: a bulk request can contain at most ${MAX_OPERATIONS}`, "tooMany");
      // The whole request is checked before anything is stored, as a schema
      // violation refuses the upload.
      const users = body.Operations.map(checkOperation);
      for (const u of users) upsert(u);
      faults.countBulk(users.map(() => "POST /Users"));
      uploads += 1;
      res.status(202);
      res.set("Location", `${origin()}${base}/auditLogs/provisioning?upload=${uploads}`);
      res.end();
    } catch (ex) {
      const status = ex.status ?? 500;
      res.status(status).type("application/scim+json").send(errorBody(status, ex.message, ex.scimType));
    }
  });
  app.use((ex, req, res, next) => {
    if (res.headersSent) return next(ex);
    res.status(ex.status ?? 500).type("application/scim+json").send(errorBody(ex.status ?? 500, ex.message));
  });

  return {
    publish: () => {},
    ready: () => {},
    clear: () => byExternal.clear(),
    /** Seeded users go through the same checks and upsert as an upload. */
    seed(list) {
      const users = list.map((u, i) => checkOperation({ method: "POST", path: "/Users", bulkId: `seed${i}`, data: u }, i));
      return users.map(upsert);
    },
    generated(i, prefix) {
      const p = person(i, prefix);
      return {
        schemas: [CORE, ENTERPRISE],
        externalId: `E${String(i).padStart(5, "0")}`,
        userName: p.userName,
        name: { givenName: p.given, familyName: p.family },
        displayName: p.formatted,
        active: true,
        emails: [{ value: p.email, type: "work", primary: true }],
        [ENTERPRISE]: { department: p.department, employeeNumber: String(i) },
      };
    },
  };
}
