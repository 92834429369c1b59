import { MemoryState } from "../contract/index.ts";
import { blockHash, GENESIS_PREV_HASH, INITIAL_STATE_DIGEST } from "../ledger/block.ts";
import { canonicalJson } from "../ledger/canonical.ts";
import { bytesEqual, toHex } from "../ledger/encoding.ts";
import { EMPTY_FRONTIER, type Frontier, frontierRoot } from "../ledger/merkle.ts";
import { verifyTreeHead } from "../ledger/sth.ts";
import { parseSignedTx } from "../ledger/tx.ts";
import type { Block, BlockEntry, Hex32, SignedTreeHead, SignedTx } from "../ledger/types.ts";
import { type LedgerStore, nonceKey } from "../store/ledger-store.ts";
import { type BlockInput, buildBlock } from "./block-builder.ts";
import type { VerifyPool } from "./verify-pool.ts";

export interface VerifyProblem {
  height: number;
  reason: string;
}

export interface VerifyReport {
  ok: boolean;
  blocks: number;
  txs: number;
  /** The log as replayed: what a signed tree head from the node must match. */
  size: number;
  root: Hex32;
  stateDigest: Hex32;
  headHash: Hex32 | undefined;
  problem?: VerifyProblem;
  elapsedMs: number;
}

export interface BlockSource {
  /** Blocks in height order, each with the hash the source claims for it (if it stores one). */
  blocks(): AsyncIterable<{ block: Block; claimedHash?: Hex32 }> | Iterable<{ block: Block; claimedHash?: Hex32 }>;
}

/** The verifier itself could not run (not a finding about the ledger). */
export class VerifierError extends Error {}

/** Thrown inside the replay to stop at the first problem. */
class Bad extends Error {
  readonly height: number;
  constructor(height: number, reason: string) {
    super(reason);
    this.height = height;
  }
}

/** Keeps signature checks for the next blocks running on the pool while the main thread applies the current one. */
const SIG_WINDOW_TXS = 20_000;

/**
 * Replays a ledger from genesis: hash chain, tx ids, signatures, contract results (against a fresh state), state
 * digest, per-block Merkle roots and the global log. Stops at the first problem, naming the height and why.
 */
