// PATRQT (patient requested): the purpose patients and proxies act under. It is a known purpose (so their reads can be
// logged in access.log) that no role may use, so it permits only through step 1.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { PURPOSES, ROLE_PERMISSIONS, ROLES, roleMayUse } from "./policy.ts";
import { checkPayload } from "./schemas.ts";
import { Net } from "./testkit.ts";

describe("PATRQT", () => {
  test("is a known purpose that no role may use", () => {
    assert.ok((PURPOSES as readonly string[]).includes("PATRQT"));
    for (const role of ROLES) {
      assert.ok(!(ROLE_PERMISSIONS[role].purposes as readonly string[]).includes("PATRQT"), role);
      assert.equal(roleMayUse(role, "PATRQT", "read"), false, role);
    }
  });

  test("permits the patient and a proxy (step 1); practitioners asking under it are refused at step 2", () => {
    const n = new Net();
    const own = n.decide("patient:3", 3, "PATRQT");
    assert.deepEqual([own.effect, own.step, own.rule], ["permit", 1, "own-record"]);
    const proxy = n.decide("proxy:carer-2", 2, "PATRQT");
    assert.deepEqual([proxy.effect, proxy.step, proxy.rule], ["permit", 1, "proxy"]);
    const clinician = n.decide("clinician:gp", 3, "PATRQT");
    assert.deepEqual([clinician.effect, clinician.step, clinician.rule], ["deny", 2, "purpose-not-allowed"]);
  });

  test("an access.log entry may carry it; an unknown purpose is still refused", () => {
    const entry = {
      requester: "a".repeat(64),
      patient: "0b0f4a9e-5c1d-4e0b-9a51-3f4f0e6c2d11",
      custodian: "gp-riverside",
      resourceType: "Observation",
      resourceId: "obs-1",
      purpose: "PATRQT",
      action: "read",
      decision: "permit",
      step: 1,
      rule: "own-record",
      height: 5,
    };
    assert.equal(checkPayload("access.log", { entries: [entry] }), true);
    assert.equal(checkPayload("access.log", { entries: [{ ...entry, purpose: "PATIENT" }] }), false);
  });

  test("a patient's access is logged on the ledger under it", () => {
    const n = new Net();
    const patient = n.patient(3).id;
    const r = n.submit("node:gp", "access.log", {
      entries: [
        {
          requester: n.keyId("patient:3"),
          patient,
          custodian: "gp-riverside",
          resourceType: "Observation",
          purpose: "PATRQT",
          action: "read",
          decision: "permit",
          step: 1,
          rule: "own-record",
          height: n.height,
        },
      ],
    });
    assert.equal(r.code, "ok");
  });
});
