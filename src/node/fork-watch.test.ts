import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { tempDir } from "../../test/helpers.ts";
import { leafBytes } from "../ledger/block.ts";
import { toHex } from "../ledger/encoding.ts";
import type { KeyPair } from "../ledger/keys.ts";
import { appendLeaf, EMPTY_FRONTIER, type Frontier, hashLeaf, type MerkleNode, subtreeRoot } from "../ledger/merkle.ts";
import { signTreeHead, verifyTreeHead } from "../ledger/sth.ts";
import { txId as txIdOf } from "../ledger/tx.ts";
import type { Block, BlockEntry, KeyId, SignedTreeHead, SignedTx } from "../ledger/types.ts";
import { EmbeddedOrderer } from "../ordering/embedded.ts";
import type { Batch, BatchHandler, Orderer } from "../ordering/orderer.ts";
import { LedgerStore } from "../store/ledger-store.ts";
import { dataPaths, ensureDir, writeFileAtomic, writeKeyFile } from "./datadir.ts";
import { ForkWatch } from "./fork-watch.ts";
import { type HeadBoard, MemoryHeadBoard } from "./head-board.ts";
import { silentLogger } from "./logger.ts";
import { genesisBlock, newKey, signNew } from "./network.ts";
import { openNode, type RunningNode } from "./runtime.ts";
import { VerifyPool } from "./verify-pool.ts";

const ORGS = ["org-a", "org-b", "org-c"] as const;
type OrgId = (typeof ORGS)[number];

interface Net {
  dirs: Record<OrgId, string>;
  admins: Record<OrgId, KeyPair>;
  nodeKeys: Record<OrgId, KeyPair>;
}

const tmp = tempDir("fork-watch");
let pool: VerifyPool;
let netCount = 0;
/** Everything a test opened, closed after it whatever happened (a leaked orderer or node hangs the suite). */
const cleanups: (() => Promise<void>)[] = [];

before(() => {
  pool = new VerifyPool(1);
});

after(async () => {
  await closeAll();
  await pool.close();
  tmp.remove();
});

async function closeAll(): Promise<void> {
  for (const close of cleanups.splice(0).reverse()) await close().catch(() => {});
}

/** Data dirs for three organisations of one network, one genesis (as `careledger network create` would write). */
function makeNetwork(): Net {
  const base = join(tmp.path, `net-${++netCount}`);
  const admins = Object.fromEntries(ORGS.map((o) => [o, newKey()])) as Record<OrgId, KeyPair>;
  const nodeKeys = Object.fromEntries(ORGS.map((o) => [o, newKey()])) as Record<OrgId, KeyPair>;
  const now = Date.now();
  const genesisTx = signNew(
    admins["org-a"],
    "network.genesis",
    {
      network: { id: "fork-watch-net", name: "Fork watch test network" },
      orgs: ORGS.map((id) => ({
        id,
        name: id,
        kind: "other",
        admins: [{ member: randomUUID(), key: admins[id].keyId }],
        nodes: [nodeKeys[id].keyId],
      })),
    },
    now,
  );
  const genesis = genesisBlock([genesisTx], now, nodeKeys["org-a"].keyId);
  const dirs = {} as Record<OrgId, string>;
  for (const org of ORGS) {
    const paths = dataPaths(join(base, org));
    ensureDir(paths.dir);
    writeKeyFile(paths.nodeKey, nodeKeys[org], `${org} node`);
    writeFileAtomic(paths.genesis, `${JSON.stringify(genesis)}\n`, 0o644);
    dirs[org] = paths.dir;
  }
  return { dirs, admins, nodeKeys };
}

function newOrderer(name: string): EmbeddedOrderer {
  const orderer = new EmbeddedOrderer(join(tmp.path, `${name}-${randomUUID()}.db`));
  cleanups.push(() => orderer.close());
  return orderer;
}

