import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { K, read } from "../../contract/state.ts";
import { newKey } from "../../node/network.ts";
import { testNhsNumber } from "../nhs-number.ts";
import {
  ensurePatient,
  ensurePatients,
  LookupKey,
  LookupKeyError,
  patientKeyPath,
  pseudonymOf,
  RegistrationError,
  readPatientKey,
} from "./patients.ts";
import { openWriteKit, type WriteKit } from "./write-kit.ts";

let kit: WriteKit;
before(async () => {
  kit = await openWriteKit();
});
after(async () => {
  await kit.close();
});

test("the lookup key file: created 0600 once, opened, refused when shared, malformed or missing", () => {
  const path = join(kit.dir, "other-lookup.key");
  const created = LookupKey.create(path);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.throws(() => LookupKey.create(path), LookupKeyError);
  const opened = LookupKey.open(path);
  const nhs = testNhsNumber(1);
  assert.equal(opened.lookupOf(nhs), created.lookupOf(nhs));
  // HMAC-SHA256 hex of the 10 digits under the file's key: any member node computes the same.
  const secret = Buffer.from(JSON.parse(readFileSync(path, "utf8")).key, "hex");
  assert.equal(opened.lookupOf(nhs), createHmac("sha256", secret).update(nhs).digest("hex"));
  assert.notEqual(kit.registry.lookup.lookupOf(nhs), opened.lookupOf(nhs), "another network's key, another lookup");
  assert.throws(() => opened.lookupOf("1234567890"), RangeError);
  chmodSync(path, 0o640);
  assert.throws(() => LookupKey.open(path), /readable by group or others/);
  const bad = join(kit.dir, "bad-lookup.key");
  writeFileSync(bad, '{"kind":"something-else","key":"00"}', { mode: 0o600 });
  assert.throws(() => LookupKey.open(bad), /malformed/);
  assert.throws(() => LookupKey.open(join(kit.dir, "none.key")), /does not exist.*copied from a member node/);
});

test("new NHS numbers are registered in one submit, with key files the patients can use", async () => {
  const numbers = [testNhsNumber(101), testNhsNumber(102), testNhsNumber(101), testNhsNumber(103)];
  const submit = kit.ctx.node.submit.bind(kit.ctx.node);
  let calls = 0;
  kit.ctx.node.submit = (items) => {
    calls++;
    return submit(items);
  };
  let results: Awaited<ReturnType<typeof ensurePatients>>;
  try {
    results = await ensurePatients(kit.ctx, numbers, kit.admin, kit.registry);
  } finally {
    kit.ctx.node.submit = submit;
  }
  assert.equal(calls, 1);
  assert.deepEqual(
    results.map((r) => r.created),
    [true, true, false, true],
  );
  assert.equal(results[0]?.patient, results[2]?.patient, "the same NHS number is one patient");
  assert.equal(new Set(results.map((r) => r.patient)).size, 3);
  const state = kit.ctx.node.store.state;
  for (const [i, r] of results.entries()) {
    const lookup = kit.registry.lookup.lookupOf(numbers[i] as string);
    assert.equal(state.get(K.nhs(lookup)), r.patient);
    const rec = read.patient(state, r.patient);
    assert.equal(rec?.org, kit.orgId);
    assert.equal(rec?.lookup, lookup);
    const file = patientKeyPath(kit.registry.keysDir, r.patient);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(readPatientKey(kit.registry.keysDir, r.patient).keyId, rec?.key, "the key file is the patient's key");
    assert.equal(pseudonymOf(kit.ctx, kit.registry.lookup, numbers[i] as string), r.patient);
  }
  // Nothing about the person on the ledger: the tx carries a pseudonym, a key and an HMAC.
  assert.ok(!JSON.stringify(read.patient(state, results[0]?.patient as string)).includes(numbers[0] as string));
  const again = await ensurePatient(kit.ctx, { nhsNumber: numbers[1] as string }, kit.admin, kit.registry);
  assert.deepEqual(again, { patient: results[1]?.patient, created: false });
});

test("a proposed pseudonym is used; concurrent requests for one NHS number register it once", async () => {
  const nhs = testNhsNumber(201);
  const proposed = crypto.randomUUID();
  const [a, b] = await Promise.all([
    ensurePatients(kit.ctx, [{ nhsNumber: nhs, patient: proposed }], kit.admin, kit.registry),
    ensurePatients(kit.ctx, [nhs], kit.admin, kit.registry),
  ]);
  assert.equal(a[0]?.patient, proposed);
  assert.equal(b[0]?.patient, proposed);
  assert.equal([a[0]?.created, b[0]?.created].filter(Boolean).length, 1);
});

test("a signer who may not register patients is refused, and no key file is left behind", async () => {
  const nurse = await kit.enrol("nurse");
  const before = existsSync(kit.registry.keysDir) ? readdirSync(kit.registry.keysDir).length : 0;
  await assert.rejects(ensurePatients(kit.ctx, [testNhsNumber(301)], nurse.key, kit.registry), (error) => {
    assert.ok(error instanceof RegistrationError);
    assert.equal(error.code, "unauthorised");
    assert.match(error.message, /admin or clinician/);
    return true;
  });
  assert.equal(readdirSync(kit.registry.keysDir).length, before);
  assert.equal(pseudonymOf(kit.ctx, kit.registry.lookup, testNhsNumber(301)), undefined);
  // A stranger's key is refused the same way.
  await assert.rejects(ensurePatients(kit.ctx, [testNhsNumber(302)], newKey(), kit.registry), RegistrationError);
});
