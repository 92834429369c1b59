import { hash } from "node:crypto";
import { bytesEqual } from "./encoding.ts";
import { LedgerError } from "./errors.ts";
import { sha256 } from "./hash.ts";

// RFC 9162 (Certificate Transparency 2.0) Merkle tree with SHA-256. Domain separation between leaves (0x00) and
// interior nodes (0x01) is what stops a leaf from being passed off as a subtree.
//
// Sizes and indices are plain numbers, manipulated with arithmetic rather than 32-bit bitwise operators, so any safe
// integer works.

const HASH_BYTES = 32;

/** MTH({}) = SHA-256 of the empty string: the root of an empty log (and the txRoot of an empty block). */
export const EMPTY_ROOT: Uint8Array = sha256(new Uint8Array(0));

/** Leaf hash: SHA-256(0x00 || data). */
export function hashLeaf(data: Uint8Array): Uint8Array {
  const buf = Buffer.allocUnsafe(data.byteLength + 1);
  buf[0] = 0;
  buf.set(data, 1);
  return sha256(buf);
}

// One reusable buffer for the common 32+32 case: interior hashing dominates building a large tree.
const childScratch = Buffer.alloc(1 + 2 * HASH_BYTES);
childScratch[0] = 1;

/** Interior node hash: SHA-256(0x01 || left || right). */
export function hashChildren(left: Uint8Array, right: Uint8Array): Uint8Array {
  if (left.byteLength === HASH_BYTES && right.byteLength === HASH_BYTES) {
    childScratch.set(left, 1);
    childScratch.set(right, 1 + HASH_BYTES);
    return sha256(childScratch);
  }
  const buf = Buffer.allocUnsafe(1 + left.byteLength + right.byteLength);
  buf[0] = 1;
  buf.set(left, 1);
  buf.set(right, 1 + left.byteLength);
  return sha256(buf);
}

/** hashChildren written straight into `target` (no intermediate array): building a large log is all this. */
function hashChildrenInto(left: Uint8Array, right: Uint8Array, target: Buffer, offset: number): void {
  childScratch.set(left, 1);
  childScratch.set(right, 1 + HASH_BYTES);
  target.write(hash("sha256", childScratch, "binary"), offset, HASH_BYTES, "latin1");
}

function isHash(h: unknown): h is Uint8Array {
  return h instanceof Uint8Array && h.byteLength === HASH_BYTES;
}

function isCount(n: unknown): n is number {
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
}

/** Largest power of two strictly below n (n ≥ 2): RFC 9162's split point k. */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function log2Exact(k: number): number {
  let level = 0;
  while (k > 1) {
    k /= 2;
    level++;
  }
  return level;
}

function popcount(n: number): number {
  let c = 0;
  while (n > 0) {
    c += n % 2;
    n = Math.floor(n / 2);
  }
  return c;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && popcount(n) === 1;
}

/** MTH over a list of leaf hashes, in one pass with a stack of perfect-subtree roots. */
export function merkleRootOf(leafHashes: Uint8Array[]): Uint8Array {
  if (leafHashes.length === 0) return EMPTY_ROOT.slice();
  const stack: Uint8Array[] = [];
  for (let i = 0; i < leafHashes.length; i++) {
    let cur = leafHashes[i] as Uint8Array;
    for (let m = i; m % 2 === 1; m = (m - 1) / 2) cur = hashChildren(stack.pop() as Uint8Array, cur);
    stack.push(cur);
  }
  let root = stack.pop() as Uint8Array;
  while (stack.length > 0) root = hashChildren(stack.pop() as Uint8Array, root);
  return root;
}

/**
 * Read access to a stored log. node(level, index) is the root of the perfect subtree over leaves
 * [index·2^level, (index+1)·2^level); level 0 holds the leaf hashes. Only complete subtrees are ever stored, so a
 * stored node never changes once written and storage is append-only.
 */
