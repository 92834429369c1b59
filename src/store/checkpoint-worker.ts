// Worker thread: checkpoints SQLite WAL databases from its own connections, so that copying a WAL into its database
// file, and the fsyncs that go with it, never run inside a commit on the node's main thread. One worker serves every
// database of the process (see checkpointer.ts).
import { DatabaseSync } from "node:sqlite";
import { parentPort, workerData } from "node:worker_threads";
import type { CheckpointMessage } from "./checkpointer.ts";

const { intervalMs } = workerData as { intervalMs: number };
const open = new Map<number, DatabaseSync>();

const timer = setInterval(() => {
  for (const db of open.values()) {
    try {
      // PASSIVE: copies what no reader still needs, never waits for or blocks the writer.
      db.exec("PRAGMA wal_checkpoint(PASSIVE)");
    } catch {
      // Retried at the next interval.
    }
  }
}, intervalMs);

parentPort?.on("message", (message: CheckpointMessage) => {
  if (message === "stop") {
    clearInterval(timer);
    for (const db of open.values()) db.close();
    open.clear();
    parentPort?.close();
    return;
  }
  if ("add" in message) {
    try {
      const db = new DatabaseSync(message.path);
      db.exec("PRAGMA busy_timeout = 50");
      open.set(message.add, db);
    } catch {
      // A database this thread cannot open is checkpointed by its writer at close.
    }
    return;
  }
  open.get(message.remove)?.close();
  open.delete(message.remove);
});
