// The one table mapping patient-facing sensitivity labels to security-label codes, and which labels are "sensitive"
// (DESIGN, decision step 5). Everything else in the contract goes through this file.
//
// Codes come from http://terminology.hl7.org/CodeSystem/v3-Confidentiality (N) and
// http://terminology.hl7.org/CodeSystem/v3-ActCode (PSY, MH, BH, SEX, STD, SDV, HIV, ETH, SUD, GDIS, SCA).
// HL7 has no codes for gender identity, fertility or social care; those three use local codes in the CareLedger
// system `LOCAL_LABEL_SYSTEM` (GENDER, FERTILITY, SOCIAL).

export const V3_CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
export const V3_ACTCODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
export const LOCAL_LABEL_SYSTEM = "urn:careledger:sensitivity";

export type LabelId =
  | "general"
  | "mental-health"
  | "sexual-health"
  | "hiv"
  | "substance-use"
  | "genetics"
  | "gender-identity"
  | "fertility"
  | "social-care";

export interface LabelInfo {
  id: LabelId;
  /** What the portal shows. */
  title: string;
  /** Codes that carry this label; the first is the one we write. */
  codes: readonly string[];
  /** Coding system of each code (same order as `codes`). */
  systems: readonly string[];
  /** Sensitive labels must be named by a matching permit (decision step 5) and are withheld from break-glass. */
  sensitive: boolean;
}

export const LABELS: readonly LabelInfo[] = [
  { id: "general", title: "General", codes: ["N"], systems: [V3_CONFIDENTIALITY_SYSTEM], sensitive: false },
  {
    id: "mental-health",
    title: "Mental health",
    codes: ["PSY", "MH", "BH"],
    systems: [V3_ACTCODE_SYSTEM, V3_ACTCODE_SYSTEM, V3_ACTCODE_SYSTEM],
    sensitive: true,
  },
  {
    id: "sexual-health",
    title: "Sexual health",
    codes: ["SEX", "STD", "SDV"],
    systems: [V3_ACTCODE_SYSTEM, V3_ACTCODE_SYSTEM, V3_ACTCODE_SYSTEM],
    sensitive: true,
  },
  { id: "hiv", title: "HIV", codes: ["HIV"], systems: [V3_ACTCODE_SYSTEM], sensitive: true },
  {
    id: "substance-use",
    title: "Substance use",
    codes: ["SUD", "ETH"],
    systems: [V3_ACTCODE_SYSTEM, V3_ACTCODE_SYSTEM],
    sensitive: true,
  },
  {
    id: "genetics",
    title: "Genetics",
    codes: ["GDIS", "SCA"],
    systems: [V3_ACTCODE_SYSTEM, V3_ACTCODE_SYSTEM],
    sensitive: true,
  },
  {
    id: "gender-identity",
    title: "Gender identity",
    codes: ["GENDER"],
    systems: [LOCAL_LABEL_SYSTEM],
    sensitive: true,
  },
  { id: "fertility", title: "Fertility", codes: ["FERTILITY"], systems: [LOCAL_LABEL_SYSTEM], sensitive: true },
  { id: "social-care", title: "Social care", codes: ["SOCIAL"], systems: [LOCAL_LABEL_SYSTEM], sensitive: false },
];

const BY_CODE = new Map<string, LabelInfo>();
const BY_ID = new Map<string, LabelInfo>();
for (const l of LABELS) {
  BY_ID.set(l.id, l);
  for (const c of l.codes) BY_CODE.set(c, l);
}

/** Every code a consent rule, proxy or anchor may carry. */
export const LABEL_CODES: readonly string[] = LABELS.flatMap((l) => l.codes);
export const LABEL_IDS: readonly LabelId[] = LABELS.map((l) => l.id);
export const SENSITIVE_LABELS: readonly LabelId[] = LABELS.filter((l) => l.sensitive).map((l) => l.id);

export function labelInfo(id: string): LabelInfo | undefined {
  return BY_ID.get(id);
}

/** The patient-facing label of a code, or undefined for codes outside the table (e.g. `R`, `V`, `TBOO`). */
export function labelOfCode(code: string): LabelId | undefined {
  return BY_CODE.get(code)?.id;
}

/** The code we write for a patient-facing label. */
export function codeOfLabel(id: LabelId): string {
  const info = BY_ID.get(id);
  if (info === undefined) throw new RangeError(`unknown label ${id}`);
  return info.codes[0] as string;
}

export function isSensitive(id: string): boolean {
  return BY_ID.get(id)?.sensitive === true;
}

/**
 * The labels a resource carries, from its codes. Unknown codes are ignored; a resource with no known label is
 * `general`. (A resource tagged only `PSY` is mental-health and not general.)
 */
export function labelsOfCodes(codes: readonly unknown[]): LabelId[] {
  const out: LabelId[] = [];
  for (const c of codes) {
    if (typeof c !== "string") continue;
    const l = BY_CODE.get(c);
    if (l !== undefined && !out.includes(l.id)) out.push(l.id);
  }
  if (out.length === 0) out.push("general");
  return out;
}

/** Like `labelsOfCodes` but an empty list stays empty (used for rule label lists, where empty means "unnamed"). */
export function labelsNamed(codes: readonly unknown[]): LabelId[] {
  const out: LabelId[] = [];
  for (const c of codes) {
    if (typeof c !== "string") continue;
    const l = BY_CODE.get(c);
    if (l !== undefined && !out.includes(l.id)) out.push(l.id);
  }
  return out;
}
