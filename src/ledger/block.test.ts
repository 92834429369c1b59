import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  blockHash,
  blockHeaderOf,
  checkBlockContents,
  checkBlockLinks,
  computeTxRoot,
  GENESIS_PREV_HASH,
  INITIAL_STATE_DIGEST,
  leafBytes,
  leafHash,
  nextStateDigest,
} from "./block.ts";
import { canonicalBytes } from "./canonical.ts";
import { concatBytes, fromHex, toHex } from "./encoding.ts";
import { LedgerError } from "./errors.ts";
import { sha256Hex } from "./hash.ts";
import { EMPTY_ROOT, hashLeaf, MemoryMerkleLog } from "./merkle.ts";
import { entry, makeBlock } from "./test-fixtures.ts";
import type { Block } from "./types.ts";

describe("block constants", () => {
  test("are 64 zeros", () => {
    assert.equal(GENESIS_PREV_HASH, "0".repeat(64));
    assert.equal(INITIAL_STATE_DIGEST, "0".repeat(64));
  });
});

describe("leafBytes", () => {
  test("is the canonical {code, id, sig, valid}", () => {
    const e = entry(1, { n: 1 }, { valid: false, code: "replay" });
    const expected = `{"code":"replay","id":"${e.id}","sig":"${e.tx.sig}","valid":false}`;
    assert.equal(new TextDecoder().decode(leafBytes(e)), expected);
  });

  test("the direct path gives the same bytes as canonicalisation, whatever the field contents", () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), fc.string(), fc.boolean(), (code, id, sig, valid) => {
        const e = { id, tx: { ...entry(1, {}).tx, sig }, result: { valid, code } };
        assert.deepEqual(leafBytes(e), canonicalBytes({ code, id, sig, valid }));
      }),
      { numRuns: 500 },
    );
    const plain = entry(2, { n: 2 });
    const { code, valid } = plain.result;
    assert.deepEqual(leafBytes(plain), canonicalBytes({ code, id: plain.id, sig: plain.tx.sig, valid }));
  });
});

describe("leafHash", () => {
  test("is hashLeaf(leafBytes(entry)), whatever the field contents", () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), fc.string(), fc.boolean(), (code, id, sig, valid) => {
        const e = { id, tx: { ...entry(1, {}).tx, sig }, result: { valid, code } };
        assert.deepEqual(leafHash(e), hashLeaf(leafBytes(e)));
      }),
      { numRuns: 500 },
    );
    const plain = entry(3, { n: 3 });
    assert.equal(
      toHex(leafHash(plain)),
      sha256Hex(concatBytes(Uint8Array.of(0), new TextEncoder().encode(new TextDecoder().decode(leafBytes(plain))))),
    );
  });
});

describe("nextStateDigest", () => {
  test("is SHA-256(prev || id || validity byte || UTF-8 code)", () => {
    const id = "ab".repeat(32);
    const expected = sha256Hex(
      concatBytes(
        fromHex(INITIAL_STATE_DIGEST),
        fromHex(id),
        Uint8Array.of(0),
        new TextEncoder().encode("unauthorised"),
      ),
    );
    assert.equal(nextStateDigest(INITIAL_STATE_DIGEST, id, { valid: false, code: "unauthorised" }), expected);
    assert.notEqual(nextStateDigest(INITIAL_STATE_DIGEST, id, { valid: true, code: "unauthorised" }), expected);
    assert.notEqual(nextStateDigest(INITIAL_STATE_DIGEST, id, { valid: false, code: "unauthorisee" }), expected);
  });

  test("rejects malformed input", () => {
    const id = "ab".repeat(32);
    assert.throws(() => nextStateDigest("00", id, { valid: true, code: "ok" }), LedgerError);
    assert.throws(
      () => nextStateDigest(INITIAL_STATE_DIGEST, id.toUpperCase(), { valid: true, code: "ok" }),
      LedgerError,
    );
    assert.throws(() => nextStateDigest(INITIAL_STATE_DIGEST, id, { valid: 1, code: "ok" } as never), LedgerError);
  });
});

