// Transaction bundles for import (`POST /fhir`, `careledger import`): checked whole before anything is stored, so a
// bundle is stored entirely or not at all.
//
// What is accepted:
// - `Bundle.type` `transaction`. `batch` is refused (400): a batch's entries succeed or fail one by one and may not
//   refer to each other, which is not what an import wants; send it as a transaction instead.
// - `request.method` POST (create; the server assigns the id, any id in the resource is replaced) and PUT
//   (`Type/id`: create or update with that id; `ifMatch` is passed on for the vault's version check). GET, DELETE,
//   PATCH and HEAD are refused, as are conditional requests (`ifNoneExist`, `ifNoneMatch`, `ifModifiedSince`,
//   `Type?query` URLs) and conditional references.
// - `fullUrl` `urn:uuid:`, `urn:oid:` or an absolute URL, unique within the bundle. Every `Reference.reference` that
//   equals an entry's fullUrl, anywhere in any resource (contained ones included), is rewritten to `Type/id` of that
//   entry's target, after checking the element may point at that type. A `urn:` reference that names no entry is an
//   error.
// Errors name the entry: `Bundle.entry[3].resource.subject.reference`.
//
// `prepareTransaction` takes ownership of the bundle: resources are returned with their ids set and references
// rewritten in place (copying every resource would cost more than the rest of the import). Nothing is changed when it
// throws.

import type { Bundle, BundleEntry, Resource } from "@medplum/fhirtypes";
import { badRequest, conflict, notSupported, OperationOutcomeError, required, tooLarge } from "./outcome.ts";
import { patientOf } from "./resource-facts.ts";
import { ID_RE, parseReference, STORED_TYPES, type ValidateOptions, validateResource } from "./validate.ts";

export interface PrepareOptions {
  /**
   * A fresh resource id (the vault's: random, carrying nothing). It must never have been used: an entry given one is
   * marked `assigned`, and the vault then skips looking for earlier versions of it.
   */
  newId: () => string;
  /**
   * For POST entries: the id to store the resource under instead of a fresh `newId()` (import gives a Patient its
   * ledger pseudonym this way), or undefined for a fresh one. Called after the resource validated, before any
   * reference is rewritten; `fullUrl` is the entry's own, if any.
   */
  idFor?: (resourceType: string, resource: Resource, fullUrl: string | undefined) => string | undefined;
  /** Largest number of entries (default 5,000); more is 413. */
  maxEntries?: number;
  /** Types that may be imported (default `STORED_TYPES`). */
  types?: ReadonlySet<string>;
  /** Size limits passed to `validateResource` for each resource. */
  limits?: Pick<ValidateOptions, "maxDepth" | "maxNodes" | "maxStringLength">;
}

export interface PreparedEntry {
  /** Position of the entry in the request bundle (the response lists entries in this order). */
  index: number;
  method: "POST" | "PUT";
  resourceType: string;
  /** The id the resource is stored under (also set as `resource.id`). */
  id: string;
  resource: Resource;
  /** The Patient this record belongs to (after references were rewritten), from `patientOf`. */
  patient?: string;
  /** PUT with `request.ifMatch`: the version the client expects to replace. */
  ifMatch?: string;
  /** The id came from `newId` (POST without `idFor`): a new id, never stored before. */
  assigned?: true;
}

const ENTRY_KEYS: ReadonlySet<string> = new Set([
  "id",
  "extension",
  "modifierExtension",
  "link",
  "fullUrl",
  "resource",
  "request",
]);
const REQUEST_KEYS: ReadonlySet<string> = new Set([
  "id",
  "extension",
  "modifierExtension",
  "method",
  "url",
  "ifMatch",
  "ifNoneMatch",
  "ifModifiedSince",
  "ifNoneExist",
]);
const BUNDLE_KEYS: ReadonlySet<string> = new Set([
  "resourceType",
  "id",
  "meta",
  "implicitRules",
  "language",
  "identifier",
  "type",
  "timestamp",
  "total",
  "link",
  "entry",
  "signature",
]);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The version in an ETag (`W/"3"` or `"3"`), or undefined when it is not one. */
export function parseETag(value: string): string | undefined {
  const m = /^(?:W\/)?"([A-Za-z0-9\-.]{1,64})"$/.exec(value.trim());
  return m?.[1];
}

