// Every route of the node's HTTP API (README, "HTTP API of a node") against a real in-process node on a real SQLite
// data dir: submission and its answers, reads, and the proofs the API returns, checked with the ledger layer's own
// verifiers as an offline client would.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { blockHash, computeTxRoot, leafBytes } from "../src/ledger/block.ts";
import { fromHex } from "../src/ledger/encoding.ts";
import { hashLeaf, verifyConsistency, verifyInclusion } from "../src/ledger/merkle.ts";
import { verifyTreeHead } from "../src/ledger/sth.ts";
import { txId } from "../src/ledger/tx.ts";
import type { Block, BlockEntry, SignedTreeHead, SignedTx } from "../src/ledger/types.ts";
import { newKey, signNew } from "../src/node/network.ts";
import type { RunningNode } from "../src/node/runtime.ts";
import { tempDir } from "./helpers.ts";
import {
  accessLogTx,
  assertOutcome,
  call,
  enrolTx,
  eventually,
  newNetwork,
  openTestNode,
  registerTx,
  type TestNet,
} from "./support-net.ts";

const work = tempDir("http-api");
let net: TestNet;
let running: RunningNode;
/** A registered patient the access-log txs are about. */
let subject: string;
const logTx = () => accessLogTx(net, subject);

before(async () => {
  net = newNetwork(join(work.path, "node"), "API Test Practice");
  running = await openTestNode(net.dir, { listen: true });
  const registered = registerTx(net);
  subject = registered.patient;
  assert.equal((await call(running.app, "POST", "/ledger/tx", registered.tx)).status, 200);
});
after(async () => {
  await running?.close();
  work.remove();
});

const app = () => running.app;
const post = (url: string, body: unknown) => call(app(), "POST", url, body);
const get = (url: string) => call(app(), "GET", url);
const head = async () => (await get("/ledger/head")).json as { size: number; height: number; treeHead: SignedTreeHead };

describe("POST /ledger/tx", () => {
  const cases: { name: string; tx: () => SignedTx; status: number; valid: boolean; code: string }[] = [
    { name: "a valid enrolment", tx: () => enrolTx(net, "clinician").tx, status: 200, valid: true, code: "ok" },
    {
      name: "an enrolment signed by the node key (not an admin)",
      tx: () =>
        signNew(
          net.nodeKey,
          "member.enrol",
          { member: randomUUID(), org: net.orgId, role: "nurse", key: newKey().keyId },
          Date.now(),
        ),
      status: 422,
      valid: false,
      code: "unauthorised",
    },
    {
      name: "a registration whose payload breaks the schema",
      tx: () => signNew(net.admin, "patient.register", { patient: "not-a-uuid", org: net.orgId, key: "x" }, Date.now()),
      status: 422,
      valid: false,
      code: "malformed-payload",
    },
  ];
  for (const c of cases) {
    test(`${c.name} → ${c.status} ${c.code}, and the block holds it`, async () => {
      const tx = c.tx();
      const answer = await post("/ledger/tx", tx);
      assert.equal(answer.status, c.status, answer.text);
      assert.deepEqual(Object.keys(answer.json).sort(), ["code", "height", "id", "index", "valid"]);
      assert.equal(answer.json.id, txId(tx));
      assert.equal(answer.json.valid, c.valid);
      assert.equal(answer.json.code, c.code);
      assert.ok(answer.json.height >= 1);
      const block = (await get(`/ledger/blocks/${answer.json.height}`)).json as { block: Block };
      const entry = block.block.txs.find((e) => e.id === answer.json.id);
      assert.deepEqual(entry?.result, { valid: c.valid, code: c.code });
      assert.deepEqual(entry?.tx, tx);
      // index is the tx's place in the global log: the block's last index is size - 1.
      const pos = block.block.txs.indexOf(entry as BlockEntry);
      assert.equal(answer.json.index, block.block.size - block.block.txs.length + pos);
    });
  }

  test("?wait=false answers 202 at once and the tx commits afterwards", async () => {
    const tx = logTx();
    const answer = await post("/ledger/tx?wait=false", tx);
    assert.equal(answer.status, 202, answer.text);
    assert.deepEqual(answer.json, { id: txId(tx), status: "accepted" });
    const found = await eventually(async () => {
      const r = await get(`/ledger/tx/${txId(tx)}`);
      return r.status === 200 ? r.json : undefined;
    });
    assert.deepEqual(found.result, { valid: true, code: "ok" });
  });

  test("?wait= anything but true/false is a 400", async () => {
    assertOutcome(await post("/ledger/tx?wait=maybe", logTx()), 400, /wait must be true or false/);
  });

  test("resubmitting a committed tx returns its stored result and logs nothing new", async () => {
    const valid = logTx();
    const rejected = signNew(
      net.nodeKey,
      "patient.register",
      { patient: randomUUID(), org: net.orgId, key: newKey().keyId },
      Date.now(),
    );
    const first = [await post("/ledger/tx", valid), await post("/ledger/tx", rejected)];
    assert.deepEqual(
      first.map((a) => a.status),
      [200, 422],
    );
    const sizeBefore = (await head()).size;
    const again = [await post("/ledger/tx", valid), await post("/ledger/tx", rejected)];
    assert.deepEqual(
      again.map((a) => [a.status, a.json]),
      first.map((a) => [a.status, a.json]),
    );
    const inBatch = await post("/ledger/txs", [valid, rejected]);
    assert.equal(inBatch.status, 200);
    assert.deepEqual(
      inBatch.json.results,
      first.map((a) => a.json),
    );
    assert.equal((await head()).size, sizeBefore, "no tx was logged twice");
  });
});

