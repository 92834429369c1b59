// The one gate every FHIR read and write passes: SMART scopes first (a ceiling the client asked for), then the
// patient compartment of patient and proxy tokens, then the ledger's consent decision (`decide`, DESIGN's 8 steps)
// for records about a patient. Every consent decision, permit or deny, becomes an `access.log` entry.
//
// Rules for records that belong to no patient (Organization, Practitioner, Medication, Location, …): there is no
// consent to ask, so members and nodes read them within their scopes; patients and proxies read one only when one of
// the patient's own current records at this custodian refers to it (their GP practice, their clinician, their
// medication) — anything else in the directory is none of their business. These reads are not logged on the ledger
// (an `access.log` entry names a patient).
//
// What is not logged: refusals by scope or by the patient compartment. Both are decided by the token alone, before
// any record is consulted, so they say nothing about a patient's record.

import type { Decision } from "../../contract/decide.ts";
import type { Principal } from "../auth/bearer.ts";
import { PATIENT_PURPOSE, scopesAllow } from "../auth/scopes.ts";
import { OperationOutcomeError } from "../outcome.ts";
import type { AccessEntry, FhirContext } from "./context.ts";

/** What the gate needs to know of a record (from the vault's `VaultRecord`, or of a resource about to be written). */
export interface RecordFacts {
  resourceType: string;
  id: string;
  /** Ledger pseudonym of the patient (= the FHIR Patient id), or null for records of no patient. */
  patient: string | null;
  /** Security-label codes (as anchored). */
  labels: readonly string[];
  /** Clinical date, YYYY-MM-DD. */
  date?: string;
}

export type AccessAction = "read" | "write";
export type AccessInteraction = "read" | "search" | "create" | "update";

/**
 * Why a request was refused: `scope` (the token's scopes), `compartment` (a patient/proxy token and another
 * patient's record, or a directory record their records do not refer to), `consent` (the ledger's decision).
 */
export type RefusalReason = "scope" | "compartment" | "consent";

export interface AccessResult {
  allowed: boolean;
  /** The ledger's decision, for records about a patient that reached `decide`. */
  decision?: Decision;
  /** The `access.log` entry of that decision (already queued on `ctx.accessLog` unless `log: false`). */
  entry?: AccessEntry;
  /** Set when refused. */
  refusedBy?: RefusalReason;
}

export interface CheckOptions {
  /** Queue the entry on `ctx.accessLog` (default true). Callers that batch entries themselves pass false. */
  log?: boolean;
  /** Time of the decision (default `ctx.now()`). */
  at?: number;
}

/** Purpose used when the token carries none: PATRQT for patients and proxies, TREAT for everyone else (nodes and
 * admins, whose role permits no purpose: `decide` refuses them at step 2 whatever is logged). */
export function purposeOf(principal: Principal): string {
  if (principal.purpose !== undefined) return principal.purpose;
  return principal.patient !== undefined ? PATIENT_PURPOSE : "TREAT";
}

/** An access logger that can say it cannot take entries now (`AccessLogBatcher` can; see access-log.ts). */
interface HealthReporting {
  unavailable(): string | undefined;
}

/**
 * Throws 503 when the access log cannot record reads (the node is halted, the log is backed up or failing): a record
 * is never served without its audit entry being on its way to the ledger. Cheap; run before every consent check.
 */
export function assertAuditable(ctx: FhirContext): void {
  const logger = ctx.accessLog as Partial<HealthReporting>;
  const why = typeof logger.unavailable === "function" ? logger.unavailable() : undefined;
  if (why !== undefined) {
    throw new OperationOutcomeError(503, "exception", `records cannot be served now: ${why}`);
  }
}

/**
 * The consent gate for one record. Scopes first (`scopesAllow` in the token's context), then the patient
 * compartment, then for patient records `ctx.node.decide` at the current ledger height; the decision's `access.log`
 * entry is queued on `ctx.accessLog` (permit and deny alike) and returned. Throws 503 (OperationOutcomeError) when
 * the access log or the node's state cannot be relied on.
 */
export function checkAccess(
  ctx: FhirContext,
  principal: Principal,
  record: RecordFacts,
  action: AccessAction,
  interaction: AccessInteraction,
  options: CheckOptions = {},
): AccessResult {
  if (!scopesAllow(principal.scopes, principal.context, record.resourceType, interaction)) {
    return { allowed: false, refusedBy: "scope" };
  }
  if (record.patient === null) {
    if (principal.patient === undefined) return { allowed: true };
    if (action !== "read") return { allowed: false, refusedBy: "compartment" };
    return referencedFromCompartment(ctx, principal.patient, record.resourceType, record.id)
      ? { allowed: true }
      : { allowed: false, refusedBy: "compartment" };
  }
  if (principal.patient !== undefined && principal.patient !== record.patient) {
    return { allowed: false, refusedBy: "compartment" };
  }
  assertAuditable(ctx);
  const at = options.at ?? ctx.now();
  const purpose = purposeOf(principal);
  const resource: { type: string; custodian: string; labels: string[]; date?: string } = {
    type: record.resourceType,
    custodian: ctx.orgId,
    labels: [...record.labels],
  };
  if (record.date !== undefined) resource.date = record.date;
  let decision: Decision;
  let height: number;
  try {
    height = Math.max(0, ctx.node.height);
    decision = ctx.node.decide({
      requester: principal.keyId,
      patient: record.patient,
      purpose,
      action,
      resource,
      at,
    });
  } catch {
    // The node refuses state reads (its store failed its audit): no decision can be trusted.
    throw new OperationOutcomeError(503, "exception", "consent cannot be decided now: the ledger node is halted");
  }
  const entry: AccessEntry = {
    requester: principal.keyId,
    patient: record.patient,
    custodian: ctx.orgId,
    resourceType: record.resourceType,
    resourceId: record.id,
    purpose,
    action,
    decision: decision.effect,
    step: decision.step,
    rule: decision.rule,
    height,
  };
  if (options.log !== false) ctx.accessLog.log([entry]);
  const allowed = decision.effect === "permit";
  return allowed ? { allowed, decision, entry } : { allowed, decision, entry, refusedBy: "consent" };
}

/**
 * Whether one of `patient`'s current records at this custodian refers to `type/id` (as a relative reference
 * anywhere in it). Decrypts the patient's records: a patient's directory reads are rare and their records few.
 */
export function referencedFromCompartment(ctx: FhirContext, patient: string, type: string, id: string): boolean {
  const target = `${type}/${id}`;
  for (const ref of ctx.vault.byPatient(patient)) {
    const rec = ctx.vault.read(ref.type, ref.id);
    if (rec === undefined || rec.deleted) continue;
    if (refersTo(rec.resource, target)) return true;
  }
  return false;
}

/** Whether a `reference` element anywhere in `value` is exactly `target` (relative: references are stored relative). */
export function refersTo(value: unknown, target: string): boolean {
  if (Array.isArray(value)) return value.some((v) => refersTo(v, target));
  if (typeof value !== "object" || value === null) return false;
  for (const [k, v] of Object.entries(value)) {
    if (k === "reference" && typeof v === "string") {
      if (v === target) return true;
    } else if (typeof v === "object" && v !== null && refersTo(v, target)) {
      return true;
    }
  }
  return false;
}
