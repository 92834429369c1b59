// read / vread / _history through the consent gate against a real one-org network: the decision table of issue 4,
// hidden-vs-missing 404s, scope 403s, integrity failures, and the access log on the ledger.

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, it } from "node:test";
import type { AccessEntry } from "./context.ts";
import { history, read, vread } from "./read.ts";
import {
  call,
  condition,
  ledgerAccessEntries,
  newId,
  observation,
  openServiceKit,
  type Patient,
  patientResource,
  putRecords,
  request,
  type ServiceKit,
} from "./testkit.ts";

let kit: ServiceKit;
let alice: Patient;
let bob: Patient;

before(async () => {
  kit = await openServiceKit();
  [alice, bob] = (await kit.registerPatients(2)) as [Patient, Patient];
  await putRecords(kit, [patientResource(alice), patientResource(bob)]);
});
after(async () => {
  await kit?.close();
});

describe("read: the decision table", () => {
  it("the patient reads their own record, any label", async () => {
    const obs = observation(alice, { labels: ["HIV"] });
    await putRecords(kit, [obs]);
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const r = await call(read, kit.ctx, request(me, { type: "Observation", id: obs.id }));
    assert.equal(r.status, 200);
    assert.equal(r.body.id, obs.id);
    assert.equal(r.headers?.etag, 'W/"1"');
    assert.match(r.headers?.["last-modified"] ?? "", /GMT$/);
  });

  it("a patient never reaches another patient's record (same 404 as missing)", async () => {
    const obs = observation(bob);
    await putRecords(kit, [obs]);
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const r = await call(read, kit.ctx, request(me, { type: "Observation", id: obs.id }));
    assert.equal(r.status, 404);
  });

  it("a view proxy reads within its labels, not outside them", async () => {
    const general = observation(alice);
    const psy = observation(alice, { labels: ["PSY"] });
    await putRecords(kit, [general, psy]);
    const proxy = await kit.appointProxy(alice, { scope: "view", labels: ["N"] });
    const p = await kit.principalFor(proxy.key, { patient: alice.patient });
    assert.equal((await call(read, kit.ctx, request(p, { type: "Observation", id: general.id }))).status, 200);
    assert.equal((await call(read, kit.ctx, request(p, { type: "Observation", id: psy.id }))).status, 404);
  });

  it("the custodian's clinician reads by the network default; a patient deny rule blocks them", async () => {
    const carol = await kit.registerPatient();
    const obs = observation(carol);
    await putRecords(kit, [patientResource(carol), obs]);
    const doc = await kit.enrol("clinician");
    const p = await kit.principalFor(doc.key);
    assert.equal((await call(read, kit.ctx, request(p, { type: "Observation", id: obs.id }))).status, 200);
    await kit.setConsent(carol, { effect: "deny", grantee: { kind: "member", id: doc.member }, actions: ["read"] });
    assert.equal((await call(read, kit.ctx, request(p, { type: "Observation", id: obs.id }))).status, 404);
    // Another clinician is unaffected.
    const other = await kit.principalFor((await kit.enrol("clinician")).key);
    assert.equal((await call(read, kit.ctx, request(other, { type: "Observation", id: obs.id }))).status, 200);
  });

  it("a sensitive label needs a permit naming it, even for the custodian's clinician", async () => {
    const dan = await kit.registerPatient();
    const psy = condition(dan, { labels: ["PSY"] });
    await putRecords(kit, [patientResource(dan), psy]);
    const doc = await kit.enrol("clinician");
    const p = await kit.principalFor(doc.key);
    assert.equal((await call(read, kit.ctx, request(p, { type: "Condition", id: psy.id }))).status, 404);
    await kit.setConsent(dan, { effect: "permit", grantee: { kind: "org", id: kit.orgId }, labels: ["PSY"] });
    assert.equal((await call(read, kit.ctx, request(p, { type: "Condition", id: psy.id }))).status, 200);
  });

  it("a researcher without a study grant sees nothing; the national opt-out withdraws a research permit", async () => {
    const erin = await kit.registerPatient();
    const obs = observation(erin);
    await putRecords(kit, [patientResource(erin), obs]);
    const researcher = await kit.enrol("researcher");
    const p = await kit.principalFor(researcher.key);
    assert.equal(p.purpose, "HRESCH");
    assert.equal((await call(read, kit.ctx, request(p, { type: "Observation", id: obs.id }))).status, 404);
    await kit.setConsent(erin, {
      effect: "permit",
      grantee: { kind: "role", org: kit.orgId, role: "researcher" },
      purposes: ["HRESCH"],
    });
    assert.equal((await call(read, kit.ctx, request(p, { type: "Observation", id: obs.id }))).status, 200);
    await kit.setOptout(erin, true);
    assert.equal((await call(read, kit.ctx, request(p, { type: "Observation", id: obs.id }))).status, 404);
  });

  it("a revoked member's token is refused from then on", async () => {
    const nurse = await kit.enrol("nurse");
    const token = await kit.tokenFor(nurse.key);
    assert.equal((await kit.verify(token)).ok, true);
    await kit.revokeMember(nurse);
    const after = await kit.verify(token);
    assert.equal(after.ok, false);
    assert.equal(after.ok || after.status, 401);
  });
});

