import { existsSync, readFileSync } from "node:fs";
import { Worker } from "node:worker_threads";
import type { FastifyInstance } from "fastify";
import type { Dispatcher } from "undici";
import { readState } from "../contract/index.ts";
import { blockHash, checkBlockContents } from "../ledger/block.ts";
import { toHex } from "../ledger/encoding.ts";
import { frontierRoot } from "../ledger/merkle.ts";
import { verifyTreeHead } from "../ledger/sth.ts";
import { EmbeddedOrderer } from "../ordering/embedded.ts";
import type { EtcdOrderer } from "../ordering/etcd.ts";
import { type Orderer, OrdererError } from "../ordering/orderer.ts";
import { LedgerStore } from "../store/ledger-store.ts";
import type { AuditResult } from "./audit-worker.ts";
import {
  ConfigError,
  loadConfig,
  lockDataDir,
  type NodeConfig,
  readGenesis,
  readKeyFile,
  requireDataDir,
  resolveInDir,
  type TlsFiles,
} from "./datadir.ts";
import { ForkWatch } from "./fork-watch.ts";
import type { HeadBoard } from "./head-board.ts";
import { buildHttpServer } from "./http.ts";
import { LedgerNode } from "./ledger-node.ts";
import { createLogger, type Logger } from "./logger.ts";
import { MachineLoad } from "./machine-load.ts";
import { networkIdOf } from "./network.ts";
import { type PeerRegistry, StaticPeerRegistry } from "./peer-registry.ts";
import { type BatchRelay, PeerRelay } from "./relay.ts";
import { nodeVerifyPool, type VerifyPool } from "./verify-pool.ts";

export interface RunningNode {
  node: LedgerNode;
  app: FastifyInstance;
  config: NodeConfig;
  /** Base URL the HTTP API listens on. */
  url: string;
  close(): Promise<void>;
}

export interface OpenOptions {
  flags?: Partial<NodeConfig>;
  /** Share an orderer (and its lifetime is the caller's): several nodes in one process, as the demo runs. */
  orderer?: Orderer;
  pool?: VerifyPool;
  log?: Logger;
  listen?: boolean;
  /**
   * Layers below the node (the FHIR API) add their routes here, before the server listens. What it returns is told
   * the URL once listening and closed before the node is (so it can flush what it still has to write).
   */
  extend?: (app: FastifyInstance, ctx: ExtensionContext) => Promise<Extension>;
  /** Where nodes find each other (default: etcd's registry on an etcd network, else only `config.peers`). */
  registry?: PeerRegistry;
  /** Where nodes publish tree heads for fork detection (default: etcd on an etcd network, else none). */
  board?: HeadBoard;
  /** Where batches go (default: a `PeerRelay` on an etcd network unless `relayHoldMs` is 0, else ordered here). */
  relay?: BatchRelay;
}

export interface ExtensionContext {
  dir: string;
  node: LedgerNode;
  config: NodeConfig;
  log: Logger;
  /** Other nodes, as announced (record exchange finds custodians here). */
  registry: PeerRegistry;
  /** For HTTPS calls to other nodes (trusts the network's CA); undefined on plain HTTP. */
  peerDispatcher?: Dispatcher;
}

export interface Extension {
  listening?(url: string): void;
  close(): Promise<void>;
}

/**
 * Opens a node from its data dir: configuration validated, keys loaded, store checked, genesis applied on first start,
 * then following the orderer and (unless told not to) serving HTTP.
 */
