// Search semantics over blind and plain indexes: every kind, modifier and comparator, AND/OR, current versions only,
// sorting, and bad queries.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { observationItem, openTestVault, patientItem, pseudonym, T0, type TestVault } from "./testkit.ts";
import type { Comparator, IndexEntry, SearchClause, SearchQuery } from "./types.ts";
import { STRING_PREFIX_CAP, VaultError } from "./vault.ts";

const LOINC = "http://loinc.org";
const SNOMED = "http://snomed.info/sct";
const day = (y: number, m: number, d: number): [number, number] => [
  Date.UTC(y, m - 1, d),
  Date.UTC(y, m - 1, d + 1) - 1,
];
const JAN1 = day(2020, 1, 1);

let t: TestVault;
const a = pseudonym();
const b = pseudonym();

function obs(id: string, patient: string, index: IndexEntry[]) {
  return observationItem(patient, id, { index });
}
const code = (system: string, c: string): IndexEntry => ({ param: "code", kind: "token", system, code: c });
const status = (s: string): IndexEntry => ({ param: "status", kind: "token", system: "", code: s });
const date = ([low, high]: [number, number]): IndexEntry => ({ param: "date", kind: "date", low, high });
const value = (v: number): IndexEntry => ({ param: "value-quantity", kind: "number", value: v });
const subject = (p: string): IndexEntry => ({ param: "subject", kind: "reference", value: `Patient/${p}` });

before(() => {
  t = openTestVault("search");
  // lastUpdated rises with each write: o1 oldest … o9 newest.
  const writes = [
    obs("o1", a, [code(LOINC, "1234-5"), status("final"), date(JAN1), value(5), subject(a)]),
    obs("o2", b, [
      code(LOINC, "1234-5"),
      code(SNOMED, "999"),
      status("amended"),
      date(day(2020, 1, 2)),
      value(10),
      subject(b),
    ]),
    obs("o3", a, [
      code(SNOMED, "999"),
      status("final"),
      date([Date.UTC(2019, 11, 31, 12), Date.UTC(2020, 0, 1, 12)]),
      value(7.5),
      subject(a),
    ]),
    obs("o4", b, [code("urn:other", "x"), status("final")]),
    obs("o8", a, [code("urn:other", "ABC"), date(day(2019, 6, 1)), value(-3)]),
    obs("o9", b, [code("urn:other", "abc"), date(day(2020, 1, 5)), value(1e6)]),
  ];
  for (const [i, w] of writes.entries()) {
    t.clock.now = T0 + i * 1000;
    t.put([w]);
  }
  // Not current, deleted or pending: never found.
  t.clock.now = T0 + 10_000;
  t.put([obs("o5", a, [code(LOINC, "1234-5"), date(JAN1)])]);
  t.put([{ ...obs("o5", a, []), delete: true }]);
  t.put([obs("o6", a, [code(LOINC, "1234-5"), date(JAN1), value(7.5)])]);
  t.put([obs("o6", a, [code("urn:other", "y")])]);
  t.vault.stage([obs("o7", a, [code(LOINC, "1234-5"), date(JAN1), value(7.5), status("final")])]);
  // Patients for string search.
  const names = [
    "smith",
    "smithson",
    "smyth",
    "o'brien",
    "zoë",
    "😀abc",
    "abcdefghijklmnopqrstuvwxyz0123",
    "abcdefghijklmnopqrstuvwxyzXYZ",
  ];
  t.put(names.map((n, i) => patientItem(pseudonym(), `p${i}`, n)));
  // The query clock for `ap` on dates: 2020-01-11, ~9.5 days after the middle of JAN1.
  t.clock.now = Date.UTC(2020, 0, 11);
});
after(() => t.remove());

const find = (clauses: SearchClause[], extra: Partial<SearchQuery> = {}) =>
  t.vault.search({ resourceType: "Observation", clauses, ...extra }).sort();
const patients = (clause: SearchClause) =>
  t.vault
    .search({ resourceType: "Patient", clauses: [clause] })
    .map(
      (id) => ["smith", "smithson", "smyth", "o'brien", "zoë", "😀abc", "alpha-0123", "alpha-XYZ"][Number(id.slice(1))],
    )
    .sort();

