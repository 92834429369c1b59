// Patients on the ledger: NHS numbers never go there, pseudonyms do. A patient is found by the HMAC of their NHS
// number under the network's lookup key (DESIGN "Data never on the ledger": a key only member nodes hold), kept in
// the contract's `nhs/<hmac>` index; a patient not yet known gets a random UUID pseudonym, registered with
// `patient.register {patient, org, key, lookup}` signed by an admin or clinician of this organisation, and a fresh
// patient key pair written to `<keysDir>/<pseudonym>.key` so that the demo and tests can act as that patient.
//
// Decision: the FHIR `Patient.id` at every custodian IS the pseudonym. It is random and already on the ledger, so it
// reveals nothing new, every record's `patient` is simply its Patient's id (`patientOf`), and a patient's records
// at different custodians share one id without any mapping table. Client-chosen Patient ids are never stored.
//
// The lookup key file (`lookup.key`, 32 random bytes as hex JSON, mode 0600) is made once for a network, by
// `careledger init` of its first node; a node joining the network gets a copy from an existing member out of band
// (like its genesis file, but secret: over a channel the two organisations trust, never through the ledger).
// Without it a node cannot find or register patients by NHS number; everything else works.

import { createHmac, createSecretKey, type KeyObject, randomUUID } from "node:crypto";
import { mkdirSync, unlinkSync } from "node:fs";
import { unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { UUID_PATTERN } from "../../contract/schemas.ts";
import { K, read } from "../../contract/state.ts";
import { toHex } from "../../ledger/encoding.ts";
import { type KeyPair, seedOf } from "../../ledger/keys.ts";
import { parseSignedTx } from "../../ledger/tx.ts";
import type { Hex32, SignedTx } from "../../ledger/types.ts";
import { readKeyFile } from "../../node/datadir.ts";
import { newKey, signNew } from "../../node/network.ts";
import { createSecretFile, readSecretFile, type SecretFileKind } from "../../vault/secret-file.ts";
import { isValidNhsNumber } from "../nhs-number.ts";
import type { FhirContext } from "./context.ts";

/** The lookup key's file name in a data dir. */
export const LOOKUP_KEY_FILE = "lookup.key";
/** Where patient key files go, under a data dir. */
export const PATIENT_KEYS_DIR = join("keys", "patients");
const LOOKUP_KEY_KIND = "careledger-nhs-lookup-key";

/** A lookup key file that cannot be used. The message names the file, never key material. */
export class LookupKeyError extends Error {
  override name = "LookupKeyError";
}

const LOOKUP_KEY_SECRET: SecretFileKind = {
  kind: LOOKUP_KEY_KIND,
  what: "lookup key",
  valid: "CareLedger lookup key",
  fail: (message) => new LookupKeyError(message),
};

/** The network's NHS-number lookup key. */
export class LookupKey {
  private readonly key: KeyObject;

  private constructor(secret: Buffer) {
    this.key = createSecretKey(secret);
    secret.fill(0);
  }

  /**
   * Creates the key file (0600; written to a temporary file, fsynced and linked into place, so a crash never leaves
   * half a key and an existing key is never replaced). Throws LookupKeyError if one exists.
   */
  static create(path: string): LookupKey {
    const secret = createSecretFile(path, LOOKUP_KEY_KIND);
    if (secret === undefined) throw new LookupKeyError(`lookup key ${path} already exists; a network has exactly one`);
    return new LookupKey(secret);
  }

  /** Opens a key file; refuses one that group or others can read, and anything that is not a lookup key. */
  static open(path: string): LookupKey {
    try {
      return new LookupKey(readSecretFile(path, LOOKUP_KEY_SECRET));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") {
        throw new LookupKeyError(
          `lookup key ${path} does not exist; it is created by careledger init for a new network, and copied from a member node when joining one`,
        );
      }
      throw error;
    }
  }

  /** A key held in memory (tests); the buffer is zeroed. */
  static fromBytes(secret: Buffer): LookupKey {
    if (secret.length !== 32) throw new LookupKeyError("a lookup key is 32 bytes");
    return new LookupKey(Buffer.from(secret));
  }

  /** HMAC-SHA256 (hex) of the 10-digit NHS number: the `lookup` of `patient.register` and the `nhs/<hmac>` key. */
  lookupOf(nhsNumber: string): Hex32 {
    if (!isValidNhsNumber(nhsNumber)) throw new RangeError("not a valid NHS number");
    return createHmac("sha256", this.key).update(nhsNumber, "utf8").digest("hex");
  }
}

/** `DIR/lookup.key`, opened. */
export function openLookupKey(dataDir: string): LookupKey {
  return LookupKey.open(join(dataDir, LOOKUP_KEY_FILE));
}

