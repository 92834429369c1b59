// Where the other nodes listen. On an etcd network each node announces `{keyId, org, url}` under
// `<prefix>nodes/<keyId>` with a lease, so the entry disappears some seconds after the node stops; others read the
// prefix to find peers to catch up from and custodians to ask for records. An entry is only a hint: what a peer sends
// is verified (blocks rebuilt, records checked against on-ledger anchors), never trusted for being listed.

// The etcd registry is in peer-registry-etcd.ts, so that a node on the embedded orderer never loads the etcd client.

export interface PeerEntry {
  keyId: string;
  org: string;
  url: string;
}

export interface PeerRegistry {
  /** Announces (and keeps announcing) this node. */
  announce(entry: PeerEntry): Promise<void>;
  /** Every node currently announced, this one included. */
  list(): Promise<PeerEntry[]>;
  close(): Promise<void>;
}

/** A registry from configuration only (the embedded orderer, or peers given by hand). */
export class StaticPeerRegistry implements PeerRegistry {
  private readonly entries: PeerEntry[];
  constructor(entries: PeerEntry[] = []) {
    this.entries = [...entries];
  }
  async announce(entry: PeerEntry): Promise<void> {
    const at = this.entries.findIndex((e) => e.keyId === entry.keyId);
    if (at >= 0) this.entries[at] = entry;
    else this.entries.push(entry);
  }
  async list(): Promise<PeerEntry[]> {
    return [...this.entries];
  }
  async close(): Promise<void> {}
}
