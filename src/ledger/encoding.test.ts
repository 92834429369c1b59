import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { bytesEqual, concatBytes, fromBase64Url, fromHex, isHex32, toBase64Url, toHex } from "./encoding.ts";
import { LedgerError } from "./errors.ts";

const isCode = (code: string) => (e: unknown) => e instanceof LedgerError && e.code === code;

describe("hex", () => {
  test("round-trips and returns plain Uint8Arrays", () => {
    const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    const hex = toHex(bytes);
    assert.equal(hex.length, 512);
    assert.equal(hex.slice(0, 8), "00010203");
    assert.equal(hex.slice(-4), "feff");
    assert.deepEqual(fromHex(hex), bytes);
    assert.equal(Object.getPrototypeOf(fromHex("00")), Uint8Array.prototype);
    assert.deepEqual(fromHex(""), new Uint8Array(0));
  });

  test("toHex respects views into larger buffers", () => {
    const buf = Uint8Array.of(1, 2, 3, 4);
    assert.equal(toHex(buf.subarray(1, 3)), "0203");
  });

  for (const bad of ["0", "abc", "AB", "0g", " 00", "00 ", "0x00", "zz"]) {
    test(`fromHex rejects ${JSON.stringify(bad)}`, () => {
      assert.throws(() => fromHex(bad), isCode("bad-hex"));
    });
  }

  test("isHex32", () => {
    assert.equal(isHex32("ab".repeat(32)), true);
    assert.equal(isHex32("AB".repeat(32)), false);
    assert.equal(isHex32("ab".repeat(31)), false);
    assert.equal(isHex32(`${"ab".repeat(32)}\n`), false);
    assert.equal(isHex32(42), false);
  });
});

describe("base64url", () => {
  test("round-trips every length without padding", () => {
    for (let n = 0; n < 70; n++) {
      const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 255);
      const s = toBase64Url(bytes);
      assert.doesNotMatch(s, /[=+/]/);
      assert.deepEqual(fromBase64Url(s), bytes);
    }
  });

  const bad = ["A", "AB==", "AB=", "+/+/", "ab cd", "abc\n", "AB", "AQ=", "ABCDE"];
  for (const s of bad) {
    test(`fromBase64Url rejects ${JSON.stringify(s)}`, () => {
      // "AB" is rejected because its trailing bits are not zero ("AA" is the canonical spelling of 0x00).
      assert.throws(() => fromBase64Url(s), isCode("bad-base64url"));
    });
  }

  test("accepts the canonical spellings", () => {
    assert.deepEqual(fromBase64Url("AA"), Uint8Array.of(0));
    assert.deepEqual(fromBase64Url("_-8"), Uint8Array.of(0xff, 0xef));
  });
});

test("concatBytes and bytesEqual", () => {
  assert.deepEqual(concatBytes(Uint8Array.of(1), new Uint8Array(0), Uint8Array.of(2, 3)), Uint8Array.of(1, 2, 3));
  assert.equal(bytesEqual(Uint8Array.of(1, 2), Buffer.from([1, 2])), true);
  assert.equal(bytesEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 3)), false);
  assert.equal(bytesEqual(Uint8Array.of(1), Uint8Array.of(1, 0)), false);
  assert.equal(bytesEqual("a", "a"), false);
});