describe("read: what a refused caller learns", () => {
  it("a hidden record and a missing one answer with the same 404 (status, body, headers)", async () => {
    const frank = await kit.registerPatient();
    const hidden = observation(frank, { labels: ["HIV"] });
    await putRecords(kit, [patientResource(frank), hidden]);
    const p = await kit.principalFor((await kit.enrol("clinician")).key);
    const missingId = newId("obs");
    const norm = (r: Awaited<ReturnType<typeof call>>, id: string) =>
      JSON.stringify({ status: r.status, headers: r.headers ?? {}, body: r.body }).replaceAll(id, "ID");
    for (const [handler, params] of [
      [read, {}],
      [vread, { vid: "1" }],
      [history, {}],
    ] as const) {
      const h = await call(handler, kit.ctx, request(p, { type: "Observation", id: hidden.id, ...params }));
      const m = await call(handler, kit.ctx, request(p, { type: "Observation", id: missingId, ...params }));
      assert.equal(h.status, 404);
      assert.equal(norm(h, hidden.id as string), norm(m, missingId));
    }
  });

  it("scopes are checked first: 403 for a type the token does not cover, before any lookup", async () => {
    const me = await kit.principalFor(alice.key, { patient: alice.patient, scope: "patient/Observation.rs" });
    const r = await call(read, kit.ctx, request(me, { type: "Condition", id: newId("cond") }));
    assert.equal(r.status, 403);
    assert.match(r.body.issue[0].diagnostics, /scopes do not allow read of Condition/);
  });

  it("a proxy frozen by safeguarding gets 403 for the Patient it acts for (it knows it exists), 404 elsewhere", async () => {
    const gail = await kit.registerPatient();
    const obs = observation(gail);
    await putRecords(kit, [patientResource(gail), obs]);
    const proxy = await kit.appointProxy(gail, { scope: "view", labels: ["N"] });
    const p = await kit.principalFor(proxy.key, { patient: gail.patient });
    assert.equal((await call(read, kit.ctx, request(p, { type: "Patient", id: gail.patient }))).status, 200);
    const doc = await kit.enrol("clinician");
    const { signNew } = await import("../../node/network.ts");
    await kit.commit([
      signNew(
        doc.key,
        "safeguarding.flag",
        { patient: gail.patient, flag: crypto.randomUUID(), active: true, freezeProxies: true, hideFromPatient: false },
        Date.now(),
      ),
    ]);
    assert.equal((await call(read, kit.ctx, request(p, { type: "Patient", id: gail.patient }))).status, 403);
    assert.equal((await call(read, kit.ctx, request(p, { type: "Observation", id: obs.id }))).status, 404);
  });

  it("malformed ids and unknown types are 404s", async () => {
    const p = await kit.principalFor((await kit.enrol("clinician")).key);
    assert.equal((await call(read, kit.ctx, request(p, { type: "Observation", id: "bad id!" }))).status, 404);
    assert.equal((await call(read, kit.ctx, request(p, { type: "NoSuchType", id: "x" }))).status, 404);
    assert.equal((await call(read, kit.ctx, request(p, { type: "Observation", id: "x' OR 1=1 --" }))).status, 404);
  });
});

