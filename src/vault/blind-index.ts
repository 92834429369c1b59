import { createHmac, hash } from "node:crypto";

/** Bytes of HMAC-SHA256 kept per blind-index value: 128 bits, ample against collisions at any realistic size. */
export const BLIND_HASH_BYTES = 16;

const BLOCK = 64;
/** Longest message hashed through the preallocated buffer; longer ones take `createHmac`. */
const FAST_MAX_BYTES = 4096;

/**
 * Truncated HMAC-SHA256 (RFC 2104) under a 32-byte key, computed with two one-shot `crypto.hash` calls over
 * preallocated `key⊕ipad ‖ message` and `key⊕opad ‖ inner` buffers. Same bytes as `createHmac`, at about half its
 * cost: `createHmac` builds a native object per call, and the vault hashes every name prefix, code and reference
 * it indexes (tens per resource). Not re-entrant across threads; one instance per vault.
 */
export class BlindHasher {
  private readonly key: Buffer;
  private readonly inner = Buffer.alloc(BLOCK + FAST_MAX_BYTES);
  private readonly outer = Buffer.alloc(BLOCK + 32);

  constructor(key: Buffer) {
    if (key.length !== 32) throw new Error("a blind-index key is 32 bytes");
    this.key = Buffer.from(key);
    for (let i = 0; i < BLOCK; i++) {
      const k = i < key.length ? (key[i] as number) : 0;
      this.inner[i] = k ^ 0x36;
      this.outer[i] = k ^ 0x5c;
    }
  }

  /** The first 16 bytes of HMAC-SHA256(key, UTF-8 of `message`). */
  digest(message: string): Buffer {
    // A UTF-16 unit is at most 3 UTF-8 bytes, so this bound guarantees the write below is never truncated.
    if (message.length * 3 > FAST_MAX_BYTES) {
      return createHmac("sha256", this.key).update(message, "utf8").digest().subarray(0, BLIND_HASH_BYTES);
    }
    const n = this.inner.write(message, BLOCK, "utf8");
    // "binary" (latin1) output strings map byte-for-byte into the outer buffer without allocating a Buffer in between.
    this.outer.write(hash("sha256", this.inner.subarray(0, BLOCK + n), "binary"), BLOCK, "latin1");
    return Buffer.from(hash("sha256", this.outer, "binary").slice(0, BLIND_HASH_BYTES), "latin1");
  }
}