export async function openNode(dir: string, options: OpenOptions = {}): Promise<RunningNode> {
  const paths = requireDataDir(dir);
  const config = loadConfig(dir, options.flags);
  const log = options.log ?? createLogger(config.logLevel);
  const key = readKeyFile(paths.nodeKey);
  const genesis = readGenesis(paths.genesis);
  const genesisHash = blockHash(genesis);
  const tls = config.tls ? readTls(dir, config.tls) : undefined;
  const ordererConfig = config.orderer;
  const prefix =
    ordererConfig.kind === "etcd" ? (ordererConfig.prefix ?? `/careledger/${networkIdOf(genesis)}/`) : undefined;
  const etcdTls =
    ordererConfig.kind === "etcd" && ordererConfig.tls ? resolveTlsPaths(dir, ordererConfig.tls) : undefined;
  const unlock = lockDataDir(dir);
  let store: LedgerStore;
  try {
    store = LedgerStore.open(paths.ledger);
  } catch (error) {
    unlock();
    throw error;
  }
  // Set once the node exists: the etcd orderer asks, as each batch is delivered, whether its proposer is a node.
  let nodeRef: LedgerNode | undefined;
  const ownOrderer = options.orderer === undefined;
  let orderer: Orderer;
  try {
    orderer =
      options.orderer ??
      (ordererConfig.kind === "etcd"
        ? await openEtcdOrderer({
            endpoints: ordererConfig.endpoints,
            prefix: prefix as string,
            key,
            // Like the embedded log: a table in ledger.db, flushed with the blocks; a data dir made before that
            // keeps its separate etcd-cursor.db.
            ...(existsSync(paths.etcdCursor)
              ? { cursorPath: paths.etcdCursor }
              : { cursorPath: paths.ledger, cursorSync: store.groupSync }),
            tls: etcdTls
              ? { ca: readFileSync(etcdTls.ca), cert: readFileSync(etcdTls.cert), key: readFileSync(etcdTls.key) }
              : undefined,
            acceptProposer: (keyId) => (nodeRef ? isActiveNodeKey(nodeRef, keyId) : false),
            ...(ordererConfig.leaseTtlSeconds ? { leaseTtlSeconds: ordererConfig.leaseTtlSeconds } : {}),
            ...(ordererConfig.compactIntervalMs ? { compaction: { intervalMs: ordererConfig.compactIntervalMs } } : {}),
            ...(ordererConfig.compressBatches === undefined ? {} : { compressBatches: ordererConfig.compressBatches }),
            log,
          })
        : // The orderer's log shares the ledger's database and WAL (one flush per block covers both); a data dir
          // made before that keeps its separate orderer.db.
          existsSync(paths.orderer)
          ? new EmbeddedOrderer(paths.orderer)
          : new EmbeddedOrderer(paths.ledger, Date.now, { sync: store.groupSync }));
  } catch (error) {
    store.close();
    unlock();
    throw error;
  }
  // The etcd client and the HTTPS agent are loaded only by nodes that use them (start-up time of every CLI command).
  const registry: PeerRegistry =
    ordererConfig.kind === "etcd" && !options.registry
      ? new (await import("./peer-registry-etcd.ts")).EtcdPeerRegistry({
          endpoints: ordererConfig.endpoints,
          prefix: prefix as string,
          tls: etcdTls,
          log,
        })
      : (options.registry ?? new StaticPeerRegistry());
  const peerDispatcher = tls ? new (await import("undici")).Agent({ connect: { ca: tls.ca } }) : undefined;
  const ownPool = options.pool === undefined;
  const machineLoad = ownPool ? new MachineLoad() : undefined;
  const pool = options.pool ?? nodeVerifyPool(config.workers, machineLoad ?? { busy: true });
  const cleanup = async () => {
    ownRelay?.close();
    machineLoad?.stop();
    if (ownPool) await pool.close();
    if (ownOrderer) await orderer.close();
    if (!options.registry) await registry.close();
    await peerDispatcher?.close();
    store.close();
    unlock();
  };
  let selfUrl = "";
  const peerUrls = async () => {
    const announced = await registry.list().catch(() => []);
    const urls = [...config.peers, ...announced.filter((p) => p.keyId !== key.keyId).map((p) => p.url)];
    return [...new Set(urls)].filter((u) => u !== selfUrl);
  };
  // Only nodes that serve HTTP take part: the relay is reached at its announced URL.
  const ownRelay =
    !options.relay && ordererConfig.kind === "etcd" && config.relayHoldMs > 0 && options.listen !== false
      ? new PeerRelay({
          selfKeyId: key.keyId,
          registry,
          dispatcher: peerDispatcher,
          holdMs: config.relayHoldMs,
          eligible: (keyId) => (nodeRef ? isActiveNodeKey(nodeRef, keyId) : false),
          log: log.child({ part: "relay" }),
        })
      : undefined;
  const relay: BatchRelay | undefined = options.relay ?? ownRelay;
  let node: LedgerNode;
  try {
    checkStoreAtStart(store, genesisHash);
    const height = store.head()?.height ?? 0;
    if (orderer instanceof EmbeddedOrderer && orderer.lastSeq() < height) {
      // New batches would get heights this node already holds, and it would ignore them: never commit again.
      throw new ConfigError(
        `the orderer log holds ${orderer.lastSeq()} batches but the ledger ${height} blocks; ` +
          "the log was altered or replaced (restore it from a backup of this data dir)",
      );
    }
    node = new LedgerNode({
      store,
      orderer,
      key,
      pool,
      log: log.child({ node: key.keyId.slice(0, 12) }),
      batchMaxTxs: config.batchMaxTxs,
      batchMaxWaitMs: config.batchMaxWaitMs,
      maxPendingTxs: config.maxPendingTxs,
      ...(relay ? { relay } : {}),
      recover: async (error, signal) => {
        // Only "the orderer no longer holds what we need" is mended by peers; anything else halts the node.
        if (!(error instanceof OrdererError) || error.code !== "compacted" || !("resumeAfter" in orderer)) return false;
        const { catchUp } = await import("./catch-up.ts");
        const caughtUp = await catchUp(node, { peers: peerUrls, dispatcher: peerDispatcher, log }, signal);
        (orderer as EtcdOrderer).resumeAfter(caughtUp.height, caughtUp.position.revision, caughtUp.position.time);
        log.info(
          { height: caughtUp.height, peer: caughtUp.peer },
          "caught up from a peer; following the orderer again",
        );
        return true;
      },
    });
    nodeRef = node;
    // Where this node's signature checks run (its thread or the pool's workers) and whether it counts the machine as
    // busy — the two decide which (see verify-pool.ts).
    node.metrics.addCollector((metrics) => {
      metrics.set("careledger_signatures_checked_on_node_thread", pool.checked.inline);
      metrics.set("careledger_signatures_checked_on_workers", pool.checked.onWorkers);
      if (machineLoad) metrics.set("careledger_machine_busy", machineLoad.busy ? 1 : 0);
    });
    if (!store.head()) node.applyGenesis(genesis);
    node.start();
  } catch (error) {
    await cleanup();
    throw error;
  }
  const app = buildHttpServer({
    node,
    log,
    https: tls ? { key: tls.key, cert: tls.cert } : undefined,
    ordererPosition: "positionOf" in orderer ? (height) => (orderer as EtcdOrderer).positionOf(height) : undefined,
  });
  let extension: Extension | undefined;
  if (options.extend) {
    try {
      extension = await options.extend(app, { dir, node, config, log, registry, peerDispatcher });
    } catch (error) {
      await node.close(0);
      await cleanup();
      throw error;
    }
  }
  let url = "";
  if (options.listen !== false) {
    try {
      url = await app.listen({ host: config.host, port: config.port });
    } catch (error) {
      await extension?.close();
      await node.close(0);
      await cleanup();
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "EADDRINUSE")
        throw new ConfigError(`port ${config.port} on ${config.host} is already in use; pick another with --port`);
      throw new ConfigError(`cannot listen on ${config.host}:${config.port}: ${(error as Error).message}`);
    }
  }
  selfUrl = config.advertiseUrl ?? url;
  if (url !== "") {
    const org = orgOfNodeKey(node, key.keyId);
    if (org) await registry.announce({ keyId: key.keyId, org, url: selfUrl });
    else log.warn({}, "this node's key is not registered on the network yet: peers will not find it");
    ownRelay?.start();
  }
  const board: HeadBoard | undefined =
    options.board ??
    (ordererConfig.kind === "etcd"
      ? new (await import("./head-board-etcd.ts")).EtcdHeadBoard({
          endpoints: ordererConfig.endpoints,
          prefix: prefix as string,
          tls: etcdTls,
          log,
        })
      : undefined);
  const forkWatch = board ? new ForkWatch({ node, board, log }) : undefined;
  forkWatch?.start();
  extension?.listening?.(url);
  const audit = config.auditOnStart ? startAudit(paths.ledger, genesisHash, node, log) : undefined;
  let closed = false;
  return {
    node,
    app,
    config,
    url,
    async close() {
      if (closed) return;
      closed = true;
      // Each step logged (debug), so a shutdown that hangs says where.
      const step = async (name: string, run: () => Promise<unknown> | undefined) => {
        log.debug({ step: name }, "closing");
        await run();
      };
      await step("audit", () => audit?.terminate());
      await step("fork watch", () => forkWatch?.stop());
      await step("head board", () => (options.board ? undefined : board?.close()));
      await step("http", () => app.close());
      await step("extension", () => extension?.close());
      await step("node", () => node.close());
      await step("orderer, registry, store", cleanup);
      log.debug({}, "closed");
    },
  };
}

