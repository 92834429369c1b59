// Where a node on an etcd network keeps its delivery cursor (seq → etcd revision): in the ledger's own database for a
// data dir made now (its rows are flushed with the blocks), in the separate etcd-cursor.db for a dir that has one.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, test } from "node:test";
import { accessLogPayload } from "../src/contract/fixtures.ts";
import { parseSignedTx } from "../src/ledger/tx.ts";
import { readKeyFile } from "../src/node/datadir.ts";
import { initNetwork, signNew } from "../src/node/network.ts";
import { openNode } from "../src/node/runtime.ts";
import { DeliveryCursor } from "../src/ordering/etcd-cursor.ts";
import { type LocalEtcdCluster, startLocalEtcdCluster } from "../src/ordering/etcd-launcher.ts";
import { tempDir } from "./helpers.ts";

const work = tempDir("etcd-cursor-place");
let etcd: LocalEtcdCluster;

before(async () => {
  etcd = await startLocalEtcdCluster(join(work.path, "etcd"), 1);
});

after(async () => {
  await etcd?.stop();
  work.remove();
});

function initEtcdNode(name: string): string {
  const dir = join(work.path, name);
  initNetwork(dir, {
    orgName: `Cursor ${name}`,
    // Each dir is its own network: its own prefix in the one etcd.
    config: { orderer: { kind: "etcd", endpoints: etcd.endpoints, prefix: `/careledger/cursor-${name}/` } },
  });
  return dir;
}

/** Opens the node, commits one tx, closes it; returns the tx's height. */
async function commitOne(dir: string): Promise<number> {
  const nodeKey = readKeyFile(join(dir, "node.key"));
  const tx = signNew(
    nodeKey,
    "access.log",
    accessLogPayload({
      requester: nodeKey.keyId,
      patient: randomUUID(),
      custodian: "cursor-test",
      resourceId: randomUUID(),
      decision: "deny",
    }),
    Date.now(),
  );
  const parsed = parseSignedTx(JSON.parse(JSON.stringify(tx)));
  if (!parsed.ok) throw new Error(parsed.error);
  const running = await openNode(dir, { flags: { port: 0, logLevel: "silent", auditOnStart: false } as never });
  try {
    const [answer] = await running.node.submit([{ tx: parsed.tx, id: parsed.id }]);
    return (await answer)?.height as number;
  } finally {
    await running.close();
  }
}

/** The cursor's seqs in a database, or undefined when it has no cursor table. */
function cursorSeqs(path: string): number[] | undefined {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const table = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'cursor'").get();
    if (!table) return undefined;
    return db
      .prepare("SELECT seq FROM cursor ORDER BY seq")
      .all()
      .map((row) => row.seq as number);
  } finally {
    db.close();
  }
}

test("a new etcd data dir keeps its cursor in ledger.db, and a restart resumes from it", async () => {
  const dir = initEtcdNode("new");
  const first = await commitOne(dir);
  const second = await commitOne(dir);
  assert.equal(second, first + 1, "the restarted node continued from the cursor's position");
  assert.equal(existsSync(join(dir, "etcd-cursor.db")), false, "no separate etcd-cursor.db");
  assert.deepEqual(cursorSeqs(join(dir, "ledger.db"))?.slice(-2), [first, second]);
});

test("an etcd data dir that already has an etcd-cursor.db keeps using it", async () => {
  const dir = initEtcdNode("old");
  new DeliveryCursor(join(dir, "etcd-cursor.db")).close();
  const height = await commitOne(dir);
  assert.equal(cursorSeqs(join(dir, "etcd-cursor.db"))?.at(-1), height);
  assert.equal(cursorSeqs(join(dir, "ledger.db")), undefined, "no cursor table in ledger.db");
});
