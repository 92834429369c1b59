import { hash } from "node:crypto";

/**
 * SHA-256 of bytes, or of a string's UTF-8 encoding. Goes through a "binary" (latin1) digest string because, in Node 24,
 * `crypto.hash(..., "buffer")` costs about three times as much for small inputs, and Merkle hashing is hot.
 */
export function sha256(data: Uint8Array | string): Uint8Array {
  const digest = hash("sha256", data, "binary");
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = digest.charCodeAt(i);
  return out;
}

/** SHA-256 as lowercase hex; hashes strings as UTF-8 without an intermediate byte copy. */
export function sha256Hex(data: Uint8Array | string): string {
  return hash("sha256", data, "hex");
}
