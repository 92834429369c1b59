import assert from "node:assert/strict";
import { test } from "node:test";
import { type CpuTimes, MachineLoad, machineCpuTimes } from "./machine-load.ts";

test("machine load: busy until measured, then by the last interval's share, with a gap so it does not flap", () => {
  // Each sample adds 100 units of time, `busy` of them not idle.
  let now: CpuTimes = { busy: 0, total: 0 };
  const next = (busy: number) => {
    now = { busy: now.busy + busy, total: now.total + 100 };
  };
  const load = new MachineLoad({ sample: () => now, busyAbove: 0.8, idleBelow: 0.7, intervalMs: 60_000 });
  try {
    assert.equal(load.busy, true, "busy before the first interval");
    assert.equal(load.share, undefined);
    const steps: [number, boolean][] = [
      [75, true], // between the two thresholds: stays as it was
      [50, false], // below 0.7: idle
      [75, false], // between: stays idle
      [80, false], // not above 0.8
      [85, true], // above 0.8: busy
      [71, true], // between: stays busy
      [69, false],
    ];
    for (const [busy, expected] of steps) {
      next(busy);
      load.tick();
      assert.equal(load.share, busy / 100);
      assert.equal(load.busy, expected, `after an interval at ${busy} %`);
    }
    // An interval with no time passed (a clock that did not move) changes nothing.
    load.tick();
    assert.equal(load.busy, false);
    assert.equal(load.share, 0.69);
  } finally {
    load.stop();
  }
});

test("machine load: the machine's own CPU times add up, its timer measures a share, and stop ends the sampling", async () => {
  const times = machineCpuTimes();
  assert.ok(times.total > 0 && times.busy >= 0 && times.busy <= times.total, JSON.stringify(times));
  const load = new MachineLoad({ intervalMs: 20 });
  await new Promise((resolve) => setTimeout(resolve, 120));
  assert.ok(load.share !== undefined && load.share >= 0 && load.share <= 1, `share ${load.share}`);
  load.stop();
  const share = load.share;
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(load.share, share, "stopped: no more samples");
});
