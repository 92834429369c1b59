import type { Metadata } from "@grpc/grpc-js";
import type { Etcd3, ICallable, IWatchRequest, IWatchResponse } from "etcd3";

/** One event of etcd's history under the watched range, reduced to what delivery needs. */
export interface WatchEvent {
  revision: number;
  put: boolean;
  key: Buffer;
  value: Buffer;
  /** 1 on the put that created the key; more on re-puts. */
  version: number;
}

export interface WatchOptions {
  key: Buffer;
  rangeEnd: Buffer;
  /** First revision wanted. */
  startRevision: number;
  /** Events of one or more whole revisions, in revision order, each event once. */
  onEvents: (events: WatchEvent[]) => void;
  /** The revision wanted next is gone from etcd's history; the watch has stopped. */
  onCompacted: (compactRevision: number) => void;
  onDisconnected?: (reason: string) => void;
  /** Silence this long while not paused → ask etcd for progress, and reconnect if that goes unanswered too. */
  stallMs?: number;
}

interface RawStream {
  write(item: IWatchRequest): void;
  cancel(): void;
  pause(): void;
  resume(): void;
  writable?: boolean;
  on(event: "data", fn: (res: IWatchResponse) => void): RawStream;
  on(event: "error", fn: (err: Error) => void): RawStream;
  on(event: "end", fn: () => void): RawStream;
  on(event: string, fn: (...args: never[]) => void): RawStream;
}

/**
 * A watch on one key range from a given revision that survives reconnects without losing or repeating events.
 *
 * Why not etcd3's own Watcher: on reconnect it resumes from the last response's header revision + 1, but while a
 * watcher catches up etcd sends history in chunks whose header carries the store's current revision, so a reconnect
 * mid-catch-up would silently skip the rest of the chunk. This resumes from the last event actually received + 1
 * (etcd never splits one revision's events over responses unless asked to fragment, which this does not).
 * It also streams with `hasleader` so a member cut off from the quorum closes the stream instead of going quiet, and
 * it can be paused (HTTP/2 flow control then holds etcd back) while the consumer is behind.
 */
export class BatchWatch {
  private readonly client: Etcd3;
  private readonly options: WatchOptions;
  private nextRevision: number;
  private stream: RawStream | undefined;
  private generation = 0;
  private stopped = false;
  private paused = false;
  private backoffMs = 50;
  private lastHeard = Date.now();
  private probeSentAt: number | undefined;
  private readonly watchdog: NodeJS.Timeout;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private readonly stallMs: number;

  constructor(client: Etcd3, options: WatchOptions) {
    this.client = client;
    this.options = options;
    this.nextRevision = options.startRevision;
    this.stallMs = options.stallMs ?? 5000;
    this.watchdog = setInterval(() => this.checkStall(), Math.max(100, Math.floor(this.stallMs / 4)));
    this.watchdog.unref();
    void this.connect();
  }

  /** The first revision not yet received. */
  get position(): number {
    return this.nextRevision;
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.stream?.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.lastHeard = Date.now();
    this.stream?.resume();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.generation++;
    clearInterval(this.watchdog);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.dropStream();
  }

  private dropStream(): void {
    const stream = this.stream;
    this.stream = undefined;
    if (!stream) return;
    try {
      stream.cancel();
    } catch {
      // Already closed.
    }
  }

  private async openStream(): Promise<RawStream> {
    // etcd3 1.1.2 keeps its connection pool in WatchClient's `client` field; going through it keeps host failover.
    const pool = (this.client.watchClient as unknown as { client: ICallable<unknown> }).client;
    return pool.withConnection("Watch", ({ resource, client, metadata }) => {
      const md: Metadata = metadata.clone();
      md.set("hasleader", "true");
      const stream = (client as unknown as { watch(md: Metadata, options: object): RawStream }).watch(md, {});
      stream.on("error", (err: Error) => {
        if (stream.writable) pool.markFailed(resource, err);
      });
      return stream;
    });
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const generation = ++this.generation;
    let stream: RawStream;
    try {
      stream = await this.openStream();
    } catch (error) {
      if (generation === this.generation) this.reconnect(`cannot open a watch: ${(error as Error).message}`);
      return;
    }
    if (generation !== this.generation || this.stopped) {
      try {
        stream.cancel();
      } catch {}
      return;
    }
    this.stream = stream;
    this.lastHeard = Date.now();
    this.probeSentAt = undefined;
    stream.on("data", (res: IWatchResponse) => {
      if (generation === this.generation) this.onResponse(res);
    });
    stream.on("error", (err: Error) => {
      if (generation === this.generation) this.reconnect(err.message);
    });
    stream.on("end", () => {
      if (generation === this.generation) this.reconnect("the watch stream ended");
    });
    stream.write({
      create_request: {
        key: this.options.key,
        range_end: this.options.rangeEnd,
        start_revision: this.nextRevision,
        progress_notify: true,
        // Deletes are never delivered (the compactor makes many): filter them in etcd.
        filters: [1 /* NODELETE */],
      },
    });
    if (this.paused) stream.pause();
  }

  private onResponse(res: IWatchResponse): void {
    this.lastHeard = Date.now();
    this.probeSentAt = undefined;
    const compactRevision = Number(res.compact_revision ?? 0);
    if (compactRevision > 0) {
      this.stop();
      this.options.onCompacted(compactRevision);
      return;
    }
    if (res.canceled) {
      this.reconnect(`etcd cancelled the watch${res.cancel_reason ? `: ${res.cancel_reason}` : ""}`);
      return;
    }
    if (res.created) this.backoffMs = 50;
    const raw = res.events ?? [];
    if (raw.length === 0) return;
    const events: WatchEvent[] = [];
    for (const ev of raw) {
      const revision = Number(ev.kv.mod_revision);
      // After a reconnect etcd starts at nextRevision; anything older would be a repeat.
      if (revision < this.nextRevision) continue;
      events.push({
        revision,
        put: String(ev.type).toUpperCase() === "PUT",
        key: ev.kv.key,
        value: ev.kv.value,
        version: Number(ev.kv.version),
      });
    }
    if (events.length === 0) return;
    this.nextRevision = (events[events.length - 1] as WatchEvent).revision + 1;
    this.options.onEvents(events);
  }

  private reconnect(reason: string): void {
    if (this.stopped) return;
    this.generation++;
    this.dropStream();
    this.options.onDisconnected?.(reason);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.connect();
    }, this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, 2000);
  }

  /** A stream that says nothing may be on a member that is gone: ask for progress, then give up on it. */
  private checkStall(): void {
    if (this.stopped || this.paused || !this.stream) return;
    const now = Date.now();
    if (this.probeSentAt === undefined) {
      if (now - this.lastHeard < this.stallMs) return;
      this.probeSentAt = now;
      try {
        this.stream.write({ progress_request: {} } as IWatchRequest);
      } catch {
        this.reconnect("the watch stream is closed");
      }
    } else if (now - this.probeSentAt >= this.stallMs) {
      this.reconnect(`no answer from etcd for ${now - this.lastHeard} ms`);
    }
  }
}
