import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { read, type StateReader } from "../contract/state.ts";
import { tokenRequestForm } from "../fhir/auth/client-assertion.ts";
import { JtiCache } from "../fhir/auth/jti-cache.ts";
import { authUrls, nodeBaseUrl } from "../fhir/auth/smart-configuration.ts";
import { issueToken } from "../fhir/auth/token-endpoint.ts";
import type { KeyPair } from "../ledger/keys.ts";
import { ConfigError, dataPaths, loadConfig, readKeyFile } from "../node/datadir.ts";
import { LedgerStore } from "../store/ledger-store.ts";

export interface TokenOptions {
  /** A demo dir (one data dir per org inside, demo-users.json, keys/) or one node's data dir. */
  dir: string;
  /** A name from DIR/demo-users.json, or the path of a key file. */
  as: string;
  purpose?: string;
  scope?: string;
  /** Proxies: the patient (pseudonym) to act for; found from demo-users.json when left out. */
  patient?: string;
  /** Which node issues the token (a data dir name under DIR); default: one of the identity's own organisation. */
  node?: string;
  /** The node's base URL, when config.json does not say it (port 0); tokens are only valid for that URL. */
  url?: string;
}

/** One entry of DIR/demo-users.json, as `careledger demo` writes it. */
interface DemoUser {
  name: string;
  kind: string;
  org?: string;
  keyId: string;
  patient?: string;
}

/**
 * `careledger token --dir DIR --as NAME [--purpose CODE] [--scope S]`: runs the same token endpoint code a node runs,
 * offline, with the node's own key and a snapshot of its ledger, and prints only the access token, for
 * `curl -H "Authorization: Bearer $(careledger token …)"`.
 */
export async function tokenCommand(
  options: TokenOptions,
  print: (text: string) => void = (text) => process.stdout.write(text),
): Promise<void> {
  const dir = resolve(options.dir);
  const nodeDirs = findNodeDirs(dir);
  const users = readUsers(dir);
  const { key, user } = identityKey(dir, options.as, users);

  let nodeDir: string;
  let patient = options.patient;
  {
    const probe = openState(nodeDirs[0] as string);
    try {
      if (patient === undefined && read.key(probe.state, key.keyId) === undefined) {
        patient = users.find((u) => u.patient !== undefined && isProxyOf(probe.state, key.keyId, u.patient))?.patient;
      }
      nodeDir =
        options.node !== undefined
          ? namedNode(dir, nodeDirs, options.node)
          : nodeFor(probe.state, key.keyId, patient, nodeDirs);
    } finally {
      probe.close();
    }
  }
  const base = options.url ?? configuredBaseUrl(nodeDir);
  const { tokenUrl, fhirBaseUrl } = authUrls(base);
  const signer = readKeyFile(dataPaths(nodeDir).nodeKey);
  const store = openState(nodeDir);
  try {
    const form = await tokenRequestForm(key, tokenUrl, {
      ...(options.scope === undefined ? {} : { scope: options.scope }),
      ...(options.purpose === undefined ? {} : { purpose: options.purpose }),
      ...(patient === undefined || patient === user?.patient ? {} : { patient }),
    });
    const result = await issueToken(form, {
      state: store.state,
      tokenUrl,
      fhirBaseUrl,
      now: Date.now,
      signer,
      jtiCache: new JtiCache(),
    });
    if (!result.ok) {
      throw new ConfigError(`token refused (${result.body.error}): ${result.body.error_description}`);
    }
    print(`${result.body.access_token}\n`);
  } finally {
    store.close();
  }
}

function isDataDir(dir: string): boolean {
  const p = dataPaths(dir);
  return existsSync(p.nodeKey) && existsSync(p.genesis);
}

/** DIR itself when it is a node's data dir, else the data dirs directly under it (the demo's gp, trust, uni). */
function findNodeDirs(dir: string): string[] {
  if (!existsSync(dir)) throw new ConfigError(`${dir} does not exist; run careledger demo --dir ${dir} first`);
  if (isDataDir(dir)) return [dir];
  const found = readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && isDataDir(join(dir, e.name)))
    .map((e) => join(dir, e.name))
    .sort();
  if (found.length === 0) {
    throw new ConfigError(`${dir} is neither a node's data dir nor a demo dir (no data dirs inside)`);
  }
  return found;
}

