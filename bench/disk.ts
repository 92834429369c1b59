// The disk as a limit of the machine, beside the verify rate: how long its own commits take (a paced fdatasync probe)
// and, during a load phase, how long it sat with I/O pending and nothing completing. On the virtual machines these
// benchmarks run on the disk stalls for 100–700 ms at a time, several times a minute, whatever the load; a commit
// that waits for an fsync then waits out the stall, so a p99 goal is comparable only with the stalls measured in the
// same run (bench/RESULTS.md, session 18).

import {
  closeSync,
  fdatasyncSync,
  mkdtempSync,
  openSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { basename, join } from "node:path";
import { percentile } from "./limits.ts";

/** Latency of paced, fdatasync'd 4 KiB appends in `dir`: the disk's own commit time, its tail included. */
export interface FsyncLatency {
  seconds: number;
  per_s: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  /** The threshold below, ms (a benchmark's p99 goal). */
  over_ms: number;
  /** fsyncs that took longer than `over_ms`, per minute. */
  over_per_min: number;
}

/**
 * Appends 4 KiB and fdatasyncs it `perSecond` times a second for `seconds`, on the filesystem of `dir`, and reports
 * how long each took. Paced rather than flat out (`fsyncPerSecond` measures that): a stall shows as one slow fsync,
 * as it would to a node committing a block.
 */
export function fsyncLatency(
  dir: string,
  options: { seconds: number; perSecond: number; overMs: number },
): FsyncLatency {
  const work = mkdtempSync(join(dir, "careledger-fsync-latency-"));
  const fd = openSync(join(work, "probe"), "w");
  const page = Buffer.alloc(4096, 1);
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  const took: number[] = [];
  const start = performance.now();
  try {
    for (let i = 0; ; i++) {
      const due = start + (i * 1000) / options.perSecond;
      if (due - start >= options.seconds * 1000) break;
      const wait = due - performance.now();
      if (wait > 0) Atomics.wait(sleeper, 0, 0, wait);
      const t = performance.now();
      writeSync(fd, page);
      fdatasyncSync(fd);
      took.push(performance.now() - t);
    }
  } finally {
    closeSync(fd);
    rmSync(work, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  }
  const elapsed = (performance.now() - start) / 1000;
  const round = (ms: number) => Number(ms.toFixed(2));
  return {
    seconds: Number(elapsed.toFixed(2)),
    per_s: options.perSecond,
    p50_ms: round(percentile(took, 0.5)),
    p99_ms: round(percentile(took, 0.99)),
    max_ms: round(Math.max(0, ...took)),
    over_ms: options.overMs,
    over_per_min: Number(((took.filter((ms) => ms > options.overMs).length * 60) / elapsed).toFixed(1)),
  };
}

/** The probe as the benchmarks with a p99 goal run it before their load (10 s, or 1 s when quick), logged. */
export function measureFsyncLatency(
  dir: string,
  options: { quick?: boolean; overMs: number; log: (line: string) => void },
): FsyncLatency {
  const seconds = options.quick ? 1 : 10;
  options.log(`measuring the disk's commit latency (${seconds} s of paced fsyncs)…`);
  const fsync = fsyncLatency(dir, { seconds, perSecond: 50, overMs: options.overMs });
  options.log(
    `  fsync p50 ${fsync.p50_ms} / p99 ${fsync.p99_ms} / max ${fsync.max_ms} ms; ${fsync.over_per_min} a minute over ${options.overMs} ms`,
  );
  return fsync;
}

/** The block device a directory lives on, as named in /proc/diskstats (undefined: none, e.g. tmpfs, or not Linux). */
export function blockDeviceOf(dir: string): string | undefined {
  try {
    const dev = statSync(dir).dev;
    // Linux's dev_t: major in bits 8–19 (and 32+), minor in bits 0–7 (and 20–31).
    const major = Math.floor(dev / 256) % 4096;
    const minor = (dev % 256) + (Math.floor(dev / 1048576) % 4096) * 256;
    // tmpfs and other virtual filesystems (major 0) have no entry here: undefined.
    return basename(realpathSync(`/sys/dev/block/${major}:${minor}`));
  } catch {
    return undefined;
  }
}

/** What one /proc/diskstats line says of a device: I/Os completed so far (all kinds), and in flight now. */
export interface DiskCounters {
  completed: number;
  inFlight: number;
}

/** Parses the line of `device` in /proc/diskstats text (reads, writes, discards and flushes completed; in flight). */
export function diskCountersOf(diskstats: string, device: string): DiskCounters | undefined {
  for (const line of diskstats.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f[2] !== device) continue;
    const n = (i: number) => Number(f[i] ?? 0) || 0;
    // Fields after the name: 0 reads, 4 writes, 8 in flight, 11 discards, 15 flushes (the last two on newer kernels).
    return { completed: n(3) + n(7) + n(14) + n(18), inFlight: n(11) };
  }
  return undefined;
}

/** A sample of a device's counters at a time (ms). */
export interface DiskSample extends DiskCounters {
  at: number;
}

export interface DiskStalls {
  /** Time the disk had I/O pending and completed none, ms (summed over the sampled intervals). */
  stalled_ms: number;
  /** The longest such spell, ms. */
  longest_stall_ms: number;
  /** Spells of at least one whole interval. */
  stalls: number;
  sample_ms: number;
  /** Samples taken (fewer than the window over `sample_ms` when the sampling process was held up). */
  samples: number;
}

/**
 * The stalled spells in a run of samples, as [from, to] times: an interval counts as stalled when I/O was in flight at
 * its start and none completed by its end. A healthy disk completes something within a few ms, so at 50 ms sampling a
 * stalled interval is a spell of at least that long with requests waiting.
 */
function spellsIn(samples: readonly DiskSample[]): [number, number][] {
  const spells: [number, number][] = [];
  let open: [number, number] | undefined;
  for (let i = 1; i < samples.length; i++) {
    const before = samples[i - 1] as DiskSample;
    const after = samples[i] as DiskSample;
    if (before.inFlight > 0 && after.completed === before.completed) {
      if (open) open[1] = after.at;
      else {
        open = [before.at, after.at];
        spells.push(open);
      }
    } else {
      open = undefined;
    }
  }
  return spells;
}

/** The stalls in a run of samples (see `spellsIn`): in all, the longest, how many. */
export function stallsIn(samples: readonly DiskSample[], sampleMs: number): DiskStalls {
  const lengths = spellsIn(samples).map(([from, to]) => to - from);
  return {
    stalled_ms: Math.round(lengths.reduce((a, b) => a + b, 0)),
    longest_stall_ms: Math.round(Math.max(0, ...lengths)),
    stalls: lengths.length,
    sample_ms: sampleMs,
    samples: samples.length,
  };
}

/**
 * The stalled spells, each widened by one sample interval before its first stalled sample: the request that was
 * waiting may have been issued up to an interval before it was seen waiting.
 */
export function stallSpans(samples: readonly DiskSample[], sampleMs: number): [number, number][] {
  return spellsIn(samples).map(([from, to]) => [from - sampleMs, to]);
}

/**
 * Of requests given as start times and durations (ms, the clock of the spans), the durations of those that overlapped
 * no stall. The others waited out the disk; on a busy machine some of these still wait behind the backlog a stall left.
 */
export function clearOfStalls(
  starts: readonly number[],
  durations: readonly number[],
  spans: readonly [number, number][],
): number[] {
  const clear: number[] = [];
  starts.forEach((start, i) => {
    const end = start + (durations[i] as number);
    if (!spans.some(([from, to]) => start < to && end > from)) clear.push(durations[i] as number);
  });
  return clear;
}

/** Samples the disk under `dir` every `sampleMs` from `start()` to `stop()` (all undefined where it cannot). */
export class DiskStallMonitor {
  private readonly device: string | undefined;
  private readonly samples: DiskSample[] = [];
  private readonly sampleMs: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(dir: string, sampleMs = 50) {
    this.device = blockDeviceOf(dir);
    this.sampleMs = sampleMs;
  }

  start(): void {
    if (!this.device || this.timer) return;
    this.sample();
    this.timer = setInterval(() => this.sample(), this.sampleMs);
    this.timer.unref();
  }

  stop(): DiskStalls | undefined {
    if (!this.timer) return undefined;
    clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    return stallsIn(this.samples, this.sampleMs);
  }

  /** The stalls seen so far as spans on `performance.now()`'s clock (see `stallSpans`). */
  spans(): [number, number][] {
    return stallSpans(this.samples, this.sampleMs);
  }

  private sample(): void {
    try {
      const counters = diskCountersOf(readFileSync("/proc/diskstats", "utf8"), this.device as string);
      if (counters) this.samples.push({ at: performance.now(), ...counters });
    } catch {
      // No /proc: nothing to report.
    }
  }
}
