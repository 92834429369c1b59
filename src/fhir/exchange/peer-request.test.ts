// Signing and checking node-to-node record requests against a real contract state (the fixture network: GP practice,
// hospital trust, university), with real Ed25519 keys.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CompactSign } from "jose";
import { Net } from "../../contract/testkit.ts";
import { keyPairFromSeed } from "../../ledger/keys.ts";
import { JtiCache } from "../auth/jti-cache.ts";
import { scopesAllow } from "../auth/scopes.ts";
import { PEER_REQUEST_TYPE, type PeerQuery, signPeerRequest, verifyPeerRequest } from "./peer-request.ts";

const n = new Net();
const GP = n.sc.orgs.gp.id;
const TRUST = n.sc.orgs.trust.id;
const member = (label: string) => n.sc.members[label] as { id: string; role: string; keyId: string };

function query(over: Partial<PeerQuery> = {}): PeerQuery {
  return {
    custodian: TRUST,
    org: GP,
    practitioner: member("clinician:gp").id,
    role: "clinician",
    purpose: "TREAT",
    patient: n.patient(1).id,
    ...over,
  };
}

const at = () => n.now;
function verify(jws: string, cache = new JtiCache(), orgId = TRUST, now = at()) {
  return verifyPeerRequest(jws, { state: n.state, orgId, now: () => now, jtiCache: cache });
}

