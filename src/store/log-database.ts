import { DatabaseSync } from "node:sqlite";
import { CHECKPOINTED_WRITER_PRAGMAS, Checkpointer } from "./checkpointer.ts";
import { GroupSync } from "./group-sync.ts";

/**
 * The connection, flush and checkpoints of a log kept beside a node's store — the embedded orderer's batches, an
 * etcd node's delivery cursor. Given the store's `GroupSync`, the log is a table in the store's own database: written
 * through its WAL, flushed with its blocks, checkpointed and finally settled by the store. Otherwise (data dirs made
 * before that, and the demo's log shared by several nodes) it is a file of its own with its own flush and checkpoints.
 */
export class LogDatabase {
  readonly db: DatabaseSync;
  readonly sync: GroupSync;
  /** The log is a table in the node's store database, flushed with its blocks. */
  readonly inStoreDatabase: boolean;
  private readonly checkpointer: Checkpointer | undefined;

  constructor(path: string, store?: { sync: GroupSync }) {
    this.inStoreDatabase = store !== undefined;
    this.db = new DatabaseSync(path);
    // COMMIT writes the WAL without waiting for the disk (`sync` flushes it); checkpoints run on the checkpoint
    // worker, never inside a commit here.
    this.db.exec(`PRAGMA busy_timeout = 5000; ${CHECKPOINTED_WRITER_PRAGMAS} PRAGMA synchronous = NORMAL;`);
    if (store) {
      // The store flushed its WAL when it opened the database, and checkpoints it.
      this.sync = store.sync;
      this.checkpointer = undefined;
    } else {
      this.sync = new GroupSync(path);
      // What a crashed process left in the WAL goes to disk before anything is read from it.
      this.sync.flushNow();
      this.checkpointer = new Checkpointer(path, { rewindOnlyAtBound: true });
    }
  }

  close(): void {
    if (this.inStoreDatabase) {
      // The store checkpoints and closes its database, and settles whoever waits for its flushes.
      this.db.close();
      return;
    }
    this.checkpointer?.stopBeforeClose(this.db);
    this.db.close();
    this.sync.afterDatabaseClosed();
  }
}
