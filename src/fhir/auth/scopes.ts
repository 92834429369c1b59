// SMART v2 scopes (`context/type.permissions`), what each kind of identity may be granted, and the purpose of use.
// A scope is a ceiling on top of consent: the FHIR layer checks the scope first, then asks `decide` about each record.

import { PURPOSES, type Purpose, ROLE_PERMISSIONS, type Role } from "../../contract/policy.ts";

export type ScopeContext = "patient" | "user" | "system";
export type Interaction = "create" | "read" | "update" | "delete" | "search";

/** One granted or requested scope. `permissions` is a bit set over `cruds` (see `PERMISSION_BITS`). */
export interface Scope {
  readonly context: ScopeContext;
  /** A FHIR resource type, or `*` for every type. */
  readonly resourceType: string;
  readonly permissions: number;
}

export const PERMISSION_BITS: Readonly<Record<Interaction, number>> = {
  create: 1,
  read: 2,
  update: 4,
  delete: 8,
  search: 16,
};
const LETTERS = "cruds";
const ALL = 31;

/** Limits on what a client may send (a scope string is attacker-controlled input). */
export const MAX_SCOPE_CHARS = 2048;
export const MAX_SCOPES = 64;

const V2_PERMISSIONS = /^c?r?u?d?s?$/;
const RESOURCE_TYPE = /^(?:\*|[A-Z][A-Za-z]{0,63})$/;
/** SMART's non-resource scopes: meaningless for backend services, so dropped rather than refused. */
const NON_RESOURCE = new Set([
  "openid",
  "fhirUser",
  "profile",
  "launch",
  "launch/patient",
  "launch/encounter",
  "offline_access",
  "online_access",
]);

export type ScopeParse =
  | { ok: true; scopes: Scope[]; ignored: string[] }
  | { ok: false; error: string; scope?: string };

/** The permission letters of a bit set, in SMART's order (`cruds`). */
function letters(permissions: number): string {
  let out = "";
  for (let i = 0; i < LETTERS.length; i++) if (permissions & (1 << i)) out += LETTERS[i];
  return out;
}

function bits(text: string): number {
  let out = 0;
  for (const ch of text) out |= 1 << LETTERS.indexOf(ch);
  return out;
}

/**
 * Parses one scope. v2 `patient/Observation.rs`; v1 `.read` (→ `rs`), `.write` (→ `cud`) and `.*` (→ `cruds`).
 * Returns "ignored" for SMART's non-resource scopes and for v2 scopes narrowed by search parameters
 * (`…rs?category=…`): those are valid SMART but not supported here, so they are never granted.
 */
export function parseScope(text: string): Scope | "ignored" | undefined {
  if (NON_RESOURCE.has(text)) return "ignored";
  const query = text.indexOf("?");
  const head = query >= 0 ? text.slice(0, query) : text;
  const slash = head.indexOf("/");
  const dot = head.lastIndexOf(".");
  if (slash < 0 || dot < slash) return undefined;
  const context = head.slice(0, slash);
  if (context !== "patient" && context !== "user" && context !== "system") return undefined;
  const resourceType = head.slice(slash + 1, dot);
  if (!RESOURCE_TYPE.test(resourceType)) return undefined;
  const perms = head.slice(dot + 1);
  let permissions: number;
  if (query < 0 && perms === "read") permissions = bits("rs");
  else if (query < 0 && perms === "write") permissions = bits("cud");
  else if (query < 0 && perms === "*") permissions = ALL;
  else if (perms !== "" && V2_PERMISSIONS.test(perms)) permissions = bits(perms);
  else return undefined;
  if (query >= 0) return query === text.length - 1 ? undefined : "ignored";
  return { context, resourceType, permissions };
}

/** Parses a space-separated scope string (OAuth `scope`); malformed input is refused whole. */
export function parseScopes(text: string): ScopeParse {
  if (text.length > MAX_SCOPE_CHARS) return { ok: false, error: `scope is longer than ${MAX_SCOPE_CHARS} characters` };
  const parts = text.split(" ").filter((p) => p !== "");
  if (parts.length > MAX_SCOPES) return { ok: false, error: `more than ${MAX_SCOPES} scopes requested` };
  const scopes: Scope[] = [];
  const ignored: string[] = [];
  for (const part of parts) {
    const s = parseScope(part);
    if (s === undefined) return { ok: false, error: "malformed scope", scope: part };
    if (s === "ignored") ignored.push(part);
    else scopes.push(s);
  }
  return { ok: true, scopes, ignored };
}

