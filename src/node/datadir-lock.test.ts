import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { DataDirInUseError, lockDataDir } from "./datadir.ts";

const dir = mkdtempSync(join(tmpdir(), "careledger-lock-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("a data dir is held by one process: a second taker is refused, naming the holder; release frees it", () => {
  const release = lockDataDir(dir);
  assert.equal(readFileSync(join(dir, "node.lock"), "utf8").trim(), String(process.pid));
  assert.throws(
    () => lockDataDir(dir),
    (error: unknown) =>
      error instanceof DataDirInUseError && error.pid === process.pid && /in use by process/.test(error.message),
  );
  release();
  assert.equal(existsSync(join(dir, "node.lock")), false);
  lockDataDir(dir)();
});

test("a lock left by a process that is gone (kill -9) is taken over", () => {
  // A pid that surely exited: a child that already ran to completion.
  const gone = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString();
  writeFileSync(join(dir, "node.lock"), `${gone}\n`);
  const release = lockDataDir(dir);
  assert.equal(readFileSync(join(dir, "node.lock"), "utf8").trim(), String(process.pid));
  release();
});

test("a lock that is not a pid is treated as stale", () => {
  writeFileSync(join(dir, "node.lock"), "garbage\n");
  lockDataDir(dir)();
});
