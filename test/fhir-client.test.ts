// End to end with a FHIR client we did not write (fhir-kit-client from npm): a node started with `careledger start`
// over data loaded with `careledger import`; the client authenticates with a token from the node's token endpoint,
// discovers, searches (with paging), and reads — as any FHIR app would.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Client } from "fhir-kit-client";
import { tokenRequestForm } from "../src/fhir/auth/client-assertion.ts";
import { generatedNhsNumber, generatePatients } from "../src/fhir/generate.ts";
import type { KeyPair } from "../src/ledger/keys.ts";
import { readKeyFile } from "../src/node/datadir.ts";
import { newKey, signNew } from "../src/node/network.ts";
import { runCli, type StartedNode, startNode, stopNode, tempDir } from "./helpers.ts";

const SEED = "fhir-client-test";
const PATIENTS = 3;

let work: ReturnType<typeof tempDir>;
let node: StartedNode;
let clinician: KeyPair;

async function tokenFor(key: KeyPair): Promise<string> {
  const response = await fetch(`${node.url}/auth/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(await tokenRequestForm(key, `${node.url}/auth/token`)).toString(),
  });
  const body = (await response.json()) as { access_token?: string };
  assert.equal(response.status, 200, JSON.stringify(body));
  return body.access_token as string;
}

before(async () => {
  work = tempDir("careledger-fhir-client-");
  const dir = join(work.path, "node");
  const init = await runCli(["init", "--dir", dir, "--org", "Client Test Practice"]);
  assert.equal(init.code, 0, init.stderr);
  const file = join(work.path, "patients.ndjson");
  writeFileSync(
    file,
    `${[...generatePatients({ patients: PATIENTS, seed: SEED })].map((b) => JSON.stringify(b)).join("\n")}\n`,
  );
  const imported = await runCli(["import", "--dir", dir, file]);
  assert.equal(imported.code, 0, imported.stderr);
  node = await startNode(dir);
  // A clinician of the practice, enrolled by its admin.
  const admin = readKeyFile(join(dir, "keys", "admin.key"));
  const orgId = /new network with one organisation, (\S+)/.exec(init.stdout)?.[1];
  assert.ok(orgId, init.stdout);
  clinician = newKey();
  const enrol = signNew(
    admin,
    "member.enrol",
    { member: randomUUID(), org: orgId, role: "clinician", key: clinician.keyId },
    Date.now(),
  );
  const response = await fetch(`${node.url}/ledger/tx`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(enrol),
  });
  assert.equal(response.status, 200, await response.text());
});

after(async () => {
  if (node) await stopNode(node);
  work?.remove();
});

test("fhir-kit-client discovers, authenticates, searches with paging and reads", async () => {
  const client = new Client({ baseUrl: `${node.url}/fhir`, bearerToken: await tokenFor(clinician) });

  const capability = (await client.capabilityStatement()) as { fhirVersion?: string };
  assert.equal(capability.fhirVersion, "4.0.1");
  // From our smart-configuration or the CapabilityStatement's oauth-uris, whichever answers first (as URL objects).
  const smart = (await client.smartAuthMetadata()) as { tokenUrl?: URL };
  assert.equal(String(smart.tokenUrl), `${node.url}/auth/token`);

  const first = (await client.search({ resourceType: "Patient", searchParams: { _count: 2 } })) as {
    total?: number;
    entry?: { resource: { id: string } }[];
  };
  assert.equal(first.total, PATIENTS);
  assert.equal(first.entry?.length, 2);
  const second = (await client.nextPage({ bundle: first as never })) as { entry?: { resource: { id: string } }[] };
  assert.equal(second.entry?.length, PATIENTS - 2);
  const ids = [...(first.entry ?? []), ...(second.entry ?? [])].map((e) => e.resource.id);
  assert.equal(new Set(ids).size, PATIENTS, "paging repeats or skips no patient");

  const nhs = generatedNhsNumber(SEED, 0);
  const found = (await client.search({
    resourceType: "Patient",
    searchParams: { identifier: `https://fhir.nhs.uk/Id/nhs-number|${nhs}` },
  })) as { total?: number; entry?: { resource: { id: string; identifier: { value: string }[] } }[] };
  assert.equal(found.total, 1);
  const patient = found.entry?.[0]?.resource;
  if (patient === undefined) throw new Error("the NHS number search found no patient");
  assert.ok(patient.identifier.some((i) => i.value === nhs));

  const read = (await client.read({ resourceType: "Patient", id: patient.id })) as { id?: string; meta?: object };
  assert.equal(read.id, patient.id);
  const observations = (await client.search({
    resourceType: "Observation",
    searchParams: { patient: patient.id, _count: 5 },
  })) as { entry?: { resource: { subject: { reference: string } } }[] };
  assert.ok((observations.entry?.length ?? 0) > 0);
  for (const e of observations.entry ?? []) assert.equal(e.resource.subject.reference, `Patient/${patient.id}`);
});

test("fhir-kit-client without a token, or with another's, is refused", async () => {
  const anonymous = new Client({ baseUrl: `${node.url}/fhir` });
  await assert.rejects(anonymous.search({ resourceType: "Patient" }), (error: { response?: { status?: number } }) => {
    assert.equal(error.response?.status, 401);
    return true;
  });
  // A stranger's key: not a member of any organisation, so no token at all.
  const stranger = newKey();
  const response = await fetch(`${node.url}/auth/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(await tokenRequestForm(stranger, `${node.url}/auth/token`)).toString(),
  });
  assert.equal(response.status, 401);
});
