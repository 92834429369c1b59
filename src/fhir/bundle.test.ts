import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { parseETag, prepareTransaction, transactionResponse } from "./bundle.ts";
import { OperationOutcomeError } from "./outcome.ts";
import { validateResource } from "./validate.ts";

const DATA = new URL("../../../shared/data/", import.meta.url);

function counter(): () => string {
  let n = 0;
  return () => `new-${++n}`;
}

function collectReferences(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) for (const v of value) collectReferences(v, out);
  else if (typeof value === "object" && value !== null) {
    for (const [k, v] of Object.entries(value)) {
      if (k === "reference" && typeof v === "string") out.push(v);
      else collectReferences(v, out);
    }
  }
  return out;
}

function rejects(bundle: unknown, expression: string | undefined, status = 400, options = {}): OperationOutcomeError {
  try {
    prepareTransaction(bundle, { newId: counter(), ...options });
  } catch (e) {
    assert.ok(e instanceof OperationOutcomeError, String(e));
    assert.equal(e.status, status, e.message);
    assert.equal(e.expression, expression, e.message);
    return e;
  }
  assert.fail("accepted");
}

const PATIENT_URN = "urn:uuid:6f1c1b9e-8d3a-4c43-9a55-0d1f0f6a7c11";
const OBS_URN = "urn:uuid:2d9b4e7a-1c5f-4b0e-8f3a-9e6c2b7d4a10";

function small(): Record<string, unknown> {
  return {
    resourceType: "Bundle",
    type: "transaction",
    entry: [
      {
        fullUrl: OBS_URN,
        resource: {
          resourceType: "Observation",
          status: "final",
          code: { text: "weight" },
          subject: { reference: PATIENT_URN },
          effectiveDateTime: "2020-01-01",
        },
        request: { method: "POST", url: "Observation" },
      },
      {
        fullUrl: "urn:uuid:aa9b4e7a-1c5f-4b0e-8f3a-9e6c2b7d4a10",
        resource: { resourceType: "Organization", name: "Clinic" },
        request: { method: "POST", url: "Organization" },
      },
      {
        fullUrl: PATIENT_URN,
        resource: { resourceType: "Patient", id: "client-chosen", name: [{ family: "Smith" }] },
        request: { method: "POST", url: "Patient" },
      },
    ],
  };
}

test("every Synthea bundle is prepared: ids assigned, every urn:uuid reference rewritten, patients first", () => {
  let entries = 0;
  for (const file of readdirSync(new URL("synthea/", DATA))) {
    const bundle = JSON.parse(readFileSync(new URL(`synthea/${file}`, DATA), "utf8"));
    const count = bundle.entry.length;
    const prepared = prepareTransaction(bundle, { newId: randomUUID });
    assert.equal(prepared.length, count, file);
    entries += count;
    assert.equal(prepared[0]?.resourceType, "Patient", file);
    const patientId = prepared[0]?.id;
    const targets = new Set(prepared.map((p) => `${p.resourceType}/${p.id}`));
    let seenPatientRecord = false;
    for (const p of prepared) {
      assert.equal(p.resource.id, p.id);
      if (p.resourceType === "Patient") assert.equal(p.patient, p.id);
      else if (p.patient !== undefined) {
        seenPatientRecord = true;
        assert.equal(p.patient, patientId, `${file}: every record belongs to the bundle's patient`);
      } else {
        assert.equal(seenPatientRecord, false, `${file}: records without a patient come before the patient's records`);
      }
      for (const ref of collectReferences(p.resource)) {
        assert.doesNotMatch(ref, /^urn:/, `${file}: ${ref}`);
        if (!ref.startsWith("#")) assert.ok(targets.has(ref), `${file}: ${ref} resolves inside the bundle`);
      }
      // Still valid R4 after the rewrite.
      validateResource(p.resource, { requireId: true });
    }
    const indexes = prepared.map((p) => p.index).sort((a, b) => a - b);
    assert.deepEqual(indexes, [...Array(count).keys()]);
  }
  assert.equal(entries, 5454);
});

