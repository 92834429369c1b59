import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { Etcd3 } from "etcd3";
import { pino } from "pino";
import { tempDir } from "../../test/helpers.ts";
import { keyPairFromSeed } from "../ledger/keys.ts";
import { signTreeHead } from "../ledger/sth.ts";
import type { SignedTreeHead } from "../ledger/types.ts";
import { type LocalEtcdCluster, startLocalEtcdCluster } from "../ordering/etcd-launcher.ts";
import { EtcdHeadBoard } from "./head-board-etcd.ts";

const tmp = tempDir("head-board-etcd");
let cluster: LocalEtcdCluster;
let raw: Etcd3;
const boards: EtcdHeadBoard[] = [];
const warnings: string[] = [];
/** Captures warnings, to see that garbage is reported (and that values are not logged). */
const log = pino({ level: "warn" }, { write: (line: string) => warnings.push(line) });

before(async () => {
  cluster = await startLocalEtcdCluster(tmp.path, 1);
  raw = new Etcd3({ hosts: cluster.endpoints });
});

after(async () => {
  for (const board of boards) await board.close().catch(() => {});
  raw?.close();
  await cluster?.stop();
  tmp.remove();
});

function board(prefix: string): EtcdHeadBoard {
  const b = new EtcdHeadBoard({ endpoints: cluster.endpoints, prefix, log, callTimeoutMs: 2000 });
  boards.push(b);
  return b;
}

const keys = [1, 2, 3].map((n) => keyPairFromSeed(new Uint8Array(32).fill(n)));

function head(key = keys[0], size = 1): SignedTreeHead {
  if (!key) throw new Error("no key");
  return signTreeHead(
    { size, root: randomBytes(32).toString("hex"), height: size, stateDigest: "0".repeat(64), time: 1000 + size },
    key,
  );
}

/** Collects what a subscription delivers; `until` waits for a condition on it. */
function collect(b: EtcdHeadBoard) {
  const seen: SignedTreeHead[] = [];
  const unsubscribe = b.subscribe((sth) => seen.push(sth));
  return {
    seen,
    unsubscribe,
    async until(check: (seen: SignedTreeHead[]) => boolean, what: string, ms = 10_000): Promise<void> {
      const deadline = Date.now() + ms;
      while (!check(seen)) {
        if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what} (seen ${seen.length})`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
  };
}

test("etcd board: heads published on one board reach another's subscribers, the existing ones first", async () => {
  const one = board("/careledger/net-1/");
  const two = board("/careledger/net-1/");
  const early = head(keys[0], 3);
  await one.publish(early);
  const sub = collect(two);
  await sub.until((s) => s.length === 1, "the head already on the board");
  assert.deepEqual(sub.seen[0], early);
  const later = head(keys[1], 7);
  const latest = head(keys[0], 4);
  await one.publish(later);
  await one.publish(latest);
  await sub.until((s) => s.length === 3, "the new heads");
  assert.deepEqual(sub.seen.slice(1), [later, latest]);
  // Under its signer's key, replaced by the latest.
  const stored = await raw.get(`/careledger/net-1/heads/${keys[0]?.keyId}`).string();
  assert.deepEqual(JSON.parse(stored ?? "null"), latest);
  // Another network's prefix is another board.
  const other = collect(board("/careledger/net-2/"));
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(other.seen, []);
  sub.unsubscribe();
  other.unsubscribe();
});

test("etcd board: garbage written straight into heads/ is ignored with a warning; good heads still arrive", async () => {
  const prefix = "/careledger/net-garbage/";
  const b = board(prefix);
  const sub = collect(b);
  await new Promise((r) => setTimeout(r, 200));
  warnings.length = 0;
  const misfiled = head(keys[1], 2);
  const malformed = { ...head(keys[0], 2), extra: 1 };
  await raw.put(`${prefix}heads/${keys[0]?.keyId}`).value("not json {");
  await raw.put(`${prefix}heads/${keys[0]?.keyId}`).value(JSON.stringify(malformed));
  await raw.put(`${prefix}heads/${keys[0]?.keyId}`).value(JSON.stringify(misfiled));
  await raw.put(`${prefix}heads/${keys[2]?.keyId}`).value("x".repeat(10_000));
  await raw.put(`${prefix}heads/nested/${keys[1]?.keyId}`).value(JSON.stringify(misfiled));
  const good = head(keys[0], 9);
  await b.publish(good);
  await sub.until((s) => s.length === 1, "the good head");
  assert.deepEqual(sub.seen, [good]);
  assert.equal(b.ignored, 5);
  // One warning per key, naming the key and the problem, never the value.
  assert.equal(warnings.length, 3, warnings.join(""));
  assert.ok(warnings.every((w) => !w.includes("not json") && !w.includes("xxxx")));
  assert.ok(warnings.some((w) => w.includes("another signer")));
  // A later subscriber's first read skips the garbage left on the board the same way.
  await raw.put(`${prefix}heads/${keys[2]?.keyId}`).value("[]");
  const late = collect(board(prefix));
  await late.until((s) => s.length === 1, "the good head on a first read");
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(late.seen, [good]);
  sub.unsubscribe();
  late.unsubscribe();
});

test("etcd board: after etcd restarts, publishing works again and subscribers keep receiving", async () => {
  const prefix = "/careledger/net-restart/";
  const publisher = board(prefix);
  const sub = collect(board(prefix));
  const before = head(keys[0], 1);
  await publisher.publish(before);
  await sub.until((s) => s.length === 1, "the first head");
  await cluster.restart(0);
  const afterRestart = head(keys[0], 2);
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await publisher.publish(afterRestart);
      break;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  await sub.until((s) => s.some((h) => h.size === 2), "the head published after the restart", 15_000);
  assert.deepEqual(sub.seen.at(-1), afterRestart);
  sub.unsubscribe();
});
