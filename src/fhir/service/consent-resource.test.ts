import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import type { Consent } from "@medplum/fhirtypes";
import { read } from "../../contract/state.ts";
import type { KeyPair } from "../../ledger/keys.ts";
import { newKey, signNew } from "../../node/network.ts";
import type { Principal } from "../auth/bearer.ts";
import { validateResource } from "../validate.ts";
import {
  consentCreate,
  consentRead,
  consentSearch,
  LEDGER_TX_EXTENSION,
  payloadOfConsent,
  ruleToConsent,
  SIGNED_TX_EXTENSION,
} from "./consent-resource.ts";
import type { FhirRequest } from "./context.ts";
import { call, type Member, type Patient } from "./testkit.ts";
import { update } from "./write.ts";
import { openWriteKit, type WriteKit } from "./write-kit.ts";

let kit: WriteKit;
let alice: Patient;
let own: Principal;
let team: Member;

before(async () => {
  kit = await openWriteKit();
  alice = await kit.registerPatient();
  own = await kit.principalFor(alice.key);
  team = await kit.enrol("clinician");
});
after(async () => {
  await kit.close();
});

/** A Consent as a client would write it (HL7 `consent-example-pkb` shape: actor with role PRCP, access action). */
function consentOf(patient: string, overrides: Partial<Consent["provision"]> = {}, status = "active"): Consent {
  return clean({
    resourceType: "Consent",
    status: status as Consent["status"],
    scope: { coding: [{ system: "http://terminology.hl7.org/CodeSystem/consentscope", code: "patient-privacy" }] },
    category: [{ coding: [{ system: "http://loinc.org", code: "59284-0" }] }],
    patient: { reference: `Patient/${patient}` },
    policyRule: { coding: [{ system: "http://terminology.hl7.org/CodeSystem/v3-ActCode", code: "OPTIN" }] },
    provision: {
      type: "permit",
      actor: [
        {
          role: { coding: [{ system: "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", code: "PRCP" }] },
          reference: { reference: `Practitioner/${team.member}` },
        },
      ],
      action: [{ coding: [{ system: "http://terminology.hl7.org/CodeSystem/consentaction", code: "access" }] }],
      securityLabel: [{ system: "http://terminology.hl7.org/CodeSystem/v3-ActCode", code: "PSY" }],
      purpose: [{ system: "http://terminology.hl7.org/CodeSystem/v3-ActReason", code: "TREAT" }],
      class: [{ system: "http://hl7.org/fhir/resource-types", code: "Condition" }],
      dataPeriod: { start: "2020-01-01" },
      ...overrides,
    },
  });
}

/** As JSON would carry it (no undefined members). */
function clean<T>(value: T): T {
  return JSON.parse(JSON.stringify(value));
}

function signed(consent: Consent, key: KeyPair, type: string, payload: Record<string, unknown>): Consent {
  const tx = signNew(key, type, payload, kit.ctx.now());
  return { ...consent, extension: [{ url: SIGNED_TX_EXTENSION, valueString: JSON.stringify(tx) }] };
}

function req(
  principal: Principal,
  body?: unknown,
  params: FhirRequest["params"] = { type: "Consent" },
  query = "",
): FhirRequest {
  return { principal, params, query: new URLSearchParams(query), body };
}

test("a Consent without its signed tx is refused with what to sign", async () => {
  const res = await call(consentCreate, kit.ctx, req(own, consentOf(alice.patient)));
  assert.equal(res.status, 400);
  const text = res.body.issue[0].diagnostics as string;
  assert.match(text, /consent\.set/);
  assert.match(text, new RegExp(SIGNED_TX_EXTENSION));
  assert.match(text, /"effect":"permit"/);
});

