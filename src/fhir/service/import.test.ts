import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Bundle } from "@medplum/fhirtypes";
import { STATE_KEYS } from "../../contract/index.ts";
import { read } from "../../contract/state.ts";
import { silentLogger } from "../../node/logger.ts";
import { initNetwork } from "../../node/network.ts";
import { openNode } from "../../node/runtime.ts";
import { AnchorError } from "../../vault/anchorer.ts";
import { generatePatients } from "../generate.ts";
import { isTestNhsNumber, NHS_NUMBER_SYSTEM, testNhsNumber } from "../nhs-number.ts";
import { patientOf } from "../resource-facts.ts";
import { ImportError, importBundle, importFiles, readSources } from "./import.ts";
import { LOOKUP_KEY_FILE, LookupKey, pseudonymOf } from "./patients.ts";
import { nhsNumberOf, openCustodianStore, WRITE_JOURNAL_FILE } from "./write.ts";
import { openWriteKit, type WriteKit } from "./write-kit.ts";

const DATA = new URL("../../../../shared/data/", import.meta.url).pathname;
const SYNTHEA = join(DATA, "synthea");
const syntheaFiles = readdirSync(SYNTHEA)
  .filter((f) => f.endsWith(".json"))
  .sort()
  .map((f) => join(SYNTHEA, f));

let kit: WriteKit;
/** The data dir's bytes before any import: strings already there (schema words, the org's name) prove nothing. */
let baseline: Buffer = Buffer.alloc(0);

before(async () => {
  kit = await openWriteKit();
  baseline = lowerAscii(filesBytes(kit.dir));
});
after(async () => {
  await kit.close();
});

function options() {
  return { signer: kit.admin, registry: kit.registry };
}

/** The bytes of every file under `dir`, one after another. */
function filesBytes(dir: string): Buffer {
  const parts: Buffer[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else parts.push(readFileSync(path), Buffer.from("\n"));
    }
  };
  walk(dir);
  return Buffer.concat(parts);
}

/** A copy with ASCII letters in lower case (so a search finds every case of a name). */
function lowerAscii(bytes: Buffer): Buffer {
  const out = Buffer.from(bytes);
  for (let i = 0; i < out.length; i++) {
    const b = out[i] as number;
    if (b >= 65 && b <= 90) out[i] = b + 32;
  }
  return out;
}

function vaultCount(): number {
  let n = 0;
  for (const type of ["Patient", "Observation", "Condition", "Organization", "Encounter", "Consent", "Provenance"]) {
    n += kit.vault.search({ resourceType: type, clauses: [] }).length;
  }
  return n;
}

test("all 40 Synthea bundles import: NHS numbers assigned, US identifiers kept, references rewritten, anchored", async () => {
  const summary = await importFiles(kit.ctx, syntheaFiles, options());
  assert.equal(summary.bundles, 40);
  assert.equal(summary.resources, 5454);
  assert.equal(summary.patients, 40);
  console.log(
    `# import of the 40 Synthea bundles: ${summary.resources} resources in ${summary.seconds.toFixed(2)} s = ` +
      `${Math.round(summary.rate)} resources/s (encrypted, indexed, anchored; CPU shared with other work)`,
  );
  const state = kit.ctx.node.store.state;
  const patients = kit.vault.search({ resourceType: "Patient", clauses: [] });
  assert.equal(patients.length, 40);
  for (const id of patients) {
    const rec = kit.vault.read("Patient", id);
    assert.ok(rec);
    const identifiers = rec.resource.identifier as { system?: string; value?: string }[];
    const nhs = nhsNumberOf(rec.resource);
    assert.ok(isTestNhsNumber(nhs), "a valid NHS number from the 999 test range");
    assert.ok(
      identifiers.some((i) => i.system === "http://hl7.org/fhir/sid/us-ssn"),
      "the SSN is kept",
    );
    assert.ok(
      identifiers.some((i) => i.system === "http://hospital.smarthealthit.org"),
      "the MRN is kept",
    );
    assert.equal(pseudonymOf(kit.ctx, kit.registry.lookup, nhs as string), id, "Patient.id is the pseudonym");
    assert.equal(read.patient(state, id)?.org, kit.orgId);
    // Every record of the patient: anchored on the ledger, pointing at its Patient by the pseudonym.
    const refs = kit.vault.byPatient(id);
    assert.ok(refs.length > 10);
    for (const ref of refs.slice(0, 20)) {
      const r = kit.vault.read(ref.type, ref.id);
      assert.ok(r);
      assert.equal(patientOf(r.resource), id);
      assert.ok(state.get(STATE_KEYS.anchor(kit.orgId, ref.type, ref.id, "1")), `${ref.type} anchored`);
      assert.ok(!JSON.stringify(r.resource).includes("urn:uuid:"), "no bundle-local reference survives");
    }
  }
  const orgs = kit.vault.search({ resourceType: "Organization", clauses: [] });
  assert.equal(orgs.length, 56, "records of no patient are stored too");
});

