import type { Etcd3, IKeyValue, Watcher } from "etcd3";
import { parseSignedTreeHead } from "../ledger/sth.ts";
import type { SignedTreeHead } from "../ledger/types.ts";
import { etcdClient } from "../ordering/etcd-client.ts";
import type { TlsFiles } from "./datadir.ts";
import type { HeadBoard } from "./head-board.ts";
import type { Logger } from "./logger.ts";

export interface EtcdHeadBoardOptions {
  /** Client URLs of the etcd members. */
  endpoints: string[];
  /** The network's key prefix (ends with `/`); heads live under `<prefix>heads/<signer key id>`. */
  prefix: string;
  /** Mutual TLS to etcd; paths already resolved (absolute, or relative to the working directory). */
  tls?: TlsFiles;
  log: Logger;
  /** Deadline of one put or range call (ms). */
  callTimeoutMs?: number;
}

/** A tree head is ~400 bytes of JSON; anything much larger is not one and is not parsed. */
const MAX_HEAD_BYTES = 4096;
/** Keys warned about, so a member writing garbage under many keys cannot grow memory without bound. */
const MAX_WARNED_KEYS = 1000;
const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 5000;

/**
 * Heads on the etcd cluster that orders the network: each node puts its latest head under its own key; a subscriber
 * reads every key under `heads/` and then watches the prefix from the revision it read at. Values are untrusted (any
 * etcd client with access can write them): those that are not a well-formed signed tree head filed under its own
 * signer are ignored with a warning. After the watch stream reconnects, or when etcd cancels it (a compaction
 * passed it by), the subscriber reads every head again, so it misses no signer's latest head.
 */
export class EtcdHeadBoard implements HeadBoard {
  private readonly client: Etcd3;
  private readonly keyPrefix: string;
  private readonly log: Logger;
  private readonly subscriptions = new Set<HeadSubscription>();
  private readonly warnedKeys = new Set<string>();
  private closed = false;
  /** Values ignored since the board was opened (they did not parse, or sat under another signer's key). */
  ignored = 0;

  constructor(options: EtcdHeadBoardOptions) {
    if (!options.prefix.endsWith("/")) throw new Error("the etcd key prefix must end with /");
    this.keyPrefix = `${options.prefix}heads/`;
    this.log = options.log;
    const timeout = options.callTimeoutMs ?? 5000;
    this.client = etcdClient(options.endpoints, options.tls, timeout);
  }

  async publish(sth: SignedTreeHead): Promise<void> {
    if (this.closed) throw new Error("the head board is closed");
    await this.client.put(this.keyPrefix + sth.signer).value(JSON.stringify(sth));
  }

