// Tamper-evidence properties: a single flipped bit anywhere in the serialised form of a tx, a block, an inclusion
// receipt, a consistency receipt or a signed tree head is caught by the checks a verifier runs.
//
// A flip either (a) breaks the encoding (invalid UTF-8 or JSON, or a field the strict parsers reject), (b) only
// changes the spelling of the same JSON value (e.g. `1e-7` → `1E-7`, `\u001f` → `\u001F`; the canonical re-encoding
// then differs from the bytes received), or (c) changes the content, in which case a signature, hash or proof check
// must fail. The tests assert that no flip escapes all three, and that (c) is actually exercised.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { blockHash, checkBlockContents, leafBytes } from "./block.ts";
import { canonicalBytes, canonicalJson } from "./canonical.ts";
import { fromHex, isHex32, toHex } from "./encoding.ts";
import { hashLeaf, MemoryMerkleLog, verifyConsistency, verifyInclusion } from "./merkle.ts";
import { parseSignedTreeHead, signTreeHead, verifyTreeHead } from "./sth.ts";
import { alice, entry, makeBlock, node1 } from "./test-fixtures.ts";
import { parseSignedTx, signTx, verifyTxSignature } from "./tx.ts";
import type { Block, SignedTreeHead } from "./types.ts";

type Outcome = "malformed" | "respelled" | "caught" | "ESCAPED";

function flipBit(bytes: Uint8Array, bit: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  out[bit >> 3] = (out[bit >> 3] as number) ^ (1 << (bit & 7));
  return out;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Decodes the flipped bytes and classifies the flip. `same` says whether the decoded value has the original content;
 * `check` runs the verifier's checks on changed content and returns true if they caught it (a throw counts as caught).
 */
function classify(flipped: Uint8Array, original: unknown, check: (value: unknown) => boolean): Outcome {
  let text: string;
  let value: unknown;
  try {
    text = strictUtf8.decode(flipped);
    value = JSON.parse(text);
  } catch {
    return "malformed";
  }
  let canonical: string | undefined;
  try {
    canonical = canonicalJson(value);
  } catch {
    return "malformed";
  }
  if (canonical === canonicalJson(original)) {
    // Same content, different spelling: harmless, and visible because it is not the canonical encoding.
    return canonical !== text ? "respelled" : "ESCAPED";
  }
  try {
    return check(value) ? "caught" : "ESCAPED";
  } catch {
    return "caught";
  }
}

function tally(): { counts: Record<Outcome, number>; add(o: Outcome): Outcome } {
  const counts: Record<Outcome, number> = { malformed: 0, respelled: 0, caught: 0, ESCAPED: 0 };
  return {
    counts,
    add(o) {
      counts[o]++;
      return o;
    },
  };
}

// Payloads with strings, numbers (including exponent forms), nesting and non-ASCII text.
const payloadArb = fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 });

// --- transactions -------------------------------------------------------------------------------------------------

function txCaught(value: unknown): boolean {
  const parsed = parseSignedTx(value);
  return !parsed.ok || !verifyTxSignature(parsed.tx, parsed.id);
}

function signedTx(payload: Record<string, unknown>, n = 1) {
  return signTx(
    { type: "consent.set", payload, signer: alice.keyId, nonce: `${"0".repeat(15)}${n % 10}`, createdAt: 1_700_000 },
    alice,
  );
}

describe("single-bit flips in a signed tx", () => {
  test("every bit of one tx", () => {
    const tx = signedTx({ patient: "p-42", rule: { effect: "permit", purposes: ["TREAT"], n: 1.5e-7 }, note: "é" });
    const wire = canonicalBytes(tx);
    const t = tally();
    for (let bit = 0; bit < wire.length * 8; bit++) {
      assert.notEqual(t.add(classify(flipBit(wire, bit), tx, txCaught)), "ESCAPED", `bit ${bit}`);
    }
    assert.ok(t.counts.caught > 100, JSON.stringify(t.counts));
  });

  test("random payloads, random bit", () => {
    const t = tally();
    fc.assert(
      fc.property(payloadArb, fc.nat(), (payload, seed) => {
        const tx = signedTx(payload);
        const wire = canonicalBytes(tx);
        assert.notEqual(t.add(classify(flipBit(wire, seed % (wire.length * 8)), tx, txCaught)), "ESCAPED");
      }),
      { numRuns: 300 },
    );
    assert.ok(t.counts.caught > 20, JSON.stringify(t.counts));
  });
});

// --- signed tree heads -------------------------------------------------------------------------------------------

function sthCaught(value: unknown): boolean {
  const parsed = parseSignedTreeHead(value);
  return !parsed.ok || !verifyTreeHead(parsed.sth);
}