test("re-importing a bundle finds the same patient (same NHS number and pseudonym) and updates its Patient", async () => {
  const file = syntheaFiles[0] as string;
  const source = JSON.parse(readFileSync(file, "utf8"));
  const response = (await importBundle(kit.ctx, source, options())) as Bundle;
  assert.equal(response.type, "transaction-response");
  assert.equal(response.entry?.length, source.entry.length);
  const patientEntry = response.entry?.[0]?.response;
  assert.equal(patientEntry?.status, "200 OK", "the Patient existed: a new version");
  assert.match(patientEntry?.location ?? "", /^Patient\/[0-9a-f-]{36}\/_history\/2$/);
  assert.equal(response.entry?.[1]?.response?.status, "201 Created");
  assert.equal(kit.vault.search({ resourceType: "Patient", clauses: [] }).length, 40);
});

test("the HL7 and UK Core examples import; references between them resolve to the new ids", async () => {
  const summary = await importFiles(kit.ctx, [join(DATA, "hl7-examples"), join(DATA, "ukcore-examples")], options());
  assert.equal(summary.resources, 48 + 8);
  // HL7's Consent-basic is about Patient/f001: stored as a record of f001's pseudonym.
  const consents = kit.vault.search({ resourceType: "Consent", clauses: [] });
  assert.equal(consents.length, 12 + 1);
  const f001 = kit.vault
    .search({ resourceType: "Patient", clauses: [] })
    .map((id) => kit.vault.read("Patient", id))
    .find((r) => (r?.resource.identifier as { value?: string }[] | undefined)?.some((i) => i.value === "738472983"));
  assert.ok(f001, "Patient f001 (its own identifiers kept)");
  const about = consents.map((id) => kit.vault.read("Consent", id)).filter((r) => r?.patient === f001.resource.id);
  assert.ok(about.length >= 9, "the consent examples about f001 point at its pseudonym");
  // UK Core: RichardSmith keeps his (valid) NHS number; BabyPatient's fails Modulus 11, so gets a test one too.
  const richard = pseudonymOf(kit.ctx, kit.registry.lookup, "9912003888");
  assert.ok(richard);
  const baby = kit.vault
    .search({ resourceType: "Patient", clauses: [] })
    .map((id) => kit.vault.read("Patient", id)?.resource)
    .find((r) => ((r?.identifier ?? []) as { value?: string }[]).some((i) => i.value === "9912003890"));
  assert.ok(baby);
  assert.ok(isTestNhsNumber(nhsNumberOf(baby)));
});

function syntheaBundle(index = 1): Record<string, unknown> {
  return JSON.parse(readFileSync(syntheaFiles[index] as string, "utf8"));
}

