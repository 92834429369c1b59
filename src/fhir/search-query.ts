// FHIR search query strings → the vault's `SearchQuery` (src/vault/types.ts), plus the paging links of a result page.
//
// Handling is FHIR's "strict": an unknown parameter, an unsupported modifier or control parameter, a malformed date,
// number or token is a 400 OperationOutcome naming the parameter. `lenient: true` (the client sent
// `Prefer: handling=lenient`) ignores unknown parameters instead and reports them in `ignored`; malformed values of
// known parameters are still errors.
//
// What is understood:
// - `_id` (comma = any of; repeated = all of), `_lastUpdated` (date prefixes; repeated = all of, no commas),
//   `_count` (default 20, above `maxCount` it is capped, as FHIR lets a server do), `_offset` (paging; the links
//   carry it: offsets are plain numbers and reveal nothing), `_sort` (`_lastUpdated` and the type's date parameters,
//   `-` for descending), `_total` (none | estimate | accurate: passed through), `_format` (JSON only; anything else
//   is 406), `_pretty`;
// - token parameters: `code`, `system|code`, `|code` (no system), `system|` (any code in the system); `:not`;
// - string parameters: starts-with (default) and `:exact` (the whole value; values are compared normalised — lower
//   case, accents stripped — so `:exact` is exact on the normalised form);
// - reference parameters: `Type/id`, a bare `id` (when the parameter has one target type, or with a `:Type`
//   modifier), or an absolute URL under `baseUrl`;
// - date parameters: prefixes eq, ne, lt, gt, le, ge, sa, eb, ap and any precision from a year to milliseconds,
//   with or without a zone (UTC when absent).
// Comma separates alternatives (OR) and a repeated parameter is another condition (AND). Backslash escapes `\,`,
// `\|`, `\$` and `\\` as FHIR defines. Every value ends up as a string the vault hashes or a number it compares:
// nothing from a query is ever evaluated.

import type { Comparator, SearchClause, SearchQuery } from "../vault/types.ts";
import { badRequest, notAcceptable, notSupported } from "./outcome.ts";
import { dateRange, MAX_STRING_INDEX, normaliseString, SEARCH_PARAMS, searchParam } from "./search-params.ts";
import { ID_RE, parseReference } from "./validate.ts";

export interface ParseSearchOptions {
  /** Ignore unknown parameters (Prefer: handling=lenient) instead of rejecting them. */
  lenient?: boolean;
  /** This server's FHIR base (`https://host/fhir`): absolute references under it are accepted. */
  baseUrl?: string;
  /** Default page size (20). */
  defaultCount?: number;
  /** Largest page size; larger `_count` values are capped (1000). */
  maxCount?: number;
  /** Largest `_offset` (100,000): deeper pages are refused, not scanned. */
  maxOffset?: number;
}

export interface ParsedSearch {
  query: SearchQuery;
  count: number;
  offset: number;
  /** `_total` as asked (the handler may ignore it). */
  total?: "none" | "estimate" | "accurate";
  /** `_pretty=true`. */
  pretty: boolean;
  /** The parameters that shaped the query (without `_count`/`_offset`), in order, for `searchLinks`. */
  params: [string, string][];
  /** Unknown parameters ignored in lenient mode. */
  ignored: string[];
}

export type SearchParamsInput = URLSearchParams | Readonly<Record<string, string | readonly string[] | undefined>>;

const MAX_PARAMS = 64;
const MAX_VALUES = 100;
const MAX_VALUE_LENGTH = 2048;
const COMPARATORS: ReadonlySet<string> = new Set(["eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap"]);
const NAME_RE = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const UNSUPPORTED_CONTROL: ReadonlySet<string> = new Set([
  "_summary",
  "_elements",
  "_include",
  "_revinclude",
  "_contained",
  "_containedType",
  "_text",
  "_content",
  "_list",
  "_has",
  "_type",
  "_query",
  "_filter",
  "_security",
  "_tag",
  "_profile",
  "_source",
]);
const JSON_FORMATS: ReadonlySet<string> = new Set(["json", "application/json", "application/fhir+json"]);

