import { CompareResult, CompareTarget, Etcd3, type IOptions } from "etcd3";
import type { KeyPair } from "../ledger/keys.ts";
import type { KeyId, SignedTx } from "../ledger/types.ts";
import type { GroupSync } from "../store/group-sync.ts";
import { prefixEnd } from "./etcd-client.ts";
import { type CompactorStats, EtcdCompactor, type EtcdCompactorOptions } from "./etcd-compactor.ts";
import { type CursorRow, DeliveryCursor } from "./etcd-cursor.ts";
import { DEFAULT_MAX_BATCH_BYTES, type OpenResult, openBatch, sealBatch } from "./etcd-envelope.ts";
import { LeaseKeeper } from "./etcd-lease.ts";
import { BatchWatch, type WatchEvent } from "./etcd-watch.ts";
import { type Batch, type BatchHandler, type Orderer, OrdererError } from "./orderer.ts";

/** The logging this layer needs (the node's pino logger fits); nothing personal is ever passed to it. */
export interface OrdererLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

const quietLog: OrdererLog = { warn() {}, info() {} };

/** A warning repeated while etcd is away is logged once per this interval, with how often it recurred meanwhile. */
const REPEAT_WARNING_MS = 10_000;

/**
 * While etcd is unreachable the same warnings recur every few hundred ms (watch reconnects, compaction rounds,
 * applied-revision publication): one line per message per interval, carrying the count, keeps the log readable.
 */
export function throttledLog(log: OrdererLog, now: () => number = Date.now): OrdererLog {
  const last = new Map<string, { at: number; suppressed: number }>();
  return {
    info: (obj, msg) => log.info(obj, msg),
    warn(obj, msg) {
      const seen = last.get(msg);
      const t = now();
      if (seen && t - seen.at < REPEAT_WARNING_MS) {
        seen.suppressed++;
        return;
      }
      last.set(msg, { at: t, suppressed: 0 });
      log.warn(seen?.suppressed ? { ...obj, repeated: seen.suppressed } : obj, msg);
    },
  };
}

export interface EtcdTlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export interface EtcdOrdererOptions {
  endpoints: string[];
  /** Everything of this network lives under it, e.g. "/careledger/<networkId>/". Must end with "/". */
  prefix: string;
  /** This node's key: signs the envelopes of the batches it proposes, names its `applied/` entry. */
  key: KeyPair;
  /** SQLite file of the delivery cursor (seq → etcd revision). */
  cursorPath: string;
  /**
   * When `cursorPath` is the node's store database: its flush, which then makes each cursor row durable with the
   * block after it (see `DeliveryCursor`).
   */
  cursorSync?: GroupSync;
  tls?: EtcdTlsMaterial;
  /**
   * Largest accepted envelope (default 1 MiB). Part of the delivery filter, so every node of a network must use the
   * same value. etcd must accept requests this large (`--max-request-bytes`).
   */
  maxBatchBytes?: number;
  /**
   * Whether this node writes its batches deflated (default true): etcd then writes, replicates and sends ~a quarter
   * of the bytes. Every node reads both forms; a network with nodes from before 2026-11-28 (which read plain JSON
   * only) must set it false on every node until those are upgraded.
   */
  compressBatches?: boolean;
  /** How long `submit` retries before it rejects (default 10 s). */
  submitTimeoutMs?: number;
  /** Whether batches of this proposer are delivered; asked in order, after the previous batch's handler resolved. */
  acceptProposer?: (keyId: KeyId) => boolean;
  clock?: () => number;
  log?: OrdererLog;
  /** TTL of this node's `applied/` entry (default 30 s): a node silent for longer no longer holds compaction back. */
  leaseTtlSeconds?: number;
  /** How often the applied revision is published (default 1 s). */
  appliedIntervalMs?: number;
  /** How long `open` tries to reach etcd (default 5 s). */
  connectTimeoutMs?: number;
  /** Compaction settings; `false` turns this node's compactor off (it still publishes what it applied). */
  compaction?: Partial<EtcdCompactorOptions> | false;
  /** Silence on the watch stream after which etcd is asked for progress, then the stream is replaced (default 5 s). */
  watchStallMs?: number;
}

