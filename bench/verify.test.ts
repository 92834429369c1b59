import assert from "node:assert/strict";
import { test } from "node:test";
import { run } from "./verify.ts";

interface Proof {
  size: number;
  inclusion_hashes: number;
  inclusion_bytes: number;
  consistency_hashes: number;
  consistency_bytes: number;
  verified: boolean;
}

test("verify bench (quick) builds a ledger, replays it and reports the documented fields", {
  timeout: 120_000,
}, async () => {
  const started = performance.now();
  const r = await run({ quick: true });
  const seconds = (performance.now() - started) / 1000;

  assert.equal(r.ok, true, `replay failed: ${JSON.stringify(r.replay_problem)}`);
  for (const k of [
    "tx_per_s",
    "p50_ms",
    "p99_ms",
    "tx_per_s_at_1e5",
    "tx_per_s_at_1e6",
    "growth_ratio",
    "growth_ratio_cpu",
    "build_tx_per_s",
    "replay_ms",
    "replay_blocks",
    "replay_txs",
    "ledger_txs",
    "ledger_db_bytes",
    "db_bytes_per_tx",
    "ed25519_verify_per_s_1core",
    "fsync_per_s",
  ]) {
    assert.equal(typeof r[k], "number", k);
    assert.ok(Number.isFinite(r[k] as number) && (r[k] as number) >= 0, `${k} = ${r[k]}`);
  }
  for (const k of [
    "tx_per_s",
    "tx_per_s_at_1e5",
    "tx_per_s_at_1e6",
    "growth_ratio",
    "growth_ratio_cpu",
    "ed25519_verify_per_s_1core",
  ]) {
    assert.ok((r[k] as number) > 0, `${k} > 0`);
  }
  assert.ok((r.p50_ms as number) <= (r.p99_ms as number), "p50 ≤ p99");

  // The quick ledger: 2·10^4 txs plus the pipeline's tail, plus genesis; every one of them replayed.
  assert.ok((r.ledger_txs as number) > 20_000);
  assert.equal(r.replay_txs, r.ledger_txs);
  assert.ok((r.replay_blocks as number) > 1);
  assert.ok((r.rejected_txs as number) > 0, "the mix includes txs committed as rejected");
  assert.ok((r.db_bytes_per_tx as number) > 100 && (r.db_bytes_per_tx as number) < 10_000, "plausible bytes per tx");

  // Proofs: valid, and O(log n): an RFC 9162 inclusion path has between floor(log2 n) and ceil(log2 n) hashes.
  const proofs = r.proofs as Proof[];
  assert.ok(proofs.length >= 3);
  let previous = 0;
  for (const p of proofs) {
    assert.equal(p.verified, true, `proofs at ${p.size} verify`);
    const lo = Math.floor(Math.log2(p.size));
    const hi = Math.ceil(Math.log2(p.size));
    assert.ok(p.inclusion_hashes >= lo && p.inclusion_hashes <= hi, `inclusion at ${p.size}: ${p.inclusion_hashes}`);
    assert.ok(p.consistency_hashes >= 1 && p.consistency_hashes <= hi + 1, `consistency at ${p.size}`);
    assert.equal(p.inclusion_bytes, 32 * p.inclusion_hashes);
    assert.equal(p.consistency_bytes, 32 * p.consistency_hashes);
    assert.ok(p.size > previous && p.inclusion_hashes >= 0);
    previous = p.size;
  }
  const first = proofs[0] as Proof;
  const last = proofs.at(-1) as Proof;
  assert.ok(last.inclusion_hashes > first.inclusion_hashes, "bigger trees have longer paths");
  assert.ok(
    last.inclusion_hashes - first.inclusion_hashes <= Math.ceil(Math.log2(last.size / first.size)) + 1,
    "but only logarithmically longer",
  );
  assert.ok(seconds < 60, `quick mode took ${seconds.toFixed(1)} s`);
});