async function open(net: Net, org: OrgId, orderer: Orderer): Promise<RunningNode> {
  const running = await openNode(net.dirs[org], {
    orderer,
    pool,
    log: silentLogger,
    listen: false,
    flags: { logLevel: "silent", batchMaxWaitMs: 2, auditOnStart: false },
  });
  cleanups.push(() => running.close());
  return running;
}

function watch(running: RunningNode, board: HeadBoard, publishEveryMs = 10, publishPerNodeMs = 0): ForkWatch {
  const fw = new ForkWatch({ node: running.node, board, log: silentLogger, publishEveryMs, publishPerNodeMs });
  fw.start();
  // Stopped before the node closes (cleanups run in reverse).
  cleanups.push(() => fw.stop());
  return fw;
}

/** `count` valid enrolments by the org's admin, committed through `running` in one batch. */
async function commitEnrolments(net: Net, org: OrgId, running: RunningNode, count: number): Promise<void> {
  const items = [];
  for (let i = 0; i < count; i++) {
    const tx = signNew(
      net.admins[org],
      "member.enrol",
      { member: randomUUID(), org, role: "clinician", key: newKey().keyId },
      Date.now(),
    );
    items.push({ tx, id: txIdOf(tx) });
  }
  const results = await Promise.all(await running.node.submit(items));
  assert.ok(results.every((r) => r.valid));
}