test("the HL7 and UK Core examples import as PUTs with their own ids", () => {
  const entry: unknown[] = [];
  for (const dir of ["hl7-examples", "ukcore-examples"]) {
    for (const file of readdirSync(new URL(`${dir}/`, DATA)).filter((f) => f.endsWith(".json"))) {
      const resource = JSON.parse(readFileSync(new URL(`${dir}/${file}`, DATA), "utf8"));
      entry.push({ resource, request: { method: "PUT", url: `${resource.resourceType}/${resource.id}` } });
    }
  }
  const prepared = prepareTransaction({ resourceType: "Bundle", type: "transaction", entry }, { newId: counter() });
  assert.equal(prepared.length, 56);
  const richard = prepared.find((p) => p.id === "UKCore-Patient-RichardSmith-Example");
  assert.equal(richard?.method, "PUT");
  const consent = prepared.find((p) => p.id === "UKCore-Consent-ForInformationAccess-Example");
  assert.equal(consent?.patient, "UKCore-Patient-RichardSmith-Example");
});

test("a small bundle: references to fullUrls become Type/newId, client ids are replaced, order is safe", () => {
  const bundle = small();
  const prepared = prepareTransaction(bundle, { newId: counter() });
  assert.deepEqual(
    prepared.map((p) => [p.index, p.resourceType, p.id, p.patient]),
    [
      [2, "Patient", "new-3", "new-3"],
      [1, "Organization", "new-2", undefined],
      [0, "Observation", "new-1", "new-3"],
    ],
  );
  assert.deepEqual((prepared[2]?.resource as { subject?: unknown } | undefined)?.subject, {
    reference: "Patient/new-3",
  });
  assert.equal(prepared[0]?.resource.id, "new-3");
});

test("an id from newId is marked assigned; a PUT's id and one from idFor are not", () => {
  const bundle = small();
  const prepared = prepareTransaction(bundle, {
    newId: counter(),
    idFor: (type) => (type === "Patient" ? "chosen-1" : undefined),
  });
  assert.deepEqual(
    prepared.map((p) => [p.resourceType, p.id, p.assigned]),
    [
      ["Patient", "chosen-1", undefined],
      ["Organization", "new-2", true],
      ["Observation", "new-1", true],
    ],
  );
  const [put] = prepareTransaction(
    {
      resourceType: "Bundle",
      type: "transaction",
      entry: [{ resource: { resourceType: "Patient" }, request: { method: "PUT", url: "Patient/p1" } }],
    },
    { newId: counter() },
  );
  assert.equal(put?.assigned, undefined);
});

test("references inside contained resources and to absolute fullUrls are rewritten too", () => {
  const bundle = small();
  const entries = bundle.entry as { fullUrl: string; resource: Record<string, unknown> }[];
  (entries[2] as { fullUrl: string }).fullUrl = "https://old.example/fhir/Patient/77";
  const observation = (entries[0] as { resource: Record<string, unknown> }).resource;
  observation.subject = { reference: "https://old.example/fhir/Patient/77" };
  observation.contained = [
    { resourceType: "Practitioner", id: "pr", name: [{ family: "Who" }], address: [{ city: "Leeds" }] },
    {
      resourceType: "Provenance",
      id: "pv",
      target: [{ reference: OBS_URN }],
      recorded: "2020-01-01T00:00:00Z",
      agent: [{ who: { reference: "#pr" } }],
    },
  ];
  observation.performer = [{ reference: "#pr" }];
  const prepared = prepareTransaction(bundle, { newId: counter() });
  const obs = prepared.find((p) => p.resourceType === "Observation")?.resource as unknown as Record<string, unknown>;
  assert.deepEqual(obs.subject, { reference: "Patient/new-3" });
  const provenance = (obs.contained as Record<string, unknown>[])[1] as { target: { reference: string }[] };
  assert.equal(provenance.target[0]?.reference, "Observation/new-1");
});

