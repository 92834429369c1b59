import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { OperationOutcomeError } from "./outcome.ts";
import { isCalendarValid, parseReference, STORED_TYPES, validateResource } from "./validate.ts";

const DATA = new URL("../../../shared/data/", import.meta.url);

function thirdPartyResources(): { file: string; resource: Record<string, unknown> }[] {
  const out: { file: string; resource: Record<string, unknown> }[] = [];
  for (const dir of ["synthea", "hl7-examples", "ukcore-examples"]) {
    for (const file of readdirSync(new URL(`${dir}/`, DATA)).filter((f) => f.endsWith(".json"))) {
      const json = JSON.parse(readFileSync(new URL(`${dir}/${file}`, DATA), "utf8"));
      if (json.resourceType === "Bundle") {
        for (const e of json.entry) out.push({ file, resource: e.resource });
      } else out.push({ file, resource: json });
    }
  }
  return out;
}

function rejects(
  resource: unknown,
  expression: string | undefined,
  status = 400,
  code?: string,
): OperationOutcomeError {
  try {
    validateResource(resource);
  } catch (e) {
    assert.ok(e instanceof OperationOutcomeError, `expected an OperationOutcomeError, got ${e}`);
    assert.equal(e.status, status, e.message);
    assert.equal(e.expression, expression, e.message);
    if (code !== undefined) assert.equal(e.issueCode, code, e.message);
    return e;
  }
  assert.fail(`accepted: ${JSON.stringify(resource).slice(0, 200)}`);
}

const obs = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  resourceType: "Observation",
  id: "o1",
  status: "final",
  code: { coding: [{ system: "http://loinc.org", code: "8302-2" }] },
  subject: { reference: "Patient/p1" },
  effectiveDateTime: "2020-01-02T10:00:00+01:00",
  ...extra,
});

test("every resource in the third-party test data is accepted, unchanged", () => {
  const all = thirdPartyResources();
  assert.equal(all.length, 5510);
  const types = new Set<string>();
  for (const { file, resource } of all) {
    const before = JSON.stringify(resource);
    try {
      validateResource(resource);
    } catch (e) {
      assert.fail(`${file}: ${(e as Error).message}`);
    }
    assert.equal(JSON.stringify(resource), before);
    types.add(resource.resourceType as string);
  }
  for (const t of types) assert.ok(STORED_TYPES.has(t), t);
  assert.ok(types.size >= 20);
});

test("not an object, no resourceType, unknown or unsupported resourceType", () => {
  rejects([], "Resource", 400, "structure");
  rejects("Patient", "Resource");
  rejects(null, "Resource");
  rejects({ id: "x" }, "resourceType", 400, "required");
  const unknown = rejects({ resourceType: "Patinet<script>" }, "resourceType", 400, "value");
  assert.doesNotMatch(unknown.message, /script/, "the caller's type name is not echoed");
  rejects({ resourceType: "Bundle", type: "collection" }, "resourceType", 400, "not-supported");
  rejects({ resourceType: "Patient", id: "has space" }, "Patient.id");
  rejects({ resourceType: "Patient", id: "x".repeat(65) }, "Patient.id");
  rejects({ resourceType: "Patient", id: 7 }, "Patient.id");
  assert.throws(() => validateResource({ resourceType: "Patient" }, { requireId: true }), /Patient\.id/);
});

test("unknown elements are refused at every depth, with the element named", () => {
  rejects(obs({ valueFoo: 1 }), "Observation.valueFoo", 400, "structure");
  rejects(obs({ subject: { reference: "Patient/p1", extra: true } }), "Observation.subject.extra");
  rejects(
    obs({ component: [{ code: { text: "a" } }, { code: { text: "b" }, bogus: 1 }] }),
    "Observation.component[1].bogus",
  );
  rejects({ resourceType: "Patient", name: [{ family: "Smith", surname: "x" }] }, "Patient.name[0].surname");
  // A Patient element on an Observation is the classic sign of a wrong type.
  rejects(obs({ birthDate: "2000-01-01" }), "Observation.birthDate");
  rejects(obs({ _code: { id: "x" } }), "Observation._code", 400, "structure");
  rejects(obs({ "bad key<script>": 1 }), "Observation", 400, "structure");
});