/** Counters for metrics and tests. `skipped` counts events of `b/` that delivery passed over, by reason. */
export interface EtcdOrdererStats {
  delivered: number;
  submitted: number;
  submitRetries: number;
  skipped: Record<string, number>;
  watchReconnects: number;
}

interface Waiter {
  resolve: (seq: number) => void;
  reject: (error: Error) => void;
}

interface Subscription {
  fromSeq: number;
  onBatch: BatchHandler;
  onError: (error: unknown) => void;
  active: boolean;
  running: boolean;
  /** Last seq assigned, its time, and the last revision looked at. */
  seq: number;
  time: number;
  revision: number;
  queue: WatchEvent[];
  queuedBytes: number;
  watch: BatchWatch | undefined;
  pendingError: Error | undefined;
}

/** Events buffered ahead of the handler: the watch is paused above HIGH and resumed below LOW. */
const QUEUE_HIGH_BYTES = 64 * 1024 * 1024;
const QUEUE_LOW_BYTES = 16 * 1024 * 1024;
const RECENT_OUTCOMES = 4096;
/** Own envelopes remembered until delivered (see `sealedHere`); more than the batches a node has in flight. */
const SEALED_REMEMBERED = 256;
/** etcd's default `--max-request-bytes` is 1.5 MiB; the launcher sets 4 MiB. Envelopes must stay below. */
const MAX_MAX_BATCH_BYTES = 4 * 1024 * 1024 - 64 * 1024;

const passThrough = {
  // async: etcd3's markFailed calls execute with a function that throws synchronously and only catches rejections;
  // a synchronous throw here escaped as an uncaught exception and crashed the node when a member went away.
  execute: async <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> =>
    fn({ signal: new AbortController().signal }),
} as unknown as NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;

function defaultOnError(error: unknown): void {
  queueMicrotask(() => {
    throw error;
  });
}

function describe(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  // grpc messages repeat the status code and the peer; the first line says what happened.
  return message.split("\n")[0]?.slice(0, 300) ?? "unknown error";
}

/** Errors a retry cannot cure. Everything else (no leader, timeouts, unreachable members, NOSPACE) is retried. */
function isPermanent(error: unknown): boolean {
  const message = error instanceof Error ? error.message : String(error);
  return /too large|permission denied|invalid argument|already closed|authentication failed/i.test(message);
}

/**
 * The orderer on an etcd 3.4 cluster. Each batch is one key `b/<batchId>` under the network's prefix, created once
 * (`create_revision == 0`); the global order is etcd's revision order of those creates, and delivery is a
 * deterministic filter of the event history, so every node assigns the same seqs to the same batches with the same
 * times. Txs are not validated here: every node re-validates what it receives.
 *
 * One subscriber at a time (a node has one orderer of its own). `applied/<keyId>` publishes, under a lease, the etcd
 * revision this node has applied; one node (the smallest key id among live entries) deletes and compacts what every
 * live node has applied.
 */
