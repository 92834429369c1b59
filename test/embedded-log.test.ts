// Where a node's embedded orderer keeps its log: in the ledger's own database for a data dir made now (one WAL, one
// flush per block), in the separate orderer.db for a data dir that already has one.

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, test } from "node:test";
import { initNetwork } from "../src/node/network.ts";
import { openNode } from "../src/node/runtime.ts";
import { EmbeddedOrderer } from "../src/ordering/embedded.ts";
import { tempDir } from "./helpers.ts";
import { commitOne, seqsOf } from "./support-commit.ts";

const work = tempDir("embedded-log");
after(() => work.remove());

test("a new data dir keeps its orderer log in ledger.db, and a restart continues it", async () => {
  const dir = join(work.path, "new");
  initNetwork(dir, { orgName: "Log Test Practice" });
  const first = await commitOne(dir);
  const second = await commitOne(dir);
  assert.equal(second, first + 1);
  assert.equal(existsSync(join(dir, "orderer.db")), false, "no separate orderer.db");
  assert.deepEqual(seqsOf(join(dir, "ledger.db"), "batches")?.slice(-2), [first, second]);
});

test("a data dir that already has an orderer.db keeps using it", async () => {
  const dir = join(work.path, "old");
  initNetwork(dir, { orgName: "Log Test Practice" });
  await new EmbeddedOrderer(join(dir, "orderer.db")).close();
  const height = await commitOne(dir);
  assert.deepEqual(seqsOf(join(dir, "orderer.db"), "batches")?.at(-1), height);
  assert.equal(seqsOf(join(dir, "ledger.db"), "batches"), undefined, "no log table in ledger.db");
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
