// Structural validation of FHIR R4 (4.0.1) resources before they are stored or indexed.
//
// Strictness (the rules, in the order they are checked; the first failure throws an OperationOutcomeError 400 whose
// expression names the element, e.g. `Observation.component[1].code`):
// - the value is a JSON object whose `resourceType` is an R4 resource type this server stores (`STORED_TYPES`);
// - every element name, at every depth, is one R4 defines for that place (the element model is fhirpath.js's R4
//   model, generated from the R4 StructureDefinitions). Unknown elements are the most common sign of a wrong type or
//   a different FHIR version, and storing what no search or reader understands would only hide mistakes, so they
//   are rejected everywhere; extensions are the one place for extra data;
// - repeating elements are non-empty arrays, single ones are not arrays; no `null` except in primitive arrays paired
//   with a `_element` array (FHIR JSON); no empty objects or arrays;
// - primitives by the R4 regexes (date, dateTime, instant, time, id, code, uri, oid, uuid, integer ranges, decimal,
//   boolean, base64Binary), dates also by the calendar (no 2021-02-30); xhtml narrative starts with a `<div` and
//   carries no active content (scripts, forms, event handlers);
// - elements with R4 minimum cardinality 1 are present (`REQUIRED`: top-level for the stored types, and the
//   backbone elements of those types that have them);
// - references: `Type/id[/_history/vid]` with a known type that the element allows (R4 target profiles),
//   `urn:uuid:`/`urn:oid:` (bundles), `#id` naming a contained resource, or an absolute URL. Conditional references
//   (`Patient?identifier=…`) are not supported. The patient link of a resource (`subject`, `patient`,
//   `beneficiary`) may not be absolute or contained: consent decisions depend on knowing whose record it is.
//   One leniency, for the UK Core Provenance example: a resource type followed by an absolute URL
//   (`Organization/https://…`) is accepted as an opaque URL outside the patient link, never resolved or indexed;
// - `fhir_comments` (STU3's XML comments, still emitted by XML→JSON converters) is tolerated as an array of strings;
// - contained resources have an id, contain nothing themselves and carry no meta.versionId/lastUpdated (dom-2,
//   dom-4);
// - limits: nesting depth, number of JSON values, string length (413 for size, 400 for depth).
//
// Not checked: value sets and code bindings, invariants beyond the above, profiles, referential integrity across
// resources (a stand-alone resource may point at what another server holds).

import type { Resource } from "@medplum/fhirtypes";
import r4 from "fhirpath/fhir-context/r4";
import { badRequest, notSupported, required, tooLarge } from "./outcome.ts";

/** The resource types this server stores (import, create, update). Search is narrower: see search-params.ts. */
export const STORED_TYPES: ReadonlySet<string> = new Set([
  "Patient",
  "Observation",
  "Condition",
  "MedicationRequest",
  "AllergyIntolerance",
  "Immunization",
  "Encounter",
  "Procedure",
  "DiagnosticReport",
  "CarePlan",
  "Organization",
  "Practitioner",
  "PractitionerRole",
  "Location",
  "Medication",
  "MedicationAdministration",
  "MedicationStatement",
  "MedicationDispense",
  "Claim",
  "ExplanationOfBenefit",
  "Coverage",
  "ImagingStudy",
  "CareTeam",
  "Goal",
  "Device",
  "DocumentReference",
  "ServiceRequest",
  "Specimen",
  "FamilyMemberHistory",
  "Flag",
  "EpisodeOfCare",
  "Appointment",
  "Composition",
  "QuestionnaireResponse",
  "RiskAssessment",
  "ClinicalImpression",
  "DeviceRequest",
  "NutritionOrder",
  "Media",
  "Communication",
  "RelatedPerson",
  "Provenance",
  "Consent",
  "AuditEvent",
]);

/** Elements whose reference says whose record a resource is (see resource-facts.ts `patientOf`). */
export const PATIENT_LINK_ELEMENTS: readonly string[] = ["subject", "patient", "beneficiary"];

/**
 * R4 elements with minimum cardinality ≥ 1, by element path; `name[x]` is a choice (any one of its types). Only
 * paths of the stored types (and the datatypes they use) are listed.
 */
