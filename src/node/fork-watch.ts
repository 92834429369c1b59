import { readState } from "../contract/index.ts";
import { toHex } from "../ledger/encoding.ts";
import { subtreeRoot } from "../ledger/merkle.ts";
import { verifyTreeHead } from "../ledger/sth.ts";
import type { KeyId, SignedTreeHead } from "../ledger/types.ts";
import type { HeadBoard } from "./head-board.ts";
import type { LedgerNode } from "./ledger-node.ts";
import type { Logger } from "./logger.ts";

export interface ForkWatchOptions {
  node: LedgerNode;
  board: HeadBoard;
  log: Logger;
  /**
   * Publish the node's head at most this often (ms; default 1000); always the newest head. Each publish is an etcd
   * put — a raft round with a WAL fsync on every member; at 250 ms a 3-node network's heads were a quarter of etcd's
   * writes at the benchmark's goal rate. A fork is still seen within about a second.
   */
  publishEveryMs?: number;
  /**
   * …and at most once per this many ms for every node whose heads this one checks (itself included), so the
   * network's heads stay near 1000 / publishPerNodeMs puts a second into the board however many nodes it has
   * (default 50: 20 a second — a 3-node network publishes every second, a 1,000-node one every 50 s).
   */
  publishPerNodeMs?: number;
}

/** What this node knows of one peer's heads. */
interface PeerView {
  org: string;
  /** The largest (latest) head seen from the peer: its next heads must extend it. */
  newest: SignedTreeHead;
  /** A head for a log larger than ours, checked once ours reaches its size. */
  pending: SignedTreeHead | undefined;
}

/** Signers warned about, so heads signed by ever new keys cannot grow memory without bound. */
const MAX_WARNED_SIGNERS = 1000;
const PUBLISH_RETRY_MS = 1000;

const short = (hex: string) => `${hex.slice(0, 12)}…`;

/**
 * Checkpoints and fork detection. The node publishes its signed tree head on the board (after blocks, throttled) and
 * checks every other node's head against its own log: a registered node that signs a root this node's log does not
 * have at that size — or a head that does not extend the one it signed before — is a fork. The node then halts:
 * writes refused, reads served, `/healthz` says why, `careledger_fork_alarm` is 1.
 *
 * Heads from keys that are not active node keys of active organisations in this node's state are ignored: a stranger
 * with write access to the board cannot raise alarms.
 */
export class ForkWatch {
  private readonly node: LedgerNode;
  private readonly board: HeadBoard;
  private readonly log: Logger;
  private readonly publishEveryMs: number;
  private readonly publishPerNodeMs: number;
  private readonly peers = new Map<KeyId, PeerView>();
  private readonly warnedSigners = new Set<KeyId>();
  private unsubscribe: (() => void) | undefined;
  private running = false;
  private alarmReason: string | undefined;

  private publishTimer: NodeJS.Timeout | undefined;
  private publishWanted = false;
  private publishing: Promise<void> | undefined;
  private lastPublishAt = Number.NEGATIVE_INFINITY;
  private publishedHeight = -1;
  private publishFailing = false;

  private readonly onBlock = () => {
    this.requestPublish();
    this.checkPending();
  };

  constructor(options: ForkWatchOptions) {
    this.node = options.node;
    this.board = options.board;
    this.log = options.log;
    this.publishEveryMs = options.publishEveryMs ?? 1000;
    this.publishPerNodeMs = options.publishPerNodeMs ?? 50;
  }

  /**
   * How long after a publish the next may go. Grows with the nodes heard from: each publish is an etcd put (~4 ms of
   * CPU over the members here) that every other node receives and checks. Only registered nodes' heads count.
   */
  get publishIntervalMs(): number {
    return Math.max(this.publishEveryMs, this.publishPerNodeMs * (this.peers.size + 1));
  }

  /** Why this watch halted the node, if it did. */
  get alarm(): string | undefined {
    return this.alarmReason;
  }

  /** The peers' latest accepted heads, and the head still waiting for this log to reach its size, if any. */
  peerHeads(): { signer: KeyId; org: string; size: number; root: string; pendingSize: number | undefined }[] {
    return [...this.peers].map(([signer, view]) => ({
      signer,
      org: view.org,
      size: view.newest.size,
      root: view.newest.root,
      pendingSize: view.pending?.size,
    }));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.node.metrics.set("careledger_fork_alarm", 0);
    this.node.on("block", this.onBlock);
    this.unsubscribe = this.board.subscribe((sth) => this.onHead(sth));
    this.requestPublish();
  }

  /** Stops publishing and checking; waits for a publish under way. Call before the node's store is closed. */
  async stop(): Promise<void> {
    this.running = false;
    this.node.off("block", this.onBlock);
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    if (this.publishTimer) clearTimeout(this.publishTimer);
    this.publishTimer = undefined;
    await this.publishing;
  }

  // ---- publishing -------------------------------------------------------------------------------------------------

  private requestPublish(): void {
    if (!this.running) return;
    this.publishWanted = true;
    if (this.publishTimer || this.publishing) return;
    const wait = this.lastPublishAt + this.publishIntervalMs - performance.now();
    if (wait > 0) this.publishTimer = setTimeout(() => this.publishNow(), wait);
    else this.publishNow();
  }

  private publishNow(): void {
    this.publishTimer = undefined;
    if (!this.running || !this.publishWanted) return;
    this.publishWanted = false;
    this.lastPublishAt = performance.now();
    this.publishing = this.publishLatest().finally(() => {
      this.publishing = undefined;
      if (this.publishWanted) this.requestPublish();
    });
  }

