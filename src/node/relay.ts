// The batching relay of an etcd network. Every batch a node orders costs the whole machine room about the same
// whatever its size (an etcd write on each member, a block on each node: ~3 ms of CPU summed, bench/RESULTS.md), so
// with requests spread over the nodes, each node ordering its own small batches makes many small blocks. Instead
// one node — the live node with the smallest key id, chosen by each node from the peer registry — gathers the others'
// txs for a few milliseconds when busy and orders them in one batch. The others forward their txs to its ordinary
// intake (`POST /ledger/txs?wait=false`): txs are self-authenticating, and the relay checks their signatures there
// as any node checks what it is sent, so nothing is trusted for having been forwarded and every node still checks
// every signature once. A forward refused or unanswered, or txs the forwarder does not see committed within
// `commitDeadlineMs`, are ordered by the forwarder itself (the ledger skips a tx ordered twice), and the relay is
// passed over for `backoffMs`. Forwards only ever go to a smaller key id, so views that disagree for a moment cannot
// send txs round in a circle.
import type { Dispatcher } from "undici";
import type { SignedTx } from "../ledger/types.ts";
import { DEFAULT_CONFIG } from "./datadir.ts";
import type { Logger } from "./logger.ts";
import type { PeerEntry, PeerRegistry } from "./peer-registry.ts";

/** What a node does with the batches it cuts: order them itself, gather for others (`relay`), or forward them. */
export type RelayRole = "direct" | "relay" | "forward";

/** What `LedgerNode` needs of a relay (tests give it their own). */
export interface BatchRelay {
  role(): RelayRole;
  /** How long the relay holds its queue for company while a batch of its own is being ordered. */
  readonly holdMs: number;
  /** How long forwarded txs may take to come back committed before the forwarder orders them itself. */
  readonly commitDeadlineMs: number;
  /** Sends txs to the relay's intake; rejects when the relay did not take them all. */
  forward(txs: SignedTx[]): Promise<void>;
  /** The relay failed us (txs not committed in time): order directly for a while. */
  passOver(reason: string): void;
}

export interface RelayOptions {
  selfKeyId: string;
  registry: PeerRegistry;
  /**
   * Whether a listed key may be the relay: an active node key on the ledger. The registry is only a hint — an entry
   * that is not a node of the network would take forwards and order nothing (its batches are skipped), costing every
   * forwarded tx the commit deadline.
   */
  eligible?: (keyId: string) => boolean;
  /** TLS agent trusting the network's CA, when nodes serve HTTPS. */
  dispatcher?: Dispatcher;
  log: Logger;
  holdMs?: number;
  commitDeadlineMs?: number;
  /** How often the registry is read again (ms). */
  refreshMs?: number;
  /** How long a relay that failed is passed over (ms). */
  backoffMs?: number;
  /** A forward not answered within this is a failed forward (ms). */
  forwardTimeoutMs?: number;
}

let undiciRequest: Promise<typeof import("undici").request> | undefined;

/** The listed node with the smallest key id, or undefined when none is listed. */
export function chooseRelay(entries: PeerEntry[]): PeerEntry | undefined {
  let best: PeerEntry | undefined;
  for (const e of entries) if (best === undefined || e.keyId < best.keyId) best = e;
  return best;
}

export class PeerRelay implements BatchRelay {
  readonly holdMs: number;
  readonly commitDeadlineMs: number;
  private readonly options: RelayOptions;
  private target: PeerEntry | undefined;
  /** Whether this node itself is listed (only then can others reach it as their relay). */
  private selfListed = false;
  private passedOverUntil = 0;
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private closed = false;

  constructor(options: RelayOptions) {
    this.options = options;
    this.holdMs = options.holdMs ?? DEFAULT_CONFIG.relayHoldMs;
    this.commitDeadlineMs = options.commitDeadlineMs ?? 3000;
  }

  /**
   * Reads the registry now and then every `refreshMs`, without waiting: until the first answer the node orders its
   * batches itself (an unreachable registry must not hold up start-up).
   */
  start(): void {
    if (this.closed || this.timer) return;
    this.timer = setInterval(() => void this.refresh(), this.options.refreshMs ?? 1000);
    this.timer.unref();
    void this.refresh();
  }

  refresh(): Promise<void> {
    this.refreshing ??= this.options.registry
      .list()
      .then((entries) => {
        this.selfListed = entries.some((e) => e.keyId === this.options.selfKeyId);
        const previous = this.target?.keyId;
        const eligible = this.options.eligible;
        this.target = chooseRelay(eligible ? entries.filter((e) => eligible(e.keyId)) : entries);
        if (this.target?.keyId !== previous) {
          this.options.log.info(
            { relay: this.target?.keyId.slice(0, 12), self: this.target?.keyId === this.options.selfKeyId },
            "batching relay chosen",
          );
        }
      })
      // Registry unreachable: keep the last view; a relay that stopped answering is passed over by `forward`.
      .catch(() => {})
      .finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }

  role(): RelayRole {
    const target = this.target;
    if (target === undefined) return "direct";
    if (target.keyId === this.options.selfKeyId) return this.selfListed ? "relay" : "direct";
    return Date.now() < this.passedOverUntil ? "direct" : "forward";
  }

  passOver(reason: string): void {
    if (Date.now() >= this.passedOverUntil) {
      this.options.log.warn(
        { relay: this.target?.keyId.slice(0, 12), reason },
        "ordering directly: the batching relay failed",
      );
    }
    this.passedOverUntil = Date.now() + (this.options.backoffMs ?? 5000);
  }

  async forward(txs: SignedTx[]): Promise<void> {
    const target = this.target;
    if (target === undefined) throw new Error("no relay");
    // Loaded once, on the first forward: nodes that never forward (the embedded orderer, every CLI command) skip it.
    undiciRequest ??= import("undici").then((m) => m.request);
    const request = await undiciRequest;
    const timeout = this.options.forwardTimeoutMs ?? 2000;
    try {
      const response = await request(`${target.url}/ledger/txs?wait=false`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(txs),
        headersTimeout: timeout,
        bodyTimeout: timeout,
        ...(this.options.dispatcher ? { dispatcher: this.options.dispatcher } : {}),
      });
      const text = await response.body.text();
      if (response.statusCode !== 202) {
        throw new Error(`the relay answered ${response.statusCode}: ${text.slice(0, 200)}`);
      }
    } catch (error) {
      this.passOver((error as Error).message);
      throw error;
    }
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
  }
}