export const REQUIRED: Readonly<Record<string, readonly string[]>> = {
  Extension: ["url"],
  Narrative: ["status", "div"],
  Signature: ["type", "when", "who"],
  Observation: ["status", "code"],
  "Observation.component": ["code"],
  Condition: ["subject"],
  MedicationRequest: ["status", "intent", "medication[x]", "subject"],
  "MedicationRequest.substitution": ["allowed[x]"],
  AllergyIntolerance: ["patient"],
  "AllergyIntolerance.reaction": ["manifestation"],
  Immunization: ["status", "vaccineCode", "patient", "occurrence[x]"],
  "Immunization.performer": ["actor"],
  "Immunization.protocolApplied": ["doseNumber[x]"],
  Encounter: ["status", "class"],
  "Encounter.statusHistory": ["status", "period"],
  "Encounter.classHistory": ["class", "period"],
  "Encounter.diagnosis": ["condition"],
  "Encounter.location": ["location"],
  Procedure: ["status", "subject"],
  "Procedure.performer": ["actor"],
  "Procedure.focalDevice": ["manipulated"],
  DiagnosticReport: ["status", "code"],
  "DiagnosticReport.media": ["link"],
  CarePlan: ["status", "intent", "subject"],
  "CarePlan.activity.detail": ["status"],
  Patient: [],
  "Patient.link": ["other", "type"],
  "Patient.communication": ["language"],
  MedicationAdministration: ["status", "medication[x]", "subject", "effective[x]"],
  "MedicationAdministration.performer": ["actor"],
  MedicationStatement: ["status", "medication[x]", "subject"],
  MedicationDispense: ["status", "medication[x]"],
  Claim: ["status", "type", "use", "patient", "created", "provider", "priority", "insurance"],
  "Claim.careTeam": ["sequence", "provider"],
  "Claim.supportingInfo": ["sequence", "category"],
  "Claim.diagnosis": ["sequence", "diagnosis[x]"],
  "Claim.procedure": ["sequence", "procedure[x]"],
  "Claim.insurance": ["sequence", "focal", "coverage"],
  "Claim.item": ["sequence", "productOrService"],
  "Claim.item.detail": ["sequence", "productOrService"],
  ExplanationOfBenefit: ["status", "type", "use", "patient", "created", "insurer", "provider", "outcome", "insurance"],
  "ExplanationOfBenefit.careTeam": ["sequence", "provider"],
  "ExplanationOfBenefit.diagnosis": ["sequence", "diagnosis[x]"],
  "ExplanationOfBenefit.insurance": ["focal", "coverage"],
  "ExplanationOfBenefit.item": ["sequence", "productOrService"],
  "ExplanationOfBenefit.item.adjudication": ["category"],
  "ExplanationOfBenefit.total": ["category", "amount"],
  Coverage: ["status", "beneficiary", "payor"],
  ImagingStudy: ["status", "subject"],
  "ImagingStudy.series": ["uid", "modality"],
  "ImagingStudy.series.instance": ["uid", "sopClass"],
  Goal: ["lifecycleStatus", "description", "subject"],
  DocumentReference: ["status", "content"],
  "DocumentReference.content": ["attachment"],
  ServiceRequest: ["status", "intent", "subject"],
  FamilyMemberHistory: ["status", "patient", "relationship"],
  Flag: ["status", "code", "subject"],
  EpisodeOfCare: ["status", "patient"],
  Appointment: ["status", "participant"],
  "Appointment.participant": ["status"],
  Composition: ["status", "type", "date", "author", "title"],
  QuestionnaireResponse: ["status"],
  RiskAssessment: ["status", "subject"],
  ClinicalImpression: ["status", "subject"],
  DeviceRequest: ["status", "intent", "code[x]", "subject"],
  NutritionOrder: ["status", "intent", "patient", "dateTime"],
  Media: ["status", "content"],
  Communication: ["status"],
  RelatedPerson: ["patient"],
  Provenance: ["target", "recorded", "agent"],
  "Provenance.agent": ["who"],
  "Provenance.entity": ["role", "what"],
  Consent: ["status", "scope", "category"],
  "Consent.verification": ["verified"],
  "Consent.provision.actor": ["role", "reference"],
  "Consent.provision.data": ["meaning", "reference"],
  AuditEvent: ["type", "recorded", "agent", "source"],
  "AuditEvent.agent": ["requestor"],
  "AuditEvent.source": ["observer"],
  "AuditEvent.entity.detail": ["type", "value[x]"],
  "Bundle.entry.request": ["method", "url"],
};

