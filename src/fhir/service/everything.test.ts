// Patient/$everything through the consent gate, paging, `_type`, and the merge of custodians' partial results.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { everything, mergeEverything } from "./everything.ts";
import {
  call,
  condition,
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
const visible: string[] = [];
let hiddenId: string;

before(async () => {
  kit = await openServiceKit();
  [alice, bob] = (await kit.registerPatients(2)) as [Patient, Patient];
  const hidden = condition(alice, { labels: ["PSY"] });
  hiddenId = hidden.id as string;
  const recs = [observation(alice), observation(alice), condition(alice), observation(alice)];
  visible.push(...recs.map((r) => r.id as string));
  await putRecords(kit, [patientResource(alice), patientResource(bob), ...recs, hidden, observation(bob)]);
});
after(async () => {
  await kit?.close();
});

const ids = (body: { entry?: { resource: { id: string } }[] }) => (body.entry ?? []).map((e) => e.resource.id);

describe("$everything", () => {
  it("returns the Patient first and every record the caller may see, nothing of other patients", async () => {
    const doc = await kit.principalFor((await kit.enrol("clinician")).key);
    const r = await call(everything, kit.ctx, request(doc, { type: "Patient", id: alice.patient }));
    assert.equal(r.status, 200);
    assert.equal(r.body.type, "searchset");
    assert.equal(r.body.entry[0].resource.resourceType, "Patient");
    assert.equal(r.body.total, 1 + visible.length);
    assert.deepEqual(new Set(ids(r.body).slice(1)), new Set(visible));
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const own = await call(everything, kit.ctx, request(me, { type: "Patient", id: alice.patient }));
    assert.equal(own.body.total, 2 + visible.length);
    assert.ok(ids(own.body).includes(hiddenId));
  });

  it("pages with _count/_offset and narrows with _type", async () => {
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const first = await call(everything, kit.ctx, request(me, { id: alice.patient }, { _count: "4" }));
    const second = await call(everything, kit.ctx, request(me, { id: alice.patient }, { _count: "4", _offset: "4" }));
    assert.equal(first.body.entry.length, 4);
    assert.equal(second.body.entry.length, 2);
    assert.ok(first.body.link.some((l: { relation: string }) => l.relation === "next"));
    assert.ok(!second.body.link.some((l: { relation: string }) => l.relation === "next"));
    assert.equal(new Set([...ids(first.body), ...ids(second.body)]).size, 6);
    const conditions = await call(everything, kit.ctx, request(me, { id: alice.patient }, { _type: "Condition" }));
    assert.equal(conditions.body.total, 2);
    const bad = await call(everything, kit.ctx, request(me, { id: alice.patient }, { _since: "2020" }));
    assert.equal(bad.status, 400);
  });

  it("another patient's $everything is the 404 of a missing patient; a clinician denied the patient gets 404", async () => {
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const other = await call(everything, kit.ctx, request(me, { id: bob.patient }));
    const missing = await call(everything, kit.ctx, request(me, { id: crypto.randomUUID() }));
    assert.equal(other.status, 404);
    assert.equal(missing.status, 404);
    const docMember = await kit.enrol("clinician");
    await kit.setConsent(bob, { effect: "deny", grantee: { kind: "member", id: docMember.member } });
    const doc = await kit.principalFor(docMember.key);
    assert.equal((await call(everything, kit.ctx, request(doc, { id: bob.patient }))).status, 404);
  });

  it("merges partial results, dropping duplicates and warning about custodians that did not answer", () => {
    const e = (url: string) => ({ fullUrl: url, search: { mode: "match" as const } });
    const merged = mergeEverything([
      { custodian: "gp", entries: [e("a"), e("b")] },
      { custodian: "trust", entries: [e("b"), e("c")] },
      { custodian: "uni", error: "timed out" },
    ]);
    assert.deepEqual(
      merged.slice(0, 3).map((x) => x.fullUrl),
      ["a", "b", "c"],
    );
    const warning = merged[3];
    assert.equal(warning?.search?.mode, "outcome");
    const outcome = warning?.resource as { issue: { severity: string; code: string; diagnostics: string }[] };
    assert.equal(outcome.issue[0]?.severity, "warning");
    assert.match(outcome.issue[0]?.diagnostics ?? "", /uni.*timed out/);
  });

  it("keeps one Patient: this custodian's, else the first other custodian's moved to the top; partial answers warn", () => {
    const e = (url: string, resourceType = "Observation") => ({
      fullUrl: url,
      resource: { resourceType, id: url } as never,
      search: { mode: "match" as const },
    });
    const own = mergeEverything([
      { custodian: "gp", entries: [e("gp/P", "Patient"), e("gp/o1")] },
      { custodian: "trust", entries: [e("trust/P", "Patient"), e("trust/o2")], warnings: ["1 record(s) withheld"] },
    ]);
    assert.deepEqual(
      own.filter((x) => x.search?.mode === "match").map((x) => x.fullUrl),
      ["gp/P", "gp/o1", "trust/o2"],
    );
    const warning = own.at(-1)?.resource as { issue: { diagnostics: string }[] };
    assert.equal(warning.issue[0]?.diagnostics, "1 record(s) withheld");
    const notHeld = mergeEverything([
      { custodian: "gp", entries: [e("gp/o1")] },
      { custodian: "trust", entries: [e("trust/o2"), e("trust/P", "Patient")] },
      { custodian: "uni", entries: [e("uni/P", "Patient"), e("uni/o3")] },
    ]);
    assert.deepEqual(
      notHeld.map((x) => x.fullUrl),
      ["trust/P", "gp/o1", "trust/o2", "uni/o3"],
    );
  });
});
