// applyTx: the deterministic state machine. Checks run in a fixed order (envelope, type, payload schema, network,
// replay window, nonce, signer, type rules); writes go to an Overlay and reach `state` only when the tx is valid.

import type { Hex32, SignedTx, TxResult } from "../ledger/types.ts";
import { LABEL_IDS, type LabelId, labelsNamed } from "./labels.ts";
import { type NetworkPolicy, withDefaults } from "./policy.ts";
import {
  checkEnvelope,
  checkPayload,
  type ImplementedType,
  isImplementedType,
  type Payload,
  RESERVED_TX_TYPES,
} from "./schemas.ts";
import {
  type BreakGlassRec,
  type FlagRec,
  type Grantee,
  granteeKey,
  K,
  type KeyRec,
  type MemberRec,
  type NetworkRec,
  type OrgRec,
  Overlay,
  type PatientRec,
  type ProxyRec,
  type ResourceRec,
  type RuleRec,
  read,
  type StateStore,
  type TeamRec,
} from "./state.ts";

export interface ApplyContext {
  /** Height of the block being applied. */
  height: number;
  /** Block time, ms since the epoch. */
  time: number;
  /** True if (signer, nonce) is already in the log. */
  nonceUsed(signer: string, nonce: string): boolean;
}

/** Every code applyTx can return (stable; recorded in the log). */
export const TX_CODES = [
  "ok",
  "malformed-tx",
  "unknown-type",
  "not-implemented",
  "malformed-payload",
  "no-network",
  "stale",
  "future",
  "replay",
  "unauthorised",
  "revoked-signer",
  "suspended-org",
  "already-exists",
  "key-in-use",
  "not-found",
  "inactive",
  "expired",
  "invalid-period",
  "invalid-window",
  "invalid-reference",
  "duplicate-vote",
  "last-admin",
  "erased",
  "limit",
  "internal-error",
] as const;
export type TxCode = (typeof TX_CODES)[number];

class Rejection {
  readonly code: TxCode;
  constructor(code: TxCode) {
    this.code = code;
  }
}
function reject(code: TxCode): never {
  throw new Rejection(code);
}

const OK: TxResult = Object.freeze({ valid: true, code: "ok" }) as TxResult;
const RESERVED = new Set<string>(RESERVED_TX_TYPES);
const MAX_PROXIES = 16;
const MAX_BREAKGLASS = 32;
const MAX_FLAGS = 16;

/**
 * Applies one signature-checked tx. Never throws: any input yields a TxResult. On `valid: false` the state is
 * untouched; on `valid: true` every write of the tx has been applied.
 */
export function applyTx(state: StateStore, tx: SignedTx, id: Hex32, ctx: ApplyContext): TxResult {
  try {
    const overlay = new Overlay(state);
    const code = run(overlay, tx, id, ctx);
    if (code !== "ok") return { valid: false, code };
    overlay.flush(state);
    return { valid: true, code: "ok" };
  } catch (e) {
    return { valid: false, code: e instanceof Rejection ? e.code : "internal-error" };
  }
}

/** Same checks as applyTx, never writes. */
export function checkTx(state: StateStore, tx: SignedTx, id: Hex32, ctx: ApplyContext): TxResult {
  try {
    const code = run(new Overlay(state), tx, id, ctx);
    return code === "ok" ? OK : { valid: false, code };
  } catch (e) {
    return { valid: false, code: e instanceof Rejection ? e.code : "internal-error" };
  }
}

function run(s: Overlay, tx: SignedTx, id: Hex32, ctx: ApplyContext): TxCode {
  if (!checkEnvelope(tx)) return "malformed-tx";
  const type = tx.type;
  if (!isImplementedType(type)) return RESERVED.has(type) ? "not-implemented" : "unknown-type";
  if (!checkPayload(type, tx.payload)) return "malformed-payload";

  const net = read.network(s);
  let policy: NetworkPolicy;
  if (type === "network.genesis") {
    if (net !== undefined) return "already-exists";
    policy = withDefaults((tx.payload as Payload<"network.genesis">).policy);
  } else {
    if (net === undefined) return "no-network";
    policy = net.policy;
  }
  if (tx.createdAt < ctx.time - policy.replayBackMs) return "stale";
  if (tx.createdAt > ctx.time + policy.replayAheadMs) return "future";
  if (ctx.nonceUsed(tx.signer, tx.nonce)) return "replay";

  const c: Ctx = { s, tx, id, ctx, policy, net: net as NetworkRec };
  HANDLERS[type](c, tx.payload as never);
  return "ok";
}

