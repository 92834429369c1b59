// State access, the in-memory store, the write buffer that makes applyTx atomic, and the shapes of stored values.
// Every stored value is plain JSON (no `undefined` fields) and is never mutated after it is stored: writers build a
// new object and put it.

import type { KeyId } from "../ledger/types.ts";
import type { LabelId } from "./labels.ts";
import type { NetworkPolicy } from "./policy.ts";

export interface StateReader {
  /** The value under `key`, or undefined when absent. Values are JSON-compatible and must be treated as immutable. */
  get(key: string): unknown;
}

export interface StateStore extends StateReader {
  put(key: string, value: unknown): void;
  del(key: string): void;
}

/** A Map-backed store (tests, demo, benchmarks, and as a cache in front of SQLite). */
export class MemoryState implements StateStore {
  readonly map: Map<string, unknown>;
  constructor(entries?: Iterable<readonly [string, unknown]>) {
    this.map = new Map(entries);
  }
  get(key: string): unknown {
    return this.map.get(key);
  }
  put(key: string, value: unknown): void {
    this.map.set(key, value);
  }
  del(key: string): void {
    this.map.delete(key);
  }
  get size(): number {
    return this.map.size;
  }
  /** Keys in insertion order, optionally only those starting with `prefix`. */
  *keys(prefix = ""): IterableIterator<string> {
    for (const k of this.map.keys()) if (k.startsWith(prefix)) yield k;
  }
  entries(): IterableIterator<[string, unknown]> {
    return this.map.entries();
  }
}

const DELETED: unique symbol = Symbol("deleted");

/** Buffers writes over a reader; `flush` applies them (in write order) to a store. */
export class Overlay implements StateStore {
  readonly base: StateReader;
  readonly writes = new Map<string, unknown>();
  constructor(base: StateReader) {
    this.base = base;
  }
  get(key: string): unknown {
    if (this.writes.has(key)) {
      const v = this.writes.get(key);
      return v === DELETED ? undefined : v;
    }
    return this.base.get(key);
  }
  put(key: string, value: unknown): void {
    this.writes.set(key, value);
  }
  del(key: string): void {
    this.writes.set(key, DELETED);
  }
  flush(target: StateStore): void {
    for (const [k, v] of this.writes) {
      if (v === DELETED) target.del(k);
      else target.put(k, v);
    }
  }
}

// ---- keys -----------------------------------------------------------------------------------------------------

export const K = {
  network: "network",
  org: (id: string) => `org/${id}`,
  key: (keyId: string) => `key/${keyId}`,
  member: (id: string) => `member/${id}`,
  team: (id: string) => `team/${id}`,
  patient: (id: string) => `patient/${id}`,
  nhs: (lookup: string) => `nhs/${lookup}`,
  rules: (patient: string) => `rules/${patient}`,
  breakglass: (patient: string) => `breakglass/${patient}`,
  resource: (custodian: string, type: string, id: string) => `res/${custodian}/${type}/${id}`,
  anchor: (custodian: string, type: string, id: string, version: string) =>
    `anchor/${custodian}/${type}/${id}/${version}`,
  /** Which custodians anchored records of a patient (so a node knows whom to ask for `$everything`). */
  holders: (patient: string) => `holders/${patient}`,
} as const;

// ---- stored shapes --------------------------------------------------------------------------------------------

export interface NetworkRec {
  id: string;
  name: string;
  policy: NetworkPolicy;
  genesisAt: number;
  /** Every org ever proposed, in order. */
  orgs: string[];
}

export type OrgStatus = "proposed" | "active" | "suspended";

export interface OrgRec {
  id: string;
  name: string;
  kind: string;
  status: OrgStatus;
  /** Member ids of active admins. */
  admins: string[];
  /** Key ids of the org's node keys (sign anchors and access logs). */
  nodes: KeyId[];
  /** Orgs whose admins approved joining. */
  approvals: string[];
  /** Orgs currently voting to suspend / reinstate. */
  suspendVotes: string[];
  reinstateVotes: string[];
  proposedAt: number;
}

export type KeyRec =
  | { kind: "member"; member: string; org: string; status: "active" | "revoked" }
  | { kind: "node"; org: string; status: "active" | "revoked" }
  | { kind: "patient"; patient: string; status: "active" | "revoked" };

