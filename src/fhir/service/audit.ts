// The access log as FHIR AuditEvents. `access.log` txs store nothing in contract state (the log is the audit trail),
// so a small SQLite index beside the node (`AuditIndex`) lists their entries by patient pseudonym and by custodian.
// It also lists each patient's consent changes (`consent.set`, `consent.revoke`, `optout.set` txs): state keeps only
// the rules in force, and the GDPR export gives the patient the whole history.
// It is derived data: fed from each committed block (`node.on("block")`), caught up from the stored blocks at open
// from its last indexed height, and rebuilt from scratch if its file is lost or unreadable.
//
// Who sees what (`GET /fhir/AuditEvent`): a patient sees every entry about them, from every custodian on the ledger
// (they are on every node's copy); a `manage` proxy sees the log of the patient it acts for (a `view` proxy does not:
// the log names record types and ids beyond its labels); an admin of this custodian sees the entries this custodian
// logged (optionally narrowed with `patient=`). Everyone else: 403, decided by who they are, not by any record.
//
// Mapping (R4 AuditEvent; shape as HL7's `AuditEvent-example-rest`): type `rest`; subtype `read` or `update`
// (restful-interaction); action R (read) or U (write: the entry does not say create or update); recorded = the time
// of the block that logged it; outcome 0 (permit) or 4 (deny) with `outcomeDesc` "permit|deny by step N (rule)";
// purposeOfEvent = the purpose (v3-ActReason); agent = the requester (key id, and member id and role where the key is a
// member's; "patient" or "proxy" otherwise) and, for members and nodes, their org as a second agent; source = the custodian; entity = the resource (`Type/id`) with
// details (decision, step, rule, decision height, ledger tx id) and the patient. AuditEvent ids are
// `<block height>-<tx position>-<entry index>`: stable across rebuilds.

import { closeSync, openSync, rmSync } from "node:fs";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { AuditEvent, Bundle, BundleEntry } from "@medplum/fhirtypes";
import { read as readState, type StateReader } from "../../contract/state.ts";
import type { Block, BlockEntry } from "../../ledger/types.ts";
import { CHECKPOINTED_WRITER_PRAGMAS, Checkpointer } from "../../store/checkpointer.ts";
import { PURPOSE_SYSTEM, scopesAllow } from "../auth/scopes.ts";
import { badRequest, forbidden, notSupported } from "../outcome.ts";
import { searchLinks } from "../search-query.ts";
import type { AccessEntry, FhirContext, FhirHandler, FhirRequest } from "./context.ts";
import { FHIR_JSON } from "./read.ts";

/** What the index needs of a node (`LedgerNode` has it). */
export interface AuditSource {
  readonly height: number;
  readBlock(height: number): { txs: string; header: string } | undefined;
  on(event: "block", listener: (block: Block) => void): unknown;
  off(event: "block", listener: (block: Block) => void): unknown;
}

/** An indexed entry: the `access.log` entry and where on the ledger it is. */
export interface IndexedEntry {
  entry: AccessEntry;
  /** Height of the block holding the tx. */
  block: number;
  /** Position of the tx in its block, and of the entry in the tx. */
  position: number;
  index: number;
  /** Block time, ms. */
  time: number;
  /** The `access.log` tx id. */
  tx: string;
}

export interface AuditPage {
  total: number;
  entries: IndexedEntry[];
}

const SCHEMA_VERSION = "2";

/** The txs that change a patient's consent: their history is part of what the GDPR export gives the patient. */
const CONSENT_TX_TYPES: ReadonlySet<string> = new Set(["consent.set", "consent.revoke", "optout.set"]);

