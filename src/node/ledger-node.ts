import { EventEmitter } from "node:events";
import { type Decision, type DecisionRequest, decide } from "../contract/index.ts";
import { blockHash, GENESIS_PREV_HASH, INITIAL_STATE_DIGEST, leafHash, storedBlockProblem } from "../ledger/block.ts";
import { bytesEqual, toHex } from "../ledger/encoding.ts";
import type { KeyPair } from "../ledger/keys.ts";
import { type Frontier, frontierRoot } from "../ledger/merkle.ts";
import { signTreeHead } from "../ledger/sth.ts";
import { parseSignedTx, txId, verifyTxSignature } from "../ledger/tx.ts";
import type { Block, BlockEntry, BlockHeader, Hex32, SignedTreeHead, SignedTx } from "../ledger/types.ts";
import type { Batch, Orderer } from "../ordering/orderer.ts";
import type { LedgerStore, StoredTx } from "../store/ledger-store.ts";
import { type BlockInput, type BuiltBlock, buildBlock } from "./block-builder.ts";
import { NodeError } from "./errors.ts";
import type { Logger } from "./logger.ts";
import { Metrics } from "./metrics.ts";
import type { BatchRelay } from "./relay.ts";
import type { VerifyPool } from "./verify-pool.ts";

/**
 * The id of a tx parsed at intake, kept on the tx object itself: an in-process orderer hands the same objects back,
 * so they need no re-parse. A symbol key is invisible to JSON and canonical JSON and cannot arrive from outside (JSON
 * and structured clones carry no symbol keys). Not a WeakMap: a WeakMap entry per tx made V8's full collections
 * process hundreds of thousands of ephemerons after a burst (45 of a 58 ms pause at 5,000 tx/s).
 */
const INTAKE_ID: unique symbol = Symbol("careledger.intakeId");
type IntakeTagged = { [INTAKE_ID]?: Hex32 };

/** A delivered batch whose orderer time is within this of now is live traffic, not a catch-up (ms). */
const LIVE_BATCH_MS = 2000;

/** Batches handed to the orderer and not yet ordered; more txs than this waits and joins the next, larger batch. */
const MAX_BATCHES_IN_FLIGHT = 2;

/**
 * Only batches smaller than this go to the batching relay. A forward costs both ends ~1 ms of CPU (HTTPS, JSON, the
 * relay's intake parse), a block ~3–5 ms over etcd and the nodes; a batch this large is already a block worth its
 * cost, and forwarding it would only add the hop (measured: 100-tx requests gained nothing from the relay).
 */
export const FORWARD_BELOW_TXS = 64;

export interface NodeOptions {
  store: LedgerStore;
  orderer: Orderer;
  key: KeyPair;
  pool: VerifyPool;
  log: Logger;
  /** Cut a batch when this many txs are waiting. */
  batchMaxTxs: number;
  /** …or when the oldest waiting tx has waited this long (ms). */
  batchMaxWaitMs: number;
  /** Refuse new txs (503) while this many are waiting to commit: back-pressure instead of unbounded memory. */
  maxPendingTxs: number;
  /**
   * Called when the orderer's delivery fails (e.g. etcd compacted what this node still needed). Resolves true once
   * the node is back in step (it caught up from a peer) and delivery should resume; false halts the node.
   */
  recover?: (error: unknown, signal: AbortSignal) => Promise<boolean>;
  /** Where this node's batches go on a network with a batching relay (see relay.ts); without one it orders them. */
  relay?: BatchRelay;
}

/** What a client is told about its tx once the block holding it is durable. */
export interface CommitResult {
  id: Hex32;
  height: number;
  index: number;
  valid: boolean;
  code: string;
}

export { NodeError };

interface Waiter {
  resolve: (result: CommitResult) => void;
  reject: (error: Error) => void;
}

/**
 * A peer: takes txs in, has them ordered, then — for every ordered batch, its own or another node's — checks
 * signatures, applies the contract, extends the Merkle log and stores the block before telling anyone it committed.
 */
