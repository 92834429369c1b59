// The load process for `careledger bench ledger`: pre-signs txs, then submits them over HTTP to a node running in
// another process and measures commit latency. Prints one JSON object on stdout.

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { Agent, request } from "undici";
import { accessLogPayload } from "../src/contract/fixtures.ts";
import type { SignedTx } from "../src/ledger/types.ts";
import { readKeyFile } from "../src/node/datadir.ts";
import { signNew } from "../src/node/network.ts";
import { clearOfStalls, DiskStallMonitor } from "./disk.ts";
import { cpuSecondsOf, percentile, threadCpuSecondsOf } from "./limits.ts";

interface LoadArgs {
  url: string;
  /** Several nodes: requests go round-robin over them (`url` is then ignored). */
  urls?: string[];
  /** The network's CA certificate file, for https nodes. */
  ca?: string;
  nodeKeyFile: string;
  custodian: string;
  patientsFile: string;
  mode: "full" | "rate";
  seconds: number;
  /** full: requests in flight at once */
  concurrency: number;
  /** txs per request */
  batch: number;
  /** rate: offered txs per second */
  rate: number;
  /** Send exactly this many txs (then stop, even before `seconds`). */
  maxTxs?: number;
  /**
   * Load offered the same way before the measured `seconds`, not counted: the first second of a new load process
   * (connections opening, code not yet optimised on either side) otherwise makes up the whole 1 % tail.
   */
  warmupSeconds?: number;
  /** Processes (name → pid) whose CPU over the measured window is reported, in cores, with this process's own. */
  cpuPids?: Record<string, number>;
  /** Of `cpuPids`, those whose CPU is also reported by thread name (`cpu_cores_by_thread`). */
  cpuThreadsOf?: string[];
  /** A directory on the nodes' disk: its stalls over the measured window are reported (`disk_stalls`). */
  diskDir?: string;
}

const args = JSON.parse(process.argv[2] ?? "{}") as LoadArgs;
const nodeKey = readKeyFile(args.nodeKeyFile);
const patients = JSON.parse(readFileSync(args.patientsFile, "utf8")) as string[];
const urls = args.urls ?? [args.url];
const agent = new Agent({
  connections: Math.max(args.concurrency, 64),
  pipelining: 1,
  keepAliveTimeout: 60_000,
  ...(args.ca ? { connect: { ca: readFileSync(args.ca) } } : {}),
});

const perSecond = args.mode === "full" ? 14_000 : args.rate;
const warmupSeconds = args.warmupSeconds ?? 0;
const total =
  args.maxTxs ?? Math.ceil(perSecond * (warmupSeconds + args.seconds) * 1.1) + args.batch * args.concurrency;
let counter = 0;
function accessLogTx(): SignedTx {
  const patient = patients[counter % patients.length] as string;
  counter++;
  return signNew(
    nodeKey,
    "access.log",
    accessLogPayload({
      requester: nodeKey.keyId,
      patient,
      custodian: args.custodian,
      resourceId: randomUUID(),
      height: 1,
    }),
    Date.now(),
  );
}

// Pre-sign and pre-serialise every request body, so the measured loop only sends.
const bodies: string[] = [];
for (let made = 0; made < total; made += args.batch) {
  const txs = Array.from({ length: args.batch }, accessLogTx);
  bodies.push(JSON.stringify(txs));
}
process.stderr.write(`load: pre-signed ${bodies.length * args.batch} txs\n`);

const latencies: number[] = [];
/** When each measured request was sent (`performance.now()`), in the order of `latencies`. */
const sentAt: number[] = [];
let committed = 0;
let valid = 0;
let failures = 0;
let next = 0;
/** Requests sent from here on are measured; the ones before are the warm-up. */
let measureFrom = Number.POSITIVE_INFINITY;

