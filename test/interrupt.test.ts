// `careledger bench cluster` and `careledger cluster up` interrupted as a user would (SIGINT to the command alone: the
// cluster they start runs detached from the terminal, so nothing else stops it): every etcd member, node and load
// process they started is gone, what they wrote is removed (or kept, for a cluster that existed before), and they
// exit as SIGINT would.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { CLI, runCli, tempDir } from "./helpers.ts";

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

/**
 * Runs the CLI with `args`, sends it SIGINT once its output (stdout and stderr together) matches `when` — after
 * `atInterrupt` looked at the machine — and resolves with how it ended.
 */
async function interruptWhen(
  args: string[],
  when: RegExp,
  options: { env?: NodeJS.ProcessEnv; atInterrupt?: () => void } = {},
): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: options.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const seen = (d: string) => {
      output += d;
      if (when.test(output)) resolve();
    };
    child.stdout.setEncoding("utf8").on("data", seen);
    child.stderr.setEncoding("utf8").on("data", seen);
    child.once("exit", () => reject(new Error(`${args.join(" ")} ended before ${when}:\n${output}`)));
  });
  options.atInterrupt?.();
  child.kill("SIGINT");
  return { code: await exited, output };
}

/** A temp dir for one test; whatever a failing test left running under it is killed before it is removed. */
async function inTempDir(prefix: string, body: (path: string) => Promise<void>): Promise<void> {
  const tmp = tempDir(prefix);
  try {
    await body(tmp.path);
  } finally {
    for (const line of processesUnder(tmp.path)) process.kill(Number(line.split(":")[0]), "SIGKILL");
    tmp.remove();
  }
}

test(
  "an interrupted bench cluster stops its cluster and load, removes its files and exits 130",
  {
    timeout: 240_000,
  },
  () =>
    inTempDir("bench-interrupt", async (tmp) => {
      // Interrupted during the first load phase: the cluster is up and a load process runs.
      const { code, output } = await interruptWhen(["bench", "cluster", "--quick", "--json"], /load: pre-signed/, {
        env: { ...process.env, TMPDIR: tmp },
        atInterrupt: () => {
          // 3 etcd members, 3 nodes and the load process are running.
          const started = processesUnder(tmp);
          assert.ok(started.length >= 7, started.join("\n"));
        },
      });
      assert.equal(code, 130, output);
      assert.match(output, /bench cluster: SIGINT; stopping what it started/);
      assert.match(output, /bench cluster: stopped the processes it started and removed its files\n/);
      assert.deepEqual(processesUnder(tmp), []);
      // (Node's own compile cache may live there too.)
      assert.deepEqual(
        readdirSync(tmp).filter((e) => e.startsWith("careledger-")),
        [],
      );
    }),
);

test(
  "cluster up interrupted while its nodes start stops the etcd members and nodes it started and removes the new cluster",
  {
    timeout: 120_000,
  },
  () =>
    inTempDir("cluster-up-interrupt", async (tmp) => {
      const dir = join(tmp, "cluster");
      // etcd is up and the first node is starting.
      const { code, output } = await interruptWhen(
        ["cluster", "up", "--dir", dir, "--orgs", "3", "--base-port", "0"],
        /etcd: 3 members/,
        { atInterrupt: () => assert.ok(processesUnder(dir).length >= 3, processesUnder(dir).join("\n")) },
      );
      assert.equal(code, 130, output);
      assert.match(output, /cluster up: SIGINT; stopping what it started/);
      assert.match(output, /cluster up: stopped, and removed what it had written to /);
      assert.deepEqual(processesUnder(tmp), []);
      assert.ok(!existsSync(dir) || readdirSync(dir).length === 0, readdirSync(dir).join(", "));
    }),
);

test(
  "cluster up interrupted while it restarts a stopped cluster stops what it started and keeps the cluster's data",
  {
    timeout: 120_000,
  },
  () =>
    inTempDir("cluster-restart-interrupt", async (tmp) => {
      const dir = join(tmp, "cluster");
      assert.equal((await runCli(["cluster", "up", "--dir", dir, "--orgs", "1", "--base-port", "0"])).code, 0);
      assert.equal((await runCli(["cluster", "down", "--dir", dir])).code, 0);
      const before = readdirSync(dir).sort();
      const { code, output } = await interruptWhen(["cluster", "up", "--dir", dir], /etcd: 1 members/);
      assert.equal(code, 130, output);
      assert.match(output, /cluster up: stopped; the data stays in /);
      assert.deepEqual(processesUnder(tmp), []);
      assert.deepEqual(readdirSync(dir).sort(), before);
      // And it starts again.
      assert.equal((await runCli(["cluster", "up", "--dir", dir])).code, 0);
      assert.equal((await runCli(["cluster", "down", "--dir", dir])).code, 0);
    }),
);
