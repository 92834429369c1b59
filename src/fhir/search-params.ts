// The search parameters this server supports, as the R4 SearchParameter definitions give them, and the extraction of
// their values from a resource into the vault's `IndexEntry` form (src/vault/types.ts).
//
// Values are normalised here so that the vault only hashes and compares:
// - strings: NFKD, accents (combining marks) stripped, lower case, whitespace collapsed, trimmed, at most
//   `MAX_STRING_INDEX` characters (search matches the start of a value, so a longer tail adds nothing);
// - tokens: `system` ("" when absent) and `code` exactly as stored (FHIR tokens are case-sensitive);
// - references: relative `Type/id` (a version suffix is dropped; absolute, contained and bundle-local references are
//   not indexed: they name nothing on this server);
// - dates: an inclusive `[low, high]` range of epoch milliseconds covering the value's precision (`2020` is the
//   whole year 2020). A time carries its zone; a date or a query time without a zone is taken as UTC. A Period is
//   `[start.low, end.high]`, an open end running to the limit of the Date range.

import fhirpath, { type ResourceNode } from "fhirpath";
import r4 from "fhirpath/fhir-context/r4";
import type { IndexEntry } from "../vault/types.ts";
import { daysInMonth, PRIMITIVES, parseReference } from "./validate.ts";

export type ParamKind = "token" | "string" | "reference" | "date";

export interface SearchParamDef {
  /** The parameter name in a query (`birthdate`, `clinical-status`). */
  code: string;
  kind: ParamKind;
  /** The FHIRPath expression of the R4 SearchParameter definition. */
  expression: string;
  /**
   * What is evaluated, where R4's expression needs `resolve()` (a server round trip): the path without the filter;
   * extraction keeps only references to `targets`.
   */
  evaluated?: string;
  /** Reference parameters: the types they may point at. */
  targets?: readonly string[];
  description: string;
}

/** Far ends of the ECMAScript Date range, for open Period ends. */
export const MIN_DATE_MS = -8_640_000_000_000_000;
export const MAX_DATE_MS = 8_640_000_000_000_000;
/** Longest normalised string indexed. */
export const MAX_STRING_INDEX = 200;

const PATIENT_SUBJECT = (type: string): SearchParamDef => ({
  code: "patient",
  kind: "reference",
  expression: `${type}.subject.where(resolve() is Patient)`,
  // resolve() needs the target; the type in a relative reference says the same. Extraction keeps only Patient ones.
  evaluated: `${type}.subject`,
  targets: ["Patient"],
  description: "Who the record is about (a Patient)",
});

const SUBJECT = (type: string, targets: readonly string[]): SearchParamDef => ({
  code: "subject",
  kind: "reference",
  expression: `${type}.subject`,
  targets,
  description: "Who or what the record is about",
});

const token = (code: string, expression: string, description: string): SearchParamDef => ({
  code,
  kind: "token",
  expression,
  description,
});

const date = (code: string, expression: string, description: string): SearchParamDef => ({
  code,
  kind: "date",
  expression,
  description,
});

