import assert from "node:assert/strict";
import { test } from "node:test";
import { PURPOSES, ROLE_PERMISSIONS, ROLES } from "../../contract/policy.ts";
import {
  contextOf,
  DEFAULT_PURPOSE,
  formatScopes,
  type Interaction,
  intersectScopes,
  normalizeScopes,
  PATIENT_PURPOSE,
  PURPOSE_SYSTEM,
  parseScope,
  parseScopes,
  resolvePurpose,
  type Scope,
  scopeCeiling,
  scopesAllow,
} from "./scopes.ts";

function scopes(text: string): Scope[] {
  const r = parseScopes(text);
  if (!r.ok) throw new Error(`${text}: ${r.error}`);
  return r.scopes;
}

test("v2 scopes parse; v1 read/write/* map to v2 permissions", () => {
  assert.equal(formatScopes(scopes("patient/Observation.rs")), "patient/Observation.rs");
  assert.equal(formatScopes(scopes("user/*.cruds")), "user/*.cruds");
  assert.equal(formatScopes(scopes("system/Patient.s")), "system/Patient.s");
  assert.equal(formatScopes(scopes("patient/Observation.read")), "patient/Observation.rs");
  assert.equal(formatScopes(scopes("user/Condition.write")), "user/Condition.cud");
  assert.equal(formatScopes(scopes("user/*.*")), "user/*.cruds");
  assert.equal(formatScopes(scopes("  patient/*.rs   user/Observation.r ")), "patient/*.rs user/Observation.r");
});

test("malformed scopes are refused, naming the culprit", () => {
  for (const bad of [
    "patient/Observation",
    "patient/Observation.",
    "patient/Observation.sr", // out of order
    "patient/Observation.rr",
    "patient/Observation.x",
    "practitioner/Observation.rs",
    "patient/observation.rs",
    "patient/Obs-ervation.rs",
    "patient/*.read?category=x", // v1 names take no parameters
    "patient/Observation.rs?",
    "Observation.rs",
    "patient/.rs",
    "user/Observation.rs;drop",
  ]) {
    const r = parseScopes(`patient/*.rs ${bad}`);
    assert.equal(r.ok, false, bad);
    if (!r.ok) assert.equal(r.scope, bad);
  }
  assert.equal(parseScopes("x".repeat(3000)).ok, false);
  assert.equal(parseScopes(Array.from({ length: 65 }, () => "user/*.rs").join(" ")).ok, false);
});

test("non-resource scopes and parameter-narrowed v2 scopes are valid but never granted", () => {
  const r = parseScopes("openid fhirUser launch/patient patient/Observation.rs?category=laboratory user/*.rs");
  assert.ok(r.ok);
  assert.deepEqual(r.ignored, ["openid", "fhirUser", "launch/patient", "patient/Observation.rs?category=laboratory"]);
  assert.equal(formatScopes(r.scopes), "user/*.rs");
  // A dot inside the parameter value does not confuse the split.
  assert.equal(parseScope("patient/Observation.rs?code=http://loinc.org|1.2"), "ignored");
});

test("normalize merges, drops what a wildcard covers and orders canonically", () => {
  assert.equal(
    formatScopes(
      normalizeScopes(
        scopes("user/Observation.r system/*.rs user/*.rs user/Observation.s patient/Consent.c patient/Consent.d"),
      ),
    ),
    "patient/Consent.cd user/*.rs system/*.rs",
  );
  // A specific scope with more than the wildcard stays.
  assert.equal(formatScopes(normalizeScopes(scopes("user/*.rs user/Observation.cu"))), "user/*.rs user/Observation.cu");
});

test("granted = requested ∩ ceiling, per context", () => {
  const ceiling = scopes("patient/*.rs patient/Consent.cruds");
  const grant = (req: string) => formatScopes(intersectScopes(scopes(req), ceiling));
  assert.equal(grant("patient/*.cruds"), "patient/*.rs patient/Consent.cruds");
  assert.equal(grant("patient/*.read"), "patient/*.rs");
  assert.equal(grant("patient/Observation.rs"), "patient/Observation.rs");
  assert.equal(grant("patient/Observation.cruds"), "patient/Observation.rs");
  assert.equal(grant("patient/Consent.d"), "patient/Consent.d");
  assert.equal(grant("user/*.rs system/*.rs"), "", "another context is dropped");
  assert.equal(grant("patient/Observation.c"), "");
  // Narrowing from both sides: a type-specific ceiling against a wildcard request.
  assert.equal(
    formatScopes(intersectScopes(scopes("user/*.cruds"), scopes("user/Practitioner.rs"))),
    "user/Practitioner.rs",
  );
});

