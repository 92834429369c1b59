import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { STATE_KEYS } from "../../contract/index.ts";
import type { Principal } from "../auth/bearer.ts";
import type { FhirRequest } from "./context.ts";
import { ensurePatient } from "./patients.ts";
import { call, condition, type Member, observation, organization, type Patient, patientResource } from "./testkit.ts";
import { transactionHandler } from "./transaction.ts";
import { update } from "./write.ts";
import { openWriteKit, type WriteKit } from "./write-kit.ts";

let kit: WriteKit;
let clinician: Member;
let doc: Principal;
let alice: Patient;
let handler: ReturnType<typeof transactionHandler>;

before(async () => {
  kit = await openWriteKit();
  clinician = await kit.enrol("clinician");
  doc = await kit.principalFor(clinician.key);
  alice = await kit.registerPatient();
  handler = transactionHandler({ lookup: kit.registry.lookup, maxEntries: 20 });
});
after(async () => {
  await kit.close();
});

function post(principal: Principal, body: unknown): FhirRequest {
  return { principal, params: {}, query: new URLSearchParams(), body };
}

function entry(resource: Record<string, unknown>, method = "POST", url?: string, extra: Record<string, unknown> = {}) {
  const { id: _id, ...rest } = resource;
  return {
    fullUrl: `urn:uuid:${crypto.randomUUID()}`,
    resource: method === "POST" ? rest : resource,
    request: { method, url: url ?? (resource.resourceType as string), ...extra },
  };
}

function txn(...entries: unknown[]) {
  return { resourceType: "Bundle", type: "transaction", entry: entries };
}

function recordCount(patient: string): number {
  return kit.vault.byPatient(patient).length;
}

test("a clinician's transaction is stored whole, anchored, answered with a transaction-response", async () => {
  const org = entry(organization());
  const obs = entry(observation(alice));
  (obs.resource as Record<string, unknown>).performer = [{ reference: org.fullUrl }];
  const res = await call(handler, kit.ctx, post(doc, txn(org, obs, entry(condition(alice)))));
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.type, "transaction-response");
  assert.deepEqual(
    res.body.entry.map((e: { response: { status: string } }) => e.response.status),
    ["201 Created", "201 Created", "201 Created"],
  );
  const [orgLoc, obsLoc] = res.body.entry.map((e: { response: { location: string } }) => e.response.location);
  const obsId = obsLoc.split("/")[1];
  const stored = kit.vault.read("Observation", obsId);
  const performer = (stored?.resource.performer ?? []) as { reference: string }[];
  assert.equal(performer[0]?.reference, orgLoc.split("/_history")[0]);
  assert.ok(kit.ctx.node.store.state.get(STATE_KEYS.anchor(kit.orgId, "Observation", obsId, "1")));
});

test("a POSTed Patient is stored under the pseudonym its NHS number is registered with; unknown ones are 422", async () => {
  const nhs = "9990000018";
  const { patient } = await ensurePatient(kit.ctx, { nhsNumber: nhs }, kit.admin, kit.registry);
  const body = patientResource("ignored", {
    identifier: [{ system: "https://fhir.nhs.uk/Id/nhs-number", value: nhs }],
  });
  const pat = entry(body);
  const obs = entry(observation("x"));
  (obs.resource as Record<string, unknown>).subject = { reference: pat.fullUrl };
  let res = await call(handler, kit.ctx, post(doc, txn(pat, obs)));
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.entry[0].response.location, `Patient/${patient}/_history/1`);
  assert.equal(
    kit.vault.read(res.body.entry[1].response.location.split("/")[0], res.body.entry[1].response.location.split("/")[1])
      ?.patient,
    patient,
  );
  // POST of the same Patient again is a create of something that exists: 409 for a caller who can read it.
  res = await call(handler, kit.ctx, post(doc, txn(entry(body))));
  assert.equal(res.status, 409);
  const unknown = patientResource("x", {
    identifier: [{ system: "https://fhir.nhs.uk/Id/nhs-number", value: "9990000026" }],
  });
  res = await call(handler, kit.ctx, post(doc, txn(entry(unknown))));
  assert.equal(res.status, 422);
  assert.deepEqual(res.body.issue[0].expression, ["Bundle.entry[0].resource"]);
});

