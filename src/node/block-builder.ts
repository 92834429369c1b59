import { applyTx, type StateStore } from "../contract/index.ts";
import { blockHash, leafHash, nextStateDigest } from "../ledger/block.ts";
import { toHex } from "../ledger/encoding.ts";
import { appendLeaf, type Frontier, type MerkleNode, merkleRootOf } from "../ledger/merkle.ts";
import type { Block, BlockEntry, Hex32, KeyId, SignedTx, TxResult } from "../ledger/types.ts";

/** Where the ledger stands before a block: what the next block links to and extends. */
export interface ChainTip {
  height: number;
  hash: Hex32;
  stateDigest: Hex32;
  frontier: Frontier;
}

export interface BlockInput {
  height: number;
  time: number;
  proposer: KeyId;
  /** Txs that passed envelope validation, in order, each with its id and whether its signature checked out. */
  txs: { tx: SignedTx; id: Hex32; sigOk: boolean }[];
}

export interface BuiltBlock {
  block: Block;
  hash: Hex32;
  /** Perfect Merkle subtree nodes completed by this block, for the store. */
  nodes: MerkleNode[];
  frontier: Frontier;
}

/**
 * Builds the block for an ordered batch: every node, the genesis writer and `verify` run exactly this, so they agree
 * byte for byte. State writes of valid txs land in `state` (the caller decides whether they become durable).
 * Left out of the block, identically on every node: a tx already in the log (`inLog`) or earlier in the batch — ids
 * stay unique in the log — and a tx whose signature does not verify: it is not its signer's tx, so it must neither
 * enter their history, nor use up their nonce, nor pre-empt the genuine tx with the same id.
 */
export function buildBlock(
  tip: ChainTip,
  input: BlockInput,
  state: StateStore,
  log: { inLog(id: Hex32): boolean; nonceUsed(signer: KeyId, nonce: string): boolean },
): BuiltBlock & { skipped: number; badSignatures: number } {
  let stateDigest = tip.stateDigest;
  let frontier = tip.frontier;
  const nodes: MerkleNode[] = [];
  const entries: BlockEntry[] = [];
  const leaves: Uint8Array[] = [];
  const seenIds = new Set<Hex32>();
  const usedNonces = new Set<string>();
  let skipped = 0;
  let badSignatures = 0;
  // The (signer, nonce) lookup answers both questions: a tx whose nonce is unused cannot already be in the log.
  let current = "";
  let currentUsed = false;
  const ctx = {
    height: input.height,
    time: input.time,
    nonceUsed: (signer: string, nonce: string) =>
      `${signer}:${nonce}` === current
        ? currentUsed
        : usedNonces.has(`${signer}:${nonce}`) || log.nonceUsed(signer, nonce),
  };
  for (const { tx, id, sigOk } of input.txs) {
    if (!sigOk) {
      badSignatures++;
      continue;
    }
    current = `${tx.signer}:${tx.nonce}`;
    currentUsed = usedNonces.has(current) || log.nonceUsed(tx.signer, tx.nonce);
    if (currentUsed && (seenIds.has(id) || log.inLog(id))) {
      skipped++;
      continue;
    }
    seenIds.add(id);
    const result: TxResult = applyTx(state, tx, id, ctx);
    usedNonces.add(current);
    const entry: BlockEntry = { id, tx, result };
    entries.push(entry);
    stateDigest = nextStateDigest(stateDigest, id, result);
    const leaf = leafHash(entry);
    leaves.push(leaf);
    const appended = appendLeaf(frontier, leaf);
    frontier = appended.frontier;
    for (const n of appended.newNodes) nodes.push(n);
  }
  const block: Block = {
    height: input.height,
    prevHash: tip.hash,
    txRoot: toHex(merkleRootOf(leaves)),
    time: input.time,
    proposer: input.proposer,
    size: frontier.size,
    stateDigest,
    txs: entries,
  };
  return { block, hash: blockHash(block), nodes, frontier, skipped, badSignatures };
}