test("primitive types follow the R4 regexes and the calendar", () => {
  rejects(obs({ status: 1 }), "Observation.status", 400, "value");
  rejects(obs({ status: "fi nal " }), "Observation.status");
  rejects({ resourceType: "Patient", birthDate: "2020-13-01" }, "Patient.birthDate");
  rejects({ resourceType: "Patient", birthDate: "2021-02-29" }, "Patient.birthDate");
  validateResource({ resourceType: "Patient", birthDate: "2020-02-29" });
  rejects({ resourceType: "Patient", birthDate: "20-01-01" }, "Patient.birthDate");
  rejects({ resourceType: "Patient", birthDate: "2020-01-01T00:00:00Z" }, "Patient.birthDate");
  rejects(obs({ effectiveDateTime: "2020-01-02T10:00:00" }), "Observation.effectiveDateTime");
  rejects(obs({ effectiveDateTime: "2020-01-02T25:00:00Z" }), "Observation.effectiveDateTime");
  rejects(obs({ issued: "2020-01-02" }), "Observation.issued");
  rejects({ resourceType: "Patient", active: "true" }, "Patient.active");
  rejects({ resourceType: "Patient", multipleBirthInteger: 2 ** 31 }, "Patient.multipleBirthInteger");
  rejects({ resourceType: "Patient", multipleBirthInteger: 1.5 }, "Patient.multipleBirthInteger");
  rejects(obs({ valueQuantity: { value: "175" } }), "Observation.valueQuantity.value");
  rejects({ resourceType: "Patient", name: [{ family: "" }] }, "Patient.name[0].family");
  rejects({ resourceType: "Patient", telecom: [{ system: "phone", rank: 0 }] }, "Patient.telecom[0].rank");
  rejects({ resourceType: "Patient", photo: [{ data: "not base64!" }] }, "Patient.photo[0].data");
  rejects({ resourceType: "Patient", identifier: [{ system: "http://has space" }] }, "Patient.identifier[0].system");
});

test("cardinality: arrays where R4 repeats, single values elsewhere, no nulls or empties", () => {
  rejects(obs({ status: ["final"] }), "Observation.status", 400, "structure");
  rejects({ resourceType: "Patient", name: { family: "Smith" } }, "Patient.name");
  rejects({ resourceType: "Patient", name: [] }, "Patient.name");
  rejects({ resourceType: "Patient", name: [{}] }, "Patient.name[0]");
  rejects({ resourceType: "Patient", gender: null }, "Patient.gender");
  rejects({ resourceType: "Patient", name: [{ given: ["Ann", null] }] }, "Patient.name[0].given[1]");
  // A null in a primitive array is allowed when the `_` array carries its extension.
  validateResource({
    resourceType: "Patient",
    name: [{ given: ["Ann", null], _given: [null, { extension: [{ url: "http://x", valueString: "y" }] }] }],
  });
  validateResource({ resourceType: "Patient" });
});

