import assert from "node:assert/strict";
import { test } from "node:test";
import type { SearchClause } from "../vault/types.ts";
import { OperationOutcomeError } from "./outcome.ts";
import { parseSearch, searchLinks } from "./search-query.ts";

const ms = (iso: string): number => Date.parse(iso);

function clauses(type: string, query: string): SearchClause[] {
  return parseSearch(type, new URLSearchParams(query)).query.clauses;
}

function rejects(type: string, query: string, expression: string | undefined, status = 400): OperationOutcomeError {
  try {
    parseSearch(type, new URLSearchParams(query));
  } catch (e) {
    assert.ok(e instanceof OperationOutcomeError, String(e));
    assert.equal(e.status, status, `${query}: ${e.message}`);
    assert.equal(e.expression, expression, `${query}: ${e.message}`);
    return e;
  }
  assert.fail(`accepted: ${query}`);
}

test("token parameters: code, system|code, |code, system|, :not, comma and repeat", () => {
  const table: [string, SearchClause[]][] = [
    ["gender=female", [{ param: "gender", kind: "token", anyOf: [{ code: "female" }] }]],
    [
      "identifier=https://fhir.nhs.uk/Id/nhs-number|9990001234",
      [
        {
          param: "identifier",
          kind: "token",
          anyOf: [{ system: "https://fhir.nhs.uk/Id/nhs-number", code: "9990001234" }],
        },
      ],
    ],
    ["identifier=|abc", [{ param: "identifier", kind: "token", anyOf: [{ system: "", code: "abc" }] }]],
    ["identifier=http://x|", [{ param: "identifier", kind: "token", anyOf: [{ system: "http://x" }] }]],
    ["gender:not=male", [{ param: "gender", kind: "token", anyOf: [{ code: "male" }], not: true }]],
    ["gender=male,female", [{ param: "gender", kind: "token", anyOf: [{ code: "male" }, { code: "female" }] }]],
    [
      "identifier=a&identifier=b",
      [
        { param: "identifier", kind: "token", anyOf: [{ code: "a" }] },
        { param: "identifier", kind: "token", anyOf: [{ code: "b" }] },
      ],
    ],
    // Escapes: \, is a comma inside a value, \| a bar inside a code.
    ["identifier=s|a\\,b", [{ param: "identifier", kind: "token", anyOf: [{ system: "s", code: "a,b" }] }]],
    ["identifier=s|a\\|b", [{ param: "identifier", kind: "token", anyOf: [{ system: "s", code: "a|b" }] }]],
  ];
  for (const [query, expected] of table) assert.deepEqual(clauses("Patient", query), expected, query);
  assert.deepEqual(clauses("Observation", "code=http://loinc.org|8302-2&status=final,amended"), [
    { param: "code", kind: "token", anyOf: [{ system: "http://loinc.org", code: "8302-2" }] },
    { param: "status", kind: "token", anyOf: [{ code: "final" }, { code: "amended" }] },
  ]);
  assert.deepEqual(clauses("Immunization", "vaccine-code=http://hl7.org/fhir/sid/cvx|140"), [
    { param: "vaccine-code", kind: "token", anyOf: [{ system: "http://hl7.org/fhir/sid/cvx", code: "140" }] },
  ]);
});

test("string parameters: normalised starts-with and :exact", () => {
  assert.deepEqual(clauses("Patient", "name=José%20%20ÁLVAREZ"), [
    { param: "name", kind: "string", anyOf: ["jose alvarez"] },
  ]);
  assert.deepEqual(clauses("Patient", "family:exact=Smith,Jones"), [
    { param: "family", kind: "string", anyOf: ["smith", "jones"], exact: true },
  ]);
  rejects("Patient", "family:contains=mit", "family:contains");
  rejects("Patient", "family=%20%20", "family");
});

test("reference parameters: Type/id, bare id with one target, :Type, own base URL", () => {
  const p = { param: "patient", kind: "reference", anyOf: ["Patient/p1"] };
  assert.deepEqual(clauses("Observation", "patient=Patient/p1"), [p]);
  assert.deepEqual(clauses("Observation", "patient=p1"), [p]);
  assert.deepEqual(clauses("Observation", "subject:Patient=p1"), [{ ...p, param: "subject" }]);
  assert.deepEqual(clauses("Observation", "subject=Group/g1"), [
    { param: "subject", kind: "reference", anyOf: ["Group/g1"] },
  ]);
  const own = parseSearch("Observation", new URLSearchParams("patient=https://ehr.example/fhir/Patient/p1"), {
    baseUrl: "https://ehr.example/fhir",
  });
  assert.deepEqual(own.query.clauses, [p]);
  rejects("Observation", "patient=https://other.example/fhir/Patient/p1", "patient");
  rejects("Observation", "subject=g1", "subject", 400); // several targets: the type must be given
  rejects("Observation", "patient=Organization/o1", "patient");
  rejects("Observation", "subject:Organization=o1", "subject:Organization");
  rejects("Observation", "subject:Patient=Group/g1", "subject:Patient");
  rejects("Observation", "patient=Patient/bad id", "patient");
  rejects("Observation", "patient.name=Smith", "patient.name");
});

