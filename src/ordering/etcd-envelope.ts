import { deflateRawSync, inflateRawSync } from "node:zlib";
import { canonicalJsonWithin } from "../ledger/canonical.ts";
import { concatBytes, fromBase64Url, isHex32, toBase64Url, utf8 } from "../ledger/encoding.ts";
import { sha256 } from "../ledger/hash.ts";
import { type KeyPair, signBytes, verifyBytes } from "../ledger/keys.ts";
import { parseSignedTxWithText } from "../ledger/tx.ts";
import type { Hex32, KeyId, SignedTx } from "../ledger/types.ts";
import { OrdererError } from "./orderer.ts";

// A batch as stored in etcd under `b/<batchId>`: canonical JSON {v:1, proposer, time, txs, sig}, or — compressed —
// the byte 0x00 followed by that JSON deflated (raw deflate, RFC 1951; JSON never starts with 0x00). The id is the
// SHA-256 of the canonical body {v, proposer, time, txs}, so a retried submit writes the same key and etcd's
// `create_revision == 0` guard orders it once; every node checks key, shape and signature identically, of the
// inflated JSON when compressed (bounded by the same size limit, so a small value cannot inflate without end).

/** Domain separation: a batch signature can never pass for a tx or tree-head signature made with the same key. */
export const BATCH_SIGNING_PREFIX: Uint8Array = utf8("careledger/batch/v1\n");

export const DEFAULT_MAX_BATCH_BYTES = 1024 * 1024;
/** First byte of a compressed envelope. */
const DEFLATED = 0x00;
export const MAX_BATCH_TXS = 10_000;

const SIG64_RE = /^[A-Za-z0-9_-]{85}[AQgw]$/;
const ENVELOPE_FIELDS = ["proposer", "sig", "time", "txs", "v"];

export interface SealedBatch {
  id: Hex32;
  /** The canonical envelope, as written to etcd. */
  value: Buffer;
}

export interface OpenedBatch {
  id: Hex32;
  proposer: KeyId;
  time: number;
  txs: SignedTx[];
  /**
   * Per tx, `parseSignedTx`'s result when it is a well-formed tx (undefined where it is not): checking the envelope's
   * canonical form parses each tx once, and the node need not parse it again.
   */
  parsed: ({ tx: SignedTx; id: Hex32 } | undefined)[];
}

export type OpenResult = { ok: true; batch: OpenedBatch } | { ok: false; reason: string };

// Keys sort as proposer < sig < time < txs < v, and proposer/sig/time never need escaping, so both texts are built
// around the canonical txs; the result is byte-identical to canonicalJson of the objects.
function bodyJson(proposer: string, time: number, txsJson: string): string {
  return `{"proposer":"${proposer}","time":${time},"txs":${txsJson},"v":1}`;
}

function envelopeJson(proposer: string, sig: string, time: number, txsJson: string): string {
  return `{"proposer":"${proposer}","sig":"${sig}","time":${time},"txs":${txsJson},"v":1}`;
}

/** What the proposer signs: the prefix and the batch id's bytes (as txs sign their id). */
function signingMessage(digest: Uint8Array): Uint8Array {
  return concatBytes(BATCH_SIGNING_PREFIX, digest);
}

/**
 * Builds and signs the envelope of a batch. Throws `OrdererError("too-large")` when it would exceed `maxBytes`, and
 * `bad-batch` when the txs are not plain JSON. `compress`: the value written is the envelope deflated (when that is
 * smaller) — a quarter of the bytes for typical txs, which etcd writes to its WAL and database on every member and
 * sends to every node.
 */
export function sealBatch(
  key: KeyPair,
  time: number,
  txs: SignedTx[],
  maxBytes: number,
  { compress = false }: { compress?: boolean } = {},
): SealedBatch {
  if (!Number.isSafeInteger(time) || time < 0) throw new OrdererError("bad-batch", "time must be a safe integer ≥ 0");
  if (!Array.isArray(txs)) throw new OrdererError("bad-batch", "txs must be an array");
  if (txs.length > MAX_BATCH_TXS) {
    throw new OrdererError("too-large", `a batch holds at most ${MAX_BATCH_TXS} txs, got ${txs.length}`);
  }
  let txsJson: string | undefined;
  try {
    txsJson = canonicalJsonWithin(txs, maxBytes, "txs", { plainKeys: true });
  } catch (error) {
    throw new OrdererError("bad-batch", `the batch is not plain JSON: ${(error as Error).message}`);
  }
  const tooLarge = () =>
    new OrdererError("too-large", `the batch envelope exceeds ${maxBytes} bytes (${txs.length} txs); split it`);
  if (txsJson === undefined) throw tooLarge();
  const digest = sha256(bodyJson(key.keyId, time, txsJson));
  const sig = toBase64Url(signBytes(key, signingMessage(digest)));
  let value = Buffer.from(envelopeJson(key.keyId, sig, time, txsJson));
  if (value.byteLength > maxBytes) throw tooLarge();
  if (compress) {
    // Level 1: ~0.2 ms for 60 KB of txs, 3.6× smaller; higher levels gain little on signatures and ids.
    const deflated = Buffer.concat([Buffer.of(DEFLATED), deflateRawSync(value, { level: 1 })]);
    if (deflated.byteLength < value.byteLength) value = deflated;
  }
  return { id: Buffer.from(digest).toString("hex"), value };
}

