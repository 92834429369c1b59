import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Bundle, Coding, Patient, Resource } from "@medplum/fhirtypes";
import { isSensitive, LABELS, labelOfCode, labelsOfCodes, SENSITIVE_LABELS } from "../contract/labels.ts";
import { prepareTransaction } from "./bundle.ts";
import { DEFAULT_NOW, generatedNhsNumber, generatePatient, generatePatients, MAX_PATIENTS } from "./generate.ts";
import { isTestNhsNumber, NHS_NUMBER_SYSTEM } from "./nhs-number.ts";
import { securityLabels } from "./resource-facts.ts";

// The R4 primitive type patterns (https://hl7.org/fhir/R4/datatypes.html).
const YEAR = "([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)";
const MONTH = "(0[1-9]|1[0-2])";
const DAY = "(0[1-9]|[1-2][0-9]|3[0-1])";
const TIME = "([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?";
const ZONE = "(Z|(\\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))";
const R4_DATE = new RegExp(`^${YEAR}(-${MONTH}(-${DAY})?)?$`);
const R4_DATETIME = new RegExp(`^${YEAR}(-${MONTH}(-${DAY}(T${TIME}${ZONE})?)?)?$`);
const R4_INSTANT = new RegExp(`^${YEAR}-${MONTH}-${DAY}T${TIME}${ZONE}$`);

const SNOMED = "http://snomed.info/sct";
const LOINC = "http://loinc.org";
const DMD = "https://dmd.nhs.uk";
const UCUM = "http://unitsofmeasure.org";

const SEED = "generate-test";
const RUN: Bundle[] = [...generatePatients({ patients: 1000, seed: SEED })];

type Json = Record<string, unknown>;

function resources(bundle: Bundle): Resource[] {
  return (bundle.entry ?? []).map((e) => e.resource as Resource);
}

function patientOf(bundle: Bundle): Patient {
  const patient = bundle.entry?.[0]?.resource;
  assert.equal(patient?.resourceType, "Patient");
  return patient as Patient;
}

/** Every [key, value] pair anywhere below `node`. */
function* walk(node: unknown, key = ""): Generator<[string, unknown]> {
  if (Array.isArray(node)) {
    for (const item of node) yield* walk(item, key);
  } else if (node !== null && typeof node === "object") {
    for (const [k, v] of Object.entries(node)) {
      yield [k, v];
      yield* walk(v, k);
    }
  }
}

/** Every Reference object below `node`, with the element that holds it. */
function* references(node: unknown, key = ""): Generator<[string, Json]> {
  if (Array.isArray(node)) {
    for (const item of node) yield* references(item, key);
  } else if (node !== null && typeof node === "object") {
    const obj = node as Json;
    if (typeof obj.reference === "string") yield [key, obj];
    for (const [k, v] of Object.entries(obj)) yield* references(v, k);
  }
}

function codings(concept: unknown): Coding[] {
  return ((concept as { coding?: Coding[] } | undefined)?.coding ?? []) as Coding[];
}

function age(patient: Patient, at: string): number {
  return (Date.parse(at) - Date.parse(patient.birthDate as string)) / (365.25 * 86_400_000);
}

describe("generatePatients: determinism", () => {
  it("gives byte-identical output for the same options, and different output for another seed", () => {
    const again = [...generatePatients({ patients: 200, seed: SEED })].map((b) => JSON.stringify(b));
    assert.deepEqual(
      again,
      RUN.slice(0, 200).map((b) => JSON.stringify(b)),
    );
    const other = [...generatePatients({ patients: 200, seed: `${SEED}-other` })].map((b) => JSON.stringify(b));
    for (let i = 0; i < 200; i++) assert.notEqual(other[i], again[i], `patient ${i} is the same under another seed`);
    const otherNumbers = new Set(other.map((s) => JSON.parse(s).entry[0].resource.identifier[0].value));
    const sameNumbers = again.filter((s) => otherNumbers.has(JSON.parse(s).entry[0].resource.identifier[0].value));
    assert.ok(sameNumbers.length < 5, "another seed should give other NHS numbers");
  });

  it("generates slices that equal the whole run, and single patients that equal the run's", () => {
    const slice = [...generatePatients({ patients: 5, seed: SEED, start: 500 })];
    assert.deepEqual(slice, RUN.slice(500, 505));
    assert.deepEqual(generatePatient(SEED, 42), RUN[42]);
    assert.equal(patientOf(RUN[7] as Bundle).identifier?.[0]?.value, generatedNhsNumber(SEED, 7));
  });

  it("uses a fixed 'now' unless given one, and never the clock", () => {
    const explicit = [...generatePatients({ patients: 20, seed: SEED, now: DEFAULT_NOW })];
    assert.deepEqual(explicit, RUN.slice(0, 20));
    const earlier = [...generatePatients({ patients: 20, seed: SEED, now: "2019-01-01" })];
    assert.notDeepEqual(earlier, RUN.slice(0, 20));
    for (const bundle of earlier) {
      for (const [key, value] of walk(bundle)) {
        if (typeof value === "string" && R4_DATETIME.test(value) && /^\d{4}-\d\d-\d\d/.test(value) && key !== "value") {
          assert.ok(value.slice(0, 10) <= "2019-01-01", `${key} ${value} is after now`);
        }
      }
    }
  });

  it("refuses bad options", () => {
    for (const patients of [0, -1, 1.5, MAX_PATIENTS + 1, Number.NaN]) {
      assert.throws(() => [...generatePatients({ patients, seed: "x" })], RangeError, String(patients));
    }
    assert.throws(() => [...generatePatients({ patients: 1, seed: "x", start: -1 })], RangeError);
    assert.throws(() => [...generatePatients({ patients: 1, seed: "x", now: "not a date" })], RangeError);
    assert.throws(() => generatePatient("x", -3), RangeError);
  });
});