/** Searchable types and their parameters (R4 names and expressions). */
export const SEARCH_PARAMS: Readonly<Record<string, readonly SearchParamDef[]>> = {
  Patient: [
    token("identifier", "Patient.identifier", "A patient identifier (e.g. https://fhir.nhs.uk/Id/nhs-number|…)"),
    {
      code: "name",
      kind: "string",
      expression: "Patient.name",
      description: "Any part of a name: family, given, prefix, suffix or text",
    },
    { code: "family", kind: "string", expression: "Patient.name.family", description: "A family name" },
    { code: "given", kind: "string", expression: "Patient.name.given", description: "A given name" },
    date("birthdate", "Patient.birthDate", "Date of birth"),
    token("gender", "Patient.gender", "Administrative gender"),
  ],
  Observation: [
    PATIENT_SUBJECT("Observation"),
    SUBJECT("Observation", ["Patient", "Group", "Device", "Location"]),
    token("code", "Observation.code", "The kind of observation"),
    date("date", "Observation.effective", "When the observation applies (effective[x])"),
    token("category", "Observation.category", "The classification of the observation"),
    token("status", "Observation.status", "registered | preliminary | final | amended | …"),
  ],
  Condition: [
    PATIENT_SUBJECT("Condition"),
    SUBJECT("Condition", ["Patient", "Group"]),
    token("code", "Condition.code", "Code for the condition"),
    date(
      "onset-date",
      "Condition.onset.as(dateTime) | Condition.onset.as(Period)",
      "Date of onset (the clinical date of a Condition)",
    ),
    date("recorded-date", "Condition.recordedDate", "Date the condition was first recorded"),
    token("category", "Condition.category", "problem-list-item | encounter-diagnosis"),
    token("clinical-status", "Condition.clinicalStatus", "active | recurrence | relapse | inactive | …"),
    token("verification-status", "Condition.verificationStatus", "unconfirmed | provisional | confirmed | …"),
  ],
  MedicationRequest: [
    PATIENT_SUBJECT("MedicationRequest"),
    SUBJECT("MedicationRequest", ["Patient", "Group"]),
    token("code", "(MedicationRequest.medication as CodeableConcept)", "The medication code"),
    date("authoredon", "MedicationRequest.authoredOn", "When the prescription was written"),
    date("date", "MedicationRequest.dosageInstruction.timing.event", "Scheduled administration dates"),
    token("category", "MedicationRequest.category", "The type of medication usage"),
    token("status", "MedicationRequest.status", "active | on-hold | cancelled | completed | …"),
    token("intent", "MedicationRequest.intent", "proposal | plan | order | …"),
  ],
  AllergyIntolerance: [
    {
      code: "patient",
      kind: "reference",
      expression: "AllergyIntolerance.patient",
      targets: ["Patient"],
      description: "Who the sensitivity is for",
    },
    token("code", "AllergyIntolerance.code | AllergyIntolerance.reaction.substance", "The allergen or substance"),
    date("date", "AllergyIntolerance.recordedDate", "Date first recorded"),
    token("category", "AllergyIntolerance.category", "food | medication | environment | biologic"),
    token("clinical-status", "AllergyIntolerance.clinicalStatus", "active | inactive | resolved"),
    token("verification-status", "AllergyIntolerance.verificationStatus", "unconfirmed | confirmed | …"),
    token("criticality", "AllergyIntolerance.criticality", "low | high | unable-to-assess"),
    token("type", "AllergyIntolerance.type", "allergy | intolerance"),
  ],
  Immunization: [
    {
      code: "patient",
      kind: "reference",
      expression: "Immunization.patient",
      targets: ["Patient"],
      description: "The patient immunised",
    },
    token("vaccine-code", "Immunization.vaccineCode", "Vaccine product administered"),
    date("date", "Immunization.occurrence", "When the vaccine was administered"),
    token("status", "Immunization.status", "completed | entered-in-error | not-done"),
  ],
  Encounter: [
    PATIENT_SUBJECT("Encounter"),
    SUBJECT("Encounter", ["Patient", "Group"]),
    date("date", "Encounter.period", "When the encounter took place"),
    token("class", "Encounter.class", "Classification of the encounter (inpatient, ambulatory, …)"),
    token("type", "Encounter.type", "Specific type of encounter"),
    token("status", "Encounter.status", "planned | arrived | in-progress | finished | …"),
  ],
  Procedure: [
    PATIENT_SUBJECT("Procedure"),
    SUBJECT("Procedure", ["Patient", "Group"]),
    token("code", "Procedure.code", "The procedure"),
    date("date", "Procedure.performed", "When the procedure was performed"),
    token("category", "Procedure.category", "Classification of the procedure"),
    token("status", "Procedure.status", "preparation | in-progress | completed | …"),
  ],
  DiagnosticReport: [
    PATIENT_SUBJECT("DiagnosticReport"),
    SUBJECT("DiagnosticReport", ["Patient", "Group", "Device", "Location"]),
    token("code", "DiagnosticReport.code", "The report's name or code"),
    date("date", "DiagnosticReport.effective", "The clinically relevant time of the report"),
    date("issued", "DiagnosticReport.issued", "When the report was issued"),
    token("category", "DiagnosticReport.category", "Which diagnostic discipline produced the report"),
    token("status", "DiagnosticReport.status", "registered | partial | final | …"),
  ],
  CarePlan: [
    PATIENT_SUBJECT("CarePlan"),
    SUBJECT("CarePlan", ["Patient", "Group"]),
    token("activity-code", "CarePlan.activity.detail.code", "Detail type of activity"),
    date("date", "CarePlan.period", "Time period the plan covers"),
    token("category", "CarePlan.category", "Type of plan"),
    token("status", "CarePlan.status", "draft | active | on-hold | revoked | completed | …"),
    token("intent", "CarePlan.intent", "proposal | plan | order | option"),
  ],
};