interface PendingReference {
  holder: { reference: string };
  allowed: readonly string[] | undefined;
  expression: () => string;
}

/**
 * Checks a transaction bundle and returns its resources ready to store: ids assigned, `urn:uuid:` references
 * rewritten, in a safe order (Patients first, then resources that belong to no patient — organisations,
 * practitioners, medications — then the patients' records, each group in bundle order). Throws OperationOutcomeError
 * (400, 409 for duplicates, 413 over `maxEntries`) naming the entry and element.
 */
export function prepareTransaction(bundle: unknown, options: PrepareOptions): PreparedEntry[] {
  if (!isObject(bundle) || bundle.resourceType !== "Bundle") {
    throw badRequest("expected a Bundle", "resourceType", "structure");
  }
  for (const key of Object.keys(bundle)) {
    if (!BUNDLE_KEYS.has(key)) throw badRequest("unknown element", `Bundle.${key}`, "structure");
  }
  if (bundle.type === "batch") throw notSupported("batch bundles are not supported; send a transaction", "Bundle.type");
  if (bundle.type !== "transaction") throw badRequest("Bundle.type must be transaction", "Bundle.type", "value");
  const entries = bundle.entry ?? [];
  if (!Array.isArray(entries)) throw badRequest("must be an array", "Bundle.entry", "structure");
  const maxEntries = options.maxEntries ?? 5000;
  if (entries.length > maxEntries) throw tooLarge(`a bundle may hold at most ${maxEntries} entries`, "Bundle.entry");

  const types = options.types ?? STORED_TYPES;
  const bundleUrls = new Set<string>();
  for (const entry of entries) {
    if (isObject(entry) && typeof entry.fullUrl === "string") bundleUrls.add(entry.fullUrl);
  }
  const prepared: PreparedEntry[] = [];
  const targetOf = new Map<string, string>(); // fullUrl → Type/id
  const targets = new Set<string>();
  const pending: PendingReference[] = [];

  for (let index = 0; index < entries.length; index++) {
    const at = `Bundle.entry[${index}]`;
    const entry: unknown = entries[index];
    if (!isObject(entry)) throw badRequest("must be an object", at, "structure");
    for (const key of Object.keys(entry)) {
      if (!ENTRY_KEYS.has(key)) throw badRequest("unknown element", `${at}.${key}`, "structure");
    }
    const request = entry.request;
    if (!isObject(request)) throw required(`${at}.request`);
    for (const key of Object.keys(request)) {
      if (!REQUEST_KEYS.has(key)) throw badRequest("unknown element", `${at}.request.${key}`, "structure");
    }
    for (const key of ["ifNoneExist", "ifNoneMatch", "ifModifiedSince"]) {
      if (request[key] !== undefined)
        throw notSupported("conditional requests are not supported", `${at}.request.${key}`);
    }
    const method = request.method;
    if (method !== "POST" && method !== "PUT") {
      if (typeof method !== "string") throw required(`${at}.request.method`);
      throw notSupported("only POST and PUT are supported in a transaction", `${at}.request.method`);
    }
    const url = request.url;
    if (typeof url !== "string" || url === "") throw required(`${at}.request.url`);
    if (url.includes("?")) throw notSupported("conditional requests are not supported", `${at}.request.url`);

    const resource = entry.resource;
    if (resource === undefined) throw required(`${at}.resource`);
    const validated = validateResource(resource, {
      ...options.limits,
      path: `${at}.resource`,
      types,
      bundleUrls,
      onReference: (holder, allowed, expression) => pending.push({ holder, allowed, expression }),
    });
    const resourceType = validated.resourceType;

    let id: string;
    let assigned = false;
    if (method === "POST") {
      if (url !== resourceType) throw badRequest(`POST url must be ${resourceType}`, `${at}.request.url`, "value");
      const fullUrl = typeof entry.fullUrl === "string" ? entry.fullUrl : undefined;
      const chosen = options.idFor?.(resourceType, validated, fullUrl);
      assigned = chosen === undefined;
      id = chosen ?? options.newId();
      if (!ID_RE.test(id)) throw new OperationOutcomeError(500, "exception", "invalid id generated");
    } else {
      const parts = url.split("/");
      if (parts.length !== 2 || parts[0] !== resourceType || !ID_RE.test(parts[1] as string)) {
        throw badRequest(`PUT url must be ${resourceType}/id`, `${at}.request.url`, "value");
      }
      id = parts[1] as string;
      if (validated.id !== undefined && validated.id !== id) {
        throw badRequest("resource id does not match request.url", `${at}.resource.id`, "value");
      }
    }
    const target = `${resourceType}/${id}`;
    if (targets.has(target)) throw conflict("two entries write the same resource", `${at}.request.url`);
    targets.add(target);

    let ifMatch: string | undefined;
    if (request.ifMatch !== undefined) {
      const version = typeof request.ifMatch === "string" ? parseETag(request.ifMatch) : undefined;
      if (method !== "PUT" || version === undefined) {
        throw badRequest('ifMatch must be an ETag (W/"version") on a PUT', `${at}.request.ifMatch`, "value");
      }
      ifMatch = version;
    }

    const fullUrl = entry.fullUrl;
    if (fullUrl !== undefined) {
      const ref = typeof fullUrl === "string" ? parseReference(fullUrl) : undefined;
      if (ref === undefined || (ref.kind !== "urn" && ref.kind !== "absolute")) {
        throw badRequest("fullUrl must be a urn:uuid:, urn:oid: or absolute URL", `${at}.fullUrl`, "value");
      }
      if (targetOf.has(fullUrl as string)) throw conflict("fullUrl appears twice", `${at}.fullUrl`);
      targetOf.set(fullUrl as string, target);
    }
    prepared.push({
      index,
      method,
      resourceType,
      id,
      resource: validated,
      ...(ifMatch === undefined ? {} : { ifMatch }),
      ...(assigned ? { assigned: true as const } : {}),
    });
  }

  // Resolve every reference before changing any.
  const rewrites: [holder: { reference: string }, target: string][] = [];
  for (const ref of pending) {
    const target = targetOf.get(ref.holder.reference);
    if (target === undefined) {
      if (ref.holder.reference.startsWith("urn:")) {
        throw badRequest("reference to an entry that is not in the bundle", ref.expression(), "invalid");
      }
      continue;
    }
    const type = target.slice(0, target.indexOf("/"));
    if (ref.allowed !== undefined && !ref.allowed.includes(type)) {
      throw badRequest(`reference to ${type} not allowed here (expected ${ref.allowed.join(", ")})`, ref.expression());
    }
    rewrites.push([ref.holder, target]);
  }
  for (const [holder, target] of rewrites) holder.reference = target;
  for (const p of prepared) {
    (p.resource as { id?: string }).id = p.id;
    const patient = patientOf(p.resource);
    if (patient !== undefined) p.patient = patient;
  }

  const rank = (p: PreparedEntry): number => (p.resourceType === "Patient" ? 0 : p.patient === undefined ? 1 : 2);
  return prepared
    .map((p) => ({ p, r: rank(p) }))
    .sort((a, b) => a.r - b.r || a.p.index - b.p.index)
    .map(({ p }) => p);
}

