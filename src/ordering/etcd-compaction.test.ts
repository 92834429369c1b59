import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Etcd3 } from "etcd3";
import type { EtcdOrderer } from "./etcd.ts";
import { type LocalEtcdCluster, startLocalEtcdCluster } from "./etcd-launcher.ts";
import { Collector, fakeTx, freshPrefix, keyA, keyB, keyC, openOrderer, sleep } from "./etcd-test-helpers.ts";
import { OrdererError } from "./orderer.ts";

const QUOTA = 32 * 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), "careledger-etcd-compaction-"));
let cluster: LocalEtcdCluster;
let raw: Etcd3;
const opened: EtcdOrderer[] = [];

before(async () => {
  cluster = await startLocalEtcdCluster(join(dir, "etcd"), 3, { quotaBytes: QUOTA });
  raw = new Etcd3({ hosts: cluster.endpoints });
});

after(async () => {
  await Promise.all(opened.map((o) => o.close()));
  raw?.close();
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
});

const prefix = freshPrefix();
const compaction = { intervalMs: 100, markerGraceMs: 6000, quotaBytes: QUOTA };

async function open(name: string, key: typeof keyA): Promise<EtcdOrderer> {
  const orderer = await openOrderer(cluster.endpoints, dir, name, {
    prefix,
    key,
    compaction,
    appliedIntervalMs: 50,
    leaseTtlSeconds: 5,
    submitTimeoutMs: 5000,
  });
  opened.push(orderer);
  return orderer;
}

let a: EtcdOrderer;
const seenA = new Collector();

test("an etcd with a 32 MiB quota takes three times that in batches from two orderers without NOSPACE", async (t) => {
  a = await open("quota-a", keyA);
  const b = await open("quota-b", keyB);
  const seenB = new Collector();
  a.subscribe(1, seenA.onBatch, seenA.onError);
  b.subscribe(1, seenB.onBatch, seenB.onError);
  const batchBytes = 128 * 1024;
  const total = 3 * QUOTA;
  // About 6 MB/s: etcd's quota is to production load (~1 MB/s against 2 GiB) as 32 MiB is to this, roughly.
  const pace = (n: number) => sleep(Math.max(0, started + (n * batchBytes) / 6000 - Date.now()));
  const count = Math.ceil(total / batchBytes);
  let next = 0;
  const started = Date.now();
  const lane = async (orderer: EtcdOrderer, key: typeof keyA) => {
    for (let n = next++; n < count; n = next++) {
      await pace(n);
      await orderer.submit(key.keyId, [fakeTx(n, batchBytes - 200)]);
    }
  };
  await Promise.all([lane(a, keyA), lane(a, keyA), lane(b, keyB), lane(b, keyB)]);
  await Promise.all([seenA.until(count), seenB.until(count)]);
  const seconds = (Date.now() - started) / 1000;
  assert.deepEqual(seenA.summary(), seenB.summary());
  assert.deepEqual(seenA.errors, []);
  const alarms = await raw.maintenance.alarm({ action: 0, memberID: 0, alarm: 0 });
  assert.deepEqual(alarms.alarms, []);
  const stats = [a.compactorStats(), b.compactorStats()];
  const deleted = (stats[0]?.deletedKeys ?? 0) + (stats[1]?.deletedKeys ?? 0);
  const defragments = (stats[0]?.defragments ?? 0) + (stats[1]?.defragments ?? 0);
  assert.ok(deleted > count / 2, `only ${deleted} of ${count} batch keys deleted`);
  // Exactly one of the two acts: the smaller key id.
  assert.ok(stats[0]?.deletedKeys === 0 || stats[1]?.deletedKeys === 0);
  const sizes: number[] = [];
  for (const endpoint of cluster.endpoints) {
    const member = new Etcd3({ hosts: [endpoint] });
    sizes.push(Number((await member.maintenance.status()).dbSize));
    member.close();
  }
  t.diagnostic(
    `${count} batches of ${batchBytes / 1024} KiB (${total / 1024 ** 2} MiB) in ${seconds.toFixed(1)} s; ` +
      `${deleted} keys deleted, ${defragments} defragments, member db sizes ${sizes.map((s) => (s / 1024 ** 2).toFixed(1)).join("/")} MiB`,
  );
  for (const size of sizes) assert.ok(size < QUOTA, `a member's database is ${size} bytes`);
});

test("a subscriber whose start was compacted is told so, and resumeAfter a peer's position continues", async () => {
  await a.compactNow();
  const c = await open("late-c", keyC);
  const late = new Collector();
  c.subscribe(1, late.onBatch, late.onError);
  await late.until(1);
  assert.ok(late.errors[0] instanceof OrdererError);
  assert.equal(late.errors[0].code, "compacted");
  assert.match(late.errors[0].message, /catch up from a peer and call resumeAfter/);
  assert.deepEqual(late.batches, []);
  // The node catches up from a peer (not the orderer's job), then takes the peer's position of its new height.
  const height = a.lastSeq();
  const position = a.positionOf(height);
  assert.ok(position);
  c.resumeAfter(height, position.revision, position.time);
  assert.equal(c.lastSeq(), height);
  const resumed = new Collector();
  c.subscribe(height + 1, resumed.onBatch, resumed.onError);
  const seq = await a.submit(keyA.keyId, [fakeTx(1e6)]);
  assert.equal(seq, height + 1);
  await resumed.until(seq);
  await sleep(100);
  assert.deepEqual(resumed.summary(), seenA.summary().slice(height));
  assert.deepEqual(resumed.errors, []);
});
