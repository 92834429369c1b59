import { Etcd3, type IOptions } from "etcd3";
import { isHex32 } from "../ledger/encoding.ts";
import { prefixEnd } from "./etcd-client.ts";

export interface EtcdCompactorOptions {
  /** How often the elected node looks for work (default 5 s). */
  intervalMs: number;
  /**
   * A batch's `s/` marker is deleted only once it was created at least this long ago (default 60 s), so a submit
   * still retrying (for at most its submitTimeoutMs) finds it and does not create the batch a second time.
   */
  markerGraceMs: number;
  /** etcd's `--quota-backend-bytes` (default 2 GiB): a member whose file grows past a quarter of it is defragmented. */
  quotaBytes: number;
  /** Defragment a member whose file exceeds this with half of this free in it (default quotaBytes / 4). */
  defragAboveBytes?: number;
}

export interface CompactorContext {
  prefix: string;
  keyId: string;
  endpoints: string[];
  /** Options for one-member clients (status and defragment are per member); `hosts` is replaced. */
  clientOptions: IOptions;
  log: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

export interface CompactorStats {
  ticks: number;
  /** `b/` keys deleted. */
  deletedKeys: number;
  deletedMarkers: number;
  compactedTo: number;
  defragments: number;
  alarmsDisarmed: number;
}

const DELETE_PAGE = 500;
/** etcd's default `--max-txn-ops` is 128. */
const DELETES_PER_TXN = 100;
const CALL_MS = 10_000;
const NOSPACE = 1;

const deadline = () => ({ deadline: Date.now() + CALL_MS });

/**
 * Keeps etcd small. Every node runs one; only the node with the smallest key id among live `applied/` entries acts:
 * it deletes `b/` keys created at or before the lowest applied revision (their `s/` markers once `markerGraceMs` old
 * too), compacts
 * history to that revision, defragments members whose file is mostly free, and clears a NOSPACE alarm once space is
 * back. A node that stops publishing (down, paused, cut off) drops out after its lease TTL and catches up elsewhere.
 */
export class EtcdCompactor {
  private readonly client: Etcd3;
  private readonly options: EtcdCompactorOptions;
  private readonly context: CompactorContext;
  private readonly appliedPrefix: Buffer;
  private readonly batchPrefix: Buffer;
  private readonly markerPrefix: Buffer;
  private readonly timer: NodeJS.Timeout;
  private running: Promise<void> | undefined;
  private stopped = false;
  /** (time, revision) samples: the revision current at least markerGraceMs ago bounds which markers may go. */
  private samples: { at: number; revision: number }[] = [];
  private batchesDeletedUpTo = 0;
  private markersDeletedUpTo = 0;
  private readonly members = new Map<string, Etcd3>();
  readonly stats: CompactorStats = {
    ticks: 0,
    deletedKeys: 0,
    deletedMarkers: 0,
    compactedTo: 0,
    defragments: 0,
    alarmsDisarmed: 0,
  };

  constructor(client: Etcd3, options: Partial<EtcdCompactorOptions> & CompactorContext) {
    this.client = client;
    this.options = {
      intervalMs: options.intervalMs ?? 5000,
      markerGraceMs: options.markerGraceMs ?? 60_000,
      quotaBytes: options.quotaBytes ?? 2 * 1024 ** 3,
      defragAboveBytes: options.defragAboveBytes,
    };
    this.context = options;
    this.appliedPrefix = Buffer.from(`${options.prefix}applied/`);
    this.batchPrefix = Buffer.from(`${options.prefix}b/`);
    this.markerPrefix = Buffer.from(`${options.prefix}s/`);
    this.timer = setInterval(() => this.tick(), this.options.intervalMs);
    this.timer.unref();
  }

  /** Runs one round unless one is running; resolves when it is done (errors are logged, never thrown). */
  tick(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (!this.running) {
      this.running = this.round()
        .catch((error: Error) => {
          if (!this.stopped)
            this.context.log.warn({ err: error.message.split("\n")[0] }, "etcd compaction round failed");
        })
        .finally(() => {
          this.running = undefined;
        });
    }
    return this.running;
  }

