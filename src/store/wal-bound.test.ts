import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { test } from "node:test";
import { type CheckpointResult, checkpointUntilRewindable } from "./wal-bound.ts";

test("a commit that lands while a checkpoint runs is copied by another round; the next write rewinds the WAL and cuts it to the limit", () => {
  const dir = mkdtempSync(join(tmpdir(), "careledger-walbound-"));
  const path = join(dir, "w.db");
  const limit = 64 * 1024;
  const writer = new DatabaseSync(path);
  const checkpointer = new DatabaseSync(path);
  try {
    writer.exec(
      `PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = ${limit}; CREATE TABLE t (x BLOB)`,
    );
    const insert = writer.prepare("INSERT INTO t VALUES (?)");
    const commit = (rows: number) => {
      writer.exec("BEGIN");
      for (let i = 0; i < rows; i++) insert.run(Buffer.alloc(3000, i));
      writer.exec("COMMIT");
    };
    commit(300);
    const grown = statSync(`${path}-wal`).size;
    assert.ok(grown > 1_000_000, `the WAL holds ~300 pages (${grown} bytes)`);
    const passive = checkpointer.prepare("PRAGMA wal_checkpoint(PASSIVE)");
    let rounds = 0;
    const rewindable = checkpointUntilRewindable(() => {
      const result = passive.get() as unknown as CheckpointResult;
      rounds++;
      // As under load: the node's next block commits while the first round copies.
      if (rounds === 1) commit(50);
      return result;
    });
    assert.equal(rewindable, true);
    assert.ok(rounds >= 3, `a round for the late commit and one that finds nothing new (${rounds} rounds)`);
    commit(1);
    const after = statSync(`${path}-wal`).size;
    assert.ok(after <= limit, `the WAL rewound and was cut to the limit: ${after} bytes`);
    assert.equal((writer.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n, 351);
  } finally {
    checkpointer.close();
    writer.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("gives up at once while another checkpoint holds the lock, and after maxRounds while writes outrun it", () => {
  const cases: {
    name: string;
    round: (n: number) => CheckpointResult;
    maxRounds?: number;
    rewindable: boolean;
    rounds: number;
  }[] = [
    { name: "busy", round: () => ({ busy: 1, log: 10, checkpointed: 0 }), rewindable: false, rounds: 1 },
    {
      name: "outrun by writes",
      round: (n) => ({ busy: 0, log: 5 * n, checkpointed: 5 * n }),
      maxRounds: 4,
      rewindable: false,
      rounds: 4,
    },
    // The second round sees the same frames, all copied.
    { name: "idle", round: () => ({ busy: 0, log: 7, checkpointed: 7 }), rewindable: true, rounds: 2 },
  ];
  for (const c of cases) {
    let rounds = 0;
    const rewindable = checkpointUntilRewindable(() => c.round(++rounds), c.maxRounds);
    assert.deepEqual({ rewindable, rounds }, { rewindable: c.rewindable, rounds: c.rounds }, c.name);
  }
});
