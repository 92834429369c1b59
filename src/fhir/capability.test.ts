import assert from "node:assert/strict";
import { test } from "node:test";
import { capabilityStatement, type TypeInteraction } from "./capability.ts";
import { SEARCH_PARAMS, SEARCH_TYPES } from "./search-params.ts";
import { parseSearch } from "./search-query.ts";
import { validateResource } from "./validate.ts";

const SAMPLE: Record<string, string> = {
  token: "http://example.org|x",
  string: "smi",
  reference: "Patient/p1",
  date: "ge2020-01-01",
};

function statement() {
  const resources: Record<string, TypeInteraction[]> = {
    Consent: ["read", "create"],
    AuditEvent: ["read"],
  };
  for (const type of SEARCH_TYPES) resources[type] = ["read", "vread", "history-instance", "search-type"];
  resources.Observation = ["read", "vread", "history-instance", "search-type", "create", "update"];
  return capabilityStatement({
    baseUrl: "https://ehr.example/fhir",
    resources,
    operations: {
      Patient: [{ name: "everything", definition: "http://hl7.org/fhir/OperationDefinition/Patient-everything" }],
    },
    systemInteractions: ["transaction"],
    smart: { tokenUrl: "https://ehr.example/auth/token" },
    software: { name: "CareLedger", version: "0.1.0" },
    date: "2026-01-01T00:00:00Z",
  });
}

test("the statement is valid R4 and says FHIR 4.0.1, JSON, server mode", () => {
  const cs = statement();
  validateResource(cs, { types: new Set(["CapabilityStatement"]) });
  assert.equal(cs.fhirVersion, "4.0.1");
  assert.deepEqual(cs.format, ["application/fhir+json", "json"]);
  assert.equal(cs.rest?.[0]?.mode, "server");
  assert.deepEqual(cs.rest?.[0]?.interaction, [{ code: "transaction" }]);
  assert.equal(cs.implementation?.url, "https://ehr.example/fhir");
});

test("search parameters come from the same table the parser uses, and each one parses", () => {
  const cs = statement();
  const resources = cs.rest?.[0]?.resource ?? [];
  for (const type of SEARCH_TYPES) {
    const r = resources.find((x) => x.type === type);
    assert.ok(r, type);
    const listed = (r.searchParam ?? []).map((p) => p.name);
    const expected = [...(SEARCH_PARAMS[type] ?? []).map((d) => d.code), "_id", "_lastUpdated"];
    assert.deepEqual(listed, expected, type);
    for (const p of r.searchParam ?? []) {
      const value = p.name === "_id" ? "abc" : p.name === "_lastUpdated" ? "gt2024" : (SAMPLE[p.type] as string);
      // Reference parameters whose targets exclude Patient get a value of their own type.
      const def = SEARCH_PARAMS[type]?.find((d) => d.code === p.name);
      const v = def?.kind === "reference" ? `${def.targets?.[0]}/x1` : value;
      const parsed = parseSearch(type, { [p.name]: v });
      assert.ok(
        parsed.query.clauses.length + (parsed.query.ids?.length ?? 0) + (parsed.query.lastUpdated?.length ?? 0) > 0,
        `${type}.${p.name}`,
      );
    }
  }
  // Types without search-type list no parameters.
  assert.equal(resources.find((x) => x.type === "Consent")?.searchParam, undefined);
});

test("interactions and operations are what the routes pass in", () => {
  const resources = statement().rest?.[0]?.resource ?? [];
  const obs = resources.find((x) => x.type === "Observation");
  assert.deepEqual(
    obs?.interaction?.map((i) => i.code),
    ["read", "vread", "history-instance", "search-type", "create", "update"],
  );
  assert.equal(obs?.updateCreate, true);
  assert.equal(obs?.readHistory, true);
  assert.equal(obs?.conditionalCreate, false);
  assert.equal(resources.find((x) => x.type === "AuditEvent")?.readHistory, false);
  assert.deepEqual(resources.find((x) => x.type === "Patient")?.operation, [
    { name: "everything", definition: "http://hl7.org/fhir/OperationDefinition/Patient-everything" },
  ]);
  assert.equal(resources.length, SEARCH_TYPES.length + 2);
});

test("SMART security: the oauth-uris extension carries the token URL", () => {
  const security = statement().rest?.[0]?.security;
  const oauth = security?.extension?.find(
    (e) => e.url === "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
  );
  assert.deepEqual(oauth?.extension, [{ url: "token", valueUri: "https://ehr.example/auth/token" }]);
  assert.equal(security?.service?.[0]?.coding?.[0]?.code, "SMART-on-FHIR");
  const none = capabilityStatement({ baseUrl: "https://h/fhir", resources: { Patient: ["read"] } });
  assert.equal(none.rest?.[0]?.security, undefined);
  assert.match(none.date ?? "", /^\d{4}-\d{2}-\d{2}T/);
});
