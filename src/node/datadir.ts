import { randomBytes } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { isAbsolute, join } from "node:path";
import { Type } from "typebox";
import { Compile } from "typebox/compile";
import { fromHex, toHex } from "../ledger/encoding.ts";
import { type KeyPair, keyPairFromSeed, seedOf } from "../ledger/keys.ts";
import type { Block } from "../ledger/types.ts";
import { ConfigError } from "./errors.ts";

export { ConfigError };

export function dataPaths(dir: string) {
  return {
    dir,
    config: join(dir, "config.json"),
    genesis: join(dir, "genesis.json"),
    nodeKey: join(dir, "node.key"),
    ledger: join(dir, "ledger.db"),
    orderer: join(dir, "orderer.db"),
    etcdCursor: join(dir, "etcd-cursor.db"),
    keys: join(dir, "keys"),
  };
}

/** PEM files (paths absolute or relative to the data dir): this party's certificate and key, and the network's CA. */
const TlsFilesSchema = Type.Object(
  {
    ca: Type.String({ minLength: 1, maxLength: 1000 }),
    cert: Type.String({ minLength: 1, maxLength: 1000 }),
    key: Type.String({ minLength: 1, maxLength: 1000 }),
  },
  { additionalProperties: false },
);

export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export type OrdererConfig =
  | { kind: "embedded" }
  | {
      kind: "etcd";
      /** Client URLs of the etcd members. */
      endpoints: string[];
      /** Key prefix of this network in etcd; default `/careledger/<network id>/`. */
      prefix?: string;
      /** Mutual TLS to etcd (client certificate signed by the network's CA). */
      tls?: TlsFiles;
      /** A node silent for this long no longer holds etcd's compaction back (default 30 s); it then catches up from peers. */
      leaseTtlSeconds?: number;
      /** How often the compacting node looks for batches every live node has applied (default 5 s). */
      compactIntervalMs?: number;
      /**
       * Write batches deflated (default true; every node reads both). False on every node while a network still has
       * nodes from before 2026-11-28, which read plain batches only.
       */
      compressBatches?: boolean;
    };

const ConfigSchema = Type.Object(
  {
    host: Type.String({ minLength: 1, maxLength: 255 }),
    port: Type.Integer({ minimum: 0, maximum: 65535 }),
    batchMaxTxs: Type.Integer({ minimum: 1, maximum: 10_000 }),
    batchMaxWaitMs: Type.Integer({ minimum: 0, maximum: 10_000 }),
    maxPendingTxs: Type.Integer({ minimum: 1, maximum: 10_000_000 }),
    relayHoldMs: Type.Integer({ minimum: 0, maximum: 1000 }),
    workers: Type.Integer({ minimum: 1, maximum: 256 }),
    logLevel: Type.Union(["fatal", "error", "warn", "info", "debug", "trace", "silent"].map((l) => Type.Literal(l))),
    orderer: Type.Union([
      Type.Object({ kind: Type.Literal("embedded") }, { additionalProperties: false }),
      Type.Object(
        {
          kind: Type.Literal("etcd"),
          endpoints: Type.Array(Type.String({ pattern: "^https?://[^/\\s]+$", maxLength: 255 }), {
            minItems: 1,
            maxItems: 15,
          }),
          prefix: Type.Optional(Type.String({ pattern: "^/[A-Za-z0-9._/-]*/$", maxLength: 200 })),
          tls: Type.Optional(TlsFilesSchema),
          leaseTtlSeconds: Type.Optional(Type.Integer({ minimum: 2, maximum: 3600 })),
          compactIntervalMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 3_600_000 })),
          compressBatches: Type.Optional(Type.Boolean()),
        },
        { additionalProperties: false },
      ),
    ]),
    auditOnStart: Type.Boolean(),
    tls: Type.Optional(TlsFilesSchema),
    advertiseUrl: Type.Optional(Type.String({ pattern: "^https?://[^/\\s]+$", maxLength: 255 })),
    peers: Type.Array(Type.String({ pattern: "^https?://[^/\\s]+$", maxLength: 255 }), { maxItems: 1000 }),
  },
  { additionalProperties: false },
);

export interface NodeConfig {
  host: string;
  port: number;
  batchMaxTxs: number;
  batchMaxWaitMs: number;
  maxPendingTxs: number;
  /**
   * On an etcd network, how long the batching relay (node/relay.ts) holds txs for company while it is busy, in ms.
   * 0 turns the relay off: every node orders its own batches.
   */
  relayHoldMs: number;
  workers: number;
  logLevel: string;
  orderer: OrdererConfig;
  /** Serve HTTPS with this certificate; peers trust the network's CA. */
  tls?: TlsFiles;
  /** The URL other nodes reach this one at (default: the URL it listens on). */
  advertiseUrl?: string;
  /** Other nodes' base URLs, for catching up from their blocks (etcd also tells nodes about each other). */
  peers: string[];
  /** Replay the whole store on a worker thread after start, halting the node if it does not hold. */
  auditOnStart: boolean;
}