export async function replayLedger(
  source: BlockSource,
  pool: VerifyPool,
  options: { onProgress?: (height: number, txs: number) => void; store?: LedgerStore } = {},
): Promise<VerifyReport & { state: MemoryState; ids: ReadonlySet<Hex32>; nonceKeys: ReadonlySet<string> }> {
  const started = performance.now();
  const state = new MemoryState();
  let frontier: Frontier = EMPTY_FRONTIER;
  let prevHash: Hex32 = GENESIS_PREV_HASH;
  let digest: Hex32 = INITIAL_STATE_DIGEST;
  let expectedHeight = 0;
  let txCount = 0;
  let headHash: Hex32 | undefined;
  const seenIds = new Set<Hex32>();
  /** `nonceKey`s, as the store keeps them: 32 hex chars each where `signer:nonce` would take ~100. */
  const usedNonces = new Set<string>();
  const pending: { block: Block; claimedHash?: Hex32; sigs: Promise<boolean[]> }[] = [];
  let pendingTxs = 0;

  const applyBlock = async (item: { block: Block; claimedHash?: Hex32; sigs: Promise<boolean[]> }) => {
    const { block } = item;
    const h = typeof block.height === "number" ? block.height : expectedHeight;
    // Named by the height that does not hold (a block missing or out of place), not by the stray block's own height.
    if (block.height !== expectedHeight)
      throw new Bad(expectedHeight, `expected block height ${expectedHeight}, found ${block.height}`);
    if (block.prevHash !== prevHash) throw new Bad(h, "prevHash does not match the previous block's hash");
    const sigs = await item.sigs;
    const input: BlockInput = { height: block.height, time: block.time, proposer: block.proposer, txs: [] };
    block.txs.forEach((entry, pos) => {
      const parsed = parseSignedTx(entry?.tx);
      if (!parsed.ok) throw new Bad(h, `tx ${pos} is malformed: ${parsed.error}`);
      if (parsed.id !== entry.id) throw new Bad(h, `tx ${pos}: its id is not the hash of its content`);
      if (sigs[pos] !== true) throw new Bad(h, `tx ${pos} (${parsed.id.slice(0, 16)}…): its signature does not verify`);
      input.txs.push({ tx: parsed.tx, id: parsed.id, sigOk: true });
    });
    const tip = { height: h - 1, hash: prevHash, stateDigest: digest, frontier };
    const rebuilt = buildBlock(tip, input, state, {
      inLog: (id) => seenIds.has(id),
      nonceUsed: (signer, nonce) => usedNonces.has(nonceKey(signer, nonce)),
    });
    if (rebuilt.skipped > 0) throw new Bad(h, "the block repeats a tx that is already in the log");
    rebuilt.block.txs.forEach((replayed, pos) => {
      const recorded = block.txs[pos] as BlockEntry;
      if (recorded.result?.valid !== replayed.result.valid || recorded.result?.code !== replayed.result.code) {
        const was = recorded.result?.valid ? "valid" : `rejected (${recorded.result?.code})`;
        const now = replayed.result.valid ? "valid" : `rejected (${replayed.result.code})`;
        throw new Bad(h, `tx ${pos} (${replayed.id.slice(0, 16)}…) is recorded as ${was} but replays as ${now}`);
      }
      seenIds.add(replayed.id);
      usedNonces.add(nonceKey(replayed.tx.signer, replayed.tx.nonce));
    });
    // The store's tx and replay indexes are compared with the replay as a whole afterwards (`verifyStore`).
    if (options.store) {
      for (const n of rebuilt.nodes) {
        let stored: Uint8Array;
        try {
          stored = options.store.node(n.level, n.index);
        } catch {
          throw new Bad(h, `Merkle node ${n.level}/${n.index} is missing from the store`);
        }
        if (!bytesEqual(stored, n.hash)) throw new Bad(h, `stored Merkle node ${n.level}/${n.index} was altered`);
      }
    }
    if (block.txRoot !== rebuilt.block.txRoot) throw new Bad(h, "txRoot does not match the block's txs");
    if (block.size !== rebuilt.block.size) {
      throw new Bad(h, `size ${block.size} does not match the log size ${rebuilt.block.size}`);
    }
    if (block.stateDigest !== rebuilt.block.stateDigest) {
      throw new Bad(h, "stateDigest does not match the replayed tx results");
    }
    if (blockHash(block) !== rebuilt.hash) throw new Bad(h, "the block header has fields that do not replay");
    if (item.claimedHash !== undefined && item.claimedHash !== rebuilt.hash) {
      throw new Bad(h, "the stored block hash does not match the block's header");
    }
    txCount += block.txs.length;
    frontier = rebuilt.frontier;
    digest = rebuilt.block.stateDigest;
    prevHash = rebuilt.hash;
    headHash = rebuilt.hash;
    expectedHeight++;
    options.onProgress?.(block.height, txCount);
  };

  let problem: VerifyProblem | undefined;
  try {
    // What goes wrong while reading (an unreadable line, a block without txs) is reported only once the blocks read
    // before it have been applied: they may hold the first bad height, and the read problem's height is its position.
    let readError: unknown;
    let applying = false;
    try {
      for await (const item of source.blocks()) {
        if (!Array.isArray(item.block?.txs)) {
          readError = new Bad(expectedHeight + pending.length, "block has no txs array");
          break;
        }
        const txs: { id: string; tx: SignedTx }[] = item.block.txs.map((e) => ({ id: String(e?.id), tx: e?.tx }));
        // A pool that fails is the verifier's problem, not the ledger's: it propagates as VerifierError.
        const sigs = pool.verify(txs).catch((error: Error) => {
          throw new VerifierError(`signature checks could not run: ${error.message}`);
        });
        pending.push({ ...item, sigs });
        pendingTxs += txs.length;
        while (pending.length > 0 && (pendingTxs > SIG_WINDOW_TXS || pending.length > 256)) {
          const next = pending.shift() as (typeof pending)[number];
          pendingTxs -= next.block.txs.length;
          applying = true;
          await applyBlock(next);
          applying = false;
        }
      }
    } catch (error) {
      if (applying) throw error;
      readError = error;
    }
    while (pending.length > 0) await applyBlock(pending.shift() as (typeof pending)[number]);
    if (readError !== undefined) throw readError;
    if (expectedHeight === 0) throw new Bad(0, "the ledger is empty: no genesis block");
  } catch (error) {
    for (const p of pending) p.sigs.catch(() => {});
    if (error instanceof VerifierError) throw error;
    if (error instanceof Bad) problem = { height: error.height, reason: error.message };
    else problem = { height: expectedHeight, reason: (error as Error).message };
  }
  return {
    ok: problem === undefined,
    blocks: expectedHeight,
    txs: txCount,
    size: frontier.size,
    root: toHex(frontierRoot(frontier)),
    stateDigest: digest,
    headHash,
    problem,
    elapsedMs: performance.now() - started,
    state,
    ids: seenIds,
    nonceKeys: usedNonces,
  };
}