/** The searchable resource types. */
export const SEARCH_TYPES: readonly string[] = Object.keys(SEARCH_PARAMS);

const BY_TYPE = new Map<string, Map<string, SearchParamDef>>();
for (const [type, defs] of Object.entries(SEARCH_PARAMS)) {
  BY_TYPE.set(type, new Map(defs.map((d) => [d.code, d])));
}

/** The definition of `code` on `type`, if searchable. */
export function searchParam(type: string, code: string): SearchParamDef | undefined {
  return BY_TYPE.get(type)?.get(code);
}

// --- normalisation -----------------------------------------------------------------------------------------------

/** Lower case, accents stripped (NFKD minus combining marks), whitespace collapsed, trimmed. */
export function normaliseString(value: string): string {
  return value
    .normalize("NFKD")
    .replace(/\p{M}+/gu, "")
    .toLowerCase()
    .replace(/\s+/g, " ")
    .trim();
}

// Resource dates are R4 date/dateTime/instant (validated); query dates may also stop at hours:minutes or omit the
// zone. Groups: year, month, day, hour, minute, second, fraction, zone.
const DATE_PARTS_RE =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

function utcMs(y: number, mo: number, d: number, h: number, mi: number, s: number, ms: number): number {
  const t = new Date(0);
  // setUTCFullYear, unlike Date.UTC, does not map years 0–99 onto 1900–1999.
  t.setUTCFullYear(y, mo, d);
  t.setUTCHours(h, mi, s, ms);
  return t.getTime();
}

/**
 * The inclusive millisecond range a FHIR date, dateTime or instant covers, by its precision; `undefined` when the
 * value is not a date in that form or names no real day. A value without a zone is read as UTC.
 */
export function dateRange(value: string): { low: number; high: number } | undefined {
  const m = DATE_PARTS_RE.exec(value);
  if (m === null) return undefined;
  const year = Number(m[1]);
  if (m[2] === undefined) return { low: utcMs(year, 0, 1, 0, 0, 0, 0), high: utcMs(year + 1, 0, 1, 0, 0, 0, 0) - 1 };
  const month = Number(m[2]);
  if (month < 1 || month > 12) return undefined;
  if (m[3] === undefined) {
    return { low: utcMs(year, month - 1, 1, 0, 0, 0, 0), high: utcMs(year, month, 1, 0, 0, 0, 0) - 1 };
  }
  const day = Number(m[3]);
  if (day < 1 || day > daysInMonth(year, month)) return undefined;
  if (m[4] === undefined) {
    const low = utcMs(year, month - 1, day, 0, 0, 0, 0);
    return { low, high: low + 86_400_000 - 1 };
  }
  const hour = Number(m[4]);
  const minute = Number(m[5]);
  const second = m[6] === undefined ? 0 : Number(m[6]);
  if (hour > 23 || minute > 59 || second > 60) return undefined;
  const fraction = m[7] ?? "";
  const ms = fraction === "" ? 0 : Math.floor(Number(`0.${fraction}`) * 1000);
  let offset = 0;
  const zone = m[8];
  if (zone !== undefined && zone !== "Z") {
    const zh = Number(zone.slice(1, 3));
    const zm = Number(zone.slice(4, 6));
    if (zh > 14 || zm > 59) return undefined;
    offset = (zone[0] === "-" ? -1 : 1) * (zh * 60 + zm) * 60_000;
  }
  const low = utcMs(year, month - 1, day, hour, minute, second, ms) - offset;
  let width: number;
  if (m[6] === undefined) width = 60_000;
  else if (fraction === "") width = 1000;
  else width = fraction.length >= 3 ? 1 : 10 ** (3 - fraction.length);
  return { low, high: low + width - 1 };
}