function entriesOf(params: SearchParamsInput): [string, string][] {
  if (params instanceof URLSearchParams) return [...params.entries()];
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) continue;
    if (typeof v === "string") out.push([k, v]);
    else for (const x of v) out.push([k, x]);
  }
  return out;
}

/** Parses a search on `resourceType`; throws OperationOutcomeError 400 (406 for `_format`) naming the parameter. */
export function parseSearch(
  resourceType: string,
  params: SearchParamsInput,
  options: ParseSearchOptions = {},
): ParsedSearch {
  if (SEARCH_PARAMS[resourceType] === undefined) {
    throw notSupported(`search is not supported on ${resourceType}`, "resourceType");
  }
  const entries = entriesOf(params);
  if (entries.length > MAX_PARAMS) throw badRequest(`more than ${MAX_PARAMS} parameters`, undefined, "too-costly");
  const maxCount = options.maxCount ?? 1000;
  const result: ParsedSearch = {
    query: { resourceType, clauses: [] },
    count: Math.min(options.defaultCount ?? 20, maxCount),
    offset: 0,
    pretty: false,
    params: [],
    ignored: [],
  };
  const once = new Set<string>();
  const single = (name: string): void => {
    if (once.has(name)) throw badRequest("may be given only once", name);
    once.add(name);
  };
  for (const [rawName, value] of entries) {
    if (rawName.length > 128) throw badRequest("parameter name too long", undefined, "too-long");
    if (value.length > MAX_VALUE_LENGTH) throw badRequest("value too long", rawName, "too-long");
    const colon = rawName.indexOf(":");
    const name = colon < 0 ? rawName : rawName.slice(0, colon);
    const modifier = colon < 0 ? undefined : rawName.slice(colon + 1);
    switch (name) {
      case "_count":
        single(name);
        noModifier(rawName, modifier);
        result.count = Math.min(nonNegativeInteger(rawName, value), maxCount);
        continue;
      case "_offset": {
        single(name);
        noModifier(rawName, modifier);
        const offset = nonNegativeInteger(rawName, value);
        if (offset > (options.maxOffset ?? 100_000)) throw badRequest("offset too large", rawName, "too-costly");
        result.offset = offset;
        continue;
      }
      case "_format":
        noModifier(rawName, modifier);
        if (!JSON_FORMATS.has(value.trim().toLowerCase().split(";")[0]?.trim() ?? "")) throw notAcceptable();
        continue;
      case "_pretty":
        noModifier(rawName, modifier);
        if (value !== "true" && value !== "false") throw badRequest("must be true or false", rawName, "value");
        result.pretty = value === "true";
        continue;
      case "_total":
        single(name);
        noModifier(rawName, modifier);
        if (value !== "none" && value !== "estimate" && value !== "accurate") {
          throw badRequest("must be none, estimate or accurate", rawName, "value");
        }
        result.total = value;
        result.params.push([rawName, value]);
        continue;
      case "_sort":
        single(name);
        noModifier(rawName, modifier);
        result.query.sort = parseSort(resourceType, rawName, value);
        result.params.push([rawName, value]);
        continue;
      case "_id": {
        noModifier(rawName, modifier);
        const ids = splitValues(rawName, value);
        for (const id of ids) if (!ID_RE.test(id)) throw badRequest("not a valid id", rawName, "value");
        const previous = result.query.ids;
        result.query.ids = previous === undefined ? ids : previous.filter((id) => ids.includes(id));
        result.params.push([rawName, value]);
        continue;
      }
      case "_lastUpdated": {
        noModifier(rawName, modifier);
        const values = splitValues(rawName, value);
        if (values.length > 1) throw notSupported("alternatives (comma) are not supported here", rawName);
        result.query.lastUpdated = [...(result.query.lastUpdated ?? []), parseDateValue(rawName, values[0] as string)];
        result.params.push([rawName, value]);
        continue;
      }
    }
    if (UNSUPPORTED_CONTROL.has(name)) throw notSupported("parameter not supported", name);
    if (name.includes(".")) throw notSupported("chained parameters are not supported", rawName);
    const def = NAME_RE.test(name) ? searchParam(resourceType, name) : undefined;
    if (def === undefined) {
      if (options.lenient === true) {
        result.ignored.push(rawName);
        continue;
      }
      // A name outside the safe alphabet is not echoed back.
      throw badRequest("unknown search parameter", NAME_RE.test(rawName.replace(":", "_")) ? rawName : undefined);
    }
    result.query.clauses.push(parseClause(def.code, def.kind, def.targets, rawName, modifier, value, options));
    result.params.push([rawName, value]);
  }
  return result;
}