const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Checks one value read from etcd under `b/<id>`: size (stored and, when compressed, inflated), strict canonical
 * shape, key = hash of the body, signature. Deterministic: the same bytes give the same answer on every node. The
 * reason is a short code, never content.
 */
export function openBatch(id: string, value: Uint8Array, maxBytes: number): OpenResult {
  if (value.byteLength > maxBytes) return { ok: false, reason: "oversized" };
  if (!isHex32(id)) return { ok: false, reason: "bad-key" };
  let json = value;
  if (value[0] === DEFLATED) {
    try {
      json = inflateRawSync(value.subarray(1), { maxOutputLength: maxBytes });
    } catch (error) {
      // Past the limit zlib stops with a RangeError (ERR_BUFFER_TOO_LARGE); anything else is not a deflate stream.
      return { ok: false, reason: error instanceof RangeError ? "oversized" : "bad-deflate" };
    }
  }
  let text: string;
  let parsed: unknown;
  try {
    text = utf8Decoder.decode(json);
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, reason: "not-json" };
  }
  if (!isPlainObject(parsed)) return { ok: false, reason: "bad-shape" };
  const keys = Object.keys(parsed);
  if (keys.length !== ENVELOPE_FIELDS.length || !keys.every((k) => ENVELOPE_FIELDS.includes(k))) {
    return { ok: false, reason: "bad-shape" };
  }
  const { v, proposer, time, txs, sig } = parsed;
  if (v !== 1) return { ok: false, reason: "bad-version" };
  if (!isHex32(proposer) || typeof time !== "number" || !Number.isSafeInteger(time) || time < 0) {
    return { ok: false, reason: "bad-shape" };
  }
  if (typeof sig !== "string" || !SIG64_RE.test(sig)) return { ok: false, reason: "bad-shape" };
  if (!Array.isArray(txs)) return { ok: false, reason: "bad-shape" };
  if (txs.length > MAX_BATCH_TXS) return { ok: false, reason: "too-many-txs" };
  // The canonical text of the txs, one tx at a time: a well-formed tx's comes with parsing it (which every node does
  // anyway); anything else is canonicalised as plain JSON, to be dropped by the node as malformed.
  const parts: string[] = [];
  const opened: OpenedBatch["parsed"] = [];
  let length = 2 + Math.max(0, txs.length - 1);
  for (const raw of txs) {
    const p = parseSignedTxWithText(raw);
    let part: string | undefined;
    if (p.ok) part = p.text;
    else {
      try {
        // plainKeys: keys that need escaping are refused (V8's JSON.parse may misread them, nodejs/node#63785).
        part = canonicalJsonWithin(raw, maxBytes, "tx", { plainKeys: true });
      } catch {
        return { ok: false, reason: "not-canonical" };
      }
    }
    if (part === undefined) return { ok: false, reason: "not-canonical" };
    length += part.length;
    if (length > maxBytes) return { ok: false, reason: "not-canonical" };
    parts.push(part);
    opened.push(p.ok ? { tx: p.tx, id: p.id } : undefined);
  }
  const txsJson = `[${parts.join(",")}]`;
  // One accepted spelling per batch: what etcd holds must be exactly the canonical envelope.
  if (envelopeJson(proposer, sig, time, txsJson) !== text) return { ok: false, reason: "not-canonical" };
  const digest = sha256(bodyJson(proposer, time, txsJson));
  if (Buffer.from(digest).toString("hex") !== id) return { ok: false, reason: "wrong-key" };
  if (!verifyBytes(proposer, signingMessage(digest), fromBase64Url(sig))) {
    return { ok: false, reason: "bad-signature" };
  }
  return { ok: true, batch: { id, proposer, time, txs: txs as SignedTx[], parsed: opened } };
}
