// Who a ledger key is, from contract state, and whether it may act now. Used when a token is issued and again on
// every request that presents it, so a revoked member, a suspended org or an ended proxy loses access at once.

import { read, type StateReader } from "../../contract/state.ts";
import { isHex32 } from "../../ledger/encoding.ts";

export type Identity =
  | { kind: "patient"; keyId: string; patient: string }
  | { kind: "proxy"; keyId: string; patient: string; proxy: string; scope: "view" | "manage" }
  | { kind: "member"; keyId: string; member: string; org: string; role: string }
  | { kind: "node"; keyId: string; org: string };

/**
 * `client`: the key is unknown or not active (revoked key or member, suspended org, erased patient) — callers answer
 * all of these with one generic message. `grant`: the key may not act for the named patient (no such patient, not
 * its proxy, proxy ended) — again one message, so a caller cannot probe which pseudonyms exist.
 */
export type IdentityResult = { ok: true; identity: Identity } | { ok: false; reason: "client" | "grant" };

const CLIENT: IdentityResult = { ok: false, reason: "client" };
const GRANT: IdentityResult = { ok: false, reason: "grant" };

/**
 * Resolves `keyId` at time `at` (ms). With `patient` (a pseudonym other than the key's own), the key asks to act as
 * that patient's proxy: proxies have no `key/` entry of their own, they are found in `patient/<p>.proxies`.
 * Safeguarding freezes are left to `decide`, which refuses every proxy read while one is active.
 */
export function resolveIdentity(state: StateReader, keyId: string, at: number, patient?: string): IdentityResult {
  if (!isHex32(keyId)) return CLIENT;
  const kr = read.key(state, keyId);
  if (patient !== undefined) {
    if (kr?.kind === "patient" && kr.patient === patient) return ownRecord(state, keyId, patient, kr.status);
    return proxyOf(state, keyId, patient, at);
  }
  if (kr === undefined || kr.status !== "active") return CLIENT;
  switch (kr.kind) {
    case "patient":
      return ownRecord(state, keyId, kr.patient, kr.status);
    case "member": {
      const m = read.member(state, kr.member);
      if (m === undefined || m.status !== "active" || m.key !== keyId || m.org !== kr.org) return CLIENT;
      const org = read.org(state, m.org);
      if (org === undefined || org.status !== "active") return CLIENT;
      return { ok: true, identity: { kind: "member", keyId, member: m.id, org: m.org, role: m.role } };
    }
    case "node": {
      const org = read.org(state, kr.org);
      if (org === undefined || org.status !== "active" || !org.nodes.includes(keyId)) return CLIENT;
      return { ok: true, identity: { kind: "node", keyId, org: kr.org } };
    }
    default:
      return CLIENT;
  }
}

function ownRecord(state: StateReader, keyId: string, patient: string, status: string): IdentityResult {
  if (status !== "active") return CLIENT;
  const pat = read.patient(state, patient);
  if (pat === undefined || pat.status !== "active" || pat.key !== keyId) return CLIENT;
  return { ok: true, identity: { kind: "patient", keyId, patient } };
}

function proxyOf(state: StateReader, keyId: string, patient: string, at: number): IdentityResult {
  const pat = read.patient(state, patient);
  if (pat === undefined || pat.status !== "active") return GRANT;
  const proxy = pat.proxies.find((p) => p.key === keyId);
  if (proxy === undefined) return GRANT;
  if (proxy.endsAt !== undefined && !proxy.kept && at >= proxy.endsAt) return GRANT;
  return { ok: true, identity: { kind: "proxy", keyId, patient, proxy: proxy.id, scope: proxy.scope } };
}

/** Whether two resolutions name the same identity with the same standing (role, org, proxy scope). */
export function sameIdentity(a: Identity, b: Identity): boolean {
  if (a.kind !== b.kind || a.keyId !== b.keyId) return false;
  switch (a.kind) {
    case "patient":
      return a.patient === (b as typeof a).patient;
    case "proxy": {
      const o = b as typeof a;
      return a.patient === o.patient && a.proxy === o.proxy && a.scope === o.scope;
    }
    case "member": {
      const o = b as typeof a;
      return a.member === o.member && a.org === o.org && a.role === o.role;
    }
    case "node":
      return a.org === (b as typeof a).org;
  }
}
