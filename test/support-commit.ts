// For tests of where a node keeps its logs and what it writes: commit one tx through a node opened in process, read a
// table's integer column from a database file, and a one-member etcd for a test file.

import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before } from "node:test";
import { accessLogPayload } from "../src/contract/fixtures.ts";
import { parseSignedTx } from "../src/ledger/tx.ts";
import { readKeyFile } from "../src/node/datadir.ts";
import { signNew } from "../src/node/network.ts";
import { openNode } from "../src/node/runtime.ts";
import { type LocalEtcdCluster, startLocalEtcdCluster } from "../src/ordering/etcd-launcher.ts";
import { tempDir } from "./helpers.ts";

/**
 * A temp dir and a one-member etcd in it for the tests of this file: started before them, stopped and removed after.
 * `etcd()` is the running member (called from inside a test).
 */
export function etcdForThisFile(name: string): { path: string; etcd: () => LocalEtcdCluster } {
  const work = tempDir(name);
  let etcd: LocalEtcdCluster | undefined;
  before(async () => {
    etcd = await startLocalEtcdCluster(join(work.path, "etcd"), 1);
  });
  after(async () => {
    await etcd?.stop();
    work.remove();
  });
  return {
    path: work.path,
    etcd: () => {
      if (!etcd) throw new Error("etcd is not started yet");
      return etcd;
    },
  };
}

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
