// Hostile and broken input to a real in-process node: every refusal is a FHIR OperationOutcome with the README's
// status and a diagnostics line a client can act on, never a stack trace; and txs that are well-formed but not
// allowed are committed as rejected with the contract's stable code.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { signTx, txId } from "../src/ledger/tx.ts";
import type { SignedTx } from "../src/ledger/types.ts";
import { MAX_BATCH, MAX_BATCH_BODY_BYTES, MAX_TX_BODY_BYTES } from "../src/node/http.ts";
import { newKey, newNonce, signNew } from "../src/node/network.ts";
import type { RunningNode } from "../src/node/runtime.ts";
import { tempDir } from "./helpers.ts";
import {
  accessLogTx,
  assertNoInternals,
  assertOutcome,
  call,
  enrolTx,
  newNetwork,
  openTestNode,
  registerTx,
  type TestNet,
} from "./support-net.ts";

const work = tempDir("http-bad-input");
let net: TestNet;
let running: RunningNode;
let subject: string;

before(async () => {
  net = newNetwork(join(work.path, "node"), "Bad Input Practice");
  running = await openTestNode(net.dir);
  const registered = registerTx(net);
  subject = registered.patient;
  assert.equal((await call(running.app, "POST", "/ledger/tx", registered.tx)).status, 200);
});
after(async () => {
  await running?.close();
  work.remove();
});

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  call(running.app, "POST", url, body, headers);
/** A fresh valid tx, serialised, for tests that break its text. */
const txText = () => JSON.stringify(accessLogTx(net, subject));