export function formatScope(s: Scope): string {
  return `${s.context}/${s.resourceType}.${letters(s.permissions)}`;
}

export function formatScopes(scopes: readonly Scope[]): string {
  return scopes.map(formatScope).join(" ");
}

/**
 * Merges scopes of the same context and type, drops empty ones and those a wildcard of the same context already
 * covers, and orders them (context, `*` first, then type): one canonical form for tokens and responses.
 */
export function normalizeScopes(scopes: readonly Scope[]): Scope[] {
  const merged = new Map<string, Scope>();
  for (const s of scopes) {
    if (s.permissions === 0) continue;
    const k = `${s.context}/${s.resourceType}`;
    const prev = merged.get(k);
    merged.set(k, prev === undefined ? s : { ...s, permissions: prev.permissions | s.permissions });
  }
  const out: Scope[] = [];
  for (const s of merged.values()) {
    if (s.resourceType !== "*") {
      const wild = merged.get(`${s.context}/*`);
      if (wild !== undefined && (s.permissions & ~wild.permissions) === 0) continue;
    }
    out.push(s);
  }
  const order = { patient: 0, user: 1, system: 2 } as const;
  return out.sort(
    (a, b) =>
      order[a.context] - order[b.context] ||
      (a.resourceType === "*" ? -1 : b.resourceType === "*" ? 1 : a.resourceType < b.resourceType ? -1 : 1),
  );
}

/** What may be granted of `requested` within `ceiling`: per pair of the same context, the narrower type and the
 * common permissions. */
export function intersectScopes(requested: readonly Scope[], ceiling: readonly Scope[]): Scope[] {
  const out: Scope[] = [];
  for (const r of requested) {
    for (const c of ceiling) {
      if (r.context !== c.context) continue;
      let resourceType: string;
      if (r.resourceType === c.resourceType || c.resourceType === "*") resourceType = r.resourceType;
      else if (r.resourceType === "*") resourceType = c.resourceType;
      else continue;
      const permissions = r.permissions & c.permissions;
      if (permissions !== 0) out.push({ context: r.context, resourceType, permissions });
    }
  }
  return normalizeScopes(out);
}

/** Whether any scope of `context` allows `interaction` on `resourceType`. Runs on every FHIR request: no allocation. */
export function scopesAllow(
  scopes: readonly Scope[],
  context: ScopeContext,
  resourceType: string,
  interaction: Interaction,
): boolean {
  const bit = PERMISSION_BITS[interaction];
  for (const s of scopes) {
    if (
      s.context === context &&
      (s.permissions & bit) !== 0 &&
      (s.resourceType === "*" || s.resourceType === resourceType)
    )
      return true;
  }
  return false;
}

// ---- what each identity may have ------------------------------------------------------------------------------

/** The identity kinds a token can carry (see identity.ts). */
export type IdentityKind = "patient" | "proxy" | "member" | "node";

/** The scope context of each identity kind: patients and proxies act in one patient's context, members as users,
 * nodes as systems. */
export function contextOf(kind: IdentityKind): ScopeContext {
  return kind === "member" ? "user" : kind === "node" ? "system" : "patient";
}

const s = (text: string): Scope => {
  const parsed = parseScope(text);
  if (parsed === undefined || parsed === "ignored") throw new Error(`bad built-in scope ${text}`);
  return parsed;
};

/**
 * Directory resources an admin may read: they run the organisation and its node, and DESIGN gives them no clinical
 * access (their role has no purposes), so no patient-compartment type is in their set.
 */
export const ADMIN_SCOPES: readonly Scope[] = [
  // Admins audit their organisation: its access log (AuditEvent), not patients' records.
  s("user/AuditEvent.rs"),
  s("user/Organization.rs"),
  s("user/Practitioner.rs"),
  s("user/PractitionerRole.rs"),
];