/** A committed consent change of one patient. */
export interface ConsentChange {
  type: "consent.set" | "consent.revoke" | "optout.set";
  payload: Record<string, unknown>;
  block: number;
  position: number;
  /** Block time, ms. */
  time: number;
  tx: string;
}
/**
 * New blocks are indexed when the node is quiet (no block for BACKGROUND_DELAY_MS), a slice at a time, not inside
 * its block commits: a node logging thousands of reads a second would otherwise pay an SQLite insert per entry on its
 * commit path (measured: the ledger benchmark fell from ~8,500 to ~5,800 tx/s; indexing in slices during the load
 * still cost ~13 %). A query first catches up (`ready`, in slices between other requests), so after a long busy spell
 * the first one waits for the backlog.
 */
const BACKGROUND_DELAY_MS = 1000;
const BACKGROUND_SLICE_MS = 5;
const BACKGROUND_PAUSE_MS = 100;
/** A query's catch-up (`ready`) works in slices this long between other requests… */
const QUERY_SLICE_MS = 20;
/** …until no more than this many blocks are left, which the query indexes at once. */
const QUERY_SYNC_BLOCKS = 4;
const registry = new WeakMap<object, AuditIndex>();

export class AuditIndex {
  private readonly db: DatabaseSync;
  private readonly source: AuditSource;
  private readonly stmts: Record<string, StatementSync>;
  private readonly listener: (block: Block) => void;
  private indexed: number;
  private closed = false;
  /** Set when a live block could not be indexed; the next query catches up from the stored blocks. */
  private stale = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly checkpointer: Checkpointer;
  private catchingUp: Promise<void> | undefined;

