// GDPR Art. 17 erasure: crypto-shredding of the patient's data key, deletion of ciphertext and index rows of what is
// not retained, re-encryption of what is, and no trace of erased rows left in the database files.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";
import { afterEach, beforeEach, describe, it } from "node:test";
import { observationItem, openTestVault, patientItem, pseudonym, type TestVault } from "./testkit.ts";
import type { SearchQuery } from "./types.ts";
import { VaultError } from "./vault.ts";

let t: TestVault;
let a: string;
let b: string;

beforeEach(() => {
  t = openTestVault("erasure");
  a = pseudonym();
  b = pseudonym();
  t.put([
    patientItem(a, "pat-a", "Erasable"),
    observationItem(a, "obs-a1"),
    observationItem(a, "obs-a2"),
    {
      ...observationItem(a, "cond-a"),
      resource: { resourceType: "Condition", id: "cond-a", subject: { reference: `Patient/${a}` } },
    },
    patientItem(b, "pat-b", "Bystander"),
    observationItem(b, "obs-b1"),
    {
      resource: { resourceType: "Organization", id: "org-1", name: "Riverside Surgery" },
      patient: null,
      labels: [],
      index: [],
    },
  ]);
  t.put([observationItem(a, "obs-a1", { value: 99 })]); // a second version
});
afterEach(() => t.remove());

/** Bytes of the database, its WAL and shared-memory file. */
function files(): Buffer {
  const parts = ["", "-wal", "-shm"].map((s) => {
    try {
      return readFileSync(t.path + s);
    } catch {
      return Buffer.alloc(0);
    }
  });
  return Buffer.concat(parts);
}

function snapshot() {
  const db = new DatabaseSync(t.path, { readOnly: true });
  const boxes = new Map<string, Buffer>();
  for (const row of db
    .prepare(
      "SELECT r.type, r.id, v.vkey & 1048575 AS version, v.box FROM versions v JOIN resources r ON r.rid = v.vkey >> 20",
    )
    .all() as { type: string; id: string; version: number; box: Uint8Array }[]) {
    boxes.set(`${row.type}/${row.id}/${row.version}`, Buffer.from(row.box));
  }
  const keys = new Map<string, Buffer>();
  for (const row of db.prepare("SELECT patient, wrapped FROM patient_keys").all() as {
    patient: string;
    wrapped: Uint8Array;
  }[]) {
    keys.set(row.patient, Buffer.from(row.wrapped));
  }
  const hashes = (db.prepare("SELECT count(*) AS n FROM idx_hash").get() as { n: number }).n;
  db.close();
  return { boxes, keys, hashes };
}

/** A 32-byte run from the middle of a ciphertext or wrapped key: present in the files only if the row survived. */
const fingerprint = (bytes: Buffer) => bytes.subarray(13, 45);

const bySubject = (p: string, resourceType = "Observation"): SearchQuery => ({
  resourceType,
  clauses: [{ param: "subject", kind: "reference", anyOf: [`Patient/${p}`] }],
});

