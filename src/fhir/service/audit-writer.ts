// The writing side of the FHIR audit index (audit.ts): its SQLite schema, and the indexing of stored blocks, which
// runs on the index's own worker thread (audit-index-worker.ts) with its own connections, so the node's main thread
// never pays it.

import { closeSync, openSync, rmSync } from "node:fs";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { storedBlockProblem } from "../../ledger/block.ts";
import type { Block, BlockEntry, BlockHeader } from "../../ledger/types.ts";
import type { BlockRowData } from "../../store/block-reader.ts";
import { inWriteTransaction } from "../../store/transaction.ts";
import type { AccessEntry } from "./context.ts";

/** 3: the custodian index in block order (was by custodian, then patient: one more random insert a row). */
const SCHEMA_VERSION = "3";

/** The txs that change a patient's consent: their history is part of what the GDPR export gives the patient. */
const CONSENT_TX_TYPES: ReadonlySet<string> = new Set(["consent.set", "consent.revoke", "optout.set"]);

/**
 * Rows (access-log entries and consent changes) checked but not yet written, at most, before they are written in one
 * transaction. Each commit writes every index page it dirtied, and the two secondary indexes (by patient, by
 * custodian) take each row to the page of its patient: a commit of a few hundred rows writes a page or two per row.
 * Written a 20-ms slice at a time under load, the index wrote ~8 KB a tx, more than the ledger itself, and the
 * kernel's writeback of it is not at the worker's idle priority (bench/RESULTS.md, session 17).
 */
const DEFAULT_WRITE_ROWS = 20_000;

/** What indexing needs of the ledger (store/block-reader.ts has it). */
export interface BlockSource {
  latestHeight(): number;
  blockRow(height: number): BlockRowData | undefined;
}

/** A stored block that does not check out: the node must be told (it halts), the index stops. */
export class AuditIntegrityError extends Error {
  readonly height: number;
  constructor(height: number, reason: string) {
    super(`block ${height} in the store was altered: ${reason}`);
    this.height = height;
  }
}

/**
 * Opens (or creates) the index database at `path`. A file that does not open as this index is deleted and created
 * again when `rebuildIfUnreadable` (it holds nothing that is not on the ledger).
 */
export function openAuditDb(path: string, rebuildIfUnreadable: boolean): DatabaseSync {
  try {
    return openDb(path);
  } catch (error) {
    if (!rebuildIfUnreadable) throw error;
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${path}${suffix}`, { force: true });
    return openDb(path);
  }
}

function openDb(path: string): DatabaseSync {
  // Pseudonyms and key ids only, but private to the node like its other files.
  closeSync(openSync(path, "a", 0o600));
  const db = new DatabaseSync(path);
  try {
    // The query connection (main thread) and the indexer's (worker) meet here; neither waits long for the other.
    // Derived data: a lost tail is indexed again from the ledger, so commits need not wait for the disk.
    db.exec(
      "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -32768;",
    );
    db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS entries (
        block INTEGER NOT NULL, pos INTEGER NOT NULL, n INTEGER NOT NULL,
        patient TEXT NOT NULL, custodian TEXT NOT NULL, time INTEGER NOT NULL, tx TEXT NOT NULL, entry TEXT NOT NULL,
        PRIMARY KEY (block, pos, n)
      ) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS entries_patient ON entries (patient, block, pos, n);
      -- In block order within a custodian, so that rows land at the end of a few ranges: keyed by custodian then
      -- patient, every row was a second random insert, and the index's cost a row doubled over 200,000 rows.
      CREATE INDEX IF NOT EXISTS entries_custodian ON entries (custodian, block, pos, n);
      CREATE TABLE IF NOT EXISTS consent_changes (
        block INTEGER NOT NULL, pos INTEGER NOT NULL, patient TEXT NOT NULL, type TEXT NOT NULL, time INTEGER NOT NULL,
        tx TEXT NOT NULL, payload TEXT NOT NULL,
        PRIMARY KEY (block, pos)
      ) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS consent_changes_patient ON consent_changes (patient, block, pos);
    `);
    const schema = db.prepare("SELECT value FROM meta WHERE key = 'schema'").get() as { value: string } | undefined;
    if (schema === undefined) db.prepare("INSERT INTO meta (key, value) VALUES ('schema', ?)").run(SCHEMA_VERSION);
    else if (schema.value !== SCHEMA_VERSION) throw new Error("unsupported audit index schema");
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}

