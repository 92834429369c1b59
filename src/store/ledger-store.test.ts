import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, test } from "node:test";
import { blockHash, leafBytes } from "../ledger/block.ts";
import { toHex } from "../ledger/encoding.ts";
import { keyPairFromSeed } from "../ledger/keys.ts";
import {
  appendLeaf,
  EMPTY_FRONTIER,
  type Frontier,
  frontierRoot,
  hashLeaf,
  type MerkleNode,
} from "../ledger/merkle.ts";
import { signTreeHead } from "../ledger/sth.ts";
import { signTx, txId } from "../ledger/tx.ts";
import type { Block, BlockEntry } from "../ledger/types.ts";
import { BlockReader } from "./block-reader.ts";
import { COMPRESS_FROM_TXS, txsText } from "./block-txs.ts";
import { LedgerStore, nonceKey, SqliteState, StoreError } from "./ledger-store.ts";

const dir = mkdtempSync(join(tmpdir(), "careledger-store-"));
after(() => rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 }));
const key = keyPairFromSeed(new Uint8Array(32).fill(3));

function entry(n: number): BlockEntry {
  const tx = signTx(
    { type: "test.tx", payload: { n }, signer: key.keyId, nonce: n.toString(16).padStart(16, "0"), createdAt: n },
    key,
  );
  return { id: txId(tx), tx, result: { valid: n % 3 !== 0, code: n % 3 === 0 ? "unauthorised" : "ok" } };
}

function makeBlock(height: number, prevHash: string, frontier: Frontier, entries: BlockEntry[]) {
  let f = frontier;
  const nodes: MerkleNode[] = [];
  for (const e of entries) {
    const r = appendLeaf(f, hashLeaf(leafBytes(e)));
    f = r.frontier;
    nodes.push(...r.newNodes);
  }
  const block: Block = {
    height,
    prevHash,
    txRoot: "0".repeat(64),
    time: 1000 + height,
    proposer: key.keyId,
    size: f.size,
    stateDigest: "1".repeat(64),
    txs: entries,
  };
  const sth = signTreeHead(
    { size: f.size, root: toHex(frontierRoot(f)), height, stateDigest: block.stateDigest, time: block.time },
    key,
  );
  return { block, hash: blockHash(block), nodes, frontier: f, sth };
}

/** Commits `blocks` blocks of `perBlock` fresh entries numbered from `from`, plus what `extra` adds; returns them all. */
function commitBlocks(
  store: LedgerStore,
  blocks: number,
  perBlock: number,
  from: number,
  extra: (height: number, before: BlockEntry[]) => BlockEntry[] = () => [],
): BlockEntry[] {
  let frontier: Frontier = EMPTY_FRONTIER;
  let prev = "0".repeat(64);
  const all: BlockEntry[] = [];
  let n = from;
  for (let height = 0; height < blocks; height++) {
    const entries = Array.from({ length: perBlock }, () => entry(n++));
    entries.push(...extra(height, all));
    const b = makeBlock(height, prev, frontier, entries);
    store.commitBlock(b.block, b.hash, b.nodes, b.sth);
    frontier = b.frontier;
    prev = b.hash;
    all.push(...entries);
  }
  return all;
}

test("blocks, tx index, Merkle nodes and state survive a reopen, and the frontier is rebuilt from stored nodes", () => {
  const path = join(dir, "a.db");
  const store = LedgerStore.open(path);
  assert.equal(store.head(), undefined);
  const b0 = makeBlock(0, "0".repeat(64), EMPTY_FRONTIER, [entry(1), entry(2), entry(3)]);
  store.state.put("k/1", { a: 1 });
  store.commitBlock(b0.block, b0.hash, b0.nodes, b0.sth);
  const b1 = makeBlock(1, b0.hash, b0.frontier, [entry(4), entry(5)]);
  store.state.put("k/2", { b: 2 });
  store.state.del("k/1");
  store.commitBlock(b1.block, b1.hash, b1.nodes, b1.sth);
  store.close();

  const reopened = LedgerStore.open(path);
  assert.equal(reopened.head()?.height, 1);
  assert.equal(reopened.head()?.hash, b1.hash);
  assert.equal(reopened.head()?.size, 5);
  assert.deepEqual(toHex(frontierRoot(reopened.frontier())), toHex(frontierRoot(b1.frontier)));
  const e4 = entry(4);
  const got = reopened.getTx(e4.id);
  assert.equal(got?.height, 1);
  assert.equal(got?.index, 3);
  assert.deepEqual(got?.entry, e4);
  assert.equal(reopened.getTx("f".repeat(64)), undefined);
  assert.equal(reopened.nonceUsed(key.keyId, e4.tx.nonce), true);
  assert.equal(reopened.nonceUsed(key.keyId, "ff".repeat(8)), false);
  assert.equal(reopened.state.get("k/1"), undefined);
  assert.deepEqual(reopened.state.get("k/2"), { b: 2 });
  assert.deepEqual(reopened.latestTreeHead(), b1.sth);
  assert.deepEqual(reopened.getBlock(0)?.txs, b0.block.txs);
  assert.deepEqual(
    [...reopened.blocks(0)].map((b) => b.hash),
    [b0.hash, b1.hash],
  );
  assert.equal(reopened.countTxs(), 5);
  assert.deepEqual(reopened.quickCheck(), []);
  reopened.close();
});

