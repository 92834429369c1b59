import { Worker } from "node:worker_threads";

/**
 * Runs WAL checkpoints for one database on a worker thread. The writing connection turns its own automatic
 * checkpoints off (`PRAGMA wal_autocheckpoint = 0`), which otherwise run — with two fsyncs — inside whichever
 * COMMIT crosses the threshold, stalling the main thread for tens of milliseconds.
 */
export class Checkpointer {
  private readonly worker: Worker;

  constructor(path: string, intervalMs = 250) {
    this.worker = new Worker(new URL("./checkpoint-worker.ts", import.meta.url), { workerData: { path, intervalMs } });
    // A failed checkpoint is retried at the next interval; the WAL only grows meanwhile.
    this.worker.on("error", () => {});
    // After the listeners: attaching one refs the worker again. A checkpointer must never keep a process alive.
    this.worker.unref();
  }

  stop(): void {
    this.worker.postMessage("stop");
  }
}
