import assert from "node:assert/strict";
import { test } from "node:test";
import { deflateRawSync, inflateRawSync } from "node:zlib";
import { canonicalJson } from "../ledger/canonical.ts";
import { sha256Hex } from "../ledger/hash.ts";
import { parseSignedTx, signTx, txId } from "../ledger/tx.ts";
import type { SignedTx } from "../ledger/types.ts";
import { MAX_BATCH_TXS, openBatch, sealBatch } from "./etcd-envelope.ts";
import { fakeTx, keyA, keyB } from "./etcd-test-helpers.ts";
import { OrdererError } from "./orderer.ts";

const MAX = 64 * 1024;

test("a sealed batch is canonical JSON under the hash of its body, and opens to what was sealed", () => {
  const txs = [fakeTx(1), fakeTx(2)];
  const sealed = sealBatch(keyA, 1234, txs, MAX);
  const envelope = JSON.parse(sealed.value.toString());
  assert.equal(sealed.value.toString(), canonicalJson(envelope));
  assert.deepEqual(Object.keys(envelope), ["proposer", "sig", "time", "txs", "v"]);
  assert.equal(sealed.id, sha256Hex(canonicalJson({ v: 1, proposer: keyA.keyId, time: 1234, txs })));
  assert.deepEqual(openBatch(sealed.id, sealed.value, MAX), {
    ok: true,
    // These test txs are not well-formed txs (sig "x"): nothing parsed, the node drops them.
    batch: { id: sealed.id, proposer: keyA.keyId, time: 1234, txs, parsed: [undefined, undefined] },
  });
});

test("signed txs: sealing parsed txs or plain copies gives the same bytes; opening parses each tx once, with its id", () => {
  const txs = [1, 2, 3].map((n) =>
    signTx(
      { type: "t.x", payload: { n, note: "é" }, signer: keyB.keyId, nonce: `${n}`.padStart(16, "0"), createdAt: n },
      keyB,
    ),
  );
  const parsed = txs.map((tx) => {
    const p = parseSignedTx(JSON.parse(JSON.stringify(tx)));
    assert.ok(p.ok);
    return p;
  });
  // Sealing the parsed objects (fields in another order) and plain copies gives the same canonical bytes.
  const fromParsed = sealBatch(
    keyA,
    99,
    parsed.map((p) => p.tx),
    MAX,
  );
  const fromPlain = sealBatch(keyA, 99, structuredClone(txs), MAX);
  assert.equal(fromParsed.value.toString(), fromPlain.value.toString());
  assert.equal(fromParsed.id, fromPlain.id);
  const opened = openBatch(fromParsed.id, fromParsed.value, MAX);
  assert.ok(opened.ok);
  assert.deepEqual(
    opened.batch.parsed.map((p) => p?.id),
    txs.map((tx) => txId(tx)),
  );
  assert.deepEqual(
    opened.batch.parsed.map((p) => p?.tx),
    txs,
  );
  // A malformed tx between good ones: the batch opens, that one is not parsed.
  const mixed = sealBatch(keyA, 100, [txs[0], fakeTx(7), txs[1]] as SignedTx[], MAX);
  const openedMixed = openBatch(mixed.id, mixed.value, MAX);
  assert.ok(openedMixed.ok);
  assert.deepEqual(
    openedMixed.batch.parsed.map((p) => p?.id),
    [txId(txs[0] as SignedTx), undefined, txId(txs[1] as SignedTx)],
  );
});

