// A real network for cluster tests: etcd members and `careledger start` nodes as child processes on loopback, one
// node per organisation, founded the way operators do it (foundNetwork + init --genesis --node-key). Helpers submit
// txs, read heads, wait for convergence and run `careledger verify` on every node.
import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { KeyPair } from "../src/ledger/keys.ts";
import type { SignedTx } from "../src/ledger/types.ts";
import { type NodeConfig, writeKeyFile } from "../src/node/datadir.ts";
import { foundNetwork, initJoin, newKey, signNew } from "../src/node/network.ts";
import { type LocalEtcdCluster, startLocalEtcdCluster } from "../src/ordering/etcd-launcher.ts";
import { runCli, type StartedNode, startNode, stopNode, tempDir } from "./helpers.ts";

export interface ClusterOrg {
  orgId: string;
  admin: KeyPair;
  dir: string;
  /** The key id of the org's node (the batching relay is the running node with the smallest). */
  nodeKeyId: string;
}

export interface Head {
  height: number;
  size: number;
  hash: string;
}

export interface TestCluster {
  dir: string;
  etcd: LocalEtcdCluster;
  orgs: ClusterOrg[];
  nodes: (StartedNode | undefined)[];
  /** Starts (or restarts) node i. */
  start(i: number, env?: NodeJS.ProcessEnv): Promise<StartedNode>;
  /** Stops node i with a signal (SIGTERM: clean; SIGKILL: a crash). */
  stopNode(i: number, signal?: NodeJS.Signals): Promise<void>;
  /** `member.enrol` txs signed by org i's admin: valid, independent, any number. */
  enrolTxs(i: number, count: number): SignedTx[];
  /** Submits txs to node i and waits for their commit results. */
  submit(i: number, txs: SignedTx[]): Promise<{ status: number; body: unknown }>;
  head(i: number): Promise<Head>;
  /** Resolves once every running node has the same head, at least `minSize` txs; rejects after `timeoutMs`. */
  converged(minSize?: number, timeoutMs?: number): Promise<Head>;
  /** `careledger verify --dir` on every node's data dir (nodes may be running). */
  verifyAll(): Promise<{ code: number | null; stdout: string; stderr: string }[]>;
  stop(): Promise<void>;
}

export async function startTestCluster(
  options: {
    orgs?: number;
    etcdMembers?: number;
    config?: Partial<NodeConfig>;
    /** etcd settings of the nodes' orderer config (e.g. a short lease TTL). */
    etcd?: { leaseTtlSeconds?: number; compactIntervalMs?: number };
    /** The etcd members node i talks to (default: all). */
    endpointsFor?: (i: number, endpoints: string[]) => string[];
    env?: NodeJS.ProcessEnv;
  } = {},
): Promise<TestCluster> {
  const work = tempDir("cluster");
  const orgCount = options.orgs ?? 3;
  const etcd = await startLocalEtcdCluster(join(work.path, "etcd"), options.etcdMembers ?? 3);
  const nodes: (StartedNode | undefined)[] = [];
  try {
    const network = foundNetwork({
      name: "Test Cluster",
      orgs: Array.from({ length: orgCount }, (_, i) => ({ name: `Org ${String.fromCharCode(65 + i)}` })),
    });
    const genesisFile = join(work.path, "genesis.json");
    writeFileSync(genesisFile, `${JSON.stringify(network.genesis)}\n`);
    const orgs: ClusterOrg[] = network.orgs.map((org, i) => {
      const dir = join(work.path, "nodes", org.orgId);
      const keyFile = join(work.path, `${org.orgId}.node.key`);
      writeKeyFile(keyFile, org.node);
      initJoin(dir, genesisFile, {
        nodeKeyFile: keyFile,
        config: {
          orderer: {
            kind: "etcd",
            endpoints: options.endpointsFor?.(i, etcd.endpoints) ?? etcd.endpoints,
            ...options.etcd,
          },
          ...options.config,
        },
      });
      return { orgId: org.orgId, admin: org.admin, dir, nodeKeyId: org.node.keyId };
    });
    const cluster: TestCluster = {
      dir: work.path,
      etcd,
      orgs,
      nodes,
      async start(i, env = {}) {
        const org = orgs[i];
        if (!org) throw new RangeError(`no org ${i}`);
        const node = await startNode(org.dir, [], { ...options.env, ...env });
        nodes[i] = node;
        return node;
      },
      async stopNode(i, signal = "SIGTERM") {
        const node = nodes[i];
        if (node) await stopNode(node, signal);
        nodes[i] = undefined;
      },
      enrolTxs(i, count) {
        const org = orgs[i] as ClusterOrg;
        return Array.from({ length: count }, () =>
          signNew(
            org.admin,
            "member.enrol",
            { member: randomUUID(), org: org.orgId, role: "clinician", key: newKey().keyId },
            Date.now(),
          ),
        );
      },
      async submit(i, txs) {
        const node = nodes[i];
        if (!node) throw new Error(`node ${i} is not running`);
        const response = await fetch(`${node.url}/ledger/txs`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(txs),
        });
        const text = await response.text();
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON: keep the text for the assertion message
        }
        return { status: response.status, body };
      },
      async head(i) {
        const node = nodes[i];
        if (!node) throw new Error(`node ${i} is not running`);
        const response = await fetch(`${node.url}/ledger/head`);
        return (await response.json()) as Head;
      },
      async converged(minSize = 0, timeoutMs = 30_000) {
        const deadline = Date.now() + timeoutMs;
        let last = "";
        while (Date.now() < deadline) {
          const running = nodes.map((n, i) => (n ? i : -1)).filter((i) => i >= 0);
          const heads = await Promise.all(running.map((i) => cluster.head(i).catch(() => undefined)));
          last = JSON.stringify(heads.map((h) => h && { height: h.height, size: h.size }));
          const first = heads[0];
          if (first && first.size >= minSize && heads.every((h) => h?.hash === first.hash && h.size === first.size)) {
            return first;
          }
          await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error(`nodes did not converge within ${timeoutMs} ms (size ≥ ${minSize}); heads: ${last}`);
      },
      async verifyAll() {
        return Promise.all(orgs.map((org) => runCli(["verify", "--dir", org.dir])));
      },
      async stop() {
        await Promise.all(nodes.map((n) => (n ? stopNode(n, "SIGKILL") : undefined)));
        await etcd.stop();
        work.remove();
      },
    };
    return cluster;
  } catch (error) {
    await etcd.stop();
    work.remove();
    throw error;
  }
}
