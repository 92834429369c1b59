import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Etcd3 } from "etcd3";
import { canonicalJson } from "../ledger/canonical.ts";
import { sha256Hex } from "../ledger/hash.ts";
import type { SignedTx } from "../ledger/types.ts";
import { GroupSync } from "../store/group-sync.ts";
import type { EtcdOrderer } from "./etcd.ts";
import { sealBatch } from "./etcd-envelope.ts";
import { type LocalEtcdCluster, startLocalEtcdCluster } from "./etcd-launcher.ts";
import { Collector, fakeTx, freshPrefix, keyA, keyB, keyC, openOrderer, sleep } from "./etcd-test-helpers.ts";
import { OrdererError } from "./orderer.ts";

const dir = mkdtempSync(join(tmpdir(), "careledger-etcd-"));
let cluster: LocalEtcdCluster;
let raw: Etcd3;
const opened: EtcdOrderer[] = [];

before(async () => {
  cluster = await startLocalEtcdCluster(join(dir, "etcd"), 3);
  raw = new Etcd3({ hosts: cluster.endpoints });
});

after(async () => {
  await Promise.all(opened.map((o) => o.close()));
  raw?.close();
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
});

async function open(name: string, options: Parameters<typeof openOrderer>[3]): Promise<EtcdOrderer> {
  const orderer = await openOrderer(cluster.endpoints, dir, name, { compaction: false, ...options });
  opened.push(orderer);
  return orderer;
}

test("two orderers deliver the same batches with the same seqs and times; submit returns the seq", async () => {
  const prefix = freshPrefix();
  const a = await open("order-a", { prefix, key: keyA });
  const b = await open("order-b", { prefix, key: keyB, clock: () => 5 }); // a clock far behind: times never go back
  const seenA = new Collector();
  const seenB = new Collector();
  a.subscribe(1, seenA.onBatch, seenA.onError);
  b.subscribe(1, seenB.onBatch, seenB.onError);
  const submits: Promise<number>[] = [];
  const submittedByA: SignedTx[][] = [];
  for (let i = 0; i < 20; i++) {
    const txs = [fakeTx(i), fakeTx(1000 + i)];
    submittedByA.push(txs);
    submits.push(a.submit(keyA.keyId, txs));
    submits.push(b.submit(keyB.keyId, [fakeTx(2000 + i)]));
  }
  const seqs = await Promise.all(submits);
  assert.deepEqual(
    [...seqs].sort((x, y) => x - y),
    Array.from({ length: 40 }, (_, i) => i + 1),
  );
  await Promise.all([seenA.until(40), seenB.until(40)]);
  assert.deepEqual(seenA.summary(), seenB.summary());
  assert.deepEqual(
    seenA.batches.map((x) => x.seq),
    Array.from({ length: 40 }, (_, i) => i + 1),
  );
  for (let i = 1; i < 40; i++) {
    assert.ok((seenA.batches[i]?.time as number) >= (seenA.batches[i - 1]?.time as number), "time never goes back");
  }
  // The seq a submit returned is the one its batch was delivered under.
  const bySeq = new Map(seenA.batches.map((x) => [x.seq, x]));
  const bySeqAtB = new Map(seenB.batches.map((x) => [x.seq, x]));
  for (let i = 0; i < 20; i++) {
    assert.deepEqual(bySeq.get(seqs[2 * i] as number)?.txs, [fakeTx(i), fakeTx(1000 + i)]);
    assert.equal(bySeq.get(seqs[2 * i + 1] as number)?.proposer, keyB.keyId);
    // Its own batch comes back to A as the very tx objects it submitted (not parsed again); B parsed them afresh.
    assert.equal(bySeq.get(seqs[2 * i] as number)?.txs[0], submittedByA[i]?.[0]);
    assert.notEqual(bySeqAtB.get(seqs[2 * i] as number)?.txs[0], submittedByA[i]?.[0]);
  }
  assert.equal(a.lastSeq(), 40);
  assert.deepEqual(a.positionOf(40), b.positionOf(40));
  assert.equal(seenA.errors.length + seenB.errors.length, 0);
});

