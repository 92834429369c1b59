import assert from "node:assert/strict";
import { test } from "node:test";
import {
  BUSY_ELSEWHERE_WARN_CORES,
  busyCoresElsewhere,
  ed25519VerifyPerSecond,
  ledgerVerifyPerSecond,
  machineLimits,
  verifyRatios,
} from "./limits.ts";

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

test("throughput ratios: committed tx/s over two cores of each verifier, to 3 decimals", () => {
  const limits = {
    ed25519_verify_per_s_1core: 8_000,
    ledger_verify_per_s_1core: 17_000,
    fsync_per_s: 1,
    cores: 2,
    busy_cores_elsewhere_at_start: null,
  };
  assert.deepEqual(verifyRatios(16_000, limits), { ratio_to_2core_verify: 1, ratio_to_2core_ledger_verify: 0.471 });
});

test("thread CPU by name: a named worker that spins shows up under its name, the main thread under MainThread", async () => {
  const { Worker } = await import("node:worker_threads");
  const { threadCpuSecondsOf } = await import("./limits.ts");
  const spin = new Worker("const end = Date.now() + 400; while (Date.now() < end);", {
    eval: true,
    name: "probe-spinner",
  });
  try {
    await new Promise((resolve) => setTimeout(resolve, 300));
    const threads = threadCpuSecondsOf(process.pid);
    assert.ok(threads, "read /proc");
    assert.ok((threads["probe-spinner"] ?? 0) >= 0.05, JSON.stringify(threads));
    assert.ok((threads.MainThread ?? 0) > 0, JSON.stringify(threads));
  } finally {
    await spin.terminate();
  }
  assert.equal(threadCpuSecondsOf(2 ** 22 + 1), undefined, "a process that does not exist");
});

test("a benchmark started beside a busy process says so: the cores it keeps busy are counted, and warned of", async () => {
  const { spawn } = await import("node:child_process");
  const hog = spawn(process.execPath, ["-e", "const end = Date.now() + 5000; while (Date.now() < end);"]);
  try {
    await new Promise((r) => setTimeout(r, 200));
    // The spinning child holds about one core (less if the machine is shared); this process sleeps meanwhile.
    const busy = busyCoresElsewhere(600);
    assert.ok(busy !== undefined && busy >= 0.6, `busy elsewhere: ${busy}`);
    const lines: string[] = [];
    const limits = machineLimits(undefined, (line) => lines.push(line));
    assert.ok((limits.busy_cores_elsewhere_at_start ?? 0) > BUSY_ELSEWHERE_WARN_CORES, JSON.stringify(limits));
    assert.match(lines.join("\n"), /^warning: other processes keep [\d.]+ cores busy on this machine/);
  } finally {
    hog.kill("SIGKILL");
  }
});
