import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { createScenario, type ScenarioMeta } from "../contract/fixtures.ts";
import type { DecisionRequest } from "../contract/index.ts";
import { attachFhir } from "../fhir/server.ts";
import { sha256 } from "../ledger/hash.ts";
import { parseSignedTx } from "../ledger/tx.ts";
import { dataPaths, ensureDir, writeConfig, writeFileAtomic, writeKeyFile } from "../node/datadir.ts";
import { createLogger } from "../node/logger.ts";
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
}

function readUsers(dir: string): DemoUser[] {
  try {
    return JSON.parse(readFileSync(join(dir, "demo-users.json"), "utf8")) as DemoUser[];
  } catch {
    return [];
  }
}

interface DemoOptions {
  dir: string;
  port: number;
  patients: number;
  fresh?: boolean;
}

/**
 * `careledger demo`: three organisations' nodes in one process sharing one embedded orderer. The first run generates
 * the network (keys from a random secret, so every demo is its own network) and submits its set-up through the GP's
 * node; later runs continue the same ledger.
 */
export async function demoCommand(options: DemoOptions): Promise<void> {
  const dir = resolve(options.dir);
  if (options.fresh) rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  const firstRun = !existsSync(join(dir, "demo.json"));
  const meta = firstRun ? generate(dir, options) : undefined;
  const log = createLogger(process.env.CARELEDGER_LOG_LEVEL ?? "warn");
  const orderer = new EmbeddedOrderer(join(dir, "orderer.db"));
  const pool = new VerifyPool();
  const nodes: RunningNode[] = [];
  const shutdown = async () => {
    for (const n of nodes.reverse()) await n.close();
    await pool.close();
    await orderer.close();
  };
  try {
    for (const [i, org] of ORG_NAMES.entries()) {
      // Port 0 asks the system for a free port for each node; otherwise the nodes take PORT, PORT+1, PORT+2.
      const port = options.port === 0 ? 0 : options.port + i;
      nodes.push(await openNode(join(dir, org), { orderer, pool, log, flags: { port }, extend: attachFhir }));
    }
    if (meta) await submitSetup(nodes[0] as RunningNode, meta);
    await caughtUp(nodes);
  } catch (error) {
    await shutdown();
    throw error;
  }
  printWelcome(dir, nodes);
  await new Promise<void>((done) => {
    const stop = (signal: string) => {
      process.stdout.write(`\n${signal}: stopping the demo nodes…\n`);
      shutdown().finally(done);
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  });
}

function generate(dir: string, options: DemoOptions): ScenarioMeta & { setup: ReturnType<typeof createScenario> } {
  ensureDir(dir);
  // Every demo is its own network: keys derive from a secret made now, and the key files are what persists.
  const secret = randomBytes(32).toString("hex");
  const seedFor = (label: string) => sha256(`${secret}:${label}`);
  const scenario = createScenario({ seedFor, start: Date.now(), patients: options.patients, rulesPerPatient: 4 });
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
    writeConfig(paths.dir, { port: options.port === 0 ? 0 : options.port + i });
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
    users.push({ name: label, kind, org: member?.org, keyId: key.keyId, patient: patient?.id });
  }
  writeFileAtomic(join(dir, "demo-users.json"), `${JSON.stringify(users, null, 2)}\n`, 0o644);
  writeFileAtomic(
    join(dir, "demo.json"),
    `${JSON.stringify({ created: new Date().toISOString(), patients: options.patients, network: meta.network }, null, 2)}\n`,
    0o644,
  );
  return { ...meta, setup: { meta, txs: () => txs } };
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

function printWelcome(dir: string, nodes: RunningNode[]): void {
  const [gp] = nodes;
  const lines = [
    "",
    "CareLedger demo network is running: three organisations, one node each, one embedded orderer.",
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
  if (gp) lines.push(...decisionExamples(gp, readUsers(dir)));
  lines.push("", "Every node holds the whole ledger: the same head on each URL above. Ctrl-C stops the demo.", "");
  process.stdout.write(`${lines.join("\n")}\n`);
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
