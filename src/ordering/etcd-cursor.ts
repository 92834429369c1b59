import type { DatabaseSync, StatementSync } from "node:sqlite";
import type { GroupSync } from "../store/group-sync.ts";
import { LogDatabase } from "../store/log-database.ts";

/** Where batch `seq` sits in etcd's history, and the time it was delivered with. */
export interface CursorRow {
  seq: number;
  revision: number;
  time: number;
}

/**
 * The local map seq → etcd revision (3 integers per block, all kept): after a restart delivery resumes from the
 * revision after the last applied batch, and a node serving catch-up can tell a peer where its height sits in etcd.
 *
 * Given the node's store's `GroupSync`, the cursor is a table in the store's own database (`path` is then that
 * database): a row is committed before its block, into the same WAL, so SQLite's recovery — which keeps a prefix of
 * the commits — can never keep a block without its row, and the block's flush makes both durable. Delivery then
 * need not wait for a flush of its own (`sharesStoreLog`). Otherwise the cursor is its own file, flushed per batch.
 */
export class DeliveryCursor {
  private readonly log: LogDatabase;
  private readonly db: DatabaseSync;
  private readonly upsert: StatementSync;
  private readonly bySeq: StatementSync;
  private readonly byRevision: StatementSync;
  private readonly lastRow: StatementSync;
  private readonly dropAbove: StatementSync;
  private closed = false;

  constructor(path: string, storeLog?: { sync: GroupSync }) {
    this.log = new LogDatabase(path, storeLog);
    this.db = this.log.db;
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS cursor (
        seq INTEGER PRIMARY KEY,
        revision INTEGER NOT NULL,
        time INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS cursor_revision ON cursor (revision);
    `);
    this.upsert = this.db.prepare("INSERT OR REPLACE INTO cursor (seq, revision, time) VALUES (?, ?, ?)");
    this.bySeq = this.db.prepare("SELECT seq, revision, time FROM cursor WHERE seq = ?");
    this.byRevision = this.db.prepare("SELECT seq, revision, time FROM cursor WHERE revision = ? LIMIT 1");
    this.lastRow = this.db.prepare("SELECT seq, revision, time FROM cursor ORDER BY seq DESC LIMIT 1");
    this.dropAbove = this.db.prepare("DELETE FROM cursor WHERE seq > ?");
  }

  /** The rows live in the node's store database and are flushed with its blocks. */
  get sharesStoreLog(): boolean {
    return this.log.inStoreDatabase;
  }

  get(seq: number): CursorRow | undefined {
    return this.bySeq.get(seq) as CursorRow | undefined;
  }

  atRevision(revision: number): CursorRow | undefined {
    return this.byRevision.get(revision) as CursorRow | undefined;
  }

  last(): CursorRow | undefined {
    return this.lastRow.get() as CursorRow | undefined;
  }

  /** Records a row; returns the row it replaced when that one differed (delivery was not deterministic). */
  record(row: CursorRow): CursorRow | undefined {
    const before = this.get(row.seq);
    this.upsert.run(row.seq, row.revision, row.time);
    return before && (before.revision !== row.revision || before.time !== row.time) ? before : undefined;
  }

  /** Makes `row` the newest position: rows above it (from before a catch-up elsewhere) are dropped. */
  resetTo(row: CursorRow): void {
    this.db.exec("BEGIN");
    try {
      this.dropAbove.run(row.seq);
      this.upsert.run(row.seq, row.revision, row.time);
      this.db.exec("COMMIT");
    } catch (error) {
      this.db.exec("ROLLBACK");
      throw error;
    }
  }

  /** Resolves once every row recorded before the call is on disk. */
  durable(): Promise<void> {
    return this.closed ? Promise.resolve() : this.log.sync.durable();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.log.close();
  }
}