describe("vread and _history", () => {
  it("serves each version with its ETag; history lists them newest first; a later sensitive label hides them all", async () => {
    const hal = await kit.registerPatient();
    const id = newId("obs");
    await putRecords(kit, [patientResource(hal), observation(hal, { id })]);
    await putRecords(kit, [observation(hal, { id, status: "amended" })]);
    const p = await kit.principalFor((await kit.enrol("clinician")).key);
    const v1 = await call(vread, kit.ctx, request(p, { type: "Observation", id, vid: "1" }));
    assert.equal(v1.status, 200);
    assert.equal(v1.body.status, "final");
    assert.equal(v1.headers?.etag, 'W/"1"');
    const cur = await call(read, kit.ctx, request(p, { type: "Observation", id }));
    assert.equal(cur.body.status, "amended");
    assert.equal(cur.headers?.etag, 'W/"2"');
    assert.equal((await call(vread, kit.ctx, request(p, { type: "Observation", id, vid: "3" }))).status, 404);
    assert.equal((await call(vread, kit.ctx, request(p, { type: "Observation", id, vid: "x" }))).status, 404);
    const h = await call(history, kit.ctx, request(p, { type: "Observation", id }));
    assert.equal(h.status, 200);
    assert.equal(h.body.type, "history");
    assert.deepEqual(
      h.body.entry.map((e: { resource: { meta: { versionId: string } } }) => e.resource.meta.versionId),
      ["2", "1"],
    );
    assert.deepEqual(
      h.body.entry.map((e: { request: { method: string } }) => e.request.method),
      ["PUT", "POST"],
    );
    // Relabelled as sexual health: the old general version is no longer readable either.
    await putRecords(kit, [observation(hal, { id, labels: ["SEX"] })]);
    assert.equal((await call(vread, kit.ctx, request(p, { type: "Observation", id, vid: "1" }))).status, 404);
    assert.equal((await call(history, kit.ctx, request(p, { type: "Observation", id }))).status, 404);
  });
});

describe("integrity", () => {
  it("a record altered in the database is refused with a 500 naming no content, and counted", async () => {
    const ivy = await kit.registerPatient();
    const obs = observation(ivy, { code: "29463-7" });
    await putRecords(kit, [patientResource(ivy), obs]);
    const p = await kit.principalFor((await kit.enrol("clinician")).key);
    assert.equal((await call(read, kit.ctx, request(p, { type: "Observation", id: obs.id }))).status, 200);
    const db = new DatabaseSync(`${kit.dir}/vault.db`);
    const row = db
      .prepare(
        "SELECT v.vkey AS vkey, v.box AS box FROM versions v JOIN resources r ON v.vkey >> 20 = r.rid WHERE r.id = ?",
      )
      .get(obs.id as string) as { vkey: number; box: Uint8Array };
    const box = Buffer.from(row.box);
    box[box.length - 20] = (box[box.length - 20] as number) ^ 0xff;
    db.prepare("UPDATE versions SET box = ? WHERE vkey = ?").run(box, row.vkey);
    db.close();
    const before = kit.running.node.metrics.counter("careledger_fhir_integrity_failures_total");
    const r = await call(read, kit.ctx, request(p, { type: "Observation", id: obs.id }));
    assert.equal(r.status, 500);
    assert.equal(r.body.resourceType, "OperationOutcome");
    assert.equal(r.body.issue[0].code, "exception");
    assert.doesNotMatch(JSON.stringify(r.body), /29463-7|Observation\/|obs-/);
    assert.equal(kit.running.node.metrics.counter("careledger_fhir_integrity_failures_total"), before + 1);
    assert.equal((await call(history, kit.ctx, request(p, { type: "Observation", id: obs.id }))).status, 500);
  });
});

describe("access log", () => {
  it("every read and every denial is on the ledger after a flush", async () => {
    const jo = await kit.registerPatient();
    const seen = observation(jo);
    const hidden = observation(jo, { labels: ["HIV"] });
    await putRecords(kit, [patientResource(jo), seen, hidden]);
    const doc = await kit.enrol("clinician");
    const p = await kit.principalFor(doc.key);
    const fromHeight = kit.running.node.height;
    assert.equal((await call(read, kit.ctx, request(p, { type: "Observation", id: seen.id }))).status, 200);
    assert.equal((await call(read, kit.ctx, request(p, { type: "Observation", id: hidden.id }))).status, 404);
    await kit.accessLog.flush();
    const entries = ledgerAccessEntries(kit, fromHeight).filter((e) => e.patient === jo.patient);
    const find = (id: string | undefined) => entries.find((e: AccessEntry) => e.resourceId === id);
    assert.deepEqual(
      { ...find(seen.id), height: 0 },
      {
        requester: doc.key.keyId,
        patient: jo.patient,
        custodian: kit.orgId,
        resourceType: "Observation",
        resourceId: seen.id,
        purpose: "TREAT",
        action: "read",
        decision: "permit",
        step: 7,
        rule: "default:custodian-treat",
        height: 0,
      },
    );
    assert.equal(find(hidden.id)?.decision, "deny");
    assert.equal(find(hidden.id)?.rule, "deny:sensitive-label");
  });
});
