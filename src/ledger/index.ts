// The pure ledger layer: canonical encoding, keys, signed transactions, blocks, the Merkle log and its proofs.
// No I/O, no clock, no randomness: every node computes exactly the same bytes from the same inputs.

export * from "./block.ts";
export * from "./canonical.ts";
export * from "./encoding.ts";
export * from "./errors.ts";
export * from "./hash.ts";
export * from "./keys.ts";
export * from "./merkle.ts";
export * from "./sth.ts";
export * from "./tx.ts";
export type * from "./types.ts";
