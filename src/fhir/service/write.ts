// Writes: the one path every stored version takes (vault.stage → anchor on the ledger → vault.confirm, or abort), the
// anchorer with its crash journal, and the FHIR create/update handlers.
//
// Records with no patient (Organization, Practitioner, Location, Medication, …) are anchored on the ledger like
// patient records: `record.anchor` entries without a `patient` (the contract accepts them from the custodian's node),
// so every stored version has the same ledger check on read.
//
// Crash atomicity: a write is all-or-nothing (a transaction Bundle is one stage). A bundle's anchors may span several
// `record.anchor` txs (about 200 entries fit in one), so a crash between two of them would leave some versions
// anchored and others not, and the vault's per-version recovery at open would keep half a bundle. The anchorer
// therefore journals each write's commitments before anchoring them and marks the group complete only once every tx
// committed; `isAnchored` (used by the vault at open) answers false for any version of an incomplete group. Anchors
// that did commit stay on the ledger with no record behind them (the vault never reuses those versions).
//
// Updates: PUT needs an existing resource (the server assigns ids, so client-chosen ids, which could carry personal
// data, are never stored): a missing id answers 405 as R4 prescribes for servers without update-as-create — and a
// resource the caller may not see answers exactly the same. The one exception is `PUT Patient/<pseudonym>` for a
// patient registered on the ledger (by any organisation) that this custodian does not hold yet: it creates this
// custodian's Patient resource (id = pseudonym, see patients.ts).

import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import { UUID_PATTERN } from "../../contract/schemas.ts";
import type { StateReader } from "../../contract/state.ts";
import { inWriteTransaction } from "../../store/transaction.ts";
import { AnchorBatcher, type AnchorBatcherOptions, AnchorError, ledgerAnchors } from "../../vault/anchorer.ts";
import { FileKeyProvider } from "../../vault/keys.ts";
import {
  type AnchorEntry,
  type PutItem,
  type StagedWrite,
  Vault,
  VaultConflictError,
  VaultError,
  VaultIntegrityError,
  type VaultRecord,
  type VaultResource,
} from "../../vault/vault.ts";
import type { Principal } from "../auth/bearer.ts";
import { isValidNhsNumber, NHS_NUMBER_SYSTEM } from "../nhs-number.ts";
import { badRequest, conflict, forbidden, integrity, OperationOutcomeError, preconditionFailed } from "../outcome.ts";
import { clinicalDate, patientOf, securityLabels } from "../resource-facts.ts";
import { extractIndex } from "../search-params.ts";
import { STORED_TYPES, validateResource } from "../validate.ts";
import { type AccessInteraction, checkAccess, type RecordFacts } from "./consent-check.ts";
import { consentUpdate } from "./consent-resource.ts";
import type { FhirContext, FhirHandler, FhirRequest, FhirResponse } from "./context.ts";
import { isRegistered, type LookupKey, pseudonymOf } from "./patients.ts";

const PSEUDONYM_RE = new RegExp(UUID_PATTERN);
/** Types whose writes go elsewhere (their own handlers or the ledger), never through create/update. */
const NOT_WRITABLE_HERE: ReadonlySet<string> = new Set(["Consent", "AuditEvent", "Provenance"]);
/** Journal groups older than this (and not in flight) are settled history: pruned. */
const JOURNAL_KEEP_MS = 60_000;

// ---- the anchorer ---------------------------------------------------------------------------------------------

export interface CustodianAnchorerOptions extends AnchorBatcherOptions {
  /** The crash journal (`DIR/write-journal.db`). */
  path: string;
}

/**
 * `AnchorBatcher` plus the write journal that makes a staged write all-or-nothing across a crash (see the file
 * comment). Open it BEFORE the vault, and open the vault with `vaultAnchors(state)`.
 */
