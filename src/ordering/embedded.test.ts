import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, test } from "node:test";
import type { SignedTx } from "../ledger/types.ts";
import { GroupSync } from "../store/group-sync.ts";
import { EmbeddedOrderer } from "./embedded.ts";
import type { Batch } from "./orderer.ts";

const dir = mkdtempSync(join(tmpdir(), "careledger-orderer-"));
after(() => rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 }));

const fakeTx = (n: number) =>
  ({ type: "t.x", payload: { n }, signer: "a".repeat(64), nonce: "0".repeat(16), createdAt: n, sig: "x" }) as SignedTx;

test("batches get consecutive sequence numbers and non-decreasing times, even if the clock goes back", async () => {
  const times = [1000, 900, 1100];
  const orderer = new EmbeddedOrderer(join(dir, "a.db"), () => times.shift() ?? 2000);
  assert.equal(await orderer.submit("p".repeat(64), [fakeTx(1)]), 1);
  assert.equal(await orderer.submit("p".repeat(64), [fakeTx(2)]), 2);
  assert.equal(await orderer.submit("p".repeat(64), []), 3);
  const seen: Batch[] = [];
  await new Promise<void>((resolve) => {
    orderer.subscribe(1, (b) => {
      seen.push(b);
      if (b.seq === 3) resolve();
    });
  });
  assert.deepEqual(
    seen.map((b) => b.seq),
    [1, 2, 3],
  );
  assert.deepEqual(
    seen.map((b) => b.time),
    [1000, 1000, 1100],
  );
  assert.deepEqual(seen[0]?.txs, [fakeTx(1)]);
  await orderer.close();
});

test("a subscriber that joins late, or after a restart, gets every durable batch from where it asks", async () => {
  const path = join(dir, "b.db");
  const first = new EmbeddedOrderer(path);
  for (let i = 1; i <= 300; i++) await first.submit("p".repeat(64), [fakeTx(i)]);
  await first.close();
  const reopened = new EmbeddedOrderer(path);
  assert.equal(reopened.lastSeq(), 300);
  const seqs: number[] = [];
  await new Promise<void>((resolve) => {
    reopened.subscribe(250, async (b) => {
      await new Promise((r) => setImmediate(r));
      seqs.push(b.seq);
      if (b.seq === 301) resolve();
    });
    void reopened.submit("p".repeat(64), [fakeTx(301)]);
  });
  assert.deepEqual(
    seqs,
    Array.from({ length: 52 }, (_, i) => 250 + i),
  );
  assert.equal(await reopened.submit("p".repeat(64), []), 302);
  await reopened.close();
});

test("a failing handler stops its subscription and reports the error once", async () => {
  const orderer = new EmbeddedOrderer(join(dir, "c.db"));
  await orderer.submit("p".repeat(64), [fakeTx(1)]);
  await orderer.submit("p".repeat(64), [fakeTx(2)]);
  const delivered: number[] = [];
  const error = await new Promise<unknown>((resolve) => {
    orderer.subscribe(
      1,
      (b) => {
        delivered.push(b.seq);
        throw new Error("boom");
      },
      resolve,
    );
  });
  assert.equal((error as Error).message, "boom");
  assert.deepEqual(delivered, [1]);
  await orderer.close();
  await assert.rejects(orderer.submit("p".repeat(64), []), /closed/);
  assert.throws(() => new EmbeddedOrderer(join(dir, "c.db")).subscribe(0, () => {}), /fromSeq/);
});

test("batches every subscriber has been given are not held in memory; a slower subscriber keeps its own", async () => {
  const orderer = new EmbeddedOrderer(join(dir, "release.db"));
  const fast: number[] = [];
  let releaseSlow!: () => void;
  const slowGate = new Promise<void>((resolve) => {
    releaseSlow = resolve;
  });
  const slow: number[] = [];
  orderer.subscribe(1, (b) => {
    fast.push(b.seq);
  });
  orderer.subscribe(1, async (b) => {
    await slowGate; // holds at batch 1 until released
    slow.push(b.seq);
  });
  for (let i = 1; i <= 5; i++) await orderer.submit("p".repeat(64), [fakeTx(i)]);
  while (fast.length < 5) await new Promise((r) => setTimeout(r, 5));
  assert.equal(orderer.batchesInMemory, 5, "the slow subscriber has not had them yet");
  releaseSlow();
  while (slow.length < 5) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(slow, [1, 2, 3, 4, 5]);
  assert.equal(orderer.batchesInMemory, 0);
  await orderer.close();
});

test("in a node's own database the log hands a batch over at once and shares the flush of the block built from it", async () => {
  const path = join(dir, "shared.db");
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; CREATE TABLE blocks (seq INTEGER PRIMARY KEY)");
  const sync = new GroupSync(path);
  const orderer = new EmbeddedOrderer(path, Date.now, { sync });
  const blockFlushes: Promise<void>[] = [];
  // A node applies the batch and commits its block in the handler, then waits for that commit's flush.
  orderer.subscribe(1, (b) => {
    db.prepare("INSERT INTO blocks VALUES (?)").run(b.seq);
    blockFlushes.push(sync.durable());
  });
  const submitted = orderer.submit("p".repeat(64), [fakeTx(1)]);
  assert.equal(blockFlushes.length, 1, "delivered as it was appended, before any flush");
  assert.equal(await submitted, 1);
  await blockFlushes[0];
  assert.equal(sync.flushes, 1, "one flush made the batch and its block durable");
  await orderer.close();
  // The log is a table of that database, and the database is still its owner's to use and close.
  assert.deepEqual(
    db
      .prepare("SELECT seq FROM batches")
      .all()
      .map((row) => row.seq),
    [1],
  );
  db.close();
  sync.afterDatabaseClosed();
  const reopened = new EmbeddedOrderer(path);
  assert.equal(reopened.lastSeq(), 1);
  await reopened.close();
});
