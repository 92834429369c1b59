import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { describe, it } from "node:test";
import { inWriteTransaction } from "./transaction.ts";

describe("inWriteTransaction", () => {
  it("commits what fn wrote, and rolls all of it back (rethrowing) when fn throws half-way", () => {
    const db = new DatabaseSync(":memory:");
    db.exec("CREATE TABLE t (v INTEGER)");
    const count = () => (db.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n;
    inWriteTransaction(db, () => {
      db.exec("INSERT INTO t VALUES (1)");
      db.exec("INSERT INTO t VALUES (2)");
    });
    assert.equal(count(), 2);
    assert.throws(
      () =>
        inWriteTransaction(db, () => {
          db.exec("INSERT INTO t VALUES (3)");
          throw new Error("half-way");
        }),
      /half-way/,
    );
    assert.equal(count(), 2, "the insert before the throw was rolled back");
    assert.equal(db.isTransaction, false);
    db.close();
  });
});
