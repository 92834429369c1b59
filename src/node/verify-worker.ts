// Worker thread: checks Ed25519 signatures of txs so that the main thread only orders, applies and stores.
import { parentPort } from "node:worker_threads";
import { verifyTxSignature } from "../ledger/tx.ts";
import type { SignedTx } from "../ledger/types.ts";

/** Only what the check needs crosses the thread boundary: cloning whole payloads would cost the main thread. */
export interface VerifyJob {
  job: number;
  ids: string[];
  signers: string[];
  sigs: string[];
}

export interface VerifyAnswer {
  job: number;
  ok: boolean[];
}

parentPort?.on("message", (message: VerifyJob) => {
  const ok = message.ids.map((id, i) =>
    verifyTxSignature({ signer: message.signers[i], sig: message.sigs[i] } as SignedTx, id),
  );
  parentPort?.postMessage({ job: message.job, ok } satisfies VerifyAnswer);
});