export class EtcdOrderer implements Orderer {
  private readonly client: Etcd3;
  private readonly options: EtcdOrdererOptions;
  private readonly cursor: DeliveryCursor;
  private readonly log: OrdererLog;
  private readonly clock: () => number;
  private readonly prefix: string;
  private readonly batchPrefix: Buffer;
  private readonly batchRangeEnd: Buffer;
  private readonly appliedKey: string;
  private readonly maxBatchBytes: number;
  private readonly submitTimeoutMs: number;
  private readonly compactor: EtcdCompactor | undefined;
  private sub: Subscription | undefined;
  private readonly waiters = new Map<number, Waiter[]>();
  /**
   * Envelopes this orderer sealed and has not yet seen delivered, by batch id. When one comes back byte for byte, it
   * is what `openBatch` would accept (this node built and signed exactly those bytes), so delivery hands the node its
   * own tx objects instead of parsing and checking the envelope again.
   */
  private readonly sealedHere = new Map<string, { value: Buffer; time: number; txs: SignedTx[] }>();
  /** revision → seq (delivered) or skip reason, for submits whose answer arrives after delivery got there. */
  private readonly recentOutcomes = new Map<number, number | string>();
  private lastKnownSeq: number;
  /** Revision of the last batch whose handler resolved; what this node has applied. */
  private appliedRevision: number | undefined;
  /** Published one tick late, so the node's own flush of that block is long done when compaction may pass it. */
  private appliedSeenLastTick: number | undefined;
  private publishedRevision: number | undefined;
  private readonly lease: LeaseKeeper;
  private publishing = false;
  private readonly publishTimer: NodeJS.Timeout;
  private closed = false;
  private readonly counters: EtcdOrdererStats = {
    delivered: 0,
    submitted: 0,
    submitRetries: 0,
    skipped: {},
    watchReconnects: 0,
  };

  /** Revision of the network's `start` marker: delivery of batch 1 begins after it. */
  private readonly startRevision: number;

  private constructor(client: Etcd3, options: EtcdOrdererOptions, cursor: DeliveryCursor, startRevision: number) {
    this.startRevision = startRevision;
    this.client = client;
    this.options = options;
    this.cursor = cursor;
    this.log = options.log ? throttledLog(options.log) : quietLog;
    this.clock = options.clock ?? Date.now;
    this.prefix = options.prefix;
    this.batchPrefix = Buffer.from(`${options.prefix}b/`);
    this.batchRangeEnd = prefixEnd(this.batchPrefix);
    this.appliedKey = `${options.prefix}applied/${options.key.keyId}`;
    this.maxBatchBytes = options.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES;
    this.submitTimeoutMs = options.submitTimeoutMs ?? 10_000;
    this.lastKnownSeq = cursor.last()?.seq ?? 0;
    this.lease = new LeaseKeeper(client, options.leaseTtlSeconds ?? 30);
    this.lease.onLost = () => {
      this.publishedRevision = undefined;
      this.log.warn({}, "the etcd lease of this node's applied entry expired; publishing it again");
    };
    this.publishTimer = setInterval(() => void this.publishApplied(false), options.appliedIntervalMs ?? 1000);
    this.publishTimer.unref();
    if (options.compaction !== false) {
      this.compactor = new EtcdCompactor(client, {
        ...options.compaction,
        prefix: options.prefix,
        keyId: options.key.keyId,
        endpoints: options.endpoints,
        clientOptions: EtcdOrderer.clientOptions(options, [options.endpoints[0] as string]),
        log: this.log,
      });
    }
  }

  private static clientOptions(options: EtcdOrdererOptions, hosts: string[]): IOptions {
    return {
      hosts,
      ...(options.tls
        ? {
            credentials: {
              rootCertificate: options.tls.ca,
              certChain: options.tls.cert,
              privateKey: options.tls.key,
            },
          }
        : {}),
      // etcd3's default per-member circuit breaker opens for 5 s after 3 failures (deadlines under load count), and
      // then refuses to even try that member; with every member tripped a healthy cluster looked down. Submits and
      // the watch retry on their own terms, so each call simply goes to a member.
      faultHandling: { host: () => passThrough },
      grpcOptions: {
        // A catching-up watch gets up to 1,000 revisions of batches in one response.
        "grpc.max_receive_message_length": -1,
        "grpc.max_send_message_length": -1,
        // Notice a member that vanished (SIGSTOP, partition) on a quiet connection; etcd allows pings every 5 s.
        "grpc.keepalive_time_ms": 10_000,
        "grpc.keepalive_timeout_ms": 5_000,
        "grpc.keepalive_permit_without_calls": 1,
      },
    };
  }

