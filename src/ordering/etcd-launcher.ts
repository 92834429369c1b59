import { type ChildProcess, spawn } from "node:child_process";
import { randomInt } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { OrdererError } from "./orderer.ts";

/** Debian's `etcd-server` package puts the binary here; `CARELEDGER_ETCD_BIN` overrides it. */
export function etcdBinary(): string {
  return process.env.CARELEDGER_ETCD_BIN ?? "/usr/bin/etcd";
}

export interface EtcdTls {
  /** PEM file paths. */
  ca: string;
  cert: string;
  key: string;
}

export interface EtcdMemberSpec {
  name: string;
  dataDir: string;
  clientPort: number;
  peerPort: number;
  host?: string;
  tls?: EtcdTls;
}

export interface EtcdMember {
  name: string;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  process: ChildProcess;
  /** Resolves when the process has exited. */
  exited: Promise<number | null>;
}

/** A free TCP port on loopback (asks the kernel, then releases it). */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port")),
      );
    });
  });
}

/** Whether a TCP port can be bound on `host` right now. */
export function canBind(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once("error", () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/** The lowest port of the kernel's ephemeral range, from which outgoing connections take their local ports. */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 0 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

const LOWEST_PICKED_PORT = 10_000;
const picked = new Set<number>();

/**
 * A free port for a server that binds it only later (an etcd member started with the URLs of all the others).
 * A port from `freePort` lies in the ephemeral range, where any outgoing connection on the machine may take it as its
 * local port before etcd binds it; so this picks below that range, at random (parallel pickers rarely meet), checks
 * that it binds, and never hands out the same port twice in one process. Falls back to `freePort`.
 */
export async function freeServerPort(host = "127.0.0.1"): Promise<number> {
  const span = ephemeralLow() - LOWEST_PICKED_PORT;
  if (span >= 1_000) {
    for (let attempt = 0; attempt < 50; attempt++) {
      const port = LOWEST_PICKED_PORT + randomInt(span);
      if (picked.has(port) || !(await canBind(port, host))) continue;
      picked.add(port);
      return port;
    }
  }
  return freePort(host);
}

/** etcd's backend quota; the orderer's compactor keeps the database far below it. */
export const DEFAULT_QUOTA_BYTES = 2 * 1024 ** 3;

function urlOf(host: string, port: number, tls: boolean): string {
  return `${tls ? "https" : "http"}://${host}:${port}`;
}

/**
 * The command-line arguments for one member of a static cluster. `initial-cluster-state` is `new` on first start;
 * etcd ignores it once the member's data dir holds a WAL, so restarting a member uses the same arguments.
 */
export function etcdArgs(
  member: EtcdMemberSpec,
  cluster: EtcdMemberSpec[],
  token: string,
  options: { quotaBytes?: number } = {},
): string[] {
  const host = member.host ?? "127.0.0.1";
  const tls = member.tls !== undefined;
  const clientUrl = urlOf(host, member.clientPort, tls);
  const peerUrl = urlOf(host, member.peerPort, tls);
  const args = [
    "--name",
    member.name,
    "--data-dir",
    member.dataDir,
    "--listen-client-urls",
    clientUrl,
    "--advertise-client-urls",
    clientUrl,
    "--listen-peer-urls",
    peerUrl,
    "--initial-advertise-peer-urls",
    peerUrl,
    "--initial-cluster",
    cluster.map((m) => `${m.name}=${urlOf(m.host ?? "127.0.0.1", m.peerPort, m.tls !== undefined)}`).join(","),
    "--initial-cluster-token",
    token,
    "--initial-cluster-state",
    "new",
    // Ordering keeps only what nodes still need; the 2 GiB default quota stays far away.
    "--quota-backend-bytes",
    String(options.quotaBytes ?? DEFAULT_QUOTA_BYTES),
    "--max-request-bytes",
    String(4 * 1024 * 1024),
    // The backend (bbolt) commits once a second, not every 100 ms: each commit rewrites the pages it touched and
    // fsyncs, on every member. A write is durable once the raft WAL holds it (fsynced before every commit); a member
    // that restarts re-applies the WAL past its last backend commit.
    "--backend-batch-interval",
    "1s",
    "--logger",
    "zap",
    "--log-level",
    "error",
  ];
  if (member.tls) {
    args.push(
      "--cert-file",
      member.tls.cert,
      "--key-file",
      member.tls.key,
      "--trusted-ca-file",
      member.tls.ca,
      "--client-cert-auth",
      "--peer-cert-file",
      member.tls.cert,
      "--peer-key-file",
      member.tls.key,
      "--peer-trusted-ca-file",
      member.tls.ca,
      "--peer-client-cert-auth",
    );
  }
  return args;
}

/** Starts one member of `cluster` (already described, ports chosen). Its output goes to DATA_DIR/../NAME.log. */
export function startEtcdMember(
  member: EtcdMemberSpec,
  cluster: EtcdMemberSpec[],
  options: { token?: string; stdio?: "ignore" | "inherit"; quotaBytes?: number } = {},
): EtcdMember {
  const bin = etcdBinary();
  if (!existsSync(bin)) {
    throw new OrdererError(
      "no-etcd",
      `etcd is not installed at ${bin}; install Debian's etcd-server (apt-get install etcd-server) or set CARELEDGER_ETCD_BIN`,
    );
  }
  mkdirSync(member.dataDir, { recursive: true, mode: 0o700 });
  const child = spawn(bin, etcdArgs(member, cluster, options.token ?? "careledger", options), {
    stdio: options.stdio ?? "ignore",
    env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? "" },
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const host = member.host ?? "127.0.0.1";
  return {
    name: member.name,
    clientUrl: urlOf(host, member.clientPort, member.tls !== undefined),
    peerUrl: urlOf(host, member.peerPort, member.tls !== undefined),
    dataDir: member.dataDir,
    process: child,
    exited,
  };
}

/** Waits until the member answers `/health` with a leader elected (plain HTTP only), or fails after `timeoutMs`. */
export async function waitForEtcd(clientUrl: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "no answer";
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
      const body = (await response.json()) as { health?: string };
      if (body.health === "true") return;
      last = JSON.stringify(body);
    } catch (error) {
      last = (error as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new OrdererError(
    "etcd-unavailable",
    `etcd at ${clientUrl} did not become healthy in ${timeoutMs} ms (${last})`,
  );
}

export interface LocalEtcdCluster {
  members: EtcdMember[];
  specs: EtcdMemberSpec[];
  endpoints: string[];
  /** Restarts a stopped member with its old data dir. */
  restart(index: number): Promise<EtcdMember>;
  stop(): Promise<void>;
}

/** Stops a member: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopEtcdMember(member: EtcdMember, graceMs = 2000): Promise<void> {
  if (member.process.exitCode !== null || member.process.signalCode !== null) return;
  member.process.kill("SIGTERM");
  const timer = setTimeout(() => member.process.kill("SIGKILL"), graceMs);
  await member.exited;
  clearTimeout(timer);
}

/**
 * A cluster of `size` etcd members on loopback, data under `baseDir/etcd-N` (for tests, `cluster up` and the cluster
 * benchmark). Resolves once every member is healthy; stops what it started if any does not come up.
 */
export async function startLocalEtcdCluster(
  baseDir: string,
  size: number,
  options: {
    token?: string;
    host?: string;
    stdio?: "ignore" | "inherit";
    /** `--quota-backend-bytes` (default 2 GiB); tests of compaction use a small one. */
    quotaBytes?: number;
  } = {},
): Promise<LocalEtcdCluster> {
  const host = options.host ?? "127.0.0.1";
  const specs: EtcdMemberSpec[] = [];
  for (let i = 0; i < size; i++) {
    specs.push({
      name: `etcd-${i + 1}`,
      dataDir: join(baseDir, `etcd-${i + 1}`),
      clientPort: await freeServerPort(host),
      peerPort: await freeServerPort(host),
      host,
    });
  }
  const members = specs.map((spec) => startEtcdMember(spec, specs, options));
  const cluster: LocalEtcdCluster = {
    members,
    specs,
    endpoints: members.map((m) => m.clientUrl),
    async restart(index: number) {
      const spec = specs[index];
      if (!spec) throw new RangeError(`no member ${index}`);
      const old = members[index];
      if (old) await stopEtcdMember(old);
      const member = startEtcdMember(spec, specs, options);
      members[index] = member;
      await waitForEtcd(member.clientUrl);
      return member;
    },
    async stop() {
      await Promise.all(members.map((m) => stopEtcdMember(m)));
    },
  };
  try {
    await Promise.all(members.map((m) => waitForEtcd(m.clientUrl)));
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}
