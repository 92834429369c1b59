import type { DatabaseSync } from "node:sqlite";
import { Worker } from "node:worker_threads";
import { WAL_BOUND_BYTES } from "./wal-bound.ts";

/**
 * What the writing connection of a database served by a `Checkpointer` sets: WAL, no checkpoints inside its own
 * commits (the worker runs them), and the WAL file cut back to the bound when it rewinds (see wal-bound.ts).
 */
export const CHECKPOINTED_WRITER_PRAGMAS = `PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = ${WAL_BOUND_BYTES};`;

/** Messages to the checkpoint worker: start or stop checkpointing one database. */
export type CheckpointMessage = { add: number; path: string } | { remove: number } | "stop";

const INTERVAL_MS = 250;

/** One worker per process checkpoints every open database (a worker each cost an isolate per file). */
let shared: { worker: Worker; users: number } | undefined;
let nextId = 1;

/**
 * Runs WAL checkpoints for one database on a worker thread. The writing connection turns its own automatic
 * checkpoints off (`PRAGMA wal_autocheckpoint = 0`), which otherwise run — with two fsyncs — inside whichever
 * COMMIT crosses the threshold, stalling the main thread for tens of milliseconds.
 */
export class Checkpointer {
  private readonly id = nextId++;
  private stopped = false;

  constructor(path: string) {
    if (shared === undefined) {
      const worker = new Worker(new URL("./checkpoint-worker.ts", import.meta.url), {
        name: "checkpoint",
        workerData: { intervalMs: INTERVAL_MS, walBoundBytes: WAL_BOUND_BYTES },
      });
      // A failed checkpoint is retried at the next interval; the WAL only grows meanwhile. A worker that died is
      // replaced for the databases opened after it (those before it are checkpointed by their writers at close).
      worker.on("error", () => {});
      worker.on("exit", () => {
        if (shared?.worker === worker) shared = undefined;
      });
      // After the listeners: attaching one refs the worker again. A checkpointer must never keep a process alive.
      worker.unref();
      shared = { worker, users: 0 };
    }
    shared.users++;
    shared.worker.postMessage({ add: this.id, path } satisfies CheckpointMessage);
  }

  stop(): void {
    if (this.stopped || shared === undefined) return;
    this.stopped = true;
    shared.worker.postMessage({ remove: this.id } satisfies CheckpointMessage);
    if (--shared.users === 0) {
      shared.worker.postMessage("stop" satisfies CheckpointMessage);
      shared = undefined;
    }
  }

  /**
   * Before the writer closes `db`: stops, then folds the WAL into the database through the writer's own connection —
   * the worker's connection may still be open, so the writer's close need not be the last one, which SQLite would
   * otherwise use for it. A WAL another connection holds stays: it is still read, and folded in later.
   */
  stopBeforeClose(db: DatabaseSync): void {
    this.stop();
    try {
      db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch {
      // Busy: the next open or checkpoint folds it in.
    }
  }
}
