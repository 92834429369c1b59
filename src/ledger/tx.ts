import { canonicalJson, canonicalJsonWithin } from "./canonical.ts";
import { concatBytes, fromBase64Url, fromHex, isHex32, toBase64Url, utf8 } from "./encoding.ts";
import { LedgerError } from "./errors.ts";
import { exactFields, isPlainObject, isSafeCount, SIG64_RE } from "./fields.ts";
import { sha256Hex } from "./hash.ts";
import { type KeyPair, signBytes, verifyBytes } from "./keys.ts";
import type { Hex32, SignedTx, TxBody } from "./types.ts";

/** Domain separation: a tx signature can never be replayed as a tree-head or any other signature. */
export const TX_SIGNING_PREFIX: Uint8Array = utf8("careledger/tx/v1\n");

/** Largest accepted canonical body, in UTF-8 bytes. Bounds what one tx can cost every node to store and hash. */
export const MAX_TX_BYTES = 64 * 1024;

export const MAX_TX_TYPE_LENGTH = 40;
const TX_TYPE_RE = /^[a-z]+(\.[a-z-]+)+$/;
const NONCE_RE = /^[0-9a-f]{16,64}$/;
const TX_FIELDS = ["type", "payload", "signer", "nonce", "createdAt", "sig"] as const;

/** Checks the five body fields (not the payload's contents). Returns a one-line error naming the field, or undefined. */
function checkBodyFields(tx: TxBody): string | undefined {
  const { type, payload, signer, nonce, createdAt } = tx;
  if (typeof type !== "string" || type.length > MAX_TX_TYPE_LENGTH || !TX_TYPE_RE.test(type)) {
    return `type: must be a dotted lowercase name such as "consent.set", at most ${MAX_TX_TYPE_LENGTH} characters`;
  }
  if (!isPlainObject(payload) || Array.isArray(payload)) return "payload: must be a JSON object";
  if (!isHex32(signer)) return "signer: must be 64 lowercase hex characters (a raw Ed25519 public key)";
  if (typeof nonce !== "string" || !NONCE_RE.test(nonce)) return "nonce: must be 16-64 lowercase hex characters";
  if (!isSafeCount(createdAt)) return "createdAt: must be a non-negative safe integer (ms since the Unix epoch)";
  return undefined;
}

/**
 * Canonical JSON of a body whose fields passed `checkBodyFields`. Those fields need no escaping and the key order is
 * fixed, so only the payload goes through the canonicaliser; the result is byte-identical to
 * `canonicalJson({type, payload, signer, nonce, createdAt})` (asserted by the tests).
 */
function bodyJson(tx: TxBody, payloadJson: string): string {
  return `{"createdAt":${tx.createdAt},"nonce":"${tx.nonce}","payload":${payloadJson},"signer":"${tx.signer}","type":"${tx.type}"}`;
}

/**
 * The tx id: SHA-256 of the canonical body (the five signed fields; `sig` is not part of it, so the id is fixed
 * before signing and a signature cannot be swapped to make a "new" tx).
 */
export function txId(body: TxBody): Hex32 {
  const json =
    checkBodyFields(body) === undefined
      ? bodyJson(body, canonicalJson(body.payload))
      : canonicalJson({
          type: body.type,
          payload: body.payload,
          signer: body.signer,
          nonce: body.nonce,
          createdAt: body.createdAt,
        });
  return sha256Hex(json);
}

function signingMessage(id: Hex32): Uint8Array {
  return concatBytes(TX_SIGNING_PREFIX, fromHex(id));
}

/**
 * Signs a body. Throws `bad-tx` if the body would not pass `parseSignedTx` (better to fail where the tx is made than
 * at every node) and `signer-mismatch` if the key pair is not the body's signer.
 */
export function signTx(body: TxBody, kp: KeyPair): SignedTx {
  return signTxWithId(body, kp).tx;
}

/**
 * `signTx`, also giving the tx's id (the hash it signed), so that a node submitting its own tx need not canonicalise
 * it a second time through `parseSignedTx`. The tx shares `payload` with the body: do not mutate it afterwards.
 */
