import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { canonicalBytes } from "./canonical.ts";
import { concatBytes, fromBase64Url } from "./encoding.ts";
import { LedgerError } from "./errors.ts";
import { verifyBytes } from "./keys.ts";
import { parseSignedTreeHead, STH_SIGNING_PREFIX, signTreeHead, verifyTreeHead } from "./sth.ts";
import { alice, node1 } from "./test-fixtures.ts";
import { signTx, txId, verifyTxSignature } from "./tx.ts";
import type { SignedTreeHead, TreeHead } from "./types.ts";

const head: TreeHead = {
  size: 10,
  root: "ab".repeat(32),
  height: 3,
  stateDigest: "cd".repeat(32),
  time: 1_700_000_000_000,
};

describe("signed tree heads", () => {
  test("sign over prefix || canonical five fields, and verify", () => {
    const sth = signTreeHead(head, node1);
    assert.equal(sth.signer, node1.keyId);
    assert.equal(verifyTreeHead(sth), true);
    const msg = concatBytes(STH_SIGNING_PREFIX, canonicalBytes(head));
    assert.equal(verifyBytes(node1.keyId, msg, fromBase64Url(sth.sig)), true);
    assert.deepEqual(STH_SIGNING_PREFIX, new TextEncoder().encode("careledger/sth/v1\n"));
  });

  test("extra fields on the head are not signed", () => {
    assert.deepEqual(signTreeHead({ ...head, extra: 1 } as TreeHead, node1), signTreeHead(head, node1));
  });

  test("any changed field fails verification", () => {
    const sth = signTreeHead(head, node1);
    const changes: Partial<SignedTreeHead>[] = [
      { size: 11 },
      { root: "ac".repeat(32) },
      { height: 4 },
      { stateDigest: "ce".repeat(32) },
      { time: head.time + 1 },
      { signer: alice.keyId },
      { sig: signTreeHead({ ...head, size: 11 }, node1).sig },
    ];
    for (const change of changes) assert.equal(verifyTreeHead({ ...sth, ...change }), false, JSON.stringify(change));
  });

  test("verifyTreeHead returns false, never throws, on garbage", () => {
    const sth = signTreeHead(head, node1);
    for (const bad of [null, {}, { ...sth, sig: 1 }, { ...sth, size: -1 }, { ...sth, root: "AB".repeat(32) }, "sth"]) {
      assert.equal(verifyTreeHead(bad as never), false);
    }
  });

  test("tx and tree-head signatures are domain-separated", () => {
    // A tx signature over the same key cannot pass as a tree-head signature, and vice versa.
    const tx = signTx({ type: "a.b", payload: {}, signer: node1.keyId, nonce: "0".repeat(16), createdAt: 0 }, node1);
    const sth = signTreeHead(head, node1);
    assert.equal(verifyTreeHead({ ...sth, sig: tx.sig }), false);
    assert.equal(verifyTxSignature({ ...tx, sig: sth.sig }, txId(tx)), false);
  });

  test("signTreeHead rejects malformed heads", () => {
    for (const bad of [{ size: 1.5 }, { root: "ab" }, { height: -1 }, { stateDigest: 0 }, { time: "now" }]) {
      assert.throws(
        () => signTreeHead({ ...head, ...bad } as TreeHead, node1),
        (e: unknown) => e instanceof LedgerError && e.code === "bad-tree-head",
      );
    }
  });
});

describe("parseSignedTreeHead", () => {
  const good = (): Record<string, unknown> => JSON.parse(JSON.stringify(signTreeHead(head, node1)));

  test("accepts a signed tree head from JSON", () => {
    const result = parseSignedTreeHead(good());
    assert.ok(result.ok);
    assert.equal(verifyTreeHead(result.sth), true);
  });

  const cases: [string, (s: Record<string, unknown>) => unknown, RegExp][] = [
    ["not an object", () => 5, /^sth: must be a JSON object$/],
    ["unknown field", (s) => ({ ...s, extra: true }), /^sth: unknown field "extra"$/],
    ["missing sig", ({ sig: _, ...s }) => s, /^sig: missing$/],
    ["size negative", (s) => ({ ...s, size: -1 }), /^size: /],
    ["height fractional", (s) => ({ ...s, height: 0.5 }), /^height: /],
    ["time a string", (s) => ({ ...s, time: "0" }), /^time: /],
    ["root upper case", (s) => ({ ...s, root: "AB".repeat(32) }), /^root: /],
    ["stateDigest short", (s) => ({ ...s, stateDigest: "ab" }), /^stateDigest: /],
    ["signer not hex", (s) => ({ ...s, signer: "x".repeat(64) }), /^signer: /],
    ["sig too short", (s) => ({ ...s, sig: "AA" }), /^sig: /],
  ];
  for (const [what, mutate, expected] of cases) {
    test(`rejects ${what}`, () => {
      const result = parseSignedTreeHead(mutate(good()));
      assert.equal(result.ok, false);
      assert.match(result.ok ? "" : result.error, expected);
    });
  }
});