describe("headers and hashes", () => {
  const genesis = makeBlock(undefined, [entry(0), entry(1)]);

  test("blockHeaderOf keeps exactly the seven header fields", () => {
    const header = blockHeaderOf(genesis);
    assert.deepEqual(Object.keys(header).sort(), [
      "height",
      "prevHash",
      "proposer",
      "size",
      "stateDigest",
      "time",
      "txRoot",
    ]);
    assert.equal(header.txRoot, genesis.txRoot);
  });

  test("blockHash covers the header only, with its domain prefix", () => {
    const header = blockHeaderOf(genesis);
    const expected = sha256Hex(concatBytes(new TextEncoder().encode("careledger/block/v1\n"), canonicalBytes(header)));
    assert.equal(blockHash(header), expected);
    assert.equal(blockHash(genesis), expected, "a Block's txs do not enter its hash");
    assert.equal(blockHash({ ...header, extra: 1 } as never), expected);
    for (const field of Object.keys(header) as (keyof typeof header)[]) {
      const changed = { ...header, [field]: typeof header[field] === "number" ? 7 : "11".repeat(32) };
      assert.notEqual(blockHash(changed), expected, field);
    }
  });

  test("computeTxRoot is the RFC 9162 root over leaf hashes", () => {
    assert.equal(computeTxRoot([]), toHex(EMPTY_ROOT));
    const entries = [entry(0), entry(1), entry(2)];
    const log = new MemoryMerkleLog();
    for (const e of entries) log.append(hashLeaf(leafBytes(e)));
    assert.equal(computeTxRoot(entries), toHex(log.root()));
  });
});

describe("checkBlockLinks", () => {
  const b0 = makeBlock(undefined, [entry(0)]);
  const b1 = makeBlock({ block: b0, stateDigest: b0.stateDigest }, [entry(1), entry(2)]);
  const b2 = makeBlock({ block: b1, stateDigest: b1.stateDigest }, []);

  test("accepts a well-formed chain", () => {
    assert.equal(checkBlockLinks(undefined, b0), undefined);
    assert.equal(checkBlockLinks(b0, b1), undefined);
    assert.equal(checkBlockLinks(blockHeaderOf(b1), b2), undefined);
  });

  const broken: [string, () => string | undefined, RegExp][] = [
    ["genesis at height 1", () => checkBlockLinks(undefined, { ...b0, height: 1 }), /height 0/],
    ["genesis with a prevHash", () => checkBlockLinks(undefined, { ...b0, prevHash: "11".repeat(32) }), /prevHash/],
    ["genesis with a wrong size", () => checkBlockLinks(undefined, { ...b0, size: 2 }), /size/],
    ["skipped height", () => checkBlockLinks(b0, { ...b1, height: 2 }), /height 2 does not follow 0/],
    ["repeated height", () => checkBlockLinks(b1, { ...b2, height: 1 }), /height/],
    ["wrong prevHash", () => checkBlockLinks(b0, { ...b1, prevHash: b0.txRoot }), /prevHash/],
    ["prev header altered", () => checkBlockLinks({ ...b0, time: b0.time + 1 }, b1), /prevHash/],
    ["size not grown by its txs", () => checkBlockLinks(b1, { ...b2, size: b2.size + 1 }), /size/],
  ];
  for (const [what, run, expected] of broken) {
    test(`reports ${what}`, () => {
      assert.match(run() ?? "", expected);
    });
  }
});

describe("checkBlockContents", () => {
  const block = makeBlock(undefined, [entry(0), entry(1, { n: 1 }, { valid: false, code: "replay" })]);

  test("accepts a consistent block", () => {
    assert.equal(checkBlockContents(block), undefined);
    assert.equal(checkBlockContents(makeBlock(undefined, [])), undefined);
  });

  test("reports an entry whose id is not its tx's", () => {
    const [a, b] = block.txs as [Block["txs"][0], Block["txs"][0]];
    const tampered: Block = { ...block, txs: [a, { ...b, tx: { ...b.tx, payload: { n: 2 } } }] };
    assert.match(checkBlockContents(tampered) ?? "", /txs\[1\]\.id/);
  });

  test("reports a changed result or signature through txRoot", () => {
    const [a, b] = block.txs as [Block["txs"][0], Block["txs"][0]];
    assert.match(
      checkBlockContents({ ...block, txs: [a, { ...b, result: { valid: true, code: "ok" } }] }) ?? "",
      /txRoot/,
    );
    assert.match(checkBlockContents({ ...block, txs: [b, a] }) ?? "", /txRoot/);
    assert.match(checkBlockContents({ ...block, txs: [a] }) ?? "", /txRoot/);
  });

  test("reports malformed bodies without throwing", () => {
    assert.match(checkBlockContents({ ...block, txs: "x" } as never) ?? "", /txs/);
    const [a] = block.txs as [Block["txs"][0]];
    assert.match(
      checkBlockContents({ ...block, txs: [{ ...a, tx: { ...a.tx, payload: { x: undefined } } }] }) ?? "",
      /./,
    );
  });
});
