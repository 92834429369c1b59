// Catching up from a peer's blocks (what a node does when etcd has compacted what it missed): every block is rebuilt
// by the catching-up node's own contract and stored only if it is byte-for-byte the peer's block. A peer that alters a
// block gets nowhere past it.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import Fastify from "fastify";
import { catchUpFrom } from "../src/node/catch-up.ts";
import { silentLogger } from "../src/node/logger.ts";
import { initJoin } from "../src/node/network.ts";
import type { RunningNode } from "../src/node/runtime.ts";
import { NODE_INLINE_MAX_TXS, VerifyPool } from "../src/node/verify-pool.ts";
import { tempDir } from "./helpers.ts";
import { enrolTx, newNetwork, openTestNode, type TestNet } from "./support-net.ts";

const work = tempDir("catch-up");
let net: TestNet;
let peer: RunningNode;

before(async () => {
  net = newNetwork(join(work.path, "peer"));
  peer = await openTestNode(net.dir, { listen: true });
  // Several blocks: one request each.
  for (let i = 0; i < 6; i++) {
    const txs = Array.from({ length: 5 }, () => enrolTx(net, "clinician").tx);
    const response = await fetch(`${peer.url}/ledger/txs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(txs),
    });
    assert.equal(response.status, 200, await response.text());
  }
  assert.ok(peer.node.height >= 6);
});

after(async () => {
  await peer?.close();
  work.remove();
});

/** A fresh node of the same network that has only the genesis. */
async function freshNode(name: string, pool?: VerifyPool): Promise<RunningNode> {
  const dir = join(work.path, name);
  initJoin(dir, join(net.dir, "genesis.json"));
  return openTestNode(dir, pool ? { pool } : {});
}

/** A peer that serves the real peer's block pages with each block passed through `alter` first. */
async function lyingPeer(alter: (block: { height: number; txs: { result: unknown }[] }) => void) {
  const liar = Fastify();
  liar.get<{ Querystring: { from: string } }>("/ledger/blocks", async (request, reply) => {
    const upstream = await fetch(`${peer.url}/ledger/blocks?from=${request.query.from}`);
    const page = await upstream.text();
    if (upstream.status !== 200) return reply.code(upstream.status).send(page);
    const lines = page
      .trimEnd()
      .split("\n")
      .map((line) => {
        const parsed = JSON.parse(line) as { block: { height: number; txs: { result: unknown }[] } };
        alter(parsed.block);
        return JSON.stringify(parsed);
      });
    return reply.type("application/x-ndjson").send(`${lines.join("\n")}\n`);
  });
  const url = await liar.listen({ host: "127.0.0.1", port: 0 });
  return { url, close: () => liar.close() };
}

test("a node with only the genesis applies a peer's blocks and reaches its exact head", async () => {
  const pool = new VerifyPool(2, { inlineMaxTxs: NODE_INLINE_MAX_TXS });
  const node = await freshNode("fresh", pool);
  try {
    // The embedded orderer has no etcd positions to give: the blocks are applied, then the position is refused.
    await assert.rejects(catchUpFrom(node.node, peer.url, { peers: () => [], log: silentLogger }), /404/);
    assert.equal(node.node.height, peer.node.height);
    assert.equal(node.node.store.head()?.hash, peer.node.store.head()?.hash);
    assert.equal(node.node.store.head()?.stateDigest, peer.node.store.head()?.stateDigest);
    // A catch-up is throughput work: its small blocks are checked on the workers, in parallel, not on this thread.
    assert.equal(pool.checked.inline, 0);
    assert.ok(pool.checked.onWorkers >= 30, `${pool.checked.onWorkers} txs checked on workers`);
  } finally {
    await node.close();
    await pool.close();
  }
});

test("a peer's claimed tx results do not count: the node computes them itself", async () => {
  const liar = await lyingPeer((block) => {
    for (const entry of block.txs) entry.result = { valid: false, code: "unauthorised" };
  });
  const url = liar.url;
  const node = await freshNode("results-ignored");
  try {
    await assert.rejects(catchUpFrom(node.node, url, { peers: () => [], log: silentLogger }), /404/);
    assert.equal(node.node.store.head()?.hash, peer.node.store.head()?.hash);
    const stored = node.node.store.getBlock(1);
    assert.ok(
      stored?.txs.every((e) => e.result.valid),
      "the results stored are the node's own",
    );
  } finally {
    await node.close();
    await liar.close();
  }
});

test("a block altered by the peer is refused: the node stops before it, with what came before applied", async () => {
  const target = 3;
  // Block `target` loses a tx (censorship): its header is left as it was.
  const liar = await lyingPeer((block) => {
    if (block.height === target) block.txs.pop();
  });
  const url = liar.url;
  const node = await freshNode("lied-to");
  try {
    await assert.rejects(
      catchUpFrom(node.node, url, { peers: () => [], log: silentLogger }),
      /block 3 from a peer does not rebuild to the same block here/,
    );
    assert.equal(node.node.height, target - 1);
    assert.equal(node.node.halted, undefined, "a lying peer does not halt the node");
  } finally {
    await node.close();
    await liar.close();
  }
});
