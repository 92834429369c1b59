import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { describe, test } from "node:test";
import fc from "fast-check";
import { toHex } from "./encoding.ts";
import { sha256 } from "./hash.ts";
import {
  appendLeaf,
  consistencyProof,
  EMPTY_FRONTIER,
  EMPTY_ROOT,
  type Frontier,
  frontierRoot,
  hashChildren,
  hashLeaf,
  inclusionProof,
  MemoryMerkleLog,
  type MerkleNodeReader,
  merkleRootOf,
  subtreeRoot,
  verifyConsistency,
  verifyInclusion,
} from "./merkle.ts";

const VECTORS = new URL("../../../shared/data/rfc6962-vectors/", import.meta.url);

const b64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "base64"));

function vectorFiles(kind: string): { name: string; json: Record<string, unknown> }[] {
  const dir = new URL(`${kind}/`, VECTORS);
  return (readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((name) => ({ name, json: JSON.parse(readFileSync(new URL(name, dir), "utf8")) }));
}

// The reference vectors use Go's nil for an empty proof.
const proofOf = (p: unknown): Uint8Array[] => ((p as string[] | null) ?? []).map(b64);

describe("RFC 6962 / 9162 reference vectors (transparency-dev/merkle)", () => {
  const inclusion = vectorFiles("inclusion");
  const consistency = vectorFiles("consistency");

  test("all 98 + 98 vectors are present", () => {
    assert.equal(inclusion.length, 98);
    assert.equal(consistency.length, 98);
  });

  for (const { name, json: v } of inclusion) {
    test(`inclusion/${name}: ${v.desc} → ${v.wantErr ? "reject" : "accept"}`, () => {
      const ok = verifyInclusion(
        b64(v.leafHash as string),
        v.leafIdx as number,
        v.treeSize as number,
        proofOf(v.proof),
        b64(v.root as string),
      );
      assert.equal(ok, !v.wantErr);
    });
  }

  for (const { name, json: v } of consistency) {
    test(`consistency/${name}: ${v.desc} → ${v.wantErr ? "reject" : "accept"}`, () => {
      const ok = verifyConsistency(
        v.size1 as number,
        v.size2 as number,
        b64(v.root1 as string),
        b64(v.root2 as string),
        proofOf(v.proof),
      );
      assert.equal(ok, !v.wantErr);
    });
  }
});

// Naive RFC 9162 §2.1.1 / §2.1.3.1 / §2.1.4.1 recursions over an in-memory list, as an independent oracle.
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}
function naiveMth(leaves: Uint8Array[]): Uint8Array {
  if (leaves.length === 0) return sha256(new Uint8Array(0));
  if (leaves.length === 1) return leaves[0] as Uint8Array;
  const k = split(leaves.length);
  return hashChildren(naiveMth(leaves.slice(0, k)), naiveMth(leaves.slice(k)));
}
function naivePath(m: number, leaves: Uint8Array[]): Uint8Array[] {
  if (leaves.length <= 1) return [];
  const k = split(leaves.length);
  return m < k
    ? [...naivePath(m, leaves.slice(0, k)), naiveMth(leaves.slice(k))]
    : [...naivePath(m - k, leaves.slice(k)), naiveMth(leaves.slice(0, k))];
}
function naiveSubproof(m: number, leaves: Uint8Array[], b: boolean): Uint8Array[] {
  const n = leaves.length;
  if (m === n) return b ? [] : [naiveMth(leaves)];
  const k = split(n);
  return m <= k
    ? [...naiveSubproof(m, leaves.slice(0, k), b), naiveMth(leaves.slice(k))]
    : [...naiveSubproof(m - k, leaves.slice(k), false), naiveMth(leaves.slice(0, k))];
}

const leafOf = (i: number): Uint8Array => hashLeaf(new TextEncoder().encode(`leaf ${i}`));
const hexes = (hs: Uint8Array[]): string[] => hs.map(toHex);