  private async publishLatest(): Promise<void> {
    try {
      const sth = this.node.store.latestTreeHead();
      if (!sth || sth.height <= this.publishedHeight) return;
      // Only a head that is on disk: a node must never have to take back a head it published.
      await this.node.store.durable();
      if (!this.running) return;
      await this.board.publish(sth);
      this.publishedHeight = sth.height;
      this.node.metrics.inc("careledger_heads_published_total");
      if (this.publishFailing) this.log.info({ height: sth.height }, "publishing tree heads again");
      this.publishFailing = false;
    } catch (error) {
      this.node.metrics.inc("careledger_heads_publish_failed_total");
      if (!this.publishFailing) {
        this.log.warn({ err: (error as Error).message }, "could not publish the tree head; retrying");
      }
      this.publishFailing = true;
      // Retry even if no block comes: peers must see this node's head to check it.
      this.lastPublishAt = Math.max(this.lastPublishAt, performance.now() + PUBLISH_RETRY_MS - this.publishIntervalMs);
      this.publishWanted = true;
    }
  }

  // ---- checking ---------------------------------------------------------------------------------------------------

  private onHead(sth: SignedTreeHead): void {
    if (!this.running || sth.signer === this.node.key.keyId) return;
    try {
      this.check(sth);
    } catch (error) {
      // A store read failing here is the store's problem (the node's own reads report it); not a fork.
      this.log.warn({ err: (error as Error).message, signer: short(sth.signer) }, "could not check a peer's head");
    }
  }

  private check(sth: SignedTreeHead): void {
    const known = this.peers.get(sth.signer);
    // Boards re-deliver heads (a subscriber's first read, a reconnect): the same signed head needs no second check.
    if (known && (known.newest.sig === sth.sig || known.pending?.sig === sth.sig)) return;
    const org = this.activeNodeOrg(sth.signer);
    if (org === undefined) {
      this.ignore(sth, "not an active node key of an active organisation here");
      return;
    }
    if (!verifyTreeHead(sth)) {
      this.ignore(sth, "its signature does not verify");
      return;
    }
    this.node.metrics.inc("careledger_heads_checked_total");
    if (known) {
      const earlier = known.newest;
      if (sth.size < earlier.size || (sth.size === earlier.size && sth.root !== earlier.root)) {
        this.raise(
          `fork: node ${short(sth.signer)} of ${org} signed root ${short(sth.root)} for size ${sth.size} after root ${short(earlier.root)} for size ${earlier.size}`,
          { peer: sth, earlier },
        );
        return;
      }
    }
    const view: PeerView = { org, newest: sth, pending: undefined };
    this.peers.set(sth.signer, view);
    if (sth.size <= this.ownSize()) this.compare(view, sth);
    else view.pending = sth;
  }

  private checkPending(): void {
    if (!this.running || this.alarmReason) return;
    const size = this.ownSize();
    for (const view of this.peers.values()) {
      const pending = view.pending;
      if (pending === undefined || pending.size > size) continue;
      view.pending = undefined;
      try {
        this.compare(view, pending);
      } catch (error) {
        this.log.warn({ err: (error as Error).message }, "could not check a peer's head");
      }
    }
  }

  /** The peer's head against this node's log at the head's size (which this log has reached). */
  private compare(view: PeerView, sth: SignedTreeHead): void {
    const own = toHex(subtreeRoot(this.node.store, 0, sth.size));
    if (own !== sth.root) {
      this.raise(
        `fork: node ${short(sth.signer)} of ${view.org} signed root ${short(sth.root)} for size ${sth.size}; this node has ${short(own)}`,
        { peer: sth, own: { size: sth.size, root: own } },
      );
      return;
    }
    // Same log, same state: the digest is checked where it is free, at this node's own head.
    const head = this.node.store.head();
    if (head && head.height === sth.height && head.size === sth.size && head.stateDigest !== sth.stateDigest) {
      this.raise(
        `fork: node ${short(sth.signer)} of ${view.org} signed state digest ${short(sth.stateDigest)} at height ${sth.height}; this node has ${short(head.stateDigest)}`,
        { peer: sth, own: head },
      );
    }
  }

  private ownSize(): number {
    return this.node.store.head()?.size ?? 0;
  }

  /** The org of an active node key whose org is active, in this node's state; undefined otherwise. */
  private activeNodeOrg(signer: KeyId): string | undefined {
    const key = readState.key(this.node.store.state, signer);
    if (key?.kind !== "node" || key.status !== "active") return undefined;
    return readState.org(this.node.store.state, key.org)?.status === "active" ? key.org : undefined;
  }

  private ignore(sth: SignedTreeHead, why: string): void {
    this.node.metrics.inc("careledger_heads_ignored_total");
    if (this.warnedSigners.has(sth.signer) || this.warnedSigners.size >= MAX_WARNED_SIGNERS) return;
    this.warnedSigners.add(sth.signer);
    this.log.warn({ signer: short(sth.signer), size: sth.size, why }, "ignoring a tree head");
  }

  private raise(reason: string, heads: Record<string, unknown>): void {
    if (this.alarmReason) return;
    this.alarmReason = reason;
    this.node.metrics.set("careledger_fork_alarm", 1);
    this.log.error({ ...heads, reason }, "FORK ALARM: another node's signed tree head contradicts this node's log");
    this.node.halt(reason);
  }
}
