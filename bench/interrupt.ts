// What a benchmark started and must undo if it is interrupted (Ctrl-C, SIGTERM). A signal ends the process without
// running `finally` blocks, and the local cluster's etcd members and nodes run detached from the terminal, so they
// do not get its SIGINT either: without this, an interrupted `bench cluster` left six processes loading the machine
// and its data in the temp dir. `careledger bench` runs the registered clean-ups, newest first, before it exits.
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { rmSync } from "node:fs";

type Cleanup = () => unknown;

const cleanups: Cleanup[] = [];

/** Registers `cleanup` to run if the benchmark is interrupted; call the returned function once it is no longer due. */
export function onInterrupt(cleanup: Cleanup): () => void {
  cleanups.push(cleanup);
  return () => {
    const at = cleanups.lastIndexOf(cleanup);
    if (at >= 0) cleanups.splice(at, 1);
  };
}

/** Kills `child` (and waits for it) if the benchmark is interrupted before the child exits. */
export function killOnInterrupt(child: ChildProcess): void {
  const release = onInterrupt(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGKILL");
    await exited;
  });
  child.once("exit", release);
}

/** Removes `dir` if the benchmark is interrupted; the returned function unregisters it. */
export function removeOnInterrupt(dir: string): () => void {
  return onInterrupt(() => rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 }));
}

/** Runs every registered clean-up, newest first (processes stop before their files go); counts those that failed. */
export async function runInterruptCleanups(): Promise<number> {
  let failed = 0;
  for (let cleanup = cleanups.pop(); cleanup !== undefined; cleanup = cleanups.pop()) {
    try {
      await cleanup();
    } catch {
      failed++;
    }
  }
  return failed;
}

/** Clean-ups registered and not yet run or released (for tests). */
export function pendingCleanups(): number {
  return cleanups.length;
}
