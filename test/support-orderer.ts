// A scripted, in-memory orderer for fault tests: it orders what nodes submit like the embedded orderer does, and it
// also appends whatever a test hands it — duplicate or skipped sequence numbers, replayed or garbage txs — and
// delivers it to every subscriber exactly as appended. The Orderer contract says nodes must survive that.
import type { KeyId, SignedTx } from "../src/ledger/types.ts";
import type { Batch, BatchHandler, Orderer } from "../src/ordering/orderer.ts";

interface Subscriber {
  cursor: number;
  onBatch: BatchHandler;
  onError: (error: unknown) => void;
  active: boolean;
  running: boolean;
}

export class ScriptedOrderer implements Orderer {
  /** Every batch in delivery order (not necessarily seq order: that is the point). */
  readonly log: Batch[] = [];
  /** Rewrites what a node submits before it is logged: a faulty or hostile orderer. */
  rewrite: ((txs: SignedTx[]) => unknown[]) | undefined;
  private readonly subscribers = new Set<Subscriber>();
  private seq = 0;
  private lastTime = 0;
  private closed = false;

  async submit(proposer: KeyId, txs: SignedTx[]): Promise<number> {
    if (this.closed) throw new Error("the orderer is closed");
    const seq = this.seq + 1;
    const delivered = (this.rewrite ? this.rewrite(txs) : txs) as SignedTx[];
    this.append({ seq, time: this.now(), proposer, txs: delivered });
    return seq;
  }

  /** Appends a batch as given and delivers it; `seq` may repeat, skip or go backwards. */
  append(batch: Batch): void {
    this.log.push(batch);
    this.seq = Math.max(this.seq, batch.seq);
    this.lastTime = Math.max(this.lastTime, batch.time);
    for (const sub of this.subscribers) void this.pump(sub);
  }

  /** The next batch as an honest orderer would number and time it. */
  next(proposer: KeyId, txs: unknown[]): Batch {
    return { seq: this.seq + 1, time: this.now(), proposer, txs: txs as SignedTx[] };
  }

  subscribe(fromSeq: number, onBatch: BatchHandler, onError: (error: unknown) => void = () => {}): () => void {
    let cursor = this.log.findIndex((b) => b.seq >= fromSeq);
    if (cursor < 0) cursor = this.log.length;
    const sub: Subscriber = { cursor, onBatch, onError, active: true, running: false };
    this.subscribers.add(sub);
    queueMicrotask(() => void this.pump(sub));
    return () => {
      sub.active = false;
      this.subscribers.delete(sub);
    };
  }

  lastSeq(): number {
    return this.seq;
  }

  /** Resolves once every subscriber has been handed every batch (or dropped out on an error). */
  async idle(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const busy = () => [...this.subscribers].some((s) => s.running || s.cursor < this.log.length);
    while (busy()) {
      if (Date.now() > deadline) throw new Error("subscribers did not catch up with the scripted orderer");
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const sub of this.subscribers) sub.active = false;
    this.subscribers.clear();
  }

  private now(): number {
    this.lastTime = Math.max(this.lastTime, Date.now());
    return this.lastTime;
  }

  private async pump(sub: Subscriber): Promise<void> {
    if (sub.running || !sub.active) return;
    sub.running = true;
    try {
      while (sub.active && !this.closed && sub.cursor < this.log.length) {
        const batch = this.log[sub.cursor] as Batch;
        await sub.onBatch(batch);
        sub.cursor++;
      }
    } catch (error) {
      sub.active = false;
      this.subscribers.delete(sub);
      sub.onError(error);
    } finally {
      sub.running = false;
    }
  }
}
