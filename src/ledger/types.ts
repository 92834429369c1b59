// Wire and storage shapes of the ledger. Everything here is plain JSON so that it canonicalises (RFC 8785)
// identically on every node.

/** Lowercase hex of a 32-byte value (SHA-256 digest or raw Ed25519 public key). */
export type Hex32 = string;

/**
 * A key id is the lowercase hex of the signer's raw 32-byte Ed25519 public key. Using the key itself as its id
 * lets every node check a signature without looking anything up, so checks run in parallel before apply; the
 * contract then decides whether that key may sign that transaction.
 */
export type KeyId = Hex32;

/** What a signer signs: the envelope without `sig`. */
export interface TxBody {
  type: string;
  payload: Record<string, unknown>;
  signer: KeyId;
  /** 16–64 lowercase hex chars; `(signer, nonce)` may appear in the log only once. */
  nonce: string;
  /** Milliseconds since the Unix epoch, integer. Must lie within the network's replay window of the block time. */
  createdAt: number;
}

/** A transaction as submitted and as stored in blocks. */
export interface SignedTx extends TxBody {
  /** base64url (no padding) Ed25519 signature over `TX_SIGNING_PREFIX || hex-decoded txId`. */
  sig: string;
}

/** Result of applying a tx, computed identically by every node and recorded in the log beside the tx. */
export interface TxResult {
  valid: boolean;
  /** `ok` for valid txs, otherwise a stable reason code such as `bad-signature`, `unauthorised`, `replay`. */
  code: string;
}

/** One entry of a block: the tx, its id (hash of its body) and its result. */
export interface BlockEntry {
  id: Hex32;
  tx: SignedTx;
  result: TxResult;
}

export interface BlockHeader {
  height: number;
  prevHash: Hex32;
  /** RFC 9162 Merkle root over this block's leaves (see `leafBytes`). Empty-tree hash for an empty block. */
  txRoot: Hex32;
  /** Milliseconds since epoch, assigned when the batch was ordered. */
  time: number;
  /** Key id of the node (or orderer) that proposed the batch. */
  proposer: KeyId;
  /** Size of the global Merkle log after this block. */
  size: number;
  /** Running digest of (txId, validity) over the whole log after this block. */
  stateDigest: Hex32;
}

export interface Block extends BlockHeader {
  txs: BlockEntry[];
}

/** RFC 9162-style signed tree head, extended with height and state digest. */
export interface TreeHead {
  size: number;
  root: Hex32;
  height: number;
  stateDigest: Hex32;
  time: number;
}

export interface SignedTreeHead extends TreeHead {
  signer: KeyId;
  /** base64url Ed25519 signature over `STH_SIGNING_PREFIX || canonical(TreeHead)`. */
  sig: string;
}

export interface InclusionProof {
  index: number;
  size: number;
  /** Audit path, lowercase hex hashes, leaf to root. */
  path: Hex32[];
}

export interface ConsistencyProof {
  from: number;
  to: number;
  path: Hex32[];
}
