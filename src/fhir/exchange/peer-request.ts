// Node-to-node record requests: a clinician at node B asks custodian A for what A holds of a patient. B's NODE key
// signs the request (EdDSA compact JWS, as the token endpoint's assertions: the key id is the raw public key, so A
// needs no registry to check the signature); it names the practitioner, their role, the purpose and the patient.
// A trusts B's node to have authenticated its own practitioner (as it trusts B's node to sign B's anchors), and checks
// everything else itself on its own copy of the ledger: the signer is an active node key of an active organisation,
// the practitioner an active member of THAT organisation with that role and a purpose the role may use, the request
// fresh (≤ 60 s), for A (aud = A's org id) and used once (jti).

import { randomUUID } from "node:crypto";
import { CompactSign, compactVerify, decodeProtectedHeader } from "jose";
import { Type } from "typebox";
import { Compile } from "typebox/compile";
import { OrgId, Uuid } from "../../contract/schemas.ts";
import { read, type StateReader } from "../../contract/state.ts";
import { isHex32 } from "../../ledger/encoding.ts";
import { type KeyPair, publicKeyFromKeyId } from "../../ledger/keys.ts";
import type { Principal } from "../auth/bearer.ts";
import type { JtiCache } from "../auth/jti-cache.ts";
import { contextOf, formatScopes, intersectScopes, parseScopes, resolvePurpose, scopeCeiling } from "../auth/scopes.ts";

/** JWS `typ` of a peer request (so no other signed object of a node key can pass for one). */
export const PEER_REQUEST_TYPE = "careledger-peer+jwt";
/** Longest a peer request may live (exp − iat), in seconds. */
export const MAX_PEER_REQUEST_LIFETIME_SEC = 60;
/** Clock skew allowed between nodes for `iat`, in seconds. */
const SKEW_SEC = 30;
/** Longest compact JWS looked at (a request is ~900 characters). */
export const MAX_PEER_REQUEST_CHARS = 8192;

const ResourceType = Type.String({ pattern: "^[A-Z][A-Za-z]{1,63}$", maxLength: 64 });

const PeerClaimsSchema = Type.Object(
  {
    /** The requesting node's key id. */
    iss: Type.String({ pattern: "^[0-9a-f]{64}$", minLength: 64, maxLength: 64 }),
    /** The custodian's org id. */
    aud: OrgId,
    iat: Type.Integer({ minimum: 0 }),
    exp: Type.Integer({ minimum: 0 }),
    jti: Type.String({ minLength: 8, maxLength: 64, pattern: "^[A-Za-z0-9_-]+$" }),
    /** The requesting organisation (the node key's and the practitioner's). */
    org: OrgId,
    /** Member id of the practitioner at the requesting organisation. */
    practitioner: Uuid,
    role: Type.String({ pattern: "^[a-z]{2,16}$", maxLength: 16 }),
    purpose: Type.String({ pattern: "^[A-Z]{2,16}$", maxLength: 16 }),
    /** The patient's pseudonym. */
    patient: Uuid,
    /** Only these resource types (`_type` of `$everything`); absent = all. */
    types: Type.Optional(Type.Array(ResourceType, { minItems: 1, maxItems: 64 })),
  },
  { additionalProperties: false },
);

export interface PeerClaims {
  iss: string;
  aud: string;
  iat: number;
  exp: number;
  jti: string;
  org: string;
  practitioner: string;
  role: string;
  purpose: string;
  patient: string;
  types?: string[];
}

const checkClaims = Compile(PeerClaimsSchema);

/** What a requesting node asks: for whom, about whom, of whom. */
export interface PeerQuery {
  /** The custodian's org id (`aud`). */
  custodian: string;
  /** The requesting organisation (this node's). */
  org: string;
  practitioner: string;
  role: string;
  purpose: string;
  patient: string;
  types?: readonly string[];
}

export interface SignOptions {
  /** ms (default Date.now()). */
  now?: number;
  /** Seconds (default 30, at most 60). */
  lifetimeSec?: number;
  jti?: string;
}

/** Signs a peer request with the requesting node's key: a compact JWS of the claims. */
export async function signPeerRequest(nodeKey: KeyPair, query: PeerQuery, options: SignOptions = {}): Promise<string> {
  const lifetime = options.lifetimeSec ?? 30;
  if (!Number.isInteger(lifetime) || lifetime < 1 || lifetime > MAX_PEER_REQUEST_LIFETIME_SEC) {
    throw new RangeError(`a peer request lives 1..${MAX_PEER_REQUEST_LIFETIME_SEC} seconds`);
  }
  const iat = Math.floor((options.now ?? Date.now()) / 1000);
  const claims: PeerClaims = {
    iss: nodeKey.keyId,
    aud: query.custodian,
    iat,
    exp: iat + lifetime,
    jti: options.jti ?? randomUUID(),
    org: query.org,
    practitioner: query.practitioner,
    role: query.role,
    purpose: query.purpose,
    patient: query.patient,
  };
  if (query.types !== undefined) claims.types = [...query.types];
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: "EdDSA", typ: PEER_REQUEST_TYPE, kid: nodeKey.keyId })
    .sign(nodeKey.privateKey);
}

