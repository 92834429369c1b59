import { hash } from "node:crypto";
import { canonicalBytes, canonicalJson } from "./canonical.ts";
import { isHex32, toHex, utf8 } from "./encoding.ts";
import { LedgerError } from "./errors.ts";
import { sha256, sha256Hex } from "./hash.ts";
import { hashLeaf, merkleRootOf } from "./merkle.ts";
import { txId } from "./tx.ts";
import type { Block, BlockEntry, BlockHeader, Hex32, TxResult } from "./types.ts";

/** prevHash of the genesis block (height 0). */
export const GENESIS_PREV_HASH: Hex32 = "0".repeat(64);

/** stateDigest before any tx has been applied. */
export const INITIAL_STATE_DIGEST: Hex32 = "0".repeat(64);

const BLOCK_HASH_PREFIX = "careledger/block/v1\n";

/**
 * The bytes a log leaf commits to. The tx body is covered through its id, and the signature and result are included
 * so that neither can be altered after the fact without changing the root.
 */
export function leafBytes(entry: BlockEntry): Uint8Array {
  const plain = plainLeafText(entry);
  if (plain !== undefined) return utf8(plain);
  const { code, valid } = entry.result;
  return canonicalBytes({ code, id: entry.id, sig: entry.tx.sig, valid });
}

/**
 * The leaf hash of an entry, `hashLeaf(leafBytes(entry))`. Every node hashes one leaf per tx: in the common case the
 * 0x00 prefix and the ASCII leaf text are hashed as one string, without encoding the text into a buffer and copying
 * it behind the prefix.
 */
export function leafHash(entry: BlockEntry): Uint8Array {
  const plain = plainLeafText(entry);
  return plain === undefined ? hashLeaf(leafBytes(entry)) : sha256(`\u0000${plain}`);
}

/**
 * When no field needs escaping (always, for well-formed entries), the canonical leaf text written directly — the
 * same characters canonicalJson gives, keys in the same sorted order, all ASCII; otherwise undefined.
 */
function plainLeafText(entry: BlockEntry): string | undefined {
  const { code, valid } = entry.result;
  const { id } = entry;
  const { sig } = entry.tx;
  if (
    typeof valid === "boolean" &&
    typeof code === "string" &&
    typeof id === "string" &&
    typeof sig === "string" &&
    PLAIN_RE.test(code) &&
    PLAIN_RE.test(id) &&
    PLAIN_RE.test(sig)
  ) {
    return `{"code":"${code}","id":"${id}","sig":"${sig}","valid":${valid}}`;
  }
  return undefined;
}

const PLAIN_RE = /^[A-Za-z0-9_.:-]*$/;

/**
 * Folds one applied tx into the running state digest: SHA-256(prev || id || validity byte || UTF-8 code). Only the
 * code is variable-length and it comes last, so the encoding is unambiguous.
 */
export function nextStateDigest(prev: Hex32, id: Hex32, result: TxResult): Hex32 {
  if (typeof result.valid !== "boolean" || typeof result.code !== "string") {
    throw new LedgerError("bad-result", "result: must be { valid: boolean, code: string }");
  }
  if (!isHex32(prev)) throw new LedgerError("bad-hex", "prev: must be 64 lowercase hex characters");
  if (!isHex32(id)) throw new LedgerError("bad-hex", "id: must be 64 lowercase hex characters");
  // Runs once per tx on every node: one buffer and a one-shot hash cost about half of four updates.
  const input = Buffer.allocUnsafe(65 + Buffer.byteLength(result.code, "utf8"));
  input.write(prev, 0, "hex");
  input.write(id, 32, "hex");
  input[64] = result.valid ? 1 : 0;
  input.write(result.code, 65, "utf8");
  return hash("sha256", input, "hex");
}

/**
 * Exactly the seven header fields. Accepts a whole Block (or anything with extra fields) so a header can never
 * silently pick up `txs` or other fields on its way into a hash.
 */
export function blockHeaderOf(block: BlockHeader): BlockHeader {
  const { height, prevHash, txRoot, time, proposer, size, stateDigest } = block;
  return { height, prevHash, txRoot, time, proposer, size, stateDigest };
}

/** SHA-256("careledger/block/v1\n" || canonical header). Only the seven header fields count, even if given a Block. */
export function blockHash(header: BlockHeader): Hex32 {
  return sha256Hex(BLOCK_HASH_PREFIX + canonicalJson(blockHeaderOf(header)));
}

/** RFC 9162 root over this block's entries (EMPTY_ROOT for an empty block). */
export function computeTxRoot(entries: BlockEntry[]): Hex32 {
  return toHex(merkleRootOf(entries.map(leafHash)));
}

/**
 * Why `block` cannot follow `prev` (undefined: it is the genesis block), or undefined if it can. Checks height,
 * prevHash and that `size` grows by exactly the number of entries (every tx, valid or not, is a log leaf).
 */
export function checkBlockLinks(prev: BlockHeader | undefined, block: Block): string | undefined {
  const count = Array.isArray(block.txs) ? block.txs.length : 0;
  if (prev === undefined) {
    if (block.height !== 0) return `genesis block must have height 0, not ${block.height}`;
    if (block.prevHash !== GENESIS_PREV_HASH) return "genesis block must have a prevHash of 64 zeros";
    if (block.size !== count) return `genesis block size ${block.size} is not its ${count} txs`;
    return undefined;
  }
  if (block.height !== prev.height + 1) return `height ${block.height} does not follow ${prev.height}`;
  if (block.prevHash !== blockHash(prev)) return `prevHash is not the hash of block ${prev.height}`;
  if (block.size !== prev.size + count) return `size ${block.size} is not ${prev.size} + ${count} txs`;
  return undefined;
}

/**
 * Why a block's body does not match its header, or undefined: every entry id must be its tx's id and txRoot must
 * be the root over the entries. With a trusted block hash this detects any change to a block (signatures and
 * results are checked separately, by re-verifying and re-applying).
 */
export function checkBlockContents(block: Block): string | undefined {
  if (!Array.isArray(block.txs)) return "txs: must be an array";
  try {
    for (let i = 0; i < block.txs.length; i++) {
      const entry = block.txs[i] as BlockEntry;
      if (entry.id !== txId(entry.tx)) return `txs[${i}].id is not the id of its tx`;
    }
    if (computeTxRoot(block.txs) !== block.txRoot) return "txRoot does not match the block's entries";
  } catch (error) {
    return error instanceof LedgerError ? error.message : "txs: malformed";
  }
  return undefined;
}

/**
 * Why a block read back from a store is not the one committed there, or undefined: its body against its header
 * (`checkBlockContents`), its header against the hash stored with it, and its link to the block before (`prevHash`:
 * that block's stored hash; undefined for the genesis block, which links to nothing stored).
 */
export function storedBlockProblem(block: Block, storedHash: Hex32, prevHash: Hex32 | undefined): string | undefined {
  return (
    checkBlockContents(block) ??
    (blockHash(block) !== storedHash ? "its header does not match its stored hash" : undefined) ??
    (prevHash !== undefined && prevHash !== block.prevHash ? "it does not link to the block before it" : undefined)
  );
}
