import { randomBytes, randomUUID } from "node:crypto";
import { copyFileSync, existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { MemoryState } from "../contract/index.ts";
import { blockHash, GENESIS_PREV_HASH, INITIAL_STATE_DIGEST } from "../ledger/block.ts";
import { type KeyPair, keyPairFromSeed } from "../ledger/keys.ts";
import { EMPTY_FRONTIER } from "../ledger/merkle.ts";
import { parseSignedTx, signTxWithId, verifyTxSignature } from "../ledger/tx.ts";
import type { Block, Hex32, KeyId, SignedTx } from "../ledger/types.ts";
import { buildBlock } from "./block-builder.ts";
import {
  ConfigError,
  dataPaths,
  ensureDir,
  type NodeConfig,
  readGenesis,
  readKeyFile,
  writeConfig,
  writeFileAtomic,
  writeKeyFile,
} from "./datadir.ts";

export function newKey(): KeyPair {
  return keyPairFromSeed(randomBytes(32));
}

export function newNonce(): string {
  return randomBytes(16).toString("hex");
}

/** Signs a tx with a fresh random nonce. */
export function signNew(key: KeyPair, type: string, payload: Record<string, unknown>, createdAt: number): SignedTx {
  return signNewWithId(key, type, payload, createdAt).tx;
}

/** `signNew`, with the tx's id (see `signTxWithId`). */
export function signNewWithId(
  key: KeyPair,
  type: string,
  payload: Record<string, unknown>,
  createdAt: number,
): { tx: SignedTx; id: Hex32 } {
  return signTxWithId({ type, payload, signer: key.keyId, nonce: newNonce(), createdAt }, key);
}

/**
 * The genesis block (height 0) from a signed `network.genesis` tx and any txs that follow it in block 0. Built by
 * the same code every node uses, and checked by every node when it applies it.
 */
export function genesisBlock(txs: SignedTx[], time: number, proposer: KeyId): Block {
  const checked = txs.map((raw, i) => {
    const parsed = parseSignedTx(raw);
    if (!parsed.ok) throw new ConfigError(`genesis tx ${i} is malformed: ${parsed.error}`);
    // Rebuilding proves the block is self-consistent, not that anyone signed it: a re-hashed forgery must fail here.
    if (!verifyTxSignature(parsed.tx, parsed.id)) {
      throw new ConfigError(`genesis tx ${i} (${parsed.id.slice(0, 16)}…) has an invalid signature`);
    }
    return { tx: parsed.tx, id: parsed.id, sigOk: true };
  });
  const built = buildBlock(
    { height: -1, hash: GENESIS_PREV_HASH, stateDigest: INITIAL_STATE_DIGEST, frontier: EMPTY_FRONTIER },
    { height: 0, time, proposer, txs: checked },
    new MemoryState(),
    { inLog: () => false, nonceUsed: () => false },
  );
  const invalid = built.block.txs.find((e) => !e.result.valid);
  if (invalid) throw new ConfigError(`genesis tx ${invalid.tx.type} is invalid: ${invalid.result.code}`);
  return built.block;
}

export function slug(name: string): string {
  const s = name
    .toLowerCase()
    .normalize("NFKD")
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 60)
    .replace(/-+$/, "");
  return s.length >= 2 ? s : `org-${s || "x"}`;
}

function refuseNonEmpty(dir: string): void {
  if (existsSync(dir) && readdirSync(dir).length > 0) {
    throw new ConfigError(`${dir} is not empty; choose a new directory for the data dir`);
  }
}

/**
 * `careledger init --dir DIR`: a new network of one organisation. Its admin key signs the genesis; the node key signs
 * blocks' tree heads and the organisation's anchors and access logs.
 */
export function initNetwork(dir: string, options: { orgName: string; config?: Partial<NodeConfig>; now?: number }) {
  refuseNonEmpty(dir);
  const now = options.now ?? Date.now();
  const admin = newKey();
  const node = newKey();
  const orgId = slug(options.orgName);
  const adminMember = randomUUID();
  const genesisTx = signNew(
    admin,
    "network.genesis",
    {
      network: { id: `${orgId}-net`.slice(0, 64), name: `${options.orgName} network`.slice(0, 120) },
      orgs: [
        {
          id: orgId,
          name: options.orgName.slice(0, 120),
          kind: "other",
          admins: [{ member: adminMember, key: admin.keyId }],
          nodes: [node.keyId],
        },
      ],
    },
    now,
  );
  const genesis = genesisBlock([genesisTx], now, node.keyId);
  const paths = dataPaths(dir);
  ensureDir(dir);
  ensureDir(paths.keys);
  writeKeyFile(paths.nodeKey, node, `${orgId} node`);
  writeKeyFile(join(paths.keys, "admin.key"), admin, `${orgId} admin`);
  writeFileAtomic(paths.genesis, `${JSON.stringify(genesis)}\n`, 0o644);
  if (options.config) writeConfig(dir, options.config);
  return { orgId, adminMember, admin: admin.keyId, node: node.keyId, genesis };
}

