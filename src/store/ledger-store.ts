import { hash } from "node:crypto";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { StateStore } from "../contract/index.ts";
import { fromHex } from "../ledger/encoding.ts";
import { EMPTY_FRONTIER, type Frontier, type MerkleNodeReader } from "../ledger/merkle.ts";
import type { Block, BlockEntry, BlockHeader, Hex32, SignedTreeHead } from "../ledger/types.ts";
import { storedTxs, txsText } from "./block-txs.ts";
import { ScalableBloom } from "./bloom.ts";
import { CHECKPOINTED_WRITER_PRAGMAS, Checkpointer } from "./checkpointer.ts";
import { StoreError } from "./errors.ts";
import { GroupSync } from "./group-sync.ts";
import { inWriteTransaction } from "./transaction.ts";

export { StoreError };

/** Where the ledger stands after its last durable block. */
export interface StoreHead {
  height: number;
  hash: Hex32;
  size: number;
  stateDigest: Hex32;
  time: number;
}

export interface StoredTx {
  entry: BlockEntry;
  height: number;
  /** Index of the tx in the global Merkle log. */
  index: number;
}

export interface MerkleNodeRow {
  level: number;
  index: number;
  hash: Uint8Array;
}

/** 4: a block's txs are stored zstd-compressed (`block-txs.ts`); a schema-3 store opens and is marked 4. */
const SCHEMA_VERSION = "4";
/** A store whose rows hold txs as JSON text: read as it is, written from then on as schema 4. */
const SCHEMA_TEXT_TXS = "3";
/** How many txs the in-memory part of the tx index holds before it is written out, sorted, in one go. */
const INDEX_FLUSH_TXS = 100_000;

/**
 * SQLite persistence of blocks, the tx index, the Merkle log's perfect-subtree nodes and contract state. One block is
 * one SQLite transaction (WAL, synchronous=NORMAL; `durable()` flushes the WAL), so after a crash the store holds
 * whole blocks only.
 */
export class LedgerStore implements MerkleNodeReader {
  readonly path: string;
  /** Snapshot and read-only stores never write, not even the index at close. */
  private readonly readOnly: boolean;
  private readonly indexFlushTxs: number;
  readonly state: SqliteState;
  private readonly db: DatabaseSync;
  private readonly stmts: ReturnType<typeof prepareStatements>;
  private headCache: StoreHead | undefined;
  /** First leaf index and height of every block that added leaves, ascending: finds a leaf's Merkle row. */
  private readonly segStarts: number[] = [];
  private readonly segHeights: number[] = [];
  private readonly merkleCache = new Map<number, Uint8Array>();
  private readonly sync: GroupSync;
  private readonly checkpointer: Checkpointer | undefined;
  private readonly ids: ScalableBloom;
  private readonly nonces: ScalableBloom;
  /** The tx index for blocks committed since the last index flush: id → where, and the (signer, nonce) keys. */
  private readonly recent = new Map<Hex32, RecentTx>();
  private readonly recentNonces = new Set<string>();
  /** The same keys, bucketed by first byte as they arrive, so freezing them for writing out costs nothing. */
  private idRuns = new Runs();
  private nonceRuns = new Runs();
  /** Ids and nonce keys being written out, each stream sorted, a slice per block; and how far that has gone. */
  private draining: { ids: Drain; nonces: Drain } | undefined;

  private constructor(path: string, db: DatabaseSync, readOnly: boolean, indexFlushTxs: number) {
    this.path = path;
    this.readOnly = readOnly;
    this.indexFlushTxs = indexFlushTxs;
    this.db = db;
    this.stmts = prepareStatements(db);
    this.sync = new GroupSync(path);
    this.sync.flushNow();
    this.checkpointer = readOnly ? undefined : new Checkpointer(path, { rewindOnlyAtBound: true });
    this.state = new SqliteState(this.stmts.stateGet, this.stmts.stateResourceKeys);
    this.headCache = this.readHead();
    for (const row of db.prepare("SELECT height, start FROM merkle_blocks ORDER BY height").iterate()) {
      const r = row as { height: number; start: number };
      this.segStarts.push(r.start);
      this.segHeights.push(r.height);
    }
    const count = (db.prepare("SELECT count(*) AS n FROM txs").get() as { n: number }).n;
    this.ids = new ScalableBloom(2 * count + 100_000);
    this.nonces = new ScalableBloom(2 * count + 100_000);
    for (const row of db.prepare("SELECT id FROM txs").iterate()) {
      this.ids.add(Buffer.from((row as { id: Uint8Array }).id).toString("hex"));
    }
    for (const row of db.prepare("SELECT key FROM nonces").iterate()) {
      this.nonces.add(Buffer.from((row as { key: Uint8Array }).key).toString("hex"));
    }
    // Txs of blocks after the last index flush are indexed in memory until the next flush.
    // A drain interrupted by a crash may have written some of these already: those stay where they are.
    const indexed = Number(this.getMeta("indexedHeight") ?? "-1");
    for (const { block } of this.blocks(indexed + 1)) {
      this.remember(block, {
        id: (id) => this.stmts.txGet.get(fromHex(id)) !== undefined,
        nonce: (key) => this.stmts.nonceGet.get(fromHex(key)) !== undefined,
      });
    }
  }

