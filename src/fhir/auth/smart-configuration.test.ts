import assert from "node:assert/strict";
import { randomUUID, type webcrypto } from "node:crypto";
import { test } from "node:test";
import { importJWK, jwtVerify } from "jose";
import { Net } from "../../contract/testkit.ts";
import { issueBearer } from "./bearer.ts";
import { CLIENT_ASSERTION_TYPE } from "./client-assertion.ts";
import { resolveIdentity } from "./identity.ts";
import { JtiCache } from "./jti-cache.ts";
import { parseScopes, scopeCeiling } from "./scopes.ts";
import { authUrls, nodeBaseUrl, nodeJwks, SCOPES_SUPPORTED, smartConfiguration } from "./smart-configuration.ts";
import { issueToken } from "./token-endpoint.ts";
import { generateLedgerKey, keyIdOf, signClientAssertion } from "./webcrypto-assertion.ts";

test("authUrls: one base, with or without a trailing slash", () => {
  assert.deepEqual(authUrls("http://127.0.0.1:7600/"), {
    tokenUrl: "http://127.0.0.1:7600/auth/token",
    fhirBaseUrl: "http://127.0.0.1:7600/fhir",
    jwksUrl: "http://127.0.0.1:7600/auth/jwks",
  });
  assert.equal(authUrls("https://gp.example.org").tokenUrl, "https://gp.example.org/auth/token");
});

test("smart-configuration describes backend services with private_key_jwt, EdDSA and v2 scopes", () => {
  const doc = smartConfiguration("https://gp.example.org");
  assert.equal(doc.token_endpoint, "https://gp.example.org/auth/token");
  assert.deepEqual(doc.grant_types_supported, ["client_credentials"]);
  assert.deepEqual(doc.token_endpoint_auth_methods_supported, ["private_key_jwt"]);
  assert.ok((doc.token_endpoint_auth_signing_alg_values_supported as string[]).includes("EdDSA"));
  for (const cap of ["client-confidential-asymmetric", "permission-v2"]) {
    assert.ok((doc.capabilities as string[]).includes(cap), cap);
  }
  // Every advertised scope parses and is in some identity's ceiling.
  for (const s of SCOPES_SUPPORTED) {
    const parsed = parseScopes(s);
    assert.ok(parsed.ok && parsed.scopes.length === 1, s);
  }
  assert.ok((doc.purpose_of_use_supported as string[]).includes("TREAT"));
  assert.equal(JSON.parse(JSON.stringify(doc)).token_endpoint, doc.token_endpoint, "plain JSON");
});

test("the JWKS lets a third party verify an access token offline", async () => {
  const net = new Net();
  const node = net.key("node:gp");
  const urls = authUrls("https://gp.example.org");
  const r = resolveIdentity(net.state, net.keyId("clinician:gp"), net.now);
  assert.ok(r.ok);
  const { token } = await issueBearer(
    r.identity,
    { scopes: scopeCeiling(r.identity), purpose: "TREAT" },
    { signer: node, issuer: urls.tokenUrl, audience: urls.fhirBaseUrl, now: () => Date.now() },
  );
  const [jwk] = nodeJwks(node).keys;
  const key = await importJWK(jwk as Record<string, string>, "EdDSA");
  const { payload, protectedHeader } = await jwtVerify(token, key, {
    issuer: urls.tokenUrl,
    audience: urls.fhirBaseUrl,
    typ: "at+jwt",
  });
  assert.equal(protectedHeader.kid, node.keyId);
  assert.equal(payload.sub, net.keyId("clinician:gp"));
  // Another node's key does not verify it.
  const [other] = nodeJwks(net.key("node:trust")).keys;
  await assert.rejects(jwtVerify(token, await importJWK(other as Record<string, string>, "EdDSA")));
});

test("a browser-style client (WebCrypto only, non-extractable key) gets a token once its key is registered", async () => {
  const net = new Net();
  const { privateKey, keyId } = await generateLedgerKey();
  assert.match(keyId, /^[0-9a-f]{64}$/);
  assert.equal(privateKey.extractable, false);
  const urls = authUrls("https://gp.example.org");
  const ctx = {
    state: net.state,
    tokenUrl: urls.tokenUrl,
    fhirBaseUrl: urls.fhirBaseUrl,
    now: () => net.now,
    signer: net.key("node:gp"),
    jtiCache: new JtiCache(),
  };
  const ask = async () =>
    issueToken(
      {
        grant_type: "client_credentials",
        client_assertion_type: CLIENT_ASSERTION_TYPE,
        client_assertion: await signClientAssertion(privateKey, keyId, urls.tokenUrl, { now: net.now }),
        scope: "patient/*.rs",
      },
      ctx,
    );
  const before = await ask();
  assert.equal(before.ok, false, "an unregistered key is nobody");
  const patient = randomUUID();
  net.ok("clinician:gp", "patient.register", { patient, org: "gp-riverside", key: keyId });
  const after = await ask();
  assert.ok(after.ok, after.ok ? "" : after.body.error_description);
  if (after.ok) {
    assert.equal(after.body.patient, patient);
    assert.equal(after.body.scope, "patient/*.rs");
  }
  // keyIdOf agrees with the ledger's own derivation for a known key.
  const pair = (await crypto.subtle.generateKey("Ed25519", true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const jwk = await crypto.subtle.exportKey("jwk", pair.publicKey);
  assert.equal(await keyIdOf(pair.publicKey), Buffer.from(jwk.x as string, "base64url").toString("hex"));
});

test("nodeBaseUrl: wildcard addresses on loopback, IPv6 in brackets", () => {
  assert.equal(nodeBaseUrl({ host: "127.0.0.1", port: 7600 }), "http://127.0.0.1:7600");
  assert.equal(nodeBaseUrl({ host: "0.0.0.0", port: 7601 }), "http://127.0.0.1:7601");
  assert.equal(nodeBaseUrl({ host: "::", port: 80 }), "http://[::1]:80");
  assert.equal(nodeBaseUrl({ host: "fe80::1", port: 80 }), "http://[fe80::1]:80");
  assert.equal(nodeBaseUrl({ host: "gp.example.org", port: 443 }), "http://gp.example.org:443");
});