describe("generatePatients: NHS numbers", () => {
  it("gives 10,000 patients valid, distinct NHS numbers from the test range, verified", () => {
    const seen = new Set<string>();
    for (const bundle of generatePatients({ patients: 10_000, seed: "ten-thousand" })) {
      const patient = patientOf(bundle);
      const identifier = patient.identifier?.find((i) => i.system === NHS_NUMBER_SYSTEM);
      assert.ok(identifier, "NHS number identifier");
      assert.ok(isTestNhsNumber(identifier.value), `${identifier.value} is not a valid test-range number`);
      assert.equal(identifier.extension?.[0]?.url.endsWith("Extension-UKCore-NHSNumberVerificationStatus"), true);
      seen.add(identifier.value as string);
    }
    assert.equal(seen.size, 10_000);
  });
});

describe("generatePatients: bundles", () => {
  it("are transaction Bundles whose every reference resolves inside the bundle, to the right type", () => {
    const TARGET: Record<string, readonly string[]> = {
      subject: ["Patient"],
      patient: ["Patient"],
      encounter: ["Encounter"],
      result: ["Observation"],
      reasonReference: ["Condition"],
      addresses: ["Condition"],
      generalPractitioner: ["Organization"],
      serviceProvider: ["Organization"],
      performer: ["Organization"],
      requester: ["Practitioner"],
      recorder: ["Practitioner"],
      author: ["Practitioner"],
      individual: ["Practitioner"],
      actor: ["Practitioner"],
    };
    const allFullUrls = new Set<string>();
    let checked = 0;
    for (const bundle of RUN) {
      assert.equal(bundle.resourceType, "Bundle");
      assert.equal(bundle.type, "transaction");
      const byUrl = new Map<string, Resource>();
      for (const entry of bundle.entry ?? []) {
        assert.match(
          entry.fullUrl ?? "",
          /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
        );
        assert.ok(!allFullUrls.has(entry.fullUrl as string), "fullUrls are unique across the run");
        allFullUrls.add(entry.fullUrl as string);
        const resource = entry.resource as Resource;
        assert.deepEqual(entry.request, { method: "POST", url: resource.resourceType });
        assert.equal(resource.id, undefined, "POSTed resources carry no id");
        byUrl.set(entry.fullUrl as string, resource);
      }
      for (const [element, reference] of references(bundle.entry?.map((e) => e.resource))) {
        const target = byUrl.get(reference.reference as string);
        assert.ok(target, `${element} → ${reference.reference} does not resolve`);
        const allowed = TARGET[element];
        assert.ok(allowed, `unexpected reference element ${element}`);
        assert.ok(allowed.includes(target.resourceType), `${element} points at a ${target.resourceType}`);
        if (reference.type !== undefined) assert.equal(reference.type, target.resourceType);
        checked++;
      }
    }
    assert.ok(checked > 40_000, `only ${checked} references checked`);
  });

  it("have the required elements of each type, codes from the right systems and R4 dates inside the patient's life", () => {
    const now = DEFAULT_NOW.slice(0, 10);
    for (const bundle of RUN) {
      const patient = patientOf(bundle);
      assert.ok(["male", "female"].includes(patient.gender as string));
      assert.match(patient.birthDate as string, R4_DATE);
      assert.ok(patient.name?.[0]?.family && patient.name[0].given?.[0]);
      assert.match(patient.address?.[0]?.postalCode as string, /^[A-Z]{1,2}[0-9]{1,2} [0-9][ABD-HJLNP-UW-Z]{2}$/);
      assert.match(patient.telecom?.[0]?.value as string, /^07700 900\d{3}$/);
      const birth = patient.birthDate as string;
      const end = (patient.deceasedDateTime ?? `${now}T23:59:59Z`).slice(0, 10);
      for (const r of resources(bundle)) {
        const x = r as unknown as Json;
        switch (r.resourceType) {
          case "Encounter":
            assert.equal(x.status, "finished");
            assert.equal((x.class as Coding).system, "http://terminology.hl7.org/CodeSystem/v3-ActCode");
            assert.ok(["AMB", "EMER", "IMP", "VR"].includes((x.class as Coding).code as string));
            assert.ok(x.subject && x.period);
            break;
          case "Observation": {
            assert.equal(x.status, "final");
            assert.equal(codings(x.code)[0]?.system, LOINC);
            assert.ok(x.subject && x.effectiveDateTime && x.category);
            const quantities = x.valueQuantity
              ? [x.valueQuantity]
              : ((x.component as Json[] | undefined) ?? []).map((c) => c.valueQuantity);
            assert.ok(quantities.length > 0 || x.valueCodeableConcept, "an Observation has a value");
            for (const q of quantities as Json[]) {
              assert.equal(q.system, UCUM);
              assert.equal(typeof q.value, "number");
              assert.ok(Number.isFinite(q.value as number));
            }
            break;
          }
          case "Condition":
            assert.equal(codings(x.code)[0]?.system, SNOMED);
            assert.ok(x.subject && x.clinicalStatus && x.verificationStatus);
            // R4 con-4: an abated condition is not active.
            if (x.abatementDateTime) assert.equal(codings(x.clinicalStatus)[0]?.code, "resolved");
            break;
          case "MedicationRequest":
            assert.ok(["active", "completed", "stopped"].includes(x.status as string));
            assert.equal(x.intent, "order");
            assert.equal(codings(x.medicationCodeableConcept)[0]?.system, DMD);
            assert.match(codings(x.medicationCodeableConcept)[0]?.code as string, /^\d{6,18}$/);
            assert.ok(x.subject && x.authoredOn);
            break;
          case "Immunization":
            assert.equal(x.status, "completed");
            assert.equal(codings(x.vaccineCode)[0]?.system, DMD);
            assert.ok(x.patient && x.occurrenceDateTime);
            break;
          case "Procedure":
            assert.equal(x.status, "completed");
            assert.equal(codings(x.code)[0]?.system, SNOMED);
            assert.ok(x.subject);
            break;
          case "AllergyIntolerance":
            assert.equal(codings(x.code)[0]?.system, SNOMED);
            assert.ok(x.patient && x.clinicalStatus && x.verificationStatus);
            assert.ok(["low", "high"].includes(x.criticality as string));
            break;
          case "DiagnosticReport":
            assert.equal(x.status, "final");
            assert.equal(codings(x.code)[0]?.system, LOINC);
            assert.ok(x.subject && (x.result as unknown[]).length > 0 && x.issued);
            break;
          case "CarePlan":
            assert.ok(["active", "completed"].includes(x.status as string));
            assert.equal(x.intent, "plan");
            assert.ok(x.subject);
            break;
          case "Organization":
          case "Practitioner":
          case "Patient":
            break;
          default:
            assert.fail(`unexpected resource type ${r.resourceType}`);
        }
        for (const [key, value] of walk(r)) {
          if (typeof value !== "string") continue;
          const isDateElement = /(Date|DateTime)$|^(issued|recorded|created|authoredOn|start|end)$/.test(key);
          if (!isDateElement) continue;
          if (key === "issued") assert.match(value, R4_INSTANT);
          else if (key === "birthDate") assert.match(value, R4_DATE);
          else assert.match(value, R4_DATETIME, `${r.resourceType}.${key}`);
          if (value.length > 10) {
            // The hand-written formatter agrees with the platform's.
            assert.equal(`${new Date(value).toISOString().slice(0, 19)}Z`, value);
          }
          assert.ok(value.slice(0, 10) >= birth, `${r.resourceType}.${key} ${value} is before birth ${birth}`);
          assert.ok(value.slice(0, 10) <= end, `${r.resourceType}.${key} ${value} is after ${end}`);
        }
      }
    }
  });

  it("pass the project's own FHIR import path (validation and urn:uuid rewriting)", () => {
    let stored = 0;
    for (const bundle of RUN.slice(0, 200)) {
      let n = 0;
      const prepared = prepareTransaction(structuredClone(bundle), { newId: () => `r${n++}` });
      assert.equal(prepared.length, bundle.entry?.length);
      stored += prepared.length;
      const patientId = prepared[0]?.id;
      for (const p of prepared) {
        if (!["Organization", "Practitioner"].includes(p.resourceType)) assert.equal(p.patient, patientId);
      }
    }
    assert.ok(stored > 4000);
  });

  it("include children and older people, both sexes, a few deaths, and roughly 20–60 resources each", () => {
    const ages = RUN.map((b) => age(patientOf(b), DEFAULT_NOW));
    assert.ok(ages.filter((a) => a < 18).length > 120, "children");
    assert.ok(ages.filter((a) => a < 5).length > 20, "young children");
    assert.ok(ages.filter((a) => a >= 65).length > 120, "older people");
    assert.ok(ages.filter((a) => a >= 85).length > 5, "the very old");
    const females = RUN.filter((b) => patientOf(b).gender === "female").length;
    assert.ok(females > 420 && females < 580);
    assert.ok(RUN.filter((b) => patientOf(b).deceasedDateTime !== undefined).length > 2);
    const sizes = RUN.map((b) => b.entry?.length ?? 0).sort((a, b) => a - b);
    const median = sizes[sizes.length / 2] as number;
    assert.ok(median >= 20 && median <= 60, `median ${median}`);
    const within = sizes.filter((s) => s >= 15 && s <= 90).length;
    assert.ok(within >= 900, `${within} of 1000 bundles hold 15–90 resources`);
    const types = new Set<string>(RUN.flatMap((b) => resources(b).map((r) => r.resourceType)));
    for (const t of [
      "Patient",
      "Encounter",
      "Condition",
      "Observation",
      "MedicationRequest",
      "AllergyIntolerance",
      "Immunization",
      "Procedure",
      "DiagnosticReport",
      "CarePlan",
    ]) {
      assert.ok(types.has(t), t);
    }
  });
});