  subscribe(onHead: (sth: SignedTreeHead) => void): () => void {
    if (this.closed) throw new Error("the head board is closed");
    const subscription = new HeadSubscription(this, onHead);
    this.subscriptions.add(subscription);
    subscription.resync();
    return () => {
      this.subscriptions.delete(subscription);
      void subscription.stop();
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const stopping = [...this.subscriptions].map((s) => s.stop());
    this.subscriptions.clear();
    await Promise.allSettled(stopping);
    this.client.close();
  }

  /** Every head on the board and the revision they were read at. */
  async readAll(): Promise<{ revision: string; kvs: IKeyValue[] }> {
    const response = await this.client.getAll().prefix(this.keyPrefix).exec();
    return { revision: response.header.revision, kvs: response.kvs };
  }

  watchFrom(revision: string): Watcher {
    return this.client.watch().prefix(this.keyPrefix).startRevision(revision).only("put").watcher();
  }

  /** The head in a key-value pair, or undefined (with a warning, once per key) if it is not one. */
  headOf(kv: IKeyValue): SignedTreeHead | undefined {
    const key = kv.key.toString("utf8");
    const signer = key.slice(this.keyPrefix.length);
    let problem: string | undefined;
    let sth: SignedTreeHead | undefined;
    if (kv.value.byteLength > MAX_HEAD_BYTES) problem = `value of ${kv.value.byteLength} bytes`;
    else {
      let value: unknown;
      try {
        value = JSON.parse(kv.value.toString("utf8"));
      } catch {
        problem = "not JSON";
      }
      if (problem === undefined) {
        const parsed = parseSignedTreeHead(value);
        if (!parsed.ok) problem = parsed.error;
        else if (parsed.sth.signer !== signer) problem = "a head of another signer";
        else sth = parsed.sth;
      }
    }
    if (sth) {
      this.warnedKeys.delete(key);
      return sth;
    }
    this.ignored++;
    if (!this.warnedKeys.has(key) && this.warnedKeys.size < MAX_WARNED_KEYS) {
      this.warnedKeys.add(key);
      // Key names are key ids, not personal data; the value itself is not logged.
      this.log.warn({ key: key.slice(0, 200), problem }, "ignoring a value on the head board that is not a tree head");
    }
    return undefined;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  warn(message: string, error: unknown): void {
    this.log.warn({ err: (error as Error)?.message }, message);
  }
}

/** One subscriber: a full read, then a watch from the revision read; on trouble, again from the start. */
class HeadSubscription {
  private readonly board: EtcdHeadBoard;
  private readonly onHead: (sth: SignedTreeHead) => void;
  private watcher: Watcher | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = RETRY_MIN_MS;
  private active = true;
  private syncing = false;
  private syncAgain = false;
  private disconnected = false;
  /** mod_revision of the last value delivered per key: a full read and the watch may overlap, never go back. */
  private readonly delivered = new Map<string, bigint>();

  constructor(board: EtcdHeadBoard, onHead: (sth: SignedTreeHead) => void) {
    this.board = board;
    this.onHead = onHead;
  }

  /** Reads every head, then (if no watch is running) watches for the next ones. Retries with backoff on failure. */
  resync(): void {
    if (!this.active) return;
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    this.syncing = true;
    this.board
      .readAll()
      .then(({ revision, kvs }) => {
        if (!this.active) return;
        for (const kv of kvs) this.deliver(kv);
        if (!this.watcher) this.watch(String(BigInt(revision) + 1n));
        this.retryMs = RETRY_MIN_MS;
      })
      .catch((error: unknown) => {
        if (!this.active) return;
        this.board.warn("could not read the head board; retrying", error);
        this.retryLater();
      })
      .finally(() => {
        this.syncing = false;
        if (this.syncAgain) {
          this.syncAgain = false;
          this.resync();
        }
      });
  }

  private watch(fromRevision: string): void {
    const watcher = this.board.watchFrom(fromRevision);
    this.watcher = watcher;
    watcher.on("put", (kv) => this.deliver(kv));
    watcher.on("disconnected", () => {
      this.disconnected = true;
    });
    // The client resumes the watch by itself after a reconnect; a full read covers anything it may have skipped.
    watcher.on("connected", () => {
      if (!this.disconnected) return;
      this.disconnected = false;
      this.resync();
    });
    // Cancelled by etcd (e.g. its start revision was compacted): start over with a fresh read and watch.
    watcher.on("error", (error) => {
      if (this.watcher === watcher) this.watcher = undefined;
      void watcher.cancel().catch(() => {});
      if (!this.active) return;
      this.board.warn("the head board watch was cancelled; reading the board again", error);
      this.retryLater();
    });
  }

  private retryLater(): void {
    if (this.retryTimer || !this.active) return;
    const delay = this.retryMs;
    this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.resync();
    }, delay);
  }

  private deliver(kv: IKeyValue): void {
    if (!this.active) return;
    const key = kv.key.toString("latin1");
    const revision = BigInt(kv.mod_revision);
    if (revision <= (this.delivered.get(key) ?? 0n)) return;
    this.delivered.set(key, revision);
    const sth = this.board.headOf(kv);
    if (sth) this.onHead(sth);
  }

  async stop(): Promise<void> {
    this.active = false;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const watcher = this.watcher;
    this.watcher = undefined;
    if (watcher) await watcher.cancel().catch(() => {});
  }
}
