import { LedgerError } from "./errors.ts";

// Strict codecs: every value has exactly one accepted spelling, so a changed character can never decode to the same
// bytes (a bit flip in a signature or hash string is always visible) and no two nodes can disagree about validity.

const HEX_RE = /^(?:[0-9a-f]{2})*$/;
const HEX32_RE = /^[0-9a-f]{64}$/;
const B64URL_RE = /^[A-Za-z0-9_-]*$/;

/** A Buffer view of `bytes` without copying, to reach Node's fast codecs. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * A plain Uint8Array over the same memory. We hand out plain Uint8Arrays (not Buffers) so that callers comparing
 * with `assert.deepStrictEqual` against `new Uint8Array(...)` are not tripped up by the Buffer prototype.
 */
export function plainBytes(buf: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(buf) === Uint8Array.prototype
    ? buf
    : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Lowercase hex. */
export function toHex(bytes: Uint8Array): string {
  return asBuffer(bytes).toString("hex");
}

/** Lowercase, even-length hex only; anything else throws `bad-hex`. */
export function fromHex(hex: string): Uint8Array {
  if (typeof hex !== "string" || !HEX_RE.test(hex)) {
    throw new LedgerError("bad-hex", "expected an even-length string of lowercase hex digits");
  }
  return plainBytes(Buffer.from(hex, "hex"));
}

/** True iff `s` is the lowercase hex of exactly 32 bytes (a SHA-256 digest or a key id). */
export function isHex32(s: unknown): s is string {
  return typeof s === "string" && HEX32_RE.test(s);
}

/** base64url without padding (RFC 4648 §5), as used in JWS. */
export function toBase64Url(bytes: Uint8Array): string {
  return asBuffer(bytes).toString("base64url");
}

/**
 * Strict base64url: alphabet `A–Z a–z 0–9 - _`, no padding, no whitespace, and unused trailing bits must be zero
 * (checked by re-encoding), so each byte string has exactly one accepted encoding. Throws `bad-base64url`.
 */
export function fromBase64Url(s: string): Uint8Array {
  if (typeof s !== "string" || s.length % 4 === 1 || !B64URL_RE.test(s)) {
    throw new LedgerError("bad-base64url", "expected unpadded base64url");
  }
  const buf = Buffer.from(s, "base64url");
  if (buf.toString("base64url") !== s) {
    throw new LedgerError("bad-base64url", "non-canonical base64url (non-zero trailing bits)");
  }
  return plainBytes(buf);
}

/** Concatenates byte strings (used to build the exact signed and hashed messages). */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const p of parts) length += p.byteLength;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.byteLength;
  }
  return out;
}

/** Byte equality that tolerates any inputs (false for non-Uint8Arrays); only ever used on public data. */
export function bytesEqual(a: unknown, b: unknown): boolean {
  if (!(a instanceof Uint8Array) || !(b instanceof Uint8Array) || a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

const utf8Encoder = new TextEncoder();

/** UTF-8 bytes of a string. */
export function utf8(s: string): Uint8Array {
  return utf8Encoder.encode(s);
}