export interface MerkleNodeReader {
  node(level: number, index: number): Uint8Array;
}

/**
 * The right edge of a log: the roots of its perfect subtrees, highest level first, one per set bit of `size`. It is
 * all a node needs in memory to append leaves and compute the root.
 */
export interface Frontier {
  size: number;
  hashes: Uint8Array[];
}

export const EMPTY_FRONTIER: Frontier = Object.freeze({
  size: 0,
  hashes: Object.freeze([]) as unknown as Uint8Array[],
});

export interface MerkleNode {
  level: number;
  index: number;
  hash: Uint8Array;
}

/**
 * Appends one leaf hash. Returns the new frontier and every node this append completed (the leaf itself plus each
 * perfect subtree it closed), which is exactly what a store must persist. The input frontier is not modified.
 */
export function appendLeaf(frontier: Frontier, leafHash: Uint8Array): { frontier: Frontier; newNodes: MerkleNode[] } {
  if (!isHash(leafHash)) throw new LedgerError("bad-hash", "a leaf hash must be 32 bytes");
  const n = frontier.size;
  if (!isCount(n) || frontier.hashes.length !== popcount(n)) {
    throw new LedgerError("bad-frontier", "frontier must hold one hash per set bit of its size");
  }
  const hashes = frontier.hashes.slice();
  const newNodes: MerkleNode[] = [{ level: 0, index: n, hash: leafHash }];
  let cur = leafHash;
  let level = 0;
  for (let m = n; m % 2 === 1; ) {
    cur = hashChildren(hashes.pop() as Uint8Array, cur);
    level++;
    m = (m - 1) / 2;
    newNodes.push({ level, index: m, hash: cur });
  }
  hashes.push(cur);
  return { frontier: { size: n + 1, hashes }, newNodes };
}

/** MTH of the whole log described by the frontier. */
export function frontierRoot(frontier: Frontier): Uint8Array {
  const { hashes } = frontier;
  if (hashes.length === 0) return EMPTY_ROOT.slice();
  let root = hashes[hashes.length - 1] as Uint8Array;
  for (let i = hashes.length - 2; i >= 0; i--) root = hashChildren(hashes[i] as Uint8Array, root);
  return root;
}

/**
 * MTH over leaves [start, end) read from perfect nodes only: one read per set bit of (end − start). Only ranges that
 * occur in RFC 9162's recursion decompose that way, so `start` must be a multiple of the smallest power of two
 * ≥ end − start (always true for start = 0); other ranges throw `bad-range`.
 */
export function subtreeRoot(reader: MerkleNodeReader, start: number, end: number): Uint8Array {
  if (!isCount(start) || !isCount(end) || end < start) {
    throw new LedgerError("bad-range", `invalid leaf range [${start}, ${end})`);
  }
  const width = end - start;
  if (width === 0) return EMPTY_ROOT.slice();
  let span = 1;
  while (span < width) span *= 2;
  if (start % span !== 0) throw new LedgerError("bad-range", `leaf range [${start}, ${end}) is not a subtree`);
  // Perfect pieces left to right: one per set bit of width, largest first.
  const pieces: Uint8Array[] = [];
  let pos = start;
  for (let size = span, level = log2Exact(span); size >= 1; size /= 2, level--) {
    if (end - pos >= size) {
      pieces.push(reader.node(level, pos / size));
      pos += size;
    }
  }
  let root = pieces[pieces.length - 1] as Uint8Array;
  for (let i = pieces.length - 2; i >= 0; i--) root = hashChildren(pieces[i] as Uint8Array, root);
  return root;
}

/**
 * RFC 9162 §2.1.3.1 audit path for leaf `index` in the tree of the first `size` leaves, leaf to root. Reads
 * O(log size) nodes: once the walk turns left every sibling to its right is perfect, so at most one sibling needs
 * more than one read.
 */