describe("erasePatient", () => {
  it("shreds the data key and deletes what is not retained; retained records are re-encrypted and still served", () => {
    const before = snapshot();
    const result = t.vault.erasePatient(a, { keep: (type) => type === "Condition" });
    assert.deepEqual(result.erased.map((r) => `${r.type}/${r.id}`).sort(), [
      "Observation/obs-a1",
      "Observation/obs-a2",
      "Patient/pat-a",
    ]);
    assert.deepEqual(result.kept, [{ type: "Condition", id: "cond-a" }]);

    for (const [type, id] of [
      ["Observation", "obs-a1"],
      ["Observation", "obs-a2"],
      ["Patient", "pat-a"],
    ] as const) {
      assert.equal(t.vault.read(type, id), undefined);
      assert.deepEqual(t.vault.history(type, id), []);
      assert.equal(t.vault.vread(type, id, 1), undefined);
    }
    assert.deepEqual(t.vault.search(bySubject(a)), []);
    assert.deepEqual(
      t.vault.search({ resourceType: "Patient", clauses: [{ param: "family", kind: "string", anyOf: ["eras"] }] }),
      [],
    );
    assert.deepEqual(t.vault.byPatient(a), [{ type: "Condition", id: "cond-a" }]);
    assert.equal(t.vault.read("Condition", "cond-a")?.patient, a);
    assert.equal(t.reopen().read("Condition", "cond-a")?.version, 1, "readable with a fresh key cache");

    const after = snapshot();
    assert.ok(after.keys.has(a));
    assert.notDeepEqual(after.keys.get(a), before.keys.get(a), "a fresh data key");
    assert.notDeepEqual(after.boxes.get("Condition/cond-a/1"), before.boxes.get("Condition/cond-a/1"), "re-encrypted");
    const raw = files();
    assert.equal(
      raw.includes(fingerprint(before.keys.get(a) as Buffer)),
      false,
      "the old wrapped key is gone from the files",
    );
    for (const [key, box] of before.boxes) {
      if (key.includes("-a") && !key.startsWith("Condition/")) {
        assert.equal(raw.includes(fingerprint(box)), false, `${key}'s ciphertext is gone from the files`);
      }
    }
    // The bystanders are untouched.
    assert.equal(t.vault.read("Observation", "obs-b1")?.patient, b);
    assert.equal(t.vault.read("Organization", "org-1")?.patient, null);
    assert.deepEqual(t.vault.search(bySubject(b)), ["obs-b1"]);
  });

  it("deletes the wrapped key itself when nothing is retained", () => {
    const before = snapshot();
    const result = t.vault.erasePatient(a);
    assert.equal(result.erased.length, 4);
    assert.deepEqual(result.kept, []);
    assert.deepEqual(t.vault.byPatient(a), []);
    const after = snapshot();
    assert.equal(after.keys.has(a), false);
    assert.ok(after.hashes < before.hashes);
    assert.equal(files().includes(fingerprint(before.keys.get(a) as Buffer)), false);
    assert.deepEqual(t.vault.erasePatient(a), { erased: [], kept: [] }, "a second erasure finds nothing");
  });

  it("drops a pending write of the patient; confirming it later fails", () => {
    const pending = t.vault.stage([observationItem(a, "obs-a3"), observationItem(a, "obs-a2", { ifMatch: 1 })]);
    t.vault.erasePatient(a);
    assert.throws(() => t.vault.confirm(pending), /no longer pending/);
    assert.equal(t.vault.read("Observation", "obs-a3"), undefined);
  });

  it("refuses a patient that is not a pseudonym", () => {
    assert.throws(() => t.vault.erasePatient("Patient/pat-a"), VaultError);
  });
});

describe("eraseResources", () => {
  it("deletes single records and re-keys the patient's remaining ones", () => {
    const before = snapshot();
    const erased = t.vault.eraseResources([
      { type: "Observation", id: "obs-a1" },
      { type: "Observation", id: "missing" },
      { type: "Organization", id: "org-1" },
    ]);
    assert.deepEqual(erased, [
      { type: "Observation", id: "obs-a1" },
      { type: "Organization", id: "org-1" },
    ]);
    assert.equal(t.vault.read("Observation", "obs-a1"), undefined);
    assert.equal(t.vault.read("Organization", "org-1"), undefined);
    assert.deepEqual(t.vault.search(bySubject(a)), ["obs-a2"]);
    assert.equal(t.reopen().read("Observation", "obs-a2")?.version, 1);
    assert.equal(t.vault.read("Patient", "pat-a")?.resource.id, "pat-a");
    const after = snapshot();
    assert.notDeepEqual(after.keys.get(a), before.keys.get(a));
    assert.deepEqual(after.keys.get(b), before.keys.get(b), "other patients keep their keys");
    const raw = files();
    for (const v of [1, 2])
      assert.equal(raw.includes(fingerprint(before.boxes.get(`Observation/obs-a1/${v}`) as Buffer)), false);
  });

  it("lets an erased id be written again, after the versions the ledger still holds", () => {
    t.vault.eraseResources([{ type: "Observation", id: "obs-a1" }]);
    const again = t.put([observationItem(a, "obs-a1", { mustNotExist: true })]);
    assert.equal(again.items[0]?.version, 3);
    assert.deepEqual(
      t.vault.history("Observation", "obs-a1").map((r) => r.version),
      [3],
    );
  });
});
