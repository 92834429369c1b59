// The encrypted FHIR vault: every version of every resource encrypted at rest under a per-patient data key, blind
// (keyed-hash) search indexes, salted commitments anchored on the ledger and re-checked on every read, two-phase
// writes so that nothing un-anchored is ever served, and crypto-shredding on erasure.

import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  type KeyObject,
  randomBytes,
  timingSafeEqual,
} from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { UUID_PATTERN } from "../contract/schemas.ts";
import { canonicalJson } from "../ledger/canonical.ts";
import { CHECKPOINTED_WRITER_PRAGMAS, Checkpointer } from "../store/checkpointer.ts";
import { inWriteTransaction } from "../store/transaction.ts";
import { BLIND_HASH_BYTES, BlindHasher } from "./blind-index.ts";
import { recordCommitmentOfJson } from "./commitment.ts";
import { type KeyProvider, VaultKeyError } from "./keys.ts";
import type { Comparator, IndexEntry, SearchClause, SearchQuery } from "./types.ts";

// ---- public shapes --------------------------------------------------------------------------------------------

/** A FHIR resource as the vault sees it: JSON with a type and (set by the caller) an id. */
export interface VaultResource {
  resourceType: string;
  id?: string;
  meta?: { versionId?: string; lastUpdated?: string; [key: string]: unknown };
  [key: string]: unknown;
}

/** One resource version to write. */
export interface PutItem {
  /** `resourceType` and `id` must be set; `meta.versionId` and `meta.lastUpdated` are overwritten by the vault. */
  resource: VaultResource;
  /** Ledger pseudonym of the patient the record is about; `null` for Organization, Practitioner, Medication, … */
  patient: string | null;
  /** Security-label codes (as anchored on the ledger and used by consent). */
  labels: string[];
  /** Clinical date, `YYYY-MM-DD` (anchored; consent rules may cover date ranges). */
  date?: string;
  /** Search values already extracted by the FHIR layer; ignored for deletions. */
  index: IndexEntry[];
  /** Expected current version (FHIR `If-Match`): conflict if the current version differs or there is none. */
  ifMatch?: number;
  /** Conflict if a current, non-deleted version exists (create with a caller-chosen id). */
  mustNotExist?: boolean;
  /** Store a deletion (a tombstone version: kept in history, no longer read as current or found by search). */
  delete?: boolean;
  /**
   * The id was just generated for this write (a random UUID): no version of it exists, here or on the ledger, so
   * `stage` looks for none (two lookups per record saved on import). A wrong claim fails the write whole: the
   * vault's (type, id) is unique.
   */
  newId?: boolean;
}

/** What goes on the ledger for one stored version (a `record.anchor` entry without the custodian). */
export interface AnchorEntry {
  resourceType: string;
  resourceId: string;
  version: string;
  commitment: string;
  labels: string[];
  date?: string;
  patient: string | null;
}

export interface StagedItem {
  anchor: AnchorEntry;
  /** The version as stored (meta set), for the response. */
  resource: VaultResource;
  version: number;
  lastUpdated: string;
  /** No earlier version existed (FHIR 201 rather than 200). */
  created: boolean;
  deleted: boolean;
}

/** Versions written as pending by `stage`, to be anchored and then confirmed or aborted. */
export interface StagedWrite {
  readonly stage: number;
  readonly items: readonly StagedItem[];
  /** The anchor entries to put on the ledger, in item order. */
  readonly anchors: readonly AnchorEntry[];
}

/** One stored version as read back: decrypted and checked against its anchor. */
export interface VaultRecord {
  resource: VaultResource;
  patient: string | null;
  labels: string[];
  date?: string;
  version: number;
  lastUpdated: string;
  commitment: string;
  /**
   * The commitment's opening (64 hex): with `resource` it recomputes `commitment`. Handed only to another custodian's
   * node so it can check the record against this custodian's anchor on its own ledger copy; never served to clients.
   */
  salt: string;
  deleted: boolean;
  /** `resource` as canonical JSON, exactly as committed: what a read can send without serialising it again. */
  json: string;
}

export interface ResourceRef {
  type: string;
  id: string;
}

export interface ErasureResult {
  erased: ResourceRef[];
  kept: ResourceRef[];
}

export interface VaultOptions {
  keys: KeyProvider;
  /** The commitment anchored on the ledger for this custodian's version, if any. Consulted on every read. */
  anchorOf: (type: string, id: string, version: string) => string | undefined;
  /**
   * At open, decides the fate of versions left pending by a crash: anchored → confirmed, otherwise deleted.
   * Defaults to `anchorOf(…) === commitment`. Open the vault after the node has caught up with its orderer.
   */
  isAnchored?: (type: string, id: string, version: string, commitment: string) => boolean;
  /**
   * The highest version of a resource anchored on the ledger for this custodian (0: none). `stage` numbers a new
   * version above it, so a version a crash or an abort burned is never reused; one lookup per item. Without it,
   * `stage` asks `anchorOf` version by version.
   */
  latestAnchored?: (type: string, id: string) => number;
  /** Clock for `meta.lastUpdated` and for `ap` on dates (ms). */
  now?: () => number;
}

// ---- errors ---------------------------------------------------------------------------------------------------

/** Bad input to the vault (invalid id, index value, query). Messages carry no resource content. */
export class VaultError extends Error {
  override name = "VaultError";
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * A write that contradicts what is stored. Codes: `version-conflict` (If-Match differs: FHIR 412),
 * `already-exists` (mustNotExist: 412/409), `pending` (another write of the resource is being anchored: 409),
 * `not-found` (deleting or If-Match on nothing), `patient-mismatch` (a version for another patient than earlier ones).
 */
export class VaultConflictError extends VaultError {
  override name = "VaultConflictError";
  readonly resourceType: string;
  readonly resourceId: string;
  constructor(code: string, type: string, id: string, message: string) {
    super(code, message);
    this.resourceType = type;
    this.resourceId = id;
  }
}

/** A stored record that fails its checks (ciphertext altered, rows swapped, commitment not on the ledger). */
export class VaultIntegrityError extends VaultError {
  override name = "VaultIntegrityError";
  constructor(message: string) {
    super("integrity", message);
  }
}

// ---- constants ------------------------------------------------------------------------------------------------

/**
 * String search indexes hashed prefixes of 1..24 code points of the normalised value (plus the whole value for
 * `:exact`). A starts-with search longer than 24 code points is matched on its first 24, so it may over-match
 * values that share those 24 and differ later — the FHIR layer may filter such rare results after decryption.
 */
export const STRING_PREFIX_CAP = 24;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const BOX_FORMAT = 1;
const SCHEMA_VERSION = "1";
/** Unwrapped data keys kept in memory; beyond this the cache starts over (a re-unwrap is one AES-GCM op). */
const KEY_CACHE_MAX = 50_000;
/** Blind-index hashes remembered by input (about 100 bytes each). */
const BLIND_MEMO_MAX = 100_000;
/** Values of one search clause, and ids of one query. */
const MAX_QUERY_VALUES = 1000;
/** Versions per resource are numbered below 2^20: the versions table keys rows by `rid * 2^20 + version`. */
const VERSION_BITS = 20;
const MAX_VERSION = 2 ** VERSION_BITS - 1;
const VERSION_SPAN = 2 ** VERSION_BITS;
/** Rows per multi-row INSERT: fewer calls from JS into SQLite. */
const INSERT_CHUNK = 200;

const RESOURCE_TYPE_RE = /^[A-Z][A-Za-z]{1,63}$/;
const FHIR_ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;
const PATIENT_RE = new RegExp(UUID_PATTERN);
const LABEL_RE = /^[A-Za-z0-9_-]{1,32}$/;
const DATE_RE = /^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$/;
const PARAM_RE = /^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$/;
/** The key row of records with no patient (and a name no pseudonym can have). */
const CUSTODIAN_KEY = "";

const DATA_KEY_AAD = "careledger/vault/data-key/v1\n";
const RECORD_AAD = "careledger/vault/record/v1\n";
const KEY_CHECK_AAD = "careledger/vault/key-check/v1";

type Hash = Buffer;

interface ResourceRow {
  rid: number;
  patient: string | null;
  current: number;
  pending: number | null;
  deleted: number;
}

interface VersionRow {
  rid: number;
  version: number;
  last_updated: number;
  deleted: number;
  box: Uint8Array;
}

interface IndexedRow {
  rid: number;
  version: number;
  ix: Uint8Array;
}

/** A pending version to settle (confirm or abort). */
interface PendingRef {
  stage: number;
  rid: number;
  version: number;
  lastUpdated: number;
  deleted: boolean;
}

// ---- the vault ------------------------------------------------------------------------------------------------

export class Vault {
  private readonly db: DatabaseSync;
  private readonly keys: KeyProvider;
  private readonly blindHasher: BlindHasher;
  private readonly anchorOf: VaultOptions["anchorOf"];
  private readonly latestAnchored: VaultOptions["latestAnchored"];
  private readonly now: () => number;
  private readonly dataKeys = new Map<string, KeyObject>();
  private readonly paramKeys = new Map<string, number>();
  private readonly blindMemo = new Map<string, Hash>();
  private readonly stmts: ReturnType<typeof prepare>;
  private readonly queryCache = new Map<string, StatementSync>();
  private nextStage: number;
  private closed = false;
  private readonly checkpointer: Checkpointer;
  /** What open did with versions a crash had left pending. */
  readonly recovered: { confirmed: number; removed: number };