test("date parameters: prefixes and precision", () => {
  assert.deepEqual(clauses("Observation", "date=ge2020&date=lt2021-01-01T00:00:00Z"), [
    {
      param: "date",
      kind: "date",
      anyOf: [{ op: "ge", low: ms("2020-01-01T00:00:00Z"), high: ms("2020-12-31T23:59:59.999Z") }],
    },
    {
      param: "date",
      kind: "date",
      anyOf: [{ op: "lt", low: ms("2021-01-01T00:00:00Z"), high: ms("2021-01-01T00:00:00.999Z") }],
    },
  ]);
  const [birth] = clauses("Patient", "birthdate=1980-05-06,1981");
  assert.deepEqual(birth, {
    param: "birthdate",
    kind: "date",
    anyOf: [
      { op: "eq", low: ms("1980-05-06T00:00:00Z"), high: ms("1980-05-06T23:59:59.999Z") },
      { op: "eq", low: ms("1981-01-01T00:00:00Z"), high: ms("1981-12-31T23:59:59.999Z") },
    ],
  });
  for (const op of ["eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap"]) {
    const [c] = clauses("Encounter", `date=${op}2020-03`);
    assert.equal(c?.kind === "date" ? c.anyOf[0]?.op : undefined, op);
  }
  rejects("Observation", "date=2020-13-01", "date");
  rejects("Observation", "date=gt", "date");
  rejects("Observation", "date=xx2020", "date");
  rejects("Observation", "date=2021-02-29", "date");
  rejects("Observation", "date:missing=true", "date:missing");
  rejects("Condition", "date=2020", "date"); // Condition dates are onset-date and recorded-date
  assert.equal(clauses("Condition", "onset-date=le2020").length, 1);
});

test("control parameters: _id, _lastUpdated, _count, _offset, _sort, _total, _format", () => {
  const s = parseSearch(
    "Observation",
    new URLSearchParams(
      "_id=a,b,c&_id=b,c,d&_lastUpdated=gt2024-01-01&_lastUpdated=lt2025&_count=50&_offset=100&_sort=-date,_lastUpdated&_total=accurate&_format=application/fhir%2Bjson",
    ),
  );
  assert.deepEqual(s.query.ids, ["b", "c"]);
  assert.deepEqual(s.query.lastUpdated, [
    { op: "gt", low: ms("2024-01-01T00:00:00Z"), high: ms("2024-01-01T23:59:59.999Z") },
    { op: "lt", low: ms("2025-01-01T00:00:00Z"), high: ms("2025-12-31T23:59:59.999Z") },
  ]);
  assert.equal(s.count, 50);
  assert.equal(s.offset, 100);
  assert.deepEqual(s.query.sort, [
    { param: "date", descending: true },
    { param: "_lastUpdated", descending: false },
  ]);
  assert.equal(s.total, "accurate");
  assert.deepEqual(
    s.params.map(([k]) => k),
    ["_id", "_id", "_lastUpdated", "_lastUpdated", "_sort", "_total"],
  );

  const d = parseSearch("Patient", {});
  assert.equal(d.count, 20);
  assert.equal(d.offset, 0);
  assert.deepEqual(d.query, { resourceType: "Patient", clauses: [] });
  assert.equal(parseSearch("Patient", { _count: "5000" }).count, 1000, "capped");
  assert.equal(parseSearch("Patient", { _count: "0" }).count, 0);
  assert.equal(parseSearch("Patient", { _count: "10" }, { maxCount: 5 }).count, 5);
  assert.deepEqual(parseSearch("Patient", { gender: ["male", "female"] }).query.clauses.length, 2);

  rejects("Patient", "_count=-1", "_count");
  rejects("Patient", "_count=ten", "_count");
  rejects("Patient", "_count=1.5", "_count");
  rejects("Patient", "_count=10&_count=20", "_count");
  rejects("Patient", "_offset=200000", "_offset");
  rejects("Patient", "_id=has space", "_id");
  rejects("Patient", "_lastUpdated=2020,2021", "_lastUpdated");
  rejects("Patient", "_sort=name", "_sort");
  rejects("Patient", "_sort=-birthdate,-birthdate", "_sort");
  rejects("Patient", "_total=some", "_total");
  rejects("Patient", "_format=xml", "_format", 406);
  rejects("Patient", "_format=application/fhir%2Bxml", "_format", 406);
  rejects("Patient", "_include=Patient:organization", "_include");
  rejects("Patient", "_summary=count", "_summary");
  rejects("Patient", "_count:exact=1", "_count:exact");
});