describe("MemoryMerkleLog against the naive recursion, sizes 1..70", () => {
  const MAX = 70;
  const leaves = Array.from({ length: MAX }, (_, i) => leafOf(i));
  const log = new MemoryMerkleLog();
  for (const leaf of leaves) log.append(leaf);
  const roots = [EMPTY_ROOT, ...leaves.map((_, i) => naiveMth(leaves.slice(0, i + 1)))];

  test("roots of every prefix, three ways", () => {
    assert.equal(log.size, MAX);
    assert.deepEqual(log.root(0), EMPTY_ROOT);
    for (let n = 1; n <= MAX; n++) {
      const expected = toHex(roots[n] as Uint8Array);
      assert.equal(toHex(log.root(n)), expected, `root(${n})`);
      assert.equal(toHex(merkleRootOf(leaves.slice(0, n))), expected, `merkleRootOf(${n})`);
    }
  });

  test("every inclusion proof matches PATH(m, D[n]) and verifies; wrong index/size/leaf fail", () => {
    let checked = 0;
    for (let n = 1; n <= MAX; n++) {
      const prefix = leaves.slice(0, n);
      const root = roots[n] as Uint8Array;
      for (let m = 0; m < n; m++) {
        const path = log.inclusionProof(m, n);
        assert.deepEqual(hexes(path), hexes(naivePath(m, prefix)), `PATH(${m}, ${n})`);
        assert.equal(verifyInclusion(leaves[m] as Uint8Array, m, n, path, root), true, `verify(${m}, ${n})`);
        if (m + 1 < n) assert.equal(verifyInclusion(leaves[m] as Uint8Array, m + 1, n, path, root), false);
        // RFC 9162 proofs do not authenticate the size on their own (the signed tree head binds size and root):
        // the same path can verify for n + 1 against the size-n root, but never against the size-(n + 1) root.
        if (n < MAX)
          assert.equal(verifyInclusion(leaves[m] as Uint8Array, m, n + 1, path, roots[n + 1] as never), false);
        assert.equal(verifyInclusion(leafOf(-1), m, n, path, root), false);
        checked++;
      }
    }
    assert.equal(checked, (MAX * (MAX + 1)) / 2);
  });

  test("every consistency proof matches PROOF(m, D[n]) and verifies; wrong sizes/roots fail", () => {
    let checked = 0;
    for (let n = 1; n <= MAX; n++) {
      for (let m = 0; m <= n; m++) {
        const path = log.consistencyProof(m, n);
        const r1 = roots[m] as Uint8Array;
        const r2 = roots[n] as Uint8Array;
        if (m === 0 || m === n) {
          assert.deepEqual(path, []);
          // RFC 9162 gives no proof from the empty tree; equal sizes need equal roots.
          assert.equal(verifyConsistency(m, n, r1, r2, path), m !== 0);
        } else {
          assert.deepEqual(hexes(path), hexes(naiveSubproof(m, leaves.slice(0, n), true)), `PROOF(${m}, ${n})`);
          assert.equal(verifyConsistency(m, n, r1, r2, path), true, `verify(${m}, ${n})`);
          assert.equal(verifyConsistency(m, n, r2, r1, path), false);
          if (m > 1) assert.equal(verifyConsistency(m - 1, n, roots[m - 1] as never, r2, path), false);
          if (n < MAX) assert.equal(verifyConsistency(m, n + 1, r1, roots[n + 1] as never, path), false);
          assert.equal(verifyConsistency(m, n, r1, r2, path.slice(1)), false);
          assert.equal(verifyConsistency(m, n, r1, r2, [...path, r2]), false);
        }
        checked++;
      }
    }
    assert.equal(checked, (MAX * (MAX + 3)) / 2);
  });

  test("proofs for historic sizes come from the same stored nodes", () => {
    assert.deepEqual(hexes(inclusionProof(log, 5, 13)), hexes(log.inclusionProof(5, 13)));
    assert.deepEqual(hexes(consistencyProof(log, 6, 13)), hexes(log.consistencyProof(6, 13)));
    assert.throws(() => log.inclusionProof(0, MAX + 1), /exceeds/);
    assert.throws(() => log.inclusionProof(MAX, MAX), /not in a tree/);
    assert.throws(() => log.consistencyProof(5, 4), /no consistency proof/);
  });
});

describe("frontier", () => {
  test("appendLeaf reports exactly the completed perfect nodes and tracks the root", () => {
    const log = new MemoryMerkleLog();
    let frontier: Frontier = EMPTY_FRONTIER;
    const stored = new Map<string, string>();
    for (let i = 0; i < 100; i++) {
      const before = frontier;
      const snapshot = JSON.stringify({ size: before.size, hashes: hexes(before.hashes) });
      const { frontier: next, newNodes } = appendLeaf(frontier, leafOf(i));
      assert.equal(JSON.stringify({ size: before.size, hashes: hexes(before.hashes) }), snapshot, "input untouched");
      log.append(leafOf(i));
      // Nodes completed by this append: level 0 at index i, plus one per trailing 1-bit of i.
      let trailingOnes = 0;
      for (let m = i; m % 2 === 1; m = (m - 1) / 2) trailingOnes++;
      assert.equal(newNodes.length, 1 + trailingOnes);
      for (const node of newNodes) {
        assert.equal(toHex(node.hash), toHex(log.node(node.level, node.index)), `node ${node.level}/${node.index}`);
        const key = `${node.level}/${node.index}`;
        assert.ok(!stored.has(key), "each node is produced once");
        stored.set(key, toHex(node.hash));
      }
      frontier = next;
      assert.equal(frontier.size, i + 1);
      assert.equal(toHex(frontierRoot(frontier)), toHex(log.root()));
      // The frontier is the perfect-subtree roots of the right edge, highest first.
      let pos = 0;
      const expected: string[] = [];
      for (let level = 10; level >= 0; level--) {
        if (Math.floor(frontier.size / 2 ** level) % 2 === 1) {
          expected.push(toHex(log.node(level, pos / 2 ** level)));
          pos += 2 ** level;
        }
      }
      assert.deepEqual(hexes(frontier.hashes), expected);
    }
    assert.deepEqual(frontierRoot(EMPTY_FRONTIER), EMPTY_ROOT);
  });

  test("rejects malformed input", () => {
    assert.throws(() => appendLeaf(EMPTY_FRONTIER, new Uint8Array(31)), /32 bytes/);
    assert.throws(() => appendLeaf({ size: 3, hashes: [leafOf(0)] }, leafOf(1)), /one hash per set bit/);
  });
});

