// The client assertion with nothing but WebCrypto, for the patient portal in the browser (and any runtime with
// `crypto.subtle` Ed25519: current Chrome, Firefox, Safari, Node, Deno). No Node imports and no libraries, so the
// portal can use this file as it is (the one import is types only, erased when run). The private key can stay
// non-extractable (kept in IndexedDB as a CryptoKey).

import type { webcrypto } from "node:crypto";

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** A new Ed25519 key pair; `keyId` (64 lowercase hex of the raw public key) is what the ledger registers. */
export async function generateLedgerKey(extractable = false): Promise<{ privateKey: CryptoKey; keyId: string }> {
  const pair = (await crypto.subtle.generateKey("Ed25519", extractable, ["sign", "verify"])) as CryptoKeyPair;
  return { privateKey: pair.privateKey, keyId: await keyIdOf(pair.publicKey) };
}

/** The ledger key id of an Ed25519 public key. */
export async function keyIdOf(publicKey: CryptoKey): Promise<string> {
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", publicKey));
  return Array.from(raw, (b) => b.toString(16).padStart(2, "0")).join("");
}

function b64url(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * A `private_key_jwt` client assertion for `POST /auth/token`: header `{alg: "EdDSA", typ: "JWT", kid}`, claims
 * `iss` = `sub` = key id, `aud` = token URL, `exp` ≤ 5 min ahead, a fresh `jti`.
 */
export async function signClientAssertion(
  privateKey: CryptoKey,
  keyId: string,
  tokenUrl: string,
  options: { now?: number; jti?: string; lifetimeSec?: number } = {},
): Promise<string> {
  const now = Math.floor((options.now ?? Date.now()) / 1000);
  const enc = new TextEncoder();
  const header = b64url(enc.encode(JSON.stringify({ alg: "EdDSA", typ: "JWT", kid: keyId })));
  const claims = b64url(
    enc.encode(
      JSON.stringify({
        iss: keyId,
        sub: keyId,
        aud: tokenUrl,
        iat: now,
        exp: now + (options.lifetimeSec ?? 60),
        jti: options.jti ?? crypto.randomUUID(),
      }),
    ),
  );
  const signature = await crypto.subtle.sign({ name: "Ed25519" }, privateKey, enc.encode(`${header}.${claims}`));
  return `${header}.${claims}.${b64url(new Uint8Array(signature))}`;
}
