// The access log as FHIR AuditEvents. `access.log` txs store nothing in contract state (the log is the audit trail),
// so a small SQLite index beside the node (`AuditIndex`) lists their entries by patient pseudonym and by custodian.
// It also lists each patient's consent changes (`consent.set`, `consent.revoke`, `optout.set` txs): state keeps only
// the rules in force, and the GDPR export gives the patient the whole history.
// It is derived data: a worker thread follows the node's committed blocks (from its last indexed height after a
// restart), and the index is rebuilt from scratch if its file is lost or unreadable.
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

import type { DatabaseSync } from "node:sqlite";
import { Worker } from "node:worker_threads";
import type { AuditEvent, Bundle, BundleEntry } from "@medplum/fhirtypes";
import { read as readState, type StateReader } from "../../contract/state.ts";
import { PURPOSE_SYSTEM, scopesAllow } from "../auth/scopes.ts";
import { badRequest, forbidden, notSupported, OperationOutcomeError } from "../outcome.ts";
import { searchLinks } from "../search-query.ts";
import type { AuditWorkerCommand, AuditWorkerData, AuditWorkerReport } from "./audit-index-worker.ts";
import { indexedHeightOf, openAuditDb } from "./audit-writer.ts";
import type { AccessEntry, FhirContext, FhirHandler, FhirRequest } from "./context.ts";
import { FHIR_JSON } from "./read.ts";

/** What the index needs of a node (`LedgerNode` has it). */
export interface AuditSource {
  readonly height: number;
  /** The node's ledger database, which the index's worker reads (read-only) as blocks are committed. */
  readonly store: { readonly path: string };
  /** The node's own check of a stored block (it halts on an altered one): what the worker reports is checked again. */
  readBlock(height: number): unknown;
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

export interface AuditIndexOptions {
  /** How often the worker looks for new blocks by itself (default 250 ms; a query wakes it at once). */
  pollMs?: number;
  /**
   * Under a load that never pauses, how long a committed block may wait to be committed to the index (default 10 s):
   * the worker then indexes the rest of the backlog in one go, so a query never waits for more than about this much.
   */
  maxLagMs?: number;
  /** How long a query waits for the index to reach the node's height before it answers 503 (default 30 s). */
  queryWaitMs?: number;
  /** Rows the indexer inserts into one transaction at most (default 20,000; tests set it small). */
  writeRows?: number;
}

/** The OS name of the index's worker thread (for `top -H` and the benchmarks). */
export const AUDIT_INDEX_THREAD = "audit-index";

const DEFAULT_POLL_MS = 250;
const DEFAULT_MAX_LAG_MS = 10_000;
const DEFAULT_QUERY_WAIT_MS = 30_000;
const registry = new WeakMap<object, AuditIndex>();

interface Waiter {
  target: number;
  resolve: () => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * New blocks are indexed on a worker thread of their own (audit-index-worker.ts), at the lowest CPU priority, with
 * its own connections: while blocks keep coming, a short slice each look (every 250 ms) into a transaction committed
 * every `writeRows` rows; all of them, committed, whenever the node is quiet (no block since the worker's last look),
 * a query waits, or the oldest block not committed has waited `maxLagMs` (then at most a fifth of a core). The
 * node's main thread pays nothing for it (indexing on the main thread cost the ledger benchmark up to a third of its
 * throughput, or ~30 s of main thread after each busy spell when deferred to quiet times). Queries read the index file
 * on the main thread once it has reached the node's height at the time of the query (`ready`).
 */
export class AuditIndex {
  private readonly db: DatabaseSync;
  private readonly source: AuditSource;
  private readonly worker: Worker;
  /** Resolves when the worker thread has ended (stopped, or crashed). */
  private readonly exited: Promise<void>;
  private readonly queryWaitMs: number;
  private indexed: number;
  private closed = false;
  private closing: Promise<void> | undefined;
  /** Set when the worker found an altered block: every query fails with it. */
  private failure: Error | undefined;
  private lastError: string | undefined;
  private readonly waiters = new Set<Waiter>();

  private constructor(db: DatabaseSync, source: AuditSource, path: string, options: AuditIndexOptions) {
    this.db = db;
    this.source = source;
    this.queryWaitMs = options.queryWaitMs ?? DEFAULT_QUERY_WAIT_MS;
    this.indexed = indexedHeightOf(db);
    this.worker = new Worker(new URL("./audit-index-worker.ts", import.meta.url), {
      name: AUDIT_INDEX_THREAD,
      workerData: {
        auditPath: path,
        ledgerPath: source.store.path,
        pollMs: options.pollMs ?? DEFAULT_POLL_MS,
        maxLagMs: options.maxLagMs ?? DEFAULT_MAX_LAG_MS,
        ...(options.writeRows === undefined ? {} : { writeRows: options.writeRows }),
      } satisfies AuditWorkerData,
    });
    this.worker.on("message", (report: AuditWorkerReport) => this.onReport(report));
    this.worker.on("error", (error) => this.fail(new Error(`the audit index stopped: ${error.message}`)));
    this.exited = new Promise((resolve) =>
      this.worker.once("exit", () => {
        if (!this.closed) this.fail(new Error("the audit index stopped"));
        resolve();
      }),
    );
    // After the listeners: adding a "message" listener refs the worker's port again.
    this.worker.unref();
  }

