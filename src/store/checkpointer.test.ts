import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { CHECKPOINTED_WRITER_PRAGMAS, Checkpointer, type CheckpointerOptions } from "./checkpointer.ts";

/** A WAL database that never checkpoints by itself, with `pages` pages of rows written into its WAL. */
function walOnly(path: string, pages: number): DatabaseSync {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (x BLOB)");
  const insert = db.prepare("INSERT INTO t VALUES (?)");
  db.exec("BEGIN");
  for (let i = 0; i < pages; i++) insert.run(Buffer.alloc(3000, i));
  db.exec("COMMIT");
  return db;
}

async function until(check: () => boolean, ms = 5000): Promise<boolean> {
  for (let waited = 0; waited < ms; waited += 25) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return check();
}

test("one worker folds the WALs of several databases into their files while they stay open", async () => {
  const dir = mkdtempSync(join(tmpdir(), "careledger-ckpt-"));
  const paths = ["a.db", "b.db"].map((f) => join(dir, f));
  const dbs = paths.map((p) => walOnly(p, 200));
  const sizes = paths.map((p) => statSync(p).size);
  const checkpointers = paths.map((p) => new Checkpointer(p));
  try {
    for (const [i, path] of paths.entries()) {
      assert.ok(await until(() => statSync(path).size > (sizes[i] as number)), `${path} was checkpointed`);
    }
  } finally {
    for (const c of checkpointers) c.stop();
    for (const db of dbs) db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a stopped checkpointer leaves its database alone; stopping twice is harmless", async () => {
  const dir = mkdtempSync(join(tmpdir(), "careledger-ckpt-"));
  const kept = join(dir, "kept.db");
  const left = join(dir, "left.db");
  const keptDb = walOnly(kept, 10);
  const leftDb = walOnly(left, 10);
  const keep = new Checkpointer(kept);
  const leave = new Checkpointer(left);
  leave.stop();
  leave.stop();
  const before = statSync(left).size;
  const insert = leftDb.prepare("INSERT INTO t VALUES (?)");
  for (let i = 0; i < 200; i++) insert.run(Buffer.alloc(3000, i));
  try {
    // The other database is still served: once it was folded, so would this one have been.
    const keptBefore = statSync(kept).size;
    const k = keptDb.prepare("INSERT INTO t VALUES (?)");
    for (let i = 0; i < 200; i++) k.run(Buffer.alloc(3000, i));
    assert.ok(await until(() => statSync(kept).size > keptBefore), "the registered database is checkpointed");
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(statSync(left).size, before, "the stopped one is not");
  } finally {
    keep.stop();
    keptDb.close();
    leftDb.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("stopBeforeClose folds the whole WAL in through the writer's connection; a reader holding it is no error", () => {
  const dir = mkdtempSync(join(tmpdir(), "careledger-ckpt-"));
  const path = join(dir, "db.db");
  const db = walOnly(path, 100);
  const checkpointer = new Checkpointer(path);
  const reader = new DatabaseSync(path);
  try {
    reader.exec("BEGIN");
    reader.prepare("SELECT count(*) FROM t").get();
    // The reader's snapshot keeps the WAL: nothing thrown, the rows still there.
    checkpointer.stopBeforeClose(db);
    reader.exec("COMMIT");
    assert.equal((reader.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n, 100);
    const again = new Checkpointer(path);
    again.stopBeforeClose(db);
    assert.equal(statSync(`${path}-wal`).size, 0, "WAL folded in and truncated");
    assert.ok(statSync(path).size > 100 * 3000, "the rows are in the database file");
  } finally {
    reader.close();
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("stopBeforeClose waits for the worker to let go: the writer's close is the last, and no WAL file is left", async () => {
  const dir = mkdtempSync(join(tmpdir(), "careledger-ckpt-"));
  // A busy thread, as on a loaded machine: the worker is then slow to get to the writer's "stop" message.
  const hog = new Worker("const end = Date.now() + 60_000; while (Date.now() < end);", { eval: true });
  try {
    for (let round = 0; round < 8; round++) {
      const path = join(dir, `db-${round}.db`);
      const db = walOnly(path, 200);
      const checkpointer = new Checkpointer(path);
      // The worker has its connection open once its first checkpoint copied the rows into the database file.
      assert.ok(await until(() => statSync(path).size > 200 * 3000), "the worker checkpointed");
      checkpointer.stopBeforeClose(db);
      db.close();
      // SQLite deletes the WAL file when the last connection to the database closes.
      assert.equal(existsSync(`${path}-wal`), false, `round ${round}: the worker's connection was still open`);
      const reopened = new DatabaseSync(path);
      assert.equal((reopened.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n, 200);
      reopened.close();
    }
  } finally {
    await hog.terminate();
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * Commits a small row every few ms for `ms` (and at least `minCommits` times) while a checkpointer with `options`
 * serves the database, and counts the WAL's rewinds: each writes a new header, with the checkpoint sequence number
 * (bytes 12–15) one higher.
 */
async function rewindsUnderCommits(
  dir: string,
  name: string,
  options: CheckpointerOptions,
  ms: number,
  minCommits = 0,
): Promise<{ rewinds: number; commits: number; folded: boolean; maxWalBytes: number }> {
  const path = join(dir, name);
  const db = new DatabaseSync(path);
  db.exec(`PRAGMA busy_timeout = 5000; ${CHECKPOINTED_WRITER_PRAGMAS} PRAGMA synchronous = NORMAL;`);
  db.exec("CREATE TABLE t (x BLOB)");
  const insert = db.prepare("INSERT INTO t VALUES (?)");
  const sequence = () => readFileSync(`${path}-wal`).readUInt32BE(12);
  const dbBytes = statSync(path).size;
  const checkpointer = new Checkpointer(path, options);
  let rewinds = 0;
  let commits = 0;
  let maxWalBytes = 0;
  try {
    insert.run(Buffer.alloc(2000, 1));
    let last = sequence();
    const end = performance.now() + ms;
    while (performance.now() < end || commits < minCommits) {
      insert.run(Buffer.alloc(2000, commits++));
      const now = sequence();
      if (now !== last) rewinds++;
      last = now;
      maxWalBytes = Math.max(maxWalBytes, statSync(`${path}-wal`).size);
      await new Promise((r) => setTimeout(r, 3));
    }
    return { rewinds, commits, folded: statSync(path).size > dbBytes + 100 * 2000, maxWalBytes };
  } finally {
    checkpointer.stopBeforeClose(db);
    db.close();
  }
}

test("rewindOnlyAtBound: commits between checkpoints never rewind the WAL (no header sync in them), and are folded in", async () => {
  const dir = mkdtempSync(join(tmpdir(), "careledger-ckpt-"));
  try {
    const held = await rewindsUnderCommits(dir, "held.db", { rewindOnlyAtBound: true }, 1500);
    assert.ok(held.commits > 150, `${held.commits} commits`);
    assert.equal(held.rewinds, 0, "no commit rewound the WAL");
    assert.ok(held.folded, "the worker's checkpoints copied the rows into the database file all the same");
    // Without the option the same stream rewinds the WAL after checkpoints that copied every frame (on an idle
    // machine nearly every one, every 250 ms; a busy one lands commits during them, so fewer).
    const plain = await rewindsUnderCommits(dir, "plain.db", {}, 3000);
    assert.ok(plain.rewinds >= 1, `${plain.rewinds} rewinds without the option`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("rewindOnlyAtBound: past the bound the worker lets the WAL rewind, so it does not grow without limit", async () => {
  const dir = mkdtempSync(join(tmpdir(), "careledger-ckpt-"));
  try {
    const bound = 3 * 1024 * 1024;
    const options = { rewindOnlyAtBound: true, walBoundBytes: bound };
    const run = await rewindsUnderCommits(dir, "bound.db", options, 2500, 900);
    // Each commit appends a page or two: 3.6–7.4 MB of WAL over the run.
    // Rewound past the bound: once or twice, not after every checkpoint (about 10 in 2.5 s without the option).
    assert.ok(run.rewinds >= 1 && run.rewinds <= 3, `${run.rewinds} rewinds in ${run.commits} commits`);
    assert.ok(run.maxWalBytes < 2 * bound, `the WAL file reached ${run.maxWalBytes} bytes`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
