import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import type { IndexEntry } from "../vault/types.ts";
import { prepareTransaction } from "./bundle.ts";
import { generatePatients } from "./generate.ts";
import {
  dateRange,
  extractIndex,
  MAX_DATE_MS,
  MIN_DATE_MS,
  normaliseString,
  plainPathExtractor,
  SEARCH_PARAMS,
  SEARCH_TYPES,
  searchParam,
} from "./search-params.ts";

const DATA = new URL("../../../shared/data/", import.meta.url);
const ms = (iso: string): number => Date.parse(iso);

test("date ranges cover the value's precision", () => {
  const cases: [string, string, string][] = [
    ["2020", "2020-01-01T00:00:00.000Z", "2020-12-31T23:59:59.999Z"],
    ["2020-02", "2020-02-01T00:00:00.000Z", "2020-02-29T23:59:59.999Z"],
    ["2021-02", "2021-02-01T00:00:00.000Z", "2021-02-28T23:59:59.999Z"],
    ["2020-12", "2020-12-01T00:00:00.000Z", "2020-12-31T23:59:59.999Z"],
    ["2020-02-29", "2020-02-29T00:00:00.000Z", "2020-02-29T23:59:59.999Z"],
    ["2020-01-02T10:00:00Z", "2020-01-02T10:00:00.000Z", "2020-01-02T10:00:00.999Z"],
    ["2020-01-02T10:00:00+01:00", "2020-01-02T09:00:00.000Z", "2020-01-02T09:00:00.999Z"],
    ["2011-12-13T22:28:27-05:00", "2011-12-14T03:28:27.000Z", "2011-12-14T03:28:27.999Z"],
    ["2020-01-01T00:30:00+14:00", "2019-12-31T10:30:00.000Z", "2019-12-31T10:30:00.999Z"],
    ["2020-01-02T10:00:00.5Z", "2020-01-02T10:00:00.500Z", "2020-01-02T10:00:00.599Z"],
    ["2020-01-02T10:00:00.123Z", "2020-01-02T10:00:00.123Z", "2020-01-02T10:00:00.123Z"],
    ["2020-01-02T10:00:00.123456Z", "2020-01-02T10:00:00.123Z", "2020-01-02T10:00:00.123Z"],
    // Query forms: minutes only, no zone (UTC).
    ["2020-01-02T10:00", "2020-01-02T10:00:00.000Z", "2020-01-02T10:00:59.999Z"],
    ["2020-01-02T10:00:00", "2020-01-02T10:00:00.000Z", "2020-01-02T10:00:00.999Z"],
  ];
  for (const [value, low, high] of cases) {
    assert.deepEqual(dateRange(value), { low: ms(low), high: ms(high) }, value);
  }
  // Years below 100 are not mapped onto the 1900s.
  assert.equal(new Date((dateRange("0050") as { low: number }).low).getUTCFullYear(), 50);
  for (const bad of [
    "2021-02-29",
    "2020-13",
    "2020-00",
    "2020-04-31",
    "2020-01-02T24:00:00Z",
    "2020-1-2",
    "yesterday",
    "",
    "2020-01-02T10:00:00+15:00",
  ]) {
    assert.equal(dateRange(bad), undefined, bad);
  }
});

test("strings are normalised: case, accents, width and whitespace", () => {
  assert.equal(normaliseString("  José   ÁLVAREZ "), "jose alvarez");
  assert.equal(normaliseString("Ｓｍｉｔｈ"), "smith");
  assert.equal(normaliseString("Ørsted\tMüller-Lüdenscheidt"), "ørsted muller-ludenscheidt");
  assert.equal(normaliseString("Ñandú"), "nandu");
});

