// The load process for `careledger bench fhir`: FHIR reads over HTTP (undici, keep-alive) with a bearer token against
// a node running in another process, then search and $everything latency one call at a time. Prints one JSON object
// on stdout.

import { readFileSync } from "node:fs";
import { Agent, request } from "undici";
import { cpuSecondsOf, percentile } from "./limits.ts";

interface LoadArgs {
  url: string;
  token: string;
  /** JSON file: ["Observation/…", "Patient/…", …] — what the reads are spread over. */
  targetsFile: string;
  /** The 1,000-resource patient (its FHIR id). */
  bigPatient: string;
  connections: number;
  warmupSeconds: number;
  seconds: number;
  searchCalls: number;
  everythingCalls: number;
  /** The node's process id: its CPU time is read from /proc around the read phase (Linux). */
  nodePid?: number;
}

const args = JSON.parse(process.argv[2] ?? "{}") as LoadArgs;
const targets = JSON.parse(readFileSync(args.targetsFile, "utf8")) as string[];
if (targets.length === 0) throw new Error("no read targets");
const agent = new Agent({ connections: args.connections, pipelining: 1, keepAliveTimeout: 60_000 });
const headers = { authorization: `Bearer ${args.token}`, accept: "application/fhir+json" };

async function get(path: string): Promise<{ status: number; text: string; ms: number }> {
  const started = performance.now();
  const response = await request(`${args.url}/fhir/${path}`, { method: "GET", headers, dispatcher: agent });
  const text = await response.body.text();
  return { status: response.statusCode, text, ms: performance.now() - started };
}

// (a) reads at full load: `connections` requests in flight, each worker taking the next target in a shuffled order.
interface ReadPhase {
  ok: number;
  byStatus: Record<string, number>;
  latencies: number[];
  seconds: number;
}

async function readPhase(seconds: number, keep: boolean): Promise<ReadPhase> {
  const phase: ReadPhase = { ok: 0, byStatus: {}, latencies: [], seconds: 0 };
  let next = Math.floor(Math.random() * targets.length);
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: args.connections }, async () => {
      while (performance.now() < deadline) {
        const target = targets[next++ % targets.length] as string;
        const r = await get(target);
        phase.byStatus[r.status] = (phase.byStatus[r.status] ?? 0) + 1;
        if (r.status !== 200) {
          if ((phase.byStatus[r.status] ?? 0) <= 3) {
            process.stderr.write(
              `load: HTTP ${r.status} for a ${target.split("/")[0]} read: ${r.text.slice(0, 200)}\n`,
            );
          }
          continue;
        }
        phase.ok++;
        if (keep) phase.latencies.push(r.ms);
      }
    }),
  );
  phase.seconds = (performance.now() - started) / 1000;
  return phase;
}

// (b) one call at a time: the latency a user sees, not a throughput.
async function sequential(
  path: string,
  calls: number,
): Promise<{ latencies: number[]; entries: number; total: number }> {
  const latencies: number[] = [];
  let entries = 0;
  let total = 0;
  await get(path); // warm: first-call compilation is not what is measured
  for (let i = 0; i < calls; i++) {
    const r = await get(path);
    if (r.status !== 200) throw new Error(`HTTP ${r.status} for ${path.split("?")[0]}: ${r.text.slice(0, 300)}`);
    const bundle = JSON.parse(r.text) as { total?: number; entry?: unknown[] };
    entries = bundle.entry?.length ?? 0;
    total = bundle.total ?? 0;
    latencies.push(r.ms);
  }
  return { latencies, entries, total };
}

const ms = (values: number[], p: number) => Number(percentile(values, p).toFixed(2));

await readPhase(args.warmupSeconds, false);
const nodeCpuBefore = cpuSecondsOf(args.nodePid);
const ownCpuBefore = process.cpuUsage();
// Monotonic µs (the clock V8's CPU profiles use), so a profile of the node can be cut to the read phase.
const readWindowStart = Number(process.hrtime.bigint() / 1000n);
const reads = await readPhase(args.seconds, true);
const readWindowEnd = Number(process.hrtime.bigint() / 1000n);
const nodeCpuAfter = cpuSecondsOf(args.nodePid);
const ownCpu = process.cpuUsage(ownCpuBefore);
const cores = (cpuSeconds: number) => Number((cpuSeconds / reads.seconds).toFixed(2));
const search = await sequential(
  `Observation?patient=${encodeURIComponent(args.bigPatient)}&_count=50`,
  args.searchCalls,
);
const everything = await sequential(`Patient/${encodeURIComponent(args.bigPatient)}/$everything`, args.everythingCalls);
await agent.close();

process.stdout.write(
  `${JSON.stringify({
    req_per_s: Math.round(reads.ok / reads.seconds),
    p50_ms: ms(reads.latencies, 0.5),
    p99_ms: ms(reads.latencies, 0.99),
    reads_ok: reads.ok,
    reads_by_status: reads.byStatus,
    read_seconds: Number(reads.seconds.toFixed(2)),
    read_window_us: [readWindowStart, readWindowEnd],
    node_cpu_cores_reads:
      nodeCpuBefore === undefined || nodeCpuAfter === undefined ? null : cores(nodeCpuAfter - nodeCpuBefore),
    load_cpu_cores_reads: cores((ownCpu.user + ownCpu.system) / 1e6),
    search_p50_ms: ms(search.latencies, 0.5),
    search_p99_ms: ms(search.latencies, 0.99),
    search_calls: search.latencies.length,
    search_entries: search.entries,
    search_total: search.total,
    everything_p50_ms: ms(everything.latencies, 0.5),
    everything_p99_ms: ms(everything.latencies, 0.99),
    everything_calls: everything.latencies.length,
    everything_entries: everything.entries,
  })}\n`,
);
