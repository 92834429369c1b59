import { constants, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import { StoreError } from "./errors.ts";

/**
 * How a block's txs are kept in its row: their JSON, zstd-compressed (schema 4) from `COMPRESS_FROM_TXS` txs.
 * Access-log txs shrink ~4× (753 to ~195 bytes a tx), which every node writes twice (its WAL, then the checkpoint);
 * level 1 costs ~1.2 µs a tx in a block of 120. Rows from schema 3 hold the JSON as text and are read as they are.
 * The frames are standard zstd (RFC 8878): any `zstd -d` reads them.
 */
export function packTxs(json: string): Uint8Array {
  return zstdCompressSync(Buffer.from(json, "utf8"), { params: { [constants.ZSTD_c_compressionLevel]: 1 } });
}

/**
 * Blocks of fewer txs are stored as text. A compression costs ~40–60 µs of setup whatever the size (2–8 µs a tx for
 * small blocks, ~1.2 µs a tx at 120): at `bench ledger`'s 5,000 tx/s in 25-tx requests (about 200 small blocks a
 * second) compressing every block raised the p99 from 14–35 to 30–61 ms on tmpfs (session 19). A busy network's
 * blocks — the ones whose bytes matter — are larger.
 */
export const COMPRESS_FROM_TXS = 64;

/** What a block row keeps of its txs' JSON: compressed from `COMPRESS_FROM_TXS` txs, the text itself below. */
export function storedTxs(json: string, count: number): Uint8Array | string {
  return count >= COMPRESS_FROM_TXS ? packTxs(json) : json;
}

/** Above any real block (500 txs of at most 64 KiB each): a damaged row cannot make a reader allocate without bound. */
const MAX_TXS_JSON_BYTES = 64 * 1024 * 1024;

/** The txs JSON of a stored row, whichever schema wrote it. Throws `StoreError("corrupt")` naming the block. */
export function txsText(stored: unknown, height: number): string {
  if (typeof stored === "string") return stored;
  if (stored instanceof Uint8Array) {
    try {
      return zstdDecompressSync(stored, { maxOutputLength: MAX_TXS_JSON_BYTES }).toString("utf8");
    } catch (error) {
      throw new StoreError(
        "corrupt",
        `block ${height}: its stored txs do not decompress (${(error as Error).message})`,
      );
    }
  }
  throw new StoreError("corrupt", `block ${height}: its stored txs are neither JSON text nor a zstd frame`);
}
