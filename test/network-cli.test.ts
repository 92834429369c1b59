// Founding a multi-organisation network from the command line, as operators do it: `network create` writes the
// genesis, each organisation's keys and TLS material; `init --genesis --node-key --tls --orderer` joins a node with
// that key; the node serves HTTPS with the certificate; usage errors are one line and exit 2.
import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Agent, request } from "undici";
import { readState } from "../src/contract/index.ts";
import { readGenesis } from "../src/node/datadir.ts";
import { openNode } from "../src/node/runtime.ts";
import { type CliResult, runCli, tempDir } from "./helpers.ts";

const work = tempDir("network-cli");
after(() => work.remove());

function assertUsageError(result: CliResult, message: RegExp): void {
  assert.equal(result.code, 2, `exit code: ${result.stdout} ${result.stderr}`);
  assert.equal(result.stderr.trimEnd().split("\n").length, 1, result.stderr);
  assert.match(result.stderr, message);
}

describe("network create and joining with its files", () => {
  const out = join(work.path, "founding");
  const orgs = ["riverside-gp-practice", "city-hospital-trust", "university-research-group"];

  test("network create writes a genesis of N active orgs, keys 0600 and a CA with a certificate per node", async () => {
    const result = await runCli(["network", "create", "--out", out, "--orgs", "3"]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /3 organisations/);
    for (const org of orgs) {
      for (const file of ["node.key", "keys/admin.key", "tls/node.key"]) {
        assert.equal(statSync(join(out, org, file)).mode & 0o777, 0o600, `${org}/${file}`);
      }
      assert.ok(existsSync(join(out, org, "tls", "node.pem")));
      assert.match(result.stdout, new RegExp(`--node-key ${join(out, org, "node.key")}`));
    }
    assert.equal(statSync(join(out, "ca", "ca.key")).mode & 0o777, 0o600);
    assert.equal(statSync(join(out, "lookup.key")).mode & 0o777, 0o600);
    const genesis = readGenesis(join(out, "genesis.json"));
    const payload = genesis.txs[0]?.tx.payload as { orgs: { id: string; nodes: string[] }[] };
    assert.deepEqual(
      payload.orgs.map((o) => o.id),
      orgs,
    );
    // Each org's node key file is the key the genesis registers for it.
    for (const org of payload.orgs) {
      const keyFile = JSON.parse(readFileSync(join(out, org.id, "node.key"), "utf8")) as { keyId: string };
      assert.deepEqual(org.nodes, [keyFile.keyId]);
    }
  });

  test("a node joins with its org's node key and TLS files, and serves HTTPS trusted through the CA", async () => {
    const dir = join(work.path, "hospital");
    const result = await runCli([
      "init",
      "--dir",
      dir,
      "--genesis",
      join(out, "genesis.json"),
      "--node-key",
      join(out, orgs[1] as string, "node.key"),
      "--tls",
      join(out, orgs[1] as string, "tls"),
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /registered in the genesis/);
    // The lookup key beside the genesis came along, private.
    assert.equal(statSync(join(dir, "lookup.key")).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, "tls", "node.key")).mode & 0o777, 0o600);
    const running = await openNode(dir, { flags: { port: 0, logLevel: "silent", auditOnStart: false } });
    const agent = new Agent({ connect: { ca: readFileSync(join(out, "ca", "ca.pem")) } });
    try {
      assert.match(running.url, /^https:/);
      const head = await request(`${running.url}/ledger/head`, { dispatcher: agent });
      assert.equal(head.statusCode, 200);
      assert.equal(((await head.body.json()) as { height: number }).height, 0);
      // The node's own key is an active node of the hospital org from block 0.
      const key = readState.key(running.node.store.state, running.node.key.keyId);
      assert.equal(key?.kind, "node");
      assert.equal(key?.kind === "node" ? key.org : "", orgs[1]);
      // A client that does not trust the network's CA is refused.
      await assert.rejects(request(`${running.url}/ledger/head`), /certificate/i);
    } finally {
      await agent.close();
      await running.close();
    }
  });

  test("usage errors are one line and exit 2, and nothing is created", async () => {
    assertUsageError(await runCli(["network", "create", "--out", join(work.path, "x"), "--orgs", "0"]), /--orgs/);
    assertUsageError(
      await runCli(["network", "create", "--out", join(work.path, "y"), "--orgs", "2", "--names", "Only One"]),
      /--names must list 2 names/,
    );
    assert.equal(existsSync(join(work.path, "x")), false);
    assertUsageError(await runCli(["network", "create", "--out", out]), /not empty/);
    assertUsageError(
      await runCli(["network", "create", "--out", join(work.path, "z"), "--hosts", "bad host!"]),
      /--hosts/,
    );
    assertUsageError(
      await runCli(["init", "--dir", join(work.path, "n1"), "--orderer", "etcd://127.0.0.1:2379"]),
      /give --genesis/,
    );
    assertUsageError(
      await runCli([
        "init",
        "--dir",
        join(work.path, "n2"),
        "--genesis",
        join(out, "genesis.json"),
        "--orderer",
        "etcd://no-port",
      ]),
      /not host:port/,
    );
    assertUsageError(
      await runCli([
        "init",
        "--dir",
        join(work.path, "n3"),
        "--genesis",
        join(out, "genesis.json"),
        "--orderer",
        "etcds://127.0.0.1:2379",
      ]),
      /needs --tls/,
    );
    writeFileSync(join(work.path, "empty-tls"), "");
    assertUsageError(
      await runCli([
        "init",
        "--dir",
        join(work.path, "n4"),
        "--genesis",
        join(out, "genesis.json"),
        "--tls",
        work.path,
      ]),
      /must hold ca\.pem/,
    );
    for (const n of ["n1", "n2", "n3", "n4"]) assert.equal(existsSync(join(work.path, n)), false, n);
    // The demo on etcd: plain etcd only, and only when the demo is generated.
    assertUsageError(
      await runCli(["demo", "--dir", join(work.path, "d1"), "--orderer", "etcds://127.0.0.1:2379"]),
      /without TLS/,
    );
    assertUsageError(await runCli(["demo", "--dir", join(work.path, "d2"), "--orderer", "zookeeper"]), /--orderer/);
  });
});
