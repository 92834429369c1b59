// Search through the consent gate: totals and paging over visible results only, the patient compartment, NHS-number
// lookup, bad parameters, and the access log.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Principal } from "../auth/bearer.ts";
import { search } from "./search.ts";
import {
  call,
  ledgerAccessEntries,
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
let doctor: Principal;
const aliceVisible: string[] = [];
const aliceHidden: string[] = [];
const NHS = "https://fhir.nhs.uk/Id/nhs-number";

before(async () => {
  kit = await openServiceKit();
  [alice, bob] = (await kit.registerPatients(2)) as [Patient, Patient];
  const records = [
    patientResource(alice, { identifier: [{ system: NHS, value: "9990000026" }] }),
    patientResource(bob, { identifier: [{ system: NHS, value: "9990000034" }] }),
  ];
  // Eleven of Alice's observations, every third one HIV-labelled (hidden from clinicians without a permit).
  for (let i = 0; i < 11; i++) {
    const hidden = i % 3 === 1;
    const obs = observation(alice, { labels: hidden ? ["HIV"] : [], date: `2024-01-${String(10 + i)}` });
    (hidden ? aliceHidden : aliceVisible).push(obs.id as string);
    records.push(obs);
  }
  records.push(observation(bob), observation(bob));
  await putRecords(kit, records);
  doctor = await kit.principalFor((await kit.enrol("clinician")).key);
});
after(async () => {
  await kit?.close();
});

const ids = (body: { entry?: { resource: { id: string } }[] }) => (body.entry ?? []).map((e) => e.resource.id);

describe("search", () => {
  it("total counts only what the caller may see; entries are matches with fullUrls", async () => {
    const r = await call(search, kit.ctx, request(doctor, { type: "Observation" }, { patient: alice.patient }));
    assert.equal(r.status, 200);
    assert.equal(r.body.type, "searchset");
    assert.equal(r.body.total, aliceVisible.length);
    assert.deepEqual(new Set(ids(r.body)), new Set(aliceVisible));
    for (const e of r.body.entry) {
      assert.equal(e.search.mode, "match");
      assert.equal(e.fullUrl, `${kit.ctx.baseUrl}/Observation/${e.resource.id}`);
    }
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const own = await call(search, kit.ctx, request(me, { type: "Observation" }, { patient: alice.patient }));
    assert.equal(own.body.total, aliceVisible.length + aliceHidden.length);
  });

  it("pages over visible results with no gaps or repeats, and next links until the end", async () => {
    const seen: string[] = [];
    let offset = 0;
    for (let page = 0; page < 10; page++) {
      const q = { patient: alice.patient, _count: "3", _sort: "date", ...(offset ? { _offset: String(offset) } : {}) };
      const r = await call(search, kit.ctx, request(doctor, { type: "Observation" }, q));
      assert.equal(r.body.total, aliceVisible.length);
      seen.push(...ids(r.body));
      const next = r.body.link.find((l: { relation: string }) => l.relation === "next");
      if (!next) break;
      offset = Number(new URL(next.url).searchParams.get("_offset"));
      assert.equal(offset, seen.length);
    }
    assert.equal(seen.length, aliceVisible.length);
    assert.deepEqual([...seen].sort(), [...aliceVisible].sort());
    // _sort=date ascending: the visible ones in the order they were dated.
    assert.deepEqual(seen, aliceVisible);
  });

  it("patients search only their own compartment, whatever they ask", async () => {
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const all = await call(search, kit.ctx, request(me, { type: "Observation" }));
    assert.equal(all.body.total, 11);
    const bobs = await call(search, kit.ctx, request(me, { type: "Observation" }, { patient: bob.patient }));
    assert.equal(bobs.status, 200);
    assert.equal(bobs.body.total, 0);
    const patients = await call(search, kit.ctx, request(me, { type: "Patient" }));
    assert.deepEqual(ids(patients.body), [alice.patient]);
    const other = await call(search, kit.ctx, request(me, { type: "Patient" }, { _id: bob.patient }));
    assert.equal(other.body.total, 0);
  });

  it("finds a patient by NHS number", async () => {
    const r = await call(search, kit.ctx, request(doctor, { type: "Patient" }, { identifier: `${NHS}|9990000034` }));
    assert.equal(r.status, 200);
    assert.deepEqual(ids(r.body), [bob.patient]);
    const none = await call(search, kit.ctx, request(doctor, { type: "Patient" }, { identifier: `${NHS}|9990000042` }));
    assert.equal(none.body.total, 0);
  });

  it("bad parameters are 400s naming the parameter; injection attempts are plain values", async () => {
    const bad = await call(search, kit.ctx, request(doctor, { type: "Observation" }, { date: "yesterday" }));
    assert.equal(bad.status, 400);
    assert.deepEqual(bad.body.issue[0].expression, ["date"]);
    const unknown = await call(search, kit.ctx, request(doctor, { type: "Observation" }, { colour: "red" }));
    assert.equal(unknown.status, 400);
    const sql = await call(search, kit.ctx, request(doctor, { type: "Observation" }, { code: "x' OR '1'='1" }));
    assert.equal(sql.status, 200);
    assert.equal(sql.body.total, 0);
    const fhirpath = await call(search, kit.ctx, request(doctor, { type: "Patient" }, { name: "a').where(true" }));
    assert.equal(fhirpath.body.total, 0);
    const type = await call(search, kit.ctx, request(doctor, { type: "Organization" }));
    assert.equal(type.status, 400);
  });

  it("scopes: a token without search on the type is refused before anything is looked up", async () => {
    const me = await kit.principalFor(alice.key, { patient: alice.patient, scope: "patient/Observation.r" });
    const r = await call(search, kit.ctx, request(me, { type: "Observation" }));
    assert.equal(r.status, 403);
  });

  it("logs the denials and the returned results, not the permitted ones outside the page", async () => {
    const doc = await kit.enrol("clinician");
    const p = await kit.principalFor(doc.key);
    const from = kit.running.node.height;
    const r = await call(search, kit.ctx, request(p, { type: "Observation" }, { patient: alice.patient, _count: "2" }));
    assert.equal(r.body.entry.length, 2);
    await kit.accessLog.flush();
    const mine = ledgerAccessEntries(kit, from).filter((e) => e.requester === doc.key.keyId);
    const permits = mine.filter((e) => e.decision === "permit").map((e) => e.resourceId);
    const denials = mine.filter((e) => e.decision === "deny").map((e) => e.resourceId);
    assert.deepEqual(new Set(permits), new Set(ids(r.body)));
    assert.deepEqual(new Set(denials), new Set(aliceHidden));
  });
});
