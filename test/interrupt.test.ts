// `careledger bench cluster` and `careledger cluster up` interrupted as a user would (SIGINT to the command alone: the
// cluster they start runs detached from the terminal, so nothing else stops it): every etcd member, node and load
// process they started is gone, what they wrote is removed, and they exit as SIGINT would.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { CLI, tempDir } from "./helpers.ts";

/** Live processes whose command line mentions `path` (the bench's temp dir is under it). */
function processesUnder(path: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((e) => /^\d+$/.test(e))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
      const state = /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
      if (cmdline.includes(path) && state !== "Z") found.push(`${pid}: ${cmdline.slice(0, 120)}`);
    } catch {
      // exited while we looked
    }
  }
  return found;
}

test("an interrupted bench cluster stops its cluster and load, removes its files and exits 130", {
  timeout: 240_000,
}, async () => {
  const tmp = tempDir("bench-interrupt");
  try {
    const bench = spawn(process.execPath, [CLI, "bench", "cluster", "--quick", "--json"], {
      env: { ...process.env, TMPDIR: tmp.path },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    const exited = new Promise<number | null>((resolve) => bench.once("exit", (code) => resolve(code)));
    // Interrupted during the first load phase: the cluster is up and a load process runs.
    await new Promise<void>((resolve, reject) => {
      bench.stderr.setEncoding("utf8").on("data", (d: string) => {
        stderr += d;
        if (/load: pre-signed/.test(stderr)) resolve();
      });
      bench.once("exit", () => reject(new Error(`the bench ended before its load started:\n${stderr}`)));
    });
    const started = processesUnder(tmp.path);
    // 3 etcd members, 3 nodes and the load process were running.
    assert.ok(started.length >= 7, started.join("\n"));
    bench.kill("SIGINT");
    assert.equal(await exited, 130, stderr);
    assert.match(stderr, /bench cluster: SIGINT; stopping what it started/);
    assert.match(stderr, /bench cluster: stopped the processes it started and removed its files\n/);
    assert.deepEqual(processesUnder(tmp.path), []);
    // (Node's own compile cache may live there too.)
    assert.deepEqual(
      readdirSync(tmp.path).filter((e) => e.startsWith("careledger-")),
      [],
    );
  } finally {
    // Whatever this test's failure left running goes too.
    for (const line of processesUnder(tmp.path)) process.kill(Number(line.split(":")[0]), "SIGKILL");
    tmp.remove();
  }
});

test("cluster up interrupted while its nodes start stops the etcd members and nodes it started and removes the new cluster", {
  timeout: 120_000,
}, async () => {
  const tmp = tempDir("cluster-up-interrupt");
  const dir = join(tmp.path, "cluster");
  try {
    const up = spawn(process.execPath, [CLI, "cluster", "up", "--dir", dir, "--orgs", "3", "--base-port", "0"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    up.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => up.once("exit", (code) => resolve(code)));
    // etcd is up and the first node is starting.
    await new Promise<void>((resolve, reject) => {
      up.stdout.setEncoding("utf8").on("data", (d: string) => {
        stdout += d;
        if (/etcd: 3 members/.test(stdout)) resolve();
      });
      up.once("exit", () => reject(new Error(`cluster up ended first:\n${stdout}${stderr}`)));
    });
    assert.ok(processesUnder(dir).length >= 3, processesUnder(dir).join("\n"));
    up.kill("SIGINT");
    assert.equal(await exited, 130, stderr);
    assert.match(stderr, /cluster up: SIGINT; stopping what it started/);
    assert.match(stderr, /cluster up: stopped, and removed what it had written to /);
    assert.deepEqual(processesUnder(tmp.path), []);
    assert.ok(!existsSync(dir) || readdirSync(dir).length === 0, readdirSync(dir).join(", "));
  } finally {
    for (const line of processesUnder(tmp.path)) process.kill(Number(line.split(":")[0]), "SIGKILL");
    tmp.remove();
  }
});
