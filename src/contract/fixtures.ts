// A pure, deterministic scenario builder for tests, the demo and benchmarks. Everything derives from `seedFor`
// (label → 32-byte seed) and `start` (ms): same inputs, same signed transactions, byte for byte.

import { keyPairFromSeed, sha256Hex, signTx, toHex, txId } from "../ledger/index.ts";
import type { KeyPair } from "../ledger/keys.ts";
import type { Hex32, KeyId, SignedTx, TxResult } from "../ledger/types.ts";
import { type ApplyContext, applyTx } from "./apply.ts";
import type { StateStore } from "./state.ts";

export type SeedFor = (label: string) => Uint8Array;

/** A signing identity: a real key pair, or (unsigned mode) just a key id. */
export type Signer = KeyPair | { keyId: KeyId };

const DAY = 86_400_000;

/** Formats 16 bytes of `bytes` as a random-style (version 4) UUID. */
export function uuidFromBytes(bytes: Uint8Array): string {
  if (bytes.byteLength < 16) throw new RangeError("need 16 bytes");
  const b = Uint8Array.from(bytes.subarray(0, 16));
  b[6] = ((b[6] as number) & 0x0f) | 0x40;
  b[8] = ((b[8] as number) & 0x3f) | 0x80;
  const h = toHex(b);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** A deterministic UUID for a label. */
export function uuidFor(seedFor: SeedFor, label: string): string {
  return uuidFromBytes(seedFor(`uuid:${label}`));
}

/** Builds and signs one tx. */
export function makeTx(kp: KeyPair, type: string, payload: Record<string, unknown>, createdAt: number, nonce: string) {
  return signTx({ type, payload, signer: kp.keyId, nonce, createdAt }, kp);
}

/** Builds an unsigned tx (`sig: ""`); the contract never checks signatures, so benchmarks may skip signing. */
export function makeUnsignedTx(
  signer: KeyId,
  type: string,
  payload: Record<string, unknown>,
  createdAt: number,
  nonce: string,
): SignedTx {
  return { type, payload, signer, nonce, createdAt, sig: "" };
}

/** Makes txs with deterministic nonces: a hash of a per-factory salt (from `seedFor`) and a counter. */
export class TxFactory {
  readonly sign: boolean;
  private readonly salt: string;
  private counter = 0;
  constructor(seedFor: SeedFor, opts: { sign?: boolean; salt?: string } = {}) {
    this.sign = opts.sign ?? true;
    this.salt = toHex(seedFor(`nonce:${opts.salt ?? "default"}`));
  }
  nonce(): string {
    return sha256Hex(`${this.salt}:${this.counter++}`).slice(0, 32);
  }
  tx(signer: Signer, type: string, payload: Record<string, unknown>, createdAt: number): SignedTx {
    const nonce = this.nonce();
    if (this.sign && "privateKey" in signer) return makeTx(signer, type, payload, createdAt, nonce);
    if (this.sign) throw new Error(`no key pair for ${signer.keyId} and signing is on`);
    return makeUnsignedTx(signer.keyId, type, payload, createdAt, nonce);
  }
}

export interface OrgInfo {
  id: string;
  name: string;
  kind: "gp" | "hospital" | "research";
  /** Key labels. */
  admin: string;
  node: string;
}

export interface MemberInfo {
  label: string;
  id: string;
  org: string;
  role: "clinician" | "nurse" | "researcher" | "analyst" | "admin";
  keyId: KeyId;
}

export interface PatientInfo {
  index: number;
  /** Key label (`patient:<i>`). */
  label: string;
  /** Pseudonym. */
  id: string;
  keyId: KeyId;
  ruleIds: string[];
  optout: boolean;
  proxy?: { id: string; label: string; keyId: KeyId; basis: string; scope: "view" | "manage"; endsAt?: number };
}

export interface ScenarioOptions {
  seedFor: SeedFor;
  /** createdAt of the first tx; tx k has createdAt = start + k. Apply each at ctx.time = createdAt (or later). */
  start: number;
  /** Number of patients (default 10). */
  patients?: number;
  /** Consent rules per patient, 0..10 (default 10). */
  rulesPerPatient?: number;
  /** Sign txs (default true). Unsigned txs carry `sig: ""`. */
  sign?: boolean;
  /** The `lookup` HMAC registered for patient `index` (default: a hash of its pseudonym, unrelated to any NHS number). */
  lookupFor?: (index: number, patient: string) => string;
  /**
   * `real` (default): each patient has an Ed25519 key pair in `keys`. `derived`: the patient key id is a hash of
   * its seed (no key pair; only usable unsigned) — for building 100k-patient states quickly.
   */
  patientKeys?: "real" | "derived";
}

export interface ScenarioMeta {
  network: { id: string; name: string };
  keys: Record<string, KeyPair>;
  /** Key ids by label, including derived patient keys. */
  keyIds: Record<string, KeyId>;
  orgs: { gp: OrgInfo; trust: OrgInfo; uni: OrgInfo };
  members: Record<string, MemberInfo>;
  teams: { cardiology: { id: string; org: string; members: string[] } };
  studies: { diabetes: { id: string; org: string } };
  patients: PatientInfo[];
  /** Time after the last tx. */
  end: number;
  /** Number of txs `txs()` yields. */
  txCount: number;
}

export interface Scenario extends ScenarioMeta {
  txs: SignedTx[];
}

const ORGS = {
  gp: { id: "gp-riverside", name: "Riverside Medical Practice", kind: "gp" },
  trust: { id: "trust-northgate", name: "Northgate Hospitals NHS Trust", kind: "hospital" },
  uni: { id: "uni-research", name: "University Population Health Research Group", kind: "research" },
} as const;

const MEMBERS: { label: string; org: keyof typeof ORGS; role: MemberInfo["role"] }[] = [
  { label: "clinician:gp", org: "gp", role: "clinician" },
  { label: "nurse:gp", org: "gp", role: "nurse" },
  { label: "clinician:trust-ae", org: "trust", role: "clinician" },
  { label: "clinician:trust-cardio", org: "trust", role: "clinician" },
  { label: "nurse:trust", org: "trust", role: "nurse" },
  { label: "researcher:uni", org: "uni", role: "researcher" },
];

/** First of the month, 00:00 UTC, at or before `ms`. */
export function firstOfMonthUtc(ms: number): number {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/**
 * The ten rule templates patients cycle through (rule k uses template k). Each returns a consent.set payload minus
 * `patient` and `rule`.
 */
function ruleTemplate(k: number, m: ScenarioMeta, start: number): Record<string, unknown> {
  const { gp, trust, uni } = m.orgs;
  const member = (l: string) => (m.members[l] as MemberInfo).id;
  switch (k) {
    case 0: // care team for treatment, general records
      return base("permit", { kind: "team", id: m.teams.cardiology.id }, ["TREAT", "ETREAT"], ["read"], ["N"]);
    case 1: // the hospital, incl. mental health
      return base("permit", { kind: "org", id: trust.id }, ["TREAT"], ["read", "write"], ["N", "PSY"]);
    case 2: // named study at the university, records since 2015
      return {
        ...base("permit", { kind: "study", id: m.studies.diabetes.id, org: uni.id }, ["HRESCH"], ["read"], ["N"]),
        dataPeriod: { start: "2015-01-01" },
      };
    case 3: // not the A&E doctor for sexual health
      return base("deny", { kind: "member", id: member("clinician:trust-ae") }, ["TREAT", "ETREAT"], ["read"], ["SEX"]);
    case 4: // hospital nurses: observations and medications
      return {
        ...base("permit", { kind: "role", org: trust.id, role: "nurse" }, ["TREAT"], ["read"], ["N"]),
        resourceTypes: ["Observation", "MedicationStatement"],
      };
    case 5: // own GP incl. sexual health and HIV
      return base(
        "permit",
        { kind: "member", id: member("clinician:gp") },
        ["TREAT"],
        ["read", "write"],
        ["N", "SEX", "HIV"],
      );
    case 6: // no genetics for university researchers
      return base(
        "deny",
        { kind: "role", org: uni.id, role: "researcher" },
        ["HRESCH", "CLINTRCH"],
        ["read"],
        ["GDIS"],
      );
    case 7: // release mental health for emergencies
      return base("permit", { kind: "any" }, ["ETREAT"], ["read"], ["PSY"]);
    case 8: // the practice for a year
      return {
        ...base("permit", { kind: "org", id: gp.id }, ["TREAT"], ["read"], []),
        period: { start, end: start + 365 * DAY },
      };
    default: // general research at the university for 30 days
      return {
        ...base("permit", { kind: "org", id: uni.id }, ["HRESCH"], ["read"], ["N"]),
        period: { start, end: start + 30 * DAY },
      };
  }
}

function base(
  effect: "permit" | "deny",
  grantee: Record<string, unknown>,
  purposes: string[],
  actions: string[],
  labels: string[],
): Record<string, unknown> {
  return { effect, grantee, resourceTypes: [], labels, purposes, actions };
}

/** The scenario's identities (cheap) and a generator of its txs (streamed, so 100k patients fit in memory). */
export function createScenario(opts: ScenarioOptions): { meta: ScenarioMeta; txs: () => Generator<SignedTx> } {
  const { seedFor, start } = opts;
  const nPatients = opts.patients ?? 10;
  const nRules = Math.max(0, Math.min(10, opts.rulesPerPatient ?? 10));
  const keys: Record<string, KeyPair> = {};
  const keyIds: Record<string, KeyId> = {};
  const key = (label: string): KeyPair => {
    let kp = keys[label];
    if (kp === undefined) {
      kp = keyPairFromSeed(seedFor(label));
      keys[label] = kp;
      keyIds[label] = kp.keyId;
    }
    return kp;
  };
  const orgs = {} as ScenarioMeta["orgs"];
  for (const name of ["gp", "trust", "uni"] as const) {
    const o = ORGS[name];
    orgs[name] = { ...o, admin: `admin:${name}`, node: `node:${name}` };
    key(`admin:${name}`);
    key(`node:${name}`);
  }
  const members: Record<string, MemberInfo> = {};
  for (const name of ["gp", "trust", "uni"] as const) {
    const label = `admin:${name}`;
    members[label] = { label, id: uuidFor(seedFor, label), org: ORGS[name].id, role: "admin", keyId: key(label).keyId };
  }
  for (const m of MEMBERS) {
    members[m.label] = {
      label: m.label,
      id: uuidFor(seedFor, m.label),
      org: ORGS[m.org].id,
      role: m.role,
      keyId: key(m.label).keyId,
    };
  }
  const teams = {
    cardiology: {
      id: uuidFor(seedFor, "team:cardiology"),
      org: ORGS.trust.id,
      members: [(members["clinician:trust-cardio"] as MemberInfo).id, (members["nurse:trust"] as MemberInfo).id],
    },
  };
  const studies = { diabetes: { id: uuidFor(seedFor, "study:diabetes"), org: ORGS.uni.id } };

  const derived = opts.patientKeys === "derived";
  const patients: PatientInfo[] = [];
  for (let i = 0; i < nPatients; i++) {
    const label = `patient:${i}`;
    const keyId = derived ? sha256Hex(seedFor(label)) : key(label).keyId;
    keyIds[label] = keyId;
    const p: PatientInfo = {
      index: i,
      label,
      id: uuidFor(seedFor, label),
      keyId,
      ruleIds: Array.from({ length: nRules }, (_, k) => uuidFor(seedFor, `rule:${i}:${k}`)),
      optout: i % 10 === 1,
    };
    if (i === 0) {
      // A parent for a child: the proxy ends on the first of the month of the child's 16th birthday.
      p.proxy = {
        id: uuidFor(seedFor, "proxy:0"),
        label: "proxy:parent-0",
        keyId: key("proxy:parent-0").keyId,
        basis: "parental-responsibility",
        scope: "manage",
        endsAt: firstOfMonthUtc(start + 200 * DAY),
      };
    } else if (i === 2) {
      p.proxy = {
        id: uuidFor(seedFor, "proxy:2"),
        label: "proxy:carer-2",
        keyId: key("proxy:carer-2").keyId,
        basis: "carer-nominated",
        scope: "view",
      };
    }
    patients.push(p);
  }

  const anchored = Math.min(nPatients, 20);
  const withProxy = patients.filter((p) => p.proxy !== undefined).length;
  const optouts = patients.filter((p) => p.optout).length;
  const txCount =
    1 + // genesis
    MEMBERS.length +
    1 + // team
    nPatients * (1 + nRules) +
    withProxy +
    optouts +
    (anchored > 0 ? 2 : 0);
  const meta: ScenarioMeta = {
    network: { id: "careledger-demo", name: "CareLedger demonstration network" },
    keys,
    keyIds,
    orgs,
    members,
    teams,
    studies,
    patients,
    end: start + txCount,
    txCount,
  };

  function* txs(): Generator<SignedTx> {
    const f = new TxFactory(seedFor, { sign: opts.sign ?? true });
    let t = start;
    const signerOf = (label: string): { keyId: KeyId } => keys[label] ?? { keyId: keyIds[label] as KeyId };
    const tx = (label: string, type: string, payload: Record<string, unknown>) =>
      f.tx(signerOf(label), type, payload, t++);

    yield tx("admin:gp", "network.genesis", {
      network: meta.network,
      policy: { quorum: 2 },
      orgs: (["gp", "trust", "uni"] as const).map((name) => ({
        id: ORGS[name].id,
        name: ORGS[name].name,
        kind: ORGS[name].kind,
        admins: [{ member: (members[`admin:${name}`] as MemberInfo).id, key: keyIds[`admin:${name}`] }],
        nodes: [keyIds[`node:${name}`]],
      })),
    });
    for (const m of MEMBERS) {
      const info = members[m.label] as MemberInfo;
      yield tx(`admin:${m.org}`, "member.enrol", { member: info.id, org: info.org, role: info.role, key: info.keyId });
    }
    yield tx("admin:trust", "team.set", {
      team: teams.cardiology.id,
      org: teams.cardiology.org,
      name: "Cardiology",
      members: teams.cardiology.members,
    });
    for (const [index, p] of patients.entries()) {
      yield tx("clinician:gp", "patient.register", {
        patient: p.id,
        org: ORGS.gp.id,
        key: p.keyId,
        lookup: opts.lookupFor?.(index, p.id) ?? sha256Hex(`lookup:${p.id}`),
      });
      for (let k = 0; k < nRules; k++) {
        yield tx(p.label, "consent.set", { patient: p.id, rule: p.ruleIds[k], ...ruleTemplate(k, meta, start) });
      }
      if (p.proxy !== undefined) {
        const payload: Record<string, unknown> = {
          patient: p.id,
          proxy: p.proxy.id,
          key: p.proxy.keyId,
          basis: p.proxy.basis,
          scope: p.proxy.scope,
          labels: ["N"],
        };
        if (p.proxy.endsAt !== undefined) payload.endsAt = p.proxy.endsAt;
        yield tx(p.proxy.basis === "parental-responsibility" ? "clinician:gp" : p.label, "proxy.appoint", payload);
      }
      if (p.optout) yield tx(p.label, "optout.set", { patient: p.id, optout: true });
    }
    if (anchored > 0) {
      const anchors = (custodian: string, resourceType: string, labels: string[]) =>
        patients.slice(0, anchored).map((p) => ({
          custodian,
          patient: p.id,
          resourceType,
          resourceId: uuidFor(seedFor, `res:${custodian}:${resourceType}:${p.index}`),
          version: "1",
          commitment: sha256Hex(`commitment:${custodian}:${p.index}`),
          labels,
          date: "2024-03-01",
        }));
      yield tx("node:gp", "record.anchor", { anchors: anchors(ORGS.gp.id, "Observation", ["N"]) });
      yield tx("node:trust", "record.anchor", { anchors: anchors(ORGS.trust.id, "Condition", ["N", "PSY"]) });
    }
  }
  return { meta, txs };
}

/** The whole scenario with its txs in an array. */
export function buildScenario(opts: ScenarioOptions): Scenario {
  const { meta, txs } = createScenario(opts);
  return { ...meta, txs: [...txs()] };
}

/**
 * Applies txs in order, one per block, at ctx.time = createdAt, tracking nonces. Returns the results. `fastIds`
 * uses a hash of signer and nonce instead of the canonical tx id (benchmarks).
 */
export function applyAll(
  state: StateStore,
  txs: Iterable<SignedTx>,
  opts: { height?: number; fastIds?: boolean; nonces?: Set<string> } = {},
): { results: TxResult[]; ids: Hex32[]; height: number } {
  const nonces = opts.nonces ?? new Set<string>();
  let height = opts.height ?? 0;
  const results: TxResult[] = [];
  const ids: Hex32[] = [];
  for (const tx of txs) {
    height++;
    const ctx: ApplyContext = {
      height,
      time: tx.createdAt,
      nonceUsed: (s, n) => nonces.has(`${s}:${n}`),
    };
    const id = opts.fastIds === true ? sha256Hex(`${tx.signer}:${tx.nonce}`) : txId(tx);
    const r = applyTx(state, tx, id, ctx);
    nonces.add(`${tx.signer}:${tx.nonce}`);
    results.push(r);
    ids.push(id);
  }
  return { results, ids, height };
}

/** A seedFor for tests and benchmarks: SHA-256 of a namespace and the label. Not for real keys. */
export function testSeedFor(namespace = "careledger-test"): SeedFor {
  return (label: string) => Uint8Array.from(Buffer.from(sha256Hex(`${namespace}:${label}`), "hex"));
}

/**
 * The payload of a one-entry `access.log`: `requester` read `resourceId` of `patient` at `custodian` for treatment.
 * Valid when signed by the custodian's node key and the patient is registered; it writes no state, which makes it
 * the load of choice for benchmarks and fault tests.
 */
export function accessLogPayload(entry: {
  requester: string;
  patient: string;
  custodian: string;
  resourceId: string;
  height?: number;
  decision?: "permit" | "deny";
}): Record<string, unknown> {
  const permit = (entry.decision ?? "permit") === "permit";
  return {
    entries: [
      {
        requester: entry.requester,
        patient: entry.patient,
        custodian: entry.custodian,
        resourceType: "Observation",
        resourceId: entry.resourceId,
        purpose: "TREAT",
        action: "read",
        decision: permit ? "permit" : "deny",
        step: permit ? 7 : 8,
        rule: permit ? "default:custodian-treat" : "default-deny",
        height: entry.height ?? 0,
      },
    ],
  };
}