interface Ctx {
  s: Overlay;
  tx: SignedTx;
  id: Hex32;
  ctx: ApplyContext;
  policy: NetworkPolicy;
  /** Undefined only while applying genesis. */
  net: NetworkRec;
}

type Handler<T extends ImplementedType> = (c: Ctx, p: Payload<T>) => void;

// ---- signer checks --------------------------------------------------------------------------------------------

interface ActiveMember {
  member: MemberRec;
  org: OrgRec;
}

/** The signer as an active member of an active org, optionally of a given org and with one of the given roles. */
function requireMember(c: Ctx, opts: { org?: string; roles?: readonly string[] } = {}): ActiveMember {
  const kr = read.key(c.s, c.tx.signer);
  if (kr === undefined) reject("unauthorised");
  if (kr.status !== "active") reject("revoked-signer");
  if (kr.kind !== "member") reject("unauthorised");
  const member = read.member(c.s, kr.member);
  if (member === undefined) reject("internal-error");
  if (member.status !== "active") reject("revoked-signer");
  const org = read.org(c.s, member.org);
  if (org === undefined) reject("internal-error");
  if (org.status === "suspended") reject("suspended-org");
  if (org.status !== "active") reject("unauthorised");
  if (opts.org !== undefined && member.org !== opts.org) reject("unauthorised");
  if (opts.roles !== undefined && !opts.roles.includes(member.role)) reject("unauthorised");
  return { member, org };
}

/** The signer as one of `org`'s node keys or an admin of `org`. */
function requireNodeOrAdmin(c: Ctx, orgId: string): OrgRec {
  const kr = read.key(c.s, c.tx.signer);
  if (kr === undefined) reject("unauthorised");
  if (kr.status !== "active") reject("revoked-signer");
  if (kr.kind === "node") {
    const org = read.org(c.s, kr.org);
    if (org === undefined) reject("internal-error");
    if (org.status === "suspended") reject("suspended-org");
    if (org.status !== "active" || kr.org !== orgId) reject("unauthorised");
    return org;
  }
  return requireMember(c, { org: orgId, roles: ["admin"] }).org;
}

function proxyActive(p: ProxyRec, at: number): boolean {
  return p.endsAt === undefined || p.kept || at < p.endsAt;
}

function frozen(pat: PatientRec): boolean {
  return pat.safeguarding.some((f) => f.freezeProxies);
}

/**
 * The signer is the patient, or (when `labels` is given) an active `manage` proxy whose labels include every label
 * in `labels`. Returns "patient" or "proxy".
 */
function requirePatientOrManageProxy(c: Ctx, pat: PatientRec, labels?: readonly LabelId[]): "patient" | "proxy" {
  const signer = c.tx.signer;
  if (signer === pat.key) return "patient";
  const proxy = pat.proxies.find((p) => p.key === signer);
  if (proxy !== undefined && labels !== undefined) {
    if (proxy.scope !== "manage" || frozen(pat) || !proxyActive(proxy, c.ctx.time)) reject("unauthorised");
    for (const l of labels) if (!proxy.labels.includes(l)) reject("unauthorised");
    return "proxy";
  }
  const kr = read.key(c.s, signer);
  if (kr !== undefined && kr.status !== "active") reject("revoked-signer");
  reject("unauthorised");
}

function requirePatient(c: Ctx, id: string, opts: { allowErased?: boolean } = {}): PatientRec {
  const pat = read.patient(c.s, id);
  if (pat === undefined) reject("not-found");
  if (pat.status === "erased" && opts.allowErased !== true) reject("erased");
  return pat;
}

function requireKeyFree(c: Ctx, keyId: string): void {
  if (c.s.get(K.key(keyId)) !== undefined) reject("key-in-use");
}

function activeOrgCount(c: Ctx, except?: string): number {
  let n = 0;
  for (const id of c.net.orgs) {
    if (id === except) continue;
    if (read.org(c.s, id)?.status === "active") n++;
  }
  return n;
}

function putOrg(c: Ctx, org: OrgRec): void {
  c.s.put(K.org(org.id), org);
}

function putPatient(c: Ctx, pat: PatientRec): void {
  c.s.put(K.patient(pat.id), pat);
}