export interface MemberRec {
  id: string;
  org: string;
  role: string;
  key: KeyId;
  status: "active" | "revoked";
  teams: string[];
  enrolledAt: number;
}

export interface TeamRec {
  id: string;
  org: string;
  name: string;
  members: string[];
}

export interface ProxyRec {
  id: string;
  key: KeyId;
  basis: string;
  scope: "view" | "manage";
  /** Codes as given, and the labels they map to. */
  codes: string[];
  labels: LabelId[];
  /** Parental proxies: first of the month of the child's 16th (or 13th) birthday, ms UTC. */
  endsAt?: number;
  /** The young person signed to keep this proxy past endsAt. */
  kept: boolean;
  appointedAt: number;
}

export interface FlagRec {
  id: string;
  org: string;
  freezeProxies: boolean;
  hideFromPatient: boolean;
  at: number;
}

export interface RecoveryRec {
  key: KeyId;
  orgs: string[];
  startedAt: number;
}

export interface PatientRec {
  id: string;
  /** Registering org. */
  org: string;
  key: KeyId;
  status: "active" | "erased";
  optout: boolean;
  registeredAt: number;
  proxies: ProxyRec[];
  /** Active safeguarding flags. */
  safeguarding: FlagRec[];
  recovery?: RecoveryRec;
  lookup?: string;
}

export type Grantee =
  | { kind: "member"; id: string }
  | { kind: "team"; id: string }
  | { kind: "org"; id: string }
  | { kind: "role"; org: string; role: string }
  | { kind: "study"; id: string; org: string }
  | { kind: "any" };

export interface RuleRec {
  id: string;
  effect: "permit" | "deny";
  grantee: Grantee;
  /** Grantee key, matched against the requester's keys (see `granteeKey`). */
  gk: string;
  /** Resource types (empty = all). */
  types: string[];
  /** Codes as given (empty = any label) and the labels they map to. */
  codes: string[];
  labels: LabelId[];
  purposes: string[];
  actions: string[];
  /** Period, ms (inclusive start, exclusive end). */
  start?: number;
  end?: number;
  /** dataPeriod, ISO dates inclusive. */
  dataStart?: string;
  dataEnd?: string;
  setAt: number;
}

export interface BreakGlassRec {
  id: string;
  member: string;
  org: string;
  basis: string;
  reason: string;
  from: number;
  until: number;
}

export interface ResourceRec {
  /** Absent for a record of no patient. */
  patient?: string;
  latest: string;
  versions: number;
  erasedAt?: number;
}

export interface AnchorRec {
  commitment: string;
  labels: string[];
  date?: string;
  height: number;
  at: number;
}

export function granteeKey(g: Grantee): string {
  switch (g.kind) {
    case "member":
      return `m:${g.id}`;
    case "team":
      return `t:${g.id}`;
    case "org":
      return `o:${g.id}`;
    case "role":
      return `r:${g.org}:${g.role}`;
    case "study":
      return `s:${g.id}:${g.org}`;
    case "any":
      return "*";
  }
}

// Typed getters (values come from our own writes; the casts are safe as long as only applyTx writes state).
export const read = {
  network: (s: StateReader) => s.get(K.network) as NetworkRec | undefined,
  org: (s: StateReader, id: string) => s.get(K.org(id)) as OrgRec | undefined,
  key: (s: StateReader, id: string) => s.get(K.key(id)) as KeyRec | undefined,
  member: (s: StateReader, id: string) => s.get(K.member(id)) as MemberRec | undefined,
  team: (s: StateReader, id: string) => s.get(K.team(id)) as TeamRec | undefined,
  patient: (s: StateReader, id: string) => s.get(K.patient(id)) as PatientRec | undefined,
  rules: (s: StateReader, id: string) => s.get(K.rules(id)) as RuleRec[] | undefined,
  breakglass: (s: StateReader, id: string) => s.get(K.breakglass(id)) as BreakGlassRec[] | undefined,
  /** Custodian org ids holding records of the patient, sorted. */
  holders: (s: StateReader, patient: string) => s.get(K.holders(patient)) as string[] | undefined,
};