describe("refused before ordering: status, OperationOutcome, diagnostics", () => {
  const cases: {
    name: string;
    url?: string;
    body: () => unknown;
    headers?: Record<string, string>;
    status: number;
    diagnostics: RegExp;
  }[] = [
    { name: "malformed JSON", body: () => '{"type":', status: 400, diagnostics: /^malformed JSON body: .+/ },
    {
      name: "JSON cut in the middle of a tx",
      body: () => txText().slice(0, 100),
      status: 400,
      diagnostics: /^malformed JSON body: .*position \d+/,
    },
    {
      name: "NaN",
      body: () => txText().replace(/"createdAt":\d+/, '"createdAt":NaN'),
      status: 400,
      diagnostics: /malformed JSON/,
    },
    { name: "trailing garbage", body: () => `${txText()}x`, status: 400, diagnostics: /malformed JSON/ },
    { name: "an empty body", body: () => "", status: 400, diagnostics: /empty JSON body/ },
    {
      name: "text/plain",
      body: () => txText(),
      headers: { "content-type": "text/plain" },
      status: 415,
      diagnostics: /unsupported content type: send application\/json/,
    },
    {
      name: "a form",
      body: () => "type=access.log",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      status: 415,
      diagnostics: /send application\/json/,
    },
    {
      name: "no content type",
      body: () => Buffer.from(txText()),
      headers: { "content-type": "" },
      status: 415,
      diagnostics: /send application\/json/,
    },
    {
      name: "a tx body over 128 KiB",
      body: () => JSON.stringify({ ...accessLogTx(net, subject), pad: "x".repeat(MAX_TX_BODY_BYTES) }),
      status: 413,
      diagnostics: new RegExp(`limit for this endpoint is ${MAX_TX_BODY_BYTES} bytes`),
    },
    {
      name: "a batch body over 16 MiB",
      url: "/ledger/txs",
      body: () => `[${JSON.stringify("x".repeat(MAX_BATCH_BODY_BYTES))}]`,
      status: 413,
      diagnostics: new RegExp(`limit for this endpoint is ${MAX_BATCH_BODY_BYTES} bytes`),
    },
    {
      name: "a batch of 5,001 txs",
      url: "/ledger/txs",
      body: () => {
        const tx = accessLogTx(net, subject);
        return Array.from({ length: MAX_BATCH + 1 }, () => tx);
      },
      status: 413,
      diagnostics: /at most 5000 txs per request \(got 5001\)/,
    },
    { name: "an empty batch", url: "/ledger/txs", body: () => [], status: 400, diagnostics: /no txs in the batch/ },
    {
      name: "a batch that is an object without txs",
      url: "/ledger/txs",
      body: () => ({ tx: [] }),
      status: 400,
      diagnostics: /JSON array of txs/,
    },
    {
      name: "__proto__ at the top",
      body: () => `{"__proto__":{"polluted":true},${txText().slice(1)}`,
      status: 400,
      diagnostics: /forbidden key __proto__/,
    },
    {
      name: "__proto__ inside the payload",
      body: () => txText().replace('"payload":{', '"payload":{"__proto__":{"isAdmin":true},'),
      status: 400,
      diagnostics: /forbidden key __proto__/,
    },
    {
      name: "__proto__ spelt with \\u escapes",
      body: () => `{"\\u005f\\u005fproto\\u005f\\u005f":{"polluted":true},${txText().slice(1)}`,
      status: 400,
      diagnostics: /forbidden key __proto__/,
    },
    {
      name: "constructor.prototype",
      body: () => txText().replace('"payload":{', '"payload":{"constructor":{"prototype":{"polluted":true}},'),
      status: 400,
      diagnostics: /forbidden key constructor\.prototype/,
    },
    {
      name: "__proto__ in a batch item",
      url: "/ledger/txs",
      body: () => `[${txText()},{"__proto__":{}}]`,
      status: 400,
      diagnostics: /forbidden key __proto__/,
    },
    ...['"', "\\", "\u0000", "a\nb"].map((key) => ({
      name: `a signed tx with the payload key ${JSON.stringify(key)}, which JSON must escape`,
      body: () => signNew(net.nodeKey, "access.log", { entries: [], [key]: 1 }, Date.now()),
      status: 400,
      diagnostics: /^forbidden key ".*" \(keys must not need escaping\) in the JSON body$/,
    })),
    {
      name: "createdAt beyond any float (1e400 parses as Infinity)",
      body: () => txText().replace(/"createdAt":\d+/, '"createdAt":1e400'),
      status: 400,
      diagnostics: /invalid tx: createdAt: must be a non-negative safe integer/,
    },
    {
      name: "createdAt above 2^53",
      body: () => txText().replace(/"createdAt":\d+/, '"createdAt":9007199254740993'),
      status: 400,
      diagnostics: /invalid tx: createdAt/,
    },
    {
      name: "a negative createdAt",
      body: () => txText().replace(/"createdAt":\d+/, '"createdAt":-1'),
      status: 400,
      diagnostics: /invalid tx: createdAt/,
    },
    {
      name: "a fractional createdAt",
      body: () => txText().replace(/"createdAt":(\d+)/, '"createdAt":$1.5'),
      status: 400,
      diagnostics: /invalid tx: createdAt/,
    },
    {
      name: "an unknown envelope field",
      body: () => ({ ...accessLogTx(net, subject), priority: "high" }),
      status: 400,
      diagnostics: /invalid tx: tx: unknown field "priority"/,
    },
    {
      name: "a missing sig",
      body: () => {
        const { sig: _sig, ...unsigned } = accessLogTx(net, subject);
        return unsigned;
      },
      status: 400,
      diagnostics: /invalid tx: sig: missing/,
    },
    { name: "a JSON array as one tx", body: () => "[]", status: 400, diagnostics: /tx: must be a JSON object/ },
    { name: "a JSON string as one tx", body: () => '"tx"', status: 400, diagnostics: /tx: must be a JSON object/ },
    { name: "null", body: () => "null", status: 400, diagnostics: /tx: must be a JSON object/ },
    {
      name: "a payload nested 50,000 deep",
      body: () => txText().replace('"payload":{', `"payload":{"deep":${"[".repeat(50_000)}${"]".repeat(50_000)},`),
      status: 400,
      diagnostics: /invalid tx: payload/,
    },
    {
      name: "a signature from another tx",
      body: () => ({ ...accessLogTx(net, subject), sig: accessLogTx(net, subject).sig }),
      status: 400,
      diagnostics: /^tx [0-9a-f]{64} has an invalid signature \(signer [0-9a-f]{64}\)$/,
    },
    {
      name: "a forged signer (signed by key A, claiming key B's id)",
      body: () => {
        const a = newKey();
        const signed = signTx(
          {
            type: "member.enrol",
            payload: { member: randomUUID(), org: net.orgId, role: "admin", key: a.keyId },
            signer: a.keyId,
            nonce: newNonce(),
            createdAt: Date.now(),
          },
          a,
        );
        return { ...signed, signer: net.admin.keyId };
      },
      status: 400,
      diagnostics: new RegExp(`invalid signature \\(signer ${"[0-9a-f]{64}"}\\)`),
    },
    {
      name: "a bad signature in a batch",
      url: "/ledger/txs",
      body: () => [accessLogTx(net, subject), { ...accessLogTx(net, subject), sig: accessLogTx(net, subject).sig }],
      status: 400,
      diagnostics: /invalid signature .*item 1 of the batch, and no tx of the batch was accepted/,
    },
  ];
  for (const c of cases) {
    test(`${c.name} → ${c.status}`, async () => {
      const body = c.body();
      const answer = await post(c.url ?? "/ledger/tx", body, c.headers);
      assertOutcome(answer, c.status, c.diagnostics);
      if (c.status === 400 && /signature/.test(c.name) && typeof body === "object" && !Array.isArray(body)) {
        const id = txId(body as SignedTx);
        assert.equal((await call(running.app, "GET", `/ledger/tx/${id}`)).status, 404, "a refused tx is not logged");
      }
    });
  }

  test("the forged tx names the claimed signer, and nothing was logged under the admin's name", async () => {
    const a = newKey();
    const signed = signNew(
      a,
      "member.enrol",
      { member: randomUUID(), org: net.orgId, role: "admin", key: a.keyId },
      Date.now(),
    );
    const forged = { ...signed, signer: net.admin.keyId };
    const answer = await post("/ledger/tx", forged);
    assertOutcome(answer, 400, new RegExp(`has an invalid signature \\(signer ${net.admin.keyId}\\)`));
  });

  test("keys that need escaping cannot reach the store, where V8 could read them back wrongly (nodejs/node#63785)", async () => {
    // Once V8 has parsed an object whose keys are ["h", "\\"], it decodes an escaped key after "h" as "\\". Had
    // this pair been logged, reading the first one back would look like tampering: the node would halt on GET.
    const victim = signNew(net.nodeKey, "access.log", { entries: [{ h: 1, '"': 2 }] }, Date.now());
    const poison = signNew(net.nodeKey, "access.log", { entries: [{ h: [], "\\": 0 }] }, Date.now());
    // Which key the refusal names depends on what this process parsed before: that is the bug.
    assertOutcome(await post("/ledger/tx", victim), 400, /forbidden key "(\\"|\\\\)" \(keys must not need escaping\)/);
    assertOutcome(await post("/ledger/tx", poison), 400, /forbidden key "\\\\" \(keys must not need escaping\)/);
    const { height } = (await call(running.app, "GET", "/ledger/head")).json;
    for (let h = 0; h <= height; h++) assert.equal((await call(running.app, "GET", `/ledger/blocks/${h}`)).status, 200);
    assert.equal((await call(running.app, "GET", "/healthz")).status, 200);
  });

  test("prototype pollution did not happen and the node still serves", async () => {
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(({} as Record<string, unknown>).isAdmin, undefined);
    const health = await call(running.app, "GET", "/healthz");
    assert.equal(health.status, 200);
    assert.equal((await post("/ledger/tx", accessLogTx(net, subject))).status, 200);
  });
});

