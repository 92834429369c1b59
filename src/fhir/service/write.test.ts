import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, test } from "node:test";
import { STATE_KEYS } from "../../contract/index.ts";
import type { CommitResult } from "../../node/ledger-node.ts";
import { ledgerAnchors } from "../../vault/anchorer.ts";
import { FileKeyProvider } from "../../vault/keys.ts";
import { Vault, type VaultResource } from "../../vault/vault.ts";
import type { Principal } from "../auth/bearer.ts";
import type { FhirRequest } from "./context.ts";
import { call, condition, type Member, observation, organization, type Patient, patientResource } from "./testkit.ts";
import { CustodianAnchorer, create, update } from "./write.ts";
import { openWriteKit, type WriteKit } from "./write-kit.ts";

let kit: WriteKit;
let clinician: Member;
let doc: Principal;
let alice: Patient;
let bob: Patient;

before(async () => {
  kit = await openWriteKit();
  clinician = await kit.enrol("clinician");
  doc = await kit.principalFor(clinician.key);
  [alice, bob] = (await kit.registerPatients(2)) as [Patient, Patient];
});
after(async () => {
  await kit.close();
});

function req(principal: Principal, params: FhirRequest["params"], body: unknown, ifMatch?: number): FhirRequest {
  return { principal, params, query: new URLSearchParams(), body, ...(ifMatch === undefined ? {} : { ifMatch }) };
}

function bodyOf(r: VaultResource): VaultResource {
  const { id: _id, ...rest } = r;
  return rest as VaultResource;
}

test("create: a clinician's record is anchored before the 201, with Location, ETag and a server id", async () => {
  const sent = { ...bodyOf(observation(alice)), id: "client-chosen" };
  const res = await call(create, kit.ctx, req(doc, { type: "Observation" }, sent));
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const id = res.body.id as string;
  assert.notEqual(id, "client-chosen");
  assert.match(id, /^[0-9a-f-]{36}$/);
  assert.equal(res.headers?.etag, 'W/"1"');
  assert.equal(res.headers?.location, `${kit.ctx.baseUrl}/Observation/${id}/_history/1`);
  assert.ok(res.headers?.["last-modified"]);
  // Acknowledged means anchored: the commitment is on the ledger now, and the record reads back.
  const anchor = kit.ctx.node.store.state.get(STATE_KEYS.anchor(kit.orgId, "Observation", id, "1"));
  assert.ok(anchor);
  assert.equal(kit.vault.read("Observation", id)?.patient, alice.patient);
});

test("create refuses bad input: invalid resources, wrong types, unknown patients; and patients cannot write", async () => {
  const noStatus = bodyOf(observation(alice));
  delete noStatus.status;
  let res = await call(create, kit.ctx, req(doc, { type: "Observation" }, noStatus));
  assert.equal(res.status, 400);
  assert.deepEqual(res.body.issue[0].expression, ["Observation.status"]);
  res = await call(create, kit.ctx, req(doc, { type: "Observation" }, { ...noStatus, status: 7 }));
  assert.equal(res.status, 400);
  res = await call(create, kit.ctx, req(doc, { type: "Observation" }, bodyOf(condition(alice))));
  assert.equal(res.status, 400);
  assert.match(res.body.issue[0].diagnostics, /as in the URL/);
  res = await call(create, kit.ctx, req(doc, { type: "Observation" }, { ...bodyOf(observation(alice)), wrong: 1 }));
  assert.equal(res.status, 400);
  res = await call(create, kit.ctx, req(doc, { type: "Observation" }, bodyOf(observation(crypto.randomUUID()))));
  assert.equal(res.status, 422, "a patient the ledger does not know");
  res = await call(create, kit.ctx, req(doc, { type: "Observation" }, bodyOf(observation("not-a-pseudonym"))));
  assert.equal(res.status, 422);
  const urn = { ...bodyOf(observation(alice)), subject: { reference: `urn:uuid:${crypto.randomUUID()}` } };
  res = await call(create, kit.ctx, req(doc, { type: "Observation" }, urn));
  assert.equal(res.status, 400);
  res = await call(create, kit.ctx, req(doc, { type: "AuditEvent" }, { resourceType: "AuditEvent" }));
  assert.equal(res.status, 405);
  const own = await kit.principalFor(alice.key);
  const before = kit.vault.byPatient(alice.patient).length;
  res = await call(create, kit.ctx, req(own, { type: "Observation" }, bodyOf(observation(alice))));
  assert.equal(res.status, 403, "a patient's scopes have no create");
  assert.equal(kit.vault.byPatient(alice.patient).length, before);
});

