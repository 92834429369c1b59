/**
 * A 32-byte secret in a file, `{"kind": "<kind>", "key": "<64 hex>"}`, mode 0600: the vault's master key and the
 * network's NHS-number lookup key. Messages name the file and what it is meant to be, never the secret.
 */
import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";

export interface SecretFileKind {
  /** The `kind` field the file must carry. */
  kind: string;
  /** How messages call it ("vault key", "lookup key"). */
  what: string;
  /** How messages call a valid one ("CareLedger vault key"). */
  valid: string;
  fail: (message: string) => Error;
}

/**
 * Reads the secret; refuses a file that is not a regular file, that group or others can read, or that is not exactly
 * this kind of key. A missing file throws the ENOENT error of `statSync` (callers decide what that means).
 */
export function readSecretFile(path: string, k: SecretFileKind): Buffer {
  const stat = statSync(path);
  if (!stat.isFile()) throw k.fail(`${k.what} ${path} is not a regular file`);
  if ((Number(stat.mode) & 0o077) !== 0) {
    throw k.fail(`${k.what} ${path} is readable by group or others; run: chmod 600 ${path}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(readFileSync(path, "utf8"));
  } catch {
    throw k.fail(`${k.what} ${path} is not a ${k.valid} (not JSON)`);
  }
  const { kind, key } = (body ?? {}) as { kind?: unknown; key?: unknown };
  if (kind !== k.kind || typeof key !== "string" || !/^[0-9a-f]{64}$/.test(key)) {
    throw k.fail(`${k.what} ${path} is not a ${k.valid} (malformed)`);
  }
  return Buffer.from(key, "hex");
}

/**
 * Creates the file with a fresh secret: written to a temporary file (0600), fsynced, then linked into place, so a
 * crash never leaves half a key and an existing key is never replaced. Returns the secret, or `undefined` when the
 * file already existed (the caller decides whether that is an error or the file to read).
 */
export function createSecretFile(path: string, kind: string): Buffer | undefined {
  const secret = randomBytes(32);
  const body = `${JSON.stringify({ kind, key: secret.toString("hex") })}\n`;
  const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  const fd = openSync(tmp, "wx", 0o600);
  try {
    writeSync(fd, body);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, path);
    return secret;
  } catch (error) {
    secret.fill(0);
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return undefined;
    throw error;
  } finally {
    unlinkSync(tmp);
  }
}