describe("well-formed and signed but not allowed: committed as rejected with the contract's code", () => {
  const cases: { name: string; setup?: () => Promise<void>; tx: () => SignedTx; code: string }[] = [];
  let committed: SignedTx;
  let revoked: ReturnType<typeof enrolTx>;

  before(async () => {
    committed = accessLogTx(net, subject);
    assert.equal((await post("/ledger/tx", committed)).status, 200);
    revoked = enrolTx(net, "clinician");
    assert.equal((await post("/ledger/tx", revoked.tx)).status, 200);
    const revoke = signNew(
      net.admin,
      "member.revoke",
      { member: revoked.member, reason: "left the practice" },
      Date.now(),
    );
    const answer = await post("/ledger/tx", revoke);
    assert.equal(answer.json.code, "ok", answer.text);
  });

  cases.push(
    {
      name: "a replay: a new id under a (signer, nonce) already in the log",
      tx: () =>
        signTx(
          {
            type: committed.type,
            payload: { entries: [{ ...(committed.payload.entries as object[])[0], resourceId: "other" }] },
            signer: committed.signer,
            nonce: committed.nonce,
            createdAt: committed.createdAt,
          },
          net.nodeKey,
        ),
      code: "replay",
    },
    {
      name: "a tx signed by a revoked member's key",
      tx: () =>
        signNew(
          revoked.key,
          "patient.register",
          { patient: randomUUID(), org: net.orgId, key: newKey().keyId },
          Date.now(),
        ),
      code: "revoked-signer",
    },
    {
      name: "a payload that breaks its schema",
      tx: () =>
        signNew(
          net.admin,
          "member.enrol",
          { member: randomUUID(), org: net.orgId, role: "surgeon", key: newKey().keyId },
          Date.now(),
        ),
      code: "malformed-payload",
    },
    {
      name: "a payload with an unknown field",
      tx: () =>
        signNew(
          net.admin,
          "member.enrol",
          { member: randomUUID(), org: net.orgId, role: "nurse", key: newKey().keyId, note: "hi" },
          Date.now(),
        ),
      code: "malformed-payload",
    },
    {
      name: "a payload number far beyond 2^53",
      tx: () => {
        const tx = accessLogTx(net, subject);
        const entry = { ...(tx.payload.entries as object[])[0], height: 1e300 };
        return signNew(net.nodeKey, "access.log", { entries: [entry] }, Date.now());
      },
      code: "invalid-reference",
    },
    {
      name: "an unknown tx type",
      tx: () => signNew(net.admin, "member.promote", { member: randomUUID() }, Date.now()),
      code: "unknown-type",
    },
    {
      name: "a tx created two days ago",
      tx: () => accessLogTx(net, subject, Date.now() - 2 * 86_400_000),
      code: "stale",
    },
    {
      name: "a tx created an hour from now",
      tx: () => accessLogTx(net, subject, Date.now() + 3_600_000),
      code: "future",
    },
  );

  for (const c of cases) {
    test(`${c.name} → 422 ${c.code}`, async () => {
      const tx = c.tx();
      const answer = await post("/ledger/tx", tx);
      assert.equal(answer.status, 422, answer.text);
      assertNoInternals(answer.text);
      assert.deepEqual(answer.json, { ...answer.json, id: txId(tx), valid: false, code: c.code });
      const stored = await call(running.app, "GET", `/ledger/tx/${txId(tx)}`);
      assert.deepEqual(stored.json.result, { valid: false, code: c.code });
    });
  }
});
