// Smoke test of `careledger bench cluster --quick`: 3 etcd members and 3 nodes from `cluster up`, the load process,
// the catch-up of a stopped node — end to end, reporting the documented fields as sane numbers.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { test } from "node:test";
import { NODE_INLINE_MAX_TXS } from "../src/node/verify-pool.ts";
import { run } from "./cluster.ts";
import { blockDeviceOf } from "./disk.ts";

interface LoadResult {
  mode: string;
  batch: number;
  committed: number;
  failures: number;
  tx_per_s: number;
  offered_tx_per_s: number;
  p50_ms: number;
  p99_ms: number;
  cpu_us_per_tx: Record<string, number>;
  two_core_capacity_tx_per_s: number;
  cpu_cores_by_thread?: unknown;
  disk_stalls?: { stalled_ms: number; longest_stall_ms: number; requests_overlapping: number };
}

test("bench cluster (quick): full load, the goal rate in 25- and 100-tx requests, catch-up", {
  timeout: 300_000,
}, async () => {
  const lines: string[] = [];
  const r = await run({ quick: true, log: (line) => lines.push(line) });
  // Nothing it started outlives it: no process runs from its temp dir (named in `cluster up`'s progress lines).
  const work = /\(data (\S+?)\/cluster\/nodes\//.exec(lines.join("\n"))?.[1];
  assert.ok(work, lines.join("\n"));
  const left = readdirSync("/proc")
    .filter((e) => /^\d+$/.test(e))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(work);
      } catch {
        return false;
      }
    });
  assert.deepEqual(left, []);
  const load = (value: unknown) => value as LoadResult;
  const atGoal = load(r.at_goal_rate);
  for (const k of [
    "tx_per_s",
    "p50_ms",
    "p99_ms",
    "ed25519_verify_per_s_1core",
    "ledger_verify_per_s_1core",
    "etcd_cpu_ms_per_put",
  ] as const) {
    assert.ok(Number.isFinite(r[k]) && (r[k] as number) > 0, `${k} = ${r[k]}`);
  }
  // etcd's own cost per put, measured with the nodes idle: a few ms here, never a second.
  assert.ok(r.etcd_cpu_ms_per_put < 1000 && r.etcd_probe.puts >= 40, JSON.stringify(r.etcd_probe));
  assert.equal(r.goal_tx_per_s, Math.round(0.16 * 2 * r.ed25519_verify_per_s_1core));
  assert.equal(r.goal_p99_ms, 75);
  assert.equal(
    r.ratio_to_2core_verify,
    Number(((r.tx_per_s as number) / (2 * r.ed25519_verify_per_s_1core)).toFixed(3)),
  );
  const full = load(r.full_load);
  assert.equal(full.failures, 0);
  // 250-tx requests are larger than what a node checks on its own thread: the signature threads check them.
  assert.ok(250 > NODE_INLINE_MAX_TXS);
  const fullPerTx = full.cpu_us_per_tx as Record<string, number>;
  assert.ok((fullPerTx.signature_checks ?? 0) > 0, JSON.stringify(fullPerTx));
  for (const [phase, batch] of [
    [atGoal, 25],
    [load(r.at_goal_rate_100_tx_requests), 100],
  ] as const) {
    assert.equal(phase.mode, "rate");
    assert.equal(phase.batch, batch);
    assert.equal(phase.failures, 0, "every request committed");
    assert.equal(phase.offered_tx_per_s, r.goal_tx_per_s);
    assert.ok(phase.committed > 0 && phase.p50_ms > 0 && phase.p50_ms <= phase.p99_ms, JSON.stringify(phase));
    // Where its CPU went: every part measured in the nodes' own threads (found by the names the node gives them).
    // Small signature jobs are checked on the main threads, so the signature threads may have had nothing to do here.
    const perTx = phase.cpu_us_per_tx as Record<string, number>;
    for (const part of ["node_main_threads", "etcd", "load"]) {
      assert.ok((perTx[part] ?? 0) > 0, `${part}: ${JSON.stringify(perTx)}`);
    }
    const total = perTx.total ?? 0;
    const sum = Object.entries(perTx).reduce((s, [k, v]) => (k === "total" ? s : s + v), 0);
    assert.ok(total > 0 && Math.abs(sum - total) <= Object.keys(perTx).length, JSON.stringify(perTx));
    assert.equal(phase.two_core_capacity_tx_per_s, Math.round(2e6 / total));
    assert.equal(phase.cpu_cores_by_thread, undefined, "summed into parts, not reported raw");
    // The data dirs' disk watched over the phase (the cluster lives in the temp dir; tmpfs has no disk to watch).
    if (blockDeviceOf(tmpdir()) !== undefined) {
      const stalls = phase.disk_stalls;
      assert.ok(stalls, "disk stalls reported");
      assert.ok(stalls.longest_stall_ms <= stalls.stalled_ms, JSON.stringify(stalls));
      assert.ok(stalls.requests_overlapping >= 0 && stalls.requests_overlapping <= phase.committed / batch);
    }
  }
  // The disk's own commit latency, measured before the load against the goal's p99.
  const fsync = r.fsync_latency as { p50_ms: number; p99_ms: number; max_ms: number; over_ms: number };
  assert.ok(fsync.p50_ms > 0 && fsync.p50_ms <= fsync.p99_ms && fsync.p99_ms <= fsync.max_ms, JSON.stringify(fsync));
  assert.equal(fsync.over_ms, 75);
  assert.equal(
    r.goal_met,
    (r.tx_per_s as number) >= r.goal_tx_per_s && atGoal.tx_per_s >= r.goal_tx_per_s * 0.97 && atGoal.p99_ms <= 75,
  );
  // The stopped node caught up with every tx the others committed while it was down.
  assert.ok(r.catch_up.txs_missed >= 10_000, `txs missed ${r.catch_up.txs_missed}`);
  assert.ok(r.catch_up.seconds > 0 && r.catch_up.tx_per_s > 0);
});
