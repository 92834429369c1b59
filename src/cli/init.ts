import { chmodSync, copyFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { LOOKUP_KEY_FILE, LookupKey } from "../fhir/service/patients.ts";
import { blockHash } from "../ledger/block.ts";
import { ConfigError, ensureDir, type NodeConfig, parseOrdererUrl, type TlsFiles } from "../node/datadir.ts";
import { initJoin, initNetwork } from "../node/network.ts";

export async function initCommand(options: {
  dir: string;
  org: string;
  genesis?: string;
  port?: number;
  nodeKey?: string;
  orderer?: string;
  tls?: string;
}): Promise<void> {
  if (!options.genesis && (options.nodeKey || options.orderer || options.tls)) {
    throw new ConfigError("--node-key, --orderer and --tls are for a node joining a network: give --genesis FILE too");
  }
  const config: Partial<NodeConfig> = {};
  if (options.port !== undefined) config.port = options.port;
  let tlsFiles: TlsFiles | undefined;
  if (options.tls) {
    for (const name of ["ca.pem", "node.pem", "node.key"]) {
      if (!existsSync(join(options.tls, name))) {
        throw new ConfigError(
          `--tls ${options.tls} must hold ca.pem, node.pem and node.key (as network create writes)`,
        );
      }
    }
    tlsFiles = { ca: "tls/ca.pem", cert: "tls/node.pem", key: "tls/node.key" };
    config.tls = tlsFiles;
  }
  if (options.orderer) config.orderer = parseOrdererUrl(options.orderer, "--orderer", tlsFiles);
  if (config.orderer?.kind === "etcd" && config.orderer.endpoints[0]?.startsWith("https:") && !tlsFiles) {
    throw new ConfigError("--orderer etcds://… needs --tls DIR with the node's certificate for etcd");
  }
  if (options.genesis) {
    const joined = initJoin(options.dir, options.genesis, {
      config: Object.keys(config).length > 0 ? config : undefined,
      nodeKeyFile: options.nodeKey,
    });
    if (options.tls) copyTls(options.tls, join(options.dir, "tls"));
    // network create puts the lookup key beside the genesis: take it along when it is there.
    const lookup = join(dirname(options.genesis), LOOKUP_KEY_FILE);
    const lookupCopied = existsSync(lookup);
    if (lookupCopied) copySecret(lookup, join(options.dir, LOOKUP_KEY_FILE));
    process.stdout.write(
      `initialised ${options.dir}: a node joining the network from ${options.genesis}\n` +
        `  node key id: ${joined.node}${joined.registered ? " (registered in the genesis)" : ""}\n` +
        (config.orderer?.kind === "etcd" ? `  orderer: etcd at ${config.orderer.endpoints.join(", ")}\n` : "") +
        // A self-consistent genesis of another network passes every check here: only its hash tells them apart.
        `  genesis block hash: ${blockHash(joined.genesis)} — check it with the network's founders\n` +
        (joined.registered
          ? ""
          : "  an admin of your organisation registers this node key on the network before the node's anchors count\n") +
        (lookupCopied
          ? ""
          : `  copy the network's ${LOOKUP_KEY_FILE} from a member node into ${options.dir} (mode 0600) to match patients by NHS number\n`) +
        `  start it with: careledger start --dir ${options.dir}\n`,
    );
    return;
  }
  if (options.org.trim() === "") throw new ConfigError("--org must not be empty");
  const created = initNetwork(options.dir, {
    orgName: options.org.trim(),
    config: Object.keys(config).length > 0 ? config : undefined,
  });
  // The network's NHS-number lookup key: member nodes share it (copied out of band) to find each other's patients.
  LookupKey.create(join(options.dir, LOOKUP_KEY_FILE));
  process.stdout.write(
    `initialised ${options.dir}: a new network with one organisation, ${created.orgId}\n` +
      `  admin key: ${options.dir}/keys/admin.key (id ${created.admin.slice(0, 16)}…) — keep it safe, it signs for the organisation\n` +
      `  node key:  ${options.dir}/node.key (id ${created.node.slice(0, 16)}…)\n` +
      `  lookup key: ${options.dir}/${LOOKUP_KEY_FILE} — the network's NHS-number lookup secret; copy it to joining nodes\n` +
      `  genesis:   ${options.dir}/genesis.json — give it to nodes that join, with its hash ${blockHash(created.genesis)}\n` +
      `  start it with: careledger start --dir ${options.dir}\n`,
  );
}

function copySecret(from: string, to: string): void {
  copyFileSync(from, to);
  chmodSync(to, 0o600);
}

function copyTls(from: string, to: string): void {
  ensureDir(to);
  copyFileSync(join(from, "ca.pem"), join(to, "ca.pem"));
  copyFileSync(join(from, "node.pem"), join(to, "node.pem"));
  copySecret(join(from, "node.key"), join(to, "node.key"));
}