test("a block that does not follow the head is refused and leaves nothing behind, pending state included", () => {
  const store = LedgerStore.open(join(dir, "b.db"));
  const b0 = makeBlock(0, "0".repeat(64), EMPTY_FRONTIER, [entry(10)]);
  store.commitBlock(b0.block, b0.hash, b0.nodes, b0.sth);
  const skip = makeBlock(2, b0.hash, b0.frontier, [entry(11)]);
  assert.throws(
    () => store.commitBlock(skip.block, skip.hash, skip.nodes, skip.sth),
    (e: unknown) => e instanceof StoreError && e.code === "out-of-order",
  );
  // A failed write (a state value that cannot be stored) rolls back the whole block and its pending state.
  const next = makeBlock(1, b0.hash, b0.frontier, [entry(11)]);
  store.state.put("k/x", 1);
  store.state.put("k/y", 10n);
  assert.throws(() => store.commitBlock(next.block, next.hash, next.nodes, next.sth), /could not store block 1/);
  assert.equal(store.head()?.height, 0);
  assert.equal(store.state.get("k/x"), undefined);
  assert.equal(store.getBlock(1), undefined);
  store.close();
});

test("a block of 64 txs or more is stored zstd-compressed (a BLOB ~4× smaller), a smaller one as text; both read back as their JSON", () => {
  const path = join(dir, "packed.db");
  const store = LedgerStore.open(path);
  const large = Array.from({ length: COMPRESS_FROM_TXS }, (_, i) => entry(500 + i));
  const small = Array.from({ length: COMPRESS_FROM_TXS - 1 }, (_, i) => entry(600 + i));
  const b0 = makeBlock(0, "0".repeat(64), EMPTY_FRONTIER, large);
  store.commitBlock(b0.block, b0.hash, b0.nodes, b0.sth);
  const b1 = makeBlock(1, b0.hash, b0.frontier, small);
  store.commitBlock(b1.block, b1.hash, b1.nodes, b1.sth);
  const json = [JSON.stringify(large), JSON.stringify(small)];
  assert.deepEqual([store.blockRow(0)?.txs, store.blockRow(1)?.txs], json);
  assert.deepEqual(
    [...store.blocks(0)].map((b) => b.block.txs),
    [large, small],
  );
  store.close();
  const raw = new DatabaseSync(path, { readOnly: true });
  const rows = raw.prepare("SELECT txs FROM blocks ORDER BY height").all() as { txs: unknown }[];
  raw.close();
  const packed = rows[0]?.txs;
  assert.ok(packed instanceof Uint8Array, "the large block is stored as bytes");
  assert.ok(packed.byteLength * 2.5 < Buffer.byteLength(json[0] as string), `${packed.byteLength} bytes`);
  assert.equal(rows[1]?.txs, json[1], "the small one as its text");
  const reader = BlockReader.open(path);
  assert.deepEqual(
    [reader.blockRow(0)?.txs, reader.blockRow(1)?.txs],
    json,
    "the read-only reader of other threads decompresses too",
  );
  reader.close();
});

