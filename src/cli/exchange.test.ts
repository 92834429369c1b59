// Record exchange end to end on the demo network (three nodes in one process, real vaults, real HTTP on loopback):
// a GP clinician's $everything includes the hospital's records when the patient's consent allows it, and not when it
// does not; the hospital decides and logs each read; records altered at the hospital or forged on the way are not
// shown; a hospital that is down or slow yields a partial result with a warning within the deadline.

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, test } from "node:test";
import { request } from "undici";
import { requestAccessToken } from "../fhir/auth/client-assertion.ts";
import { signPeerRequest } from "../fhir/exchange/peer-request.ts";
import { fhirContextOf } from "../fhir/server.ts";
import type { KeyPair } from "../ledger/keys.ts";
import type { SignedTx } from "../ledger/types.ts";
import { readKeyFile } from "../node/datadir.ts";
import { silentLogger } from "../node/logger.ts";
import { signNew } from "../node/network.ts";
import type { RunningNode } from "../node/runtime.ts";
import { type DemoNetwork, startDemo } from "./demo.ts";

const DEADLINE_MS = 1000;
const root = mkdtempSync(join(tmpdir(), "careledger-exchange-"));
let demo: DemoNetwork;
let gp: RunningNode;
let trust: RunningNode;
let GP: string;
let TRUST: string;
let trustUrl: string;
const servers: Server[] = [];

interface User {
  name: string;
  kind: string;
  keyId: string;
  member?: string;
  patient?: string;
}
let users: User[];
const key = (name: string): KeyPair => readKeyFile(join(demo.dir, "keys", `${name.replace(/[^a-z0-9-]+/gi, "-")}.key`));
const patientId = (name: string) => users.find((u) => u.name === name)?.patient as string;

interface Entry {
  fullUrl?: string;
  resource: { resourceType: string; id: string; issue?: { severity: string; diagnostics: string }[] };
  search?: { mode: string };
}
interface Bundle {
  total: number;
  entry?: Entry[];
}

