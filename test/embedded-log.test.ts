// Where a node's embedded orderer keeps its log: in the ledger's own database for a data dir made now (one WAL, one
// flush per block), in the separate orderer.db for a data dir that already has one.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, test } from "node:test";
import { accessLogPayload } from "../src/contract/fixtures.ts";
import { parseSignedTx } from "../src/ledger/tx.ts";
import { readKeyFile } from "../src/node/datadir.ts";
import { initNetwork, signNew } from "../src/node/network.ts";
import { openNode } from "../src/node/runtime.ts";
import { EmbeddedOrderer } from "../src/ordering/embedded.ts";
import { tempDir } from "./helpers.ts";

const work = tempDir("embedded-log");
after(() => work.remove());

/** Opens the node, commits one tx, closes it; returns the tx's height. */
async function commitOne(dir: string): Promise<number> {
  const nodeKey = readKeyFile(join(dir, "node.key"));
  const tx = signNew(
    nodeKey,
    "access.log",
    accessLogPayload({
      requester: nodeKey.keyId,
      patient: randomUUID(),
      custodian: "log-test-practice",
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

function batchSeqs(path: string): number[] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return db
      .prepare("SELECT seq FROM batches ORDER BY seq")
      .all()
      .map((row) => row.seq as number);
  } finally {
    db.close();
  }
}

test("a new data dir keeps its orderer log in ledger.db, and a restart continues it", async () => {
  const dir = join(work.path, "new");
  initNetwork(dir, { orgName: "Log Test Practice" });
  const first = await commitOne(dir);
  const second = await commitOne(dir);
  assert.equal(second, first + 1);
  assert.equal(existsSync(join(dir, "orderer.db")), false, "no separate orderer.db");
  assert.deepEqual(batchSeqs(join(dir, "ledger.db")).slice(-2), [first, second]);
});

test("a data dir that already has an orderer.db keeps using it", async () => {
  const dir = join(work.path, "old");
  initNetwork(dir, { orgName: "Log Test Practice" });
  await new EmbeddedOrderer(join(dir, "orderer.db")).close();
  const height = await commitOne(dir);
  assert.deepEqual(batchSeqs(join(dir, "orderer.db")).at(-1), height);
  const ledger = new DatabaseSync(join(dir, "ledger.db"), { readOnly: true });
  const tables = ledger.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'batches'").all();
  ledger.close();
  assert.equal(tables.length, 0, "no log table in ledger.db");
});

test("a node whose orderer log lost batches its ledger holds refuses to start, saying so", async () => {
  const dir = join(work.path, "lost");
  initNetwork(dir, { orgName: "Log Test Practice" });
  const height = await commitOne(dir);
  const ledger = new DatabaseSync(join(dir, "ledger.db"));
  ledger.prepare("DELETE FROM batches WHERE seq = ?").run(height);
  ledger.close();
  await assert.rejects(
    openNode(dir, { flags: { port: 0, logLevel: "silent", auditOnStart: false } as never }),
    new RegExp(`the orderer log holds ${height - 1} batches but the ledger ${height} blocks`),
  );
  // Refusing left nothing locked or open: a second attempt says the same.
  await assert.rejects(
    openNode(dir, { flags: { port: 0, logLevel: "silent", auditOnStart: false } as never }),
    /the orderer log holds/,
  );
});
