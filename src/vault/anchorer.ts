// Puts the vault's anchor entries on the ledger as `record.anchor` txs signed by the node key, coalescing concurrent
// writers into shared txs, and reads anchors back for the vault's integrity checks.

import { firstRefusedItem, MAX_LIST_ITEMS, STATE_KEYS, type StateReader } from "../contract/index.ts";
import type { AnchorRec, ResourceRec } from "../contract/state.ts";
import { canonicalLengthOfPlain } from "../ledger/canonical.ts";
import type { KeyPair } from "../ledger/keys.ts";
import { MAX_TX_BYTES } from "../ledger/tx.ts";
import type { Hex32, SignedTx } from "../ledger/types.ts";
import type { CommitResult } from "../node/ledger-node.ts";
import { signNewWithId } from "../node/network.ts";
import type { AnchorEntry } from "./vault.ts";

/** What the batcher needs of a node (`LedgerNode` has it). */
export interface TxSubmitter {
  submit(items: { tx: SignedTx; id: Hex32 }[]): Promise<Promise<CommitResult>[]>;
}

/**
 * An anchor that did not make it onto the ledger. `code` is the contract's result code of the rejected tx
 * (`not-found` for an unregistered patient, `already-exists`, `erased`, …), `invalid-entry` for an entry the
 * contract's schema refuses (checked before anything is submitted), or `submit-failed` (node busy, halted, closing).
 */
export class AnchorError extends Error {
  override name = "AnchorError";
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

export interface AnchorBatcherOptions {
  node: TxSubmitter;
  /** The node key: `record.anchor` must be signed by a node key (or admin) of the custodian. */
  key: KeyPair;
  /** This node's organisation id. */
  custodian: string;
  now?: () => number;
  /** Entries per tx (the contract allows 1000). */
  maxEntriesPerTx?: number;
  /** How long the first caller waits for others to share its tx (ms). */
  lingerMs?: number;
}

/** An entry as the `record.anchor` payload holds it. */
interface LedgerAnchor {
  custodian: string;
  patient?: string;
  resourceType: string;
  resourceId: string;
  version: string;
  commitment: string;
  labels: string[];
  date?: string;
}

interface Caller {
  resolve: () => void;
  reject: (error: Error) => void;
  /** Parts of this caller's entries not yet committed. */
  outstanding: number;
  settled: boolean;
}

interface Part {
  caller: Caller;
  entries: LedgerAnchor[];
  sizes: number[];
}

/** Room kept in a tx body for the envelope (type, signer, nonce, createdAt, signature) around the payload. */
const ENVELOPE_ROOM = 1024;
const PAYLOAD_SHELL = '{"anchors":[]}'.length;

/**
 * Turns anchor entries into `record.anchor` txs: callers within `lingerMs` of each other share txs (at most
 * `maxEntriesPerTx` entries and 64 KiB each, so in practice ~200 entries a tx); `anchor()` resolves when every tx
 * holding the caller's entries is committed valid. A shared tx the contract rejects is retried once per caller, so
 * one caller's bad entry (say, an unregistered patient) fails only that caller. Entries are checked against the
 * contract's schema before anything is submitted.
 *
 * A caller whose entries needed several txs may see some committed and one rejected: the committed anchors stay on
 * the ledger with no record behind them once the vault aborts the write, and the vault never reuses those versions.
 */
export class AnchorBatcher {
  private readonly node: TxSubmitter;
  private readonly key: KeyPair;
  private readonly custodian: string;
  private readonly now: () => number;
  private readonly maxEntries: number;
  private readonly lingerMs: number;
  private readonly maxPayloadBytes = MAX_TX_BYTES - ENVELOPE_ROOM;
  private queue: Part[] = [];
  private queuedEntries = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Txs submitted, for tests and metrics. */
  txsSubmitted = 0;

  constructor(options: AnchorBatcherOptions) {
    this.node = options.node;
    this.key = options.key;
    this.custodian = options.custodian;
    this.now = options.now ?? Date.now;
    this.maxEntries = Math.min(MAX_LIST_ITEMS, Math.max(1, options.maxEntriesPerTx ?? MAX_LIST_ITEMS));
    this.lingerMs = options.lingerMs ?? 1;
  }

  /** Anchors the entries; resolves once all are committed valid, rejects with `AnchorError` otherwise. */
  anchor(entries: readonly AnchorEntry[]): Promise<void> {
    if (entries.length === 0) return Promise.resolve();
    const ledger = entries.map((e) => this.toLedger(e));
    const refused = firstRefusedItem("record.anchor", "anchors", ledger);
    if (refused >= 0) {
      return Promise.reject(
        new AnchorError(
          "invalid-entry",
          `anchor entry ${refused} (${entries[refused]?.resourceType}): the contract's record.anchor schema refuses it`,
        ),
      );
    }
    // Entries are plain ASCII by schema (checked just above).
    const sizes = ledger.map((entry) => canonicalLengthOfPlain(entry) + 1);
    const tooLarge = sizes.findIndex((size) => size + PAYLOAD_SHELL > this.maxPayloadBytes);
    if (tooLarge >= 0) {
      return Promise.reject(new AnchorError("invalid-entry", `anchor entry ${tooLarge} is too large for a tx`));
    }
    return new Promise<void>((resolve, reject) => {
      const caller: Caller = { resolve, reject, outstanding: 1, settled: false };
      this.queue.push({ caller, entries: ledger, sizes });
      this.queuedEntries += ledger.length;
      if (this.queuedEntries >= this.maxEntries) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.lingerMs);
    });
  }

