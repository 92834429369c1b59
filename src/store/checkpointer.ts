import type { DatabaseSync } from "node:sqlite";
import { Worker } from "node:worker_threads";
import { HELD_WAL_REWIND_BYTES, WAL_BOUND_BYTES } from "./wal-bound.ts";

/**
 * What the writing connection of a database served by a `Checkpointer` sets: WAL, no checkpoints inside its own
 * commits (the worker runs them), and the WAL file cut back to the bound when it rewinds (see wal-bound.ts).
 */
export const CHECKPOINTED_WRITER_PRAGMAS = `PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = ${WAL_BOUND_BYTES};`;

/** Messages to the checkpoint worker: start or stop checkpointing one database. */
export type CheckpointMessage =
  | { add: number; path: string; rewindOnlyAtBound: boolean; walBoundBytes: number }
  /** `released`, when given, is set to 1 (and notified) once the worker has closed its connection to the database. */
  | { remove: number; released?: Int32Array }
  | "stop";

const INTERVAL_MS = 250;

/** The OS name of the checkpoint worker thread (for `top -H` and the benchmarks). */
export const CHECKPOINT_THREAD = "checkpoint";

/** How long a closing writer waits for the worker to finish a checkpoint of its database and let go of it. */
const RELEASE_WAIT_MS = 2000;

/** One worker per process checkpoints every open database (a worker each cost an isolate per file). */
let shared: { worker: Worker; users: number } | undefined;
let nextId = 1;

export interface CheckpointerOptions {
  /**
   * Keep the writer's commits from rewinding the WAL until it reaches the bound. SQLite rewinds (writes from the
   * file's start again) in the first commit after a checkpoint that copied every frame, and that commit syncs the WAL
   * header — an fsync on the writer's thread, up to several a second under load, each as slow as the disk is at that
   * moment. The worker holds a read snapshot between its checkpoints, which makes SQLite skip the rewind; past the
   * bound (`walBoundBytes`) it lets go and the WAL rewinds once. Only for a
   * writer that never runs a RESTART or TRUNCATE checkpoint itself while open (those wait for the snapshot):
   * `stopBeforeClose` runs one only after the worker let go.
   */
  rewindOnlyAtBound?: boolean;
  /**
   * The WAL size past which the worker makes it rewind (default `HELD_WAL_REWIND_BYTES` with `rewindOnlyAtBound`,
   * else `WAL_BOUND_BYTES`).
   */
  walBoundBytes?: number;
}

/**
 * Runs WAL checkpoints for one database on a worker thread. The writing connection turns its own automatic
 * checkpoints off (`PRAGMA wal_autocheckpoint = 0`), which otherwise run — with two fsyncs — inside whichever
 * COMMIT crosses the threshold, stalling the main thread for tens of milliseconds.
 */
export class Checkpointer {
  private readonly id = nextId++;
  private stopped = false;

  constructor(path: string, options: CheckpointerOptions = {}) {
    if (shared === undefined) {
      const worker = new Worker(new URL("./checkpoint-worker.ts", import.meta.url), {
        name: CHECKPOINT_THREAD,
        workerData: { intervalMs: INTERVAL_MS },
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
    shared.worker.postMessage({
      add: this.id,
      path,
      rewindOnlyAtBound: options.rewindOnlyAtBound ?? false,
      walBoundBytes: options.walBoundBytes ?? (options.rewindOnlyAtBound ? HELD_WAL_REWIND_BYTES : WAL_BOUND_BYTES),
    } satisfies CheckpointMessage);
  }

  stop(): void {
    this.remove(undefined);
  }

  private remove(released: Int32Array | undefined): boolean {
    if (this.stopped || shared === undefined) return false;
    this.stopped = true;
    shared.worker.postMessage({ remove: this.id, ...(released ? { released } : {}) } satisfies CheckpointMessage);
    if (--shared.users === 0) {
      shared.worker.postMessage("stop" satisfies CheckpointMessage);
      shared = undefined;
    }
    return true;
  }

  /**
   * Before the writer closes `db`: stops, waits for the worker to close its connection, then folds the WAL into the
   * database through the writer's own connection and truncates it, so that a cleanly closed database file holds
   * everything. A WAL another connection (a reader) holds stays: it is still read, and folded in later.
   */
  stopBeforeClose(db: DatabaseSync): void {
    // Waits (bounded) until the worker has let go: one of its checkpoints still running would make this one fail
    // (SQLite runs one checkpoint at a time) and its open connection would keep the WAL file after the close. Under
    // load that left a cleanly stopped node's WAL unfolded: its database file alone was then not the whole ledger.
    const released = new Int32Array(new SharedArrayBuffer(4));
    if (this.remove(released)) Atomics.wait(released, 0, 0, RELEASE_WAIT_MS);
    try {
      db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch {
      // Busy: the next open or checkpoint folds it in.
    }
  }
}
