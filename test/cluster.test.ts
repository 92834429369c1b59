// Three organisations' nodes on a three-member etcd cluster, all real processes on loopback: txs submitted to any
// node are ordered once by etcd and applied by every node to the same head; a node that starts late catches up from
// etcd; a node killed mid-apply restarts and converges; `careledger verify` passes on every node.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { writeKeyFile } from "../src/node/datadir.ts";
import { runCli, startNode, stopNode } from "./helpers.ts";
import { startTestCluster, type TestCluster } from "./support-cluster.ts";

describe("a three-node etcd network", () => {
  let cluster: TestCluster;
  /** Org i's admin key as a file, as an operator holds it. */
  const adminKeyFile = (i: number) => {
    const path = join(cluster.dir, `admin-${i}.key`);
    writeKeyFile(path, (cluster.orgs[i] as { admin: Parameters<typeof writeKeyFile>[1] }).admin);
    return path;
  };
  before(async () => {
    cluster = await startTestCluster({ orgs: 3 });
    await cluster.start(0);
    await cluster.start(1);
  });
  after(async () => {
    await cluster?.stop();
  });

  test("txs submitted to different nodes are committed once, in one order, by every node", async () => {
    const results = await Promise.all([
      cluster.submit(0, cluster.enrolTxs(0, 50)),
      cluster.submit(1, cluster.enrolTxs(1, 50)),
      cluster.submit(0, cluster.enrolTxs(0, 50)),
    ]);
    for (const r of results) assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 300));
    const head = await cluster.converged(151);
    assert.equal(head.size, 151);
  });

  test("a node that starts late catches up from etcd to the same head", async () => {
    await cluster.start(2);
    const head = await cluster.converged(151);
    assert.equal((await cluster.head(2)).hash, head.hash);
    // …and takes part: a tx submitted to it is committed everywhere.
    const r = await cluster.submit(2, cluster.enrolTxs(2, 10));
    assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 300));
    await cluster.converged(161);
  });

  test("a node killed mid-apply under load restarts and converges; nothing committed is lost", async () => {
    const load = Promise.all(
      Array.from({ length: 6 }, (_, k) => cluster.submit(k % 2, cluster.enrolTxs(k % 2, 100)).catch(() => undefined)),
    );
    await new Promise((r) => setTimeout(r, 150));
    await cluster.stopNode(2, "SIGKILL");
    const results = await load;
    for (const r of results) assert.equal(r?.status, 200);
    await cluster.start(2);
    const head = await cluster.converged(761);
    assert.equal(head.size, 761);
  });

  test("a new organisation joins: init from the genesis, org propose, approvals to quorum; then its node takes part", async () => {
    const dir = join(cluster.dir, "nodes", "newcomer");
    const endpoints = cluster.etcd.endpoints.map((e) => e.replace("http://", "")).join(",");
    const init = await runCli([
      "init",
      "--dir",
      dir,
      "--genesis",
      join(cluster.dir, "genesis.json"),
      "--orderer",
      `etcd://${endpoints}`,
    ]);
    assert.equal(init.code, 0, init.stderr);
    const url = (cluster.nodes[0] as { url: string }).url;
    const newcomer = await startNode(dir);
    try {
      // Not yet a node of the network: its batches are not ordered, so a tx sent to it does not commit.
      const early = await runCli(["org", "approve", "--key", adminKeyFile(0), "--org", "newcomer-trust", "--url", url]);
      assert.equal(early.code, 2);
      assert.match(early.stderr, /refused: not-found|refused/);
      const propose = await runCli([
        "org",
        "propose",
        "--dir",
        dir,
        "--name",
        "Newcomer Trust",
        "--kind",
        "hospital",
        "--url",
        url,
      ]);
      assert.equal(propose.code, 0, propose.stderr);
      for (const i of [0, 1]) {
        const approve = await runCli([
          "org",
          "approve",
          "--key",
          adminKeyFile(i),
          "--org",
          "newcomer-trust",
          "--url",
          url,
        ]);
        assert.equal(approve.code, 0, approve.stderr);
      }
      // A second vote from the same org does not count twice, and a vote after activation is refused.
      const again = await runCli(["org", "approve", "--key", adminKeyFile(2), "--org", "newcomer-trust", "--url", url]);
      assert.equal(again.code, 2, again.stdout);
      const head = await cluster.converged();
      const response = await fetch(`${newcomer.url}/healthz`);
      assert.equal(response.status, 200);
      // Its own batches are now ordered: a tx submitted through the newcomer commits on every node.
      const tx = cluster.enrolTxs(0, 1);
      const submitted = await fetch(`${newcomer.url}/ledger/txs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(tx),
      });
      assert.equal(submitted.status, 200, await submitted.text());
      await cluster.converged(head.size + 1);
    } finally {
      await stopNode(newcomer);
    }
  });

  test("careledger verify passes on every node's data dir", async () => {
    await cluster.stopNode(0);
    await cluster.stopNode(1);
    await cluster.stopNode(2);
    for (const result of await cluster.verifyAll()) {
      assert.equal(result.code, 0, result.stdout + result.stderr);
    }
  });
});
