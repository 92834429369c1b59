import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { canonicalJson, canonicalLengthOfPlain } from "../ledger/canonical.ts";
import {
  codeOfLabel,
  isSensitive,
  LABEL_CODES,
  LABEL_IDS,
  LABELS,
  labelOfCode,
  labelsOfCodes,
  SENSITIVE_LABELS,
} from "./labels.ts";
import { DEFAULT_POLICY, OPTOUT_PURPOSES, PURPOSES, ROLE_PERMISSIONS, ROLES, roleMayUse } from "./policy.ts";
import {
  checkPayload,
  firstRefusedItem,
  IMPLEMENTED_TX_TYPES,
  MAX_LIST_ITEMS,
  PAYLOAD_SCHEMAS,
  payloadSchemaOf,
  RESERVED_TX_TYPES,
  TX_TYPES,
} from "./schemas.ts";

type Node = Record<string, unknown>;

/** Walks a JSON Schema, calling `visit` with each sub-schema and its path. */
function walk(schema: unknown, path: string, visit: (s: Node, path: string) => void): void {
  if (schema === null || typeof schema !== "object") return;
  const s = schema as Node;
  visit(s, path);
  for (const [k, v] of Object.entries(s.properties ?? {})) walk(v, `${path}.${k}`, visit);
  if (s.items !== undefined) walk(s.items, `${path}[]`, visit);
  for (const key of ["anyOf", "oneOf", "allOf"]) {
    const list = s[key];
    if (Array.isArray(list)) for (const [i, x] of list.entries()) walk(x, `${path}|${i}`, visit);
  }
}

describe("payload schemas", () => {
  for (const type of IMPLEMENTED_TX_TYPES) {
    test(`${type}: closed objects, bounded strings and arrays`, () => {
      walk(PAYLOAD_SCHEMAS[type], type, (s, path) => {
        if (s.type === "object") assert.equal(s.additionalProperties, false, `${path} must reject unknown fields`);
        if (s.type === "string" && s.const === undefined) {
          assert.equal(typeof s.maxLength, "number", `${path} needs maxLength`);
        }
        if (s.type === "array") assert.equal(typeof s.maxItems, "number", `${path} needs maxItems`);
      });
    });
  }

  test("payloadSchemaOf: implemented types only", () => {
    assert.equal(payloadSchemaOf("consent.set"), PAYLOAD_SCHEMAS["consent.set"]);
    assert.equal(payloadSchemaOf("study.enrol"), undefined);
    assert.equal(payloadSchemaOf("toString"), undefined);
    assert.equal(payloadSchemaOf("__proto__"), undefined);
    assert.equal(TX_TYPES.length, IMPLEMENTED_TX_TYPES.length + RESERVED_TX_TYPES.length);
    assert.ok(Object.isFrozen(TX_TYPES));
  });

  test("ids: uuid v4 lowercase, hex32, org slugs", () => {
    const ok = { patient: "0f8fad5b-d9cb-469f-a165-70867728950e", optout: true };
    assert.equal(checkPayload("optout.set", ok), true);
    for (const patient of [
      "0F8FAD5B-D9CB-469F-A165-70867728950E",
      "0f8fad5b-d9cb-169f-a165-70867728950e",
      "0f8fad5bd9cb469fa16570867728950e",
      "9434765919",
      "",
    ]) {
      assert.equal(checkPayload("optout.set", { ...ok, patient }), false, patient);
    }
    const reg = { patient: ok.patient, org: "gp-riverside", key: "a".repeat(64) };
    assert.equal(checkPayload("patient.register", reg), true);
    assert.equal(checkPayload("patient.register", { ...reg, key: "A".repeat(64) }), false);
    assert.equal(checkPayload("patient.register", { ...reg, org: "GP Riverside" }), false);
    assert.equal(checkPayload("patient.register", { ...reg, org: "-gp" }), false);
    assert.equal(checkPayload("patient.register", { ...reg, org: "g".repeat(65) }), false);
  });
});