export function inclusionProof(reader: MerkleNodeReader, index: number, size: number): Uint8Array[] {
  if (!isCount(index) || !isCount(size) || index >= size) {
    throw new LedgerError("bad-range", `leaf index ${index} is not in a tree of size ${size}`);
  }
  const path: Uint8Array[] = [];
  let start = 0;
  let n = size;
  let m = index;
  while (n > 1) {
    const k = splitPoint(n);
    if (m < k) {
      path.push(subtreeRoot(reader, start + k, start + n));
      n = k;
    } else {
      path.push(reader.node(log2Exact(k), start / k));
      start += k;
      m -= k;
      n -= k;
    }
  }
  return path.reverse();
}

/**
 * RFC 9162 §2.1.4.1 consistency proof between the trees of the first `from` and `to` leaves. Empty when from is 0
 * or equals to (there is nothing to prove; note that `verifyConsistency` rejects size1 = 0 as RFC 9162 and the
 * reference vectors require).
 */
export function consistencyProof(reader: MerkleNodeReader, from: number, to: number): Uint8Array[] {
  if (!isCount(from) || !isCount(to) || from > to) {
    throw new LedgerError("bad-range", `no consistency proof from size ${from} to size ${to}`);
  }
  const path: Uint8Array[] = [];
  if (from === 0 || from === to) return path;
  let start = 0;
  let n = to;
  let m = from;
  let whole = true; // SUBPROOF's flag b: still on the path from the root down the old tree's right edge
  for (;;) {
    if (m === n) {
      if (!whole) path.push(subtreeRoot(reader, start, start + n));
      break;
    }
    const k = splitPoint(n);
    if (m <= k) {
      path.push(subtreeRoot(reader, start + k, start + n));
      n = k;
    } else {
      path.push(reader.node(log2Exact(k), start / k));
      start += k;
      m -= k;
      n -= k;
      whole = false;
    }
  }
  return path.reverse();
}

/**
 * RFC 9162 §2.1.3.2, step by step. Returns false, never throws, on anything malformed: proofs arrive from untrusted
 * parties and the caller only needs a yes/no.
 */