describe("single-bit flips in a signed tree head", () => {
  test("every bit of one STH", () => {
    const sth = signTreeHead(
      { size: 1234, root: "5a".repeat(32), height: 77, stateDigest: "c3".repeat(32), time: 1e12 },
      node1,
    );
    const wire = canonicalBytes(sth);
    const t = tally();
    for (let bit = 0; bit < wire.length * 8; bit++) {
      assert.notEqual(t.add(classify(flipBit(wire, bit), sth, sthCaught)), "ESCAPED", `bit ${bit}`);
    }
    assert.ok(t.counts.caught > 100, JSON.stringify(t.counts));
  });

  test("random heads, random bit", () => {
    const t = tally();
    const hex32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map(toHex);
    const count = fc.nat({ max: Number.MAX_SAFE_INTEGER });
    fc.assert(
      fc.property(count, hex32, count, hex32, count, fc.nat(), (size, root, height, stateDigest, time, seed) => {
        const sth = signTreeHead({ size, root, height, stateDigest, time }, node1);
        const wire = canonicalBytes(sth);
        assert.notEqual(t.add(classify(flipBit(wire, seed % (wire.length * 8)), sth, sthCaught)), "ESCAPED");
      }),
      { numRuns: 200 },
    );
    assert.ok(t.counts.caught > 20, JSON.stringify(t.counts));
  });
});

// --- blocks -------------------------------------------------------------------------------------------------------

/** What a verifier holding a trusted block hash checks: the header hash, then every entry id and the txRoot. */
function blockCaught(trustedHash: string) {
  return (value: unknown): boolean => {
    const block = value as Block;
    return blockHash(block) !== trustedHash || checkBlockContents(block) !== undefined;
  };
}

describe("single-bit flips in a block", () => {
  const chainStart = makeBlock(undefined, [entry(0)]);

  function sampleBlock(payloads: Record<string, unknown>[]): Block {
    const entries = payloads.map((p, i) =>
      entry(i + 1, p, i % 2 === 0 ? { valid: true, code: "ok" } : { valid: false, code: "unauthorised" }),
    );
    return makeBlock({ block: chainStart, stateDigest: chainStart.stateDigest }, entries);
  }

  test("every bit of one block", () => {
    const block = sampleBlock([{ a: 1 }, { b: ["x", 2.5e-9] }]);
    const wire = canonicalBytes(block);
    const check = blockCaught(blockHash(block));
    const t = tally();
    for (let bit = 0; bit < wire.length * 8; bit++) {
      assert.notEqual(t.add(classify(flipBit(wire, bit), block, check)), "ESCAPED", `bit ${bit}`);
    }
    assert.ok(t.counts.caught > 1000, JSON.stringify(t.counts));
  });

  test("random blocks, random bit", () => {
    const t = tally();
    fc.assert(
      fc.property(fc.array(payloadArb, { maxLength: 4 }), fc.nat(), (payloads, seed) => {
        const block = sampleBlock(payloads);
        const wire = canonicalBytes(block);
        const outcome = classify(flipBit(wire, seed % (wire.length * 8)), block, blockCaught(blockHash(block)));
        assert.notEqual(t.add(outcome), "ESCAPED");
      }),
      { numRuns: 150 },
    );
    assert.ok(t.counts.caught > 20, JSON.stringify(t.counts));
  });

  test("any bit of any numeric header field changes the block hash", () => {
    const block = sampleBlock([{ a: 1 }]);
    const trusted = blockHash(block);
    fc.assert(
      fc.property(fc.constantFrom("height", "time", "size" as const), fc.nat({ max: 52 }), (field, bit) => {
        const value = block[field as "height"];
        const flipped = Number(BigInt(value) ^ (1n << BigInt(bit)));
        assert.notEqual(blockHash({ ...block, [field]: flipped }), trusted);
      }),
      { numRuns: 100 },
    );
  });
});

// --- proofs, as receipts checked against signed tree heads -------------------------------------------------------

function buildLog(n: number): { log: MemoryMerkleLog; leaves: Uint8Array[] } {
  const log = new MemoryMerkleLog();
  const leaves: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const leaf = hashLeaf(
      leafBytes({
        id: toHex(new Uint8Array(32).fill(i & 255)),
        tx: { sig: `s${i}` },
        result: { valid: true, code: "ok" },
      } as never),
    );
    leaves.push(leaf);
    log.append(leaf);
  }
  return { log, leaves };
}

function headFor(log: MemoryMerkleLog, size: number): SignedTreeHead {
  return signTreeHead(
    { size, root: toHex(log.root(size)), height: size, stateDigest: "00".repeat(32), time: 0 },
    node1,
  );
}

