// Shared pieces for the vault's tests: a stand-in ledger (anchors in a Map), a vault in a temp dir, and record
// builders. Tests of the vault against a real node are in anchorer.test.ts.

import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileKeyProvider } from "./keys.ts";
import type { IndexEntry } from "./types.ts";
import { type PutItem, type StagedWrite, Vault, type VaultOptions } from "./vault.ts";

/** Anchors as the ledger would hold them: `type/id/version` → commitment. Never forgets (like the ledger). */
export class MemoryLedger {
  readonly anchors = new Map<string, string>();
  anchorOf = (type: string, id: string, version: string): string | undefined =>
    this.anchors.get(`${type}/${id}/${version}`);
  anchor(write: StagedWrite): void {
    for (const a of write.anchors) {
      const key = `${a.resourceType}/${a.resourceId}/${a.version}`;
      if (this.anchors.has(key)) throw new Error(`already anchored: ${key}`);
      this.anchors.set(key, a.commitment);
    }
  }
}

export interface TestVault {
  vault: Vault;
  ledger: MemoryLedger;
  keys: FileKeyProvider;
  master: Buffer;
  dir: string;
  path: string;
  /** The clock the vault reads; tests move it. */
  clock: { now: number };
  /** stage → anchor → confirm. */
  put(items: PutItem[]): StagedWrite;
  reopen(options?: Partial<VaultOptions>): Vault;
  remove(): void;
}

export const T0 = Date.UTC(2025, 0, 6, 9, 0, 0);

export function openTestVault(prefix = "vault"): TestVault {
  const dir = mkdtempSync(join(tmpdir(), `careledger-${prefix}-`));
  const path = join(dir, "vault.db");
  const master = randomBytes(32);
  const keys = FileKeyProvider.fromMasterKey(master);
  const ledger = new MemoryLedger();
  const clock = { now: T0 };
  const open = (options: Partial<VaultOptions> = {}) =>
    Vault.open(path, { keys, anchorOf: ledger.anchorOf, now: () => clock.now, ...options });
  const t: TestVault = {
    vault: open(),
    ledger,
    keys,
    master,
    dir,
    path,
    clock,
    put(items) {
      const write = t.vault.stage(items);
      ledger.anchor(write);
      t.vault.confirm(write);
      return write;
    },
    reopen(options) {
      t.vault.close();
      t.vault = open(options);
      return t.vault;
    },
    remove() {
      t.vault.close();
      rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
    },
  };
  return t;
}

export const pseudonym = (): string => randomUUID();

export function patientItem(patient: string, id: string, family: string, extra: Partial<PutItem> = {}): PutItem {
  return {
    resource: { resourceType: "Patient", id, name: [{ family, given: ["Alex"] }], gender: "unknown" },
    patient,
    labels: [],
    index: [
      { param: "family", kind: "string", value: family.toLowerCase() },
      { param: "given", kind: "string", value: "alex" },
      { param: "identifier", kind: "token", system: "https://fhir.nhs.uk/Id/nhs-number", code: `999${id.length}` },
    ],
    ...extra,
  };
}

export function observationItem(
  patient: string,
  id: string,
  options: { index?: IndexEntry[]; labels?: string[]; date?: string; value?: number } & Partial<PutItem> = {},
): PutItem {
  const { index, labels, date, value, ...rest } = options;
  const item: PutItem = {
    resource: {
      resourceType: "Observation",
      id,
      status: "final",
      code: { coding: [{ system: "http://loinc.org", code: "29463-7" }] },
      subject: { reference: `Patient/${patient}` },
      valueQuantity: { value: value ?? 70, unit: "kg" },
    },
    patient,
    labels: labels ?? ["N"],
    index: index ?? [
      { param: "code", kind: "token", system: "http://loinc.org", code: "29463-7" },
      { param: "subject", kind: "reference", value: `Patient/${patient}` },
    ],
    ...rest,
  };
  if (date !== undefined) item.date = date;
  return item;
}
