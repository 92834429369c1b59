// Catching up from peers: when the orderer no longer holds the batches a node needs (etcd compacted them while the
// node was down or paused), the node fetches the blocks from another node and applies each one only if its own
// contract rebuilds it to exactly the same block (LedgerNode.applyPeerBlock). Then it asks where that peer's orderer
// stood at the last block, so delivery from the orderer resumes right after it.

import { type Dispatcher, request } from "undici";
import type { Block } from "../ledger/types.ts";
import type { LedgerNode } from "./ledger-node.ts";
import type { Logger } from "./logger.ts";

export interface CatchUpOptions {
  /** Base URLs of other nodes, tried in order. */
  peers: () => string[] | Promise<string[]>;
  /** HTTPS to peers: an undici Agent trusting the network's CA. */
  dispatcher?: Dispatcher;
  log: Logger;
  /** Per HTTP request. */
  timeoutMs?: number;
  /** Stops catching up (the node is closing). */
  signal?: AbortSignal;
}

export interface CatchUpResult {
  height: number;
  peer: string;
  /** The orderer's position at `height`, as the peer's orderer recorded it. */
  position: { revision: number; time: number };
}

export class CatchUpError extends Error {}

async function getText(url: string, options: CatchUpOptions): Promise<string> {
  const response = await request(url, {
    dispatcher: options.dispatcher,
    signal: options.signal,
    headersTimeout: options.timeoutMs ?? 10_000,
    bodyTimeout: options.timeoutMs ?? 10_000,
  });
  const text = await response.body.text();
  if (response.statusCode !== 200) throw new CatchUpError(`${url} answered ${response.statusCode}`);
  return text;
}

function isPosition(value: unknown): value is { revision: number; time: number } {
  const v = value as { revision?: unknown; time?: unknown };
  return Number.isSafeInteger(v?.revision) && (v.revision as number) > 0 && Number.isSafeInteger(v?.time);
}

/**
 * Fetches and applies blocks from one peer until it has no more, then returns the peer's orderer position at the
 * node's new height. Throws (leaving every block applied so far in place) when the peer misbehaves or is unreachable.
 */
export async function catchUpFrom(node: LedgerNode, peer: string, options: CatchUpOptions): Promise<CatchUpResult> {
  const base = peer.replace(/\/+$/, "");
  for (;;) {
    if (options.signal?.aborted) throw new CatchUpError("catching up was stopped");
    const from = node.height + 1;
    let text: string;
    try {
      text = await getText(`${base}/ledger/blocks?from=${from}`, options);
    } catch (error) {
      if (error instanceof CatchUpError && /answered 404$/.test(error.message)) break;
      throw error;
    }
    const lines = text.split("\n").filter((l) => l.length > 0);
    for (const line of lines) {
      let block: Block;
      try {
        // Each line is {hash, block}: the block with its txs (as GET /ledger/blocks/:h serves it).
        block = (JSON.parse(line) as { block: Block }).block;
      } catch {
        throw new CatchUpError(`${base} sent a block page that is not JSON lines`);
      }
      await node.applyPeerBlock(block);
    }
    options.log.info({ peer: base, height: node.height }, "caught up blocks from a peer");
  }
  const raw = JSON.parse(await getText(`${base}/ledger/orderer-position/${node.height}`, options));
  if (!isPosition(raw)) throw new CatchUpError(`${base} sent no usable orderer position for block ${node.height}`);
  return { height: node.height, peer: base, position: { revision: raw.revision, time: raw.time } };
}

/**
 * Tries each peer in turn (and again, with back-off, until `signal` aborts) until one brings the node up to date.
 * A peer whose blocks do not rebuild here is skipped and logged; what it sent before the bad block stays applied
 * only because each of those blocks rebuilt exactly.
 */
export async function catchUp(node: LedgerNode, options: CatchUpOptions, signal?: AbortSignal): Promise<CatchUpResult> {
  options = { ...options, signal };
  let delay = 200;
  for (;;) {
    const peers = await options.peers();
    for (const peer of peers) {
      if (signal?.aborted) throw new CatchUpError("catching up was stopped");
      try {
        return await catchUpFrom(node, peer, options);
      } catch (error) {
        options.log.warn({ peer, err: (error as Error).message }, "could not catch up from this peer");
      }
    }
    if (signal?.aborted) throw new CatchUpError("catching up was stopped");
    if (peers.length === 0) options.log.warn({}, "no peer to catch up from yet; retrying");
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, delay);
      const wake = () => {
        clearTimeout(timer);
        resolve();
      };
      signal?.addEventListener("abort", wake, { once: true });
    });
    delay = Math.min(delay * 2, 5000);
  }
}