async function send(): Promise<void> {
  const at = next++;
  const body = bodies[at];
  if (body === undefined) return;
  const started = performance.now();
  const measured = started >= measureFrom;
  const response = await request(`${urls[at % urls.length]}/ledger/txs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
    dispatcher: agent,
  });
  const text = await response.body.text();
  const elapsed = performance.now() - started;
  if (response.statusCode !== 200) {
    failures++;
    if (failures <= 3) process.stderr.write(`load: HTTP ${response.statusCode}: ${text.slice(0, 200)}\n`);
    return;
  }
  if (!measured) return;
  const results = (JSON.parse(text) as { results: { valid: boolean }[] }).results;
  committed += results.length;
  for (const r of results) if (r.valid) valid++;
  latencies.push(elapsed);
  sentAt.push(started);
}

// The load's own event-loop delay: a reply that waits for this process is counted in its latency, so a reader can
// tell the node's tail from the load generator's.
const loopDelay = monitorEventLoopDelay({ resolution: 5 });
loopDelay.enable();
const started = performance.now();
measureFrom = started + warmupSeconds * 1000;
const cpuPids = Object.entries(args.cpuPids ?? {});
const threadPids = cpuPids.filter(([name]) => args.cpuThreadsOf?.includes(name));
const threadCpu = () => threadPids.map(([, pid]) => threadCpuSecondsOf(pid));
let cpuAtMeasure:
  | { own: NodeJS.CpuUsage; others: (number | undefined)[]; threads: ReturnType<typeof threadCpu> }
  | undefined;
const disk = args.diskDir ? new DiskStallMonitor(args.diskDir) : undefined;
const startMeasuring = () => {
  loopDelay.reset();
  disk?.start();
  cpuAtMeasure = { own: process.cpuUsage(), others: cpuPids.map(([, pid]) => cpuSecondsOf(pid)), threads: threadCpu() };
};
if (warmupSeconds > 0) setTimeout(startMeasuring, warmupSeconds * 1000).unref();
else startMeasuring();
const deadline = measureFrom + args.seconds * 1000;
if (args.mode === "full") {
  await Promise.all(
    Array.from({ length: args.concurrency }, async () => {
      while (performance.now() < deadline && next < bodies.length) await send();
    }),
  );
} else {
  // Open loop: requests go out on schedule whether or not earlier ones have answered.
  const inflight = new Set<Promise<void>>();
  let sentTxs = 0;
  while (performance.now() < deadline && next < bodies.length) {
    const due = ((performance.now() - started) / 1000) * args.rate;
    while (sentTxs + args.batch <= due && next < bodies.length) {
      const p = send().finally(() => inflight.delete(p));
      inflight.add(p);
      sentTxs += args.batch;
    }
    // Sleep until the next request is due, not on a fixed tick: on this VM every wake-up costs CPU the cluster under
    // test shares (a 2 ms tick was 500 wake-ups a second for ~120 requests).
    const nextDueMs = ((sentTxs + args.batch) / args.rate) * 1000 - (performance.now() - started);
    await new Promise((r) => setTimeout(r, Math.max(1, nextDueMs)));
  }
  await Promise.all(inflight);
}
const elapsedS = (performance.now() - measureFrom) / 1000;
const diskStalls = disk?.stop();
const cpuCores: Record<string, number> = {};
const cpuCoresByThread: Record<string, Record<string, number>> = {};
if (cpuAtMeasure) {
  const threadsAfter = threadCpu();
  threadPids.forEach(([name], i) => {
    const before = cpuAtMeasure?.threads[i];
    const after = threadsAfter[i];
    if (!before || !after) return;
    const perThread: Record<string, number> = {};
    for (const [thread, seconds] of Object.entries(after)) {
      const start = before[thread];
      if (start !== undefined) perThread[thread] = Number(((seconds - start) / elapsedS).toFixed(3));
    }
    cpuCoresByThread[name] = perThread;
  });
  const cores = (seconds: number) => Number((seconds / elapsedS).toFixed(2));
  cpuPids.forEach(([name, pid], i) => {
    const before = cpuAtMeasure?.others[i];
    const after = cpuSecondsOf(pid);
    if (before !== undefined && after !== undefined) cpuCores[name] = cores(after - before);
  });
  const own = process.cpuUsage(cpuAtMeasure.own);
  cpuCores.load = cores((own.user + own.system) / 1e6);
}
loopDelay.disable();
await agent.close();
// Before sorting: which requests overlapped a disk stall (the rest show the tail that is not the disk's).
const clear = diskStalls && disk ? clearOfStalls(sentAt, latencies, disk.spans()) : undefined;
latencies.sort((a, b) => a - b);
const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0;
process.stdout.write(
  `${JSON.stringify({
    mode: args.mode,
    seconds: Number(elapsedS.toFixed(2)),
    committed,
    valid,
    failures,
    tx_per_s: Math.round(committed / elapsedS),
    p50_ms: Number(q(0.5).toFixed(2)),
    p99_ms: Number(q(0.99).toFixed(2)),
    batch: args.batch,
    concurrency: args.mode === "full" ? args.concurrency : undefined,
    warmup_seconds: warmupSeconds,
    offered_tx_per_s: args.mode === "rate" ? args.rate : undefined,
    load_loop_delay_p99_ms: Number((loopDelay.percentile(99) / 1e6).toFixed(2)),
    load_loop_delay_max_ms: Number((loopDelay.max / 1e6).toFixed(2)),
    cpu_cores: cpuCores,
    ...(threadPids.length > 0 ? { cpu_cores_by_thread: cpuCoresByThread } : {}),
    ...(diskStalls && clear
      ? {
          disk_stalls: {
            ...diskStalls,
            requests_overlapping: latencies.length - clear.length,
            p99_ms_of_requests_clear_of_them: Number(percentile(clear, 0.99).toFixed(2)),
          },
        }
      : {}),
  })}\n`,
);
