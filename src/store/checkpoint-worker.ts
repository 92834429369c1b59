// Worker thread: checkpoints SQLite WAL databases from its own connections, so that copying a WAL into its database
// file, and the fsyncs that go with it, never run inside a commit on the node's main thread. One worker serves every
// database of the process (see checkpointer.ts).
import { statSync } from "node:fs";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { parentPort, workerData } from "node:worker_threads";
import type { CheckpointMessage } from "./checkpointer.ts";
import { type CheckpointResult, checkpointUntilRewindable } from "./wal-bound.ts";

const { intervalMs } = workerData as { intervalMs: number };

/** A read snapshot held between checkpoints: while it is held, the writer's commits do not rewind the WAL. */
interface Pin {
  db: DatabaseSync;
  read: StatementSync;
}

interface Served {
  db: DatabaseSync;
  wal: string;
  passive: StatementSync;
  walBoundBytes: number;
  /** A WAL frame: a page and its 24-byte header. */
  frameBytes: number;
  pin: Pin | undefined;
}

const open = new Map<number, Served>();

function walBytes(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

function release(pin: Pin): void {
  if (pin.db.isTransaction) pin.db.exec("COMMIT");
}

/**
 * Takes a fresh snapshot just before a checkpoint, so the checkpoint can copy every frame committed so far. (A snapshot
 * begun while every frame is already copied reads the database file only and does not hold the WAL: the writer
 * may then rewind once — the database was quiet for a whole interval.)
 */
function renew(pin: Pin): void {
  release(pin);
  pin.db.exec("BEGIN");
  pin.read.get();
}

const timer = setInterval(() => {
  for (const served of open.values()) {
    try {
      // PASSIVE: copies what no reader still needs, never waits for or blocks the writer.
      const run = () => served.passive.get() as unknown as CheckpointResult;
      const pin = served.pin;
      if (pin === undefined) {
        // Past the bound, more rounds (each costs two fsyncs) until the WAL can rewind: see wal-bound.ts.
        if (walBytes(served.wal) > served.walBoundBytes) checkpointUntilRewindable(run);
        else run();
        continue;
      }
      try {
        renew(pin);
      } catch {
        // No snapshot this round (the writer may rewind once); the checkpoint still runs.
      }
      // The frames the WAL holds since it last rewound (its file keeps its size, so only SQLite can tell).
      const { log } = run();
      if (log * served.frameBytes > served.walBoundBytes) {
        // Let go and copy until the writer's next commit rewinds the WAL (and cuts its file back to the bound).
        release(pin);
        checkpointUntilRewindable(run);
      }
    } catch {
      // Retried at the next interval.
    }
  }
}, intervalMs);

function close(served: Served): void {
  served.pin?.db.close();
  served.db.close();
}

parentPort?.on("message", (message: CheckpointMessage) => {
  if (message === "stop") {
    clearInterval(timer);
    for (const served of open.values()) close(served);
    open.clear();
    parentPort?.close();
    return;
  }
  if ("add" in message) {
    try {
      const db = new DatabaseSync(message.path);
      db.exec("PRAGMA busy_timeout = 50");
      let pin: Pin | undefined;
      if (message.rewindOnlyAtBound) {
        try {
          const pinDb = new DatabaseSync(message.path);
          pinDb.exec("PRAGMA busy_timeout = 50");
          pin = { db: pinDb, read: pinDb.prepare("SELECT count(*) FROM sqlite_schema") };
        } catch {
          // Checkpointed all the same; the writer's commits rewind the WAL as without the option.
        }
      }
      open.set(message.add, {
        db,
        wal: `${message.path}-wal`,
        passive: db.prepare("PRAGMA wal_checkpoint(PASSIVE)"),
        walBoundBytes: message.walBoundBytes,
        frameBytes: (db.prepare("PRAGMA page_size").get() as { page_size: number }).page_size + 24,
        pin,
      });
    } catch {
      // A database this thread cannot open is checkpointed by its writer at close.
    }
    return;
  }
  const served = open.get(message.remove);
  if (served) close(served);
  open.delete(message.remove);
  if (message.released) {
    Atomics.store(message.released, 0, 1);
    Atomics.notify(message.released, 0);
  }
});
