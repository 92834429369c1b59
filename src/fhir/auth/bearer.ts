// Access tokens: JWTs (RFC 9068 `at+jwt`) signed by the node key with EdDSA, and their verification on every FHIR
// request. Verification re-resolves the identity in current state each time, so revocation takes effect at once, and
// remembers tokens it has verified (by SHA-256 of the token) so the signature is checked once per token, not once per
// request.

import { hash as digest, randomUUID } from "node:crypto";
import { CompactSign, compactVerify } from "jose";
import type { StateReader } from "../../contract/state.ts";
import { isHex32 } from "../../ledger/encoding.ts";
import { type KeyPair, publicKeyFromKeyId } from "../../ledger/keys.ts";
import { type Identity, resolveIdentity, sameIdentity } from "./identity.ts";
import { contextOf, formatScopes, parseScopes, type Scope, type ScopeContext } from "./scopes.ts";

/** Longest an access token may live, and the default. */
export const MAX_TOKEN_LIFETIME_SEC = 15 * 60;
export const TOKEN_TYPE = "at+jwt";
/** Longest Authorization header looked at (our tokens are ~700 characters). */
const MAX_HEADER_CHARS = 8192;
const REALM = "careledger";

/** Claims of an access token. */
export interface BearerClaims {
  iss: string;
  /** The key id of the caller. */
  sub: string;
  /** The FHIR base URL the token is for. */
  aud: string;
  iat: number;
  exp: number;
  jti: string;
  kind: Identity["kind"];
  scope: string;
  purpose?: string;
  org?: string;
  member?: string;
  role?: string;
  /** Patients: their own pseudonym; proxies: the patient they act for. */
  patient?: string;
  /** Proxies: the proxy appointment id. */
  proxy?: string;
}

/** Who is calling, as the FHIR layer sees it: identity (re-checked against current state), scopes and purpose. */
export interface Principal {
  readonly identity: Identity;
  readonly keyId: string;
  readonly kind: Identity["kind"];
  /** Set for patients and proxies: the only patient whose compartment they may reach. */
  readonly patient?: string;
  /** The scope context the token's scopes are in (patient | user | system). */
  readonly context: ScopeContext;
  readonly scopes: readonly Scope[];
  readonly scope: string;
  readonly purpose?: string;
  readonly tokenId: string;
  /** ms */
  readonly expiresAt: number;
}

export interface IssueBearerContext {
  /** The node key (signs tokens). */
  signer: KeyPair;
  /** `iss` of tokens (the token endpoint's URL). */
  issuer: string;
  /** `aud` of tokens (the FHIR base URL). */
  audience: string;
  /** ms */
  now(): number;
  /** Seconds, ≤ 15 min (default 15 min). */
  lifetimeSec?: number;
}

/** Signs an access token for `identity`. */
export async function issueBearer(
  identity: Identity,
  grant: { scopes: readonly Scope[]; purpose?: string },
  ctx: IssueBearerContext,
): Promise<{ token: string; expiresIn: number; claims: BearerClaims }> {
  const lifetime = ctx.lifetimeSec ?? MAX_TOKEN_LIFETIME_SEC;
  if (!Number.isInteger(lifetime) || lifetime < 1 || lifetime > MAX_TOKEN_LIFETIME_SEC) {
    throw new RangeError(`token lifetime must be 1..${MAX_TOKEN_LIFETIME_SEC} seconds`);
  }
  const iat = Math.floor(ctx.now() / 1000);
  const claims: BearerClaims = {
    iss: ctx.issuer,
    sub: identity.keyId,
    aud: ctx.audience,
    iat,
    exp: iat + lifetime,
    jti: randomUUID(),
    kind: identity.kind,
    scope: formatScopes(grant.scopes),
  };
  if (grant.purpose !== undefined) claims.purpose = grant.purpose;
  switch (identity.kind) {
    case "patient":
      claims.patient = identity.patient;
      break;
    case "proxy":
      claims.patient = identity.patient;
      claims.proxy = identity.proxy;
      break;
    case "member":
      claims.org = identity.org;
      claims.member = identity.member;
      claims.role = identity.role;
      break;
    case "node":
      claims.org = identity.org;
      break;
  }
  const token = await new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: "EdDSA", typ: TOKEN_TYPE, kid: ctx.signer.keyId })
    .sign(ctx.signer.privateKey);
  return { token, expiresIn: lifetime, claims };
}