test("one refused entry rejects the whole bundle: nothing stored, nothing anchored", async () => {
  const bob = await kit.registerPatient();
  await kit.setConsent(bob, {
    effect: "deny",
    grantee: { kind: "member", id: clinician.member },
    resourceTypes: ["Condition"],
    purposes: ["TREAT"],
    actions: ["write"],
  });
  const height = kit.ctx.node.height;
  const res = await call(handler, kit.ctx, post(doc, txn(entry(observation(bob)), entry(condition(bob)))));
  assert.equal(res.status, 403);
  assert.deepEqual(res.body.issue[0].expression, ["Bundle.entry[1]"]);
  assert.equal(recordCount(bob.patient), 0);
  for (let h = height + 1; h <= kit.ctx.node.height; h++) {
    assert.ok(!kit.ctx.node.readBlock(h)?.txs.includes("record.anchor"));
  }
});

test("PUT entries: updates with ifMatch (412 when stale), missing targets 405, Patient/<pseudonym> created", async () => {
  const made = await call(handler, kit.ctx, post(doc, txn(entry(observation(alice)))));
  const id = made.body.entry[0].response.location.split("/")[1] as string;
  const next = { ...observation(alice, { id }), status: "amended" };
  let res = await call(handler, kit.ctx, post(doc, txn(entry(next, "PUT", `Observation/${id}`, { ifMatch: 'W/"1"' }))));
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.entry[0].response.status, "200 OK");
  assert.equal(res.body.entry[0].response.etag, 'W/"2"');
  res = await call(handler, kit.ctx, post(doc, txn(entry(next, "PUT", `Observation/${id}`, { ifMatch: 'W/"1"' }))));
  assert.equal(res.status, 412);
  res = await call(
    handler,
    kit.ctx,
    post(doc, txn(entry(observation(alice, { id: "gone" }), "PUT", "Observation/gone"))),
  );
  assert.equal(res.status, 405);
  assert.deepEqual(res.body.issue[0].expression, ["Bundle.entry[0]"]);
  res = await call(handler, kit.ctx, post(doc, txn(entry(patientResource(alice), "PUT", `Patient/${alice.patient}`))));
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.entry[0].response.status, "201 Created");
  // The same through PUT /fhir/Patient/<id> is now an update.
  const put = await call(update, kit.ctx, {
    ...post(doc, patientResource(alice)),
    params: { type: "Patient", id: alice.patient },
  });
  assert.equal(put.status, 200);
});

test("bad transactions: too many entries 413, batch, broken references, patients' tokens, Consent entries", async () => {
  const many = Array.from({ length: 21 }, () => entry(observation(alice)));
  let res = await call(handler, kit.ctx, post(doc, txn(...many)));
  assert.equal(res.status, 413);
  res = await call(handler, kit.ctx, post(doc, { resourceType: "Bundle", type: "batch", entry: [] }));
  assert.equal(res.status, 400);
  const broken = entry(observation(alice));
  (broken.resource as Record<string, unknown>).subject = { reference: `urn:uuid:${crypto.randomUUID()}` };
  res = await call(handler, kit.ctx, post(doc, txn(broken)));
  assert.equal(res.status, 400);
  assert.match(res.body.issue[0].expression[0], /Bundle\.entry\[0\]\.resource\.subject/);
  res = await call(handler, kit.ctx, post(doc, txn(entry({ resourceType: "Consent", status: "active" }))));
  assert.equal(res.status, 400);
  const own = await kit.principalFor(alice.key);
  const before = recordCount(alice.patient);
  res = await call(handler, kit.ctx, post(own, txn(entry(observation(alice)))));
  assert.equal(res.status, 403);
  assert.equal(recordCount(alice.patient), before);
  res = await call(handler, kit.ctx, post(doc, { resourceType: "Bundle", type: "transaction" }));
  assert.equal(res.status, 400);
});