function readUsers(dir: string): DemoUser[] {
  const file = join(dir, "demo-users.json");
  if (!existsSync(file)) return [];
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8"));
    return Array.isArray(parsed) ? (parsed as DemoUser[]) : [];
  } catch {
    throw new ConfigError(`${file} is not valid JSON`);
  }
}

/** The key of `--as`: a key file path, or a name in demo-users.json (its key file is DIR/keys/<name>.key). */
function identityKey(dir: string, as: string, users: DemoUser[]): { key: KeyPair; user?: DemoUser } {
  if ((as.includes("/") || as.endsWith(".key")) && existsSync(as)) return { key: readKeyFile(as) };
  const user = users.find((u) => u.name === as);
  if (user === undefined) {
    const file = join(dir, "demo-users.json");
    if (users.length === 0) {
      throw new ConfigError(`no identity "${as}": ${file} does not exist; pass a key file, or run careledger demo`);
    }
    // One name of each kind, the useful ones first.
    const some = ["clinician", "patient", "researcher", "proxy", "nurse", "analyst", "admin"]
      .map((kind) => users.find((u) => u.kind === kind)?.name)
      .filter((name) => name !== undefined)
      .join(", ");
    throw new ConfigError(`no identity "${as}" in ${file}; the names are listed there (e.g. ${some})`);
  }
  // The demo names key files after the label, with anything but letters, digits and '-' as '-'.
  const key = readKeyFile(join(dir, "keys", `${user.name.replace(/[^a-z0-9-]+/gi, "-")}.key`));
  if (key.keyId !== user.keyId) throw new ConfigError(`the key file of "${as}" does not match demo-users.json`);
  return { key, user };
}

function openState(nodeDir: string): { state: StateReader; close(): void } {
  const paths = dataPaths(nodeDir);
  if (!existsSync(paths.ledger)) {
    throw new ConfigError(`${nodeDir} holds no ledger yet (no ledger.db); start the node or the demo once first`);
  }
  const store = LedgerStore.open(paths.ledger, { snapshot: true });
  return { state: store.state, close: () => store.close() };
}

function isProxyOf(state: StateReader, keyId: string, patient: string): boolean {
  return read.patient(state, patient)?.proxies.some((p) => p.key === keyId) ?? false;
}

function namedNode(dir: string, nodeDirs: string[], name: string): string {
  const wanted = resolve(dir, name);
  const found = nodeDirs.find((d) => d === wanted);
  if (found === undefined) {
    throw new ConfigError(`--node ${name}: no node data dir of that name in ${dir}`);
  }
  return found;
}

/** A node of the identity's own organisation (patients and proxies: the registering one), else the first. */
function nodeFor(state: StateReader, keyId: string, patient: string | undefined, nodeDirs: string[]): string {
  const kr = read.key(state, keyId);
  let org: string | undefined;
  if (patient !== undefined) org = read.patient(state, patient)?.org;
  else if (kr?.kind === "member" || kr?.kind === "node") org = kr.org;
  else if (kr?.kind === "patient") org = read.patient(state, kr.patient)?.org;
  const nodes = org === undefined ? [] : (read.org(state, org)?.nodes ?? []);
  for (const d of nodeDirs) {
    try {
      if (nodes.includes(readKeyFile(dataPaths(d).nodeKey).keyId)) return d;
    } catch {
      // An unreadable node key is reported when that node is used.
    }
  }
  return nodeDirs[0] as string;
}

function configuredBaseUrl(nodeDir: string): string {
  const config = loadConfig(nodeDir);
  if (config.port === 0) {
    throw new ConfigError(
      `${nodeDir} listens on a port chosen at start (port 0); pass its URL with --url http://HOST:PORT`,
    );
  }
  return nodeBaseUrl(config);
}
