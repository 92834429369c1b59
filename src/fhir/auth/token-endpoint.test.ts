import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { decodeJwt, decodeProtectedHeader, SignJWT } from "jose";
import { DAY, Net } from "../../contract/testkit.ts";
import { fromHex } from "../../ledger/encoding.ts";
import type { KeyPair } from "../../ledger/keys.ts";
import { type BearerClaims, verifyBearer } from "./bearer.ts";
import { CLIENT_ASSERTION_TYPE, createClientAssertion, tokenRequestForm } from "./client-assertion.ts";
import { JtiCache } from "./jti-cache.ts";
import { authUrls } from "./smart-configuration.ts";
import { CLIENT_AUTH_FAILED, issueToken, type TokenContext, type TokenResult } from "./token-endpoint.ts";

const { tokenUrl: TOKEN_URL, fhirBaseUrl: FHIR } = authUrls("https://gp.example.org/");

function ctxFor(net: Net, extra: Partial<TokenContext> = {}): TokenContext {
  return {
    state: net.state,
    tokenUrl: TOKEN_URL,
    fhirBaseUrl: FHIR,
    now: () => net.now,
    signer: net.key("node:gp"),
    jtiCache: new JtiCache(),
    ...extra,
  };
}

async function request(net: Net, label: string, fields: Record<string, string> = {}, ctx = ctxFor(net)) {
  const form = await tokenRequestForm(net.key(label), TOKEN_URL, { now: net.now });
  return issueToken({ ...form, ...fields }, ctx);
}

function ok(r: TokenResult) {
  if (!r.ok) throw new Error(`refused: ${r.body.error}: ${r.body.error_description}`);
  return r.body;
}

function refused(r: TokenResult, error: string, status: number, description?: string | RegExp): void {
  assert.equal(r.ok, false, "expected a refusal");
  if (r.ok) return;
  assert.equal(r.body.error, error, r.body.error_description);
  assert.equal(r.status, status);
  assert.equal(r.headers["cache-control"], "no-store");
  if (typeof description === "string") assert.equal(r.body.error_description, description);
  else if (description) assert.match(r.body.error_description, description);
}

/** A hand-made assertion: claims and header as given (defaults: a valid one for `kp`). */
async function assertion(
  kp: KeyPair,
  now: number,
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
): Promise<string> {
  const t = Math.floor(now / 1000);
  return new SignJWT({
    iss: kp.keyId,
    sub: kp.keyId,
    aud: TOKEN_URL,
    iat: t,
    exp: t + 60,
    jti: randomUUID(),
    ...claims,
  })
    .setProtectedHeader({ alg: "EdDSA", ...header })
    .sign(kp.privateKey);
}

function form(clientAssertion: string, fields: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    grant_type: "client_credentials",
    client_assertion_type: CLIENT_ASSERTION_TYPE,
    client_assertion: clientAssertion,
    ...fields,
  };
}

async function bearerClaims(net: Net, token: string, ctx = ctxFor(net)) {
  const header = decodeProtectedHeader(token);
  assert.equal(header.alg, "EdDSA");
  assert.equal(header.typ, "at+jwt");
  const v = await verifyBearer(`Bearer ${token}`, {
    state: ctx.state,
    issuer: TOKEN_URL,
    audience: FHIR,
    nodeKeyId: ctx.signer.keyId,
    now: ctx.now,
  });
  assert.ok(v.ok, "the issued token verifies");
  return { claims: decodeJwt(token) as unknown as BearerClaims, principal: v.ok ? v.principal : undefined };
}

// ---- happy paths, one per identity kind ------------------------------------------------------------------------

test("patient: own record, patient/ scopes, PATRQT, patient in context", async () => {
  const net = new Net();
  const p = net.patient(1);
  const body = ok(await request(net, p.label));
  assert.equal(body.token_type, "Bearer");
  assert.equal(body.expires_in, 900);
  assert.equal(body.scope, "patient/*.rs patient/Consent.cruds");
  assert.equal(body.purpose, "PATRQT");
  assert.equal(body.patient, p.id);
  const { claims, principal } = await bearerClaims(net, body.access_token);
  assert.equal(claims.sub, p.keyId);
  assert.equal(claims.kind, "patient");
  assert.equal(claims.patient, p.id);
  assert.equal(claims.aud, FHIR);
  assert.equal(claims.iss, TOKEN_URL);
  assert.ok(claims.exp - claims.iat <= 900);
  assert.equal(principal?.context, "patient");
  assert.equal(principal?.patient, p.id);
});