test("a retried submit orders its batch once: same envelope twice, or a put that got through before a timeout", async () => {
  const prefix = freshPrefix();
  const a = await open("retry-a", { prefix, key: keyA, clock: () => 1_700_000_000_000 });
  const seen = new Collector();
  a.subscribe(1, seen.onBatch, seen.onError);
  const first = await a.submit(keyA.keyId, [fakeTx(1)]);
  const again = await a.submit(keyA.keyId, [fakeTx(1)]);
  assert.equal(first, 1);
  assert.equal(again, 1, "the same envelope is the same key: ordered once");
  // An attempt whose answer was lost: the batch is in etcd already when the orderer retries.
  const sealed = sealBatch(keyA, 1_700_000_000_000, [fakeTx(2)], 1024 * 1024);
  await raw.put(`${prefix}b/${sealed.id}`).value(sealed.value);
  assert.equal(await a.submit(keyA.keyId, [fakeTx(2)]), 2);
  assert.equal(await a.submit(keyA.keyId, [fakeTx(3)]), 3);
  await seen.until(3);
  await sleep(100);
  assert.deepEqual(
    seen.batches.map((x) => x.txs),
    [[fakeTx(1)], [fakeTx(2)], [fakeTx(3)]],
  );
  // The key is the hash of the canonical body {v, proposer, time, txs}.
  const body = canonicalJson({ v: 1, proposer: keyA.keyId, time: 1_700_000_000_000, txs: [fakeTx(2)] });
  assert.equal(sealed.id, sha256Hex(body));
  await assert.rejects(
    a.submit(keyB.keyId, [fakeTx(4)]),
    (e: unknown) => e instanceof OrdererError && e.code === "bad-proposer",
  );
});

test("a batch of many txs over maxBatchBytes is ordered as consecutive smaller batches, in order", async () => {
  const prefix = freshPrefix();
  const a = await open("split-a", { prefix, key: keyA, maxBatchBytes: 4096 });
  const seen = new Collector();
  a.subscribe(1, seen.onBatch, seen.onError);
  const txs = Array.from({ length: 40 }, (_, i) => fakeTx(100 + i, 300));
  const last = await a.submit(keyA.keyId, txs);
  await seen.until(last);
  assert.ok(seen.batches.length > 1, `split into ${seen.batches.length} batches`);
  assert.deepEqual(
    seen.batches.flatMap((b) => b.txs),
    txs,
  );
  assert.deepEqual(
    seen.batches.map((b) => b.seq),
    seen.batches.map((_, i) => i + 1),
  );
});

test("a single tx over maxBatchBytes is refused before it reaches etcd", async () => {
  const prefix = freshPrefix();
  const a = await open("big-a", { prefix, key: keyA, maxBatchBytes: 4096 });
  await assert.rejects(
    a.submit(keyA.keyId, [fakeTx(1, 5000)]),
    (e: unknown) => e instanceof OrdererError && e.code === "too-large" && /4096 bytes/.test(e.message),
  );
  const left = await raw.getAll().prefix(`${prefix}b/`).keys();
  assert.equal(left.length, 0);
});

test("a restarted orderer resumes from its cursor: no gaps, no repeats; unknown positions are reported", async () => {
  const prefix = freshPrefix();
  const b = await open("resume-b", { prefix, key: keyB });
  let a = await open("resume-a", { prefix, key: keyA });
  const first = new Collector();
  a.subscribe(1, first.onBatch, first.onError);
  for (let i = 1; i <= 10; i++) await a.submit(keyA.keyId, [fakeTx(i)]);
  await first.until(10);
  await a.close();
  for (let i = 11; i <= 15; i++) await b.submit(keyB.keyId, [fakeTx(i)]);
  a = await open("resume-a", { prefix, key: keyA });
  assert.equal(a.lastSeq(), 10);
  const second = new Collector();
  a.subscribe(11, second.onBatch, second.onError);
  assert.equal(await a.submit(keyA.keyId, [fakeTx(16)]), 16);
  await second.until(16);
  await sleep(100);
  assert.deepEqual(
    second.batches.map((x) => x.seq),
    [11, 12, 13, 14, 15, 16],
  );
  assert.deepEqual(
    second.batches.map((x) => x.txs[0]),
    [11, 12, 13, 14, 15, 16].map((n) => fakeTx(n)),
  );
  // Times carry over the restart: the cursor remembers the time of batch 10.
  assert.ok((second.batches[0]?.time as number) >= (first.batches[9]?.time as number));
  await a.close();
  // A node whose store is behind its cursor (its last blocks were not on disk) gets them again.
  a = await open("resume-a", { prefix, key: keyA });
  const replay = new Collector();
  a.subscribe(14, replay.onBatch, replay.onError);
  await replay.until(16);
  assert.deepEqual(replay.summary(), second.summary().slice(3));
  await a.close();
  a = await open("resume-a", { prefix, key: keyA });
  const lost = new Collector();
  a.subscribe(40, lost.onBatch, lost.onError);
  await lost.until(1);
  assert.equal((lost.errors[0] as OrdererError).code, "unknown-position");
  assert.match((lost.errors[0] as Error).message, /knows up to batch 16/);
});

