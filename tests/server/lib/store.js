// The in-memory user store shared by every mode: resources by id in insertion
// order (so paging is stable), plus a case-insensitive userName index, since
// SCIM's userName is caseExact=false and must be unique that way.
import { randomUUID } from "node:crypto";

// Workplace's legacy ids are large integers; start well above 2^32 so a client
// that squeezes them through a 32-bit int or a float with few digits shows it.
const NUMERIC_ID_BASE = 100040000000000;

export class Store {
  constructor({ numericIds = false } = {}) {
    this.numericIds = numericIds;
    this.clear();
  }

  clear() {
    this.byId = new Map();
    this.byName = new Map();
    this.nextNumeric = NUMERIC_ID_BASE + 1;
    this.version = 0;
  }

  /** A fresh id: a UUID, or a numeric string for the legacy API. */
  newId() {
    if (!this.numericIds) return randomUUID();
    const id = String(this.nextNumeric);
    this.nextNumeric += 7;            // not consecutive, so off-by-one reads don't pass
    return id;
  }

  nextVersion() {
    this.version += 1;
    return `W/"${this.version}"`;
  }

  get size() {
    return this.byId.size;
  }

  get(id) {
    return this.byId.get(String(id));
  }

  findByName(userName) {
    const id = this.byName.get(String(userName).toLowerCase());
    return id === undefined ? undefined : this.byId.get(id);
  }

  /** The id owning userName (case-insensitively), if any. */
  nameOwner(userName) {
    return this.byName.get(String(userName).toLowerCase());
  }

  all() {
    return Array.from(this.byId.values());
  }

  /** Inserts or replaces a record; the caller has checked uniqueness. */
  put(id, record, userName) {
    const old = this.byId.get(id);
    if (old && old.__userName !== undefined) this.byName.delete(old.__userName.toLowerCase());
    Object.defineProperty(record, "__userName", { value: userName, enumerable: false });
    this.byId.set(id, record);
    if (userName !== undefined) this.byName.set(userName.toLowerCase(), id);
  }

  delete(id) {
    const old = this.byId.get(String(id));
    if (!old) return false;
    if (old.__userName !== undefined) this.byName.delete(old.__userName.toLowerCase());
    this.byId.delete(String(id));
    return true;
  }
}

/** Generated people for /_control/seed {count = n}: distinct, realistic, deterministic. */
export function person(i, prefix = "user") {
  const n = String(i).padStart(5, "0");
  const given = `Given${n}`;
  const family = `Family${n}`;
  return {
    userName: `${prefix}${n}@example.com`,
    given,
    family,
    formatted: `${given} ${family}`,
    email: `${prefix}${n}@example.com`,
    title: i % 3 === 0 ? "Engineer" : i % 3 === 1 ? "Designer" : "Manager",
    department: `Dept${i % 10}`,
  };
}
