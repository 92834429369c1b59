// The FHIR API's HTTP surface on a real node: discovery, the token endpoint, bearer tokens, content negotiation,
// body limits and OperationOutcome errors. What each interaction returns is tested with the handlers (src/fhir/service).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { requestAccessToken, tokenRequestForm } from "../src/fhir/auth/client-assertion.ts";
import { attachFhir } from "../src/fhir/server.ts";
import { newKey } from "../src/node/network.ts";
import type { RunningNode } from "../src/node/runtime.ts";
import { tempDir } from "./helpers.ts";
import { newNetwork, openTestNode, type TestNet } from "./support-net.ts";

let work: ReturnType<typeof tempDir>;
let net: TestNet;
let running: RunningNode;
let base: string;

async function token(form: Record<string, string>) {
  const response = await fetch(`${base}/auth/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form).toString(),
  });
  return { status: response.status, body: (await response.json()) as Record<string, string> };
}

async function adminToken(): Promise<string> {
  const result = await token(await tokenRequestForm(net.admin, `${base}/auth/token`));
  assert.equal(result.status, 200, JSON.stringify(result.body));
  return result.body.access_token as string;
}

async function fhir(path: string, init: RequestInit = {}) {
  const response = await fetch(`${base}/fhir${path}`, init);
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : undefined };
}

function assertOutcome(body: { resourceType?: string; issue?: { code?: string }[] }, code?: string) {
  assert.equal(body.resourceType, "OperationOutcome");
  assert.ok(Array.isArray(body.issue) && body.issue.length > 0);
  if (code) assert.equal(body.issue?.[0]?.code, code);
}

before(async () => {
  work = tempDir("careledger-fhir-http-");
  net = newNetwork(work.path);
  running = await openTestNode(work.path, { listen: true, extend: attachFhir });
  base = running.url;
});

after(async () => {
  await running?.close();
  work?.remove();
});

describe("discovery", () => {
  test("metadata is public and is an R4 CapabilityStatement naming the token endpoint", async () => {
    const r = await fhir("/metadata");
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type") ?? "", /^application\/fhir\+json/);
    assert.equal(r.body.resourceType, "CapabilityStatement");
    assert.equal(r.body.fhirVersion, "4.0.1");
    assert.ok(JSON.stringify(r.body).includes(`${base}/auth/token`));
  });

  test("smart-configuration describes private_key_jwt with EdDSA at this node's token URL", async () => {
    for (const path of ["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"]) {
      const response = await fetch(`${base}${path}`);
      assert.equal(response.status, 200, path);
      const body = (await response.json()) as Record<string, unknown>;
      assert.equal(body.token_endpoint, `${base}/auth/token`);
      assert.deepEqual(body.token_endpoint_auth_methods_supported, ["private_key_jwt"]);
      assert.ok((body.token_endpoint_auth_signing_alg_values_supported as string[]).includes("EdDSA"));
    }
  });
});

describe("token endpoint", () => {
  test("a client assertion signed by a ledger key gets a bearer token that the FHIR API accepts", async () => {
    const bearer = await adminToken();
    const r = await fhir("/Patient", { headers: { authorization: `Bearer ${bearer}` } });
    assert.notEqual(r.status, 401);
  });

  test("requestAccessToken does the client's side: a token the API accepts, or an error naming the refusal", async () => {
    const bearer = await requestAccessToken(net.admin, `${base}/auth/token`);
    const r = await fhir("/Patient", { headers: { authorization: `Bearer ${bearer}` } });
    assert.notEqual(r.status, 401);
    // An unknown key is not an identity on the ledger: the node refuses, and the error says how.
    await assert.rejects(requestAccessToken(newKey(), `${base}/auth/token`), /HTTP 401: .*invalid_client/);
  });

  test("a replayed assertion is refused", async () => {
    const form = await tokenRequestForm(net.admin, `${base}/auth/token`);
    assert.equal((await token(form)).status, 200);
    const again = await token(form);
    assert.equal(again.status, 401);
    assert.equal(again.body.error, "invalid_client");
  });

  test("an assertion for another audience is refused", async () => {
    const r = await token(await tokenRequestForm(net.admin, "http://elsewhere.example/auth/token"));
    assert.equal(r.status, 401);
    assert.equal(r.body.error, "invalid_client");
  });

  test("a parameter given twice, a JSON body and an empty form are invalid requests", async () => {
    const form = new URLSearchParams(await tokenRequestForm(net.admin, `${base}/auth/token`));
    form.append("grant_type", "client_credentials");
    const twice = await fetch(`${base}/auth/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: form.toString(),
    });
    assert.equal(twice.status, 400);
    assert.equal(((await twice.json()) as { error: string }).error, "invalid_request");
    const json = await fetch(`${base}/auth/token`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(json.status, 400);
    const empty = await token({});
    assert.equal(empty.status, 400);
  });
});