describe("tokens", () => {
  const cases: [string, SearchClause, string[]][] = [
    ["system|code", { param: "code", kind: "token", anyOf: [{ system: LOINC, code: "1234-5" }] }, ["o1", "o2"]],
    ["code in any system", { param: "code", kind: "token", anyOf: [{ code: "999" }] }, ["o2", "o3"]],
    [
      "|code (no system)",
      { param: "status", kind: "token", anyOf: [{ system: "", code: "final" }] },
      ["o1", "o3", "o4"],
    ],
    [
      "|code does not match a code that has a system",
      { param: "code", kind: "token", anyOf: [{ system: "", code: "999" }] },
      [],
    ],
    ["system| (any code)", { param: "code", kind: "token", anyOf: [{ system: LOINC }] }, ["o1", "o2"]],
    ["code of another system", { param: "code", kind: "token", anyOf: [{ system: LOINC, code: "999" }] }, []],
    ["case-sensitive", { param: "code", kind: "token", anyOf: [{ code: "abc" }] }, ["o9"]],
    [
      "OR within a clause",
      { param: "code", kind: "token", anyOf: [{ system: LOINC, code: "1234-5" }, { code: "x" }] },
      ["o1", "o2", "o4"],
    ],
    [
      ":not",
      { param: "code", kind: "token", anyOf: [{ system: LOINC, code: "1234-5" }], not: true },
      ["o3", "o4", "o6", "o8", "o9"],
    ],
    ["another parameter's value", { param: "status", kind: "token", anyOf: [{ code: "999" }] }, []],
  ];
  for (const [name, clause, expected] of cases) it(name, () => assert.deepEqual(find([clause]), expected));

  it("ANDs clauses", () => {
    assert.deepEqual(
      find([
        { param: "code", kind: "token", anyOf: [{ code: "999" }] },
        { param: "status", kind: "token", anyOf: [{ code: "final" }] },
      ]),
      ["o3"],
    );
  });
});

describe("references", () => {
  it("matches Type/id exactly", () => {
    assert.deepEqual(find([{ param: "subject", kind: "reference", anyOf: [`Patient/${a}`] }]), ["o1", "o3"]);
    assert.deepEqual(find([{ param: "subject", kind: "reference", anyOf: [`Patient/${a}`, `Patient/${b}`] }]), [
      "o1",
      "o2",
      "o3",
    ]);
    assert.deepEqual(find([{ param: "subject", kind: "reference", anyOf: [`Patient/${a.slice(0, 8)}`] }]), []);
  });
});

describe("strings", () => {
  const s = (anyOf: string[], exact = false): SearchClause => ({ param: "family", kind: "string", anyOf, exact });
  it("starts-with by default", () => {
    assert.deepEqual(patients(s(["smi"])), ["smith", "smithson"]);
    assert.deepEqual(patients(s(["sm"])), ["smith", "smithson", "smyth"]);
    assert.deepEqual(patients(s(["smith"])), ["smith", "smithson"]);
    assert.deepEqual(patients(s(["mith"])), [], "not contains");
    assert.deepEqual(patients(s(["o'b", "zo"])), ["o'brien", "zoë"]);
    assert.deepEqual(patients(s(["zoë"])), ["zoë"]);
    assert.deepEqual(patients(s(["😀"])), ["😀abc"], "prefixes are whole code points");
  });
  it(":exact matches the whole value", () => {
    assert.deepEqual(patients(s(["smith"], true)), ["smith"]);
    assert.deepEqual(patients(s(["smi"], true)), []);
  });
  it(`matches prefixes longer than ${STRING_PREFIX_CAP} code points on their first ${STRING_PREFIX_CAP}`, () => {
    assert.deepEqual(patients(s(["abcdefghijklmnopqrstuvwx"])), ["alpha-0123", "alpha-XYZ"]);
    assert.deepEqual(
      patients(s(["abcdefghijklmnopqrstuvwxyz01"])),
      ["alpha-0123", "alpha-XYZ"],
      "documented over-match",
    );
    assert.deepEqual(patients(s(["abcdefghijklmnopqrstuvwxyz0123"], true)), ["alpha-0123"]);
  });
  it("keeps parameters apart", () => {
    assert.deepEqual(patients({ param: "given", kind: "string", anyOf: ["smith"] }), []);
    assert.equal(patients({ param: "given", kind: "string", anyOf: ["alex"] }).length, 8);
  });
});