test("a patient-signed Consent becomes consent.set, answers 201 with the ledger's Consent, and reads back", async () => {
  const consent = consentOf(alice.patient);
  const rule = crypto.randomUUID();
  const payload = { ...payloadOfConsent(consent), rule };
  const res = await call(consentCreate, kit.ctx, req(own, signed(consent, alice.key, "consent.set", payload)));
  assert.equal(res.status, 201, JSON.stringify(res.body));
  assert.equal(res.body.id, rule);
  assert.equal(res.headers?.location, `${kit.ctx.baseUrl}/Consent/${rule}`);
  assert.equal(res.body.extension[0].url, LEDGER_TX_EXTENSION);
  const onLedger = read.rules(kit.ctx.node.store.state, alice.patient)?.find((r) => r.id === rule);
  assert.equal(onLedger?.gk, `m:${team.member}`);
  assert.deepEqual(onLedger?.codes, ["PSY"]);
  assert.equal(onLedger?.dataStart, "2020-01-01");
  // The answer is a valid R4 Consent, and maps back to the same payload.
  validateResource(res.body);
  assert.deepEqual(payloadOfConsent(res.body), payloadOfConsent(consent));
  const found = await call(
    consentSearch,
    kit.ctx,
    req(own, undefined, { type: "Consent" }, `patient=Patient/${alice.patient}`),
  );
  assert.equal(found.status, 200);
  assert.equal(found.body.total, 1);
  assert.equal(found.body.entry[0].resource.status, "active");
  const one = await call(consentRead, kit.ctx, req(own, undefined, { type: "Consent", id: rule }));
  assert.equal(one.status, 200);
  assert.equal(one.body.provision.type, "permit");
});

test("the signed tx must say what the Consent says, be the caller's own, and be for the caller's patient", async () => {
  const consent = consentOf(alice.patient);
  const payload = { ...payloadOfConsent(consent), rule: crypto.randomUUID() };
  let res = await call(
    consentCreate,
    kit.ctx,
    req(own, signed(consent, alice.key, "consent.set", { ...payload, purposes: ["HRESCH"] })),
  );
  assert.equal(res.status, 400);
  assert.match(res.body.issue[0].diagnostics, /purposes differs/);
  res = await call(consentCreate, kit.ctx, req(own, signed(consent, newKey(), "consent.set", payload)));
  assert.equal(res.status, 403, "signed by someone else's key");
  const tampered = signed(consent, alice.key, "consent.set", payload);
  const tx = JSON.parse(tampered.extension?.[0]?.valueString as string);
  tx.payload.actions = ["read", "write"];
  tampered.extension = [{ url: SIGNED_TX_EXTENSION, valueString: JSON.stringify(tx) }];
  res = await call(
    consentCreate,
    kit.ctx,
    req(own, {
      ...tampered,
      provision: {
        ...consent.provision,
        action: [
          ...(consent.provision?.action ?? []),
          { coding: [{ system: "http://terminology.hl7.org/CodeSystem/consentaction", code: "correct" }] },
        ],
      },
    }),
  );
  assert.equal(res.status, 400);
  assert.match(res.body.issue[0].diagnostics, /signature does not verify/);
  const bob = await kit.registerPatient();
  res = await call(
    consentCreate,
    kit.ctx,
    req(
      own,
      signed(consentOf(bob.patient), alice.key, "consent.set", {
        ...payloadOfConsent(consentOf(bob.patient)),
        rule: crypto.randomUUID(),
      }),
    ),
  );
  assert.equal(res.status, 403, "a patient writes only their own consent");
  const doc = await kit.principalFor(team.key);
  res = await call(consentSearch, kit.ctx, req(doc, undefined, { type: "Consent" }, `patient=${alice.patient}`));
  assert.equal(res.status, 403, "clinicians do not read patients' rules");
  res = await call(consentCreate, kit.ctx, req(own, { resourceType: "Consent", status: "active" }));
  assert.equal(res.status, 400, "structurally invalid (scope, category missing)");
});

test("a manage proxy may set a rule within its labels; a view proxy may not write", async () => {
  const manager = await kit.appointProxy(alice, { scope: "manage", labels: ["PSY"] });
  const proxy = await kit.principalFor(manager.key, { patient: alice.patient });
  const consent = consentOf(alice.patient);
  const payload = { ...payloadOfConsent(consent), rule: crypto.randomUUID() };
  let res = await call(consentCreate, kit.ctx, req(proxy, signed(consent, manager.key, "consent.set", payload)));
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const general = consentOf(alice.patient, {
    securityLabel: [{ system: "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", code: "N" }],
  });
  res = await call(
    consentCreate,
    kit.ctx,
    req(
      proxy,
      signed(general, manager.key, "consent.set", { ...payloadOfConsent(general), rule: crypto.randomUUID() }),
    ),
  );
  assert.equal(res.status, 403, "outside the proxy's labels: the ledger refuses (unauthorised)");
  const viewer = await kit.appointProxy(alice, { scope: "view", labels: ["PSY"] });
  const view = await kit.principalFor(viewer.key, { patient: alice.patient });
  res = await call(consentCreate, kit.ctx, req(view, signed(consent, viewer.key, "consent.set", payload)));
  assert.equal(res.status, 403, "a view proxy's token has no Consent create scope");
});