export interface EntryResult {
  /** `PreparedEntry.index`: the response lists entries in request order. */
  index: number;
  resourceType: string;
  id: string;
  versionId: string;
  /** true: 201 Created; false: 200 OK (an update). */
  created: boolean;
  /** meta.lastUpdated (an instant). */
  lastModified?: string;
}

/**
 * The `transaction-response` Bundle: one entry per request entry, in request order, with `response.status`
 * (`201 Created` / `200 OK`), `location` (`Type/id/_history/version`), `etag` (`W/"version"`) and `lastModified`.
 * With `baseUrl`, each entry also carries its `fullUrl`.
 */
export function transactionResponse(results: readonly EntryResult[], options: { baseUrl?: string } = {}): Bundle {
  const base = options.baseUrl?.replace(/\/+$/, "");
  const entry: BundleEntry[] = [...results]
    .sort((a, b) => a.index - b.index)
    .map((r) => ({
      ...(base === undefined ? {} : { fullUrl: `${base}/${r.resourceType}/${r.id}` }),
      response: {
        status: r.created ? "201 Created" : "200 OK",
        location: `${r.resourceType}/${r.id}/_history/${r.versionId}`,
        etag: `W/"${r.versionId}"`,
        ...(r.lastModified === undefined ? {} : { lastModified: r.lastModified }),
      },
    }));
  return { resourceType: "Bundle", type: "transaction-response", entry };
}