/** The pseudonym registered for an NHS number, if any (committed ledger state). */
export function pseudonymOf(ctx: Pick<FhirContext, "node">, lookup: LookupKey, nhsNumber: string): string | undefined {
  const found = ctx.node.store.state.get(K.nhs(lookup.lookupOf(nhsNumber)));
  return typeof found === "string" ? found : undefined;
}

export interface PatientRegistry {
  lookup: LookupKey;
  /** Where new patients' key files are written (`DATA_DIR/keys/patients`); created 0700 if missing. */
  keysDir: string;
}

export interface EnsuredPatient {
  patient: string;
  /** Registered by this call (false: the ledger already knew the NHS number). */
  created: boolean;
}

/** A `patient.register` the ledger refused (`code`: the contract's result code, e.g. `unauthorised`). */
export class RegistrationError extends Error {
  override name = "RegistrationError";
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/** A patient's key file. */
export function patientKeyPath(keysDir: string, patient: string): string {
  return join(keysDir, `${patient}.key`);
}

/** Reads a patient's key written by `ensurePatients` (demo, tests). */
export function readPatientKey(keysDir: string, patient: string): KeyPair {
  return readKeyFile(patientKeyPath(keysDir, patient));
}

/**
 * An NHS number to find or register; `patient` proposes the pseudonym to register it under (import chooses ids
 * before registering). The ledger's answer wins: the result may name another pseudonym when the NHS number was
 * registered meanwhile.
 */
export interface PatientRequest {
  nhsNumber: string;
  patient?: string;
}

const PSEUDONYM_RE = new RegExp(UUID_PATTERN);

/** Registrations in flight in this process, by lookup: concurrent imports of one patient register them once. */
const inFlight = new Map<string, Promise<EnsuredPatient>>();

/** One NHS number: its pseudonym, registering the patient if the ledger does not know them yet. */
export async function ensurePatient(
  ctx: Pick<FhirContext, "node" | "orgId" | "now">,
  patient: { nhsNumber: string },
  signer: KeyPair,
  registry: PatientRegistry,
): Promise<EnsuredPatient> {
  const [one] = await ensurePatients(ctx, [patient.nhsNumber], signer, registry);
  return one as EnsuredPatient;
}

/**
 * Many NHS numbers at once (results in request order): known ones from ledger state, the rest registered together in ONE
 * `node.submit` call (import speed), each with a new random pseudonym and key pair (key file written before the tx
 * is submitted, so a registered patient never lacks one). A registration that loses a race with another node's for
 * the same NHS number (`already-exists`) takes the winner's pseudonym. Throws RegistrationError for anything else
 * the ledger refuses (a signer that is not an admin or clinician of `ctx.orgId`: `unauthorised`).
 */
export async function ensurePatients(
  ctx: Pick<FhirContext, "node" | "orgId" | "now">,
  requests: readonly (string | PatientRequest)[],
  signer: KeyPair,
  registry: PatientRegistry,
): Promise<EnsuredPatient[]> {
  const state = ctx.node.store.state;
  const byLookup = new Map<string, Promise<EnsuredPatient> | EnsuredPatient>();
  const fresh: { lookup: string; patient: string; key: KeyPair; tx: SignedTx }[] = [];
  const wanted = requests.map((r) => (typeof r === "string" ? { nhsNumber: r } : r));
  const lookups = wanted.map((r) => registry.lookup.lookupOf(r.nhsNumber));
  const freshLookups = new Set<string>();
  for (const [i, lookup] of lookups.entries()) {
    if (byLookup.has(lookup) || freshLookups.has(lookup)) continue;
    const known = state.get(K.nhs(lookup));
    if (typeof known === "string") {
      byLookup.set(lookup, { patient: known, created: false });
      continue;
    }
    const pending = inFlight.get(lookup);
    if (pending) {
      byLookup.set(
        lookup,
        pending.then((p) => ({ patient: p.patient, created: false })),
      );
      continue;
    }
    const key = newKey();
    const proposed = wanted[i]?.patient;
    const patient = proposed !== undefined && PSEUDONYM_RE.test(proposed) ? proposed : randomUUID();
    const tx = signNew(signer, "patient.register", { patient, org: ctx.orgId, key: key.keyId, lookup }, ctx.now());
    fresh.push({ lookup, patient, key, tx });
    freshLookups.add(lookup);
  }
  if (fresh.length > 0) {
    mkdirSync(registry.keysDir, { recursive: true, mode: 0o700 });
    // Key files first (a registered patient never lacks one), written in parallel off the event loop.
    const submitted = writePatientKeys(registry.keysDir, fresh).then(() => submitRegistrations(ctx, fresh, registry));
    for (const [i, f] of fresh.entries()) {
      const one = submitted.then((results) => results[i] as EnsuredPatient);
      // Failures reach the caller through `byLookup`; the in-flight entry must not reject unobserved.
      one.catch(() => {});
      inFlight.set(f.lookup, one);
      byLookup.set(f.lookup, one);
    }
    submitted
      .finally(() => {
        for (const f of fresh) inFlight.delete(f.lookup);
      })
      .catch(() => {});
  }
  const resolved = new Map<string, EnsuredPatient>();
  for (const [lookup, value] of byLookup) resolved.set(lookup, await value);
  const seen = new Set<string>();
  return lookups.map((lookup) => {
    const r = resolved.get(lookup) as EnsuredPatient;
    // Only the first mention of a newly registered patient counts as the creation.
    const out = seen.has(lookup) ? { patient: r.patient, created: false } : r;
    seen.add(lookup);
    return out;
  });
}

/**
 * Writes patient key files as `writeKeyFile` (src/node/datadir.ts) does — same JSON, mode 0600 — but concurrently on
 * the thread pool; "wx" never replaces a file. A failure removes the files already written and rejects.
 */
async function writePatientKeys(keysDir: string, fresh: readonly { patient: string; key: KeyPair }[]): Promise<void> {
  const written = await Promise.allSettled(
    fresh.map((f) => {
      const body = {
        kind: "ed25519-seed",
        keyId: f.key.keyId,
        seed: toHex(seedOf(f.key)),
        label: `patient ${f.patient}`,
      };
      return writeFile(patientKeyPath(keysDir, f.patient), `${JSON.stringify(body, null, 2)}\n`, {
        mode: 0o600,
        flag: "wx",
      });
    }),
  );
  const failed = written.find((w) => w.status === "rejected");
  if (failed === undefined) return;
  await Promise.allSettled(
    fresh.map((f, i) => (written[i]?.status === "fulfilled" ? unlink(patientKeyPath(keysDir, f.patient)) : undefined)),
  );
  throw new RegistrationError(
    "key-file",
    `a patient key file could not be written: ${(failed.reason as NodeJS.ErrnoException).code ?? "error"}`,
  );
}

async function submitRegistrations(
  ctx: Pick<FhirContext, "node">,
  fresh: { lookup: string; patient: string; key: KeyPair; tx: SignedTx }[],
  registry: PatientRegistry,
): Promise<EnsuredPatient[]> {
  const items = fresh.map((f) => {
    const parsed = parseSignedTx(f.tx);
    if (!parsed.ok) throw new RegistrationError("malformed-tx", `patient.register is malformed: ${parsed.error}`);
    return { tx: parsed.tx, id: parsed.id };
  });
  const dropKeys = (which: typeof fresh) => {
    for (const f of which) {
      try {
        unlinkSync(patientKeyPath(registry.keysDir, f.patient));
      } catch {
        // Already gone.
      }
    }
  };
  let results: Awaited<ReturnType<typeof ctx.node.submit>>;
  try {
    results = await ctx.node.submit(items);
  } catch (error) {
    dropKeys(fresh);
    throw new RegistrationError(
      "submit-failed",
      `patient registration could not be submitted: ${(error as Error).message}`,
    );
  }
  const settled = await Promise.allSettled(results);
  const out: EnsuredPatient[] = [];
  let failure: RegistrationError | undefined;
  for (const [i, s] of settled.entries()) {
    const f = fresh[i] as (typeof fresh)[number];
    if (s.status === "rejected") {
      dropKeys([f]);
      failure ??= new RegistrationError(
        "submit-failed",
        `patient registration did not commit: ${(s.reason as Error).message}`,
      );
      continue;
    }
    if (s.value.valid) {
      out.push({ patient: f.patient, created: true });
      continue;
    }
    dropKeys([f]);
    const winner = ctx.node.store.state.get(K.nhs(f.lookup));
    if (s.value.code === "already-exists" && typeof winner === "string") {
      out.push({ patient: winner, created: false });
      continue;
    }
    failure ??= new RegistrationError(
      s.value.code,
      `the ledger refused patient.register (${s.value.code})${
        s.value.code === "unauthorised" ? ": it must be signed by an admin or clinician of this organisation" : ""
      }`,
    );
  }
  if (failure) throw failure;
  return out;
}

/** Whether `patient` is a pseudonym the ledger knows and has not erased. */
export function isRegistered(ctx: Pick<FhirContext, "node">, patient: string): boolean {
  return read.patient(ctx.node.store.state, patient)?.status === "active";
}
