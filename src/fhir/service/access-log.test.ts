// AccessLogBatcher: batching onto the ledger, size limits, isolation of a bad entry, back-pressure and failures that
// make the consent gate refuse reads rather than serve them unlogged.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { Hex32, SignedTx } from "../../ledger/types.ts";
import type { CommitResult } from "../../node/ledger-node.ts";
import { NodeError } from "../../node/ledger-node.ts";
import { AccessLogBatcher, type AccessLogNode } from "./access-log.ts";
import type { AccessEntry } from "./context.ts";
import { read } from "./read.ts";
import {
  call,
  ledgerAccessEntries,
  observation,
  openServiceKit,
  type Patient,
  patientResource,
  putRecords,
  request,
  type ServiceKit,
} from "./testkit.ts";

let kit: ServiceKit;
let alice: Patient;

before(async () => {
  kit = await openServiceKit();
  alice = await kit.registerPatient();
  await putRecords(kit, [patientResource(alice)]);
});
after(async () => {
  await kit?.close();
});

let serial = 0;
function entry(patient: string, overrides: Partial<AccessEntry> = {}): AccessEntry {
  serial++;
  return {
    requester: kit.nodeKey.keyId,
    patient,
    custodian: kit.orgId,
    resourceType: "Observation",
    resourceId: `obs-${serial}-${randomUUID()}`,
    purpose: "TREAT",
    action: "read",
    decision: "deny",
    step: 8,
    rule: "default-deny",
    height: 1,
    ...overrides,
  };
}

/** A node stand-in whose submissions are answered by the test. */
class FakeNode implements AccessLogNode {
  halted: string | undefined;
  submitted: SignedTx[] = [];
  /** What the next submit does: throw, hang, or commit. */
  mode: "commit" | "busy" | "closing" | "hang" = "commit";
  private readonly hanging: (() => void)[] = [];
  async submit(items: { tx: SignedTx; id: Hex32 }[]): Promise<Promise<CommitResult>[]> {
    if (this.mode === "busy") throw new NodeError("busy", 503, "busy");
    if (this.mode === "closing") throw new NodeError("closing", 503, "closing");
    this.submitted.push(...items.map((i) => i.tx));
    const result = (id: Hex32): CommitResult => ({ id, height: 1, index: 0, valid: true, code: "ok" });
    if (this.mode === "hang") {
      return items.map((i) => new Promise<CommitResult>((resolve) => this.hanging.push(() => resolve(result(i.id)))));
    }
    return items.map((i) => Promise.resolve(result(i.id)));
  }
  release(): void {
    for (const r of this.hanging.splice(0)) r();
  }
}

describe("AccessLogBatcher on a real node", () => {
  it("batches concurrent entries into few txs, all on the ledger after flush", async () => {
    const batcher = new AccessLogBatcher({ node: kit.running.node, key: kit.nodeKey, lingerMs: 5 });
    const from = kit.running.node.height;
    const mine = Array.from({ length: 150 }, () => entry(alice.patient));
    for (const e of mine) batcher.log([e]);
    await batcher.flush();
    assert.ok(batcher.stats.txsSubmitted <= 2, `${batcher.stats.txsSubmitted} txs`);
    const onLedger = new Set(ledgerAccessEntries(kit, from).map((e) => e.resourceId));
    for (const e of mine) assert.ok(onLedger.has(e.resourceId));
    assert.equal(batcher.stats.entriesCommitted, 150);
    assert.equal(batcher.unavailable(), undefined);
    await batcher.close();
  });

  it("splits large bursts into txs within the size limit", async () => {
    const batcher = new AccessLogBatcher({ node: kit.running.node, key: kit.nodeKey });
    const from = kit.running.node.height;
    const mine = Array.from({ length: 1200 }, () => entry(alice.patient));
    batcher.log(mine);
    await batcher.flush();
    assert.ok(batcher.stats.txsSubmitted >= 6, "64 KiB holds ~200 entries");
    assert.equal(ledgerAccessEntries(kit, from).filter((e) => e.patient === alice.patient).length, 1200);
    await batcher.close();
  });

  it("an entry the ledger rejects is isolated: the others in its tx still commit", async () => {
    const batcher = new AccessLogBatcher({ node: kit.running.node, key: kit.nodeKey, lingerMs: 5 });
    const from = kit.running.node.height;
    const good = Array.from({ length: 5 }, () => entry(alice.patient));
    const unknownPatient = entry(randomUUID());
    batcher.log([...good.slice(0, 2), unknownPatient, ...good.slice(2)]);
    await assert.rejects(batcher.flush(), /rejected by the ledger: not-found/);
    const onLedger = new Set(ledgerAccessEntries(kit, from).map((e) => e.resourceId));
    for (const e of good) assert.ok(onLedger.has(e.resourceId));
    assert.ok(!onLedger.has(unknownPatient.resourceId));
    assert.equal(batcher.stats.entriesRejected, 1);
    assert.equal(batcher.stats.entriesCommitted, 5);
    await batcher.close();
  });

  it("refuses a malformed entry in a burst of more than one tx, keeping the rest", async () => {
    const batcher = new AccessLogBatcher({ node: kit.running.node, key: kit.nodeKey });
    const from = kit.running.node.height;
    const mine = Array.from({ length: 1100 }, () => entry(alice.patient));
    const bad = entry(alice.patient, { rule: "Not A Rule" });
    batcher.log([...mine.slice(0, 700), bad, ...mine.slice(700)]);
    await batcher.flush();
    assert.equal(batcher.stats.entriesInvalid, 1);
    assert.equal(batcher.stats.entriesCommitted, 1100);
    const onLedger = ledgerAccessEntries(kit, from).filter((e) => e.patient === alice.patient);
    assert.equal(onLedger.length, 1100);
    assert.ok(!onLedger.some((e) => e.resourceId === bad.resourceId));
    await batcher.close();
  });

  it("refuses malformed entries without spoiling the batch", async () => {
    const batcher = new AccessLogBatcher({ node: kit.running.node, key: kit.nodeKey });
    batcher.log([entry(alice.patient, { purpose: "GOSSIP" }), entry(alice.patient)]);
    await batcher.flush();
    assert.equal(batcher.stats.entriesInvalid, 1);
    assert.equal(batcher.stats.entriesCommitted, 1);
    await batcher.close();
  });
});

