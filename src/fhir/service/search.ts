// Type-level search: the query is parsed (`parseSearch`), run on the vault's blind indexes (`vault.search`), and every
// match is read back and put through the consent gate; only what the caller may see is counted or returned.
//
// Hidden matches leave no trace in the answer: `total` counts visible matches only, and `_count`/`_offset` page over
// the visible matches (page n+1 starts right after the last visible match of page n, so there are no gaps or
// repeats). Patients and proxies search only their own compartment: a `patient=` clause (or `_id=` on Patient) naming
// them is added to every query, so other patients' records are not even looked at.
//
// Access log: every match the caller was refused is logged as a denial, and every returned match as a permit; matches
// that were permitted but fell outside the page are not logged as reads (nothing of them was served beyond being
// counted).
//
// Cost: counting visible matches means deciding on every match. A query matching more than `MAX_CANDIDATES` records
// is refused (400, too-costly) with a request to narrow it, rather than decrypting without bound.

import type { Bundle, BundleEntry } from "@medplum/fhirtypes";
import { VaultError } from "../../vault/vault.ts";
import { badRequest, notSupported } from "../outcome.ts";
import { parseSearch, searchLinks } from "../search-query.ts";
import { isResourceType } from "../validate.ts";
import { type AccessResult, checkAccess } from "./consent-check.ts";
import type { AccessEntry, FhirContext, FhirHandler, FhirRequest } from "./context.ts";
import { FHIR_JSON, factsOf, guarded, requireScope } from "./read.ts";

/** Most matches one search may decide on. */
export const MAX_CANDIDATES = 20_000;

/** GET [base]/[type]?… */
export const search: FhirHandler = async (ctx, req) => {
  const type = req.params.type ?? "";
  if (!isResourceType(type)) throw notSupported(`unknown resource type ${type.slice(0, 64)}`, "resourceType", 404);
  requireScope(req.principal, type, "search");
  const parsed = parseSearch(type, req.query, { baseUrl: ctx.baseUrl });
  const query = parsed.query;
  const patient = req.principal.patient;
  if (patient !== undefined) {
    // The patient compartment: patients and proxies never search beyond their own record.
    if (type === "Patient") query.ids = (query.ids ?? [patient]).filter((id) => id === patient);
    else query.clauses.push({ param: "patient", kind: "reference", anyOf: [`Patient/${patient}`] });
  }
  let ids: string[];
  try {
    ids = query.ids !== undefined && query.ids.length === 0 ? [] : ctx.vault.search(query);
  } catch (error) {
    if (error instanceof VaultError) throw badRequest(error.message, undefined, "invalid");
    throw error;
  }
  if (ids.length > MAX_CANDIDATES) {
    throw badRequest(
      `the search matches too many records; narrow it (at most ${MAX_CANDIDATES})`,
      undefined,
      "too-costly",
    );
  }
  const page = visiblePage(ctx, req, type, ids, parsed.offset, parsed.count);
  const base = `${ctx.baseUrl.replace(/\/+$/, "")}/${type}`;
  const bundle: Bundle = {
    resourceType: "Bundle",
    type: "searchset",
    total: page.total,
    link: searchLinks(base, parsed.params, parsed.offset, parsed.count, page.total > parsed.offset + parsed.count),
    entry: page.entries,
  };
  return { status: 200, body: bundle, headers: { "content-type": FHIR_JSON } };
};

/**
 * Reads and decides every id in order; returns the visible count and the entries of the visible page
 * `[offset, offset + count)`. Logs denials and the returned permits.
 */
export function visiblePage(
  ctx: FhirContext,
  req: FhirRequest,
  type: string,
  ids: readonly string[],
  offset: number,
  count: number,
): { total: number; entries: BundleEntry[] } {
  const base = ctx.baseUrl.replace(/\/+$/, "");
  const entries: BundleEntry[] = [];
  const toLog: AccessEntry[] = [];
  const at = ctx.now();
  let visible = 0;
  for (const id of ids) {
    const rec = guarded(ctx, type, () => ctx.vault.read(type, id));
    if (rec === undefined || rec.deleted) continue;
    const access: AccessResult = checkAccess(ctx, req.principal, factsOf(type, id, rec), "read", "search", {
      log: false,
      at,
    });
    if (!access.allowed) {
      if (access.entry) toLog.push(access.entry);
      continue;
    }
    if (visible >= offset && visible < offset + count) {
      entries.push({
        fullUrl: `${base}/${type}/${id}`,
        resource: rec.resource as BundleEntry["resource"],
        search: { mode: "match" },
      });
      if (access.entry) toLog.push(access.entry);
    }
    visible++;
  }
  if (toLog.length > 0) ctx.accessLog.log(toLog);
  return { total: visible, entries };
}
