// What clients (the CLI, tests, the load generator) send to the token endpoint: a `private_key_jwt` client assertion
// signed with their ledger key, and the form around it. The browser does the same with WebCrypto (see README.md).

import { randomUUID } from "node:crypto";
import { SignJWT } from "jose";
import type { KeyPair } from "../../ledger/keys.ts";

export const CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/** Longest lifetime the token endpoint accepts for an assertion. */
export const MAX_ASSERTION_LIFETIME_SEC = 5 * 60;

export interface AssertionOptions {
  /** ms (default Date.now()). */
  now?: number;
  /** Unique per assertion (default a random UUID). */
  jti?: string;
  /** Seconds until `exp` (default 60, at most 5 min). */
  lifetimeSec?: number;
}

/** A client assertion: `iss` = `sub` = the key id, `aud` = the token URL, short `exp`, single-use `jti`. */
export async function createClientAssertion(
  key: KeyPair,
  tokenUrl: string,
  options: AssertionOptions = {},
): Promise<string> {
  const now = Math.floor((options.now ?? Date.now()) / 1000);
  const lifetime = options.lifetimeSec ?? 60;
  return new SignJWT({})
    .setProtectedHeader({ alg: "EdDSA", typ: "JWT", kid: key.keyId })
    .setIssuer(key.keyId)
    .setSubject(key.keyId)
    .setAudience(tokenUrl)
    .setIssuedAt(now)
    .setExpirationTime(now + lifetime)
    .setJti(options.jti ?? randomUUID())
    .sign(key.privateKey);
}

/** The `application/x-www-form-urlencoded` fields of a token request. */
export async function tokenRequestForm(
  key: KeyPair,
  tokenUrl: string,
  request: { scope?: string; purpose?: string; patient?: string } & AssertionOptions = {},
): Promise<Record<string, string>> {
  const form: Record<string, string> = {
    grant_type: "client_credentials",
    client_assertion_type: CLIENT_ASSERTION_TYPE,
    client_assertion: await createClientAssertion(key, tokenUrl, request),
  };
  if (request.scope !== undefined) form.scope = request.scope;
  if (request.purpose !== undefined) form.purpose = request.purpose;
  if (request.patient !== undefined) form.patient = request.patient;
  return form;
}

/**
 * The whole client side of the flow: posts a token request for `key` to `tokenUrl` and returns the access token.
 * Throws naming the HTTP status and the server's answer when the node refuses.
 */
export async function requestAccessToken(
  key: KeyPair,
  tokenUrl: string,
  request: { scope?: string; purpose?: string; patient?: string } & AssertionOptions = {},
): Promise<string> {
  const response = await fetch(tokenUrl, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(await tokenRequestForm(key, tokenUrl, request)).toString(),
  });
  const text = await response.text();
  let token: unknown;
  try {
    token = (JSON.parse(text) as { access_token?: unknown }).access_token;
  } catch {
    token = undefined;
  }
  if (response.status !== 200 || typeof token !== "string") {
    throw new Error(`token request to ${tokenUrl}: HTTP ${response.status}: ${text.slice(0, 300)}`);
  }
  return token;
}
