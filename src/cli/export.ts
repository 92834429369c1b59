import { once } from "node:events";
import { createWriteStream, existsSync, openSync, renameSync, rmSync } from "node:fs";
import type { Writable } from "node:stream";
import { ConfigError, requireDataDir } from "../node/datadir.ts";
import { LedgerStore } from "../store/ledger-store.ts";

/** One block per line: the stored header and txs spliced together, no parse and re-serialise. */
export async function exportCommand(options: { dir: string; out?: string }): Promise<void> {
  const paths = requireDataDir(options.dir);
  if (!existsSync(paths.ledger)) throw new ConfigError(`${options.dir} holds no ledger yet (no ledger.db)`);
  const store = LedgerStore.open(paths.ledger, { snapshot: true });
  const tmp = options.out ? `${options.out}.partial` : undefined;
  let out: Writable = process.stdout;
  if (tmp) {
    // Opened here, so an unwritable --out is a one-line usage error rather than a stream error later.
    try {
      out = createWriteStream(tmp, { fd: openSync(tmp, "w") });
    } catch (error) {
      store.close();
      throw new ConfigError(`cannot write ${options.out}: ${(error as Error).message}`);
    }
  }
  let lines = 0;
  try {
    const last = store.head()?.height ?? -1;
    for (let height = 0; height <= last; height++) {
      const row = store.blockRow(height);
      if (!row)
        throw new ConfigError(`block ${height} is missing from the store; run careledger verify --dir ${options.dir}`);
      const line = `${row.header.slice(0, -1)},"txs":${row.txs}}\n`;
      if (!out.write(line)) await once(out, "drain");
      lines++;
    }
    if (tmp) {
      out.end();
      await once(out, "finish");
      // The export appears whole or not at all.
      renameSync(tmp, options.out as string);
      process.stderr.write(`exported ${lines} blocks to ${options.out}\n`);
    }
  } catch (error) {
    if (tmp) {
      out.destroy();
      rmSync(tmp, { force: true });
    }
    if ((error as NodeJS.ErrnoException).code === "EPIPE") return;
    if (tmp && typeof (error as NodeJS.ErrnoException).code === "string") {
      throw new ConfigError(`cannot write ${options.out}: ${(error as Error).message}`);
    }
    throw error;
  } finally {
    store.close();
  }
}