/**
 * `careledger verify --dir`: a replay of the node's blocks plus the checks only the store allows — its Merkle nodes,
 * tx index, signed tree head and contract state table must all agree with the replay.
 */
export async function verifyStore(
  store: LedgerStore,
  pool: VerifyPool,
  options: { onProgress?: (height: number, txs: number) => void; genesisHash?: Hex32 } = {},
): Promise<VerifyReport> {
  const problems = store.quickCheck();
  if (problems.length > 0) {
    return failedReport(0, `the database file is damaged: ${problems.slice(0, 3).join("; ")}`);
  }
  const source: BlockSource = {
    *blocks() {
      for (const { block, hash } of store.blocks(0)) yield { block, claimedHash: hash };
    },
  };
  const report = await replayLedger(source, pool, { onProgress: options.onProgress, store });
  const { state, ids, nonceKeys, ...rest } = report;
  if (!report.ok) {
    // An index gap in a block before the one the replay stopped at is the first problem.
    const gap = checkIndexes(store, ids, nonceKeys, report.problem?.height ?? Number.POSITIVE_INFINITY);
    return typeof gap === "object" ? { ...rest, problem: gap } : rest;
  }
  const head = store.head();
  const fail = (reason: string): VerifyReport => ({
    ...rest,
    ok: false,
    problem: { height: head?.height ?? 0, reason },
  });
  if (options.genesisHash !== undefined && store.getHeader(0)?.hash !== options.genesisHash) {
    return fail("block 0 is not this network's genesis block");
  }
  if (!head || head.hash !== report.headHash) return fail("the store's head is not the last block replayed");
  const sth = store.latestTreeHead();
  if (!sth) return fail("the store has no signed tree head");
  const sthProblem = checkTreeHead(sth, report);
  if (sthProblem) return fail(sthProblem);
  const indexProblem = checkIndexes(store, ids, nonceKeys, Number.POSITIVE_INFINITY);
  if (typeof indexProblem === "object") return { ...rest, ok: false, problem: indexProblem };
  if (indexProblem !== undefined) return fail(indexProblem);
  const stateProblem = compareState(state, store);
  if (stateProblem) return fail(stateProblem);
  return rest;
}

/** How one of the store's indexes compares with the replay: replayed keys it holds, and one it holds that was not. */
interface Coverage {
  covered: number;
  stray?: string;
}

function coverage(indexed: Iterable<string>, replayed: ReadonlySet<string>): Coverage {
  let covered = 0;
  let stray: string | undefined;
  // On to the end past a stray: a replay that stopped early leaves the index's later keys unreplayed.
  for (const key of indexed) {
    if (replayed.has(key)) covered++;
    else stray ??= key;
  }
  return stray === undefined ? { covered } : { covered, stray };
}