  /** Adds a committed block's txs to the in-memory part of the tx index (minus what a crashed drain wrote). */
  private remember(block: Block, written?: { id(id: Hex32): boolean; nonce(key: string): boolean }): void {
    const firstIndex = block.size - block.txs.length;
    block.txs.forEach((entry, pos) => {
      const nonce = nonceKey(entry.tx.signer, entry.tx.nonce);
      this.ids.add(entry.id);
      this.nonces.add(nonce);
      if (!written?.id(entry.id)) {
        this.recent.set(entry.id, { height: block.height, idx: firstIndex + pos, pos, valid: entry.result.valid });
        this.idRuns.add(entry.id);
      }
      if (!written?.nonce(nonce)) {
        this.recentNonces.add(nonce);
        this.nonceRuns.add(nonce);
      }
    });
  }

  /**
   * Writes part of the in-memory tx index to SQLite inside the caller's transaction and returns the ids written.
   * Once `indexFlushTxs` txs wait, their ids are frozen in sorted order and written a slice per block: inserts into a
   * random-keyed B-tree dirty a page each, so sorted runs let many inserts share pages (measured: ~25 KB written per
   * tx when indexing block by block), and slices keep any one commit short (20,000 at once stalled ~200 ms).
   */
  private drainIndex(rows: number, all = false): Written {
    if (!this.draining && (all || this.recent.size >= this.indexFlushTxs) && this.unindexed() > 0) {
      const upTo = this.headCache?.height ?? -1;
      // Two streams, each in its own key order: ids for `txs`, nonce keys for `nonces`. Writing either in the
      // other's order would scatter its inserts over the whole B-tree again.
      this.draining = { ids: this.idRuns.freeze(upTo), nonces: this.nonceRuns.freeze(upTo) };
      this.idRuns = new Runs();
      this.nonceRuns = new Runs();
    }
    const drain = this.draining;
    if (!drain) return NOTHING_WRITTEN;
    const { keys: ids, at: idsAt } = takeSlice(drain.ids, rows, all);
    for (const id of ids) {
      const at = this.recent.get(id) as RecentTx;
      this.stmts.txPut.run(fromHex(id), at.height, at.idx, at.pos, at.valid ? 1 : 0);
    }
    const { keys: nonces, at: noncesAt } = takeSlice(drain.nonces, rows, all);
    for (const key of nonces) this.stmts.noncePut.run(fromHex(key));
    if (idsAt.run === 256 && noncesAt.run === 256) {
      this.stmts.metaPut.run("indexedHeight", String(drain.ids.upTo));
    }
    return { ids, nonces, idsAt, noncesAt };
  }

  /** Keys held only in memory (a crashed drain can leave an id written but not its nonce key, or the reverse). */
  private unindexed(): number {
    return this.recent.size + this.recentNonces.size;
  }

  /** After the transaction that wrote them committed: those keys are answered from SQLite from now on. */
  private drained(written: Written): void {
    const drain = this.draining;
    if (!drain || written === NOTHING_WRITTEN) return;
    for (const id of written.ids) this.recent.delete(id);
    for (const key of written.nonces) this.recentNonces.delete(key);
    drain.ids.at = written.idsAt;
    drain.nonces.at = written.noncesAt;
    if (drain.ids.at.run === 256 && drain.nonces.at.run === 256) this.draining = undefined;
  }

