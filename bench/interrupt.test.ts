// The clean-ups an interrupted benchmark runs: newest first, released ones skipped, a failing one not stopping the rest,
// a child process killed and waited for.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { killOnInterrupt, onInterrupt, pendingCleanups, removeOnInterrupt, runInterruptCleanups } from "./interrupt.ts";

test("clean-ups run newest first, released ones do not run, a failure does not stop the rest", async () => {
  const ran: string[] = [];
  onInterrupt(() => ran.push("first"));
  const release = onInterrupt(() => ran.push("released"));
  onInterrupt(() => {
    throw new Error("boom");
  });
  onInterrupt(async () => {
    await new Promise((r) => setTimeout(r, 10));
    ran.push("last");
  });
  release();
  assert.equal(pendingCleanups(), 3);
  assert.equal(await runInterruptCleanups(), 1);
  assert.deepEqual(ran, ["last", "first"]);
  assert.equal(pendingCleanups(), 0);
});

test("a child still running is killed and waited for; one that exited unregisters itself", async () => {
  const done = spawn(process.execPath, ["-e", ""]);
  killOnInterrupt(done);
  await new Promise((r) => done.once("exit", r));
  assert.equal(pendingCleanups(), 0);

  const sleeper = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60_000)"]);
  killOnInterrupt(sleeper);
  const work = mkdtempSync(join(tmpdir(), "careledger-interrupt-test-"));
  removeOnInterrupt(work);
  assert.equal(pendingCleanups(), 2);
  assert.equal(await runInterruptCleanups(), 0);
  assert.equal(sleeper.signalCode, "SIGKILL");
  assert.equal(existsSync(work), false);
  rmSync(work, { recursive: true, force: true });
});
