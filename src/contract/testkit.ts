// Test helpers (not a test file): a small network built once from the fixtures and cloned per test.

import { canonicalJson, keyPairFromSeed, sha256Hex, txId } from "../ledger/index.ts";
import type { KeyPair } from "../ledger/keys.ts";
import type { KeyId, SignedTx, TxResult } from "../ledger/types.ts";
import { applyTx } from "./apply.ts";
import { type Decision, type DecisionRequest, decide } from "./decide.ts";
import {
  applyAll,
  buildScenario,
  type PatientInfo,
  type Scenario,
  TxFactory,
  testSeedFor,
  uuidFor,
} from "./fixtures.ts";
import { MemoryState, type StateStore } from "./state.ts";

export const START = Date.UTC(2025, 0, 6, 9, 0, 0);
export const DAY = 86_400_000;
export const HOUR = 3_600_000;
export const seedFor = testSeedFor("contract-tests");

let netCounter = 0;
let cached: { sc: Scenario; state: MemoryState; height: number; nonces: Set<string> } | undefined;

function base() {
  if (cached === undefined) {
    const sc = buildScenario({ seedFor, start: START, patients: 6 });
    const state = new MemoryState();
    const nonces = new Set<string>();
    const { results, height } = applyAll(state, sc.txs, { nonces });
    const bad = results.findIndex((r) => !r.valid);
    if (bad >= 0) throw new Error(`fixture tx ${bad} (${sc.txs[bad]?.type}) rejected: ${results[bad]?.code}`);
    cached = { sc, state, height, nonces };
  }
  return cached;
}

export interface SubmitOpts {
  /** Block time (default: net.now, then now advances by 1 ms). */
  time?: number;
  /** createdAt (default: the block time). */
  createdAt?: number;
  nonce?: string;
}

/** A fresh copy of the fixture network (6 patients × 10 rules) plus helpers to submit txs and ask decisions. */
export class Net {
  readonly sc: Scenario;
  state: StateStore;
  now: number;
  height: number;
  readonly nonces: Set<string>;
  readonly f: TxFactory;
  private readonly extraKeys = new Map<string, KeyPair>();

  constructor(state?: StateStore) {
    const b = base();
    this.sc = b.sc;
    this.state = state ?? new MemoryState(b.state.map);
    this.now = b.sc.end + 1000;
    this.height = b.height;
    this.nonces = new Set(b.nonces);
    this.f = new TxFactory(seedFor, { salt: `net-${netCounter++}` });
  }

  /** A fixture key or a new deterministic one for any other label. */
  key(label: string): KeyPair {
    const k = this.sc.keys[label] ?? this.extraKeys.get(label);
    if (k !== undefined) return k;
    const kp = keyPairFromSeed(seedFor(`extra:${label}`));
    this.extraKeys.set(label, kp);
    return kp;
  }

  keyId(label: string): KeyId {
    return this.key(label).keyId;
  }

  uuid(label: string): string {
    return uuidFor(seedFor, `extra:${label}`);
  }

  patient(i: number): PatientInfo {
    const p = this.sc.patients[i];
    if (p === undefined) throw new Error(`no patient ${i}`);
    return p;
  }

  member(label: string): string {
    const m = this.sc.members[label];
    if (m === undefined) throw new Error(`no member ${label}`);
    return m.id;
  }

  tx(label: string, type: string, payload: Record<string, unknown>, createdAt = this.now, nonce?: string): SignedTx {
    if (nonce === undefined) return this.f.tx(this.key(label), type, payload, createdAt);
    const kp = this.key(label);
    return { ...this.f.tx(kp, type, payload, createdAt), nonce };
  }

  apply(tx: SignedTx, time = this.now): TxResult {
    this.height++;
    const r = applyTx(this.state, tx, txId(tx), {
      height: this.height,
      time,
      nonceUsed: (s, n) => this.nonces.has(`${s}:${n}`),
    });
    this.nonces.add(`${tx.signer}:${tx.nonce}`);
    this.now = Math.max(this.now, time) + 1;
    return r;
  }

  submit(label: string, type: string, payload: Record<string, unknown>, opts: SubmitOpts = {}): TxResult {
    const time = opts.time ?? this.now;
    const tx =
      opts.nonce === undefined
        ? this.f.tx(this.key(label), type, payload, opts.createdAt ?? time)
        : this.tx(label, type, payload, opts.createdAt ?? time, opts.nonce);
    return this.apply(tx, time);
  }

  /** Submits and asserts the code. */
  ok(label: string, type: string, payload: Record<string, unknown>, opts?: SubmitOpts): void {
    const r = this.submit(label, type, payload, opts);
    if (!r.valid) throw new Error(`${type} by ${label} rejected: ${r.code}`);
  }

  decide(
    requester: string,
    patient: number | string,
    purpose: string,
    resource: Partial<DecisionRequest["resource"]> = {},
    extra: Partial<DecisionRequest> = {},
  ): Decision {
    const pid = typeof patient === "number" ? this.patient(patient).id : patient;
    const keyId = /^[0-9a-f]{64}$/.test(requester) ? requester : this.keyId(requester);
    return decide(this.state, {
      requester: keyId,
      patient: pid,
      purpose,
      action: "read",
      resource: { type: "Observation", custodian: "trust-northgate", labels: ["N"], date: "2024-06-01", ...resource },
      at: this.now,
      ...extra,
    });
  }

  /** A new patient registered at the GP practice, with no rules. */
  newPatient(label: string): { id: string; keyLabel: string } {
    const id = this.uuid(`patient:${label}`);
    const keyLabel = `patient:${label}`;
    this.ok("clinician:gp", "patient.register", { patient: id, org: "gp-riverside", key: this.keyId(keyLabel) });
    return { id, keyLabel };
  }
}

/** Canonical JSON of every state entry, sorted by key (for "state untouched" and determinism checks). */
export function snapshot(state: MemoryState): string {
  const keys = [...state.map.keys()].sort();
  return sha256Hex(canonicalJson(keys.map((k) => [k, state.map.get(k)])));
}

/** A store that deep-freezes every value it is given, so any later mutation by the contract throws. */
export class FreezingState extends MemoryState {
  override put(key: string, value: unknown): void {
    super.put(key, deepFreeze(value));
  }
}

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === "object" && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}
