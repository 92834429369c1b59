// `careledger cluster up|status|down` as a user runs it: 3 etcd members and 3 nodes in the background with TLS from a
// generated CA; a tx over HTTPS reaches every node; `down` stops every process; `up` again continues the same ledger.
import assert from "node:assert/strict";
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { Agent, request } from "undici";
import { type ClusterProcess, type ClusterState, isAlive, readClusterState } from "../src/cli/cluster.ts";
import { readKeyFile } from "../src/node/datadir.ts";
import { newKey, signNew } from "../src/node/network.ts";
import { runCli, tempDir } from "./helpers.ts";

const work = tempDir("cluster-cli");
const dir = join(work.path, "cluster");

after(async () => {
  // Whatever a failed assertion left running is stopped.
  const state = readClusterState(dir);
  for (const p of state?.processes ?? []) if (isAlive(p.pid)) process.kill(p.pid, "SIGKILL");
  work.remove();
});

async function heads(state: ClusterState, agent: Agent): Promise<{ size: number; hash: string }[]> {
  return Promise.all(
    state.processes
      .filter((p) => p.kind === "node")
      .map(async (p) => (await (await request(`${p.url}/ledger/head`, { dispatcher: agent })).body.json()) as never),
  );
}

/** Waits (≤ 10 s) until every node's head has `size` txs and one hash (`hash`, when given); asserts it. */
async function headsAt(state: ClusterState, agent: Agent, size: number, hash?: string) {
  const done = (hs: { size: number; hash: string }[]) =>
    hs.every((h) => h.size === size && h.hash === (hash ?? hs[0]?.hash));
  let all = await heads(state, agent);
  for (let i = 0; i < 100 && !done(all); i++) {
    await new Promise((r) => setTimeout(r, 100));
    all = await heads(state, agent);
  }
  assert.ok(done(all), JSON.stringify(all));
  return all;
}

test("cluster up starts 3 etcd members and 3 TLS nodes in the background; down stops them all; up continues", async () => {
  const up = await runCli(["cluster", "up", "--dir", dir, "--orgs", "3", "--base-port", "0"]);
  assert.equal(up.code, 0, up.stderr);
  assert.match(up.stdout, /etcd: 3 members/);
  // No deprecation noise from the etcd client's TLS connections, in the command's output or the nodes' logs.
  assert.doesNotMatch(up.stderr, /DEP0123/);
  assert.equal((up.stdout.match(/^node /gm) ?? []).length, 3);
  const state = readClusterState(dir) as ClusterState;
  assert.equal(state.processes.length, 6);
  for (const p of state.processes) assert.ok(isAlive(p.pid), `${p.name} runs`);
  // The members share this machine with the nodes: one Go scheduler thread each (GOMAXPROCS is not set here).
  for (const p of state.processes.filter((q) => q.kind === "etcd")) {
    assert.match(readFileSync(`/proc/${p.pid}/environ`, "utf8"), /(^|\0)GOMAXPROCS=1(\0|$)/, p.name);
  }
  const agent = new Agent({ connect: { ca: readFileSync(join(dir, "network", "ca", "ca.pem")) } });
  try {
    const nodes = state.processes.filter((p) => p.kind === "node");
    const first = nodes[0] as (typeof nodes)[number];
    assert.match(first.url, /^https:\/\//);
    // A tx signed by an org's admin, submitted over HTTPS to one node, is on every node.
    const admin = readKeyFile(join(dir, "network", first.name, "keys", "admin.key"));
    const tx = signNew(
      admin,
      "member.enrol",
      { member: crypto.randomUUID(), org: first.name, role: "clinician", key: newKey().keyId },
      Date.now(),
    );
    const response = await request(`${first.url}/ledger/tx`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(tx),
      dispatcher: agent,
    });
    assert.equal(response.statusCode, 200, await response.body.text());
    const all = await headsAt(state, agent, 2);
    // Without the network's CA, a client refuses the nodes' certificates.
    await assert.rejects(request(`${first.url}/ledger/head`), /certificate/i);

    for (const p of nodes) assert.doesNotMatch(readFileSync(p.log, "utf8"), /DEP0123|Error/);
    const status = await runCli(["cluster", "status", "--dir", dir]);
    assert.equal((status.stdout.match(/running/g) ?? []).length, 6, status.stdout);
    const again = await runCli(["cluster", "up", "--dir", dir]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already running/);

    const down = await runCli(["cluster", "down", "--dir", dir]);
    assert.equal(down.code, 0, down.stderr);
    for (const p of state.processes) assert.equal(isAlive(p.pid), false, `${p.name} stopped`);

    // Up again on the same dir: the same ledger, every node still at the same head.
    const restarted = await runCli(["cluster", "up", "--dir", dir]);
    assert.equal(restarted.code, 0, restarted.stderr);
    const state2 = readClusterState(dir) as ClusterState;
    const after2 = await heads(state2, agent);
    assert.ok(
      after2.every((h) => h.size === 2 && h.hash === all[0]?.hash),
      JSON.stringify(after2),
    );
    assert.equal((await runCli(["cluster", "down", "--dir", dir])).code, 0);

    // A member that cannot start fails `up`, named, even though a quorum of the others answers. (Its data dir
    // replaced by a file: etcd exits at once.)
    const etcd3 = state2.processes.find((p) => p.name === "etcd-3")?.dir as string;
    renameSync(etcd3, `${etcd3}.moved`);
    writeFileSync(etcd3, "not a directory");
    try {
      const blocked = await runCli(["cluster", "up", "--dir", dir]);
      assert.equal(blocked.code, 2, blocked.stdout);
      assert.match(blocked.stderr, /etcd-3 exited during start-up; see .*etcd-3\.log/);
      // All or nothing: the members that did start are stopped again.
      assert.match(blocked.stderr, /the members and nodes it had started are stopped again/);
      for (const p of (readClusterState(dir) as ClusterState).processes) assert.equal(isAlive(p.pid), false, p.name);
    } finally {
      rmSync(etcd3);
      renameSync(`${etcd3}.moved`, etcd3);
    }
    // A node dir not made yet (a first start that failed before reaching it) is made by the next `up`, and the node
    // catches up with the others.
    const remade = state2.processes.find((p) => p.kind === "node" && p.name !== first.name) as ClusterProcess;
    rmSync(remade.dir, { recursive: true });
    const continued = await runCli(["cluster", "up", "--dir", dir]);
    assert.equal(continued.code, 0, continued.stderr);
    const state3 = readClusterState(dir) as ClusterState;
    await headsAt(state3, agent, 2, all[0]?.hash);
    assert.equal((await runCli(["cluster", "down", "--dir", dir])).code, 0);
  } finally {
    await agent.close();
  }
});

test("cluster usage errors are one line and exit 2", async () => {
  const none = await runCli(["cluster", "down", "--dir", join(work.path, "nothing")]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /holds no cluster/);
  const tooMany = await runCli(["cluster", "up", "--dir", join(work.path, "big"), "--orgs", "12"]);
  assert.equal(tooMany.code, 2);
  assert.match(tooMany.stderr, /--orgs must be from 1 to 9/);
});