test("patient: a narrower request is honoured, an excessive one cut down, naming the patient's own id is fine", async () => {
  const net = new Net();
  const p = net.patient(3);
  assert.equal(ok(await request(net, p.label, { scope: "patient/Observation.rs" })).scope, "patient/Observation.rs");
  assert.equal(
    ok(await request(net, p.label, { scope: "patient/*.cruds user/*.rs" })).scope,
    "patient/*.rs patient/Consent.cruds",
  );
  assert.equal(ok(await request(net, p.label, { scope: "patient/*.read", patient: p.id })).patient, p.id);
});

test("proxy: names the patient; view gets read only, manage also manages consent", async () => {
  const net = new Net();
  const parent = net.patient(0); // manage, parental
  const carer = net.patient(2); // view
  const m = ok(await request(net, "proxy:parent-0", { patient: parent.id }));
  assert.equal(m.scope, "patient/*.rs patient/Consent.cruds");
  assert.equal(m.patient, parent.id);
  assert.equal(m.purpose, "PATRQT");
  const { claims, principal } = await bearerClaims(net, m.access_token);
  assert.equal(claims.kind, "proxy");
  assert.equal(claims.proxy, parent.proxy?.id);
  assert.equal(principal?.kind, "proxy");
  const v = ok(await request(net, "proxy:carer-2", { patient: carer.id, scope: "patient/*.cruds" }));
  assert.equal(v.scope, "patient/*.rs");
});

test("proxy: another patient, an unknown one, or after a parental proxy ended → one invalid_grant", async () => {
  const net = new Net();
  const parent = net.patient(0);
  const r1 = await request(net, "proxy:parent-0", { patient: net.patient(1).id });
  const r2 = await request(net, "proxy:parent-0", { patient: randomUUID() });
  refused(r1, "invalid_grant", 400);
  refused(r2, "invalid_grant", 400);
  assert.deepEqual(r1.body, r2.body, "no oracle on which patients exist");
  // Without naming a patient, a proxy key alone is nobody.
  refused(await request(net, "proxy:parent-0"), "invalid_client", 401, CLIENT_AUTH_FAILED);
  const ended = (parent.proxy?.endsAt as number) + DAY;
  const later = ctxFor(net, { now: () => ended });
  const form = await tokenRequestForm(net.key("proxy:parent-0"), TOKEN_URL, { now: ended, patient: parent.id });
  refused(await issueToken(form, later), "invalid_grant", 400);
});

test("clinician and nurse: user/*.crus, TREAT by default, ETREAT on request", async () => {
  const net = new Net();
  const c = ok(await request(net, "clinician:gp"));
  assert.equal(c.scope, "user/*.crus");
  assert.equal(c.purpose, "TREAT");
  assert.equal(c.patient, undefined);
  const { claims, principal } = await bearerClaims(net, c.access_token);
  assert.equal(claims.kind, "member");
  assert.equal(claims.role, "clinician");
  assert.equal(claims.org, "gp-riverside");
  assert.equal(claims.member, net.member("clinician:gp"));
  assert.equal(principal?.context, "user");
  assert.equal(ok(await request(net, "nurse:gp", { purpose: "ETREAT" })).purpose, "ETREAT");
  assert.equal(ok(await request(net, "clinician:gp", { scope: "user/Observation.rs" })).scope, "user/Observation.rs");
});

test("researcher: read only, HRESCH by default; TREAT is refused", async () => {
  const net = new Net();
  const r = ok(await request(net, "researcher:uni", { scope: "user/*.cruds" }));
  assert.equal(r.scope, "user/*.rs");
  assert.equal(r.purpose, "HRESCH");
  assert.equal(ok(await request(net, "researcher:uni", { purpose: "CLINTRCH" })).purpose, "CLINTRCH");
  refused(await request(net, "researcher:uni", { purpose: "TREAT" }), "invalid_scope", 400, /TREAT/);
});