/**
 * Why a request was refused. `malformed` (400), `signature`/`expired`/`audience` (401), `signer` (not an active node
 * key of an active org), `practitioner` (not an active member of the signer's org with that role), `purpose` (the
 * role may not use it) (403), `replay` (409), `busy` (503: the jti cache is full; refused rather than forgotten).
 */
export type PeerRefusal =
  | "malformed"
  | "signature"
  | "expired"
  | "audience"
  | "signer"
  | "practitioner"
  | "purpose"
  | "replay"
  | "busy";

const STATUS: Record<PeerRefusal, number> = {
  malformed: 400,
  signature: 401,
  expired: 401,
  audience: 401,
  signer: 403,
  practitioner: 403,
  purpose: 403,
  replay: 409,
  busy: 503,
};

const MESSAGE: Record<PeerRefusal, string> = {
  malformed: "the peer request is malformed",
  signature: "the peer request's signature does not verify",
  expired: "the peer request has expired or is not yet valid",
  audience: "the peer request is for another custodian",
  signer: "the peer request is not signed by an active node of an active organisation",
  practitioner: "the practitioner is not an active member of the requesting organisation with that role",
  purpose: "the practitioner's role may not use that purpose",
  replay: "the peer request was already used",
  busy: "too many peer requests in flight; retry shortly",
};

export type PeerVerification =
  | { ok: true; claims: PeerClaims; principal: Principal }
  | { ok: false; reason: PeerRefusal; status: number; message: string };

export interface VerifyPeerContext {
  /** The custodian's ledger state. */
  state: StateReader;
  /** The custodian's org id: the expected `aud`. */
  orgId: string;
  /** ms */
  now(): number;
  jtiCache: JtiCache;
}

const refuse = (reason: PeerRefusal): PeerVerification => ({
  ok: false,
  reason,
  status: STATUS[reason],
  message: MESSAGE[reason],
});

/**
 * Checks a peer request and returns the practitioner as a read-only principal: `user/*.rs` limited to what their
 * role's ceiling allows, with the request's purpose — so the custodian decides each record exactly as it would for
 * that practitioner's own token. The jti is spent last, only by requests that passed every other check.
 */
export async function verifyPeerRequest(jws: string, ctx: VerifyPeerContext): Promise<PeerVerification> {
  if (typeof jws !== "string" || jws.length > MAX_PEER_REQUEST_CHARS) return refuse("malformed");
  let kid: unknown;
  try {
    const header = decodeProtectedHeader(jws);
    if (header.alg !== "EdDSA" || header.typ !== PEER_REQUEST_TYPE) return refuse("malformed");
    kid = header.kid;
  } catch {
    return refuse("malformed");
  }
  if (typeof kid !== "string" || !isHex32(kid)) return refuse("malformed");
  let payload: Uint8Array;
  try {
    payload = (await compactVerify(jws, publicKeyFromKeyId(kid), { algorithms: ["EdDSA"] })).payload;
  } catch {
    return refuse("signature");
  }
  let claims: unknown;
  try {
    claims = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    return refuse("malformed");
  }
  if (!checkClaims.Check(claims)) return refuse("malformed");
  const c = claims as PeerClaims;
  if (c.iss !== kid) return refuse("malformed");
  if (c.aud !== ctx.orgId) return refuse("audience");
  const now = ctx.now();
  const nowSec = now / 1000;
  if (c.exp <= nowSec || c.iat > nowSec + SKEW_SEC || c.exp - c.iat > MAX_PEER_REQUEST_LIFETIME_SEC) {
    return refuse("expired");
  }
  // The signer: an active node key, listed by its org, the org active and the one the request names.
  const signer = read.key(ctx.state, kid);
  if (signer?.kind !== "node" || signer.status !== "active" || signer.org !== c.org) return refuse("signer");
  const org = read.org(ctx.state, c.org);
  if (org === undefined || org.status !== "active" || !org.nodes.includes(kid)) return refuse("signer");
  // The practitioner: an active member of that org, with that role, whose key is active.
  const member = read.member(ctx.state, c.practitioner);
  if (member === undefined || member.status !== "active" || member.org !== c.org || member.role !== c.role) {
    return refuse("practitioner");
  }
  const memberKey = read.key(ctx.state, member.key);
  if (memberKey?.kind !== "member" || memberKey.status !== "active" || memberKey.member !== member.id) {
    return refuse("practitioner");
  }
  const purpose = resolvePurpose({ kind: "member", role: member.role }, c.purpose);
  if (!purpose.ok || purpose.purpose !== c.purpose) return refuse("purpose");
  const requested = parseScopes("user/*.rs");
  if (!requested.ok) return refuse("malformed");
  const scopes = intersectScopes(requested.scopes, scopeCeiling({ kind: "member", role: member.role }));
  switch (ctx.jtiCache.use(kid, c.jti, c.exp * 1000, now)) {
    case "replay":
      return refuse("replay");
    case "full":
      return refuse("busy");
    case "ok":
      break;
  }
  const principal: Principal = Object.freeze({
    identity: { kind: "member" as const, keyId: member.key, member: member.id, org: member.org, role: member.role },
    keyId: member.key,
    kind: "member",
    context: contextOf("member"),
    scopes: Object.freeze(scopes),
    scope: formatScopes(scopes),
    purpose: c.purpose,
    tokenId: c.jti,
    expiresAt: c.exp * 1000,
  });
  return { ok: true, claims: c, principal };
}