  /** Sends whatever is queued now. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const parts = this.queue;
    this.queue = [];
    this.queuedEntries = 0;
    if (parts.length === 0) return;
    const txs = this.pack(parts);
    this.send(txs, true).catch((error: Error) => {
      const failure = new AnchorError("submit-failed", `record.anchor failed: ${error.message}`);
      for (const tx of txs) for (const p of tx) this.fail(p.caller, failure);
    });
  }

  private toLedger(e: AnchorEntry): LedgerAnchor {
    const entry: LedgerAnchor = {
      custodian: this.custodian,
      resourceType: e.resourceType,
      resourceId: e.resourceId,
      version: e.version,
      commitment: e.commitment,
      labels: [...e.labels],
    };
    if (e.patient !== null) entry.patient = e.patient;
    if (e.date !== undefined) entry.date = e.date;
    return entry;
  }

  /**
   * Greedy packing into txs of at most `maxEntries` entries and `maxPayloadBytes`; a caller's entries go into one
   * tx when they fit in one (so a rejection elsewhere does not touch them), and are split only when they do not.
   */
  private pack(parts: Part[]): Part[][] {
    const txs: Part[][] = [];
    let current: Part[] = [];
    let count = 0;
    let bytes = PAYLOAD_SHELL;
    const close = () => {
      if (current.length > 0) txs.push(current);
      current = [];
      count = 0;
      bytes = PAYLOAD_SHELL;
    };
    for (const part of parts) {
      const total = part.sizes.reduce((a, b) => a + b, 0);
      if (count + part.entries.length <= this.maxEntries && bytes + total <= this.maxPayloadBytes) {
        current.push(part);
        count += part.entries.length;
        bytes += total;
        continue;
      }
      if (part.entries.length <= this.maxEntries && PAYLOAD_SHELL + total <= this.maxPayloadBytes) {
        close();
        current.push(part);
        count = part.entries.length;
        bytes += total;
        continue;
      }
      // Too big for one tx: split it, each piece counting as an outstanding part of the same caller.
      part.caller.outstanding--;
      let start = 0;
      while (start < part.entries.length) {
        let end = start;
        while (
          end < part.entries.length &&
          count + (end - start) < this.maxEntries &&
          bytes + (part.sizes[end] as number) <= this.maxPayloadBytes
        ) {
          bytes += part.sizes[end] as number;
          end++;
        }
        if (end === start) {
          close();
          continue;
        }
        part.caller.outstanding++;
        current.push({
          caller: part.caller,
          entries: part.entries.slice(start, end),
          sizes: part.sizes.slice(start, end),
        });
        count += end - start;
        start = end;
        if (start < part.entries.length) close();
      }
    }
    close();
    return txs;
  }

  private async send(txs: Part[][], retryShared: boolean): Promise<void> {
    const signed = txs.map((parts) => {
      const anchors = parts.flatMap((p) => p.entries);
      try {
        return signNewWithId(this.key, "record.anchor", { anchors }, this.now());
      } catch (error) {
        throw new Error(`record.anchor tx is malformed: ${(error as Error).message}`);
      }
    });
    let answers: Promise<CommitResult>[];
    try {
      this.txsSubmitted += signed.length;
      answers = await this.node.submit(signed);
    } catch (error) {
      const failure = new AnchorError(
        "submit-failed",
        `record.anchor could not be submitted: ${(error as Error).message}`,
      );
      for (const parts of txs) for (const p of parts) this.fail(p.caller, failure);
      return;
    }
    await Promise.all(
      answers.map(async (answer, i) => {
        const parts = txs[i] as Part[];
        let result: CommitResult;
        try {
          result = await answer;
        } catch (error) {
          const failure = new AnchorError(
            "submit-failed",
            `record.anchor tx did not commit: ${(error as Error).message}`,
          );
          for (const p of parts) this.fail(p.caller, failure);
          return;
        }
        if (result.valid) {
          for (const p of parts) this.done(p.caller);
          return;
        }
        if (retryShared && new Set(parts.map((p) => p.caller)).size > 1) {
          // Someone's entry spoiled a shared tx: give each caller a tx of its own to find out whose.
          const byCaller = new Map<Caller, Part[]>();
          for (const p of parts) byCaller.set(p.caller, [...(byCaller.get(p.caller) ?? []), p]);
          await this.send([...byCaller.values()], false);
          return;
        }
        const failure = new AnchorError(
          result.code,
          `record.anchor tx ${result.id} was rejected by the ledger: ${result.code}`,
        );
        for (const p of parts) this.fail(p.caller, failure);
      }),
    );
  }

  private done(caller: Caller): void {
    caller.outstanding--;
    if (caller.outstanding === 0 && !caller.settled) {
      caller.settled = true;
      caller.resolve();
    }
  }

  private fail(caller: Caller, error: Error): void {
    if (caller.settled) return;
    caller.settled = true;
    caller.reject(error);
  }
}

/**
 * The vault's view of the ledger for one custodian: the anchored commitment of a version (`anchorOf`, for every
 * read) and whether a pending version made it (`isAnchored`, at open). Reads committed contract state.
 */
export function ledgerAnchors(state: StateReader, custodian: string) {
  const anchorOf = (type: string, id: string, version: string): string | undefined =>
    (state.get(STATE_KEYS.anchor(custodian, type, id, version)) as AnchorRec | undefined)?.commitment;
  return {
    anchorOf,
    isAnchored: (type: string, id: string, version: string, commitment: string): boolean =>
      anchorOf(type, id, version) === commitment,
    // The contract keeps the last anchored version per resource; this vault's versions count up from 1.
    latestAnchored: (type: string, id: string): number => {
      const latest = Number((state.get(STATE_KEYS.resource(custodian, type, id)) as ResourceRec | undefined)?.latest);
      return Number.isSafeInteger(latest) && latest > 0 ? latest : 0;
    },
  };
}
