// Where a node checks signatures: small live jobs on its own thread (a request's txs, the foreign txs of a block
// ordered just now), catch-up work on the pool's workers (old blocks from the orderer, blocks from a peer), so that
// live traffic skips two thread hand-offs and a catch-up still checks in parallel.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { readKeyFile } from "../src/node/datadir.ts";
import { initJoin } from "../src/node/network.ts";
import type { RunningNode } from "../src/node/runtime.ts";
import { NODE_INLINE_MAX_TXS, VerifyPool } from "../src/node/verify-pool.ts";
import { tempDir } from "./helpers.ts";
import { accessLogTx, call, newNetwork, openTestNode, registerTx } from "./support-net.ts";
import { ScriptedOrderer } from "./support-orderer.ts";

const work = tempDir("verify-inline");
const opened: RunningNode[] = [];
const pools: VerifyPool[] = [];
after(async () => {
  for (const node of opened) await node.close();
  for (const pool of pools) await pool.close();
  work.remove();
});

const nodePool = () => {
  const pool = new VerifyPool(2, { inlineMaxTxs: NODE_INLINE_MAX_TXS });
  pools.push(pool);
  return pool;
};

describe("where a node checks signatures", () => {
  test("live: a request and a just-ordered block's foreign txs on the node's thread; old blocks on the workers", async () => {
    const net = newNetwork(join(work.path, "a"), "Inline practice");
    const orderer = new ScriptedOrderer();
    const poolA = nodePool();
    const a = await openTestNode(net.dir, { orderer, pool: poolA });
    opened.push(a);
    const registered = registerTx(net);
    assert.equal((await call(a.app, "POST", "/ledger/tx", registered.tx)).status, 200);
    const txs = Array.from({ length: 5 }, () => accessLogTx(net, registered.patient));
    assert.equal((await call(a.app, "POST", "/ledger/txs", txs)).status, 200);
    // Checked at intake, each once: the blocks holding them are not checked again.
    assert.deepEqual(poolA.checked, { inline: 6, onWorkers: 0 });

    // Another node's txs, ordered now: checked when the block comes, on this thread.
    const bDir = join(work.path, "b");
    initJoin(bDir, join(net.dir, "genesis.json"));
    const bKey = readKeyFile(join(bDir, "node.key"));
    const foreign = Array.from({ length: 3 }, () => accessLogTx(net, registered.patient));
    orderer.append(orderer.next(bKey.keyId, foreign));
    await orderer.idle();
    assert.deepEqual(poolA.checked, { inline: 9, onWorkers: 0 });

    // A node that opens later replays every block from the orderer: old batches, a catch-up, checked on workers.
    await new Promise((resolve) => setTimeout(resolve, 2100));
    const poolB = nodePool();
    const b = await openTestNode(bDir, { orderer, pool: poolB });
    opened.push(b);
    await orderer.idle();
    assert.equal(b.node.height, a.node.height);
    assert.equal(poolB.checked.inline, 0);
    assert.ok(poolB.checked.onWorkers >= 9, `${poolB.checked.onWorkers} txs checked on workers`);
    const heads = await Promise.all([a, b].map((n) => call(n.app, "GET", "/ledger/head")));
    assert.equal(heads[0]?.json.hash, heads[1]?.json.hash);
  });

  test("a node with its own pool checks a request's txs where its machine load says, and /metrics tells", async () => {
    const net = newNetwork(join(work.path, "own"), "Own pool practice");
    const a = await openTestNode(net.dir, { orderer: new ScriptedOrderer() });
    opened.push(a);
    const figures = () => {
      const text = a.node.metrics.render();
      const read = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
      return {
        busy: read("careledger_machine_busy"),
        inline: read("careledger_signatures_checked_on_node_thread"),
        workers: read("careledger_signatures_checked_on_workers"),
      };
    };
    const registered = registerTx(net);
    assert.equal((await call(a.app, "POST", "/ledger/tx", registered.tx)).status, 200);
    // The machine's load is not ours to set: each request is judged by the flag read around it (ticks are 500 ms
    // apart), over a few seconds so that an idle spell, if the machine has one, is seen too.
    const seen = new Set<number>();
    const until = performance.now() + 3000;
    while (performance.now() < until) {
      const before = figures();
      const sent = performance.now();
      const txs = Array.from({ length: 3 }, () => accessLogTx(net, registered.patient));
      assert.equal((await call(a.app, "POST", "/ledger/txs", txs)).status, 200);
      const after = figures();
      assert.ok(after.busy === 0 || after.busy === 1, `careledger_machine_busy is ${after.busy}`);
      // A request that spanned a change of the flag (or could have spanned two: longer than a tick) tells nothing.
      if (after.busy !== before.busy || performance.now() - sent > 400) continue;
      seen.add(after.busy);
      const moved = { inline: after.inline - before.inline, workers: after.workers - before.workers };
      assert.deepEqual(moved, after.busy === 1 ? { inline: 3, workers: 0 } : { inline: 0, workers: 3 });
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(seen.size > 0, "requests were judged");
  });
});
