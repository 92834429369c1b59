import { randomBytes } from "node:crypto";
import { copyFileSync, existsSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Bundle, Patient } from "@medplum/fhirtypes";
import { createScenario, type ScenarioMeta } from "../contract/fixtures.ts";
import type { DecisionRequest } from "../contract/index.ts";
import { StaticPeerDirectory } from "../fhir/exchange/directory.ts";
import { generatedNhsNumber, generatePatient } from "../fhir/generate.ts";
import { fhirContextOf, fhirExtension } from "../fhir/server.ts";
import { type ImportSource, importBundles } from "../fhir/service/import.ts";
import { LOOKUP_KEY_FILE, LookupKey, PATIENT_KEYS_DIR } from "../fhir/service/patients.ts";
import { sha256 } from "../ledger/hash.ts";
import { parseSignedTx } from "../ledger/tx.ts";
import {
  ConfigError,
  dataPaths,
  ensureDir,
  parseOrdererUrl,
  readKeyFile,
  writeConfig,
  writeFileAtomic,
  writeKeyFile,
} from "../node/datadir.ts";
import { createLogger, type Logger } from "../node/logger.ts";
import { genesisBlock } from "../node/network.ts";
import { openNode, type RunningNode } from "../node/runtime.ts";
import { VerifyPool } from "../node/verify-pool.ts";
import { EmbeddedOrderer } from "../ordering/embedded.ts";

const ORG_NAMES = ["gp", "trust", "uni"] as const;

/** One entry of DIR/demo-users.json: an identity whose key file is in DIR/keys. */
interface DemoUser {
  name: string;
  kind: string;
  org?: string;
  keyId: string;
  patient?: string;
  fhirPatientId?: string;
}

function readUsers(dir: string): DemoUser[] {
  try {
    return JSON.parse(readFileSync(join(dir, "demo-users.json"), "utf8")) as DemoUser[];
  } catch {
    return [];
  }
}

export interface DemoOptions {
  dir: string;
  port: number;
  patients: number;
  fresh?: boolean;
  /** Longest wait for another custodian in `$everything`, ms (default 3000). */
  exchangeDeadlineMs?: number;
  log?: Logger;
  /**
   * Order through etcd instead of one shared embedded orderer: each node then has its own etcd orderer, finds the
   * others through etcd's peer registry and checks their tree heads (as on a real network). First run only.
   */
  etcd?: { endpoints: string[] };
}

/** The demo's three nodes, running, each able to ask the others for records ($everything). */
export interface DemoNetwork {
  dir: string;
  /** gp, trust, uni, in that order. */
  nodes: RunningNode[];
  /** Org id of each node, in the same order. */
  orgIds: string[];
  /** Where each organisation's node listens (the nodes' exchange reads it on every request). */
  directory: StaticPeerDirectory;
  close(): Promise<void>;
}

/**
 * `careledger demo`: three organisations' nodes in one process sharing one embedded orderer. The first run generates
 * the network (keys from a random secret, so every demo is its own network) and submits its set-up through the GP's
 * node; later runs continue the same ledger.
 */
