import type { Hex32, KeyId, SignedTx } from "../ledger/types.ts";

/**
 * An ordered batch. `seq` is the global order (1, 2, 3, … with no gaps) and becomes the height of the block every
 * node builds from it; `time` is assigned by the orderer so that every node applies the batch with the same clock.
 */
export interface Batch {
  seq: number;
  time: number;
  proposer: KeyId;
  txs: SignedTx[];
  /**
   * Optional, per tx: what `parseSignedTx` gives for it, where the orderer already parsed it while checking the batch
   * (undefined where the tx is malformed). Saves the node parsing and canonicalising each tx a second time.
   */
  parsed?: ({ tx: SignedTx; id: Hex32 } | undefined)[];
}

export type BatchHandler = (batch: Batch) => void | Promise<void>;

/**
 * The orderer orders; it does not validate. Every node re-validates every tx it receives (Fabric's split), so an
 * orderer that delivers garbage makes txs rejected, never accepted.
 */
export interface Orderer {
  /** Appends a batch durably and returns its sequence number. */
  submit(proposer: KeyId, txs: SignedTx[]): Promise<number>;
  /**
   * Delivers every batch with seq ≥ fromSeq, in order, each exactly once, awaiting the handler before the next.
   * Returns a function that stops delivery.
   */
  subscribe(fromSeq: number, onBatch: BatchHandler, onError?: (error: unknown) => void): () => void;
  /** Highest sequence number appended so far (0 when empty). */
  lastSeq(): number;
  close(): Promise<void>;
}

export class OrdererError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}
