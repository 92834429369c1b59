// Record exchange on an etcd network: the demo's three organisations, each node with its own etcd orderer, finding
// the others through etcd's peer registry (no directory given by hand). A GP clinician's $everything includes what
// the hospital holds, as on the embedded demo; every node's tree heads agree (no fork alarm).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { request } from "undici";
import { type DemoNetwork, startDemo } from "../src/cli/demo.ts";
import { requestAccessToken } from "../src/fhir/auth/client-assertion.ts";
import { readKeyFile } from "../src/node/datadir.ts";
import { silentLogger } from "../src/node/logger.ts";
import type { RunningNode } from "../src/node/runtime.ts";
import { type LocalEtcdCluster, startLocalEtcdCluster } from "../src/ordering/etcd-launcher.ts";
import { tempDir } from "./helpers.ts";

const work = tempDir("cluster-exchange");
let etcd: LocalEtcdCluster;
let demo: DemoNetwork;

before(async () => {
  etcd = await startLocalEtcdCluster(join(work.path, "etcd"), 1);
  demo = await startDemo({
    dir: join(work.path, "demo"),
    port: 0,
    patients: 2,
    etcd: { endpoints: etcd.endpoints },
    log: silentLogger,
  });
});

after(async () => {
  await demo?.close();
  await etcd?.stop();
  work.remove();
});

async function token(node: RunningNode, who: string): Promise<string> {
  const keyFile = join(demo.dir, "keys", `${who.replace(/[^a-z0-9-]+/gi, "-")}.key`);
  return requestAccessToken(readKeyFile(keyFile), `${node.url}/auth/token`);
}

test("on etcd, a GP clinician's $everything includes the hospital's records, found through the peer registry", async () => {
  const [gp, trust] = demo.nodes as [RunningNode, RunningNode];
  const users = JSON.parse(readFileSync(join(demo.dir, "demo-users.json"), "utf8")) as {
    name: string;
    patient?: string;
  }[];
  const patient = users.find((u) => u.name === "patient:0")?.patient as string;
  const res = await request(`${gp.url}/fhir/Patient/${patient}/$everything`, {
    headers: { authorization: `Bearer ${await token(gp, "clinician:gp")}` },
  });
  const body = (await res.body.json()) as {
    entry?: { fullUrl?: string; search?: { mode: string }; resource: { issue?: { diagnostics: string }[] } }[];
  };
  assert.equal(res.statusCode, 200, JSON.stringify(body).slice(0, 500));
  const warnings = (body.entry ?? []).filter((e) => e.search?.mode === "outcome");
  assert.deepEqual(
    warnings.map((w) => w.resource.issue?.[0]?.diagnostics),
    [],
  );
  const fromTrust = (body.entry ?? []).filter((e) => e.fullUrl?.startsWith(`${trust.url}/fhir/`));
  assert.ok(fromTrust.length >= 5, `hospital records: ${fromTrust.length}`);
  // The three nodes are one network: the same head once the access logs of the read are in, and no fork alarm.
  let heads = new Set<string | undefined>();
  for (let i = 0; i < 100; i++) {
    heads = new Set(demo.nodes.map((n) => n.node.store.head()?.hash));
    if (heads.size === 1) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(heads.size, 1);
  for (const n of demo.nodes) assert.equal(n.node.halted, undefined);
});
