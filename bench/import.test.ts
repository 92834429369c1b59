// The Synthea bulk load's copies: distinct ids everywhere, references still matching, nothing else changed.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { distinctCopy, parseImportSummary, writeSyntheaBulk } from "./import.ts";

const PATIENT = "6e4d3a2b-1c0f-4e9d-8b7a-5f4e3d2c1b0a";
const ENCOUNTER = "0a1b2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d";
const bundle = {
  resourceType: "Bundle",
  type: "transaction",
  entry: [
    {
      fullUrl: `urn:uuid:${PATIENT}`,
      resource: {
        resourceType: "Patient",
        id: PATIENT,
        identifier: [{ system: "https://github.com/synthetichealth/synthea", value: PATIENT.toUpperCase() }],
        name: [{ family: "Hoeger", given: ["Buster"] }],
      },
      request: { method: "POST", url: "Patient" },
    },
    {
      fullUrl: `urn:uuid:${ENCOUNTER}`,
      resource: {
        resourceType: "Encounter",
        id: ENCOUNTER,
        subject: { reference: `urn:uuid:${PATIENT}` },
        serviceProvider: { reference: "Organization?identifier=https://github.com/synthetichealth/synthea|ab12" },
      },
      request: { method: "POST", url: "Encounter" },
    },
  ],
};
const text = JSON.stringify(bundle);
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;

test("distinctCopy: new UUIDs per copy, the same within a copy, everything else as it was", () => {
  const first = JSON.parse(distinctCopy(text, 0));
  const second = JSON.parse(distinctCopy(text, 1));
  assert.equal(distinctCopy(text, 0), distinctCopy(text, 0), "deterministic");
  for (const copy of [first, second]) {
    const out = JSON.stringify(copy);
    assert.ok(!out.includes(PATIENT) && !out.includes(ENCOUNTER) && !out.includes(PATIENT.toUpperCase()));
    const [patient, encounter] = copy.entry;
    // The patient's id, fullUrl, its reference from the encounter and its identifier (any case) stay one id.
    assert.equal(patient.fullUrl, `urn:uuid:${patient.resource.id}`);
    assert.equal(encounter.resource.subject.reference, patient.fullUrl);
    assert.equal(patient.resource.identifier[0].value, patient.resource.id);
    assert.equal(encounter.fullUrl, `urn:uuid:${encounter.resource.id}`);
    assert.notEqual(patient.resource.id, encounter.resource.id);
    for (const uuid of out.match(UUID) ?? []) assert.match(uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-8[0-9a-f]{3}-/);
    // Not an id: untouched.
    assert.deepEqual(patient.resource.name, bundle.entry[0]?.resource.name);
    assert.equal(encounter.resource.serviceProvider.reference, bundle.entry[1]?.resource.serviceProvider?.reference);
  }
  assert.notEqual(first.entry[0].resource.id, second.entry[0].resource.id);
});

test("writeSyntheaBulk: every bundle of the directory, copies times, as NDJSON", () => {
  const dir = mkdtempSync(join(tmpdir(), "careledger-bulk-"));
  try {
    writeFileSync(join(dir, "a.json"), JSON.stringify(bundle, null, 2));
    writeFileSync(join(dir, "b.json"), JSON.stringify({ ...bundle, entry: bundle.entry.slice(0, 1) }));
    writeFileSync(join(dir, "notes.txt"), "not a bundle");
    const file = join(dir, "bulk.ndjson");
    assert.deepEqual(writeSyntheaBulk(file, dir, 3), { bundles: 6, resources: 9 });
    const lines = readFileSync(file, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.equal(lines.length, 6);
    assert.equal(new Set(lines.map((b) => b.entry[0].resource.id)).size, 3, "one patient per copy");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("parseImportSummary: the import's time from the CLI's rate, not from its seconds rounded to 0.1", () => {
  const line = "imported 5454 resources (40 bundles, 40 new patients) in 1.2 s (4822 resources/s)\n";
  const summary = parseImportSummary(`progress…\n${line}`);
  assert.deepEqual(summary, { resources: 5454, bundles: 40, patients: 40, import_seconds: 1.131 });
  assert.equal(parseImportSummary("careledger: the node in x is running"), undefined);
});
