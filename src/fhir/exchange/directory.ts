// Where each custodian's node listens, for node-to-node record requests. A static map for now; a cluster fills one
// from its configuration or from etcd (the interface is all the exchange needs).

export interface PeerDirectory {
  /** Base URL of a node of `orgId` (e.g. `https://trust.example:7600`, no trailing slash needed), if known. */
  urlOf(orgId: string): string | undefined;
  /** Looks again (a directory kept from elsewhere); asked when a custodian's address is not known. */
  refresh?(): Promise<void>;
}

/** A directory held in memory: set entries as nodes come up (the demo learns its ports only once they listen). */
export class StaticPeerDirectory implements PeerDirectory {
  private readonly urls = new Map<string, string>();

  constructor(entries: Iterable<readonly [string, string]> | Record<string, string> = []) {
    const list =
      Symbol.iterator in Object(entries) ? (entries as Iterable<readonly [string, string]>) : Object.entries(entries);
    for (const [org, url] of list) this.set(org, url);
  }

  set(orgId: string, url: string): void {
    const parsed = new URL(url);
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new RangeError("a peer URL is http(s)");
    this.urls.set(orgId, url.replace(/\/+$/, ""));
  }

  delete(orgId: string): void {
    this.urls.delete(orgId);
  }

  urlOf(orgId: string): string | undefined {
    return this.urls.get(orgId);
  }
}

/** What the directory reads from the node's peer registry (src/node/peer-registry.ts). */
interface PeerLister {
  list(): Promise<{ keyId: string; org: string; url: string }[]>;
}

/**
 * A directory kept from the node's peer registry (etcd announcements, configured peers), refreshed every few
 * seconds in the background so `urlOf` stays synchronous. A custodian with several nodes: the first one listed.
 */
export class RegistryPeerDirectory implements PeerDirectory {
  private readonly registry: PeerLister;
  private urls = new Map<string, string>();
  private readonly timer: NodeJS.Timeout;
  private reading: Promise<void> | undefined;
  private lastRead = 0;

  private readonly minReadIntervalMs: number;

  constructor(registry: PeerLister, refreshMs = 5000, minReadIntervalMs = 1000) {
    this.registry = registry;
    this.minReadIntervalMs = minReadIntervalMs;
    this.timer = setInterval(() => void this.refresh(), refreshMs);
    this.timer.unref();
  }

  /**
   * Reads the registry (callers at the same time share one read; at most one read per `minReadIntervalMs`, so a call
   * soon after the last read waits for the next one rather than returning with nothing new: a node that announced
   * itself a moment ago must still be found); a failed read keeps the last known entries.
   */
  refresh(): Promise<void> {
    if (this.reading) return this.reading;
    const wait = this.lastRead + this.minReadIntervalMs - Date.now();
    const due = wait > 0 ? new Promise<void>((resolve) => setTimeout(resolve, wait).unref()) : Promise.resolve();
    this.reading = due
      .then(() => this.read())
      .finally(() => {
        this.reading = undefined;
        this.lastRead = Date.now();
      });
    return this.reading;
  }

  private async read(): Promise<void> {
    try {
      const next = new Map<string, string>();
      for (const entry of await this.registry.list()) {
        if (!next.has(entry.org)) next.set(entry.org, entry.url.replace(/\/+$/, ""));
      }
      this.urls = next;
    } catch {
      // etcd unreachable: peers keep the addresses they had.
    }
  }

  urlOf(orgId: string): string | undefined {
    return this.urls.get(orgId);
  }

  close(): void {
    clearInterval(this.timer);
  }
}
