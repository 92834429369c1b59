// The batching relay (src/node/relay.ts) with real nodes: a forwarder that is not listening and a relay that serves
// HTTP on loopback, both following one scripted orderer. The relay orders what it is forwarded in batches of its own
// and, while busy, gathers several requests into one batch; a forward refused, or forwarded txs that never come back
// committed, are ordered by the forwarder itself — and a tx ordered twice that way is in the ledger once.
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { txId } from "../src/ledger/tx.ts";
import { readKeyFile } from "../src/node/datadir.ts";
import { FORWARD_BELOW_TXS } from "../src/node/ledger-node.ts";
import { silentLogger } from "../src/node/logger.ts";
import { initJoin } from "../src/node/network.ts";
import { StaticPeerRegistry } from "../src/node/peer-registry.ts";
import { chooseRelay, PeerRelay } from "../src/node/relay.ts";
import type { RunningNode } from "../src/node/runtime.ts";
import { tempDir } from "./helpers.ts";
import { accessLogTx, call, eventually, newNetwork, openTestNode, registerTx, type TestNet } from "./support-net.ts";
import { ScriptedOrderer } from "./support-orderer.ts";

const work = tempDir("relay");
const opened: RunningNode[] = [];
const servers: Server[] = [];
after(async () => {
  for (const node of opened) await node.close();
  for (const server of servers) server.close();
  work.remove();
});

interface Pair {
  net: TestNet;
  orderer: ScriptedOrderer;
  /** Forwards its batches (does not listen). */
  forwarder: RunningNode;
  forwarderRelay: PeerRelay;
  /** Listens on loopback and orders for both. */
  relay: RunningNode;
  patient: string;
}

/**
 * A founding node (the forwarder) and a node that joined it (the relay, listening). Each reads its own registry: the
 * relay's lists itself, the forwarder's lists the relay — or `relayUrl`, a stand-in, when given.
 */
async function pair(
  name: string,
  options: { holdMs?: number; commitDeadlineMs?: number; relayUrl?: string } = {},
): Promise<Pair> {
  const net = newNetwork(join(work.path, `${name}-f`), `${name} practice`);
  const relayDir = join(work.path, `${name}-r`);
  initJoin(relayDir, join(net.dir, "genesis.json"));
  const orderer = new ScriptedOrderer();
  const relayRegistry = new StaticPeerRegistry();
  const relayKey = readKeyFile(join(relayDir, "node.key"));
  const relaysOwn = new PeerRelay({
    selfKeyId: relayKey.keyId,
    registry: relayRegistry,
    log: silentLogger,
    holdMs: options.holdMs ?? 5,
  });
  const relay = await openTestNode(relayDir, { orderer, listen: true, registry: relayRegistry, relay: relaysOwn });
  opened.push(relay);
  await relayRegistry.announce({ keyId: relayKey.keyId, org: "relay-org", url: relay.url });
  await relaysOwn.refresh();
  const forwarderRegistry = new StaticPeerRegistry([
    { keyId: relayKey.keyId, org: "relay-org", url: options.relayUrl ?? relay.url },
  ]);
  const forwarderRelay = new PeerRelay({
    selfKeyId: net.nodeKey.keyId,
    registry: forwarderRegistry,
    log: silentLogger,
    commitDeadlineMs: options.commitDeadlineMs ?? 3000,
    forwardTimeoutMs: 1000,
  });
  const forwarder = await openTestNode(net.dir, { orderer, relay: forwarderRelay });
  opened.push(forwarder);
  // Ordered directly (the forwarder has not read its registry yet), so the relay starts idle and counters at 0.
  const registered = registerTx(net);
  assert.equal((await call(forwarder.app, "POST", "/ledger/tx", registered.tx)).status, 200);
  await orderer.idle();
  await forwarderRelay.refresh();
  return { net, orderer, forwarder, forwarderRelay, relay, patient: registered.patient };
}

const counter = async (node: RunningNode, name: string) =>
  Number(new RegExp(`^${name} (\\d+)$`, "m").exec((await call(node.app, "GET", "/metrics")).text)?.[1] ?? 0);

