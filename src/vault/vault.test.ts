// The vault's storage contract: reads of every kind, versions and history, conflicts, the two-phase write
// (stage/confirm/abort) and recovery after a crash, and integrity: tampered rows are refused, not served.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes } from "node:crypto";
import { once } from "node:events";
import { statSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";
import { afterEach, beforeEach, describe, it } from "node:test";
import { canonicalJson } from "../ledger/canonical.ts";
import { recordCommitment } from "./commitment.ts";
import { FileKeyProvider, VaultKeyError } from "./keys.ts";
import { MemoryLedger, observationItem, openTestVault, patientItem, pseudonym, T0, type TestVault } from "./testkit.ts";
import { Vault, VaultConflictError, VaultError, VaultIntegrityError } from "./vault.ts";

let t: TestVault;
beforeEach(() => {
  t = openTestVault();
});
afterEach(() => t.remove());

const conflict = (code: string) => (e: unknown) => e instanceof VaultConflictError && e.code === code;

describe("writes and reads", () => {
  it("round-trips a resource through read, vread, history and byPatient", () => {
    const p = pseudonym();
    const write = t.put([
      patientItem(p, "pat-1", "Smith"),
      observationItem(p, "obs-1", { date: "2024-05-06", labels: ["N", "PSY"] }),
    ]);
    const r = t.vault.read("Observation", "obs-1");
    assert.ok(r);
    assert.equal(r.version, 1);
    assert.equal(r.patient, p);
    assert.deepEqual(r.labels, ["N", "PSY"]);
    assert.equal(r.date, "2024-05-06");
    assert.equal(r.deleted, false);
    assert.equal(r.lastUpdated, new Date(T0).toISOString());
    assert.deepEqual(r.resource.meta, { versionId: "1", lastUpdated: new Date(T0).toISOString() });
    assert.deepEqual(r.resource.code, { coding: [{ system: "http://loinc.org", code: "29463-7" }] });
    assert.equal(r.commitment, write.anchors[1]?.commitment);
    assert.equal(r.json, canonicalJson(r.resource), "the committed bytes, ready to send");
    assert.deepEqual(t.vault.vread("Observation", "obs-1", 1), r);
    assert.deepEqual(t.vault.history("Observation", "obs-1"), [r]);
    assert.deepEqual(t.vault.byPatient(p), [
      { type: "Observation", id: "obs-1" },
      { type: "Patient", id: "pat-1" },
    ]);
    assert.equal(t.vault.read("Observation", "nope"), undefined);
    assert.equal(t.vault.vread("Observation", "obs-1", 2), undefined);
    assert.equal(t.vault.vread("Observation", "obs-1", 0), undefined);
    assert.deepEqual(t.vault.history("Observation", "nope"), []);
    assert.deepEqual(t.vault.byPatient(pseudonym()), []);
  });

  it("returns anchor entries that are the ledger's record.anchor fields, with the salted commitment", () => {
    const p = pseudonym();
    const write = t.vault.stage([observationItem(p, "obs-1", { date: "2024-05-06" })]);
    const [a] = write.anchors;
    assert.deepEqual(Object.keys(a ?? {}).sort(), [
      "commitment",
      "date",
      "labels",
      "patient",
      "resourceId",
      "resourceType",
      "version",
    ]);
    assert.equal(a?.version, "1");
    assert.match(a?.commitment ?? "", /^[0-9a-f]{64}$/);
    // The commitment is salted: the bare resource does not reproduce it.
    assert.notEqual(a?.commitment, recordCommitment("", write.items[0]?.resource));
    assert.equal(write.items[0]?.created, true);
  });

  it("keeps every version; history is newest first and vread serves old ones", () => {
    const p = pseudonym();
    t.put([observationItem(p, "obs-1", { value: 70 })]);
    t.clock.now = T0 + 1000;
    const second = t.put([observationItem(p, "obs-1", { value: 71, ifMatch: 1 })]);
    assert.equal(second.items[0]?.created, false);
    t.clock.now = T0 + 2000;
    t.put([observationItem(p, "obs-1", { value: 72 })]); // no If-Match: last writer wins
    const history = t.vault.history("Observation", "obs-1");
    assert.deepEqual(
      history.map((r) => [r.version, (r.resource.valueQuantity as { value: number }).value, r.lastUpdated]),
      [
        [3, 72, new Date(T0 + 2000).toISOString()],
        [2, 71, new Date(T0 + 1000).toISOString()],
        [1, 70, new Date(T0).toISOString()],
      ],
    );
    assert.equal(t.vault.read("Observation", "obs-1")?.version, 3);
    assert.deepEqual(t.vault.vread("Observation", "obs-1", 2)?.resource.valueQuantity, { value: 71, unit: "kg" });
  });

  it("stores a deletion as a tombstone version", () => {
    const p = pseudonym();
    t.put([observationItem(p, "obs-1")]);
    t.put([{ ...observationItem(p, "obs-1"), delete: true, index: [] }]);
    const r = t.vault.read("Observation", "obs-1");
    assert.equal(r?.deleted, true);
    assert.equal(r?.version, 2);
    assert.deepEqual(t.vault.byPatient(p), []);
    assert.deepEqual(
      t.vault.history("Observation", "obs-1").map((h) => [h.version, h.deleted]),
      [
        [2, true],
        [1, false],
      ],
    );
    // Re-created after deletion: a new version, current again.
    t.put([observationItem(p, "obs-1", { mustNotExist: true })]);
    assert.equal(t.vault.read("Observation", "obs-1")?.deleted, false);
    assert.equal(t.vault.read("Observation", "obs-1")?.version, 3);
  });

  it("keeps resources without a patient under the custodian key", () => {
    t.put([
      {
        resource: { resourceType: "Organization", id: "org-1", name: "Riverside Surgery" },
        patient: null,
        labels: [],
        index: [{ param: "name", kind: "string", value: "riverside surgery" }],
      },
    ]);
    const r = t.vault.read("Organization", "org-1");
    assert.equal(r?.patient, null);
    assert.equal(r?.resource.name, "Riverside Surgery");
  });

  it("does not change the caller's resource object", () => {
    const item = observationItem(pseudonym(), "obs-1");
    const before = structuredClone(item.resource);
    t.put([item]);
    assert.deepEqual(item.resource, before);
  });
});

describe("bad input and conflicts", () => {
  it("refuses invalid items with a VaultError naming the item, writing nothing", () => {
    const p = pseudonym();
    const cases: [string, Parameters<Vault["stage"]>[0], RegExp][] = [
      ["no items", [], /nothing to stage/],
      ["bad id", [observationItem(p, "has space")], /item 0: id/],
      ["id too long", [observationItem(p, "x".repeat(65))], /item 0: id/],
      [
        "bad type",
        [{ ...observationItem(p, "a"), resource: { resourceType: "observation", id: "a" } }],
        /resourceType/,
      ],
      ["bad patient", [observationItem("Patient/123", "a")], /patient must be a ledger pseudonym/],
      ["bad label", [observationItem(p, "a", { labels: ["no spaces"] })], /label/],
      ["repeated label", [observationItem(p, "a", { labels: ["N", "N"] })], /labels repeat/],
      ["bad date", [observationItem(p, "a", { date: "2024-13-01" })], /date must be/],
      ["bad ifMatch", [observationItem(p, "a", { ifMatch: 0 })], /ifMatch/],
      ["same resource twice", [observationItem(p, "a"), observationItem(p, "a")], /appears twice/],
      [
        "NUL in a value",
        [observationItem(p, "a", { index: [{ param: "code", kind: "token", system: "s\0x", code: "c" }] })],
        /NUL/,
      ],
      [
        "bad param name",
        [
          observationItem(p, "a", {
            index: [{ param: "code'; DROP TABLE versions; --", kind: "token", system: "", code: "c" }],
          }),
        ],
        /param/,
      ],
      [
        "non-finite number",
        [observationItem(p, "a", { index: [{ param: "value", kind: "number", value: Number.NaN }] })],
        /finite/,
      ],
      [
        "reversed date range",
        [observationItem(p, "a", { index: [{ param: "date", kind: "date", low: 2, high: 1 }] })],
        /low ≤ high/,
      ],
    ];
    for (const [name, items, message] of cases) {
      assert.throws(
        () => t.vault.stage(items),
        (e: unknown) => e instanceof VaultError && message.test(e.message),
        name,
      );
    }
    assert.deepEqual(t.vault.byPatient(p), []);
    assert.equal(t.vault.read("Observation", "a"), undefined);
  });

  it("raises typed conflicts and writes nothing of a write that has one", () => {
    const p = pseudonym();
    t.put([observationItem(p, "obs-1"), patientItem(p, "pat-1", "Smith")]);
    assert.throws(() => t.vault.stage([observationItem(p, "obs-1", { ifMatch: 2 })]), conflict("version-conflict"));
    assert.throws(() => t.vault.stage([observationItem(p, "new-1", { ifMatch: 1 })]), conflict("not-found"));
    assert.throws(
      () => t.vault.stage([observationItem(p, "obs-1", { mustNotExist: true })]),
      conflict("already-exists"),
    );
    assert.throws(() => t.vault.stage([{ ...observationItem(p, "gone"), delete: true }]), conflict("not-found"));
    assert.throws(() => t.vault.stage([observationItem(pseudonym(), "obs-1")]), conflict("patient-mismatch"));
    // All or nothing: the valid first item of a conflicting write is not staged either.
    assert.throws(
      () => t.vault.stage([observationItem(p, "fresh-1"), observationItem(p, "obs-1", { ifMatch: 5 })]),
      (e: unknown) => e instanceof VaultConflictError && e.resourceId === "obs-1",
    );
    const again = t.vault.stage([observationItem(p, "fresh-1", { mustNotExist: true })]);
    assert.equal(again.items[0]?.version, 1);
  });

  it("an item whose id is claimed new (newId) is staged at version 1; a false claim fails the write whole", () => {
    const p = pseudonym();
    const first = t.put([{ ...observationItem(p, "minted-1"), newId: true }]);
    assert.equal(first.items[0]?.version, 1);
    assert.equal(t.vault.read("Observation", "minted-1")?.version, 1);
    assert.throws(
      () =>
        t.vault.stage([
          { ...observationItem(p, "minted-2"), newId: true },
          { ...observationItem(p, "minted-1"), newId: true },
        ]),
      (e: unknown) => e instanceof VaultError && /minted-1/.test(e.message),
    );
    assert.equal(t.vault.read("Observation", "minted-2"), undefined, "nothing of the write was staged");
    assert.equal(t.vault.stage([observationItem(p, "minted-2")]).items[0]?.version, 1);
    assert.equal(t.vault.read("Observation", "minted-1")?.version, 1, "the stored one is untouched");
  });

  it("refuses a second write of a resource while one is being anchored", () => {
    const p = pseudonym();
    t.put([observationItem(p, "obs-1")]);
    const pending = t.vault.stage([observationItem(p, "obs-1", { ifMatch: 1 })]);
    assert.throws(() => t.vault.stage([observationItem(p, "obs-1")]), conflict("pending"));
    t.vault.abort(pending);
    assert.equal(t.vault.stage([observationItem(p, "obs-1", { ifMatch: 1 })]).items[0]?.version, 2);
  });
});

describe("two-phase writes", () => {
  it("serves nothing of a staged write until it is confirmed", () => {
    const p = pseudonym();
    t.put([observationItem(p, "obs-1", { value: 70 })]);
    const write = t.vault.stage([observationItem(p, "obs-1", { value: 99 }), observationItem(p, "obs-2")]);
    t.ledger.anchor(write);
    assert.equal(t.vault.read("Observation", "obs-2"), undefined);
    assert.equal(t.vault.vread("Observation", "obs-1", 2), undefined);
    assert.deepEqual(
      t.vault.history("Observation", "obs-1").map((r) => r.version),
      [1],
    );
    assert.equal(t.vault.read("Observation", "obs-1")?.version, 1);
    assert.deepEqual(t.vault.byPatient(p), [{ type: "Observation", id: "obs-1" }]);
    assert.deepEqual(t.vault.search({ resourceType: "Observation", clauses: [] }), ["obs-1"]);
    t.vault.confirm(write);
    assert.equal(t.vault.read("Observation", "obs-1")?.version, 2);
    assert.deepEqual(
      t.vault.search({ resourceType: "Observation", clauses: [], sort: [{ param: "_id", descending: false }] }),
      ["obs-1", "obs-2"],
    );
    assert.throws(() => t.vault.confirm(write), /no longer pending/);
    assert.throws(() => t.vault.abort(write), /no longer pending/);
  });

  it("abort removes the pending versions and their index rows", () => {
    const p = pseudonym();
    t.put([observationItem(p, "obs-1", { index: [{ param: "code", kind: "token", system: "s", code: "old" }] })]);
    const write = t.vault.stage([
      observationItem(p, "obs-1", { index: [{ param: "code", kind: "token", system: "s", code: "new" }] }),
      observationItem(p, "obs-2", { index: [{ param: "code", kind: "token", system: "s", code: "new" }] }),
    ]);
    t.vault.abort(write);
    const code = (c: string) =>
      t.vault.search({
        resourceType: "Observation",
        clauses: [{ param: "code", kind: "token", anyOf: [{ code: c }] }],
      });
    assert.deepEqual(code("new"), []);
    assert.deepEqual(code("old"), ["obs-1"]);
    assert.equal(t.vault.read("Observation", "obs-2"), undefined);
    // The aborted ids are free again; obs-1 continues at version 2.
    const redo = t.put([observationItem(p, "obs-2"), observationItem(p, "obs-1", { ifMatch: 1 })]);
    assert.deepEqual(
      redo.items.map((i) => i.version),
      [1, 2],
    );
  });

  it("settles pending versions at open: anchored ones are confirmed, the others deleted", () => {
    const p = pseudonym();
    t.put([observationItem(p, "obs-1", { value: 1 })]);
    const anchored = t.vault.stage([observationItem(p, "obs-1", { value: 2 }), observationItem(p, "obs-2")]);
    const lost = t.vault.stage([observationItem(p, "obs-3"), patientItem(p, "pat-1", "Jones")]);
    t.ledger.anchor(anchored);
    const seen: string[] = [];
    const vault = t.reopen({
      isAnchored: (type, id, version, commitment) => {
        seen.push(`${type}/${id}/${version}`);
        return t.ledger.anchorOf(type, id, version) === commitment;
      },
    });
    assert.deepEqual(seen.sort(), [
      "Observation/obs-1/2",
      "Observation/obs-2/1",
      "Observation/obs-3/1",
      "Patient/pat-1/1",
    ]);
    assert.deepEqual(vault.recovered, { confirmed: 2, removed: 2 });
    assert.equal(vault.read("Observation", "obs-1")?.version, 2);
    assert.equal(vault.read("Observation", "obs-2")?.version, 1);
    assert.equal(vault.read("Observation", "obs-3"), undefined);
    assert.equal(vault.read("Patient", "pat-1"), undefined);
    assert.throws(() => vault.confirm(lost), /no longer pending/);
    assert.deepEqual(t.reopen().recovered, { confirmed: 0, removed: 0 });
  });

  it("recovers after the writing process is killed between stage and confirm", async () => {
    const child = spawn(process.execPath, [new URL("./testkit-crash-child.ts", import.meta.url).pathname], {
      env: { ...process.env, VAULT_PATH: t.path, VAULT_MASTER: t.master.toString("hex") },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.setEncoding("utf8");
    const staged = await new Promise<{
      anchors: { resourceType: string; resourceId: string; version: string; commitment: string }[];
    }>((resolve, reject) => {
      child.stdout.on("data", (d: string) => {
        out += d;
        const line = out.split("\n").find((l) => l.startsWith("{"));
        if (line && out.includes("\n")) resolve(JSON.parse(line));
      });
      child.on("exit", (code) => reject(new Error(`child exited early (${code}): ${out}`)));
    });
    child.kill("SIGKILL");
    await once(child, "exit");
    // The first half of the write reached the ledger before the crash, the rest did not.
    const half = staged.anchors.slice(0, staged.anchors.length / 2);
    for (const a of half) t.ledger.anchors.set(`${a.resourceType}/${a.resourceId}/${a.version}`, a.commitment);
    const vault = t.reopen();
    assert.deepEqual(vault.recovered, { confirmed: half.length, removed: staged.anchors.length - half.length });
    for (const a of staged.anchors) {
      const r = vault.read(a.resourceType, a.resourceId);
      if (half.includes(a)) assert.equal(r?.commitment, a.commitment);
      else assert.equal(r, undefined);
    }
  });
});

/** Direct access to the database file, as someone with the file (and, for some tests, the keys) would have. */
function raw(path: string): DatabaseSync {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA busy_timeout = 5000");
  return db;
}

function boxOf(db: DatabaseSync, type: string, id: string, version: number): { vkey: number; box: Buffer } {
  const row = db
    .prepare(
      "SELECT v.vkey, v.box FROM versions v JOIN resources r ON v.vkey = r.rid * 1048576 + ? WHERE r.type = ? AND r.id = ?",
    )
    .get(version, type, id) as { vkey: number; box: Uint8Array };
  return { vkey: row.vkey, box: Buffer.from(row.box) };
}

/** Re-encrypts a version's plaintext after `edit`, with the real data key: a forgery by someone holding the keys. */
function forge(
  t: TestVault,
  db: DatabaseSync,
  where: { type: string; id: string; version: number; patient: string },
  edit: (payload: { resource: Record<string, unknown>; salt: string }) => void,
  serialise: (payload: unknown) => string = (payload) => JSON.stringify(payload),
): void {
  const wrapped = db.prepare("SELECT wrapped FROM patient_keys WHERE patient = ?").get(where.patient) as {
    wrapped: Uint8Array;
  };
  const key = createSecretKey(
    t.keys.unwrap(Buffer.from(wrapped.wrapped), `careledger/vault/data-key/v1\n${where.patient}`),
  );
  const aad = Buffer.from(`careledger/vault/record/v1\n${where.type}/${where.id}/${where.version}/${where.patient}`);
  const { vkey, box } = boxOf(db, where.type, where.id, where.version);
  const decipher = createDecipheriv("aes-256-gcm", key, box.subarray(1, 13));
  decipher.setAAD(aad);
  decipher.setAuthTag(box.subarray(box.length - 16));
  const payload = JSON.parse(
    Buffer.concat([decipher.update(box.subarray(13, box.length - 16)), decipher.final()]).toString(),
  );
  edit(payload);
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(aad);
  const ct = Buffer.concat([cipher.update(serialise(payload)), cipher.final()]);
  db.prepare("UPDATE versions SET box = ? WHERE vkey = ?").run(
    Buffer.concat([Buffer.of(1), iv, ct, cipher.getAuthTag()]),
    vkey,
  );
}

describe("integrity", () => {
  const integrity = (message: RegExp) => (e: unknown) => e instanceof VaultIntegrityError && message.test(e.message);
  let p: string;
  let q: string;
  beforeEach(() => {
    p = pseudonym();
    q = pseudonym();
    t.put([
      observationItem(p, "obs-1", { value: 1 }),
      observationItem(p, "obs-2", { value: 2 }),
      observationItem(q, "obs-q"),
    ]);
    t.put([observationItem(p, "obs-1", { value: 3 })]);
  });

  it("checks a plaintext laid out unlike the vault writes it by its content, and serves it when that matches", () => {
    const db = raw(t.path);
    const where = { type: "Observation", id: "obs-1", version: 2, patient: p };
    // Same content, other key order and whitespace: the fast path (hashing the resource's slice) does not apply.
    forge(
      t,
      db,
      where,
      () => {},
      (payload) => {
        const { salt, resource, ...rest } = payload as Record<string, unknown>;
        return JSON.stringify({ salt, ...rest, resource }, null, 2);
      },
    );
    const read = t.vault.read("Observation", "obs-1");
    assert.equal(read?.version, 2);
    assert.equal(read?.json, canonicalJson(read?.resource));
    // Same layout trick with changed content is still refused.
    forge(
      t,
      db,
      where,
      (payload) => {
        payload.resource.status = "cancelled";
      },
      (payload) => JSON.stringify(payload, null, 1),
    );
    db.close();
    assert.throws(() => t.vault.read("Observation", "obs-1"), integrity(/does not match its commitment/));
  });

  it("refuses a version whose ciphertext was altered", () => {
    const db = raw(t.path);
    const { vkey, box } = boxOf(db, "Observation", "obs-1", 2);
    box[40] = (box[40] as number) ^ 1;
    db.prepare("UPDATE versions SET box = ? WHERE vkey = ?").run(box, vkey);
    db.close();
    assert.throws(() => t.vault.read("Observation", "obs-1"), integrity(/does not authenticate/));
    assert.throws(() => t.vault.history("Observation", "obs-1"), VaultIntegrityError);
    assert.equal(t.vault.vread("Observation", "obs-1", 1)?.version, 1, "the untouched version is still served");
  });

  it("refuses rows swapped between resources, versions or patients", () => {
    const db = raw(t.path);
    const a = boxOf(db, "Observation", "obs-1", 2);
    const b = boxOf(db, "Observation", "obs-2", 1);
    const older = boxOf(db, "Observation", "obs-1", 1);
    const set = db.prepare("UPDATE versions SET box = ? WHERE vkey = ?");
    set.run(b.box, a.vkey); // obs-2's ciphertext served as obs-1 v2
    set.run(older.box, b.vkey); // obs-1 v1 served as obs-2
    // obs-q moved to patient p: the data key and the aad no longer match.
    db.prepare("UPDATE resources SET patient = ? WHERE id = 'obs-q'").run(p);
    db.close();
    assert.throws(() => t.vault.read("Observation", "obs-1"), integrity(/does not authenticate/));
    assert.throws(() => t.vault.read("Observation", "obs-2"), integrity(/does not authenticate/));
    assert.throws(() => t.vault.read("Observation", "obs-q"), integrity(/does not authenticate/));
  });

  it("refuses a data key swapped between patients", () => {
    const db = raw(t.path);
    const get = db.prepare("SELECT wrapped FROM patient_keys WHERE patient = ?");
    const kp = (get.get(p) as { wrapped: Uint8Array }).wrapped;
    db.prepare("UPDATE patient_keys SET wrapped = ? WHERE patient = ?").run(kp, q);
    db.close();
    const fresh = t.reopen(); // no cached keys
    assert.throws(() => fresh.read("Observation", "obs-q"), integrity(/data key does not unwrap/));
  });

  it("refuses a record re-encrypted with a changed salt or content, even by someone holding the keys", () => {
    const db = raw(t.path);
    forge(t, db, { type: "Observation", id: "obs-1", version: 2, patient: p }, (payload) => {
      payload.salt = randomBytes(32).toString("hex");
    });
    forge(t, db, { type: "Observation", id: "obs-2", version: 1, patient: p }, (payload) => {
      (payload.resource.valueQuantity as { value: number }).value = 200;
    });
    db.close();
    assert.throws(() => t.vault.read("Observation", "obs-1"), integrity(/does not match its commitment/));
    assert.throws(() => t.vault.read("Observation", "obs-2"), integrity(/does not match its commitment/));
  });

  it("refuses a version the ledger has no anchor for, or another commitment", () => {
    t.ledger.anchors.delete("Observation/obs-2/1");
    assert.throws(() => t.vault.read("Observation", "obs-2"), integrity(/not anchored/));
    t.ledger.anchors.set("Observation/obs-q/1", randomBytes(32).toString("hex"));
    assert.throws(() => t.vault.read("Observation", "obs-q"), integrity(/does not match its commitment/));
  });

  it("refuses a current version that is missing", () => {
    const db = raw(t.path);
    db.prepare("DELETE FROM versions WHERE vkey = ?").run(boxOf(db, "Observation", "obs-1", 2).vkey);
    db.close();
    assert.throws(() => t.vault.read("Observation", "obs-1"), integrity(/missing/));
  });
});

describe("keys and files", () => {
  it("creates the database private to its owner", () => {
    for (const suffix of ["", "-wal", "-shm"]) {
      assert.equal(statSync(t.path + suffix).mode & 0o077, 0, `vault.db${suffix} must not be readable by others`);
    }
  });

  it("folds its WAL into the database file in the background while open (no checkpoint inside a commit)", async () => {
    const before = statSync(t.path).size;
    const p = pseudonym();
    const items = Array.from({ length: 400 }, (_, i) => observationItem(p, `wal-${i}`, { value: i }));
    t.put(items);
    let grown = false;
    for (let waited = 0; waited < 5000 && !grown; waited += 50) {
      await new Promise((r) => setTimeout(r, 50));
      grown = statSync(t.path).size > before;
    }
    assert.ok(grown, "vault.db grew while the vault stayed open: its WAL was checkpointed");
    assert.equal(t.vault.read("Observation", "wal-399")?.version, 1);
  });

  it("refuses to open with another vault key", () => {
    t.vault.close();
    assert.throws(
      () =>
        Vault.open(t.path, {
          keys: FileKeyProvider.fromMasterKey(randomBytes(32)),
          anchorOf: new MemoryLedger().anchorOf,
        }),
      (e: unknown) => e instanceof VaultKeyError && /does not match this vault/.test(e.message),
    );
    t.vault = Vault.open(t.path, { keys: t.keys, anchorOf: t.ledger.anchorOf });
  });

  it("refuses use after close", () => {
    t.vault.close();
    assert.throws(() => t.vault.read("Observation", "x"), /closed/);
    t.vault = Vault.open(t.path, { keys: t.keys, anchorOf: t.ledger.anchorOf });
  });
});
