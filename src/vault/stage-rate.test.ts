// Measures (reports, does not assert) the vault's write and read rates for ~1 KB Observations with nine index
// entries each (14 blind hashes, a date, a number): stage (encryption, commitments, indexes, one transaction per
// 1,000), confirm, search for one patient's 1,000 records, and verified reads. Rates are also given per CPU second
// of this process, which is what "on one core" means when other work shares the machine.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, it } from "node:test";
import { openTestVault, type TestVault } from "./testkit.ts";
import type { PutItem } from "./vault.ts";

const BATCH = 1000;
const ROUNDS = 10;
const patients = Array.from({ length: 10 }, () => randomUUID());
let t: TestVault;
after(() => t?.remove());

function observation(n: number): PutItem {
  const patient = patients[n % patients.length] as string;
  const code = `${1000 + (n % 50)}-4`;
  const encounter = `Encounter/${randomUUID()}`;
  const when = Date.UTC(2021, 2, 4, 10, 11, 12) + n * 60_000;
  const value = 70 + (n % 30);
  return {
    resource: {
      resourceType: "Observation",
      id: randomUUID(),
      status: "final",
      category: [
        {
          coding: [
            {
              system: "http://terminology.hl7.org/CodeSystem/observation-category",
              code: "vital-signs",
              display: "Vital signs",
            },
          ],
        },
      ],
      code: { coding: [{ system: "http://loinc.org", code, display: "Body weight measured" }], text: "Body weight" },
      subject: { reference: `Patient/${patient}` },
      encounter: { reference: encounter },
      effectiveDateTime: new Date(when).toISOString(),
      issued: new Date(when).toISOString(),
      valueQuantity: { value, unit: "kg", system: "http://unitsofmeasure.org", code: "kg" },
      note: [{ text: "Weight stable since the last visit to the practice; no concerns raised by the patient today." }],
      interpretation: [
        { coding: [{ system: "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", code: "N" }] },
      ],
    },
    patient,
    labels: ["N"],
    date: "2021-03-04",
    index: [
      { param: "code", kind: "token", system: "http://loinc.org", code },
      {
        param: "category",
        kind: "token",
        system: "http://terminology.hl7.org/CodeSystem/observation-category",
        code: "vital-signs",
      },
      { param: "status", kind: "token", system: "", code: "final" },
      { param: "subject", kind: "reference", value: `Patient/${patient}` },
      { param: "patient", kind: "reference", value: `Patient/${patient}` },
      { param: "encounter", kind: "reference", value: encounter },
      { param: "date", kind: "date", low: when, high: when },
      { param: "value-quantity", kind: "number", value },
      { param: "value-quantity:unit", kind: "token", system: "http://unitsofmeasure.org", code: "kg" },
    ],
  };
}

const cpuMs = (since: NodeJS.CpuUsage) => {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1000;
};
const rate = (count: number, ms: number) => Math.round((count / ms) * 1000).toLocaleString("en-GB");

it("reports stage, confirm, search and read rates", (ctx) => {
  t = openTestVault("stage-rate");
  t.put(Array.from({ length: 200 }, (_, i) => observation(i))); // warm-up (JIT, statements)
  let stageWall = 0;
  let stageCpu = 0;
  let confirmWall = 0;
  const bytes = Buffer.byteLength(JSON.stringify(observation(0).resource));
  for (let r = 0; r < ROUNDS; r++) {
    const items = Array.from({ length: BATCH }, (_, i) => observation(r * BATCH + i));
    const cpu = process.cpuUsage();
    const t0 = performance.now();
    const write = t.vault.stage(items);
    stageWall += performance.now() - t0;
    stageCpu += cpuMs(cpu);
    t.ledger.anchor(write);
    const t1 = performance.now();
    t.vault.confirm(write);
    confirmWall += performance.now() - t1;
  }
  const total = BATCH * ROUNDS;
  const patient = patients[0] as string;
  const t2 = performance.now();
  const ids = t.vault.search({
    resourceType: "Observation",
    clauses: [{ param: "patient", kind: "reference", anyOf: [`Patient/${patient}`] }],
    sort: [{ param: "date", descending: true }],
  });
  const searchMs = performance.now() - t2;
  assert.equal(ids.length, (total + 200) / patients.length);
  const cpu = process.cpuUsage();
  const t3 = performance.now();
  for (const id of ids) assert.ok(t.vault.read("Observation", id));
  const readWall = performance.now() - t3;
  const readCpu = cpuMs(cpu);
  ctx.diagnostic(`resources of ${bytes} bytes JSON, 9 index entries each, ${ROUNDS} stages of ${BATCH}`);
  ctx.diagnostic(`stage: ${rate(total, stageWall)}/s wall, ${rate(total, stageCpu)}/s per CPU second`);
  ctx.diagnostic(`confirm: ${rate(total, confirmWall)}/s wall`);
  ctx.diagnostic(
    `search one patient's ${ids.length} of ${total + 200} (reference, date sort): ${searchMs.toFixed(1)} ms`,
  );
  ctx.diagnostic(
    `read (decrypt + commitment check): ${rate(ids.length, readWall)}/s wall, ${rate(ids.length, readCpu)}/s per CPU second`,
  );
});