// ---- verification ---------------------------------------------------------------------------------------------

export type BearerResult =
  | { ok: true; principal: Principal }
  | {
      ok: false;
      status: 401;
      /** Absent when no credentials were sent (RFC 6750 §3.1: then no error code). */
      error?: "invalid_token";
      description: string;
      /** The `WWW-Authenticate` header value to send. */
      wwwAuthenticate: string;
    };

export interface BearerContext {
  state: StateReader;
  /** Expected `iss`. */
  issuer: string;
  /** Expected `aud` (this node's FHIR base URL). */
  audience: string;
  /** The node key id tokens must be signed by. */
  nodeKeyId: string;
  /** ms */
  now(): number;
  /** Verified tokens, so a token's signature is checked once. One per node; safe to share between contexts (entries
   * remember what they were verified for). */
  cache?: BearerCache;
}

interface CacheEntry {
  principal: Principal;
  issuer: string;
  audience: string;
  nodeKeyId: string;
}

/**
 * Tokens already verified, keyed by SHA-256 of the token: a lookup never compares the secret token itself, so
 * timing says nothing about how close a guess came. Bounded; when full the oldest entry goes (tokens have one
 * lifetime, so the oldest is the first to expire; forgetting only costs one more signature check).
 */
export class BearerCache {
  readonly max: number;
  private readonly entries = new Map<string, CacheEntry>();
  constructor(max = 50_000) {
    this.max = max;
  }
  get size(): number {
    return this.entries.size;
  }
  get(hash: string): CacheEntry | undefined {
    return this.entries.get(hash);
  }
  delete(hash: string): void {
    this.entries.delete(hash);
  }
  set(hash: string, entry: CacheEntry): void {
    while (this.entries.size >= this.max) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
    this.entries.set(hash, entry);
  }
}

function failure(description: string, withError = true): BearerResult {
  const error = withError ? `, error="invalid_token", error_description="${description}"` : "";
  return withError
    ? {
        ok: false,
        status: 401,
        error: "invalid_token",
        description,
        wwwAuthenticate: `Bearer realm="${REALM}"${error}`,
      }
    : { ok: false, status: 401, description, wwwAuthenticate: `Bearer realm="${REALM}"` };
}

const NO_TOKEN = failure("a bearer token is required", false);
const INVALID = failure("the access token is invalid");
const EXPIRED = failure("the access token has expired");
const INACTIVE = failure("the identity of this access token is no longer active");

const BEARER = /^Bearer +([A-Za-z0-9._~+/-]+=*) *$/i;

/**
 * Checks an `Authorization` header and returns who is calling, or the 401 to send. Refuses tokens that are
 * malformed, not signed by this node's key with EdDSA, not `at+jwt`, for another issuer or audience, expired, or
 * whose identity is no longer active in `state` (revoked key or member, suspended org, erased patient, ended proxy).
 */
export async function verifyBearer(header: string | undefined, ctx: BearerContext): Promise<BearerResult> {
  if (header === undefined || header === "") return NO_TOKEN;
  if (header.length > MAX_HEADER_CHARS) return INVALID;
  const m = BEARER.exec(header);
  if (m === null) return /^bearer\b/i.test(header) ? INVALID : NO_TOKEN;
  const token = m[1] as string;
  const now = ctx.now();
  // One-shot: a Hash object costs more than the digest of a token (this runs on every request).
  const hash = digest("sha256", token, "base64url");
  const hit = ctx.cache?.get(hash);
  if (
    hit !== undefined &&
    hit.issuer === ctx.issuer &&
    hit.audience === ctx.audience &&
    hit.nodeKeyId === ctx.nodeKeyId
  ) {
    if (hit.principal.expiresAt <= now) {
      ctx.cache?.delete(hash);
      return EXPIRED;
    }
    return stillActive(ctx.state, hit.principal, now) ? { ok: true, principal: hit.principal } : INACTIVE;
  }
  const checked = await verifyToken(token, ctx, now);
  if (!checked.ok) return checked;
  ctx.cache?.set(hash, {
    principal: checked.principal,
    issuer: ctx.issuer,
    audience: ctx.audience,
    nodeKeyId: ctx.nodeKeyId,
  });
  return checked;
}

