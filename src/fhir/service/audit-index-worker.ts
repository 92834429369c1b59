// Worker thread of the FHIR audit index (audit.ts): follows the node's ledger database read-only and indexes new
// blocks into the index database as they are committed. It runs at the lowest CPU priority the system allows, so on
// a busy machine it takes what the node leaves; a query that waits for it asks it to hurry (`wake`).

import { readlinkSync } from "node:fs";
import { setPriority } from "node:os";
import { parentPort, workerData } from "node:worker_threads";
import { BlockReader } from "../../store/block-reader.ts";
import { AuditIntegrityError, AuditWriter, openAuditDb } from "./audit-writer.ts";

export interface AuditWorkerData {
  auditPath: string;
  ledgerPath: string;
  /** How often to look for new blocks when nobody asks. */
  pollMs: number;
}

/** Main thread → worker. */
export type AuditWorkerCommand = "wake" | "stop";

/** Worker → main thread. */
export type AuditWorkerReport =
  | { indexed: number }
  | { integrity: { height: number; message: string } }
  | { error: string }
  | { stopped: true };

/** Time per transaction while catching up, so that `stop` and progress reports are never far off. */
const SLICE_MS = 20;
/**
 * While blocks keep coming the worker indexes at most this share of one core (a slice, then a pause): measured at
 * ~100 µs per 1-entry `access.log` tx on a busy 2-core machine, indexing flat out took 0.6 cores from a node committing
 * 5,000 tx/s and tripled its commit p99; at 10 % it still took ~0.15 cores there. The backlog is indexed at full speed
 * once blocks stop, or when a query asks.
 */
const BUSY_SHARE = 0.05;
const NICEST = 19;

const { auditPath, ledgerPath, pollMs } = workerData as AuditWorkerData;
const port = parentPort;
if (!port) throw new Error("audit-index-worker runs as a worker thread");

/** Linux: this thread only (a thread id names one thread for setpriority); elsewhere a no-op. */
function lowerOwnPriority(): void {
  try {
    const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
    if (Number.isSafeInteger(tid) && tid > 0) setPriority(tid, NICEST);
  } catch {
    // No /proc or not permitted: index at normal priority.
  }
}

let stopping = false;
/** A query waits: catch up at full speed until the head seen then is indexed. */
let asked = false;
let wakeUp: (() => void) | undefined;
port.on("message", (command: AuditWorkerCommand) => {
  if (command === "stop") stopping = true;
  else asked = true;
  wakeUp?.();
});

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      wakeUp = undefined;
      resolve();
    }
    wakeUp = done;
  });
}

lowerOwnPriority();
const writer = new AuditWriter(openAuditDb(auditPath, false));
const reader = BlockReader.open(ledgerPath);
let reported = -1;
let failed = false;
let lastHead = reader.latestHeight();
try {
  while (!stopping) {
    let caughtUp = true;
    if (!failed) {
      try {
        const head = reader.latestHeight();
        const busy = head !== lastHead;
        lastHead = head;
        const urgent = asked;
        asked = false;
        if (urgent || !busy) {
          // Up to the head seen now, at full speed — unless blocks start coming again and no query waits.
          while (!stopping && !writer.catchUp(reader, SLICE_MS, head)) {
            report();
            if (!urgent && !asked && reader.latestHeight() !== head) break;
          }
        } else {
          writer.catchUp(reader, SLICE_MS);
        }
        caughtUp = writer.indexed >= reader.latestHeight();
        report();
      } catch (error) {
        if (error instanceof AuditIntegrityError) {
          // The node is told (it checks the block itself and halts); indexing past an altered block would serve it.
          failed = true;
          port.postMessage({ integrity: { height: error.height, message: error.message } } satisfies AuditWorkerReport);
        } else {
          // Tried again at the next look (a lock held too long, a full disk).
          port.postMessage({ error: (error as Error).message } satisfies AuditWorkerReport);
        }
      }
    }
    if (!stopping) await pause(caughtUp ? pollMs : SLICE_MS * (1 / BUSY_SHARE - 1));
  }
} finally {
  writer.close();
  reader.close();
  port.postMessage({ stopped: true } satisfies AuditWorkerReport);
  port.close();
}

function report(): void {
  if (writer.indexed === reported) return;
  reported = writer.indexed;
  port?.postMessage({ indexed: reported } satisfies AuditWorkerReport);
}