/**
 * The start-up audit: a full replay of the store on a worker thread while the node serves. Start-up's own checks
 * (below) see the tip; the audit sees history. A store altered behind the node's back halts it: writes and state
 * reads are refused, /healthz says why.
 */
function startAudit(ledgerPath: string, genesisHash: string, node: LedgerNode, log: Logger): Worker {
  const worker = new Worker(new URL("./audit-worker.ts", import.meta.url), {
    name: "startup-audit",
    workerData: { ledgerPath, genesisHash },
  });
  worker.on("message", (result: AuditResult) => {
    node.metrics.set("careledger_audit_ok", result.ok ? 1 : 0);
    if (result.ok) {
      log.info({ txs: result.txs, ms: Math.round(result.elapsedMs) }, "start-up audit: the store replays cleanly");
    } else {
      node.halt(`start-up audit: the store does not replay at height ${result.height}: ${result.reason}`, {
        refuseReads: true,
      });
    }
  });
  worker.on("error", (error) => log.warn({ err: error.message }, "start-up audit could not run"));
  worker.unref();
  return worker;
}

/**
 * Cheap checks before serving anything: SQLite's structure, the genesis, the head block's hash and txs, the signed tree
 * head against the stored Merkle frontier, and the tx index's row count. A full replay is `careledger verify`.
 */
