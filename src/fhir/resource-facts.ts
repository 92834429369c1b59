// What the consent check and the record anchor need to know about a resource: whose record it is, its clinical date
// and its sensitivity labels. Pure functions over a validated resource.

import { codeOfLabel, labelOfCode } from "../contract/labels.ts";
import { PATIENT_LINK_ELEMENTS, parseReference } from "./validate.ts";

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * The id of the Patient whose record this is: a Patient's own id; otherwise the `Patient/id` named by the first
 * patient link (`subject`, `patient`, `beneficiary`) that refers to a Patient. `undefined` for resources that belong
 * to no patient (Organization, Practitioner, …) or whose subject is not a Patient (a Group, a Device). The reference
 * must be relative (validation refuses absolute or contained patient links), so the id is one on this server.
 */
export function patientOf(resource: { resourceType: string; id?: string }): string | undefined {
  if (resource.resourceType === "Patient") return resource.id;
  const r = resource as unknown as Record<string, unknown>;
  for (const element of PATIENT_LINK_ELEMENTS) {
    const link = r[element];
    if (!isObject(link) || typeof link.reference !== "string") continue;
    const ref = parseReference(link.reference);
    if (ref?.kind === "relative" && ref.type === "Patient") return ref.id;
  }
  return undefined;
}

/**
 * Elements that date a record clinically, in order of preference; `x` marks a choice element. The first present one
 * wins. Birth dates are deliberately absent: the date goes on the ledger, and a date of birth must never.
 */
const DATE_ELEMENTS: readonly string[] = [
  "effective[x]",
  "onset[x]",
  "occurrence[x]",
  "performed[x]",
  "authoredOn",
  "period",
  "recordedDate",
  "issued",
  "started",
  "created",
  "date",
  "dateTime",
  "recorded",
  "whenHandedOver",
  "sent",
  "billablePeriod",
];

const CHOICE_DATE_SUFFIXES: readonly string[] = ["DateTime", "Instant", "Date", "Period", "Timing"];

/** The first day a date value names (`2020` → `2020-01-01`), as YYYY-MM-DD in the value's own zone. */
function calendarDate(value: unknown): string | undefined {
  if (typeof value !== "string" || !/^\d{4}/.test(value)) return undefined;
  if (value.length >= 10) return value.slice(0, 10);
  if (value.length === 7) return `${value}-01`;
  if (value.length === 4) return `${value}-01-01`;
  return undefined;
}

function dateOfValue(value: unknown): string | undefined {
  if (typeof value === "string") return calendarDate(value);
  if (!isObject(value)) return undefined;
  // Period: its start (or its end when open at the start); Timing: its first event.
  if (value.start !== undefined || value.end !== undefined) return calendarDate(value.start ?? value.end);
  if (Array.isArray(value.event)) return calendarDate(value.event[0]);
  return undefined;
}

/**
 * The clinical date of a record as YYYY-MM-DD (what `record.anchor` carries and consent rules' `dataPeriod` is
 * compared with): the first of effective[x], onset[x], occurrence[x], performed[x], authoredOn, period,
 * recordedDate, issued, … that is present. A partial date stands for its first day; a dateTime's own calendar day is
 * kept (not converted to UTC). `undefined` for Patients and undated records.
 */
export function clinicalDate(resource: { resourceType: string }): string | undefined {
  if (resource.resourceType === "Patient" || resource.resourceType === "RelatedPerson") return undefined;
  const r = resource as unknown as Record<string, unknown>;
  for (const element of DATE_ELEMENTS) {
    if (element.endsWith("[x]")) {
      const base = element.slice(0, -3);
      for (const suffix of CHOICE_DATE_SUFFIXES) {
        const d = dateOfValue(r[base + suffix]);
        if (d !== undefined) return d;
      }
    } else {
      const d = dateOfValue(r[element]);
      if (d !== undefined) return d;
    }
  }
  return undefined;
}

/**
 * The contract's label codes (src/contract/labels.ts) that `meta.security` carries, each as the code the contract
 * writes for its label (MH → PSY), deduplicated, in the order first seen. A known code counts whatever system it
 * comes with: a sensitivity label read too eagerly restricts access, one missed would expose a record. Codes outside
 * the table (R, V, TBOO, …) are ignored; an empty list means `general`.
 */
export function securityLabels(resource: { meta?: unknown }): string[] {
  const meta = resource.meta;
  if (!isObject(meta) || !Array.isArray(meta.security)) return [];
  const out: string[] = [];
  for (const coding of meta.security) {
    if (!isObject(coding) || typeof coding.code !== "string") continue;
    const label = labelOfCode(coding.code);
    if (label === undefined || label === "general") continue;
    const code = codeOfLabel(label);
    if (!out.includes(code)) out.push(code);
  }
  return out;
}