/** Registers an org with its admins and node keys (genesis and org.propose). */
function addOrg(c: Ctx, spec: Payload<"org.propose">["org"], status: OrgRec["status"], approvals: string[]): OrgRec {
  if (c.s.get(K.org(spec.id)) !== undefined) reject("already-exists");
  const seenKeys = new Set<string>();
  for (const k of [...spec.admins.map((a) => a.key), ...spec.nodes]) {
    if (seenKeys.has(k)) reject("key-in-use");
    seenKeys.add(k);
    requireKeyFree(c, k);
  }
  const seenMembers = new Set<string>();
  for (const a of spec.admins) {
    if (seenMembers.has(a.member) || c.s.get(K.member(a.member)) !== undefined) reject("already-exists");
    seenMembers.add(a.member);
  }
  for (const a of spec.admins) {
    const m: MemberRec = {
      id: a.member,
      org: spec.id,
      role: "admin",
      key: a.key,
      status: "active",
      teams: [],
      enrolledAt: c.ctx.time,
    };
    c.s.put(K.member(a.member), m);
    c.s.put(K.key(a.key), { kind: "member", member: a.member, org: spec.id, status: "active" } satisfies KeyRec);
  }
  for (const n of spec.nodes) c.s.put(K.key(n), { kind: "node", org: spec.id, status: "active" } satisfies KeyRec);
  const org: OrgRec = {
    id: spec.id,
    name: spec.name,
    kind: spec.kind,
    status,
    admins: spec.admins.map((a) => a.member),
    nodes: [...spec.nodes],
    approvals,
    suspendVotes: [],
    reinstateVotes: [],
    proposedAt: c.ctx.time,
  };
  putOrg(c, org);
  return org;
}

// ---- handlers -------------------------------------------------------------------------------------------------

const genesis: Handler<"network.genesis"> = (c, p) => {
  const founders = p.orgs.flatMap((o) => o.admins.map((a) => a.key));
  if (!founders.includes(c.tx.signer)) reject("unauthorised");
  const orgIds = new Set<string>();
  for (const o of p.orgs) {
    if (orgIds.has(o.id)) reject("already-exists");
    orgIds.add(o.id);
  }
  const net: NetworkRec = {
    id: p.network.id,
    name: p.network.name,
    policy: c.policy,
    genesisAt: c.ctx.time,
    orgs: p.orgs.map((o) => o.id),
  };
  c.s.put(K.network, net);
  c.net = net;
  for (const o of p.orgs) addOrg(c, o, "active", []);
};

function maybeActivate(c: Ctx, org: OrgRec): OrgRec {
  const needed = Math.max(1, Math.min(c.policy.quorum, activeOrgCount(c)));
  return org.approvals.length >= needed ? { ...org, status: "active" } : org;
}

const orgPropose: Handler<"org.propose"> = (c, p) => {
  let approvals: string[];
  if (p.org.admins.some((a) => a.key === c.tx.signer)) {
    approvals = []; // self-proposal by one of the joining org's own admins
  } else {
    approvals = [requireMember(c, { roles: ["admin"] }).org.id]; // sponsored: counts as the first approval
  }
  c.s.put(K.network, { ...c.net, orgs: [...c.net.orgs, p.org.id] } satisfies NetworkRec);
  const org = addOrg(c, p.org, "proposed", approvals);
  const updated = maybeActivate(c, org);
  if (updated !== org) putOrg(c, updated);
};

const orgApprove: Handler<"org.approve"> = (c, p) => {
  const { org: by } = requireMember(c, { roles: ["admin"] });
  const target = read.org(c.s, p.org);
  if (target === undefined) reject("not-found");
  if (target.status !== "proposed") reject("inactive");
  if (target.approvals.includes(by.id)) reject("duplicate-vote");
  putOrg(c, maybeActivate(c, { ...target, approvals: [...target.approvals, by.id] }));
};

