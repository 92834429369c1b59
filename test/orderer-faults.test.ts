// Two real nodes (own data dirs, own SQLite stores, one network) share a scripted orderer that misbehaves: it repeats
// batches, replays txs under new sequence numbers, delivers malformed and badly signed txs, and skips a sequence
// number. The orderer orders but is not trusted: both nodes must end in the same state, or halt and say why.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { txId } from "../src/ledger/tx.ts";
import type { Block, SignedTx } from "../src/ledger/types.ts";
import { initJoin } from "../src/node/network.ts";
import type { RunningNode } from "../src/node/runtime.ts";
import { tempDir } from "./helpers.ts";
import { accessLogTx, assertOutcome, call, newNetwork, openTestNode, registerTx, type TestNet } from "./support-net.ts";
import { ScriptedOrderer } from "./support-orderer.ts";

const work = tempDir("orderer-faults");
const opened: RunningNode[] = [];
after(async () => {
  for (const node of opened) await node.close();
  work.remove();
});

interface Pair {
  net: TestNet;
  orderer: ScriptedOrderer;
  a: RunningNode;
  b: RunningNode;
  /** A registered patient, for access-log txs. */
  patient: string;
}

/** A founding node A and a node B that joined from A's genesis file, both following one scripted orderer. */
async function pair(name: string): Promise<Pair> {
  const net = newNetwork(join(work.path, `${name}-a`), `${name} practice`);
  initJoin(join(work.path, `${name}-b`), join(net.dir, "genesis.json"));
  const orderer = new ScriptedOrderer();
  const a = await openTestNode(net.dir, { orderer });
  const b = await openTestNode(join(work.path, `${name}-b`), { orderer });
  opened.push(a, b);
  const registered = registerTx(net);
  assert.equal((await submit(a, registered.tx)).status, 200);
  await orderer.idle();
  return { net, orderer, a, b, patient: registered.patient };
}

const submit = (node: RunningNode, tx: unknown) => call(node.app, "POST", "/ledger/tx", tx);
const headOf = async (node: RunningNode) => (await call(node.app, "GET", "/ledger/head")).json;
const blockOf = async (node: RunningNode, h: number) => (await call(node.app, "GET", `/ledger/blocks/${h}`)).json;

/** Everything that says two nodes hold the same ledger and state, minus the per-node signature. */
async function fingerprint(node: RunningNode) {
  const head = await headOf(node);
  return {
    height: head.height,
    hash: head.hash,
    size: head.size,
    stateDigest: head.stateDigest,
    root: head.treeHead.root,
  };
}

async function assertSameLedger(p: Pair): Promise<void> {
  await p.orderer.idle();
  assert.deepEqual(await fingerprint(p.b), await fingerprint(p.a), "both nodes hold the same ledger");
}

describe("an orderer that repeats itself", () => {
  test("a batch delivered again under its own seq is ignored: the head does not move", async () => {
    const p = await pair("dup");
    const tx = accessLogTx(p.net, p.patient);
    const answer = await submit(p.a, tx);
    assert.equal(answer.status, 200);
    await p.orderer.idle();
    const before = await fingerprint(p.a);
    const applied = p.orderer.log.at(-1);
    assert.ok(applied);
    // Exactly the same batch, then the same seq carrying other txs: both are behind the head.
    p.orderer.append(applied);
    const sneaked = accessLogTx(p.net, p.patient);
    p.orderer.append({ ...applied, txs: [sneaked] });
    await p.orderer.idle();
    assert.deepEqual(await fingerprint(p.a), before);
    assert.deepEqual(await fingerprint(p.b), before);
    assert.equal((await call(p.a.app, "GET", `/ledger/tx/${txId(sneaked)}`)).status, 404);
    const metrics = (await call(p.a.app, "GET", "/metrics")).text;
    assert.match(metrics, /^careledger_batches_duplicate_total 2$/m);
    // The nodes carry on with the next seq.
    assert.equal((await submit(p.b, accessLogTx(p.net, p.patient))).status, 200);
    await assertSameLedger(p);
    assert.equal((await fingerprint(p.a)).height, before.height + 1);
  });

  test("txs replayed under a new seq are not logged twice: their block is empty of them", async () => {
    const p = await pair("replay");
    const txs = [accessLogTx(p.net, p.patient), accessLogTx(p.net, p.patient)];
    const answer = await call(p.a.app, "POST", "/ledger/txs", txs);
    assert.equal(answer.status, 200, answer.text);
    await p.orderer.idle();
    const before = await fingerprint(p.a);
    const fresh = accessLogTx(p.net, p.patient);
    p.orderer.append(p.orderer.next(p.net.nodeKey.keyId, txs));
    p.orderer.append(p.orderer.next(p.net.nodeKey.keyId, [...txs, fresh, fresh]));
    await assertSameLedger(p);
    const after = await fingerprint(p.a);
    assert.equal(after.height, before.height + 2);
    assert.equal(after.size, before.size + 1, "only the one new tx joined the log, once");
    const replayBlock = (await blockOf(p.a, before.height + 1)).block as Block;
    assert.deepEqual(replayBlock.txs, []);
    const mixedBlock = (await blockOf(p.b, before.height + 2)).block as Block;
    assert.deepEqual(
      mixedBlock.txs.map((e) => e.id),
      [txId(fresh)],
    );
    // Each replayed tx is still where it first committed.
    for (const tx of txs) {
      const stored = await call(p.b.app, "GET", `/ledger/tx/${txId(tx)}`);
      assert.equal(stored.json.height, before.height);
    }
  });
});