test("admin: directory resources only, no purpose; clinical scopes and purposes are refused", async () => {
  const net = new Net();
  const a = ok(await request(net, "admin:gp"));
  assert.equal(a.scope, "user/AuditEvent.rs user/Organization.rs user/Practitioner.rs user/PractitionerRole.rs");
  assert.equal(a.purpose, undefined);
  assert.equal((await bearerClaims(net, a.access_token)).claims.purpose, undefined);
  refused(await request(net, "admin:gp", { scope: "user/Observation.rs" }), "invalid_scope", 400);
  refused(await request(net, "admin:gp", { purpose: "TREAT" }), "invalid_scope", 400);
});

test("node: system/*.rs, no purpose", async () => {
  const net = new Net();
  const n = ok(await request(net, "node:trust"));
  assert.equal(n.scope, "system/*.rs");
  assert.equal(n.purpose, undefined);
  const { claims, principal } = await bearerClaims(net, n.access_token);
  assert.equal(claims.kind, "node");
  assert.equal(claims.org, "trust-northgate");
  assert.equal(principal?.context, "system");
  refused(await request(net, "node:trust", { scope: "user/*.rs" }), "invalid_scope", 400);
});

test("client_id, when sent, must be the assertion's issuer", async () => {
  const net = new Net();
  const kp = net.key("clinician:gp");
  assert.ok((await request(net, "clinician:gp", { client_id: kp.keyId })).ok);
  refused(await request(net, "clinician:gp", { client_id: net.keyId("nurse:gp") }), "invalid_client", 401);
});

// ---- refusals: the assertion ------------------------------------------------------------------------------------

test("bad signature: signed by another key in the victim's name", async () => {
  const net = new Net();
  const victim = net.key("clinician:gp");
  const mallory = net.key("mallory");
  const forged = await new SignJWT({ jti: randomUUID() })
    .setProtectedHeader({ alg: "EdDSA" })
    .setIssuer(victim.keyId)
    .setSubject(victim.keyId)
    .setAudience(TOKEN_URL)
    .setExpirationTime(Math.floor(net.now / 1000) + 60)
    .sign(mallory.privateKey);
  refused(await issueToken(form(forged), ctxFor(net)), "invalid_client", 401, CLIENT_AUTH_FAILED);
  // A valid assertion with one signature byte flipped.
  const good = await createClientAssertion(victim, TOKEN_URL, { now: net.now });
  const [h, p, s] = good.split(".") as [string, string, string];
  const sig = Buffer.from(s, "base64url");
  sig[0] = (sig[0] as number) ^ 1;
  refused(
    await issueToken(form(`${h}.${p}.${sig.toString("base64url")}`), ctxFor(net)),
    "invalid_client",
    401,
    CLIENT_AUTH_FAILED,
  );
  // A payload changed after signing (another jti).
  const payload = Buffer.from(JSON.stringify({ ...decodeJwt(good), jti: "x" })).toString("base64url");
  refused(await issueToken(form(`${h}.${payload}.${s}`), ctxFor(net)), "invalid_client", 401, CLIENT_AUTH_FAILED);
});

test("wrong algorithms: none, and HS256 keyed with the public key", async () => {
  const net = new Net();
  const kp = net.key("clinician:gp");
  const t = Math.floor(net.now / 1000);
  const claims = { iss: kp.keyId, sub: kp.keyId, aud: TOKEN_URL, exp: t + 60, jti: randomUUID() };
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const none = `${b64({ alg: "none", typ: "JWT" })}.${b64(claims)}.`;
  refused(await issueToken(form(none), ctxFor(net)), "invalid_client", 401, /EdDSA/);
  for (const secret of [fromHex(kp.keyId), new TextEncoder().encode(kp.keyId)]) {
    const hs = await new SignJWT({ ...claims, jti: randomUUID() }).setProtectedHeader({ alg: "HS256" }).sign(secret);
    refused(await issueToken(form(hs), ctxFor(net)), "invalid_client", 401, /EdDSA/);
  }
  // An EdDSA header on an HS256 MAC does not get through either.
  const hs = await new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(fromHex(kp.keyId));
  const [, p, s] = hs.split(".");
  refused(
    await issueToken(form(`${b64({ alg: "EdDSA" })}.${p}.${s}`), ctxFor(net)),
    "invalid_client",
    401,
    CLIENT_AUTH_FAILED,
  );
});

