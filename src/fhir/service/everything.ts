// Patient/[id]/$everything: the Patient and every current record of the patient that this custodian holds and the
// caller may see, as one searchset Bundle (each record through the consent gate, hidden ones dropped without trace,
// as in search). `_count`/`_offset` page over the visible records; `_type` (comma list) narrows the types.
//
// Other custodians' records (issue 5): with an exchange configured (`everythingWith({directory, …})`), the custodians
// that hold records of the patient according to this node's ledger (`holders/<patient>`) are asked in parallel, each
// within a deadline (src/fhir/exchange). Each custodian's answer is a `PartialResult`, and `mergeEverything` joins
// them, adding one OperationOutcome entry (search.mode `outcome`, severity warning) per custodian that could not
// answer or whose answer was cut, so the caller knows the view is incomplete without the request failing.
//
// The Patient resource comes from this node's vault if it holds one (and then the local consent gate on it decides
// the whole request, before anyone else is asked); otherwise from the first custodian that sent it. A patient
// registered on the ledger but not held here is answered from the other custodians; if nothing at all is visible
// the answer is the 404 of a missing patient (warnings about unreachable custodians would say who holds records).

import type { Bundle, BundleEntry } from "@medplum/fhirtypes";
import { read as readState } from "../../contract/state.ts";
import { type ExchangeOptions, otherCustodians } from "../exchange/peer-client.ts";
import { badRequest, forbidden, notFound } from "../outcome.ts";
import { searchLinks } from "../search-query.ts";
import { isResourceType } from "../validate.ts";
import { checkAccess } from "./consent-check.ts";
import type { AccessEntry, FhirContext, FhirHandler, FhirRequest } from "./context.ts";
import { FHIR_JSON, factsOf, guarded, requireScope } from "./read.ts";

/** One custodian's contribution to `$everything`. */
export interface PartialResult {
  /** The custodian's org id. */
  custodian: string;
  /** Visible entries (already decided by that custodian), in its order; absent when it could not answer. */
  entries?: BundleEntry[];
  /** Why it could not answer (said to the caller; must carry no record content). */
  error?: string;
  /** Why its answer is incomplete although it answered (same rules as `error`). */
  warnings?: string[];
}

function warningEntry(diagnostics: string): BundleEntry {
  return {
    resource: { resourceType: "OperationOutcome", issue: [{ severity: "warning", code: "incomplete", diagnostics }] },
    search: { mode: "outcome" },
  };
}

/**
 * Joins custodians' partial results: the first result's entries first (this custodian, with the Patient at the top),
 * then the others' in the order given; an entry whose `fullUrl` already appeared is dropped, and so is every Patient
 * resource after the first (each custodian serves the patient's Patient under its own URL; the first result's wins,
 * and one taken from a later result moves to the top). A custodian that could not answer, or answered in part,
 * becomes a warning OperationOutcome entry.
 */
export function mergeEverything(parts: readonly PartialResult[]): BundleEntry[] {
  const seen = new Set<string>();
  const out: BundleEntry[] = [];
  const warnings: BundleEntry[] = [];
  let patient: BundleEntry | undefined;
  for (const [i, part] of parts.entries()) {
    if (part.entries === undefined) {
      warnings.push(
        warningEntry(`records held by ${part.custodian} are not included: ${part.error ?? "it did not answer"}`),
      );
      continue;
    }
    for (const w of part.warnings ?? []) warnings.push(warningEntry(w));
    for (const e of part.entries) {
      if (e.fullUrl !== undefined) {
        if (seen.has(e.fullUrl)) continue;
        seen.add(e.fullUrl);
      }
      if (e.resource?.resourceType === "Patient") {
        if (patient !== undefined) continue;
        patient = e;
        if (i > 0) {
          out.unshift(e);
          continue;
        }
      }
      out.push(e);
    }
  }
  return [...out, ...warnings];
}

const ALLOWED_PARAMS = new Set(["_count", "_offset", "_type", "_format", "_pretty"]);
const MAX_COUNT = 1000;

function intParam(query: URLSearchParams, name: string, fallback: number, max: number): number {
  const raw = query.get(name);
  if (raw === null) return fallback;
  if (!/^[0-9]{1,9}$/.test(raw)) throw badRequest("must be a non-negative integer", name);
  return Math.min(Number(raw), max);
}

/**
 * This custodian's part: the Patient (if the caller may see it; otherwise the request is refused as a read of it
 * would be) and each of the patient's current records the caller may see, Patient first, then by type and id.
 * With `patientOptional`, a patient whose Patient resource is not held here is not refused: their records held here
 * (if any) are each decided on their own.
 */
export function localEverything(
  ctx: FhirContext,
  req: FhirRequest,
  patient: string,
  types?: ReadonlySet<string>,
  options: { patientOptional?: boolean } = {},
): BundleEntry[] {
  return localPart(ctx, req, patient, types, options.patientOptional === true).entries;
}

