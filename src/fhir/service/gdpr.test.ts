import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Consent } from "@medplum/fhirtypes";
import { STATE_KEYS } from "../../contract/index.ts";
import type { ResourceRec } from "../../contract/state.ts";
import { signNew } from "../../node/network.ts";
import type { VaultResource } from "../../vault/vault.ts";
import type { Principal } from "../auth/bearer.ts";
import { AuditIndex } from "./audit.ts";
import { checkAccess } from "./consent-check.ts";
import { LEDGER_TX_EXTENSION, NATIONAL_OPT_OUT_POLICY } from "./consent-resource.ts";
import type { FhirRequest } from "./context.ts";
import {
  erasePatient,
  exportPatient,
  PATIENT_PROVIDED_SOURCE,
  RECORD_ORIGIN_SYSTEM,
  RETENTION_REASON,
} from "./gdpr.ts";
import { call, type Member, observation, type Patient, patientResource } from "./testkit.ts";
import { commitWrite, putItemOf } from "./write.ts";
import { openWriteKit, type WriteKit } from "./write-kit.ts";

let kit: WriteKit;
let audit: AuditIndex;
let alice: Patient;
let own: Principal;
let clinician: Member;
const ids = { clinical: "", provided: "", research: "", sourced: "" };

async function store(resources: VaultResource[]): Promise<void> {
  await commitWrite(
    kit.ctx,
    resources.map((r) =>
      putItemOf(
        r,
        r.resourceType === "Patient" ? (r.id as string) : (r.subject as { reference: string }).reference.slice(8),
      ),
    ),
  );
}

before(async () => {
  kit = await openWriteKit();
  audit = AuditIndex.open(join(kit.dir, "audit.db"), kit.ctx.node);
  alice = await kit.registerPatient();
  own = await kit.principalFor(alice.key);
  clinician = await kit.enrol("clinician");
  const clinical = observation(alice);
  const provided = {
    ...observation(alice),
    meta: { tag: [{ system: RECORD_ORIGIN_SYSTEM, code: "patient-provided" }] },
  };
  const research = { ...observation(alice), meta: { tag: [{ system: RECORD_ORIGIN_SYSTEM, code: "research-copy" }] } };
  const sourced = { ...observation(alice), meta: { source: PATIENT_PROVIDED_SOURCE } };
  await store([patientResource(alice), clinical, provided, research, sourced]);
  Object.assign(ids, { clinical: clinical.id, provided: provided.id, research: research.id, sourced: sourced.id });
  await kit.setConsent(alice, {
    effect: "permit",
    grantee: { kind: "member", id: clinician.member },
    purposes: ["TREAT"],
  });
});
after(async () => {
  await audit.close();
  await kit.close();
});

function req(principal: Principal, patient: string, operation: string): FhirRequest {
  return { principal, params: { type: "Patient", id: patient, operation }, query: new URLSearchParams() };
}

test("$export: every record, the consent rules and the access log, as one collection Bundle, for the patient", async () => {
  // A clinician's read, logged on the ledger: it must show up in Alice's export.
  const doc = await kit.principalFor(clinician.key);
  const facts = { resourceType: "Observation", id: ids.clinical, patient: alice.patient, labels: [] };
  assert.ok(checkAccess(kit.ctx, doc, facts, "read", "read").allowed);
  await kit.accessLog.flush();
  const res = await call(exportPatient, kit.ctx, req(own, alice.patient, "export"));
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.type, "collection");
  const types = res.body.entry.map((e: { resource: { resourceType: string } }) => e.resource.resourceType);
  assert.equal(types.filter((t: string) => t === "Observation").length, 4);
  assert.equal(types.filter((t: string) => t === "Patient").length, 1);
  // The rule in force, and its one version in the consent history.
  const consentUrls = res.body.entry
    .filter((e: { resource: { resourceType: string } }) => e.resource.resourceType === "Consent")
    .map((e: { fullUrl: string }) => e.fullUrl);
  assert.equal(consentUrls.length, 2);
  assert.equal(consentUrls.filter((u: string) => u.includes("/_history/")).length, 1);
  const events = res.body.entry.filter(
    (e: { resource: { resourceType: string } }) => e.resource.resourceType === "AuditEvent",
  );
  assert.ok(events.length >= 1, "the access log is in the export");
  assert.ok(JSON.stringify(events).includes(ids.clinical));
});