  private constructor(db: DatabaseSync, source: AuditSource) {
    this.db = db;
    this.source = source;
    this.checkpointer = new Checkpointer(db.location() as string);
    this.stmts = {
      insert: db.prepare(
        "INSERT OR IGNORE INTO entries (block, pos, n, patient, custodian, time, tx, entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      ),
      setHeight: db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('height', ?)"),
      dropAbove: db.prepare("DELETE FROM entries WHERE block > ?"),
      insertConsent: db.prepare(
        "INSERT OR IGNORE INTO consent_changes (block, pos, patient, type, time, tx, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
      ),
      dropConsentAbove: db.prepare("DELETE FROM consent_changes WHERE block > ?"),
    };
    const row = db.prepare("SELECT value FROM meta WHERE key = 'height'").get() as { value: string } | undefined;
    this.indexed = row === undefined ? 0 : Number(row.value);
    this.listener = (block) => this.onBlock(block);
  }

  /**
   * Opens (or creates) the index at `path`, catches up with `source`'s stored blocks and follows new ones. A file
   * that does not open as this index is deleted and rebuilt (it holds nothing that is not on the ledger).
   */
  static open(path: string, source: AuditSource): AuditIndex {
    let db: DatabaseSync;
    try {
      db = openDb(path);
    } catch {
      for (const suffix of ["", "-wal", "-shm"]) rmSync(`${path}${suffix}`, { force: true });
      db = openDb(path);
    }
    const index = new AuditIndex(db, source);
    index.catchUp();
    source.on("block", index.listener);
    registry.set(source, index);
    return index;
  }

  /** The index opened for this node, if any (how `auditEventSearch` finds it from a FhirContext). */
  static of(source: object): AuditIndex | undefined {
    return registry.get(source);
  }

  /** Height up to which every block is indexed. */
  get height(): number {
    return this.indexed;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.source.off("block", this.listener);
    if (this.timer) clearTimeout(this.timer);
    if (registry.get(this.source) === this) registry.delete(this.source);
    this.checkpointer.stopBeforeClose(this.db);
    this.db.close();
  }

  /** Indexes stored blocks above the indexed height (and forgets any above the node's height: a lost tail). */
  catchUp(budgetMs = Number.POSITIVE_INFINITY): boolean {
    const started = performance.now();
    const head = this.source.height;
    if (this.indexed > head) {
      this.transaction(() => {
        this.stmts.dropAbove?.run(head);
        this.stmts.dropConsentAbove?.run(head);
        this.stmts.setHeight?.run(String(Math.max(0, head)));
      });
      this.indexed = Math.max(0, head);
    }
    while (this.indexed < head) {
      // One transaction per slice (as many blocks as its budget allows), or per 500 blocks when catching up in full:
      // each commit writes every index page it dirtied, so fewer, fuller commits write less (one commit per block
      // cost twice the CPU per entry).
      const last = Math.min(head, this.indexed + 500);
      let to = this.indexed;
      this.transaction(() => {
        do {
          to++;
          const row = this.source.readBlock(to);
          if (!row) throw new Error(`block ${to} is missing`);
          const header = JSON.parse(row.header) as { time: number };
          this.insertBlock(to, header.time, JSON.parse(row.txs) as BlockEntry[]);
        } while (to < last && performance.now() - started <= budgetMs);
        this.stmts.setHeight?.run(String(to));
      });
      this.indexed = to;
      // Checked after a block, not before: a slice always moves on however short its budget.
      if (this.indexed < head && performance.now() - started > budgetMs) return false;
    }
    this.stale = false;
    return true;
  }

  /**
   * Catches up with the node in slices of `sliceMs`, yielding to the event loop between them: a query after a long busy
   * spell (the index waits for a quiet node) then waits for the backlog without stalling every other request, as the
   * synchronous catch-up inside the query methods would on its own. Concurrent callers share one catch-up.
   */
  ready(sliceMs = QUERY_SLICE_MS): Promise<void> {
    if (this.closed) return Promise.reject(new Error("the audit index is closed"));
    if (this.source.height - this.indexed <= QUERY_SYNC_BLOCKS) return Promise.resolve();
    this.catchingUp ??= (async () => {
      try {
        // Under load new blocks keep coming: the last few are left to the query's own (synchronous) catch-up.
        while (!this.closed && this.source.height - this.indexed > QUERY_SYNC_BLOCKS) {
          this.catchUp(sliceMs);
          await new Promise((r) => setImmediate(r));
        }
      } finally {
        this.catchingUp = undefined;
      }
    })();
    return this.catchingUp;
  }

  /** Every committed consent change of `patient` (valid txs only), oldest first. */
  consentChanges(patient: string): ConsentChange[] {
    this.refresh();
    const rows = this.db
      .prepare("SELECT block, pos, type, time, tx, payload FROM consent_changes WHERE patient = ? ORDER BY block, pos")
      .all(patient) as { block: number; pos: number; type: string; time: number; tx: string; payload: string }[];
    return rows.map((r) => ({
      type: r.type as ConsentChange["type"],
      payload: JSON.parse(r.payload) as Record<string, unknown>,
      block: r.block,
      position: r.pos,
      time: r.time,
      tx: r.tx,
    }));
  }

  /** Entries about `patient`, newest first. */
  byPatient(patient: string, page: { offset: number; count: number }): AuditPage {
    this.refresh();
    return this.page("patient = ?", [patient], page);
  }

  /** Entries logged by `custodian` (optionally about one patient), newest first. */
  byCustodian(custodian: string, page: { offset: number; count: number; patient?: string }): AuditPage {
    this.refresh();
    return page.patient === undefined
      ? this.page("custodian = ?", [custodian], page)
      : this.page("custodian = ? AND patient = ?", [custodian, page.patient], page);
  }

  private page(where: string, args: string[], page: { offset: number; count: number }): AuditPage {
    const total = Number(
      (this.db.prepare(`SELECT count(*) AS n FROM entries WHERE ${where}`).get(...args) as { n: number }).n,
    );
    const rows = this.db
      .prepare(
        `SELECT block, pos, n, time, tx, entry FROM entries WHERE ${where}
         ORDER BY block DESC, pos DESC, n DESC LIMIT ? OFFSET ?`,
      )
      .all(...args, page.count, page.offset) as {
      block: number;
      pos: number;
      n: number;
      time: number;
      tx: string;
      entry: string;
    }[];
    return {
      total,
      entries: rows.map((r) => ({
        entry: JSON.parse(r.entry) as AccessEntry,
        block: r.block,
        position: r.pos,
        index: r.n,
        time: r.time,
        tx: r.tx,
      })),
    };
  }

  private refresh(): void {
    if (this.closed) throw new Error("the audit index is closed");
    if (this.stale || this.indexed < this.source.height) this.catchUp();
  }

  private onBlock(_block: Block): void {
    // Runs inside the node's commit: only (re)schedules the work for when blocks stop coming.
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.schedule(BACKGROUND_DELAY_MS);
  }

  private schedule(delayMs: number): void {
    if (this.timer !== undefined || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.closed) return;
      try {
        if (!this.catchUp(BACKGROUND_SLICE_MS)) this.schedule(BACKGROUND_PAUSE_MS);
      } catch {
        // A block that cannot be read (the node halts on it); queries retry and report.
        this.stale = true;
      }
    }, delayMs);
    this.timer.unref();
  }

  private insertBlock(height: number, time: number, txs: readonly BlockEntry[]): void {
    txs.forEach((e, pos) => {
      if (!e.result.valid) return;
      if (CONSENT_TX_TYPES.has(e.tx.type)) {
        const patient = (e.tx.payload as { patient?: unknown }).patient;
        if (typeof patient === "string") {
          this.stmts.insertConsent?.run(height, pos, patient, e.tx.type, time, e.id, JSON.stringify(e.tx.payload));
        }
        return;
      }
      if (e.tx.type !== "access.log") return;
      const entries = (e.tx.payload as { entries?: AccessEntry[] }).entries ?? [];
      entries.forEach((entry, n) => {
        this.stmts.insert?.run(height, pos, n, entry.patient, entry.custodian, time, e.id, JSON.stringify(entry));
      });
    });
  }

  private transaction(fn: () => void): void {
    this.db.exec("BEGIN IMMEDIATE");
    try {
      fn();
      this.db.exec("COMMIT");
    } catch (error) {
      this.db.exec("ROLLBACK");
      throw error;
    }
  }
}

