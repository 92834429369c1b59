// Kill -9 a real node at random points while it is committing, restart it, and check that every tx it acknowledged
// is still there, that no half block exists, and that `careledger verify` passes.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, test } from "node:test";
import { accessLogPayload } from "../src/contract/fixtures.ts";
import { readKeyFile } from "../src/node/datadir.ts";
import { initNetwork, signNew } from "../src/node/network.ts";
import { LedgerStore } from "../src/store/ledger-store.ts";
import { postJson, runCli, startNode, tempDir } from "./helpers.ts";

const work = tempDir("crash");
after(() => work.remove());

test("a node killed with SIGKILL mid-write restarts consistent, with no acknowledged tx lost", {
  timeout: 240_000,
}, async () => {
  const dir = join(work.path, "node");
  initNetwork(dir, { orgName: "Crash Test Practice" });
  const nodeKey = readKeyFile(join(dir, "node.key"));
  const acknowledged = new Set<string>();
  const rounds = 5;
  let counter = 0;
  const makeBatch = (n: number) =>
    Array.from({ length: n }, () =>
      signNew(
        nodeKey,
        "access.log",
        accessLogPayload({
          requester: nodeKey.keyId,
          patient: randomUUID(),
          custodian: "crash-test-practice",
          resourceId: `obs-${counter++}`,
          decision: "deny",
        }),
        Date.now(),
      ),
    );

  for (let round = 0; round < rounds; round++) {
    const node = await startNode(dir);
    let stop = false;
    // Four clients submit batches and keep every id the node said was committed.
    const clients = Array.from({ length: 4 }, async () => {
      while (!stop) {
        const batch = makeBatch(50);
        try {
          const response = await postJson(`${node.url}/ledger/txs`, batch);
          if (response.status === 200) {
            for (const r of (response.json as { results: { id: string }[] }).results) acknowledged.add(r.id);
          }
        } catch {
          // the node died under us: these were never acknowledged
          return;
        }
      }
    });
    // Kill at a random point while blocks are being written.
    await new Promise((r) => setTimeout(r, 150 + Math.floor(Math.random() * 600)));
    node.child.kill("SIGKILL");
    await node.exited;
    stop = true;
    await Promise.all(clients);
  }
  assert.ok(acknowledged.size > 200, `expected a real load, got ${acknowledged.size} acknowledged txs`);

  // Restart once more: the node must come up (its start-up checks pass) and catch up from the orderer's log.
  const final = await startNode(dir);
  const head = (await (await fetch(`${final.url}/ledger/head`)).json()) as { height: number; size: number };
  assert.ok(head.height > 0);
  final.child.kill("SIGTERM");
  const [code] = await final.exited;
  assert.equal(code, 0, `node should stop cleanly on SIGTERM: ${final.stderr()}`);

  const store = LedgerStore.open(join(dir, "ledger.db"));
  const missing = [...acknowledged].filter((id) => !store.hasTx(id));
  store.close();
  assert.deepEqual(missing, [], "every acknowledged tx is in the ledger after the crashes");

  const verify = await runCli(["verify", "--dir", dir]);
  assert.equal(verify.code, 0, `verify should pass after crashes: ${verify.stdout} ${verify.stderr}`);
  assert.match(verify.stdout, /^ok: /);
});
