import assert from "node:assert/strict";
import { test } from "node:test";
import { toHex } from "./encoding.ts";
import { sha256, sha256Hex } from "./hash.ts";

test("sha256 matches FIPS 180-2 test vectors", () => {
  assert.equal(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  assert.equal(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  assert.equal(
    sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
});

test("strings hash as UTF-8; bytes and hex forms agree", () => {
  assert.equal(sha256Hex("é"), sha256Hex(Uint8Array.of(0xc3, 0xa9)));
  const digest = sha256(Uint8Array.of(1, 2, 3));
  assert.equal(digest.byteLength, 32);
  assert.equal(Object.getPrototypeOf(digest), Uint8Array.prototype);
  assert.equal(toHex(digest), sha256Hex(Uint8Array.of(1, 2, 3)));
});