export function verifyInclusion(
  leafHash: Uint8Array,
  index: number,
  size: number,
  path: Uint8Array[],
  root: Uint8Array,
): boolean {
  if (!isCount(index) || !isCount(size) || index >= size) return false;
  if (!isHash(leafHash) || !(root instanceof Uint8Array) || !Array.isArray(path) || !path.every(isHash)) return false;
  let fn = index;
  let sn = size - 1;
  let r = leafHash;
  for (const p of path) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = hashChildren(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn /= 2;
        sn = Math.floor(sn / 2);
      }
    } else {
      r = hashChildren(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && bytesEqual(r, root);
}

/**
 * RFC 9162 §2.1.4.2, step by step, for 0 < size1 < size2. Equal sizes are consistent iff the proof is empty and the
 * roots are equal. size1 = 0 is rejected: RFC 9162 defines no proof from the empty tree, and accepting one would let
 * any root pass as an extension of "nothing" (the transparency-dev reference vectors expect this rejection).
 * Returns false, never throws, on anything malformed.
 */
export function verifyConsistency(
  size1: number,
  size2: number,
  root1: Uint8Array,
  root2: Uint8Array,
  path: Uint8Array[],
): boolean {
  if (!isCount(size1) || !isCount(size2) || size1 === 0 || size1 > size2) return false;
  if (!(root1 instanceof Uint8Array) || !(root2 instanceof Uint8Array) || !Array.isArray(path)) return false;
  if (size1 === size2) return path.length === 0 && bytesEqual(root1, root2);
  // Step 1: an empty path proves nothing.
  if (path.length === 0 || !path.every(isHash)) return false;
  // Step 2: a perfect old tree is itself a node of the new one, so its root starts the path.
  const proof = isPowerOfTwo(size1) ? [root1, ...path] : path;
  // Steps 3–4.
  let fn = size1 - 1;
  let sn = size2 - 1;
  while (fn % 2 === 1) {
    fn = (fn - 1) / 2;
    sn = Math.floor(sn / 2);
  }
  // Step 5.
  let fr = proof[0] as Uint8Array;
  let sr = fr;
  // Step 6.
  for (let i = 1; i < proof.length; i++) {
    const c = proof[i] as Uint8Array;
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = hashChildren(c, fr);
      sr = hashChildren(c, sr);
      while (fn % 2 === 0 && fn !== 0) {
        fn /= 2;
        sn = Math.floor(sn / 2);
      }
    } else {
      sr = hashChildren(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  // Step 7.
  return sn === 0 && bytesEqual(fr, root1) && bytesEqual(sr, root2);
}

/**
 * A whole log in memory, for tests and for offline verification of exports. Each level is one contiguous,
 * geometrically grown byte array (32 bytes per node) rather than an array of small Uint8Arrays, so 10^6 leaves cost
 * about 64 MB and no per-node objects.
 */
export class MemoryMerkleLog implements MerkleNodeReader {
  #levels: Buffer[] = [];
  #counts: number[] = [];

  /** Number of leaves. */
  get size(): number {
    return this.#counts[0] ?? 0;
  }

  /** A copy of a stored node. Throws `bad-range` if that node is not complete yet. */
  node(level: number, index: number): Uint8Array {
    const offset = this.#offset(level, index);
    return new Uint8Array((this.#levels[level] as Buffer).subarray(offset, offset + HASH_BYTES));
  }

  #offset(level: number, index: number): number {
    const count = this.#counts[level];
    if (count === undefined || !isCount(index) || index >= count) {
      throw new LedgerError("bad-range", `no node at level ${level}, index ${index}`);
    }
    return index * HASH_BYTES;
  }

  /** Makes room for one more node at `level` and returns its index. */
  #reserve(level: number): number {
    if (level === this.#levels.length) {
      this.#levels.push(Buffer.alloc(HASH_BYTES * 64));
      this.#counts.push(0);
    }
    const buf = this.#levels[level] as Buffer;
    const index = this.#counts[level] as number;
    if ((index + 1) * HASH_BYTES > buf.byteLength) {
      const grown = Buffer.alloc(buf.byteLength * 2);
      buf.copy(grown);
      this.#levels[level] = grown;
    }
    this.#counts[level] = index + 1;
    return index;
  }

  /** Appends a leaf hash and returns its index. */
  append(leafHash: Uint8Array): number {
    if (!isHash(leafHash)) throw new LedgerError("bad-hash", "a leaf hash must be 32 bytes");
    const leafIndex = this.#reserve(0);
    (this.#levels[0] as Buffer).set(leafHash, leafIndex * HASH_BYTES);
    let level = 0;
    let index = leafIndex;
    while (index % 2 === 1) {
      const children = this.#levels[level] as Buffer;
      const left = children.subarray((index - 1) * HASH_BYTES, index * HASH_BYTES);
      const right = children.subarray(index * HASH_BYTES, (index + 1) * HASH_BYTES);
      level++;
      index = this.#reserve(level);
      hashChildrenInto(left, right, this.#levels[level] as Buffer, index * HASH_BYTES);
    }
    return leafIndex;
  }

  /** MTH of the first `size` leaves (default: all). */
  root(size: number = this.size): Uint8Array {
    this.#checkSize(size);
    return subtreeRoot(this, 0, size);
  }

  inclusionProof(index: number, size: number = this.size): Uint8Array[] {
    this.#checkSize(size);
    return inclusionProof(this, index, size);
  }

  consistencyProof(from: number, to: number = this.size): Uint8Array[] {
    this.#checkSize(to);
    return consistencyProof(this, from, to);
  }

  #checkSize(size: number): void {
    if (!isCount(size) || size > this.size) {
      throw new LedgerError("bad-range", `tree size ${size} exceeds the log size ${this.size}`);
    }
  }
}
