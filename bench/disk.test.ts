import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  blockDeviceOf,
  clearOfStalls,
  type DiskSample,
  DiskStallMonitor,
  diskCountersOf,
  fsyncLatency,
  measureFsyncLatency,
  stallSpans,
  stallsIn,
} from "./disk.ts";

// Two lines as Linux 5.5+ writes them: 20 fields, the flushes last but one pair.
const DISKSTATS = [
  " 253       0 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
  " 254       0 vda 1000 10 8000 500 2000 20 16000 900 3 1400 2500 40 0 320 7 60 12",
].join("\n");

test("diskstats: a device's I/Os completed (reads, writes, discards, flushes) and those in flight", () => {
  assert.deepEqual(diskCountersOf(DISKSTATS, "vda"), { completed: 1000 + 2000 + 40 + 60, inFlight: 3 });
  assert.deepEqual(diskCountersOf(DISKSTATS, "zram0"), { completed: 0, inFlight: 0 });
  assert.equal(diskCountersOf(DISKSTATS, "sda"), undefined);
  // An older kernel's 14 fields (no discards, no flushes) still parse.
  assert.deepEqual(diskCountersOf(" 8 0 sda 5 0 40 1 7 0 56 2 1 3 3", "sda"), { completed: 12, inFlight: 1 });
});

const sample = (at: number, completed: number, inFlight: number): DiskSample => ({ at, completed, inFlight });

test("stalls: an interval counts when I/O was waiting at its start and none completed by its end", () => {
  const samples = [
    sample(0, 100, 2),
    sample(50, 110, 1), // progress
    sample(100, 110, 1), // stalled (waiting, nothing done)
    sample(150, 110, 4), // stalled
    sample(200, 130, 0), // progress
    sample(250, 130, 0), // idle: nothing waiting is not a stall
    sample(300, 131, 2), // progress
    sample(360, 131, 2), // stalled, a second spell
    sample(400, 140, 0),
  ];
  assert.deepEqual(stallsIn(samples, 50), {
    stalled_ms: 160,
    longest_stall_ms: 100,
    stalls: 2,
    sample_ms: 50,
    samples: 9,
  });
  const none = { stalled_ms: 0, longest_stall_ms: 0, stalls: 0, sample_ms: 50 };
  assert.deepEqual(stallsIn([sample(0, 5, 9)], 50), { ...none, samples: 1 });
  assert.deepEqual(stallsIn([], 50), { ...none, samples: 0 });
});

test("stall spans: each spell from one interval before its first stalled sample to its last; requests clear of them", () => {
  const samples = [
    sample(0, 100, 2),
    sample(50, 100, 1), // stalled
    sample(100, 100, 1), // stalled
    sample(150, 120, 0),
    sample(200, 121, 1),
    sample(260, 121, 0), // stalled, a second spell
    sample(300, 125, 0),
  ];
  const spans = stallSpans(samples, 50);
  assert.deepEqual(spans, [
    [-50, 100],
    [150, 260],
  ]);
  // Requests as (start, duration): inside a spell, straddling its end, between spells, after the last one.
  const starts = [10, 90, 110, 140, 270];
  const durations = [20, 30, 5, 20, 500];
  assert.deepEqual(clearOfStalls(starts, durations, spans), [5, 500]);
  assert.deepEqual(clearOfStalls(starts, durations, []), durations, "no stalls: every request is clear");
});

test("the block device of a directory: named as in /proc/diskstats on a disk, none on tmpfs", (t) => {
  if (!existsSync("/proc/diskstats")) return t.skip("no /proc/diskstats here");
  const device = blockDeviceOf(tmpdir());
  const stats = readFileSync("/proc/diskstats", "utf8");
  if (device !== undefined) assert.ok(diskCountersOf(stats, device), `${device} is in /proc/diskstats`);
  if (existsSync("/dev/shm")) assert.equal(blockDeviceOf("/dev/shm"), undefined, "tmpfs has no block device");
  assert.equal(blockDeviceOf(join(tmpdir(), "careledger-no-such-dir")), undefined);
});

test("the stall monitor reports over the window it ran, and nothing where there is no disk to watch", async () => {
  const onDisk = new DiskStallMonitor(tmpdir(), 10);
  onDisk.start();
  await new Promise((resolve) => setTimeout(resolve, 60));
  const stalls = onDisk.stop();
  if (blockDeviceOf(tmpdir()) !== undefined) {
    assert.ok(stalls, "a disk was watched");
    assert.equal(stalls.sample_ms, 10);
    // Sampled through the window (every 10 ms for 60 ms), not only at its ends.
    assert.ok(stalls.samples >= 4, `${stalls.samples} samples`);
    assert.ok(stalls.stalled_ms >= 0 && stalls.longest_stall_ms <= stalls.stalled_ms);
  }
  assert.equal(onDisk.stop(), undefined, "stopped once");
  const onTmpfs = new DiskStallMonitor("/dev/shm");
  onTmpfs.start();
  assert.equal(onTmpfs.stop(), undefined);
});

test("fsync latency: paced appends, their percentiles, and the count over the threshold per minute", () => {
  const dir = mkdtempSync(join(tmpdir(), "careledger-disk-test-"));
  try {
    const r = fsyncLatency(dir, { seconds: 0.3, perSecond: 20, overMs: 0 });
    // Paced: about 6 appends in 0.3 s, not as many as the disk can take.
    assert.ok(r.seconds >= 0.25 && r.seconds < 2, `took ${r.seconds} s`);
    assert.ok(r.p50_ms > 0 && r.p50_ms <= r.p99_ms && r.p99_ms <= r.max_ms, JSON.stringify(r));
    // Every fsync takes longer than 0 ms: all 6 of them, scaled to a minute.
    const expected = (6 * 60) / r.seconds;
    assert.ok(Math.abs(r.over_per_min - expected) / expected < 0.05, JSON.stringify(r));
    assert.equal(fsyncLatency(dir, { seconds: 0.1, perSecond: 20, overMs: 60_000 }).over_per_min, 0);
    assert.deepEqual(readdirSync(dir), [], "the probe's file is removed");
    const lines: string[] = [];
    const logged = measureFsyncLatency(dir, { quick: true, overMs: 25, log: (line) => lines.push(line) });
    assert.equal(logged.over_ms, 25);
    assert.ok(logged.seconds >= 0.9, "quick: 1 s");
    assert.match(lines.join("\n"), /fsync p50 [\d.]+ \/ p99 [\d.]+ \/ max [\d.]+ ms; [\d.]+ a minute over 25 ms/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