test("required elements of the supported types", () => {
  const { code: _, ...noCode } = obs();
  rejects(noCode, "Observation.code", 400, "required");
  rejects(obs({ component: [{ valueString: "x" }] }), "Observation.component[0].code", 400, "required");
  rejects({ resourceType: "Condition", code: { text: "x" } }, "Condition.subject", 400, "required");
  const mr = {
    resourceType: "MedicationRequest",
    status: "active",
    intent: "order",
    subject: { reference: "Patient/p" },
  };
  rejects(mr, "MedicationRequest.medication[x]", 400, "required");
  validateResource({ ...mr, medicationReference: { reference: "Medication/m" } });
  const imm = {
    resourceType: "Immunization",
    status: "completed",
    vaccineCode: { text: "flu" },
    patient: { reference: "Patient/p" },
  };
  rejects(imm, "Immunization.occurrence[x]", 400, "required");
  validateResource({ ...imm, occurrenceString: "last spring" });
  rejects({ resourceType: "Encounter", status: "finished" }, "Encounter.class", 400, "required");
  rejects({ resourceType: "Consent", status: "active", scope: { text: "x" } }, "Consent.category", 400, "required");
  rejects({ resourceType: "Patient", extension: [{ valueString: "x" }] }, "Patient.extension[0].url", 400, "required");
  // A primitive present only through its extension (e.g. data-absent-reason) satisfies the minimum.
  const { status: __, ...noStatus } = obs();
  validateResource({
    ...noStatus,
    _status: {
      extension: [{ url: "http://hl7.org/fhir/StructureDefinition/data-absent-reason", valueCode: "unknown" }],
    },
  });
  rejects(noStatus, "Observation.status", 400, "required");
});

test("references: syntax, target types, conditional and local references, the patient link", () => {
  rejects(obs({ subject: { reference: "Patient/" } }), "Observation.subject.reference", 400, "value");
  rejects(obs({ subject: { reference: "Patinet/1" } }), "Observation.subject.reference");
  rejects(obs({ subject: { reference: "Patient/a b" } }), "Observation.subject.reference");
  rejects(obs({ subject: { reference: "urn:uuid:not-a-uuid" } }), "Observation.subject.reference");
  rejects(
    obs({ subject: { reference: "Patient?identifier=x|1" } }),
    "Observation.subject.reference",
    400,
    "not-supported",
  );
  rejects(obs({ subject: { reference: "Organization/o1" } }), "Observation.subject.reference", 400, "value");
  rejects(obs({ performer: [{ reference: "Medication/m1" }] }), "Observation.performer[0].reference");
  rejects(obs({ subject: { reference: "https://other.example/fhir/Patient/p1" } }), "Observation.subject.reference");
  rejects(
    obs({ subject: { reference: "#p" }, contained: [{ resourceType: "Patient", id: "p" }] }),
    "Observation.subject.reference",
  );
  validateResource(obs({ subject: { reference: "Group/g1" } }));
  validateResource(obs({ subject: { reference: "urn:uuid:0b8c6d43-3c4c-4a7f-9b5e-2f6a7f3d1b2c" } }));
  validateResource(obs({ performer: [{ reference: "https://other.example/fhir/Practitioner/x" }] }));
  validateResource(obs({ performer: [{ display: "Dr Who" }] }));
  validateResource(obs({ basedOn: [{ reference: "ServiceRequest/s1/_history/2" }] }));
  // ref-1: a local reference must name a contained resource.
  rejects(obs({ performer: [{ reference: "#missing" }] }), "Observation.performer[0].reference", 400, "invalid");
  validateResource(
    obs({
      performer: [{ reference: "#pr" }],
      contained: [{ resourceType: "Practitioner", id: "pr", name: [{ family: "Who" }] }],
    }),
  );
});

test("contained resources: an id, no nesting, no version metadata", () => {
  rejects(obs({ contained: [{ resourceType: "Practitioner" }] }), "Observation.contained[0].id");
  rejects(
    obs({
      contained: [{ resourceType: "Practitioner", id: "a", contained: [{ resourceType: "Practitioner", id: "b" }] }],
    }),
    "Observation.contained[0].contained",
  );
  rejects(
    obs({ contained: [{ resourceType: "Practitioner", id: "a", meta: { versionId: "1" } }] }),
    "Observation.contained[0].meta",
  );
  rejects(
    obs({ contained: [{ resourceType: "Practitioner", id: "a", nonsense: 1 }] }),
    "Observation.contained[0].nonsense",
  );
});