test("claims: wrong aud, sub ≠ iss, no exp, expired, exp too far ahead, iat/nbf in the future, no jti", async () => {
  const net = new Net();
  const kp = net.key("clinician:gp");
  const t = Math.floor(net.now / 1000);
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ aud: "https://other.example.org/auth/token" }, /aud/],
    [{ aud: [TOKEN_URL, "https://other.example.org/auth/token"] }, /aud/],
    [{ aud: FHIR }, /aud/],
    [{ sub: net.keyId("nurse:gp") }, /sub/],
    [{ exp: undefined }, /exp/],
    [{ exp: "soon" }, /exp/],
    [{ exp: t - 120 }, /expired/],
    [{ exp: t + 6 * 60 }, /at most 300 s/],
    [{ iat: t + 120 }, /iat/],
    [{ nbf: t + 120 }, /nbf/],
    [{ jti: undefined }, /jti/],
    [{ jti: "" }, /jti/],
    [{ jti: "x".repeat(300) }, /jti/],
  ];
  for (const [claims, description] of cases) {
    const r = await issueToken(form(await assertion(kp, net.now, claims)), ctxFor(net));
    refused(r, "invalid_client", 401, description);
  }
  // Within the tolerated skew and limits: accepted.
  assert.ok((await issueToken(form(await assertion(kp, net.now, { exp: t + 300, iat: t + 10 })), ctxFor(net))).ok);
  assert.ok((await issueToken(form(await assertion(kp, net.now, { aud: [TOKEN_URL] })), ctxFor(net))).ok);
});

test("jti is single use per client while the assertion lives; the same jti from another client is its own", async () => {
  const net = new Net();
  const ctx = ctxFor(net);
  const kp = net.key("clinician:gp");
  const a = await assertion(kp, net.now, { jti: "once" });
  assert.ok((await issueToken(form(a), ctx)).ok);
  refused(await issueToken(form(a), ctx), "invalid_client", 401, /already used/);
  // A fresh assertion reusing the jti is a replay too.
  refused(
    await issueToken(form(await assertion(kp, net.now, { jti: "once" })), ctx),
    "invalid_client",
    401,
    /already used/,
  );
  assert.ok((await issueToken(form(await assertion(net.key("nurse:gp"), net.now, { jti: "once" })), ctx)).ok);
});

test("jti cache full: refuse rather than forget, recover once entries expire", async () => {
  const net = new Net();
  const ctx = ctxFor(net, { jtiCache: new JtiCache({ max: 3, maxPerClient: 2 }) });
  const c = net.key("clinician:gp");
  assert.ok((await issueToken(form(await assertion(c, net.now)), ctx)).ok);
  assert.ok((await issueToken(form(await assertion(c, net.now)), ctx)).ok);
  refused(await issueToken(form(await assertion(c, net.now)), ctx), "temporarily_unavailable", 503, /retry/);
  assert.ok((await issueToken(form(await assertion(net.key("nurse:gp"), net.now)), ctx)).ok);
  refused(await issueToken(form(await assertion(net.key("admin:gp"), net.now)), ctx), "temporarily_unavailable", 503);
  // After the assertions' exp (+ skew) they can be forgotten.
  const later = net.now + 2 * 60_000;
  const ctxLater = { ...ctx, now: () => later };
  assert.ok((await issueToken(form(await assertion(c, later)), ctxLater)).ok);
  assert.ok(ctx.jtiCache.size <= 3);
});

// ---- refusals: who the key is -----------------------------------------------------------------------------------

