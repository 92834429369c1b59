import canonicalize from "canonicalize";
import { utf8 } from "./encoding.ts";
import { LedgerError } from "./errors.ts";

/**
 * Deepest nesting accepted. A fixed limit keeps validity deterministic: without it a deeply nested payload would be
 * rejected or not depending on each node's stack size. It also catches cycles.
 */
export const MAX_JSON_DEPTH = 100;

/** Thrown-from-inside signal that the caller's size budget ran out; converted by the caller. */
class BudgetExceeded extends Error {}

type Path = (string | number)[];

/** Throws naming where the problem is, e.g. `payload.rules[2].period: undefined is not JSON`. */
function fail(path: Path, why: string): never {
  const where = path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
  throw new LedgerError("not-canonicalisable", `${where}: ${why}`);
}

/**
 * Walks `value` and throws unless it is plain JSON data: null, booleans, finite numbers, well-formed strings,
 * Arrays without holes and objects whose prototype is Object.prototype or null. We check before calling
 * `canonicalize` because that package silently maps undefined/functions to null or drops them, follows `toJSON`
 * (so a Date would hash as its string), emits `[1,,2]` for sparse arrays and throws plain Errors. Returns a lower
 * bound on the UTF-8 size of the canonical form, used to reject oversized input before serialising it.
 */
function check(value: unknown, path: Path, budget: number): number {
  switch (typeof value) {
    case "string":
      if (!value.isWellFormed()) fail(path, "string contains a lone surrogate");
      return value.length + 2;
    case "number":
      if (!Number.isFinite(value)) fail(path, `${value} is not a JSON number`);
      return 1;
    case "boolean":
      return 4;
    case "object": {
      if (value === null) return 4;
      if (path.length > MAX_JSON_DEPTH) fail(path, `nested deeper than ${MAX_JSON_DEPTH} levels (or circular)`);
      let size = 2;
      if (Array.isArray(value)) {
        if (Object.getPrototypeOf(value) !== Array.prototype) fail(path, "not a plain Array");
        for (let i = 0; i < value.length; i++) {
          const item: unknown = value[i];
          if (item === undefined) fail([...path, i], "undefined (or an array hole) is not JSON");
          path.push(i);
          size += check(item, path, budget - size) + 1;
          path.pop();
          if (size > budget) throw new BudgetExceeded();
        }
        return size;
      }
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        fail(path, `${(value as object).constructor?.name ?? "object"} is not a plain object`);
      }
      const obj = value as Record<string, unknown>;
      for (const key of Object.keys(obj)) {
        if (!key.isWellFormed()) fail(path, "key contains a lone surrogate");
        const item = obj[key];
        if (item === undefined) fail([...path, key], "undefined is not JSON");
        path.push(key);
        size += check(item, path, budget - size) + key.length + 4;
        path.pop();
        if (size > budget) throw new BudgetExceeded();
      }
      return size;
    }
    default:
      return fail(path, `${typeof value} is not JSON`);
  }
}

/**
 * RFC 8785 (JCS) canonical JSON text. Everything signed or hashed goes through this so every node produces the same
 * bytes. Throws `LedgerError("not-canonicalisable")` naming the offending path for anything that is not plain JSON.
 */
export function canonicalJson(value: unknown): string {
  check(value, ["value"], Number.POSITIVE_INFINITY);
  return serialise(value);
}

/** UTF-8 bytes of `canonicalJson(value)`. */
export function canonicalBytes(value: unknown): Uint8Array {
  return utf8(canonicalJson(value));
}

/**
 * Like `canonicalJson`, but gives up with `undefined` as soon as the output is certain to exceed `maxBytes` UTF-8
 * bytes, so an oversized input costs a cheap walk instead of a full serialisation. Callers still check the exact size.
 * `label` names the root in error messages.
 */
export function canonicalJsonWithin(value: unknown, maxBytes: number, label = "value"): string | undefined {
  try {
    check(value, [label], maxBytes);
  } catch (error) {
    if (error instanceof BudgetExceeded) return undefined;
    throw error;
  }
  return serialise(value);
}

function serialise(value: unknown): string {
  try {
    const text = canonicalize(value);
    if (typeof text === "string") return text;
  } catch (error) {
    throw new LedgerError("not-canonicalisable", `value: ${(error as Error).message}`);
  }
  throw new LedgerError("not-canonicalisable", "value: not JSON");
}
