// `POST /fhir` — a transaction Bundle from a clinician (or anyone whose scopes allow create/update and whose consent
// decisions permit `write`): checked whole by `prepareTransaction`, every write decided by the consent gate, stored as
// ONE vault stage anchored before it is confirmed. Any refusal rejects the whole bundle (nothing stored, nothing
// anchored), with issue 4's existence rule: 403 where the caller may see the target, otherwise the answer a missing
// target gets.
//
// What a transaction may hold: POST of any stored type except Consent/AuditEvent/Provenance (server-assigned ids);
// PUT `Type/id` of a resource that exists here (update; `ifMatch` checked: 412); PUT `Patient/<pseudonym>` of a
// patient registered on the ledger that this custodian does not hold yet (create). A POSTed Patient is stored under
// the pseudonym its NHS number is registered with (lookup key); the API never registers patients (that needs a
// clinician's or admin's own signature: `careledger import`). Bundles over `maxEntries` entries answer 413.

import { randomUUID } from "node:crypto";
import type { Bundle } from "@medplum/fhirtypes";
import { UUID_PATTERN } from "../../contract/schemas.ts";
import type { PutItem, StagedWrite, VaultResource } from "../../vault/vault.ts";
import type { Principal } from "../auth/bearer.ts";
import { type EntryResult, type PreparedEntry, prepareTransaction, transactionResponse } from "../bundle.ts";
import { badRequest, conflict, forbidden, OperationOutcomeError } from "../outcome.ts";
import { STORED_TYPES } from "../validate.ts";
import { checkAccess } from "./consent-check.ts";
import type { FhirContext, FhirHandler } from "./context.ts";
import { isRegistered, type LookupKey, pseudonymOf } from "./patients.ts";
import {
  commitWrite,
  factsOf,
  factsOfRecord,
  mayWrite,
  nhsNumberOf,
  noSuchTarget,
  putItemOf,
  refusal,
} from "./write.ts";

const PSEUDONYM_RE = new RegExp(UUID_PATTERN);
/** What a transaction may write: everything stored, except what only the server or the ledger writes. */
export const TRANSACTION_TYPES: ReadonlySet<string> = new Set(
  [...STORED_TYPES].filter((t) => t !== "Consent" && t !== "AuditEvent" && t !== "Provenance"),
);
/** Default entry limit of a transaction (more → 413). */
export const MAX_TRANSACTION_ENTRIES = 5000;

/**
 * The vault items of prepared entries (same order): the patient of each record checked against the ledger — a
 * registered pseudonym, or one of `pending` (patients this import registers before it stages) — else 422 naming the
 * entry. `facts` (per entry) saves reading labels, date and search values from the resources again.
 */
export function itemsOf(
  ctx: Pick<FhirContext, "node">,
  prepared: readonly PreparedEntry[],
  pending: ReadonlySet<string> = new Set(),
  facts?: readonly ItemFacts[],
): PutItem[] {
  return prepared.map((p, i) => {
    const resource = p.resource as unknown as VaultResource;
    const patient = p.resourceType === "Patient" ? p.id : p.patient;
    if (
      patient !== undefined &&
      !(PSEUDONYM_RE.test(patient) && (pending.has(patient) || isRegistered(ctx, patient)))
    ) {
      throw new OperationOutcomeError(
        422,
        "processing",
        p.resourceType === "Patient"
          ? "Patient ids are ledger pseudonyms: this patient is not registered on the ledger"
          : "refers to a patient the ledger does not know (Patient ids are ledger pseudonyms)",
        `Bundle.entry[${p.index}].resource`,
      );
    }
    const known = facts?.[i];
    const item: PutItem =
      known === undefined
        ? putItemOf(resource, patient ?? null)
        : { resource, patient: patient ?? null, ...known, labels: [...known.labels] };
    if (p.assigned) item.newId = true;
    if (p.ifMatch !== undefined) {
      // Versions here are whole numbers; any other ETag can never match the current version.
      const version = /^[1-9][0-9]{0,8}$/.test(p.ifMatch) ? Number(p.ifMatch) : 0;
      if (version === 0) {
        throw new OperationOutcomeError(
          412,
          "conflict",
          "version does not match ifMatch",
          `Bundle.entry[${p.index}].request.ifMatch`,
        );
      }
      item.ifMatch = version;
    }
    return item;
  });
}

