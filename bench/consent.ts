// Consent decision benchmark (DESIGN target: p50 ≤ 50 µs, p99 ≤ 1 ms with 100k patients × 10 rules, in process).
//
// State is built through applyTx from the fixture scenario (not a direct builder): unsigned txs (the contract never
// checks signatures) with derived patient key ids and hash tx ids, so the build measures the contract only. Then
// ≥ 200,000 mixed decide() calls are timed one by one with process.hrtime.bigint().

import { createHash } from "node:crypto";
import { createScenario } from "../src/contract/fixtures.ts";
import { applyTx, type DecisionRequest, decide, MemoryState } from "../src/contract/index.ts";
import { machineLimits } from "./limits.ts";

export interface ConsentBenchOptions {
  quick?: boolean;
  /** Overrides (for tests). */
  patients?: number;
  decisions?: number;
  log?: (line: string) => void;
}

const START = Date.UTC(2025, 0, 6, 9, 0, 0);

function seedFor(label: string): Uint8Array {
  return createHash("sha256").update(`bench-consent:${label}`).digest();
}

/** Small deterministic PRNG (mulberry32), so every run asks the same questions. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function run(opts: ConsentBenchOptions = {}): Promise<Record<string, unknown>> {
  const patients = opts.patients ?? (opts.quick === true ? 10_000 : 100_000);
  const decisions = Math.max(opts.decisions ?? 200_000, 1);
  const rulesPerPatient = 10;
  const limits = machineLimits(undefined, opts.log);

  // ---- build ----
  const { meta, txs } = createScenario({
    seedFor,
    start: START,
    patients,
    rulesPerPatient,
    sign: false,
    patientKeys: "derived",
  });
  const state = new MemoryState();
  const nonces = new Set<string>();
  let height = 0;
  let rejected = 0;
  const t0 = process.hrtime.bigint();
  for (const tx of txs()) {
    height++;
    const id = createHash("sha256").update(`${tx.signer}:${tx.nonce}`).digest("hex");
    const r = applyTx(state, tx, id, { height, time: tx.createdAt, nonceUsed: (s, n) => nonces.has(`${s}:${n}`) });
    nonces.add(`${tx.signer}:${tx.nonce}`);
    if (!r.valid) rejected++;
  }
  const buildMs = Number(process.hrtime.bigint() - t0) / 1e6;
  if (rejected > 0) throw new Error(`consent bench: ${rejected} fixture txs rejected`);

  // Break-glass declarations for one patient in ten (so step 3 is exercised).
  const ae = meta.keyIds["clinician:trust-ae"] as string;
  const bgTime = meta.end + 1000;
  for (let i = 0; i < patients; i += 10) {
    height++;
    const p = meta.patients[i] as (typeof meta.patients)[number];
    const tx = {
      type: "breakglass.declare",
      payload: { patient: p.id, basis: "emergency-no-capacity", reason: "Unresponsive on arrival" },
      signer: ae,
      nonce: createHash("sha256").update(`bg:${i}`).digest("hex").slice(0, 32),
      createdAt: bgTime,
      sig: "",
    };
    const r = applyTx(state, tx, createHash("sha256").update(`bg:${i}`).digest("hex"), {
      height,
      time: bgTime,
      nonceUsed: () => false,
    });
    if (!r.valid) throw new Error(`consent bench: break-glass rejected (${r.code})`);
  }

  // ---- requests ----
  const rand = rng(42);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const key = (label: string) => meta.keyIds[label] as string;
  const study = meta.studies.diabetes.id;
  const at = meta.end + 60_000;
  const kinds: ((p: (typeof meta.patients)[number]) => DecisionRequest)[] = [
    // team grant (step 6)
    (p) => req(key("clinician:trust-cardio"), p.id, "TREAT", "Observation", "trust-northgate", ["N"], at),
    // deny beats permit (step 4)
    (p) => req(key("clinician:trust-ae"), p.id, "TREAT", "Condition", "trust-northgate", ["N", "SEX"], at),
    // sensitive label not named (step 5)
    (p) => req(key("clinician:trust-cardio"), p.id, "TREAT", "Condition", "trust-northgate", ["N", "HIV"], at),
    // named study (step 6, dataPeriod)
    (p) => ({ ...req(key("researcher:uni"), p.id, "HRESCH", "Observation", "gp-riverside", ["N"], at), study }),
    // research without a study: permit, or opt-out (step 7)
    (p) => req(key("researcher:uni"), p.id, "HRESCH", "Observation", "gp-riverside", ["N"], at),
    // own record (step 1)
    (p) => req(p.keyId, p.id, "TREAT", "Observation", "gp-riverside", ["N", "PSY"], at),
    // GP with HIV named (step 6)
    (p) => req(key("clinician:gp"), p.id, "TREAT", "Condition", "gp-riverside", ["N", "HIV"], at),
    // role grant limited to types (step 6)
    (p) => req(key("nurse:trust"), p.id, "TREAT", "MedicationStatement", "trust-northgate", ["N"], at),
    // purpose not allowed (step 2)
    (p) => req(key("researcher:uni"), p.id, "TREAT", "Observation", "gp-riverside", ["N"], at),
    // break-glass: permitted where declared (step 3), otherwise falls through
    (p) => req(key("clinician:trust-ae"), p.id, "ETREAT", "AllergyIntolerance", "gp-riverside", ["N"], at),
    // nothing applies (step 8)
    (p) => req(key("clinician:gp"), p.id, "ETREAT", "Encounter", "gp-riverside", ["N"], at),
  ];
  const requests: DecisionRequest[] = new Array(decisions);
  for (let i = 0; i < decisions; i++) requests[i] = (pick(kinds) as (typeof kinds)[number])(pick(meta.patients));

  // ---- warm up, then time ----
  for (let i = 0; i < Math.min(20_000, decisions); i++) decide(state, requests[i] as DecisionRequest);
  const lat = new Float64Array(decisions);
  const byStep = new Array<number>(9).fill(0);
  let permits = 0;
  const w0 = process.hrtime.bigint();
  for (let i = 0; i < decisions; i++) {
    const s = process.hrtime.bigint();
    const d = decide(state, requests[i] as DecisionRequest);
    lat[i] = Number(process.hrtime.bigint() - s);
    byStep[d.step] = (byStep[d.step] as number) + 1;
    if (d.effect === "permit") permits++;
  }
  const wallNs = Number(process.hrtime.bigint() - w0);
  lat.sort();
  const pct = (q: number) => (lat[Math.min(decisions - 1, Math.floor(q * decisions))] as number) / 1000;

  return {
    ...limits,
    decisions_per_s: Math.round(decisions / (wallNs / 1e9)),
    p50_us: round(pct(0.5)),
    p99_us: round(pct(0.99)),
    p999_us: round(pct(0.999)),
    max_us: round((lat[decisions - 1] as number) / 1000),
    patients,
    rules_per_patient: rulesPerPatient,
    decisions,
    permit_share: round(permits / decisions),
    decisions_by_step: Object.fromEntries(byStep.map((n, i) => [i, n]).filter(([i]) => (i as number) > 0)),
    state_keys: state.size,
    build: {
      via: "applyTx (unsigned fixture txs)",
      txs: height,
      ms: Math.round(buildMs),
      tx_per_s: Math.round(height / (buildMs / 1000)),
    },
  };
}

function req(
  requester: string,
  patient: string,
  purpose: string,
  type: string,
  custodian: string,
  labels: string[],
  at: number,
): DecisionRequest {
  return { requester, patient, purpose, action: "read", resource: { type, custodian, labels, date: "2024-03-01" }, at };
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