test("a bad bundle is rejected whole, naming the entry; nothing of it is stored, registered or anchored", async () => {
  const height = kit.ctx.node.height;
  const count = vaultCount();
  const keyFiles = readdirSync(kit.registry.keysDir).length;
  type Entry = { resource: Record<string, unknown>; fullUrl: string };
  type Spoil = (b: { entry: Entry[] }) => void;
  const sample = syntheaBundle(2) as unknown as { entry: Entry[] };
  const at = (type: string, nth = 0) =>
    sample.entry.map((e, i) => [e, i] as const).filter(([e]) => e.resource.resourceType === type)[nth]?.[1] as number;
  const obs = at("Observation");
  const cond = at("Condition");
  const enc = at("Encounter");
  const cases: [string, Spoil, number, RegExp][] = [
    [
      "a missing required element",
      (b) => delete b.entry[obs]?.resource.status,
      400,
      new RegExp(`Bundle\\.entry\\[${obs}\\]\\.resource\\.status`),
    ],
    [
      "a wrong type",
      (b) => ((b.entry[obs] as Entry).resource.status = 12),
      400,
      new RegExp(`Bundle\\.entry\\[${obs}\\]`),
    ],
    [
      "an unknown resourceType",
      (b) => ((b.entry[cond] as Entry).resource.resourceType = "Bogus"),
      400,
      new RegExp(`Bundle\\.entry\\[${cond}\\]\\.resource\\.resourceType`),
    ],
    [
      "a broken reference",
      (b) =>
        ((b.entry[enc] as Entry).resource.subject = { reference: "urn:uuid:00000000-0000-4000-8000-000000000000" }),
      400,
      new RegExp(`Bundle\\.entry\\[${enc}\\]\\.resource\\.subject`),
    ],
    [
      "an unknown element",
      (b) => ((b.entry[cond] as Entry).resource.colour = "blue"),
      400,
      new RegExp(`Bundle\\.entry\\[${cond}\\]\\.resource\\.colour`),
    ],
    [
      "a duplicated fullUrl",
      (b) => ((b.entry[4] as Entry).fullUrl = (b.entry[3] as Entry).fullUrl),
      409,
      /Bundle\.entry\[4\]\.fullUrl/,
    ],
  ];
  for (const [what, spoil, status, where] of cases) {
    const bundle = syntheaBundle(2) as unknown as { entry: Entry[] };
    spoil(bundle);
    await assert.rejects(importBundle(kit.ctx, bundle, options()), (error: { status?: number; message?: string }) => {
      assert.equal(error.status, status, `${what}: ${error.message}`);
      assert.match(error.message ?? "", where, what);
      return true;
    });
  }
  // Too many entries: 413, before anything else.
  const huge = syntheaBundle(2);
  await assert.rejects(importBundle(kit.ctx, huge, { ...options(), maxEntries: 10 }), { status: 413 });
  // Through importFiles the error names the file as well.
  const dir = mkdtempSync(join(tmpdir(), "careledger-bad-"));
  try {
    const bad = syntheaBundle(2) as unknown as { entry: Entry[] };
    delete bad.entry[obs]?.resource.status;
    writeFileSync(join(dir, "bad.json"), JSON.stringify(bad));
    await assert.rejects(importFiles(kit.ctx, [join(dir, "bad.json")], options()), (error) => {
      assert.ok(error instanceof ImportError);
      assert.equal(error.source, join(dir, "bad.json"));
      assert.match(error.message, new RegExp(`Bundle\\.entry\\[${obs}\\]\\.resource\\.status`));
      return true;
    });
    writeFileSync(join(dir, "broken.json"), "{not json");
    await assert.rejects(importFiles(kit.ctx, [join(dir, "broken.json")], options()), /broken\.json: not valid JSON/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(vaultCount(), count, "nothing stored");
  assert.equal(readdirSync(kit.registry.keysDir).length, keyFiles, "no patient registered");
  const after = kit.ctx.node.height;
  for (let h = height + 1; h <= after; h++) {
    const row = kit.ctx.node.readBlock(h);
    assert.ok(!row?.txs.includes("record.anchor") && !row?.txs.includes("patient.register"), "nothing anchored");
  }
});

test("generated UK patients import from NDJSON, pipelined (rate printed)", async () => {
  const scratch = mkdtempSync(join(tmpdir(), "careledger-generated-"));
  after(() => rmSync(scratch, { recursive: true, force: true }));
  const file = join(scratch, "generated.ndjson");
  const bundles = [...generatePatients({ patients: 100, seed: "import-test", now: "2025-06-30" })];
  writeFileSync(file, bundles.map((b) => JSON.stringify(b)).join("\n"));
  const expected = bundles.reduce((n, b) => n + (b.entry?.length ?? 0), 0);
  let last = 0;
  const summary = await importFiles(kit.ctx, [file], { ...options(), onProgress: (p) => (last = p.resources) });
  assert.equal(summary.resources, expected);
  assert.equal(last, expected);
  assert.equal(summary.patients, 100);
  console.log(
    `# import of 100 generated patients: ${summary.resources} resources in ${summary.seconds.toFixed(2)} s = ` +
      `${Math.round(summary.rate)} resources/s`,
  );
  const sources = [];
  for await (const s of readSources([file])) sources.push(s.name);
  assert.equal(sources[0], `${file}:1`);
});

/** Generated patients as an NDJSON file in a scratch dir (lines in order; `extra` lines spliced in at their index). */
function patientsFile(count: number, seed: string, extra: [at: number, line: string][] = []) {
  const scratch = mkdtempSync(join(tmpdir(), "careledger-import-"));
  const bundles = [...generatePatients({ patients: count, seed, now: "2025-06-30" })];
  const nhs = bundles.map((b) => nhsNumberOf(b.entry?.[0]?.resource as object) as string);
  const lines = bundles.map((b) => JSON.stringify(b));
  for (const [at, line] of extra) lines.splice(at, 0, line);
  const file = join(scratch, `${count}.ndjson`);
  writeFileSync(file, lines.join("\n"));
  return { bundles, nhs, file, remove: () => rmSync(scratch, { recursive: true, force: true }) };
}

/** For each NHS number: is its patient registered and their Patient resource stored? */
function storedPatients(nhs: readonly string[]): boolean[] {
  return nhs.map((n) => {
    const p = pseudonymOf(kit.ctx, kit.registry.lookup, n);
    return p !== undefined && kit.vault.read("Patient", p) !== undefined;
  });
}

test("a group that fails is retried bundle by bundle: the bundles before the bad one stay, it and the rest do not", async () => {
  const { nhs, file, remove } = patientsFile(3, "group-failure");
  const real = kit.ctx.anchorer;
  // The ledger refuses whatever holds the second patient's records (as it would an erased patient's).
  kit.ctx.anchorer = Object.assign(Object.create(real), {
    anchor(entries: readonly { patient: string | null }[]) {
      const second = pseudonymOf(kit.ctx, kit.registry.lookup, nhs[1] as string);
      if (entries.some((e) => e.patient === second)) return Promise.reject(new AnchorError("erased", "refused"));
      return real.anchor(entries as never);
    },
  });
  try {
    await assert.rejects(importFiles(kit.ctx, [file], options()), (error) => {
      assert.ok(error instanceof ImportError);
      assert.equal(error.source, `${file}:2`);
      assert.equal(error.outcome.status, 410);
      return true;
    });
  } finally {
    kit.ctx.anchorer = real;
    remove();
  }
  assert.deepEqual(storedPatients(nhs), [true, false, false]);
});

test("a source that does not parse stops the run: every bundle before it is stored, in whatever group", async () => {
  // Line 5: after four good bundles, before the fifth.
  const { bundles, nhs, file, remove } = patientsFile(5, "stop-at-broken", [[4, "{ not json"]]);
  try {
    // One small group per bundle: groups stored, registering and gathered when the broken line comes.
    const groupResources = Math.min(...bundles.map((b) => b.entry?.length ?? 0));
    await assert.rejects(importFiles(kit.ctx, [file], { ...options(), groupResources }), (error) => {
      assert.ok(error instanceof Error && error.message.startsWith(`${file}:5: not valid JSON`), String(error));
      return true;
    });
    assert.deepEqual(storedPatients(nhs), [true, true, true, true, false]);
  } finally {
    remove();
  }
});

test("a bundle that fails when resolved against the ledger stops the run: the bundles before it in its group are stored", async () => {
  const { nhs, file, remove } = patientsFile(5, "stop-at-unresolved");
  // The fourth patient's NHS number cannot be looked up (as if the lookup key refused it): resolving bundle 4 fails.
  const lookup = kit.registry.lookup;
  const refusing = Object.assign(Object.create(lookup), {
    lookupOf(n: string) {
      if (n === nhs[3]) throw new RangeError("lookup refused");
      return lookup.lookupOf(n);
    },
  });
  try {
    // All five bundles in one group (the default group size).
    await assert.rejects(
      importFiles(kit.ctx, [file], { ...options(), registry: { ...kit.registry, lookup: refusing } }),
      (error) => {
        assert.ok(error instanceof ImportError, String(error));
        assert.equal(error.source, `${file}:4`);
        return true;
      },
    );
    assert.deepEqual(storedPatients(nhs), [true, true, true, false, false]);
  } finally {
    remove();
  }
});

test("the same patient twice in one run: one registration, the second bundle a new version of the Patient", async () => {
  const file = syntheaFiles[5] as string;
  const before = kit.vault.search({ resourceType: "Patient", clauses: [] }).length;
  const summary = await importFiles(kit.ctx, [file, file], options());
  assert.equal(summary.bundles, 2);
  assert.equal(summary.patients, 0, "registered by the first test already");
  assert.equal(kit.vault.search({ resourceType: "Patient", clauses: [] }).length, before);
  // Synthea Patients get the test NHS number their source id seeds, so the pseudonym is found again.
  const source = JSON.parse(readFileSync(file, "utf8")).entry[0].resource;
  const patient = pseudonymOf(kit.ctx, kit.registry.lookup, testNhsNumber(source.id)) as string;
  assert.equal(kit.vault.read("Patient", patient)?.version, 3, "imported once before (1), then twice in this run");
});

/** An ASCII letter or digit (of lower-cased bytes). */
function isAlnum(byte: number | undefined): boolean {
  return byte !== undefined && ((byte >= 0x61 && byte <= 0x7a) || (byte >= 0x30 && byte <= 0x39));
}

test("the raw database files hold none of the names, identifiers, codes or narrative imported", () => {
  const needles = new Set<string>();
  for (const file of syntheaFiles.slice(0, 10)) {
    const bundle = JSON.parse(readFileSync(file, "utf8")) as Bundle;
    for (const entry of bundle.entry ?? []) {
      const r = entry.resource as unknown as Record<string, unknown>;
      if (r.resourceType === "Patient") {
        for (const n of (r.name as { family?: string; given?: string[] }[]) ?? []) {
          for (const part of [n.family, ...(n.given ?? [])]) if (part !== undefined) needles.add(part);
        }
        for (const i of (r.identifier as { value?: string }[]) ?? []) if (i.value) needles.add(i.value);
        for (const a of (r.address as { line?: string[] }[]) ?? []) for (const l of a.line ?? []) needles.add(l);
      }
      if (r.resourceType === "Observation" || r.resourceType === "Condition") {
        const coding = (r.code as { coding?: { code?: string; display?: string }[] })?.coding?.[0];
        // Codes as a JSON leak would show them (quoted): bare digit-and-dash runs turn up by chance inside the
        // UUIDs and hex the ledger is full of.
        if (coding?.code) needles.add(JSON.stringify(coding.code));
        if (coding?.display) needles.add(coding.display);
      }
    }
  }
  for (const id of kit.vault.search({ resourceType: "Patient", clauses: [] })) {
    const nhs = nhsNumberOf(kit.vault.read("Patient", id)?.resource ?? {});
    if (nhs) needles.add(nhs);
  }
  needles.add("Generated by");
  needles.add("Medical Record Number");
  const bytes = filesBytes(kit.dir);
  const lower = lowerAscii(bytes);
  // One pass over the bytes: every position whose next 4 bytes start some needle is checked for that needle.
  const byPrefix = new Map<number, Buffer[]>();
  let checked = 0;
  for (const needle of needles) {
    const folded = Buffer.from(needle.toLowerCase(), "utf8");
    if (needle.length < 5 || baseline.includes(folded)) continue;
    checked++;
    const prefix = folded.readUInt32LE(0);
    byPrefix.set(prefix, [...(byPrefix.get(prefix) ?? []), folded]);
  }
  const firstTwo = new Uint8Array(65536);
  for (const prefix of byPrefix.keys()) firstTwo[prefix & 0xffff] = 1;
  for (let i = 0; i + 4 <= lower.length; i++) {
    if (firstTwo[(lower[i] as number) | ((lower[i + 1] as number) << 8)] === 0) continue;
    const candidates = byPrefix.get(lower.readUInt32LE(i));
    if (candidates === undefined) continue;
    for (const c of candidates) {
      // Inside a run of letters and digits on both sides it is chance, not text: short names turn up in the
      // base64 signatures and hex ids the ledger is full of ("carin" in "…3CaRin3O…").
      if (isAlnum(lower[i - 1]) && isAlnum(lower[i + c.length])) continue;
      // Any case of the UTF-8 bytes, in any file (database, WAL, shared memory, keys, journal).
      assert.ok(
        !lower.subarray(i, i + c.length).equals(c),
        `"${c.toString("utf8")}" appears in the data dir's files: ${JSON.stringify(bytes.subarray(i - 80, i + 40).toString("latin1"))}`,
      );
    }
  }
  assert.ok(checked > 100, `only ${checked} strings checked`);
  assert.ok(bytes.length > 1_000_000, "the files were read");
});

test("a crash mid-import (process killed) leaves whole bundles only", async () => {
  const dir = mkdtempSync(join(tmpdir(), "careledger-crash-import-"));
  try {
    initNetwork(dir, { orgName: "Crash Practice" });
    LookupKey.create(join(dir, LOOKUP_KEY_FILE));
    // Far more than are imported before the kill (about two and a half groups): on a starved machine the kill may come
    // several groups late, and the import must still be under way.
    const bundles = [...generatePatients({ patients: 240, seed: "crash", now: "2025-06-30" })];
    const file = join(dir, "patients.ndjson");
    writeFileSync(file, bundles.map((b) => JSON.stringify(b)).join("\n"));
    const child = join(dir, "child.ts");
    writeFileSync(child, childScript());
    const proc = spawn(process.execPath, [child, dir, file], { stdio: ["ignore", "pipe", "pipe"] });
    // Listened for from the start: a child that ended before a later listener was attached would leave it waiting.
    const closed = once(proc, "close");
    let out = "";
    let err = "";
    let first = 0;
    let killing = false;
    proc.stderr.on("data", (d) => (err += d));
    await new Promise<void>((resolve, reject) => {
      proc.stdout.on("data", (d) => {
        out += d;
        const seen = (out.match(/progress/g) ?? []).length;
        // ">=": a starved parent may read several progress lines in one chunk.
        if (seen >= 1 && first === 0) first = performance.now();
        if (seen >= 2 && !killing) {
          killing = true;
          // Groups come at a steady pace: half a group later the next one is staged and anchoring, mid-write.
          setTimeout(
            () => {
              proc.kill("SIGKILL");
              resolve();
            },
            Math.max(20, (performance.now() - first) * 0.6),
          );
        }
      });
      proc.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`child exited ${code}: ${err}`))));
    });
    await closed;
    assert.ok(!out.includes("done"), "killed before the end");

    const running = await openNode(dir, { listen: false, log: silentLogger, flags: { auditOnStart: false } });
    const org = initOrg(running.node);
    const store = openCustodianStore({
      node: running.node,
      key: running.node.key,
      custodian: org,
      vaultPath: join(dir, "vault.db"),
      vaultKeyPath: join(dir, "vault.key"),
      journalPath: join(dir, WRITE_JOURNAL_FILE),
    });
    try {
      const lookup = LookupKey.open(join(dir, LOOKUP_KEY_FILE));
      const stored = store.vault.search({ resourceType: "Patient", clauses: [] });
      assert.ok(stored.length >= 2 && stored.length < bundles.length, `${stored.length} patients stored`);
      console.log(
        `# crash test: ${stored.length} of ${bundles.length} bundles whole after the kill; vault recovery ${JSON.stringify(store.vault.recovered)}`,
      );
      let others = 0;
      let expectedOthers = 0;
      for (const bundle of bundles) {
        const patient = bundle.entry?.[0]?.resource as { identifier?: { system?: string; value?: string }[] };
        const nhs = patient.identifier?.find((i) => i.system === NHS_NUMBER_SYSTEM)?.value as string;
        const pseudonym = running.node.store.state.get(`nhs/${lookup.lookupOf(nhs)}`) as string | undefined;
        const inVault = pseudonym !== undefined && store.vault.read("Patient", pseudonym) !== undefined;
        const linked = (bundle.entry ?? []).filter((e) => {
          const r = e.resource as unknown as Record<string, unknown>;
          return r.resourceType === "Patient" || r.subject !== undefined || r.patient !== undefined;
        }).length;
        if (inVault) {
          assert.equal(store.vault.byPatient(pseudonym as string).length, linked, "a stored bundle is whole");
          expectedOthers += (bundle.entry?.length ?? 0) - linked;
        } else if (pseudonym !== undefined) {
          assert.equal(store.vault.byPatient(pseudonym).length, 0, "an unstored bundle left nothing");
        }
      }
      for (const type of ["Organization", "Practitioner"])
        others += store.vault.search({ resourceType: type, clauses: [] }).length;
      assert.equal(others, expectedOthers, "records of no patient only from whole bundles");
    } finally {
      store.close();
      await running.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  }
});

