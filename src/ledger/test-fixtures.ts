// Builders shared by the ledger tests (not part of the layer's API). Deterministic: fixed seeds, fixed times.

import { blockHash, computeTxRoot, GENESIS_PREV_HASH, INITIAL_STATE_DIGEST, nextStateDigest } from "./block.ts";
import { type KeyPair, keyPairFromSeed } from "./keys.ts";
import { signTx, txId } from "./tx.ts";
import type { Block, BlockEntry, Hex32, TxResult } from "./types.ts";

export const alice: KeyPair = keyPairFromSeed(new Uint8Array(32).fill(0xa1));
export const bob: KeyPair = keyPairFromSeed(new Uint8Array(32).fill(0xb0));
export const node1: KeyPair = keyPairFromSeed(new Uint8Array(32).fill(0x01));

/** A signed entry whose payload is `payload` and whose result is `result`. */
export function entry(
  n: number,
  payload: Record<string, unknown> = { n },
  result: TxResult = { valid: true, code: "ok" },
): BlockEntry {
  const kp = n % 2 === 0 ? alice : bob;
  const tx = signTx(
    { type: "record.anchor", payload, signer: kp.keyId, nonce: n.toString(16).padStart(16, "0"), createdAt: 1_000 + n },
    kp,
  );
  return { id: txId(tx), tx, result };
}

/** A well-formed block after `prev` (or the genesis block), with a correct txRoot, size and state digest. */
export function makeBlock(prev: { block: Block; stateDigest: Hex32 } | undefined, txs: BlockEntry[]): Block {
  let stateDigest = prev?.stateDigest ?? INITIAL_STATE_DIGEST;
  for (const e of txs) stateDigest = nextStateDigest(stateDigest, e.id, e.result);
  return {
    height: prev === undefined ? 0 : prev.block.height + 1,
    prevHash: prev === undefined ? GENESIS_PREV_HASH : blockHash(prev.block),
    txRoot: computeTxRoot(txs),
    time: 1_700_000_000_000 + (prev?.block.height ?? -1) + 1,
    proposer: node1.keyId,
    size: (prev?.block.size ?? 0) + txs.length,
    stateDigest,
    txs,
  };
}