const orgSuspend: Handler<"org.suspend"> = (c, p) => {
  const { org: by } = requireMember(c, { roles: ["admin"] });
  const target = read.org(c.s, p.org);
  if (target === undefined) reject("not-found");
  if (p.action === "suspend") {
    if (target.status !== "active") reject("inactive");
    if (by.id === target.id) {
      // An organisation may withdraw itself at once.
      putOrg(c, { ...target, status: "suspended", suspendVotes: [], reinstateVotes: [] });
      return;
    }
    if (target.suspendVotes.includes(by.id)) reject("duplicate-vote");
    const votes = [...target.suspendVotes, by.id];
    const needed = Math.max(1, Math.min(c.policy.suspendQuorum, activeOrgCount(c, target.id)));
    putOrg(
      c,
      votes.length >= needed
        ? { ...target, status: "suspended", suspendVotes: [], reinstateVotes: [] }
        : { ...target, suspendVotes: votes },
    );
  } else {
    if (target.status !== "suspended") reject("inactive");
    if (target.reinstateVotes.includes(by.id)) reject("duplicate-vote");
    const votes = [...target.reinstateVotes, by.id];
    const needed = Math.max(1, Math.min(c.policy.suspendQuorum, activeOrgCount(c, target.id)));
    putOrg(
      c,
      votes.length >= needed
        ? { ...target, status: "active", suspendVotes: [], reinstateVotes: [] }
        : { ...target, reinstateVotes: votes },
    );
  }
};

const keyRotate: Handler<"key.rotate"> = (c, p) => {
  if (p.old === p.new) reject("key-in-use");
  const found = read.key(c.s, p.old);
  // Who may rotate: the key itself, or for member and node keys an admin of the owning org. Lost patient keys are
  // replaced through patient.recover.
  if (c.tx.signer === p.old) {
    if (found === undefined) reject("unauthorised");
    if (found.status !== "active") reject("revoked-signer");
    if (found.kind === "member") requireMember(c);
    else if (found.kind === "node") {
      const org = read.org(c.s, found.org);
      if (org?.status === "suspended") reject("suspended-org");
      if (org?.status !== "active") reject("unauthorised");
    }
  } else if (found === undefined) {
    requireMember(c, { roles: ["admin"] });
    reject("not-found");
  } else if (found.kind === "patient") {
    requireMember(c);
    reject("unauthorised");
  } else {
    requireMember(c, { org: found.org, roles: ["admin"] });
  }
  const old = found as KeyRec;
  if (old.status !== "active") reject("inactive");
  requireKeyFree(c, p.new);
  c.s.put(K.key(p.old), { ...old, status: "revoked" } satisfies KeyRec);
  c.s.put(K.key(p.new), { ...old, status: "active" } satisfies KeyRec);
  if (old.kind === "member") {
    const m = read.member(c.s, old.member);
    if (m === undefined || m.status !== "active") reject("inactive");
    c.s.put(K.member(m.id), { ...m, key: p.new } satisfies MemberRec);
  } else if (old.kind === "node") {
    const org = read.org(c.s, old.org);
    if (org === undefined) reject("internal-error");
    putOrg(c, { ...org, nodes: org.nodes.map((n) => (n === p.old ? p.new : n)) });
  } else {
    const pat = requirePatient(c, old.patient);
    putPatient(c, { ...pat, key: p.new });
  }
};

const memberEnrol: Handler<"member.enrol"> = (c, p) => {
  const { org } = requireMember(c, { org: p.org, roles: ["admin"] });
  if (c.s.get(K.member(p.member)) !== undefined) reject("already-exists");
  requireKeyFree(c, p.key);
  c.s.put(K.member(p.member), {
    id: p.member,
    org: p.org,
    role: p.role,
    key: p.key,
    status: "active",
    teams: [],
    enrolledAt: c.ctx.time,
  } satisfies MemberRec);
  c.s.put(K.key(p.key), { kind: "member", member: p.member, org: p.org, status: "active" } satisfies KeyRec);
  if (p.role === "admin") putOrg(c, { ...org, admins: [...org.admins, p.member] });
};

const memberRevoke: Handler<"member.revoke"> = (c, p) => {
  const target = read.member(c.s, p.member);
  if (target === undefined) {
    requireMember(c, { roles: ["admin"] });
    reject("not-found");
  }
  // A member may resign; otherwise an admin of the member's org revokes.
  if (target.key === c.tx.signer) requireMember(c);
  else requireMember(c, { org: target.org, roles: ["admin"] });
  if (target.status !== "active") reject("inactive");
  const org = read.org(c.s, target.org);
  if (org === undefined) reject("internal-error");
  if (target.role === "admin") {
    const admins = org.admins.filter((a) => a !== target.id);
    if (admins.length === 0) reject("last-admin");
    putOrg(c, { ...org, admins });
  }
  c.s.put(K.member(target.id), { ...target, status: "revoked" } satisfies MemberRec);
  const kr = read.key(c.s, target.key);
  if (kr !== undefined) c.s.put(K.key(target.key), { ...kr, status: "revoked" } satisfies KeyRec);
};