describe("POST /ledger/txs", () => {
  for (const shape of ["array", "object"] as const) {
    test(`commits a batch sent as ${shape === "array" ? "a JSON array" : '{"txs": [...]}'}`, async () => {
      const txs = [logTx(), enrolTx(net, "nurse").tx, registerTx(net).tx];
      const answer = await post("/ledger/txs", shape === "array" ? txs : { txs });
      assert.equal(answer.status, 200, answer.text);
      assert.deepEqual(
        answer.json.results.map((r: { id: string; valid: boolean }) => [r.id, r.valid]),
        txs.map((tx) => [txId(tx), true]),
      );
    });
  }

  test("?wait=false answers 202 with the accepted ids", async () => {
    const txs = [logTx(), logTx()];
    const answer = await post("/ledger/txs?wait=false", txs);
    assert.equal(answer.status, 202, answer.text);
    assert.deepEqual(answer.json, { accepted: txs.map(txId) });
  });

  const badBatches: { name: string; make: () => unknown[]; diagnostics: RegExp }[] = [
    {
      name: "a bad signature in the middle",
      make: () => {
        const other = logTx();
        return [logTx(), { ...logTx(), sig: other.sig }, logTx()];
      },
      diagnostics: /invalid signature.*item 1 of the batch.*no tx of the batch was accepted/,
    },
    {
      name: "a malformed envelope at the end",
      make: () => [logTx(), logTx(), { ...logTx(), nonce: "short" }],
      diagnostics: /invalid tx at index 2: nonce.*no tx of the batch was accepted/,
    },
  ];
  for (const c of badBatches) {
    test(`all or none: ${c.name} refuses the whole batch`, async () => {
      const batch = c.make();
      assertOutcome(await post("/ledger/txs", batch), 400, c.diagnostics);
      // A tx sent afterwards commits; had any of the batch been queued, it would have committed no later.
      const sentinel = await post("/ledger/tx", logTx());
      assert.equal(sentinel.status, 200);
      for (const tx of batch) {
        const id = txId(tx as SignedTx);
        assert.equal((await get(`/ledger/tx/${id}`)).status, 404, `tx ${id} of a refused batch is in the ledger`);
      }
    });
  }
});