// The scope matrix: each identity with everything it may have, against each kind of request.
const IDENTITIES = {
  patient: { kind: "patient" },
  "proxy(view)": { kind: "proxy", scope: "view" },
  "proxy(manage)": { kind: "proxy", scope: "manage" },
  clinician: { kind: "member", role: "clinician" },
  nurse: { kind: "member", role: "nurse" },
  researcher: { kind: "member", role: "researcher" },
  analyst: { kind: "member", role: "analyst" },
  admin: { kind: "member", role: "admin" },
  node: { kind: "node" },
} as const;

const REQUESTS: [string, Interaction][] = [
  ["Observation", "read"],
  ["Observation", "search"],
  ["Observation", "create"],
  ["Observation", "update"],
  ["Observation", "delete"],
  ["Consent", "read"],
  ["Consent", "create"],
  ["Consent", "delete"],
  ["Practitioner", "read"],
];

// Columns in REQUESTS order: 1 = allowed.
const MATRIX: Record<keyof typeof IDENTITIES, string> = {
  patient: "11000 111 1",
  "proxy(view)": "11000 100 1",
  "proxy(manage)": "11000 111 1",
  clinician: "11110 110 1",
  nurse: "11110 110 1",
  researcher: "11000 100 1",
  analyst: "11000 100 1",
  admin: "00000 000 1",
  node: "11000 100 1",
};

test("scope matrix: what each identity's full grant allows", () => {
  for (const [name, id] of Object.entries(IDENTITIES) as [
    keyof typeof IDENTITIES,
    (typeof IDENTITIES)[keyof typeof IDENTITIES],
  ][]) {
    const granted = scopeCeiling(id);
    const context = contextOf(id.kind);
    const row = REQUESTS.map(([type, interaction]) =>
      scopesAllow(granted, context, type, interaction) ? "1" : "0",
    ).join("");
    assert.equal(row, MATRIX[name].replaceAll(" ", ""), `${name}: ${formatScopes(granted)}`);
    // Scopes only ever work in the identity's own context.
    for (const other of ["patient", "user", "system"] as const) {
      if (other === context) continue;
      assert.equal(scopesAllow(granted, other, "Observation", "read"), false, `${name} in ${other} context`);
    }
  }
  assert.deepEqual(scopeCeiling({ kind: "member", role: "janitor" }), [], "an unknown role gets nothing");
});

test("purpose: role table decides; defaults are in each role's list; patients are PATRQT", () => {
  for (const role of ROLES) {
    const d = DEFAULT_PURPOSE[role];
    if (d !== undefined) assert.ok((ROLE_PERMISSIONS[role].purposes as readonly string[]).includes(d), role);
    for (const p of PURPOSES) {
      const r = resolvePurpose({ kind: "member", role }, p);
      assert.equal(r.ok, (ROLE_PERMISSIONS[role].purposes as readonly string[]).includes(p), `${role} ${p}`);
      if (!r.ok) assert.equal(r.error, "invalid_scope");
    }
  }
  assert.deepEqual(resolvePurpose({ kind: "member", role: "clinician" }, undefined), { ok: true, purpose: "TREAT" });
  assert.deepEqual(resolvePurpose({ kind: "member", role: "researcher" }, undefined), { ok: true, purpose: "HRESCH" });
  assert.deepEqual(resolvePurpose({ kind: "member", role: "analyst" }, undefined), { ok: true, purpose: "HOPERAT" });
  assert.deepEqual(resolvePurpose({ kind: "member", role: "admin" }, undefined), { ok: true });
  assert.deepEqual(resolvePurpose({ kind: "member", role: "clinician" }, `${PURPOSE_SYSTEM}|ETREAT`), {
    ok: true,
    purpose: "ETREAT",
  });
  assert.deepEqual(resolvePurpose({ kind: "patient" }, undefined), { ok: true, purpose: PATIENT_PURPOSE });
  assert.deepEqual(resolvePurpose({ kind: "proxy" }, "PATRQT"), { ok: true, purpose: PATIENT_PURPOSE });
  assert.equal(resolvePurpose({ kind: "patient" }, "TREAT").ok, false);
  assert.equal(resolvePurpose({ kind: "member", role: "clinician" }, "PATRQT").ok, false);
  assert.deepEqual(resolvePurpose({ kind: "node" }, undefined), { ok: true });
  assert.equal(resolvePurpose({ kind: "node" }, "TREAT").ok, false);
  const malformed = resolvePurpose({ kind: "member", role: "clinician" }, "treat; drop");
  assert.equal(malformed.ok || malformed.error, "invalid_request");
  const otherSystem = resolvePurpose({ kind: "member", role: "clinician" }, "http://example.org|TREAT");
  assert.equal(otherSystem.ok || otherSystem.error, "invalid_request");
});