export function checkStoreAtStart(store: LedgerStore, genesisHash: string): void {
  const problems = store.quickCheck();
  if (problems.length > 0) {
    throw new ConfigError(
      `the ledger store ${store.path} is damaged (${problems[0]}); restore it from a peer or backup`,
    );
  }
  const head = store.head();
  if (!head) return;
  const corrupt = (why: string) =>
    new ConfigError(`the ledger store ${store.path} is inconsistent: ${why}; run careledger verify for details`);
  const genesis = store.getHeader(0);
  if (!genesis || genesis.hash !== genesisHash) throw corrupt("block 0 is not this network's genesis");
  const tip = store.getBlock(head.height);
  if (!tip || blockHash(tip) !== head.hash) throw corrupt(`block ${head.height} does not match its stored hash`);
  // The block hash covers the header only: the tip's txs must still be the ones its txRoot commits to.
  const contents = checkBlockContents(tip);
  if (contents) throw corrupt(`block ${head.height}'s txs do not match its header (${contents})`);
  if (head.height > 0) {
    const prev = store.getHeader(head.height - 1);
    if (!prev || prev.hash !== tip.prevHash)
      throw corrupt(`block ${head.height} does not link to block ${head.height - 1}`);
  }
  const sth = store.latestTreeHead();
  if (!sth || !verifyTreeHead(sth)) throw corrupt("the signed tree head is missing or its signature is invalid");
  let root: string;
  try {
    root = toHex(frontierRoot(store.frontier()));
  } catch (error) {
    throw corrupt((error as Error).message);
  }
  if (sth.size !== head.size || sth.root !== root || sth.height !== head.height) {
    throw corrupt("the signed tree head does not match the stored Merkle log");
  }
  // A missing index row would let that tx, or its (signer, nonce), be logged a second time.
  const indexed = store.countTxs();
  if (indexed !== head.size) throw corrupt(`the tx index holds ${indexed} rows but the log holds ${head.size} txs`);
}

function resolveTlsPaths(dir: string, files: TlsFiles): TlsFiles {
  return { ca: resolveInDir(dir, files.ca), cert: resolveInDir(dir, files.cert), key: resolveInDir(dir, files.key) };
}

/** The node's TLS files, read once at start; a missing or unreadable file is a configuration error. */
function readTls(dir: string, files: TlsFiles): { ca: Buffer; cert: Buffer; key: Buffer } {
  const paths = resolveTlsPaths(dir, files);
  const read = (path: string, what: string) => {
    try {
      return readFileSync(path);
    } catch {
      throw new ConfigError(`tls.${what}: cannot read ${path}`);
    }
  };
  return { ca: read(paths.ca, "ca"), cert: read(paths.cert, "cert"), key: read(paths.key, "key") };
}

async function openEtcdOrderer(options: Parameters<typeof EtcdOrderer.open>[0]): Promise<EtcdOrderer> {
  const { EtcdOrderer } = await import("../ordering/etcd.ts");
  try {
    return await EtcdOrderer.open(options);
  } catch (error) {
    if (error instanceof OrdererError) throw new ConfigError(error.message);
    throw error;
  }
}

/** The org of an active node key in the node's state, if it is one. */
function orgOfNodeKey(node: LedgerNode, keyId: string): string | undefined {
  const rec = readState.key(node.store.state, keyId);
  if (rec?.kind !== "node" || rec.status !== "active") return undefined;
  return readState.org(node.store.state, rec.org)?.status === "active" ? rec.org : undefined;
}

function isActiveNodeKey(node: LedgerNode, keyId: string): boolean {
  return orgOfNodeKey(node, keyId) !== undefined;
}
