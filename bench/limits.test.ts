import assert from "node:assert/strict";
import { test } from "node:test";
import { ed25519VerifyPerSecond, ledgerVerifyPerSecond, machineLimits } from "./limits.ts";

test("machine limits: both Ed25519 rates (node:crypto's, the goals' denominator, and the ledger's own) are measured", () => {
  const limits = machineLimits();
  for (const k of ["ed25519_verify_per_s_1core", "ledger_verify_per_s_1core", "fsync_per_s"] as const) {
    assert.equal(typeof limits[k], "number", k);
    assert.ok(limits[k] > 0 && Number.isFinite(limits[k]), `${k} = ${limits[k]}`);
  }
});

test("a probe counts only checks that pass: a short window still gives a rate, in checks per second", () => {
  for (const probe of [ed25519VerifyPerSecond, ledgerVerifyPerSecond]) {
    const rate = probe(50);
    // At least one round of 100 checks in 50 ms, and no more than a core could do (1 µs per check).
    assert.ok(rate >= 100 && rate < 1_000_000, `${probe.name}: ${rate}/s`);
  }
});
