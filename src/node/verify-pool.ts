import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { verifyTxSignature } from "../ledger/tx.ts";
import type { SignedTx } from "../ledger/types.ts";
import type { VerifyAnswer, VerifyJob } from "./verify-worker.ts";

interface Pending {
  resolve: (ok: boolean[]) => void;
  reject: (error: Error) => void;
}

interface PooledWorker {
  worker: Worker;
  /** Items sent and not yet answered, used to pick the least loaded worker. */
  load: number;
  jobs: Map<number, { pending: Pending; size: number }>;
}

/**
 * Jobs smaller than this are split no further: the message round trip would cost more than it saves. Small enough that
 * a 25-tx request goes to both workers in halves, which about halves its wait for the check under load.
 */
const MIN_SLICE = 8;

/**
 * What a node's own pool checks on the calling thread: jobs up to this many txs (at ~60 µs a check, the event loop is
 * held at most ~6 ms). A hand-off to a worker and back is two thread wake-ups, each waiting for a core when the
 * machine is busy; on the benchmark machine that cost more than the checks themselves. Checking a 25-tx request, a
 * forwarded batch and a block's foreign txs on the main thread lowered the cluster's p99 at 3,000 tx/s in nine of ten
 * pairs, by up to two thirds, and its CPU by 0.05–0.25 cores (bench/RESULTS.md, session 16). Larger jobs, and throughput work (replay, verify, blocks
 * of a catch-up), still go to the workers, where they run in parallel. Only while the machine is busy (`MachineLoad`):
 * with cores idle a hand-off waits for nothing, and checking every request on the main thread had raised a lone
 * node's p99 at 5,000 tx/s from 9–16 to 16–100 ms (bench/RESULTS.md, session 18).
 */
export const NODE_INLINE_MAX_TXS = 100;

/**
 * The pool a node opens for itself: jobs of up to `NODE_INLINE_MAX_TXS` checked on the node's thread while
 * `machine.busy` (a `MachineLoad`), everything else on `workers` threads.
 */
export function nodeVerifyPool(workers: number, machine: { readonly busy: boolean }): VerifyPool {
  return new VerifyPool(workers, { inlineMaxTxs: NODE_INLINE_MAX_TXS, inlineWhen: () => machine.busy });
}

export interface VerifyPoolOptions {
  /** Jobs of at most this many txs are checked on the calling thread (default 0: every job goes to a worker). */
  inlineMaxTxs?: number;
  /**
   * Asked for each such job: check it on the calling thread now? (Default: always.) A node answers "while the
   * machine is busy": with idle cores the workers check in parallel and the calling thread stays free.
   */
  inlineWhen?: () => boolean;
}

/** The OS name of the pool's threads (`/proc/PID/task/TID/comm`). */
export const SIGNATURE_THREAD = "sig-check";

/** A pool of worker threads that verify tx signatures in parallel. */
export class VerifyPool {
  private readonly workers: PooledWorker[] = [];
  private nextJob = 1;
  private closed = false;
  private readonly inlineMaxTxs: number;
  private readonly inlineWhen: () => boolean;
  /** Txs checked on the calling thread and on the workers, since the pool was made. */
  readonly checked = { inline: 0, onWorkers: 0 };

  constructor(size: number = availableParallelism(), options: VerifyPoolOptions = {}) {
    this.inlineMaxTxs = Math.max(0, Math.floor(options.inlineMaxTxs ?? 0));
    this.inlineWhen = options.inlineWhen ?? (() => true);
    const count = Math.max(1, Math.floor(size));
    for (let i = 0; i < count; i++) this.workers.push(this.spawn());
  }

  get size(): number {
    return this.workers.length;
  }

  private spawn(): PooledWorker {
    // Named for `top -H` and for the benchmarks, which report CPU by thread name (Linux keeps 15 characters).
    const worker = new Worker(new URL("./verify-worker.ts", import.meta.url), { name: SIGNATURE_THREAD });
    const pooled: PooledWorker = { worker, load: 0, jobs: new Map() };
    worker.on("message", (answer: VerifyAnswer) => {
      const job = pooled.jobs.get(answer.job);
      if (!job) return;
      pooled.jobs.delete(answer.job);
      pooled.load -= job.size;
      if (pooled.jobs.size === 0 && !this.closed) worker.unref();
      job.pending.resolve(answer.ok);
    });
    worker.on("error", (error) => this.failAll(pooled, error));
    worker.on("exit", (code) => {
      if (!this.closed) this.failAll(pooled, new Error(`signature worker exited with code ${code}`));
    });
    // Idle workers do not keep the process alive; one with a job does (`send`). After the listeners: adding a
    // "message" listener refs the worker again.
    worker.unref();
    return pooled;
  }

  private failAll(pooled: PooledWorker, error: Error): void {
    for (const job of pooled.jobs.values()) job.pending.reject(error);
    pooled.jobs.clear();
    pooled.load = 0;
    const index = this.workers.indexOf(pooled);
    if (index >= 0 && !this.closed) this.workers[index] = this.spawn();
  }

  /**
   * Verifies each tx's signature over its id; the answer is in input order. A job no larger than the pool's
   * `inlineMaxTxs` is checked on the calling thread when `inlineWhen` says so, unless `inline` is false (throughput
   * work that the workers do in parallel).
   */
  async verify(items: { id: string; tx: SignedTx }[], options: { inline?: boolean } = {}): Promise<boolean[]> {
    if (this.closed) throw new Error("the signature pool is closed");
    if (items.length === 0) return [];
    if (items.length <= this.inlineMaxTxs && options.inline !== false && this.inlineWhen()) {
      this.checked.inline += items.length;
      return items.map((item) => verifyTxSignature(item.tx, item.id));
    }
    this.checked.onWorkers += items.length;
    const slices = Math.min(this.workers.length, Math.ceil(items.length / MIN_SLICE));
    if (slices <= 1) return this.send(this.leastLoaded(), items);
    const per = Math.ceil(items.length / slices);
    const parts: Promise<boolean[]>[] = [];
    for (let start = 0; start < items.length; start += per) {
      parts.push(this.send(this.leastLoaded(), items.slice(start, start + per)));
    }
    return (await Promise.all(parts)).flat();
  }

  private leastLoaded(): PooledWorker {
    let best = this.workers[0] as PooledWorker;
    for (const w of this.workers) if (w.load < best.load) best = w;
    return best;
  }

  private send(pooled: PooledWorker, items: { id: string; tx: SignedTx }[]): Promise<boolean[]> {
    const job = this.nextJob++;
    return new Promise((resolve, reject) => {
      if (pooled.jobs.size === 0) pooled.worker.ref();
      pooled.jobs.set(job, { pending: { resolve, reject }, size: items.length });
      pooled.load += items.length;
      pooled.worker.postMessage({
        job,
        ids: items.map((i) => i.id),
        signers: items.map((i) => i.tx.signer),
        sigs: items.map((i) => i.tx.sig),
      } satisfies VerifyJob);
    });
  }

  async close(): Promise<void> {
    // Set first: an answer still arriving must not unref a worker being terminated (the process could then end
    // before the termination it awaits — the CLI's verify exited with its top-level await unsettled).
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
    this.workers.length = 0;
  }
}
