import assert from "node:assert/strict";
import { test } from "node:test";
import { run } from "../../bench/consent.ts";

test("consent bench runs and reports the agreed fields", async () => {
  const r = await run({ patients: 200, decisions: 5_000 });
  for (const k of ["decisions_per_s", "p50_us", "p99_us", "patients", "rules_per_patient", "decisions"]) {
    assert.equal(typeof r[k], "number", k);
  }
  assert.equal(r.patients, 200);
  assert.equal(r.rules_per_patient, 10);
  assert.equal(r.decisions, 5_000);
  const bySteps = r.decisions_by_step as Record<string, number>;
  for (const s of ["1", "2", "3", "4", "5", "6", "7", "8"]) assert.ok((bySteps[s] ?? 0) > 0, `step ${s} exercised`);
});
