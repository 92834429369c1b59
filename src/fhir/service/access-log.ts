// Puts access-log entries (one per consent decision) on the ledger as `access.log` txs signed by the node key,
// batched: entries queued within 20 ms of each other share a tx (≤ 1000 entries and 64 KiB each). Each tx costs every
// node a signature check, a block and a flush, so under read load fewer, fuller txs leave more CPU for the reads.
//
// Reads do not wait for their entry to commit (that would add a block's latency to every read). Instead a read is
// refused (503) whenever the log cannot be relied on to get there: `unavailable()` says why, and the consent gate
// (consent-check.ts) asks before every decision. The log is unavailable when
// - the node is halted or closing (its txs would never commit),
// - a submission failed for any reason other than "busy" (until a later submission commits),
// - more than `maxQueued` entries wait to commit: back-pressure. Entries are never dropped to make room (an audit
//   log with holes is worse than a short refusal); the reads that would add more are refused until it drains.
// Entries already accepted when the log breaks are kept and retried; if the node halts for good they are lost with
// the process, and that is logged loudly (a count, never their content). The window is the few tens of ms between a read
// and its batch committing.

import { firstRefusedItem, MAX_LIST_ITEMS } from "../../contract/schemas.ts";
import { canonicalLengthOfPlain } from "../../ledger/canonical.ts";
import type { KeyPair } from "../../ledger/keys.ts";
import { MAX_TX_BYTES } from "../../ledger/tx.ts";
import type { Hex32, SignedTx } from "../../ledger/types.ts";
import type { CommitResult } from "../../node/ledger-node.ts";
import { signNewWithId } from "../../node/network.ts";
import type { AccessEntry, AccessLogger } from "./context.ts";

/** What the batcher needs of a node (`LedgerNode` has it). */
export interface AccessLogNode {
  submit(items: { tx: SignedTx; id: Hex32 }[]): Promise<Promise<CommitResult>[]>;
  /** Why the node refuses writes, if it does. */
  readonly halted?: string | undefined;
}

/** Where failures are reported (pino's shape; messages carry counts and codes, never entry content). */
export interface FailureLog {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface AccessLogBatcherOptions {
  node: AccessLogNode;
  /** The node key: `access.log` must be signed by a node key (or admin) of the entries' custodian. */
  key: KeyPair;
  now?: () => number;
  log?: FailureLog;
  /** Entries per tx (the contract allows 1000). */
  maxEntriesPerTx?: number;
  /** How long the first entry waits for others to share its tx (ms). */
  lingerMs?: number;
  /** Entries waiting to commit beyond which the log reports itself unavailable (back-pressure). */
  maxQueued?: number;
  /** First retry delay after a "busy" refusal, doubled up to 1 s (ms). */
  retryMs?: number;
}

/** Room kept in a tx body for the envelope around the payload. */
const ENVELOPE_ROOM = 1024;
const PAYLOAD_SHELL = '{"entries":[]}'.length;
const MAX_RETRY_MS = 1000;

/** A tx's worth of entries; `signed` is kept so that a resubmission is the same tx (idempotent). */
interface Batch {
  entries: AccessEntry[];
  signed?: { tx: SignedTx; id: Hex32 };
  resolve: () => void;
  reject: (error: Error) => void;
  done: Promise<void>;
}

const silent: FailureLog = { warn() {}, error() {} };

export class AccessLogBatcher implements AccessLogger {
  private readonly node: AccessLogNode;
  private readonly key: KeyPair;
  private readonly now: () => number;
  private readonly failures: FailureLog;
  private readonly maxEntries: number;
  private readonly lingerMs: number;
  private readonly maxQueued: number;
  private readonly retryMs: number;
  private readonly maxPayloadBytes = MAX_TX_BYTES - ENVELOPE_ROOM;
  private queue: AccessEntry[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Batches cut and not yet committed (or given up). */
  private readonly inFlight = new Set<Batch>();
  private inFlightEntries = 0;
  private failure: string | undefined;
  private closed = false;
  /** Counters for tests and metrics. */
  readonly stats = { txsSubmitted: 0, entriesCommitted: 0, entriesRejected: 0, entriesLost: 0, entriesInvalid: 0 };

  constructor(options: AccessLogBatcherOptions) {
    this.node = options.node;
    this.key = options.key;
    this.now = options.now ?? Date.now;
    this.failures = options.log ?? silent;
    this.maxEntries = Math.min(MAX_LIST_ITEMS, Math.max(1, options.maxEntriesPerTx ?? MAX_LIST_ITEMS));
    this.lingerMs = options.lingerMs ?? 20;
    this.maxQueued = Math.max(1, options.maxQueued ?? 50_000);
    this.retryMs = Math.max(1, options.retryMs ?? 20);
  }

  /** Entries accepted and not yet committed. */
  get pending(): number {
    return this.queue.length + this.inFlightEntries;
  }

  /** Why reads must be refused now, or undefined when the log can take entries. */
  unavailable(): string | undefined {
    if (this.closed) return "the access log is closed";
    const halted = this.node.halted;
    if (halted !== undefined) return "the ledger node is halted";
    if (this.failure !== undefined) return this.failure;
    if (this.pending >= this.maxQueued) return "the access log is backed up; retry shortly";
    return undefined;
  }

  log(entries: readonly AccessEntry[]): void {
    for (const e of entries) this.queue.push(e);
    if (this.queue.length >= this.maxEntries) this.cut();
    else if (this.queue.length > 0) this.timer ??= setTimeout(() => this.cut(), this.lingerMs);
  }

  /** Resolves once every entry queued before the call is committed; rejects if some could not be. */
  async flush(): Promise<void> {
    this.cut();
    const waiting = [...this.inFlight].map((b) => b.done);
    const results = await Promise.allSettled(waiting);
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  /** Sends what is queued, waits up to `drainMs` for it to commit, then gives up on the rest (counted as lost). */
  async close(drainMs = 5000): Promise<void> {
    if (this.closed) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.flush().catch(() => {}),
      new Promise<void>((r) => {
        timer = setTimeout(r, drainMs);
      }),
    ]);
    clearTimeout(timer);
    this.closed = true;
    for (const b of [...this.inFlight]) this.giveUp(b, "the access log was closed before its entries committed");
  }

