import assert from "node:assert/strict";
import { test } from "node:test";
import { zstdCompressSync } from "node:zlib";
import { packTxs, txsText } from "./block-txs.ts";
import { StoreError } from "./errors.ts";

test("packTxs and txsText round-trip any JSON text, non-ASCII included; schema-3 text passes through", () => {
  const json = JSON.stringify([{ tx: { payload: { note: "Zoë — ü ✓ 𝄞", n: [1, 2, 3] } }, id: "a".repeat(64) }]);
  assert.equal(txsText(packTxs(json), 7), json);
  assert.equal(txsText(json, 7), json);
  assert.equal(txsText(packTxs("[]"), 0), "[]");
});

test("a stored value that is not a zstd frame, or that inflates past the limit, is a StoreError naming the block", () => {
  const corrupt = (value: unknown, why: RegExp) =>
    assert.throws(
      () => txsText(value, 42),
      (e: unknown) =>
        e instanceof StoreError && e.code === "corrupt" && /^block 42: /.test(e.message) && why.test(e.message),
    );
  corrupt(new Uint8Array([1, 2, 3, 4, 5]), /do not decompress/);
  const packed = packTxs(JSON.stringify(["x".repeat(1000)]));
  corrupt(packed.subarray(0, packed.byteLength - 3), /do not decompress/);
  // 80 MiB of zeros compress to a few KiB: refused, not allocated.
  corrupt(zstdCompressSync(Buffer.alloc(80 * 1024 * 1024)), /do not decompress/);
  corrupt(12, /neither JSON text nor a zstd frame/);
  corrupt(null, /neither JSON text nor a zstd frame/);
});