function noModifier(rawName: string, modifier: string | undefined): void {
  if (modifier !== undefined) throw badRequest("no modifier is allowed here", rawName);
}

function nonNegativeInteger(rawName: string, value: string): number {
  if (!/^\d{1,9}$/.test(value)) throw badRequest("must be a non-negative integer", rawName, "value");
  return Number(value);
}

/** Splits on unescaped commas and removes FHIR's escapes (`\|` only when `keepBar` is false: tokens split on it). */
function splitValues(rawName: string, value: string, keepBar = false): string[] {
  const out: string[] = [];
  let current = "";
  for (let i = 0; i < value.length; i++) {
    const c = value[i] as string;
    if (c === "\\" && i + 1 < value.length) {
      // Keep `\|` escaped for the token split; `\,` `\$` `\\` resolve here.
      const next = value[i + 1] as string;
      current += next === "|" && keepBar ? "\\|" : next;
      i++;
    } else if (c === ",") {
      out.push(current);
      current = "";
    } else {
      current += c;
    }
  }
  out.push(current);
  if (out.length > MAX_VALUES) throw badRequest(`more than ${MAX_VALUES} alternatives`, rawName, "too-costly");
  for (const v of out) if (v === "") throw badRequest("empty value", rawName, "value");
  return out;
}

/** Splits `system|code` at the first unescaped bar; unescapes `\|`. */
function splitToken(value: string): { system?: string; code?: string } {
  let bar = -1;
  for (let i = 0; i < value.length; i++) {
    if (value[i] === "\\") i++;
    else if (value[i] === "|") {
      bar = i;
      break;
    }
  }
  const unescapeBar = (s: string): string => s.replace(/\\\|/g, "|");
  if (bar < 0) return { code: unescapeBar(value) };
  const system = unescapeBar(value.slice(0, bar));
  const code = unescapeBar(value.slice(bar + 1));
  return code === "" ? { system } : { system, code };
}

function parseClause(
  param: string,
  kind: "token" | "string" | "reference" | "date",
  targets: readonly string[] | undefined,
  rawName: string,
  modifier: string | undefined,
  value: string,
  options: ParseSearchOptions,
): SearchClause {
  const values = splitValues(rawName, value, kind === "token");
  switch (kind) {
    case "token": {
      if (modifier !== undefined && modifier !== "not") throw notSupported("modifier not supported", rawName);
      const anyOf = values.map((v) => {
        const t = splitToken(v);
        if (t.system === "" && t.code === undefined)
          throw badRequest("token needs a system or a code", rawName, "value");
        return t;
      });
      return modifier === "not" ? { param, kind, anyOf, not: true } : { param, kind, anyOf };
    }
    case "string": {
      if (modifier !== undefined && modifier !== "exact") throw notSupported("modifier not supported", rawName);
      const anyOf = values.map((v) => {
        const s = normaliseString(v).slice(0, MAX_STRING_INDEX);
        if (s === "") throw badRequest("empty value", rawName, "value");
        return s;
      });
      return modifier === "exact" ? { param, kind, anyOf, exact: true } : { param, kind, anyOf };
    }
    case "reference": {
      let typed: string | undefined;
      if (modifier !== undefined) {
        if (targets === undefined || !targets.includes(modifier)) throw notSupported("modifier not supported", rawName);
        typed = modifier;
      }
      const anyOf = values.map((v) => parseReferenceValue(rawName, v, typed, targets, options.baseUrl));
      return { param, kind, anyOf };
    }
    case "date":
      if (modifier !== undefined) throw notSupported("modifier not supported", rawName);
      return { param, kind, anyOf: values.map((v) => parseDateValue(rawName, v)) };
  }
}