describe("reads", () => {
  test("GET /ledger/head: height, hash, size and state digest under the node's signed tree head", async () => {
    await post("/ledger/tx", logTx());
    const answer = await get("/ledger/head");
    assert.equal(answer.status, 200);
    const { height, hash, size, stateDigest, treeHead } = answer.json;
    assert.equal(treeHead.signer, net.nodeKey.keyId);
    assert.deepEqual([treeHead.height, treeHead.size, treeHead.stateDigest], [height, size, stateDigest]);
    assert.equal(verifyTreeHead(treeHead), true);
    const block = (await get(`/ledger/blocks/${height}`)).json as { hash: string; block: Block };
    assert.equal(block.hash, hash);
    assert.equal(blockHash(block.block), hash);
    // The signature covers every field: change one and it no longer verifies.
    for (const field of ["size", "height", "time"] as const) {
      assert.equal(verifyTreeHead({ ...treeHead, [field]: treeHead[field] + 1 }), false, field);
    }
    assert.equal(verifyTreeHead({ ...treeHead, root: "0".repeat(64) }), false);
  });

  test("GET /ledger/blocks/:h: the genesis block and a later block, each matching its hash and txRoot", async () => {
    const genesis = JSON.parse(readFileSync(join(net.dir, "genesis.json"), "utf8")) as Block;
    const zero = await get("/ledger/blocks/0");
    assert.equal(zero.status, 200);
    assert.equal(zero.json.hash, blockHash(genesis));
    assert.deepEqual(zero.json.block, genesis);
    const { height } = await head();
    const last = (await get(`/ledger/blocks/${height}`)).json as { hash: string; block: Block };
    assert.equal(last.block.height, height);
    assert.equal(blockHash(last.block), last.hash);
    assert.equal(computeTxRoot(last.block.txs), last.block.txRoot);
  });

  const badHeights: [string, number, RegExp][] = [
    ["-1", 400, /non-negative integer/],
    ["abc", 400, /non-negative integer/],
    ["1e3", 400, /non-negative integer/],
    ["1.5", 400, /non-negative integer/],
    ["01", 400, /non-negative integer/],
    ["0x1", 400, /non-negative integer/],
    ["99999999999999999999", 400, /non-negative integer/],
    ["999999", 404, /no block at height 999999 \(head is \d+\)/],
  ];
  for (const [h, status, diagnostics] of badHeights) {
    test(`GET /ledger/blocks/${h} → ${status}`, async () => {
      assertOutcome(await get(`/ledger/blocks/${encodeURIComponent(h)}`), status, diagnostics);
    });
  }

  test("GET /ledger/tx/:id: tx, result and an inclusion proof that verifies against the signed tree head", async () => {
    const rejected = signNew(
      net.nodeKey,
      "member.enrol",
      { member: randomUUID(), org: net.orgId, role: "nurse", key: newKey().keyId },
      Date.now(),
    );
    const submitted = [logTx(), rejected, enrolTx(net, "clinician").tx];
    for (const tx of submitted) await post("/ledger/tx", tx);
    const genesisId = ((await get("/ledger/blocks/0")).json.block as Block).txs[0]?.id as string;
    for (const id of [genesisId, ...submitted.map(txId)]) {
      const answer = await get(`/ledger/tx/${id}`);
      assert.equal(answer.status, 200, answer.text);
      const { tx, result, height, index, proof, treeHead } = answer.json;
      assert.equal(txId(tx), id);
      assert.equal(proof.index, index);
      assert.equal(proof.size, treeHead.size);
      assert.equal(verifyTreeHead(treeHead), true);
      const block = (await get(`/ledger/blocks/${height}`)).json.block as Block;
      assert.deepEqual(
        block.txs.find((e) => e.id === id),
        { id, tx, result },
      );
      const leaf = hashLeaf(leafBytes({ id, tx, result }));
      const path = proof.path.map(fromHex);
      const root = fromHex(treeHead.root);
      assert.equal(verifyInclusion(leaf, index, proof.size, path, root), true, `inclusion of ${id}`);
      // The leaf commits to the result: a receipt claiming another result does not verify.
      const forged = hashLeaf(leafBytes({ id, tx, result: { valid: !result.valid, code: result.code } }));
      assert.equal(verifyInclusion(forged, index, proof.size, path, root), false);
    }
  });

  test("GET /ledger/tx/:id: 400 for a malformed id, 404 for an unknown one", async () => {
    assertOutcome(await get("/ledger/tx/xyz"), 400, /64 lowercase hex/);
    assertOutcome(await get(`/ledger/tx/${"A".repeat(64)}`), 400, /64 lowercase hex/);
    assertOutcome(await get(`/ledger/tx/${"0".repeat(64)}`), 404, /no tx 0{64}/);
  });

  test("GET /ledger/consistency: the proof between two tree heads verifies against both", async () => {
    const first = (await head()).treeHead;
    await post("/ledger/txs", [logTx(), logTx(), logTx()]);
    await post("/ledger/tx", logTx());
    const second = (await head()).treeHead;
    assert.ok(second.size > first.size);
    for (const url of [
      `/ledger/consistency?from=${first.size}&to=${second.size}`,
      `/ledger/consistency?from=${first.size}`,
    ]) {
      const answer = await get(url);
      assert.equal(answer.status, 200, answer.text);
      assert.deepEqual([answer.json.from, answer.json.to], [first.size, second.size]);
      assert.equal(verifyTreeHead(answer.json.treeHead), true);
      const path = answer.json.path.map(fromHex);
      const [r1, r2] = [fromHex(first.root), fromHex(second.root)];
      assert.equal(verifyConsistency(first.size, second.size, r1, r2, path), true, url);
      // …and does not verify against a different old root.
      assert.equal(verifyConsistency(first.size, second.size, fromHex("ab".repeat(32)), r2, path), false);
    }
    const same = await get(`/ledger/consistency?from=${second.size}&to=${second.size}`);
    assert.deepEqual(same.json.path, []);
  });

  const badRanges: [string, RegExp][] = [
    ["", /from .* is required/],
    ["from=abc", /from .* is required/],
    ["from=-1", /from .* is required/],
    ["from=0&to=2", /at least 1/],
    ["from=3&to=2", /from \(3\) must not exceed to \(2\)/],
    ["from=1&to=99999", /exceeds the log size/],
    ["from=1&to=x", /to must be a non-negative integer/],
  ];
  for (const [query, diagnostics] of badRanges) {
    test(`GET /ledger/consistency?${query} → 400`, async () => {
      assertOutcome(await get(`/ledger/consistency?${query}`), 400, diagnostics);
    });
  }
});