export async function demoCommand(options: DemoOptions & { orderer?: string }): Promise<void> {
  if (options.orderer !== undefined) {
    const orderer = parseOrdererUrl(options.orderer, "--orderer");
    if (orderer.kind === "etcd" && orderer.endpoints.some((e) => e.startsWith("https:"))) {
      throw new ConfigError(
        "the demo talks to etcd without TLS: give etcd://host:port (for TLS use careledger cluster up)",
      );
    }
    const exists = existsSync(join(resolve(options.dir), "demo.json"));
    if (exists && !options.fresh) {
      throw new ConfigError(
        `--orderer applies when the demo is generated; ${options.dir} holds one already (add --fresh)`,
      );
    }
    if (orderer.kind === "etcd") options = { ...options, etcd: { endpoints: orderer.endpoints } };
  }
  const demo = await startDemo(options);
  printWelcome(demo.dir, demo.nodes, readDemoEtcd(demo.dir));
  await new Promise<void>((done) => {
    const stop = (signal: string) => {
      process.stdout.write(`\n${signal}: stopping the demo nodes…\n`);
      demo.close().finally(done);
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  });
}

/**
 * Opens (and on the first run creates and loads) the demo network: the GP practice holds each patient's generated
 * record, the hospital trust a hospital record of the same patients; every node knows where the others listen, so a
 * clinician's `$everything` at one includes what the others hold when the patient's consent allows it.
 */
export async function startDemo(options: DemoOptions): Promise<DemoNetwork> {
  const dir = resolve(options.dir);
  if (options.fresh) rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  const firstRun = !existsSync(join(dir, "demo.json"));
  const meta = firstRun ? generate(dir, options) : undefined;
  const log = options.log ?? createLogger(process.env.CARELEDGER_LOG_LEVEL ?? "warn");
  const etcd = firstRun ? options.etcd : readDemoEtcd(dir);
  const orderer = etcd ? undefined : new EmbeddedOrderer(join(dir, "orderer.db"));
  const pool = new VerifyPool();
  const directory = new StaticPeerDirectory();
  const nodes: RunningNode[] = [];
  const orgIds: string[] = [];
  let closed = false;
  const shutdown = async () => {
    if (closed) return;
    closed = true;
    for (const n of [...nodes].reverse()) await n.close();
    await pool.close();
    await orderer?.close();
  };
  const extend = fhirExtension({
    // On etcd the nodes find each other through etcd's registry, as on a real network.
    ...(etcd ? {} : { peers: directory }),
    ...(options.exchangeDeadlineMs === undefined ? {} : { exchangeDeadlineMs: options.exchangeDeadlineMs }),
  });
  try {
    for (const [i, org] of ORG_NAMES.entries()) {
      // Port 0 asks the system for a free port for each node; otherwise the nodes take PORT, PORT+1, PORT+2.
      const port = options.port === 0 ? 0 : options.port + i;
      const running = await openNode(join(dir, org), {
        ...(orderer ? { orderer } : {}),
        pool,
        log,
        flags: { port },
        extend,
      });
      nodes.push(running);
      const orgId = fhirContextOf(running.node)?.orgId;
      if (orgId === undefined) throw new Error(`the ${org} node has no FHIR API`);
      orgIds.push(orgId);
      directory.set(orgId, running.url);
    }
    if (meta) {
      await submitSetup(nodes[0] as RunningNode, meta);
      await caughtUp(nodes);
      await loadRecords(dir, nodes, options.patients);
    }
    await caughtUp(nodes);
  } catch (error) {
    await shutdown();
    throw error;
  }
  return { dir, nodes, orgIds, directory, close: shutdown };
}

/** The etcd endpoints a demo was generated with (from the GP node's config), if any. */
function readDemoEtcd(dir: string): { endpoints: string[] } | undefined {
  const path = join(dir, ORG_NAMES[0], "config.json");
  if (!existsSync(path)) return undefined;
  const config = JSON.parse(readFileSync(path, "utf8")) as { orderer?: { kind?: string; endpoints?: string[] } };
  return config.orderer?.kind === "etcd" && config.orderer.endpoints
    ? { endpoints: config.orderer.endpoints }
    : undefined;
}

function generate(dir: string, options: DemoOptions): ScenarioMeta & { setup: ReturnType<typeof createScenario> } {
  ensureDir(dir);
  // Every demo is its own network: keys derive from a secret made now, and the key files are what persists.
  const secret = randomBytes(32).toString("hex");
  const seedFor = (label: string) => sha256(`${secret}:${label}`);
  // One NHS-number lookup key for the network, in every node's data dir: the demo's patients are registered with the
  // lookup of their generated records' NHS numbers, so importing those records finds them.
  const gpDir = join(dir, ORG_NAMES[0]);
  ensureDir(gpDir);
  const lookup = LookupKey.create(join(gpDir, LOOKUP_KEY_FILE));
  const scenario = createScenario({
    seedFor,
    start: Date.now(),
    patients: options.patients,
    // Rules 0–8 include the patient's own GP (rule 5) and the practice (rule 8) for treatment, so the GP's clinician
    // sees what the hospital holds too ($everything across custodians).
    rulesPerPatient: 9,
    lookupFor: (index) => lookup.lookupOf(generatedNhsNumber(RECORDS_SEED, index)),
  });
  const { meta } = scenario;
  const txs = scenario.txs();
  const first = txs.next();
  if (first.done) throw new Error("the demo scenario has no genesis");
  const gpNode = meta.keys[meta.orgs.gp.node];
  if (!gpNode) throw new Error("the demo scenario has no GP node key");
  const genesis = genesisBlock([first.value], first.value.createdAt, gpNode.keyId);
  for (const [i, org] of ORG_NAMES.entries()) {
    const paths = dataPaths(join(dir, org));
    ensureDir(paths.dir);
    const nodeKey = meta.keys[meta.orgs[org].node];
    if (!nodeKey) throw new Error(`no node key for ${org}`);
    writeKeyFile(paths.nodeKey, nodeKey, `${meta.orgs[org].id} node`);
    writeFileAtomic(paths.genesis, `${JSON.stringify(genesis)}\n`, 0o644);
    writeConfig(paths.dir, {
      port: options.port === 0 ? 0 : options.port + i,
      ...(options.etcd ? { orderer: { kind: "etcd" as const, endpoints: options.etcd.endpoints } } : {}),
    });
    if (org !== ORG_NAMES[0]) copyFileSync(join(gpDir, LOOKUP_KEY_FILE), join(paths.dir, LOOKUP_KEY_FILE));
  }
  const keysDir = join(dir, "keys");
  ensureDir(keysDir);
  const users: DemoUser[] = [];
  for (const [label, key] of Object.entries(meta.keys)) {
    const file = `${label.replace(/[^a-z0-9-]+/gi, "-")}.key`;
    writeKeyFile(join(keysDir, file), key, label);
    const member = meta.members[label];
    const patient = meta.patients.find((p) => p.label === label);
    const kind = member
      ? member.role
      : patient
        ? "patient"
        : label.startsWith("node:")
          ? "node"
          : (label.split(":")[0] ?? "key");
    // A patient's FHIR Patient id is its ledger pseudonym (records are imported under it).
    users.push({
      name: label,
      kind,
      org: member?.org,
      keyId: key.keyId,
      patient: patient?.id,
      fhirPatientId: patient?.id,
    });
  }
  writeFileAtomic(join(dir, "demo-users.json"), `${JSON.stringify(users, null, 2)}\n`, 0o644);
  writeFileAtomic(
    join(dir, "demo.json"),
    `${JSON.stringify({ created: new Date().toISOString(), patients: options.patients, network: meta.network }, null, 2)}\n`,
    0o644,
  );
  return { ...meta, setup: { meta, txs: () => txs } };
}

/** The generated FHIR records behind the demo's patients (same seed, same records, in every demo). */
const RECORDS_SEED = "careledger-demo";

/** The hospital's records of the demo's patients: another generated history, under the patient the GP holds. */
const HOSPITAL_SEED = "careledger-demo-hospital";

/**
 * Patient `index`'s hospital record: a generated bundle whose Patient is the GP's patient (same NHS number, name,
 * birth date), so importing it at the trust finds the patient already registered on the ledger.
 */
export function hospitalBundle(index: number): Bundle {
  const gpPatient = generatePatient(RECORDS_SEED, index).entry?.find((e) => e.resource?.resourceType === "Patient")
    ?.resource as Patient | undefined;
  const bundle = generatePatient(HOSPITAL_SEED, index);
  for (const entry of bundle.entry ?? []) {
    const resource = entry.resource as Patient | undefined;
    if (resource?.resourceType !== "Patient" || gpPatient === undefined) continue;
    entry.resource = {
      ...resource,
      identifier: gpPatient.identifier,
      name: gpPatient.name,
      gender: gpPatient.gender,
      birthDate: gpPatient.birthDate,
    } as Patient;
  }
  return bundle;
}

/**
 * Each demo patient's records, generated and imported (encrypted, anchored): their GP record into the GP practice's
 * vault, a hospital record into the trust's.
 */
async function loadRecords(dir: string, nodes: RunningNode[], patients: number): Promise<void> {
  const load = async (index: number, records: (i: number) => Bundle) => {
    const org = ORG_NAMES[index] as string;
    const ctx = fhirContextOf((nodes[index] as RunningNode).node);
    if (!ctx) throw new Error(`the ${org} node has no FHIR API`);
    const orgDir = join(dir, org);
    async function* sources(): AsyncGenerator<ImportSource> {
      for (let i = 0; i < patients; i++) yield { name: `${org}:patient:${i}`, bundle: records(i) };
    }
    await importBundles(ctx, sources(), {
      signer: readKeyFile(join(dir, "keys", `admin-${org}.key`)),
      registry: { lookup: LookupKey.open(join(orgDir, LOOKUP_KEY_FILE)), keysDir: join(orgDir, PATIENT_KEYS_DIR) },
    });
  };
  await load(0, (i) => generatePatient(RECORDS_SEED, i));
  await caughtUp(nodes);
  await load(1, hospitalBundle);
}

async function submitSetup(node: RunningNode, meta: ReturnType<typeof generate>): Promise<void> {
  const items = [];
  for (const tx of meta.setup.txs()) {
    const parsed = parseSignedTx(tx);
    if (!parsed.ok) throw new Error(`demo tx is malformed: ${parsed.error}`);
    items.push({ tx: parsed.tx, id: parsed.id });
  }
  const results = await Promise.all(await node.node.submit(items));
  const rejected = results.filter((r) => !r.valid);
  if (rejected.length > 0) {
    throw new Error(`${rejected.length} demo set-up txs were rejected, first: ${rejected[0]?.code}`);
  }
}

/** Every node applies every block itself; wait until all stand at the same height before saying where they are. */
async function caughtUp(nodes: RunningNode[]): Promise<void> {
  const target = Math.max(...nodes.map((n) => n.node.height));
  const deadline = Date.now() + 10_000;
  while (nodes.some((n) => n.node.height < target) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
}

function printWelcome(dir: string, nodes: RunningNode[], etcd: { endpoints: string[] } | undefined): void {
  const [gp] = nodes;
  const lines = [
    "",
    `CareLedger demo network is running: three organisations, one node each, ${etcd ? `ordering through etcd at ${etcd.endpoints.join(", ")}` : "one embedded orderer"}.`,
    "",
    ...nodes.map(
      (n, i) =>
        `  ${ORG_NAMES[i]?.padEnd(6)} node ${n.node.key.keyId.slice(0, 12)}…  ${n.url}   (height ${n.node.height})`,
    ),
    "",
    `Data: ${dir} (keys in ${join(dir, "keys")}, identities in ${join(dir, "demo-users.json")})`,
    "",
    "Try:",
    `  curl ${gp?.url}/ledger/head`,
    `  curl ${gp?.url}/ledger/blocks/1`,
    `  curl '${gp?.url}/ledger/consistency?from=1&to=${gp?.node.store.head()?.size ?? 1}'`,
    `  curl ${gp?.url}/metrics`,
  ];
  if (gp) lines.push(...fhirExamples(dir, gp, readUsers(dir)), ...decisionExamples(gp, readUsers(dir)));
  lines.push("", "Every node holds the whole ledger: the same head on each URL above. Ctrl-C stops the demo.", "");
  process.stdout.write(`${lines.join("\n")}\n`);
}

/** The FHIR API with a token, as the GP's clinician and as one of its patients. */
function fhirExamples(dir: string, node: RunningNode, users: DemoUser[]): string[] {
  const patient = users.find((u) => u.name === "patient:0" && u.fhirPatientId);
  if (!patient) return [];
  const token = (who: string) => `$(npx careledger token --dir ${dir} --as ${who} --url ${node.url})`;
  return [
    "",
    "FHIR R4 at /fhir (names to use with --as are in demo-users.json):",
    `  curl -s -H "Authorization: Bearer ${token("clinician:gp")}" '${node.url}/fhir/Patient?_count=5'`,
    `  curl -s -H "Authorization: Bearer ${token("clinician:gp")}" '${node.url}/fhir/Patient/${patient.fhirPatientId}/$everything'`,
    `  # (includes the hospital trust's records of the patient: their consent lets their GP see them; asked node to node)`,
    `  # the patient's own access log, from the ledger:`,
    `  curl -s -H "Authorization: Bearer ${token("patient:0")}" '${node.url}/fhir/AuditEvent?patient=${patient.fhirPatientId}'`,
  ];
}

/** Two real decisions from the generated network, as ready-to-paste requests: why one is permitted, one denied. */
function decisionExamples(node: RunningNode, users: DemoUser[]): string[] {
  const patient = users.find((u) => u.kind === "patient" && u.patient);
  const gpClinician = users.find((u) => u.name === "clinician:gp");
  const researcher = users.find((u) => u.name === "researcher:uni");
  if (!patient?.patient || !gpClinician?.org || !researcher) return [];
  const at = Date.now();
  const examples: [string, DecisionRequest][] = [
    [
      "a GP clinician reads a patient's observation held by the GP practice, for treatment",
      {
        requester: gpClinician.keyId,
        patient: patient.patient,
        purpose: "TREAT",
        action: "read",
        resource: { type: "Observation", custodian: gpClinician.org, labels: [] },
        at,
      },
    ],
    [
      "a university researcher reads the same record for research",
      {
        requester: researcher.keyId,
        patient: patient.patient,
        purpose: "HRESCH",
        action: "read",
        resource: { type: "Observation", custodian: gpClinician.org, labels: [] },
        at,
      },
    ],
  ];
  const out = ["", "Consent decisions (POST /consent/decide answers loopback callers):"];
  for (const [what, request] of examples) {
    const decision = node.node.decide(request);
    const { at: _at, ...body } = request;
    out.push(
      `  # ${what}: ${decision.effect} (step ${decision.step}, ${decision.rule})`,
      `  curl -s ${node.url}/consent/decide -H 'content-type: application/json' -d '${JSON.stringify(body)}'`,
    );
  }
  return out;
}
