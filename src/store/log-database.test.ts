import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, test } from "node:test";
import { GroupSync } from "./group-sync.ts";
import { LogDatabase } from "./log-database.ts";
import { WAL_BOUND_BYTES } from "./wal-bound.ts";

const dir = mkdtempSync(join(tmpdir(), "careledger-logdb-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function entriesIn(db: DatabaseSync): unknown[] {
  return db
    .prepare("SELECT n FROM entries")
    .all()
    .map((r) => r.n);
}

function pragma(db: DatabaseSync, name: string): unknown {
  return Object.values(db.prepare(`PRAGMA ${name}`).get() ?? {})[0];
}

test("in the store's database the log writes through the store's flush and leaves the database's flush to it", async () => {
  const path = join(dir, "store.db");
  const owner = new DatabaseSync(path);
  owner.exec("PRAGMA journal_mode = WAL; CREATE TABLE blocks (n INTEGER)");
  const sync = new GroupSync(path);
  const log = new LogDatabase(path, { sync });
  assert.equal(log.inStoreDatabase, true);
  assert.equal(log.sync, sync);
  log.db.exec("CREATE TABLE entries (n INTEGER); INSERT INTO entries VALUES (1)");
  log.close();
  // The store's flush still serves the store after the log is gone.
  owner.prepare("INSERT INTO blocks VALUES (1)").run();
  await sync.durable();
  assert.equal(sync.flushes, 1);
  assert.deepEqual(entriesIn(owner), [1]);
  owner.close();
  sync.afterDatabaseClosed();
});

test("in a file of its own the log has its own flush, writes as the store does, and settles its flush at close", async () => {
  const path = join(dir, "own.db");
  const log = new LogDatabase(path);
  assert.equal(log.inStoreDatabase, false);
  assert.equal(pragma(log.db, "journal_mode"), "wal");
  assert.equal(pragma(log.db, "synchronous"), 1, "NORMAL: the flush is ours");
  assert.equal(pragma(log.db, "wal_autocheckpoint"), 0, "no checkpoint inside a commit");
  assert.equal(pragma(log.db, "journal_size_limit"), WAL_BOUND_BYTES);
  log.db.exec("CREATE TABLE entries (n INTEGER); INSERT INTO entries VALUES (2)");
  await log.sync.durable();
  assert.equal(log.sync.flushes, 1);
  log.close();
  await assert.rejects(log.sync.durable(), /closed/);
  const reopened = new DatabaseSync(path, { readOnly: true });
  assert.deepEqual(entriesIn(reopened), [2]);
  reopened.close();
});