test("the table has what issue 4 asks for on each type", () => {
  const expect: Record<string, string[]> = {
    Patient: ["identifier", "name", "family", "given", "birthdate", "gender"],
    Observation: ["patient", "subject", "code", "date", "category", "status"],
    Condition: ["patient", "subject", "code", "onset-date", "category", "clinical-status"],
    MedicationRequest: ["patient", "subject", "code", "authoredon", "category", "status"],
    AllergyIntolerance: ["patient", "code", "date", "category", "clinical-status"],
    Immunization: ["patient", "vaccine-code", "date", "status"],
    Encounter: ["patient", "subject", "date", "class", "type", "status"],
    Procedure: ["patient", "subject", "code", "date", "category", "status"],
    DiagnosticReport: ["patient", "subject", "code", "date", "category", "status"],
    CarePlan: ["patient", "subject", "date", "category", "status"],
  };
  assert.deepEqual([...SEARCH_TYPES].sort(), Object.keys(expect).sort());
  for (const [type, codes] of Object.entries(expect)) {
    for (const code of codes) assert.ok(searchParam(type, code), `${type}.${code}`);
  }
  assert.equal(searchParam("Observation", "name"), undefined);
  for (const defs of Object.values(SEARCH_PARAMS)) {
    assert.equal(new Set(defs.map((d) => d.code)).size, defs.length, "codes are unique per type");
  }
});

const find = (entries: IndexEntry[], param: string): IndexEntry[] => entries.filter((e) => e.param === param);

test("a Patient: identifiers, name parts, birth date range, gender", () => {
  const entries = extractIndex({
    resourceType: "Patient",
    id: "p1",
    identifier: [
      { system: "https://fhir.nhs.uk/Id/nhs-number", value: "9990001234" },
      { value: "no-system" },
      { system: "https://fhir.nhs.uk/Id/nhs-number", value: "9990001234" },
    ],
    name: [{ family: "Álvarez", given: ["José", "María"], prefix: ["Dr."] }, { text: "Pepe  Álvarez" }],
    birthDate: "1980-05",
    gender: "male",
  } as { resourceType: string });
  assert.deepEqual(find(entries, "identifier"), [
    { param: "identifier", kind: "token", system: "https://fhir.nhs.uk/Id/nhs-number", code: "9990001234" },
    { param: "identifier", kind: "token", system: "", code: "no-system" },
  ]);
  assert.deepEqual(
    find(entries, "name").map((e) => (e as { value: string }).value),
    ["alvarez", "jose", "maria", "dr.", "pepe alvarez"],
  );
  assert.deepEqual(find(entries, "family"), [{ param: "family", kind: "string", value: "alvarez" }]);
  assert.equal(find(entries, "given").length, 2);
  assert.deepEqual(find(entries, "birthdate"), [
    { param: "birthdate", kind: "date", low: ms("1980-05-01T00:00:00Z"), high: ms("1980-05-31T23:59:59.999Z") },
  ]);
  assert.deepEqual(find(entries, "gender"), [{ param: "gender", kind: "token", system: "", code: "male" }]);
});

