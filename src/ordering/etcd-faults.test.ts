import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { EtcdOrderer } from "./etcd.ts";
import { type LocalEtcdCluster, startLocalEtcdCluster } from "./etcd-launcher.ts";
import { Collector, fakeTx, freshPrefix, keyA, keyB, openOrderer, sleep } from "./etcd-test-helpers.ts";
import { OrdererError } from "./orderer.ts";

const dir = mkdtempSync(join(tmpdir(), "careledger-etcd-faults-"));
let cluster: LocalEtcdCluster;
const opened: EtcdOrderer[] = [];

before(async () => {
  cluster = await startLocalEtcdCluster(join(dir, "etcd"), 3);
});

after(async () => {
  await Promise.all(opened.map((o) => o.close()));
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
});

async function open(name: string, options: Parameters<typeof openOrderer>[3]): Promise<EtcdOrderer> {
  const orderer = await openOrderer(cluster.endpoints, dir, name, {
    compaction: false,
    watchStallMs: 1000,
    ...options,
  });
  opened.push(orderer);
  return orderer;
}

/** Every batch's first tx number, to check each submitted batch is delivered exactly once. */
const firstTxNumbers = (c: Collector) =>
  c.batches.map((b) => (b.txs[0] as unknown as { payload: { n: number } }).payload.n);

test("throughput: batches of 500 small txs through one orderer, two in flight", async (t) => {
  const prefix = freshPrefix();
  const a = await open("speed-a", { prefix, key: keyA });
  const seen = new Collector();
  a.subscribe(1, seen.onBatch, seen.onError);
  const txs = Array.from({ length: 500 }, (_, i) => fakeTx(i, 200));
  const started = performance.now();
  let done = 0;
  const lane = async (lane: number) => {
    while (performance.now() - started < 2000) {
      await a.submit(keyA.keyId, [{ ...fakeTx(lane * 1e6 + done), payload: { n: lane * 1e6 + done } }, ...txs]);
      done++;
    }
  };
  await Promise.all([lane(1), lane(2)]);
  const seconds = (performance.now() - started) / 1000;
  const bytes = JSON.stringify(txs).length;
  t.diagnostic(
    `${(done / seconds).toFixed(0)} batches/s of 500 txs (${(bytes / 1024).toFixed(0)} KiB each) = ` +
      `${((done * 500) / seconds).toFixed(0)} tx/s, submit to delivery, 3-member cluster`,
  );
  assert.equal(seen.batches.length, done);
  assert.ok(done > 10, `only ${done} batches in 2 s`);
});

test("kill -9 one member of three under submits: no batch lost, submits continue", async () => {
  const prefix = freshPrefix();
  const a = await open("kill-a", { prefix, key: keyA });
  const b = await open("kill-b", { prefix, key: keyB });
  const seenA = new Collector();
  const seenB = new Collector();
  a.subscribe(1, seenA.onBatch, seenA.onError);
  b.subscribe(1, seenB.onBatch, seenB.onError);
  const accepted: number[] = [];
  const failures: unknown[] = [];
  let n = 0;
  const started = Date.now();
  // Lanes run until 20 submits were accepted after the kill (a new leader may take a second or two to be elected;
  // on a loaded machine longer), or 30 s.
  let before = Number.POSITIVE_INFINITY;
  const lane = async (orderer: EtcdOrderer, key: typeof keyA) => {
    while (Date.now() - started < 30_000 && accepted.length < before + 20) {
      const mine = n++;
      try {
        await orderer.submit(key.keyId, [fakeTx(mine)]);
        accepted.push(mine);
      } catch (error) {
        failures.push(error);
      }
    }
  };
  const load = Promise.all([lane(a, keyA), lane(a, keyA), lane(b, keyB), lane(b, keyB)]);
  await sleep(1000);
  before = accepted.length;
  cluster.members[0]?.process.kill("SIGKILL");
  await load;
  assert.deepEqual(failures, []);
  assert.ok(accepted.length >= before + 20, `submits continued after the kill (${before} → ${accepted.length})`);
  const total = accepted.length;
  await Promise.all([seenA.until(total), seenB.until(total)]);
  await sleep(200);
  assert.deepEqual(seenA.summary(), seenB.summary());
  assert.deepEqual(
    firstTxNumbers(seenA).sort((x, y) => x - y),
    [...accepted].sort((x, y) => x - y),
    "every accepted batch delivered exactly once",
  );
  await cluster.restart(0);
});

test("majority down: submit rejects clearly within its timeout, works again once etcd is back, nothing doubled", async () => {
  const prefix = freshPrefix();
  const a = await open("majority-a", { prefix, key: keyA, submitTimeoutMs: 2000 });
  const b = await open("majority-b", { prefix, key: keyB, submitTimeoutMs: 2000 });
  const seenA = new Collector();
  const seenB = new Collector();
  a.subscribe(1, seenA.onBatch, seenA.onError);
  b.subscribe(1, seenB.onBatch, seenB.onError);
  assert.equal(await a.submit(keyA.keyId, [fakeTx(1)]), 1);
  await seenB.until(1);
  cluster.members[1]?.process.kill("SIGKILL");
  cluster.members[2]?.process.kill("SIGKILL");
  await Promise.all([cluster.members[1]?.exited, cluster.members[2]?.exited]);
  const started = Date.now();
  await assert.rejects(a.submit(keyA.keyId, [fakeTx(2)]), (e: unknown) => {
    assert.ok(e instanceof OrdererError);
    assert.equal(e.code, "unavailable");
    assert.match(e.message, /^etcd did not accept the batch within 2000 ms: /);
    return true;
  });
  const elapsed = Date.now() - started;
  // At the timeout, not hanging (the upper bound is loose: a loaded machine is slow).
  assert.ok(elapsed >= 1900 && elapsed < 10_000, `rejected after ${elapsed} ms`);
  await Promise.all([cluster.restart(1), cluster.restart(2)]);
  // The node retries its txs in a new batch; the old one may or may not have made it, but never twice.
  const seq = await a.submit(keyA.keyId, [fakeTx(3)]);
  assert.ok(seq === 2 || seq === 3, `seq ${seq}`);
  assert.equal(await b.submit(keyB.keyId, [fakeTx(4)]), seq + 1);
  await Promise.all([seenA.until(seq + 1), seenB.until(seq + 1)]);
  await sleep(200);
  assert.deepEqual(seenA.summary(), seenB.summary());
  const numbers = firstTxNumbers(seenA);
  assert.deepEqual(numbers, seq === 2 ? [1, 3, 4] : [1, 2, 3, 4]);
  assert.deepEqual(seenA.errors, []);
});