test("unknown key, revoked member, rotated-away key, suspended org, erased patient: one generic invalid_client", async () => {
  const net = new Net();
  const outcomes: TokenResult[] = [];
  outcomes.push(await request(net, "stranger"));

  net.ok("admin:gp", "member.revoke", { member: net.member("nurse:gp") });
  outcomes.push(await request(net, "nurse:gp"));

  net.ok("clinician:gp", "key.rotate", { old: net.keyId("clinician:gp"), new: net.keyId("clinician:gp:new") });
  outcomes.push(await request(net, "clinician:gp"));
  assert.ok((await request(net, "clinician:gp:new")).ok, "the new key works");

  net.ok("admin:trust", "org.suspend", { org: "trust-northgate", action: "suspend", reason: "audit" });
  outcomes.push(await request(net, "clinician:trust-ae"));
  outcomes.push(await request(net, "node:trust"));

  const p = net.patient(4);
  net.ok("node:gp", "record.erase", { custodian: "gp-riverside", patient: p.id, resources: [], erasePatient: true });
  outcomes.push(await request(net, p.label));
  outcomes.push(await request(net, p.label, { patient: p.id }));

  for (const r of outcomes) refused(r, "invalid_client", 401, CLIENT_AUTH_FAILED);
  const bodies = new Set(outcomes.map((r) => JSON.stringify(r.body)));
  assert.equal(bodies.size, 1, "no oracle on which it was");
});

// ---- refusals: the form -----------------------------------------------------------------------------------------

test("malformed forms", async () => {
  const net = new Net();
  const a = await assertion(net.key("clinician:gp"), net.now);
  const ctx = ctxFor(net);
  refused(await issueToken({}, ctx), "invalid_request", 400, /grant_type/);
  refused(await issueToken(form(a, { grant_type: "authorization_code" }), ctx), "unsupported_grant_type", 400);
  refused(
    await issueToken(form(a, { grant_type: ["client_credentials", "client_credentials"] }), ctx),
    "invalid_request",
    400,
    /once/,
  );
  refused(await issueToken(form(a, { client_assertion_type: "urn:x" }), ctx), "invalid_request", 400);
  refused(await issueToken(form(a, { client_assertion_type: undefined }), ctx), "invalid_request", 400);
  refused(await issueToken(form(""), ctx), "invalid_request", 400, /client_assertion/);
  refused(await issueToken(form("x".repeat(9000)), ctx), "invalid_request", 400, /too long/);
  refused(await issueToken(form("not-a-jwt"), ctx), "invalid_client", 401, /not a JWT/);
  refused(await issueToken(form("a.b.c"), ctx), "invalid_client", 401);
  refused(await issueToken(form(a, { scope: 7 }), ctx), "invalid_request", 400, /scope/);
  refused(await issueToken(form(a, { patient: "Patient/1' OR 1=1" }), ctx), "invalid_request", 400, /patient/);
  refused(await issueToken(form(a, { purpose: "TREAT OR 1" }), ctx), "invalid_request", 400, /purpose/);
  refused(await issueToken(null as unknown as Record<string, unknown>, ctx), "invalid_request", 400);
  // iss that is not a key id.
  const t = Math.floor(net.now / 1000);
  const odd = await new SignJWT({ iss: "admin", sub: "admin", aud: TOKEN_URL, exp: t + 60, jti: "j" })
    .setProtectedHeader({ alg: "EdDSA" })
    .sign(net.key("admin:gp").privateKey);
  refused(await issueToken(form(odd), ctx), "invalid_client", 401, CLIENT_AUTH_FAILED);
});

test("bad scopes: malformed, or nothing grantable", async () => {
  const net = new Net();
  refused(
    await request(net, "clinician:gp", { scope: "user/*.rs user/Observation.sr" }),
    "invalid_scope",
    400,
    /user\/Observation\.sr/,
  );
  refused(await request(net, "clinician:gp", { scope: "patient/*.rs" }), "invalid_scope", 400, /none of the requested/);
  refused(await request(net, "clinician:gp", { scope: "openid fhirUser" }), "invalid_scope", 400);
  refused(await request(net, "clinician:gp", { scope: "user/*.d" }), "invalid_scope", 400);
});

test("every refusal and success is answered without throwing, for any string fields", async () => {
  const net = new Net();
  const ctx = ctxFor(net);
  const junk = ["", " ", "\u0000", "é", "a.b", "..", "eyJ.eyJ.", "%", "{}", "[]", "Bearer x", "x".repeat(5000)];
  for (const j of junk) {
    for (const name of [
      "grant_type",
      "client_assertion_type",
      "client_assertion",
      "client_id",
      "scope",
      "purpose",
      "patient",
    ]) {
      const r = await issueToken(form(await assertion(net.key("clinician:gp"), net.now), { [name]: j }), ctx);
      assert.ok(typeof r.status === "number");
    }
  }
});
