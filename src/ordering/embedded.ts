import type { DatabaseSync, StatementSync } from "node:sqlite";
import type { KeyId, SignedTx } from "../ledger/types.ts";
import type { GroupSync } from "../store/group-sync.ts";
import { LogDatabase } from "../store/log-database.ts";
import { type Batch, type BatchHandler, type Orderer, OrdererError } from "./orderer.ts";

const RECENT_BATCHES = 64;

function defaultOnError(error: unknown): void {
  queueMicrotask(() => {
    throw error;
  });
}

interface Subscriber {
  next: number;
  onBatch: BatchHandler;
  onError: (error: unknown) => void;
  active: boolean;
  running: boolean;
}

/**
 * The embedded orderer: an append-only SQLite log in one process. Several nodes in the same process may share one
 * instance (the demo does), each with its own subscription. A batch is fsynced before `submit` resolves.
 *
 * With `sharedLog`, the log is a table in the database of the one node it serves, written through that database's
 * WAL and flushed by its GroupSync. A batch is then delivered as soon as it is appended: its block is committed
 * after it in the same WAL, and SQLite recovers a commit only together with every frame before it, so the node can
 * never hold a block whose batch the log lost — and one flush makes both durable. Otherwise a batch is delivered
 * only once it is on disk, which is what nodes sharing one log need.
 */
export class EmbeddedOrderer implements Orderer {
  private readonly db: DatabaseSync;
  private readonly insert: StatementSync;
  private readonly selectFrom: StatementSync;
  private readonly subscribers = new Set<Subscriber>();
  private readonly recent = new Map<number, Batch>();
  private seq: number;
  /** Batches up to here are on disk; only they are delivered, unless the log is shared (see `deliverable`). */
  private durableSeq: number;
  private readonly sync: GroupSync;
  private readonly log: LogDatabase;
  private readonly shared: boolean;
  private lastTime: number;
  private readonly clock: () => number;
  private closed = false;

  constructor(path: string, clock: () => number = Date.now, sharedLog?: { sync: GroupSync }) {
    this.clock = clock;
    this.log = new LogDatabase(path, sharedLog);
    this.db = this.log.db;
    this.sync = this.log.sync;
    this.shared = this.log.inStoreDatabase;
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS batches (
        seq INTEGER PRIMARY KEY,
        time INTEGER NOT NULL,
        proposer TEXT NOT NULL,
        txs TEXT NOT NULL
      );
    `);
    this.insert = this.db.prepare("INSERT INTO batches (seq, time, proposer, txs) VALUES (?, ?, ?, ?)");
    this.selectFrom = this.db.prepare(
      "SELECT seq, time, proposer, txs FROM batches WHERE seq >= ? ORDER BY seq LIMIT ?",
    );
    const last = this.db.prepare("SELECT seq, time FROM batches ORDER BY seq DESC LIMIT 1").get() as
      | { seq: number; time: number }
      | undefined;
    this.seq = last?.seq ?? 0;
    this.durableSeq = this.seq;
    this.lastTime = last?.time ?? 0;
  }

  async submit(proposer: KeyId, txs: SignedTx[]): Promise<number> {
    if (this.closed) throw new OrdererError("closed", "the orderer is closed");
    const seq = this.seq + 1;
    // Time never goes backwards along the log, even if the wall clock does.
    const time = Math.max(this.lastTime, this.clock());
    this.insert.run(seq, time, proposer, JSON.stringify(txs));
    const appended = this.sync.mark();
    this.seq = seq;
    this.lastTime = time;
    // Recently appended batches are handed to in-process subscribers without a re-read and re-parse.
    this.recent.set(seq, { seq, time, proposer, txs });
    if (this.recent.size > RECENT_BATCHES) this.recent.delete(seq - RECENT_BATCHES);
    // In a shared log the node applies the batch first (its block's flush then covers the batch too), and this waits
    // for that flush instead of starting one of its own.
    if (this.shared) for (const sub of this.subscribers) this.pump(sub);
    // The flush runs off the event loop and covers every batch appended before it started (group commit).
    await this.sync.durableAfter(appended);
    if (seq > this.durableSeq) this.durableSeq = seq;
    if (!this.shared) for (const sub of this.subscribers) this.pump(sub);
    return seq;
  }

  /** Batches up to here are handed to subscribers: appended ones in a shared log, durable ones otherwise. */
  private deliverable(): number {
    return this.shared ? this.seq : this.durableSeq;
  }

  subscribe(fromSeq: number, onBatch: BatchHandler, onError: (error: unknown) => void = defaultOnError): () => void {
    if (!Number.isSafeInteger(fromSeq) || fromSeq < 1) {
      throw new OrdererError("bad-seq", `fromSeq must be ≥ 1, got ${fromSeq}`);
    }
    const sub: Subscriber = { next: fromSeq, onBatch, onError, active: true, running: false };
    this.subscribers.add(sub);
    queueMicrotask(() => this.pump(sub));
    return () => {
      sub.active = false;
      this.subscribers.delete(sub);
    };
  }

  /** Appended batches still held in memory for in-process subscribers (for tests and diagnostics). */
  get batchesInMemory(): number {
    return this.recent.size;
  }

  lastSeq(): number {
    return this.seq;
  }

  /**
   * Forgets in-memory batches every subscriber has been given. Kept for a fixed number of batches instead, their txs
   * outlived V8's young generation under load and were copied and promoted by every scavenge (~5 KB per tx; scavenge
   * pauses of 45–60 ms at 5,000 tx/s), only to die in the old generation.
   */
  private releaseDelivered(): void {
    let lowest = Number.POSITIVE_INFINITY;
    for (const s of this.subscribers) if (s.next < lowest) lowest = s.next;
    for (const seq of this.recent.keys()) {
      if (seq >= lowest) break;
      this.recent.delete(seq);
    }
  }

  /** Reads batches from the log (not from memory), so a late or restarted subscriber sees exactly what is durable. */
  private async pump(sub: Subscriber): Promise<void> {
    if (sub.running || !sub.active) return;
    sub.running = true;
    try {
      while (sub.active && !this.closed && sub.next <= this.deliverable()) {
        // The common case: the next batch was just appended here and is still in memory — no read, no parse.
        const fresh = this.recent.get(sub.next);
        if (fresh) {
          await sub.onBatch(fresh);
          sub.next = fresh.seq + 1;
          this.releaseDelivered();
          continue;
        }
        const rows = (
          this.selectFrom.all(sub.next, 256) as { seq: number; time: number; proposer: string; txs: string }[]
        ).filter((row) => row.seq <= this.deliverable());
        if (rows.length === 0) break;
        for (const row of rows) {
          if (!sub.active || this.closed) break;
          const batch = this.recent.get(row.seq) ?? {
            seq: row.seq,
            time: row.time,
            proposer: row.proposer,
            txs: JSON.parse(row.txs),
          };
          await sub.onBatch(batch);
          sub.next = row.seq + 1;
        }
      }
    } catch (error) {
      // A handler that fails stops its own subscription; the subscriber resubscribes from where it stands.
      sub.active = false;
      this.subscribers.delete(sub);
      sub.onError(error);
    } finally {
      sub.running = false;
    }
    // A batch may have been appended while the handler ran.
    if (sub.active && !this.closed && sub.next <= this.deliverable()) queueMicrotask(() => this.pump(sub));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const sub of this.subscribers) sub.active = false;
    this.subscribers.clear();
    this.log.close();
  }
}

export type { Batch, SignedTx };
