// `careledger bench fhir`: FHIR R4 reads over HTTP with a bearer token, each through consent, decryption, the
// integrity check and the access log, from a separate load process against a node started with `careledger start`;
// then search and $everything latency for a patient with ~1,000 resources. Reports req/s and latency with this
// machine's limits measured in the same run, and checks that the reads' `access.log` entries reached the ledger.
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Bundle, BundleEntry, Observation } from "@medplum/fhirtypes";
import { requestAccessToken } from "../src/fhir/auth/client-assertion.ts";
import { generatedNhsNumber, generatePatient, generatePatients } from "../src/fhir/generate.ts";
import { NHS_NUMBER_SYSTEM } from "../src/fhir/nhs-number.ts";
import type { KeyPair } from "../src/ledger/keys.ts";
import type { BlockEntry } from "../src/ledger/types.ts";
import { readKeyFile, writeKeyFile } from "../src/node/datadir.ts";
import { newKey, signNew } from "../src/node/network.ts";
import { BENCH_SEED, CLI, initDataDir, runImportCli, writeNdjson } from "./import.ts";
import { killOnInterrupt, removeOnInterrupt } from "./interrupt.ts";
import { machineLimits } from "./limits.ts";

const REPO = new URL("..", import.meta.url).pathname;
/** Medplum's FHIR router serving Patient reads from memory, no auth, autocannon with 32 connections, same 2 cores. */
const PEER_MEDPLUM_REQ_PER_S = 26_000;
const CONNECTIONS = 32;

/**
 * One patient's bundle grown to `entries` entries with copies of its own non-sensitive observations (new fullUrls,
 * a day apart), so that search and $everything have ~1,000 records of one patient to go through.
 */
export function bigPatientBundle(seed: string, index: number, entries: number): Bundle {
  const bundle = generatePatient(seed, index);
  const list = bundle.entry as BundleEntry[];
  const templates = list.filter(
    (e) => e.resource?.resourceType === "Observation" && (e.resource.meta?.security?.length ?? 0) === 0,
  );
  if (templates.length === 0) throw new Error("the generated patient has no plain observation to copy");
  const day = 86_400_000;
  for (let i = 0; list.length < entries; i++) {
    const template = templates[i % templates.length] as BundleEntry;
    const copy = structuredClone(template.resource) as Observation;
    const when = new Date(Date.parse("2025-06-01T09:00:00Z") - i * day).toISOString();
    copy.effectiveDateTime = when;
    copy.issued = when;
    list.push({ fullUrl: `urn:uuid:${randomUUID()}`, resource: copy, request: template.request });
  }
  return bundle;
}

async function startNode(dir: string, profileDir?: string): Promise<{ child: ChildProcess; url: string }> {
  const nodeFlags = profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [];
  const child = spawn(process.execPath, [...nodeFlags, CLI, "start", "--dir", dir, "--port", "0"], {
    cwd: REPO,
    env: { ...process.env, CARELEDGER_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  killOnInterrupt(child);
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout?.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1] as string);
    });
    child.once("exit", (code) => reject(new Error(`node exited early (${code})`)));
  });
  child.stdout?.resume();
  return { child, url };
}

async function json(response: Response, what: string): Promise<Record<string, unknown>> {
  const text = await response.text();
  if (response.status !== 200) throw new Error(`${what}: HTTP ${response.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text) as Record<string, unknown>;
}

/** `member.enrol` of a clinician, signed by the organisation's admin, committed through `POST /ledger/tx`. */
async function enrolClinician(url: string, admin: KeyPair, org: string): Promise<KeyPair> {
  const key = newKey();
  const tx = signNew(
    admin,
    "member.enrol",
    { member: randomUUID(), org, role: "clinician", key: key.keyId },
    Date.now(),
  );
  const response = await fetch(`${url}/ledger/tx`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(tx),
  });
  const body = await json(response, "enrolling the clinician");
  if ((body.result as { valid?: boolean } | undefined)?.valid === false || body.valid === false) {
    throw new Error(`enrolling the clinician was refused: ${JSON.stringify(body)}`);
  }
  return key;
}

/** A bearer token from `POST /auth/token` with the clinician's `private_key_jwt` client assertion, for treatment. */
async function bearerToken(url: string, key: KeyPair): Promise<string> {
  return requestAccessToken(key, `${url}/auth/token`, { purpose: "TREAT" });
}

async function searchIds(url: string, token: string, query: string, limit: number): Promise<string[]> {
  const ids: string[] = [];
  for (let offset = 0; ids.length < limit; offset += 1000) {
    const sep = query.includes("?") ? "&" : "?";
    const response = await fetch(`${url}/fhir/${query}${sep}_count=1000&_offset=${offset}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const bundle = (await json(response, `search ${query.split("?")[0]}`)) as unknown as Bundle;
    const page = (bundle.entry ?? []).map((e) => e.resource?.id).filter((id): id is string => typeof id === "string");
    ids.push(...page);
    if (page.length < 1000) break;
  }
  return ids.slice(0, limit);
}