  private constructor(db: DatabaseSync, options: VaultOptions) {
    this.db = db;
    this.keys = options.keys;
    const indexKey = options.keys.blindIndexKey();
    this.blindHasher = new BlindHasher(indexKey);
    indexKey.fill(0);
    this.anchorOf = options.anchorOf;
    this.latestAnchored = options.latestAnchored;
    this.now = options.now ?? Date.now;
    this.stmts = prepare(db);
    this.loadParams();
    this.checkKey();
    this.nextStage =
      Number((db.prepare("SELECT coalesce(max(stage), 0) AS s FROM pending").get() as { s: number }).s) + 1;
    const isAnchored =
      options.isAnchored ?? ((type, id, version, commitment) => this.anchorOf(type, id, version) === commitment);
    this.recovered = this.recoverPending(isAnchored);
    this.checkpointer = new Checkpointer(db.location() as string);
  }

  /**
   * Opens (or creates, mode 0600) the vault database and settles versions a crash left pending. Throws
   * `VaultKeyError` if the key provider is not the one the vault was created with.
   */
  static open(path: string, options: VaultOptions): Vault {
    // Create the file ourselves so that it (and SQLite's -wal/-shm, which copy its mode) is private.
    closeSync(openSync(path, "a", 0o600));
    const db = new DatabaseSync(path);
    try {
      db.exec("PRAGMA busy_timeout = 5000");
      // Checkpoints run on a worker thread (store/checkpointer.ts), not inside whichever stage's COMMIT crosses the
      // threshold: copying ~32 MB of WAL back with its fsyncs stalled an import's main thread each time.
      db.exec(CHECKPOINTED_WRITER_PRAGMAS);
      db.exec("PRAGMA synchronous = FULL");
      // Deleted rows are overwritten, not left in free pages: erasure must not leave index hashes or ciphertext.
      db.exec("PRAGMA secure_delete = ON");
      db.exec("PRAGMA foreign_keys = OFF");
      db.exec("PRAGMA cache_size = -32768");
      createSchema(db, options.keys);
      return new Vault(db, options);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.dataKeys.clear();
    this.checkpointer.stopBeforeClose(this.db);
    this.db.close();
  }

  // ---- writes -------------------------------------------------------------------------------------------------

  /**
   * Writes every item as a *pending* version in one transaction (all or nothing) and returns what to anchor. Pending
   * versions are not served and not searchable until `confirm`; `abort` removes them. Throws `VaultError` for bad
   * input and `VaultConflictError` for version conflicts, having written nothing.
   */
  stage(items: readonly PutItem[]): StagedWrite {
    this.assertOpen();
    if (items.length === 0) throw new VaultError("invalid", "nothing to stage");
    const seen = new Set<string>();
    for (const [i, item] of items.entries()) {
      validateItem(item, i);
      const key = `${item.resource.resourceType}/${item.resource.id}`;
      if (seen.has(key)) throw new VaultError("invalid", `item ${i}: ${key} appears twice in one write`);
      seen.add(key);
    }
    const nowMs = this.now();
    const lastUpdated = new Date(nowMs).toISOString();
    const random = randomBytes(items.length * (32 + IV_BYTES));
    const stage = this.nextStage++;
    const s = this.stmts;
    const staged: StagedItem[] = [];
    const hashRows: SQLInputValue[] = [];
    const dateRows: SQLInputValue[] = [];
    const numberRows: SQLInputValue[] = [];
    const pendingRows: SQLInputValue[] = [];
    const resourceRows: SQLInputValue[] = [];
    const versionRows: SQLInputValue[] = [];
    let nextRid: number | undefined;
    const createdKeys: string[] = [];
    this.db.exec("BEGIN IMMEDIATE");
    try {
      for (const [i, item] of items.entries()) {
        const type = item.resource.resourceType;
        const id = item.resource.id as string;
        const existing = item.newId ? undefined : (s.resourceByRef.get(type, id) as ResourceRow | undefined);
        checkPreconditions(item, type, id, existing);
        let version = (existing ? Math.max(existing.current, existing.pending ?? 0) : 0) + 1;
        // A version a crash or an abort burned may already be on the ledger; the ledger refuses a second anchor.
        if (!item.newId) {
          if (this.latestAnchored) version = Math.max(version, this.latestAnchored(type, id) + 1);
          else while (this.anchorOf(type, id, String(version)) !== undefined) version++;
        }
        if (version > MAX_VERSION) throw new VaultError("limit", `${type}/${id}: more than ${MAX_VERSION} versions`);
        let rid: number;
        if (existing) {
          rid = existing.rid;
          s.setPending.run(version, rid);
        } else {
          // Rows of new resources and of every version go in with multi-row INSERTs at the end; rids are ours to
          // assign inside this write transaction.
          nextRid ??= Number((s.maxRid.get() as { m: number }).m) + 1;
          rid = nextRid++;
          resourceRows.push(rid, type, id, item.patient, version);
        }
        const keyName = item.patient ?? CUSTODIAN_KEY;
        const created = !this.dataKeys.has(keyName) && s.keyByPatient.get(keyName) === undefined;
        if (created) createdKeys.push(keyName);
        const dataKey = this.dataKey(keyName, true);
        const resource: VaultResource = {
          ...item.resource,
          meta: { ...item.resource.meta, versionId: String(version), lastUpdated },
        };
        const salt = random.toString("hex", i * 32, i * 32 + 32);
        const iv = random.subarray(items.length * 32 + i * IV_BYTES, items.length * 32 + (i + 1) * IV_BYTES);
        const resourceJson = canonicalJson(resource);
        const commitment = recordCommitmentOfJson(salt, resourceJson);
        const plaintext = payloadJson(resourceJson, salt, item.labels, item.date);
        const box = seal(dataKey, iv, plaintext, recordAad(type, id, version, item.patient));
        const deleted = item.delete === true;
        const ix = deleted ? null : this.indexRows(type, item.index, rid, version, hashRows, dateRows, numberRows);
        versionRows.push(rid * VERSION_SPAN + version, nowMs, deleted ? 1 : 0, box, ix);
        pendingRows.push(stage, rid, version, nowMs, deleted ? 1 : 0, Buffer.from(commitment, "hex"));
        const anchor: AnchorEntry = {
          resourceType: type,
          resourceId: id,
          version: String(version),
          commitment,
          labels: [...item.labels],
          patient: item.patient,
        };
        if (item.date !== undefined) anchor.date = item.date;
        staged.push({
          anchor,
          resource,
          version,
          lastUpdated,
          created: existing === undefined || existing.current === 0,
          deleted,
        });
      }
      insertMany(this.db, s.multi, "resources (rid, type, id, patient, pending)", 5, resourceRows, false);
      insertMany(this.db, s.multi, "versions (vkey, last_updated, deleted, box, ix)", 5, versionRows, false);
      insertMany(this.db, s.multi, "pending", 6, pendingRows);
      insertMany(this.db, s.multi, "idx_hash", 3, hashRows);
      insertMany(this.db, s.multi, "idx_date", 5, dateRows);
      insertMany(this.db, s.multi, "idx_number", 4, numberRows);
      this.db.exec("COMMIT");
    } catch (error) {
      this.db.exec("ROLLBACK");
      for (const k of createdKeys) this.dataKeys.delete(k);
      this.loadParams();
      // The unique (type, id) caught an item whose id was given as new but is stored: name it.
      const [i, taken] = [...items.entries()].find(
        ([, item]) => item.newId && s.resourceByRef.get(item.resource.resourceType, item.resource.id as string),
      ) ?? [undefined, undefined];
      if (taken !== undefined) {
        throw new VaultError(
          "invalid",
          `item ${i}: ${taken.resource.resourceType}/${taken.resource.id} is stored already, yet given as a new id`,
        );
      }
      throw error;
    }
    return { stage, items: staged, anchors: staged.map((x) => x.anchor) };
  }

  /** Marks a staged write as anchored: its versions become current, are served and searchable. */
  confirm(write: StagedWrite): void {
    this.assertOpen();
    const refs = this.pendingOf(write);
    this.transaction(() => this.confirmRefs(refs));
  }

  /** Removes a staged write's pending versions (its anchor failed). */
  abort(write: StagedWrite): void {
    this.assertOpen();
    const refs = this.pendingOf(write);
    this.transaction(() => this.abortRefs(refs));
  }

  private pendingOf(write: StagedWrite): PendingRef[] {
    const rows = this.stmts.pendingOfStage.all(write.stage) as unknown as (VersionRow & { stage: number })[];
    if (rows.length !== write.items.length) {
      throw new VaultError(
        "not-pending",
        `staged write ${write.stage} is no longer pending (confirmed, aborted or erased)`,
      );
    }
    return rows.map(pendingRef);
  }

  private confirmRefs(refs: PendingRef[]): void {
    const s = this.stmts;
    for (const r of refs) {
      s.dropPending.run(r.stage, r.rid);
      s.makeCurrent.run(r.version, r.lastUpdated, r.deleted ? 1 : 0, r.rid);
      // Only the current version is indexed; a first version has nothing older to drop.
      if (r.version > 1)
        for (const old of s.indexedBefore.all(r.rid, r.version) as unknown as IndexedRow[]) this.dropIndex(old);
    }
  }

  private abortRefs(refs: PendingRef[]): void {
    const s = this.stmts;
    for (const r of refs) {
      for (const v of s.indexedBefore.all(r.rid, r.version + 1) as unknown as IndexedRow[]) {
        if (v.version === r.version) this.dropIndex(v);
      }
      s.deleteVersion.run(r.rid, r.version);
      s.dropPending.run(r.stage, r.rid);
      s.clearPending.run(r.rid);
      s.deleteIfEmpty.run(r.rid);
    }
  }

  private recoverPending(isAnchored: NonNullable<VaultOptions["isAnchored"]>): { confirmed: number; removed: number } {
    const rows = this.db
      .prepare(
        `SELECT p.stage, p.rid, p.version, p.last_updated, p.deleted, p.commitment, r.type, r.id
         FROM pending p JOIN resources r ON r.rid = p.rid ORDER BY p.stage, p.rid`,
      )
      .all() as unknown as (VersionRow & { stage: number; commitment: Uint8Array; type: string; id: string })[];
    if (rows.length === 0) return { confirmed: 0, removed: 0 };
    const confirm: PendingRef[] = [];
    const remove: PendingRef[] = [];
    for (const r of rows) {
      const ref = pendingRef(r);
      const anchored = isAnchored(r.type, r.id, String(r.version), Buffer.from(r.commitment).toString("hex"));
      (anchored ? confirm : remove).push(ref);
    }
    this.transaction(() => {
      this.confirmRefs(confirm);
      this.abortRefs(remove);
    });
    return { confirmed: confirm.length, removed: remove.length };
  }

  // ---- reads --------------------------------------------------------------------------------------------------

  /** The current version (deleted ones too, flagged), or undefined if there is none (or it is still pending). */
  read(type: string, id: string): VaultRecord | undefined {
    this.assertOpen();
    // One lookup for the common case; a resource whose current version row is missing falls through to the checks.
    const hit = this.stmts.currentByRef.get(type, id) as (VersionRow & { patient: string | null }) | undefined;
    if (hit) return this.unsealRecord(type, id, hit.patient, hit);
    const row = this.stmts.resourceByRef.get(type, id) as ResourceRow | undefined;
    if (!row || row.current === 0) return undefined;
    const v = this.stmts.version.get(row.rid, row.current) as VersionRow | undefined;
    if (!v) throw new VaultIntegrityError(`${type}/${id}: its current version ${row.current} is missing`);
    return this.unsealRecord(type, id, row.patient, v);
  }

  /** One anchored version, or undefined. */
  vread(type: string, id: string, version: number): VaultRecord | undefined {
    this.assertOpen();
    if (!Number.isSafeInteger(version) || version < 1 || version > MAX_VERSION) return undefined;
    const row = this.stmts.resourceByRef.get(type, id) as ResourceRow | undefined;
    if (!row) return undefined;
    const v = this.stmts.version.get(row.rid, version) as VersionRow | undefined;
    if (!v || row.pending === version) return undefined;
    return this.unsealRecord(type, id, row.patient, v);
  }

  /** Every anchored version, newest first; any version failing its checks fails the whole history. */
  history(type: string, id: string): VaultRecord[] {
    this.assertOpen();
    const row = this.stmts.resourceByRef.get(type, id) as ResourceRow | undefined;
    if (!row) return [];
    const versions = this.stmts.history.all(row.rid) as unknown as VersionRow[];
    return versions.filter((v) => v.version !== row.pending).map((v) => this.unsealRecord(type, id, row.patient, v));
  }

  /** Current, non-deleted resources of a patient (what `$everything` and erasure start from). */
  byPatient(patient: string): ResourceRef[] {
    this.assertOpen();
    return (this.stmts.byPatient.all(patient) as { type: string; id: string }[]).map((r) => ({
      type: r.type,
      id: r.id,
    }));
  }

  /** Decrypts one version and checks it against its anchor on the ledger. */
  private unsealRecord(type: string, id: string, patient: string | null, v: VersionRow): VaultRecord {
    const where = `${type}/${id} version ${v.version}`;
    let key: KeyObject;
    try {
      key = this.dataKey(patient ?? CUSTODIAN_KEY, false);
    } catch (error) {
      if (error instanceof VaultKeyError) throw new VaultIntegrityError(`${where}: its data key does not unwrap`);
      throw error;
    }
    const plain = unseal(key, view(v.box), recordAad(type, id, v.version, patient));
    if (plain === undefined) throw new VaultIntegrityError(`${where}: ciphertext does not authenticate`);
    const text = plain.toString("utf8");
    let payload: { resource: VaultResource; salt: string; labels: string[]; date?: string };
    try {
      payload = JSON.parse(text);
    } catch {
      throw new VaultIntegrityError(`${where}: plaintext is not JSON`);
    }
    const resource = payload?.resource;
    if (
      typeof resource !== "object" ||
      resource === null ||
      resource.resourceType !== type ||
      resource.id !== id ||
      resource.meta?.versionId !== String(v.version) ||
      typeof payload.salt !== "string" ||
      !/^[0-9a-f]{64}$/.test(payload.salt)
    ) {
      throw new VaultIntegrityError(`${where}: plaintext does not describe this version`);
    }
    // The plaintext was written as canonical JSON around the resource's canonical JSON: hashing that slice of it
    // saves re-serialising the resource on every read. If the slice is not what was committed, the hash differs.
    const resourceJson =
      Array.isArray(payload.labels) && (payload.date === undefined || typeof payload.date === "string")
        ? resourceJsonIn(text, payload.salt, payload.labels, payload.date)
        : undefined;
    const json = resourceJson ?? canonicalJson(resource);
    const commitment = recordCommitmentOfJson(payload.salt, json);
    const anchored = this.anchorOf(type, id, String(v.version));
    if (anchored === undefined) throw new VaultIntegrityError(`${where}: not anchored on the ledger`);
    if (anchored.length !== commitment.length || !timingSafeEqual(Buffer.from(anchored), Buffer.from(commitment))) {
      throw new VaultIntegrityError(`${where}: does not match its commitment on the ledger`);
    }
    const record: VaultRecord = {
      resource,
      patient,
      labels: payload.labels,
      version: v.version,
      lastUpdated: String(resource.meta?.lastUpdated),
      commitment,
      salt: payload.salt,
      deleted: v.deleted === 1,
      json,
    };
    if (payload.date !== undefined) record.date = payload.date;
    return record;
  }

  // ---- search -------------------------------------------------------------------------------------------------

  /**
   * Ids of current, non-deleted resources matching every clause (values within a clause OR-ed), in sort order
   * (default `_lastUpdated` descending; ties by id). Semantics per `types.ts`; dates and numbers compare as FHIR
   * ranges: target `[lo, hi]` against query `[a, b]` — eq: a ≤ lo ∧ hi ≤ b; ne: not eq; gt: hi > b; lt: lo < a;
   * ge: gt ∨ eq; le: lt ∨ eq; sa: lo > b; eb: hi < a; ap: the ranges overlap once the query is widened by 10% of
   * its distance from now (dates) or of its value (numbers). A resource matches if any of its values does.
   */
  search(q: SearchQuery): string[] {
    this.assertOpen();
    if (!RESOURCE_TYPE_RE.test(q.resourceType)) throw new VaultError("invalid-query", "resourceType is not valid");
    const type = q.resourceType;
    const where: string[] = ["r.type = ?", "r.current > 0", "r.deleted = 0"];
    const params: SQLInputValue[] = [type];
    const hashed = q.clauses.some((c) => c.kind !== "date" && c.kind !== "number" && !(c.kind === "token" && c.not));
    let driving = hashed;
    // Hash clauses first, then ranges: with a hash clause to drive the query, a range is checked per candidate
    // through the (rid, version) index instead of listing every matching date of the type.
    const ordered = [...q.clauses].sort((x, y) => rangeKind(x) - rangeKind(y));
    for (const clause of ordered) {
      if (!PARAM_RE.test(clause.param)) throw new VaultError("invalid-query", "a search parameter name is not valid");
      if (clause.anyOf.length === 0 || clause.anyOf.length > MAX_QUERY_VALUES) {
        throw new VaultError("invalid-query", `search parameter ${clause.param}: 1 to ${MAX_QUERY_VALUES} values`);
      }
      if (clause.kind === "date" || clause.kind === "number") {
        const pkey = this.paramKeys.get(`${type}\0${clause.param}`);
        const [table, lo, hi] =
          clause.kind === "date" ? ["idx_date", "d.low", "d.high"] : ["idx_number", "d.value", "d.value"];
        const ors = clause.anyOf.map((range) =>
          this.rangeCondition(lo, hi, range, clause.kind === "date", params, clause.param),
        );
        if (pkey === undefined) return [];
        where.push(
          hashed
            ? `EXISTS (SELECT 1 FROM ${table} d INDEXED BY ${table}_rid WHERE d.rid = r.rid AND d.version = r.current
               AND d.pkey = ${pkey} AND (${ors.join(" OR ")}))`
            : `r.rid IN (SELECT d.rid FROM ${table} d JOIN resources c ON c.rid = d.rid AND c.current = d.version
               WHERE d.pkey = ${pkey} AND (${ors.join(" OR ")}))`,
        );
        driving = true;
      } else {
        const hashes = this.queryHashes(type, clause);
        where.push(
          `r.rid ${clause.kind === "token" && clause.not ? "NOT IN" : "IN"} (SELECT i.rid FROM idx_hash i JOIN resources c
           ON c.rid = i.rid AND c.current = i.version WHERE i.hash IN (${hashes.map(() => "?").join(",")}))`,
        );
        params.push(...hashes);
      }
    }
    if (q.ids !== undefined) {
      if (q.ids.length === 0) return [];
      if (q.ids.length > MAX_QUERY_VALUES)
        throw new VaultError("invalid-query", `_id: at most ${MAX_QUERY_VALUES} values`);
      where.push(`r.id IN (${q.ids.map(() => "?").join(",")})`);
      params.push(...q.ids);
    }
    for (const range of q.lastUpdated ?? []) {
      where.push(this.rangeCondition("r.last_updated", "r.last_updated", range, true, params, "_lastUpdated"));
    }
    const order: string[] = [];
    for (const s of q.sort ?? [{ param: "_lastUpdated", descending: true }]) {
      const dir = s.descending ? "DESC" : "ASC";
      if (s.param === "_lastUpdated") order.push(`r.last_updated ${dir}`);
      else if (s.param === "_id") order.push(`r.id ${dir}`);
      else {
        // Hashes have no order: only dates (and numbers) sort. A parameter nothing has indexed sorts nothing.
        if (!PARAM_RE.test(s.param)) throw new VaultError("invalid-query", "a sort parameter name is not valid");
        const pkey = this.paramKeys.get(`${type}\0${s.param}`);
        if (pkey === undefined) continue;
        const numeric = this.stmts.hasNumbers.get(pkey) !== undefined;
        const [table, low, high] = numeric ? ["idx_number", "value", "value"] : ["idx_date", "low", "high"];
        const agg = s.descending ? `max(d.${high})` : `min(d.${low})`;
        order.push(
          `(SELECT ${agg} FROM ${table} d INDEXED BY ${table}_rid WHERE d.rid = r.rid AND d.version = r.current AND d.pkey = ${pkey}) ${dir} NULLS LAST`,
        );
      }
    }
    order.push("r.id ASC");
    // With a selective clause, drive the query from its matches (looked up by rid), not from every resource of the
    // type: `+r.type` keeps SQLite off the (type, id) index, which it would otherwise prefer. `_id` lists use it.
    if (driving && q.ids === undefined) where[0] = "+r.type = ?";
    const sql = `SELECT r.id FROM resources r WHERE ${where.join(" AND ")} ORDER BY ${order.join(", ")}`;
    return (this.query(sql).all(...params) as { id: string }[]).map((r) => r.id);
  }

  private rangeCondition(
    lo: string,
    hi: string,
    range: { op: Comparator; low: number; high: number },
    isDate: boolean,
    params: SQLInputValue[],
    param: string,
  ): string {
    let { low: a, high: b } = range;
    if (!Number.isFinite(a) || !Number.isFinite(b) || a > b) {
      throw new VaultError("invalid-query", `search parameter ${param}: a range needs finite low ≤ high`);
    }
    const eq = `(${lo} >= ? AND ${hi} <= ?)`;
    switch (range.op) {
      case "eq":
        params.push(a, b);
        return eq;
      case "ne":
        params.push(a, b);
        return `NOT ${eq}`;
      case "gt":
        params.push(b);
        return `${hi} > ?`;
      case "lt":
        params.push(a);
        return `${lo} < ?`;
      case "ge":
        params.push(b, a, b);
        return `(${hi} > ? OR ${eq})`;
      case "le":
        params.push(a, a, b);
        return `(${lo} < ? OR ${eq})`;
      case "sa":
        params.push(b);
        return `${lo} > ?`;
      case "eb":
        params.push(a);
        return `${hi} < ?`;
      case "ap": {
        const mid = (a + b) / 2;
        const margin = Math.abs(isDate ? this.now() - mid : mid) * 0.1;
        a -= margin;
        b += margin;
        params.push(b, a);
        return `(${lo} <= ? AND ${hi} >= ?)`;
      }
      default:
        throw new VaultError("invalid-query", `search parameter ${param}: unknown comparator`);
    }
  }

  private queryHashes(type: string, clause: Exclude<SearchClause, { kind: "date" | "number" }>): Hash[] {
    const p = clause.param;
    switch (clause.kind) {
      case "token":
        return clause.anyOf.map((t) => {
          if (t.system !== undefined && t.code !== undefined) {
            checkValue(t.system, p);
            checkValue(t.code, p);
            return this.blind(type, p, "token", `${t.system}\0${t.code}`);
          }
          if (t.code !== undefined) return this.blind(type, p, "token-code", checkValue(t.code, p));
          if (t.system !== undefined && t.system !== "")
            return this.blind(type, p, "token-system", checkValue(t.system, p));
          throw new VaultError("invalid-query", `search parameter ${p}: a token needs a code or a system`);
        });
      case "string":
        return clause.anyOf.map((v) => {
          if (checkValue(v, p) === "") throw new VaultError("invalid-query", `search parameter ${p}: empty string`);
          return clause.exact
            ? this.blind(type, p, "string", v)
            : this.blind(type, p, "string-prefix", codePoints(v).slice(0, STRING_PREFIX_CAP).join(""));
        });
      case "reference":
        return clause.anyOf.map((v) => this.blind(type, p, "reference", checkValue(v, p)));
      default:
        throw new VaultError("invalid-query", "unknown search parameter kind");
    }
  }

  private query(sql: string): StatementSync {
    let stmt = this.queryCache.get(sql);
    if (!stmt) {
      if (this.queryCache.size >= 256) this.queryCache.clear();
      stmt = this.db.prepare(sql);
      this.queryCache.set(sql, stmt);
    }
    return stmt;
  }

  // ---- erasure ------------------------------------------------------------------------------------------------

  /**
   * GDPR Art. 17 erasure of a patient: every resource whose type `keep` does not retain is deleted (all versions,
   * index rows), and the patient's data key is destroyed — crypto-shredding, so copies of the ciphertext anywhere
   * (backups, old WAL frames) become unreadable, and the salts inside them with it, leaving the ledger's commitments
   * unlinkable. Retained records are re-encrypted under a fresh data key first. Returns what was erased and kept.
   */
  erasePatient(patient: string, options: { keep?: (type: string) => boolean } = {}): ErasureResult {
    this.assertOpen();
    if (!PATIENT_RE.test(patient)) throw new VaultError("invalid", "patient must be a ledger pseudonym (UUID)");
    const rows = this.stmts.allOfPatient.all(patient) as { rid: number; type: string; id: string; current: number }[];
    const keep = options.keep ?? (() => false);
    const result: ErasureResult = { erased: [], kept: [] };
    const keptRids: number[] = [];
    this.transaction(() => {
      for (const r of rows) {
        if (keep(r.type)) {
          keptRids.push(r.rid);
          if (r.current > 0) result.kept.push({ type: r.type, id: r.id });
        } else {
          this.deleteResource(r.rid);
          if (r.current > 0) result.erased.push({ type: r.type, id: r.id });
        }
      }
      this.rekey(patient, keptRids);
    });
    this.foldWal();
    return result;
  }

  /**
   * Erases single records (all versions, index rows). The patient's remaining records are re-encrypted under a fresh
   * data key so that old copies of the erased ciphertext become unreadable too. Unknown refs are skipped; returns
   * what was erased.
   */
  eraseResources(refs: readonly ResourceRef[]): ResourceRef[] {
    this.assertOpen();
    const erased: ResourceRef[] = [];
    const patients = new Set<string>();
    this.transaction(() => {
      for (const ref of refs) {
        const row = this.stmts.resourceByRef.get(ref.type, ref.id) as ResourceRow | undefined;
        if (!row) continue;
        this.deleteResource(row.rid);
        if (row.current > 0) erased.push({ type: ref.type, id: ref.id });
        // Records without a patient share the custodian key: they are deleted (securely), not re-keyed.
        if (row.patient !== null) patients.add(row.patient);
      }
      for (const patient of patients) {
        const rest = (this.stmts.allOfPatient.all(patient) as { rid: number }[]).map((r) => r.rid);
        this.rekey(patient, rest);
      }
    });
    this.foldWal();
    return erased;
  }

  private deleteResource(rid: number): void {
    const s = this.stmts;
    for (const v of s.indexedBefore.all(rid, MAX_VERSION + 1) as unknown as IndexedRow[]) this.dropIndex(v);
    s.deleteVersions.run(rid);
    s.dropPendingOfRid.run(rid);
    s.deleteResource.run(rid);
  }

  /** Removes one version's index rows (its hashes are listed in its `ix`). */
  private dropIndex(v: IndexedRow): void {
    const s = this.stmts;
    const ix = Buffer.from(v.ix);
    for (let k = 0; k + BLIND_HASH_BYTES <= ix.length; k += BLIND_HASH_BYTES) {
      s.dropHash.run(ix.subarray(k, k + BLIND_HASH_BYTES), v.rid, v.version);
    }
    s.dropDatesOf.run(v.rid, v.version);
    s.dropNumbersOf.run(v.rid, v.version);
    s.clearIx.run(v.rid, v.version);
  }

  /** Replaces a patient's data key, re-encrypting the given resources' versions; no resources → the key is destroyed. */
  private rekey(patient: string, rids: number[]): void {
    const old = rids.length > 0 ? this.dataKey(patient, false) : undefined;
    this.dataKeys.delete(patient);
    this.stmts.deleteKey.run(patient);
    if (old === undefined) return;
    const fresh = this.dataKey(patient, true);
    for (const rid of rids) {
      const { type, id } = this.stmts.refOfRid.get(rid) as { type: string; id: string };
      for (const v of this.stmts.allVersions.all(rid) as unknown as VersionRow[]) {
        const aad = recordAad(type, id, v.version, patient);
        const plain = unseal(old, view(v.box), aad);
        if (plain === undefined)
          throw new VaultIntegrityError(`${type}/${id} version ${v.version}: ciphertext does not authenticate`);
        this.stmts.setBox.run(rid, v.version, seal(fresh, randomBytes(IV_BYTES), plain, aad));
      }
    }
  }

  /** Folds the WAL into the database and truncates it, so erased rows' old page images do not linger in it. */
  private foldWal(): void {
    try {
      this.db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch {
      // Busy readers: the next checkpoint folds it; the erased data is already unreadable without its key.
    }
  }

  // ---- keys and hashes ----------------------------------------------------------------------------------------

  /** The (cached) data key of a patient, or of the custodian for `""`; created when `create` and absent. */
  private dataKey(name: string, create: boolean): KeyObject {
    const cached = this.dataKeys.get(name);
    if (cached) return cached;
    const aad = DATA_KEY_AAD + name;
    const row = this.stmts.keyByPatient.get(name) as { wrapped: Uint8Array } | undefined;
    let raw: Buffer;
    if (row) raw = this.keys.unwrap(Buffer.from(row.wrapped), aad);
    else if (create) {
      raw = randomBytes(32);
      this.stmts.insertKey.run(name, this.keys.wrap(raw, aad));
    } else throw new VaultKeyError("no data key");
    const key = createSecretKey(raw);
    raw.fill(0);
    if (this.dataKeys.size >= KEY_CACHE_MAX) this.dataKeys.clear();
    this.dataKeys.set(name, key);
    return key;
  }

  /**
   * HMAC-SHA256 under the blind-index key over `type \0 param \0 kind \0 value`, truncated to 16 bytes. Memoised:
   * codes, systems and patient references repeat across a patient's records.
   */
  private blind(type: string, param: string, kind: string, value: string): Hash {
    const input = `${type}\0${param}\0${kind}\0${value}`;
    let hash = this.blindMemo.get(input);
    if (hash === undefined) {
      hash = this.blindHasher.digest(input);
      if (this.blindMemo.size >= BLIND_MEMO_MAX) this.blindMemo.clear();
      this.blindMemo.set(input, hash);
    }
    return hash;
  }

  private paramKey(type: string, param: string): number {
    const name = `${type}\0${param}`;
    let pkey = this.paramKeys.get(name);
    if (pkey === undefined) {
      pkey = Number(this.stmts.insertParam.run(type, param).lastInsertRowid);
      this.paramKeys.set(name, pkey);
    }
    return pkey;
  }

  /** Appends a version's index rows (flat, column by column) to the batches `stage` inserts at the end. */
  private indexRows(
    type: string,
    index: readonly IndexEntry[],
    rid: number,
    version: number,
    hashes: SQLInputValue[],
    dates: SQLInputValue[],
    numbers: SQLInputValue[],
  ): Buffer {
    const start = hashes.length;
    for (const e of index) {
      const p = e.param;
      switch (e.kind) {
        case "token":
          hashes.push(this.blind(type, p, "token", `${e.system}\0${e.code}`), rid, version);
          hashes.push(this.blind(type, p, "token-code", e.code), rid, version);
          if (e.system !== "") hashes.push(this.blind(type, p, "token-system", e.system), rid, version);
          break;
        case "string": {
          hashes.push(this.blind(type, p, "string", e.value), rid, version);
          const cps = codePoints(e.value);
          let prefix = "";
          for (let n = 0; n < cps.length && n < STRING_PREFIX_CAP; n++) {
            prefix += cps[n];
            hashes.push(this.blind(type, p, "string-prefix", prefix), rid, version);
          }
          break;
        }
        case "reference":
          hashes.push(this.blind(type, p, "reference", e.value), rid, version);
          break;
        case "date":
          dates.push(this.paramKey(type, p), e.low, e.high, rid, version);
          break;
        case "number":
          numbers.push(this.paramKey(type, p), e.value, rid, version);
          break;
      }
    }
    const own: Buffer[] = [];
    for (let k = start; k < hashes.length; k += 3) own.push(hashes[k] as Buffer);
    return Buffer.concat(own);
  }

  private loadParams(): void {
    this.paramKeys.clear();
    for (const row of this.db.prepare("SELECT pkey, type, param FROM params").iterate()) {
      const r = row as { pkey: number; type: string; param: string };
      this.paramKeys.set(`${r.type}\0${r.param}`, r.pkey);
    }
  }

  /** Fails fast when the key provider is not the one this vault was created with. */
  private checkKey(): void {
    const row = this.db.prepare("SELECT value FROM meta WHERE key = 'key_check'").get() as { value: Uint8Array };
    try {
      this.keys.unwrap(Buffer.from(row.value), KEY_CHECK_AAD);
    } catch {
      throw new VaultKeyError("the vault key does not match this vault database");
    }
  }

  private transaction(fn: () => void): void {
    try {
      inWriteTransaction(this.db, fn);
    } catch (error) {
      // Cached keys may be ones the rolled-back transaction created or replaced.
      this.dataKeys.clear();
      this.loadParams();
      throw error;
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new VaultError("closed", "the vault is closed");
  }
}

// ---- helpers --------------------------------------------------------------------------------------------------

function rangeKind(c: SearchClause): number {
  return c.kind === "date" || c.kind === "number" ? 1 : 0;
}

function pendingRef(r: {
  stage: number;
  rid: number;
  version: number;
  last_updated: number;
  deleted: number;
}): PendingRef {
  return { stage: r.stage, rid: r.rid, version: r.version, lastUpdated: r.last_updated, deleted: r.deleted === 1 };
}

function recordAad(type: string, id: string, version: number, patient: string | null): Buffer {
  return Buffer.from(`${RECORD_AAD}${type}/${id}/${version}/${patient ?? ""}`, "utf8");
}

/**
 * `canonicalJson({resource, salt, labels, date?})`, assembled from the resource's canonical JSON (already made for
 * the commitment) instead of serialising it twice: keys sort as date < labels < resource < salt, and labels, date
 * and salt are validated plain ASCII, for which JSON.stringify is canonical.
 */
export function payloadJson(resourceJson: string, salt: string, labels: readonly string[], date?: string): string {
  const head = date === undefined ? "{" : `{"date":${JSON.stringify(date)},`;
  return `${head}"labels":${JSON.stringify(labels)},"resource":${resourceJson},"salt":${JSON.stringify(salt)}}`;
}

/**
 * The resource's JSON inside a plaintext made by `payloadJson`, found from the other (small, ASCII) fields; undefined
 * when the plaintext is not laid out that way (then the caller serialises the parsed resource instead).
 */
export function resourceJsonIn(
  plaintext: string,
  salt: string,
  labels: readonly string[],
  date: string | undefined,
): string | undefined {
  const shell = payloadJson("", salt, labels, date);
  const suffix = `,"salt":${JSON.stringify(salt)}}`;
  const prefix = shell.slice(0, shell.length - suffix.length);
  if (plaintext.length <= shell.length || !plaintext.startsWith(prefix) || !plaintext.endsWith(suffix))
    return undefined;
  return plaintext.slice(prefix.length, plaintext.length - suffix.length);
}

/** `format ‖ IV ‖ ciphertext ‖ tag`, AES-256-GCM. */
function seal(key: KeyObject, iv: Buffer, plaintext: string | Buffer, aad: Buffer): Buffer {
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(aad);
  const head = Buffer.of(BOX_FORMAT);
  const body = typeof plaintext === "string" ? cipher.update(plaintext, "utf8") : cipher.update(plaintext);
  return Buffer.concat([head, iv, body, cipher.final(), cipher.getAuthTag()]);
}

/** The plaintext, or undefined when the box does not authenticate under this key and aad. */
function unseal(key: KeyObject, box: Buffer, aad: Buffer): Buffer | undefined {
  if (box.length < 1 + IV_BYTES + TAG_BYTES || box[0] !== BOX_FORMAT) return undefined;
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, box.subarray(1, 1 + IV_BYTES));
    decipher.setAAD(aad);
    decipher.setAuthTag(box.subarray(box.length - TAG_BYTES));
    return Buffer.concat([decipher.update(box.subarray(1 + IV_BYTES, box.length - TAG_BYTES)), decipher.final()]);
  } catch {
    return undefined;
  }
}

/** A Buffer over SQLite's bytes without copying them. */
function view(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function codePoints(value: string): string[] {
  return Array.from(value);
}

function checkValue(value: unknown, param: string): string {
  if (typeof value !== "string" || value.includes("\0")) {
    throw new VaultError("invalid", `search parameter ${param}: a value must be a string without NUL`);
  }
  return value;
}

function validateItem(item: PutItem, i: number): void {
  const r = item?.resource;
  const bad = (why: string): never => {
    throw new VaultError("invalid", `item ${i}: ${why}`);
  };
  if (typeof r !== "object" || r === null || Array.isArray(r)) bad("resource must be an object");
  if (typeof r.resourceType !== "string" || !RESOURCE_TYPE_RE.test(r.resourceType)) bad("resourceType is not valid");
  if (typeof r.id !== "string" || !FHIR_ID_RE.test(r.id)) bad("id must match [A-Za-z0-9-.]{1,64}");
  if (r.meta !== undefined && (typeof r.meta !== "object" || r.meta === null || Array.isArray(r.meta))) {
    bad("meta must be an object");
  }
  if (item.patient !== null && (typeof item.patient !== "string" || !PATIENT_RE.test(item.patient))) {
    bad("patient must be a ledger pseudonym (UUID) or null");
  }
  if (!Array.isArray(item.labels) || item.labels.length > 16) bad("labels: at most 16");
  if (new Set(item.labels).size !== item.labels.length) bad("labels repeat");
  for (const l of item.labels) if (typeof l !== "string" || !LABEL_RE.test(l)) bad("a label code is not valid");
  if (item.date !== undefined && (typeof item.date !== "string" || !DATE_RE.test(item.date)))
    bad("date must be YYYY-MM-DD");
  if (item.ifMatch !== undefined && (!Number.isSafeInteger(item.ifMatch) || item.ifMatch < 1))
    bad("ifMatch must be a version ≥ 1");
  if (!Array.isArray(item.index)) bad("index must be an array");
  if (item.delete) return;
  for (const e of item.index) {
    if (typeof e !== "object" || e === null || typeof e.param !== "string" || !PARAM_RE.test(e.param)) {
      bad("an index entry has no valid param");
    }
    const where = `index ${e.param}`;
    switch (e.kind) {
      case "token":
        if (typeof e.system !== "string" || typeof e.code !== "string" || e.code === "")
          bad(`${where}: token needs system and code strings`);
        if (e.system.includes("\0") || e.code.includes("\0")) bad(`${where}: NUL in a value`);
        break;
      case "string":
      case "reference":
        if (typeof e.value !== "string" || e.value === "" || e.value.includes("\0"))
          bad(`${where}: needs a non-empty string without NUL`);
        break;
      case "date":
        if (!Number.isSafeInteger(e.low) || !Number.isSafeInteger(e.high) || e.low > e.high) {
          bad(`${where}: date needs integer ms low ≤ high`);
        }
        break;
      case "number":
        if (typeof e.value !== "number" || !Number.isFinite(e.value)) bad(`${where}: number must be finite`);
        break;
      default:
        bad(`${where}: unknown kind`);
    }
  }
}

function checkPreconditions(item: PutItem, type: string, id: string, existing: ResourceRow | undefined): void {
  const conflict = (code: string, why: string): never => {
    throw new VaultConflictError(code, type, id, `${type}/${id}: ${why}`);
  };
  if (existing?.pending != null) conflict("pending", "another write of it is being anchored");
  const current = existing?.current ?? 0;
  if (existing && existing.patient !== item.patient) conflict("patient-mismatch", "it belongs to another patient");
  if (item.mustNotExist && current > 0 && existing?.deleted === 0) conflict("already-exists", "it already exists");
  if (item.ifMatch !== undefined && item.ifMatch !== current) {
    conflict(
      current === 0 ? "not-found" : "version-conflict",
      `current version is ${current || "none"}, not ${item.ifMatch}`,
    );
  }
  if (item.delete && (current === 0 || existing?.deleted === 1)) conflict("not-found", "nothing current to delete");
}

/** Inserts flat rows `width` columns wide, INSERT_CHUNK rows per statement. */
function insertMany(
  db: DatabaseSync,
  cache: Map<string, StatementSync>,
  table: string,
  width: number,
  flat: SQLInputValue[],
  orIgnore = true,
): void {
  const rows = flat.length / width;
  const statement = (n: number) => {
    const key = `${table}/${n}`;
    let stmt = cache.get(key);
    if (!stmt) {
      const row = `(${Array(width).fill("?").join(",")})`;
      stmt = db.prepare(`INSERT ${orIgnore ? "OR IGNORE " : ""}INTO ${table} VALUES ${Array(n).fill(row).join(",")}`);
      cache.set(key, stmt);
    }
    return stmt;
  };
  let r = 0;
  for (; r + INSERT_CHUNK <= rows; r += INSERT_CHUNK) {
    statement(INSERT_CHUNK).run(...flat.slice(r * width, (r + INSERT_CHUNK) * width));
  }
  if (r < rows) statement(rows - r).run(...flat.slice(r * width));
}

function createSchema(db: DatabaseSync, keys: KeyProvider): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    -- Data keys, wrapped by the node's vault key; '' is the custodian key (records with no patient).
    CREATE TABLE IF NOT EXISTS patient_keys (patient TEXT PRIMARY KEY, wrapped BLOB NOT NULL) WITHOUT ROWID;
    -- One row per logical resource. Type and id are plain (ids are random); the patient is a ledger pseudonym.
    CREATE TABLE IF NOT EXISTS resources (
      rid INTEGER PRIMARY KEY,
      type TEXT NOT NULL,
      id TEXT NOT NULL,
      patient TEXT,
      current INTEGER NOT NULL DEFAULT 0,   -- latest anchored version; 0 while the first is pending
      pending INTEGER,                      -- version staged, not yet confirmed
      last_updated INTEGER,                 -- ms, of the current version
      deleted INTEGER NOT NULL DEFAULT 0,   -- the current version is a deletion
      UNIQUE (type, id)
    );
    CREATE INDEX IF NOT EXISTS resources_patient ON resources (patient) WHERE patient IS NOT NULL;
    -- Every version: format ‖ IV ‖ AES-256-GCM(canonical {resource, salt, labels, date?}) ‖ tag. Written once:
    -- pending state lives in its own small table, so confirming does not rewrite ciphertext pages.
    CREATE TABLE IF NOT EXISTS versions (
      vkey INTEGER PRIMARY KEY,             -- rid * 2^20 + version: one B-tree, a resource's versions side by side
      last_updated INTEGER NOT NULL,
      deleted INTEGER NOT NULL,
      box BLOB NOT NULL,
      ix BLOB                               -- this version's blind-index hashes (16 bytes each) while it has rows
    );
    -- Versions staged and not yet confirmed (at most one per resource). The commitment is public (it is on the
    -- ledger) and kept to settle these rows at open; reads always recompute it from the plaintext.
    CREATE TABLE IF NOT EXISTS pending (
      stage INTEGER NOT NULL, rid INTEGER NOT NULL, version INTEGER NOT NULL, last_updated INTEGER NOT NULL,
      deleted INTEGER NOT NULL, commitment BLOB NOT NULL, PRIMARY KEY (stage, rid)
    ) WITHOUT ROWID;
    -- Blind index: truncated HMACs of (type, param, kind, value); rows of the current and of a pending version. No
    -- index by rid (one B-tree insert per row, not two): a version's rows are found again through versions.ix.
    CREATE TABLE IF NOT EXISTS idx_hash (
      hash BLOB NOT NULL, rid INTEGER NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (hash, rid, version)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS params (pkey INTEGER PRIMARY KEY, type TEXT NOT NULL, param TEXT NOT NULL, UNIQUE (type, param));
    -- Dates (ms ranges) and numbers are plain, as search needs their order.
    CREATE TABLE IF NOT EXISTS idx_date (pkey INTEGER NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL, rid INTEGER NOT NULL, version INTEGER NOT NULL);
    CREATE INDEX IF NOT EXISTS idx_date_low ON idx_date (pkey, low);
    CREATE INDEX IF NOT EXISTS idx_date_rid ON idx_date (rid, version);
    CREATE TABLE IF NOT EXISTS idx_number (pkey INTEGER NOT NULL, value REAL NOT NULL, rid INTEGER NOT NULL, version INTEGER NOT NULL);
    CREATE INDEX IF NOT EXISTS idx_number_value ON idx_number (pkey, value);
    CREATE INDEX IF NOT EXISTS idx_number_rid ON idx_number (rid, version);
  `);
  const schema = db.prepare("SELECT value FROM meta WHERE key = 'schema'").get() as { value: unknown } | undefined;
  if (schema === undefined) {
    inWriteTransaction(db, () => {
      const insert = db.prepare("INSERT INTO meta (key, value) VALUES (?, ?)");
      insert.run("schema", SCHEMA_VERSION);
      insert.run("key_check", keys.wrap(randomBytes(32), KEY_CHECK_AAD));
    });
  } else if (String(schema.value) !== SCHEMA_VERSION) {
    throw new VaultError("schema", `unsupported vault schema ${String(schema.value)}`);
  }
}

function prepare(db: DatabaseSync) {
  const p = (sql: string) => db.prepare(sql);
  const vkey = `?1 * ${2 ** VERSION_BITS} + ?2`;
  const cols = `vkey >> ${VERSION_BITS} AS rid, vkey & ${MAX_VERSION} AS version`;
  const ofRid = `vkey BETWEEN ?1 * ${2 ** VERSION_BITS} AND ?1 * ${2 ** VERSION_BITS} + ${MAX_VERSION}`;
  return {
    multi: new Map<string, StatementSync>(),
    resourceByRef: p("SELECT rid, patient, current, pending, deleted FROM resources WHERE type = ? AND id = ?"),
    refOfRid: p("SELECT type, id FROM resources WHERE rid = ?"),
    maxRid: p("SELECT coalesce(max(rid), 0) AS m FROM resources"),
    setPending: p("UPDATE resources SET pending = ? WHERE rid = ?"),
    clearPending: p("UPDATE resources SET pending = NULL WHERE rid = ?"),
    makeCurrent: p("UPDATE resources SET current = ?, pending = NULL, last_updated = ?, deleted = ? WHERE rid = ?"),
    deleteIfEmpty: p("DELETE FROM resources WHERE rid = ? AND current = 0"),
    deleteResource: p("DELETE FROM resources WHERE rid = ?"),
    byPatient: p("SELECT type, id FROM resources WHERE patient = ? AND current > 0 AND deleted = 0 ORDER BY type, id"),
    allOfPatient: p("SELECT rid, type, id, current FROM resources WHERE patient = ?"),
    version: p(`SELECT ${cols}, last_updated, deleted, box FROM versions WHERE vkey = ${vkey}`),
    currentByRef: p(
      `SELECT r.patient, v.vkey >> ${VERSION_BITS} AS rid, v.vkey & ${MAX_VERSION} AS version, v.last_updated,
         v.deleted, v.box FROM resources r JOIN versions v ON v.vkey = r.rid * ${2 ** VERSION_BITS} + r.current
       WHERE r.type = ? AND r.id = ? AND r.current > 0`,
    ),
    history: p(`SELECT ${cols}, last_updated, deleted, box FROM versions WHERE ${ofRid} ORDER BY vkey DESC`),
    allVersions: p(`SELECT ${cols}, box FROM versions WHERE ${ofRid}`),
    setBox: p(`UPDATE versions SET box = ?3 WHERE vkey = ${vkey}`),
    pendingOfStage: p("SELECT stage, rid, version, last_updated, deleted FROM pending WHERE stage = ?"),
    dropPending: p("DELETE FROM pending WHERE stage = ? AND rid = ?"),
    dropPendingOfRid: p("DELETE FROM pending WHERE rid = ?"),
    deleteVersion: p(`DELETE FROM versions WHERE vkey = ${vkey}`),
    deleteVersions: p(`DELETE FROM versions WHERE ${ofRid}`),
    indexedBefore: p(
      `SELECT ${cols}, ix FROM versions WHERE vkey >= ?1 * ${2 ** VERSION_BITS} AND vkey < ${vkey} AND ix IS NOT NULL`,
    ),
    dropHash: p("DELETE FROM idx_hash WHERE hash = ? AND rid = ? AND version = ?"),
    dropDatesOf: p("DELETE FROM idx_date WHERE rid = ? AND version = ?"),
    dropNumbersOf: p("DELETE FROM idx_number WHERE rid = ? AND version = ?"),
    clearIx: p(`UPDATE versions SET ix = NULL WHERE vkey = ${vkey}`),
    keyByPatient: p("SELECT wrapped FROM patient_keys WHERE patient = ?"),
    insertKey: p("INSERT INTO patient_keys (patient, wrapped) VALUES (?, ?)"),
    deleteKey: p("DELETE FROM patient_keys WHERE patient = ?"),
    insertParam: p("INSERT INTO params (type, param) VALUES (?, ?)"),
    hasNumbers: p("SELECT 1 FROM idx_number WHERE pkey = ? LIMIT 1"),
  };
}
