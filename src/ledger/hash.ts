import { hash } from "node:crypto";
import { plainBytes } from "./encoding.ts";

/** SHA-256 of bytes, or of a string's UTF-8 encoding. */
export function sha256(data: Uint8Array | string): Uint8Array {
  return plainBytes(hash("sha256", data, "buffer"));
}

/** SHA-256 as lowercase hex; hashes strings as UTF-8 without an intermediate byte copy. */
export function sha256Hex(data: Uint8Array | string): string {
  return hash("sha256", data, "hex");
}