// --- extraction --------------------------------------------------------------------------------------------------

type Evaluator = (resource: unknown) => unknown[];

interface CompiledParam {
  def: SearchParamDef;
  expression: string;
}

/** An expression evaluated to typed values: by walking the JSON for plain paths, otherwise by FHIRPath. */
type Extractor = (resource: unknown) => TypedValue[];

const model = r4 as unknown as {
  path2Type: Record<string, string>;
  choiceTypePaths: Record<string, string[]>;
};

/** The FHIR type name of a choice suffix: `DateTime` → `dateTime` (a primitive), `Period` stays. */
function choiceTypeName(suffix: string): string {
  const lower = suffix.charAt(0).toLowerCase() + suffix.slice(1);
  return PRIMITIVES.has(lower) ? lower : suffix;
}

/**
 * A plain dotted path (`Observation.code`, `Patient.name.given`, `Observation.effective`) walked over the JSON, each
 * value typed from the R4 model as FHIRPath types it — FHIRPath's general evaluator cost ~20 µs per resource of
 * import. Undefined for anything else (unions, functions, casts), which FHIRPath evaluates. The two are checked
 * equal on every resource of the test data (search-params.test.ts).
 */
export function plainPathExtractor(expression: string): Extractor | undefined {
  if (!/^[A-Z][A-Za-z]*(\.[a-z][A-Za-z]*)+$/.test(expression)) return undefined;
  const [root, ...steps] = expression.split(".") as [string, ...string[]];
  // Per step: the element's name(s) in the JSON and the type of what is found there.
  const plan: { keys: [key: string, type: string][] }[] = [];
  let path = root;
  let type = root;
  for (const step of steps) {
    const full = `${path}.${step}`;
    const byType = `${type}.${step}`;
    const choices = model.choiceTypePaths[full] ?? model.choiceTypePaths[byType];
    if (choices) {
      plan.push({ keys: choices.map((c) => [`${step}${c}`, choiceTypeName(c)]) });
      if (step !== steps[steps.length - 1]) return undefined; // a choice in the middle: leave it to FHIRPath
      break;
    }
    const next = model.path2Type[full] ?? model.path2Type[byType];
    if (next === undefined) return undefined;
    plan.push({ keys: [[step, next]] });
    path = full;
    type = next;
  }
  return (resource) => {
    let nodes: TypedValue[] = [{ type: root, value: resource }];
    for (const { keys } of plan) {
      const found: TypedValue[] = [];
      for (const node of nodes) {
        const value = node.value;
        if (typeof value !== "object" || value === null) continue;
        for (const [key, keyType] of keys) {
          const v = (value as Record<string, unknown>)[key];
          if (v === undefined || v === null) continue;
          if (Array.isArray(v)) {
            for (const item of v) if (item !== null && item !== undefined) found.push({ type: keyType, value: item });
          } else found.push({ type: keyType, value: v });
        }
      }
      nodes = found;
      if (nodes.length === 0) break;
    }
    return nodes;
  };
}

