import type { DatabaseSync } from "node:sqlite";

/**
 * Runs `fn` in one write transaction (`BEGIN IMMEDIATE`: the write lock is taken at once, so a busy database fails or
 * waits here, not half-way through): committed when `fn` returns, rolled back when it throws, and the error rethrown.
 */
export function inWriteTransaction(db: DatabaseSync, fn: () => void): void {
  db.exec("BEGIN IMMEDIATE");
  try {
    fn();
    db.exec("COMMIT");
  } catch (error) {
    db.exec("ROLLBACK");
    throw error;
  }
}