  /**
   * `snapshot`: read everything inside one read transaction, as of opening — `verify` and `export` of a data dir
   * whose node is running see one consistent ledger while the node keeps committing.
   */
  static open(
    path: string,
    options: { readOnly?: boolean; snapshot?: boolean; indexFlushTxs?: number } = {},
  ): LedgerStore {
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(path, { readOnly: options.readOnly ?? false });
      // Another connection (the node's, the checkpointer's) may hold a lock for a moment: wait, don't fail.
      db.exec("PRAGMA busy_timeout = 5000;");
      if (!options.readOnly) {
        // COMMIT writes the WAL without waiting for the disk; GroupSync flushes it off the event loop and callers
        // count a block as durable only once `durable()` resolves.
        db.exec(`${CHECKPOINTED_WRITER_PRAGMAS} PRAGMA synchronous = NORMAL;`);
      }
      db.exec("PRAGMA foreign_keys = OFF; PRAGMA cache_size = -65536;");
      if (!options.readOnly && !options.snapshot) createSchema(db);
      const version = (db.prepare("SELECT value FROM meta WHERE key = 'schema'").get() as { value: string } | undefined)
        ?.value;
      if (version === SCHEMA_TEXT_TXS && !options.readOnly && !options.snapshot) {
        // Blocks written from now on are compressed: a program that only knows schema 3 must refuse the file.
        db.prepare("UPDATE meta SET value = ? WHERE key = 'schema'").run(SCHEMA_VERSION);
      } else if (version !== SCHEMA_VERSION && version !== SCHEMA_TEXT_TXS) {
        throw new StoreError("schema", `unsupported store schema ${version ?? "(none)"} in ${path}`);
      }
      // The first read after BEGIN fixes the snapshot every later read of this connection sees.
      if (options.snapshot) db.exec("BEGIN; SELECT count(*) FROM meta;");
    } catch (error) {
      if (error instanceof StoreError) throw error;
      throw new StoreError("open", `cannot open ledger store ${path}: ${(error as Error).message}`);
    }
    return new LedgerStore(
      path,
      db,
      Boolean(options.readOnly || options.snapshot),
      options.indexFlushTxs ?? INDEX_FLUSH_TXS,
    );
  }

  head(): StoreHead | undefined {
    return this.headCache;
  }

  private readHead(): StoreHead | undefined {
    const row = this.stmts.lastBlock.get() as StoredBlockRow | undefined;
    if (!row) return undefined;
    const header = JSON.parse(row.header) as BlockHeader;
    return {
      height: header.height,
      hash: row.hash,
      size: header.size,
      stateDigest: header.stateDigest,
      time: header.time,
    };
  }

  /** The right edge of the Merkle log, rebuilt from stored perfect nodes: one per set bit of the size. */
  frontier(): Frontier {
    const size = this.headCache?.size ?? 0;
    if (size === 0) return EMPTY_FRONTIER;
    const hashes: Uint8Array[] = [];
    let start = 0;
    for (let level = 52; level >= 0; level--) {
      const width = 2 ** level;
      if (size - start >= width) {
        hashes.push(this.node(level, start / width));
        start += width;
      }
    }
    return { size, hashes };
  }

  /**
   * The perfect subtree node (level, index). Nodes are stored packed, one row per block, in the order appends made
   * them, so the node closed by leaf L sits at nodesBefore(L) − nodesBefore(block start) + level in its block's row.
   */
  node(level: number, index: number): Uint8Array {
    const leaf = (index + 1) * 2 ** level - 1;
    const missing = () => new StoreError("missing-node", `Merkle node ${level}/${index} is missing from the store`);
    if (!Number.isSafeInteger(leaf) || leaf < 0 || leaf >= (this.headCache?.size ?? 0)) throw missing();
    const seg = this.segmentOf(leaf);
    if (!seg) throw missing();
    const nodes = this.merkleRow(seg.height);
    const at = (nodesBefore(leaf) - nodesBefore(seg.start) + level) * 32;
    if (!nodes || at + 32 > nodes.length) throw missing();
    return nodes.subarray(at, at + 32);
  }

  private segmentOf(leaf: number): { height: number; start: number } | undefined {
    const starts = this.segStarts;
    let lo = 0;
    let hi = starts.length - 1;
    if (hi < 0 || leaf < (starts[0] as number)) return undefined;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if ((starts[mid] as number) <= leaf) lo = mid;
      else hi = mid - 1;
    }
    return { height: this.segHeights[lo] as number, start: starts[lo] as number };
  }

  private merkleRow(height: number): Uint8Array | undefined {
    const cached = this.merkleCache.get(height);
    if (cached) return cached;
    const row = this.stmts.merkleGet.get(height) as { nodes: Uint8Array } | undefined;
    if (!row) return undefined;
    if (this.merkleCache.size >= 256) this.merkleCache.delete(this.merkleCache.keys().next().value as number);
    this.merkleCache.set(height, row.nodes);
    return row.nodes;
  }

  /** A block as stored: its hash, and its header and txs as JSON text. */
  blockRow(height: number): { hash: Hex32; header: string; txs: string } | undefined {
    const row = this.stmts.blockGet.get(height) as StoredBlockRow | undefined;
    return row && { hash: row.hash, header: row.header, txs: txsText(row.txs, height) };
  }

  getBlock(height: number): Block | undefined {
    const row = this.blockRow(height);
    if (!row) return undefined;
    return { ...(JSON.parse(row.header) as BlockHeader), txs: JSON.parse(row.txs) as BlockEntry[] };
  }

  getHeader(height: number): (BlockHeader & { hash: Hex32 }) | undefined {
    const row = this.blockRow(height);
    if (!row) return undefined;
    return { ...(JSON.parse(row.header) as BlockHeader), hash: row.hash };
  }

  /** Iterates blocks in height order without loading them all. */
  *blocks(fromHeight = 0): Generator<{ block: Block; hash: Hex32 }> {
    let next = fromHeight;
    for (;;) {
      const rows = this.stmts.blockRange.all(next, 64) as unknown as StoredBlockRow[];
      if (rows.length === 0) return;
      for (const row of rows) {
        const txs = JSON.parse(txsText(row.txs, row.height)) as BlockEntry[];
        const block = { ...(JSON.parse(row.header) as BlockHeader), txs };
        yield { block, hash: row.hash };
        next = block.height + 1;
      }
    }
  }

  getTx(id: Hex32): StoredTx | undefined {
    const row =
      this.recent.get(id) ??
      (this.stmts.txGet.get(fromHex(id)) as { height: number; idx: number; pos: number } | undefined);
    if (!row) return undefined;
    const block = this.getBlock(row.height);
    const entry = block?.txs[row.pos];
    if (!entry || entry.id !== id) {
      throw new StoreError(
        "corrupt",
        `tx index points at height ${row.height} position ${row.pos}, which is not ${id}`,
      );
    }
    return { entry, height: row.height, index: row.idx };
  }

  /**
   * Every tx id in the index, each once: SQLite's rows, then those held only in memory. For `verify`, which compares
   * the whole index with the replay in one pass instead of a lookup per tx.
   */
  *indexedIds(): Generator<Hex32> {
    for (const row of this.stmts.txIds.iterate()) yield Buffer.from((row as { id: Uint8Array }).id).toString("hex");
    for (const id of this.recent.keys()) if (this.stmts.txGet.get(fromHex(id)) === undefined) yield id;
  }

  /** Every replay-protection key in the index (see `nonceKey`), each once, as `indexedIds` does for ids. */
  *indexedNonceKeys(): Generator<string> {
    for (const row of this.stmts.nonceKeys.iterate()) {
      yield Buffer.from((row as { key: Uint8Array }).key).toString("hex");
    }
    for (const key of this.recentNonces) if (this.stmts.nonceGet.get(fromHex(key)) === undefined) yield key;
  }

  hasTx(id: Hex32): boolean {
    if (!this.ids.mayContain(id)) return false;
    return this.recent.has(id) || this.stmts.txGet.get(fromHex(id)) !== undefined;
  }

  nonceUsed(signer: string, nonce: string): boolean {
    const key = nonceKey(signer, nonce);
    if (!this.nonces.mayContain(key)) return false;
    return this.recentNonces.has(key) || this.stmts.nonceGet.get(fromHex(key)) !== undefined;
  }

  /**
   * Writes a block, its tx index rows, the Merkle nodes it completes, the contract state it changed and the node's
   * latest signed tree head — all in one transaction. Durable once `durable()` resolves after it.
   */
  commitBlock(block: Block, hash: Hex32, merkleNodes: MerkleNodeRow[], sth: SignedTreeHead | undefined): void {
    const expected = (this.headCache?.height ?? -1) + 1;
    if (block.height !== expected) {
      throw new StoreError("out-of-order", `block ${block.height} does not follow stored head ${expected - 1}`);
    }
    const start = block.size - block.txs.length;
    if (merkleNodes.length !== nodesBefore(block.size) - nodesBefore(start)) {
      throw new StoreError(
        "bad-nodes",
        `block ${block.height} comes with ${merkleNodes.length} Merkle nodes, not ${nodesBefore(block.size) - nodesBefore(start)}`,
      );
    }
    const packed = new Uint8Array(merkleNodes.length * 32);
    for (const [i, n] of merkleNodes.entries()) packed.set(n.hash, i * 32);
    const { txs, ...header } = block;
    const s = this.stmts;
    let written = NOTHING_WRITTEN;
    this.db.exec("BEGIN IMMEDIATE");
    try {
      s.blockPut.run(block.height, hash, JSON.stringify(header), storedTxs(JSON.stringify(txs), txs.length));
      if (packed.length > 0) s.merklePut.run(block.height, start, packed);
      this.state.flush(s.statePut, s.stateDel);
      if (sth) s.metaPut.run("sth", JSON.stringify(sth));
      // Drain at least twice as fast as txs arrive, so a frozen set is written out before the next one is due.
      written = this.drainIndex(Math.max(16, 2 * txs.length));
      this.db.exec("COMMIT");
      this.state.committed();
    } catch (error) {
      if (this.db.isTransaction) this.db.exec("ROLLBACK");
      this.state.discard();
      throw new StoreError("write", `could not store block ${block.height}: ${(error as Error).message}`);
    }
    if (packed.length > 0) {
      this.segStarts.push(start);
      this.segHeights.push(block.height);
    }
    this.drained(written);
    this.remember(block);
    this.headCache = {
      height: block.height,
      hash,
      size: block.size,
      stateDigest: block.stateDigest,
      time: block.time,
    };
  }

  latestTreeHead(): SignedTreeHead | undefined {
    const value = this.getMeta("sth");
    return value === undefined ? undefined : (JSON.parse(value) as SignedTreeHead);
  }

  getMeta(key: string): string | undefined {
    return (this.stmts.metaGet.get(key) as { value: string } | undefined)?.value;
  }

  /** Every stored state row, for `verify` to compare with a replay. */
  *stateRows(): Generator<{ key: string; value: string }> {
    for (const row of this.db.prepare("SELECT key, value FROM state ORDER BY key").iterate()) {
      yield row as { key: string; value: string };
    }
  }

  /** Txs in the index: flushed rows plus the in-memory part. */
  countTxs(): number {
    return (this.db.prepare("SELECT count(*) AS n FROM txs").get() as { n: number }).n + this.recent.size;
  }

  /** SQLite's own structural check; returns the problems found (empty when healthy). */
  quickCheck(): string[] {
    const rows = this.db.prepare("PRAGMA quick_check").all() as { quick_check: string }[];
    return rows.map((r) => r.quick_check).filter((r) => r !== "ok");
  }

  /** Resolves once every block committed so far is on disk. */
  durable(): Promise<void> {
    return this.sync.durable();
  }

  /** The flusher of this database's WAL, for another writer of the same database (a node's embedded orderer log). */
  get groupSync(): GroupSync {
    return this.sync;
  }

  /** Writes the in-memory part of the tx index out now (a clean stop), so the next open need not rebuild it. */
  flushIndexNow(): void {
    if (this.unindexed() === 0 || !this.db.isOpen || this.db.isTransaction) return;
    let written = NOTHING_WRITTEN;
    try {
      inWriteTransaction(this.db, () => {
        written = this.drainIndex(0, true);
      });
    } catch (error) {
      throw new StoreError("write", `could not write the tx index: ${(error as Error).message}`);
    }
    this.drained(written);
    // A frozen set may not hold what came after it: write that too.
    if (this.unindexed() > 0) this.flushIndexNow();
  }

  close(): void {
    if (this.db.isOpen && this.db.isTransaction) this.db.exec("ROLLBACK");
    else if (this.db.isOpen && !this.readOnly) {
      try {
        this.flushIndexNow();
      } catch {
        // The index is rebuilt from the blocks at the next open; closing must still happen.
      }
    }
    // A writer has a checkpointer (a read-only store none).
    if (this.db.isOpen) this.checkpointer?.stopBeforeClose(this.db);
    else this.checkpointer?.stop();
    if (this.db.isOpen) this.db.close();
    this.sync.afterDatabaseClosed();
  }
}

