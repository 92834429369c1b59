// AnchorBatcher against a real in-process node (real data dir, orderer, signature workers), and the vault's
// two-phase write end to end: stage → anchor on the ledger → confirm → read checked against the ledger.

import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { tempDir } from "../../test/helpers.ts";
import { newNetwork, openTestNode, registerTx, type TestNet } from "../../test/support-net.ts";
import { parseSignedTx } from "../ledger/tx.ts";
import type { RunningNode } from "../node/runtime.ts";
import { AnchorBatcher, AnchorError, ledgerAnchors, type TxSubmitter } from "./anchorer.ts";
import { FileKeyProvider } from "./keys.ts";
import { type AnchorEntry, Vault, VaultIntegrityError } from "./vault.ts";

const work = tempDir("vault-anchorer");
let net: TestNet;
let running: RunningNode;
const patients: string[] = [];

/** Counts the txs handed to the node, and how many of them went in each `submit` call. */
function countingNode(): TxSubmitter & { txs: number } {
  const counter = {
    txs: 0,
    submit: (items: Parameters<TxSubmitter["submit"]>[0]) => {
      counter.txs += items.length;
      return running.node.submit(items);
    },
  };
  return counter;
}

let serial = 0;
function entry(patient: string | null, overrides: Partial<AnchorEntry> = {}): AnchorEntry {
  serial++;
  return {
    resourceType: "Observation",
    resourceId: `obs-${serial}-${randomUUID().slice(0, 8)}`,
    version: "1",
    commitment: randomBytes(32).toString("hex"),
    labels: ["N"],
    date: "2024-05-06",
    patient,
    ...overrides,
  };
}

before(async () => {
  net = newNetwork(join(work.path, "node"), "Anchor Test Practice");
  running = await openTestNode(net.dir);
  const regs = [registerTx(net), registerTx(net), registerTx(net)];
  const items = regs.map((r) => {
    const parsed = parseSignedTx(r.tx);
    assert.ok(parsed.ok);
    return { tx: parsed.tx, id: parsed.id };
  });
  const results = await Promise.all(await running.node.submit(items));
  assert.ok(results.every((r) => r.valid));
  patients.push(...regs.map((r) => r.patient));
});
after(async () => {
  await running?.close();
  work.remove();
});

const lookup = () => ledgerAnchors(running.node.store.state, net.orgId);

describe("AnchorBatcher", () => {
  it("coalesces concurrent callers into one tx and resolves once it is committed", async () => {
    const node = countingNode();
    const batcher = new AnchorBatcher({ node, key: net.nodeKey, custodian: net.orgId });
    const batches = patients.map((p) => [entry(p), entry(p), entry(p, { date: undefined, labels: [] })]);
    await Promise.all(batches.map((b) => batcher.anchor(b)));
    assert.equal(node.txs, 1);
    const { anchorOf } = lookup();
    for (const e of batches.flat()) assert.equal(anchorOf(e.resourceType, e.resourceId, e.version), e.commitment);
  });

  it("splits a large write over several txs within the tx size limit", async () => {
    const node = countingNode();
    const batcher = new AnchorBatcher({ node, key: net.nodeKey, custodian: net.orgId });
    const many = Array.from({ length: 700 }, (_, i) => entry(patients[i % patients.length] as string));
    await batcher.anchor(many);
    assert.ok(node.txs >= 3, `700 entries of ~250 bytes need ≥ 3 txs of 64 KiB, got ${node.txs}`);
    const { anchorOf } = lookup();
    assert.ok(many.every((e) => anchorOf(e.resourceType, e.resourceId, e.version) === e.commitment));
  });

  it("honours maxEntriesPerTx", async () => {
    const node = countingNode();
    const batcher = new AnchorBatcher({ node, key: net.nodeKey, custodian: net.orgId, maxEntriesPerTx: 10 });
    await Promise.all([batcher.anchor(Array.from({ length: 25 }, () => entry(patients[0] as string)))]);
    assert.equal(node.txs, 3);
  });

  it("isolates a caller whose entry the ledger rejects: the others still commit", async () => {
    const node = countingNode();
    const batcher = new AnchorBatcher({ node, key: net.nodeKey, custodian: net.orgId });
    const good = [entry(patients[0] as string), entry(patients[1] as string)];
    const stranger = [entry(randomUUID())]; // a well-formed pseudonym nobody registered
    const [ok, bad] = await Promise.allSettled([batcher.anchor(good), batcher.anchor(stranger)]);
    assert.equal(ok.status, "fulfilled");
    assert.equal(bad.status, "rejected");
    assert.ok(bad.reason instanceof AnchorError);
    assert.equal(bad.reason.code, "not-found");
    assert.equal(node.txs, 3, "one shared tx, then one tx per caller");
    const { anchorOf } = lookup();
    for (const e of good) assert.equal(anchorOf(e.resourceType, e.resourceId, e.version), e.commitment);
    assert.equal(anchorOf("Observation", stranger[0]?.resourceId as string, "1"), undefined);
  });

  it("rejects a second anchor of the same version", async () => {
    const batcher = new AnchorBatcher({ node: running.node, key: net.nodeKey, custodian: net.orgId });
    const first = entry(patients[2] as string);
    await batcher.anchor([first]);
    await assert.rejects(batcher.anchor([{ ...first, commitment: randomBytes(32).toString("hex") }]), {
      name: "AnchorError",
      code: "already-exists",
    });
  });

  it("refuses entries the contract cannot take before submitting anything", async () => {
    const node = countingNode();
    const batcher = new AnchorBatcher({ node, key: net.nodeKey, custodian: net.orgId });
    await assert.rejects(batcher.anchor([entry(null, { resourceType: "Organization", resourceId: "not an id" })]), {
      code: "invalid-entry",
      message: /schema refuses it/,
    });
    await assert.rejects(batcher.anchor([entry(patients[0] as string, { commitment: "not-hex" })]), {
      code: "invalid-entry",
    });
    assert.equal(node.txs, 0);
    await batcher.anchor([]); // nothing to do is not an error
  });

  it("rejects every caller when the node refuses the submission", async () => {
    const refusing: TxSubmitter = {
      submit: async () => {
        throw new Error("too many txs waiting to commit; retry shortly");
      },
    };
    const batcher = new AnchorBatcher({ node: refusing, key: net.nodeKey, custodian: net.orgId });
    const results = await Promise.allSettled([
      batcher.anchor([entry(patients[0] as string)]),
      batcher.anchor([entry(patients[1] as string)]),
    ]);
    for (const r of results) {
      assert.equal(r.status, "rejected");
      assert.equal((r.reason as AnchorError).code, "submit-failed");
    }
  });
});