  private async round(): Promise<void> {
    this.stats.ticks++;
    const now = Date.now();
    const applied = await this.client.kv.range(
      { key: this.appliedPrefix, range_end: prefixEnd(this.appliedPrefix) },
      deadline(),
    );
    this.samples.push({ at: now, revision: Number(applied.header.revision) });
    const entries: { keyId: string; revision: number }[] = [];
    for (const kv of applied.kvs) {
      const keyId = kv.key.subarray(this.appliedPrefix.length).toString("latin1");
      const revision = Number(kv.value.toString("latin1"));
      if (isHex32(keyId) && Number.isSafeInteger(revision) && revision >= 0) entries.push({ keyId, revision });
    }
    if (entries.length === 0) return;
    entries.sort((a, b) => (a.keyId < b.keyId ? -1 : a.keyId > b.keyId ? 1 : 0));
    if (entries[0]?.keyId !== this.context.keyId) return;
    const minApplied = Math.min(...entries.map((e) => e.revision));
    const graceStart = now - this.options.markerGraceMs;
    let graceRevision = 0;
    for (const s of this.samples) if (s.at <= graceStart) graceRevision = s.revision;
    // Keep the newest sample old enough plus everything younger.
    const firstYoung = this.samples.findIndex((s) => s.at > graceStart);
    if (firstYoung > 1) this.samples = this.samples.slice(firstYoung - 1);
    if (minApplied > this.batchesDeletedUpTo) {
      this.stats.deletedKeys += await this.deleteCreatedUpTo(this.batchPrefix, minApplied);
      this.batchesDeletedUpTo = minApplied;
    }
    const markersUpTo = Math.min(minApplied, graceRevision);
    if (markersUpTo > this.markersDeletedUpTo) {
      this.stats.deletedMarkers += await this.deleteCreatedUpTo(this.markerPrefix, markersUpTo);
      this.markersDeletedUpTo = markersUpTo;
    }
    if (minApplied > this.stats.compactedTo) {
      try {
        await this.client.kv.compact({ revision: minApplied, physical: true }, deadline());
      } catch (error) {
        if (!/compacted/i.test((error as Error).message)) throw error;
      }
      this.stats.compactedTo = minApplied;
    }
    if (this.stopped) return;
    await this.defragmentIfNeeded();
  }

  /** Deletes the keys under `prefix` created at or before `upTo`, a page at a time; returns how many. */
  private async deleteCreatedUpTo(prefix: Buffer, upTo: number): Promise<number> {
    let deleted = 0;
    for (;;) {
      if (this.stopped) return deleted;
      const page = await this.client.kv.range(
        { key: prefix, range_end: prefixEnd(prefix), keys_only: true, max_create_revision: upTo, limit: DELETE_PAGE },
        deadline(),
      );
      if (page.kvs.length === 0) return deleted;
      for (let i = 0; i < page.kvs.length; i += DELETES_PER_TXN) {
        const keys = page.kvs.slice(i, i + DELETES_PER_TXN);
        await this.client.kv.txn(
          { success: keys.map((kv) => ({ request_delete_range: { key: kv.key } })) },
          deadline(),
        );
        deleted += keys.length;
      }
      if (page.kvs.length < DELETE_PAGE) return deleted;
    }
  }

  private member(endpoint: string): Etcd3 {
    let client = this.members.get(endpoint);
    if (!client) {
      client = new Etcd3({ ...this.context.clientOptions, hosts: [endpoint] });
      this.members.set(endpoint, client);
    }
    return client;
  }

  /**
   * bbolt never gives file space back, big values need contiguous free pages, and etcd's quota counts the file: a
   * member whose file holds much free space is defragmented (one member at a time; a member that does not answer is skipped). A NOSPACE alarm raised anyway
   * is cleared once every member that answers is back under 3/4 of the quota.
   */
  private async defragmentIfNeeded(): Promise<void> {
    const above = this.options.defragAboveBytes ?? Math.floor(this.options.quotaBytes / 4);
    let allBelow = true;
    for (const endpoint of this.context.endpoints) {
      if (this.stopped) return;
      let status: { dbSize: string; dbSizeInUse: string };
      try {
        status = await this.member(endpoint).maintenance.status({ deadline: Date.now() + 2000 });
      } catch {
        continue;
      }
      let size = Number(status.dbSize);
      const inUse = Number(status.dbSizeInUse);
      if (size > above && size - inUse > above / 2) {
        await this.member(endpoint).maintenance.defragment({ deadline: Date.now() + 30_000 });
        this.stats.defragments++;
        this.context.log.info({ endpoint, before: size, inUse }, "defragmented an etcd member");
        size = inUse;
      }
      if (size > (this.options.quotaBytes * 3) / 4) allBelow = false;
    }
    if (!allBelow || this.stopped) return;
    const alarms = await this.client.maintenance.alarm({ action: 0, memberID: 0, alarm: 0 }, deadline());
    for (const alarm of alarms.alarms ?? []) {
      if (String(alarm.alarm) !== "NOSPACE" && Number(alarm.alarm) !== NOSPACE) continue;
      await this.client.maintenance.alarm({ action: 2, memberID: alarm.memberID, alarm: NOSPACE }, deadline());
      this.stats.alarmsDisarmed++;
      this.context.log.warn({ member: alarm.memberID }, "cleared etcd's NOSPACE alarm after compaction");
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
    for (const client of this.members.values()) client.close();
    this.members.clear();
  }
}