const teamSet: Handler<"team.set"> = (c, p) => {
  requireMember(c, { org: p.org, roles: ["admin"] });
  const prev = read.team(c.s, p.team);
  if (prev !== undefined && prev.org !== p.org) reject("unauthorised");
  for (const mid of p.members) {
    const m = read.member(c.s, mid);
    if (m === undefined || m.org !== p.org || m.status !== "active") reject("invalid-reference");
  }
  const before = new Set(prev?.members ?? []);
  const after = new Set(p.members);
  for (const mid of after) {
    if (before.has(mid)) continue;
    const m = read.member(c.s, mid) as MemberRec;
    c.s.put(K.member(mid), { ...m, teams: [...m.teams, p.team] } satisfies MemberRec);
  }
  for (const mid of before) {
    if (after.has(mid)) continue;
    const m = read.member(c.s, mid);
    if (m !== undefined) c.s.put(K.member(mid), { ...m, teams: m.teams.filter((t) => t !== p.team) });
  }
  c.s.put(K.team(p.team), { id: p.team, org: p.org, name: p.name, members: [...p.members] } satisfies TeamRec);
};

const patientRegister: Handler<"patient.register"> = (c, p) => {
  requireMember(c, { org: p.org, roles: ["admin", "clinician"] });
  if (c.s.get(K.patient(p.patient)) !== undefined) reject("already-exists");
  requireKeyFree(c, p.key);
  if (p.lookup !== undefined && c.s.get(K.nhs(p.lookup)) !== undefined) reject("already-exists");
  const pat: PatientRec = {
    id: p.patient,
    org: p.org,
    key: p.key,
    status: "active",
    optout: false,
    registeredAt: c.ctx.time,
    proxies: [],
    safeguarding: [],
  };
  if (p.lookup !== undefined) {
    pat.lookup = p.lookup;
    c.s.put(K.nhs(p.lookup), p.patient);
  }
  putPatient(c, pat);
  c.s.put(K.key(p.key), { kind: "patient", patient: p.patient, status: "active" } satisfies KeyRec);
};

/**
 * Two-step recovery: each of two orgs signs a `patient.recover` naming the same new key; one must be the registering
 * org. The key changes when the second distinct org confirms within `recoverWindowMs`.
 */
const patientRecover: Handler<"patient.recover"> = (c, p) => {
  const { org } = requireMember(c, { roles: ["admin", "clinician"] });
  const pat = requirePatient(c, p.patient);
  requireKeyFree(c, p.key);
  const pending = pat.recovery;
  const live =
    pending !== undefined && pending.key === p.key && c.ctx.time - pending.startedAt <= c.policy.recoverWindowMs;
  if (live && pending.orgs.includes(org.id)) reject("duplicate-vote");
  const orgs = live ? [...pending.orgs, org.id] : [org.id];
  const startedAt = live ? pending.startedAt : c.ctx.time;
  if (orgs.length >= 2 && orgs.includes(pat.org)) {
    const oldKey = read.key(c.s, pat.key);
    if (oldKey !== undefined) c.s.put(K.key(pat.key), { ...oldKey, status: "revoked" } satisfies KeyRec);
    c.s.put(K.key(p.key), { kind: "patient", patient: pat.id, status: "active" } satisfies KeyRec);
    const { recovery: _, ...rest } = pat;
    putPatient(c, { ...rest, key: p.key });
  } else {
    putPatient(c, { ...pat, recovery: { key: p.key, orgs, startedAt } });
  }
};

function isFirstOfMonthUtc(ms: number): boolean {
  const d = new Date(ms);
  return (
    d.getUTCDate() === 1 &&
    d.getUTCHours() === 0 &&
    d.getUTCMinutes() === 0 &&
    d.getUTCSeconds() === 0 &&
    d.getUTCMilliseconds() === 0
  );
}

