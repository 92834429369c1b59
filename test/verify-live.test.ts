// `careledger verify --dir` and `export --dir` on the data dir of a node that keeps committing: they read one
// consistent snapshot, so they pass rather than tripping over blocks written during the replay.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, test } from "node:test";
import { readKeyFile } from "../src/node/datadir.ts";
import { initNetwork, newKey, signNew } from "../src/node/network.ts";
import { postJson, runCli, startNode, stopNode, tempDir } from "./helpers.ts";

const work = tempDir("verify-live");
after(() => work.remove());

test("verify and export of a running node's data dir see one consistent ledger", { timeout: 120_000 }, async () => {
  const dir = join(work.path, "node");
  const created = initNetwork(dir, { orgName: "Live Practice" });
  const admin = readKeyFile(join(dir, "keys", "admin.key"));
  const node = await startNode(dir);
  let stop = false;
  let committed = 0;
  const writer = (async () => {
    while (!stop) {
      const batch = Array.from({ length: 40 }, () =>
        signNew(
          admin,
          "patient.register",
          { patient: randomUUID(), org: created.orgId, key: newKey().keyId },
          Date.now(),
        ),
      );
      const response = await postJson(`${node.url}/ledger/txs`, batch);
      assert.equal(response.status, 200, response.text);
      committed += batch.length;
    }
  })();
  try {
    while (committed < 200) await new Promise((r) => setTimeout(r, 20));
    const verify = await runCli(["verify", "--dir", dir]);
    assert.equal(verify.code, 0, `${verify.stdout}${verify.stderr}`);
    const exported = await runCli(["export", "--dir", dir]);
    assert.equal(exported.code, 0, exported.stderr);
    const heights = exported.stdout
      .trim()
      .split("\n")
      .map((line) => (JSON.parse(line) as { height: number }).height);
    assert.deepEqual(
      heights,
      heights.map((_, i) => i),
      "export is a gap-free prefix of the ledger",
    );
  } finally {
    stop = true;
    await writer;
    await stopNode(node);
  }
  assert.ok(committed >= 200);
});