describe("labels: one table", () => {
  test("every code maps to exactly one label", () => {
    assert.equal(new Set(LABEL_CODES).size, LABEL_CODES.length);
    for (const code of LABEL_CODES) assert.ok(labelOfCode(code) !== undefined);
    for (const l of LABELS) assert.equal(l.codes.length, l.systems.length);
  });
  test("the patient-facing labels of DESIGN, with their v3 codes", () => {
    assert.deepEqual(LABEL_IDS, [
      "general",
      "mental-health",
      "sexual-health",
      "hiv",
      "substance-use",
      "genetics",
      "gender-identity",
      "fertility",
      "social-care",
    ]);
    assert.equal(labelOfCode("N"), "general");
    for (const c of ["PSY", "MH", "BH"]) assert.equal(labelOfCode(c), "mental-health");
    for (const c of ["SEX", "STD"]) assert.equal(labelOfCode(c), "sexual-health");
    for (const c of ["SUD", "ETH"]) assert.equal(labelOfCode(c), "substance-use");
    assert.equal(labelOfCode("HIV"), "hiv");
    assert.equal(labelOfCode("GDIS"), "genetics");
    assert.equal(codeOfLabel("mental-health"), "PSY");
  });
  test("sensitive = DESIGN step 5's list", () => {
    assert.deepEqual([...SENSITIVE_LABELS].sort(), [
      "fertility",
      "gender-identity",
      "genetics",
      "hiv",
      "mental-health",
      "sexual-health",
      "substance-use",
    ]);
    assert.equal(isSensitive("general"), false);
    assert.equal(isSensitive("social-care"), false);
  });
  test("a resource without known labels is general; unknown codes are ignored", () => {
    assert.deepEqual(labelsOfCodes([]), ["general"]);
    assert.deepEqual(labelsOfCodes(["R", "TBOO"]), ["general"]);
    assert.deepEqual(labelsOfCodes(["PSY", "MH", "N"]), ["mental-health", "general"]);
  });
});

describe("policy tables", () => {
  test("role → purposes", () => {
    assert.deepEqual(ROLE_PERMISSIONS.researcher.purposes, ["HRESCH", "CLINTRCH"]);
    assert.deepEqual(ROLE_PERMISSIONS.clinician.purposes, ["TREAT", "ETREAT"]);
    assert.deepEqual(ROLE_PERMISSIONS.analyst.purposes, ["HMARKT", "HOPERAT", "PUBHLTH"]);
    for (const r of ROLES) for (const p of ROLE_PERMISSIONS[r].purposes) assert.ok(PURPOSES.includes(p));
    assert.equal(roleMayUse("researcher", "HRESCH", "write"), false);
    assert.equal(roleMayUse("wizard", "TREAT", "read"), false);
    assert.equal(roleMayUse("toString", "TREAT", "read"), false);
  });
  test("opt-out covers research and planning, not care or commerce", () => {
    assert.ok(!OPTOUT_PURPOSES.includes("TREAT") && !OPTOUT_PURPOSES.includes("HMARKT"));
    assert.ok(OPTOUT_PURPOSES.includes("HRESCH") && OPTOUT_PURPOSES.includes("PUBHLTH"));
  });
  test("defaults: 24 h back, 5 min ahead, 4 h break-glass, proxy ends at 16", () => {
    assert.equal(DEFAULT_POLICY.replayBackMs, 86_400_000);
    assert.equal(DEFAULT_POLICY.replayAheadMs, 300_000);
    assert.equal(DEFAULT_POLICY.breakGlassWindowMs, 14_400_000);
    assert.equal(DEFAULT_POLICY.proxyEndAge, 16);
  });
});

