// Worker thread of the FHIR audit index (audit.ts): follows the node's ledger database read-only and indexes new
// blocks into the index database whenever the node is quiet (no new block since its last look) or a query waits for it
// (`wake`), at the lowest CPU priority the system allows.

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
  | { error: string };

/** Time per transaction while catching up, so that `stop`, progress reports and new blocks are never far off. */
const SLICE_MS = 20;
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
    if (!failed) {
      try {
        // Blocks came since the last look: the node is busy and the index waits (unless a query asks). Indexing
        // alongside the load, even at 5 % of a core per node, took ~0.25 cores from the saturated 3-node cluster and
        // doubled its commit latency; flat out, 0.6 cores from a node committing 5,000 tx/s.
        const head = reader.latestHeight();
        const busy = head !== lastHead;
        lastHead = head;
        const urgent = asked;
        asked = false;
        if (urgent || !busy) {
          // Up to the head seen now, at full speed — unless blocks start coming again and no query waits.
          while (!stopping && !writer.catchUp(reader, SLICE_MS, head)) {
            report();
            // Between slices the event loop runs, so a `stop` or a `wake` sent meanwhile is seen.
            await new Promise((resolve) => setImmediate(resolve));
            if (!urgent && !asked && reader.latestHeight() !== head) break;
          }
        }
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
    if (!stopping) await pause(pollMs);
  }
} finally {
  writer.close();
  reader.close();
  port.close();
}

function report(): void {
  if (writer.indexed === reported) return;
  reported = writer.indexed;
  port?.postMessage({ indexed: reported } satisfies AuditWorkerReport);
}
