// The access log as AuditEvents: reads and denials reach the ledger and the index, each caller sees only what they
// may, the mapping is a valid R4 AuditEvent, and the index catches up and rebuilds from the ledger.

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, it } from "node:test";
import { BlockReader, type BlockRowData } from "../../store/block-reader.ts";
import { packTxs, txsText } from "../../store/block-txs.ts";
import type { Principal } from "../auth/bearer.ts";
import { OperationOutcomeError } from "../outcome.ts";
import { validateResource } from "../validate.ts";
import { AUDIT_INDEX_THREAD, AuditIndex, auditEventSearch, auditEventSearchWith, auditEventsFor } from "./audit.ts";
import { AuditIntegrityError, AuditWriter, type BlockSource, indexedHeightOf, openAuditDb } from "./audit-writer.ts";
import { read } from "./read.ts";
import {
  call,
  type Member,
  observation,
  openServiceKit,
  type Patient,
  patientResource,
  putRecords,
  request,
  type ServiceKit,
} from "./testkit.ts";

let kit: ServiceKit;
let alice: Patient;
let bob: Patient;
let doc: Member;
const seenIds: string[] = [];
let hiddenId: string;

before(async () => {
  kit = await openServiceKit();
  [alice, bob] = (await kit.registerPatients(2)) as [Patient, Patient];
  const seen = [observation(alice), observation(alice)];
  const hidden = observation(alice, { labels: ["HIV"] });
  seenIds.push(...seen.map((o) => o.id as string));
  hiddenId = hidden.id as string;
  await putRecords(kit, [patientResource(alice), patientResource(bob), ...seen, hidden, observation(bob)]);
  doc = await kit.enrol("clinician");
  const p = await kit.principalFor(doc.key);
  for (const id of [...seenIds, hiddenId]) await call(read, kit.ctx, request(p, { type: "Observation", id }));
  await kit.accessLog.flush();
});
after(async () => {
  await kit?.close();
});

/** The admin's principal as the token endpoint grants it (its ceiling includes `user/AuditEvent.rs`). */
async function adminWithAuditScope(): Promise<Principal> {
  const p = await kit.principalFor(kit.admin);
  assert.ok(
    p.scopes.some((s) => s.resourceType === "AuditEvent"),
    "admins are granted user/AuditEvent.rs",
  );
  return p;
}

/** Commits `blocks` blocks of one access log each: the clinician reads the two seen observations in turn. */
async function accessLogBlocks(blocks: number): Promise<void> {
  const p = await kit.principalFor(doc.key);
  for (let i = 0; i < blocks; i++) {
    await call(read, kit.ctx, request(p, { type: "Observation", id: seenIds[i % 2] as string }));
    await kit.accessLog.flush();
  }
}

