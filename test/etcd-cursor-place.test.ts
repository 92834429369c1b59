// Where a node on an etcd network keeps its delivery cursor (seq → etcd revision): in the ledger's own database for a
// data dir made now (its rows are flushed with the blocks), in the separate etcd-cursor.db for a dir that has one.

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { initNetwork } from "../src/node/network.ts";
import { DeliveryCursor } from "../src/ordering/etcd-cursor.ts";
import { commitOne, etcdForThisFile, seqsOf } from "./support-commit.ts";

const work = etcdForThisFile("etcd-cursor-place");

function initEtcdNode(name: string): string {
  const dir = join(work.path, name);
  initNetwork(dir, {
    orgName: `Cursor ${name}`,
    // Each dir is its own network: its own prefix in the one etcd.
    config: { orderer: { kind: "etcd", endpoints: work.etcd().endpoints, prefix: `/careledger/cursor-${name}/` } },
  });
  return dir;
}

test("a new etcd data dir keeps its cursor in ledger.db, and a restart resumes from it", async () => {
  const dir = initEtcdNode("new");
  const first = await commitOne(dir);
  const second = await commitOne(dir);
  assert.equal(second, first + 1, "the restarted node continued from the cursor's position");
  assert.equal(existsSync(join(dir, "etcd-cursor.db")), false, "no separate etcd-cursor.db");
  assert.deepEqual(seqsOf(join(dir, "ledger.db"), "cursor")?.slice(-2), [first, second]);
});

test("an etcd data dir that already has an etcd-cursor.db keeps using it", async () => {
  const dir = initEtcdNode("old");
  new DeliveryCursor(join(dir, "etcd-cursor.db")).close();
  const height = await commitOne(dir);
  assert.equal(seqsOf(join(dir, "etcd-cursor.db"), "cursor")?.at(-1), height);
  assert.equal(seqsOf(join(dir, "ledger.db"), "cursor"), undefined, "no cursor table in ledger.db");
});
