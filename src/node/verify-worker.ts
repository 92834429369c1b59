// Worker thread: checks Ed25519 signatures of txs so that the main thread only orders, applies and stores.
import { parentPort } from "node:worker_threads";
import { verifyTxSignature } from "../ledger/tx.ts";
import type { SignedTx } from "../ledger/types.ts";

export interface VerifyJob {
  job: number;
  items: { id: string; tx: SignedTx }[];
}

export interface VerifyAnswer {
  job: number;
  ok: boolean[];
}

parentPort?.on("message", (message: VerifyJob) => {
  const ok = message.items.map((item) => verifyTxSignature(item.tx, item.id));
  parentPort?.postMessage({ job: message.job, ok } satisfies VerifyAnswer);
});