export const DEFAULT_CONFIG: NodeConfig = {
  host: "127.0.0.1",
  port: 7600,
  batchMaxTxs: 500,
  batchMaxWaitMs: 5,
  maxPendingTxs: 100_000,
  relayHoldMs: 20,
  workers: 2,
  logLevel: "info",
  orderer: { kind: "embedded" },
  auditOnStart: true,
  peers: [],
};

const checkConfig = Compile(ConfigSchema);

const ENV_KEYS: Record<string, keyof NodeConfig> = {
  CARELEDGER_AUDIT_ON_START: "auditOnStart",
  CARELEDGER_HOST: "host",
  CARELEDGER_PORT: "port",
  CARELEDGER_BATCH_MAX_TXS: "batchMaxTxs",
  CARELEDGER_BATCH_MAX_WAIT_MS: "batchMaxWaitMs",
  CARELEDGER_MAX_PENDING_TXS: "maxPendingTxs",
  CARELEDGER_RELAY_HOLD_MS: "relayHoldMs",
  CARELEDGER_WORKERS: "workers",
  CARELEDGER_LOG_LEVEL: "logLevel",
  CARELEDGER_ORDERER: "orderer",
  CARELEDGER_ADVERTISE_URL: "advertiseUrl",
};

const NUMERIC = new Set<keyof NodeConfig>([
  "port",
  "batchMaxTxs",
  "batchMaxWaitMs",
  "maxPendingTxs",
  "relayHoldMs",
  "workers",
]);

/**
 * Configuration: defaults < the data dir's config.json < CARELEDGER_* environment < command-line flags. Validated
 * once at start; a bad value stops the node with a message naming the setting and where it came from.
 */
export function loadConfig(
  dir: string,
  flags: Partial<NodeConfig> = {},
  env: NodeJS.ProcessEnv = process.env,
): NodeConfig {
  const paths = dataPaths(dir);
  let fromFile: Record<string, unknown> = {};
  if (existsSync(paths.config)) {
    try {
      fromFile = JSON.parse(readFileSync(paths.config, "utf8"));
    } catch (error) {
      throw new ConfigError(`${paths.config} is not valid JSON: ${(error as Error).message}`);
    }
    if (typeof fromFile !== "object" || fromFile === null || Array.isArray(fromFile)) {
      throw new ConfigError(`${paths.config} must hold a JSON object`);
    }
    explain(fromFile, paths.config, true);
  }
  const fromEnv: Record<string, unknown> = {};
  for (const [name, key] of Object.entries(ENV_KEYS)) {
    const raw = env[name];
    if (raw === undefined || raw === "") continue;
    if (NUMERIC.has(key)) fromEnv[key] = /^\d+$/.test(raw) ? Number(raw) : raw;
    else if (key === "auditOnStart") fromEnv[key] = raw === "true" ? true : raw === "false" ? false : raw;
    else if (key === "orderer") fromEnv[key] = parseOrdererUrl(raw, name);
    else fromEnv[key] = raw;
  }
  explain(fromEnv, "the environment (CARELEDGER_*)", true);
  const config = { ...DEFAULT_CONFIG, ...fromFile, ...fromEnv, ...stripUndefined(flags) };
  explain(config, "the command line", false);
  return config as NodeConfig;
}

/**
 * `embedded`, or `etcd://host:port[,host:port…]` (plain) / `etcds://…` (TLS; the certificate files come from the
 * config's `orderer.tls`, or `tls` given here). A bad value names where it came from.
 */
