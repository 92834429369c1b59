// read, vread and _history of one resource, each through the consent gate.
//
// What a refused caller sees (issue 4: "403 only where existence is already known to the requester; otherwise 404"):
// - scopes that do not cover the type: 403, decided from the token before anything is looked up, so it says nothing
//   about any record;
// - a record hidden by consent or outside the caller's compartment: the very same 404 as a missing one (same status,
//   body and headers, built by the same call) — with one exception: a patient or proxy refused their *own* Patient
//   resource (a safeguarding freeze, an ended proxy) gets 403, since they know that resource exists;
// - deleted (a tombstone is current): 410, but only to a caller who may see the record; others get the 404.
// vread and _history are decided on the labels of every version involved together with the current one's, so a record
// the patient relabelled as sensitive is not readable through an older, general-labelled version.
//
// A record failing its integrity check (altered behind the node's back) is never served: 500 `exception` with a
// fixed message, a metric (`careledger_fhir_integrity_failures_total`) and an error log line naming only the type.

import type { Bundle, BundleEntry } from "@medplum/fhirtypes";
import { createLogger, type Logger } from "../../node/logger.ts";
import { VaultIntegrityError, type VaultRecord } from "../../vault/vault.ts";
import type { Principal } from "../auth/bearer.ts";
import { scopesAllow } from "../auth/scopes.ts";
import { forbidden, gone, integrity, notFound } from "../outcome.ts";
import { ID_RE, isResourceType } from "../validate.ts";
import { type AccessInteraction, checkAccess, type RecordFacts } from "./consent-check.ts";
import type { FhirContext, FhirHandler, FhirRequest, FhirResponse } from "./context.ts";

export const FHIR_JSON = "application/fhir+json; charset=utf-8";

let integrityLog: Logger | undefined;

/** Counts and logs an integrity failure (type only: ids are pseudonyms), and returns the 500 to throw. */
export function integrityFailure(ctx: FhirContext, resourceType: string): Error {
  ctx.node.metrics.inc("careledger_fhir_integrity_failures_total");
  integrityLog ??= createLogger();
  integrityLog.error({ resourceType }, "a stored record failed its integrity check and was not served");
  return integrity();
}

/** Runs a vault read, turning an integrity failure into the 500 (and its metric and log line). */
export function guarded<T>(ctx: FhirContext, resourceType: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    if (error instanceof VaultIntegrityError) throw integrityFailure(ctx, resourceType);
    throw error;
  }
}

/** The consent-relevant facts of a stored record, with extra labels (other versions') added. */
export function factsOf(type: string, id: string, rec: VaultRecord, extraLabels: readonly string[] = []): RecordFacts {
  const labels = [...rec.labels];
  for (const l of extraLabels) if (!labels.includes(l)) labels.push(l);
  const facts: RecordFacts = { resourceType: type, id, patient: rec.patient, labels };
  if (rec.date !== undefined) facts.date = rec.date;
  return facts;
}

/** ETag and Last-Modified of a version. */
export function versionHeaders(rec: Pick<VaultRecord, "version" | "lastUpdated">): Record<string, string> {
  const headers: Record<string, string> = { etag: `W/"${rec.version}"`, "content-type": FHIR_JSON };
  const modified = httpDate(rec.lastUpdated);
  if (modified !== undefined) headers["last-modified"] = modified;
  return headers;
}

// Parsing and formatting a date costs more than the rest of the headers; records imported together share a time.
const HTTP_DATE_MEMO_MAX = 10_000;
const httpDates = new Map<string, string | undefined>();

function httpDate(instant: string): string | undefined {
  if (httpDates.has(instant)) return httpDates.get(instant);
  const t = Date.parse(instant);
  const formatted = Number.isFinite(t) ? new Date(t).toUTCString() : undefined;
  if (httpDates.size >= HTTP_DATE_MEMO_MAX) httpDates.clear();
  httpDates.set(instant, formatted);
  return formatted;
}

/** 403 from the token alone (before any lookup), when its scopes do not cover `interaction` on the type. */
export function requireScope(principal: Principal, type: string, interaction: AccessInteraction): void {
  if (!scopesAllow(principal.scopes, principal.context, type, interaction)) {
    throw forbidden(`the token's scopes do not allow ${interaction} of ${type}`);
  }
}

/** The path parameters of an instance request; anything malformed names no resource that could exist: 404. */
function instanceParams(req: FhirRequest): { type: string; id: string } {
  const { type, id } = req.params;
  if (type === undefined || id === undefined || !isResourceType(type) || !ID_RE.test(id)) {
    throw notFound(`${type ?? ""}/${id ?? ""}`);
  }
  return { type, id };
}

