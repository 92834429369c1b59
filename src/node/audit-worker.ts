// Worker thread: the start-up audit. Replays the node's whole store from a read snapshot (what `careledger verify
// --dir` does) while the node already serves, and reports the first problem, if any, to the main thread.
import { parentPort, workerData } from "node:worker_threads";
import { LedgerStore } from "../store/ledger-store.ts";
import { verifyStore } from "./verify.ts";
import { VerifyPool } from "./verify-pool.ts";

export interface AuditResult {
  ok: boolean;
  height?: number;
  reason?: string;
  txs: number;
  elapsedMs: number;
}

const { ledgerPath, genesisHash } = workerData as { ledgerPath: string; genesisHash: string };
// One signature thread: the audit yields the machine to the node's own work.
const pool = new VerifyPool(1);
let result: AuditResult;
try {
  const store = LedgerStore.open(ledgerPath, { snapshot: true });
  try {
    const report = await verifyStore(store, pool, { genesisHash });
    result = {
      ok: report.ok,
      height: report.problem?.height,
      reason: report.problem?.reason,
      txs: report.txs,
      elapsedMs: report.elapsedMs,
    };
  } finally {
    store.close();
  }
} catch (error) {
  result = {
    ok: false,
    height: 0,
    reason: `the store could not be audited: ${(error as Error).message}`,
    txs: 0,
    elapsedMs: 0,
  };
} finally {
  await pool.close();
}
parentPort?.postMessage(result);
