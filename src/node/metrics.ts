import { monitorEventLoopDelay } from "node:perf_hooks";

/** A small Prometheus text-format registry: counters, gauges and summaries with p50/p99 over a sliding window. */
export class Metrics {
  private readonly counters = new Map<string, number>();
  private readonly gauges = new Map<string, number>();
  private readonly windows = new Map<
    string,
    { values: Float64Array; next: number; filled: number; sum: number; count: number }
  >();

  /** Read at each render: figures other parts keep themselves (where signatures were checked, the machine's load). */
  private readonly collectors: ((metrics: Metrics) => void)[] = [];

  /** How long the event loop was kept from running (GC, long synchronous work): the tail every request shares. */
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 5 });

  constructor() {
    this.loopDelay.enable();
  }

  inc(name: string, by = 1): void {
    this.counters.set(name, (this.counters.get(name) ?? 0) + by);
  }

  set(name: string, value: number): void {
    this.gauges.set(name, value);
  }

  observe(name: string, value: number): void {
    let w = this.windows.get(name);
    if (!w) {
      w = { values: new Float64Array(2048), next: 0, filled: 0, sum: 0, count: 0 };
      this.windows.set(name, w);
    }
    w.values[w.next] = value;
    w.next = (w.next + 1) % w.values.length;
    w.filled = Math.min(w.filled + 1, w.values.length);
    w.sum += value;
    w.count++;
  }

  /** Runs `collect` at every render, before the figures are written out (it sets gauges). */
  addCollector(collect: (metrics: Metrics) => void): void {
    this.collectors.push(collect);
  }

  counter(name: string): number {
    return this.counters.get(name) ?? 0;
  }

  render(): string {
    const lines: string[] = [];
    for (const collect of this.collectors) collect(this);
    // Since the last scrape, in ms (the histogram records ns).
    this.gauges.set("careledger_event_loop_delay_p99_ms", this.loopDelay.percentile(99) / 1e6);
    this.gauges.set("careledger_event_loop_delay_max_ms", this.loopDelay.max / 1e6);
    this.loopDelay.reset();
    for (const [name, value] of [...this.counters].sort()) {
      lines.push(`# TYPE ${name} counter`, `${name} ${value}`);
    }
    for (const [name, value] of [...this.gauges].sort()) {
      lines.push(`# TYPE ${name} gauge`, `${name} ${value}`);
    }
    for (const [name, w] of [...this.windows].sort()) {
      const sorted = Array.from(w.values.subarray(0, w.filled)).sort((a, b) => a - b);
      const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
      lines.push(
        `# TYPE ${name} summary`,
        `${name}{quantile="0.5"} ${q(0.5)}`,
        `${name}{quantile="0.99"} ${q(0.99)}`,
        `${name}_sum ${w.sum}`,
        `${name}_count ${w.count}`,
      );
    }
    return `${lines.join("\n")}\n`;
  }
}