export function parseOrdererUrl(raw: string, source: string, tls?: TlsFiles): OrdererConfig {
  if (raw === "embedded") return { kind: "embedded" };
  const match = /^(etcds?):\/\/([^/?#\s]+)\/?$/.exec(raw);
  if (!match) {
    throw new ConfigError(
      `${source}: orderer must be "embedded" or etcd://host:port[,host:port…] (etcds:// for TLS), not ${JSON.stringify(raw.slice(0, 100))}`,
    );
  }
  const scheme = match[1] === "etcds" ? "https" : "http";
  const endpoints = (match[2] as string).split(",").map((hostPort) => {
    if (!/^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(hostPort)) {
      throw new ConfigError(`${source}: etcd endpoint ${JSON.stringify(hostPort.slice(0, 100))} is not host:port`);
    }
    return `${scheme}://${hostPort}`;
  });
  return tls ? { kind: "etcd", endpoints, tls } : { kind: "etcd", endpoints };
}

/** A TLS file path from the config: relative paths are relative to the data dir. */
export function resolveInDir(dir: string, path: string): string {
  return isAbsolute(path) ? path : join(dir, path);
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function explain(candidate: Record<string, unknown>, source: string, partial: boolean): void {
  const full = partial ? { ...DEFAULT_CONFIG, ...candidate } : candidate;
  if (checkConfig.Check(full)) return;
  const errors = [...checkConfig.Errors(full)].filter((e) => e.keyword !== "boolean");
  const first = errors[0];
  if (!first) throw new ConfigError(`invalid configuration in ${source}`);
  if (first.keyword === "additionalProperties") {
    const unknown = Object.keys(full).filter((k) => !Object.hasOwn(DEFAULT_CONFIG, k));
    throw new ConfigError(
      `unknown setting ${unknown.join(", ")} in ${source}; known: ${Object.keys(DEFAULT_CONFIG).join(", ")}`,
    );
  }
  const setting = first.instancePath.slice(1).replaceAll("/", ".") || "configuration";
  throw new ConfigError(`setting ${setting} in ${source} ${first.message}`);
}

export function writeConfig(dir: string, config: Partial<NodeConfig>): void {
  writeFileAtomic(dataPaths(dir).config, `${JSON.stringify(config, null, 2)}\n`, 0o644);
}

/** Writes via a temporary file and rename, so a crash never leaves a half-written file. */
export function writeFileAtomic(path: string, content: string, mode: number): void {
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  writeFileSync(tmp, content, { mode, flag: "wx" });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

interface KeyFile {
  kind: "ed25519-seed";
  keyId: string;
  seed: string;
  label?: string;
}

/** Key files hold a private seed: mode 0600, and never printed or logged. */
export function writeKeyFile(path: string, key: KeyPair, label?: string): void {
  const body: KeyFile = { kind: "ed25519-seed", keyId: key.keyId, seed: toHex(seedOf(key)), label };
  writeFileAtomic(path, `${JSON.stringify(body, null, 2)}\n`, 0o600);
}

export function readKeyFile(path: string): KeyPair {
  let body: KeyFile;
  try {
    body = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new ConfigError(`key file ${path} does not exist`);
    throw new ConfigError(`key file ${path} is unreadable or not JSON`);
  }
  if (body?.kind !== "ed25519-seed" || typeof body.seed !== "string" || !/^[0-9a-f]{64}$/.test(body.seed)) {
    throw new ConfigError(`key file ${path} is not a CareLedger Ed25519 key`);
  }
  const key = keyPairFromSeed(fromHex(body.seed));
  if (key.keyId !== body.keyId)
    throw new ConfigError(`key file ${path} is damaged: its key id does not match its seed`);
  const mode = statSync(path).mode & 0o077;
  if (mode !== 0) throw new ConfigError(`key file ${path} is readable by group or others; run: chmod 600 ${path}`);
  return key;
}

export function ensureDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
}

export function readGenesis(path: string): Block {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new ConfigError(`genesis file ${path} does not exist`);
    throw new ConfigError(`genesis file ${path} is not valid JSON`);
  }
  const block = (parsed as { block?: unknown })?.block ?? parsed;
  if (typeof block !== "object" || block === null || !Array.isArray((block as Block).txs)) {
    throw new ConfigError(`genesis file ${path} does not hold a block`);
  }
  return block as Block;
}

/** The data dir is held by another process (a running node, or an import). */
export class DataDirInUseError extends ConfigError {
  readonly pid: number;
  constructor(dir: string, pid: number) {
    super(`${dir} is in use by process ${pid} (a running node or an import); stop it first`);
    this.pid = pid;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Takes the data dir for this process (`DIR/node.lock` holding its pid): two processes writing one ledger, vault or
 * orderer log would corrupt them. A lock left by a process that is gone (kill -9, power loss) is taken over. Returns
 * the release function.
 */
export function lockDataDir(dir: string): () => void {
  const path = join(dir, "node.lock");
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(path, `${process.pid}\n`, { flag: "wx", mode: 0o600 });
      return () => {
        try {
          if (readFileSync(path, "utf8").trim() === String(process.pid)) unlinkSync(path);
        } catch {
          // Already gone.
        }
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
        throw new ConfigError(`cannot create the lock ${path}: ${(error as Error).message}`);
      }
    }
    let holder = Number.NaN;
    try {
      holder = Number(readFileSync(path, "utf8").trim());
    } catch {
      continue; // released meanwhile
    }
    if (Number.isSafeInteger(holder) && holder > 0 && processAlive(holder)) throw new DataDirInUseError(dir, holder);
    try {
      unlinkSync(path); // left by a process that is gone
    } catch {
      // Someone else took it over first: try again.
    }
  }
  throw new ConfigError(`cannot take the lock ${path}; another process keeps taking it`);
}

export function requireDataDir(dir: string): ReturnType<typeof dataPaths> {
  const paths = dataPaths(dir);
  if (!existsSync(dir))
    throw new ConfigError(`data dir ${dir} does not exist; create one with: careledger init --dir ${dir}`);
  if (!existsSync(paths.genesis) || !existsSync(paths.nodeKey)) {
    throw new ConfigError(
      `${dir} is not a CareLedger data dir (no genesis.json/node.key); create one with: careledger init --dir ${dir}`,
    );
  }
  return paths;
}
