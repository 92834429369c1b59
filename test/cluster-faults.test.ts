// Faults on a real etcd network (three etcd members, three nodes, all child processes on loopback): an etcd member
// killed under load, a majority of etcd down, a node paused past compaction (it catches up from a peer), a node cut off
// from etcd (it stops committing, then converges), hostile batches written straight into etcd. After all of it every
// node has the same head and `careledger verify` passes on every data dir.
//
// Nodes 0 and 1 talk to etcd members 0 and 1; node 2 talks only to member 2, so pausing member 2 cuts node 2 off
// while the cluster keeps its quorum.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Etcd3 } from "etcd3";
import { txId } from "../src/ledger/tx.ts";
import type { SignedTx } from "../src/ledger/types.ts";
import { startTestCluster, type TestCluster } from "./support-cluster.ts";

const PREFIX = "/careledger/test-cluster/";

async function committedEverywhere(cluster: TestCluster, txs: SignedTx[], nodes: number[]): Promise<void> {
  for (const i of nodes) {
    const url = (cluster.nodes[i] as { url: string }).url;
    for (const tx of txs) {
      const response = await fetch(`${url}/ledger/tx/${txId(tx)}`);
      assert.equal(response.status, 200, `tx ${txId(tx).slice(0, 12)} on node ${i}`);
      await response.arrayBuffer();
    }
  }
}

