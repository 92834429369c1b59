// Single use of client assertions: every `jti` seen is remembered until its assertion expires. The memory is bounded;
// when it is full of unexpired entries the endpoint refuses new assertions for a moment rather than forget one (a
// forgotten jti would make its assertion replayable).

export type JtiUse = "ok" | "replay" | "full";

export interface JtiCacheOptions {
  /** Entries held at most (default 100,000: at a 5-minute assertion lifetime, ~330 token requests/s sustained). */
  max?: number;
  /** Entries one client may hold at most (default 1,000), so one busy or hostile client cannot fill the cache. */
  maxPerClient?: number;
}

export class JtiCache {
  readonly max: number;
  readonly maxPerClient: number;
  /** `client jti` → expiry (ms). */
  private readonly seen = new Map<string, number>();
  private readonly perClient = new Map<string, number>();
  /** No entry expires before this, so a sweep earlier would free nothing. */
  private nextExpiry = 0;

  constructor(options: JtiCacheOptions = {}) {
    this.max = options.max ?? 100_000;
    this.maxPerClient = options.maxPerClient ?? 1_000;
  }

  get size(): number {
    return this.seen.size;
  }

  /**
   * Records `jti` of `client`, valid until `expiresAt` (ms), at time `now`. Returns "replay" if it was seen and has
   * not expired, "full" if it cannot be remembered (the caller must refuse the assertion).
   */
  use(client: string, jti: string, expiresAt: number, now: number): JtiUse {
    // The space cannot occur in a client id (hex), so the key is unambiguous.
    const key = `${client} ${jti}`;
    const prev = this.seen.get(key);
    if (prev !== undefined) {
      if (prev > now) return "replay";
      this.drop(key, client);
    }
    if (this.seen.size >= this.max || (this.perClient.get(client) ?? 0) >= this.maxPerClient) {
      this.sweep(now);
      if (this.seen.size >= this.max || (this.perClient.get(client) ?? 0) >= this.maxPerClient) return "full";
    }
    this.seen.set(key, expiresAt);
    if (expiresAt < this.nextExpiry) this.nextExpiry = expiresAt;
    this.perClient.set(client, (this.perClient.get(client) ?? 0) + 1);
    return "ok";
  }

  /** Forgets expired entries. Runs only when full and only once something can have expired, so a flood of refused
   * requests does not rescan the cache each time. */
  sweep(now: number): void {
    if (now < this.nextExpiry) return;
    let next = Number.POSITIVE_INFINITY;
    for (const [key, exp] of this.seen) {
      if (exp <= now) this.drop(key, key.slice(0, key.indexOf(" ")));
      else if (exp < next) next = exp;
    }
    this.nextExpiry = next;
  }

  private drop(key: string, client: string): void {
    this.seen.delete(key);
    const n = (this.perClient.get(client) ?? 1) - 1;
    if (n <= 0) this.perClient.delete(client);
    else this.perClient.set(client, n);
  }
}