  /** Cuts the queue into txs and sends them. */
  private cut(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.queue.length === 0) return;
    const entries = this.wellFormed(this.queue);
    this.queue = [];
    // Entries are plain ASCII by schema (checked just above).
    const sizes = entries.map((e) => canonicalLengthOfPlain(e) + 1);
    let start = 0;
    while (start < entries.length) {
      let end = start;
      let bytes = PAYLOAD_SHELL;
      while (
        end < entries.length &&
        end - start < this.maxEntries &&
        bytes + (sizes[end] as number) <= this.maxPayloadBytes
      ) {
        bytes += sizes[end] as number;
        end++;
      }
      this.start(entries.slice(start, end));
      start = end;
    }
  }

  /**
   * The entries that pass the contract's schema. A malformed entry would spoil the tx it shares: it is a bug in the
   * caller, reported and dropped. One check of the whole batch in the common case; entry by entry only if it fails.
   */
  private wellFormed(entries: AccessEntry[]): AccessEntry[] {
    const refused = (list: AccessEntry[]) => firstRefusedItem("access.log", "entries", list) >= 0;
    if (!refused(entries)) return entries;
    return entries.filter((e) => {
      if (!refused([e])) return true;
      this.stats.entriesInvalid++;
      this.failures.error({ code: "invalid-entry" }, "access-log entry refused by the contract's schema");
      return false;
    });
  }

  private start(entries: AccessEntry[]): Batch {
    let resolve!: () => void;
    let reject!: (error: Error) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // flush() callers see rejections; nobody else has to.
    done.catch(() => {});
    const batch: Batch = { entries, resolve, reject, done };
    this.inFlight.add(batch);
    this.inFlightEntries += entries.length;
    void this.send(batch, this.retryMs);
    return batch;
  }

  private settle(batch: Batch): boolean {
    if (!this.inFlight.delete(batch)) return false;
    this.inFlightEntries -= batch.entries.length;
    return true;
  }

  private giveUp(batch: Batch, why: string): void {
    if (!this.settle(batch)) return;
    this.stats.entriesLost += batch.entries.length;
    this.failures.error({ entries: batch.entries.length }, `access-log entries lost: ${why}`);
    batch.reject(new Error(`access-log entries lost: ${why}`));
  }

  private async send(batch: Batch, delay: number): Promise<void> {
    if (this.closed) return;
    if (batch.signed === undefined) {
      try {
        batch.signed = signNewWithId(this.key, "access.log", { entries: batch.entries }, this.now());
      } catch (error) {
        this.giveUp(batch, `the access.log tx is malformed: ${(error as Error).message}`);
        return;
      }
    }
    let result: CommitResult;
    try {
      this.stats.txsSubmitted++;
      const [answer] = await this.node.submit([batch.signed]);
      result = await (answer as Promise<CommitResult>);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code !== "busy") {
        this.failure = `the access log cannot reach the ledger (${typeof code === "string" ? code : "error"})`;
        this.failures.warn({ code, entries: batch.entries.length }, "access.log submission failed; will retry");
      }
      if (this.node.halted !== undefined && code !== "busy") {
        // A halted node stays halted until restarted: keep retrying slowly, reads are refused meanwhile.
        delay = MAX_RETRY_MS;
      }
      setTimeout(() => void this.send(batch, Math.min(MAX_RETRY_MS, delay * 2)), delay).unref();
      return;
    }
    if (result.valid) {
      this.failure = undefined;
      if (this.settle(batch)) {
        this.stats.entriesCommitted += batch.entries.length;
        batch.resolve();
      }
      return;
    }
    // Rejected by the contract: find the entries at fault by halving (rare: an unknown patient or custodian).
    if (!this.settle(batch)) return;
    if (batch.entries.length === 1) {
      this.stats.entriesRejected++;
      this.failures.error({ code: result.code }, "an access-log entry was rejected by the ledger");
      batch.reject(new Error(`an access-log entry was rejected by the ledger: ${result.code}`));
      return;
    }
    const half = Math.ceil(batch.entries.length / 2);
    const parts = [this.start(batch.entries.slice(0, half)), this.start(batch.entries.slice(half))];
    Promise.allSettled(parts.map((p) => p.done)).then((rs) => {
      const bad = rs.find((r) => r.status === "rejected") as PromiseRejectedResult | undefined;
      if (bad) batch.reject(bad.reason as Error);
      else batch.resolve();
    });
  }
}