export interface ValidateOptions {
  /** FHIRPath of the resource in its container (e.g. `Bundle.entry[3].resource`); errors are named under it. */
  path?: string;
  /** Resource types accepted at the root (default `STORED_TYPES`). */
  types?: ReadonlySet<string>;
  /** Require `id` (updates); default false (creates may omit it). */
  requireId?: boolean;
  /** Maximum nesting depth of JSON objects/arrays (default 32). */
  maxDepth?: number;
  /** Maximum number of JSON values in the resource (default 100,000). */
  maxNodes?: number;
  /** Maximum length of one string in UTF-16 units (default 1 Mi, FHIR's own limit for `string`). */
  maxStringLength?: number;
  /**
   * Called for every `Reference.reference` string (contained resources included), after its syntax was checked;
   * `allowed` are the resource types the element may point at (undefined = any). Bundles use it to rewrite
   * `urn:uuid:` references and check the target type.
   */
  /** The fullUrls of the bundle the resource is in: absolute ones among them may be patient links (rewritten). */
  bundleUrls?: ReadonlySet<string>;
  onReference?: (
    holder: { reference: string },
    allowed: readonly string[] | undefined,
    expression: () => string,
  ) => void;
}

// --- primitives --------------------------------------------------------------------------------------------------

const YEAR = "([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)";
const MONTH = "(0[1-9]|1[0-2])";
const DAY = "(0[1-9]|[1-2][0-9]|3[0-1])";
const TIME = "([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?";
const ZONE = "(Z|(\\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))";
/** R4 `date`. */
export const DATE_RE = new RegExp(`^${YEAR}(-${MONTH}(-${DAY})?)?$`);
/** R4 `dateTime` (a time needs a zone). */
export const DATETIME_RE = new RegExp(`^${YEAR}(-${MONTH}(-${DAY}(T${TIME}${ZONE})?)?)?$`);
/** R4 `instant`. */
export const INSTANT_RE = new RegExp(`^${YEAR}-${MONTH}-${DAY}T${TIME}${ZONE}$`);
const TIME_RE = new RegExp(`^${TIME}$`);
/** R4 `id` (resource ids, version ids). */
export const ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;
const CODE_RE = /^[^\s]+(\s[^\s]+)*$/;
const URI_RE = /^\S*$/;
const OID_RE = /^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$/;
const UUID_URN_RE = /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const UUID_URN_ANY_CASE_RE = /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const BASE64_RE = /^[A-Za-z0-9+/=\s]+$/;
const ELEMENT_NAME_RE = /^_?[A-Za-z][A-Za-z0-9_]{0,63}$/;
const SCHEME_RE = /^[A-Za-z][A-Za-z0-9+.-]*:/;
const INT32_MIN = -2_147_483_648;
const INT32_MAX = 2_147_483_647;
// Active content an R4 narrative may not carry (txt-1 allows only basic formatting, links and images).
const ACTIVE_XHTML_RE =
  /<\s*\/?\s*(script|form|iframe|frame|object|embed|applet|base|link|meta|style)\b|<[^>]*\son[a-z]+\s*=|<[^>]*=\s*["']?\s*javascript:/i;

/** Whether a date string (any precision) names real calendar days (`DATE_RE`/`DATETIME_RE` allow Feb 31). */
export function isCalendarValid(value: string): boolean {
  if (value.length < 10) return true;
  const year = Number(value.slice(0, 4));
  const month = Number(value.slice(5, 7));
  const day = Number(value.slice(8, 10));
  return day <= daysInMonth(year, month);
}

export function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

// --- references --------------------------------------------------------------------------------------------------

export type ParsedReference =
  /** `Type/id` or `Type/id/_history/vid`, relative to this server. */
  | { kind: "relative"; type: string; id: string; version?: string }
  /** `urn:uuid:…` or `urn:oid:…` (a bundle-local name until resolved). */
  | { kind: "urn"; value: string }
  /** `#id` (a contained resource) or `#` (the container itself). */
  | { kind: "local"; id: string }
  /** An absolute URL; `type`/`id` when its path ends in a FHIR RESTful `Type/id`. */
  | { kind: "absolute"; url: string; type?: string; id?: string }
  /** `Type?params`: a conditional reference (not supported by this server). */
  | { kind: "conditional"; type: string }
  /** `Type/<absolute URL>` (kept as is, never resolved). */
  | { kind: "opaque"; type: string };

const RESOURCE_TYPES: ReadonlySet<string> = new Set(
  Object.keys(r4.type2Parent).filter((t) => {
    for (let p: string | undefined = r4.type2Parent[t]; p !== undefined; p = r4.type2Parent[p]) {
      if (p === "Resource") return true;
    }
    return false;
  }),
);

/** Whether `type` is an R4 resource type (any, not only the stored ones). */
export function isResourceType(type: string): boolean {
  return RESOURCE_TYPES.has(type);
}

/** Parses a `Reference.reference`; `undefined` when it is malformed. */
export function parseReference(ref: string): ParsedReference | undefined {
  if (ref.length === 0 || ref.length > 4096 || !URI_RE.test(ref)) return undefined;
  if (ref.startsWith("#")) {
    const id = ref.slice(1);
    return id === "" || ID_RE.test(id) ? { kind: "local", id } : undefined;
  }
  if (ref.startsWith("urn:")) {
    if (UUID_URN_ANY_CASE_RE.test(ref) || OID_RE.test(ref)) return { kind: "urn", value: ref };
    return undefined;
  }
  if (SCHEME_RE.test(ref)) {
    let url: URL;
    try {
      url = new URL(ref);
    } catch {
      return undefined;
    }
    const parts = url.pathname.split("/");
    const history = parts.length >= 4 && parts[parts.length - 2] === "_history" ? 2 : 0;
    const type = parts[parts.length - 2 - history];
    const id = parts[parts.length - 1 - history];
    if (type !== undefined && id !== undefined && RESOURCE_TYPES.has(type) && ID_RE.test(id)) {
      return { kind: "absolute", url: ref, type, id };
    }
    return { kind: "absolute", url: ref };
  }
  const slash = ref.indexOf("/");
  const question = ref.indexOf("?");
  if (question > 0 && (slash < 0 || question < slash)) {
    const type = ref.slice(0, question);
    return RESOURCE_TYPES.has(type) ? { kind: "conditional", type } : undefined;
  }
  if (slash <= 0) return undefined;
  const type = ref.slice(0, slash);
  if (!RESOURCE_TYPES.has(type)) return undefined;
  const rest = ref.slice(slash + 1).split("/");
  const id = rest[0] as string;
  if (rest.length === 1 && ID_RE.test(id)) return { kind: "relative", type, id };
  if (rest.length === 3 && rest[1] === "_history" && ID_RE.test(id) && ID_RE.test(rest[2] as string)) {
    return { kind: "relative", type, id, version: rest[2] as string };
  }
  // `Organization/https://…` (UK Core example): an absolute URL behind a type — kept, never resolved.
  const tail = ref.slice(slash + 1);
  if (SCHEME_RE.test(tail) && URL.canParse(tail)) return { kind: "opaque", type };
  return undefined;
}

// --- the element model -------------------------------------------------------------------------------------------

type Kind = "primitive" | "complex" | "resource";

interface Context {
  /** Model path whose children are looked up first (`Observation`, `Observation.component`, `HumanName`). */
  path: string;
  /** Base types to fall back on (`DomainResource`, `Resource`; `BackboneElement`, `Element`). */
  chain: readonly string[];
}

interface ElementInfo {
  path: string;
  kind: Kind;
  type: string;
  repeating: boolean;
  /** For complex values: where their children are looked up. */
  context?: Context;
  /** For Reference values: the target types the element allows (undefined = any). */
  targets?: readonly string[];
}

/** FHIR primitive type names (and the FHIRPath system types they map to). */
export const PRIMITIVES: ReadonlySet<string> = new Set([
  "boolean",
  "integer",
  "decimal",
  "string",
  "code",
  "id",
  "markdown",
  "uri",
  "url",
  "canonical",
  "oid",
  "uuid",
  "date",
  "dateTime",
  "instant",
  "time",
  "base64Binary",
  "positiveInt",
  "unsignedInt",
  "xhtml",
  "System.String",
  "System.Boolean",
  "System.Integer",
  "System.Decimal",
  "System.Date",
  "System.DateTime",
  "System.Time",
]);

const path2Type = r4.path2Type as Record<string, string | undefined>;
const path2Repeating = r4.path2Repeating as Record<string, true | undefined>;
const path2RefType = r4.path2RefType as Record<string, string[] | undefined>;
const pathsDefinedElsewhere = r4.pathsDefinedElsewhere as Record<string, string | undefined>;
const type2Parent = r4.type2Parent as Record<string, string | undefined>;
const choiceTypePaths = r4.choiceTypePaths as Record<string, string[] | undefined>;

function parentsOf(type: string): string[] {
  const out: string[] = [];
  for (let p = type2Parent[type]; p !== undefined; p = type2Parent[p]) out.push(p);
  return out;
}

function contextOfType(type: string): Context {
  return { path: type, chain: parentsOf(type) };
}

const SINGLE_DEFINED_ELSEWHERE: ReadonlySet<string> = new Set([
  "ExampleScenario.process.step.operation.request",
  "ExampleScenario.process.step.operation.response",
]);

const ELEMENT_CONTEXT: Context = { path: "Element", chain: [] };
const childCache = new Map<string, Map<string, ElementInfo | null>>();

function lookup(ctx: Context, name: string): ElementInfo | undefined {
  let byName = childCache.get(ctx.path);
  if (byName === undefined) {
    byName = new Map();
    childCache.set(ctx.path, byName);
  }
  let info = byName.get(name);
  if (info === undefined) {
    info = resolveChild(ctx, name);
    byName.set(name, info);
  }
  return info ?? undefined;
}

function resolveChild(ctx: Context, name: string): ElementInfo | null {
  const own = `${ctx.path}.${name}`;
  const elsewhere = pathsDefinedElsewhere[own];
  if (elsewhere !== undefined) {
    const type = path2Type[elsewhere] ?? "BackboneElement";
    return {
      path: own,
      kind: "complex",
      type,
      // The model lists no cardinality for these; in R4 all repeat but the two ExampleScenario ones.
      repeating: !SINGLE_DEFINED_ELSEWHERE.has(own),
      context: { path: elsewhere, chain: [type, ...parentsOf(type)] },
    };
  }
  for (const base of [ctx.path, ...ctx.chain]) {
    const path = `${base}.${name}`;
    const type = path2Type[path];
    if (type === undefined) continue;
    const repeating = path2Repeating[path] === true;
    if (PRIMITIVES.has(type)) return { path, kind: "primitive", type, repeating };
    if (type === "Resource") return { path, kind: "resource", type, repeating };
    if (type === "Element" || type === "BackboneElement") {
      return { path, kind: "complex", type, repeating, context: { path, chain: [type, ...parentsOf(type)] } };
    }
    const targets = path2RefType[path];
    return {
      path,
      kind: "complex",
      type,
      repeating,
      context: contextOfType(type),
      ...(targets !== undefined && !targets.includes("Resource") ? { targets } : {}),
    };
  }
  return null;
}

interface RequiredElement {
  /** As R4 names it (`medication[x]`). */
  name: string;
  /** Its JSON names: a choice (`medication[x]`) expands to `medicationCodeableConcept`, `medicationReference`. */
  keys: readonly string[];
}

const requiredCache = new Map<string, readonly RequiredElement[]>();
function requiredOf(path: string): readonly RequiredElement[] | undefined {
  let out = requiredCache.get(path);
  if (out === undefined) {
    const spec = REQUIRED[path];
    if (spec === undefined) return undefined;
    out = spec.map((name) => {
      if (!name.endsWith("[x]")) return { name, keys: [name] };
      const base = name.slice(0, -3);
      const types = choiceTypePaths[`${path}.${base}`] ?? [];
      return { name, keys: types.map((t) => `${base}${t}`) };
    });
    requiredCache.set(path, out);
  }
  return out;
}

// --- the walk ----------------------------------------------------------------------------------------------------

interface WalkState {
  readonly options: ValidateOptions;
  readonly maxDepth: number;
  readonly maxNodes: number;
  readonly maxString: number;
  nodes: number;
  /** Path segments from the root (`Observation`, `.component`, `[1]`), joined only when an error is reported. */
  readonly segments: string[];
  /** `#id` references seen, checked against `containedIds` at the end (ref-1). */
  readonly localRefs: { id: string; expression: string }[];
  readonly containedIds: Set<string>;
}

function expressionOf(state: WalkState, extra?: string): string {
  const base = state.segments.join("");
  return extra === undefined ? base : `${base}.${extra}`;
}

function fail(
  state: WalkState,
  diagnostics: string,
  extra?: string,
  code: "invalid" | "structure" | "value" = "invalid",
): never {
  throw badRequest(diagnostics, expressionOf(state, extra), code);
}

/**
 * Checks `resource` against the R4 element model and the rules above; returns it typed. Throws OperationOutcomeError
 * (400, or 413 for size limits) naming the element at fault. The resource is not modified.
 */
export function validateResource(resource: unknown, options: ValidateOptions = {}): Resource {
  const state: WalkState = {
    options,
    maxDepth: options.maxDepth ?? 32,
    maxNodes: options.maxNodes ?? 100_000,
    maxString: options.maxStringLength ?? 1_048_576,
    nodes: 0,
    segments: [],
    localRefs: [],
    containedIds: new Set(),
  };
  const types = options.types ?? STORED_TYPES;
  const root = options.path;
  if (!isPlainObject(resource)) {
    throw badRequest("a resource must be a JSON object", root ?? "Resource", "structure");
  }
  const type = resource.resourceType;
  if (typeof type !== "string" || type.length === 0) {
    throw badRequest(
      "resourceType is missing",
      root === undefined ? "resourceType" : `${root}.resourceType`,
      "required",
    );
  }
  if (!RESOURCE_TYPES.has(type)) {
    // The caller's type name is not echoed: it could be anything.
    throw badRequest("unknown resourceType", root === undefined ? "resourceType" : `${root}.resourceType`, "value");
  }
  if (!types.has(type)) {
    throw notSupported(
      `resource type ${type} is not supported here`,
      root === undefined ? "resourceType" : `${root}.resourceType`,
    );
  }
  state.segments.push(root ?? type);
  if (resource.id === undefined) {
    if (options.requireId === true) throw required(expressionOf(state, "id"));
  } else if (typeof resource.id !== "string" || !ID_RE.test(resource.id)) {
    fail(state, "id must be 1-64 characters of A-Z, a-z, 0-9, '-' and '.'", "id", "value");
  }
  walkResource(state, resource, type, 0, false);
  for (const ref of state.localRefs) {
    if (ref.id !== "" && !state.containedIds.has(ref.id)) {
      throw badRequest("local reference names no contained resource", ref.expression, "invalid");
    }
  }
  return resource as unknown as Resource;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function walkResource(
  state: WalkState,
  resource: Record<string, unknown>,
  type: string,
  depth: number,
  contained: boolean,
): void {
  const ctx = contextOfType(type);
  walkObject(state, resource, ctx, depth, true, undefined);
  if (contained) {
    if (resource.contained !== undefined) fail(state, "a contained resource may not contain others", "contained");
    const meta = resource.meta;
    if (isPlainObject(meta) && (meta.versionId !== undefined || meta.lastUpdated !== undefined)) {
      fail(state, "a contained resource may not carry meta.versionId or meta.lastUpdated", "meta");
    }
  }
}

function walkObject(
  state: WalkState,
  obj: Record<string, unknown>,
  ctx: Context,
  depth: number,
  isResource: boolean,
  targets: readonly string[] | undefined,
): void {
  if (depth > state.maxDepth) fail(state, `nested deeper than ${state.maxDepth} levels`, undefined, "structure");
  const keys = Object.keys(obj);
  if (keys.length === 0) fail(state, "empty object", undefined, "structure");
  for (const key of keys) {
    if (++state.nodes > state.maxNodes) {
      throw tooLarge(`resource has more than ${state.maxNodes} elements`, state.segments[0]);
    }
    if (isResource && key === "resourceType") continue;
    const value = obj[key];
    if (key === "fhir_comments") {
      checkComments(state, value);
      continue;
    }
    const isExtension = key.charCodeAt(0) === 95; /* _ */
    const name = isExtension ? key.slice(1) : key;
    const info = lookup(ctx, name);
    if (info === undefined) {
      // The name is the caller's own, but an absurd one is not echoed back.
      fail(state, "unknown element", ELEMENT_NAME_RE.test(key) ? key : undefined, "structure");
    }
    state.segments.push(`.${key}`);
    if (isExtension) {
      if (info.kind !== "primitive") fail(state, "only primitive elements have a '_' form", undefined, "structure");
      walkPrimitiveExtension(state, value, info, depth);
    } else if (info.repeating) {
      if (!Array.isArray(value)) fail(state, "must be an array", undefined, "structure");
      if (value.length === 0) fail(state, "empty array", undefined, "structure");
      const companion = info.kind === "primitive" ? obj[`_${key}`] : undefined;
      state.nodes += value.length;
      if (state.nodes > state.maxNodes) {
        throw tooLarge(`resource has more than ${state.maxNodes} elements`, state.segments[0]);
      }
      for (let i = 0; i < value.length; i++) {
        state.segments.push(`[${i}]`);
        const item = value[i];
        if (item === null) {
          if (!Array.isArray(companion) || companion[i] === null || companion[i] === undefined) {
            fail(state, "null is allowed only with an extension in the '_' array", undefined, "structure");
          }
        } else {
          walkValue(state, item, info, depth + 1, undefined, undefined);
        }
        state.segments.pop();
      }
    } else {
      if (Array.isArray(value)) fail(state, "must not be an array", undefined, "structure");
      walkValue(state, value, info, depth, obj, targets);
    }
    state.segments.pop();
  }
  const req = requiredOf(ctx.path);
  if (req !== undefined) {
    for (const element of req) {
      let present = false;
      for (const k of element.keys) {
        if (obj[k] !== undefined || obj[`_${k}`] !== undefined) {
          present = true;
          break;
        }
      }
      if (!present) throw required(expressionOf(state, element.name));
    }
  }
}

// `fhir_comments` (STU3 JSON's carrier of XML comments; converters still emit it, e.g. in the UK Core examples) is
// tolerated as an array of strings and otherwise ignored.
function checkComments(state: WalkState, value: unknown): void {
  if (!Array.isArray(value) || value.length === 0 || value.some((c) => typeof c !== "string" || c.length > 65_536)) {
    fail(state, "must be an array of strings", "fhir_comments", "structure");
  }
}

function walkPrimitiveExtension(state: WalkState, value: unknown, info: ElementInfo, depth: number): void {
  if (info.repeating) {
    if (!Array.isArray(value) || value.length === 0) fail(state, "must be a non-empty array", undefined, "structure");
    for (let i = 0; i < value.length; i++) {
      const item = value[i];
      if (item === null) continue;
      state.segments.push(`[${i}]`);
      if (!isPlainObject(item)) fail(state, "must be an object or null", undefined, "structure");
      walkObject(state, item, ELEMENT_CONTEXT, depth + 2, false, undefined);
      state.segments.pop();
    }
    return;
  }
  if (!isPlainObject(value)) fail(state, "must be an object", undefined, "structure");
  walkObject(state, value, ELEMENT_CONTEXT, depth + 1, false, undefined);
}

function walkValue(
  state: WalkState,
  value: unknown,
  info: ElementInfo,
  depth: number,
  holder: Record<string, unknown> | undefined,
  holderTargets: readonly string[] | undefined,
): void {
  if (value === null) fail(state, "null is not allowed", undefined, "structure");
  switch (info.kind) {
    case "primitive":
      checkPrimitive(state, value, info.type, info.path, holder, holderTargets);
      return;
    case "resource": {
      if (!isPlainObject(value)) fail(state, "must be a resource object", undefined, "structure");
      const type = value.resourceType;
      if (typeof type !== "string" || !RESOURCE_TYPES.has(type))
        fail(state, "unknown resourceType", "resourceType", "value");
      if (typeof value.id !== "string" || !ID_RE.test(value.id)) {
        fail(
          state,
          "a contained resource needs a valid id",
          "id",
          info.path.endsWith(".contained") ? "invalid" : "value",
        );
      }
      if (info.path.endsWith(".contained")) state.containedIds.add(value.id);
      walkResource(state, value, type, depth + 1, info.path.endsWith(".contained"));
      return;
    }
    case "complex": {
      if (!isPlainObject(value)) fail(state, "must be an object", undefined, "structure");
      walkObject(state, value, info.context as Context, depth + 1, false, info.targets);
      return;
    }
  }
}

function checkPrimitive(
  state: WalkState,
  value: unknown,
  type: string,
  path: string,
  holder: Record<string, unknown> | undefined,
  targets: readonly string[] | undefined,
): void {
  switch (type) {
    case "boolean":
    case "System.Boolean":
      if (typeof value !== "boolean") fail(state, "must be true or false", undefined, "value");
      return;
    case "integer":
    case "System.Integer":
    case "positiveInt":
    case "unsignedInt": {
      if (typeof value !== "number" || !Number.isInteger(value) || value < INT32_MIN || value > INT32_MAX) {
        fail(state, "must be a 32-bit integer", undefined, "value");
      }
      if (type === "positiveInt" && value < 1) fail(state, "must be ≥ 1", undefined, "value");
      if (type === "unsignedInt" && value < 0) fail(state, "must be ≥ 0", undefined, "value");
      return;
    }
    case "decimal":
    case "System.Decimal":
      if (typeof value !== "number" || !Number.isFinite(value)) fail(state, "must be a number", undefined, "value");
      return;
  }
  if (typeof value !== "string") fail(state, "must be a string", undefined, "value");
  if (value.length === 0) fail(state, "empty string", undefined, "value");
  if (value.length > state.maxString) {
    throw tooLarge(`string longer than ${state.maxString} characters`, expressionOf(state));
  }
  switch (type) {
    case "code":
      if (!CODE_RE.test(value)) fail(state, "not a valid code", undefined, "value");
      return;
    case "id":
      if (!ID_RE.test(value)) fail(state, "not a valid id", undefined, "value");
      return;
    case "uri":
    case "url":
    case "canonical":
      if (!URI_RE.test(value)) fail(state, "a URI may not contain whitespace", undefined, "value");
      return;
    case "oid":
      if (!OID_RE.test(value)) fail(state, "not a valid urn:oid", undefined, "value");
      return;
    case "uuid":
      if (!UUID_URN_RE.test(value)) fail(state, "not a valid urn:uuid", undefined, "value");
      return;
    case "date":
    case "System.Date":
      if (!DATE_RE.test(value) || !isCalendarValid(value)) fail(state, "not a valid date", undefined, "value");
      return;
    case "dateTime":
    case "System.DateTime":
      if (!DATETIME_RE.test(value) || !isCalendarValid(value)) fail(state, "not a valid dateTime", undefined, "value");
      return;
    case "instant":
      if (!INSTANT_RE.test(value) || !isCalendarValid(value)) fail(state, "not a valid instant", undefined, "value");
      return;
    case "time":
    case "System.Time":
      if (!TIME_RE.test(value)) fail(state, "not a valid time", undefined, "value");
      return;
    case "base64Binary":
      if (!BASE64_RE.test(value)) fail(state, "not valid base64", undefined, "value");
      return;
    case "xhtml":
      if (!/^\s*<div[\s>]/.test(value)) fail(state, "narrative must be an xhtml <div>", undefined, "value");
      if (ACTIVE_XHTML_RE.test(value)) fail(state, "narrative may not contain active content", undefined, "value");
      return;
  }
  if (path === "Reference.reference" && holder !== undefined) checkReference(state, value, holder, targets);
}

function checkReference(
  state: WalkState,
  value: string,
  holder: Record<string, unknown>,
  targets: readonly string[] | undefined,
): void {
  const ref = parseReference(value);
  if (ref === undefined) fail(state, "not a valid reference", undefined, "value");
  // segments: [root, …, .<element>, ([i])?, .reference]; the element right under the resource is at index 1.
  const patientLink = state.segments.length <= 3 && PATIENT_LINK_ELEMENTS.includes(state.segments[1]?.slice(1) ?? "");
  switch (ref.kind) {
    case "conditional":
      throw notSupported("conditional references are not supported", expressionOf(state));
    case "relative":
      if (targets !== undefined && !targets.includes(ref.type)) {
        fail(state, `reference to ${ref.type} not allowed here (expected ${targets.join(", ")})`, undefined, "value");
      }
      break;
    case "absolute":
      // An absolute URL is a patient link only when it is the fullUrl of a bundle entry (it is rewritten to Type/id).
      if (patientLink && state.options.bundleUrls?.has(value) !== true) {
        fail(state, "the patient link must be a reference to a resource on this server", undefined, "value");
      }
      break;
    case "opaque":
      if (patientLink) {
        fail(state, "the patient link must be a reference to a resource on this server", undefined, "value");
      }
      break;
    case "local":
      if (patientLink) {
        fail(state, "the patient link must be a reference to a resource on this server", undefined, "value");
      }
      state.localRefs.push({ id: ref.id, expression: expressionOf(state) });
      break;
    case "urn":
      break;
  }
  const callback = state.options.onReference;
  if (callback !== undefined) {
    const expression = expressionOf(state);
    callback(holder as { reference: string }, targets, () => expression);
  }
}