/** The signer is the patient or an admin/clinician of the registering org. */
function requirePatientOrRegistrar(c: Ctx, pat: PatientRec): void {
  if (c.tx.signer === pat.key) return;
  const kr = read.key(c.s, c.tx.signer);
  if (kr?.kind === "patient" && kr.status !== "active") reject("revoked-signer");
  requireMember(c, { org: pat.org, roles: ["admin", "clinician"] });
}

const proxyAppoint: Handler<"proxy.appoint"> = (c, p) => {
  const pat = requirePatient(c, p.patient);
  requirePatientOrRegistrar(c, pat);
  if (p.basis === "parental-responsibility" && p.endsAt === undefined) reject("malformed-payload");
  if (p.endsAt !== undefined) {
    if (!isFirstOfMonthUtc(p.endsAt)) reject("malformed-payload");
    if (p.endsAt <= c.ctx.time) reject("expired");
  }
  if (p.key === pat.key) reject("invalid-reference");
  if (pat.proxies.some((x) => x.id === p.proxy || x.key === p.key)) reject("already-exists");
  if (pat.proxies.length >= MAX_PROXIES) reject("limit");
  const proxy: ProxyRec = {
    id: p.proxy,
    key: p.key,
    basis: p.basis,
    scope: p.scope,
    codes: [...p.labels],
    labels: labelsNamed(p.labels),
    kept: false,
    appointedAt: c.ctx.time,
  };
  if (p.endsAt !== undefined) proxy.endsAt = p.endsAt;
  putPatient(c, { ...pat, proxies: [...pat.proxies, proxy] });
};

const proxyEnd: Handler<"proxy.end"> = (c, p) => {
  const pat = requirePatient(c, p.patient);
  const proxy = pat.proxies.find((x) => x.id === p.proxy);
  if (proxy === undefined || c.tx.signer !== proxy.key) requirePatientOrRegistrar(c, pat);
  if (proxy === undefined) reject("not-found");
  putPatient(c, { ...pat, proxies: pat.proxies.filter((x) => x.id !== p.proxy) });
};

const proxyKeep: Handler<"proxy.keep"> = (c, p) => {
  const pat = requirePatient(c, p.patient);
  if (c.tx.signer !== pat.key) {
    const kr = read.key(c.s, c.tx.signer);
    if (kr !== undefined && kr.status !== "active") reject("revoked-signer");
    reject("unauthorised");
  }
  const proxy = pat.proxies.find((x) => x.id === p.proxy);
  if (proxy === undefined) reject("not-found");
  if (proxy.endsAt === undefined || proxy.kept) reject("inactive");
  putPatient(c, { ...pat, proxies: pat.proxies.map((x) => (x.id === p.proxy ? { ...x, kept: true } : x)) });
};

const safeguardingFlag: Handler<"safeguarding.flag"> = (c, p) => {
  const { org } = requireMember(c, { roles: ["clinician"] });
  const pat = requirePatient(c, p.patient);
  const prev = pat.safeguarding.find((f) => f.id === p.flag);
  if (prev !== undefined && prev.org !== org.id) reject("unauthorised");
  const others = pat.safeguarding.filter((f) => f.id !== p.flag);
  if (!p.active) {
    if (prev === undefined) reject("not-found");
    putPatient(c, { ...pat, safeguarding: others });
    return;
  }
  if (prev === undefined && pat.safeguarding.length >= MAX_FLAGS) reject("limit");
  const flag: FlagRec = {
    id: p.flag,
    org: org.id,
    freezeProxies: p.freezeProxies,
    hideFromPatient: p.hideFromPatient,
    at: prev?.at ?? c.ctx.time,
  };
  putPatient(c, { ...pat, safeguarding: [...others, flag] });
};

/** Labels a rule touches, for checking a proxy's reach: the named ones, or every label for a label-less rule. */
function touchedLabels(labels: readonly LabelId[]): readonly LabelId[] {
  return labels.length > 0 ? labels : LABEL_IDS;
}

function checkGrantee(c: Ctx, g: Grantee): void {
  switch (g.kind) {
    case "member":
      if (read.member(c.s, g.id) === undefined) reject("invalid-reference");
      return;
    case "team":
      if (read.team(c.s, g.id) === undefined) reject("invalid-reference");
      return;
    case "org":
    case "role":
      if (read.org(c.s, g.kind === "org" ? g.id : g.org) === undefined) reject("invalid-reference");
      return;
    case "study":
      // Studies are registered by the research layer (later); until then the org must exist.
      if (read.org(c.s, g.org) === undefined) reject("invalid-reference");
      return;
    case "any":
      return;
  }
}