test("create is refused when consent denies write (403: the caller named the patient)", async () => {
  const carol = await kit.registerPatient();
  await kit.setConsent(carol, {
    effect: "deny",
    grantee: { kind: "member", id: clinician.member },
    purposes: ["TREAT"],
    actions: ["write"],
  });
  const res = await call(create, kit.ctx, req(doc, { type: "Observation" }, bodyOf(observation(carol))));
  assert.equal(res.status, 403);
  assert.equal(kit.vault.byPatient(carol.patient).length, 0);
});

test("update: If-Match checked (412), missing and hidden targets answer alike (405), records cannot move", async () => {
  const created = await call(create, kit.ctx, req(doc, { type: "Observation" }, bodyOf(observation(alice))));
  const id = created.body.id as string;
  const next = { ...observation(alice, { id }), status: "amended" };
  let res = await call(update, kit.ctx, req(doc, { type: "Observation", id }, next, 1));
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.headers?.etag, 'W/"2"');
  assert.equal(kit.vault.read("Observation", id)?.resource.status, "amended");
  res = await call(update, kit.ctx, req(doc, { type: "Observation", id }, next, 1));
  assert.equal(res.status, 412, "version 1 is no longer current");
  res = await call(update, kit.ctx, req(doc, { type: "Observation", id }, { ...next, id: "other" }));
  assert.equal(res.status, 400);
  res = await call(update, kit.ctx, req(doc, { type: "Observation", id }, observation(bob, { id })));
  assert.equal(res.status, 409, "an update cannot hand a record to another patient");

  const missing = await call(
    update,
    kit.ctx,
    req(doc, { type: "Observation", id: "nope" }, observation(alice, { id: "nope" })),
  );
  assert.equal(missing.status, 405);
  // A record the caller may not see: the same answer as a missing one (only the id it sent differs).
  const dave = await kit.registerPatient();
  const nurse = await kit.enrol("clinician");
  const hidden = await call(create, kit.ctx, req(doc, { type: "Observation" }, bodyOf(observation(dave))));
  await kit.setConsent(dave, {
    effect: "deny",
    grantee: { kind: "member", id: nurse.member },
    purposes: ["TREAT"],
    actions: ["read", "write"],
  });
  const other = await kit.principalFor(nurse.key);
  const hid = hidden.body.id as string;
  const refused = await call(
    update,
    kit.ctx,
    req(other, { type: "Observation", id: hid }, observation(dave, { id: hid })),
  );
  assert.equal(refused.status, missing.status);
  assert.deepEqual(
    JSON.parse(JSON.stringify(refused.body).replaceAll(hid, "X")),
    JSON.parse(JSON.stringify(missing.body).replaceAll("nope", "X")),
  );
  assert.equal(kit.vault.read("Observation", hid)?.version, 1);
});

test("update refused by consent where the caller can read the record: 403", async () => {
  const erin = await kit.registerPatient();
  const writer = await kit.enrol("clinician");
  const made = await call(create, kit.ctx, req(doc, { type: "Observation" }, bodyOf(observation(erin))));
  await kit.setConsent(erin, {
    effect: "deny",
    grantee: { kind: "member", id: writer.member },
    purposes: ["TREAT"],
    actions: ["write"],
  });
  const p = await kit.principalFor(writer.key);
  const id = made.body.id as string;
  const res = await call(update, kit.ctx, req(p, { type: "Observation", id }, observation(erin, { id })));
  assert.equal(res.status, 403);
});