describe("dates (FHIR range semantics)", () => {
  // Query: the whole of 2020-01-01. o1 is that day, o2 the next day, o3 straddles midnight before it, o8 is in
  // June 2019, o9 on 2020-01-05; o4 has no date.
  const cases: [Comparator, string[]][] = [
    ["eq", ["o1"]],
    ["ne", ["o2", "o3", "o8", "o9"]],
    ["gt", ["o2", "o9"]],
    ["lt", ["o3", "o8"]],
    ["ge", ["o1", "o2", "o9"]],
    ["le", ["o1", "o3", "o8"]],
    ["sa", ["o2", "o9"]],
    ["eb", ["o8"]],
    ["ap", ["o1", "o2", "o3"]],
  ];
  for (const [op, expected] of cases) {
    it(op, () =>
      assert.deepEqual(find([{ param: "date", kind: "date", anyOf: [{ op, low: JAN1[0], high: JAN1[1] }] }]), expected),
    );
  }
  it("ORs ranges and ANDs clauses (a date window)", () => {
    assert.deepEqual(
      find([
        {
          param: "date",
          kind: "date",
          anyOf: [
            { op: "eq", low: JAN1[0], high: JAN1[1] },
            { op: "lt", ...range(2019, 7, 1) },
          ],
        },
      ]),
      ["o1", "o8"],
    );
    assert.deepEqual(
      find([
        { param: "date", kind: "date", anyOf: [{ op: "ge", ...range(2020, 1, 1) }] },
        { param: "date", kind: "date", anyOf: [{ op: "le", ...range(2020, 1, 2) }] },
      ]),
      ["o1", "o2"],
    );
  });
  it("combines with token clauses (ranges checked per candidate)", () => {
    const loinc: SearchClause = { param: "code", kind: "token", anyOf: [{ system: LOINC, code: "1234-5" }] };
    assert.deepEqual(find([loinc, { param: "date", kind: "date", anyOf: [{ op: "gt", ...range(2020, 1, 1) }] }]), [
      "o2",
    ]);
    assert.deepEqual(find([{ param: "date", kind: "date", anyOf: [{ op: "ge", ...range(2020, 1, 1) }] }, loinc]), [
      "o1",
      "o2",
    ]);
    assert.deepEqual(
      find([loinc, { param: "value-quantity", kind: "number", anyOf: [{ op: "lt", low: 7, high: 7 }] }]),
      ["o1"],
    );
  });
  it("finds nothing for a date parameter nothing has", () => {
    assert.deepEqual(find([{ param: "issued", kind: "date", anyOf: [{ op: "ge", low: 0, high: 0 }] }]), []);
  });
});

function range(y: number, m: number, d: number) {
  const [low, high] = day(y, m, d);
  return { low, high };
}

describe("numbers", () => {
  // Query 7.5 with its precision range [7.45, 7.55]: o1 = 5, o2 = 10, o3 = 7.5, o8 = -3, o9 = 1e6.
  const cases: [Comparator, string[]][] = [
    ["eq", ["o3"]],
    ["ne", ["o1", "o2", "o8", "o9"]],
    ["gt", ["o2", "o9"]],
    ["lt", ["o1", "o8"]],
    ["ge", ["o2", "o3", "o9"]],
    ["le", ["o1", "o3", "o8"]],
    ["sa", ["o2", "o9"]],
    ["eb", ["o1", "o8"]],
    ["ap", ["o3"]],
  ];
  for (const [op, expected] of cases) {
    it(op, () =>
      assert.deepEqual(
        find([{ param: "value-quantity", kind: "number", anyOf: [{ op, low: 7.45, high: 7.55 }] }]),
        expected,
      ),
    );
  }
  it("ap is 10% of the value", () => {
    assert.deepEqual(find([{ param: "value-quantity", kind: "number", anyOf: [{ op: "ap", low: 9.2, high: 9.2 }] }]), [
      "o2",
    ]);
    assert.deepEqual(
      find([{ param: "value-quantity", kind: "number", anyOf: [{ op: "ap", low: 8.9, high: 8.9 }] }]),
      [],
    );
  });
});