/**
 * The rule a (valid) `consent.set` payload puts in state at block time `time`. Exported for views of consent history
 * (the GDPR export rebuilds each past rule from its tx).
 */
export function ruleOfConsentSet(p: Payload<"consent.set">, time: number): RuleRec {
  const grantee = { ...p.grantee } as Grantee;
  const rule: RuleRec = {
    id: p.rule,
    effect: p.effect,
    grantee,
    gk: granteeKey(grantee),
    types: [...p.resourceTypes],
    codes: [...p.labels],
    labels: labelsNamed(p.labels),
    purposes: [...p.purposes],
    actions: [...p.actions],
    setAt: time,
  };
  if (p.period?.start !== undefined) rule.start = p.period.start;
  if (p.period?.end !== undefined) rule.end = p.period.end;
  if (p.dataPeriod?.start !== undefined) rule.dataStart = p.dataPeriod.start;
  if (p.dataPeriod?.end !== undefined) rule.dataEnd = p.dataPeriod.end;
  return rule;
}

const consentSet: Handler<"consent.set"> = (c, p) => {
  const pat = requirePatient(c, p.patient);
  const labels = labelsNamed(p.labels);
  const rules = read.rules(c.s, p.patient) ?? [];
  const prev = rules.find((r) => r.id === p.rule);
  requirePatientOrManageProxy(c, pat, touchedLabels(labels));
  if (prev !== undefined) requirePatientOrManageProxy(c, pat, touchedLabels(prev.labels));
  const start = p.period?.start;
  const end = p.period?.end;
  if (start !== undefined && end !== undefined && end <= start) reject("invalid-period");
  if (end !== undefined && end <= c.ctx.time) reject("expired");
  const ds = p.dataPeriod?.start;
  const de = p.dataPeriod?.end;
  if (ds !== undefined && de !== undefined && de < ds) reject("invalid-period");
  checkGrantee(c, p.grantee);
  if (prev === undefined && rules.length >= c.policy.maxRulesPerPatient) reject("limit");
  const rule = ruleOfConsentSet(p, c.ctx.time);
  const next = prev === undefined ? [...rules, rule] : rules.map((r) => (r.id === p.rule ? rule : r));
  c.s.put(K.rules(p.patient), next);
};

const consentRevoke: Handler<"consent.revoke"> = (c, p) => {
  const pat = requirePatient(c, p.patient);
  const rules = read.rules(c.s, p.patient) ?? [];
  const prev = rules.find((r) => r.id === p.rule);
  requirePatientOrManageProxy(c, pat, prev === undefined ? [] : touchedLabels(prev.labels));
  if (prev === undefined) reject("not-found");
  const next = rules.filter((r) => r.id !== p.rule);
  if (next.length === 0) c.s.del(K.rules(p.patient));
  else c.s.put(K.rules(p.patient), next);
};

const optoutSet: Handler<"optout.set"> = (c, p) => {
  const pat = requirePatient(c, p.patient);
  requirePatientOrManageProxy(c, pat, []);
  putPatient(c, { ...pat, optout: p.optout });
};

const recordAnchor: Handler<"record.anchor"> = (c, p) => {
  const authorised = new Set<string>();
  for (const a of p.anchors) {
    if (!authorised.has(a.custodian)) {
      requireNodeOrAdmin(c, a.custodian);
      authorised.add(a.custodian);
    }
    if (a.patient !== undefined) requirePatient(c, a.patient);
    const rk = K.resource(a.custodian, a.resourceType, a.resourceId);
    const res = c.s.get(rk) as ResourceRec | undefined;
    if (res !== undefined) {
      if (res.erasedAt !== undefined) reject("erased");
      if (res.patient !== a.patient) reject("invalid-reference");
    }
    const ak = K.anchor(a.custodian, a.resourceType, a.resourceId, a.version);
    // Every anchor writes its resource's record, so with no record there is no anchor to look up (a new resource).
    if (res !== undefined && c.s.get(ak) !== undefined) reject("already-exists");
    const anchor: { commitment: string; labels: string[]; date?: string; height: number; at: number } = {
      commitment: a.commitment,
      labels: [...a.labels],
      height: c.ctx.height,
      at: c.ctx.time,
    };
    if (a.date !== undefined) anchor.date = a.date;
    c.s.put(ak, anchor);
    const rec: ResourceRec = { latest: a.version, versions: (res?.versions ?? 0) + 1 };
    if (a.patient !== undefined) {
      rec.patient = a.patient;
      if (res === undefined) addHolder(c, a.patient, a.custodian);
    }
    c.s.put(rk, rec);
  }
};