export function signTxWithId(body: TxBody, kp: KeyPair): { tx: SignedTx; id: Hex32 } {
  const error = checkBodyFields(body);
  if (error !== undefined) throw new LedgerError("bad-tx", error);
  if (body.signer !== kp.keyId) throw new LedgerError("signer-mismatch", "signer: is not the signing key's id");
  const json = bodyJson(body, canonicalJson(body.payload));
  if (Buffer.byteLength(json) > MAX_TX_BYTES) throw new LedgerError("bad-tx", `tx: body exceeds ${MAX_TX_BYTES} bytes`);
  const id = sha256Hex(json);
  const sig = toBase64Url(signBytes(kp, signingMessage(id)));
  const { type, payload, signer, nonce, createdAt } = body;
  return { tx: { type, payload, signer, nonce, createdAt, sig }, id };
}

/**
 * Checks `tx.sig` over `TX_SIGNING_PREFIX || id`. The caller supplies the id (from `parseSignedTx` or `txId`), so the
 * expensive part can run on worker threads without re-hashing. False, never a throw, for any malformed input.
 */
export function verifyTxSignature(tx: SignedTx, id: Hex32): boolean {
  try {
    if (!isHex32(id) || typeof tx.sig !== "string" || !SIG64_RE.test(tx.sig)) return false;
    return verifyBytes(tx.signer, signingMessage(id), fromBase64Url(tx.sig));
  } catch {
    return false;
  }
}

export type ParseTxResult = { ok: true; tx: SignedTx; id: Hex32 } | { ok: false; error: string };

/**
 * Strict envelope validation of untrusted input (typically JSON.parse output) and its id, canonicalising once. Does
 * not check the signature (see `verifyTxSignature`) nor the payload's schema (the contract's job). The returned tx
 * is a fresh envelope but shares `payload` with the input: do not mutate the input afterwards.
 */
export function parseSignedTx(input: unknown): ParseTxResult {
  const parsed = parseSignedTxWithText(input);
  return parsed.ok ? { ok: true, tx: parsed.tx, id: parsed.id } : parsed;
}

/**
 * `parseSignedTx`, also giving the canonical JSON of the whole signed tx (sig included), built from the text the id
 * was hashed from: checking that a batch of txs is in canonical form then costs no second serialisation. The text
 * is for the caller to use and drop — kept with each tx it would outlive V8's young generation under load.
 */
export function parseSignedTxWithText(
  input: unknown,
): { ok: true; tx: SignedTx; id: Hex32; text: string } | { ok: false; error: string } {
  const shapeError = exactFields(input, TX_FIELDS, "tx");
  if (shapeError !== undefined) return { ok: false, error: shapeError };
  const raw = input as unknown as SignedTx;
  const tx: SignedTx = {
    type: raw.type,
    payload: raw.payload,
    signer: raw.signer,
    nonce: raw.nonce,
    createdAt: raw.createdAt,
    sig: raw.sig,
  };
  const fieldError = checkBodyFields(tx);
  if (fieldError !== undefined) return { ok: false, error: fieldError };
  if (typeof tx.sig !== "string" || !SIG64_RE.test(tx.sig)) {
    return { ok: false, error: "sig: must be the unpadded base64url of a 64-byte Ed25519 signature" };
  }
  let payloadJson: string | undefined;
  try {
    payloadJson = canonicalJsonWithin(tx.payload, MAX_TX_BYTES, "payload", { plainKeys: true });
  } catch (error) {
    return { ok: false, error: error instanceof LedgerError ? error.message : "payload: not canonicalisable" };
  }
  const json = payloadJson === undefined ? undefined : bodyJson(tx, payloadJson);
  if (json === undefined || Buffer.byteLength(json) > MAX_TX_BYTES) {
    return { ok: false, error: `tx: canonical body exceeds ${MAX_TX_BYTES} bytes` };
  }
  const id = sha256Hex(json);
  // Keys sort as createdAt < nonce < payload < sig < signer < type; sig passed SIG64_RE, so needs no escaping.
  const cut = json.length - `,"signer":"${tx.signer}","type":"${tx.type}"}`.length;
  return { ok: true, tx, id, text: `${json.slice(0, cut)},"sig":"${tx.sig}"${json.slice(cut)}` };
}