/** Height up to which every block is indexed, as the index's file says (0 for a new index). */
export function indexedHeightOf(db: DatabaseSync): number {
  const row = db.prepare("SELECT value FROM meta WHERE key = 'height'").get() as { value: string } | undefined;
  return row === undefined ? 0 : Number(row.value);
}

/** Indexes stored blocks into the index database: `access.log` entries and consent changes of valid txs. */
export class AuditWriter {
  private readonly db: DatabaseSync;
  private readonly stmts: Record<
    "insert" | "setHeight" | "setHash" | "dropAbove" | "insertConsent" | "dropConsentAbove",
    StatementSync
  >;
  private indexedHeight: number;
  /** Hash of the block at `indexedHeight`, once read: the next block must link to it. */
  private lastHash: string | undefined;
  /**
   * The write transaction left open between calls: blocks above `indexedHeight` checked and their rows inserted, not
   * yet committed (the last block in it, its hash, and the rows so far).
   */
  private open: { height: number; hash: string; rows: number } | undefined;

  private readonly writeRows: number;

  /** `writeRows`: rows checked before they are written in one transaction (tests set it small). */
  constructor(db: DatabaseSync, options: { writeRows?: number } = {}) {
    this.db = db;
    this.writeRows = options.writeRows ?? DEFAULT_WRITE_ROWS;
    this.stmts = {
      insert: db.prepare(
        "INSERT OR IGNORE INTO entries (block, pos, n, patient, custodian, time, tx, entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      ),
      setHeight: db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('height', ?)"),
      setHash: db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('hash', ?)"),
      dropAbove: db.prepare("DELETE FROM entries WHERE block > ?"),
      insertConsent: db.prepare(
        "INSERT OR IGNORE INTO consent_changes (block, pos, patient, type, time, tx, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
      ),
      dropConsentAbove: db.prepare("DELETE FROM consent_changes WHERE block > ?"),
    };
    this.indexedHeight = indexedHeightOf(db);
  }

  /** Height up to which every block is indexed. */
  get indexed(): number {
    return this.indexedHeight;
  }

  /**
   * Indexes the stored blocks above the indexed height up to `upTo` (and forgets any above the ledger's newest block:
   * a lost tail); returns false when `budgetMs` ran out first (at least one block is checked per call). Rows go into
   * one write transaction, committed once `writeRows` rows are in it and — unless `commit` is false — when `upTo` is
   * reached: `indexed` moves only then. With `commit` false the transaction stays open across calls, so a follower of a
   * busy ledger spreads its work over many short calls and still commits rarely. Each block is checked as the node
   * checks a block it serves — txs against their ids and the header's txRoot, the header against its hash and its
   * link to the block before — and one that fails throws `AuditIntegrityError` (what was checked before it is
   * committed, nothing of it).
   */
  catchUp(
    source: BlockSource,
    budgetMs = Number.POSITIVE_INFINITY,
    upTo = Number.POSITIVE_INFINITY,
    { commit = true }: { commit?: boolean } = {},
  ): boolean {
    const started = performance.now();
    const latest = Math.max(0, source.latestHeight());
    if (this.open && this.open.height > latest) this.rollback();
    if (this.indexedHeight > latest) this.dropAbove(latest);
    const head = Math.min(latest, upTo);
    if (this.lastHash === undefined && this.indexedHeight > 0 && !this.open) {
      // The ledger's block at the indexed height is no longer the one indexed (its tail was lost and committed
      // again differently while the index was closed): start again from the beginning.
      const indexedHash = this.db.prepare("SELECT value FROM meta WHERE key = 'hash'").get() as
        | { value: string }
        | undefined;
      if (indexedHash !== undefined && source.blockRow(this.indexedHeight)?.hash !== indexedHash.value) {
        this.dropAbove(0);
      }
    }
    let checked = this.open?.height ?? this.indexedHeight;
    while (checked < head) {
      const height = checked + 1;
      const row = source.blockRow(height);
      if (!row) throw new Error(`block ${height} is missing from the ledger store`);
      const block = { ...(JSON.parse(row.header) as BlockHeader), txs: JSON.parse(row.txs) as BlockEntry[] };
      // The hash before is undefined only when that block is missing: "" then never links.
      const before = this.open?.hash ?? this.lastHash ?? source.blockRow(checked)?.hash ?? "";
      const problem = storedBlockProblem(block, row.hash, before);
      if (problem) {
        this.commit();
        throw new AuditIntegrityError(height, problem);
      }
      if (!this.open) {
        this.db.exec("BEGIN IMMEDIATE");
        this.open = { height, hash: row.hash, rows: 0 };
      }
      try {
        this.open.rows += this.insertBlock(block);
      } catch (error) {
        this.rollback();
        throw error;
      }
      this.open.height = height;
      this.open.hash = row.hash;
      checked = height;
      if (this.open.rows >= this.writeRows) this.commit();
      if (checked < head && performance.now() - started > budgetMs) return false;
    }
    if (commit) this.commit();
    return true;
  }

  /** Commits what is checked, then closes the database. */
  close(): void {
    try {
      this.commit();
    } finally {
      this.db.close();
    }
  }

  /** Commits the open transaction, if any, with the height and hash it reaches. */
  private commit(): void {
    const open = this.open;
    if (!open) return;
    try {
      this.stmts.setHeight.run(String(open.height));
      this.stmts.setHash.run(open.hash);
      this.db.exec("COMMIT");
    } catch (error) {
      this.rollback();
      throw error;
    }
    this.open = undefined;
    this.indexedHeight = open.height;
    this.lastHash = open.hash;
  }

  private rollback(): void {
    if (!this.open) return;
    this.open = undefined;
    if (this.db.isTransaction) this.db.exec("ROLLBACK");
  }

  private dropAbove(height: number): void {
    this.rollback();
    this.transaction(() => {
      this.stmts.dropAbove.run(height);
      this.stmts.dropConsentAbove.run(height);
      this.stmts.setHeight.run(String(height));
      this.db.prepare("DELETE FROM meta WHERE key = 'hash'").run();
    });
    this.indexedHeight = height;
    this.lastHash = undefined;
  }

  /** Inserts a block's rows: the entries of its valid `access.log` txs, and its valid consent changes; returns how many. */
  private insertBlock(block: Block): number {
    const { height, time } = block;
    let rows = 0;
    block.txs.forEach((e, pos) => {
      if (!e.result.valid) return;
      if (CONSENT_TX_TYPES.has(e.tx.type)) {
        const patient = (e.tx.payload as { patient?: unknown }).patient;
        if (typeof patient === "string") {
          this.stmts.insertConsent.run(height, pos, patient, e.tx.type, time, e.id, JSON.stringify(e.tx.payload));
          rows++;
        }
        return;
      }
      if (e.tx.type !== "access.log") return;
      const entries = (e.tx.payload as { entries?: AccessEntry[] }).entries ?? [];
      entries.forEach((entry, n) => {
        this.stmts.insert.run(height, pos, n, entry.patient, entry.custodian, time, e.id, JSON.stringify(entry));
        rows++;
      });
    });
    return rows;
  }

  private transaction(fn: () => void): void {
    inWriteTransaction(this.db, fn);
  }
}