test("concurrent updates of one version: one wins, the other is refused (409 pending or 412)", async () => {
  const made = await call(create, kit.ctx, req(doc, { type: "Observation" }, bodyOf(observation(alice))));
  const id = made.body.id as string;
  const a = { ...observation(alice, { id }), status: "amended" };
  const b = { ...observation(alice, { id }), status: "corrected" };
  const results = await Promise.all([
    call(update, kit.ctx, req(doc, { type: "Observation", id }, a, 1)),
    call(update, kit.ctx, req(doc, { type: "Observation", id }, b, 1)),
  ]);
  const statuses = results.map((r) => r.status).sort();
  assert.equal(statuses[0], 200);
  assert.ok(statuses[1] === 409 || statuses[1] === 412, `got ${statuses}`);
  assert.equal(kit.vault.read("Observation", id)?.version, 2);
});

test("PUT Patient/<pseudonym> creates this custodian's Patient for a registered patient; other ids are refused", async () => {
  let res = await call(update, kit.ctx, req(doc, { type: "Patient", id: alice.patient }, patientResource(alice)));
  assert.equal(res.status, 201, JSON.stringify(res.body));
  res = await call(
    update,
    kit.ctx,
    req(doc, { type: "Patient", id: alice.patient }, patientResource(alice, { gender: "female" })),
  );
  assert.equal(res.status, 200);
  const stranger = crypto.randomUUID();
  res = await call(update, kit.ctx, req(doc, { type: "Patient", id: stranger }, patientResource(stranger)));
  assert.equal(res.status, 405);
  res = await call(create, kit.ctx, req(doc, { type: "Patient" }, bodyOf(patientResource(bob))));
  assert.equal(res.status, 422, "no lookup key: a POSTed Patient cannot be matched to its registration");
});

test("records of no patient are anchored on the ledger: read back after a restart by a ledger-only vault", async () => {
  const res = await call(create, kit.ctx, req(doc, { type: "Organization" }, bodyOf(organization())));
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const id = res.body.id as string;
  const anchor = kit.ctx.node.store.state.get(STATE_KEYS.anchor(kit.orgId, "Organization", id, "1")) as
    | { commitment: string }
    | undefined;
  assert.ok(anchor?.commitment, "the version's commitment is on the ledger");
  // No patient is named on the ledger for it, and no patient lists this custodian because of it.
  kit.reopenVault();
  assert.equal(kit.vault.read("Organization", id)?.resource.name, "Kit Surgery");
  const strict = Vault.open(`${kit.dir}/vault.db`, {
    keys: FileKeyProvider.openOrCreate(`${kit.dir}/vault.key`),
    ...ledgerAnchors(kit.ctx.node.store.state, kit.orgId),
  });
  try {
    assert.equal(strict.read("Organization", id)?.resource.name, "Kit Surgery");
  } finally {
    strict.close();
  }
});