/** The ledger head once no block has been added for a few hundred ms (queued access-log entries committed). */
async function settledHeight(url: string): Promise<number> {
  let last = -1;
  let stable = 0;
  for (let i = 0; i < 200 && stable < 3; i++) {
    const height = (await json(await fetch(`${url}/ledger/head`), "ledger head")).height as number;
    stable = height === last ? stable + 1 : 0;
    last = height;
    await new Promise((r) => setTimeout(r, 100));
  }
  return last;
}

/** `access.log` txs and entries committed (valid) in blocks from..to, read back over `GET /ledger/blocks/:h`. */
async function accessLogsIn(url: string, from: number, to: number): Promise<{ txs: number; entries: number }> {
  const out = { txs: 0, entries: 0 };
  let next = from;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next <= to) {
        const height = next++;
        const body = (await json(await fetch(`${url}/ledger/blocks/${height}`), `block ${height}`)) as {
          block: { txs: BlockEntry[] };
        };
        for (const entry of body.block.txs) {
          if (entry.tx.type !== "access.log" || !entry.result.valid) continue;
          out.txs++;
          out.entries += (entry.tx.payload.entries as unknown[]).length;
        }
      }
    }),
  );
  return out;
}

/** What bench/fhir-load.ts prints. */
interface LoadResult {
  req_per_s: number;
  p50_ms: number;
  p99_ms: number;
  reads_ok: number;
  reads_by_status: Record<string, number>;
  read_seconds: number;
  read_window_us: [number, number];
  node_cpu_cores_reads: number | null;
  load_cpu_cores_reads: number;
  search_p50_ms: number;
  search_p99_ms: number;
  search_calls: number;
  search_entries: number;
  search_total: number;
  everything_p50_ms: number;
  everything_p99_ms: number;
  everything_calls: number;
  everything_entries: number;
}

