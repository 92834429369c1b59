// For tests of where a node keeps its logs: commit one tx through a node opened in process, and read a table's
// integer column from a database file.

import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { accessLogPayload } from "../src/contract/fixtures.ts";
import { parseSignedTx } from "../src/ledger/tx.ts";
import { readKeyFile } from "../src/node/datadir.ts";
import { signNew } from "../src/node/network.ts";
import { openNode } from "../src/node/runtime.ts";

/** Opens the node of `dir`, commits one access-log tx signed by its node key, closes it; returns the tx's height. */
export async function commitOne(dir: string): Promise<number> {
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

/** `table`'s `seq` column in order, or undefined when the database has no such table. */
export function seqsOf(path: string, table: "batches" | "cursor"): number[] | undefined {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const exists = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?").get(table);
    if (!exists) return undefined;
    return db
      .prepare(`SELECT seq FROM ${table} ORDER BY seq`)
      .all()
      .map((row) => row.seq as number);
  } finally {
    db.close();
  }
}
