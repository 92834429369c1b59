import { canonicalJson } from "../ledger/canonical.ts";
// Shared by the etcd orderer tests (not product code).

import { join } from "node:path";
import { type KeyPair, keyPairFromSeed } from "../ledger/keys.ts";
import type { SignedTx } from "../ledger/types.ts";
import { EtcdOrderer, type EtcdOrdererOptions } from "./etcd.ts";
import type { Batch } from "./orderer.ts";

export const keyA: KeyPair = keyPairFromSeed(new Uint8Array(32).fill(0x11));
export const keyB: KeyPair = keyPairFromSeed(new Uint8Array(32).fill(0x22));
export const keyC: KeyPair = keyPairFromSeed(new Uint8Array(32).fill(0x33));

/** A tx-shaped object; the orderer does not validate txs, so it need not verify. */
export function fakeTx(n: number, pad = 0): SignedTx {
  return {
    type: "t.x",
    payload: pad > 0 ? { n, pad: "p".repeat(pad) } : { n },
    signer: "a".repeat(64),
    nonce: n.toString(16).padStart(16, "0"),
    createdAt: n,
    sig: "x",
  };
}

let prefixes = 0;
/** A fresh network prefix per test, so tests sharing one etcd cluster do not see each other. */
export function freshPrefix(): string {
  prefixes++;
  return `/careledger/test-${process.pid}-${prefixes}/`;
}

export function openOrderer(
  endpoints: string[],
  dir: string,
  name: string,
  options: Partial<EtcdOrdererOptions> & { prefix: string; key: KeyPair },
): Promise<EtcdOrderer> {
  return EtcdOrderer.open({ endpoints, cursorPath: join(dir, `${name}.cursor.db`), ...options });
}

/** Collects delivered batches; `until(n)` resolves once seq n has been handled. */
export class Collector {
  readonly batches: Batch[] = [];
  errors: unknown[] = [];
  private waiting: { seq: number; resolve: () => void }[] = [];

  readonly onBatch = (batch: Batch): void => {
    this.batches.push(batch);
    for (const w of this.waiting.filter((w) => batch.seq >= w.seq)) w.resolve();
    this.waiting = this.waiting.filter((w) => batch.seq < w.seq);
  };

  readonly onError = (error: unknown): void => {
    this.errors.push(error);
    for (const w of this.waiting) w.resolve();
    this.waiting = [];
  };

  until(seq: number, timeoutMs = 15_000): Promise<void> {
    if ((this.batches.at(-1)?.seq ?? 0) >= seq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`batch ${seq} not delivered in ${timeoutMs} ms (have ${this.batches.at(-1)?.seq})`)),
        timeoutMs,
      );
      this.waiting.push({
        seq,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  /** What two nodes must agree on: seq, time, proposer and the txs' content. */
  summary(): string[] {
    return this.batches.map((b) => `${b.seq}|${b.time}|${b.proposer}|${canonicalJson(b.txs)}`);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