test("a schema-3 store (txs as JSON text) opens: its blocks read as before, new ones are compressed, it is marked 4", () => {
  const path = join(dir, "schema3.db");
  const store = LedgerStore.open(path);
  const all = commitBlocks(store, 2, 3, 700);
  const head = store.head();
  store.close();
  // As schema 3 wrote it.
  const old = new DatabaseSync(path);
  for (const row of old.prepare("SELECT height, txs FROM blocks").all() as { height: number; txs: Uint8Array }[]) {
    old.prepare("UPDATE blocks SET txs = ? WHERE height = ?").run(txsText(row.txs, row.height), row.height);
  }
  old.prepare("UPDATE meta SET value = '3' WHERE key = 'schema'").run();
  old.close();
  const schema = () => {
    const db = new DatabaseSync(path, { readOnly: true });
    const value = (db.prepare("SELECT value FROM meta WHERE key = 'schema'").get() as { value: string }).value;
    const kinds = db.prepare("SELECT typeof(txs) AS kind FROM blocks ORDER BY height").all() as { kind: string }[];
    db.close();
    return { value, kinds: kinds.map((k) => k.kind) };
  };
  const readOnly = LedgerStore.open(path, { readOnly: true });
  assert.deepEqual(readOnly.getBlock(1)?.txs, all.slice(3, 6));
  readOnly.close();
  assert.deepEqual(schema(), { value: "3", kinds: ["text", "text"] }, "a read-only open changes nothing");
  const reopened = LedgerStore.open(path);
  assert.equal(reopened.head()?.hash, head?.hash);
  assert.deepEqual(reopened.getBlock(0)?.txs, all.slice(0, 3));
  const more = Array.from({ length: COMPRESS_FROM_TXS }, (_, i) => entry(800 + i));
  const next = makeBlock(2, head?.hash as string, reopened.frontier(), more);
  reopened.commitBlock(next.block, next.hash, next.nodes, next.sth);
  assert.deepEqual(
    [...reopened.blocks(0)].map((b) => b.block.txs.length),
    [3, 3, COMPRESS_FROM_TXS],
  );
  reopened.close();
  assert.deepEqual(schema(), { value: "4", kinds: ["text", "text", "blob"] });
  // A schema this program does not know is still refused.
  const future = new DatabaseSync(path);
  future.prepare("UPDATE meta SET value = '5' WHERE key = 'schema'").run();
  future.close();
  assert.throws(() => LedgerStore.open(path), /unsupported store schema 5/);
});

test("opening something that is not a ledger store fails with a clear error", () => {
  const bogus = join(dir, "bogus.db");
  writeFileSync(bogus, "this is not sqlite at all, just text that is long enough to look like a header..........");
  assert.throws(
    () => LedgerStore.open(bogus),
    (e: unknown) => e instanceof StoreError && /cannot open ledger store/.test(e.message),
  );
});

test("every stored Merkle node matches an in-memory log, whatever the block sizes", async () => {
  const { MemoryMerkleLog } = await import("../ledger/merkle.ts");
  const store = LedgerStore.open(join(dir, "merkle.db"));
  const memory = new MemoryMerkleLog();
  let frontier: Frontier = EMPTY_FRONTIER;
  let prev = "0".repeat(64);
  const sizes = [1, 0, 3, 7, 1, 16, 5, 0, 2, 31, 9];
  let n = 100;
  sizes.forEach((count, height) => {
    const entries = Array.from({ length: count }, () => entry(n++));
    for (const e of entries) memory.append(hashLeaf(leafBytes(e)));
    const b = makeBlock(height, prev, frontier, entries);
    store.commitBlock(b.block, b.hash, b.nodes, b.sth);
    frontier = b.frontier;
    prev = b.hash;
  });
  const size = memory.size;
  for (let level = 0; 2 ** level <= size; level++) {
    for (let index = 0; (index + 1) * 2 ** level <= size; index++) {
      assert.equal(toHex(store.node(level, index)), toHex(memory.node(level, index)), `node ${level}/${index}`);
    }
  }
  assert.throws(() => store.node(0, size), /missing/);
  assert.throws(() => store.node(3, 100), /missing/);
  store.close();
});

