// `careledger bench verify`: builds a real ledger of 10^6 txs (quick: 2·10^4) through the node code in process, then
// times `careledger verify`'s replay of it (verifyStore: hash chain, ids, signatures, contract results, Merkle nodes,
// tx index, tree head, state table). Also reports the node's ingestion rate at 10^5 and 10^6 txs already in the
// ledger (DESIGN: within 10%), per-chunk commit latency, proof sizes at 10^3/10^5/10^6 and ledger.db bytes per tx.
//
// Phases: machine limits → pre-sign every tx on worker threads into a file (so signing never competes with the node
// while it is measured, and memory stays bounded) → ingest the file in chunks through LedgerNode.submit → close →
// replay → proofs.
import { execFileSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { leafBytes } from "../src/ledger/block.ts";
import { toHex } from "../src/ledger/encoding.ts";
import {
  consistencyProof,
  hashLeaf,
  inclusionProof,
  subtreeRoot,
  verifyConsistency,
  verifyInclusion,
} from "../src/ledger/merkle.ts";
import { parseSignedTx } from "../src/ledger/tx.ts";
import type { Block, Hex32, SignedTx } from "../src/ledger/types.ts";
import { dataPaths } from "../src/node/datadir.ts";
import { createLogger } from "../src/node/logger.ts";
import { initNetwork } from "../src/node/network.ts";
import { openNode } from "../src/node/runtime.ts";
import { verifyStore } from "../src/node/verify.ts";
import { VerifyPool } from "../src/node/verify-pool.ts";
import { LedgerStore } from "../src/store/ledger-store.ts";
import { removeOnInterrupt } from "./interrupt.ts";
import { machineLimits, percentile } from "./limits.ts";
import type { SignAnswer, SignPlan, SignRequest } from "./verify-sign.ts";

export interface VerifyBenchOptions {
  quick?: boolean;
  log?: (line: string) => void;
  /** Overrides, for tests and experiments. */
  txs?: number;
  patients?: number;
  chunk?: number;
  /** Chunks submitted and not yet committed, at most. */
  inflight?: number;
  /** Keep the data dir (its path is in the result) instead of deleting it. */
  keep?: boolean;
}

interface Window {
  name: string;
  from: number;
  to: number;
}

const round = (x: number, digits = 0) => Number(x.toFixed(digits));

/** Wall clock, CPU time of the whole process (every thread) and its file-system output, at one instant. */
interface Usage {
  t: number;
  cpuUs: number;
  /** 512-byte blocks written (getrusage ru_oublock). */
  written: number;
}

function usage(): Usage {
  const r = process.resourceUsage();
  return { t: performance.now(), cpuUs: r.userCPUTime + r.systemCPUTime, written: r.fsWrite };
}

/** What a stretch of `txs` txs cost: CPU µs per tx, cores in use (of the machine's), disk KB written per tx. */
function costOf(a: Usage, b: Usage, txs: number) {
  const wallUs = (b.t - a.t) * 1000;
  return {
    cpu_us_per_tx: round((b.cpuUs - a.cpuUs) / Math.max(1, txs), 1),
    cores_used: round((b.cpuUs - a.cpuUs) / Math.max(1, wallUs), 2),
    written_kb_per_tx: round(((b.written - a.written) * 512) / 1024 / Math.max(1, txs), 2),
  };
}

export async function run(options: VerifyBenchOptions = {}): Promise<Record<string, unknown>> {
  const log = options.log ?? (() => {});
  const quick = options.quick === true;
  const total = options.txs ?? (quick ? 20_000 : 1_000_000);
  const patientCount = Math.min(options.patients ?? (quick ? 200 : 1000), total);
  const chunkSize = options.chunk ?? (quick ? 1000 : 5000);
  const inflight = options.inflight ?? 2;
  // Ingestion windows: log sizes between which the commit rate is measured ("at 10^5" and "at 10^6" in full runs).
  const windows: Window[] =
    total >= 1_000_000
      ? [
          { name: "1e5", from: 90_000, to: 110_000 },
          { name: "1e6", from: 960_000, to: 1_000_000 },
        ]
      : [
          { name: "1e5", from: Math.round(total * 0.2), to: Math.round(total * 0.3) },
          { name: "1e6", from: Math.round(total * 0.8), to: total },
        ];
  const proofSizes = (total >= 1_000_000 ? [1_000, 100_000, 1_000_000] : [1_000, 10_000, total]).filter(
    (n) => n <= total,
  );

  const work = mkdtempSync(join(tmpdir(), "careledger-bench-verify-"));
  const releaseWork = options.keep ? () => {} : removeOnInterrupt(work);
  const dir = join(work, "node");
  const phases: Record<string, number> = {};
  const phase = async <T>(name: string, body: () => Promise<T> | T): Promise<T> => {
    const t0 = performance.now();
    try {
      return await body();
    } finally {
      phases[name] = round((performance.now() - t0) / 1000, 2);
    }
  };
  try {
    log(`bench verify: ${total} txs, ${patientCount} patients, chunks of ${chunkSize}, ${inflight} in flight`);
    log("measuring this machine's limits (Ed25519 verify on one core, fsync)…");
    const limitsBefore = await phase("limits_s", () => machineLimits(work, log));
    log(`  ${JSON.stringify(limitsBefore)}`);

    const created = initNetwork(dir, { orgName: "Bench Hospital" });
    const plan: SignPlan = {
      dir,
      orgId: created.orgId,
      patients: Array.from({ length: patientCount }, () => ({
        id: randomUUID(),
        seed: randomBytes(32).toString("hex"),
        rules: [randomUUID(), randomUUID(), randomUUID(), randomUUID()],
      })),
      ghosts: Array.from({ length: 16 }, () => randomUUID()),
    };
    // Chunk 0 holds only the registrations, so every later tx finds its patient registered. A tail of one pipeline's
    // worth of chunks beyond `total` keeps the last window in steady state rather than in the final drain.
    const submitTotal = total + inflight * chunkSize;
    const chunks: { start: number; count: number }[] = [{ start: 0, count: patientCount }];
    for (let s = patientCount; s < submitTotal; s += chunkSize) {
      chunks.push({ start: s, count: Math.min(chunkSize, submitTotal - s) });
    }

    const txFile = join(work, "txs.jsonl");
    const { offsets, kinds } = await phase("sign_s", () => signAll(plan, chunks, txFile, log));

    const build = await phase("build_s", () => ingest(dir, txFile, offsets, chunks, windows, inflight, log));

    const paths = dataPaths(dir);
    const dbBytes = fileSize(paths.ledger) + fileSize(`${paths.ledger}-wal`);
    const ordererBytes = fileSize(paths.orderer) + fileSize(`${paths.orderer}-wal`);

    // Measured again right before the replay, which is what they bound. A 1 s sample on a shared machine can catch
    // another process's burst, so the better of the two samples is reported (both are in limits_samples).
    log("measuring this machine's limits again…");
    const limitsAfter = machineLimits(work);
    log(`  ${JSON.stringify(limitsAfter)}`);
    const limits = {
      ed25519_verify_per_s_1core: Math.max(
        limitsBefore.ed25519_verify_per_s_1core,
        limitsAfter.ed25519_verify_per_s_1core,
      ),
      fsync_per_s: Math.max(limitsBefore.fsync_per_s, limitsAfter.fsync_per_s),
      cores: limitsBefore.cores,
    };

    const openStarted = performance.now();
    const store = LedgerStore.open(paths.ledger);
    const storeOpenMs = Math.round(performance.now() - openStarted);
    log(`  opened ledger.db in ${storeOpenMs} ms`);
    const pool = new VerifyPool();
    let replay: Awaited<ReturnType<typeof replayStore>>;
    let proofs: ProofFigures[];
    try {
      log("replaying the ledger (verifyStore)…");
      replay = await phase("replay_s", () => replayStore(store, pool, log));
      log(`  ${JSON.stringify(replay)}`);
      proofs = await phase("proofs_s", () => proofFigures(store, proofSizes));
      for (const p of proofs) log(`  proofs at ${p.size}: ${JSON.stringify(p)}`);
    } finally {
      await pool.close();
      store.close();
    }

    const at = (name: string) => build.windows.find((w) => w.name === name);
    const w5 = at("1e5");
    const w6 = at("1e6");
    const growth = w5 && w6 && w5.tx_per_s > 0 ? round(w6.tx_per_s / w5.tx_per_s, 3) : undefined;
    // The same ratio in CPU time per tx: what the node spends, whatever else the machine was running meanwhile.
    const growthCpu = w5 && w6 && w6.cpu_us_per_tx > 0 ? round(w5.cpu_us_per_tx / w6.cpu_us_per_tx, 3) : undefined;
    return {
      tx_per_s: replay.tx_per_s,
      ok: replay.ok,
      replay_ms: replay.ms,
      store_open_ms: storeOpenMs,
      replay_core_ms: replay.core_ms,
      replay_blocks: replay.blocks,
      replay_txs: replay.txs,
      replay_problem: replay.problem,
      replay_peak_rss_mb: replay.peak_rss_mb,
      replay_cpu_us_per_tx: replay.cpu_us_per_tx,
      replay_cores_used: replay.cores_used,
      goal_tx_per_s: 10_000,
      replay_ratio_to_2core_verify: round(replay.tx_per_s / (2 * limits.ed25519_verify_per_s_1core), 3),
      tx_per_s_at_1e5: w5?.tx_per_s,
      tx_per_s_at_1e6: w6?.tx_per_s,
      growth_ratio: growth,
      growth_ratio_cpu: growthCpu,
      goal_growth_ratio_min: 0.9,
      p50_ms: build.p50_ms,
      p99_ms: build.p99_ms,
      build_tx_per_s: build.tx_per_s,
      build_cpu_us_per_tx: build.cost.cpu_us_per_tx,
      build_cores_used: build.cost.cores_used,
      build_written_kb_per_tx: build.cost.written_kb_per_tx,
      windows: build.windows,
      ledger_txs: build.size,
      rejected_txs: build.rejected,
      ledger_db_bytes: dbBytes,
      db_bytes_per_tx: round(dbBytes / Math.max(1, build.size), 1),
      orderer_db_bytes: ordererBytes,
      proofs,
      phases_s: phases,
      ...limits,
      limits_samples: [limitsBefore, limitsAfter],
      params: {
        txs: total,
        txs_submitted: submitTotal,
        quick,
        patients: patientCount,
        mix: kinds,
        chunk: chunkSize,
        chunks_in_flight: inflight,
        batch_max_txs: build.config.batchMaxTxs,
        batch_max_wait_ms: build.config.batchMaxWaitMs,
        workers: build.config.workers,
        windows: windows.map((w) => [w.from, w.to]),
        proof_leaf: "inclusion of leaf floor(n/3) in the tree of size n; consistency from floor(n/3) to n",
      },
      code: codeVersion(),
      dir: options.keep ? dir : undefined,
    };
  } finally {
    if (!options.keep) rmSync(work, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
    releaseWork();
  }
}

/** Which code was measured: the commit, and whether the working tree differed from it. */
function codeVersion(): { commit: string; dirty: boolean } | undefined {
  try {
    const cwd = new URL("..", import.meta.url).pathname;
    const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd, encoding: "utf8" }).trim();
    const status = execFileSync("git", ["status", "--porcelain", "--untracked-files=no", "--", "src"], {
      cwd,
      encoding: "utf8",
    });
    return { commit, dirty: status.trim() !== "" };
  } catch {
    return undefined;
  }
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** Signs every chunk on worker threads (one per core) and writes them in order to `file`, one JSON array a line. */
async function signAll(
  plan: SignPlan,
  chunks: { start: number; count: number }[],
  file: string,
  log: (line: string) => void,
): Promise<{ offsets: { offset: number; length: number }[]; kinds: Record<string, number> }> {
  const count = Math.max(1, Math.min(availableParallelism(), chunks.length));
  const workers = Array.from(
    { length: count },
    () => new Worker(new URL("./verify-sign.ts", import.meta.url), { workerData: plan }),
  );
  const fd = openSync(file, "w");
  const offsets: { offset: number; length: number }[] = [];
  const kinds: Record<string, number> = {};
  const ready = new Map<number, string>();
  let written = 0;
  let offset = 0;
  let next = 0;
  const total = chunks.reduce((n, c) => n + c.count, 0);
  let signed = 0;
  let reported = 0;
  const started = performance.now();
  try {
    await new Promise<void>((resolve, reject) => {
      const feed = (worker: Worker) => {
        // Bounded read-ahead: at most 2 chunks per worker waiting to be written.
        if (next >= chunks.length || ready.size > 2 * count) return;
        const c = chunks[next] as { start: number; count: number };
        worker.postMessage({ chunk: next, start: c.start, count: c.count } satisfies SignRequest);
        next++;
      };
      for (const worker of workers) {
        worker.on("error", reject);
        worker.on("message", (answer: SignAnswer) => {
          ready.set(answer.chunk, answer.json);
          for (const [k, v] of Object.entries(answer.kinds)) kinds[k] = (kinds[k] ?? 0) + v;
          signed += (chunks[answer.chunk] as { count: number }).count;
          while (ready.has(written)) {
            const line = `${ready.get(written)}\n`;
            ready.delete(written);
            const bytes = Buffer.from(line);
            writeSync(fd, bytes);
            offsets.push({ offset, length: bytes.length - 1 });
            offset += bytes.length;
            written++;
          }
          if (signed - reported >= total / 10) {
            reported = signed;
            const rate = Math.round(signed / ((performance.now() - started) / 1000));
            log(`  signed ${signed}/${total} (${rate} tx/s)`);
          }
          if (written === chunks.length) resolve();
          else feed(worker);
        });
        feed(worker);
      }
    });
  } finally {
    closeSync(fd);
    await Promise.all(workers.map((w) => w.terminate()));
  }
  log(
    `  pre-signed ${total} txs into ${Math.round(offset / 1e6)} MB in ${round((performance.now() - started) / 1000, 1)} s`,
  );
  return { offsets, kinds };
}

interface WindowFigures {
  name: string;
  from: number;
  to: number;
  tx_per_s: number;
  seconds: number;
  chunk_p50_ms: number;
  chunk_p99_ms: number;
  cpu_us_per_tx: number;
  cores_used: number;
  written_kb_per_tx: number;
}

/**
 * Opens the node in process and submits the pre-signed chunks, `inflight` at a time. The commit rate is read off
 * the node's own "block" events (log size after each durable block); chunk latency runs from submit to the last
 * tx of the chunk being committed.
 */
async function ingest(
  dir: string,
  file: string,
  offsets: { offset: number; length: number }[],
  chunks: { start: number; count: number }[],
  windows: Window[],
  inflight: number,
  log: (line: string) => void,
) {
  const running = await openNode(dir, { listen: false, log: createLogger("warn") });
  const { node, config } = running;
  const samples: (Usage & { size: number })[] = [];
  let rejected = 0;
  node.on("block", (block: Block) => {
    samples.push({ ...usage(), size: block.size });
    for (const e of block.txs) if (!e.result.valid) rejected++;
  });
  const fd = openSync(file, "r");
  const latencies: { done: number; ms: number }[] = [];
  const total = chunks.reduce((n, c) => n + c.count, 0);
  let submitted = 0;
  let committed = 0;
  let reported = 0;
  const started = performance.now();
  const startUsage = usage();
  const submitChunk = async (k: number) => {
    const where = offsets[k] as { offset: number; length: number };
    const buf = Buffer.allocUnsafe(where.length);
    readSync(fd, buf, 0, where.length, where.offset);
    const raw = JSON.parse(buf.toString("utf8")) as unknown[];
    const items: { tx: SignedTx; id: Hex32 }[] = raw.map((r, i) => {
      const p = parseSignedTx(r);
      if (!p.ok) throw new Error(`pre-signed tx ${k}/${i} does not parse: ${p.error}`);
      return { tx: p.tx, id: p.id };
    });
    submitted += items.length;
    const t0 = performance.now();
    const results = await Promise.all(await node.submit(items));
    const now = performance.now();
    committed += items.length;
    latencies.push({ done: now, ms: now - t0 });
    if (results.length !== items.length) throw new Error(`chunk ${k}: ${results.length} results`);
    if (committed - reported >= total / 20) {
      reported = committed;
      const rate = Math.round(committed / ((now - started) / 1000));
      log(`  committed ${committed}/${total} (${rate} tx/s overall, height ${node.height})`);
    }
  };
  try {
    // Registrations first, so every later tx finds its patient.
    await submitChunk(0);
    let next = 1;
    let failed = false;
    await Promise.all(
      Array.from({ length: inflight }, async () => {
        try {
          while (next < chunks.length && !failed) await submitChunk(next++);
        } catch (error) {
          failed = true;
          throw error;
        }
      }),
    );
  } finally {
    closeSync(fd);
    await running.close();
  }
  const elapsed = (performance.now() - started) / 1000;
  const size = samples.at(-1)?.size ?? 0;
  const cost = costOf(startUsage, usage(), committed);
  const windowFigures: WindowFigures[] = [];
  for (const w of windows) {
    const a = samples.find((s) => s.size >= w.from);
    const b = samples.find((s) => s.size >= w.to);
    if (!a || !b || b.t <= a.t) continue;
    const inWindow = latencies.filter((l) => l.done >= a.t && l.done <= b.t).map((l) => l.ms);
    windowFigures.push({
      name: w.name,
      from: a.size,
      to: b.size,
      tx_per_s: Math.round((b.size - a.size) / ((b.t - a.t) / 1000)),
      seconds: round((b.t - a.t) / 1000, 2),
      chunk_p50_ms: round(percentile(inWindow, 0.5), 1),
      chunk_p99_ms: round(percentile(inWindow, 0.99), 1),
      ...costOf(a, b, b.size - a.size),
    });
  }
  const all = latencies.map((l) => l.ms);
  log(`  built ${size} txs in ${round(elapsed, 1)} s; ${submitted} submitted`);
  return {
    size,
    rejected,
    tx_per_s: Math.round(committed / elapsed),
    p50_ms: round(percentile(all, 0.5), 1),
    p99_ms: round(percentile(all, 0.99), 1),
    cost,
    windows: windowFigures,
    config,
  };
}

async function replayStore(store: LedgerStore, pool: VerifyPool, log: (line: string) => void) {
  const blocks = (store.head()?.height ?? 0) + 1;
  let reported = 0;
  let peakRss = process.memoryUsage.rss();
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage.rss());
  }, 250);
  const t0 = performance.now();
  const u0 = usage();
  let last = { ...u0, txs: 0 };
  const report = await verifyStore(store, pool, {
    onProgress: (height, txs) => {
      if (height - reported >= blocks / 10) {
        reported = height;
        const now = { ...usage(), txs };
        const rate = Math.round((txs - last.txs) / ((now.t - last.t) / 1000));
        const c = costOf(last, now, txs - last.txs);
        log(`  replayed block ${height}/${blocks - 1}, ${txs} txs (last stretch ${rate} tx/s, ${JSON.stringify(c)})`);
        last = now;
      }
    },
  });
  const ms = performance.now() - t0;
  const cost = costOf(u0, usage(), report.txs);
  clearInterval(sampler);
  return {
    ok: report.ok,
    problem: report.problem,
    blocks: report.blocks,
    txs: report.txs,
    ms: Math.round(ms),
    core_ms: Math.round(report.elapsedMs),
    /** Over the whole verifyStore call, as `careledger verify --dir` spends it (quick_check and state compare included). */
    tx_per_s: Math.round(report.txs / (ms / 1000)),
    peak_rss_mb: Math.round(peakRss / 1e6),
    ...cost,
  };
}