test("PUT: Type/id from the url, ifMatch passed on, mismatches refused", () => {
  const put = (url: string, resource: Record<string, unknown>, request: Record<string, unknown> = {}) => ({
    resourceType: "Bundle",
    type: "transaction",
    entry: [{ resource, request: { method: "PUT", url, ...request } }],
  });
  const [p] = prepareTransaction(put("Patient/p1", { resourceType: "Patient" }, { ifMatch: 'W/"3"' }), {
    newId: counter(),
  });
  assert.deepEqual([p?.method, p?.id, p?.ifMatch, p?.resource.id], ["PUT", "p1", "3", "p1"]);
  rejects(put("Patient/p1", { resourceType: "Patient", id: "p2" }), "Bundle.entry[0].resource.id");
  rejects(put("Observation/p1", { resourceType: "Patient" }), "Bundle.entry[0].request.url");
  rejects(put("Patient", { resourceType: "Patient" }), "Bundle.entry[0].request.url");
  rejects(put("Patient/p1", { resourceType: "Patient" }, { ifMatch: "3" }), "Bundle.entry[0].request.ifMatch");
  rejects(put("Patient?identifier=x|1", { resourceType: "Patient" }), "Bundle.entry[0].request.url");
  const twice = put("Patient/p1", { resourceType: "Patient" });
  (twice.entry as unknown[]).push({
    resource: { resourceType: "Patient" },
    request: { method: "PUT", url: "Patient/p1" },
  });
  rejects(twice, "Bundle.entry[1].request.url", 409);
});

test("bad bundles are refused whole, naming the entry and element, and nothing is changed", () => {
  const unresolved = small();
  const obs = ((unresolved.entry as unknown[])[0] as { resource: Record<string, unknown> }).resource;
  obs.subject = { reference: "urn:uuid:00000000-0000-4000-8000-000000000000" };
  const before = JSON.stringify(unresolved);
  rejects(unresolved, "Bundle.entry[0].resource.subject.reference");
  assert.equal(JSON.stringify(unresolved), before, "nothing rewritten when the bundle fails");

  const conditional = small();
  ((conditional.entry as unknown[])[0] as { resource: Record<string, unknown> }).resource.subject = {
    reference: "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9990001234",
  };
  rejects(conditional, "Bundle.entry[0].resource.subject.reference");

  // A urn pointing at an entry of the wrong type for the element.
  const wrongType = small();
  ((wrongType.entry as unknown[])[0] as { resource: Record<string, unknown> }).resource.subject = {
    reference: "urn:uuid:aa9b4e7a-1c5f-4b0e-8f3a-9e6c2b7d4a10",
  };
  rejects(wrongType, "Bundle.entry[0].resource.subject.reference");

  const invalid = small();
  ((invalid.entry as unknown[])[2] as { resource: Record<string, unknown> }).resource.birthDate = "1980-02-30";
  const e = rejects(invalid, "Bundle.entry[2].resource.birthDate");
  assert.match(JSON.stringify(e.toOutcome()), /Bundle\.entry\[2\]\.resource\.birthDate/);
  assert.doesNotMatch(JSON.stringify(e.toOutcome()), /1980/, "the value itself is not echoed");

  const missing = small();
  delete ((missing.entry as unknown[])[0] as { resource: Record<string, unknown> }).resource.code;
  rejects(missing, "Bundle.entry[0].resource.code");

  const unknownType = small();
  ((unknownType.entry as unknown[])[1] as { resource: Record<string, unknown> }).resource.resourceType = "Hospital";
  rejects(unknownType, "Bundle.entry[1].resource.resourceType");

  const duplicate = small();
  ((duplicate.entry as unknown[])[1] as { fullUrl: string }).fullUrl = PATIENT_URN;
  rejects(duplicate, "Bundle.entry[2].fullUrl", 409);

  const badFullUrl = small();
  ((badFullUrl.entry as unknown[])[1] as { fullUrl: string }).fullUrl = "not a url";
  rejects(badFullUrl, "Bundle.entry[1].fullUrl");

  const postUrl = small();
  ((postUrl.entry as unknown[])[1] as { request: { url: string } }).request.url = "Patient";
  rejects(postUrl, "Bundle.entry[1].request.url");
});

