// `careledger bench import`: generated patients written as NDJSON, then `careledger import` run as a child process
// on a fresh data dir (the real CLI: validation, encryption, blind indexes, patient registration and anchoring on the
// ledger), plus the 40 Synthea bundles of ../shared/data/synthea when they are present — once as they are, and once
// as a bulk load (the same bundles ×10, each copy as distinct patients). Reports resources/s with this machine's
// limits measured in the same run.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Bundle } from "@medplum/fhirtypes";
import { generatePatients } from "../src/fhir/generate.ts";
import { LOOKUP_KEY_FILE, LookupKey } from "../src/fhir/service/patients.ts";
import { initNetwork } from "../src/node/network.ts";
import { killOnInterrupt, removeOnInterrupt } from "./interrupt.ts";
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
  killOnInterrupt(child);
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const [code] = (await once(child, "exit")) as [number | null];
  const wall = (performance.now() - started) / 1000;
  const summary = parseImportSummary(stderr);
  if (code !== 0 || !summary) throw new Error(`careledger import failed (exit ${code}): ${stderr.trim().slice(-500)}`);
  return { ...summary, wall_seconds: Number(wall.toFixed(2)) };
}

/** The figures of the CLI's summary line, or undefined when there is none. */
export function parseImportSummary(stderr: string): Omit<ImportRun, "wall_seconds"> | undefined {
  const m = SUMMARY.exec(stderr);
  if (!m) return undefined;
  const resources = Number(m[1]);
  const perSecond = Number(m[5]);
  return {
    resources,
    bundles: Number(m[2]),
    patients: Number(m[3]),
    // From the CLI's resources/s, not its seconds: those are printed to 0.1 s, up to 8 % of a 1.2 s import.
    import_seconds: perSecond > 0 ? Number((resources / perSecond).toFixed(3)) : Number(m[4]),
  };
}

const UUID_RE = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;

/**
 * The bundle text with every UUID in it (Synthea's resource ids, `urn:uuid:` fullUrls and references, the patient's
 * MRN) replaced by one derived from `copy` and the original, so the copies of one bundle are distinct patients with
 * distinct resources while their references still match up, and their size, shape and codes stay Synthea's.
 */
export function distinctCopy(text: string, copy: number): string {
  return text.replace(UUID_RE, (uuid) => {
    const h = createHash("sha256").update(`${copy}:${uuid.toLowerCase()}`).digest("hex");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
  });
}

/** `copies` distinct copies of every Synthea bundle in `dir`, written as NDJSON; returns the counts. */
export function writeSyntheaBulk(file: string, dir: string, copies: number): { bundles: number; resources: number } {
  const texts = readdirSync(dir)
    .filter((n) => n.endsWith(".json"))
    .sort()
    .map((n) => JSON.stringify(JSON.parse(readFileSync(join(dir, n), "utf8"))));
  function* bundles(): Generator<Bundle> {
    for (let copy = 0; copy < copies; copy++) for (const text of texts) yield JSON.parse(distinctCopy(text, copy));
  }
  return writeNdjson(file, bundles());
}

const rate = (resources: number, seconds: number) => (seconds > 0 ? Math.round(resources / seconds) : 0);

export async function run(options: { quick?: boolean; log?: (line: string) => void; patients?: number }) {
  const log = options.log ?? (() => {});
  const patients = options.patients ?? (options.quick ? 50 : 1000);
  const work = mkdtempSync(join(tmpdir(), "careledger-bench-import-"));
  const releaseWork = removeOnInterrupt(work);
  try {
    log("measuring this machine's limits (Ed25519 verify on one core, fsync)…");
    const limits = machineLimits(work, log);

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
    let syntheaBulk: ImportRun | undefined;
    const syntheaCopies = options.quick ? 2 : 10;
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
      // 40 bundles import in about a second, much of it the first pass through cold (not yet optimised) code; a bulk
      // load of the same kind of data shows the rate an import keeps up.
      const bulkFile = join(work, "synthea-bulk.ndjson");
      const bulkWritten = writeSyntheaBulk(bulkFile, SYNTHEA_DIR, syntheaCopies);
      const bulkDir = join(work, "synthea-bulk");
      initDataDir(bulkDir, "Bench Hospital");
      log(
        `careledger import of the Synthea bundles ×${syntheaCopies} as distinct patients (${bulkWritten.resources} resources)…`,
      );
      syntheaBulk = await runImportCli(bulkDir, [bulkFile]);
      if (
        syntheaBulk.resources !== bulkWritten.resources ||
        syntheaBulk.patients !== synthea.patients * syntheaCopies
      ) {
        throw new Error(
          `the Synthea bulk load imported ${syntheaBulk.resources} resources and ${syntheaBulk.patients} new patients; ` +
            `expected ${bulkWritten.resources} and ${synthea.patients * syntheaCopies}`,
        );
      }
      log(`  ${JSON.stringify(syntheaBulk)}`);
    } else {
      syntheaNote = `no Synthea bundles at ${SYNTHEA_DIR}: skipped`;
      log(syntheaNote);
    }

    return {
      resources_per_s: rate(generated.resources, generated.wall_seconds),
      synthea_resources_per_s: synthea ? rate(synthea.resources, synthea.wall_seconds) : null,
      synthea_import_only_resources_per_s: synthea ? rate(synthea.resources, synthea.import_seconds) : null,
      synthea_bulk_resources_per_s: syntheaBulk ? rate(syntheaBulk.resources, syntheaBulk.wall_seconds) : null,
      synthea_bulk_import_only_resources_per_s: syntheaBulk
        ? rate(syntheaBulk.resources, syntheaBulk.import_seconds)
        : null,
      resources: generated.resources,
      patients: generated.patients,
      seconds: generated.wall_seconds,
      import_only_resources_per_s: rate(generated.resources, generated.import_seconds),
      generated,
      synthea: synthea ?? null,
      synthea_bulk: syntheaBulk ?? null,
      ...(syntheaNote ? { synthea_note: syntheaNote } : {}),
      goal_resources_per_s: 5000,
      ...limits,
      params: {
        generated_patients: patients,
        seed: BENCH_SEED,
        synthea_bundles: syntheaFiles,
        synthea_bulk_copies: syntheaFiles > 0 ? syntheaCopies : 0,
        how: "careledger import as a child process on a fresh data dir; resources_per_s = resources / wall time of that process (Node start and node open/close included); import_only_resources_per_s = the CLI's own figure; synthea_bulk = the Synthea bundles ×synthea_bulk_copies, each copy's UUIDs replaced so it is distinct patients, in one import",
      },
    };
  } finally {
    rmSync(work, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
    releaseWork();
  }
}
