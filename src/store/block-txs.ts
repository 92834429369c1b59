import { constants, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import { StoreError } from "./errors.ts";

/**
 * How a block's txs are kept in its row: their JSON, zstd-compressed (schema 4). Access-log txs shrink ~4× (753 to
 * ~195 bytes a tx), which every node writes twice (its WAL, then the checkpoint) for every tx; level 1 costs ~2 µs a
 * tx. Rows from schema 3 hold the JSON as text and are read as they are. The frames are standard zstd (RFC 8878): any
 * `zstd -d` reads them.
 */
export function packTxs(json: string): Uint8Array {
  return zstdCompressSync(Buffer.from(json, "utf8"), { params: { [constants.ZSTD_c_compressionLevel]: 1 } });
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
