// The peer registry on etcd (see peer-registry.ts): each node's entry under `<prefix>nodes/<keyId>`, with a lease.

import type { Etcd3 } from "etcd3";
import { etcdClient } from "../ordering/etcd-client.ts";
import { LeaseKeeper } from "../ordering/etcd-lease.ts";
import type { TlsFiles } from "./datadir.ts";
import type { Logger } from "./logger.ts";
import type { PeerEntry, PeerRegistry } from "./peer-registry.ts";

const LEASE_TTL_S = 10;
const MAX_ENTRY_BYTES = 2048;

function parseEntry(raw: string, keyId: string): PeerEntry | undefined {
  if (raw.length > MAX_ENTRY_BYTES) return undefined;
  try {
    const v = JSON.parse(raw) as Partial<PeerEntry>;
    if (v.keyId !== keyId || typeof v.org !== "string" || typeof v.url !== "string") return undefined;
    if (!/^https?:\/\/[^/\s]+$/.test(v.url)) return undefined;
    return { keyId: v.keyId, org: v.org, url: v.url };
  } catch {
    return undefined;
  }
}

export class EtcdPeerRegistry implements PeerRegistry {
  private readonly client: Etcd3;
  private readonly keyPrefix: string;
  private readonly log: Logger;
  private readonly lease: LeaseKeeper;
  private announced: PeerEntry | undefined;
  private retry: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: { endpoints: string[]; prefix: string; tls?: TlsFiles; log: Logger }) {
    this.keyPrefix = `${options.prefix}nodes/`;
    this.log = options.log;
    this.client = etcdClient(options.endpoints, options.tls);
    this.lease = new LeaseKeeper(this.client, LEASE_TTL_S);
    // etcd unreachable for longer than the TTL loses the lease and the entry with it: announce again.
    this.lease.onLost = () => this.scheduleAnnounce(1000);
  }

  async announce(entry: PeerEntry): Promise<void> {
    this.announced = entry;
    await this.put();
  }

  private scheduleAnnounce(ms: number): void {
    if (this.closed || this.retry) return;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      void this.put();
    }, ms);
    this.retry.unref();
  }

  private async put(): Promise<void> {
    const entry = this.announced;
    if (!entry || this.closed) return;
    try {
      const lease = await this.lease.lease();
      await this.client.put(`${this.keyPrefix}${entry.keyId}`).value(JSON.stringify(entry)).lease(lease);
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, "could not announce this node in etcd; retrying");
      this.scheduleAnnounce(2000);
    }
  }

  async list(): Promise<PeerEntry[]> {
    const all = await this.client.getAll().prefix(this.keyPrefix).strings();
    const out: PeerEntry[] = [];
    for (const [key, value] of Object.entries(all)) {
      const entry = parseEntry(value, key.slice(this.keyPrefix.length));
      if (entry) out.push(entry);
    }
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    await this.lease.close();
    this.client.close();
  }
}
