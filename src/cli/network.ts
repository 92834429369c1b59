import { existsSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { LOOKUP_KEY_FILE, LookupKey } from "../fhir/service/patients.ts";
import { blockHash } from "../ledger/block.ts";
import { ConfigError, ensureDir, writeFileAtomic, writeKeyFile } from "../node/datadir.ts";
import { type FoundingOrg, foundNetwork } from "../node/network.ts";
import { createCa, issueCertificate } from "./pki.ts";

export interface NetworkCreateOptions {
  orgs: number;
  out: string;
  name: string;
  names?: string;
  /** Host names and IP addresses the nodes' certificates are valid for (comma list). */
  hosts: string;
}

const KINDS = ["gp", "hospital", "research"] as const;
const DEFAULT_NAMES = ["Riverside GP Practice", "City Hospital Trust", "University Research Group"];

/** Splits a comma list of host names / IP addresses for certificates. */
export function parseHosts(raw: string): { dns: string[]; ips: string[] } {
  const dns: string[] = [];
  const ips: string[] = [];
  for (const item of raw.split(",").map((h) => h.trim())) {
    if (/^\d{1,3}(\.\d{1,3}){3}$/.test(item) || /^[0-9a-fA-F:]+:[0-9a-fA-F:]*$/.test(item)) ips.push(item);
    else if (/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/.test(item)) dns.push(item);
    else throw new ConfigError(`--hosts: ${JSON.stringify(item.slice(0, 80))} is not a host name or IP address`);
  }
  return { dns, ips };
}

/**
 * `careledger network create --orgs N --out DIR`: the founding material of a network of N organisations — the
 * genesis, each organisation's admin and node keys, the network's NHS-number lookup key, and a CA with a TLS
 * certificate per node. Each `DIR/<org>/` is what that organisation's node needs to join with `careledger init`.
 */
export async function networkCreateCommand(options: NetworkCreateOptions): Promise<void> {
  if (!Number.isInteger(options.orgs) || options.orgs < 1 || options.orgs > 64) {
    throw new ConfigError("--orgs must be a whole number from 1 to 64");
  }
  const out = resolve(options.out);
  if (existsSync(out) && readdirSync(out).length > 0) {
    throw new ConfigError(`${out} is not empty; choose a new directory for the network's founding files`);
  }
  const names = options.names
    ? options.names.split(",").map((n) => n.trim())
    : Array.from({ length: options.orgs }, (_, i) => DEFAULT_NAMES[i] ?? `Organisation ${i + 1}`);
  if (names.length !== options.orgs || names.some((n) => n.length < 2)) {
    throw new ConfigError(`--names must list ${options.orgs} names of 2 characters or more, comma-separated`);
  }
  const hosts = parseHosts(options.hosts);
  const specs: FoundingOrg[] = names.map((name, i) => ({ name, kind: KINDS[i] ?? "other" }));
  const network = foundNetwork({ name: options.name, orgs: specs });
  ensureDir(out);
  writeFileAtomic(join(out, "genesis.json"), `${JSON.stringify(network.genesis)}\n`, 0o644);
  LookupKey.create(join(out, LOOKUP_KEY_FILE));
  const ca = await createCa(join(out, "ca"), network.networkId);
  const lines: string[] = [];
  for (const org of network.orgs) {
    const orgDir = join(out, org.orgId);
    ensureDir(join(orgDir, "keys"));
    writeKeyFile(join(orgDir, "node.key"), org.node, `${org.orgId} node`);
    writeKeyFile(join(orgDir, "keys", "admin.key"), org.admin, `${org.orgId} admin`);
    await issueCertificate(ca, join(orgDir, "tls"), "node", hosts);
    lines.push(
      `  ${org.orgId}: careledger init --dir DATA_DIR --genesis ${join(out, "genesis.json")} --node-key ${join(orgDir, "node.key")} --tls ${join(orgDir, "tls")} --orderer etcds://HOST:2379`,
    );
  }
  process.stdout.write(
    `created the network ${network.networkId} in ${out} (${network.orgs.length} organisations)\n` +
      `  genesis: ${join(out, "genesis.json")} (hash ${blockHash(network.genesis)})\n` +
      `  NHS-number lookup key: ${join(out, LOOKUP_KEY_FILE)} — copy it into each node's data dir (mode 0600)\n` +
      `  CA: ${ca.cert}; its private key ${ca.key} signs certificates — keep it off the nodes\n` +
      "  per organisation (admin key, node key, TLS certificate), join each node with:\n" +
      `${lines.join("\n")}\n`,
  );
}

/** `careledger network cert`: a certificate from the network's CA for one more party (an etcd member, a new node). */
export async function networkCertCommand(options: {
  ca: string;
  name: string;
  out: string;
  hosts: string;
}): Promise<void> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(options.name)) {
    throw new ConfigError("--name must be 1-63 letters, digits, dots, dashes or underscores");
  }
  const caFiles = { cert: join(options.ca, "ca.pem"), key: join(options.ca, "ca.key") };
  if (!existsSync(caFiles.cert) || !existsSync(caFiles.key)) {
    throw new ConfigError(`${options.ca} holds no CA (ca.pem and ca.key); it is the ca/ dir \`network create\` wrote`);
  }
  const files = await issueCertificate(caFiles, options.out, options.name, parseHosts(options.hosts));
  process.stdout.write(`issued ${files.cert} and ${files.key} (with ${files.ca})\n`);
}