test("narrative: an xhtml div without active content", () => {
  const text = (div: string) => ({ resourceType: "Patient", text: { status: "generated", div } });
  validateResource(text('<div xmlns="http://www.w3.org/1999/xhtml"><p>Ann</p></div>'));
  rejects(text("<p>Ann</p>"), "Patient.text.div", 400, "value");
  rejects(text('<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></div>'), "Patient.text.div");
  rejects(
    text('<div xmlns="http://www.w3.org/1999/xhtml"><img src="x" onerror="alert(1)"/></div>'),
    "Patient.text.div",
  );
  rejects(
    text('<div xmlns="http://www.w3.org/1999/xhtml"><a href="javascript:alert(1)">x</a></div>'),
    "Patient.text.div",
  );
  // Words in the text that look like attributes are text.
  validateResource(text('<div xmlns="http://www.w3.org/1999/xhtml">seen on=admission; javascript: not used</div>'));
});

test("size and depth limits", () => {
  let nested: Record<string, unknown> = { url: "http://x", valueString: "leaf" };
  for (let i = 0; i < 40; i++) nested = { url: "http://x", extension: [nested] };
  assert.throws(
    () => validateResource({ resourceType: "Patient", extension: [nested] }),
    (e) => e instanceof OperationOutcomeError && e.status === 400 && /deeper than 32/.test(e.message),
  );
  validateResource({ resourceType: "Patient", extension: [nested] }, { maxDepth: 100 });
  const wide = {
    resourceType: "Patient",
    identifier: Array.from({ length: 40_000 }, (_, i) => ({ value: `v${i}`, system: "http://x" })),
  };
  rejects(wide, "Patient", 413, "too-costly");
  validateResource(wide, { maxNodes: 200_000 });
  rejects({ resourceType: "Patient", name: [{ given: Array.from({ length: 100_001 }, () => "A") }] }, "Patient", 413);
  rejects({ resourceType: "Patient", name: [{ text: "x".repeat(1_048_577) }] }, "Patient.name[0].text", 413);
});

test("errors inside a bundle entry are named under its path", () => {
  try {
    validateResource(obs({ status: 3 }), { path: "Bundle.entry[7].resource" });
    assert.fail("accepted");
  } catch (e) {
    assert.ok(e instanceof OperationOutcomeError);
    assert.equal(e.expression, "Bundle.entry[7].resource.status");
  }
});

test("fhir_comments (STU3-style XML comments) are tolerated as strings only", () => {
  validateResource(obs({ fhir_comments: ["converted from XML"] }));
  rejects(obs({ fhir_comments: "one" }), "Observation.fhir_comments");
});

test("parseReference tells the kinds of reference apart", () => {
  assert.deepEqual(parseReference("Patient/123"), { kind: "relative", type: "Patient", id: "123" });
  assert.deepEqual(parseReference("Patient/123/_history/4"), {
    kind: "relative",
    type: "Patient",
    id: "123",
    version: "4",
  });
  assert.deepEqual(parseReference("#c1"), { kind: "local", id: "c1" });
  assert.deepEqual(parseReference("Patient?identifier=1"), { kind: "conditional", type: "Patient" });
  assert.deepEqual(parseReference("https://x.org/fhir/Patient/9"), {
    kind: "absolute",
    url: "https://x.org/fhir/Patient/9",
    type: "Patient",
    id: "9",
  });
  assert.equal(parseReference("urn:uuid:0B8C6D43-3C4C-4A7F-9B5E-2F6A7F3D1B2C")?.kind, "urn");
  assert.equal(
    parseReference("Organization/https://fhir.hl7.org.uk/StructureDefinition/UKCore-Organization")?.kind,
    "opaque",
  );
  for (const bad of ["", "Patient", "/Patient/1", "Foo/1", "Patient/1/2", "Patient/../x", "a b", "urn:isbn:1"]) {
    assert.equal(parseReference(bad), undefined, bad);
  }
});

test("calendar validity", () => {
  assert.equal(isCalendarValid("2024-02-29"), true);
  assert.equal(isCalendarValid("1900-02-29"), false);
  assert.equal(isCalendarValid("2000-02-29"), true);
  assert.equal(isCalendarValid("2021-04-31T10:00:00Z"), false);
  assert.equal(isCalendarValid("2021-04"), true);
});