test("unknown parameters: 400 naming them, or ignored when lenient", () => {
  rejects("Patient", "nmae=Smith", "nmae");
  rejects("Patient", "gender:fuzzy=male", "gender:fuzzy");
  rejects("Observation", "value-quantity=5", "value-quantity");
  const lenient = parseSearch("Patient", new URLSearchParams("nmae=Smith&gender=male"), { lenient: true });
  assert.deepEqual(lenient.ignored, ["nmae"]);
  assert.equal(lenient.query.clauses.length, 1);
  assert.deepEqual(lenient.params, [["gender", "male"]]);
  assert.throws(
    () => parseSearch("Claim", {}),
    (e) => e instanceof OperationOutcomeError && e.status === 400,
  );
});

test("injection attempts stay data: strings to hash, numbers to compare, never code", () => {
  const sql = "' OR 1=1; DROP TABLE resources; --";
  assert.deepEqual(clauses("Patient", new URLSearchParams({ name: sql }).toString()), [
    { param: "name", kind: "string", anyOf: ["' or 1=1; drop table resources; --"] },
  ]);
  const fhirpath = "Patient.where(true).name";
  assert.deepEqual(clauses("Observation", new URLSearchParams({ code: fhirpath }).toString()), [
    { param: "code", kind: "token", anyOf: [{ code: fhirpath }] },
  ]);
  assert.deepEqual(clauses("Observation", new URLSearchParams({ code: "http://loinc.org|') or ('a'='a" }).toString()), [
    { param: "code", kind: "token", anyOf: [{ system: "http://loinc.org", code: "') or ('a'='a" }] },
  ]);
  // Where the value must be a number or a date, anything else is refused before it reaches the vault.
  rejects("Observation", new URLSearchParams({ date: "2020') OR 1=1 --" }).toString(), "date");
  rejects("Observation", new URLSearchParams({ _count: "10; DROP TABLE x" }).toString(), "_count");
  rejects("Observation", new URLSearchParams({ _sort: "date; DROP TABLE x" }).toString(), "_sort");
  rejects("Observation", new URLSearchParams({ patient: "Patient/1' OR '1'='1" }).toString(), "patient");
  rejects("Observation", new URLSearchParams({ _id: "1 OR 1=1" }).toString(), "_id");
  // A parameter name that is itself an attack is refused and not echoed.
  const e = rejects("Observation", new URLSearchParams({ "code)or(1=1": "x" }).toString(), undefined);
  assert.doesNotMatch(e.message, /1=1/);
  rejects("Observation", new URLSearchParams({ "code.where(true)": "x" }).toString(), "code.where(true)");
});

test("limits on parameters and values", () => {
  rejects("Patient", `family=${"a".repeat(3000)}`, "family");
  rejects("Patient", `gender=${Array.from({ length: 101 }, () => "x").join(",")}`, "gender");
  rejects("Patient", Array.from({ length: 65 }, () => "gender=x").join("&"), undefined);
  rejects("Patient", "gender=a,,b", "gender");
  rejects("Patient", "gender=", "gender");
  rejects("Patient", "identifier=|", "identifier");
});

test("paging links: self, first, previous and next", () => {
  const parsed = parseSearch(
    "Observation",
    new URLSearchParams("patient=Patient/p1&code=http://loinc.org|8302-2&_count=10&_offset=20"),
  );
  const links = searchLinks("https://ehr.example/fhir/Observation", parsed.params, parsed.offset, parsed.count, true);
  assert.deepEqual(
    links.map((l) => l.relation),
    ["self", "first", "previous", "next"],
  );
  const url = (rel: string) => new URL(links.find((l) => l.relation === rel)?.url ?? "");
  assert.equal(url("self").searchParams.get("_offset"), "20");
  assert.equal(url("next").searchParams.get("_offset"), "30");
  assert.equal(url("previous").searchParams.get("_offset"), "10");
  assert.equal(url("first").searchParams.get("_offset"), null);
  assert.equal(url("next").searchParams.get("_count"), "10");
  assert.equal(url("next").searchParams.get("code"), "http://loinc.org|8302-2");
  assert.equal(url("next").pathname, "/fhir/Observation");
  // The next page's link parses to the same query.
  const again = parseSearch("Observation", url("next").searchParams);
  assert.deepEqual(again.query, parsed.query);
  assert.equal(again.offset, 30);

  const last = searchLinks(
    "https://h/fhir/Patient",
    [
      ["_offset", "99"],
      ["gender", "male"],
    ],
    0,
    20,
    false,
  );
  assert.deepEqual(
    last.map((l) => l.relation),
    ["self", "first"],
  );
  assert.equal(new URL(last[0]?.url ?? "").searchParams.get("_offset"), null);
  assert.deepEqual(
    searchLinks("https://h/fhir/Patient", [], 5, 0, true).map((l) => l.relation),
    ["self", "first"],
    "no next page of size 0",
  );
});
