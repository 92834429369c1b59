import assert from "node:assert/strict";
import { createHash, createPublicKey, sign as opensslSign, verify as opensslVerify } from "node:crypto";
import { describe, test } from "node:test";
import fc from "fast-check";
import sodium from "sodium-native";
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
    // The cache serves node:crypto's users (JOSE tokens); ledger checks go through libsodium and need no cache.
    assert.equal(opensslVerify(null, msg, publicKeyFromKeyId(kp.keyId), sig), true);
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

  test("signatures are node:crypto's bytes, and both accept and refuse the same honest and altered ones", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ maxLength: 300 }),
        fc.nat(),
        (seed, msg, flip) => {
          const kp = keyPairFromSeed(seed);
          const sig = signBytes(kp, msg);
          assert.deepEqual(sig, new Uint8Array(opensslSign(null, msg, kp.privateKey)));
          assert.equal(verifyBytes(kp.keyId, msg, sig), true);
          const bit = flip % (sig.byteLength * 8);
          const altered = sig.slice();
          altered[bit >> 3] = (altered[bit >> 3] as number) ^ (1 << (bit & 7));
          assert.equal(verifyBytes(kp.keyId, msg, altered), false);
          assert.equal(opensslVerify(null, msg, kp.publicKey, altered), false);
        },
      ),
      { numRuns: 200 },
    );
  });

  test("accepts and refuses exactly what node:crypto does on crafted edge cases (small order, mixed order, S ≥ L)", () => {
    // The curve's eight points of small order (little-endian encodings), and the group order L.
    const SMALL_ORDER = [
      "0100000000000000000000000000000000000000000000000000000000000000",
      "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
      "0000000000000000000000000000000000000000000000000000000000000000",
      "0000000000000000000000000000000000000000000000000000000000000080",
      "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
      "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
      "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
      "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    ].map(fromHex);
    const L = 2n ** 252n + 27742317777372353535851937790883648493n;
    const littleEndian = (bytes: Uint8Array) => bytes.reduceRight((n, b) => (n << 8n) | BigInt(b), 0n);
    const scalarBytes = (n: bigint) => Uint8Array.from({ length: 32 }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn));
    const hram = (r: Uint8Array, a: Uint8Array, m: Uint8Array) =>
      littleEndian(createHash("sha512").update(r).update(a).update(m).digest()) % L;
    const baseTimes = (n: bigint) => {
      const out = Buffer.alloc(32);
      sodium.crypto_scalarmult_ed25519_base_noclamp(out, Buffer.from(scalarBytes(n % L)));
      return new Uint8Array(out);
    };
    const seed = new Uint8Array(32).fill(5);
    const honest = keyPairFromSeed(seed);
    const h = createHash("sha512").update(seed).digest();
    h[0] = (h[0] as number) & 248;
    h[31] = ((h[31] as number) & 127) | 64;
    const a = littleEndian(h.subarray(0, 32));
    const A = fromHex(honest.keyId);
    const cases: { key: Uint8Array; msg: Uint8Array; sig: Uint8Array }[] = [];
    const sig = (r: Uint8Array, s: bigint) => Uint8Array.from([...r, ...scalarBytes(s)]);
    for (let m = 0; m < 16; m++) {
      const msg = Uint8Array.of(m);
      const r = BigInt(1000 + m);
      const R = baseTimes(r);
      const k = hram(R, A, msg);
      cases.push({ key: A, msg, sig: sig(R, (r + k * a) % L) }); // honest
      cases.push({ key: A, msg, sig: sig(R, ((r + k * a) % L) + L) }); // S ≥ L
      for (const T of SMALL_ORDER) {
        cases.push({ key: A, msg, sig: sig(T, (hram(T, A, msg) * a) % L) }); // R of small order, [S]B − [k]A = identity
        cases.push({ key: T, msg, sig: sig(R, r) }); // key of small order
        cases.push({ key: T, msg, sig: sig(T, 0n) });
        const mixed = Buffer.alloc(32);
        sodium.crypto_core_ed25519_add(mixed, Buffer.from(A), Buffer.from(T)); // key of mixed order
        cases.push({ key: new Uint8Array(mixed), msg, sig: sig(R, (r + hram(R, mixed, msg) * a) % L) });
      }
    }
    const spki = (key: Uint8Array) =>
      createPublicKey({ key: Buffer.concat([fromHex("302a300506032b6570032100"), key]), format: "der", type: "spki" });
    let accepted = 0;
    for (const c of cases) {
      const ours = verifyBytes(toHex(c.key), c.msg, c.sig);
      assert.equal(ours, opensslVerify(null, c.msg, spki(c.key), c.sig), `case ${toHex(c.key)} ${toHex(c.sig)}`);
      if (ours) accepted++;
    }
    // The honest signatures, and mixed-order keys where k happens to be a multiple of the torsion's order.
    assert.ok(accepted >= 16 && accepted < cases.length / 4, `accepted ${accepted} of ${cases.length}`);
  });
});
