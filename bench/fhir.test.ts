// Smoke test of `careledger bench fhir` and `bench import` with --quick: both run end to end (real node process, real
// CLI import, real load process) and report the documented fields as sane numbers.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { test } from "node:test";
import { run as runFhir } from "./fhir.ts";
import { run as runImport } from "./import.ts";

const SYNTHEA = new URL("../../shared/data/synthea/", import.meta.url).pathname;

function positive(r: Record<string, unknown>, keys: readonly string[]): void {
  for (const k of keys) {
    assert.equal(typeof r[k], "number", `${k} is a number`);
    assert.ok(Number.isFinite(r[k] as number) && (r[k] as number) > 0, `${k} = ${r[k]}`);
  }
}

test("bench import (quick): generated patients and Synthea through the real CLI", { timeout: 120_000 }, async () => {
  const r = await runImport({ quick: true });
  positive(r, [
    "resources_per_s",
    "import_only_resources_per_s",
    "resources",
    "patients",
    "seconds",
    "goal_resources_per_s",
    "ed25519_verify_per_s_1core",
    "fsync_per_s",
  ]);
  assert.equal(r.patients, 50);
  assert.equal(r.goal_resources_per_s, 5000);
  // ~50 resources per generated patient; every one of them imported.
  assert.ok(r.resources > 1000 && r.resources < 5000, `resources = ${r.resources}`);
  assert.ok(r.import_only_resources_per_s >= r.resources_per_s, "the CLI's own figure excludes process start");
  assert.ok(Math.abs(r.resources / r.seconds - r.resources_per_s) <= 1);
  if (existsSync(SYNTHEA)) {
    positive(r, [
      "synthea_resources_per_s",
      "synthea_import_only_resources_per_s",
      "synthea_bulk_resources_per_s",
      "synthea_bulk_import_only_resources_per_s",
    ]);
    assert.equal(r.synthea?.bundles, 40);
    assert.equal(r.synthea?.patients, 40);
    // Two copies: every bundle twice, each copy new patients with all of its resources.
    assert.equal(r.params.synthea_bulk_copies, 2);
    assert.equal(r.synthea_bulk?.bundles, 80);
    assert.equal(r.synthea_bulk?.patients, 80);
    assert.equal(r.synthea_bulk?.resources, 2 * (r.synthea?.resources ?? 0));
  } else {
    assert.equal(r.synthea_resources_per_s, null);
    assert.equal(r.synthea_bulk_resources_per_s, null);
    assert.match(String(r.synthea_note), /skipped/);
  }
});

test("bench fhir (quick): token, reads, search and $everything over HTTP, every read on the access log", {
  timeout: 120_000,
}, async () => {
  const r = await runFhir({ quick: true });
  positive(r, [
    "req_per_s",
    "p50_ms",
    "p99_ms",
    "search_p50_ms",
    "search_p99_ms",
    "everything_p50_ms",
    "everything_p99_ms",
    "ed25519_verify_per_s_1core",
    "fsync_per_s",
  ]);
  assert.equal(r.goal_req_per_s, 3000);
  assert.equal(r.goal_p99_ms, 20);
  assert.equal(r.peer_medplum_req_per_s, 26_000);
  for (const [p50, p99] of [
    ["p50_ms", "p99_ms"],
    ["search_p50_ms", "search_p99_ms"],
    ["everything_p50_ms", "everything_p99_ms"],
  ] as const) {
    assert.ok(r[p50] <= r[p99], `${p50} ≤ ${p99}`);
  }
  // Every read answered 200: the token, consent (the custodian's clinician, for treatment) and integrity all held.
  assert.deepEqual(Object.keys(r.reads.by_status), ["200"]);
  assert.ok(r.reads.ok > 0 && r.reads.observations > 500 && r.reads.patients === 31, JSON.stringify(r.reads));
  // The 1,000-resource patient: a page of 50 of its ~980 visible observations, and all of its visible records.
  assert.equal(r.search.entries, 50);
  assert.ok(r.search.total > 900, `search total ${r.search.total}`);
  assert.ok(r.everything.entries > 900, `$everything entries ${r.everything.entries}`);
  // The reads' decisions reached the ledger as committed access.log entries.
  assert.equal(r.access_log.covers_every_read, true);
  assert.ok(r.access_log.entries >= r.reads.ok + r.everything.entries, JSON.stringify(r.access_log));
});
