import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, test } from "node:test";
import { GroupSync } from "./group-sync.ts";

const dir = mkdtempSync(join(tmpdir(), "careledger-groupsync-"));
after(() => rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 }));

test("commits made while a flush runs share the next flush, and every waiter is answered in order", async () => {
  const path = join(dir, "a.db");
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; CREATE TABLE t (n INTEGER)");
  const sync = new GroupSync(path);
  const order: number[] = [];
  const waits: Promise<void>[] = [];
  for (let n = 0; n < 20; n++) {
    db.prepare("INSERT INTO t VALUES (?)").run(n);
    waits.push(sync.durable().then(() => void order.push(n)));
  }
  await Promise.all(waits);
  assert.deepEqual(
    order,
    Array.from({ length: 20 }, (_, n) => n),
  );
  db.close();
  sync.afterDatabaseClosed();
  await assert.rejects(sync.durable(), /closed/);
});

test("a flush that cannot happen fails its waiters instead of answering them", async () => {
  const sync = new GroupSync(join(dir, "missing", "x.db"));
  await assert.rejects(sync.durable(), /could not flush/);
  sync.flushNow();
});

test("a waiter whose mark a flush in flight covers shares that flush; a later mark waits for the next", async () => {
  const path = join(dir, "b.db");
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; CREATE TABLE t (n INTEGER)");
  const sync = new GroupSync(path);
  db.prepare("INSERT INTO t VALUES (1)").run();
  const early = sync.mark();
  // This commit's wait starts a flush; it covers `early` too, taken before it started.
  db.prepare("INSERT INTO t VALUES (2)").run();
  const first = sync.durable();
  db.prepare("INSERT INTO t VALUES (3)").run();
  const late = sync.mark();
  const joined = sync.durableAfter(early);
  const afterIt = sync.durableAfter(late);
  await joined;
  assert.equal(sync.flushes, 1, "the early mark was answered by the flush already in flight");
  await first;
  await afterIt;
  assert.equal(sync.flushes, 2, "a mark taken after the flush started waits for the next one");
  db.close();
  sync.afterDatabaseClosed();
});
