import { once } from "node:events";
import {
  accessSync,
  constants,
  createWriteStream,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  statSync,
} from "node:fs";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Bundle } from "@medplum/fhirtypes";
import { DEFAULT_NOW, generatePatients, MAX_PATIENTS } from "../fhir/generate.ts";
import { ConfigError } from "../node/datadir.ts";
import { DEFAULT_OUT, DEFAULT_SEED } from "./generate-defaults.ts";
import { progressBar } from "./progress.ts";

export interface GenerateCommandOptions {
  /** How many patients, 1 … 1,000,000 (a number, or the flag's text). */
  patients: number | string;
  seed?: string;
  /**
   * A directory (one `patient-00001.json`, … per patient, each a transaction Bundle, ready for
   * `careledger import DIR/*.json`), `-` for NDJSON on standard output (one Bundle per line), or a file whose name
   * ends in `.ndjson` for the same in a file.
   */
  out?: string;
  /** The generated world's "today" (ISO date or date-time); default DEFAULT_NOW, never the clock. */
  now?: string;
}

export interface GenerateSummary {
  patients: number;
  resources: number;
  /** Resources carrying a sensitivity label in meta.security. */
  labelled: number;
  seconds: number;
  out: string;
}

function patientCount(raw: number | string): number | undefined {
  const n = typeof raw === "number" ? raw : /^\d{1,7}$/.test(raw.trim()) ? Number(raw.trim()) : Number.NaN;
  return Number.isSafeInteger(n) && n >= 1 && n <= MAX_PATIENTS ? n : undefined;
}

/**
 * `careledger generate --patients N [--seed S] [--out DIR|-|FILE.ndjson] [--now DATE]`: deterministic synthetic UK
 * patients (src/fhir/generate.ts). The same options write byte-identical output. Bad options are a ConfigError (one
 * line, exit 2). A progress bar shows on stderr when it is a terminal; a one-line summary follows on stderr.
 */
export async function generateCommand(options: GenerateCommandOptions): Promise<GenerateSummary> {
  const patients = patientCount(options.patients);
  if (patients === undefined) throw new ConfigError(`--patients must be a whole number from 1 to ${MAX_PATIENTS}`);
  const seed = options.seed ?? DEFAULT_SEED;
  if (seed.length === 0 || seed.length > 200) throw new ConfigError("--seed must be 1 to 200 characters");
  const now = options.now ?? DEFAULT_NOW;
  if (!/^\d{4}-\d{2}-\d{2}/.test(now) || !Number.isFinite(Date.parse(now))) {
    throw new ConfigError("--now must be an ISO date such as 2025-06-30 or 2025-06-30T12:00:00Z");
  }
  const out = options.out ?? DEFAULT_OUT;
  const started = performance.now();
  const counts = { resources: 0, labelled: 0 };
  const bundles = generatePatients({ patients, seed, now });
  const bar = progressBar("generate", patients, "patients");
  try {
    if (out === "-") await writeStream(bundles, process.stdout, counts, bar);
    else if (out.endsWith(".ndjson")) await writeNdjsonFile(out, bundles, counts, bar);
    else await writeDirectory(prepareDirectory(out), patients, bundles, counts, bar);
  } finally {
    bar.stop();
  }
  const seconds = (performance.now() - started) / 1000;
  const where = out === "-" ? "standard output" : out;
  process.stderr.write(
    `generated ${patients} patients (${counts.resources} resources, ${counts.labelled} sensitive-labelled) to ` +
      `${where} in ${seconds.toFixed(1)} s (${Math.round(patients / seconds)} patients/s)\n`,
  );
  return { patients, ...counts, seconds, out: where };
}

type Progress = ReturnType<typeof progressBar>;
type Counts = { resources: number; labelled: number };

function count(bundle: Bundle, counts: Counts): void {
  for (const entry of bundle.entry ?? []) {
    counts.resources++;
    if (entry.resource?.meta?.security !== undefined) counts.labelled++;
  }
}

/** Creates the directory if needed; refuses a file, an unwritable place, or a directory holding an earlier run. */
function prepareDirectory(out: string): string {
  const dir = resolve(out);
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new ConfigError(`--out ${out} is not a directory`);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (error) {
    throw new ConfigError(`cannot create --out directory ${out}: ${(error as NodeJS.ErrnoException).code ?? "error"}`);
  }
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw new ConfigError(`--out directory ${out} is not writable`);
  }
  if (readdirSync(dir).some((name) => /^patient-\d+\.json$/.test(name))) {
    throw new ConfigError(`--out directory ${out} already holds generated patients; choose an empty directory`);
  }
  return dir;
}

/**
 * One file per patient. Writes run on libuv's thread pool, a bounded number at a time, so the kernel's cost of
 * creating files (most of the time on a real disk) overlaps generating the next patients.
 */
async function writeDirectory(
  dir: string,
  patients: number,
  bundles: Iterable<Bundle>,
  counts: Counts,
  bar: Progress,
): Promise<void> {
  const width = Math.max(5, String(patients).length);
  const inFlight = new Set<Promise<void>>();
  let failure: ConfigError | undefined;
  let n = 0;
  for (const bundle of bundles) {
    n++;
    count(bundle, counts);
    const file = join(dir, `patient-${String(n).padStart(width, "0")}.json`);
    // "wx": never overwrite a file that appeared meanwhile.
    const write: Promise<void> = writeFile(file, JSON.stringify(bundle), { flag: "wx" })
      .catch((error: NodeJS.ErrnoException) => {
        failure ??= new ConfigError(`cannot write ${file}: ${error.code ?? "error"}`);
      })
      .finally(() => inFlight.delete(write));
    inFlight.add(write);
    if (inFlight.size >= 16) await Promise.race(inFlight);
    if (failure) break;
    if (n % 100 === 0) bar.update(n);
  }
  await Promise.all(inFlight);
  if (failure) throw failure;
  bar.update(n);
}

async function writeNdjsonFile(out: string, bundles: Iterable<Bundle>, counts: Counts, bar: Progress): Promise<void> {
  if (existsSync(out)) throw new ConfigError(`--out ${out} already exists`);
  let fd: number;
  try {
    fd = openSync(out, "wx");
  } catch (error) {
    throw new ConfigError(`cannot write ${out}: ${(error as NodeJS.ErrnoException).code ?? "error"}`);
  }
  const stream = createWriteStream(out, { fd });
  await writeStream(bundles, stream, counts, bar);
  stream.end();
  await once(stream, "finish");
}

async function writeStream(
  bundles: Iterable<Bundle>,
  stream: NodeJS.WritableStream,
  counts: Counts,
  bar: Progress,
): Promise<void> {
  let n = 0;
  let broken = false;
  const onError = (error: NodeJS.ErrnoException) => {
    // A reader that went away (`| head`) ends the run quietly, as for `careledger export`.
    if (error.code === "EPIPE") broken = true;
  };
  stream.on("error", onError);
  try {
    for (const bundle of bundles) {
      if (broken) return;
      count(bundle, counts);
      if (!stream.write(`${JSON.stringify(bundle)}\n`)) {
        try {
          await once(stream, "drain");
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === "EPIPE") return;
          throw error;
        }
      }
      n++;
      if (n % 100 === 0) bar.update(n);
    }
    bar.update(n);
  } finally {
    stream.off("error", onError);
  }
}