/**
 * `careledger init --dir DIR --genesis FILE`: a node joining an existing network. With `nodeKeyFile` (from `careledger
 * network create`, or a key an admin registered) the node uses that key; otherwise it makes a new one, which an admin
 * of its organisation must register before the node's anchors and access logs count.
 */
export function initJoin(
  dir: string,
  genesisFile: string,
  options: { config?: Partial<NodeConfig>; nodeKeyFile?: string } = {},
) {
  const genesis = readGenesis(genesisFile);
  refuseNonEmpty(dir);
  // Rebuild it now, so a bad genesis file is refused at init rather than at first start.
  let rebuilt: Block;
  try {
    rebuilt = genesisBlock(
      genesis.txs.map((e) => e?.tx),
      genesis.time,
      genesis.proposer,
    );
  } catch (error) {
    throw new ConfigError(`genesis file ${genesisFile}: ${(error as Error).message}; get the genesis file again`);
  }
  if (blockHash(rebuilt) !== blockHash(genesis)) {
    throw new ConfigError(`${genesisFile} does not rebuild to the block it holds; get the genesis file again`);
  }
  const node = options.nodeKeyFile ? readKeyFile(options.nodeKeyFile) : newKey();
  const registered = options.nodeKeyFile !== undefined && genesisNodeKeys(genesis).has(node.keyId);
  const paths = dataPaths(dir);
  ensureDir(dir);
  writeKeyFile(paths.nodeKey, node, "node");
  copyFileSync(genesisFile, paths.genesis);
  if (options.config) writeConfig(dir, options.config);
  return { node: node.keyId, genesis, registered };
}

/** Node keys the genesis registers. */
function genesisNodeKeys(genesis: Block): Set<string> {
  const keys = new Set<string>();
  for (const entry of genesis.txs) {
    const orgs = (entry.tx.payload as { orgs?: { nodes?: unknown }[] }).orgs;
    for (const org of Array.isArray(orgs) ? orgs : []) {
      for (const k of Array.isArray(org.nodes) ? org.nodes : []) if (typeof k === "string") keys.add(k);
    }
  }
  return keys;
}

export interface FoundingOrg {
  name: string;
  kind?: string;
}

export interface FoundedOrg {
  orgId: string;
  name: string;
  adminMember: string;
  admin: KeyPair;
  node: KeyPair;
}

/**
 * A genesis for a network founded by several organisations, each with one admin and one node key. The first org's
 * admin signs the genesis; every org is active from block 0. Keys are returned for the caller to write out.
 */
export function foundNetwork(options: { name: string; orgs: FoundingOrg[]; now?: number }): {
  networkId: string;
  genesis: Block;
  orgs: FoundedOrg[];
} {
  if (options.orgs.length === 0) throw new ConfigError("a network needs at least one organisation");
  const now = options.now ?? Date.now();
  const used = new Set<string>();
  const orgs: FoundedOrg[] = options.orgs.map((spec) => {
    let orgId = slug(spec.name);
    for (let n = 2; used.has(orgId); n++) orgId = `${slug(spec.name).slice(0, 56)}-${n}`;
    used.add(orgId);
    return { orgId, name: spec.name.slice(0, 120), adminMember: randomUUID(), admin: newKey(), node: newKey() };
  });
  const networkId = slug(options.name);
  const first = orgs[0] as FoundedOrg;
  const genesisTx = signNew(
    first.admin,
    "network.genesis",
    {
      network: { id: networkId, name: options.name.slice(0, 120) },
      orgs: orgs.map((org, i) => ({
        id: org.orgId,
        name: org.name,
        kind: options.orgs[i]?.kind ?? "other",
        admins: [{ member: org.adminMember, key: org.admin.keyId }],
        nodes: [org.node.keyId],
      })),
    },
    now,
  );
  return { networkId, genesis: genesisBlock([genesisTx], now, first.node.keyId), orgs };
}

/** The network id a genesis block declares (its `network.genesis` tx). */
export function networkIdOf(genesis: Block): string {
  const tx = genesis.txs.find((e) => e.tx.type === "network.genesis")?.tx;
  const id = (tx?.payload as { network?: { id?: unknown } } | undefined)?.network?.id;
  if (typeof id !== "string") throw new ConfigError("the genesis block holds no network.genesis tx");
  return id;
}