describe("POST /consent/decide", () => {
  let allowed: Awaited<ReturnType<typeof enrolTx>>;
  let denied: Awaited<ReturnType<typeof enrolTx>>;
  let researcher: Awaited<ReturnType<typeof enrolTx>>;
  let patient: Awaited<ReturnType<typeof registerTx>>;
  const permitRule = randomUUID();
  const denyRule = randomUUID();
  const studyRule = randomUUID();
  const study = randomUUID();

  before(async () => {
    allowed = enrolTx(net, "clinician");
    denied = enrolTx(net, "clinician");
    researcher = enrolTx(net, "researcher");
    patient = registerTx(net);
    const rule = (rule: string, effect: string, grantee: object, purposes: string[]) =>
      signNew(
        patient.key,
        "consent.set",
        { patient: patient.patient, rule, effect, grantee, resourceTypes: [], labels: [], purposes, actions: ["read"] },
        Date.now(),
      );
    const setup = await post("/ledger/txs", [allowed.tx, denied.tx, researcher.tx, patient.tx]);
    assert.deepEqual(
      setup.json.results.map((r: { code: string }) => r.code),
      ["ok", "ok", "ok", "ok"],
    );
    const rules = await post("/ledger/txs", [
      rule(permitRule, "permit", { kind: "member", id: allowed.member }, ["TREAT"]),
      rule(denyRule, "deny", { kind: "member", id: denied.member }, ["TREAT"]),
      rule(studyRule, "permit", { kind: "study", id: study, org: net.orgId }, ["HRESCH"]),
    ]);
    assert.deepEqual(
      rules.json.results.map((r: { code: string }) => r.code),
      ["ok", "ok", "ok"],
    );
  });

  const request = (requester: string, purpose: string, extra: object = {}) => ({
    requester,
    patient: patient.patient,
    purpose,
    action: "read",
    resource: { type: "Observation", custodian: net.orgId, labels: ["N"] },
    ...extra,
  });

  const cases: { name: string; body: () => object; effect: string; step: number; rule: () => string }[] = [
    {
      name: "a clinician the patient permits",
      body: () => request(allowed.key.keyId, "TREAT"),
      effect: "permit",
      step: 6,
      rule: () => permitRule,
    },
    {
      name: "a clinician the patient denies (deny beats the custodian default)",
      body: () => request(denied.key.keyId, "TREAT"),
      effect: "deny",
      step: 4,
      rule: () => denyRule,
    },
    {
      name: "a researcher under the study the patient joined",
      body: () => request(researcher.key.keyId, "HRESCH", { study }),
      effect: "permit",
      step: 6,
      rule: () => studyRule,
    },
    {
      name: "the same researcher without naming the study",
      body: () => request(researcher.key.keyId, "HRESCH"),
      effect: "deny",
      step: 8,
      rule: () => "default-deny",
    },
    {
      name: "the patient themself",
      body: () => request(patient.key.keyId, "TREAT"),
      effect: "permit",
      step: 1,
      rule: () => "own-record",
    },
    {
      name: "a key that is no member",
      body: () => request(newKey().keyId, "TREAT"),
      effect: "deny",
      step: 2,
      rule: () => "unknown-requester",
    },
  ];
  for (const c of cases) {
    test(`${c.name} → ${c.effect} by ${c.step === 6 || c.step === 4 ? "the patient's rule" : "policy"}`, async () => {
      const answer = await post("/consent/decide", c.body());
      assert.equal(answer.status, 200, answer.text);
      assert.equal(answer.json.effect, c.effect);
      assert.equal(answer.json.step, c.step);
      assert.equal(answer.json.rule, c.rule());
      assert.equal(typeof answer.json.reason, "string");
      assert.equal(answer.json.height, (await head()).height);
    });
  }

  test("an invalid request is a 400 naming the field", async () => {
    assertOutcome(
      await post("/consent/decide", { ...request(allowed.key.keyId, "TREAT"), action: "delete" }),
      400,
      /invalid decision request: action/,
    );
    assertOutcome(
      await post("/consent/decide", { ...request(allowed.key.keyId, "TREAT"), study: "x" }),
      400,
      /invalid decision request: study/,
    );
  });

  test("answers loopback callers only", async () => {
    const answer = await call(app(), "POST", "/consent/decide", request(allowed.key.keyId, "TREAT"), {}, "10.1.2.3");
    assertOutcome(answer, 403, /loopback callers only/);
  });

  test("over a real loopback socket, as curl would ask", async () => {
    const response = await fetch(`${running.url}/consent/decide`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(request(allowed.key.keyId, "TREAT")),
    });
    assert.equal(response.status, 200);
    assert.equal(((await response.json()) as { rule: string }).rule, permitRule);
  });
});

describe("operations", () => {
  test("GET /healthz: 200 and the height while the node runs", async () => {
    const answer = await get("/healthz");
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.json, { status: "ok", height: (await head()).height });
  });

  test("GET /metrics: Prometheus text with careledger_height at the head", async () => {
    await post("/ledger/tx", logTx());
    const { height, size } = await head();
    const answer = await get("/metrics");
    assert.equal(answer.status, 200);
    assert.match(answer.contentType, /^text\/plain; version=0\.0\.4/);
    assert.match(answer.text, /^# TYPE careledger_height gauge$/m);
    assert.match(answer.text, new RegExp(`^careledger_height ${height}$`, "m"));
    assert.match(answer.text, new RegExp(`^careledger_log_size ${size}$`, "m"));
    for (const line of answer.text.split("\n").filter((l) => l !== "" && !l.startsWith("#"))) {
      assert.match(line, /^[a-z_:][a-z0-9_:]*(\{[^}]*\})? -?[0-9.e+-]+$/i, `not a Prometheus sample: ${line}`);
    }
  });

  test("an unknown route is a 404 OperationOutcome", async () => {
    assertOutcome(await get("/ledger/nothing"), 404, /no route GET \/ledger\/nothing/);
  });
});
