// Where each custodian's node listens, for node-to-node record requests. A static map for now; a cluster fills one
// from its configuration or from etcd (the interface is all the exchange needs).

export interface PeerDirectory {
  /** Base URL of a node of `orgId` (e.g. `https://trust.example:7600`, no trailing slash needed), if known. */
  urlOf(orgId: string): string | undefined;
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
