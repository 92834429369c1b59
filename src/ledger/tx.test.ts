import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { canonicalBytes, canonicalJson } from "./canonical.ts";
import { concatBytes, fromBase64Url, fromHex, toBase64Url } from "./encoding.ts";
import { LedgerError } from "./errors.ts";
import { sha256Hex } from "./hash.ts";
import { keyPairFromSeed, verifyBytes } from "./keys.ts";
import {
  MAX_TX_BYTES,
  parseSignedTx,
  parseSignedTxWithText,
  signTx,
  signTxWithId,
  TX_SIGNING_PREFIX,
  txId,
  verifyTxSignature,
} from "./tx.ts";
import type { SignedTx, TxBody } from "./types.ts";

const kp = keyPairFromSeed(new Uint8Array(32).fill(11));
const other = keyPairFromSeed(new Uint8Array(32).fill(12));

function body(overrides: Partial<TxBody> = {}): TxBody {
  return {
    type: "consent.set",
    payload: { patient: "p-1", rule: { effect: "permit", purposes: ["TREAT"] } },
    signer: kp.keyId,
    nonce: "0123456789abcdef",
    createdAt: 1_700_000_000_000,
    ...overrides,
  };
}

function parseError(input: unknown): string {
  const result = parseSignedTx(input);
  assert.equal(result.ok, false, "expected a parse error");
  return result.ok ? "" : result.error;
}