test("bundle shape: type, methods, conditional requests, limits", () => {
  rejects({ resourceType: "Patient" }, "resourceType");
  rejects([], "resourceType");
  rejects({ ...small(), type: "batch" }, "Bundle.type");
  rejects({ ...small(), type: "collection" }, "Bundle.type");
  rejects({ ...small(), entries: [] }, "Bundle.entries");
  rejects({ ...small(), entry: {} }, "Bundle.entry");
  assert.deepEqual(prepareTransaction({ resourceType: "Bundle", type: "transaction" }, { newId: counter() }), []);

  for (const method of ["DELETE", "GET", "PATCH", "HEAD"]) {
    const b = small();
    ((b.entry as unknown[])[1] as { request: { method: string } }).request.method = method;
    rejects(b, "Bundle.entry[1].request.method");
  }
  const noRequest = small();
  delete ((noRequest.entry as unknown[])[1] as { request?: unknown }).request;
  rejects(noRequest, "Bundle.entry[1].request");
  const noResource = small();
  delete ((noResource.entry as unknown[])[1] as { resource?: unknown }).resource;
  rejects(noResource, "Bundle.entry[1].resource");
  const ifNoneExist = small();
  ((ifNoneExist.entry as unknown[])[2] as { request: Record<string, string> }).request.ifNoneExist = "identifier=x";
  rejects(ifNoneExist, "Bundle.entry[2].request.ifNoneExist");
  const responseInRequest = small();
  ((responseInRequest.entry as unknown[])[2] as Record<string, unknown>).response = { status: "200" };
  rejects(responseInRequest, "Bundle.entry[2].response");

  const big = {
    resourceType: "Bundle",
    type: "transaction",
    entry: Array.from({ length: 11 }, () => ({
      resource: { resourceType: "Organization", name: "x" },
      request: { method: "POST", url: "Organization" },
    })),
  };
  rejects(big, "Bundle.entry", 413, { maxEntries: 10 });
  assert.equal(prepareTransaction(big, { newId: counter(), maxEntries: 11 }).length, 11);
  // Per-resource size limits apply inside the bundle too.
  const huge = small();
  ((huge.entry as unknown[])[1] as { resource: Record<string, unknown> }).resource.name = "x".repeat(2000);
  rejects(huge, "Bundle.entry[1].resource.name", 413, { limits: { maxStringLength: 1000 } });
  // Types outside the allowed set.
  rejects(small(), "Bundle.entry[1].resource.resourceType", 400, { types: new Set(["Patient", "Observation"]) });
});

test("transactionResponse lists each entry in request order with status, location and etag", () => {
  const response = transactionResponse(
    [
      {
        index: 1,
        resourceType: "Patient",
        id: "p1",
        versionId: "1",
        created: true,
        lastModified: "2025-01-01T00:00:00Z",
      },
      { index: 0, resourceType: "Observation", id: "o1", versionId: "4", created: false },
    ],
    { baseUrl: "https://ehr.example/fhir/" },
  );
  assert.equal(response.type, "transaction-response");
  assert.deepEqual(response.entry, [
    {
      fullUrl: "https://ehr.example/fhir/Observation/o1",
      response: { status: "200 OK", location: "Observation/o1/_history/4", etag: 'W/"4"' },
    },
    {
      fullUrl: "https://ehr.example/fhir/Patient/p1",
      response: {
        status: "201 Created",
        location: "Patient/p1/_history/1",
        etag: 'W/"1"',
        lastModified: "2025-01-01T00:00:00Z",
      },
    },
  ]);
  validateResource(response, { types: new Set(["Bundle"]) });
});

test("ETags", () => {
  assert.equal(parseETag('W/"12"'), "12");
  assert.equal(parseETag('"12"'), "12");
  assert.equal(parseETag(' W/"a.b-c" '), "a.b-c");
  for (const bad of ["12", 'W/"12', 'W/""', 'W/"1 2"', 'W/"1"; DROP']) assert.equal(parseETag(bad), undefined, bad);
});
