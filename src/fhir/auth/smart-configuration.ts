// The `/.well-known/smart-configuration` document (SMART App Launch 2.x, Backend Services profile) and the URLs the
// token endpoint and the FHIR API share, so the server, the CLI and tests agree on `aud`.

import { PURPOSES } from "../../contract/policy.ts";
import type { KeyPair } from "../../ledger/keys.ts";
import { PATIENT_PURPOSE } from "./scopes.ts";
import { ASSERTION_ALGORITHMS } from "./token-endpoint.ts";

/**
 * The base URL of a node from its listen address: a wildcard address is reached on loopback, IPv6 goes in brackets.
 * Tokens name URLs derived from this (see `authUrls`), so the server and `careledger token` must use the same.
 */
export function nodeBaseUrl(listen: { host: string; port: number }): string {
  let host = listen.host;
  if (host === "0.0.0.0" || host === "") host = "127.0.0.1";
  else if (host === "::") host = "[::1]";
  else if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
  return `http://${host}:${listen.port}`;
}

/** Token URL (assertions' `aud`, tokens' `iss`) and FHIR base (tokens' `aud`) of a node served at `baseUrl`. */
export function authUrls(baseUrl: string): { tokenUrl: string; fhirBaseUrl: string; jwksUrl: string } {
  const base = baseUrl.replace(/\/+$/, "");
  return { tokenUrl: `${base}/auth/token`, fhirBaseUrl: `${base}/fhir`, jwksUrl: `${base}/auth/jwks` };
}

/** Scopes a client may ask for; the response's `scope` says what was granted (see scopes.ts for who gets what).
 * Narrower ones (`patient/Observation.rs`, v1 `user/Observation.read`) are accepted too. */
export const SCOPES_SUPPORTED = [
  "patient/*.rs",
  "patient/Consent.cruds",
  "user/*.crus",
  "user/*.rs",
  "system/*.rs",
] as const;

export function smartConfiguration(baseUrl: string): Record<string, unknown> {
  const { tokenUrl, jwksUrl } = authUrls(baseUrl);
  return {
    token_endpoint: tokenUrl,
    grant_types_supported: ["client_credentials"],
    token_endpoint_auth_methods_supported: ["private_key_jwt"],
    token_endpoint_auth_signing_alg_values_supported: [...ASSERTION_ALGORITHMS],
    scopes_supported: [...SCOPES_SUPPORTED],
    capabilities: ["client-confidential-asymmetric", "permission-v2", "permission-v1"],
    // Where the node's public key is, for anyone checking an access token offline (tokens are EdDSA JWTs).
    jwks_uri: jwksUrl,
    // Not SMART: how to ask for a purpose of use (form field `purpose`, a v3 PurposeOfUse code) and which exist.
    purpose_of_use_supported: [...new Set<string>([...PURPOSES, PATIENT_PURPOSE])],
    client_id_format:
      "the caller's ledger key id (64 lowercase hex, the raw Ed25519 public key); iss = sub = client_id",
  };
}

/** The node's token-signing key as a JWK Set (for `jwks_uri`). */
export function nodeJwks(nodeKey: Pick<KeyPair, "keyId">): { keys: Record<string, string>[] } {
  return {
    keys: [
      {
        kty: "OKP",
        crv: "Ed25519",
        x: Buffer.from(nodeKey.keyId, "hex").toString("base64url"),
        kid: nodeKey.keyId,
        alg: "EdDSA",
        use: "sig",
      },
    ],
  };
}
