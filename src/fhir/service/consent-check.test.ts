// The consent gate itself: scope before consent, the patient compartment, records of no patient, purposes, and the
// access-log entry each decision produces.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { checkAccess, purposeOf, type RecordFacts, refersTo } from "./consent-check.ts";
import type { AccessEntry, AccessLogger } from "./context.ts";
import { read } from "./read.ts";
import {
  call,
  newId,
  observation,
  openServiceKit,
  organization,
  type Patient,
  patientResource,
  putRecords,
  request,
  type ServiceKit,
} from "./testkit.ts";

let kit: ServiceKit;
let alice: Patient;
let bob: Patient;
const aliceGp = organization(newId("org"), "Alice's Surgery");
const elsewhere = organization(newId("org"), "Unrelated Clinic");

/** Captures entries instead of sending them. */
class Capture implements AccessLogger {
  entries: AccessEntry[] = [];
  log(entries: readonly AccessEntry[]): void {
    this.entries.push(...entries);
  }
  async flush(): Promise<void> {}
}

before(async () => {
  kit = await openServiceKit();
  [alice, bob] = (await kit.registerPatients(2)) as [Patient, Patient];
  await putRecords(kit, [
    aliceGp,
    elsewhere,
    patientResource(alice, { managingOrganization: { reference: `Organization/${aliceGp.id}` } }),
    patientResource(bob),
  ]);
});
after(async () => {
  await kit?.close();
});

const facts = (type: string, id: string, patient: string | null, labels: string[] = []): RecordFacts => ({
  resourceType: type,
  id,
  patient,
  labels,
});

describe("checkAccess", () => {
  it("returns the decision and its access-log entry (permit and deny), logged unless told not to", async () => {
    const capture = new Capture();
    const ctx = { ...kit.ctx, accessLog: capture };
    const doc = await kit.principalFor((await kit.enrol("clinician")).key);
    const permit = checkAccess(ctx, doc, facts("Observation", "o-1", alice.patient), "read", "read");
    assert.equal(permit.allowed, true);
    assert.deepEqual(permit.entry, {
      requester: doc.keyId,
      patient: alice.patient,
      custodian: kit.orgId,
      resourceType: "Observation",
      resourceId: "o-1",
      purpose: "TREAT",
      action: "read",
      decision: "permit",
      step: 7,
      rule: "default:custodian-treat",
      height: kit.running.node.height,
    });
    const deny = checkAccess(ctx, doc, facts("Observation", "o-2", alice.patient, ["GDIS"]), "read", "search");
    assert.equal(deny.allowed, false);
    assert.equal(deny.refusedBy, "consent");
    assert.equal(deny.entry?.rule, "deny:sensitive-label");
    assert.equal(capture.entries.length, 2);
    checkAccess(ctx, doc, facts("Observation", "o-3", alice.patient), "read", "read", { log: false });
    assert.equal(capture.entries.length, 2);
  });

  it("scopes come first and are not logged: a read-only token cannot write even where consent would allow", async () => {
    const capture = new Capture();
    const ctx = { ...kit.ctx, accessLog: capture };
    const doc = await kit.principalFor((await kit.enrol("clinician")).key, { scope: "user/*.rs" });
    const r = checkAccess(ctx, doc, facts("Observation", "o-4", alice.patient), "write", "create");
    assert.deepEqual(r, { allowed: false, refusedBy: "scope" });
    const writer = await kit.principalFor((await kit.enrol("clinician")).key);
    assert.equal(checkAccess(ctx, writer, facts("Observation", "o-4", alice.patient), "write", "create").allowed, true);
    assert.equal(capture.entries.length, 1);
  });

  it("patients and proxies are held to their compartment, without a decision or a log entry", async () => {
    const capture = new Capture();
    const ctx = { ...kit.ctx, accessLog: capture };
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    assert.equal(purposeOf(me), "PATRQT");
    const other = checkAccess(ctx, me, facts("Observation", "o-5", bob.patient), "read", "read");
    assert.deepEqual(other, { allowed: false, refusedBy: "compartment" });
    assert.equal(capture.entries.length, 0);
    const own = checkAccess(ctx, me, facts("Observation", "o-6", alice.patient, ["HIV"]), "read", "read");
    assert.equal(own.allowed, true);
    assert.equal(own.entry?.purpose, "PATRQT");
    assert.equal(own.entry?.step, 1);
  });

  it("records of no patient: staff read them within scope; patients only those their records refer to", async () => {
    const doc = await kit.principalFor((await kit.enrol("clinician")).key);
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const org = (o: typeof aliceGp) => ({ type: "Organization", id: o.id as string });
    assert.equal((await call(read, kit.ctx, request(doc, org(elsewhere)))).status, 200);
    assert.equal((await call(read, kit.ctx, request(me, org(aliceGp)))).status, 200);
    assert.equal((await call(read, kit.ctx, request(me, org(elsewhere)))).status, 404);
    const bobP = await kit.principalFor(bob.key, { patient: bob.patient });
    assert.equal((await call(read, kit.ctx, request(bobP, org(aliceGp)))).status, 404);
    // Patients never write directory records; admins read them (their scopes cover Organization).
    assert.equal(
      checkAccess(kit.ctx, me, facts("Organization", aliceGp.id as string, null), "write", "update").allowed,
      false,
    );
    const admin = await kit.principalFor(kit.admin);
    assert.equal((await call(read, kit.ctx, request(admin, org(elsewhere)))).status, 200);
    assert.equal((await call(read, kit.ctx, request(admin, { type: "Patient", id: alice.patient }))).status, 403);
  });

  it("a node principal has no consent of its own to read patient records (until node-to-node requests carry one)", async () => {
    const node = await kit.principalFor(kit.nodeKey);
    assert.equal(node.context, "system");
    const r = checkAccess(
      { ...kit.ctx, accessLog: new Capture() },
      node,
      facts("Observation", "o-7", alice.patient),
      "read",
      "read",
    );
    assert.equal(r.allowed, false);
    assert.equal(r.decision?.rule, "unknown-requester");
    assert.equal(r.entry?.purpose, "TREAT");
  });

  it("refersTo finds exact relative references anywhere, nothing else", () => {
    const obs = observation(alice, { id: "o-8" });
    obs.performer = [{ reference: "Organization/abc" }];
    obs.note = [{ text: "see Organization/xyz" }];
    assert.equal(refersTo(obs, "Organization/abc"), true);
    assert.equal(refersTo(obs, "Organization/xyz"), false);
    assert.equal(refersTo(obs, "Organization/ab"), false);
  });
});