test("a cursor in the store's database: delivery waits for no flush of its own, and a restart resumes from it", {
  timeout: 20_000,
}, async () => {
  const prefix = freshPrefix();
  const ledger = join(dir, "shared-ledger.db");
  // A flush that never completes: the cursor's rows are made durable by the store's block flushes, not by delivery.
  const stalled = {
    mark: () => 0,
    durable: () => new Promise<void>(() => {}),
    durableAfter: () => new Promise<void>(() => {}),
  } as unknown as GroupSync;
  let a = await open("shared", { prefix, key: keyA, cursorPath: ledger, cursorSync: stalled });
  const got = new Collector();
  a.subscribe(1, got.onBatch, got.onError);
  for (let i = 1; i <= 3; i++) await a.submit(keyA.keyId, [fakeTx(100 + i)]);
  await got.until(3, 5000);
  await a.close();
  assert.equal(existsSync(join(dir, "shared.cursor.db")), false, "no cursor file of its own");
  a = await open("shared", { prefix, key: keyA, cursorPath: ledger, cursorSync: new GroupSync(ledger) });
  assert.equal(a.lastSeq(), 3);
  assert.deepEqual(a.positionOf(3)?.time, got.batches[2]?.time);
  await a.close();
});

test("hostile writes straight into etcd are skipped identically by every orderer", async () => {
  const prefix = freshPrefix();
  const maxBatchBytes = 8192;
  const accept = (keyId: string) => keyId !== keyC.keyId;
  const a = await open("hostile-a", { prefix, key: keyA, maxBatchBytes, acceptProposer: accept });
  const b = await open("hostile-b", { prefix, key: keyB, maxBatchBytes, acceptProposer: accept });
  const seenA = new Collector();
  a.subscribe(1, seenA.onBatch, seenA.onError);
  assert.equal(await a.submit(keyA.keyId, [fakeTx(1)]), 1);
  const put = (id: string, value: string | Buffer) => raw.put(`${prefix}b/${id}`).value(value);
  const good = sealBatch(keyA, 1000, [fakeTx(2)], maxBatchBytes);
  const goodEnvelope = JSON.parse(good.value.toString());
  await put(good.id, good.value); // a valid batch written by hand: delivered (seq 2)
  await put(good.id, good.value); // re-put of an existing key: not a create
  const sameTxs = sealBatch(keyA, 1000, [fakeTx(2)], maxBatchBytes);
  await put("f".repeat(64), sameTxs.value); // the same txs under a key that is not their hash
  await put(sha256Hex("x"), "not json {");
  await put("0".repeat(64), Buffer.alloc(maxBatchBytes + 1, 0x20)); // oversized
  const forged = { ...goodEnvelope, time: 1001 };
  const forgedBody = canonicalJson({ v: 1, proposer: forged.proposer, time: 1001, txs: forged.txs });
  await put(sha256Hex(forgedBody), canonicalJson(forged)); // right key, signature of other content
  const extra = { ...goodEnvelope, note: "hi" };
  await put(good.id.replace(/^./, "e"), canonicalJson(extra)); // unknown field
  await put(good.id.replace(/^./, "d"), JSON.stringify(goodEnvelope, null, 1)); // not canonical
  const notArray = canonicalJson({ ...goodEnvelope, txs: { 0: 1 } });
  await put(sha256Hex(notArray), notArray);
  await put("zz", good.value); // not a hex key
  const refused = sealBatch(keyC, 1000, [fakeTx(3)], maxBatchBytes);
  await put(refused.id, refused.value); // valid but from a proposer the node does not accept
  await raw.delete().key(`${prefix}b/${refused.id}`); // deletes are never delivered
  // Two creates in one etcd revision: only the first counts.
  const twinA = sealBatch(keyA, 2000, [fakeTx(4)], maxBatchBytes);
  const twinB = sealBatch(keyA, 2000, [fakeTx(5)], maxBatchBytes);
  await raw
    .if(`${prefix}b/${twinA.id}`, "Create", "==", 0)
    .then(raw.put(`${prefix}b/${twinA.id}`).value(twinA.value), raw.put(`${prefix}b/${twinB.id}`).value(twinB.value))
    .commit();
  assert.equal(await a.submit(keyA.keyId, [fakeTx(6)]), 4);
  await seenA.until(4);
  const seenB = new Collector();
  b.subscribe(1, seenB.onBatch, seenB.onError); // a late subscriber replays the same history
  await seenB.until(4);
  await sleep(100);
  assert.deepEqual(seenA.summary(), seenB.summary());
  assert.deepEqual(
    seenA.batches.map((x) => x.txs),
    [[fakeTx(1)], [fakeTx(2)], [fakeTx(4)], [fakeTx(6)]],
  );
  assert.deepEqual(a.stats().skipped, b.stats().skipped);
  assert.deepEqual(a.stats().skipped, {
    "not-a-create": 1,
    "wrong-key": 1,
    "not-json": 1,
    oversized: 1,
    "bad-signature": 1,
    "bad-shape": 2,
    "not-canonical": 1,
    "bad-key": 1,
    "proposer-refused": 1,
    "same-revision": 1,
  });
  // A node's own batch that delivery passes over is reported to the submitter.
  const c = await open("hostile-c", { prefix, key: keyC, maxBatchBytes, acceptProposer: accept });
  const seenC = new Collector();
  c.subscribe(1, seenC.onBatch, seenC.onError);
  await assert.rejects(
    c.submit(keyC.keyId, [fakeTx(7)]),
    (e: unknown) => e instanceof OrdererError && e.code === "refused" && /proposer-refused/.test(e.message),
  );
});

