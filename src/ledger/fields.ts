// Shared strict-envelope checks for parse functions. Not re-exported: an implementation detail of tx.ts and sth.ts.

/** True for objects made by JSON.parse or `{}` / Object.create(null): not arrays, class instances or boxed values. */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** A short, printable rendering of an untrusted field name for error messages. */
function showKey(key: string): string {
  return JSON.stringify(key.length > 40 ? `${key.slice(0, 40)}…` : key);
}

/**
 * Checks `input` is a plain object with exactly `fields` as its own enumerable keys. Returns a one-line error naming
 * the first offending field, or undefined.
 */
export function exactFields(input: unknown, fields: readonly string[], what: string): string | undefined {
  if (!isPlainObject(input)) return `${what}: must be a JSON object`;
  const keys = Object.keys(input);
  for (const key of keys) {
    if (!fields.includes(key)) return `${what}: unknown field ${showKey(key)}`;
  }
  if (keys.length !== fields.length) {
    for (const field of fields) if (!Object.hasOwn(input, field)) return `${field}: missing`;
  }
  return undefined;
}

export function isSafeCount(n: unknown): n is number {
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
}

/** Exactly the unpadded base64url of 64 bytes (an Ed25519 signature): 86 chars, last one with zero trailing bits. */
export const SIG64_RE = /^[A-Za-z0-9_-]{85}[AQgw]$/;