  /**
   * Connects to etcd and opens the cursor. Rejects with `OrdererError("etcd-unavailable")` naming the endpoints when
   * no member answers within `connectTimeoutMs` (a member that answers without a quorum is enough: submits then
   * retry until etcd is whole again).
   */
  static async open(options: EtcdOrdererOptions): Promise<EtcdOrderer> {
    if (!Array.isArray(options.endpoints) || options.endpoints.length === 0) {
      throw new OrdererError("bad-config", "the etcd orderer needs at least one endpoint");
    }
    if (typeof options.prefix !== "string" || options.prefix.length < 2 || !options.prefix.endsWith("/")) {
      throw new OrdererError("bad-config", `the etcd prefix must end with "/", got ${JSON.stringify(options.prefix)}`);
    }
    const maxBatchBytes = options.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES;
    if (!Number.isSafeInteger(maxBatchBytes) || maxBatchBytes < 1024 || maxBatchBytes > MAX_MAX_BATCH_BYTES) {
      throw new OrdererError("bad-config", `maxBatchBytes must be between 1024 and ${MAX_MAX_BATCH_BYTES}`);
    }
    const submitTimeoutMs = options.submitTimeoutMs ?? 10_000;
    const grace = options.compaction === false ? undefined : options.compaction?.markerGraceMs;
    const deleteGraceMs = grace ?? 60_000;
    if (options.compaction !== false && submitTimeoutMs >= deleteGraceMs) {
      // A retry must always find its batch's marker: without it, a batch already deleted would be ordered twice.
      throw new OrdererError(
        "bad-config",
        `submitTimeoutMs (${submitTimeoutMs}) must be shorter than the compactor's markerGraceMs (${deleteGraceMs})`,
      );
    }
    const client = new Etcd3(EtcdOrderer.clientOptions(options, options.endpoints));
    const timeoutMs = options.connectTimeoutMs ?? 5000;
    const deadline = Date.now() + timeoutMs;
    let last = "no answer";
    for (;;) {
      try {
        await client.maintenance.status({ deadline: Math.min(deadline, Date.now() + 2000) });
        break;
      } catch (error) {
        last = describe(error);
      }
      if (Date.now() >= deadline) {
        client.close();
        throw new OrdererError(
          "etcd-unavailable",
          `cannot reach etcd at ${options.endpoints.join(", ")} within ${timeoutMs} ms (${last})`,
        );
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    // The network's history in etcd starts at its `start` marker, created once by whichever node comes first: an etcd
    // that served other networks (and was compacted since) is fine, and every node starts from the same revision.
    let startRevision: number;
    try {
      const startKey = `${options.prefix}start`;
      await client.if(startKey, "Create", "==", 0).then(client.put(startKey).value("")).commit();
      const marker = await client.get(startKey).exec();
      startRevision = Number(marker.kvs[0]?.create_revision ?? Number.NaN);
      if (!Number.isSafeInteger(startRevision)) throw new Error("the start marker has no revision");
    } catch (error) {
      client.close();
      throw new OrdererError("etcd-unavailable", `cannot read the network's start marker in etcd: ${describe(error)}`);
    }
    let cursor: DeliveryCursor;
    try {
      cursor = new DeliveryCursor(options.cursorPath, options.cursorSync ? { sync: options.cursorSync } : undefined);
    } catch (error) {
      client.close();
      throw new OrdererError("bad-config", `cannot open the cursor ${options.cursorPath}: ${describe(error)}`);
    }
    return new EtcdOrderer(client, options, cursor, startRevision);
  }

  /**
   * Orders a batch signed by this node's key. Resolves once etcd holds it (quorum-durable), with its seq once this
   * orderer's delivery has assigned one — or 0 when this orderer has no active subscription (or it stopped before
   * reaching the batch): the batch is ordered all the same. A batch too large for one envelope is ordered as
   * consecutive smaller ones (the last one's seq is returned). Rejects with `too-large` (one tx over the limit), `refused`
   * (delivery skipped it, e.g. `acceptProposer` said no) or `unavailable` after `submitTimeoutMs` of retries.
   */
  async submit(proposer: KeyId, txs: SignedTx[]): Promise<number> {
    if (this.closed) throw new OrdererError("closed", "the orderer is closed");
    if (proposer !== this.options.key.keyId) {
      throw new OrdererError("bad-proposer", "an etcd orderer proposes batches under its own node key only");
    }
    let sealed: ReturnType<typeof sealBatch>;
    const sealedTime = Math.floor(this.clock());
    try {
      sealed = sealBatch(this.options.key, sealedTime, txs, this.maxBatchBytes, {
        compress: this.options.compressBatches ?? true,
      });
    } catch (error) {
      // The node cuts batches by count; big txs can make one too large for etcd. Ordered as consecutive halves,
      // in order, so the node need not know envelope sizes. A single tx over the limit is refused.
      if (!(error instanceof OrdererError) || error.code !== "too-large" || txs.length < 2) throw error;
      const half = Math.ceil(txs.length / 2);
      await this.submit(proposer, txs.slice(0, half));
      return this.submit(proposer, txs.slice(half));
    }
    this.sealedHere.set(sealed.id, { value: sealed.value, time: sealedTime, txs });
    if (this.sealedHere.size > SEALED_REMEMBERED) this.sealedHere.delete(this.sealedHere.keys().next().value as string);
    const revision = await this.put(sealed.id, sealed.value);
    this.counters.submitted++;
    return this.seqAt(revision);
  }

  /** Creates `b/<id>` once; a retry that finds it there (an earlier attempt got through) is a success. */
  private async put(id: string, value: Buffer): Promise<number> {
    const key = Buffer.concat([this.batchPrefix, Buffer.from(id)]);
    // A tiny marker written with the batch outlives it: the compactor deletes `b/` keys as soon as every node has
    // applied them, and a retry still under way must then find the marker, not create the batch a second time.
    const marker = Buffer.from(`${this.prefix}s/${id}`);
    const deadline = Date.now() + this.submitTimeoutMs;
    let last = "no attempt was made";
    let backoff = 25;
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new OrdererError("closed", "the orderer is closed");
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      if (attempt > 0) this.counters.submitRetries++;
      try {
        const res = await this.client.kv.txn(
          {
            compare: [
              { key, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 },
              { key: marker, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 },
            ],
            success: [{ request_put: { key, value } }, { request_put: { key: marker, value: Buffer.alloc(0) } }],
            failure: [{ request_range: { key, keys_only: true } }, { request_range: { key: marker, keys_only: true } }],
          },
          { deadline: Date.now() + Math.min(remaining, 3000) },
        );
        if (res.succeeded) return Number(res.header.revision);
        const existing = res.responses[1]?.response_range?.kvs?.[0] ?? res.responses[0]?.response_range?.kvs?.[0];
        if (existing) return Number(existing.create_revision);
        last = "the batch key vanished between compare and read";
      } catch (error) {
        if (this.closed) throw new OrdererError("closed", "the orderer is closed");
        last = describe(error);
        if (isPermanent(error)) throw new OrdererError("refused", `etcd refused the batch: ${last}`);
      }
      const pause = Math.min(backoff, deadline - Date.now());
      if (pause > 0) await new Promise((r) => setTimeout(r, pause));
      backoff = Math.min(backoff * 2, 500);
    }
    throw new OrdererError("unavailable", `etcd did not accept the batch within ${this.submitTimeoutMs} ms: ${last}`);
  }

  /** The seq delivery gave (or will give) the create at `revision`; 0 when this orderer will not know. */
  private seqAt(revision: number): Promise<number> | number {
    const sub = this.sub;
    if (!sub?.active) return 0;
    if (revision <= sub.revision) {
      const outcome = this.recentOutcomes.get(revision) ?? this.cursor.atRevision(revision)?.seq;
      if (typeof outcome === "string") throw this.refusal(outcome);
      return outcome ?? 0;
    }
    return new Promise<number>((resolve, reject) => {
      const list = this.waiters.get(revision);
      if (list) list.push({ resolve, reject });
      else this.waiters.set(revision, [{ resolve, reject }]);
    });
  }

  private refusal(reason: string): OrdererError {
    return new OrdererError("refused", `etcd ordered the batch but delivery passed over it (${reason})`);
  }

  subscribe(fromSeq: number, onBatch: BatchHandler, onError: (error: unknown) => void = defaultOnError): () => void {
    if (!Number.isSafeInteger(fromSeq) || fromSeq < 1) {
      throw new OrdererError("bad-seq", `fromSeq must be ≥ 1, got ${fromSeq}`);
    }
    if (this.closed) throw new OrdererError("closed", "the orderer is closed");
    if (this.sub?.active) throw new OrdererError("busy", "an etcd orderer delivers to one subscriber at a time");
    const sub: Subscription = {
      fromSeq,
      onBatch,
      onError,
      active: true,
      running: false,
      seq: 0,
      time: 0,
      revision: 0,
      queue: [],
      queuedBytes: 0,
      watch: undefined,
      pendingError: undefined,
    };
    this.sub = sub;
    queueMicrotask(() => this.startDelivery(sub));
    return () => this.endSubscription(sub);
  }

  private startDelivery(sub: Subscription): void {
    if (!sub.active || this.closed) return;
    const base: CursorRow | undefined =
      sub.fromSeq === 1 ? { seq: 0, revision: this.startRevision, time: 0 } : this.cursor.get(sub.fromSeq - 1);
    if (!base) {
      this.failSubscription(
        sub,
        new OrdererError(
          "unknown-position",
          `this node's cursor does not know where batch ${sub.fromSeq - 1} sits in etcd (it knows up to batch ` +
            `${this.cursor.last()?.seq ?? 0}); catch up from a peer and call resumeAfter`,
        ),
      );
      return;
    }
    sub.seq = base.seq;
    sub.time = base.time;
    sub.revision = base.revision;
    this.appliedRevision = base.revision;
    this.appliedSeenLastTick = base.revision;
    void this.publishApplied(true);
    sub.watch = new BatchWatch(this.client, {
      key: this.batchPrefix,
      rangeEnd: this.batchRangeEnd,
      startRevision: base.revision + 1,
      stallMs: this.options.watchStallMs,
      onEvents: (events) => {
        if (!sub.active) return;
        for (const ev of events) {
          sub.queue.push(ev);
          sub.queuedBytes += ev.value.byteLength;
        }
        if (sub.queuedBytes > QUEUE_HIGH_BYTES) sub.watch?.pause();
        void this.pump(sub);
      },
      onCompacted: (compactRevision) => {
        // Whatever was received before still goes out first.
        sub.pendingError = new OrdererError(
          "compacted",
          `etcd has compacted its history up to revision ${compactRevision}, past this node's position ` +
            `(batch ${sub.seq}, revision ${sub.revision}); catch up from a peer and call resumeAfter`,
        );
        void this.pump(sub);
      },
      onDisconnected: (reason) => {
        this.counters.watchReconnects++;
        this.log.warn({ reason }, "etcd watch interrupted; resuming where it stopped");
      },
    });
  }

  private async pump(sub: Subscription): Promise<void> {
    if (sub.running || !sub.active) return;
    sub.running = true;
    try {
      while (sub.active && !this.closed) {
        const ev = sub.queue.shift();
        if (!ev) {
          if (sub.pendingError) throw sub.pendingError;
          break;
        }
        sub.queuedBytes -= ev.value.byteLength;
        if (sub.queuedBytes < QUEUE_LOW_BYTES) sub.watch?.resume();
        await this.deliver(sub, ev);
      }
    } catch (error) {
      this.failSubscription(sub, error);
    } finally {
      sub.running = false;
    }
    if (sub.active && !this.closed && (sub.queue.length > 0 || sub.pendingError)) void this.pump(sub);
  }

  /** The delivery filter. Every branch depends only on the event and on state every node shares. */
  private judge(ev: WatchEvent): OpenResult {
    if (!ev.put) return { ok: false, reason: "delete" };
    if (ev.version !== 1) return { ok: false, reason: "not-a-create" };
    if (
      ev.key.length <= this.batchPrefix.length ||
      !ev.key.subarray(0, this.batchPrefix.length).equals(this.batchPrefix)
    ) {
      return { ok: false, reason: "bad-key" };
    }
    const id = ev.key.subarray(this.batchPrefix.length).toString("latin1");
    const own = this.sealedHere.get(id);
    if (own !== undefined) this.sealedHere.delete(id);
    const opened: OpenResult = own?.value.equals(ev.value)
      ? {
          ok: true,
          batch: { id, proposer: this.options.key.keyId, time: own.time, txs: own.txs, parsed: [] },
        }
      : openBatch(id, ev.value, this.maxBatchBytes);
    if (!opened.ok) return opened;
    const accept = this.options.acceptProposer;
    if (accept && !accept(opened.batch.proposer)) return { ok: false, reason: "proposer-refused" };
    return opened;
  }

  private async deliver(sub: Subscription, ev: WatchEvent): Promise<void> {
    if (ev.revision <= sub.revision) {
      // Only the first event of a revision counts: a cursor row names a revision, so a restart resumes after it.
      this.skip(ev, "same-revision");
      return;
    }
    sub.revision = ev.revision;
    const verdict = this.judge(ev);
    if (!verdict.ok) {
      this.skip(ev, verdict.reason);
      this.settle(ev.revision, verdict.reason);
      return;
    }
    const seq = sub.seq + 1;
    const time = Math.max(sub.time, verdict.batch.time);
    // Recorded before the handler runs: the cursor is never behind the node's store (a lost block is re-delivered).
    const replaced = this.cursor.record({ seq, revision: ev.revision, time });
    if (replaced) {
      this.log.warn(
        { seq, revision: ev.revision, before: replaced.revision },
        "the cursor held another position for this batch: delivery differed from an earlier run",
      );
    }
    sub.seq = seq;
    sub.time = time;
    if (seq > this.lastKnownSeq) this.lastKnownSeq = seq;
    this.settle(ev.revision, seq);
    const batch: Batch = { seq, time, proposer: verdict.batch.proposer, txs: verdict.batch.txs };
    if (verdict.batch.parsed.length > 0) batch.parsed = verdict.batch.parsed;
    if (this.cursor.sharesStoreLog) {
      // The row is in the store's WAL ahead of the block: the block's flush covers it.
      await sub.onBatch(batch);
    } else {
      const flushed = this.cursor.durable();
      await Promise.all([sub.onBatch(batch), flushed]);
    }
    this.counters.delivered++;
    if (sub.active) this.appliedRevision = ev.revision;
  }

  private skip(ev: WatchEvent, reason: string): void {
    this.counters.skipped[reason] = (this.counters.skipped[reason] ?? 0) + 1;
    this.log.warn({ revision: ev.revision, reason }, "skipping an etcd event that is not a valid new batch");
  }

  private settle(revision: number, outcome: number | string): void {
    this.recentOutcomes.set(revision, outcome);
    if (this.recentOutcomes.size > RECENT_OUTCOMES) {
      const oldest = this.recentOutcomes.keys().next();
      if (!oldest.done) this.recentOutcomes.delete(oldest.value);
    }
    const list = this.waiters.get(revision);
    if (!list) return;
    this.waiters.delete(revision);
    for (const waiter of list) {
      if (typeof outcome === "number") waiter.resolve(outcome);
      else waiter.reject(this.refusal(outcome));
    }
  }

  private failSubscription(sub: Subscription, error: unknown): void {
    if (!sub.active) return;
    this.endSubscription(sub);
    sub.onError(error);
  }

  private endSubscription(sub: Subscription): void {
    if (!sub.active) return;
    sub.active = false;
    sub.watch?.stop();
    sub.queue = [];
    sub.queuedBytes = 0;
    if (this.sub === sub) {
      // Not delivering, so not holding compaction back either (a node that must catch up elsewhere would block it).
      void this.dropApplied();
      // Ordered all the same; this orderer just will not learn their seqs.
      for (const list of this.waiters.values()) for (const waiter of list) waiter.resolve(0);
      this.waiters.clear();
    }
  }

  /** Highest seq delivered here or recorded in the cursor (0 when none). */
  lastSeq(): number {
    return this.lastKnownSeq;
  }

  /** Where batch `seq` sits in etcd, as this node delivered it (for peers catching up from this node). */
  positionOf(seq: number): { revision: number; time: number } | undefined {
    const row = this.cursor.get(seq);
    return row ? { revision: row.revision, time: row.time } : undefined;
  }

  /**
   * After the node caught up from a peer to batch `seq` (which sits at etcd `revision`, delivered with `time`):
   * the next `subscribe(seq + 1, …)` continues from `revision + 1`. Rows above `seq` are dropped.
   */
  resumeAfter(seq: number, revision: number, time: number): void {
    for (const [name, n] of [
      ["seq", seq],
      ["revision", revision],
      ["time", time],
    ] as const) {
      if (!Number.isSafeInteger(n) || n < 0)
        throw new OrdererError("bad-position", `${name} must be a safe integer ≥ 0`);
    }
    if (this.sub?.active) throw new OrdererError("busy", "resumeAfter needs the subscription stopped first");
    this.cursor.resetTo({ seq, revision, time });
    this.lastKnownSeq = seq;
  }

  stats(): EtcdOrdererStats {
    return { ...this.counters, skipped: { ...this.counters.skipped } };
  }

  /** What this node's compactor did (it acts only while it holds the smallest live key id). */
  compactorStats(): CompactorStats | undefined {
    return this.compactor ? { ...this.compactor.stats } : undefined;
  }

  /** Runs a compaction round now (tests, operators); resolves when it is done. */
  compactNow(): Promise<void> {
    return this.compactor?.tick() ?? Promise.resolve();
  }

  /** Publishes `applied/<keyId>` under this node's lease (granted again if it was lost). */
  private async publishApplied(now: boolean): Promise<void> {
    if (this.closed || this.publishing || !this.sub?.active) return;
    const value = now ? this.appliedRevision : this.appliedSeenLastTick;
    this.appliedSeenLastTick = this.appliedRevision;
    if (value === undefined || value === this.publishedRevision) return;
    this.publishing = true;
    try {
      const sub = this.sub;
      const lease = await this.lease.lease();
      // Delivery stopped meanwhile: no entry may hold compaction back for it.
      if (this.closed || !sub?.active || this.sub !== sub) return;
      await this.client.kv.put(
        { key: Buffer.from(this.appliedKey), value: Buffer.from(String(value)), lease },
        { deadline: Date.now() + 5000 },
      );
      this.publishedRevision = value;
      if (!sub.active) void this.lease.revoke();
    } catch (error) {
      if (!this.closed) this.log.warn({ err: describe(error) }, "could not publish the applied revision to etcd");
    } finally {
      this.publishing = false;
    }
  }

  private dropApplied(): Promise<void> {
    this.publishedRevision = undefined;
    this.appliedRevision = undefined;
    this.appliedSeenLastTick = undefined;
    return this.lease.revoke();
  }

  /** Stops delivery, the compactor, revokes the lease (this node no longer holds compaction back) and disconnects. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.sub) this.endSubscription(this.sub);
    this.closed = true;
    clearInterval(this.publishTimer);
    await this.compactor?.stop();
    await this.lease.close();
    this.client.close();
    this.cursor.close();
  }

  /** The key prefix this orderer works under. */
  get keyPrefix(): string {
    return this.prefix;
  }
}