async function runLoad(args: Record<string, unknown>): Promise<LoadResult> {
  const child = spawn(process.execPath, [join(REPO, "bench/fhir-load.ts"), JSON.stringify(args)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  killOnInterrupt(child);
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  const [code] = await once(child, "exit");
  if (code !== 0) throw new Error(`load process failed (${code})`);
  return JSON.parse(out.trim().split("\n").at(-1) as string) as LoadResult;
}

export async function run(options: {
  quick?: boolean;
  log?: (line: string) => void;
  /** Write a V8 CPU profile of the node process into this directory (also CARELEDGER_BENCH_CPU_PROF). */
  profileDir?: string;
}) {
  const log = options.log ?? (() => {});
  const quick = options.quick === true;
  const patients = quick ? 30 : 200;
  const bigEntries = 1000;
  const seconds = quick ? 3 : 15;
  const warmupSeconds = quick ? 0.5 : 2;
  const searchCalls = quick ? 10 : 50;
  const everythingCalls = quick ? 5 : 50;
  const profileDir = options.profileDir ?? process.env.CARELEDGER_BENCH_CPU_PROF;
  const work = mkdtempSync(join(tmpdir(), "careledger-bench-fhir-"));
  const dir = join(work, "node");
  const releaseWork = removeOnInterrupt(work);
  try {
    log("measuring this machine's limits (Ed25519 verify on one core, fsync)…");
    const limits = machineLimits(work, log);

    const { orgId } = initDataDir(dir, "Bench Hospital");
    const file = join(work, "patients.ndjson");
    const bigPatientNhs = generatedNhsNumber(BENCH_SEED, 0);
    const written = writeNdjson(file, [
      bigPatientBundle(BENCH_SEED, 0, bigEntries),
      ...generatePatients({ patients, seed: BENCH_SEED, start: 1 }),
    ]);
    log(`importing ${written.resources} resources (${written.bundles} patients, one with ${bigEntries})…`);
    const imported = await runImportCli(dir, [file]);
    log(`  ${JSON.stringify(imported)}`);

    const node = await startNode(dir, profileDir);
    try {
      const clinician = await enrolClinician(node.url, readKeyFile(join(dir, "keys", "admin.key")), orgId);
      writeKeyFile(join(work, "clinician.key"), clinician, "bench clinician");
      const token = await bearerToken(node.url, clinician);

      log("collecting the ids to read (as the clinician: only what consent lets it see)…");
      const patientIds = await searchIds(node.url, token, "Patient", 10_000);
      const big = await searchIds(
        node.url,
        token,
        `Patient?identifier=${encodeURIComponent(`${NHS_NUMBER_SYSTEM}|${bigPatientNhs}`)}`,
        2,
      );
      if (big.length !== 1) throw new Error(`the 1,000-resource patient was found ${big.length} times`);
      const observationIds = await searchIds(node.url, token, "Observation", 50_000);
      const targets = [...patientIds.map((id) => `Patient/${id}`), ...observationIds.map((id) => `Observation/${id}`)];
      // A fixed shuffle, so that consecutive reads hit different patients' keys and index pages.
      let state = 0x9e3779b9;
      for (let i = targets.length - 1; i > 0; i--) {
        state = (Math.imul(state ^ (state >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
        const j = state % (i + 1);
        [targets[i], targets[j]] = [targets[j] as string, targets[i] as string];
      }
      const targetsFile = join(work, "targets.json");
      writeFileSync(targetsFile, JSON.stringify(targets));
      log(`  ${patientIds.length} Patients, ${observationIds.length} Observations`);

      const heightBefore = await settledHeight(node.url);
      log(`reads for ${seconds} s (${CONNECTIONS} connections), then search and $everything one call at a time…`);
      const r = await runLoad({
        url: node.url,
        token,
        targetsFile,
        bigPatient: big[0],
        connections: CONNECTIONS,
        warmupSeconds,
        seconds,
        searchCalls,
        everythingCalls,
        nodePid: node.child.pid,
      });
      log(`  ${JSON.stringify(r)}`);

      const heightAfter = await settledHeight(node.url);
      const logged = await accessLogsIn(node.url, heightBefore + 1, heightAfter);
      const readsLogged = logged.entries >= r.reads_ok;
      log(
        `access.log: ${logged.entries} entries in ${logged.txs} txs over ${heightAfter - heightBefore} blocks ` +
          `for ${r.reads_ok} measured reads (plus warm-up, searches and $everything)`,
      );

      return {
        req_per_s: r.req_per_s,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        search_p50_ms: r.search_p50_ms,
        search_p99_ms: r.search_p99_ms,
        everything_p50_ms: r.everything_p50_ms,
        everything_p99_ms: r.everything_p99_ms,
        goal_req_per_s: 3000,
        goal_p99_ms: 20,
        peer_medplum_req_per_s: PEER_MEDPLUM_REQ_PER_S,
        reads: {
          ok: r.reads_ok,
          by_status: r.reads_by_status,
          seconds: r.read_seconds,
          targets: targets.length,
          patients: patientIds.length,
          observations: observationIds.length,
        },
        search: { calls: r.search_calls, entries: r.search_entries, total: r.search_total },
        everything: { calls: r.everything_calls, entries: r.everything_entries },
        access_log: {
          txs: logged.txs,
          entries: logged.entries,
          blocks: heightAfter - heightBefore,
          covers_every_read: readsLogged,
        },
        cpu_cores_during_reads: { node: r.node_cpu_cores_reads, load: r.load_cpu_cores_reads },
        import: imported,
        ...limits,
        params: {
          patients: patients + 1,
          big_patient_resources: bigEntries,
          connections: CONNECTIONS,
          warmup_seconds: warmupSeconds,
          seconds,
          search: "GET /fhir/Observation?patient=<big>&_count=50, one call at a time",
          everything: "GET /fhir/Patient/<big>/$everything, one call at a time",
          search_calls: searchCalls,
          everything_calls: everythingCalls,
          reads: "GET /fhir/Patient/:id and /fhir/Observation/:id over every id the clinician can see, shuffled",
          token: "clinician of the custodian org, purpose TREAT, private_key_jwt via POST /auth/token",
          cpu_profile: profileDir ?? null,
          read_window_monotonic_us: r.read_window_us,
        },
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