function initOrg(node: { store: { state: { get(k: string): unknown } }; key: { keyId: string } }): string {
  return (node.store.state.get(`key/${node.key.keyId}`) as { org: string }).org;
}

/** The crash test's child: imports an NDJSON file into a data dir, printing progress, until it is killed. */
function childScript(): string {
  const src = (path: string) => JSON.stringify(new URL(path, import.meta.url).pathname);
  return `
import { join } from "node:path";
import { readKeyFile } from ${src("../../node/datadir.ts")};
import { silentLogger } from ${src("../../node/logger.ts")};
import { openNode } from ${src("../../node/runtime.ts")};
import { importFiles } from ${src("./import.ts")};
import { LOOKUP_KEY_FILE, LookupKey, PATIENT_KEYS_DIR } from ${src("./patients.ts")};
import { WRITE_JOURNAL_FILE, openCustodianStore } from ${src("./write.ts")};
const [dir, file] = process.argv.slice(2);
const running = await openNode(dir, { listen: false, log: silentLogger, flags: { auditOnStart: false } });
const node = running.node;
const org = node.store.state.get("key/" + node.key.keyId).org;
const store = openCustodianStore({
  node, key: node.key, custodian: org,
  vaultPath: join(dir, "vault.db"), vaultKeyPath: join(dir, "vault.key"),
  journalPath: join(dir, WRITE_JOURNAL_FILE),
});
const ctx = { node, vault: store.vault, anchorer: store.anchorer, accessLog: { log() {}, async flush() {} },
  orgId: org, nodeKey: node.key, baseUrl: "urn:test", now: Date.now };
await importFiles(ctx, [file], {
  signer: readKeyFile(join(dir, "keys", "admin.key")),
  registry: { lookup: LookupKey.open(join(dir, LOOKUP_KEY_FILE)), keysDir: join(dir, PATIENT_KEYS_DIR) },
  groupResources: 600,
  onProgress: () => process.stdout.write("progress\\n"),
});
process.stdout.write("done\\n");
store.close();
await running.close();
`;
}