test("a journal in the layout before 2026-11-27 is carried over: an incomplete write's versions stay unanchored", () => {
  const dir = mkdtempSync(join(tmpdir(), "careledger-journal-"));
  const path = join(dir, "write-journal.db");
  const [incomplete, complete, unknown] = [0, 1, 2].map(() => randomBytes(32).toString("hex")) as [
    string,
    string,
    string,
  ];
  const old = new DatabaseSync(path);
  old.exec(`
    CREATE TABLE journal_groups (grp INTEGER PRIMARY KEY, at INTEGER NOT NULL, complete INTEGER NOT NULL);
    CREATE TABLE journal (commitment TEXT PRIMARY KEY, grp INTEGER NOT NULL) WITHOUT ROWID;
    CREATE INDEX journal_by_group ON journal (grp);
    INSERT INTO journal_groups VALUES (1, ${Date.now()}, 0), (2, ${Date.now()}, 1);
    INSERT INTO journal VALUES ('${incomplete}', 1), ('${complete}', 2);
  `);
  old.close();
  const anchorer = new CustodianAnchorer({
    node: { submit: async () => [] },
    key: kit.nodeKey,
    custodian: kit.orgId,
    path,
  });
  try {
    // A ledger on which every version is anchored with whatever commitment is asked about: only the journal decides.
    const asked = { commitment: "" };
    const { isAnchored } = anchorer.vaultAnchors({ get: () => ({ commitment: asked.commitment }) });
    const anchored = (commitment: string) => {
      asked.commitment = commitment;
      return isAnchored("Observation", "o1", "1", commitment);
    };
    assert.equal(anchored(incomplete), false, "a write that never completed");
    assert.equal(anchored(complete), true);
    assert.equal(anchored(unknown), true, "not journalled: the ledger decides");
  } finally {
    anchorer.close();
  }
  const db = new DatabaseSync(path);
  const tables = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").all();
  assert.deepEqual(
    tables.map((t) => t.name),
    ["journal_entries", "journal_groups"],
  );
  assert.equal((db.prepare("SELECT count(*) AS n FROM journal_entries").get() as { n: number }).n, 2);
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

test("crash between two anchor txs of one write: the journal makes recovery drop the whole write", async () => {
  // An anchorer that commits the first record.anchor tx of a write and never the rest (the process dies).
  const node = kit.ctx.node;
  let passed = 0;
  const stalling = {
    submit: async (items: Parameters<typeof node.submit>[0]) => {
      const answers: Promise<CommitResult>[] = [];
      for (const item of items) {
        if (passed++ === 0) answers.push(...(await node.submit([item])));
        else answers.push(new Promise<CommitResult>(() => {}));
      }
      return answers;
    },
  };
  kit.vault.close();
  kit.custodian.close();
  const crashing = new CustodianAnchorer({
    node: stalling,
    key: kit.nodeKey,
    custodian: kit.orgId,
    path: `${kit.dir}/write-journal.db`,
    maxEntriesPerTx: 2,
  });
  const vault = Vault.open(`${kit.dir}/vault.db`, {
    keys: FileKeyProvider.openOrCreate(`${kit.dir}/vault.key`),
    ...crashing.vaultAnchors(node.store.state),
  });
  const items = [1, 2, 3, 4, 5].map((i) => ({
    resource: observation(alice, { id: `crash-${i}` }),
    patient: alice.patient,
    labels: [],
    index: [],
  }));
  const staged = vault.stage(items);
  void crashing.anchor(staged.anchors).catch(() => {});
  const state = node.store.state;
  for (
    let t = 0;
    t < 200 && state.get(STATE_KEYS.anchor(kit.orgId, "Observation", "crash-1", "1")) === undefined;
    t++
  ) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.ok(state.get(STATE_KEYS.anchor(kit.orgId, "Observation", "crash-1", "1")), "the first tx committed");
  assert.equal(state.get(STATE_KEYS.anchor(kit.orgId, "Observation", "crash-3", "1")), undefined);
  // The crash: nothing confirmed, nothing aborted. Per version, recovery would keep crash-1 and crash-2.
  const perVersion = ledgerAnchors(state, kit.orgId);
  assert.equal(
    items.filter((it) =>
      perVersion.isAnchored(
        "Observation",
        it.resource.id as string,
        "1",
        staged.anchors[items.indexOf(it)]?.commitment as string,
      ),
    ).length,
    2,
  );
  vault.close();
  crashing.close();
  const reopened = kit.reopenVault();
  assert.deepEqual(reopened.recovered, { confirmed: 0, removed: 5 });
  for (const it of items) assert.equal(reopened.read("Observation", it.resource.id as string), undefined);
});