test("the tx index answers for every tx across index flushes, and after a reopen without a clean close", () => {
  const path = join(dir, "index.db");
  const store = LedgerStore.open(path, { indexFlushTxs: 5_000 });
  const all = commitBlocks(store, 14, 500, 100_000);
  const check = (s: LedgerStore) => {
    assert.equal(s.countTxs(), all.length);
    for (const i of [0, 1, 4_999, 5_000, 5_001, 6_500, all.length - 1]) {
      const e = all[i] as BlockEntry;
      assert.equal(s.hasTx(e.id), true, `tx ${i}`);
      assert.equal(s.getTx(e.id)?.index, i);
      assert.equal(s.nonceUsed(e.tx.signer, e.tx.nonce), true);
    }
    // Ids and nonce keys are written out as two streams in their own orders: every tx must be found in both.
    for (const e of all) {
      assert.equal(s.hasTx(e.id), true);
      assert.equal(s.nonceUsed(e.tx.signer, e.tx.nonce), true);
    }
    assert.equal(s.hasTx("e".repeat(64)), false);
    assert.equal(s.nonceUsed(key.keyId, "ab".repeat(8)), false);
  };
  check(store);
  // A second connection while the first is still open stands for a restart after a crash: the part of the index
  // not yet written out is rebuilt from the blocks.
  const reopened = LedgerStore.open(path, { indexFlushTxs: 5_000 });
  check(reopened);
  reopened.close();
  store.close();
  const afterCleanClose = LedgerStore.open(path);
  check(afterCleanClose);
  afterCleanClose.close();
});

test("indexedIds and indexedNonceKeys list each key once, across index flushes and a reused nonce", () => {
  const path = join(dir, "index-keys.db");
  const store = LedgerStore.open(path, { indexFlushTxs: 1_000 });
  const all = commitBlocks(store, 5, 400, 300_000, (height, before) => {
    if (height !== 4) return [];
    // A tx reusing the (signer, nonce) of one already written out to SQLite: logged as rejected, a second id, one key.
    const tx = signTx({ ...(before[0] as BlockEntry).tx, payload: { n: -1 } }, key);
    return [{ id: txId(tx), tx, result: { valid: false, code: "replay" } }];
  });
  const check = (s: LedgerStore) => {
    const ids = [...s.indexedIds()];
    assert.equal(ids.length, all.length);
    assert.deepEqual(new Set(ids), new Set(all.map((e) => e.id)));
    const keys = [...s.indexedNonceKeys()];
    assert.equal(keys.length, all.length - 1);
    assert.deepEqual(new Set(keys), new Set(all.map((e) => nonceKey(e.tx.signer, e.tx.nonce))));
  };
  check(store);
  store.close();
  const reopened = LedgerStore.open(path, { indexFlushTxs: 1_000 });
  check(reopened);
  reopened.close();
});

test("state: resource records are found whether or not the filter of their keys existed when they were written", () => {
  const db = new DatabaseSync(":memory:");
  db.exec("CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID");
  const put = db.prepare(
    "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
  );
  const del = db.prepare("DELETE FROM state WHERE key = ?");
  // A cache of two entries, so that later reads go past it to the filter and SQLite.
  const state = new SqliteState(
    db.prepare("SELECT value FROM state WHERE key = ?"),
    db.prepare("SELECT key FROM state WHERE key >= 'res/' AND key < 'res0'"),
    2,
  );
  const commit = (entries: [string, unknown][]) => {
    for (const [k, v] of entries) state.put(k, v);
    state.flush(put, del);
    state.committed();
  };
  commit([["res/org/Observation/before", { latest: "1", versions: 1 }]]);
  // The first resource lookup builds the filter from what is stored.
  assert.equal(state.get("res/org/Observation/never"), undefined);
  assert.deepEqual(state.get("res/org/Observation/before"), { latest: "1", versions: 1 });
  // Written after the filter was built, then pushed out of the cache by other reads.
  commit([["res/org/Observation/after", { latest: "2", versions: 2 }]]);
  for (const k of ["org/a", "org/b", "org/c", "res/org/Observation/x", "res/org/Observation/y"]) state.get(k);
  assert.deepEqual(state.get("res/org/Observation/after"), { latest: "2", versions: 2 });
  assert.deepEqual(state.get("res/org/Observation/before"), { latest: "1", versions: 1 });
  // A pending write that is discarded leaves no trace; keys outside the prefix are read as before.
  state.put("res/org/Observation/discarded", { latest: "1", versions: 1 });
  state.discard();
  assert.equal(state.get("res/org/Observation/discarded"), undefined);
  commit([["org/z", { name: "Z" }]]);
  assert.deepEqual(state.get("org/z"), { name: "Z" });
  db.close();
});