export class LedgerNode extends EventEmitter {
  readonly store: LedgerStore;
  readonly key: KeyPair;
  readonly metrics = new Metrics();
  private readonly orderer: Orderer;
  private readonly pool: VerifyPool;
  private readonly log: Logger;
  private readonly options: NodeOptions;
  private frontier: Frontier;
  private queue: SignedTx[] = [];
  private queueIds: Hex32[] = [];
  private queueTimer: NodeJS.Timeout | undefined;
  private readonly waiters = new Map<Hex32, Waiter[]>();
  /**
   * Txs this node signature-checked at intake and has not yet seen committed, id → the signature it checked. The
   * check is skipped on delivery only for that exact signature: the id does not cover `sig`, and an orderer could
   * hand the tx back with another one.
   */
  private readonly checkedHere = new Map<Hex32, string>();
  private unsubscribe: (() => void) | undefined;
  private haltReason: string | undefined;
  private inflight = 0;
  private batchesInFlight = 0;
  private cutSoon = false;
  /** The relay holds its queue until this timer fires (or the queue fills a batch), even when a batch comes back. */
  private holding = false;
  private lastCutAt = -Infinity;
  /** Txs forwarded to the relay and not yet seen committed, id → when (oldest first: a Map keeps insertion order). */
  private readonly forwarded = new Map<Hex32, { tx: SignedTx; at: number }>();
  private forwardSweep: NodeJS.Timeout | undefined;
  /** Highest block known to be on disk. */
  private durableHeight = -1;
  private closing = false;
  /** Set when the store itself failed its audit: its state is not served either. */
  private readsRefused = false;

  constructor(options: NodeOptions) {
    super();
    this.options = options;
    this.store = options.store;
    this.orderer = options.orderer;
    this.key = options.key;
    this.pool = options.pool;
    this.log = options.log;
    this.frontier = this.store.frontier();
    // Opening the store flushed its WAL: everything in it is on disk.
    this.durableHeight = this.store.head()?.height ?? -1;
  }

  get height(): number {
    return this.store.head()?.height ?? -1;
  }

  /** Why the node refuses writes, if it does. */
  get halted(): string | undefined {
    return this.haltReason;
  }

  /** Stops accepting writes and says why (corrupt store, fork, internal fault). Reads keep working. */
  halt(reason: string, options: { refuseReads?: boolean } = {}): void {
    if (options.refuseReads) this.readsRefused = true;
    if (this.haltReason) return;
    this.haltReason = reason;
    this.metrics.set("careledger_halted", 1);
    this.log.error({ reason }, "node halted: refusing writes");
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    const error = new NodeError("halted", 503, `node halted: ${reason}`);
    for (const list of this.waiters.values()) for (const w of list) w.reject(error);
    this.waiters.clear();
    this.emit("halt", reason);
  }

  /** Applies the genesis block (height 0) to an empty store, checking it rebuilds to exactly the given block. */
  applyGenesis(genesis: Block): void {
    if (this.store.head()) throw new NodeError("not-empty", 409, "the store already holds a ledger");
    if (genesis.height !== 0) throw new NodeError("bad-genesis", 400, "the genesis block must have height 0");
    for (const entry of genesis.txs) {
      if (!verifyTxSignature(entry.tx, txId(entry.tx))) {
        throw new NodeError("bad-genesis", 400, `genesis tx ${entry.id} has an invalid signature`);
      }
    }
    const rebuilt = this.buildNext({
      height: 0,
      time: genesis.time,
      proposer: genesis.proposer,
      txs: genesis.txs.map((e) => ({ tx: e.tx, id: txId(e.tx), sigOk: true })),
    });
    const expectedHash = blockHash(genesis);
    if (rebuilt.hash !== expectedHash) {
      this.store.state.discard();
      throw new NodeError("bad-genesis", 400, "the genesis file does not rebuild to the block it claims");
    }
    const invalid = rebuilt.block.txs.find((e) => !e.result.valid);
    if (invalid) {
      this.store.state.discard();
      throw new NodeError("bad-genesis", 400, `genesis tx ${invalid.id} is invalid (${invalid.result.code})`);
    }
    this.persist(rebuilt);
  }

  /** Starts following the orderer from the block after the stored head. */
  start(): void {
    if (!this.store.head()) throw new NodeError("no-genesis", 500, "the store has no genesis block");
    this.metrics.set("careledger_height", this.height);
    this.subscribe();
  }

