// `careledger bench ledger`: a node in its own process, pre-signed txs submitted over HTTP by a separate load process.
// Reports committed tx/s and commit latency at full load and at 5,000 tx/s offered, with this machine's limits.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readKeyFile } from "../src/node/datadir.ts";
import { initNetwork, newKey, signNew } from "../src/node/network.ts";
import { measureFsyncLatency } from "./disk.ts";
import { killOnInterrupt, removeOnInterrupt } from "./interrupt.ts";
import { machineLimits, verifyRatios } from "./limits.ts";

const REPO = new URL("..", import.meta.url).pathname;
/** Issue 3's latency goal at 5,000 tx/s offered. */
const GOAL_P99_MS = 25;
const CLI = join(REPO, "bin/careledger.js");

async function startNode(dir: string) {
  const child = spawn(process.execPath, [CLI, "start", "--dir", dir, "--port", "0"], {
    env: { ...process.env, CARELEDGER_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  killOnInterrupt(child);
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1] as string);
    });
    child.once("exit", (code) => reject(new Error(`node exited early (${code})`)));
  });
  return { child, url };
}

/** Runs bench/ledger-load.ts in its own process with `args`; resolves with the JSON object it prints last. */
export async function runLoad(args: Record<string, unknown>): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [join(REPO, "bench/ledger-load.ts"), JSON.stringify(args)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  killOnInterrupt(child);
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  const [code] = await once(child, "exit");
  if (code !== 0) throw new Error(`load process failed (${code})`);
  return JSON.parse(out.trim().split("\n").at(-1) as string);
}

export async function run(options: { quick?: boolean; log?: (line: string) => void }) {
  const log = options.log ?? (() => {});
  const work = mkdtempSync(join(tmpdir(), "careledger-bench-ledger-"));
  const dir = join(work, "node");
  const releaseWork = removeOnInterrupt(work);
  try {
    log("measuring this machine's limits (Ed25519 verify on one core, fsync)…");
    const limits = machineLimits(work, log);
    const fsync = measureFsyncLatency(work, { quick: options.quick, overMs: GOAL_P99_MS, log });
    const created = initNetwork(dir, { orgName: "Bench Hospital" });
    const admin = readKeyFile(join(dir, "keys", "admin.key"));
    const node = await startNode(dir);
    try {
      // Patients the access-log txs refer to (registered by the org's admin).
      const patients = Array.from({ length: 1000 }, () => randomUUID());
      const registrations = patients.map((patient) =>
        signNew(admin, "patient.register", { patient, org: created.orgId, key: newKey().keyId }, Date.now()),
      );
      for (let i = 0; i < registrations.length; i += 500) {
        const response = await fetch(`${node.url}/ledger/txs`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(registrations.slice(i, i + 500)),
        });
        if (response.status !== 200) throw new Error(`setup failed: ${await response.text()}`);
      }
      const patientsFile = join(work, "patients.json");
      writeFileSync(patientsFile, JSON.stringify(patients));
      const common = {
        url: node.url,
        nodeKeyFile: join(dir, "node.key"),
        custodian: created.orgId,
        patientsFile,
        seconds: options.quick ? 3 : 15,
        // Offered the same way first, not measured (see ledger-load.ts).
        warmupSeconds: options.quick ? 0.5 : 2,
        cpuPids: node.child.pid === undefined ? {} : { node: node.child.pid },
        diskDir: work,
      };
      log("full load…");
      const full = await runLoad({ ...common, mode: "full", concurrency: 8, batch: 250, rate: 0 });
      log(`  ${JSON.stringify(full)}`);
      log("5,000 tx/s offered…");
      const at5000 = await runLoad({ ...common, mode: "rate", concurrency: 1, batch: 25, rate: 5000 });
      log(`  ${JSON.stringify(at5000)}`);
      return {
        tx_per_s: full.tx_per_s,
        p50_ms: full.p50_ms,
        p99_ms: full.p99_ms,
        full_load: full,
        at_5000_offered: at5000,
        ...verifyRatios(full.tx_per_s as number, limits),
        goal_ratio: 0.43,
        stretch_ratio: 0.65,
        goal_p99_ms_at_5000: GOAL_P99_MS,
        ...limits,
        fsync_latency: fsync,
        params: { tx: "access.log, 1 entry, signed by the org's node key", batch_max_txs: 500, batch_max_wait_ms: 5 },
      };
    } finally {
      node.child.kill("SIGTERM");
      await once(node.child, "exit");
    }
  } finally {
    rmSync(work, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
    releaseWork();
  }
}
