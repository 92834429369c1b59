import { createReadStream, existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { blockHash } from "../ledger/block.ts";
import type { Block } from "../ledger/types.ts";
import { ConfigError, readGenesis, requireDataDir } from "../node/datadir.ts";
import {
  type BlockSource,
  failedReport,
  replayLedger,
  VerifierError,
  type VerifyReport,
  verifyStore,
} from "../node/verify.ts";
import { VerifyPool } from "../node/verify-pool.ts";
import { LedgerStore } from "../store/ledger-store.ts";
import { progressBar } from "./progress.ts";

export async function verifyCommand(options: { dir?: string; export?: string; json?: boolean }): Promise<void> {
  if (!options.dir && !options.export) throw new ConfigError("verify needs --dir DIR or --export FILE");
  const pool = new VerifyPool();
  let report: VerifyReport;
  try {
    if (options.dir) report = await verifyDir(options.dir, pool);
    else report = await verifyExport(options.export as string, pool);
  } catch (error) {
    if (error instanceof VerifierError) throw new ConfigError(`verify could not run: ${error.message}`);
    throw error;
  } finally {
    await pool.close();
  }
  const rate = report.elapsedMs > 0 ? Math.round((report.txs / report.elapsedMs) * 1000) : 0;
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ ...report, tx_per_s: rate })}\n`);
  } else if (report.ok) {
    process.stdout.write(
      `ok: ${report.blocks} blocks, ${report.txs} txs replayed (${rate} tx/s); log size ${report.size}, root ${report.root}, state digest ${report.stateDigest}\n`,
    );
  } else {
    process.stdout.write(`FAILED at height ${report.problem?.height}: ${report.problem?.reason}\n`);
  }
  if (!report.ok) process.exitCode = 1;
}

async function verifyDir(dir: string, pool: VerifyPool): Promise<VerifyReport> {
  const paths = requireDataDir(dir);
  if (!existsSync(paths.ledger))
    throw new ConfigError(`${dir} holds no ledger yet (no ledger.db); start the node once first`);
  const genesisHash = blockHash(readGenesis(paths.genesis));
  let store: LedgerStore;
  try {
    store = LedgerStore.open(paths.ledger, { snapshot: true });
  } catch (error) {
    return failedReport(0, `the ledger store cannot be opened: ${(error as Error).message}`);
  }
  try {
    const bar = progressBar("verify", store.head()?.height ?? 0, "blocks");
    const report = await verifyStore(store, pool, { genesisHash, onProgress: (h) => bar.update(h) });
    bar.stop();
    return report;
  } catch (error) {
    if (error instanceof VerifierError) throw error;
    return failedReport(0, `the ledger store could not be read: ${(error as Error).message}`);
  } finally {
    store.close();
  }
}

async function verifyExport(file: string, pool: VerifyPool): Promise<VerifyReport> {
  if (!existsSync(file)) throw new ConfigError(`export file ${file} does not exist`);
  const source: BlockSource = {
    async *blocks() {
      const lines = createInterface({ input: createReadStream(file), crlfDelay: Number.POSITIVE_INFINITY });
      let lineNo = 0;
      for await (const line of lines) {
        lineNo++;
        if (line.trim() === "") continue;
        let block: Block;
        try {
          block = JSON.parse(line);
        } catch {
          throw new Error(`line ${lineNo} of ${file} is not valid JSON`);
        }
        if (typeof block !== "object" || block === null || Array.isArray(block)) {
          throw new Error(`line ${lineNo} of ${file} is not a block object`);
        }
        yield { block };
      }
    },
  };
  const { state: _state, ids: _ids, nonceKeys: _nonceKeys, ...report } = await replayLedger(source, pool);
  return report;
}