/** The extractor of an expression: the plain-path walk where it applies, FHIRPath otherwise (or when asked). */
function extractorOf(expression: string, fhirpathOnly = false): Extractor {
  const plain = fhirpathOnly ? undefined : plainPathExtractor(expression);
  if (plain) return plain;
  // Internal types are kept so that each result node says whether it is a dateTime or a Period, a CodeableConcept
  // or a code (`fhirNodeDataType`), without copying its data.
  const evaluate = fhirpath.compile(expression, r4, { resolveInternalTypes: false }) as Evaluator;
  return (resource) => typedValues(evaluate(resource));
}

// One extractor per distinct expression (`patient` and `subject` share theirs).
const evaluators = new Map<string, Extractor>();
const compiled = new Map<string, CompiledParam[]>();
for (const [type, defs] of Object.entries(SEARCH_PARAMS)) {
  compiled.set(
    type,
    defs.map((def) => {
      const expression = def.evaluated ?? def.expression;
      if (!evaluators.has(expression)) evaluators.set(expression, extractorOf(expression));
      return { def, expression };
    }),
  );
}

interface TypedValue {
  type: string;
  value: unknown;
}

/** A result node's FHIR type and raw JSON value (FHIRPath-computed values are converted). */
function typedValues(nodes: unknown[]): TypedValue[] {
  const out: TypedValue[] = [];
  for (const node of nodes) {
    if (typeof node === "object" && node !== null && "fhirNodeDataType" in node && "data" in node) {
      const n = node as unknown as ResourceNode;
      const data = n.data;
      if (typeof data === "string" || typeof data === "boolean" || (typeof data === "object" && data !== null)) {
        if (typeof data !== "object" || Object.getPrototypeOf(data) === Object.prototype || Array.isArray(data)) {
          out.push({ type: n.fhirNodeDataType ?? "", value: data });
          continue;
        }
      }
    }
    const [type] = fhirpath.types([node]);
    out.push({ type: (type ?? "").replace(/^(FHIR|System)\./, ""), value: fhirpath.resolveInternalTypes(node) });
  }
  return out;
}

/**
 * The index entries of a (validated) resource: one per value per parameter, deduplicated. Types that are not
 * searchable give none. `viaFhirpath`: evaluate every expression with FHIRPath, plain paths too (for tests that
 * compare the two).
 */
export function extractIndex(resource: { resourceType: string }, viaFhirpath = false): IndexEntry[] {
  const params = compiled.get(resource.resourceType);
  if (params === undefined) return [];
  const out: IndexEntry[] = [];
  const seen = new Set<string>();
  const add = (entry: IndexEntry, key: string): void => {
    if (seen.has(key)) return;
    seen.add(key);
    out.push(entry);
  };
  const results = new Map<string, TypedValue[]>();
  for (const { def, expression } of params) {
    let values = results.get(expression);
    if (values === undefined) {
      values = viaFhirpath
        ? fhirpathExtractor(expression)(resource)
        : (evaluators.get(expression) as Extractor)(resource);
      results.set(expression, values);
    }
    for (const v of values) extractValue(def, v.type, v.value, add);
  }
  return out;
}

/** FHIRPath's own evaluation of every expression, for checking the plain-path walk against it (tests). */
const viaFhirpathOnly = new Map<string, Extractor>();
function fhirpathExtractor(expression: string): Extractor {
  let e = viaFhirpathOnly.get(expression);
  if (e === undefined) {
    e = extractorOf(expression, true);
    viaFhirpathOnly.set(expression, e);
  }
  return e;
}

type Add = (entry: IndexEntry, key: string) => void;