const batchOf = (orderer: ScriptedOrderer, id: string) =>
  orderer.log.filter((b) => b.txs.some((tx) => txId(tx) === id));

describe("the batching relay", () => {
  test("the relay is the listed node with the smallest key id; a node forwards only to another", async () => {
    assert.equal(chooseRelay([]), undefined);
    const entries = [
      { keyId: "k3", org: "o", url: "http://c" },
      { keyId: "k1", org: "o", url: "http://a" },
      { keyId: "k2", org: "o", url: "http://b" },
    ];
    assert.equal(chooseRelay(entries)?.url, "http://a");
    const roleOf = async (selfKeyId: string, listed: typeof entries, eligible?: (keyId: string) => boolean) => {
      const relay = new PeerRelay({
        selfKeyId,
        registry: new StaticPeerRegistry(listed),
        log: silentLogger,
        ...(eligible ? { eligible } : {}),
      });
      await relay.refresh();
      return relay.role();
    };
    assert.equal(await roleOf("k1", entries), "relay");
    assert.equal(await roleOf("k2", entries), "forward");
    assert.equal(await roleOf("k0", entries), "forward", "not listed: nobody can reach it, so it forwards");
    assert.equal(await roleOf("k1", []), "direct", "nothing listed yet");
    assert.equal(await roleOf("k1", entries.slice(0, 1)), "forward");
    // Only active node keys of the network may be chosen: a listed stranger with a smaller key id is passed by.
    const strangerFirst = [{ keyId: "k0", org: "o", url: "http://stranger" }, ...entries];
    const notStranger = (keyId: string) => keyId !== "k0";
    assert.equal(await roleOf("k1", strangerFirst, notStranger), "relay");
    assert.equal(await roleOf("k2", strangerFirst, notStranger), "forward");
    assert.equal(await roleOf("k1", strangerFirst), "forward", "without the filter the stranger would be chosen");
  });

  test("a forwarder's txs are ordered by the relay, checked there, and commit on both nodes", async () => {
    const p = await pair("forward");
    const tx = accessLogTx(p.net, p.patient);
    const answer = await call(p.forwarder.app, "POST", "/ledger/tx", tx);
    assert.equal(answer.status, 200, answer.text);
    const batches = batchOf(p.orderer, txId(tx));
    assert.equal(batches.length, 1);
    assert.equal(batches[0]?.proposer, p.relay.node.key.keyId, "the relay proposed the batch");
    // The relay's 202 may come back after the commit did.
    await eventually(
      async () => (await counter(p.forwarder, "careledger_relay_forwarded_txs_total")) === 1 || undefined,
    );
    await p.orderer.idle();
    const got = await call(p.relay.app, "GET", `/ledger/tx/${txId(tx)}`);
    assert.equal(got.status, 200);
  });

  test("a batch as large as FORWARD_BELOW_TXS is ordered by the node that took it in, not forwarded", async () => {
    const p = await pair("large");
    const txs = Array.from({ length: FORWARD_BELOW_TXS }, () => accessLogTx(p.net, p.patient));
    const answer = await call(p.forwarder.app, "POST", "/ledger/txs", txs);
    assert.equal(answer.status, 200, answer.text);
    const batches = new Set(txs.flatMap((tx) => batchOf(p.orderer, txId(tx))));
    assert.deepEqual(
      [...batches].map((b) => b.proposer),
      [p.forwarder.node.key.keyId],
    );
    assert.equal(await counter(p.forwarder, "careledger_relay_forwarded_txs_total"), 0);
  });

  test("a tx with a bad signature is refused by the forwarder before it is forwarded", async () => {
    const p = await pair("badsig");
    const tx = accessLogTx(p.net, p.patient);
    const forged = { ...tx, sig: `${tx.sig.startsWith("A") ? "B" : "A"}${tx.sig.slice(1)}` };
    const answer = await call(p.forwarder.app, "POST", "/ledger/tx", forged);
    assert.equal(answer.status, 400);
    assert.equal(await counter(p.forwarder, "careledger_relay_forwarded_txs_total"), 0);
    assert.equal(batchOf(p.orderer, txId(tx)).length, 0);
  });

  test("idle, the relay orders at once; busy, it gathers separate requests into one batch", async () => {
    const holdMs = 3000;
    const p = await pair("hold", { holdMs });
    const first = accessLogTx(p.net, p.patient);
    const started = performance.now();
    assert.equal((await call(p.relay.app, "POST", "/ledger/tx", first)).status, 200);
    assert.ok(performance.now() - started < holdMs, "an idle relay did not hold its first tx");
    assert.deepEqual(
      batchOf(p.orderer, txId(first)).map((b) => b.txs.length),
      [1],
    );
    // Right after a cut the relay counts as busy: these three requests wait for company and go as one batch.
    const next = [1, 2, 3].map(() => accessLogTx(p.net, p.patient));
    const answers = await Promise.all(next.map((tx) => call(p.relay.app, "POST", "/ledger/tx?wait=false", tx)));
    for (const a of answers) assert.equal(a.status, 202, a.text);
    await eventually(() => batchOf(p.orderer, txId(next[2] as (typeof next)[number])).length > 0 || undefined, 10_000);
    const batches = new Set(next.flatMap((tx) => batchOf(p.orderer, txId(tx))));
    assert.equal(batches.size, 1, "the three requests were ordered in one batch");
    assert.equal([...batches][0]?.txs.length, 3);
  });

  test("a forward the relay cannot take is ordered by the forwarder, which then passes the relay over", async () => {
    const p = await pair("refused", { relayUrl: "http://127.0.0.1:1" });
    const tx = accessLogTx(p.net, p.patient);
    const answer = await call(p.forwarder.app, "POST", "/ledger/tx", tx);
    assert.equal(answer.status, 200, answer.text);
    assert.equal(batchOf(p.orderer, txId(tx))[0]?.proposer, p.forwarder.node.key.keyId);
    assert.equal(await counter(p.forwarder, "careledger_relay_forward_failed_total"), 1);
    assert.equal(p.forwarderRelay.role(), "direct", "passed over after the failure");
  });

  test("forwarded txs that do not come back committed are ordered by the forwarder; ordered twice, they count once", async () => {
    // A stand-in relay that takes every forward and orders nothing.
    const forwards: string[] = [];
    const blackHole = createServer((request, response) => {
      let body = "";
      request.on("data", (chunk) => {
        body += chunk;
      });
      request.on("end", () => {
        forwards.push(body);
        response.writeHead(202, { "content-type": "application/json" }).end('{"accepted":[]}');
      });
    });
    servers.push(blackHole);
    await new Promise<void>((resolve) => blackHole.listen(0, "127.0.0.1", resolve));
    const port = (blackHole.address() as { port: number }).port;
    const p = await pair("late", { relayUrl: `http://127.0.0.1:${port}`, commitDeadlineMs: 300 });
    const tx = accessLogTx(p.net, p.patient);
    const answer = await call(p.forwarder.app, "POST", "/ledger/tx", tx);
    assert.equal(answer.status, 200, answer.text);
    assert.equal(forwards.length, 1);
    assert.deepEqual(
      (JSON.parse(forwards[0] as string) as unknown[]).map((t) => txId(t as typeof tx)),
      [txId(tx)],
    );
    assert.equal(batchOf(p.orderer, txId(tx))[0]?.proposer, p.forwarder.node.key.keyId);
    assert.equal(await counter(p.forwarder, "careledger_relay_late_txs_total"), 1);
    assert.equal(p.forwarderRelay.role(), "direct");
    // The slow relay orders it after all: the second copy is skipped by both nodes alike.
    await p.orderer.idle();
    const before = (await call(p.forwarder.app, "GET", "/ledger/head")).json;
    p.orderer.append(p.orderer.next(p.relay.node.key.keyId, [tx]));
    await p.orderer.idle();
    const heads = await Promise.all([p.forwarder, p.relay].map((n) => call(n.app, "GET", "/ledger/head")));
    for (const head of heads) {
      assert.equal(head.json.size, before.size, "the duplicate added nothing to the log");
      assert.equal(head.json.hash, heads[0]?.json.hash);
    }
  });
});
