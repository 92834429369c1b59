import { DatabaseSync, type StatementSync } from "node:sqlite";
import { Checkpointer } from "../store/checkpointer.ts";
import { GroupSync } from "../store/group-sync.ts";
import { WAL_BOUND_BYTES } from "../store/wal-bound.ts";

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
  private readonly db: DatabaseSync;
  private readonly sync: GroupSync;
  /** The rows live in the node's store database and are flushed with its blocks. */
  readonly sharesStoreLog: boolean;
  /** Absent in the store's database, whose store checkpoints it. */
  private readonly checkpointer: Checkpointer | undefined;
  private readonly upsert: StatementSync;
  private readonly bySeq: StatementSync;
  private readonly byRevision: StatementSync;
  private readonly lastRow: StatementSync;
  private readonly dropAbove: StatementSync;
  private closed = false;

  constructor(path: string, storeLog?: { sync: GroupSync }) {
    this.sharesStoreLog = storeLog !== undefined;
    this.db = new DatabaseSync(path);
    // WAL checkpoints run on the checkpoint worker (the store's, in its database), never inside a commit here.
    this.db.exec(`
      PRAGMA busy_timeout = 5000;
      PRAGMA journal_mode = WAL;
      PRAGMA synchronous = NORMAL;
      PRAGMA wal_autocheckpoint = 0;
      PRAGMA journal_size_limit = ${WAL_BOUND_BYTES};
      CREATE TABLE IF NOT EXISTS cursor (
        seq INTEGER PRIMARY KEY,
        revision INTEGER NOT NULL,
        time INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS cursor_revision ON cursor (revision);
    `);
    if (storeLog) {
      // The store flushed its WAL when it opened the database.
      this.sync = storeLog.sync;
      this.checkpointer = undefined;
    } else {
      this.sync = new GroupSync(path);
      this.sync.flushNow();
      this.checkpointer = new Checkpointer(path);
    }
    this.upsert = this.db.prepare("INSERT OR REPLACE INTO cursor (seq, revision, time) VALUES (?, ?, ?)");
    this.bySeq = this.db.prepare("SELECT seq, revision, time FROM cursor WHERE seq = ?");
    this.byRevision = this.db.prepare("SELECT seq, revision, time FROM cursor WHERE revision = ? LIMIT 1");
    this.lastRow = this.db.prepare("SELECT seq, revision, time FROM cursor ORDER BY seq DESC LIMIT 1");
    this.dropAbove = this.db.prepare("DELETE FROM cursor WHERE seq > ?");
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
    return this.closed ? Promise.resolve() : this.sync.durable();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.checkpointer?.stop();
    this.db.close();
    // A shared flush belongs to the store, which settles it when it closes its own connection.
    if (!this.sharesStoreLog) this.sync.afterDatabaseClosed();
  }
}