test("clinical types: choice dates, periods with open ends, patient vs subject, medication codes", () => {
  const condition = extractIndex({
    resourceType: "Condition",
    subject: { reference: "Group/g1" },
    onsetPeriod: { start: "2019-03" },
    code: { coding: [{ system: "http://snomed.info/sct", code: "44054006" }, { code: "no-system" }, { system: "x" }] },
  } as { resourceType: string });
  assert.deepEqual(find(condition, "patient"), [], "a Group subject is not a patient");
  assert.deepEqual(find(condition, "subject"), [{ param: "subject", kind: "reference", value: "Group/g1" }]);
  assert.deepEqual(find(condition, "onset-date"), [
    { param: "onset-date", kind: "date", low: ms("2019-03-01T00:00:00Z"), high: MAX_DATE_MS },
  ]);
  assert.deepEqual(find(condition, "code"), [
    { param: "code", kind: "token", system: "http://snomed.info/sct", code: "44054006" },
    { param: "code", kind: "token", system: "", code: "no-system" },
  ]);

  const encounter = extractIndex({
    resourceType: "Encounter",
    subject: { reference: "Patient/p1/_history/3" },
    period: { end: "2020-01-01" },
    class: { system: "http://terminology.hl7.org/CodeSystem/v3-ActCode", code: "AMB" },
    status: "finished",
  } as { resourceType: string });
  assert.deepEqual(find(encounter, "patient"), [{ param: "patient", kind: "reference", value: "Patient/p1" }]);
  assert.deepEqual(find(encounter, "date"), [
    { param: "date", kind: "date", low: MIN_DATE_MS, high: ms("2020-01-01T23:59:59.999Z") },
  ]);
  assert.deepEqual(find(encounter, "class"), [
    { param: "class", kind: "token", system: "http://terminology.hl7.org/CodeSystem/v3-ActCode", code: "AMB" },
  ]);

  const byCode = extractIndex({
    resourceType: "MedicationRequest",
    medicationCodeableConcept: { coding: [{ system: "http://www.nlm.nih.gov/research/umls/rxnorm", code: "313782" }] },
    subject: { reference: "https://elsewhere.example/fhir/Patient/p9" },
    authoredOn: "2020-06-01T08:00:00Z",
    dosageInstruction: [{ timing: { event: ["2020-06-02T08:00:00Z", "2020-06-03T08:00:00Z"] } }],
  } as { resourceType: string });
  assert.equal(find(byCode, "code").length, 1);
  assert.deepEqual(find(byCode, "patient"), [], "absolute references name nothing here");
  assert.equal(find(byCode, "date").length, 2);
  assert.equal(find(byCode, "authoredon").length, 1);
  const byReference = extractIndex({
    resourceType: "MedicationRequest",
    medicationReference: { reference: "Medication/m1" },
  } as { resourceType: string });
  assert.deepEqual(find(byReference, "code"), []);

  const allergy = extractIndex({
    resourceType: "AllergyIntolerance",
    patient: { reference: "Patient/p1" },
    code: { coding: [{ system: "s", code: "peanut" }] },
    reaction: [{ substance: { coding: [{ system: "s", code: "arachis-oil" }] }, manifestation: [{ text: "rash" }] }],
    category: ["food"],
  } as { resourceType: string });
  assert.deepEqual(
    find(allergy, "code").map((e) => (e as { code: string }).code),
    ["peanut", "arachis-oil"],
  );
  assert.deepEqual(find(allergy, "category"), [{ param: "category", kind: "token", system: "", code: "food" }]);
  assert.deepEqual(find(allergy, "patient"), [{ param: "patient", kind: "reference", value: "Patient/p1" }]);

  assert.deepEqual(extractIndex({ resourceType: "Organization" }), []);
  assert.deepEqual(extractIndex({ resourceType: "Claim" }), []);
});

test("every Synthea bundle indexes after import; known values are found", () => {
  let ids = 0;
  const newId = (): string => `id-${++ids}`;
  let total = 0;
  const perParam = new Map<string, number>();
  let patients = 0;
  let mrnFound = 0;
  for (const file of readdirSync(new URL("synthea/", DATA))) {
    const bundle = JSON.parse(readFileSync(new URL(`synthea/${file}`, DATA), "utf8"));
    const familyFromFile = file.split("_")[1] as string;
    for (const entry of prepareTransaction(bundle, { newId })) {
      const entries = extractIndex(entry.resource);
      total += entries.length;
      for (const e of entries)
        perParam.set(`${entry.resourceType}.${e.param}`, (perParam.get(`${entry.resourceType}.${e.param}`) ?? 0) + 1);
      if (entry.resourceType === "Patient") {
        patients++;
        // The file name carries the family name (with accents stripped): its normalised prefix is indexed.
        const families = find(entries, "family").map((e) => (e as { value: string }).value);
        assert.ok(
          families.some((f) => f.startsWith(normaliseString(familyFromFile).slice(0, 4))),
          `${file}: ${families}`,
        );
        // Synthea's medical record number: type MR, system http://hospital.smarthealthit.org.
        const patient = entry.resource as {
          identifier?: { system?: string; value?: string; type?: { coding?: { code?: string }[] } }[];
        };
        const mrn = patient.identifier?.find((i) => i.type?.coding?.some((c) => c.code === "MR"));
        assert.ok(mrn?.value, file);
        assert.ok(
          find(entries, "identifier").some(
            (e) => e.kind === "token" && e.system === mrn.system && e.code === mrn.value,
          ),
        );
        mrnFound++;
      } else if (SEARCH_PARAMS[entry.resourceType] !== undefined && entry.resourceType !== "Patient") {
        // Every clinical record is found by its patient after the urn:uuid references were rewritten.
        const patient = find(entries, "patient");
        assert.deepEqual(patient, [{ param: "patient", kind: "reference", value: `Patient/${entry.patient}` }]);
      }
    }
  }
  assert.equal(patients, 40);
  assert.equal(mrnFound, 40);
  // Counts for the record (Synthea: 2,623 Observations, each with code, date, category, status, patient, subject).
  assert.equal(perParam.get("Observation.patient"), 2623);
  assert.equal(perParam.get("Observation.date"), 2623);
  assert.equal(perParam.get("Immunization.vaccine-code"), 380);
  assert.equal(perParam.get("Patient.birthdate"), 40);
  assert.ok(total > 25_000, `${total} index entries`);
});

