// Whether the machine's cores are busy, sampled twice a second: the node checks small signature jobs on its own thread
// only while they are (verify-pool.ts, `inlineWhen`).

import { cpus } from "node:os";

/** CPU time of all cores so far: busy (everything but idle) and in all, in any unit. */
export interface CpuTimes {
  busy: number;
  total: number;
}

/** The machine's CPU times from `os.cpus()` (ms). */
export function machineCpuTimes(): CpuTimes {
  let busy = 0;
  let total = 0;
  for (const cpu of cpus()) {
    const { user, nice, sys, idle, irq } = cpu.times;
    busy += user + nice + sys + irq;
    total += user + nice + sys + irq + idle;
  }
  return { busy, total };
}

export interface MachineLoadOptions {
  /** Where the CPU times come from (tests pass their own). */
  sample?: () => CpuTimes;
  intervalMs?: number;
  /** Busy from this share of all cores over an interval… */
  busyAbove?: number;
  /** …until the share falls below this one (the gap keeps it from flapping at the threshold). */
  idleBelow?: number;
}

/**
 * Tracks whether the machine is busy: the share of all its cores' time that was not idle over the last interval
 * (500 ms by default), with hysteresis. Busy until the first interval has been measured.
 */
export class MachineLoad {
  private readonly sample: () => CpuTimes;
  private readonly busyAbove: number;
  private readonly idleBelow: number;
  private last: CpuTimes;
  private timer: NodeJS.Timeout | undefined;
  private lastShare: number | undefined;
  private isBusy = true;

  constructor(options: MachineLoadOptions = {}) {
    this.sample = options.sample ?? machineCpuTimes;
    this.busyAbove = options.busyAbove ?? 0.8;
    this.idleBelow = options.idleBelow ?? 0.7;
    this.last = this.sample();
    this.timer = setInterval(() => this.tick(), options.intervalMs ?? 500);
    this.timer.unref();
  }

  /** Busy (see the class). */
  get busy(): boolean {
    return this.isBusy;
  }

  /** The busy share of the last interval (undefined before the first). */
  get share(): number | undefined {
    return this.lastShare;
  }

  /** Takes a sample now (the timer calls it every interval). */
  tick(): void {
    const now = this.sample();
    const total = now.total - this.last.total;
    if (total <= 0) return;
    const share = (now.busy - this.last.busy) / total;
    this.lastShare = share;
    this.last = now;
    if (this.isBusy && share < this.idleBelow) this.isBusy = false;
    else if (!this.isBusy && share > this.busyAbove) this.isBusy = true;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
