import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Command } from "commander";
import { fhirPaths } from "../fhir/paths.ts";
import { LOOKUP_KEY_FILE, LookupKey } from "../fhir/service/patients.ts";
import { openCustodianStore, WRITE_JOURNAL_FILE } from "../fhir/service/write.ts";
import { ConfigError } from "../node/datadir.ts";
import { silentLogger } from "../node/logger.ts";
import { initNetwork } from "../node/network.ts";
import { openNode } from "../node/runtime.ts";
import { countBundles, importCommand } from "./import.ts";
import { defineImportCommand } from "./import-command.ts";

const SYNTHEA = new URL("../../../shared/data/synthea/", import.meta.url).pathname;
const files = readdirSync(SYNTHEA)
  .sort()
  .slice(0, 3)
  .map((f) => join(SYNTHEA, f));

let root: string;
let dir: string;

before(() => {
  root = mkdtempSync(join(tmpdir(), "careledger-cli-import-"));
  dir = join(root, "node");
  initNetwork(dir, { orgName: "Import Practice" });
  LookupKey.create(join(dir, LOOKUP_KEY_FILE));
});
after(() => {
  rmSync(root, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
});

async function captureStderr<T>(fn: () => Promise<T>): Promise<{ value: T; stderr: string }> {
  const write = process.stderr.write.bind(process.stderr);
  let stderr = "";
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    return { value: await fn(), stderr };
  } finally {
    process.stderr.write = write;
  }
}

async function patientsIn(dataDir: string): Promise<number> {
  const running = await openNode(dataDir, { listen: false, log: silentLogger, flags: { auditOnStart: false } });
  const node = running.node;
  const org = (node.store.state.get(`key/${node.key.keyId}`) as { org: string }).org;
  const store = openCustodianStore({
    node,
    key: node.key,
    custodian: org,
    vaultPath: fhirPaths(dataDir).vault,
    vaultKeyPath: fhirPaths(dataDir).vaultKey,
    journalPath: join(dataDir, WRITE_JOURNAL_FILE),
  });
  try {
    return store.vault.search({ resourceType: "Patient", clauses: [] }).length;
  } finally {
    store.close();
    await running.close();
  }
}

test("careledger import: bundles into a stopped node, one summary line", async () => {
  const { value, stderr } = await captureStderr(() => importCommand([...files], { dir }));
  assert.equal(value.bundles, 3);
  assert.equal(value.patients, 3);
  assert.match(stderr, /^imported \d+ resources \(3 bundles, 3 new patients\) in [\d.]+ s \(\d+ resources\/s\)\n$/);
  assert.equal(await patientsIn(dir), 3);
  assert.equal(readdirSync(join(dir, "keys", "patients")).length, 3, "each new patient's key file");
});

test("a bad file: one line naming the file and the entry, nothing of it stored", async () => {
  const bad = JSON.parse(readFileSync(files[0] as string, "utf8"));
  const obs = bad.entry.findIndex(
    (e: { resource: { resourceType: string } }) => e.resource.resourceType === "Observation",
  );
  delete bad.entry[obs].resource.status;
  bad.entry[0].resource.identifier = [];
  const file = join(root, "bad.json");
  writeFileSync(file, JSON.stringify(bad));
  await assert.rejects(importCommand([file], { dir }), (error) => {
    assert.ok(error instanceof ConfigError, String(error));
    assert.equal(error.message.split("\n").length, 1);
    assert.match(
      error.message,
      new RegExp(`bad\\.json: Bundle\\.entry\\[${obs}\\]\\.resource\\.status: .*nothing of that bundle was stored`),
    );
    return true;
  });
  await assert.rejects(importCommand([join(root, "missing.json")], { dir }), /missing\.json: no such file/);
  assert.equal(await patientsIn(dir), 3);
});

test("refusals: no lookup key, no files, a running node", async () => {
  const bare = join(root, "bare");
  initNetwork(bare, { orgName: "Bare Practice" });
  await assert.rejects(importCommand([...files], { dir: bare }), /lookup\.key does not exist/);
  await assert.rejects(importCommand([], { dir }), ConfigError);
  const main = new URL("../../bin/careledger.js", import.meta.url).pathname;
  const child = spawn(process.execPath, [main, "start", "--dir", dir, "--port", "0"], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, CARELEDGER_LOG_LEVEL: "silent", CARELEDGER_AUDIT_ON_START: "false" },
  });
  try {
    let out = "";
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d) => {
        out += d;
        if (out.includes("listening on")) resolve();
      });
      child.once("exit", (code) => reject(new Error(`node exited ${code}`)));
    });
    await assert.rejects(importCommand([...files], { dir }), (error) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /is running .*stop the node, or POST the bundles to its \/fhir endpoint/);
      return true;
    });
  } finally {
    child.kill("SIGTERM");
    await once(child, "exit");
  }
});

test("the command's definition: --dir required, files, --help", () => {
  let help = "";
  const cli = new Command("careledger")
    .exitOverride()
    .configureOutput({ writeOut: (s) => (help += s), writeErr: () => {} });
  defineImportCommand(cli);
  assert.throws(() => cli.parse(["import", "--help"], { from: "user" }), /help/i);
  assert.match(help, /--dir <dir>/);
  assert.match(help, /--key <file>/);
  assert.match(help, /<files\.\.\.>/);
});

test("the progress bar's total: one bundle per non-empty NDJSON line (across read chunks), one per .json file", async () => {
  const dir = mkdtempSync(join(tmpdir(), "careledger-count-"));
  try {
    const line = JSON.stringify({ resourceType: "Bundle", type: "transaction", entry: [], pad: "x".repeat(900) });
    const big = join(dir, "big.ndjson");
    writeFileSync(big, `${Array(500).fill(line).join("\n")}\n`); // ~450 KB: several stream chunks
    const open = join(dir, "open.ndjson");
    writeFileSync(open, `\n${line}\n\n${line}`); // empty lines hold nothing; no newline after the last line
    const single = join(dir, "one.json");
    writeFileSync(single, line);
    assert.equal(await countBundles([big]), 500);
    assert.equal(await countBundles([open]), 2);
    assert.equal(await countBundles([big, open, single]), 503);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
