// `careledger bench import`: generated patients written as NDJSON, then `careledger import` run as a child process
// on a fresh data dir (the real CLI: validation, encryption, blind indexes, patient registration and anchoring on the
// ledger), plus the 40 Synthea bundles of ../shared/data/synthea when they are present. Reports resources/s with
// this machine's limits measured in the same run.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Bundle } from "@medplum/fhirtypes";
import { generatePatients } from "../src/fhir/generate.ts";
import { LOOKUP_KEY_FILE, LookupKey } from "../src/fhir/service/patients.ts";
import { initNetwork } from "../src/node/network.ts";
import { machineLimits } from "./limits.ts";

const REPO = new URL("..", import.meta.url).pathname;
export const CLI = join(REPO, "bin/careledger.js");
/** Third-party test data beside the repo; users of the benchmark will not have it, so it is optional. */
const SYNTHEA_DIR = new URL("../../shared/data/synthea/", import.meta.url).pathname;
export const BENCH_SEED = "careledger-bench";

/** `careledger init` in process: a new one-organisation network with its NHS-number lookup key. */
export function initDataDir(dir: string, orgName: string): { orgId: string } {
  const created = initNetwork(dir, { orgName });
  LookupKey.create(join(dir, LOOKUP_KEY_FILE));
  return { orgId: created.orgId };
}

/** Writes bundles as NDJSON (one Bundle per line, as `careledger generate` does); returns how many resources. */
export function writeNdjson(file: string, bundles: Iterable<Bundle>): { bundles: number; resources: number } {
  const fd = openSync(file, "w");
  let count = 0;
  let resources = 0;
  try {
    for (const bundle of bundles) {
      writeSync(fd, `${JSON.stringify(bundle)}\n`);
      count++;
      resources += bundle.entry?.length ?? 0;
    }
  } finally {
    closeSync(fd);
  }
  return { bundles: count, resources };
}

export interface ImportRun {
  resources: number;
  bundles: number;
  patients: number;
  /** Wall time of the child process, start to exit (Node start, opening the node, importing, closing). */
  wall_seconds: number;
  /** The import itself as the CLI reports it (files read, planned, stored, anchored). */
  import_seconds: number;
}

const SUMMARY = /imported (\d+) resources \((\d+) bundles, (\d+) new patients\) in ([\d.]+) s \((\d+) resources\/s\)/;

/** Runs `careledger import --dir DIR FILES…` in its own process and reads its summary line. */
export async function runImportCli(dir: string, files: readonly string[]): Promise<ImportRun> {
  const started = performance.now();
  const child = spawn(process.execPath, [CLI, "import", "--dir", dir, ...files], {
    env: { ...process.env, CARELEDGER_LOG_LEVEL: "warn" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const [code] = (await once(child, "exit")) as [number | null];
  const wall = (performance.now() - started) / 1000;
  const m = SUMMARY.exec(stderr);
  if (code !== 0 || !m) throw new Error(`careledger import failed (exit ${code}): ${stderr.trim().slice(-500)}`);
  return {
    resources: Number(m[1]),
    bundles: Number(m[2]),
    patients: Number(m[3]),
    wall_seconds: Number(wall.toFixed(2)),
    import_seconds: Number(m[4]),
  };
}

const rate = (resources: number, seconds: number) => (seconds > 0 ? Math.round(resources / seconds) : 0);

export async function run(options: { quick?: boolean; log?: (line: string) => void; patients?: number }) {
  const log = options.log ?? (() => {});
  const patients = options.patients ?? (options.quick ? 50 : 1000);
  const work = mkdtempSync(join(tmpdir(), "careledger-bench-import-"));
  try {
    log("measuring this machine's limits (Ed25519 verify on one core, fsync)…");
    const limits = machineLimits(work);

    log(`generating ${patients} patients as NDJSON…`);
    const file = join(work, "patients.ndjson");
    const written = writeNdjson(file, generatePatients({ patients, seed: BENCH_SEED }));
    const dir = join(work, "generated");
    initDataDir(dir, "Bench Hospital");
    log(`careledger import of ${written.resources} resources (${written.bundles} bundles)…`);
    const generated = await runImportCli(dir, [file]);
    if (generated.resources !== written.resources) {
      throw new Error(`imported ${generated.resources} resources of ${written.resources} written`);
    }
    log(`  ${JSON.stringify(generated)}`);

    let synthea: ImportRun | undefined;
    let syntheaNote: string | undefined;
    const syntheaFiles = existsSync(SYNTHEA_DIR)
      ? readdirSync(SYNTHEA_DIR).filter((n) => n.endsWith(".json")).length
      : 0;
    if (syntheaFiles > 0) {
      const syntheaDir = join(work, "synthea");
      initDataDir(syntheaDir, "Bench Hospital");
      log(`careledger import of the ${syntheaFiles} Synthea bundles…`);
      synthea = await runImportCli(syntheaDir, [SYNTHEA_DIR]);
      log(`  ${JSON.stringify(synthea)}`);
    } else {
      syntheaNote = `no Synthea bundles at ${SYNTHEA_DIR}: skipped`;
      log(syntheaNote);
    }

    return {
      resources_per_s: rate(generated.resources, generated.wall_seconds),
      synthea_resources_per_s: synthea ? rate(synthea.resources, synthea.wall_seconds) : null,
      synthea_import_only_resources_per_s: synthea ? rate(synthea.resources, synthea.import_seconds) : null,
      resources: generated.resources,
      patients: generated.patients,
      seconds: generated.wall_seconds,
      import_only_resources_per_s: rate(generated.resources, generated.import_seconds),
      generated,
      synthea: synthea ?? null,
      ...(syntheaNote ? { synthea_note: syntheaNote } : {}),
      goal_resources_per_s: 5000,
      ...limits,
      params: {
        generated_patients: patients,
        seed: BENCH_SEED,
        synthea_bundles: syntheaFiles,
        how: "careledger import as a child process on a fresh data dir; resources_per_s = resources / wall time of that process (Node start and node open/close included); import_only_resources_per_s = the CLI's own figure",
      },
    };
  } finally {
    rmSync(work, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  }
}
