import { join } from "node:path";
import { LOOKUP_KEY_FILE, LookupKey } from "../fhir/service/patients.ts";
import { blockHash } from "../ledger/block.ts";
import { ConfigError } from "../node/datadir.ts";
import { initJoin, initNetwork } from "../node/network.ts";

export async function initCommand(options: {
  dir: string;
  org: string;
  genesis?: string;
  port?: number;
}): Promise<void> {
  const config = options.port === undefined ? undefined : { port: options.port };
  if (options.genesis) {
    const joined = initJoin(options.dir, options.genesis, { config });
    process.stdout.write(
      `initialised ${options.dir}: a node joining the network from ${options.genesis}\n` +
        `  node key id: ${joined.node}\n` +
        // A self-consistent genesis of another network passes every check here: only its hash tells them apart.
        `  genesis block hash: ${blockHash(joined.genesis)} — check it with the network's founders\n` +
        "  an admin of your organisation registers this node key on the network before the node's anchors count\n" +
        `  copy the network's ${LOOKUP_KEY_FILE} from a member node into ${options.dir} (mode 0600) to match patients by NHS number\n` +
        `  start it with: careledger start --dir ${options.dir}\n`,
    );
    return;
  }
  if (options.org.trim() === "") throw new ConfigError("--org must not be empty");
  const created = initNetwork(options.dir, { orgName: options.org.trim(), config });
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
