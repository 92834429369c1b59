import { canonicalBytes } from "./canonical.ts";
import { concatBytes, fromBase64Url, isHex32, toBase64Url, utf8 } from "./encoding.ts";
import { LedgerError } from "./errors.ts";
import { exactFields, isSafeCount, SIG64_RE } from "./fields.ts";
import { type KeyPair, signBytes, verifyBytes } from "./keys.ts";
import type { SignedTreeHead, TreeHead } from "./types.ts";

/** Domain separation from tx signatures, which are made with the same kind of key. */
export const STH_SIGNING_PREFIX: Uint8Array = utf8("careledger/sth/v1\n");

const STH_FIELDS = ["size", "root", "height", "stateDigest", "time", "signer", "sig"] as const;

function checkHead(head: TreeHead): string | undefined {
  if (!isSafeCount(head.size)) return "size: must be a non-negative safe integer";
  if (!isHex32(head.root)) return "root: must be 64 lowercase hex characters";
  if (!isSafeCount(head.height)) return "height: must be a non-negative safe integer";
  if (!isHex32(head.stateDigest)) return "stateDigest: must be 64 lowercase hex characters";
  if (!isSafeCount(head.time)) return "time: must be a non-negative safe integer (ms since the Unix epoch)";
  return undefined;
}

/** Exactly the five TreeHead fields, so extra fields (signer, sig, anything else) never enter the signed bytes. */
function headMessage(head: TreeHead): Uint8Array {
  const { size, root, height, stateDigest, time } = head;
  return concatBytes(STH_SIGNING_PREFIX, canonicalBytes({ size, root, height, stateDigest, time }));
}

/** Signs a tree head with a node key. Throws `bad-tree-head` for malformed fields. */
export function signTreeHead(head: TreeHead, kp: KeyPair): SignedTreeHead {
  const error = checkHead(head);
  if (error !== undefined) throw new LedgerError("bad-tree-head", error);
  const sig = toBase64Url(signBytes(kp, headMessage(head)));
  const { size, root, height, stateDigest, time } = head;
  return { size, root, height, stateDigest, time, signer: kp.keyId, sig };
}

/**
 * True iff the fields are well-formed and `sig` is the signer's signature over them. Says nothing about whether the
 * signer is a member node: that is for the caller. False, never a throw, for any malformed input.
 */
export function verifyTreeHead(sth: SignedTreeHead): boolean {
  try {
    if (checkHead(sth) !== undefined || typeof sth.sig !== "string" || !SIG64_RE.test(sth.sig)) return false;
    return verifyBytes(sth.signer, headMessage(sth), fromBase64Url(sth.sig));
  } catch {
    return false;
  }
}

export type ParseTreeHeadResult = { ok: true; sth: SignedTreeHead } | { ok: false; error: string };

/** Strict shape validation of an untrusted signed tree head; does not check the signature (see `verifyTreeHead`). */
export function parseSignedTreeHead(input: unknown): ParseTreeHeadResult {
  const shapeError = exactFields(input, STH_FIELDS, "sth");
  if (shapeError !== undefined) return { ok: false, error: shapeError };
  const raw = input as unknown as SignedTreeHead;
  const sth: SignedTreeHead = {
    size: raw.size,
    root: raw.root,
    height: raw.height,
    stateDigest: raw.stateDigest,
    time: raw.time,
    signer: raw.signer,
    sig: raw.sig,
  };
  const error = checkHead(sth);
  if (error !== undefined) return { ok: false, error };
  if (!isHex32(sth.signer)) return { ok: false, error: "signer: must be 64 lowercase hex characters" };
  if (typeof sth.sig !== "string" || !SIG64_RE.test(sth.sig)) {
    return { ok: false, error: "sig: must be the unpadded base64url of a 64-byte Ed25519 signature" };
  }
  return { ok: true, sth };
}
