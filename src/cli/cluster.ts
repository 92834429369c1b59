// `careledger cluster up|down|status`: a whole network on this machine — N etcd members and N nodes (one per
// organisation) on loopback, with mutual TLS to etcd and HTTPS between nodes from a generated CA — started in the
// background, each process logging to DIR/logs/, and stopped again by `cluster down`. The same pieces (network create,
// network cert, init --orderer etcds://…, start) run a network across machines; see README "A local cluster".

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { ConfigError, dataPaths, writeFileAtomic } from "../node/datadir.ts";
import { etcdClient } from "../ordering/etcd-client.ts";
import {
  canBind,
  type EtcdMemberSpec,
  etcdArgs,
  etcdBinary,
  freePort,
  freeServerPort,
} from "../ordering/etcd-launcher.ts";
import { initCommand } from "./init.ts";
import { interruptible } from "./interruptible.ts";
import { networkCreateCommand } from "./network.ts";
import { issueCertificate } from "./pki.ts";

const STATE_FILE = "cluster.json";

function etcdSpecsPath(dir: string): string {
  return join(dir, "etcd.json");
}

/** The etcd members of the cluster in `dir` as `cluster up` chose them (ports, data dirs, TLS files). */
export function readEtcdSpecs(dir: string): EtcdMemberSpec[] {
  return JSON.parse(readFileSync(etcdSpecsPath(dir), "utf8")) as EtcdMemberSpec[];
}
const MAIN = new URL("../../bin/careledger.js", import.meta.url).pathname;

export interface ClusterProcess {
  name: string;
  kind: "etcd" | "node";
  pid: number;
  url: string;
  dir: string;
  log: string;
}

export interface ClusterState {
  dir: string;
  network: string;
  etcd: string[];
  processes: ClusterProcess[];
}

/** Whether a process of this user with that pid exists (a zombie counts until it is reaped). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function readClusterState(dir: string): ClusterState | undefined {
  const path = join(dir, STATE_FILE);
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, "utf8")) as ClusterState;
  } catch {
    throw new ConfigError(`${path} is not valid JSON; stop the processes by hand (see ${join(dir, "logs")})`);
  }
}

/**
 * The members of a local cluster share one machine with the nodes: each runs Go's scheduler on one thread (unless the
 * caller set GOMAXPROCS), which saves the context switches of three runtimes each spreading its goroutines over every
 * core (measured: −0.01 to −0.03 cores of etcd at 35 puts a second, bench/RESULTS.md, session 15). Members on
 * machines of their own are started by their operators, not by this command.
 */
function etcdEnv(): NodeJS.ProcessEnv {
  return { ...process.env, GOMAXPROCS: process.env.GOMAXPROCS ?? "1" };
}

function spawnDetached(command: string, args: string[], log: string, env: NodeJS.ProcessEnv = process.env) {
  const out = openSync(log, "a");
  const child = spawn(command, args, { detached: true, stdio: ["ignore", out, out], env });
  child.unref();
  return child;
}

async function waitUntil(what: string, check: () => Promise<boolean>, child: ChildProcess, log: string, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new ConfigError(`${what} exited during start-up; see ${log}`);
    }
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new ConfigError(`${what} did not come up within ${ms / 1000} s; see ${log}`);
}

export interface ClusterUpOptions {
  dir: string;
  orgs: number;
  basePort?: number;
  /** Progress lines go here (stdout by default). */
  print?: (line: string) => void;
}