describe("firstRefusedItem", () => {
  const anchor = (n: number) => ({
    custodian: "gp-riverside",
    resourceType: "Observation",
    resourceId: `obs-${n}`,
    version: "1",
    commitment: "a".repeat(64),
    labels: [],
  });

  test("-1 when every item passes, across chunks of the contract's list limit", () => {
    const items = Array.from({ length: 2 * MAX_LIST_ITEMS + 500 }, (_, n) => anchor(n));
    assert.equal(firstRefusedItem("record.anchor", "anchors", items), -1);
    assert.equal(firstRefusedItem("record.anchor", "anchors", []), -1);
  });

  test("the index of the first refused item, in whichever chunk it is", () => {
    const items = Array.from({ length: 2 * MAX_LIST_ITEMS + 500 }, (_, n) => anchor(n));
    for (const at of [0, 999, 1000, 2_100]) {
      const bad = [...items];
      bad[at] = { ...anchor(at), commitment: "not hex" };
      bad[at + 7] = { ...anchor(at + 7), version: "" };
      assert.equal(firstRefusedItem("record.anchor", "anchors", bad), at, `bad item at ${at}`);
    }
  });
});

describe("list entries of the node's own txs are plain JSON", () => {
  // The access-log and anchor batchers size entries with canonicalLengthOfPlain (JSON.stringify), which equals the
  // canonical length only for strings of printable ASCII without escapes: the schemas must refuse everything else.
  // Each field from its pattern, or (to reach what the pattern excludes) any string at all: non-ASCII, escapes.
  const field = (pattern: RegExp) =>
    fc.oneof(
      { arbitrary: fc.stringMatching(pattern), weight: 9 },
      { arbitrary: fc.string({ unit: "binary" }), weight: 1 },
    );
  const lists: [type: string, listField: string, entries: fc.Arbitrary<unknown>][] = [
    [
      "access.log",
      "entries",
      fc.record(
        {
          requester: field(/^[0-9a-f]{64}$/),
          patient: fc.uuid({ version: 4 }),
          custodian: field(/^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$/),
          resourceType: field(/^[A-Z][A-Za-z]{1,63}$/),
          resourceId: field(/^[A-Za-z0-9.-]{1,64}$/),
          purpose: fc.constantFrom("TREAT", "HRESCH", "PATRQT"),
          action: fc.constantFrom("read", "write"),
          decision: fc.constantFrom("permit", "deny"),
          step: fc.integer({ min: 1, max: 8 }),
          rule: field(/^[a-z0-9:.-]{1,64}$/),
          height: fc.maxSafeNat(),
        },
        {
          requiredKeys: [
            "requester",
            "patient",
            "custodian",
            "resourceType",
            "purpose",
            "action",
            "decision",
            "step",
            "rule",
            "height",
          ],
        },
      ),
    ],
    [
      "record.anchor",
      "anchors",
      fc.record(
        {
          custodian: field(/^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$/),
          patient: fc.uuid({ version: 4 }),
          resourceType: field(/^[A-Z][A-Za-z]{1,63}$/),
          resourceId: field(/^[A-Za-z0-9.-]{1,64}$/),
          version: field(/^[A-Za-z0-9.-]{1,64}$/),
          commitment: field(/^[0-9a-f]{64}$/),
          labels: fc.uniqueArray(field(/^[A-Za-z0-9_-]{1,32}$/), { maxLength: 4 }),
          date: field(/^20[0-9]{2}-0[1-9]-[12][0-9]$/),
        },
        { requiredKeys: ["custodian", "resourceType", "resourceId", "version", "commitment", "labels"] },
      ),
    ],
  ];
  for (const [type, listField, entries] of lists) {
    test(`${type}: an entry's canonical JSON is as long as JSON.stringify's, for every entry the schema accepts`, () => {
      let accepted = 0;
      fc.assert(
        fc.property(entries, (e) => {
          if (!checkPayload(type, { [listField]: [e] })) return;
          accepted++;
          assert.equal(canonicalLengthOfPlain(e), Buffer.byteLength(canonicalJson(e)));
        }),
        { numRuns: 2000 },
      );
      assert.ok(accepted > 100, `${accepted} generated entries passed the schema`);
    });
  }
});