function extractValue(def: SearchParamDef, type: string, value: unknown, add: Add): void {
  const param = def.code;
  switch (def.kind) {
    case "token":
      for (const [system, code] of tokensOf(type, value)) {
        add({ param, kind: "token", system, code }, `t\0${param}\0${system}\0${code}`);
      }
      return;
    case "string":
      for (const s of stringsOf(type, value)) {
        const v = normaliseString(s).slice(0, MAX_STRING_INDEX);
        if (v !== "") add({ param, kind: "string", value: v }, `s\0${param}\0${v}`);
      }
      return;
    case "reference": {
      const ref = relativeReference(value);
      // Only references to the parameter's target types (`patient` is `subject` restricted to Patient).
      if (ref === undefined || (def.targets !== undefined && !def.targets.includes(ref.slice(0, ref.indexOf("/"))))) {
        return;
      }
      add({ param, kind: "reference", value: ref }, `r\0${param}\0${ref}`);
      return;
    }
    case "date":
      for (const r of datesOf(type, value)) add({ param, kind: "date", ...r }, `d\0${param}\0${r.low}\0${r.high}`);
      return;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

function tokensOf(type: string, value: unknown): [system: string, code: string][] {
  switch (type) {
    case "CodeableConcept": {
      const out: [string, string][] = [];
      const codings = isObject(value) && Array.isArray(value.coding) ? value.coding : [];
      for (const c of codings) {
        if (!isObject(c)) continue;
        const code = str(c.code);
        if (code !== undefined) out.push([str(c.system) ?? "", code]);
      }
      return out;
    }
    case "Coding": {
      const code = isObject(value) ? str(value.code) : undefined;
      return code === undefined ? [] : [[str((value as Record<string, unknown>).system) ?? "", code]];
    }
    case "Identifier": {
      const v = isObject(value) ? str(value.value) : undefined;
      return v === undefined ? [] : [[str((value as Record<string, unknown>).system) ?? "", v]];
    }
    case "ContactPoint": {
      const v = isObject(value) ? str(value.value) : undefined;
      return v === undefined ? [] : [["", v]];
    }
    case "boolean":
      return typeof value === "boolean" ? [["", String(value)]] : [];
    default: {
      const v = str(value);
      return v === undefined ? [] : [["", v]];
    }
  }
}

function stringsOf(type: string, value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (!isObject(value)) return [];
  const out: string[] = [];
  const push = (v: unknown): void => {
    if (typeof v === "string") out.push(v);
    else if (Array.isArray(v)) for (const x of v) if (typeof x === "string") out.push(x);
  };
  if (type === "HumanName") {
    push(value.family);
    push(value.given);
    push(value.prefix);
    push(value.suffix);
    push(value.text);
  } else if (type === "Address") {
    push(value.line);
    push(value.city);
    push(value.district);
    push(value.state);
    push(value.postalCode);
    push(value.country);
    push(value.text);
  }
  return out;
}

/** `Type/id` of a Reference (or reference string) that names a resource on this server; otherwise undefined. */
export function relativeReference(value: unknown): string | undefined {
  const ref = typeof value === "string" ? value : isObject(value) ? value.reference : undefined;
  if (typeof ref !== "string") return undefined;
  const parsed = parseReference(ref);
  return parsed?.kind === "relative" ? `${parsed.type}/${parsed.id}` : undefined;
}

function datesOf(type: string, value: unknown): { low: number; high: number }[] {
  switch (type) {
    case "date":
    case "dateTime":
    case "instant": {
      const r = typeof value === "string" ? dateRange(value) : undefined;
      return r === undefined ? [] : [r];
    }
    case "Period": {
      if (!isObject(value)) return [];
      const start = typeof value.start === "string" ? dateRange(value.start) : undefined;
      const end = typeof value.end === "string" ? dateRange(value.end) : undefined;
      if (start === undefined && end === undefined) return [];
      return [{ low: start?.low ?? MIN_DATE_MS, high: end?.high ?? MAX_DATE_MS }];
    }
    case "Timing": {
      if (!isObject(value) || !Array.isArray(value.event)) return [];
      const out: { low: number; high: number }[] = [];
      for (const e of value.event) {
        const r = typeof e === "string" ? dateRange(e) : undefined;
        if (r !== undefined) out.push(r);
      }
      return out;
    }
    default:
      return [];
  }
}