test("$export: the consent history — every consent.set, consent.revoke and optout.set of the patient, in order", async () => {
  const bob = await kit.registerPatient();
  const bobOwn = await kit.principalFor(bob.key);
  const kept = await kit.setConsent(bob, { purposes: ["TREAT"] });
  await kit.setConsent(bob, { rule: kept, purposes: ["TREAT", "ETREAT"] });
  const dropped = await kit.setConsent(bob, { effect: "deny", purposes: ["HRESCH"] });
  await kit.commit([signNew(bob.key, "consent.revoke", { patient: bob.patient, rule: dropped }, Date.now())]);
  await kit.commit([signNew(bob.key, "optout.set", { patient: bob.patient, optout: true }, Date.now())]);
  // Alice's consent changes are not Bob's.
  await kit.setConsent(alice, { purposes: ["TREAT"] });
  const res = await call(exportPatient, kit.ctx, req(bobOwn, bob.patient, "export"));
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const consents = res.body.entry.filter(
    (e: { resource: { resourceType: string } }) => e.resource.resourceType === "Consent",
  ) as { fullUrl: string; resource: Consent }[];
  // In force now: the kept rule only.
  const current = consents.filter((c) => !c.fullUrl.includes("/_history/"));
  assert.deepEqual(
    current.map((c) => c.resource.id),
    [kept],
  );
  const history = consents.filter((c) => c.fullUrl.includes("/_history/")).map((c) => c.resource);
  assert.deepEqual(
    history.map((c) => [c.id, c.status, c.provision?.type]),
    [
      [kept, "active", "permit"],
      [kept, "active", "permit"],
      [dropped, "active", "deny"],
      [dropped, "inactive", "deny"],
      [`optout-${bob.patient}`, "active", "deny"],
    ],
  );
  assert.deepEqual(
    history[1]?.provision?.purpose?.map((p) => p.code),
    ["TREAT", "ETREAT"],
  );
  assert.equal(history[4]?.policy?.[0]?.uri, NATIONAL_OPT_OUT_POLICY);
  // Each version names the tx that made it: on the ledger, at the height and position its version id says.
  const versions = new Set<string>();
  for (const version of history) {
    const txId = version.meta?.extension?.find((x) => x.url === LEDGER_TX_EXTENSION)?.valueString as string;
    const stored = kit.ctx.node.store.getTx(txId);
    assert.ok(stored, `tx ${txId} is on the ledger`);
    const [height, position] = String(version.meta?.versionId ?? "")
      .split("-")
      .map(Number);
    assert.equal(height, stored.height);
    assert.equal(kit.ctx.node.store.getBlock(height as number)?.txs[position as number]?.id, txId);
    versions.add(version.meta?.versionId as string);
  }
  assert.equal(versions.size, history.length, "version ids are distinct");
});

test("$export and $erase are for the patient or a manage proxy only", async () => {
  const doc = await kit.principalFor(clinician.key);
  assert.equal((await call(exportPatient, kit.ctx, req(doc, alice.patient, "export"))).status, 403);
  assert.equal((await call(erasePatient, kit.ctx, req(doc, alice.patient, "erase"))).status, 403);
  const viewer = await kit.appointProxy(alice, { scope: "view", labels: ["N"] });
  const view = await kit.principalFor(viewer.key, { patient: alice.patient });
  assert.equal((await call(exportPatient, kit.ctx, req(view, alice.patient, "export"))).status, 403);
  const manager = await kit.appointProxy(alice, { scope: "manage", labels: ["N"] });
  const manage = await kit.principalFor(manager.key, { patient: alice.patient });
  assert.equal((await call(exportPatient, kit.ctx, req(manage, alice.patient, "export"))).status, 200);
  const bob = await kit.registerPatient();
  assert.equal((await call(exportPatient, kit.ctx, req(own, bob.patient, "export"))).status, 403, "not Alice's record");
});

test("$erase: patient-provided and research copies shredded and anchored as erased; clinical records kept, with why", async () => {
  const res = await call(erasePatient, kit.ctx, req(own, alice.patient, "erase"));
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.resourceType, "Parameters");
  const param = (name: string) => res.body.parameter.filter((p: { name: string }) => p.name === name);
  const erased = param("erased")
    .map((p: { valueReference: { reference: string } }) => p.valueReference.reference)
    .sort();
  assert.deepEqual(erased, [ids.provided, ids.research, ids.sourced].map((id) => `Observation/${id}`).sort());
  const kept = param("kept").map(
    (p: { part: { name: string; valueReference?: { reference: string }; valueString?: string }[] }) => ({
      ref: p.part[0]?.valueReference?.reference,
      reason: p.part[1]?.valueString,
    }),
  );
  assert.deepEqual(
    kept.map((k: { ref: string }) => k.ref).sort(),
    [`Observation/${ids.clinical}`, `Patient/${alice.patient}`].sort(),
  );
  for (const k of kept) assert.equal(k.reason, RETENTION_REASON);
  assert.match(RETENTION_REASON, /Art\. 17\(3\)\(b\)/);
  assert.equal(param("ledgerTx").length, 1);
  const state = kit.ctx.node.store.state;
  for (const id of [ids.provided, ids.research, ids.sourced]) {
    assert.equal(kit.vault.read("Observation", id), undefined, "shredded");
    const rec = state.get(STATE_KEYS.resource(kit.orgId, "Observation", id)) as ResourceRec;
    assert.ok(rec.erasedAt !== undefined, "record.erase on the ledger");
  }
  assert.ok(kit.vault.read("Observation", ids.clinical), "kept, and still readable (re-encrypted under a new key)");
  assert.equal(
    (state.get(STATE_KEYS.resource(kit.orgId, "Observation", ids.clinical)) as ResourceRec).erasedAt,
    undefined,
  );
  // Again: nothing left to erase, nothing new on the ledger.
  const again = await call(erasePatient, kit.ctx, req(own, alice.patient, "erase"));
  assert.equal(again.status, 200);
  assert.equal(again.body.parameter.filter((p: { name: string }) => p.name === "erased").length, 0);
  assert.equal(again.body.parameter.filter((p: { name: string }) => p.name === "ledgerTx").length, 0);
});