interface ProofFigures {
  size: number;
  inclusion_hashes: number;
  inclusion_bytes: number;
  inclusion_json_bytes: number;
  consistency_hashes: number;
  consistency_bytes: number;
  consistency_json_bytes: number;
  inclusion_us: number;
  consistency_us: number;
  verified: boolean;
}

/**
 * Inclusion and consistency proofs read from the store, as the HTTP API builds them, each checked against the roots.
 * `bytes` counts raw 32-byte hashes; `json_bytes` is the hex array as the API serves it.
 */
function proofFigures(store: LedgerStore, sizes: number[]): ProofFigures[] {
  const logSize = store.head()?.size ?? 0;
  const out: ProofFigures[] = [];
  for (const size of sizes) {
    if (size > logSize || size < 2) continue;
    const index = Math.floor(size / 3);
    const reps = 200;
    let t0 = performance.now();
    let incl: Uint8Array[] = [];
    for (let i = 0; i < reps; i++) incl = inclusionProof(store, index, size);
    const inclusionUs = ((performance.now() - t0) * 1000) / reps;
    t0 = performance.now();
    let cons: Uint8Array[] = [];
    for (let i = 0; i < reps; i++) cons = consistencyProof(store, index, size);
    const consistencyUs = ((performance.now() - t0) * 1000) / reps;
    const root = subtreeRoot(store, 0, size);
    const oldRoot = subtreeRoot(store, 0, index);
    // The leaf hash from the block itself, not from the store's Merkle table: the proof must tie the tx to the root.
    const leaf = leafOf(store, index);
    const verified =
      verifyInclusion(leaf, index, size, incl, root) && verifyConsistency(index, size, oldRoot, root, cons);
    out.push({
      size,
      inclusion_hashes: incl.length,
      inclusion_bytes: incl.length * 32,
      inclusion_json_bytes: JSON.stringify(incl.map(toHex)).length,
      consistency_hashes: cons.length,
      consistency_bytes: cons.length * 32,
      consistency_json_bytes: JSON.stringify(cons.map(toHex)).length,
      inclusion_us: round(inclusionUs, 1),
      consistency_us: round(consistencyUs, 1),
      verified,
    });
  }
  return out;
}

/** Leaf hash of the tx at global log index `index`, found by binary search over block sizes. */
function leafOf(store: LedgerStore, index: number): Uint8Array {
  let lo = 0;
  let hi = store.head()?.height ?? 0;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if ((store.getHeader(mid)?.size ?? 0) > index) hi = mid;
    else lo = mid + 1;
  }
  const block = store.getBlock(lo) as Block;
  const entry = block.txs[index - (block.size - block.txs.length)];
  if (!entry) throw new Error(`no tx at log index ${index}`);
  return hashLeaf(leafBytes(entry));
}
