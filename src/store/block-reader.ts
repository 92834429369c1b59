import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { Hex32 } from "../ledger/types.ts";
import { txsText } from "./block-txs.ts";
import { StoreError } from "./errors.ts";

/** A stored block as the store keeps it: its hash and its header and txs as JSON. */
export interface BlockRowData {
  hash: Hex32;
  header: string;
  txs: string;
}

/**
 * A read-only connection to a node's ledger database for a reader in another thread (the FHIR audit index): each
 * call sees the blocks committed so far (WAL), without the store's caches, Merkle segments or replay filters, and
 * without ever writing.
 */
export class BlockReader {
  private readonly db: DatabaseSync;
  private readonly latest: StatementSync;
  private readonly get: StatementSync;

  private constructor(db: DatabaseSync) {
    this.db = db;
    this.latest = db.prepare("SELECT max(height) AS height FROM blocks");
    this.get = db.prepare("SELECT hash, header, txs FROM blocks WHERE height = ?");
  }

  static open(path: string): BlockReader {
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(path, { readOnly: true });
      // The node's writer or its checkpointer may hold a lock for a moment: wait, don't fail.
      db.exec("PRAGMA busy_timeout = 5000;");
      return new BlockReader(db);
    } catch (error) {
      db?.close();
      throw new StoreError("open", `cannot read ledger store ${path}: ${(error as Error).message}`);
    }
  }

  /** Height of the newest committed block, or -1 when there is none. */
  latestHeight(): number {
    const row = this.latest.get() as { height: number | null } | undefined;
    return row?.height ?? -1;
  }

  blockRow(height: number): BlockRowData | undefined {
    const row = this.get.get(height) as { hash: Hex32; header: string; txs: unknown } | undefined;
    return row && { hash: row.hash, header: row.header, txs: txsText(row.txs, height) };
  }

  close(): void {
    this.db.close();
  }
}
