import { utf8 } from "./encoding.ts";
import { LedgerError } from "./errors.ts";

// RFC 8785 (JSON Canonicalization Scheme) in one validating pass.
//
// Why not the `canonicalize` npm package directly: it is about 6× slower than JSON.stringify (it re-scans every
// string for lone surrogates in JS and recurses through JSON.stringify for each primitive and key), which made a 5 KB
// tx cost ~120 µs on the ingest hot path, and it silently maps undefined/functions to null or drops them, follows
// `toJSON` (a Date would hash as its string) and emits `[1,,2]` for sparse arrays. This walk validates and
// serialises at once. The tests check it byte-for-byte against `canonicalize` on random values and against the
// RFC 8785 reference vectors.
//
// The serialisation rules it relies on: keys sort by UTF-16 code units, which is what Array#sort does for strings;
// strings and numbers serialise exactly as ECMAScript JSON.stringify does for well-formed strings and finite numbers
// (RFC 8785 §3.2.2 is defined by reference to it).

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

// Characters that need escaping, plus surrogates (which need the well-formedness check). Most strings have none,
// and quoting them directly is several times cheaper than calling JSON.stringify.
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly the ones JSON must escape
const NEEDS_CARE_RE = /["\\\u0000-\u001f\ud800-\udfff]/;

function quote(s: string, path: Path): string {
  if (!NEEDS_CARE_RE.test(s)) return `"${s}"`;
  if (!s.isWellFormed()) fail(path, "string contains a lone surrogate");
  return JSON.stringify(s);
}

/** Own enumerable keys in UTF-16 order; skips the sort when already ordered, as input from canonical senders is. */
function sortedKeys(obj: object): string[] {
  const keys = Object.keys(obj);
  for (let i = 1; i < keys.length; i++) {
    if ((keys[i - 1] as string) > (keys[i] as string)) return keys.sort();
  }
  return keys;
}

/**
 * Accepts only plain JSON data: null, booleans, finite numbers, well-formed strings, Arrays without holes and
 * objects whose prototype is Object.prototype or null. `budget` bounds the output length in UTF-16 code units; since
 * UTF-8 never takes fewer bytes than UTF-16 code units, exceeding it proves the UTF-8 form is too large as well.
 */
function serialise(value: unknown, path: Path, budget: number, plainKeys = false): string {
  switch (typeof value) {
    case "string":
      return quote(value, path);
    case "number":
      if (!Number.isFinite(value)) fail(path, `${value} is not a JSON number`);
      return `${value}`; // ECMAScript Number::toString (-0 gives "0"), exactly what RFC 8785 §3.2.2.3 specifies
    case "boolean":
      return value ? "true" : "false";
    case "object": {
      if (value === null) return "null";
      if (path.length > MAX_JSON_DEPTH) fail(path, `nested deeper than ${MAX_JSON_DEPTH} levels (or circular)`);
      if (Array.isArray(value)) {
        if (Object.getPrototypeOf(value) !== Array.prototype) fail(path, "not a plain Array");
        let out = "[";
        for (let i = 0; i < value.length; i++) {
          const item: unknown = value[i];
          if (item === undefined) fail([...path, i], "undefined (or an array hole) is not JSON");
          path.push(i);
          out += i === 0 ? serialise(item, path, budget, plainKeys) : `,${serialise(item, path, budget, plainKeys)}`;
          path.pop();
          if (out.length > budget) throw new BudgetExceeded();
        }
        return `${out}]`;
      }
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        fail(path, `${(value as object).constructor?.name ?? "object"} is not a plain object`);
      }
      const obj = value as Record<string, unknown>;
      const keys = sortedKeys(obj);
      let out = "{";
      for (let i = 0; i < keys.length; i++) {
        const key = keys[i] as string;
        const item = obj[key];
        if (item === undefined) fail([...path, key], "undefined is not JSON");
        path.push(key);
        if (plainKeys && NEEDS_CARE_RE.test(key))
          fail(path, "object keys must not need escaping (quotes, backslashes, control characters)");
        out += `${i === 0 ? "" : ","}${quote(key, path)}:${serialise(item, path, budget, plainKeys)}`;
        path.pop();
        if (out.length > budget) throw new BudgetExceeded();
      }
      return `${out}}`;
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
  return serialise(value, ["value"], Number.POSITIVE_INFINITY);
}

/** UTF-8 bytes of `canonicalJson(value)`. */
export function canonicalBytes(value: unknown): Uint8Array {
  return utf8(canonicalJson(value));
}

/**
 * Like `canonicalJson`, but gives up with `undefined` as soon as the output is certain to exceed `maxBytes` UTF-8
 * bytes, so an oversized input costs at most about `maxBytes` of work. Callers still check the exact UTF-8 size.
 * `label` names the root in error messages. `plainKeys` refuses object keys that need escaping: V8's JSON.parse in
 * the Node we run can misread such keys after earlier parses (nodejs/node#63785), so stored txs must not have them.
 */
export function canonicalJsonWithin(
  value: unknown,
  maxBytes: number,
  label = "value",
  options: { plainKeys?: boolean } = {},
): string | undefined {
  try {
    return serialise(value, [label], maxBytes, options.plainKeys ?? false);
  } catch (error) {
    if (error instanceof BudgetExceeded) return undefined;
    throw error;
  }
}

/**
 * The length of `canonicalJson(value)` — its UTF-8 bytes too — for plain JSON whose strings are all printable ASCII
 * without `"` or `\\` (the caller knows, e.g. from a schema of such patterns): JSON.stringify writes the same
 * characters in another key order, natively, for a fraction of the cost. Batchers size their txs with it.
 */
export function canonicalLengthOfPlain(value: unknown): number {
  return JSON.stringify(value).length;
}
