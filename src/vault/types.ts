/**
 * The boundary between the FHIR layer (which knows FHIR search parameters and extracts values with FHIRPath) and the
 * vault (which stores resources encrypted and indexes only keyed hashes of names, identifiers and codes, plus plain
 * dates and numbers). The FHIR layer hands the vault already-extracted, already-normalised values; the vault never
 * parses FHIR search syntax.
 */

/**
 * One indexed value of a resource for one search parameter.
 * - `token`: a code or identifier. `system` may be empty (no system). Matched exactly (`system|code`, `code`,
 *   `system|`), case-sensitively, as FHIR says for tokens.
 * - `string`: a name, address part, etc. The FHIR layer normalises (lower case, accents stripped, whitespace collapsed);
 *   the vault indexes hashed prefixes, so search is "starts with" (FHIR's default) or `:exact` on the whole value.
 * - `reference`: `Type/id` (relative, as stored after import).
 * - `date`: an instant range in ms since the epoch, `[low, high]` inclusive (a date `2020-01-02` is its whole day).
 * - `number`: a plain number (quantities: `value`, with `system`/`code` hashed as a token under `${param}:unit`).
 */
export type IndexEntry =
  | { param: string; kind: "token"; system: string; code: string }
  | { param: string; kind: "string"; value: string }
  | { param: string; kind: "reference"; value: string }
  | { param: string; kind: "date"; low: number; high: number }
  | { param: string; kind: "number"; value: number };

/** Date and number comparisons, as FHIR's search prefixes (eq means "the ranges overlap entirely within"). */
export type Comparator = "eq" | "ne" | "lt" | "gt" | "le" | "ge" | "sa" | "eb" | "ap";

/**
 * One search parameter of a query; the values are OR-ed, clauses are AND-ed.
 * Token: `system` undefined = any system; `""` = no system; `code` undefined = any code in `system`.
 */
export type SearchClause =
  | { param: string; kind: "token"; anyOf: { system?: string; code?: string }[]; not?: boolean }
  | { param: string; kind: "string"; anyOf: string[]; exact?: boolean }
  | { param: string; kind: "reference"; anyOf: string[] }
  | { param: string; kind: "date"; anyOf: { op: Comparator; low: number; high: number }[] }
  | { param: string; kind: "number"; anyOf: { op: Comparator; low: number; high: number }[] };

export interface SearchQuery {
  resourceType: string;
  clauses: SearchClause[];
  /** `_id` values (plain: ids are random and carry no personal data). */
  ids?: string[];
  /** `_lastUpdated` ranges, ANDed. */
  lastUpdated?: { op: Comparator; low: number; high: number }[];
  /** Only `_lastUpdated` and date parameters sort in the vault (hashes have no order); default `_lastUpdated` desc. */
  sort?: { param: string; descending: boolean }[];
}