/** A receipt: the leaf, its inclusion proof and the signed head it proves against. */
function inclusionCaught(value: unknown): boolean {
  const r = value as { leaf: string; proof: { index: number; size: number; path: string[] }; sth: unknown };
  const parsed = parseSignedTreeHead(r.sth);
  if (!parsed.ok || !verifyTreeHead(parsed.sth) || r.proof.size !== parsed.sth.size || !isHex32(r.leaf)) return true;
  const path = r.proof.path.map((h) => fromHex(h));
  return !verifyInclusion(fromHex(r.leaf), r.proof.index, r.proof.size, path, fromHex(parsed.sth.root));
}

function consistencyCaught(value: unknown): boolean {
  const r = value as { proof: { from: number; to: number; path: string[] }; old: unknown; new: unknown };
  const a = parseSignedTreeHead(r.old);
  const b = parseSignedTreeHead(r.new);
  if (!a.ok || !b.ok || !verifyTreeHead(a.sth) || !verifyTreeHead(b.sth)) return true;
  if (r.proof.from !== a.sth.size || r.proof.to !== b.sth.size) return true;
  const path = r.proof.path.map((h) => fromHex(h));
  return !verifyConsistency(r.proof.from, r.proof.to, fromHex(a.sth.root), fromHex(b.sth.root), path);
}

describe("single-bit flips in proofs", () => {
  const { log, leaves } = buildLog(300);

  test("inclusion receipts", () => {
    const t = tally();
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.nat(), fc.nat(), (size, indexSeed, seed) => {
        const index = indexSeed % size;
        const receipt = {
          leaf: toHex(leaves[index] as Uint8Array),
          proof: { index, size, path: log.inclusionProof(index, size).map(toHex) },
          sth: headFor(log, size),
        };
        assert.equal(inclusionCaught(receipt), false, "the untouched receipt verifies");
        const wire = canonicalBytes(receipt);
        assert.notEqual(t.add(classify(flipBit(wire, seed % (wire.length * 8)), receipt, inclusionCaught)), "ESCAPED");
      }),
      { numRuns: 200 },
    );
    assert.ok(t.counts.caught > 20, JSON.stringify(t.counts));
  });

  test("inclusion proofs alone: any flipped bit of leaf, path, root or index fails", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.nat(), fc.nat(), (size, indexSeed, seed) => {
        const index = indexSeed % size;
        const path = log.inclusionProof(index, size);
        const root = log.root(size);
        const leaf = leaves[index] as Uint8Array;
        assert.equal(verifyInclusion(leaf, index, size, path, root), true);
        const parts = [leaf, root, ...path];
        const part = seed % (parts.length + 1);
        if (part === parts.length) {
          const flipped = index ^ (1 << (seed % 10));
          assert.equal(verifyInclusion(leaf, flipped, size, path, root), false);
          return;
        }
        const bit = (seed >> 4) % 256;
        const tampered = parts.map((p, i) => (i === part ? flipBit(p, bit) : p));
        const [l, r, ...p] = tampered as [Uint8Array, Uint8Array, ...Uint8Array[]];
        assert.equal(verifyInclusion(l, index, size, p, r), false);
      }),
      { numRuns: 300 },
    );
  });

  test("consistency receipts", () => {
    const t = tally();
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.nat(), fc.nat(), (to, fromSeed, seed) => {
        const from = 1 + (fromSeed % to);
        const receipt = {
          proof: { from, to, path: log.consistencyProof(from, to).map(toHex) },
          old: headFor(log, from),
          new: headFor(log, to),
        };
        assert.equal(consistencyCaught(receipt), false, "the untouched receipt verifies");
        const wire = canonicalBytes(receipt);
        assert.notEqual(
          t.add(classify(flipBit(wire, seed % (wire.length * 8)), receipt, consistencyCaught)),
          "ESCAPED",
        );
      }),
      { numRuns: 200 },
    );
    assert.ok(t.counts.caught > 20, JSON.stringify(t.counts));
  });

  test("consistency proofs alone: any flipped bit of either root or the path fails", () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 300 }), fc.nat(), fc.nat(), (to, fromSeed, seed) => {
        const from = 1 + (fromSeed % (to - 1));
        const path = log.consistencyProof(from, to);
        const parts = [log.root(from), log.root(to), ...path];
        assert.equal(verifyConsistency(from, to, parts[0] as Uint8Array, parts[1] as Uint8Array, path), true);
        const part = seed % parts.length;
        const tampered = parts.map((p, i) => (i === part ? flipBit(p, (seed >> 4) % 256) : p));
        const [r1, r2, ...p] = tampered as [Uint8Array, Uint8Array, ...Uint8Array[]];
        assert.equal(verifyConsistency(from, to, r1, r2, p), false);
      }),
      { numRuns: 300 },
    );
  });
});