before(async () => {
  demo = await startDemo({
    dir: join(root, "demo"),
    port: 0,
    patients: 3,
    exchangeDeadlineMs: DEADLINE_MS,
    log: silentLogger,
  });
  [gp, trust] = demo.nodes as [RunningNode, RunningNode];
  [GP, TRUST] = demo.orgIds as [string, string];
  trustUrl = trust.url;
  users = JSON.parse(readFileSync(join(demo.dir, "demo-users.json"), "utf8")) as User[];
});
after(async () => {
  for (const s of servers) s.closeAllConnections();
  await Promise.all(servers.map((s) => new Promise((done) => s.close(done))));
  await demo?.close();
  rmSync(root, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
});

async function tokenAt(node: RunningNode, who: string): Promise<string> {
  return requestAccessToken(key(who), `${node.url}/auth/token`);
}

async function everything(node: RunningNode, who: string, patient: string): Promise<{ status: number; body: Bundle }> {
  const res = await request(`${node.url}/fhir/Patient/${patient}/$everything`, {
    headers: { authorization: `Bearer ${await tokenAt(node, who)}` },
  });
  return { status: res.statusCode, body: (await res.body.json()) as Bundle };
}

const matches = (b: Bundle) => (b.entry ?? []).filter((e) => e.search?.mode === "match");
const fromTrust = (b: Bundle) => matches(b).filter((e) => e.fullUrl?.startsWith(`${trustUrl}/fhir/`));
const warnings = (b: Bundle) =>
  (b.entry ?? []).filter((e) => e.search?.mode === "outcome").map((e) => e.resource.issue?.[0]?.diagnostics ?? "");

async function commit(txs: SignedTx[]): Promise<void> {
  const { parseSignedTx } = await import("../ledger/tx.ts");
  const items = txs.map((tx) => {
    const p = parseSignedTx(tx);
    if (!p.ok) throw new Error(p.error);
    return { tx: p.tx, id: p.id };
  });
  const results = await Promise.all(await gp.node.submit(items));
  for (const r of results) assert.ok(r.valid, r.code);
  const height = gp.node.height;
  while (demo.nodes.some((n) => n.node.height < height)) await new Promise((r) => setTimeout(r, 10));
}

describe("record exchange between custodians", () => {
  test("a GP clinician's $everything includes the hospital's records; the hospital logged the read", async () => {
    const patient = patientId("patient:0");
    const { status, body } = await everything(gp, "clinician:gp", patient);
    assert.equal(status, 200, JSON.stringify(body));
    assert.deepEqual(warnings(body), []);
    const hospital = fromTrust(body);
    assert.ok(hospital.length >= 5, `hospital records: ${hospital.length}`);
    assert.ok(
      matches(body).some((e) => e.fullUrl?.startsWith(`${gp.url}/fhir/`) && e.resource.resourceType === "Observation"),
    );
    // One Patient, the GP's own, at the top.
    const patients = matches(body).filter((e) => e.resource.resourceType === "Patient");
    assert.equal(patients.length, 1);
    assert.equal(matches(body)[0]?.fullUrl, `${gp.url}/fhir/Patient/${patient}`);
    assert.equal(body.total, matches(body).length);

    // The hospital's access log (AuditEvent there, as the patient sees it) names the GP clinician reading its records.
    await fhirContextOf(trust.node)?.accessLog.flush();
    const clinician = users.find((u) => u.name === "clinician:gp") as User;
    let reads: { agent: { who: { identifier: { value: string } } }[]; source: { site: string } }[] = [];
    for (let i = 0; i < 100 && reads.length === 0; i++) {
      const res = await request(`${trust.url}/fhir/AuditEvent?patient=${patient}&_count=1000`, {
        headers: { authorization: `Bearer ${await tokenAt(trust, "patient:0")}` },
      });
      const events = ((await res.body.json()) as { entry?: { resource: (typeof reads)[number] }[] }).entry ?? [];
      reads = events
        .map((e) => e.resource)
        .filter((a) => a.source.site === TRUST && a.agent[0]?.who.identifier.value === clinician.keyId);
      if (reads.length === 0) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(reads.length >= hospital.length, `AuditEvents at the hospital: ${reads.length}`);
  });

  test("the patient withdraws the GP's permits: the GP sees its own records only; denying the clinician hides all", async () => {
    const patient = patientId("patient:1");
    const before = await everything(gp, "clinician:gp", patient);
    assert.ok(fromTrust(before.body).length > 0);
    // Rules 5 (own GP) and 8 (the practice) are the ones naming the GP; the demo's rule ids are in the ledger state.
    const rules = gp.node.store.state.get(`rules/${patient}`) as { id: string; gk: string }[];
    const gpRules = rules.filter((r) => r.gk === `o:${GP}` || r.gk.startsWith("m:"));
    assert.ok(gpRules.length >= 2);
    const pk = key("patient:1");
    await commit(gpRules.map((r) => signNew(pk, "consent.revoke", { patient, rule: r.id }, Date.now())));
    const after1 = await everything(gp, "clinician:gp", patient);
    assert.equal(after1.status, 200);
    assert.deepEqual(fromTrust(after1.body), [], "no hospital record without a permit");
    assert.ok(matches(after1.body).length > 1, "the practice's own records (custodian default) remain");
    assert.deepEqual(warnings(after1.body), []);

    // A deny naming the clinician: nothing at all, the same 404 as a patient that does not exist.
    const clinician = users.find((u) => u.name === "clinician:gp") as User & { member?: string };
    const memberId = (gp.node.store.state.get(`key/${clinician.keyId}`) as { member: string }).member;
    await commit([
      signNew(
        pk,
        "consent.set",
        {
          patient,
          rule: crypto.randomUUID(),
          effect: "deny",
          grantee: { kind: "member", id: memberId },
          resourceTypes: [],
          labels: [],
          purposes: ["TREAT"],
          actions: ["read"],
        },
        Date.now(),
      ),
    ]);
    const denied = await everything(gp, "clinician:gp", patient);
    assert.equal(denied.status, 404);
    // Asked directly by the GP's node, the hospital sends nothing for that clinician either.
    const answer = await peerCall(trustUrl, {
      custodian: TRUST,
      org: GP,
      practitioner: memberId,
      role: "clinician",
      purpose: "TREAT",
      patient,
    });
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.body.entries, []);
  });

  test("a record altered in the hospital's vault is not shown; the hospital says one was withheld", async () => {
    const patient = patientId("patient:2");
    const before = fromTrust((await everything(gp, "clinician:gp", patient)).body);
    const victim = before.find((e) => e.resource.resourceType === "Observation") as Entry;
    const db = new DatabaseSync(join(demo.dir, "trust", "vault.db"));
    try {
      const row = db
        .prepare("SELECT rid, current FROM resources WHERE type = ? AND id = ?")
        .get("Observation", victim.resource.id) as {
        rid: number;
        current: number;
      };
      const vkey = row.rid * 2 ** 20 + row.current;
      const { box } = db.prepare("SELECT box FROM versions WHERE vkey = ?").get(vkey) as { box: Uint8Array };
      const altered = Buffer.from(box);
      altered[altered.length - 20] = (altered[altered.length - 20] as number) ^ 1;
      db.prepare("UPDATE versions SET box = ? WHERE vkey = ?").run(altered, vkey);
    } finally {
      db.close();
    }
    const { status, body } = await everything(gp, "clinician:gp", patient);
    assert.equal(status, 200);
    const ids = fromTrust(body).map((e) => e.resource.id);
    assert.ok(!ids.includes(victim.resource.id));
    assert.equal(ids.length, before.length - 1);
    assert.ok(
      warnings(body).some((w) => /1 record\(s\) held by .* integrity/.test(w)),
      warnings(body).join("; "),
    );
  });

  test("a forged answer (a record that does not open its anchor) is dropped at the GP with a warning", async () => {
    const patient = patientId("patient:0");
    const genuine = fromTrust((await everything(gp, "clinician:gp", patient)).body);
    const forger = await serve(async (body) => {
      const res = await request(`${trustUrl}/peer/v1/everything`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      const answer = (await res.body.json()) as { entries: { resource: Record<string, unknown> }[] };
      const target = answer.entries.find((e) => e.resource.resourceType === "Observation");
      if (target) target.resource.status = "entered-in-error";
      return { status: res.statusCode, body: JSON.stringify(answer) };
    });
    demo.directory.set(TRUST, forger);
    try {
      const { status, body } = await everything(gp, "clinician:gp", patient);
      assert.equal(status, 200);
      assert.equal(fromTrust(body).length, 0, "fullUrls name the node asked");
      const forged = matches(body).filter((e) => e.fullUrl?.startsWith(`${forger}/fhir/`));
      assert.equal(forged.length, genuine.length - 1);
      assert.ok(!forged.some((e) => (e.resource as { status?: string }).status === "entered-in-error"));
      assert.ok(
        warnings(body).some((w) => /1 record\(s\) from .* did not match its anchors/.test(w)),
        warnings(body).join("; "),
      );
    } finally {
      demo.directory.set(TRUST, trustUrl);
    }
  });

  test("a hospital that is down or too slow: partial result with a warning, within the deadline", async () => {
    const patient = patientId("patient:0");
    const slow = await serve(async () => {
      await new Promise((r) => setTimeout(r, DEADLINE_MS * 5));
      return { status: 200, body: '{"entries":[]}' };
    });
    const down = await serve(async () => ({ status: 200, body: "" }));
    const downServer = servers.at(-1) as Server;
    downServer.closeAllConnections();
    await new Promise((done) => downServer.close(done));
    try {
      for (const [url, why] of [
        [slow, /did not answer within 1000 ms/],
        [down, /could not be reached/],
      ] as const) {
        demo.directory.set(TRUST, url);
        const started = performance.now();
        const { status, body } = await everything(gp, "clinician:gp", patient);
        const took = performance.now() - started;
        assert.equal(status, 200);
        // Well before the slow custodian would answer (it sleeps 5 × the deadline).
        assert.ok(took < DEADLINE_MS + 3500, `took ${took} ms`);
        assert.deepEqual(fromTrust(body), []);
        assert.ok(matches(body).length > 1, "the GP's own records are still there");
        const w = warnings(body);
        assert.equal(w.length, 1);
        assert.match(w[0] as string, new RegExp(`records held by ${TRUST} are not included`));
        assert.match(w[0] as string, why);
      }
      demo.directory.delete(TRUST);
      assert.match(warnings((await everything(gp, "clinician:gp", patient)).body)[0] ?? "", /address is not known/);
    } finally {
      demo.directory.set(TRUST, trustUrl);
    }
  });

  test("a patient's own $everything says the other custodians' records are not included (no patient-signed flow yet)", async () => {
    const patient = patientId("patient:0");
    const { status, body } = await everything(gp, "patient:0", patient);
    assert.equal(status, 200);
    assert.deepEqual(fromTrust(body), []);
    assert.ok(warnings(body).some((w) => w.includes(TRUST) && /patient's own behalf/.test(w)));
  });
});

test("the peer route: JSON only, a bounded body of exactly {request}, OperationOutcome errors, no bearer token needed", async () => {
  const post = async (body: string, type = "application/json") => {
    const res = await request(`${trustUrl}/peer/v1/everything`, {
      method: "POST",
      headers: { "content-type": type },
      body,
    });
    return { status: res.statusCode, body: (await res.body.json()) as { resourceType: string } };
  };
  for (const [body, type, status] of [
    ["{", "application/json", 400],
    ['{"request":"a.b.c","extra":1}', "application/json", 400],
    ["{}", "application/json", 400],
    ["request=x", "application/x-www-form-urlencoded", 415],
    [JSON.stringify({ request: "x".repeat(20_000) }), "application/json", 413],
    ['{"request":"a.b.c"}', "application/json", 400],
  ] as const) {
    const r = await post(body, type);
    assert.equal(r.status, status, body.slice(0, 40));
    assert.equal(r.body.resourceType, "OperationOutcome");
  }
  // A well-formed request signed by a key that is no node: 403.
  const stranger = await signPeerRequest(key("clinician:gp"), {
    custodian: TRUST,
    org: GP,
    practitioner: crypto.randomUUID(),
    role: "clinician",
    purpose: "TREAT",
    patient: patientId("patient:0"),
  });
  assert.equal((await post(JSON.stringify({ request: stranger }))).status, 403);
});

async function peerCall(url: string, query: Parameters<typeof signPeerRequest>[1]) {
  const jws = await signPeerRequest(key("node:gp"), query);
  const res = await request(`${url}/peer/v1/everything`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ request: jws }),
  });
  return { status: res.statusCode, body: (await res.body.json()) as { entries: unknown[]; withheld: number } };
}

/** A loopback HTTP server answering POST bodies with `handle`; returns its base URL. */
async function serve(handle: (body: string) => Promise<{ status: number; body: string }>): Promise<string> {
  const server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8").on("data", (d: string) => (body += d));
    req.on("end", () => {
      handle(body).then(
        (out) => res.writeHead(out.status, { "content-type": "application/json" }).end(out.body),
        () => res.writeHead(500).end(),
      );
    });
  });
  servers.push(server);
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