/** Starts the cluster; returns its state (also written to DIR/cluster.json). */
export async function clusterUp(options: ClusterUpOptions): Promise<ClusterState> {
  const dir = resolve(options.dir);
  const print = options.print ?? ((line: string) => process.stdout.write(`${line}\n`));
  const previous = readClusterState(dir);
  if (anyAlive(previous)) {
    throw new ConfigError(
      `a cluster is already running from ${dir}; stop it with: careledger cluster down --dir ${dir}`,
    );
  }
  if (!previous && existsSync(dir) && readdirSync(dir).length > 0) {
    throw new ConfigError(`${dir} is not empty and holds no cluster; choose a new directory`);
  }
  if (!existsSync(etcdBinary())) {
    throw new ConfigError(
      `etcd is not installed at ${etcdBinary()}; install Debian's etcd-server: apt-get install etcd-server`,
    );
  }
  const networkDir = join(dir, "network");
  const logs = join(dir, "logs");
  const fresh = !previous;
  const state: ClusterState = previous ?? { dir, network: networkDir, etcd: [], processes: [] };
  mkdirSync(logs, { recursive: true, mode: 0o700 });
  if (fresh) {
    await silently(() =>
      networkCreateCommand({
        orgs: options.orgs,
        out: networkDir,
        name: "Local Cluster",
        hosts: "localhost,127.0.0.1",
      }),
    );
  }
  const ca = { cert: join(networkDir, "ca", "ca.pem"), key: join(networkDir, "ca", "ca.key") };
  // etcd members: ports chosen on first start and kept, so a restarted cluster finds its data again.
  const specs: EtcdMemberSpec[] = [];
  if (fresh) {
    for (let i = 0; i < options.orgs; i++) {
      const name = `etcd-${i + 1}`;
      const tls = await issueCertificate(ca, join(dir, "etcd-tls"), name);
      specs.push({
        name,
        dataDir: join(dir, "etcd", name),
        clientPort: await freeServerPort(),
        peerPort: await freeServerPort(),
        tls,
      });
    }
    writeFileAtomic(etcdSpecsPath(dir), `${JSON.stringify(specs, null, 2)}\n`, 0o600);
  } else {
    specs.push(...readEtcdSpecs(dir));
  }
  state.processes = [];
  const endpoints = specs.map((s) => `127.0.0.1:${s.clientPort}`);
  state.etcd = endpoints.map((e) => `https://${e}`);
  const etcdChildren: ChildProcess[] = [];
  for (const spec of specs) {
    const log = join(logs, `${spec.name}.log`);
    const child = spawnDetached(etcdBinary(), etcdArgs(spec, specs, "careledger-local"), log, etcdEnv());
    etcdChildren.push(child);
    state.processes.push({
      name: spec.name,
      kind: "etcd",
      pid: child.pid as number,
      url: `https://127.0.0.1:${spec.clientPort}`,
      dir: spec.dataDir,
      log,
    });
  }
  writeFileAtomic(join(dir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`, 0o644);
  const _firstTls = specs[0]?.tls;
  const probe = etcdClient(state.etcd, specs[0]?.tls, 1000);
  try {
    await waitUntil(
      "etcd",
      async () => {
        await probe.get("careledger-probe").string();
        return true;
      },
      etcdChildren[0] as ChildProcess,
      join(logs, "etcd-1.log"),
    );
  } finally {
    probe.close();
  }
  // A quorum answers even with a member down (one whose port was taken meanwhile, say): every member must run.
  for (const [i, child] of etcdChildren.entries()) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const name = specs[i]?.name ?? `etcd-${i + 1}`;
      throw new ConfigError(`${name} exited during start-up; see ${join(logs, `${name}.log`)}`);
    }
  }
  print(`etcd: ${specs.length} members, clients at ${state.etcd.join(", ")}`);
  // Nodes: one per organisation.
  const orgDirs = readdirSync(networkDir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && e.name !== "ca")
    .map((e) => e.name)
    .sort();
  let port = options.basePort ?? 7700;
  for (const org of orgDirs) {
    const nodeDir = join(dir, "nodes", org);
    // Each node dir is made on the first start that reaches it (a first start that failed part-way is continued).
    if (!existsSync(dataPaths(nodeDir).config)) {
      const nodePort = port === 0 ? 0 : await freePortFrom(port);
      if (port !== 0) port = nodePort + 1;
      await silently(() =>
        initCommand({
          dir: nodeDir,
          org,
          genesis: join(networkDir, "genesis.json"),
          nodeKey: join(networkDir, org, "node.key"),
          tls: join(networkDir, org, "tls"),
          orderer: `etcds://${endpoints.join(",")}`,
          port: nodePort,
        }),
      );
    }
    const log = join(logs, `${org}.log`);
    const logStart = existsSync(log) ? readFileSync(log).length : 0;
    const child = spawnDetached(process.execPath, [MAIN, "start", "--dir", nodeDir], log);
    const entry: ClusterProcess = { name: org, kind: "node", pid: child.pid as number, url: "", dir: nodeDir, log };
    state.processes.push(entry);
    writeFileAtomic(join(dir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`, 0o644);
    // The URL as the node says it (a port of 0 in its config means one the kernel chose).
    const listening = () => /listening on (https?:\/\/\S+)/.exec(readFileSync(log).subarray(logStart).toString("utf8"));
    await waitUntil(`node ${org}`, async () => listening() !== null, child, log, 60_000);
    entry.url = (listening() as RegExpExecArray)[1] as string;
    writeFileAtomic(join(dir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`, 0o644);
    print(`node ${org}: ${entry.url} (data ${nodeDir}, log ${log})`);
  }
  print(
    `the cluster runs in the background; stop it with: careledger cluster down --dir ${dir}\n` +
      `  CA certificate for clients: ${ca.cert}\n` +
      `  try: curl --cacert ${ca.cert} ${state.processes.find((p) => p.kind === "node")?.url}/ledger/head`,
  );
  return state;
}

