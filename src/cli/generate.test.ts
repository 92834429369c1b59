import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { generatePatient } from "../fhir/generate.ts";
import { isTestNhsNumber } from "../fhir/nhs-number.ts";
import { ConfigError } from "../node/datadir.ts";
import { generateCommand } from "./generate.ts";

const root = mkdtempSync(join(tmpdir(), "careledger-generate-"));
after(() => rmSync(root, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 }));
let dirs = 0;
const freshPath = (name = "out") => join(root, `${name}-${dirs++}`);

async function rejectsWith(options: Parameters<typeof generateCommand>[0], pattern: RegExp): Promise<void> {
  await assert.rejects(generateCommand(options), (error: Error) => {
    assert.ok(error instanceof ConfigError, `${error.constructor.name}: ${error.message}`);
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes("\n"), "one line");
    return true;
  });
}

describe("careledger generate", () => {
  it("writes one transaction Bundle per patient, numbered, byte-identical to the generator's output", async () => {
    const out = freshPath();
    const summary = await generateCommand({ patients: 25, seed: "cli", out });
    const files = readdirSync(out).sort();
    assert.equal(files.length, 25);
    assert.equal(files[0], "patient-00001.json");
    assert.equal(files[24], "patient-00025.json");
    let resources = 0;
    for (const [i, file] of files.entries()) {
      const text = readFileSync(join(out, file), "utf8");
      assert.equal(text, JSON.stringify(generatePatient("cli", i)));
      const bundle = JSON.parse(text);
      assert.equal(bundle.type, "transaction");
      assert.ok(isTestNhsNumber(bundle.entry[0].resource.identifier[0].value));
      resources += bundle.entry.length;
    }
    assert.equal(summary.patients, 25);
    assert.equal(summary.resources, resources);
    assert.ok(summary.labelled >= 0 && summary.labelled < resources);
  });

  it("is deterministic across runs, and the seed matters", async () => {
    const a = freshPath();
    const b = freshPath();
    const c = freshPath();
    await generateCommand({ patients: 10, seed: "same", out: a });
    await generateCommand({ patients: "10", seed: "same", out: b });
    await generateCommand({ patients: 10, seed: "different", out: c });
    for (const file of readdirSync(a)) {
      assert.deepEqual(readFileSync(join(a, file)), readFileSync(join(b, file)), file);
      assert.notDeepEqual(readFileSync(join(a, file)), readFileSync(join(c, file)), file);
    }
  });

  it("writes NDJSON to a .ndjson file: one bundle per line, the same bundles as the directory form", async () => {
    const file = `${freshPath("stream")}.ndjson`;
    await generateCommand({ patients: 12, seed: "cli", out: file });
    const lines = readFileSync(file, "utf8").split("\n");
    assert.equal(lines.pop(), "", "ends with a newline");
    assert.equal(lines.length, 12);
    for (const [i, line] of lines.entries()) assert.equal(line, JSON.stringify(generatePatient("cli", i)));
    await rejectsWith({ patients: 1, out: file }, /already exists/);
  });

  it("takes the generated world's date from --now, never from the clock", async () => {
    const a = freshPath();
    await generateCommand({ patients: 3, seed: "cli", out: a, now: "2020-01-01" });
    for (const [i, file] of readdirSync(a).sort().entries()) {
      assert.equal(readFileSync(join(a, file), "utf8"), JSON.stringify(generatePatient("cli", i, "2020-01-01")));
    }
  });

  it("refuses a bad patient count with one line", async () => {
    for (const bad of ["0", "-5", "abc", "1.5", "1000001", "", " ", "1e3"]) {
      await rejectsWith({ patients: bad, out: freshPath() }, /--patients must be a whole number from 1 to 1000000/);
    }
    for (const bad of [0, -1, 2.5, 1_000_001, Number.NaN]) {
      await rejectsWith({ patients: bad, out: freshPath() }, /--patients/);
    }
  });

  it("refuses a bad seed or date with one line", async () => {
    await rejectsWith({ patients: 1, seed: "", out: freshPath() }, /--seed/);
    await rejectsWith({ patients: 1, seed: "x".repeat(201), out: freshPath() }, /--seed/);
    await rejectsWith({ patients: 1, now: "yesterday", out: freshPath() }, /--now/);
    await rejectsWith({ patients: 1, now: "2025-13-45", out: freshPath() }, /--now/);
  });

  it("refuses an --out that is a file, lies under a file, or already holds generated patients", async () => {
    const file = freshPath("file");
    writeFileSync(file, "not a directory");
    await rejectsWith({ patients: 1, out: file }, /is not a directory/);
    await rejectsWith({ patients: 1, out: join(file, "sub") }, /cannot create --out directory/);
    const used = freshPath();
    await generateCommand({ patients: 2, seed: "cli", out: used });
    await rejectsWith({ patients: 2, out: used }, /already holds generated patients/);
    // Other files in the directory are fine.
    const other = freshPath();
    mkdirSync(other);
    writeFileSync(join(other, "README.txt"), "notes");
    await generateCommand({ patients: 1, out: other });
    assert.deepEqual(readdirSync(other).sort(), ["README.txt", "patient-00001.json"]);
  });

  it("refuses a directory it cannot write to", {
    skip: process.getuid?.() === 0 && "root writes anywhere",
  }, async () => {
    const locked = freshPath("locked");
    mkdirSync(locked);
    chmodSync(locked, 0o500);
    try {
      await rejectsWith({ patients: 1, out: locked }, /not writable/);
    } finally {
      chmodSync(locked, 0o700);
    }
  });

  it("runs as a process: NDJSON on stdout, a summary on stderr, exit 2 with one line on bad input", () => {
    // A stand-in for main.ts's handling (ConfigError → one line, exit 2) until the lead registers the command.
    const script = `
      import { generateCommand } from ${JSON.stringify(new URL("./generate.ts", import.meta.url).href)};
      import { ConfigError } from ${JSON.stringify(new URL("../node/datadir.ts", import.meta.url).href)};
      try { await generateCommand(JSON.parse(process.argv[1])); }
      catch (e) { if (!(e instanceof ConfigError)) throw e; process.stderr.write("careledger: " + e.message + "\\n"); process.exitCode = 2; }
    `;
    const run = (options: object) =>
      spawnSync(process.execPath, ["--input-type=module", "-e", script, JSON.stringify(options)], {
        encoding: "utf8",
        maxBuffer: 64 * 1024 * 1024,
      });
    const ok = run({ patients: 7, seed: "cli", out: "-" });
    assert.equal(ok.status, 0, ok.stderr);
    const lines = ok.stdout.trimEnd().split("\n");
    assert.equal(lines.length, 7);
    assert.equal(lines[3], JSON.stringify(generatePatient("cli", 3)));
    assert.match(ok.stderr, /^generated 7 patients \(\d+ resources, \d+ sensitive-labelled\) to standard output in /);
    assert.ok(!ok.stderr.includes("\u001b"), "no progress bar when stderr is not a terminal");
    const bad = run({ patients: 0, out: "-" });
    assert.equal(bad.status, 2);
    assert.equal(bad.stdout, "");
    assert.equal(bad.stderr, "careledger: --patients must be a whole number from 1 to 1000000\n");
  });

  it("generates at a useful rate (measured, reported)", async (t) => {
    const out = freshPath();
    const summary = await generateCommand({ patients: 2000, seed: "speed", out });
    const rate = summary.patients / summary.seconds;
    t.diagnostic(`2000 patients, ${summary.resources} resources to files: ${Math.round(rate)} patients/s`);
    // The target is 1,000/s; the floor here only catches a pathological slowdown on a loaded machine.
    assert.ok(rate > 150, `${Math.round(rate)} patients/s`);
    assert.equal(readdirSync(out).length, 2000);
  });
});