/** How many perfect-subtree nodes a log of n leaves has: Σ floor(n / 2^l) = 2n − popcount(n). */
function nodesBefore(n: number): number {
  let ones = 0;
  for (let m = n; m > 0; m = Math.floor(m / 2)) ones += m % 2;
  return 2 * n - ones;
}

/**
 * Keys frozen for writing out in key order. Sorting 100,000 keys at once stalls a commit for tens of milliseconds,
 * so keys are bucketed by their first byte as they arrive (256 runs, already in order between runs; freezing is
 * free) and each run is sorted only when the writing reaches it.
 */
class Runs {
  readonly runs: string[][] = Array.from({ length: 256 }, () => []);
  add(key: string): void {
    (this.runs[Number.parseInt(key.slice(0, 2), 16)] as string[]).push(key);
  }
  freeze(upTo: number): Drain {
    return { runs: this.runs, at: { run: 0, inRun: 0 }, sorted: -1, upTo };
  }
}

/** A position in a drain: run 256 means everything was written. */
interface DrainAt {
  run: number;
  inRun: number;
}

interface Drain {
  runs: string[][];
  /** How far writing has got, counting only committed transactions. */
  at: DrainAt;
  /** The last run sorted (sorting again would be harmless, just slow). */
  sorted: number;
  /** The height up to which the index is complete once this drain is written. */
  upTo: number;
}