/**
 * The store's tx index and replay index against the replay, in one pass over each (a lookup per tx cost ~35 µs of the
 * main thread's ~60 µs per tx). A replayed key missing from an index is reported as the first tx that misses it, found
 * by `firstIndexGap` below `belowHeight` (where the replay stopped, if it did); otherwise a key of no replayed tx.
 */
function checkIndexes(
  store: LedgerStore,
  ids: ReadonlySet<Hex32>,
  nonceKeys: ReadonlySet<string>,
  belowHeight: number,
): VerifyProblem | string | undefined {
  const txIndex = coverage(store.indexedIds(), ids);
  const replayIndex = coverage(store.indexedNonceKeys(), nonceKeys);
  // Every key an index holds was replayed and it holds as many as were replayed: it holds every one.
  if (txIndex.covered < ids.size || replayIndex.covered < nonceKeys.size) {
    const gap = firstIndexGap(store, belowHeight);
    if (gap) return gap;
  }
  if (txIndex.stray !== undefined) return `the store's tx index holds ${txIndex.stray.slice(0, 16)}…, a tx in no block`;
  if (replayIndex.stray !== undefined) return "the store's replay index holds a key of no tx in the blocks";
  return undefined;
}

/**
 * The first tx, in blocks below `belowHeight`, missing from the store's tx index or replay index (a missing nonce key
 * would let the same (signer, nonce) be logged again as valid). A lookup per tx: run only once one is missing.
 */
function firstIndexGap(store: LedgerStore, belowHeight: number): VerifyProblem | undefined {
  try {
    for (const { block } of store.blocks(0)) {
      if (!(block.height < belowHeight)) return undefined;
      for (const [pos, entry] of (Array.isArray(block.txs) ? block.txs : []).entries()) {
        const id = entry?.id;
        const tx = entry?.tx;
        if (typeof id !== "string" || typeof tx?.signer !== "string" || typeof tx.nonce !== "string") continue;
        const missing = !store.hasTx(id) ? "tx index" : !store.nonceUsed(tx.signer, tx.nonce) ? "replay index" : "";
        if (missing) {
          return {
            height: block.height,
            reason: `tx ${pos} (${id.slice(0, 16)}…) is missing from the store's ${missing}`,
          };
        }
      }
    }
  } catch {
    // A block that does not read: the replay has reported it.
  }
  return undefined;
}

/** A report for a ledger that could not be replayed at all. */
export function failedReport(height: number, reason: string): VerifyReport {
  return {
    ok: false,
    blocks: 0,
    txs: 0,
    size: 0,
    root: "",
    stateDigest: "",
    headHash: undefined,
    problem: { height, reason },
    elapsedMs: 0,
  };
}

export function checkTreeHead(sth: SignedTreeHead, report: Pick<VerifyReport, "size" | "root" | "stateDigest">) {
  if (!verifyTreeHead(sth)) return "the signed tree head's signature is invalid";
  if (sth.size !== report.size || sth.root !== report.root) {
    return `the signed tree head (size ${sth.size}) does not match the replayed log (size ${report.size})`;
  }
  if (sth.stateDigest !== report.stateDigest) return "the signed tree head's state digest does not match the replay";
  return undefined;
}

/** The state table must equal, key for key, the state a fresh replay builds. */
function compareState(state: MemoryState, store: LedgerStore): string | undefined {
  const replayed = new Map<string, string>();
  for (const [key, value] of state.entries()) {
    if (value !== undefined) replayed.set(key, canonicalJson(value));
  }
  let rows = 0;
  for (const row of store.stateRows()) {
    rows++;
    const expected = replayed.get(row.key);
    if (expected === undefined) return `state key ${row.key} is in the store but not in the replayed state`;
    let actual: string;
    try {
      actual = canonicalJson(JSON.parse(row.value));
    } catch {
      return `state key ${row.key} holds unreadable data`;
    }
    if (actual !== expected) return `state key ${row.key} differs from the replayed state`;
  }
  if (rows !== replayed.size) return `the store holds ${rows} state keys but the replay built ${replayed.size}`;
  return undefined;
}