describe("subtreeRoot", () => {
  const log = new MemoryMerkleLog();
  const leaves = Array.from({ length: 40 }, (_, i) => leafOf(i));
  for (const leaf of leaves) log.append(leaf);

  test("matches the naive MTH for every aligned range and reads O(log n) nodes", () => {
    let reads = 0;
    const counting: MerkleNodeReader = {
      node: (level, index) => {
        reads++;
        return log.node(level, index);
      },
    };
    for (let start = 0; start < 40; start++) {
      for (let end = start + 1; end <= 40; end++) {
        let span = 1;
        while (span < end - start) span *= 2;
        if (start % span !== 0) {
          assert.throws(() => subtreeRoot(log, start, end), /not a subtree/);
          continue;
        }
        reads = 0;
        assert.equal(toHex(subtreeRoot(counting, start, end)), toHex(naiveMth(leaves.slice(start, end))));
        assert.ok(reads <= Math.log2(span) + 1, `[${start}, ${end}) took ${reads} reads`);
      }
    }
    assert.deepEqual(subtreeRoot(log, 8, 8), EMPTY_ROOT);
    assert.throws(() => subtreeRoot(log, 5, 4), /invalid/);
  });
});

describe("verifiers never throw", () => {
  test("on arbitrary garbage", () => {
    fc.assert(
      fc.property(fc.anything(), fc.anything(), fc.anything(), fc.anything(), fc.anything(), (a, b, c, d, e) => {
        const f = (x: unknown) => x as never;
        assert.equal(typeof verifyInclusion(f(a), f(b), f(c), f(d), f(e)), "boolean");
        assert.equal(typeof verifyConsistency(f(a), f(b), f(c), f(d), f(e)), "boolean");
      }),
      { numRuns: 300 },
    );
  });

  test("on well-typed but wrong input", () => {
    const h = leafOf(0);
    assert.equal(verifyInclusion(h, -1, 1, [], h), false);
    assert.equal(verifyInclusion(h, 0.5, 2, [h], h), false);
    assert.equal(verifyInclusion(h, 0, 2 ** 60, [h], h), false);
    assert.equal(verifyInclusion(h, 0, 2, [new Uint8Array(33)], h), false);
    assert.equal(verifyInclusion(h, 0, 2, null as never, h), false);
    assert.equal(verifyConsistency(1, 2, h, h, [new Uint8Array(0)]), false);
    assert.equal(verifyConsistency(Number.NaN, 2, h, h, [h]), false);
    assert.equal(verifyConsistency(1, Number.POSITIVE_INFINITY, h, h, [h]), false);
    assert.equal(verifyConsistency(1, 2, h, h, Array(100).fill(h)), false);
  });
});

test("MemoryMerkleLog holds 10^6 leaves and proves against them", () => {
  const N = 1_000_000;
  const log = new MemoryMerkleLog();
  // Cheap distinct leaf hashes: the index in the first three bytes (hashing 10^6 leaves would double the run time).
  const leafAt = (i: number): Uint8Array => {
    const leaf = new Uint8Array(32);
    leaf[0] = i & 255;
    leaf[1] = (i >> 8) & 255;
    leaf[2] = (i >> 16) & 255;
    return leaf;
  };
  const started = performance.now();
  for (let i = 0; i < N; i++) log.append(leafAt(i));
  const elapsed = performance.now() - started;
  assert.equal(log.size, N);
  assert.ok(elapsed < 20_000, `appending 10^6 leaves took ${elapsed} ms`);
  const root = log.root();
  assert.equal(toHex(root), toHex(merkleRootOf(Array.from({ length: N }, (_, i) => leafAt(i)))));
  for (const index of [0, 1, 524_287, 524_288, N - 2, N - 1]) {
    const leaf = leafAt(index);
    const path = log.inclusionProof(index);
    assert.ok(path.length <= 20);
    assert.equal(verifyInclusion(leaf, index, N, path, root), true);
  }
  for (const from of [1, 3, 65_536, 999_999]) {
    assert.equal(verifyConsistency(from, N, log.root(from), root, log.consistencyProof(from)), true);
  }
});
