// Worker thread: checkpoints SQLite WAL databases from its own connections, so that copying a WAL into its database
// file, and the fsyncs that go with it, never run inside a commit on the node's main thread. One worker serves every
// database of the process (see checkpointer.ts).
import { statSync } from "node:fs";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { parentPort, workerData } from "node:worker_threads";
import type { CheckpointMessage } from "./checkpointer.ts";
import { type CheckpointResult, checkpointUntilRewindable } from "./wal-bound.ts";

const { intervalMs, walBoundBytes } = workerData as { intervalMs: number; walBoundBytes: number };
const open = new Map<number, { db: DatabaseSync; wal: string; passive: StatementSync }>();

function walBytes(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

const timer = setInterval(() => {
  for (const { wal, passive } of open.values()) {
    try {
      // PASSIVE: copies what no reader still needs, never waits for or blocks the writer.
      const run = () => passive.get() as unknown as CheckpointResult;
      // Past the bound, more rounds (each costs two fsyncs) until the WAL can rewind: see wal-bound.ts.
      if (walBytes(wal) > walBoundBytes) checkpointUntilRewindable(run);
      else run();
    } catch {
      // Retried at the next interval.
    }
  }
}, intervalMs);

parentPort?.on("message", (message: CheckpointMessage) => {
  if (message === "stop") {
    clearInterval(timer);
    for (const { db } of open.values()) db.close();
    open.clear();
    parentPort?.close();
    return;
  }
  if ("add" in message) {
    try {
      const db = new DatabaseSync(message.path);
      db.exec("PRAGMA busy_timeout = 50");
      open.set(message.add, {
        db,
        wal: `${message.path}-wal`,
        passive: db.prepare("PRAGMA wal_checkpoint(PASSIVE)"),
      });
    } catch {
      // A database this thread cannot open is checkpointed by its writer at close.
    }
    return;
  }
  open.get(message.remove)?.db.close();
  open.delete(message.remove);
  if (message.released) {
    Atomics.store(message.released, 0, 1);
    Atomics.notify(message.released, 0);
  }
});