/** Runs a command whose instructions are for a person setting things up by hand, without its output. */
async function silently(run: () => Promise<void>): Promise<void> {
  const write = process.stdout.write;
  process.stdout.write = (() => true) as typeof process.stdout.write;
  try {
    await run();
  } finally {
    process.stdout.write = write;
  }
}

async function freePortFrom(start: number): Promise<number> {
  for (let port = start; port < start + 200; port++) {
    if (await canBind(port)) return port;
  }
  return freePort();
}

/** Stops the nodes (SIGTERM, they finish what they accepted), then etcd. */
export async function clusterDown(options: { dir: string; print?: (line: string) => void }): Promise<void> {
  const dir = resolve(options.dir);
  const print = options.print ?? ((line: string) => process.stdout.write(`${line}\n`));
  const state = readClusterState(dir);
  if (!state) throw new ConfigError(`${dir} holds no cluster (no ${STATE_FILE})`);
  // Nodes get time to finish what they accepted (they exit within 20 s whatever happens). etcd members stopped
  // together spend seconds handing leadership to each other; every write they acknowledged is already in their
  // fsynced WAL, so after a short grace they are killed.
  const grace = { node: 25_000, etcd: 2_000 };
  for (const kind of ["node", "etcd"] as const) {
    const group = state.processes.filter((p) => p.kind === kind && isAlive(p.pid));
    for (const p of group) process.kill(p.pid, "SIGTERM");
    const deadline = Date.now() + grace[kind];
    while (group.some((p) => isAlive(p.pid)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const p of group.filter((q) => isAlive(q.pid))) {
      if (kind === "node") print(`${p.name} did not stop within ${grace[kind] / 1000} s; killing it`);
      process.kill(p.pid, "SIGKILL");
    }
    const reaped = Date.now() + 5000;
    while (group.some((p) => isAlive(p.pid)) && Date.now() < reaped) await new Promise((r) => setTimeout(r, 20));
    for (const p of group) print(`stopped ${p.name}`);
  }
  if (state.processes.every((p) => !isAlive(p.pid)))
    print(`cluster in ${dir} is down (data kept; cluster up starts it again)`);
}

/** Whether any process of a cluster's recorded state still runs. */
function anyAlive(state: ClusterState | undefined): boolean {
  return state?.processes.some((p) => isAlive(p.pid)) === true;
}

/**
 * Stops whatever a cluster start-up in `dir` has spawned so far, at any point of it: `cluster up` records each process
 * as it spawns it, and one spawned while a pass ran is caught by the next. Says whether anything was running.
 */
export async function stopStartedCluster(dir: string): Promise<boolean> {
  let stopped = false;
  for (let pass = 0; pass < 3 && anyAlive(readClusterState(resolve(dir))); pass++) {
    stopped = true;
    await clusterDown({ dir, print: () => {} }).catch(() => undefined);
  }
  return stopped;
}

/**
 * `careledger cluster up` as a command. A start-up that fails stops the members and nodes it had started (they run
 * detached, so they would outlive the command) and keeps the data and logs; Ctrl-C (or SIGTERM) meanwhile does the same
 * and also removes the directory's contents if this start-up was creating the cluster; a stopped cluster being started
 * again keeps its data. Once up, the cluster runs on after the command exits, as intended.
 */
export async function clusterUpCommand(options: ClusterUpOptions): Promise<void> {
  const dir = resolve(options.dir);
  const previous = readClusterState(dir);
  // Already running: `clusterUp` says so, and nothing here may stop that cluster.
  if (anyAlive(previous)) {
    await clusterUp(options);
    return;
  }
  const creating = previous === undefined && (!existsSync(dir) || readdirSync(dir).length === 0);
  await interruptible(
    "cluster up",
    async () => {
      try {
        await clusterUp(options);
      } catch (error) {
        // All or nothing: what started before the failure is stopped, and the data (logs included) kept; `cluster up`
        // again continues once the cause is fixed.
        if ((await stopStartedCluster(dir)) && error instanceof Error) {
          error.message += "; the members and nodes it had started are stopped again";
        }
        throw error;
      }
    },
    async () => {
      await stopStartedCluster(dir);
      if (!creating) return `stopped; the data stays in ${dir}`;
      for (const entry of existsSync(dir) ? readdirSync(dir) : []) {
        rmSync(join(dir, entry), { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
      }
      return `stopped, and removed what it had written to ${dir}`;
    },
  );
}

export function clusterStatus(options: { dir: string }): void {
  const state = readClusterState(resolve(options.dir));
  if (!state) throw new ConfigError(`${options.dir} holds no cluster`);
  for (const p of state.processes) {
    process.stdout.write(
      `${p.kind.padEnd(4)} ${p.name.padEnd(28)} ${isAlive(p.pid) ? "running" : "stopped"}  ${p.url}\n`,
    );
  }
}