test("PUT changes a rule; PUT with status inactive and a signed consent.revoke revokes it", async () => {
  const consent = consentOf(alice.patient, { type: "deny", securityLabel: undefined, dataPeriod: undefined });
  const rule = crypto.randomUUID();
  let res = await call(
    consentCreate,
    kit.ctx,
    req(own, signed(consent, alice.key, "consent.set", { ...payloadOfConsent(consent), rule })),
  );
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const changed = consentOf(alice.patient, {
    type: "deny",
    securityLabel: undefined,
    dataPeriod: undefined,
    period: { end: "2099-01-01T00:00:00Z" },
  });
  res = await call(
    update,
    kit.ctx,
    req(own, signed({ ...changed, id: rule }, alice.key, "consent.set", { ...payloadOfConsent(changed), rule }), {
      type: "Consent",
      id: rule,
    }),
  );
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.provision.period.end, "2099-01-01T00:00:00.000Z");
  const inactive = { ...changed, id: rule, status: "inactive" as const };
  res = await call(update, kit.ctx, req(own, inactive, { type: "Consent", id: rule }));
  assert.equal(res.status, 400);
  assert.match(res.body.issue[0].diagnostics, /consent\.revoke/);
  res = await call(
    update,
    kit.ctx,
    req(own, signed(inactive, alice.key, "consent.revoke", { patient: alice.patient, rule }), {
      type: "Consent",
      id: rule,
    }),
  );
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.status, "inactive");
  assert.equal(
    read.rules(kit.ctx.node.store.state, alice.patient)?.find((r) => r.id === rule),
    undefined,
  );
  res = await call(consentRead, kit.ctx, req(own, undefined, { type: "Consent", id: rule }));
  assert.equal(res.status, 404);
});

test("the mapping: every grantee kind, periods and actions round-trip; HL7 example shapes are read", () => {
  const at = Date.UTC(2025, 0, 1);
  const kinds = [
    { kind: "member", id: crypto.randomUUID() },
    { kind: "team", id: crypto.randomUUID() },
    { kind: "org", id: "kit-practice" },
    { kind: "role", org: "kit-practice", role: "nurse" },
    { kind: "study", id: crypto.randomUUID(), org: "uni" },
    { kind: "any" },
  ] as const;
  for (const grantee of kinds) {
    const rule = {
      id: crypto.randomUUID(),
      effect: "permit" as const,
      grantee,
      gk: "",
      types: ["Observation"],
      codes: ["HIV", "GENDER"],
      labels: [],
      purposes: ["TREAT", "ETREAT"],
      actions: ["read", "write"],
      start: at - 1000,
      end: at + 1000,
      dataEnd: "2024-12-31",
      setAt: at - 5000,
    };
    const consent = ruleToConsent(alice.patient, rule as never, at);
    validateResource(consent);
    assert.equal(consent.status, "active");
    const back = payloadOfConsent(consent);
    assert.deepEqual(back.grantee, grantee);
    assert.deepEqual(back.period, { start: at - 1000, end: at + 1000 });
    assert.deepEqual(back.dataPeriod, { end: "2024-12-31" });
    assert.deepEqual(back.actions, ["read", "write"]);
    assert.deepEqual(back.labels, ["HIV", "GENDER"]);
    assert.equal(ruleToConsent(alice.patient, rule as never, at + 5000).status, "inactive", "its period is over");
  }
  // HL7's Patients Know Best example: a permit for an organisation, read access to general records.
  const pkb = JSON.parse(
    readFileSync(
      new URL("../../../../shared/data/hl7-examples/Consent-consent-example-pkb.json", import.meta.url),
      "utf8",
    ),
  );
  pkb.patient = { reference: `Patient/${alice.patient}` };
  pkb.provision.actor[0].reference.reference = "Organization/kit-practice";
  const { provision: _nested, ...top } = pkb.provision;
  const mapped = payloadOfConsent({ ...pkb, provision: { ...top, type: "permit", purpose: [{ code: "TREAT" }] } });
  assert.deepEqual(mapped.grantee, { kind: "org", id: "kit-practice" });
  assert.deepEqual(mapped.actions, ["read"]);
  assert.deepEqual(mapped.labels, ["N"]);
  assert.throws(() => payloadOfConsent(pkb), /nested provisions/);
  const two = { ...consentOf(alice.patient) };
  two.provision = { ...two.provision, actor: [...(two.provision?.actor ?? []), ...(two.provision?.actor ?? [])] };
  assert.throws(() => payloadOfConsent(two), /exactly one grantee/);
});
