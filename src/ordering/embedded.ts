import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { KeyId, SignedTx } from "../ledger/types.ts";
import { Checkpointer } from "../store/checkpointer.ts";
import { GroupSync } from "../store/group-sync.ts";
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
 */
export class EmbeddedOrderer implements Orderer {
  private readonly db: DatabaseSync;
  private readonly insert: StatementSync;
  private readonly selectFrom: StatementSync;
  private readonly subscribers = new Set<Subscriber>();
  private readonly recent = new Map<number, Batch>();
  private seq: number;
  /** Batches up to here are on disk; only they are delivered. */
  private durableSeq: number;
  private readonly sync: GroupSync;
  private readonly checkpointer: Checkpointer;
  private lastTime: number;
  private readonly clock: () => number;
  private closed = false;

  constructor(path: string, clock: () => number = Date.now) {
    this.clock = clock;
    this.db = new DatabaseSync(path);
    this.db.exec(`
      PRAGMA busy_timeout = 5000;
      PRAGMA journal_mode = WAL;
      PRAGMA synchronous = NORMAL;
      PRAGMA wal_autocheckpoint = 0;
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
    this.sync = new GroupSync(path);
    // What a crashed process left in the WAL goes to disk before anything is delivered.
    this.sync.flushNow();
    this.checkpointer = new Checkpointer(path);
  }

  async submit(proposer: KeyId, txs: SignedTx[]): Promise<number> {
    if (this.closed) throw new OrdererError("closed", "the orderer is closed");
    const seq = this.seq + 1;
    // Time never goes backwards along the log, even if the wall clock does.
    const time = Math.max(this.lastTime, this.clock());
    this.insert.run(seq, time, proposer, JSON.stringify(txs));
    this.seq = seq;
    this.lastTime = time;
    // Recently appended batches are handed to in-process subscribers without a re-read and re-parse.
    this.recent.set(seq, { seq, time, proposer, txs });
    if (this.recent.size > RECENT_BATCHES) this.recent.delete(seq - RECENT_BATCHES);
    // The flush runs off the event loop and covers every batch appended before it started (group commit).
    await this.sync.durable();
    if (seq > this.durableSeq) this.durableSeq = seq;
    for (const sub of this.subscribers) this.pump(sub);
    return seq;
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
      while (sub.active && !this.closed && sub.next <= this.durableSeq) {
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
        ).filter((row) => row.seq <= this.durableSeq);
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
    if (sub.active && !this.closed && sub.next <= this.durableSeq) queueMicrotask(() => this.pump(sub));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const sub of this.subscribers) sub.active = false;
    this.subscribers.clear();
    this.checkpointer.stop();
    try {
      this.db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch {
      // Still in the WAL, still read: the next open or checkpoint folds it in.
    }
    this.db.close();
    this.sync.afterDatabaseClosed();
  }
}

export type { Batch, SignedTx };