describe("bearer tokens on /fhir", () => {
  test("no token: 401 with a Bearer challenge", async () => {
    const r = await fhir("/Patient");
    assert.equal(r.status, 401);
    assert.match(r.headers.get("www-authenticate") ?? "", /^Bearer/);
    assertOutcome(r.body, "login");
  });

  test("a tampered or foreign token: 401 invalid_token", async () => {
    const bearer = await adminToken();
    const [h, p, s] = bearer.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, "base64url").toString());
    claims.scope = "system/*.cruds";
    const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${s}`;
    for (const header of [`Bearer ${forged}`, "Bearer abc.def.ghi", "Basic dXNlcjpwYXNz"]) {
      const r = await fhir("/Patient", { headers: { authorization: header } });
      assert.equal(r.status, 401, header.slice(0, 12));
      assertOutcome(r.body, "login");
    }
  });
});

describe("content negotiation and bad requests", () => {
  let bearer: string;
  before(async () => {
    bearer = await adminToken();
  });
  const auth = () => ({ authorization: `Bearer ${bearer}` });

  test("XML is not offered: Accept and _format ask for it → 406 OperationOutcome", async () => {
    const byHeader = await fhir("/metadata", { headers: { accept: "application/fhir+xml" } });
    assert.equal(byHeader.status, 406);
    assertOutcome(byHeader.body, "not-supported");
    const byParam = await fhir("/Patient?_format=xml", { headers: auth() });
    assert.equal(byParam.status, 406);
    const either = await fhir("/metadata", {
      headers: { accept: "application/fhir+xml, application/fhir+json;q=0.5" },
    });
    assert.equal(either.status, 200);
  });

  test("a body that is not JSON: 415 for another media type, 400 for broken JSON", async () => {
    const text = await fhir("/Patient", {
      method: "POST",
      headers: { ...auth(), "content-type": "text/plain" },
      body: "hello",
    });
    assert.equal(text.status, 415);
    assertOutcome(text.body);
    const broken = await fhir("/Patient", {
      method: "POST",
      headers: { ...auth(), "content-type": "application/fhir+json" },
      body: '{"resourceType": "Patient",',
    });
    assert.equal(broken.status, 400);
    assertOutcome(broken.body, "structure");
    const empty = await fhir("/Patient", {
      method: "POST",
      headers: { ...auth(), "content-type": "application/fhir+json" },
    });
    assert.equal(empty.status, 400);
    assertOutcome(empty.body, "structure");
  });

  test("a body over the limit: 413", async () => {
    const huge = `{"resourceType":"Bundle","type":"transaction","entry":[],"pad":"${"x".repeat(33 * 1024 * 1024)}"}`;
    const r = await fhir("", {
      method: "POST",
      headers: { ...auth(), "content-type": "application/fhir+json" },
      body: huge,
    });
    assert.equal(r.status, 413);
    assertOutcome(r.body, "too-costly");
  });

  test("unknown types, malformed ids and versions, malformed If-Match", async () => {
    for (const path of ["/NotAType/1", "/patient/1", "/Patient/has%20space", "/Patient/1/_history/0"]) {
      const r = await fhir(path, { headers: auth() });
      assert.equal(r.status, 404, path);
      assertOutcome(r.body);
    }
    const r = await fhir("/Patient/1", {
      method: "PUT",
      headers: { ...auth(), "content-type": "application/fhir+json", "if-match": "3" },
      body: '{"resourceType":"Patient","id":"1"}',
    });
    assert.equal(r.status, 400);
    assert.deepEqual(r.body.issue[0].expression, ["If-Match"]);
  });
});