describe("txId", () => {
  test("is SHA-256 of the canonical five-field body, ignoring sig and extra fields", () => {
    const b = body();
    const expected = sha256Hex(
      canonicalBytes({ type: b.type, payload: b.payload, signer: b.signer, nonce: b.nonce, createdAt: b.createdAt }),
    );
    assert.equal(txId(b), expected);
    assert.equal(txId({ ...b, sig: "whatever", extra: 1 } as TxBody), expected);
    assert.notEqual(txId({ ...b, nonce: "0123456789abcdee" }), expected);
  });

  test("works (via the generic path) for bodies parseSignedTx would reject", () => {
    const odd = body({ type: 'has "quotes"', createdAt: 1.5 });
    const { type, payload, signer, nonce, createdAt } = odd;
    assert.equal(txId(odd), sha256Hex(canonicalJson({ type, payload, signer, nonce, createdAt })));
  });

  test("the fast path equals the generic canonicalisation for arbitrary payloads", () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string(), fc.jsonValue()),
        fc.stringMatching(/^[a-z]{1,5}(\.[a-z-]{1,5}){1,3}$/),
        fc.nat(),
        (payload, type, createdAt) => {
          const b = body({ payload: payload as Record<string, unknown>, type, createdAt });
          const generic = sha256Hex(canonicalJson({ ...b }));
          assert.equal(txId(b), generic);
          const parsed = parseSignedTx({ ...b, sig: "A".repeat(86) });
          // parseSignedTx also refuses keys that need escaping; every other payload gets the same id.
          if (!parsed.ok) {
            assert.match(parsed.error, /keys must not need escaping/);
            return;
          }
          assert.equal(parsed.id, generic);
          // The signed text that comes with it is the canonical JSON of the whole tx, sig included.
          const withText = parseSignedTxWithText({ ...b, sig: "A".repeat(86) });
          assert.ok(withText.ok);
          assert.equal(withText.text, canonicalJson({ ...b, sig: "A".repeat(86) }));
          assert.equal(withText.id, generic);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("signTx / verifyTxSignature", () => {
  test("signs prefix || id bytes", () => {
    const tx = signTx(body(), kp);
    const id = txId(tx);
    assert.equal(verifyTxSignature(tx, id), true);
    assert.equal(verifyBytes(kp.keyId, concatBytes(TX_SIGNING_PREFIX, fromHex(id)), fromBase64Url(tx.sig)), true);
    assert.deepEqual(TX_SIGNING_PREFIX, new TextEncoder().encode("careledger/tx/v1\n"));
  });

  test("signTxWithId gives the tx signTx gives, and the id parseSignedTx computes", () => {
    const signed = signTxWithId(body({ payload: { text: 'é \u2028 "q"', n: [3, 1.5] } }), kp);
    assert.deepEqual(signed.tx, signTx(body({ payload: { text: 'é \u2028 "q"', n: [3, 1.5] } }), kp));
    const parsed = parseSignedTx(JSON.parse(JSON.stringify(signed.tx)));
    assert.ok(parsed.ok);
    assert.equal(signed.id, parsed.id);
    assert.equal(signed.id, txId(signed.tx));
    assert.equal(verifyTxSignature(signed.tx, signed.id), true);
  });

  test("is deterministic (Ed25519) and returns exactly the six fields", () => {
    const a = signTx({ ...body(), extra: true } as TxBody, kp);
    const b = signTx(body(), kp);
    assert.deepEqual(a, b);
    assert.deepEqual(Object.keys(a).sort(), ["createdAt", "nonce", "payload", "sig", "signer", "type"]);
  });

  test("refuses a body signed by someone else's key", () => {
    assert.throws(
      () => signTx(body({ signer: other.keyId }), kp),
      (e: unknown) => e instanceof LedgerError && e.code === "signer-mismatch",
    );
  });

  test("refuses a body that would not parse", () => {
    assert.throws(
      () => signTx(body({ nonce: "short" }), kp),
      (e: unknown) => e instanceof LedgerError && e.code === "bad-tx" && /nonce/.test(e.message),
    );
  });

  test("rejects a wrong id, a wrong signer, a tampered or malformed sig, without throwing", () => {
    const tx = signTx(body(), kp);
    const id = txId(tx);
    assert.equal(verifyTxSignature(tx, txId(body({ createdAt: 1 }))), false);
    assert.equal(verifyTxSignature({ ...tx, signer: other.keyId }, id), false);
    const sig = fromBase64Url(tx.sig);
    sig[10] = (sig[10] as number) ^ 1;
    assert.equal(verifyTxSignature({ ...tx, sig: toBase64Url(sig) }, id), false);
    for (const bad of ["", "!".repeat(86), `${tx.sig}A`, tx.sig.slice(0, 85)]) {
      assert.equal(verifyTxSignature({ ...tx, sig: bad }, id), false);
    }
    assert.equal(verifyTxSignature(tx, "not-an-id"), false);
    assert.equal(verifyTxSignature(null as unknown as SignedTx, id), false);
    assert.equal(verifyTxSignature({ ...tx, signer: 7 } as unknown as SignedTx, id), false);
  });

  test("a signature over another domain (e.g. a tree head) does not verify as a tx", () => {
    const tx = signTx(body(), kp);
    const id = txId(tx);
    // Sign the bare id without the tx prefix: must not verify.
    const bare = toBase64Url(new Uint8Array(0));
    assert.equal(verifyTxSignature({ ...tx, sig: bare }, id), false);
  });
});

describe("parseSignedTx", () => {
  const good = (): Record<string, unknown> => JSON.parse(JSON.stringify(signTx(body(), kp)));

  test("accepts a signed tx from JSON and returns its id", () => {
    const input = good();
    const result = parseSignedTx(input);
    assert.ok(result.ok);
    assert.equal(result.id, txId(result.tx));
    assert.deepEqual(result.tx, input);
    assert.notEqual(result.tx, input, "returns a fresh envelope");
    assert.equal(verifyTxSignature(result.tx, result.id), true);
  });

  test("refuses payload keys that need escaping, at any depth (V8 can misread them: nodejs/node#63785)", () => {
    for (const key of ["a\\b", 'q"uote', "tab\t", "nl\n"]) {
      const nested = { entries: [{ ok: 1, [key]: 2 }] };
      const tx = { ...good(), payload: nested };
      const result = parseSignedTx(tx);
      assert.equal(result.ok, false, `key ${JSON.stringify(key)}`);
      if (!result.ok) assert.match(result.error, /keys must not need escaping/);
    }
    // Values may hold any characters; only keys are restricted.
    const signed = signTx({ ...body(), payload: { text: 'a "quoted" \\ value\n' } }, kp);
    assert.ok(parseSignedTx(JSON.parse(JSON.stringify(signed))).ok);
  });

  test("accepts a null-prototype envelope", () => {
    const input = Object.assign(Object.create(null), good());
    assert.ok(parseSignedTx(input).ok);
  });

  const cases: [string, (tx: Record<string, unknown>) => unknown, RegExp][] = [
    ["not an object", () => "tx", /^tx: must be a JSON object$/],
    ["null", () => null, /^tx: must be a JSON object$/],
    ["an array", () => [], /^tx: must be a JSON object$/],
    ["a class instance", (tx) => Object.assign(new (class X {})(), tx), /^tx: must be a JSON object$/],
    ["unknown field", (tx) => ({ ...tx, extra: 1 }), /^tx: unknown field "extra"$/],
    ["missing sig", ({ sig: _, ...tx }) => tx, /^sig: missing$/],
    ["missing payload", ({ payload: _, ...tx }) => tx, /^payload: missing$/],
    ["type not a string", (tx) => ({ ...tx, type: 1 }), /^type: /],
    ["type without a dot", (tx) => ({ ...tx, type: "consent" }), /^type: /],
    ["type upper case", (tx) => ({ ...tx, type: "Consent.set" }), /^type: /],
    ["type with digits", (tx) => ({ ...tx, type: "consent.set2" }), /^type: /],
    ["type too long", (tx) => ({ ...tx, type: `a.${"b".repeat(39)}` }), /^type: /],
    ["payload an array", (tx) => ({ ...tx, payload: [] }), /^payload: must be a JSON object$/],
    ["payload null", (tx) => ({ ...tx, payload: null }), /^payload: must be a JSON object$/],
    ["payload a Date", (tx) => ({ ...tx, payload: new Date(0) }), /^payload: must be a JSON object$/],
    ["payload with NaN", (tx) => ({ ...tx, payload: { a: [Number.NaN] } }), /^payload\.a\[0\]: NaN/],
    ["payload with undefined", (tx) => ({ ...tx, payload: { a: undefined } }), /^payload\.a: undefined/],
    ["payload with a function", (tx) => ({ ...tx, payload: { f: () => 1 } }), /^payload\.f: function/],
    ["signer upper case", (tx) => ({ ...tx, signer: kp.keyId.toUpperCase() }), /^signer: /],
    ["signer short", (tx) => ({ ...tx, signer: kp.keyId.slice(2) }), /^signer: /],
    ["nonce too short", (tx) => ({ ...tx, nonce: "0".repeat(15) }), /^nonce: /],
    ["nonce too long", (tx) => ({ ...tx, nonce: "0".repeat(65) }), /^nonce: /],
    ["nonce not hex", (tx) => ({ ...tx, nonce: "g".repeat(16) }), /^nonce: /],
    ["createdAt negative", (tx) => ({ ...tx, createdAt: -1 }), /^createdAt: /],
    ["createdAt fractional", (tx) => ({ ...tx, createdAt: 1.5 }), /^createdAt: /],
    ["createdAt a string", (tx) => ({ ...tx, createdAt: "1" }), /^createdAt: /],
    ["createdAt unsafe", (tx) => ({ ...tx, createdAt: 2 ** 53 }), /^createdAt: /],
    ["sig padded", (tx) => ({ ...tx, sig: `${tx.sig}==` }), /^sig: /],
    ["sig standard base64", (tx) => ({ ...tx, sig: `+${(tx.sig as string).slice(1)}` }), /^sig: /],
    ["sig of 63 bytes", (tx) => ({ ...tx, sig: toBase64Url(new Uint8Array(63)) }), /^sig: /],
    ["sig non-zero trailing bits", (tx) => ({ ...tx, sig: `${(tx.sig as string).slice(0, 85)}B` }), /^sig: /],
  ];
  for (const [what, mutate, expected] of cases) {
    test(`rejects ${what}`, () => {
      assert.match(parseError(mutate(good())), expected);
    });
  }

  test("enforces MAX_TX_BYTES on the canonical body, counting UTF-8 bytes", () => {
    const base = good();
    const { sig: _sig, ...bodyOnly } = base;
    const overhead = Buffer.byteLength(canonicalJson({ ...bodyOnly, payload: { s: "" } }));
    // Exactly at the limit is accepted; one byte more is not.
    const fits = { ...base, payload: { s: "x".repeat(MAX_TX_BYTES - overhead) } };
    assert.ok(parseSignedTx(fits).ok);
    const over = { ...base, payload: { s: "x".repeat(MAX_TX_BYTES - overhead + 1) } };
    assert.match(parseError(over), /^tx: canonical body exceeds 65536 bytes$/);
    // Multi-byte characters count as their UTF-8 length.
    const wide = { ...base, payload: { s: "é".repeat(Math.ceil((MAX_TX_BYTES - overhead) / 2) + 1) } };
    assert.match(parseError(wide), /exceeds/);
    assert.match(parseError({ ...base, payload: { s: "x".repeat(10 * MAX_TX_BYTES) } }), /exceeds/);
  });
});