function parseReferenceValue(
  rawName: string,
  value: string,
  typed: string | undefined,
  targets: readonly string[] | undefined,
  baseUrl: string | undefined,
): string {
  let v = value;
  if (baseUrl !== undefined) {
    const base = baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`;
    if (v.startsWith(base)) v = v.slice(base.length);
  }
  let type: string;
  let id: string;
  if (ID_RE.test(v)) {
    const only = typed ?? (targets?.length === 1 ? targets[0] : undefined);
    if (only === undefined) throw badRequest("give the reference as Type/id", rawName, "value");
    type = only;
    id = v;
  } else {
    const ref = parseReference(v);
    if (ref?.kind !== "relative") throw badRequest("not a reference to a resource on this server", rawName, "value");
    if (typed !== undefined && ref.type !== typed)
      throw badRequest("type does not match the modifier", rawName, "value");
    type = ref.type;
    id = ref.id;
  }
  if (targets !== undefined && !targets.includes(type)) {
    throw badRequest(`must refer to ${targets.join(" or ")}`, rawName, "value");
  }
  return `${type}/${id}`;
}

function parseDateValue(rawName: string, value: string): { op: Comparator; low: number; high: number } {
  let op: Comparator = "eq";
  let rest = value;
  const prefix = value.slice(0, 2);
  if (COMPARATORS.has(prefix)) {
    op = prefix as Comparator;
    rest = value.slice(2);
  }
  const range = dateRange(rest);
  if (range === undefined) throw badRequest("not a valid date", rawName, "value");
  return { op, ...range };
}

function parseSort(resourceType: string, rawName: string, value: string): { param: string; descending: boolean }[] {
  const out: { param: string; descending: boolean }[] = [];
  for (const part of value.split(",")) {
    const descending = part.startsWith("-");
    const param = descending ? part.slice(1) : part;
    const def = searchParam(resourceType, param);
    if (param !== "_lastUpdated" && def?.kind !== "date") {
      throw notSupported("sorting is supported on _lastUpdated and date parameters only", rawName);
    }
    if (out.some((s) => s.param === param)) throw badRequest("sort parameter repeated", rawName);
    out.push({ param, descending });
  }
  return out;
}

// --- paging links ------------------------------------------------------------------------------------------------

export interface BundleLink {
  relation: "self" | "first" | "previous" | "next";
  url: string;
}

/**
 * Bundle.link for a page of results: `self`, `first`, `previous` (when not on the first page) and `next` (when
 * `hasMore`). `base` is the search URL without a query (`https://host/fhir/Observation`); `params` the parsed search's
 * `params` (any `_count`/`_offset` in them are replaced).
 */
export function searchLinks(
  base: string,
  params: readonly (readonly [string, string])[] | URLSearchParams,
  offset: number,
  count: number,
  hasMore: boolean,
): BundleLink[] {
  const kept = [...(params instanceof URLSearchParams ? params.entries() : params)].filter(
    ([k]) => k !== "_count" && k !== "_offset",
  );
  const url = (at: number): string => {
    const q = new URLSearchParams(kept.map(([k, v]): [string, string] => [k, v]));
    q.set("_count", String(count));
    if (at > 0) q.set("_offset", String(at));
    return `${base}?${q.toString()}`;
  };
  const links: BundleLink[] = [
    { relation: "self", url: url(offset) },
    { relation: "first", url: url(0) },
  ];
  if (offset > 0 && count > 0) links.push({ relation: "previous", url: url(Math.max(0, offset - count)) });
  if (hasMore && count > 0) links.push({ relation: "next", url: url(offset + count) });
  return links;
}