test("openBatch refuses every altered or malformed envelope with a stable reason", () => {
  const sealed = sealBatch(keyA, 1234, [fakeTx(1)], MAX);
  const env = JSON.parse(sealed.value.toString());
  const reseal = (e: object) => {
    const { sig: _sig, ...body } = e as { sig: string };
    const text = canonicalJson(e);
    return { id: sha256Hex(canonicalJson(body)), value: Buffer.from(text) };
  };
  const cases: [string, { id: string; value: Buffer }][] = [
    ["oversized", { id: sealed.id, value: Buffer.alloc(MAX + 1, 0x20) }],
    ["bad-key", { id: "ABC", value: sealed.value }],
    ["not-json", { id: sealed.id, value: Buffer.from("{") }],
    ["not-json", { id: sealed.id, value: Buffer.from([0xff, 0xfe]) }],
    ["bad-shape", { id: sealed.id, value: Buffer.from(canonicalJson({ ...env, extra: 1 })) }],
    ["bad-shape", { id: sealed.id, value: Buffer.from("[]") }],
    ["bad-version", reseal({ ...env, v: 2 })],
    ["bad-shape", reseal({ ...env, time: -1 })],
    ["bad-shape", reseal({ ...env, txs: "x" })],
    ["too-many-txs", reseal({ ...env, txs: new Array(MAX_BATCH_TXS + 1).fill(0) })],
    ["not-canonical", { id: sealed.id, value: Buffer.from(JSON.stringify(env, null, 1)) }],
    ["not-canonical", reseal({ ...env, txs: [{ 'a"b': 1 }] })],
    ["wrong-key", { id: "0".repeat(64), value: sealed.value }],
    ["bad-signature", reseal({ ...env, time: 1235 })],
    ["bad-signature", reseal({ ...env, proposer: keyB.keyId })],
  ];
  for (const [reason, { id, value }] of cases) {
    assert.deepEqual(openBatch(id, value, MAX), { ok: false, reason }, `expected ${reason}`);
  }
});

test("sealBatch refuses batches over the byte or tx limits", () => {
  assert.throws(
    () => sealBatch(keyA, 1, [fakeTx(1, MAX)], MAX),
    (e: unknown) => e instanceof OrdererError && e.code === "too-large",
  );
  assert.throws(
    () => sealBatch(keyA, 1, new Array(MAX_BATCH_TXS + 1).fill(fakeTx(1)), 64 * 1024 * 1024),
    (e: unknown) => e instanceof OrdererError && e.code === "too-large",
  );
});

test("a compressed batch is the envelope deflated behind a 0x00 byte, smaller, and opens to the same batch", () => {
  const txs = [1, 2, 3, 4, 5, 6, 7, 8].map((n) =>
    signTx(
      {
        type: "t.x",
        payload: { n, note: "a".repeat(40) },
        signer: keyB.keyId,
        nonce: `${n}`.padStart(16, "0"),
        createdAt: n,
      },
      keyB,
    ),
  );
  const plain = sealBatch(keyA, 77, txs, MAX);
  const packed = sealBatch(keyA, 77, txs, MAX, { compress: true });
  assert.equal(packed.id, plain.id, "the key is the hash of the body, however it is stored");
  assert.equal(packed.value[0], 0);
  assert.ok(packed.value.byteLength < plain.value.byteLength, `${packed.value.byteLength} < ${plain.value.byteLength}`);
  assert.deepEqual(inflateRawSync(packed.value.subarray(1)), plain.value);
  assert.deepEqual(openBatch(packed.id, packed.value, MAX), openBatch(plain.id, plain.value, MAX));
  assert.ok(openBatch(packed.id, packed.value, MAX).ok);
});

test("openBatch refuses a compressed value that is not deflate, inflates past the limit, or holds a bad envelope", () => {
  const txs = [fakeTx(1), fakeTx(2)];
  const plain = sealBatch(keyA, 5, txs, MAX);
  const deflated = (bytes: Uint8Array) => Buffer.concat([Buffer.of(0), deflateRawSync(bytes)]);
  const cases: [string, Uint8Array][] = [
    ["bad-deflate", Buffer.from([0, 1, 2, 3, 4, 5])],
    ["bad-deflate", Buffer.of(0)],
    // A few hundred bytes that would inflate to 200 KB: stopped at the limit, never held whole.
    ["oversized", deflated(Buffer.alloc(200 * 1024, 0x20))],
    ["not-json", deflated(Buffer.from("not json"))],
    ["not-canonical", deflated(Buffer.from(plain.value.toString().replace('"v":1', '"v": 1')))],
  ];
  for (const [reason, value] of cases) {
    assert.ok(value.byteLength < MAX);
    assert.deepEqual(openBatch(plain.id, value, MAX), { ok: false, reason }, `expected ${reason}`);
  }
  // Deflated, the same envelope under another key is still the wrong key.
  const other = sealBatch(keyA, 6, txs, MAX);
  assert.deepEqual(openBatch(other.id, deflated(plain.value), MAX), { ok: false, reason: "wrong-key" });
});