/**
 * The next `rows` keys in order from the committed position (all that are left when `all`), sorting runs as they
 * are reached, and the position after them — which becomes the drain's only once the caller's transaction commits.
 */
function takeSlice(drain: Drain, rows: number, all: boolean): { keys: string[]; at: DrainAt } {
  const keys: string[] = [];
  const want = all ? Number.POSITIVE_INFINITY : rows;
  let { run, inRun } = drain.at;
  while (keys.length < want && run < 256) {
    const keysOfRun = drain.runs[run] as string[];
    if (drain.sorted < run) {
      keysOfRun.sort();
      drain.sorted = run;
    }
    const take = Math.min(keysOfRun.length - inRun, want - keys.length);
    for (let i = 0; i < take; i++) keys.push(keysOfRun[inRun + i] as string);
    inRun += take;
    if (inRun >= keysOfRun.length) {
      run++;
      inRun = 0;
    }
  }
  return { keys, at: { run, inRun } };
}

/** Keys written to SQLite by one transaction (dropped from memory once it committed) and the positions after them. */
interface Written {
  ids: Hex32[];
  nonces: string[];
  idsAt: DrainAt;
  noncesAt: DrainAt;
}

const NOTHING_WRITTEN: Written = { ids: [], nonces: [], idsAt: { run: 0, inRun: 0 }, noncesAt: { run: 0, inRun: 0 } };

