// Worker thread of the FHIR audit index (audit.ts): follows the node's ledger database read-only and indexes new
// blocks into the index database, at the lowest CPU priority the system allows (SCHED_IDLE on Linux). While blocks
// keep coming it indexes a short slice a look into a transaction it leaves open, committed every 20,000 rows; it
// commits all it has when the node is quiet (no new block since its last look), a query waits for it (`wake`), or the
// oldest block not yet committed has waited `maxLagMs`.

import { execFileSync } from "node:child_process";
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
  /** Under a load that never pauses, blocks are indexed anyway once the oldest not yet indexed was seen this long ago. */
  maxLagMs: number;
  /** Rows in one transaction at most (AuditWriter's default when absent). */
  writeRows?: number;
}

/** Main thread → worker. */
export type AuditWorkerCommand = "wake" | "stop";

/** Worker → main thread. */
export type AuditWorkerReport =
  | { indexed: number }
  | { integrity: { height: number; message: string } }
  | { error: string };

/** Time per slice of reading and checking blocks while catching up, so that `stop` and new blocks are never far off. */
const SLICE_MS = 20;
const NICEST = 19;
/** util-linux's `chrt` (Debian: essential). Absolute paths: what runs must not depend on the caller's PATH. */
const CHRT_PATHS = ["/usr/bin/chrt", "/bin/chrt"];
/** Pause after each slice of an overdue catch-up on a busy node: at most a fifth of a core goes to it. */
const OVERDUE_PAUSE_MS = 4 * SLICE_MS;

const { auditPath, ledgerPath, pollMs, maxLagMs, writeRows } = workerData as AuditWorkerData;
const port = parentPort;
if (!port) throw new Error("audit-index-worker runs as a worker thread");

/**
 * Linux: this thread only (a thread id names one thread for setpriority and sched_setscheduler). SCHED_IDLE where
 * `chrt` allows it: any other thread that wakes takes the core from this one at once, where at nice 19 it could
 * wait out the rest of this thread's time slice — under sustained load the index's catch-up slices delayed every
 * commit (bench/RESULTS.md, session 16). Under SCHED_IDLE it still gets a small share of a full machine, so it
 * never stops. Nice 19 stays as the fallback. Elsewhere a no-op.
 */
function lowerOwnPriority(): void {
  let tid: number;
  try {
    tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
    if (!Number.isSafeInteger(tid) || tid <= 0) return;
    setPriority(tid, NICEST);
  } catch {
    // No /proc or not permitted: index at normal priority.
    return;
  }
  for (const chrt of CHRT_PATHS) {
    try {
      execFileSync(chrt, ["--idle", "-p", "0", String(tid)], { stdio: "ignore", timeout: 5000 });
      return;
    } catch {
      // Not there, or refused: try the next, else stay at nice 19.
    }
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
const writer = new AuditWriter(openAuditDb(auditPath, false), writeRows === undefined ? {} : { writeRows });
const reader = BlockReader.open(ledgerPath);
let reported = -1;
let failed = false;
let lastHead = reader.latestHeight();
/** When a block not yet indexed was first seen while the node was busy (undefined: none waits). */
let lagSince: number | undefined;
try {
  while (!stopping) {
    if (!failed) {
      try {
        // Blocks came since the last look: the node is busy, and the index follows it without committing — unless a
        // query asks, or what is committed is `maxLagMs` behind. Committing as blocks came (small transactions, each
        // writing every index page it touched) took 0.6 cores from a node committing 5,000 tx/s.
        const head = reader.latestHeight();
        const busy = head !== lastHead;
        lastHead = head;
        const now = performance.now();
        if (writer.indexed >= head) lagSince = undefined;
        else lagSince ??= now;
        const urgent = asked;
        const overdue = lagSince !== undefined && now - lagSince >= maxLagMs;
        asked = false;
        if (urgent || overdue || !busy) {
          // Up to the head seen now, at full speed — unless blocks start coming again and nothing needs it now.
          while (!stopping && !writer.catchUp(reader, SLICE_MS, head)) {
            report();
            // Between slices the event loop runs, so a `stop` or a `wake` sent meanwhile is seen. A backlog indexed only
            // because it is old, on a node still busy, goes at a fifth of a core: the node's commits come first.
            if (overdue && !urgent && !asked) await pause(OVERDUE_PAUSE_MS);
            else await new Promise((resolve) => setImmediate(resolve));
            if (!urgent && !overdue && !asked && reader.latestHeight() !== head) break;
          }
          // Blocks committed meanwhile wait from the next look on.
          lagSince = undefined;
        } else {
          // The node is busy: follow it one slice a look, in a transaction left open, committed every 20,000 rows
          // (or when the node is quiet, a query waits, or the backlog is old). Spread over the looks, the index's work
          // no longer comes in bursts that meet the node's own; in one transaction it writes each page it dirties once.
          writer.catchUp(reader, SLICE_MS, head, { commit: false });
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