describe("_id, _lastUpdated and sorting", () => {
  it("filters by _id", () => {
    assert.deepEqual(find([], { ids: ["o1", "o9", "o5", "o7", "nope"] }), ["o1", "o9"]);
    assert.deepEqual(find([{ param: "code", kind: "token", anyOf: [{ code: "999" }] }], { ids: ["o1", "o3"] }), ["o3"]);
    assert.deepEqual(find([], { ids: [] }), []);
  });
  it("filters by _lastUpdated", () => {
    assert.deepEqual(find([], { lastUpdated: [{ op: "lt", low: T0 + 2000, high: T0 + 2000 }] }), ["o1", "o2"]);
    assert.deepEqual(
      find([], {
        lastUpdated: [
          { op: "ge", low: T0 + 2000, high: T0 + 2000 },
          { op: "le", low: T0 + 3000, high: T0 + 3000 },
        ],
      }),
      ["o3", "o4"],
    );
  });
  it("sorts by _lastUpdated, newest first by default", () => {
    const all = t.vault.search({ resourceType: "Observation", clauses: [] });
    assert.deepEqual(all, ["o6", "o9", "o8", "o4", "o3", "o2", "o1"]);
    assert.deepEqual(
      t.vault.search({
        resourceType: "Observation",
        clauses: [],
        sort: [{ param: "_lastUpdated", descending: false }],
      }),
      [...all].reverse(),
    );
  });
  it("sorts by a date parameter (earliest start ascending, latest end descending), undated last", () => {
    const sort = (descending: boolean) =>
      t.vault.search({ resourceType: "Observation", clauses: [], sort: [{ param: "date", descending }] });
    assert.deepEqual(sort(false), ["o8", "o3", "o1", "o2", "o9", "o4", "o6"]);
    assert.deepEqual(sort(true), ["o9", "o2", "o1", "o3", "o8", "o4", "o6"]);
  });
  it("sorts by several keys and by numbers", () => {
    assert.deepEqual(
      t.vault.search({
        resourceType: "Observation",
        clauses: [{ param: "status", kind: "token", anyOf: [{ code: "final" }] }],
        sort: [
          { param: "value-quantity", descending: true },
          { param: "_id", descending: false },
        ],
      }),
      ["o3", "o1", "o4"],
    );
  });
});

describe("bad queries", () => {
  const bad: [string, SearchQuery, RegExp][] = [
    ["a bad type", { resourceType: "observation", clauses: [] }, /resourceType/],
    ["no values", { resourceType: "Observation", clauses: [{ param: "code", kind: "token", anyOf: [] }] }, /1 to 1000/],
    [
      "an empty token",
      { resourceType: "Observation", clauses: [{ param: "code", kind: "token", anyOf: [{}] }] },
      /needs a code or a system/,
    ],
    [
      "a bad parameter name",
      { resourceType: "Observation", clauses: [{ param: "code) OR 1=1 --", kind: "reference", anyOf: ["x"] }] },
      /parameter name/,
    ],
    [
      "a reversed range",
      {
        resourceType: "Observation",
        clauses: [{ param: "date", kind: "date", anyOf: [{ op: "eq", low: 2, high: 1 }] }],
      },
      /low ≤ high/,
    ],
    [
      "an unknown comparator",
      {
        resourceType: "Observation",
        clauses: [{ param: "date", kind: "date", anyOf: [{ op: "xx" as Comparator, low: 1, high: 1 }] }],
      },
      /comparator/,
    ],
    [
      "an empty string",
      { resourceType: "Patient", clauses: [{ param: "family", kind: "string", anyOf: [""] }] },
      /empty/,
    ],
    [
      "a bad sort name",
      { resourceType: "Observation", clauses: [], sort: [{ param: "date desc; --", descending: true }] },
      /sort/,
    ],
  ];
  for (const [name, query, message] of bad) {
    it(`refuses ${name}`, () =>
      assert.throws(
        () => t.vault.search(query),
        (e: unknown) => e instanceof VaultError && message.test(e.message),
      ));
  }
  it("treats injection attempts in values as values", () => {
    for (const v of ["x' OR '1'='1", "1); DROP TABLE versions; --", "%", "_"]) {
      assert.deepEqual(find([{ param: "code", kind: "token", anyOf: [{ code: v }] }]), []);
      assert.deepEqual(patients({ param: "family", kind: "string", anyOf: [v] }), []);
    }
    assert.equal(find([]).length, 7, "nothing was dropped");
  });
});