describe("AccessLogBatcher when the ledger is slow or broken", () => {
  it("applies back-pressure: past maxQueued uncommitted entries it is unavailable, and reads are refused (503)", async () => {
    const node = new FakeNode();
    node.mode = "hang";
    const batcher = new AccessLogBatcher({ node, key: kit.nodeKey, maxQueued: 10, lingerMs: 1 });
    batcher.log(Array.from({ length: 10 }, () => entry(alice.patient)));
    assert.match(batcher.unavailable() ?? "", /backed up/);
    const obs = observation(alice);
    await putRecords(kit, [obs]);
    const ctx = { ...kit.ctx, accessLog: batcher };
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const refused = await call(read, ctx, request(me, { type: "Observation", id: obs.id }));
    assert.equal(refused.status, 503);
    assert.doesNotMatch(JSON.stringify(refused.body), /Observation|obs-/);
    await new Promise((r) => setTimeout(r, 5));
    node.release();
    await batcher.flush();
    assert.equal(batcher.unavailable(), undefined);
    assert.equal((await call(read, ctx, request(me, { type: "Observation", id: obs.id }))).status, 200);
    node.release();
    await batcher.close(100);
  });

  it("retries 'busy' quietly; any other failure makes it unavailable until a later commit", async () => {
    const node = new FakeNode();
    node.mode = "busy";
    const batcher = new AccessLogBatcher({ node, key: kit.nodeKey, retryMs: 2 });
    batcher.log([entry(alice.patient)]);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(batcher.unavailable(), undefined, "busy is back-pressure from the node, not a fault");
    node.mode = "closing";
    await new Promise((r) => setTimeout(r, 30));
    assert.match(batcher.unavailable() ?? "", /cannot reach the ledger \(closing\)/);
    node.mode = "commit";
    await batcher.flush();
    assert.equal(batcher.unavailable(), undefined);
    assert.equal(batcher.stats.entriesCommitted, 1);
    assert.equal(node.submitted.length, 1, "the same signed tx is resubmitted, never a second one");
    await batcher.close();
  });

  it("a halted node makes it unavailable at once: no record is served", async () => {
    const node = new FakeNode();
    node.halted = "fork alarm";
    const batcher = new AccessLogBatcher({ node, key: kit.nodeKey });
    assert.match(batcher.unavailable() ?? "", /halted/);
    const ctx = { ...kit.ctx, accessLog: batcher };
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    assert.equal((await call(read, ctx, request(me, { type: "Patient", id: alice.patient }))).status, 503);
    await batcher.close(10);
  });

  it("close gives up on what cannot commit, counting it as lost", async () => {
    const node = new FakeNode();
    node.mode = "hang";
    const batcher = new AccessLogBatcher({ node, key: kit.nodeKey });
    batcher.log([entry(alice.patient), entry(alice.patient)]);
    const flushed = batcher.flush();
    await batcher.close(20);
    await assert.rejects(flushed, /lost/);
    assert.equal(batcher.stats.entriesLost, 2);
    assert.match(batcher.unavailable() ?? "", /closed/);
  });
});