/**
 * The refusal for a record the caller may not have: the 404 of a missing record, or 403 where the caller already
 * knows the record exists (their own Patient resource).
 */
function refusal(principal: Principal, type: string, id: string, missing: () => Error): Error {
  if (type === "Patient" && principal.patient === id) return forbidden();
  return missing();
}

/** Decides access to `type/id` given its current record and the facts to decide on; throws the refusal. */
function gate(
  ctx: FhirContext,
  principal: Principal,
  facts: RecordFacts,
  interaction: AccessInteraction,
  missing: () => Error,
): void {
  const access = checkAccess(ctx, principal, facts, "read", interaction);
  if (!access.allowed) throw refusal(principal, facts.resourceType, facts.id, missing);
}

/** GET [base]/[type]/[id] */
export const read: FhirHandler = async (ctx, req) => {
  const { type, id } = instanceParams(req);
  requireScope(req.principal, type, "read");
  const missing = () => notFound(`${type}/${id}`);
  const rec = guarded(ctx, type, () => ctx.vault.read(type, id));
  if (rec === undefined) throw missing();
  gate(ctx, req.principal, factsOf(type, id, rec), "read", missing);
  if (rec.deleted) throw gone(`${type}/${id}`);
  return { status: 200, body: rec.resource, json: rec.json, headers: versionHeaders(rec) };
};

/** GET [base]/[type]/[id]/_history/[vid] */
export const vread: FhirHandler = async (ctx, req) => {
  const { type, id } = instanceParams(req);
  const vid = req.params.vid ?? "";
  requireScope(req.principal, type, "read");
  const missing = () => notFound(`${type}/${id}/_history/${vid}`);
  const version = /^[1-9][0-9]{0,6}$/.test(vid) ? Number(vid) : undefined;
  const current = guarded(ctx, type, () => ctx.vault.read(type, id));
  if (current === undefined) throw missing();
  const rec =
    version === undefined
      ? undefined
      : version === current.version
        ? current
        : guarded(ctx, type, () => ctx.vault.vread(type, id, version));
  // Decided on the current version's facts plus the asked-for version's labels (a relabelled record stays hidden).
  gate(ctx, req.principal, factsOf(type, id, current, rec?.labels), "read", missing);
  if (rec === undefined) throw missing();
  if (rec.deleted) throw gone(`${type}/${id}/_history/${vid}`);
  return { status: 200, body: rec.resource, json: rec.json, headers: versionHeaders(rec) };
};

/** GET [base]/[type]/[id]/_history — every version, newest first, as a `history` Bundle. */
export const history: FhirHandler = async (ctx, req) => {
  const { type, id } = instanceParams(req);
  requireScope(req.principal, type, "read");
  const missing = () => notFound(`${type}/${id}`);
  const versions = guarded(ctx, type, () => ctx.vault.history(type, id));
  const newest = versions[0];
  if (newest === undefined) throw missing();
  gate(
    ctx,
    req.principal,
    factsOf(
      type,
      id,
      newest,
      versions.flatMap((v) => v.labels),
    ),
    "read",
    missing,
  );
  const base = ctx.baseUrl.replace(/\/+$/, "");
  const entry: BundleEntry[] = versions.map((v, i) => historyEntry(base, type, id, v, i === versions.length - 1));
  const bundle: Bundle = {
    resourceType: "Bundle",
    type: "history",
    total: entry.length,
    link: [{ relation: "self", url: `${base}/${type}/${id}/_history` }],
    entry,
  };
  return { status: 200, body: bundle, headers: { "content-type": FHIR_JSON } } satisfies FhirResponse;
};

function historyEntry(base: string, type: string, id: string, v: VaultRecord, first: boolean): BundleEntry {
  const lastModified = v.lastUpdated;
  if (v.deleted) {
    return {
      fullUrl: `${base}/${type}/${id}`,
      request: { method: "DELETE", url: `${type}/${id}` },
      response: { status: "204", etag: `W/"${v.version}"`, lastModified },
    };
  }
  return {
    fullUrl: `${base}/${type}/${id}`,
    resource: v.resource as BundleEntry["resource"],
    request: first ? { method: "POST", url: type } : { method: "PUT", url: `${type}/${id}` },
    response: { status: first ? "201" : "200", etag: `W/"${v.version}"`, lastModified },
  };
}
