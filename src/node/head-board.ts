import type { SignedTreeHead } from "../ledger/types.ts";

/**
 * Where nodes publish their latest signed tree head and read the others'. A board keeps one head per signer (the
 * latest published); a subscriber is handed every head on the board when it subscribes, then each one published
 * after. Boards carry untrusted data: whoever reads a head checks its signature and its signer.
 */
export interface HeadBoard {
  /** Makes `sth` the board's head for its signer. */
  publish(sth: SignedTreeHead): Promise<void>;
  /** Calls `onHead` for every head on the board now and for every head published later; returns an unsubscribe. */
  subscribe(onHead: (sth: SignedTreeHead) => void): () => void;
  close(): Promise<void>;
}

/**
 * A board for several nodes in one process (the demo, tests): share one instance. Heads are delivered
 * asynchronously, as over a network, and as copies, so one subscriber cannot change what another sees.
 */
export class MemoryHeadBoard implements HeadBoard {
  private readonly heads = new Map<string, SignedTreeHead>();
  private readonly subscribers = new Set<(sth: SignedTreeHead) => void>();
  private closed = false;

  async publish(sth: SignedTreeHead): Promise<void> {
    if (this.closed) throw new Error("the head board is closed");
    const copy = { ...sth };
    this.heads.set(copy.signer, copy);
    for (const onHead of this.subscribers) this.deliver(onHead, copy);
  }

  subscribe(onHead: (sth: SignedTreeHead) => void): () => void {
    if (this.closed) throw new Error("the head board is closed");
    this.subscribers.add(onHead);
    for (const sth of this.heads.values()) this.deliver(onHead, sth);
    return () => {
      this.subscribers.delete(onHead);
    };
  }

  /** The board's current heads (what a subscriber starting now would be handed first). */
  current(): SignedTreeHead[] {
    return [...this.heads.values()].map((sth) => ({ ...sth }));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.subscribers.clear();
  }

  private deliver(onHead: (sth: SignedTreeHead) => void, sth: SignedTreeHead): void {
    queueMicrotask(() => {
      if (this.subscribers.has(onHead)) onHead({ ...sth });
    });
  }
}
