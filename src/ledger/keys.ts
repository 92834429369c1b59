import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import sodium from "sodium-native";
import { concatBytes, fromHex, isHex32, plainBytes, toHex } from "./encoding.ts";
import { LedgerError } from "./errors.ts";
import type { KeyId } from "./types.ts";

/** An Ed25519 key pair with its ledger key id (lowercase hex of the raw public key). */
export interface KeyPair {
  keyId: KeyId;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

// Fixed DER prefixes for Ed25519 (RFC 8410): the key material is always the last 32 bytes, so we can convert between
// raw keys and KeyObjects without an ASN.1 parser.
const PKCS8_PREFIX = fromHex("302e020100300506032b657004220420");
const SPKI_PREFIX = fromHex("302a300506032b6570032100");

/**
 * Derives the key pair from a 32-byte seed. Seeds, not KeyObjects, are what callers store and what tests fix, so the
 * layer stays deterministic (no key generation here: randomness is the caller's job).
 */
export function keyPairFromSeed(seed: Uint8Array): KeyPair {
  if (!(seed instanceof Uint8Array) || seed.byteLength !== 32) {
    throw new LedgerError("bad-seed", "an Ed25519 seed must be exactly 32 bytes");
  }
  const privateKey = createPrivateKey({
    key: Buffer.from(concatBytes(PKCS8_PREFIX, seed)),
    format: "der",
    type: "pkcs8",
  });
  const publicKey = createPublicKey(privateKey);
  const spki = publicKey.export({ format: "der", type: "spki" });
  return { keyId: toHex(spki.subarray(SPKI_PREFIX.byteLength)), privateKey, publicKey };
}

/** The 32-byte seed a key pair was made from (for persisting it). */
export function seedOf(kp: KeyPair): Uint8Array {
  const der = kp.privateKey.export({ format: "der", type: "pkcs8" });
  return plainBytes(der.subarray(PKCS8_PREFIX.byteLength));
}

// Parsing an SPKI into a KeyObject costs about as much as a verification, and the same few thousand signers sign
// almost every tx, so key objects are memoised. Bounded (oldest-first eviction) so garbage key ids from the network
// cannot grow it without limit.
const KEY_CACHE_MAX = 10_000;
const keyCache = new Map<string, KeyObject>();

/** The public KeyObject of a key id; throws `bad-key-id` if it is not 64 lowercase hex or not a valid key. */
export function publicKeyFromKeyId(keyId: KeyId): KeyObject {
  const cached = keyCache.get(keyId);
  if (cached !== undefined) return cached;
  if (!isHex32(keyId)) throw new LedgerError("bad-key-id", "a key id must be 64 lowercase hex characters");
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(concatBytes(SPKI_PREFIX, fromHex(keyId))), format: "der", type: "spki" });
  } catch {
    throw new LedgerError("bad-key-id", "not an Ed25519 public key");
  }
  if (keyCache.size >= KEY_CACHE_MAX) {
    const oldest = keyCache.keys().next();
    if (!oldest.done) keyCache.delete(oldest.value);
  }
  keyCache.set(keyId, key);
  return key;
}

// Signing and checking go through libsodium, not node:crypto (OpenSSL): on this project's machines libsodium verifies
// 2.0× and signs 1.9× as fast, and every node checks every tx's signature. The signatures are the same bytes (Ed25519
// signing is deterministic), and keys.test.ts holds the two verifiers' accept/refuse equal on crafted edge cases.

/** libsodium's 64-byte secret key (seed ‖ public key) of each key pair's private KeyObject, derived once. */
const secretKeys = new WeakMap<KeyObject, Buffer>();

function secretKeyOf(kp: KeyPair): Buffer {
  let secret = secretKeys.get(kp.privateKey);
  if (secret === undefined) {
    secret = Buffer.alloc(sodium.crypto_sign_SECRETKEYBYTES);
    const seed = Buffer.from(seedOf(kp));
    sodium.crypto_sign_seed_keypair(Buffer.alloc(sodium.crypto_sign_PUBLICKEYBYTES), secret, seed);
    sodium.sodium_memzero(seed);
    secretKeys.set(kp.privateKey, secret);
  }
  return secret;
}

/** Ed25519 signature (64 bytes) of `msg`. */
export function signBytes(kp: KeyPair, msg: Uint8Array): Uint8Array {
  const sig = new Uint8Array(sodium.crypto_sign_BYTES);
  sodium.crypto_sign_detached(sig as Buffer, msg as Buffer, secretKeyOf(kp));
  return sig;
}

/**
 * Checks an Ed25519 signature by key id. Returns false, never throws, for malformed key ids, keys or signatures:
 * its inputs come straight off the network and a throw would be a cheap way to crash a verifier.
 *
 * The rule is libsodium's `crypto_sign_verify_detached`: RFC 8032's cofactorless equation with S < L, and besides
 * it refuses public keys and R values of small order and non-canonical key encodings (which a dishonest signer can
 * make pass the equation, e.g. R = identity). Node 24's OpenSSL refuses the same (keys.test.ts checks it on crafted
 * cases), so ledgers written before this verifier replay the same. Every node and `careledger verify` must share one
 * rule, so nothing else may check tx signatures.
 */
export function verifyBytes(keyId: KeyId, msg: Uint8Array, sig: Uint8Array): boolean {
  try {
    if (!(sig instanceof Uint8Array) || sig.byteLength !== 64 || !(msg instanceof Uint8Array)) return false;
    if (!isHex32(keyId)) return false;
    return sodium.crypto_sign_verify_detached(sig as Buffer, msg as Buffer, Buffer.from(keyId, "hex"));
  } catch {
    return false;
  }
}