describe("an orderer that delivers garbage", () => {
  test("malformed txs and txs whose signature does not verify are left out, identically on both nodes", async () => {
    const p = await pair("garbage");
    const good = accessLogTx(p.net, p.patient);
    const donor = accessLogTx(p.net, p.patient);
    const badSig = { ...accessLogTx(p.net, p.patient), sig: donor.sig };
    const malformed: unknown[] = [
      { ...accessLogTx(p.net, p.patient), nonce: "not-hex" },
      { ...accessLogTx(p.net, p.patient), extra: true },
      "not a tx",
      null,
      42,
    ];
    const before = await fingerprint(p.a);
    p.orderer.append(p.orderer.next(p.net.nodeKey.keyId, [malformed[0], good, ...malformed.slice(1), badSig]));
    await assertSameLedger(p);
    const block = (await blockOf(p.a, before.height + 1)).block as Block;
    assert.deepEqual(
      block.txs.map((e) => [e.id, e.result]),
      [[txId(good), { valid: true, code: "ok" }]],
    );
    assert.deepEqual((await blockOf(p.b, before.height + 1)).block, block);
    // Neither the forged tx nor the donor whose signature it borrowed is in the log, so the genuine tx with the
    // forged one's id can still commit later, and its signer's nonce is not used up.
    assert.equal((await call(p.b.app, "GET", `/ledger/tx/${txId(badSig)}`)).status, 404);
    assert.equal((await call(p.b.app, "GET", `/ledger/tx/${txId(donor)}`)).status, 404);
    const metrics = (await call(p.b.app, "GET", "/metrics")).text;
    assert.match(metrics, /^careledger_tx_malformed_from_orderer_total 5$/m);
    assert.match(metrics, /^careledger_tx_bad_signature_from_orderer_total 1$/m);
    // A batch whose txs field is not even an array becomes an empty block on both nodes.
    p.orderer.append({ ...p.orderer.next(p.net.nodeKey.keyId, []), txs: "nothing" as unknown as SignedTx[] });
    await assertSameLedger(p);
    assert.equal((await fingerprint(p.a)).height, before.height + 2);
  });

  test("a node's own tx handed back with another signature is left out on every node, not only on the others", async () => {
    const p = await pair("resigned");
    const donor = accessLogTx(p.net, p.patient);
    p.orderer.rewrite = (txs) => txs.map((tx) => ({ ...tx, sig: donor.sig }));
    const tx = accessLogTx(p.net, p.patient);
    const answer = await submit(p.a, tx);
    p.orderer.rewrite = undefined;
    await p.orderer.idle();
    const [a, b] = [await fingerprint(p.a), await fingerprint(p.b)];
    assert.deepEqual(b, a, "the nodes forked");
    assert.equal(answer.status, 502);
    assert.match(JSON.stringify(answer.json), /signature that does not verify; it was not committed/);
    assert.equal((await call(p.a.app, "GET", `/ledger/tx/${txId(tx)}`)).status, 404);
  });
});

describe("an orderer that skips a seq", () => {
  test("the node halts and says why: /healthz 503, writes 503, reads still served", async () => {
    const p = await pair("gap");
    const committed = accessLogTx(p.net, p.patient);
    assert.equal((await submit(p.a, committed)).status, 200);
    await p.orderer.idle();
    const before = await fingerprint(p.a);
    const skipped = p.orderer.next(p.net.nodeKey.keyId, [accessLogTx(p.net, p.patient)]);
    p.orderer.append({ ...skipped, seq: skipped.seq + 1 });
    await p.orderer.idle();

    for (const node of [p.a, p.b]) {
      const reason = node.node.halted;
      assert.match(reason ?? "", new RegExp(`delivered batch ${skipped.seq + 1} but ${skipped.seq} comes next`));
      const health = await call(node.app, "GET", "/healthz");
      assert.equal(health.status, 503);
      assert.deepEqual(health.json, { status: "halted", height: before.height, reason });
      assertOutcome(await submit(node, accessLogTx(p.net, p.patient)), 503, /^node halted: .*comes next/);
      assertOutcome(await call(node.app, "POST", "/ledger/txs", [accessLogTx(p.net, p.patient)]), 503, /node halted/);
      // Reads keep working on what was committed before the fault.
      assert.deepEqual(await fingerprint(node), before);
      assert.equal((await call(node.app, "GET", `/ledger/blocks/${before.height}`)).status, 200);
      assert.equal((await call(node.app, "GET", `/ledger/tx/${txId(committed)}`)).status, 200);
      assert.equal((await call(node.app, "GET", `/ledger/consistency?from=1&to=${before.size}`)).status, 200);
      const decide = await call(node.app, "POST", "/consent/decide", {
        requester: p.net.nodeKey.keyId,
        patient: randomUUID(),
        purpose: "TREAT",
        action: "read",
        resource: { type: "Observation", custodian: p.net.orgId, labels: [] },
      });
      assert.equal(decide.status, 200);
      assert.match((await call(node.app, "GET", "/metrics")).text, /^careledger_halted 1$/m);
    }
    // Later batches, even the missing one, are not applied by a halted node.
    p.orderer.append(skipped);
    await p.orderer.idle();
    assert.deepEqual(await fingerprint(p.a), before);
  });
});