/** Adds `custodian` to the patient's holders (sorted, once): written only for a custodian's first record of them. */
function addHolder(c: Ctx, patient: string, custodian: string): void {
  const holders = read.holders(c.s, patient) ?? [];
  if (holders.includes(custodian)) return;
  c.s.put(K.holders(patient), [...holders, custodian].sort());
}

const recordErase: Handler<"record.erase"> = (c, p) => {
  requireNodeOrAdmin(c, p.custodian);
  const pat = requirePatient(c, p.patient, { allowErased: true });
  if (p.resources.length === 0 && !p.erasePatient) reject("malformed-payload");
  for (const r of p.resources) {
    const rk = K.resource(p.custodian, r.resourceType, r.resourceId);
    const res = c.s.get(rk) as ResourceRec | undefined;
    if (res === undefined || res.patient !== p.patient) reject("not-found");
    if (res.erasedAt !== undefined) reject("erased");
    c.s.put(rk, { ...res, erasedAt: c.ctx.time } satisfies ResourceRec);
  }
  if (p.erasePatient) {
    if (pat.org !== p.custodian) reject("unauthorised");
    if (pat.status === "erased") reject("erased");
    const kr = read.key(c.s, pat.key);
    if (kr !== undefined) c.s.put(K.key(pat.key), { ...kr, status: "revoked" } satisfies KeyRec);
    const { recovery: _r, lookup, ...rest } = pat;
    if (lookup !== undefined) c.s.del(K.nhs(lookup));
    putPatient(c, { ...rest, status: "erased", proxies: [], safeguarding: [] });
    c.s.del(K.rules(pat.id));
    c.s.del(K.breakglass(pat.id));
    c.s.del(K.holders(pat.id));
  }
};

const accessLog: Handler<"access.log"> = (c, p) => {
  const authorised = new Set<string>();
  for (const e of p.entries) {
    if (!authorised.has(e.custodian)) {
      requireNodeOrAdmin(c, e.custodian);
      authorised.add(e.custodian);
    }
    if (read.patient(c.s, e.patient) === undefined) reject("not-found");
    if (e.height > c.ctx.height) reject("invalid-reference");
  }
  // Nothing to store: the log itself is the audit trail (the store indexes access.log entries by patient).
};

const breakglassDeclare: Handler<"breakglass.declare"> = (c, p) => {
  const { member, org } = requireMember(c, { roles: ["clinician"] });
  requirePatient(c, p.patient);
  const windowMs = p.windowMs ?? c.policy.breakGlassWindowMs;
  if (windowMs > c.policy.breakGlassWindowMs) reject("invalid-window");
  const live = (read.breakglass(c.s, p.patient) ?? []).filter((b) => b.until > c.ctx.time);
  if (live.length >= MAX_BREAKGLASS) reject("limit");
  const rec: BreakGlassRec = {
    id: c.id,
    member: member.id,
    org: org.id,
    basis: p.basis,
    reason: p.reason,
    from: c.ctx.time,
    until: c.ctx.time + windowMs,
  };
  c.s.put(K.breakglass(p.patient), [...live, rec]);
};

const HANDLERS: { [T in ImplementedType]: Handler<T> } = {
  "network.genesis": genesis,
  "org.propose": orgPropose,
  "org.approve": orgApprove,
  "org.suspend": orgSuspend,
  "key.rotate": keyRotate,
  "member.enrol": memberEnrol,
  "member.revoke": memberRevoke,
  "team.set": teamSet,
  "patient.register": patientRegister,
  "patient.recover": patientRecover,
  "proxy.appoint": proxyAppoint,
  "proxy.end": proxyEnd,
  "proxy.keep": proxyKeep,
  "safeguarding.flag": safeguardingFlag,
  "consent.set": consentSet,
  "consent.revoke": consentRevoke,
  "optout.set": optoutSet,
  "record.anchor": recordAnchor,
  "record.erase": recordErase,
  "access.log": accessLog,
  "breakglass.declare": breakglassDeclare,
};