async function eventually<T>(check: () => T | undefined, what: string, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Lets boards deliver and watches check (deliveries are microtasks, checks synchronous). */
const settle = (ms = 50) => new Promise((r) => setTimeout(r, ms));

function logSize(running: RunningNode): number {
  return running.node.store.head()?.size ?? 0;
}

function ownRoot(running: RunningNode, size = logSize(running)): string {
  return toHex(subtreeRoot(running.node.store, 0, size));
}

/** A head over `size` leaves with any root, signed by `key` (registered or not). */
function headBy(key: KeyPair, size: number, root: string, extra: Partial<SignedTreeHead> = {}): SignedTreeHead {
  return signTreeHead(
    {
      size,
      root,
      height: extra.height ?? size,
      stateDigest: extra.stateDigest ?? "0".repeat(64),
      time: extra.time ?? Date.now(),
    },
    key,
  );
}

const randomRoot = () => randomBytes(32).toString("hex");
const metric = (running: RunningNode, name: string) =>
  Number(new RegExp(`^${name} (\\S+)$`, "m").exec(running.node.metrics.render())?.[1] ?? Number.NaN);

async function assertHaltedByFork(running: RunningNode, reason: RegExp): Promise<void> {
  assert.match(running.node.halted ?? "", reason);
  assert.equal(metric(running, "careledger_fork_alarm"), 1);
  const health = await running.app.inject({ method: "GET", url: "/healthz" });
  assert.equal(health.statusCode, 503);
  assert.match(health.json().reason, reason);
  // Writes refused…
  await assert.rejects(
    running.node.submit([{ tx: signNew(newKey(), "member.enrol", {}, Date.now()), id: "0".repeat(64) }]),
    /halted/,
  );
  // …reads served.
  const head = await running.app.inject({ method: "GET", url: "/ledger/head" });
  assert.equal(head.statusCode, 200);
}

test("two honest nodes on one orderer check each other's heads through many blocks and raise no alarm", async (t) => {
  t.after(closeAll);
  const net = makeNetwork();
  const orderer = newOrderer("honest");
  const board = new MemoryHeadBoard();
  const a = await open(net, "org-a", orderer);
  const b = await open(net, "org-b", orderer);
  const wa = watch(a, board);
  const wb = watch(b, board);
  assert.equal(metric(a, "careledger_fork_alarm"), 0);
  for (let i = 0; i < 40; i++) {
    await commitEnrolments(net, i % 2 === 0 ? "org-a" : "org-b", i % 2 === 0 ? a : b, 1 + (i % 5));
  }
  // The last batch went through one of them; the other may still be applying it (under load, for a while).
  const size = Math.max(logSize(a), logSize(b));
  await eventually(() => (logSize(a) === size && logSize(b) === size ? true : undefined), "both reach the last batch");
  // Each has checked the other's head at the final size (the throttle publishes the newest head last).
  for (const [w, peer] of [
    [wa, net.nodeKeys["org-b"].keyId],
    [wb, net.nodeKeys["org-a"].keyId],
  ] as const) {
    await eventually(
      () => w.peerHeads().find((p) => p.signer === peer && p.size === size && p.pendingSize === undefined),
      "the peer's final head is checked",
    );
  }
  assert.equal(wa.alarm, undefined);
  assert.equal(wb.alarm, undefined);
  assert.equal(a.node.halted, undefined);
  assert.equal(b.node.halted, undefined);
  assert.equal(metric(a, "careledger_fork_alarm"), 0);
  assert.ok(metric(a, "careledger_heads_checked_total") >= 2);
  assert.ok(Number.isNaN(metric(a, "careledger_heads_ignored_total")));
  // Both nodes' heads are on the board, at the final size.
  assert.deepEqual(
    board
      .current()
      .map((h) => h.size)
      .sort(),
    [size, size],
  );
});

test("a node whose log differs (same genesis, another orderer) makes the honest nodes halt: 503, writes refused, reads served", async (t) => {
  t.after(closeAll);
  const net = makeNetwork();
  const shared = newOrderer("shared");
  const separate = newOrderer("separate");
  const board = new MemoryHeadBoard();
  const a = await open(net, "org-a", shared);
  const b = await open(net, "org-b", shared);
  const c = await open(net, "org-c", separate);
  const wa = watch(a, board);
  const wb = watch(b, board);
  const wc = watch(c, board);
  await commitEnrolments(net, "org-a", a, 3);
  // c halts as it commits this block (a's head for this size is waiting there); its client is told so.
  await commitEnrolments(net, "org-c", c, 3).catch((error: Error) => assert.match(error.message, /halted: fork/));
  assert.equal(logSize(a), logSize(c));
  assert.notEqual(ownRoot(a), ownRoot(c));
  const cKey = net.nodeKeys["org-c"].keyId.slice(0, 12);
  const reason = new RegExp(
    `^fork: node ${cKey}… of org-c signed root ${ownRoot(c).slice(0, 12)}… for size ${logSize(c)}; this node has ${ownRoot(a).slice(0, 12)}…$`,
  );
  await eventually(() => (a.node.halted && b.node.halted ? true : undefined), "a and b halt");
  await assertHaltedByFork(a, reason);
  await assertHaltedByFork(b, reason);
  assert.match(wa.alarm ?? "", reason);
  assert.match(wb.alarm ?? "", reason);
  // The odd one out sees the same contradiction from its side.
  await eventually(() => wc.alarm, "c halts too");
  assert.match(c.node.halted ?? "", /^fork: node [0-9a-f]{12}… of org-[ab] signed root/);
  // A halted node still answers reads of its (honest) ledger.
  const block = await a.app.inject({ method: "GET", url: "/ledger/blocks/1" });
  assert.equal(block.statusCode, 200);
});

test("a registered node that signs a false head (or a false state digest) raises the alarm", async (t) => {
  t.after(closeAll);
  const net = makeNetwork();
  const orderer = newOrderer("false-head");
  const board = new MemoryHeadBoard();
  const a = await open(net, "org-a", orderer);
  const wa = watch(a, board);
  await commitEnrolments(net, "org-a", a, 5);
  const size = logSize(a) - 2;
  const lie = headBy(net.nodeKeys["org-b"], size, randomRoot());
  await board.publish(lie);
  await eventually(() => wa.alarm, "a halts");
  await assertHaltedByFork(
    a,
    new RegExp(
      `^fork: node ${lie.signer.slice(0, 12)}… of org-b signed root ${lie.root.slice(0, 12)}… for size ${size}; this node has ${ownRoot(a, size).slice(0, 12)}…$`,
    ),
  );

  // The right root with a state digest this node does not have, at this node's own height.
  const net2 = makeNetwork();
  const a2 = await open(net2, "org-a", newOrderer("false-digest"));
  const board2 = new MemoryHeadBoard();
  const wa2 = watch(a2, board2);
  await commitEnrolments(net2, "org-a", a2, 2);
  const head = a2.node.store.head();
  assert.ok(head);
  await board2.publish(
    headBy(net2.nodeKeys["org-c"], head.size, ownRoot(a2), { height: head.height, stateDigest: randomRoot() }),
  );
  await eventually(() => wa2.alarm, "a2 halts");
  assert.match(a2.node.halted ?? "", /^fork: node [0-9a-f]{12}… of org-c signed state digest [0-9a-f]{12}… at height/);
});

test("heads from strangers, member keys or with bad signatures are ignored and raise no alarm", async (t) => {
  t.after(closeAll);
  const net = makeNetwork();
  const orderer = newOrderer("stranger");
  const board = new MemoryHeadBoard();
  const a = await open(net, "org-a", orderer);
  const wa = watch(a, board);
  await commitEnrolments(net, "org-a", a, 4);
  const size = logSize(a);
  const stranger = newKey();
  await board.publish(headBy(stranger, size, randomRoot()));
  await board.publish(headBy(stranger, size - 1, randomRoot()));
  // An admin (member) key of a registered org is not a node key.
  await board.publish(headBy(net.admins["org-b"], size, randomRoot()));
  // A registered node key's head whose signature does not match its fields.
  const forged = { ...headBy(net.nodeKeys["org-b"], size, ownRoot(a)), root: randomRoot() };
  assert.equal(verifyTreeHead(forged), false);
  await board.publish(forged);
  await settle();
  assert.equal(wa.alarm, undefined);
  assert.equal(a.node.halted, undefined);
  assert.equal(metric(a, "careledger_heads_ignored_total"), 4);
  assert.equal(metric(a, "careledger_fork_alarm"), 0);
  assert.deepEqual(wa.peerHeads(), []);
  // The honest head of that registered node is still checked and accepted afterwards.
  await board.publish(headBy(net.nodeKeys["org-b"], size, ownRoot(a)));
  await settle();
  assert.equal(wa.peerHeads()[0]?.size, size);
  assert.equal(a.node.halted, undefined);
});

/** Delivers another orderer's batches only up to `limit`: a node that is behind, on demand. */
class GatedOrderer implements Orderer {
  private readonly inner: Orderer;
  private limit: number;
  private opened: (() => void)[] = [];
  constructor(inner: Orderer, limit: number) {
    this.inner = inner;
    this.limit = limit;
  }
  release(limit = Number.POSITIVE_INFINITY): void {
    this.limit = limit;
    for (const wake of this.opened.splice(0)) wake();
  }
  submit(proposer: KeyId, txs: SignedTx[]): Promise<number> {
    return this.inner.submit(proposer, txs);
  }
  subscribe(fromSeq: number, onBatch: BatchHandler, onError?: (error: unknown) => void): () => void {
    return this.inner.subscribe(
      fromSeq,
      async (batch: Batch) => {
        while (batch.seq > this.limit) await new Promise<void>((wake) => this.opened.push(wake));
        await onBatch(batch);
      },
      onError,
    );
  }
  lastSeq(): number {
    return this.inner.lastSeq();
  }
  async close(): Promise<void> {
    this.release();
  }
}

test("a head ahead of this node waits and is checked once this node catches up: accepted if it matches", async (t) => {
  t.after(closeAll);
  const net = makeNetwork();
  const orderer = newOrderer("ahead");
  const board = new MemoryHeadBoard();
  const b = await open(net, "org-b", orderer);
  watch(b, board);
  const gate = new GatedOrderer(orderer, orderer.lastSeq());
  cleanups.push(() => gate.close());
  const a = await open(net, "org-a", gate);
  const wa = watch(a, board);
  for (let i = 0; i < 3; i++) await commitEnrolments(net, "org-b", b, 2);
  const bKey = net.nodeKeys["org-b"].keyId;
  const bSize = logSize(b);
  const pending = await eventually(
    () => wa.peerHeads().find((p) => p.signer === bKey && p.pendingSize === bSize),
    "b's head waits at a",
  );
  assert.ok(logSize(a) < bSize);
  assert.equal(pending.size, bSize);
  gate.release();
  await eventually(() => (logSize(a) === bSize ? true : undefined), "a catches up");
  await eventually(
    () => wa.peerHeads().find((p) => p.signer === bKey && p.pendingSize === undefined),
    "b's head checked at a",
  );
  assert.equal(wa.alarm, undefined);
  assert.equal(a.node.halted, undefined);
});

test("a false head ahead of this node raises the alarm once this node reaches its size", async (t) => {
  t.after(closeAll);
  const net = makeNetwork();
  const orderer = newOrderer("ahead-false");
  const board = new MemoryHeadBoard();
  const a = await open(net, "org-a", orderer);
  const wa = watch(a, board);
  await commitEnrolments(net, "org-a", a, 2);
  const target = logSize(a) + 3;
  const lie = headBy(net.nodeKeys["org-b"], target, randomRoot());
  await board.publish(lie);
  await settle();
  assert.equal(wa.alarm, undefined);
  assert.equal(wa.peerHeads()[0]?.pendingSize, target);
  await commitEnrolments(net, "org-a", a, 1);
  await settle();
  assert.equal(wa.alarm, undefined, "not yet at its size");
  // The block that reaches the size halts the node: its client hears that the node halted.
  await assert.rejects(commitEnrolments(net, "org-a", a, 4), /halted: fork/);
  assert.ok(wa.alarm);
  assert.match(
    a.node.halted ?? "",
    new RegExp(`signed root ${lie.root.slice(0, 12)}… for size ${target}; this node has`),
  );
});

test("a signer's head that does not extend its earlier head raises the alarm (smaller size, or same size other root)", async (t) => {
  t.after(closeAll);
  const net = makeNetwork();
  const orderer = newOrderer("inconsistent");
  const a = await open(net, "org-a", orderer);
  const board = new MemoryHeadBoard();
  const wa = watch(a, board);
  await commitEnrolments(net, "org-a", a, 4);
  const size = logSize(a);
  const bKey = net.nodeKeys["org-b"];
  // Two heads ahead of this node, same size, different roots: the second contradicts the first before either can
  // be compared with this node's log.
  await board.publish(headBy(bKey, size + 50, randomRoot()));
  await settle();
  assert.equal(wa.alarm, undefined);
  await board.publish(headBy(bKey, size + 50, randomRoot()));
  await eventually(() => wa.alarm, "a halts");
  assert.match(
    a.node.halted ?? "",
    new RegExp(`for size ${size + 50} after root [0-9a-f]{12}… for size ${size + 50}$`),
  );

  // A smaller head after a larger one, both matching this node's log where it can tell: still a contradiction.
  const net2 = makeNetwork();
  const a2 = await open(net2, "org-a", newOrderer("inconsistent-2"));
  const board2 = new MemoryHeadBoard();
  const wa2 = watch(a2, board2);
  await commitEnrolments(net2, "org-a", a2, 4);
  const size2 = logSize(a2);
  const cKey = net2.nodeKeys["org-c"];
  await board2.publish(headBy(cKey, size2, ownRoot(a2)));
  await settle();
  assert.equal(wa2.alarm, undefined);
  await board2.publish(headBy(cKey, size2 - 1, ownRoot(a2, size2 - 1)));
  await eventually(() => wa2.alarm, "a2 halts");
  assert.match(
    a2.node.halted ?? "",
    new RegExp(`of org-c signed root [0-9a-f]{12}… for size ${size2 - 1} after root [0-9a-f]{12}… for size ${size2}$`),
  );
});

test("publishing: once at start, throttled after blocks, always ending on the newest head", async (t) => {
  t.after(closeAll);
  const net = makeNetwork();
  const orderer = newOrderer("publish");
  const a = await open(net, "org-a", orderer);
  const published: SignedTreeHead[] = [];
  const inner = new MemoryHeadBoard();
  const board: HeadBoard = {
    publish: (sth) => {
      published.push(sth);
      return inner.publish(sth);
    },
    subscribe: (onHead) => inner.subscribe(onHead),
    close: () => inner.close(),
  };
  watch(a, board, 300);
  await eventually(() => (published.length === 1 ? true : undefined), "the start-up head");
  assert.equal(published[0]?.height, 0);
  const started = performance.now();
  for (let i = 0; i < 20; i++) await commitEnrolments(net, "org-a", a, 1);
  const elapsed = performance.now() - started;
  const height = a.node.height;
  await eventually(() => (published.at(-1)?.height === height ? true : undefined), "the newest head", 15_000);
  // At most one publish per 300 ms window (plus the one at start), however many blocks.
  assert.ok(published.length <= 2 + Math.ceil((performance.now() - started) / 300), `${published.length} publishes`);
  // Fewer publishes than blocks — when blocks came faster than the window (a loaded machine may be slower).
  if (elapsed / 20 < 150) {
    assert.ok(height > published.length, `height ${height}, ${published.length} publishes in ${elapsed} ms`);
  }
  for (const sth of published) assert.equal(verifyTreeHead(sth), true);
  // No new block, no new publish.
  const count = published.length;
  await settle(400);
  assert.equal(published.length, count);
});

test("publishing slows down as the network grows: at most once per publishPerNodeMs for each node heard from", async (t) => {
  t.after(closeAll);
  const net = makeNetwork();
  const orderer = newOrderer("grow");
  const inner = new MemoryHeadBoard();
  const [a, b, c] = [
    await open(net, "org-a", orderer),
    await open(net, "org-b", orderer),
    await open(net, "org-c", orderer),
  ];
  const times: number[] = [];
  const board: HeadBoard = {
    publish: (sth) => {
      if (sth.signer === net.nodeKeys["org-a"].keyId) times.push(performance.now());
      return inner.publish(sth);
    },
    subscribe: (onHead) => inner.subscribe(onHead),
    close: () => inner.close(),
  };
  const wa = watch(a, board, 10, 100);
  watch(b, board);
  watch(c, board);
  // B and C publish their start-up heads: A then hears from two other nodes, three with itself.
  await eventually(() => (wa.peerHeads().length === 2 ? true : undefined), "A hears from B and C");
  await settle(400);
  const from = times.length;
  const until = performance.now() + 2500;
  while (performance.now() < until) await commitEnrolments(net, "org-a", a, 1);
  const during = times.slice(from);
  const gaps = during.slice(1).map((t, k) => t - (during[k] as number));
  assert.ok(gaps.length >= 2, `${during.length} publishes while blocks came for 2.5 s`);
  // 3 nodes × 100 ms between publishes (10 ms alone would allow ~250 here). Each time is seen at the board, after the
  // head's flush, which took 0–200 ms in CI: single gaps vary by that much (one was 105 ms after one of 495), so the
  // mean over the run is what holds to the interval, less one flush's worth spread over the gaps.
  const mean = gaps.reduce((sum, g) => sum + g, 0) / gaps.length;
  assert.ok(mean >= 240, `gaps ${gaps.map(Math.round).join(", ")} ms`);
});

test("by default a node's heads go out at most once a second", async (t) => {
  t.after(closeAll);
  const net = makeNetwork();
  const running = await open(net, "org-a", newOrderer("defaults"));
  const defaults = new ForkWatch({ node: running.node, board: new MemoryHeadBoard(), log: silentLogger });
  // Each publish is an etcd put on a real network: a raft round with a WAL fsync on every member.
  assert.equal(defaults.publishIntervalMs, 1000);
});

test("a publish that fails is retried without waiting for a block; the watch keeps checking meanwhile", async (t) => {
  t.after(closeAll);
  const net = makeNetwork();
  const a = await open(net, "org-a", newOrderer("retry"));
  const inner = new MemoryHeadBoard();
  let failures = 1;
  const board: HeadBoard = {
    publish: async (sth) => {
      if (failures-- > 0) throw new Error("etcd unavailable");
      return inner.publish(sth);
    },
    subscribe: (onHead) => inner.subscribe(onHead),
    close: () => inner.close(),
  };
  const wa = watch(a, board, 10);
  // The start-up head goes out once it is durable: on a loaded machine that can take longer than a fixed pause.
  await eventually(() => (metric(a, "careledger_heads_publish_failed_total") === 1 ? true : undefined), "a failure");
  assert.deepEqual(inner.current(), []);
  await inner.publish(headBy(net.nodeKeys["org-b"], logSize(a), randomRoot()));
  await eventually(() => wa.alarm, "checking goes on while publishing fails");
  await eventually(() => inner.current().find((h) => h.signer === a.node.key.keyId), "the retried publish", 15_000);
  assert.equal(metric(a, "careledger_heads_published_total"), 1);
});

// ---- cost -----------------------------------------------------------------------------------------------------------

test("cost: checking a head against a 10^5-leaf store (root at any size from stored nodes, signature, state reads)", (t) => {
  const store = LedgerStore.open(join(tmp.path, "cost.db"));
  try {
    const key = newKey();
    let frontier: Frontier = EMPTY_FRONTIER;
    let prevHash = "0".repeat(64);
    const perBlock = 100;
    const blocks = 1000;
    for (let height = 0; height < blocks; height++) {
      const entries: BlockEntry[] = [];
      const nodes: MerkleNode[] = [];
      for (let i = 0; i < perBlock; i++) {
        const n = height * perBlock + i;
        // Entries need not be signed txs here: the store and the Merkle log only see their leaf bytes.
        const entry = {
          id: randomBytes(32).toString("hex"),
          tx: { type: "test.tx", payload: { n }, signer: key.keyId, nonce: String(n), createdAt: n, sig: "x" },
          result: { valid: true, code: "ok" },
        } as BlockEntry;
        entries.push(entry);
        const appended = appendLeaf(frontier, hashLeaf(leafBytes(entry)));
        frontier = appended.frontier;
        nodes.push(...appended.newNodes);
      }
      const block: Block = {
        height,
        prevHash,
        txRoot: "0".repeat(64),
        time: 1000 + height,
        proposer: key.keyId,
        size: frontier.size,
        stateDigest: "1".repeat(64),
        txs: entries,
      };
      prevHash = randomBytes(32).toString("hex");
      store.commitBlock(block, prevHash, nodes, undefined);
    }
    assert.equal(store.head()?.size, 100_000);
    const sizes = Array.from({ length: 2000 }, () => 1 + Math.floor(Math.random() * 100_000));
    let started = performance.now();
    for (const size of sizes) subtreeRoot(store, 0, size);
    const rootUs = ((performance.now() - started) * 1000) / sizes.length;
    const sth = headBy(key, 100_000, randomRoot());
    started = performance.now();
    for (let i = 0; i < 500; i++) verifyTreeHead(sth);
    const verifyUs = ((performance.now() - started) * 1000) / 500;
    t.diagnostic(
      `root at a random size of a 10^5-leaf store: ${rootUs.toFixed(1)} µs; head signature: ${verifyUs.toFixed(1)} µs`,
    );
    // 10 nodes × 4 heads/s is 40 checks/s: even 1 ms a check would be 4% of one core.
    assert.ok(rootUs < 1000, `${rootUs} µs per root`);
  } finally {
    store.close();
  }
});
