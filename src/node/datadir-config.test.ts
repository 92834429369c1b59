// The node's configuration file: the etcd orderer's settings are validated and passed on as written.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { dataPaths, loadConfig } from "./datadir.ts";

function withConfig(config: unknown, check: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "careledger-config-"));
  try {
    writeFileSync(dataPaths(dir).config, JSON.stringify(config));
    check(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("an etcd orderer may turn compressed batches off; anything but a boolean is refused, naming the file", () => {
  const orderer = { kind: "etcd", endpoints: ["https://127.0.0.1:2379"] };
  withConfig({ orderer: { ...orderer, compressBatches: false } }, (dir) => {
    assert.deepEqual(loadConfig(dir, {}, {}).orderer, { ...orderer, compressBatches: false });
  });
  withConfig({ orderer }, (dir) => {
    assert.equal((loadConfig(dir, {}, {}).orderer as { compressBatches?: boolean }).compressBatches, undefined);
  });
  withConfig({ orderer: { ...orderer, compressBatches: "yes" } }, (dir) => {
    assert.throws(
      () => loadConfig(dir, {}, {}),
      (error: Error) => error.message.includes("config.json"),
    );
  });
});