describe("peer requests", () => {
  test("a GP node's request for its clinician verifies at the trust as that clinician, read-only", async () => {
    const jws = await signPeerRequest(n.key("node:gp"), query({ types: ["Observation"] }), { now: at() });
    const r = await verify(jws);
    assert.ok(r.ok, r.ok ? "" : r.reason);
    assert.equal(r.principal.keyId, member("clinician:gp").keyId);
    assert.equal(r.principal.kind, "member");
    assert.equal(r.principal.purpose, "TREAT");
    assert.equal(r.principal.context, "user");
    assert.ok(scopesAllow(r.principal.scopes, "user", "Observation", "read"));
    assert.ok(!scopesAllow(r.principal.scopes, "user", "Observation", "create"), "a peer request never writes");
    assert.deepEqual(r.claims.types, ["Observation"]);
    assert.equal(r.claims.patient, n.patient(1).id);
  });

  test("the same request twice: the second is a replay", async () => {
    const cache = new JtiCache();
    const jws = await signPeerRequest(n.key("node:gp"), query(), { now: at() });
    assert.ok((await verify(jws, cache)).ok);
    const again = await verify(jws, cache);
    assert.equal(again.ok, false);
    assert.equal(!again.ok && again.reason, "replay");
    assert.equal(!again.ok && again.status, 409);
  });

  test("expired, not yet valid, or living longer than 60 s", async () => {
    const jws = await signPeerRequest(n.key("node:gp"), query(), { now: at(), lifetimeSec: 10 });
    const late = await verify(jws, new JtiCache(), TRUST, at() + 11_000);
    assert.equal(!late.ok && late.reason, "expired");
    const future = await signPeerRequest(n.key("node:gp"), query(), { now: at() + 120_000 });
    const early = await verify(future);
    assert.equal(!early.ok && early.reason, "expired");
    await assert.rejects(signPeerRequest(n.key("node:gp"), query(), { lifetimeSec: 61 }), RangeError);
    // Hand-made: a valid signature over a 10-minute lifetime is still refused.
    const iat = Math.floor(at() / 1000);
    const long = await sign(n.key("node:gp"), { ...claimsOf(query()), iss: n.keyId("node:gp"), iat, exp: iat + 600 });
    const r = await verify(long);
    assert.equal(!r.ok && r.reason, "expired");
  });

  test("for another custodian (aud) is refused", async () => {
    const jws = await signPeerRequest(n.key("node:gp"), query({ custodian: n.sc.orgs.uni.id }), { now: at() });
    const r = await verify(jws);
    assert.equal(!r.ok && r.reason, "audience");
    assert.equal(!r.ok && r.status, 401);
  });

  test("a stranger's key, a member's key or a node of another org than claimed is not a signer", async () => {
    const stranger = keyPairFromSeed(new Uint8Array(32).fill(7));
    const r1 = await verify(await signPeerRequest(stranger, query(), { now: at() }));
    assert.equal(!r1.ok && r1.reason, "signer");
    const r2 = await verify(await signPeerRequest(n.key("clinician:gp"), query(), { now: at() }));
    assert.equal(!r2.ok && r2.reason, "signer");
    // The trust's node claiming to speak for the GP practice.
    const r3 = await verify(
      await signPeerRequest(n.key("node:trust"), query({ custodian: GP }), { now: at() }),
      new JtiCache(),
      GP,
    );
    assert.equal(!r3.ok && r3.reason, "signer");
  });

  test("the practitioner must be an active member of the signer's org, with the role claimed and a purpose it may use", async () => {
    const node = n.key("node:gp");
    const trustDoc = member("clinician:trust-ae").id;
    const other = await verify(
      await signPeerRequest(node, query({ practitioner: trustDoc }), { now: at() }),
      new JtiCache(),
      TRUST,
    );
    assert.equal(!other.ok && other.reason, "practitioner");
    const role = await verify(await signPeerRequest(node, query({ role: "nurse" }), { now: at() }));
    assert.equal(!role.ok && role.reason, "practitioner");
    const purpose = await verify(await signPeerRequest(node, query({ purpose: "HMARKT" }), { now: at() }));
    assert.equal(!purpose.ok && purpose.reason, "purpose");
    const nobody = await verify(await signPeerRequest(node, query({ practitioner: n.uuid("nobody") }), { now: at() }));
    assert.equal(!nobody.ok && nobody.reason, "practitioner");
    // Revoked: the same request that verified before no longer does.
    const net = new Net();
    const nurse = net.sc.members["nurse:gp"] as { id: string };
    const q = query({ practitioner: nurse.id, role: "nurse" });
    const before = await verifyPeerRequest(await signPeerRequest(node, q, { now: net.now }), {
      state: net.state,
      orgId: TRUST,
      now: () => net.now,
      jtiCache: new JtiCache(),
    });
    assert.ok(before.ok);
    net.ok("admin:gp", "member.revoke", { member: nurse.id });
    const after = await verifyPeerRequest(await signPeerRequest(node, q, { now: net.now }), {
      state: net.state,
      orgId: TRUST,
      now: () => net.now,
      jtiCache: new JtiCache(),
    });
    assert.equal(!after.ok && after.reason, "practitioner");
  });

  test("a tampered payload, a swapped signature, unknown fields and other JWS types are refused", async () => {
    const jws = await signPeerRequest(n.key("node:gp"), query(), { now: at() });
    const [h, p, s] = jws.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, "base64url").toString("utf8"));
    const tampered = Buffer.from(JSON.stringify({ ...claims, patient: n.patient(2).id })).toString("base64url");
    assert.equal(((await verify(`${h}.${tampered}.${s}`)) as { reason?: string }).reason, "signature");
    const other = await signPeerRequest(n.key("node:gp"), query({ patient: n.patient(2).id }), { now: at() });
    assert.equal(((await verify(`${h}.${p}.${other.split(".")[2]}`)) as { reason?: string }).reason, "signature");
    const extra = await sign(n.key("node:gp"), { ...claims, name: "Jane" });
    assert.equal(((await verify(extra)) as { reason?: string }).reason, "malformed");
    const wrongTyp = await new CompactSign(Buffer.from(JSON.stringify(claims)))
      .setProtectedHeader({ alg: "EdDSA", typ: "at+jwt", kid: n.keyId("node:gp") })
      .sign(n.key("node:gp").privateKey);
    assert.equal(((await verify(wrongTyp)) as { reason?: string }).reason, "malformed");
    assert.equal(((await verify("not.a.jws")) as { reason?: string }).reason, "malformed");
    assert.equal(((await verify("x".repeat(9000))) as { reason?: string }).reason, "malformed");
  });

  test("refused requests do not use up the jti cache; a full cache refuses rather than forgets", async () => {
    const cache = new JtiCache({ max: 1, maxPerClient: 1 });
    const stranger = keyPairFromSeed(new Uint8Array(32).fill(9));
    for (let i = 0; i < 3; i++) await verify(await signPeerRequest(stranger, query(), { now: at() }), cache);
    assert.equal(cache.size, 0);
    assert.ok((await verify(await signPeerRequest(n.key("node:gp"), query(), { now: at() }), cache)).ok);
    const busy = await verify(await signPeerRequest(n.key("node:gp"), query(), { now: at() }), cache);
    assert.equal(!busy.ok && busy.reason, "busy");
    assert.equal(!busy.ok && busy.status, 503);
  });
});

function claimsOf(q: PeerQuery): Record<string, unknown> {
  const iat = Math.floor(at() / 1000);
  return {
    iss: "",
    aud: q.custodian,
    iat,
    exp: iat + 30,
    jti: "j0123456789",
    org: q.org,
    practitioner: q.practitioner,
    role: q.role,
    purpose: q.purpose,
    patient: q.patient,
  };
}

async function sign(
  key: { keyId: string; privateKey: import("node:crypto").KeyObject },
  claims: Record<string, unknown>,
) {
  return new CompactSign(Buffer.from(JSON.stringify(claims)))
    .setProtectedHeader({ alg: "EdDSA", typ: PEER_REQUEST_TYPE, kid: key.keyId })
    .sign(key.privateKey);
}
