// POST /auth/token, framework-free: SMART Backend Services (`client_credentials` with a `private_key_jwt` client
// assertion signed by the caller's ledger key) in, a short-lived bearer token with SMART v2 scopes and a purpose of
// use out. Checks run cheapest and least revealing first: form syntax, then the assertion's signature (which needs no
// state), its claims, single use, and only then who the key is — so a caller without the private key learns nothing
// about any identity, and a caller with it learns only "refused".

import { compactVerify, decodeJwt, decodeProtectedHeader } from "jose";
import type { StateReader } from "../../contract/state.ts";
import { isHex32 } from "../../ledger/encoding.ts";
import { type KeyPair, publicKeyFromKeyId } from "../../ledger/keys.ts";
import { issueBearer, MAX_TOKEN_LIFETIME_SEC } from "./bearer.ts";
import { CLIENT_ASSERTION_TYPE, MAX_ASSERTION_LIFETIME_SEC } from "./client-assertion.ts";
import { resolveIdentity } from "./identity.ts";
import type { JtiCache } from "./jti-cache.ts";
import { formatScopes, intersectScopes, parseScopes, resolvePurpose, scopeCeiling } from "./scopes.ts";

/** Algorithms accepted on client assertions: EdDSA, and its fully specified name (RFC 9864), both Ed25519 here. */
export const ASSERTION_ALGORITHMS = ["EdDSA", "Ed25519"];
/** Longest client assertion read (an EdDSA one is ~400 characters). */
const MAX_ASSERTION_CHARS = 8192;
const MAX_JTI_CHARS = 256;
const PSEUDONYM = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface TokenContext {
  state: StateReader;
  /** This endpoint's URL: the `aud` assertions must carry and the `iss` of the tokens issued. */
  tokenUrl: string;
  /** The FHIR base URL: the `aud` of the tokens issued. */
  fhirBaseUrl: string;
  /** ms */
  now(): number;
  /** The node key (signs tokens). */
  signer: KeyPair;
  jtiCache: JtiCache;
  /** Seconds (default and maximum 15 min). */
  tokenLifetimeSec?: number;
  /** Tolerated client clock difference, seconds (default 30). */
  clockSkewSec?: number;
}

export interface TokenResponse {
  access_token: string;
  token_type: "Bearer";
  expires_in: number;
  /** What was granted: the requested scopes within what the identity may have. */
  scope: string;
  /** v3 PurposeOfUse code (absent for nodes and admins). */
  purpose?: string;
  /** Patients and proxies: the patient (pseudonym) in context. */
  patient?: string;
}

export type OAuthErrorCode =
  | "invalid_request"
  | "invalid_client"
  | "invalid_grant"
  | "invalid_scope"
  | "unsupported_grant_type"
  | "temporarily_unavailable";

export interface OAuthError {
  error: OAuthErrorCode;
  error_description: string;
}

/** Token responses must not be cached (RFC 6749 §5.1). */
export const TOKEN_RESPONSE_HEADERS: Readonly<Record<string, string>> = {
  "cache-control": "no-store",
  pragma: "no-cache",
};

export type TokenResult =
  | { ok: true; status: 200; body: TokenResponse; headers: Readonly<Record<string, string>> }
  | { ok: false; status: 400 | 401 | 503; body: OAuthError; headers: Readonly<Record<string, string>> };

/** The one message for every identity-related refusal (unknown, revoked, suspended, erased, bad signature). */
export const CLIENT_AUTH_FAILED = "client authentication failed";
const NOT_FOR_PATIENT = "this client may not act for that patient";

function fail(error: OAuthErrorCode, description: string): TokenResult {
  const status = error === "invalid_client" ? 401 : error === "temporarily_unavailable" ? 503 : 400;
  return { ok: false, status, body: { error, error_description: description }, headers: TOKEN_RESPONSE_HEADERS };
}

function field(form: Record<string, unknown>, name: string): string | undefined | null {
  if (!Object.hasOwn(form, name)) return undefined;
  const v = form[name];
  if (v === undefined) return undefined;
  // A repeated parameter arrives as an array; RFC 6749 §3.2 forbids repeats.
  return typeof v === "string" ? v : null;
}