test("a new network on an etcd whose history was compacted before it started: delivery begins at its start marker", async () => {
  // Another network's traffic, then a compaction: revision 1 is long gone.
  for (let i = 0; i < 5; i++) await raw.put(`/other-network/${i}`).value("x");
  const { header } = await raw.get("/other-network/0").exec();
  await raw.kv.compact({ revision: header.revision, physical: true });
  const prefix = freshPrefix();
  // A batch written under the prefix before the network existed is not part of its history.
  await raw.put(`${prefix}b/${"9".repeat(64)}`).value("not a batch");
  const a = await open("fresh-a", { prefix, key: keyA });
  const seen = new Collector();
  a.subscribe(1, seen.onBatch, seen.onError);
  const seq = await a.submit(keyA.keyId, [fakeTx(900)]);
  await seen.until(seq);
  assert.deepEqual(seen.errors, []);
  assert.equal(seq, 1);
  assert.deepEqual(seen.batches[0]?.txs, [fakeTx(900)]);
  // A second node of the same network starts from the same marker: the same batch 1.
  const b = await open("fresh-b", { prefix, key: keyB });
  const seenB = new Collector();
  b.subscribe(1, seenB.onBatch, seenB.onError);
  await seenB.until(1);
  assert.deepEqual(seenB.batches[0]?.txs, [fakeTx(900)]);
});

test("open names the endpoints when etcd cannot be reached", async () => {
  await assert.rejects(
    openOrderer(["http://127.0.0.1:9"], dir, "unreachable", {
      prefix: freshPrefix(),
      key: keyA,
      connectTimeoutMs: 500,
    }),
    (e: unknown) =>
      e instanceof OrdererError && e.code === "etcd-unavailable" && /http:\/\/127\.0\.0\.1:9/.test(e.message),
  );
  await assert.rejects(
    openOrderer(cluster.endpoints, dir, "badprefix", { prefix: "/no-slash", key: keyA }),
    (e: unknown) => e instanceof OrdererError && e.code === "bad-config",
  );
});
