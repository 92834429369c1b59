import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { txId, verifyTxSignature } from "../ledger/index.ts";
import { applyAll, buildScenario, createScenario, firstOfMonthUtc, testSeedFor, uuidFromBytes } from "./fixtures.ts";
import { MemoryState } from "./state.ts";

const START = Date.UTC(2025, 2, 3);

describe("fixtures", () => {
  test("deterministic: same seeds and start → identical signed txs", () => {
    const a = buildScenario({ seedFor: testSeedFor("x"), start: START, patients: 3 });
    const b = buildScenario({ seedFor: testSeedFor("x"), start: START, patients: 3 });
    assert.deepEqual(a.txs, b.txs);
    const c = buildScenario({ seedFor: testSeedFor("y"), start: START, patients: 3 });
    assert.notEqual(a.txs[0]?.sig, c.txs[0]?.sig);
  });
  test("every tx is signed, valid in order, and txCount is exact", () => {
    const sc = buildScenario({ seedFor: testSeedFor(), start: START, patients: 12 });
    assert.equal(sc.txs.length, sc.txCount);
    for (const tx of sc.txs) assert.ok(verifyTxSignature(tx, txId(tx)), tx.type);
    const { results } = applyAll(new MemoryState(), sc.txs);
    assert.ok(
      results.every((r) => r.valid),
      JSON.stringify(results.find((r) => !r.valid)),
    );
    const types = new Set(sc.txs.map((t) => t.type));
    for (const t of [
      "network.genesis",
      "member.enrol",
      "team.set",
      "patient.register",
      "consent.set",
      "proxy.appoint",
      "optout.set",
      "record.anchor",
    ]) {
      assert.ok(types.has(t), t);
    }
    assert.equal(Object.keys(sc.orgs).length, 3);
    assert.ok(Object.values(sc.members).some((m) => m.role === "nurse"));
    assert.ok(Object.values(sc.members).some((m) => m.role === "researcher"));
    assert.equal(sc.patients[0]?.proxy?.endsAt, firstOfMonthUtc(sc.patients[0]?.proxy?.endsAt as number));
  });
  test("unsigned, derived-key mode streams and applies", () => {
    const { meta, txs } = createScenario({
      seedFor: testSeedFor(),
      start: START,
      patients: 50,
      rulesPerPatient: 3,
      sign: false,
      patientKeys: "derived",
    });
    const state = new MemoryState();
    const { results } = applyAll(state, txs(), { fastIds: true });
    assert.equal(results.length, meta.txCount);
    assert.ok(results.every((r) => r.valid));
    assert.equal(meta.patients[0]?.ruleIds.length, 3);
  });
  test("uuidFromBytes formats v4", () => {
    assert.match(
      uuidFromBytes(new Uint8Array(16).fill(255)),
      /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
  });
});