export class CustodianAnchorer extends AnchorBatcher {
  private readonly db: DatabaseSync;
  private readonly custodianId: string;
  private readonly clock: () => number;
  private readonly live = new Set<number>();
  private readonly stmts: {
    entries: ReturnType<DatabaseSync["prepare"]>;
    newGroup: ReturnType<DatabaseSync["prepare"]>;
    completeGroup: ReturnType<DatabaseSync["prepare"]>;
    dropGroup: ReturnType<DatabaseSync["prepare"]>;
    dropJournal: ReturnType<DatabaseSync["prepare"]>;
    oldGroups: ReturnType<DatabaseSync["prepare"]>;
  };
  private readonly multi = new Map<number, ReturnType<DatabaseSync["prepare"]>>();
  private closed = false;

  constructor(options: CustodianAnchorerOptions) {
    super(options);
    this.custodianId = options.custodian;
    this.clock = options.now ?? Date.now;
    this.db = new DatabaseSync(options.path);
    try {
      this.db.exec("PRAGMA busy_timeout = 5000");
      this.db.exec("PRAGMA journal_mode = WAL");
      // Survives a process crash (the case the journal is for); a power cut may lose the last few ms of it.
      this.db.exec("PRAGMA synchronous = NORMAL");
      // Entries are clustered by group: a write's commitments go in at the end of the tree and are pruned as a range.
      // (Keyed by the random commitment, as before 2026-11-27, every write rewrote pages all over the tree.) Only the
      // vault's recovery at open looks a commitment up, once for all of them (`journalledWrites`).
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS journal_groups (grp INTEGER PRIMARY KEY, at INTEGER NOT NULL, complete INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS journal_entries (
          grp INTEGER NOT NULL, commitment BLOB NOT NULL, PRIMARY KEY (grp, commitment)
        ) WITHOUT ROWID;
      `);
      // A journal written before: its entries move over (they may be needed by the vault's recovery at open).
      if (this.db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'journal'").get()) {
        this.db.exec(`BEGIN IMMEDIATE;
          INSERT OR IGNORE INTO journal_entries (grp, commitment) SELECT grp, unhex(commitment) FROM journal;
          DROP TABLE journal;
          COMMIT;`);
      }
    } catch (error) {
      this.db.close();
      throw error;
    }
    const p = (sql: string) => this.db.prepare(sql);
    this.stmts = {
      entries: p(
        "SELECT e.commitment AS commitment, g.complete AS complete FROM journal_entries e JOIN journal_groups g ON g.grp = e.grp",
      ),
      newGroup: p("INSERT INTO journal_groups (at, complete) VALUES (?, 0)"),
      completeGroup: p("UPDATE journal_groups SET complete = 1 WHERE grp = ?"),
      dropGroup: p("DELETE FROM journal_groups WHERE grp = ?"),
      dropJournal: p("DELETE FROM journal_entries WHERE grp = ?"),
      oldGroups: p("SELECT grp FROM journal_groups WHERE at < ?"),
    };
  }

  /**
   * Anchors one staged write's entries on the ledger (batched with other callers), journalled so that a crash
   * part-way leaves the whole write unconfirmed.
   */
  override async anchor(entries: readonly AnchorEntry[]): Promise<void> {
    if (entries.length === 0) return;
    if (this.closed) throw new AnchorError("submit-failed", "the anchorer is closed");
    const group = this.begin(entries);
    try {
      await super.anchor(entries);
      this.complete(group);
    } catch (error) {
      this.drop(group);
      throw error;
    } finally {
      this.live.delete(group);
    }
  }

  /**
   * The vault's `anchorOf` (the ledger) and `isAnchored` (as `anchorOf`, except that versions of a journalled write
   * that did not complete are not anchored: the vault removes the whole write at open).
   */
  vaultAnchors(state: StateReader): {
    anchorOf: (type: string, id: string, version: string) => string | undefined;
    isAnchored: (type: string, id: string, version: string, commitment: string) => boolean;
    latestAnchored: (type: string, id: string) => number;
  } {
    const { anchorOf, latestAnchored } = ledgerAnchors(state, this.custodianId);
    return {
      anchorOf,
      latestAnchored,
      isAnchored: (type, id, version, commitment) => {
        if (this.journalledWrites().get(commitment) === false) return false;
        return anchorOf(type, id, version) === commitment;
      },
    };
  }

  private journalView: Map<string, boolean> | undefined;

  /**
   * Every journalled commitment → whether its write completed, read once for a run of `isAnchored` calls (the vault
   * asks for each pending version at open, synchronously) and forgotten before anything else can change the journal.
   */
  private journalledWrites(): Map<string, boolean> {
    if (this.journalView) return this.journalView;
    const view = new Map<string, boolean>();
    for (const row of this.stmts.entries.iterate()) {
      const r = row as { commitment: Uint8Array; complete: number };
      view.set(Buffer.from(r.commitment).toString("hex"), r.complete === 1);
    }
    this.journalView = view;
    queueMicrotask(() => {
      this.journalView = undefined;
    });
    return view;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch {
      // Busy: the next open folds the WAL in.
    }
    this.db.close();
  }

  private begin(entries: readonly AnchorEntry[]): number {
    this.prune();
    let group = 0;
    this.transaction(() => {
      group = Number(this.stmts.newGroup.run(this.clock()).lastInsertRowid);
      const rows: SQLInputValue[] = [];
      for (const e of entries) rows.push(group, Buffer.from(e.commitment, "hex"));
      this.insertJournal(rows);
    });
    this.live.add(group);
    return group;
  }

  private complete(group: number): void {
    this.stmts.completeGroup.run(group);
  }

  private drop(group: number): void {
    if (this.closed) return;
    try {
      this.transaction(() => {
        this.stmts.dropJournal.run(group);
        this.stmts.dropGroup.run(group);
      });
    } catch {
      // Left for prune: an incomplete group only ever makes recovery remove a write that failed anyway.
    }
  }

  /** Drops journal groups that are settled: older than JOURNAL_KEEP_MS and not in flight in this process. */
  private prune(): void {
    const old = this.stmts.oldGroups.all(this.clock() - JOURNAL_KEEP_MS) as { grp: number }[];
    const done = old.filter((g) => !this.live.has(g.grp));
    if (done.length === 0) return;
    this.transaction(() => {
      for (const g of done) {
        this.stmts.dropJournal.run(g.grp);
        this.stmts.dropGroup.run(g.grp);
      }
    });
  }

  private insertJournal(flat: SQLInputValue[]): void {
    const CHUNK = 200;
    const rows = flat.length / 2;
    const stmt = (n: number) => {
      let s = this.multi.get(n);
      if (!s) {
        s = this.db.prepare(
          `INSERT OR IGNORE INTO journal_entries (grp, commitment) VALUES ${Array(n).fill("(?, ?)").join(",")}`,
        );
        this.multi.set(n, s);
      }
      return s;
    };
    let r = 0;
    for (; r + CHUNK <= rows; r += CHUNK) stmt(CHUNK).run(...flat.slice(r * 2, (r + CHUNK) * 2));
    if (r < rows) stmt(rows - r).run(...flat.slice(r * 2));
  }

  private transaction(fn: () => void): void {
    inWriteTransaction(this.db, fn);
  }
}

/** The anchorer's crash journal in a data dir. */
export const WRITE_JOURNAL_FILE = "write-journal.db";

export interface CustodianStoreOptions {
  /** What anchors go through and whose state the vault checks them against. */
  node: AnchorBatcherOptions["node"] & { store: { state: StateReader } };
  key: AnchorBatcherOptions["key"];
  custodian: string;
  vaultPath: string;
  vaultKeyPath: string;
  journalPath: string;
  now?: () => number;
}

/**
 * The vault and anchorer of a node, wired together (the server and `careledger import` must open them the same
 * way): the anchorer first, then the vault on its anchor source, so that writes a crash left pending are settled by
 * the journal. `close()` closes both.
 */
export function openCustodianStore(options: CustodianStoreOptions): {
  vault: Vault;
  anchorer: CustodianAnchorer;
  close(): void;
} {
  const anchorer = new CustodianAnchorer({
    node: options.node,
    key: options.key,
    custodian: options.custodian,
    path: options.journalPath,
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  let vault: Vault;
  try {
    vault = Vault.open(options.vaultPath, {
      keys: FileKeyProvider.openOrCreate(options.vaultKeyPath),
      ...anchorer.vaultAnchors(options.node.store.state),
      ...(options.now === undefined ? {} : { now: options.now }),
    });
  } catch (error) {
    anchorer.close();
    throw error;
  }
  return {
    vault,
    anchorer,
    close() {
      vault.close();
      anchorer.close();
    },
  };
}

// ---- the write path -------------------------------------------------------------------------------------------

/**
 * A vault or anchoring failure as the FHIR answer it deserves: version conflicts 412/409, bad input 400, a record
 * for a patient the ledger does not know 422, an erased record 410, a node that cannot take writes now 503. Messages
 * name resources by type/id only (ids carry nothing).
 */
export function writeError(error: unknown): OperationOutcomeError {
  if (error instanceof OperationOutcomeError) return error;
  if (error instanceof VaultConflictError) {
    switch (error.code) {
      case "version-conflict":
        return preconditionFailed(
          `${error.resourceType}/${error.resourceId}: ${error.message.replace(/^[^:]*: /, "")}`,
        );
      case "already-exists":
        return conflict(`${error.resourceType}/${error.resourceId} already exists`);
      case "pending":
        return conflict(`${error.resourceType}/${error.resourceId} is being written by another request; retry`);
      case "patient-mismatch":
        return conflict(`${error.resourceType}/${error.resourceId} belongs to another patient; a record cannot move`);
      case "not-found":
        return preconditionFailed(`${error.resourceType}/${error.resourceId} has no current version to match`);
      default:
        return conflict(error.message);
    }
  }
  if (error instanceof VaultIntegrityError) return integrity();
  if (error instanceof VaultError) {
    if (error.code === "limit") return new OperationOutcomeError(413, "too-costly", error.message);
    if (error.code === "closed") return new OperationOutcomeError(503, "exception", "the vault is closed");
    return badRequest(error.message);
  }
  if (error instanceof AnchorError) {
    switch (error.code) {
      case "not-found":
        return new OperationOutcomeError(422, "processing", "a record refers to a patient the ledger does not know");
      case "erased":
        return new OperationOutcomeError(410, "deleted", "the record or its patient was erased");
      case "invalid-reference":
        return conflict("a record belongs to another patient on the ledger");
      case "invalid-entry":
        return new OperationOutcomeError(
          500,
          "exception",
          "this node cannot anchor the write (records of no patient need the custodian anchorer)",
        );
      case "submit-failed":
        return new OperationOutcomeError(503, "exception", "the ledger node cannot take writes now; retry");
      default:
        return new OperationOutcomeError(500, "exception", `the ledger refused the record anchor (${error.code})`);
    }
  }
  return new OperationOutcomeError(500, "exception", "internal error");
}

/** Aborts a staged write, ignoring a write that is no longer pending (the failure being reported matters more). */
export function abortQuietly(ctx: Pick<FhirContext, "vault">, staged: StagedWrite): void {
  try {
    ctx.vault.abort(staged);
  } catch {
    // Already settled (or the vault closed): the pending rows are settled at the next open.
  }
}

/**
 * Stores items as ONE write: stage (one vault transaction) → anchor (resolves once every anchor tx committed) →
 * confirm. On any failure the write is aborted and an OperationOutcomeError thrown; nothing of it is served.
 */
export async function commitWrite(ctx: FhirContext, items: readonly PutItem[]): Promise<StagedWrite> {
  let staged: StagedWrite;
  try {
    staged = ctx.vault.stage(items);
  } catch (error) {
    throw writeError(error);
  }
  try {
    await ctx.anchorer.anchor(staged.anchors);
  } catch (error) {
    abortQuietly(ctx, staged);
    throw writeError(error);
  }
  try {
    ctx.vault.confirm(staged);
  } catch (error) {
    throw writeError(error);
  }
  return staged;
}

/** The vault item for a validated resource (id set): facts read from the resource itself. */
export function putItemOf(resource: VaultResource, patient: string | null): PutItem {
  const item: PutItem = {
    resource,
    patient,
    labels: securityLabels(resource),
    index: extractIndex(resource),
  };
  const date = clinicalDate(resource);
  if (date !== undefined) item.date = date;
  return item;
}

/**
 * The patient a resource belongs to, checked: undefined → null (a record of no patient); a patient link must name a
 * pseudonym the ledger knows (422 otherwise, naming the element).
 */
export function patientChecked(
  ctx: Pick<FhirContext, "node">,
  resource: { resourceType: string; id?: string },
  where = resource.resourceType,
): string | null {
  const patient = patientOf(resource);
  if (patient === undefined) return null;
  if (!PSEUDONYM_RE.test(patient) || !isRegistered(ctx, patient)) {
    throw new OperationOutcomeError(
      422,
      "processing",
      resource.resourceType === "Patient"
        ? "Patient ids are ledger pseudonyms: this patient is not registered on the ledger"
        : "refers to a patient the ledger does not know (Patient ids are ledger pseudonyms)",
      where,
    );
  }
  return patient;
}

export function factsOf(item: PutItem): RecordFacts {
  const facts: RecordFacts = {
    resourceType: item.resource.resourceType,
    id: item.resource.id as string,
    patient: item.patient,
    labels: item.labels,
  };
  if (item.date !== undefined) facts.date = item.date;
  return facts;
}

export function factsOfRecord(type: string, id: string, record: VaultRecord): RecordFacts {
  const facts: RecordFacts = { resourceType: type, id, patient: record.patient, labels: record.labels };
  if (record.date !== undefined) facts.date = record.date;
  return facts;
}

/**
 * The answer to a refused write, by issue 4's existence rule: 403 where the caller already knows the target exists
 * (it may read it — decided without logging, as nothing is read), otherwise exactly what a missing target answers.
 */
export function refusal(
  ctx: FhirContext,
  principal: Principal,
  known: RecordFacts | undefined,
  missing: () => OperationOutcomeError,
): OperationOutcomeError {
  if (known !== undefined && checkAccess(ctx, principal, known, "read", "read", { log: false }).allowed) {
    return forbidden("consent or scope does not allow this write");
  }
  return missing();
}

/** Whether writing `facts` is allowed (scope, compartment, consent); logs the decision. */
export function mayWrite(
  ctx: FhirContext,
  principal: Principal,
  facts: RecordFacts,
  interaction: Extract<AccessInteraction, "create" | "update">,
): boolean {
  return checkAccess(ctx, principal, facts, "write", interaction).allowed;
}

/** 405 for an update of an id that does not exist here (or that the caller may not see: the same answer). */
export function noSuchTarget(type: string, id: string): OperationOutcomeError {
  return new OperationOutcomeError(
    405,
    "not-found",
    `${type}/${id} does not exist; this server assigns ids: create it with POST ${type}`,
  );
}

/** An HTTP-date for Last-Modified. */
function httpDate(instant: string): string {
  return new Date(instant).toUTCString();
}

function writeResponse(ctx: FhirContext, staged: StagedWrite, status?: number): FhirResponse {
  const item = staged.items[0];
  if (item === undefined) throw new OperationOutcomeError(500, "exception", "internal error");
  const { resourceType, id } = item.resource as { resourceType: string; id: string };
  return {
    status: status ?? (item.created ? 201 : 200),
    body: item.resource,
    headers: {
      location: `${ctx.baseUrl}/${resourceType}/${id}/_history/${item.version}`,
      etag: `W/"${item.version}"`,
      "last-modified": httpDate(item.lastUpdated),
    },
  };
}

function bodyResource(req: FhirRequest, type: string): Record<string, unknown> {
  const body = req.body;
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw badRequest("the body must be a FHIR resource (a JSON object)", type, "structure");
  }
  const resourceType = (body as { resourceType?: unknown }).resourceType;
  if (resourceType === undefined) throw badRequest("resourceType is missing", "resourceType", "required");
  if (resourceType !== type) throw badRequest(`resourceType must be ${type}, as in the URL`, "resourceType", "value");
  return body as Record<string, unknown>;
}

function validated(body: Record<string, unknown>): VaultResource {
  return validateResource(body, {
    types: STORED_TYPES,
    onReference: (holder, _allowed, expression) => {
      if (holder.reference.startsWith("urn:")) {
        throw badRequest("urn: references name bundle entries; outside a transaction use Type/id", expression());
      }
    },
  }) as unknown as VaultResource;
}

function checkWritableType(type: string | undefined): string {
  if (type === undefined || !STORED_TYPES.has(type)) throw badRequest("unknown resource type", "type");
  if (NOT_WRITABLE_HERE.has(type)) {
    throw new OperationOutcomeError(
      405,
      "not-supported",
      type === "Consent"
        ? "Consent is written as a signed consent.set (POST Consent with the signed tx extension)"
        : `${type} resources are made by the server (from the ledger), not written by clients`,
    );
  }
  return type;
}

export interface WriteHandlerOptions {
  /** The network's NHS-number lookup key: lets `POST Patient` find the pseudonym of a registered patient. */
  lookup?: LookupKey;
  /** A fresh resource id (default: a random UUID). */
  newId?: () => string;
}

/**
 * `POST /fhir/:type` — create with a server-assigned id; 201 with Location, ETag and Last-Modified, answered only
 * after the version's anchor committed. Clinicians (and nurses) whose scope allows create and whose consent decision
 * permits `write`. A Patient is created only for a patient registered on the ledger: its id is the pseudonym, found
 * from the Patient's NHS number with the lookup key (422 when the ledger does not know it: registration is
 * `careledger import` or a clinician-signed `patient.register`).
 */
export function createHandler(options: WriteHandlerOptions = {}): FhirHandler {
  const newId = options.newId ?? (() => crypto.randomUUID());
  return async (ctx, req) => {
    const type = checkWritableType(req.params.type);
    const body = bodyResource(req, type);
    const resource = validated(body);
    let id: string;
    if (type === "Patient") {
      id = patientIdForCreate(ctx, resource, options.lookup);
    } else {
      id = newId();
    }
    resource.id = id;
    const patient = patientChecked(ctx, resource);
    const item = putItemOf(resource, patient);
    if (type === "Patient") {
      const existing = ctx.vault.read("Patient", id);
      if (existing !== undefined && !existing.deleted) {
        throw refusalOrConflict(ctx, req.principal, factsOfRecord("Patient", id, existing));
      }
    }
    if (!mayWrite(ctx, req.principal, factsOf(item), "create")) {
      // A new record: the caller knows the patient it names, not a record; scope refusals are 403 as well.
      throw forbidden("consent or scope does not allow this write");
    }
    const staged = await commitWrite(ctx, [item]);
    return writeResponse(ctx, staged, 201);
  };
}

function refusalOrConflict(ctx: FhirContext, principal: Principal, known: RecordFacts): OperationOutcomeError {
  if (checkAccess(ctx, principal, known, "read", "read", { log: false }).allowed) {
    return conflict(`Patient/${known.id} already exists here; update it with PUT`);
  }
  return forbidden("consent or scope does not allow this write");
}

function patientIdForCreate(ctx: FhirContext, resource: VaultResource, lookup: LookupKey | undefined): string {
  const nhs = nhsNumberOf(resource);
  const registered = nhs !== undefined && lookup !== undefined ? pseudonymOf(ctx, lookup, nhs) : undefined;
  if (registered === undefined) {
    throw new OperationOutcomeError(
      422,
      "processing",
      "a Patient is stored under its ledger pseudonym: register the patient on the ledger first " +
        "(careledger import, or a clinician-signed patient.register), then PUT Patient/<pseudonym>",
      "Patient.identifier",
    );
  }
  return registered;
}

/** The first valid NHS number among a Patient's identifiers (stored form, 10 digits). */
export function nhsNumberOf(resource: object): string | undefined {
  const identifiers = (resource as { identifier?: unknown }).identifier;
  if (!Array.isArray(identifiers)) return undefined;
  for (const i of identifiers) {
    if (typeof i !== "object" || i === null) continue;
    const { system, value } = i as { system?: unknown; value?: unknown };
    if (system === NHS_NUMBER_SYSTEM && isValidNhsNumber(value)) return value;
  }
  return undefined;
}

/**
 * `PUT /fhir/:type/:id` — update; `If-Match: W/"n"` is checked by the vault (412 when n is not current). The caller
 * must be allowed to write both the current version and the new one (labels or dates may change). Missing or hidden
 * target → 405 (see the file comment); `PUT Patient/<registered pseudonym>` not held here yet → created (201).
 * `PUT Consent/:id` is a consent rule change or revocation (consent-resource.ts).
 */
export function updateHandler(_options: WriteHandlerOptions = {}): FhirHandler {
  return async (ctx, req) => {
    if (req.params.type === "Consent") return consentUpdate(ctx, req);
    const type = checkWritableType(req.params.type);
    const id = req.params.id;
    if (id === undefined) throw badRequest("an update needs an id in the URL", "id");
    const body = bodyResource(req, type);
    if (body.id === undefined)
      throw badRequest("the resource must carry its id (as in the URL)", `${type}.id`, "required");
    if (body.id !== id) throw badRequest("the resource id must equal the id in the URL", `${type}.id`, "value");
    const resource = validated(body);
    const existing = ctx.vault.read(type, id);
    const current = existing !== undefined && !existing.deleted ? existing : undefined;
    const creatingPatient = current === undefined && type === "Patient";
    if (current === undefined && !creatingPatient) {
      throw noSuchTarget(type, id);
    }
    if (creatingPatient && (!PSEUDONYM_RE.test(id) || !isRegistered(ctx, id))) throw noSuchTarget(type, id);
    const patient = patientChecked(ctx, resource);
    const item = putItemOf(resource, patient);
    if (req.ifMatch !== undefined) item.ifMatch = req.ifMatch;
    if (creatingPatient) item.mustNotExist = true;
    const currentFacts = current === undefined ? undefined : factsOfRecord(type, id, current);
    if (currentFacts !== undefined && !mayWrite(ctx, req.principal, currentFacts, "update")) {
      throw refusal(ctx, req.principal, currentFacts, () => noSuchTarget(type, id));
    }
    if (!mayWrite(ctx, req.principal, factsOf(item), creatingPatient ? "create" : "update")) {
      // The caller knows what it sent; whether it may see the current version decides 403 versus "no such target".
      if (currentFacts === undefined) throw forbidden("consent or scope does not allow this write");
      throw refusal(ctx, req.principal, currentFacts, () => noSuchTarget(type, id));
    }
    if (current !== undefined && current.patient !== patient) {
      throw conflict(`${type}/${id} belongs to another patient; a record cannot move`);
    }
    const staged = await commitWrite(ctx, [item]);
    return writeResponse(ctx, staged);
  };
}

export const create: FhirHandler = createHandler();
export const update: FhirHandler = updateHandler();