test("every HL7 and UK Core example indexes; the NHS number of the UK Core patient is a token", () => {
  for (const dir of ["hl7-examples", "ukcore-examples"]) {
    for (const file of readdirSync(new URL(`${dir}/`, DATA)).filter((f) => f.endsWith(".json"))) {
      const resource = JSON.parse(readFileSync(new URL(`${dir}/${file}`, DATA), "utf8"));
      const entries = extractIndex(resource);
      if (resource.resourceType === "Patient") assert.ok(entries.length > 0, file);
      if (file === "UKCore-Patient-RichardSmith-Example.json") {
        assert.ok(
          entries.some(
            (e) => e.kind === "token" && e.system === "https://fhir.nhs.uk/Id/nhs-number" && e.code === "9912003888",
          ),
        );
        assert.ok(entries.some((e) => e.param === "family" && e.kind === "string" && e.value === "smith"));
      }
    }
  }
});

test("the plain-path walk indexes exactly what FHIRPath does, on every resource of the test data", () => {
  // Most expressions are plain paths; the walk must be in use for them, or this test proves nothing.
  const expressions = new Set(
    Object.values(SEARCH_PARAMS).flatMap((defs) => defs.map((d) => d.evaluated ?? d.expression)),
  );
  const plain = [...expressions].filter((e) => plainPathExtractor(e) !== undefined);
  assert.ok(plain.length >= 45, `${plain.length} of ${expressions.size} expressions walked`);
  for (const e of ["Observation.effective", "Patient.name.given", "MedicationRequest.dosageInstruction.timing.event"])
    assert.ok(plain.includes(e), e);
  for (const e of [
    "Condition.onset.as(dateTime) | Condition.onset.as(Period)",
    "(MedicationRequest.medication as CodeableConcept)",
  ])
    assert.equal(plainPathExtractor(e), undefined, e);

  const resources: { resourceType: string }[] = [];
  let ids = 0;
  const newId = (): string => `id-${++ids}`;
  for (const file of readdirSync(new URL("synthea/", DATA))) {
    const bundle = JSON.parse(readFileSync(new URL(`synthea/${file}`, DATA), "utf8"));
    for (const entry of prepareTransaction(bundle, { newId })) resources.push(entry.resource);
  }
  for (const dir of ["hl7-examples", "ukcore-examples"]) {
    for (const file of readdirSync(new URL(`${dir}/`, DATA)).filter((f) => f.endsWith(".json")))
      resources.push(JSON.parse(readFileSync(new URL(`${dir}/${file}`, DATA), "utf8")));
  }
  for (const bundle of generatePatients({ patients: 60, seed: "plain-paths", now: "2025-06-30" }))
    for (const entry of prepareTransaction(bundle, { newId })) resources.push(entry.resource);
  let entries = 0;
  for (const resource of resources) {
    const walked = extractIndex(resource);
    assert.deepEqual(
      walked,
      extractIndex(resource, true),
      `${resource.resourceType}/${(resource as { id?: string }).id}`,
    );
    entries += walked.length;
  }
  assert.ok(resources.length > 8000 && entries > 40_000, `${resources.length} resources, ${entries} entries`);
});

test("extraction does not modify the resource", () => {
  const r = {
    resourceType: "Observation",
    status: "final",
    code: { text: "x" },
    subject: { reference: "Patient/p" },
    effectivePeriod: { start: "2020" },
  };
  const before = JSON.stringify(r);
  extractIndex(r);
  assert.equal(JSON.stringify(r), before);
});