/** Handles a token request's form fields (already URL-decoded). Never throws on client input. */
export async function issueToken(form: Record<string, unknown>, ctx: TokenContext): Promise<TokenResult> {
  if (typeof form !== "object" || form === null) return fail("invalid_request", "the request must be a form");
  const f: Record<string, string | undefined> = {};
  for (const name of [
    "grant_type",
    "client_assertion_type",
    "client_assertion",
    "client_id",
    "scope",
    "purpose",
    "patient",
  ]) {
    const v = field(form, name);
    if (v === null) return fail("invalid_request", `parameter ${name} must be given once, as a string`);
    f[name] = v;
  }
  if (f.grant_type === undefined) return fail("invalid_request", "grant_type is required");
  if (f.grant_type !== "client_credentials") {
    return fail("unsupported_grant_type", "only grant_type=client_credentials is supported");
  }
  if (f.client_assertion_type !== CLIENT_ASSERTION_TYPE) {
    return fail("invalid_request", `client_assertion_type must be ${CLIENT_ASSERTION_TYPE}`);
  }
  const assertion = f.client_assertion;
  if (assertion === undefined || assertion === "") return fail("invalid_request", "client_assertion is required");
  if (assertion.length > MAX_ASSERTION_CHARS) return fail("invalid_request", "client_assertion is too long");
  const requested = parseScopes(f.scope ?? "");
  if (!requested.ok) {
    return fail(
      "invalid_scope",
      requested.scope === undefined ? requested.error : `${requested.error}: ${requested.scope}`,
    );
  }
  if (f.patient !== undefined && !PSEUDONYM.test(f.patient)) {
    return fail("invalid_request", "patient must be a patient id (a lowercase UUID)");
  }

  // The assertion: algorithm and issuer from the unverified token, then the signature with the issuer's key.
  let alg: unknown;
  let iss: unknown;
  try {
    alg = decodeProtectedHeader(assertion).alg;
    iss = decodeJwt(assertion).iss;
  } catch {
    return fail("invalid_client", "client_assertion is not a JWT");
  }
  if (typeof alg !== "string" || !ASSERTION_ALGORITHMS.includes(alg)) {
    return fail("invalid_client", "client_assertion must be signed with EdDSA (Ed25519)");
  }
  if (typeof iss !== "string" || !isHex32(iss)) return fail("invalid_client", CLIENT_AUTH_FAILED);
  if (f.client_id !== undefined && f.client_id !== iss) {
    return fail("invalid_client", "client_id does not match the client assertion's issuer");
  }
  let claims: Record<string, unknown>;
  try {
    const verified = await compactVerify(assertion, publicKeyFromKeyId(iss), { algorithms: ASSERTION_ALGORITHMS });
    claims = JSON.parse(new TextDecoder().decode(verified.payload));
  } catch {
    return fail("invalid_client", CLIENT_AUTH_FAILED);
  }
  if (typeof claims !== "object" || claims === null) return fail("invalid_client", CLIENT_AUTH_FAILED);

  const now = ctx.now();
  const skew = (ctx.clockSkewSec ?? 30) * 1000;
  if (claims.sub !== iss) return fail("invalid_client", "client assertion: sub must equal iss");
  const aud = claims.aud;
  if (!(aud === ctx.tokenUrl || (Array.isArray(aud) && aud.length >= 1 && aud.every((a) => a === ctx.tokenUrl)))) {
    return fail("invalid_client", "client assertion: aud must be this token endpoint's URL");
  }
  const exp = claims.exp;
  if (typeof exp !== "number" || !Number.isFinite(exp))
    return fail("invalid_client", "client assertion: exp is required");
  if (exp * 1000 <= now - skew) return fail("invalid_client", "client assertion has expired");
  if (exp * 1000 > now + MAX_ASSERTION_LIFETIME_SEC * 1000 + skew) {
    return fail("invalid_client", `client assertion: exp must be at most ${MAX_ASSERTION_LIFETIME_SEC} s ahead`);
  }
  for (const name of ["iat", "nbf"] as const) {
    const t = claims[name];
    if (t === undefined) continue;
    if (typeof t !== "number" || !Number.isFinite(t)) return fail("invalid_client", `client assertion: bad ${name}`);
    if (t * 1000 > now + skew) return fail("invalid_client", `client assertion: ${name} is in the future`);
  }
  const jti = claims.jti;
  if (typeof jti !== "string" || jti === "" || jti.length > MAX_JTI_CHARS) {
    return fail("invalid_client", "client assertion: jti is required");
  }
  // Held until the latest moment the assertion could still be accepted.
  const used = ctx.jtiCache.use(iss, jti, exp * 1000 + skew, now);
  if (used === "replay") return fail("invalid_client", "client assertion was already used (jti)");
  if (used === "full") return fail("temporarily_unavailable", "too many token requests in flight; retry shortly");

  // Who the key is, now.
  const resolved = resolveIdentity(ctx.state, iss, now, f.patient);
  if (!resolved.ok) {
    return resolved.reason === "grant"
      ? fail("invalid_grant", NOT_FOR_PATIENT)
      : fail("invalid_client", CLIENT_AUTH_FAILED);
  }
  const identity = resolved.identity;
  const ceiling = scopeCeiling(identity);
  // No scope asked: everything the identity may have (RFC 6749 §3.3 lets the server choose a default).
  const granted = f.scope === undefined || f.scope.trim() === "" ? ceiling : intersectScopes(requested.scopes, ceiling);
  if (granted.length === 0) return fail("invalid_scope", "none of the requested scopes may be granted to this client");
  const purpose = resolvePurpose(identity, f.purpose);
  if (!purpose.ok) return fail(purpose.error, purpose.description);

  const lifetime = Math.min(ctx.tokenLifetimeSec ?? MAX_TOKEN_LIFETIME_SEC, MAX_TOKEN_LIFETIME_SEC);
  const { token, expiresIn } = await issueBearer(
    identity,
    purpose.purpose === undefined ? { scopes: granted } : { scopes: granted, purpose: purpose.purpose },
    { signer: ctx.signer, issuer: ctx.tokenUrl, audience: ctx.fhirBaseUrl, now: ctx.now, lifetimeSec: lifetime },
  );
  const body: TokenResponse = {
    access_token: token,
    token_type: "Bearer",
    expires_in: expiresIn,
    scope: formatScopes(granted),
  };
  if (purpose.purpose !== undefined) body.purpose = purpose.purpose;
  if (identity.kind === "patient" || identity.kind === "proxy") body.patient = identity.patient;
  return { ok: true, status: 200, body, headers: TOKEN_RESPONSE_HEADERS };
}