function stillActive(state: StateReader, p: Principal, now: number): boolean {
  const r = resolveIdentity(state, p.keyId, now, p.patient);
  return r.ok && sameIdentity(r.identity, p.identity);
}

async function verifyToken(token: string, ctx: BearerContext, now: number): Promise<BearerResult> {
  let payload: Uint8Array;
  try {
    const verified = await compactVerify(token, publicKeyFromKeyId(ctx.nodeKeyId), { algorithms: ["EdDSA"] });
    if (verified.protectedHeader.typ !== TOKEN_TYPE) return INVALID;
    payload = verified.payload;
  } catch {
    return INVALID;
  }
  let claims: Partial<BearerClaims>;
  try {
    claims = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    return INVALID;
  }
  if (typeof claims !== "object" || claims === null) return INVALID;
  if (claims.iss !== ctx.issuer || claims.aud !== ctx.audience) return INVALID;
  if (typeof claims.exp !== "number" || typeof claims.jti !== "string" || typeof claims.sub !== "string") {
    return INVALID;
  }
  if (claims.exp * 1000 <= now) return EXPIRED;
  if (!isHex32(claims.sub) || typeof claims.scope !== "string") return INVALID;
  if (claims.purpose !== undefined && typeof claims.purpose !== "string") return INVALID;
  const kind = claims.kind;
  if (kind !== "patient" && kind !== "proxy" && kind !== "member" && kind !== "node") return INVALID;
  const scopes = parseScopes(claims.scope);
  if (!scopes.ok) return INVALID;
  const resolved = resolveIdentity(
    ctx.state,
    claims.sub,
    now,
    kind === "patient" || kind === "proxy" ? claims.patient : undefined,
  );
  if (!resolved.ok) return INACTIVE;
  const identity = resolved.identity;
  if (!matchesClaims(identity, claims)) return INACTIVE;
  const principal: Principal = Object.freeze({
    identity,
    keyId: identity.keyId,
    kind: identity.kind,
    ...(identity.kind === "patient" || identity.kind === "proxy" ? { patient: identity.patient } : {}),
    context: contextOf(identity.kind),
    scopes: Object.freeze(scopes.scopes),
    scope: claims.scope,
    ...(claims.purpose !== undefined ? { purpose: claims.purpose } : {}),
    tokenId: claims.jti,
    expiresAt: claims.exp * 1000,
  });
  return { ok: true, principal };
}

/** The identity resolved now is the one the token was issued to (same kind, org, role, patient, proxy). */
function matchesClaims(id: Identity, c: Partial<BearerClaims>): boolean {
  if (id.kind !== c.kind) return false;
  switch (id.kind) {
    case "patient":
      return c.patient === id.patient;
    case "proxy":
      return c.patient === id.patient && c.proxy === id.proxy;
    case "member":
      return c.org === id.org && c.member === id.member && c.role === id.role;
    case "node":
      return c.org === id.org;
  }
}

/** A 403 for a valid token whose scopes do not cover the request (RFC 6750 §3.1 `insufficient_scope`). */
export function insufficientScope(needed: string): { status: 403; wwwAuthenticate: string; description: string } {
  const description = `the access token's scopes do not allow this request (needs ${needed})`;
  return {
    status: 403,
    description,
    wwwAuthenticate: `Bearer realm="${REALM}", error="insufficient_scope", scope="${needed}"`,
  };
}
