import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { KeyPair } from "../../ledger/keys.ts";
import { signNew } from "../../node/network.ts";
import type { Principal } from "../auth/bearer.ts";
import { breakGlass } from "./break-glass.ts";
import { checkAccess } from "./consent-check.ts";
import type { FhirRequest } from "./context.ts";
import { call, type Member, type Patient } from "./testkit.ts";
import { openWriteKit, type WriteKit } from "./write-kit.ts";

let kit: WriteKit;
let clinician: Member;
let emergency: Principal;
let alice: Patient;

before(async () => {
  kit = await openWriteKit();
  clinician = await kit.enrol("clinician");
  emergency = await kit.principalFor(clinician.key, { purpose: "ETREAT" });
  alice = await kit.registerPatient();
  // Alice has shut this clinician out, for treatment and emergencies alike.
  await kit.setConsent(alice, {
    effect: "deny",
    grantee: { kind: "member", id: clinician.member },
    purposes: ["TREAT", "ETREAT"],
    actions: ["read"],
  });
});
after(async () => {
  await kit.close();
});

function parameters(reason: string, basis: string, extra: { name: string; [k: string]: unknown }[] = []) {
  return {
    resourceType: "Parameters",
    parameter: [{ name: "reason", valueString: reason }, { name: "basis", valueCode: basis }, ...extra],
  };
}

function signedTx(key: KeyPair, payload: Record<string, unknown>) {
  return { name: "signedTx", valueString: JSON.stringify(signNew(key, "breakglass.declare", payload, kit.ctx.now())) };
}

function req(principal: Principal, patient: string, body: unknown): FhirRequest {
  return {
    principal,
    params: { type: "Patient", id: patient, operation: "break-glass" },
    query: new URLSearchParams(),
    body,
  };
}

const condition = (patient: string, labels: string[] = []) => ({
  resourceType: "Condition",
  id: "c1",
  patient,
  labels,
  date: new Date(Date.now() - 86_400_000).toISOString().slice(0, 10),
});

test("break-glass needs the clinician's signed breakglass.declare; then ETREAT reads of the emergency set pass", async () => {
  assert.equal(
    checkAccess(kit.ctx, emergency, condition(alice.patient), "read", "read", { log: false }).allowed,
    false,
  );
  const reason = "unconscious in A&E, allergies needed";
  let res = await call(breakGlass, kit.ctx, req(emergency, alice.patient, parameters(reason, "emergency-no-capacity")));
  assert.equal(res.status, 400);
  assert.match(res.body.issue[0].diagnostics, /breakglass\.declare/);
  const payload = { patient: alice.patient, basis: "emergency-no-capacity", reason, windowMs: 30 * 60_000 };
  res = await call(
    breakGlass,
    kit.ctx,
    req(
      emergency,
      alice.patient,
      parameters(reason, "emergency-no-capacity", [
        { name: "windowMinutes", valueInteger: 30 },
        signedTx(clinician.key, payload),
      ]),
    ),
  );
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.resourceType, "OperationOutcome");
  assert.equal(res.body.issue[0].severity, "information");
  const until = Date.parse(res.headers?.["x-careledger-break-glass-until"] ?? "");
  assert.ok(Math.abs(until - (Date.now() + 30 * 60_000)) < 60_000, "the window's end");
  assert.match(res.body.issue[0].diagnostics, new RegExp(new Date(until).toISOString()));
  const access = checkAccess(kit.ctx, emergency, condition(alice.patient), "read", "read", { log: false });
  assert.equal(access.allowed, true);
  assert.equal(access.decision?.step, 3);
  // Not beyond the emergency set, nor sensitive records Alice has not released for emergencies, nor for TREAT.
  assert.equal(
    checkAccess(kit.ctx, emergency, { ...condition(alice.patient), resourceType: "Encounter" }, "read", "read", {
      log: false,
    }).allowed,
    false,
  );
  assert.equal(
    checkAccess(kit.ctx, emergency, condition(alice.patient, ["PSY"]), "read", "read", { log: false }).allowed,
    false,
  );
  const treat = await kit.principalFor(clinician.key, { purpose: "TREAT" });
  assert.equal(checkAccess(kit.ctx, treat, condition(alice.patient), "read", "read", { log: false }).allowed, false);
});

test("refusals: not a clinician, someone else's signature, parameters that differ from the tx, bad input", async () => {
  const bob = await kit.registerPatient();
  const reason = "collapsed on the ward";
  const payload = { patient: bob.patient, basis: "already-treating", reason };
  const nurse = await kit.enrol("nurse");
  const nursePrincipal = await kit.principalFor(nurse.key, { purpose: "ETREAT" });
  let res = await call(
    breakGlass,
    kit.ctx,
    req(nursePrincipal, bob.patient, parameters(reason, "already-treating", [signedTx(nurse.key, payload)])),
  );
  assert.equal(res.status, 403);
  const other = await kit.enrol("clinician");
  res = await call(
    breakGlass,
    kit.ctx,
    req(emergency, bob.patient, parameters(reason, "already-treating", [signedTx(other.key, payload)])),
  );
  assert.equal(res.status, 403, "signed by another clinician's key");
  res = await call(
    breakGlass,
    kit.ctx,
    req(emergency, bob.patient, parameters("something else", "already-treating", [signedTx(clinician.key, payload)])),
  );
  assert.equal(res.status, 400);
  res = await call(breakGlass, kit.ctx, req(emergency, bob.patient, parameters(reason, "because")));
  assert.equal(res.status, 400);
  assert.deepEqual(res.body.issue[0].expression, ["basis"]);
  res = await call(breakGlass, kit.ctx, req(emergency, bob.patient, parameters("x".repeat(281), "already-treating")));
  assert.equal(res.status, 400);
  res = await call(breakGlass, kit.ctx, req(emergency, bob.patient, { resourceType: "Patient" }));
  assert.equal(res.status, 400);
  const nobody = crypto.randomUUID();
  const forNobody = { ...payload, patient: nobody };
  res = await call(
    breakGlass,
    kit.ctx,
    req(emergency, nobody, parameters(reason, "already-treating", [signedTx(clinician.key, forNobody)])),
  );
  assert.equal(res.status, 404, "the ledger knows no such patient");
  // A window longer than the network allows is refused by the ledger.
  const long = { ...payload, windowMs: 24 * 3_600_000 };
  res = await call(
    breakGlass,
    kit.ctx,
    req(
      emergency,
      bob.patient,
      parameters(reason, "already-treating", [
        { name: "windowMinutes", valueInteger: 24 * 60 },
        signedTx(clinician.key, long),
      ]),
    ),
  );
  assert.equal(res.status, 400);
  assert.match(res.body.issue[0].diagnostics, /invalid-window/);
});