/**
 * The most an identity may be granted. Patients read their whole record and manage their consent (Consent
 * create/update = `consent.set`, delete = `consent.revoke`); a `view` proxy reads, a `manage` proxy also manages
 * consent; members follow the role table (`write` adds create and update; nobody deletes clinical records — erasure
 * is its own operation); nodes read, for node-to-node record requests.
 */
export function scopeCeiling(
  id:
    | { kind: "patient" }
    | { kind: "proxy"; scope: "view" | "manage" }
    | { kind: "member"; role: string }
    | { kind: "node" },
): Scope[] {
  switch (id.kind) {
    case "patient":
      return [s("patient/*.rs"), s("patient/Consent.cruds")];
    case "proxy":
      return id.scope === "manage" ? [s("patient/*.rs"), s("patient/Consent.cruds")] : [s("patient/*.rs")];
    case "member": {
      if (!Object.hasOwn(ROLE_PERMISSIONS, id.role)) return [];
      const actions = ROLE_PERMISSIONS[id.role as Role].actions;
      if (actions.length === 0) return [...ADMIN_SCOPES];
      return [s(actions.includes("write") ? "user/*.crus" : "user/*.rs")];
    }
    case "node":
      return [s("system/*.rs")];
  }
}

// ---- purpose of use -------------------------------------------------------------------------------------------

/** v3 PurposeOfUse "patient requested": patients and their proxies reading their own record (decision step 1 does
 * not depend on purpose). In the contract's PURPOSES (so `access.log` accepts it), but no role may use it. */
export const PATIENT_PURPOSE = "PATRQT";
export const PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

/** Default purpose per role (each is in the role's list in policy.ts; analysts default to operations, never to
 * marketing). */
export const DEFAULT_PURPOSE: Readonly<Partial<Record<Role, Purpose>>> = {
  clinician: "TREAT",
  nurse: "TREAT",
  researcher: "HRESCH",
  analyst: "HOPERAT",
};

export type PurposeResult =
  | { ok: true; purpose?: string }
  | { ok: false; error: "invalid_request" | "invalid_scope"; description: string };

/**
 * The purpose a token carries. `requested` is a bare v3 code or `system|code`. Members: one of their role's purposes
 * (default as above); patients and proxies: PATRQT; nodes and admins: none (a node's requests carry the
 * practitioner's purpose each time; admins have no clinical purpose).
 */
export function resolvePurpose(
  id: { kind: "patient" | "proxy" | "node" } | { kind: "member"; role: string },
  requested: string | undefined,
): PurposeResult {
  let code: string | undefined;
  if (requested !== undefined && requested !== "") {
    const bar = requested.lastIndexOf("|");
    if (bar >= 0 && requested.slice(0, bar) !== PURPOSE_SYSTEM) {
      return { ok: false, error: "invalid_request", description: `purpose must be a code of ${PURPOSE_SYSTEM}` };
    }
    code = requested.slice(bar + 1);
    if (!/^[A-Z]{2,16}$/.test(code)) return { ok: false, error: "invalid_request", description: "malformed purpose" };
  }
  const refuse = (): PurposeResult => ({
    ok: false,
    error: "invalid_scope",
    description: `purpose ${code} is not allowed for this client`,
  });
  switch (id.kind) {
    case "patient":
    case "proxy":
      if (code !== undefined && code !== PATIENT_PURPOSE) return refuse();
      return { ok: true, purpose: PATIENT_PURPOSE };
    case "node":
      return code === undefined ? { ok: true } : refuse();
    case "member": {
      const allowed: readonly string[] = Object.hasOwn(ROLE_PERMISSIONS, id.role)
        ? ROLE_PERMISSIONS[id.role as Role].purposes
        : [];
      if (code === undefined) {
        const fallback = DEFAULT_PURPOSE[id.role as Role];
        return fallback === undefined ? { ok: true } : { ok: true, purpose: fallback };
      }
      if (!(PURPOSES as readonly string[]).includes(code) || !allowed.includes(code)) return refuse();
      return { ok: true, purpose: code };
    }
  }
}