/** What a vault item needs besides the resource and its patient (computed once, possibly on another thread). */
export interface ItemFacts {
  labels: string[];
  date?: string;
  index: PutItem["index"];
}

/** The facts of a resource, as `putItemOf` reads them. */
export function itemFacts(resource: VaultResource): ItemFacts {
  const { labels, date, index } = putItemOf(resource, null);
  return date === undefined ? { labels, index } : { labels, date, index };
}

/** Per-entry results of a confirmed stage, for `transactionResponse`. */
export function entryResults(prepared: readonly PreparedEntry[], staged: StagedWrite): EntryResult[] {
  return prepared.map((p, i) => {
    const s = staged.items[i];
    if (s === undefined) throw new OperationOutcomeError(500, "exception", "internal error");
    return {
      index: p.index,
      resourceType: p.resourceType,
      id: p.id,
      versionId: String(s.version),
      created: s.created,
      lastModified: s.lastUpdated,
    };
  });
}

export interface TransactionHandlerOptions {
  /** Lets a POSTed Patient find its pseudonym by NHS number. */
  lookup?: LookupKey;
  maxEntries?: number;
}

/** The `POST /fhir` handler. */
export function transactionHandler(options: TransactionHandlerOptions = {}): FhirHandler {
  const maxEntries = options.maxEntries ?? MAX_TRANSACTION_ENTRIES;
  return async (ctx, req) => {
    const prepared = prepareTransaction(req.body, {
      newId: randomUUID,
      maxEntries,
      types: TRANSACTION_TYPES,
      idFor: (type, resource) => {
        if (type !== "Patient" || options.lookup === undefined) return undefined;
        const nhs = nhsNumberOf(resource);
        return nhs === undefined ? undefined : pseudonymOf(ctx, options.lookup, nhs);
      },
    });
    if (prepared.length === 0) throw badRequest("the transaction has no entries", "Bundle.entry", "required");
    const items = itemsOf(ctx, prepared);
    for (const [i, p] of prepared.entries()) decideEntry(ctx, req.principal, p, items[i] as PutItem);
    const staged = await commitWrite(ctx, items);
    const response: Bundle = transactionResponse(entryResults(prepared, staged), { baseUrl: ctx.baseUrl });
    return { status: 200, body: response };
  };
}

/**
 * One entry's consent: an update must be allowed on the current version and the new one, a create on the new one.
 * A PUT of a missing (or unseen) resource is refused as `noSuchTarget`; PUT Patient/<registered pseudonym> creates.
 */
function decideEntry(ctx: FhirContext, principal: Principal, p: PreparedEntry, item: PutItem): void {
  const at = `Bundle.entry[${p.index}]`;
  const existing = ctx.vault.read(p.resourceType, p.id);
  const current = existing !== undefined && !existing.deleted ? existing : undefined;
  const currentFacts = current === undefined ? undefined : factsOfRecord(p.resourceType, p.id, current);
  if (p.method === "PUT") {
    const creatingPatient = current === undefined && p.resourceType === "Patient" && isRegistered(ctx, p.id);
    if (current === undefined && !creatingPatient) throw noSuchTarget(p.resourceType, p.id).within(at);
    if (creatingPatient) item.mustNotExist = true;
  } else if (currentFacts !== undefined) {
    // Only a POSTed Patient can name something that exists (its pseudonym): POST is create, not update.
    const seen = checkAccess(ctx, principal, currentFacts, "read", "read", { log: false }).allowed;
    throw (
      seen
        ? conflict(`${p.resourceType}/${p.id} already exists here; update it with PUT`)
        : forbidden("consent or scope does not allow this write")
    ).within(at);
  } else {
    item.mustNotExist = true;
  }
  if (currentFacts !== undefined) {
    if (!mayWrite(ctx, principal, currentFacts, "update")) {
      throw refusal(ctx, principal, currentFacts, () => noSuchTarget(p.resourceType, p.id)).within(at);
    }
    if (current?.patient !== item.patient) {
      throw conflict(`${p.resourceType}/${p.id} belongs to another patient; a record cannot move`).within(at);
    }
  }
  if (!mayWrite(ctx, principal, factsOf(item), currentFacts === undefined ? "create" : "update")) {
    if (currentFacts === undefined) throw forbidden("consent or scope does not allow this write").within(at);
    throw refusal(ctx, principal, currentFacts, () => noSuchTarget(p.resourceType, p.id)).within(at);
  }
}

export const transaction: FhirHandler = transactionHandler();