function localPart(
  ctx: FhirContext,
  req: FhirRequest,
  patient: string,
  types: ReadonlySet<string> | undefined,
  patientOptional: boolean,
): { entries: BundleEntry[]; held: boolean } {
  const base = ctx.baseUrl.replace(/\/+$/, "");
  const missing = () => notFound(`Patient/${patient}`);
  const patientRec = guarded(ctx, "Patient", () => ctx.vault.read("Patient", patient));
  const held = patientRec !== undefined && !patientRec.deleted;
  if (!held && !patientOptional) throw missing();
  const at = ctx.now();
  const toLog: AccessEntry[] = [];
  const entries: BundleEntry[] = [];
  if (held) {
    const gate = checkAccess(ctx, req.principal, factsOf("Patient", patient, patientRec), "read", "read", {
      log: false,
      at,
    });
    if (gate.entry) toLog.push(gate.entry);
    if (!gate.allowed) {
      ctx.accessLog.log(toLog);
      // The caller's own Patient: they know it exists, so the refusal may say so (403).
      throw req.principal.patient === patient ? forbidden() : missing();
    }
    if (types === undefined || types.has("Patient")) {
      entries.push({
        fullUrl: `${base}/Patient/${patient}`,
        resource: patientRec.resource as BundleEntry["resource"],
        search: { mode: "match" },
      });
    }
  }
  for (const ref of ctx.vault.byPatient(patient)) {
    if (ref.type === "Patient" && ref.id === patient) continue;
    if (types !== undefined && !types.has(ref.type)) continue;
    const rec = guarded(ctx, ref.type, () => ctx.vault.read(ref.type, ref.id));
    if (rec === undefined || rec.deleted) continue;
    const access = checkAccess(ctx, req.principal, factsOf(ref.type, ref.id, rec), "read", "read", { log: false, at });
    if (access.entry) toLog.push(access.entry);
    if (!access.allowed) continue;
    entries.push({
      fullUrl: `${base}/${ref.type}/${ref.id}`,
      resource: rec.resource as BundleEntry["resource"],
      search: { mode: "match" },
    });
  }
  if (toLog.length > 0) ctx.accessLog.log(toLog);
  return { entries, held };
}

/** Whether the patient is registered on this node's ledger and not erased. */
function registered(ctx: FhirContext, patient: string): boolean {
  try {
    return readState.patient(ctx.node.store.state, patient)?.status === "active";
  } catch {
    return false;
  }
}

/**
 * GET [base]/Patient/[id]/$everything. With `exchange`, other custodians' records are included (see the top of this
 * file); without, this custodian's only.
 */
export function everythingWith(exchange?: ExchangeOptions): FhirHandler {
  return async (ctx, req) => {
    const id = req.params.id ?? "";
    requireScope(req.principal, "Patient", "read");
    for (const name of new Set(req.query.keys())) {
      if (!ALLOWED_PARAMS.has(name)) throw badRequest("parameter not supported by $everything", name, "not-supported");
    }
    const count = intParam(req.query, "_count", MAX_COUNT, MAX_COUNT);
    const offset = intParam(req.query, "_offset", 0, 100_000);
    let types: Set<string> | undefined;
    const typeParam = req.query.get("_type");
    if (typeParam !== null) {
      types = new Set(typeParam.split(","));
      for (const t of types) if (!isResourceType(t)) throw badRequest("not a resource type", "_type");
    }
    // Patients and proxies reach one compartment only: another patient's $everything asks nobody.
    const own = req.principal.patient === undefined || req.principal.patient === id;
    const exchanging = exchange !== undefined && own && registered(ctx, id);
    const local = localPart(ctx, req, id, types, exchanging);
    const others = exchanging ? await otherCustodians(ctx, req.principal, id, types, exchange) : [];
    const all = mergeEverything([{ custodian: ctx.orgId, entries: local.entries }, ...others]);
    const matches = all.filter((e) => e.search?.mode !== "outcome");
    if (!local.held && matches.length === 0) throw notFound(`Patient/${id}`);
    const outcomes = all.filter((e) => e.search?.mode === "outcome");
    const page = matches.slice(offset, offset + count);
    const base = `${ctx.baseUrl.replace(/\/+$/, "")}/Patient/${id}/$everything`;
    const params = [...req.query.entries()].filter(([k]) => k !== "_count" && k !== "_offset");
    const bundle: Bundle = {
      resourceType: "Bundle",
      type: "searchset",
      total: matches.length,
      link: searchLinks(base, params, offset, count, matches.length > offset + count),
      entry: [...page, ...outcomes],
    };
    return { status: 200, body: bundle, headers: { "content-type": FHIR_JSON } };
  };
}

/** GET [base]/Patient/[id]/$everything, this custodian's records only. */
export const everything: FhirHandler = everythingWith();
