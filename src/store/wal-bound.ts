/**
 * Keeping a WAL file bounded while commits never stop. A PASSIVE checkpoint copies every frame it sees, but SQLite
 * rewinds the WAL (writes from its start again) only when a write transaction begins after a checkpoint that left no
 * frame uncopied; with a commit every few milliseconds one always lands while a checkpoint runs, and the WAL grows
 * for as long as the load lasts (~13 MB/s at 5,000 tx/s). Writers set `journal_size_limit` to the bound, so the file
 * is cut back to it when the WAL rewinds.
 */
export const WAL_BOUND_BYTES = 64 * 1024 * 1024;

/**
 * Where a WAL kept from rewinding between checkpoints (`rewindOnlyAtBound` in checkpointer.ts) is let rewind: about
 * 3 s of a busy node's commits in the cluster, each rewind one fsync inside a commit. Held to 64 MiB, bench ledger's
 * node took 15 % fewer txs a second at full load (tmpfs, session 19); at 8 MiB, as many as without holding.
 */
export const HELD_WAL_REWIND_BYTES = 8 * 1024 * 1024;

/** What `PRAGMA wal_checkpoint` answers: busy, frames in the WAL, frames copied into the database. */
export interface CheckpointResult {
  busy: number;
  log: number;
  checkpointed: number;
}

/**
 * Runs checkpoints until one finds nothing new to copy, so that the next write transaction rewinds the WAL; each
 * round copies only what was committed during the one before, so rounds get short. Returns whether it got there
 * within `maxRounds` (it gives up while another connection holds a checkpoint, or writes keep outrunning it).
 */
export function checkpointUntilRewindable(run: () => CheckpointResult, maxRounds = 8): boolean {
  let seen = -1;
  for (let round = 0; round < maxRounds; round++) {
    const result = run();
    if (result.busy !== 0) return false;
    // The same frame count as the round before, all copied: no commit came in between.
    if (result.checkpointed >= result.log && result.log === seen) return true;
    seen = result.log;
  }
  return false;
}