describe("faults on a three-node etcd network", () => {
  let cluster: TestCluster;
  let etcd: Etcd3;
  before(async () => {
    cluster = await startTestCluster({
      orgs: 3,
      etcd: { leaseTtlSeconds: 2, compactIntervalMs: 300 },
      endpointsFor: (i, endpoints) => (i === 2 ? [endpoints[2] as string] : endpoints.slice(0, 2)),
    });
    etcd = new Etcd3({ hosts: cluster.etcd.endpoints });
    await Promise.all([cluster.start(0), cluster.start(1), cluster.start(2)]);
    const r = await cluster.submit(0, cluster.enrolTxs(0, 20));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    await cluster.converged(21);
  });
  after(async () => {
    etcd?.close();
    await cluster?.stop();
  });

  test("kill -9 one etcd member under load: every accepted tx commits, none is lost, writes continue", async () => {
    const before = await cluster.converged();
    const batches = Array.from({ length: 8 }, (_, k) => cluster.enrolTxs(k % 3, 50));
    const load = (async () => {
      const results = [];
      for (const [k, txs] of batches.entries()) results.push(await cluster.submit(k % 3, txs));
      return results;
    })();
    await new Promise((r) => setTimeout(r, 100));
    cluster.etcd.members[0]?.process.kill("SIGKILL");
    const results = await load;
    for (const r of results) assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 300));
    const head = await cluster.converged(before.size + 400);
    assert.equal(head.size, before.size + 400);
    await committedEverywhere(cluster, batches.flat().slice(0, 20), [0, 1, 2]);
    await cluster.etcd.restart(0);
  });

  test("a majority of etcd down: writes fail with a clear error, reads work; back up: writes resume, nothing twice", async () => {
    const before = await cluster.converged();
    cluster.etcd.members[1]?.process.kill("SIGKILL");
    cluster.etcd.members[2]?.process.kill("SIGKILL");
    const txs = cluster.enrolTxs(0, 10);
    const failed = await cluster.submit(0, txs);
    assert.equal(failed.status, 503, JSON.stringify(failed.body));
    assert.match(JSON.stringify(failed.body), /could not order the batch: .*etcd/i);
    const head = await cluster.head(0);
    assert.equal(head.size, before.size, "reads keep working");
    await Promise.all([cluster.etcd.restart(1), cluster.etcd.restart(2)]);
    // The same txs again (a client retrying): committed once each.
    const retried = await cluster.submit(0, txs);
    assert.equal(retried.status, 200, JSON.stringify(retried.body).slice(0, 300));
    const after = await cluster.converged(before.size + 10, 60_000);
    assert.equal(after.size, before.size + 10);
  });

  /** Commits txs through nodes 0 and 1 until etcd has compacted past `revision` (and at least `minTxs` were sent). */
  async function commitPastCompaction(revision: number, minTxs: number): Promise<void> {
    const deadline = Date.now() + 60_000;
    let compacted = false;
    let sent = 0;
    while ((!compacted || sent < minTxs) && Date.now() < deadline) {
      assert.equal((await cluster.submit(sent % 2, cluster.enrolTxs(0, 500))).status, 200);
      sent += 500;
      compacted = await etcd
        .get(`${PREFIX}b/x`)
        .revision(revision)
        .exec()
        .then(
          () => false,
          (error: Error) => /compacted/.test(error.message),
        );
    }
    assert.ok(compacted, "etcd compacted past the node's position");
  }

  async function currentRevision(): Promise<number> {
    const { header } = await etcd.getAll().prefix(`${PREFIX}b/`).limit(1).exec();
    return Number(header.revision);
  }

  test("a node paused (SIGSTOP) while the others commit and etcd compacts past it converges when resumed", async () => {
    await cluster.converged();
    const paused = cluster.nodes[2];
    assert.ok(paused);
    const pausedAt = await currentRevision();
    paused.child.kill("SIGSTOP");
    try {
      // Its applied/ lease runs out (TTL 2 s), so it no longer holds compaction back; more is committed than its
      // socket buffers hold.
      await commitPastCompaction(pausedAt, 20_000);
    } finally {
      paused.child.kill("SIGCONT");
    }
    const head = await cluster.converged(0, 60_000);
    assert.equal((await cluster.head(2)).hash, head.hash);
  });

  test("a node that was down while etcd compacted past it catches up from a peer's blocks", async () => {
    await cluster.converged();
    const downAt = await currentRevision();
    await cluster.stopNode(2);
    await commitPastCompaction(downAt, 1000);
    const restarted = await cluster.start(2);
    const head = await cluster.converged(0, 60_000);
    assert.equal((await cluster.head(2)).hash, head.hash);
    // It had to: etcd no longer held the batches it missed.
    assert.match(restarted.stderr(), /etcd has compacted its history.*recovering/);
  });

  test("a node cut off from etcd stops committing; reconnected, it converges and takes part", async () => {
    const before = await cluster.converged();
    const member = cluster.etcd.members[2];
    assert.ok(member);
    member.process.kill("SIGSTOP");
    try {
      const cutOff = await cluster.submit(2, cluster.enrolTxs(2, 5));
      assert.equal(cutOff.status, 503, JSON.stringify(cutOff.body));
      const ok = await cluster.submit(0, cluster.enrolTxs(0, 5));
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      assert.equal((await cluster.head(2)).size, before.size, "the cut-off node committed nothing meanwhile");
    } finally {
      member.process.kill("SIGCONT");
    }
    await cluster.converged(before.size + 5, 60_000);
    const again = await cluster.submit(2, cluster.enrolTxs(2, 5));
    assert.equal(again.status, 200, JSON.stringify(again.body));
    await cluster.converged(before.size + 10);
  });

  test("the batching relay killed -9 under small requests: the others order for themselves, each tx commits once", async () => {
    const before = await cluster.converged();
    const byKey = [0, 1, 2].sort((a, b) =>
      (cluster.orgs[a]?.nodeKeyId ?? "").localeCompare(cluster.orgs[b]?.nodeKeyId ?? ""),
    );
    const [relay, ...others] = byKey as [number, number, number];
    const metric = async (i: number, name: string) => {
      const text = await (await fetch(`${(cluster.nodes[i] as { url: string }).url}/metrics`)).text();
      return Number(new RegExp(`^${name} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
    };
    const forwarded = (i: number) => metric(i, "careledger_relay_forwarded_txs_total");
    // Small requests to the others go through the relay (each node reads the registry every second).
    let warm = 0;
    for (let attempt = 0; attempt < 20 && (await forwarded(others[0])) === 0; attempt++) {
      assert.equal((await cluster.submit(others[0], cluster.enrolTxs(others[0], 5))).status, 200);
      warm += 5;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok((await forwarded(others[0])) > 0, "the node forwarded to the relay");
    // Three requests from each of the others reach the relay alive, the next seven find it dead.
    let killed: Promise<void> | undefined;
    let sentBeforeKill = 0;
    const load = others.map(async (i) => {
      const results = [];
      for (let k = 0; k < 10; k++) {
        if (k === 3) {
          if (++sentBeforeKill === others.length) killed = cluster.stopNode(relay, "SIGKILL");
          while (!killed) await new Promise((r) => setTimeout(r, 5));
          await killed;
        }
        results.push(await cluster.submit(i, cluster.enrolTxs(i, 10)));
      }
      return results;
    });
    for (const r of (await Promise.all(load)).flat()) assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 300));
    const counters = await Promise.all(
      others.map(
        async (i) =>
          (await metric(i, "careledger_relay_forward_failed_total")) +
          (await metric(i, "careledger_relay_late_txs_total")),
      ),
    );
    assert.ok(
      counters.some((c) => c > 0),
      `a forwarder fell back to ordering itself (${counters})`,
    );
    await cluster.start(relay);
    const head = await cluster.converged(before.size + warm + 200, 60_000);
    assert.equal(head.size, before.size + warm + 200, "every tx once");
  });

  test("hostile batches written straight into etcd are skipped identically by every node", async () => {
    const before = await cluster.converged();
    const existing = await etcd.getAll().prefix(`${PREFIX}b/`).limit(1).buffers();
    const [someKey, someValue] = Object.entries(existing)[0] ?? [];
    await etcd.put(`${PREFIX}b/${"0".repeat(64)}`).value("not json");
    await etcd
      .put(`${PREFIX}b/${"1".repeat(64)}`)
      .value(JSON.stringify({ v: 1, proposer: "x", time: 1, txs: [], sig: "y" }));
    await etcd.put(`${PREFIX}b/${"2".repeat(64)}`).value(Buffer.alloc(2 * 1024 * 1024, 0x41));
    if (someKey && someValue) await etcd.put(someKey).value(someValue); // a re-put of an ordered batch: version 2
    const r = await cluster.submit(1, cluster.enrolTxs(1, 5));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const head = await cluster.converged(before.size + 5);
    assert.equal(head.size, before.size + 5);
  });

  test("after all of it, careledger verify passes on every node and all heads match", async () => {
    const head = await cluster.converged();
    for (const i of [0, 1, 2]) assert.equal((await cluster.head(i)).hash, head.hash);
    for (const i of [0, 1, 2]) await cluster.stopNode(i);
    for (const result of await cluster.verifyAll()) assert.equal(result.code, 0, result.stdout + result.stderr);
  });
});