describe("generatePatients: sensitive records", () => {
  const SENSITIVE_CONDITIONS: Record<string, string> = {
    "86406008": "hiv",
    "105629000": "sexual-health",
    "15628003": "sexual-health",
    "35489007": "mental-health",
    "370143000": "mental-health",
    "197480006": "mental-health",
    "21897009": "mental-health",
    "47505003": "mental-health",
    "58214004": "mental-health",
    "13746004": "mental-health",
    "66590003": "substance-use",
    "75544000": "substance-use",
    "190905008": "genetics",
    "41040004": "genetics",
    "93461009": "gender-identity",
  };

  it("label a share of records with codes the contract reads as sensitive labels", () => {
    const labelsSeen = new Set<string>();
    let patientsWithSensitive = 0;
    let labelled = 0;
    let total = 0;
    for (const bundle of RUN) {
      let any = false;
      for (const r of resources(bundle)) {
        total++;
        const security = r.meta?.security;
        if (security === undefined) {
          assert.deepEqual(securityLabels(r), []);
          continue;
        }
        labelled++;
        any = true;
        for (const coding of security) {
          const label = labelOfCode(coding.code as string);
          assert.ok(label !== undefined && isSensitive(label), `${coding.code} is not a sensitive label code`);
          const info = LABELS.find((l) => l.id === label);
          assert.equal(coding.system, info?.systems[info.codes.indexOf(coding.code as string)]);
          labelsSeen.add(label);
        }
        const labels = labelsOfCodes(security.map((c) => c.code));
        assert.ok(!labels.includes("general"));
        // The FHIR layer's reading of meta.security finds the same labels.
        assert.deepEqual(
          securityLabels(r).map((c) => labelOfCode(c)),
          labels,
        );
      }
      if (any) patientsWithSensitive++;
    }
    assert.deepEqual([...labelsSeen].sort(), [...SENSITIVE_LABELS].sort(), "every sensitive label occurs");
    assert.ok(patientsWithSensitive > 100 && patientsWithSensitive < 400, `${patientsWithSensitive} of 1000 patients`);
    assert.ok(labelled / total > 0.01 && labelled / total < 0.1, `${labelled} of ${total} resources labelled`);
  });

  it("never leave a sensitive condition, its visit or its medicines unlabelled", () => {
    let found = 0;
    for (const bundle of RUN) {
      const byUrl = new Map((bundle.entry ?? []).map((e) => [e.fullUrl as string, e.resource as Resource]));
      for (const r of resources(bundle)) {
        if (r.resourceType !== "Condition") continue;
        const expected = SENSITIVE_CONDITIONS[codings(r.code)[0]?.code as string];
        if (expected === undefined) continue;
        found++;
        const labelOf = (x: Resource) => labelsOfCodes((x.meta?.security ?? []).map((c) => c.code));
        assert.deepEqual(labelOf(r), [expected]);
        const visit = byUrl.get(r.encounter?.reference as string) as Resource;
        assert.deepEqual(labelOf(visit), [expected], "the visit of a sensitive diagnosis is labelled too");
        for (const other of resources(bundle)) {
          const reasons = (other as { reasonReference?: { reference?: string }[] }).reasonReference ?? [];
          if (reasons.some((x) => byUrl.get(x.reference as string) === r)) assert.deepEqual(labelOf(other), [expected]);
        }
      }
    }
    assert.ok(found > 80, `${found} sensitive conditions`);
  });
});
