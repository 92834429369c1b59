// The machine's own limits, measured in the same run as a benchmark, so that results are compared as ratios on
// shared, noisy machines.

import { generateKeyPairSync, sign, verify } from "node:crypto";
import { closeSync, fdatasyncSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { keyPairFromSeed, signBytes, verifyBytes } from "../src/ledger/keys.ts";

/**
 * node:crypto's (OpenSSL's) Ed25519 verifications per second on one core (this thread), over `ms` of wall time: the
 * machine limit the issues' goals are ratios to.
 */
export function ed25519VerifyPerSecond(ms = 1000): number {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const message = Buffer.alloc(32, 7);
  const signature = sign(null, message, privateKey);
  return callsPerSecond(() => verify(null, message, publicKey, signature), ms);
}

/** The ledger's own signature check (libsodium, `verifyBytes`) per second on one core, for reading the ratios. */
export function ledgerVerifyPerSecond(ms = 1000): number {
  const key = keyPairFromSeed(new Uint8Array(32).fill(7));
  const message = new Uint8Array(32).fill(7);
  const signature = signBytes(key, message);
  return callsPerSecond(() => verifyBytes(key.keyId, message, signature), ms);
}

function callsPerSecond(call: () => boolean, ms: number): number {
  let count = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    for (let i = 0; i < 100; i++) if (!call()) throw new Error("the probe's signature did not verify");
    count += 100;
    now = performance.now();
  }
  return Math.round((count / (now - start)) * 1000);
}

/** fdatasync'd 4 KiB appends per second in `dir` (the filesystem the data dir lives on). */
export function fsyncPerSecond(dir: string = tmpdir(), ms = 1000): number {
  const work = mkdtempSync(join(dir, "careledger-fsync-"));
  const fd = openSync(join(work, "probe"), "w");
  const page = Buffer.alloc(4096, 1);
  let count = 0;
  const start = performance.now();
  let now = start;
  try {
    while (now - start < ms) {
      writeSync(fd, page);
      fdatasyncSync(fd);
      count++;
      now = performance.now();
    }
  } finally {
    closeSync(fd);
    rmSync(work, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  }
  return Math.round((count / (now - start)) * 1000);
}

/** Busy jiffies (everything but idle and iowait) and all jiffies of the machine so far, from /proc/stat's first line. */
function machineJiffies(): { busy: number; total: number } | undefined {
  try {
    const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] as string).trim().split(/\s+/).slice(1, 9);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = fields.map(Number) as number[];
    const busy = (user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0);
    return { busy, total: busy + (idle ?? 0) + (iowait ?? 0) };
  } catch {
    return undefined;
  }
}

/**
 * Cores that other processes kept busy over `ms` while this one slept (undefined off Linux). A benchmark started
 * beside other work — a cluster left running, a build — measures that work too; this says so in its figures.
 */
export function busyCoresElsewhere(ms = 1000): number | undefined {
  const before = machineJiffies();
  const own = process.cpuUsage();
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  const after = machineJiffies();
  if (!before || !after || after.total === before.total) return undefined;
  const ownUsed = process.cpuUsage(own);
  const cores = availableParallelism();
  const busyShare = (after.busy - before.busy) / (after.total - before.total);
  const ownCores = (ownUsed.user + ownUsed.system) / 1000 / ms;
  return Number(Math.max(0, busyShare * cores - ownCores).toFixed(2));
}

/** Above this many cores busy elsewhere at the start, a benchmark says its figures are not this machine's own. */
export const BUSY_ELSEWHERE_WARN_CORES = 0.25;

export function machineLimits(dir?: string, log?: (line: string) => void) {
  const busy = busyCoresElsewhere();
  if (busy !== undefined && busy > BUSY_ELSEWHERE_WARN_CORES && log) {
    log(
      `warning: other processes keep ${busy} cores busy on this machine; the figures will count their load ` +
        "(look for a cluster left running: careledger cluster status, or ps)",
    );
  }
  return {
    ed25519_verify_per_s_1core: ed25519VerifyPerSecond(),
    ledger_verify_per_s_1core: ledgerVerifyPerSecond(),
    fsync_per_s: fsyncPerSecond(dir),
    cores: (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 0,
    busy_cores_elsewhere_at_start: busy ?? null,
  };
}

/**
 * Committed tx/s as ratios to two cores of signature checks: node:crypto's (the issues' goals are set against it)
 * and the ledger's own libsodium check (for readers who take that as the machine's limit).
 */
export function verifyRatios(txPerS: number, limits: ReturnType<typeof machineLimits>) {
  const ratio = (perCore: number) => Number((txPerS / (2 * perCore)).toFixed(3));
  return {
    ratio_to_2core_verify: ratio(limits.ed25519_verify_per_s_1core),
    ratio_to_2core_ledger_verify: ratio(limits.ledger_verify_per_s_1core),
  };
}

/** CPU seconds of several processes together (those that cannot be read count 0). */
export function cpuSecondsOfAll(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + (cpuSecondsOf(pid) ?? 0), 0);
}

/** utime + stime of a `/proc/…/stat` line, in seconds (USER_HZ = 100); the name in parentheses may hold spaces. */
function cpuSecondsInStat(stat: string): number {
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** CPU seconds (user + system) of a process so far, from /proc/PID/stat (USER_HZ = 100); undefined off Linux. */
export function cpuSecondsOf(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    return cpuSecondsInStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds of a process so far by thread name (`/proc/PID/task/TID/comm`: "MainThread", "V8Worker" for V8's GC and
 * compiler helpers, or the name a worker was given), summed over threads of the same name; undefined off Linux or
 * when the process is gone. A thread that ended meanwhile takes its seconds with it: compare names present in both.
 */
export function threadCpuSecondsOf(pid: number): Record<string, number> | undefined {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  const byName: Record<string, number> = {};
  for (const task of tasks) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${task}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      byName[name] = (byName[name] ?? 0) + cpuSecondsInStat(stat);
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return byName;
}

/** Percentile of a sorted copy. */
export function percentile(values: ArrayLike<number>, p: number): number {
  const sorted = Array.from(values).sort((a, b) => a - b);
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}