  /**
   * Opens (or creates) the index at `path` and starts following `source`: stored blocks above the indexed height are
   * indexed first, then new ones as they are committed. A file that does not open as this index is deleted and
   * rebuilt (it holds nothing that is not on the ledger).
   */
  static open(path: string, source: AuditSource, options: AuditIndexOptions = {}): AuditIndex {
    const index = new AuditIndex(openAuditDb(path, true), source, path, options);
    registry.set(source, index);
    return index;
  }

  /** The index opened for this node, if any (how `auditEventSearch` finds it from a FhirContext). */
  static of(source: object): AuditIndex | undefined {
    return registry.get(source);
  }

  /** Height up to which every block is indexed, as last reported by the worker. */
  get height(): number {
    return this.indexed;
  }

  /** Stops the worker (after its current transaction) and closes the index. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    if (registry.get(this.source) === this) registry.delete(this.source);
    this.rejectWaiters(new Error("the audit index is closed"));
    // Held (the worker is unref'd while it runs): the caller awaits its exit, so the event loop must too. A worker
    // that already ended (crashed) ignores the message and `exited` has resolved.
    this.worker.ref();
    this.worker.postMessage("stop" satisfies AuditWorkerCommand);
    this.closing = this.exited.then(() => this.db.close());
    return this.closing;
  }

  /**
   * Resolves once every block up to the node's height at the time of the call is indexed (the worker is woken for
   * it). Rejects when the index is closed or found an altered block, and with a 503 OperationOutcome when it has not
   * got there within `queryWaitMs` (a node far behind after a long busy spell on a full machine).
   */
  ready(): Promise<void> {
    if (this.closed) return Promise.reject(new Error("the audit index is closed"));
    if (this.failure) return Promise.reject(this.failure);
    const target = this.source.height;
    if (this.reached(target)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        target,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(this.behind(target));
        }, this.queryWaitMs),
      };
      this.waiters.add(waiter);
      this.worker.postMessage("wake" satisfies AuditWorkerCommand);
    });
  }

  /** Every committed consent change of `patient` (valid txs only), oldest first. Call after `ready`. */
  consentChanges(patient: string): ConsentChange[] {
    this.assertOpen();
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

  /** Entries about `patient`, newest first. Call after `ready`. */
  byPatient(patient: string, page: { offset: number; count: number }): AuditPage {
    this.assertOpen();
    return this.page("patient = ?", [patient], page);
  }

  /** Entries logged by `custodian` (optionally about one patient), newest first. Call after `ready`. */
  byCustodian(custodian: string, page: { offset: number; count: number; patient?: string }): AuditPage {
    this.assertOpen();
    return page.patient === undefined
      ? this.page("custodian = ?", [custodian], page)
      : // One patient's entries by the patient index, filtered (the unary + keeps the custodian index, which would
        // walk all of the custodian's entries, out of the plan).
        this.page("patient = ? AND +custodian = ?", [page.patient, custodian], page);
  }

  private page(where: string, args: string[], page: { offset: number; count: number }): AuditPage {
    // One read transaction: the total and the page agree even while the worker commits.
    this.db.exec("BEGIN");
    try {
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
    } finally {
      this.db.exec("COMMIT");
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new Error("the audit index is closed");
    if (this.failure) throw this.failure;
  }

  /** Indexed up to `target`, and not above the node's height (a lost tail is being dropped). */
  private reached(target: number): boolean {
    return this.indexed >= target && this.indexed <= this.source.height;
  }

  private behind(target: number): OperationOutcomeError {
    const detail = this.lastError ? `; last error: ${this.lastError}` : "";
    return new OperationOutcomeError(
      503,
      "transient",
      `the access-log index is catching up with the ledger (indexed to block ${this.indexed} of ${target}); try again shortly${detail}`,
    );
  }

  private onReport(report: AuditWorkerReport): void {
    if ("indexed" in report) {
      this.indexed = report.indexed;
      this.lastError = undefined;
      for (const w of this.waiters) {
        if (!this.reached(w.target)) continue;
        clearTimeout(w.timer);
        this.waiters.delete(w);
        w.resolve();
      }
    } else if ("integrity" in report) {
      let failure: Error = new Error(report.integrity.message);
      try {
        // The node's own check of that block halts it (writes and reads refused) and says why.
        this.source.readBlock(report.integrity.height);
      } catch (error) {
        failure = error as Error;
      }
      this.fail(failure);
    } else if ("error" in report) {
      this.lastError = report.error;
    }
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.rejectWaiters(this.failure);
  }

  private rejectWaiters(error: Error): void {
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(error);
    }
    this.waiters.clear();
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
