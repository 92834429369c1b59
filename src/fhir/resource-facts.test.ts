import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { LABEL_CODES, labelsOfCodes } from "../contract/labels.ts";
import { prepareTransaction } from "./bundle.ts";
import { clinicalDate, patientOf, securityLabels } from "./resource-facts.ts";

const DATA = new URL("../../../shared/data/", import.meta.url);

test("patientOf: the Patient itself, subject/patient/beneficiary references to a Patient, nothing else", () => {
  assert.equal(patientOf({ resourceType: "Patient", id: "p1" }), "p1");
  assert.equal(patientOf({ resourceType: "Patient" }), undefined);
  const of = (r: Record<string, unknown>) => patientOf(r as { resourceType: string });
  assert.equal(of({ resourceType: "Observation", subject: { reference: "Patient/p1" } }), "p1");
  assert.equal(of({ resourceType: "Observation", subject: { reference: "Patient/p1/_history/2" } }), "p1");
  assert.equal(of({ resourceType: "Immunization", patient: { reference: "Patient/p2" } }), "p2");
  assert.equal(of({ resourceType: "Consent", patient: { reference: "Patient/p3" } }), "p3");
  assert.equal(of({ resourceType: "Coverage", beneficiary: { reference: "Patient/p4" } }), "p4");
  assert.equal(of({ resourceType: "Observation", subject: { reference: "Group/g1" } }), undefined);
  assert.equal(of({ resourceType: "Observation", subject: { display: "someone" } }), undefined);
  assert.equal(of({ resourceType: "Observation", subject: { reference: "https://x/fhir/Patient/p1" } }), undefined);
  assert.equal(of({ resourceType: "Observation", performer: [{ reference: "Patient/p1" }] }), undefined);
  assert.equal(of({ resourceType: "Organization", name: "x" }), undefined);
  assert.equal(of({ resourceType: "Practitioner" }), undefined);
});

test("clinicalDate: the type's clinical date element, as the calendar day it names", () => {
  const date = (r: Record<string, unknown>) => clinicalDate(r as { resourceType: string });
  assert.equal(date({ resourceType: "Observation", effectiveDateTime: "2011-12-13T22:28:27-05:00" }), "2011-12-13");
  assert.equal(
    date({ resourceType: "Observation", effectivePeriod: { start: "2019-03" }, issued: "2020-01-01T00:00:00Z" }),
    "2019-03-01",
  );
  assert.equal(date({ resourceType: "Observation", issued: "2020-01-01T00:00:00Z" }), "2020-01-01");
  assert.equal(date({ resourceType: "Condition", onsetDateTime: "2016", recordedDate: "2017-05-05" }), "2016-01-01");
  assert.equal(date({ resourceType: "Condition", onsetString: "childhood", recordedDate: "2017-05-05" }), "2017-05-05");
  assert.equal(date({ resourceType: "MedicationRequest", authoredOn: "2020-06-01T08:00:00Z" }), "2020-06-01");
  assert.equal(date({ resourceType: "Immunization", occurrenceDateTime: "2021-01-10T09:00:00+00:00" }), "2021-01-10");
  assert.equal(date({ resourceType: "Procedure", performedPeriod: { end: "2018-07-02T10:00:00Z" } }), "2018-07-02");
  assert.equal(
    date({ resourceType: "Encounter", period: { start: "2015-02-03T10:00:00Z", end: "2015-02-04" } }),
    "2015-02-03",
  );
  assert.equal(date({ resourceType: "AllergyIntolerance", recordedDate: "2001-09-11" }), "2001-09-11");
  assert.equal(
    date({ resourceType: "MedicationAdministration", effectiveTiming: { event: ["2022-02-02"] } }),
    "2022-02-02",
  );
  assert.equal(date({ resourceType: "Claim", created: "2020-02-02T00:00:00Z" }), "2020-02-02");
  assert.equal(date({ resourceType: "Consent", dateTime: "2018-12-28" }), "2018-12-28");
  assert.equal(date({ resourceType: "Observation", status: "final" }), undefined);
  // Never a birth date: the clinical date goes on the ledger.
  assert.equal(date({ resourceType: "Patient", birthDate: "1980-01-01" }), undefined);
  assert.equal(date({ resourceType: "RelatedPerson", birthDate: "1980-01-01", period: { start: "2000" } }), undefined);
});

test("clinicalDate of every Synthea clinical record is a calendar date the anchor schema accepts", () => {
  let dated = 0;
  const file = readdirSync(new URL("synthea/", DATA))[0] as string;
  const bundle = JSON.parse(readFileSync(new URL(`synthea/${file}`, DATA), "utf8"));
  for (const entry of prepareTransaction(bundle, { newId: () => crypto.randomUUID() })) {
    const d = clinicalDate(entry.resource);
    if (entry.resourceType === "Patient") assert.equal(d, undefined);
    if (
      ["Observation", "Condition", "Immunization", "Encounter", "Procedure", "MedicationRequest"].includes(
        entry.resourceType,
      )
    ) {
      assert.match(d ?? "", /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/, entry.resourceType);
      dated++;
    }
  }
  assert.ok(dated > 10);
});

test("securityLabels: known codes mapped to the contract's code for their label, deduplicated", () => {
  const V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
  const labels = (security: unknown) => securityLabels({ meta: { security } });
  assert.deepEqual(
    labels([
      { system: V3, code: "MH" },
      { system: V3, code: "PSY" },
      { system: V3, code: "HIV" },
    ]),
    ["PSY", "HIV"],
  );
  assert.deepEqual(labels([{ system: "urn:careledger:sensitivity", code: "FERTILITY" }]), ["FERTILITY"]);
  assert.deepEqual(labels([{ system: "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", code: "N" }]), []);
  assert.deepEqual(labels([{ system: "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", code: "R" }]), []);
  assert.deepEqual(labels([{ code: "STD" }]), ["SEX"], "no system: still a sensitivity label (refuse when unsure)");
  assert.deepEqual(
    labels([{ code: "psy" }, { display: "PSY" }, "PSY"]),
    [],
    "codes are case-sensitive; only Codings count",
  );
  assert.deepEqual(securityLabels({}), []);
  assert.deepEqual(securityLabels({ meta: { tag: [{ code: "PSY" }] } }), [], "tags are not security labels");
  // What it returns is what the contract accepts and reads back as the same labels.
  const all = labels(LABEL_CODES.map((code) => ({ code })));
  assert.equal(all.length, 8);
  for (const code of all) assert.ok(LABEL_CODES.includes(code));
  assert.deepEqual(
    labelsOfCodes(all).sort(),
    labelsOfCodes(LABEL_CODES)
      .filter((l) => l !== "general")
      .sort(),
  );
});