  private subscribe(): void {
    this.unsubscribe = this.orderer.subscribe(
      this.height + 1,
      (batch) => this.onBatch(batch),
      (error) => this.onDeliveryError(error),
    );
  }

  /** A recovery under way (catching up from peers), and how `close` stops it. */
  private recovery: { done: Promise<void>; abort: AbortController } | undefined;

  private onDeliveryError(error: unknown): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    const recover = this.options.recover;
    if (this.recovery || this.haltReason || this.closing) return;
    if (!recover) {
      this.halt(`applying ordered batches failed: ${(error as Error).message}`);
      return;
    }
    this.log.warn({ err: (error as Error).message }, "ordered batches stopped coming; recovering");
    const abort = new AbortController();
    const done = recover(error, abort.signal).then(
      (ok) => {
        this.recovery = undefined;
        if (this.haltReason || this.closing) return;
        if (ok) this.subscribe();
        else this.halt(`applying ordered batches failed: ${(error as Error).message}`);
      },
      (failure: Error) => {
        this.recovery = undefined;
        // Stopped because the node is closing: not a fault.
        if (this.closing) return;
        this.halt(`recovering from "${(error as Error).message}" failed: ${failure.message}`);
      },
    );
    this.recovery = { done, abort };
  }

  /**
   * Applies a block fetched from a peer, for a node catching up past what the orderer still holds. Nothing of the
   * peer is trusted: every tx's signature is checked here and the block is rebuilt by this node's own contract; it
   * is stored only if it rebuilds to exactly the peer's block (same txs, results, state digest, Merkle root).
   */
  async applyPeerBlock(block: Block): Promise<void> {
    if (this.haltReason) throw new NodeError("halted", 503, `node halted: ${this.haltReason}`);
    if (this.closing) throw new NodeError("closing", 503, "the node is shutting down");
    const height = this.height + 1;
    if (block?.height !== height || !Array.isArray(block.txs)) {
      throw new NodeError("bad-peer-block", 502, `a peer sent block ${block?.height} where ${height} comes next`);
    }
    const items: { tx: SignedTx; id: Hex32 }[] = [];
    for (const entry of block.txs) {
      const parsed = parseSignedTx(entry?.tx);
      if (!parsed.ok) throw new NodeError("bad-peer-block", 502, `block ${height} from a peer holds a malformed tx`);
      items.push({ tx: parsed.tx, id: parsed.id });
    }
    // Catching up from a peer: throughput work, for the workers.
    const ok = await this.pool.verify(items, { inline: false });
    if (ok.includes(false)) {
      throw new NodeError("bad-peer-block", 502, `block ${height} from a peer holds a tx whose signature fails`);
    }
    if (this.closing) throw new NodeError("closing", 503, "the node is shutting down");
    if (this.height + 1 !== height) throw new NodeError("bad-peer-block", 409, `block ${height} was applied meanwhile`);
    const built = this.buildNext({
      height,
      time: block.time,
      proposer: block.proposer,
      txs: items.map((item) => ({ ...item, sigOk: true })),
    });
    if (built.hash !== blockHash(block) || built.block.txs.length !== block.txs.length) {
      this.store.state.discard();
      throw new NodeError("bad-peer-block", 502, `block ${height} from a peer does not rebuild to the same block here`);
    }
    this.persist(built);
  }

  /**
   * Takes txs that already passed envelope validation. Returns, per tx, a promise of its commit result. Txs already
   * in the ledger resolve at once with their stored result (resubmission is idempotent).
   */
  async submit(items: { tx: SignedTx; id: Hex32 }[]): Promise<Promise<CommitResult>[]> {
    if (this.haltReason) throw new NodeError("halted", 503, `node halted: ${this.haltReason}`);
    if (this.closing) throw new NodeError("closing", 503, "the node is shutting down");
    if (this.inflight + items.length > this.options.maxPendingTxs) {
      this.metrics.inc("careledger_tx_refused_busy_total", items.length);
      throw new NodeError("busy", 503, "too many txs waiting to commit; retry shortly");
    }
    const fresh: { tx: SignedTx; id: Hex32 }[] = [];
    const answers: Promise<CommitResult>[] = [];
    const slots: number[] = [];
    for (const item of items) {
      const stored = this.store.hasTx(item.id) ? this.store.getTx(item.id) : undefined;
      if (stored) {
        const result = { id: item.id, height: stored.height, index: stored.index, ...stored.entry.result };
        // Applied but maybe not yet on disk: answer once it is, as for a fresh tx.
        answers.push(
          stored.height <= this.durableHeight ? Promise.resolve(result) : this.store.durable().then(() => result),
        );
      } else {
        slots.push(answers.length);
        answers.push(Promise.resolve(undefined as unknown as CommitResult));
        fresh.push(item);
      }
    }
    if (fresh.length === 0) return answers;
    this.inflight += fresh.length;
    let ok: boolean[];
    try {
      const verifying = performance.now();
      ok = await this.pool.verify(fresh);
      this.metrics.observe("careledger_intake_verify_ms", performance.now() - verifying);
    } catch (error) {
      this.inflight -= fresh.length;
      throw error;
    }
    const bad = ok.indexOf(false);
    if (bad >= 0) {
      this.inflight -= fresh.length;
      this.metrics.inc("careledger_tx_bad_signature_total");
      throw new NodeError(
        "bad-signature",
        400,
        `tx ${fresh[bad]?.id} has an invalid signature (signer ${fresh[bad]?.tx.signer})${fresh.length > 1 ? `; it is item ${slots[bad]} of the batch, and no tx of the batch was accepted` : ""}`,
      );
    }
    if (this.haltReason) {
      this.inflight -= fresh.length;
      throw new NodeError("halted", 503, `node halted: ${this.haltReason}`);
    }
    fresh.forEach((item, i) => {
      answers[slots[i] as number] = this.enqueue(item.tx, item.id);
    });
    return answers;
  }

  private enqueue(tx: SignedTx, id: Hex32): Promise<CommitResult> {
    const promise = new Promise<CommitResult>((resolve, reject) => {
      const list = this.waiters.get(id);
      if (list) {
        // Already waiting: the same tx submitted twice before it committed. Order it once.
        list.push({ resolve, reject });
        this.inflight--;
        return;
      }
      this.waiters.set(id, [{ resolve, reject }]);
      this.checkedHere.set(id, tx.sig);
      (tx as IntakeTagged)[INTAKE_ID] = id;
      this.queue.push(tx);
      this.queueIds.push(id);
    });
    if (this.queue.length >= this.options.batchMaxTxs) this.cut();
    else if (this.holding) {
      // The relay's queue is gathering txs for one batch.
    } else if (this.relayShouldHold()) {
      this.holding = true;
      if (this.queueTimer) clearTimeout(this.queueTimer);
      this.queueTimer = setTimeout(() => this.cut(), this.options.relay?.holdMs);
    } else if (this.batchesInFlight === 0 && !this.cutSoon) {
      // Nothing is being ordered: waiting for company would only add latency. Cut once the caller's whole request
      // is queued (a microtask), so one request's txs still share a batch.
      this.cutSoon = true;
      queueMicrotask(() => {
        this.cutSoon = false;
        this.cut();
      });
    } else if (!this.queueTimer && !this.cutSoon && this.queue.length > 0) {
      this.queueTimer = setTimeout(() => this.cut(), this.options.batchMaxWaitMs);
    }
    return promise;
  }

  /**
   * Hands queued txs to the orderer, at most `batchMaxTxs` a batch and at most MAX_BATCHES_IN_FLIGHT batches not yet
   * ordered. Under load the queue grows while earlier batches are ordered, so batches grow with the load and the
   * per-block costs (a flush, a tree-head signature, a transaction) are shared by more txs.
   */
  private cut(): void {
    if (this.queueTimer) {
      clearTimeout(this.queueTimer);
      this.queueTimer = undefined;
    }
    this.holding = false;
    while (this.queue.length > 0 && this.batchesInFlight < MAX_BATCHES_IN_FLIGHT) {
      const txs = this.queue.splice(0, this.options.batchMaxTxs);
      const ids = this.queueIds.splice(0, txs.length);
      this.batchesInFlight++;
      this.lastCutAt = performance.now();
      const sent =
        txs.length < FORWARD_BELOW_TXS && this.options.relay?.role() === "forward" && !this.closing
          ? this.forward(txs, ids)
          : this.order(txs, ids);
      sent.finally(() => {
        this.batchesInFlight--;
        if (this.queue.length > 0 && !this.holding) this.cut();
      });
    }
  }

  /** Has the orderer order txs; a refusal fails their waiters (clients may resubmit). */
  private order(txs: SignedTx[], ids: Hex32[]): Promise<void> {
    const ordering = performance.now();
    return this.orderer
      .submit(this.key.keyId, txs)
      .then(() => this.metrics.observe("careledger_batch_order_ms", performance.now() - ordering))
      .catch((error: Error) => {
        this.log.error({ err: error.message }, "the orderer refused a batch");
        const failure = new NodeError("ordering", 503, `could not order the batch: ${error.message}`);
        for (const id of ids) this.settle(id, undefined, failure);
      });
  }

  /** Hands txs to the batching relay; if it does not take them, orders them here. */
  private async forward(txs: SignedTx[], ids: Hex32[]): Promise<void> {
    const relay = this.options.relay as BatchRelay;
    try {
      await relay.forward(txs);
    } catch (error) {
      this.metrics.inc("careledger_relay_forward_failed_total");
      this.log.debug({ err: (error as Error).message }, "forward to the batching relay failed; ordering here");
      return this.order(txs, ids);
    }
    this.metrics.inc("careledger_relay_forwarded_txs_total", txs.length);
    const now = performance.now();
    txs.forEach((tx, i) => {
      const id = ids[i] as Hex32;
      // Committed (or failed) while the forward was answered: nothing left to watch.
      if (this.waiters.has(id)) this.forwarded.set(id, { tx, at: now });
    });
    if (!this.forwardSweep && this.forwarded.size > 0) {
      this.forwardSweep = setInterval(() => this.sweepForwarded(), Math.max(50, relay.commitDeadlineMs / 4));
      this.forwardSweep.unref();
    }
  }

  /** Forwarded txs not seen committed in time are ordered here (a tx ordered twice is skipped the second time). */
  private sweepForwarded(): void {
    const relay = this.options.relay as BatchRelay;
    const due = performance.now() - relay.commitDeadlineMs;
    const late: { tx: SignedTx; id: Hex32 }[] = [];
    for (const [id, entry] of this.forwarded) {
      if (entry.at > due) break;
      this.forwarded.delete(id);
      if (this.waiters.has(id)) late.push({ tx: entry.tx, id });
    }
    if (this.forwarded.size === 0 && this.forwardSweep) {
      clearInterval(this.forwardSweep);
      this.forwardSweep = undefined;
    }
    if (late.length === 0) return;
    this.metrics.inc("careledger_relay_late_txs_total", late.length);
    relay.passOver(`${late.length} forwarded txs not committed within ${relay.commitDeadlineMs} ms`);
    for (let i = 0; i < late.length; i += this.options.batchMaxTxs) {
      const part = late.slice(i, i + this.options.batchMaxTxs);
      void this.order(
        part.map((p) => p.tx),
        part.map((p) => p.id),
      );
    }
  }

  /**
   * The relay gathers while it is busy (a batch of its own being ordered, or one cut within the hold): idle, it
   * orders at once like any node, so a quiet network pays no hold.
   */
  private relayShouldHold(): boolean {
    const relay = this.options.relay;
    if (relay === undefined || this.closing || relay.role() !== "relay") return false;
    return this.batchesInFlight > 0 || performance.now() - this.lastCutAt < relay.holdMs;
  }

  private async onBatch(batch: Batch): Promise<void> {
    if (this.haltReason) return;
    const expected = this.height + 1;
    if (batch.seq < expected) {
      this.metrics.inc("careledger_batches_duplicate_total");
      this.log.warn({ seq: batch.seq, expected }, "ignoring a batch already applied");
      return;
    }
    if (batch.seq > expected) {
      throw new Error(`the orderer delivered batch ${batch.seq} but ${expected} comes next`);
    }
    const started = performance.now();
    const txs = Array.isArray(batch.txs) ? batch.txs : [];
    // Signatures of txs this node did not check at intake are checked now, off the main thread.
    const toCheck: { tx: SignedTx; id: Hex32; at: number }[] = [];
    const sigOk: boolean[] = new Array(txs.length).fill(true);
    const byOrderer = batch.parsed?.length === txs.length ? batch.parsed : undefined;
    const parsed = txs.map((raw, at) => {
      const known = typeof raw === "object" && raw !== null ? (raw as IntakeTagged)[INTAKE_ID] : undefined;
      const pre = byOrderer?.[at];
      const p: ReturnType<typeof parseSignedTx> = known
        ? { ok: true, tx: raw, id: known }
        : pre
          ? { ok: true, tx: pre.tx, id: pre.id }
          : parseSignedTx(raw);
      if (p.ok && this.checkedHere.get(p.id) !== p.tx.sig) toCheck.push({ tx: p.tx, id: p.id, at });
      return p;
    });
    if (toCheck.length > 0) {
      // A batch ordered just now is live traffic, checked where it is quickest (the pool may check a small job on this
      // thread); an old one is a catch-up, where throughput counts and the workers check in parallel.
      const live = Math.abs(Date.now() - batch.time) < LIVE_BATCH_MS;
      const ok = await this.pool.verify(toCheck, { inline: live });
      ok.forEach((good, i) => {
        sigOk[(toCheck[i] as { at: number }).at] = good;
      });
    }
    if (this.haltReason || batch.seq !== this.height + 1) return;
    const wellFormed: BlockInput["txs"] = [];
    parsed.forEach((p, at) => {
      if (p.ok) wellFormed.push({ tx: p.tx, id: p.id, sigOk: sigOk[at] as boolean });
      else {
        this.metrics.inc("careledger_tx_malformed_from_orderer_total");
        this.log.warn({ seq: batch.seq, at, error: p.error }, "dropping a malformed tx delivered by the orderer");
      }
    });
    const built = this.buildNext({ height: batch.seq, time: batch.time, proposer: batch.proposer, txs: wellFormed });
    this.persist(built);
    // A tx a client is waiting for that came back with a signature that does not verify was left out of the block.
    for (const item of wellFormed) {
      if (item.sigOk || this.store.hasTx(item.id)) continue;
      this.settle(
        item.id,
        undefined,
        new NodeError(
          "bad-signature",
          502,
          `the orderer delivered tx ${item.id} with a signature that does not verify; it was not committed`,
        ),
      );
    }
    this.metrics.observe("careledger_block_apply_ms", performance.now() - started);
  }

  private settle(id: Hex32, result: CommitResult | undefined, error?: Error): void {
    this.checkedHere.delete(id);
    this.forwarded.delete(id);
    const list = this.waiters.get(id);
    if (!list) return;
    this.waiters.delete(id);
    this.inflight--;
    for (const w of list) {
      if (result) w.resolve(result);
      else w.reject(error ?? new Error("not committed"));
    }
  }

  /** Builds the next block on top of the stored head; state writes stay pending until `persist`. */
  private buildNext(input: BlockInput): BuiltBlock {
    const head = this.store.head();
    const tip = {
      height: head?.height ?? -1,
      hash: head?.hash ?? GENESIS_PREV_HASH,
      stateDigest: head?.stateDigest ?? INITIAL_STATE_DIGEST,
      frontier: this.frontier,
    };
    try {
      const built = buildBlock(tip, input, this.store.state, {
        inLog: (id) => this.store.hasTx(id),
        nonceUsed: (signer, nonce) => this.store.nonceUsed(signer, nonce),
      });
      if (built.skipped > 0) this.metrics.inc("careledger_tx_duplicate_total", built.skipped);
      if (built.badSignatures > 0) {
        this.metrics.inc("careledger_tx_bad_signature_from_orderer_total", built.badSignatures);
        this.log.warn(
          { height: input.height, count: built.badSignatures },
          "left out txs whose signature does not verify",
        );
      }
      return built;
    } catch (error) {
      this.store.state.discard();
      throw error;
    }
  }

  private persist(built: BuiltBlock): void {
    const { block, hash, nodes, frontier } = built;
    const sth: SignedTreeHead = signTreeHead(
      {
        size: frontier.size,
        root: toHex(frontierRoot(frontier)),
        height: block.height,
        stateDigest: block.stateDigest,
        time: block.time,
      },
      this.key,
    );
    const writing = performance.now();
    this.store.commitBlock(block, hash, nodes, sth);
    this.metrics.observe("careledger_block_store_ms", performance.now() - writing);
    this.frontier = frontier;
    this.metrics.set("careledger_height", block.height);
    this.metrics.set("careledger_log_size", frontier.size);
    this.metrics.inc("careledger_blocks_total");
    const firstIndex = block.size - block.txs.length;
    for (const entry of block.txs) {
      this.metrics.inc(
        entry.result.valid ? "careledger_tx_committed_valid_total" : "careledger_tx_committed_invalid_total",
      );
    }
    // Clients hear of their txs only once the block is on disk; meanwhile the next batches are applied.
    const flushing = performance.now();
    this.store.durable().then(
      () => {
        this.metrics.observe("careledger_block_durable_wait_ms", performance.now() - flushing);
        this.durableHeight = Math.max(this.durableHeight, block.height);
        block.txs.forEach((entry, pos) => {
          this.settle(entry.id, { id: entry.id, height: block.height, index: firstIndex + pos, ...entry.result });
        });
      },
      (error: Error) => this.halt(`block ${block.height} could not be made durable: ${error.message}`),
    );
    this.emit("block", block, hash);
  }

  /**
   * Block `height` as stored, checked before it is served: its txs against their ids and the header's txRoot, the
   * header against its hash and its link to the block before. A block altered behind the node's back halts the node
   * (writes refused) and is not served.
   */
  readBlock(height: number): { hash: Hex32; header: string; txs: string } | undefined {
    this.assertReadable();
    const row = this.store.blockRow(height);
    if (!row) return undefined;
    const block = { ...(JSON.parse(row.header) as BlockHeader), txs: JSON.parse(row.txs) as BlockEntry[] };
    // A missing block before this one cannot be linked to: "" never equals a prevHash.
    const prevHash = height > 0 ? (this.store.blockRow(height - 1)?.hash ?? "") : undefined;
    const problem = storedBlockProblem(block, row.hash, prevHash);
    if (problem) this.integrityFailure(`block ${height} in the store was altered: ${problem}`);
    return row;
  }

  /** A tx with its position, checked against its id and the stored Merkle leaf before it is served. */
  readTx(id: Hex32): StoredTx | undefined {
    this.assertReadable();
    let stored: StoredTx | undefined;
    try {
      stored = this.store.getTx(id);
    } catch (error) {
      this.integrityFailure(`the tx index entry for ${id} is wrong: ${(error as Error).message}`);
    }
    if (!stored) return undefined;
    const { entry } = stored;
    let problem: string | undefined;
    if (txId(entry.tx) !== id) problem = "its content does not hash to its id";
    else if (!bytesEqual(leafHash(entry), this.store.node(0, stored.index))) {
      problem = "it does not match its Merkle leaf";
    }
    if (problem) this.integrityFailure(`tx ${id} in the store was altered: ${problem}`);
    return stored;
  }

  private integrityFailure(message: string): never {
    this.metrics.inc("careledger_integrity_failures_total");
    this.halt(`${message}; run careledger verify`, { refuseReads: true });
    throw new NodeError("integrity", 500, `${message}; the node refuses writes until its store is repaired`);
  }

  /** Throws when the node's store failed its audit: state it would answer from does not replay. */
  assertReadable(): void {
    if (this.readsRefused) throw new NodeError("integrity", 503, `node halted: ${this.haltReason}`);
  }

  decide(request: DecisionRequest): Decision {
    this.assertReadable();
    return decide(this.store.state, request);
  }

  /**
   * Stops taking part. Txs already accepted are ordered and, within `drainMs`, committed and answered; whatever is
   * still waiting after that is failed (clients may resubmit: submission is idempotent). Nothing is half-written.
   */
  async close(drainMs = 5000): Promise<void> {
    this.closing = true;
    const recovery = this.recovery;
    recovery?.abort.abort();
    await recovery?.done;
    this.cut();
    const deadline = Date.now() + drainMs;
    while (this.waiters.size > 0 && !this.haltReason && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    if (this.forwardSweep) clearInterval(this.forwardSweep);
    this.forwardSweep = undefined;
    this.forwarded.clear();
    const error = new NodeError("closing", 503, "the node is shutting down");
    for (const list of this.waiters.values()) for (const w of list) w.reject(error);
    this.waiters.clear();
  }
}
