import type { Etcd3 } from "etcd3";

interface KeepAliveStream {
  write(item: { ID: string }): void;
  cancel(): void;
  on(event: "data", fn: (res: { ID: string; TTL: string }) => void): KeepAliveStream;
  on(event: "error" | "end", fn: (err?: Error) => void): KeepAliveStream;
}

/**
 * One etcd lease kept alive over a keepalive stream, granted again when it expired. Written here rather than using
 * etcd3's Lease because that one can leave a keepalive stream without an error handler when revoked while the stream
 * opens, and its cancellation then crashes the process.
 */
export class LeaseKeeper {
  private readonly client: Etcd3;
  private readonly ttlSeconds: number;
  private id: string | undefined;
  private granting: Promise<string> | undefined;
  private stream: KeepAliveStream | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Called when the lease is gone (expired or unknown to etcd): keys put under it must be put again. */
  onLost: () => void = () => {};

  constructor(client: Etcd3, ttlSeconds: number) {
    this.client = client;
    this.ttlSeconds = ttlSeconds;
  }

  /** The lease id, granting one if needed. */
  async lease(): Promise<string> {
    if (this.closed) throw new Error("the lease keeper is closed");
    if (this.id) return this.id;
    this.granting ??= this.client.leaseClient
      .leaseGrant({ TTL: this.ttlSeconds }, { deadline: Date.now() + 5000 })
      .then((res) => {
        this.id = res.ID;
        this.startKeepAlive();
        return res.ID;
      })
      .finally(() => {
        this.granting = undefined;
      });
    return this.granting;
  }

  private lost(): void {
    this.id = undefined;
    this.stopKeepAlive();
    if (!this.closed) this.onLost();
  }

  private startKeepAlive(): void {
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => void this.ping(), Math.max(500, (this.ttlSeconds * 1000) / 3));
    this.timer.unref();
    void this.ping();
  }

  private stopKeepAlive(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.dropStream();
  }

  private dropStream(): void {
    const stream = this.stream;
    this.stream = undefined;
    try {
      stream?.cancel();
    } catch {}
  }

  private async ping(): Promise<void> {
    const id = this.id;
    if (!id || this.closed) return;
    if (!this.stream) {
      let stream: KeepAliveStream;
      try {
        stream = (await this.client.leaseClient.leaseKeepAlive()) as unknown as KeepAliveStream;
      } catch {
        return; // next tick tries again; the TTL covers a few misses
      }
      stream.on("error", () => {
        if (this.stream === stream) this.stream = undefined;
      });
      stream.on("end", () => {
        if (this.stream === stream) this.stream = undefined;
      });
      stream.on("data", (res) => {
        if (res.ID === this.id && Number(res.TTL) <= 0) this.lost();
      });
      if (this.closed || this.id !== id) {
        try {
          stream.cancel();
        } catch {}
        return;
      }
      this.stream = stream;
    }
    try {
      this.stream.write({ ID: id });
    } catch {
      this.dropStream();
    }
  }

  /** Revokes the lease (its keys go at once). */
  async revoke(): Promise<void> {
    const id = this.id;
    this.id = undefined;
    this.stopKeepAlive();
    if (id) await this.client.leaseClient.leaseRevoke({ ID: id }, { deadline: Date.now() + 1000 }).catch(() => {});
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.revoke();
  }
}