describe("AuditEvent", () => {
  it("the patient sees every read and denial of their record, as valid R4 AuditEvents", async () => {
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const r = await call(auditEventSearch, kit.ctx, request(me, { type: "AuditEvent" }));
    assert.equal(r.status, 200);
    const events = r.body.entry.map((e: { resource: unknown }) => e.resource);
    const byDoc = events.filter(
      (e: { agent: { who: { identifier: { value: string } } }[] }) =>
        e.agent[0]?.who.identifier.value === doc.key.keyId,
    );
    assert.equal(byDoc.length, 3);
    for (const e of events) validateResource(e, { types: new Set(["AuditEvent"]) });
    const of = (id: string) =>
      byDoc.find(
        (e: { entity: { what: { reference: string } }[] }) => e.entity[0]?.what.reference === `Observation/${id}`,
      );
    const permitted = of(seenIds[0] as string);
    assert.equal(permitted.outcome, "0");
    assert.equal(permitted.action, "R");
    assert.equal(permitted.type.code, "rest");
    assert.equal(permitted.subtype[0].code, "read");
    assert.equal(permitted.purposeOfEvent[0].coding[0].code, "TREAT");
    assert.match(permitted.outcomeDesc, /permit by step 7 \(default:custodian-treat\)/);
    assert.equal(permitted.agent[0].altId, doc.member);
    assert.equal(permitted.agent[1].who.identifier.value, kit.orgId);
    assert.equal(permitted.source.observer.identifier.value, kit.orgId);
    assert.equal(permitted.entity[1].what.reference, `Patient/${alice.patient}`);
    assert.ok(Date.parse(permitted.recorded) > 0);
    const denied = of(hiddenId);
    assert.equal(denied.outcome, "4");
    assert.match(denied.outcomeDesc, /deny by step 5 \(deny:sensitive-label\)/);
    // The patient's own reads are logged too (under PATRQT), after a flush.
    await kit.accessLog.flush();
    const again = await call(auditEventSearch, kit.ctx, request(me, { type: "AuditEvent" }, { _count: "100" }));
    assert.ok(again.body.total >= r.body.total);
  });

  it("pages newest first with total and links", async () => {
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const all = await call(auditEventSearch, kit.ctx, request(me, {}, { _count: "1000" }));
    const first = await call(auditEventSearch, kit.ctx, request(me, {}, { _count: "2" }));
    const second = await call(auditEventSearch, kit.ctx, request(me, {}, { _count: "2", _offset: "2" }));
    assert.equal(first.body.total, all.body.total);
    const idsOf = (b: { entry: { resource: { id: string } }[] }) => b.entry.map((e) => e.resource.id);
    assert.deepEqual([...idsOf(first.body), ...idsOf(second.body)], idsOf(all.body).slice(0, 4));
    const heights = idsOf(all.body).map((id: string) => Number(id.split("-")[0]));
    assert.deepEqual(
      heights,
      [...heights].sort((a, b) => b - a),
    );
    assert.ok(first.body.link.some((l: { relation: string }) => l.relation === "next"));
  });

  it("nobody else sees a patient's log, except this custodian's admin", async () => {
    const other = await kit.principalFor(bob.key, { patient: bob.patient });
    const r = await call(auditEventSearch, kit.ctx, request(other, {}, { patient: alice.patient }));
    assert.equal(r.body.total, 0);
    const clinician = await kit.principalFor(doc.key);
    assert.equal(
      (await call(auditEventSearch, kit.ctx, request(clinician, {}, { patient: alice.patient }))).status,
      403,
    );
    const view = await kit.appointProxy(alice, { scope: "view", labels: ["N"] });
    const viewP = await kit.principalFor(view.key, { patient: alice.patient });
    assert.equal((await call(auditEventSearch, kit.ctx, request(viewP, {}))).status, 403);
    const manage = await kit.appointProxy(alice, { scope: "manage", labels: ["N"] });
    const manageP = await kit.principalFor(manage.key, { patient: alice.patient });
    const m = await call(auditEventSearch, kit.ctx, request(manageP, {}));
    assert.equal(m.status, 200);
    assert.ok(m.body.total >= 3);
    // The admin: their org's entries (user/AuditEvent.rs); without that scope, 403.
    const narrow = await kit.principalFor(kit.admin);
    const withoutAudit = { ...narrow, scopes: narrow.scopes.filter((s) => s.resourceType !== "AuditEvent") };
    assert.equal((await call(auditEventSearch, kit.ctx, request(withoutAudit, {}))).status, 403);
    const admin = await adminWithAuditScope();
    const a = await call(auditEventSearch, kit.ctx, request(admin, {}, { patient: `Patient/${alice.patient}` }));
    assert.equal(a.status, 200);
    assert.ok(a.body.total >= 3);
    assert.equal((await call(auditEventSearch, kit.ctx, request(admin, {}, { patient: "x y" }))).status, 400);
    assert.equal((await call(auditEventSearch, kit.ctx, request(admin, {}, { date: "2020" }))).status, 400);
  });

  it("catches up from the ledger at open, and rebuilds a lost index to the same content", async () => {
    const path = join(kit.dir, "audit-2.db");
    const second = AuditIndex.open(path, kit.running.node);
    await second.ready();
    const count = () => second.byPatient(alice.patient, { offset: 0, count: 1000 }).total;
    const before = count();
    await kit.audit.ready();
    assert.equal(before, kit.audit.byPatient(alice.patient, { offset: 0, count: 1000 }).total);
    await second.close();
    // Reads while the second index is closed: it catches up when reopened.
    const p = await kit.principalFor(doc.key);
    await call(read, kit.ctx, request(p, { type: "Observation", id: seenIds[1] as string }));
    await kit.accessLog.flush();
    const reopened = AuditIndex.open(path, kit.running.node);
    await reopened.ready();
    assert.equal(reopened.byPatient(alice.patient, { offset: 0, count: 1000 }).total, before + 1);
    const handler = auditEventSearchWith(reopened);
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    assert.equal((await call(handler, kit.ctx, request(me, {}))).body.total, before + 1);
    await reopened.close();
    for (const s of ["", "-wal", "-shm"]) rmSync(`${path}${s}`, { force: true });
    const rebuilt = AuditIndex.open(path, kit.running.node);
    await rebuilt.ready();
    assert.equal(rebuilt.byPatient(alice.patient, { offset: 0, count: 1000 }).total, before + 1);
    assert.equal(rebuilt.height, kit.running.node.height);
    await rebuilt.close();
    // The kit's index followed live blocks all along.
    await kit.audit.ready();
    assert.equal(auditEventsFor(kit.ctx, kit.audit, alice.patient).length, before + 1);
  });

  it("rebuilds an index file of an older schema at open, and a writer refuses it", async () => {
    const path = join(kit.dir, "audit-v2.db");
    const old = new DatabaseSync(path);
    old.exec(`
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
      INSERT INTO meta (key, value) VALUES ('schema', '2'), ('height', '1');
      CREATE TABLE entries (
        block INTEGER NOT NULL, pos INTEGER NOT NULL, n INTEGER NOT NULL,
        patient TEXT NOT NULL, custodian TEXT NOT NULL, time INTEGER NOT NULL, tx TEXT NOT NULL, entry TEXT NOT NULL,
        PRIMARY KEY (block, pos, n)
      ) WITHOUT ROWID;
      CREATE INDEX entries_custodian ON entries (custodian, patient, block, pos, n);
    `);
    old.close();
    assert.throws(() => openAuditDb(path, false), /unsupported audit index schema/);
    const index = AuditIndex.open(path, kit.running.node);
    try {
      await index.ready();
      await kit.audit.ready();
      const all = { offset: 0, count: 1000 };
      assert.equal(index.byPatient(alice.patient, all).total, kit.audit.byPatient(alice.patient, all).total);
      const db = new DatabaseSync(path, { readOnly: true });
      try {
        const sql = db.prepare("SELECT sql FROM sqlite_master WHERE name = 'entries_custodian'").get() as {
          sql: string;
        };
        assert.match(sql.sql, /\(custodian, block, pos, n\)/);
      } finally {
        db.close();
      }
    } finally {
      await index.close();
    }
  });

  it("checks blocks in budgeted slices (each at least one block) and writes their rows in few transactions, to the same entries as in full", async () => {
    await accessLogBlocks(12);
    const reader = BlockReader.open(kit.running.node.store.path);
    const sliced = new AuditWriter(openAuditDb(join(kit.dir, "audit-slices.db"), false));
    const bounded = new AuditWriter(openAuditDb(join(kit.dir, "audit-bounded.db"), false), { writeRows: 5 });
    const full = new AuditWriter(openAuditDb(join(kit.dir, "audit-full.db"), false));
    const head = kit.running.node.height;
    try {
      let slices = 1;
      while (!sliced.catchUp(reader, 0)) {
        slices++;
        // Checked, not yet written: one transaction at the head, however many slices it took to get there.
        assert.equal(sliced.indexed, 0, "nothing written before the head");
      }
      assert.equal(slices, head, "a budget of 0 ms checks one block per call");
      // A bound on the rows waiting: written as soon as it is reached, each time after a whole block.
      const heights: number[] = [];
      while (!bounded.catchUp(reader, 0)) heights.push(bounded.indexed);
      const distinct = [...new Set(heights.filter((h) => h > 0))];
      assert.ok(distinct.length >= 2, `written at heights ${distinct.join(", ")}`);
      assert.equal(full.catchUp(reader), true);
      assert.equal(sliced.indexed, head);
      assert.equal(bounded.indexed, head);
      assert.equal(full.indexed, head);
      const rows = (file: string) => {
        const db = openAuditDb(join(kit.dir, file), false);
        try {
          return db.prepare("SELECT * FROM entries ORDER BY block, pos, n").all();
        } finally {
          db.close();
        }
      };
      const entries = rows("audit-slices.db");
      assert.ok(entries.length >= 12, `${entries.length} entries`);
      assert.deepEqual(entries, rows("audit-full.db"));
      assert.deepEqual(rows("audit-bounded.db"), entries);
      // The bounded writer wrote at most a block's rows more than its bound each time.
      const perHeight = (height: number) => entries.filter((e) => (e as { block: number }).block <= height).length;
      let before = 0;
      for (const h of distinct) {
        assert.ok(perHeight(h) - before >= 5, `${perHeight(h) - before} rows written at height ${h}`);
        before = perHeight(h);
      }
    } finally {
      sliced.close();
      bounded.close();
      full.close();
      reader.close();
    }
  });

  it("following without committing: a lost tail drops the open rows above it, and close commits what was checked", async () => {
    // Two blocks of access logs: the last one is lost, the one before it stays.
    await accessLogBlocks(2);
    const reader = BlockReader.open(kit.running.node.store.path);
    const path = join(kit.dir, "audit-follow-tail.db");
    const head = reader.latestHeight();
    assert.ok(reader.blockRow(head)?.txs.includes('"type":"access.log"'), "the last block holds an access log");
    const committed = () => {
      const db = openAuditDb(path, false);
      try {
        return {
          height: indexedHeightOf(db),
          entries: (db.prepare("SELECT count(*) AS n FROM entries").get() as { n: number }).n,
          maxBlock: (db.prepare("SELECT max(block) AS b FROM entries").get() as { b: number | null }).b ?? 0,
        };
      } finally {
        db.close();
      }
    };
    try {
      const follower = new AuditWriter(openAuditDb(path, false));
      assert.equal(follower.catchUp(reader, Number.POSITIVE_INFINITY, head, { commit: false }), true);
      assert.equal(follower.indexed, 0, "checked to the head, nothing committed");
      // The ledger loses its last block while the rows are open: they are dropped, and what is left is indexed.
      const shortened: BlockSource = { latestHeight: () => head - 1, blockRow: (h) => reader.blockRow(h) };
      follower.catchUp(shortened, Number.POSITIVE_INFINITY, head - 1, { commit: false });
      follower.close();
      const after = committed();
      assert.equal(after.height, head - 1, "close committed what was checked");
      assert.ok(after.entries > 0);
      assert.ok(after.maxBlock <= head - 1, `an entry of block ${after.maxBlock} survived the lost tail`);
    } finally {
      reader.close();
    }
  });

  it("forgets a lost ledger tail, and starts again when the indexed block is no longer the ledger's", async () => {
    const reader = BlockReader.open(kit.running.node.store.path);
    const path = join(kit.dir, "audit-tail.db");
    const head = reader.latestHeight();
    const entriesAbove = (height: number) => {
      const db = openAuditDb(path, false);
      try {
        return (db.prepare("SELECT count(*) AS n FROM entries WHERE block > ?").get(height) as { n: number }).n;
      } finally {
        db.close();
      }
    };
    try {
      const first = new AuditWriter(openAuditDb(path, false));
      first.catchUp(reader);
      first.close();
      assert.equal(first.indexed, head);
      // Find a height below which an access log sits above: after losing the tail, none of it may be listed.
      let lostFrom = head;
      while (entriesAbove(lostFrom - 1) === 0) lostFrom--;
      const shortened: BlockSource = { latestHeight: () => lostFrom - 1, blockRow: (h) => reader.blockRow(h) };
      const second = new AuditWriter(openAuditDb(path, false));
      second.catchUp(shortened);
      assert.equal(second.indexed, lostFrom - 1);
      assert.equal(entriesAbove(lostFrom - 1), 0);
      second.close();
      // A whole index whose last block is no longer the ledger's (the tail was committed again differently while
      // the index was closed): it starts again from block 1.
      const whole = new AuditWriter(openAuditDb(path, false));
      whole.catchUp(reader);
      whole.close();
      const reads: number[] = [];
      let replaced = false;
      const recommitted: BlockSource = {
        latestHeight: () => reader.latestHeight(),
        blockRow: (h) => {
          reads.push(h);
          const row = reader.blockRow(h);
          if (h !== head || replaced || !row) return row;
          replaced = true;
          return { ...row, hash: "f".repeat(64) };
        },
      };
      const third = new AuditWriter(openAuditDb(path, false));
      third.catchUp(recommitted);
      third.close();
      assert.ok(reads.includes(1), "indexed again from block 1");
      assert.equal(third.indexed, head);
    } finally {
      reader.close();
    }
  });

  it("stops at an altered block, indexing nothing of it, and says which", async () => {
    // Two blocks of access logs: the first is altered, the second follows it.
    await accessLogBlocks(2);
    const reader = BlockReader.open(kit.running.node.store.path);
    const alterAt = reader.latestHeight() - 1;
    assert.ok(reader.blockRow(alterAt)?.txs.includes('"type":"access.log"'));
    const tamper = (change: (row: BlockRowData) => BlockRowData): BlockSource => ({
      latestHeight: () => reader.latestHeight(),
      blockRow: (h) => {
        const row = reader.blockRow(h);
        return row && h === alterAt ? change(row) : row;
      },
    });
    const cases: [string, (row: BlockRowData) => BlockRowData, RegExp][] = [
      [
        "a tx changed",
        (row) => ({ ...row, txs: row.txs.replace(/"type":"access\.log"/, '"type":"access.logs"') }),
        /is not the id of its tx/,
      ],
      ["the stored hash changed", (row) => ({ ...row, hash: "0".repeat(64) }), /does not match its stored hash/],
      // Whole and self-consistent, but not the block that follows the one before it.
      ["another block in its place", () => reader.blockRow(alterAt + 1) as BlockRowData, /does not link/],
    ];
    try {
      for (const [i, [name, change, reason]] of cases.entries()) {
        const writer = new AuditWriter(openAuditDb(join(kit.dir, `audit-tampered-${i}.db`), false));
        try {
          assert.throws(
            () => writer.catchUp(tamper(change)),
            (error: unknown) =>
              error instanceof AuditIntegrityError && error.height === alterAt && reason.test(error.message),
            name,
          );
          assert.equal(writer.indexed < alterAt, true, `${name}: indexed to ${writer.indexed}`);
        } finally {
          writer.close();
        }
      }
    } finally {
      reader.close();
    }
  });

  it("an indexer that cannot start fails its queries with why, and still closes", { timeout: 20_000 }, async () => {
    const node = kit.running.node;
    const missing = { height: node.height, store: { path: join(kit.dir, "no-such-ledger.db") }, readBlock: () => {} };
    const broken = AuditIndex.open(join(kit.dir, "audit-broken.db"), missing);
    await assert.rejects(broken.ready(), /the audit index stopped: cannot read ledger store .*no-such-ledger\.db/);
    assert.throws(() => broken.byPatient(alice.patient, { offset: 0, count: 10 }), /the audit index stopped/);
    // Closed after its thread has ended (it does within milliseconds of the error): nothing is left to say "exit".
    await new Promise((resolve) => setTimeout(resolve, 500));
    await broken.close();
  });

  it("the indexer thread runs at the lowest CPU priority: SCHED_IDLE, nice 19", {
    skip: process.platform !== "linux" || !existsSync("/usr/bin/chrt") ? "Linux with util-linux's chrt" : false,
  }, async () => {
    const idle = AuditIndex.open(join(kit.dir, "audit-idle.db"), kit.running.node);
    try {
      await idle.ready();
      const schedulingOf = () =>
        readdirSync("/proc/self/task")
          .filter((tid) => readFileSync(`/proc/self/task/${tid}/comm`, "utf8").trim() === AUDIT_INDEX_THREAD)
          .map((tid) => {
            // After the command name: field 3 (state) comes first; nice is field 19, policy field 41.
            const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
            const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
            return { nice: Number(fields[19 - 3]), policy: Number(fields[41 - 3]) };
          });
      const SCHED_IDLE = 5;
      // This test's index and the kit's own: each has a thread of its own, and each lowers itself as it starts.
      for (let waited = 0; waited < 10_000; waited += 50) {
        if (schedulingOf().every((s) => s.policy === SCHED_IDLE)) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const threads = schedulingOf();
      assert.ok(threads.length >= 1, "an audit-index thread is running");
      for (const s of threads) assert.deepEqual(s, { nice: 19, policy: SCHED_IDLE });
    } finally {
      await idle.close();
    }
  });

  it("under blocks that never pause, the indexer still indexes once the backlog is maxLagMs old", async () => {
    // Looking once a second while a block comes every few ms: the node is never quiet (a look sees a new block), and
    // nobody queries. Without the lag bound the index would wait for a pause and stay where it started. (Polling
    // every 200 ms, a slow registration now and then let a look find the node quiet, and the test passed without it.)
    const busy = AuditIndex.open(join(kit.dir, "audit-busy.db"), kit.running.node, { pollMs: 1000, maxLagMs: 400 });
    try {
      await busy.ready();
      const start = busy.height;
      const deadline = performance.now() + 15_000;
      let seen = start;
      while (performance.now() < deadline && seen <= start + 1) {
        await kit.registerPatients(1);
        seen = busy.height;
      }
      assert.ok(seen > start + 1, `indexed to ${seen} while blocks kept coming (from ${start})`);
      assert.ok(seen <= kit.running.node.height);
    } finally {
      await busy.close();
    }
  });

  it("under blocks that never pause, the indexer follows them and commits every writeRows rows, long before maxLagMs", async () => {
    // A look a second while blocks of access logs come every few ms: every look finds the node busy, and the backlog
    // never gets 60 s old. Only following the node, a slice a look, commits anything within the deadline.
    const follower = AuditIndex.open(join(kit.dir, "audit-follow.db"), kit.running.node, {
      pollMs: 1000,
      maxLagMs: 60_000,
      writeRows: 3,
    });
    try {
      await follower.ready();
      const start = follower.height;
      const p = await kit.principalFor(doc.key);
      const deadline = performance.now() + 15_000;
      let seen = start;
      while (performance.now() < deadline && seen <= start + 3) {
        await call(read, kit.ctx, request(p, { type: "Observation", id: seenIds[0] as string }));
        await kit.accessLog.flush();
        seen = follower.height;
      }
      assert.ok(seen > start + 3, `committed to ${seen} while blocks kept coming (from ${start})`);
      assert.ok(seen <= kit.running.node.height);
    } finally {
      await follower.close();
    }
  });

  it("a query wakes the indexer, and answers 503 when it cannot get there in time", async () => {
    // Polling once a minute: after its first catch-up the worker looks again only when a query asks (or, on a busy
    // machine, when its first catch-up was still running as the new blocks came). Without the wake, ready() would
    // wait out its deadline here and reject.
    const lagging = AuditIndex.open(join(kit.dir, "audit-lagging.db"), kit.running.node, {
      pollMs: 60_000,
      queryWaitMs: 20_000,
    });
    await lagging.ready();
    await accessLogBlocks(10);
    await Promise.all([lagging.ready(), lagging.ready()]);
    assert.equal(lagging.height, kit.running.node.height);
    const page = { offset: 0, count: 1000 };
    await kit.audit.ready();
    assert.deepEqual(lagging.byPatient(alice.patient, page), kit.audit.byPatient(alice.patient, page));
    await lagging.close();
    await assert.rejects(lagging.ready(), /closed/);
    assert.throws(() => lagging.byPatient(alice.patient, page), /closed/);

    // A node that claims blocks its ledger file does not have: the index never gets there.
    const node = kit.running.node;
    const ahead = { height: node.height + 5, store: node.store, readBlock: (h: number) => node.readBlock(h) };
    const stuck = AuditIndex.open(join(kit.dir, "audit-stuck.db"), ahead, { queryWaitMs: 300 });
    try {
      await assert.rejects(
        stuck.ready(),
        (error: unknown) =>
          error instanceof OperationOutcomeError && error.status === 503 && /catching up/.test(error.message),
      );
      // Meanwhile it indexes what there is (at the lowest priority it may take a while on a busy machine).
      for (let waited = 0; stuck.height < node.height && waited < 20_000; waited += 50) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(stuck.height, node.height, "it indexed what there is");
    } finally {
      await stuck.close();
    }
  });
});

describe("AuditEvent on a node whose store was altered", () => {
  it("the index stops at the altered block, the node halts on it, and queries say why", async () => {
    const own = await openServiceKit();
    try {
      const [carol] = (await own.registerPatients(1)) as [Patient];
      const record = observation(carol);
      await putRecords(own, [patientResource(carol), record]);
      const clinician = await own.enrol("clinician");
      const p = await own.principalFor(clinician.key);
      for (let i = 0; i < 2; i++) {
        await call(read, own.ctx, request(p, { type: "Observation", id: record.id as string }));
        await own.accessLog.flush();
      }
      const node = own.running.node;
      const altered = node.height - 1;
      // Behind the node's back: one access log of an already committed block names another resource.
      const db = new DatabaseSync(node.store.path);
      const stored = db.prepare("SELECT txs FROM blocks WHERE height = ?").get(altered) as { txs: Uint8Array };
      const text = txsText(stored.txs, altered);
      assert.ok(text.includes(record.id as string));
      const changed = db
        .prepare("UPDATE blocks SET txs = ? WHERE height = ?")
        .run(packTxs(text.replaceAll(record.id as string, "tampered")), altered);
      db.close();
      assert.equal(changed.changes, 1);
      const index = AuditIndex.open(join(own.dir, "audit-fresh.db"), node);
      try {
        await assert.rejects(index.ready(), new RegExp(`block ${altered} in the store was altered`));
        assert.match(node.halted ?? "", new RegExp(`block ${altered}`), "the node halted on it");
        assert.throws(() => index.byPatient(carol.patient, { offset: 0, count: 10 }), /altered/);
        assert.ok(index.height < altered, `indexed to ${index.height}`);
      } finally {
        await index.close();
      }
    } finally {
      await own.close();
    }
  });
});