describe("the vault on a real ledger", () => {
  const keys = FileKeyProvider.fromMasterKey(randomBytes(32));
  const observation = (patient: string, id: string, value: number) => ({
    resource: {
      resourceType: "Observation",
      id,
      status: "final",
      code: { coding: [{ system: "http://loinc.org", code: "29463-7" }] },
      subject: { reference: `Patient/${patient}` },
      valueQuantity: { value, unit: "kg" },
    },
    patient,
    labels: ["N"],
    date: "2024-05-06",
    index: [
      { param: "code", kind: "token" as const, system: "http://loinc.org", code: "29463-7" },
      { param: "subject", kind: "reference" as const, value: `Patient/${patient}` },
    ],
  });

  it("stages, anchors, confirms and reads back checked against the ledger", async () => {
    const path = join(work.path, "vault-e2e.db");
    const vault = Vault.open(path, { keys, ...lookup() });
    const batcher = new AnchorBatcher({ node: running.node, key: net.nodeKey, custodian: net.orgId });
    const patient = patients[0] as string;
    const write = vault.stage([observation(patient, "weight-1", 70), observation(patient, "weight-2", 71)]);
    await batcher.anchor(write.anchors);
    vault.confirm(write);
    const read = vault.read("Observation", "weight-1");
    assert.deepEqual(read?.resource.valueQuantity, { value: 70, unit: "kg" });
    assert.equal(read?.commitment, write.anchors[0]?.commitment);
    assert.deepEqual(
      vault.search({
        resourceType: "Observation",
        clauses: [{ param: "subject", kind: "reference", anyOf: [`Patient/${patient}`] }],
        sort: [{ param: "_id", descending: false }],
      }),
      ["weight-1", "weight-2"],
    );

    const update = vault.stage([{ ...observation(patient, "weight-1", 72), ifMatch: 1 }]);
    await batcher.anchor(update.anchors);
    vault.confirm(update);
    assert.deepEqual(
      vault
        .history("Observation", "weight-1")
        .map((r) => [r.version, (r.resource.valueQuantity as { value: number }).value]),
      [
        [2, 72],
        [1, 70],
      ],
    );
    vault.close();
  });

  it("after a crash between anchoring and confirming, open keeps what the ledger anchored and drops the rest", async () => {
    const path = join(work.path, "vault-crash.db");
    const patient = patients[1] as string;
    let vault = Vault.open(path, { keys, ...lookup() });
    const batcher = new AnchorBatcher({ node: running.node, key: net.nodeKey, custodian: net.orgId });
    const anchored = vault.stage([observation(patient, "kept-1", 60), observation(patient, "kept-2", 61)]);
    vault.stage([observation(patient, "lost-1", 62)]);
    await batcher.anchor(anchored.anchors);
    vault.close(); // the process "dies" before confirm; lost-1 never reached the ledger
    vault = Vault.open(path, { keys, ...lookup() });
    assert.deepEqual(vault.recovered, { confirmed: 2, removed: 1 });
    assert.equal(vault.read("Observation", "kept-2")?.version, 1);
    assert.equal(vault.read("Observation", "lost-1"), undefined);
    vault.close();
  });

  it("refuses a record whose anchor on the ledger is another commitment, and skips the taken version", async () => {
    const path = join(work.path, "vault-wrong-anchor.db");
    const patient = patients[2] as string;
    const vault = Vault.open(path, { keys, ...lookup() });
    const batcher = new AnchorBatcher({ node: running.node, key: net.nodeKey, custodian: net.orgId });
    const write = vault.stage([observation(patient, "mismatch-1", 80)]);
    // Another commitment reaches the ledger first for this version (a forged or buggy write elsewhere).
    await batcher.anchor([{ ...(write.anchors[0] as AnchorEntry), commitment: randomBytes(32).toString("hex") }]);
    await assert.rejects(batcher.anchor(write.anchors), { code: "already-exists" });
    vault.confirm(write); // a caller that confirms regardless: the read must still refuse it
    assert.throws(() => vault.read("Observation", "mismatch-1"), VaultIntegrityError);

    const other = vault.stage([observation(patient, "taken-1", 81)]);
    await batcher.anchor([{ ...(other.anchors[0] as AnchorEntry), commitment: randomBytes(32).toString("hex") }]);
    await assert.rejects(batcher.anchor(other.anchors), { code: "already-exists" });
    vault.abort(other);
    const again = vault.stage([observation(patient, "taken-1", 81)]);
    assert.equal(again.items[0]?.version, 2, "version 1 is taken on the ledger, so the vault skips it");
    await batcher.anchor(again.anchors);
    vault.confirm(again);
    assert.equal(vault.read("Observation", "taken-1")?.version, 2);
    assert.equal(vault.vread("Observation", "taken-1", 1), undefined, "the aborted version is gone");
    vault.close();
  });
});