function openDb(path: string): DatabaseSync {
  // Pseudonyms and key ids only, but private to the node like its other files.
  closeSync(openSync(path, "a", 0o600));
  const db = new DatabaseSync(path);
  try {
    // Checkpoints run on the checkpoint worker (store/checkpointer.ts), not inside the index's commits on the main
    // thread: they were a quarter of what indexing cost it in the background.
    db.exec(CHECKPOINTED_WRITER_PRAGMAS);
    // Derived data: a lost tail is re-indexed from the ledger at the next open.
    db.exec("PRAGMA synchronous = NORMAL");
    db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS entries (
        block INTEGER NOT NULL, pos INTEGER NOT NULL, n INTEGER NOT NULL,
        patient TEXT NOT NULL, custodian TEXT NOT NULL, time INTEGER NOT NULL, tx TEXT NOT NULL, entry TEXT NOT NULL,
        PRIMARY KEY (block, pos, n)
      ) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS entries_patient ON entries (patient, block, pos, n);
      CREATE INDEX IF NOT EXISTS entries_custodian ON entries (custodian, patient, block, pos, n);
      CREATE TABLE IF NOT EXISTS consent_changes (
        block INTEGER NOT NULL, pos INTEGER NOT NULL, patient TEXT NOT NULL, type TEXT NOT NULL, time INTEGER NOT NULL,
        tx TEXT NOT NULL, payload TEXT NOT NULL,
        PRIMARY KEY (block, pos)
      ) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS consent_changes_patient ON consent_changes (patient, block, pos);
    `);
    const schema = db.prepare("SELECT value FROM meta WHERE key = 'schema'").get() as { value: string } | undefined;
    if (schema === undefined) db.prepare("INSERT INTO meta (key, value) VALUES ('schema', ?)").run(SCHEMA_VERSION);
    else if (schema.value !== SCHEMA_VERSION) throw new Error("unsupported audit index schema");
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}

// ---- FHIR mapping ---------------------------------------------------------------------------------------------

const KEY_SYSTEM = "urn:careledger:key";
const ORG_SYSTEM = "urn:careledger:org";

/** Who the requester of an entry is, from ledger state (for the agent). */
function requesterOf(state: StateReader, entry: AccessEntry): { kind: string; org?: string; member?: string } {
  const key = readState.key(state, entry.requester);
  if (key?.kind === "member") {
    const m = readState.member(state, key.member);
    return { kind: m?.role ?? "member", org: key.org, member: key.member };
  }
  if (key?.kind === "node") return { kind: "node", org: key.org };
  if (key?.kind === "patient") return { kind: "patient" };
  const p = readState.patient(state, entry.patient);
  if (p?.proxies.some((x) => x.key === entry.requester)) return { kind: "proxy" };
  return { kind: "unknown" };
}

/** One indexed `access.log` entry as an R4 AuditEvent. */
export function toAuditEvent(state: StateReader, x: IndexedEntry): AuditEvent {
  const e = x.entry;
  const who = requesterOf(state, e);
  const write = e.action === "write";
  const details = [
    { type: "decision", valueString: e.decision },
    { type: "step", valueString: String(e.step) },
    { type: "rule", valueString: e.rule },
    { type: "decision-height", valueString: String(e.height) },
    { type: "ledger-tx", valueString: x.tx },
  ];
  return {
    resourceType: "AuditEvent",
    id: `${x.block}-${x.position}-${x.index}`,
    type: {
      system: "http://terminology.hl7.org/CodeSystem/audit-event-type",
      code: "rest",
      display: "Restful Operation",
    },
    subtype: [
      {
        system: "http://hl7.org/fhir/restful-interaction",
        code: write ? "update" : "read",
        display: write ? "update" : "read",
      },
    ],
    action: write ? "U" : "R",
    recorded: new Date(x.time).toISOString(),
    outcome: e.decision === "permit" ? "0" : "4",
    outcomeDesc: `${e.decision} by step ${e.step} (${e.rule})`,
    purposeOfEvent: [{ coding: [{ system: PURPOSE_SYSTEM, code: e.purpose }] }],
    agent: [
      {
        type: { text: who.kind },
        who: { identifier: { system: KEY_SYSTEM, value: e.requester } },
        ...(who.member === undefined ? {} : { altId: who.member }),
        requestor: true,
        purposeOfUse: [{ coding: [{ system: PURPOSE_SYSTEM, code: e.purpose }] }],
      },
      // The requester's organisation, as a second (non-requesting) agent.
      ...(who.org === undefined
        ? []
        : [
            {
              type: { text: "organization" },
              who: { identifier: { system: ORG_SYSTEM, value: who.org } },
              requestor: false,
            },
          ]),
    ],
    source: {
      site: e.custodian,
      observer: { identifier: { system: ORG_SYSTEM, value: e.custodian } },
      type: [
        { system: "http://terminology.hl7.org/CodeSystem/security-source-type", code: "3", display: "Web Server" },
      ],
    },
    entity: [
      {
        what:
          e.resourceId === undefined
            ? { display: e.resourceType }
            : { reference: `${e.resourceType}/${e.resourceId}`, type: e.resourceType },
        type: {
          system: "http://terminology.hl7.org/CodeSystem/audit-entity-type",
          code: "2",
          display: "System Object",
        },
        detail: details,
      },
      {
        what: { reference: `Patient/${e.patient}` },
        type: { system: "http://terminology.hl7.org/CodeSystem/audit-entity-type", code: "1", display: "Person" },
        role: { system: "http://terminology.hl7.org/CodeSystem/object-role", code: "1", display: "Patient" },
      },
    ],
  } as AuditEvent;
}

/** Every AuditEvent about `patient` (for the GDPR export: the access log is part of what a patient gets). */
export function auditEventsFor(ctx: FhirContext, index: AuditIndex, patient: string): AuditEvent[] {
  const out: AuditEvent[] = [];
  for (let offset = 0; ; offset += 1000) {
    const page = index.byPatient(patient, { offset, count: 1000 });
    for (const x of page.entries) out.push(toAuditEvent(ctx.node.store.state, x));
    if (page.entries.length < 1000) return out;
  }
}

// ---- the handler ----------------------------------------------------------------------------------------------

const DEFAULT_COUNT = 50;
const MAX_COUNT = 1000;
const ALLOWED = new Set(["patient", "_count", "_offset", "_format", "_pretty"]);

function intParam(query: URLSearchParams, name: string, fallback: number, max: number): number {
  const raw = query.get(name);
  if (raw === null) return fallback;
  if (!/^[0-9]{1,9}$/.test(raw)) throw badRequest("must be a non-negative integer", name);
  return Math.min(Number(raw), max);
}

/** `patient=Patient/<id>`, `patient=<id>` or an absolute URL under the base. */
function patientParam(ctx: FhirContext, query: URLSearchParams): string | undefined {
  const all = query.getAll("patient");
  if (all.length === 0) return undefined;
  if (all.length > 1) throw badRequest("may be given only once", "patient");
  let v = all[0] as string;
  const base = `${ctx.baseUrl.replace(/\/+$/, "")}/`;
  if (v.startsWith(base)) v = v.slice(base.length);
  if (v.startsWith("Patient/")) v = v.slice("Patient/".length);
  if (!/^[A-Za-z0-9\-.]{1,64}$/.test(v)) throw badRequest("must be a Patient reference", "patient");
  return v;
}

/** `GET /fhir/AuditEvent?patient=…` with the index `AuditIndex.of(ctx.node)` (see `auditEventSearchWith`). */
export const auditEventSearch: FhirHandler = async (ctx, req) => {
  const index = AuditIndex.of(ctx.node);
  if (index === undefined) throw notSupported("the access log is not indexed on this node", undefined, 501);
  return auditEventSearchWith(index)(ctx, req);
};

/** The AuditEvent search handler over a given index. */
export function auditEventSearchWith(index: AuditIndex): FhirHandler {
  return async (ctx: FhirContext, req: FhirRequest) => {
    const p = req.principal;
    if (!scopesAllow(p.scopes, p.context, "AuditEvent", "search")) {
      throw forbidden("the token's scopes do not allow search of AuditEvent");
    }
    for (const name of new Set(req.query.keys())) {
      if (!ALLOWED.has(name)) throw badRequest("parameter not supported on AuditEvent", name, "not-supported");
    }
    const asked = patientParam(ctx, req.query);
    const count = intParam(req.query, "_count", DEFAULT_COUNT, MAX_COUNT);
    const offset = intParam(req.query, "_offset", 0, 1_000_000);
    await index.ready();
    let page: AuditPage;
    const id = p.identity;
    if (id.kind === "patient" || (id.kind === "proxy" && id.scope === "manage")) {
      // Their own log only: asking about someone else finds nothing (as a search outside the compartment would).
      page =
        asked !== undefined && asked !== id.patient
          ? { total: 0, entries: [] }
          : index.byPatient(id.patient, { offset, count });
    } else if (id.kind === "member" && id.role === "admin" && id.org === ctx.orgId) {
      page = index.byCustodian(ctx.orgId, asked === undefined ? { offset, count } : { offset, count, patient: asked });
    } else {
      throw forbidden("the access log is shown to the patient, a managing proxy, or an admin of this organisation");
    }
    const state = ctx.node.store.state;
    const base = ctx.baseUrl.replace(/\/+$/, "");
    const params = [...req.query.entries()].filter(([k]) => k !== "_count" && k !== "_offset");
    const entry: BundleEntry[] = page.entries.map((x) => {
      const resource = toAuditEvent(state, x);
      return { fullUrl: `${base}/AuditEvent/${resource.id}`, resource, search: { mode: "match" } };
    });
    const bundle: Bundle = {
      resourceType: "Bundle",
      type: "searchset",
      total: page.total,
      link: searchLinks(`${base}/AuditEvent`, params, offset, count, page.total > offset + count),
      entry,
    };
    return { status: 200, body: bundle, headers: { "content-type": FHIR_JSON } };
  };
}