/**
 * The replay-protection key of `(signer, nonce)`: 16 bytes of SHA-256, hex. Small fixed-size keys keep the `nonces`
 * B-tree dense; a false "already used" needs a 128-bit collision.
 */
export function nonceKey(signer: string, nonce: string): string {
  return hash("sha256", `${signer}:${nonce}`, "hex").slice(0, 32);
}

/** Where a tx not yet in the SQLite index is, and what that index row will hold. */
interface RecentTx {
  height: number;
  idx: number;
  pos: number;
  valid: boolean;
}

interface StoredBlockRow {
  height: number;
  hash: Hex32;
  header: string;
  /** zstd-compressed JSON (schema 4) or JSON text (schema 3): see `txsText`. */
  txs: Uint8Array | string;
}

function createSchema(db: DatabaseSync): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS blocks (
      height INTEGER PRIMARY KEY,
      hash TEXT NOT NULL,
      header TEXT NOT NULL,
      txs TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS txs (
      id BLOB PRIMARY KEY,
      height INTEGER NOT NULL,
      idx INTEGER NOT NULL,
      pos INTEGER NOT NULL,
      valid INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS nonces (key BLOB PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS merkle_blocks (
      height INTEGER PRIMARY KEY,
      start INTEGER NOT NULL,
      nodes BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '${SCHEMA_VERSION}');
  `);
}

function prepareStatements(db: DatabaseSync) {
  return {
    lastBlock: db.prepare("SELECT height, hash, header, '' AS txs FROM blocks ORDER BY height DESC LIMIT 1"),
    blockGet: db.prepare("SELECT height, hash, header, txs FROM blocks WHERE height = ?"),
    blockRange: db.prepare("SELECT height, hash, header, txs FROM blocks WHERE height >= ? ORDER BY height LIMIT ?"),
    blockPut: db.prepare("INSERT INTO blocks (height, hash, header, txs) VALUES (?, ?, ?, ?)"),
    txGet: db.prepare("SELECT height, idx, pos FROM txs WHERE id = ?"),
    txIds: db.prepare("SELECT id FROM txs"),
    nonceKeys: db.prepare("SELECT key FROM nonces"),
    txPut: db.prepare("INSERT INTO txs (id, height, idx, pos, valid) VALUES (?, ?, ?, ?, ?)"),
    nonceGet: db.prepare("SELECT 1 FROM nonces WHERE key = ?"),
    noncePut: db.prepare("INSERT OR IGNORE INTO nonces (key) VALUES (?)"),
    merkleGet: db.prepare("SELECT nodes FROM merkle_blocks WHERE height = ?"),
    merklePut: db.prepare("INSERT INTO merkle_blocks (height, start, nodes) VALUES (?, ?, ?)"),
    stateGet: db.prepare("SELECT value FROM state WHERE key = ?"),
    stateResourceKeys: db.prepare(`SELECT key FROM state WHERE key >= '${RESOURCE_PREFIX}' AND key < 'res0'`),
    statePut: db.prepare(
      "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    ),
    stateDel: db.prepare("DELETE FROM state WHERE key = ?"),
    metaGet: db.prepare("SELECT value FROM meta WHERE key = ?"),
    metaPut: db.prepare(
      "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    ),
  };
}

const DELETED = Symbol("deleted");
/** The contract's resource records (`res/<custodian>/<type>/<id>`): see `SqliteState.get`. */
const RESOURCE_PREFIX = "res/";
const CACHE_LIMIT = 500_000;

/**
 * Contract state backed by SQLite. Reads are cached; writes are held as pending until the block that made them is
 * committed (or discarded if it is not), so state on disk always matches a whole block.
 */
export class SqliteState implements StateStore {
  private readonly select: StatementSync;
  private readonly resourceKeys: StatementSync;
  private readonly cache = new Map<string, unknown>();
  private readonly pending = new Map<string, unknown>();
  /**
   * Every resource record key ever committed, built at the first lookup of one. Anchoring a new record asks for a
   * record that is not there (one SQLite miss, ~8 µs, per resource imported); the filter answers that from memory.
   */
  private resources: ScalableBloom | undefined;

  private readonly cacheLimit: number;

  constructor(select: StatementSync, resourceKeys: StatementSync, cacheLimit = CACHE_LIMIT) {
    this.select = select;
    this.resourceKeys = resourceKeys;
    this.cacheLimit = cacheLimit;
  }

  private resourceFilter(): ScalableBloom {
    if (this.resources) return this.resources;
    const keys: string[] = [];
    for (const row of this.resourceKeys.iterate()) keys.push((row as { key: string }).key);
    const filter = new ScalableBloom(2 * keys.length + 100_000);
    for (const key of keys) filter.add(key);
    this.resources = filter;
    return filter;
  }

  get(key: string): unknown {
    const p = this.pending.get(key);
    if (p !== undefined) return p === DELETED ? undefined : p;
    if (this.cache.has(key)) return this.cache.get(key);
    if (key.startsWith(RESOURCE_PREFIX) && !this.resourceFilter().mayContain(key)) return undefined;
    const row = this.select.get(key) as { value: string } | undefined;
    const value = row === undefined ? undefined : JSON.parse(row.value);
    if (this.cache.size >= this.cacheLimit) this.cache.clear();
    this.cache.set(key, value);
    return value;
  }

  put(key: string, value: unknown): void {
    this.pending.set(key, value);
  }

  del(key: string): void {
    this.pending.set(key, DELETED);
  }

  /** Writes pending changes inside the caller's transaction; `committed` or `discard` follows. */
  flush(put: StatementSync, del: StatementSync): void {
    for (const [key, value] of this.pending) {
      if (value === DELETED) del.run(key);
      else put.run(key, JSON.stringify(value));
    }
  }

  committed(): void {
    if (this.cache.size + this.pending.size > this.cacheLimit) this.cache.clear();
    for (const [key, value] of this.pending) {
      this.cache.set(key, value === DELETED ? undefined : value);
      if (this.resources && value !== DELETED && key.startsWith(RESOURCE_PREFIX)) this.resources.add(key);
    }
    this.pending.clear();
  }

  discard(): void {
    this.pending.clear();
  }
}
