import { createReadStream } from "node:fs";
import { join, resolve } from "node:path";
import { fhirPaths } from "../fhir/paths.ts";
import type { FhirContext } from "../fhir/service/context.ts";
import {
  expand,
  ImportError,
  type ImportProgress,
  type ImportSummary,
  importFiles,
  SourceError,
} from "../fhir/service/import.ts";
import { LOOKUP_KEY_FILE, LookupKey, LookupKeyError, PATIENT_KEYS_DIR } from "../fhir/service/patients.ts";
import { openCustodianStore, WRITE_JOURNAL_FILE } from "../fhir/service/write.ts";
import { ConfigError, DataDirInUseError, readKeyFile, requireDataDir } from "../node/datadir.ts";
import { silentLogger } from "../node/logger.ts";
import { openNode } from "../node/runtime.ts";
import { progressBar } from "./progress.ts";

export interface ImportCommandOptions {
  /** The node's data dir. */
  dir: string;
  /** Key file that signs `patient.register` (an admin or clinician of the node's organisation); default
   * `DIR/keys/admin.key`. */
  key?: string;
  /** Largest bundle, in entries (default 5,000). */
  maxEntries?: number;
}

/**
 * `careledger import --dir DIR FILES…`: transaction Bundles (`.json`), NDJSON of Bundles (`.ndjson`, as
 * `careledger generate` writes), bare resources (`.json`, imported together), directories expanded. Opens the node in
 * this process (it must not be running: its orderer log would have two writers), imports each bundle all or nothing
 * with a progress bar on a terminal, and ends with a one-line summary on stderr. A bad bundle stops the import with
 * one line naming the file and the entry (ConfigError: exit 2); bundles before it stay imported, nothing of it is.
 */
export async function importCommand(files: readonly string[], options: ImportCommandOptions): Promise<ImportSummary> {
  if (files.length === 0) throw new ConfigError("name the files (or directories) to import");
  const dir = resolve(options.dir);
  const paths = requireDataDir(dir);
  const keyFile = options.key ?? join(paths.keys, "admin.key");
  const signer = readKeyFile(keyFile);
  let lookup: LookupKey;
  try {
    lookup = LookupKey.open(join(dir, LOOKUP_KEY_FILE));
  } catch (error) {
    if (error instanceof LookupKeyError) throw new ConfigError(error.message);
    throw error;
  }
  let sources: string[];
  try {
    sources = expand(files);
  } catch (error) {
    if (error instanceof SourceError) throw new ConfigError(error.message);
    throw error;
  }
  // Only a terminal shows the bar, so only then are the files read ahead to count their bundles.
  const total = process.stderr.isTTY ? await countBundles(sources) : 0;

  let running: Awaited<ReturnType<typeof openNode>>;
  try {
    running = await openNode(dir, { listen: false, log: silentLogger, flags: { auditOnStart: false } });
  } catch (error) {
    if (error instanceof DataDirInUseError) {
      throw new ConfigError(
        `the node in ${dir} is running (process ${error.pid} holds the data dir): stop the node, or POST the bundles to its /fhir endpoint`,
      );
    }
    throw error;
  }
  let store: ReturnType<typeof openCustodianStore> | undefined;
  const bar = progressBar("import", total, "bundles");
  try {
    const node = running.node;
    const nodeRec = node.store.state.get(`key/${node.key.keyId}`) as { kind?: string; org?: string } | undefined;
    if (nodeRec?.kind !== "node" || typeof nodeRec.org !== "string") {
      throw new ConfigError(
        `${dir}: this node's key is not registered as an organisation's node yet; an admin registers it first`,
      );
    }
    const fhir = fhirPaths(dir);
    store = openCustodianStore({
      node,
      key: node.key,
      custodian: nodeRec.org,
      vaultPath: fhir.vault,
      vaultKeyPath: fhir.vaultKey,
      journalPath: join(dir, WRITE_JOURNAL_FILE),
    });
    const ctx: FhirContext = {
      node,
      vault: store.vault,
      anchorer: store.anchorer,
      accessLog: { log: () => {}, flush: async () => {} },
      orgId: nodeRec.org,
      nodeKey: node.key,
      baseUrl: "urn:careledger:import",
      now: Date.now,
    };
    const summary = await importFiles(ctx, sources, {
      signer,
      registry: { lookup, keysDir: join(dir, PATIENT_KEYS_DIR) },
      ...(options.maxEntries === undefined ? {} : { maxEntries: options.maxEntries }),
      onProgress: (p: ImportProgress) => bar.update(p.bundles),
    });
    bar.stop();
    process.stderr.write(
      `imported ${summary.resources} resources (${summary.bundles} bundles, ${summary.patients} new patients) in ` +
        `${summary.seconds.toFixed(1)} s (${Math.round(summary.rate)} resources/s)\n`,
    );
    return summary;
  } catch (error) {
    bar.stop();
    if (error instanceof ImportError) {
      const o = error.outcome;
      throw new ConfigError(
        `${error.source}: ${o.expression === undefined ? "" : `${o.expression}: `}${o.diagnostics} (nothing of that bundle was stored)`,
      );
    }
    if (error instanceof SourceError) throw new ConfigError(error.message);
    throw error;
  } finally {
    store?.close();
    await running.close();
  }
}

/** How many bundles the files hold (one per .json, one per non-empty .ndjson line; bare resources count once). */
export async function countBundles(files: readonly string[]): Promise<number> {
  let n = 0;
  for (const file of files) {
    if (!file.endsWith(".ndjson")) {
      // Bare resources are gathered into one bundle; without reading the file, count it as its own.
      n++;
      continue;
    }
    n += await countLines(file);
  }
  return Math.max(1, n);
}

/** Non-empty lines of a file (an empty line holds no bundle: `readSources` skips it). */
function countLines(file: string): Promise<number> {
  return new Promise((done) => {
    let lines = 0;
    let current = 0; // bytes of the line being read, across chunks
    const stream = createReadStream(file);
    stream.on("data", (chunk: string | Buffer) => {
      const b = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      let start = 0;
      for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) {
        if (current + i - start > 0) lines++;
        current = 0;
        start = i + 1;
      }
      current += b.length - start;
    });
    stream.on("end", () => done(lines + (current > 0 ? 1 : 0)));
    stream.on("error", () => done(0));
  });
}
