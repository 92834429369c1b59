import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { fromHex, toHex } from "./encoding.ts";
import { LedgerError } from "./errors.ts";
import { keyPairFromSeed, publicKeyFromKeyId, seedOf, signBytes, verifyBytes } from "./keys.ts";

// RFC 8032 §7.1 test vectors 1 and 2.
const VECTORS = [
  {
    seed: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    pub: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    msg: "",
    sig: "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
  },
  {
    seed: "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    pub: "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
    msg: "72",
    sig: "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
  },
];

describe("Ed25519 keys", () => {
  for (const [i, v] of VECTORS.entries()) {
    test(`RFC 8032 vector ${i + 1}: key id, signature, verification`, () => {
      const kp = keyPairFromSeed(fromHex(v.seed));
      assert.equal(kp.keyId, v.pub);
      assert.equal(toHex(seedOf(kp)), v.seed);
      assert.equal(toHex(signBytes(kp, fromHex(v.msg))), v.sig);
      assert.equal(verifyBytes(v.pub, fromHex(v.msg), fromHex(v.sig)), true);
      assert.equal(verifyBytes(v.pub, Uint8Array.of(1), fromHex(v.sig)), false);
    });
  }

  test("keyPairFromSeed rejects seeds that are not 32 bytes", () => {
    for (const seed of [new Uint8Array(31), new Uint8Array(33), "x".repeat(32)]) {
      assert.throws(
        () => keyPairFromSeed(seed as Uint8Array),
        (e: unknown) => e instanceof LedgerError && e.code === "bad-seed",
      );
    }
  });

  test("publicKeyFromKeyId caches and rejects malformed ids", () => {
    const id = VECTORS[0]?.pub as string;
    assert.equal(publicKeyFromKeyId(id), publicKeyFromKeyId(id));
    assert.throws(() => publicKeyFromKeyId(id.toUpperCase()), /bad-key-id|key id/);
    assert.throws(() => publicKeyFromKeyId("00"), /key id/);
  });

  test("keeps working beyond the cache bound", () => {
    const kp = keyPairFromSeed(new Uint8Array(32).fill(9));
    const msg = Uint8Array.of(1, 2, 3);
    const sig = signBytes(kp, msg);
    for (let i = 0; i < 10_050; i++) publicKeyFromKeyId(i.toString(16).padStart(64, "0"));
    assert.equal(verifyBytes(kp.keyId, msg, sig), true);
  });

  test("verifyBytes returns false, never throws, on garbage", () => {
    const kp = keyPairFromSeed(new Uint8Array(32).fill(1));
    const msg = Uint8Array.of(42);
    const sig = signBytes(kp, msg);
    assert.equal(verifyBytes(kp.keyId, msg, sig), true);
    const garbage: [unknown, unknown, unknown][] = [
      ["nothex", msg, sig],
      [kp.keyId.toUpperCase(), msg, sig],
      ["ff".repeat(32), msg, sig],
      [undefined, msg, sig],
      [kp.keyId, msg, sig.subarray(0, 63)],
      [kp.keyId, msg, new Uint8Array(64)],
      [kp.keyId, msg, "sig"],
      [kp.keyId, "msg", sig],
      [kp.keyId, msg, null],
    ];
    for (const [keyId, m, s] of garbage) {
      assert.equal(verifyBytes(keyId as string, m as Uint8Array, s as Uint8Array), false);
    }
  });

  test("a different key's signature does not verify", () => {
    const a = keyPairFromSeed(new Uint8Array(32).fill(2));
    const b = keyPairFromSeed(new Uint8Array(32).fill(3));
    const msg = Uint8Array.of(7);
    assert.notEqual(a.keyId, b.keyId);
    assert.equal(verifyBytes(b.keyId, msg, signBytes(a, msg)), false);
  });
});
