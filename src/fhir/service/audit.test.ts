// The access log as AuditEvents: reads and denials reach the ledger and the index, each caller sees only what they
// may, the mapping is a valid R4 AuditEvent, and the index catches up and rebuilds from the ledger.

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Principal } from "../auth/bearer.ts";
import { validateResource } from "../validate.ts";
import { AuditIndex, auditEventSearch, auditEventSearchWith, auditEventsFor } from "./audit.ts";
import { read } from "./read.ts";
import {
  call,
  type Member,
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
let doc: Member;
const seenIds: string[] = [];
let hiddenId: string;

before(async () => {
  kit = await openServiceKit();
  [alice, bob] = (await kit.registerPatients(2)) as [Patient, Patient];
  const seen = [observation(alice), observation(alice)];
  const hidden = observation(alice, { labels: ["HIV"] });
  seenIds.push(...seen.map((o) => o.id as string));
  hiddenId = hidden.id as string;
  await putRecords(kit, [patientResource(alice), patientResource(bob), ...seen, hidden, observation(bob)]);
  doc = await kit.enrol("clinician");
  const p = await kit.principalFor(doc.key);
  for (const id of [...seenIds, hiddenId]) await call(read, kit.ctx, request(p, { type: "Observation", id }));
  await kit.accessLog.flush();
});
after(async () => {
  await kit?.close();
});

/** The admin's principal as the token endpoint grants it (its ceiling includes `user/AuditEvent.rs`). */
async function adminWithAuditScope(): Promise<Principal> {
  const p = await kit.principalFor(kit.admin);
  assert.ok(
    p.scopes.some((s) => s.resourceType === "AuditEvent"),
    "admins are granted user/AuditEvent.rs",
  );
  return p;
}

describe("AuditEvent", () => {
  it("the patient sees every read and denial of their record, as valid R4 AuditEvents", async () => {
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const r = await call(auditEventSearch, kit.ctx, request(me, { type: "AuditEvent" }));
    assert.equal(r.status, 200);
    const events = r.body.entry.map((e: { resource: unknown }) => e.resource);
    const byDoc = events.filter(
      (e: { agent: { who: { identifier: { value: string } } }[] }) =>
        e.agent[0]?.who.identifier.value === doc.key.keyId,
    );
    assert.equal(byDoc.length, 3);
    for (const e of events) validateResource(e, { types: new Set(["AuditEvent"]) });
    const of = (id: string) =>
      byDoc.find(
        (e: { entity: { what: { reference: string } }[] }) => e.entity[0]?.what.reference === `Observation/${id}`,
      );
    const permitted = of(seenIds[0] as string);
    assert.equal(permitted.outcome, "0");
    assert.equal(permitted.action, "R");
    assert.equal(permitted.type.code, "rest");
    assert.equal(permitted.subtype[0].code, "read");
    assert.equal(permitted.purposeOfEvent[0].coding[0].code, "TREAT");
    assert.match(permitted.outcomeDesc, /permit by step 7 \(default:custodian-treat\)/);
    assert.equal(permitted.agent[0].altId, doc.member);
    assert.equal(permitted.agent[1].who.identifier.value, kit.orgId);
    assert.equal(permitted.source.observer.identifier.value, kit.orgId);
    assert.equal(permitted.entity[1].what.reference, `Patient/${alice.patient}`);
    assert.ok(Date.parse(permitted.recorded) > 0);
    const denied = of(hiddenId);
    assert.equal(denied.outcome, "4");
    assert.match(denied.outcomeDesc, /deny by step 5 \(deny:sensitive-label\)/);
    // The patient's own reads are logged too (under PATRQT), after a flush.
    await kit.accessLog.flush();
    const again = await call(auditEventSearch, kit.ctx, request(me, { type: "AuditEvent" }, { _count: "100" }));
    assert.ok(again.body.total >= r.body.total);
  });

  it("pages newest first with total and links", async () => {
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const all = await call(auditEventSearch, kit.ctx, request(me, {}, { _count: "1000" }));
    const first = await call(auditEventSearch, kit.ctx, request(me, {}, { _count: "2" }));
    const second = await call(auditEventSearch, kit.ctx, request(me, {}, { _count: "2", _offset: "2" }));
    assert.equal(first.body.total, all.body.total);
    const idsOf = (b: { entry: { resource: { id: string } }[] }) => b.entry.map((e) => e.resource.id);
    assert.deepEqual([...idsOf(first.body), ...idsOf(second.body)], idsOf(all.body).slice(0, 4));
    const heights = idsOf(all.body).map((id: string) => Number(id.split("-")[0]));
    assert.deepEqual(
      heights,
      [...heights].sort((a, b) => b - a),
    );
    assert.ok(first.body.link.some((l: { relation: string }) => l.relation === "next"));
  });

  it("nobody else sees a patient's log, except this custodian's admin", async () => {
    const other = await kit.principalFor(bob.key, { patient: bob.patient });
    const r = await call(auditEventSearch, kit.ctx, request(other, {}, { patient: alice.patient }));
    assert.equal(r.body.total, 0);
    const clinician = await kit.principalFor(doc.key);
    assert.equal(
      (await call(auditEventSearch, kit.ctx, request(clinician, {}, { patient: alice.patient }))).status,
      403,
    );
    const view = await kit.appointProxy(alice, { scope: "view", labels: ["N"] });
    const viewP = await kit.principalFor(view.key, { patient: alice.patient });
    assert.equal((await call(auditEventSearch, kit.ctx, request(viewP, {}))).status, 403);
    const manage = await kit.appointProxy(alice, { scope: "manage", labels: ["N"] });
    const manageP = await kit.principalFor(manage.key, { patient: alice.patient });
    const m = await call(auditEventSearch, kit.ctx, request(manageP, {}));
    assert.equal(m.status, 200);
    assert.ok(m.body.total >= 3);
    // The admin: their org's entries (user/AuditEvent.rs); without that scope, 403.
    const narrow = await kit.principalFor(kit.admin);
    const withoutAudit = { ...narrow, scopes: narrow.scopes.filter((s) => s.resourceType !== "AuditEvent") };
    assert.equal((await call(auditEventSearch, kit.ctx, request(withoutAudit, {}))).status, 403);
    const admin = await adminWithAuditScope();
    const a = await call(auditEventSearch, kit.ctx, request(admin, {}, { patient: `Patient/${alice.patient}` }));
    assert.equal(a.status, 200);
    assert.ok(a.body.total >= 3);
    assert.equal((await call(auditEventSearch, kit.ctx, request(admin, {}, { patient: "x y" }))).status, 400);
    assert.equal((await call(auditEventSearch, kit.ctx, request(admin, {}, { date: "2020" }))).status, 400);
  });

  it("catches up from the ledger at open, and rebuilds a lost index to the same content", async () => {
    const path = join(kit.dir, "audit-2.db");
    const second = AuditIndex.open(path, kit.running.node);
    const count = () => second.byPatient(alice.patient, { offset: 0, count: 1000 }).total;
    const before = count();
    assert.equal(before, kit.audit.byPatient(alice.patient, { offset: 0, count: 1000 }).total);
    second.close();
    // Reads while the second index is closed: it catches up when reopened.
    const p = await kit.principalFor(doc.key);
    await call(read, kit.ctx, request(p, { type: "Observation", id: seenIds[1] as string }));
    await kit.accessLog.flush();
    const reopened = AuditIndex.open(path, kit.running.node);
    assert.equal(reopened.byPatient(alice.patient, { offset: 0, count: 1000 }).total, before + 1);
    const handler = auditEventSearchWith(reopened);
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    assert.equal((await call(handler, kit.ctx, request(me, {}))).body.total, before + 1);
    reopened.close();
    for (const s of ["", "-wal", "-shm"]) rmSync(`${path}${s}`, { force: true });
    const rebuilt = AuditIndex.open(path, kit.running.node);
    assert.equal(rebuilt.byPatient(alice.patient, { offset: 0, count: 1000 }).total, before + 1);
    assert.equal(rebuilt.height, kit.running.node.height);
    rebuilt.close();
    // The kit's index followed live blocks all along.
    assert.equal(auditEventsFor(kit.ctx, kit.audit, alice.patient).length, before + 1);
  });

  it("catches up in budgeted slices (each at least one block) to the same entries as in full", async () => {
    const path = join(kit.dir, "audit-slices.db");
    const sliced = AuditIndex.open(path, kit.running.node);
    const from = sliced.height;
    const p = await kit.principalFor(doc.key);
    for (let i = 0; i < 12; i++) {
      await call(read, kit.ctx, request(p, { type: "Observation", id: seenIds[i % 2] as string }));
      await kit.accessLog.flush();
    }
    assert.ok(kit.running.node.height >= from + 12, "one block per flush");
    let slices = 1;
    while (!sliced.catchUp(2)) slices++;
    assert.equal(sliced.height, kit.running.node.height);
    const full = AuditIndex.open(join(kit.dir, "audit-full.db"), kit.running.node);
    const page = { offset: 0, count: 1000 };
    assert.deepEqual(sliced.byPatient(alice.patient, page), full.byPatient(alice.patient, page));
    assert.ok(
      slices <= kit.running.node.height - from,
      `${slices} slices for ${kit.running.node.height - from} blocks`,
    );
    sliced.close();
    full.close();
  });

  it("a query behind a backlog catches up between other work, not in one stall of the event loop", async () => {
    const lagging = AuditIndex.open(join(kit.dir, "audit-lagging.db"), kit.running.node);
    const p = await kit.principalFor(doc.key);
    for (let i = 0; i < 10; i++) {
      await call(read, kit.ctx, request(p, { type: "Observation", id: seenIds[i % 2] as string }));
      await kit.accessLog.flush();
    }
    assert.ok(lagging.height + 10 <= kit.running.node.height, "blocks came faster than the quiet-time indexing");
    const order: string[] = [];
    // Slices of 0 ms: one block each, then the event loop.
    const caughtUp = lagging.ready(0).then(() => order.push("caught up"));
    const again = lagging.ready(0);
    setImmediate(() => order.push("other work"));
    await Promise.all([caughtUp, again]);
    assert.deepEqual(order, ["other work", "caught up"]);
    // The last few blocks are left to the query itself.
    assert.ok(kit.running.node.height - lagging.height <= 4, `${kit.running.node.height - lagging.height} left`);
    const page = { offset: 0, count: 1000 };
    assert.deepEqual(lagging.byPatient(alice.patient, page), kit.audit.byPatient(alice.patient, page));
    assert.equal(lagging.height, kit.running.node.height);
    lagging.close();
    await assert.rejects(lagging.ready(), /closed/);
  });
});
