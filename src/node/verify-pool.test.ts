import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { keyPairFromSeed } from "../ledger/keys.ts";
import { signTx, txId } from "../ledger/tx.ts";
import type { SignedTx } from "../ledger/types.ts";
import { NODE_INLINE_MAX_TXS, nodeVerifyPool, VerifyPool } from "./verify-pool.ts";

const pool = new VerifyPool(2);
after(() => pool.close());

const key = keyPairFromSeed(new Uint8Array(32).fill(7));
const other = keyPairFromSeed(new Uint8Array(32).fill(8));

function tx(n: number): { tx: SignedTx; id: string } {
  const signed = signTx(
    { type: "t.x", payload: { n }, signer: key.keyId, nonce: n.toString(16).padStart(16, "0"), createdAt: n },
    key,
  );
  return { tx: signed, id: txId(signed) };
}

test("answers in input order across workers and slices: good signatures true, bad ones false", async () => {
  const items = Array.from({ length: 200 }, (_, i) => tx(i));
  // Every 7th tx carries another key's signature over its id; every 11th claims another signer.
  for (let i = 0; i < items.length; i += 7) {
    const item = items[i] as { tx: SignedTx; id: string };
    item.tx = { ...item.tx, sig: signTx({ ...item.tx, signer: other.keyId }, other).sig };
  }
  for (let i = 5; i < items.length; i += 11) {
    const item = items[i] as { tx: SignedTx; id: string };
    item.tx = { ...item.tx, signer: other.keyId };
  }
  const ok = await pool.verify(items);
  assert.deepEqual(
    ok,
    items.map((_, i) => i % 7 !== 0 && (i - 5) % 11 !== 0),
  );
});

test("malformed fields fail alone: they cannot shift the answers of the txs after them", async () => {
  const items = Array.from({ length: 6 }, (_, i) => tx(1000 + i));
  const broken = items[1] as { tx: SignedTx; id: string };
  broken.tx = { ...broken.tx, sig: `${broken.tx.sig}\n${(items[2] as { tx: SignedTx }).tx.sig}` };
  const spaced = items[3] as { tx: SignedTx; id: string };
  spaced.tx = { ...spaced.tx, signer: `${spaced.tx.signer} x` };
  assert.deepEqual(await pool.verify(items), [true, false, true, false, true, true]);
  assert.deepEqual(await pool.verify([]), []);
});

test("a pool with inlineMaxTxs checks jobs that small on the calling thread, larger ones on workers: same answers", async () => {
  const inline = new VerifyPool(2, { inlineMaxTxs: 10 });
  try {
    const items = Array.from({ length: 30 }, (_, i) => tx(2000 + i));
    // Every 4th signed by another key over the same id.
    for (let i = 0; i < items.length; i += 4) {
      const item = items[i] as { tx: SignedTx; id: string };
      item.tx = { ...item.tx, sig: signTx({ ...item.tx, signer: other.keyId }, other).sig };
    }
    const expected = items.map((_, i) => i % 4 !== 0);
    const small = items.slice(0, 10);
    assert.deepEqual(await inline.verify(small), expected.slice(0, 10));
    assert.deepEqual(inline.checked, { inline: 10, onWorkers: 0 });
    assert.deepEqual(await inline.verify(items), expected);
    assert.deepEqual(inline.checked, { inline: 10, onWorkers: 30 });
    // Throughput work asks for the workers whatever its size.
    assert.deepEqual(await inline.verify(small, { inline: false }), expected.slice(0, 10));
    assert.deepEqual(inline.checked, { inline: 10, onWorkers: 40 });
    // Malformed fields fail alone on this thread too.
    const odd = Array.from({ length: 3 }, (_, i) => tx(3000 + i));
    const broken = odd[1] as { tx: SignedTx; id: string };
    broken.tx = { ...broken.tx, sig: "not base64url!" };
    assert.deepEqual(await inline.verify(odd), [true, false, true]);
    // The default pool sends every job to its workers.
    assert.deepEqual(await pool.verify(small), expected.slice(0, 10));
    assert.equal(pool.checked.inline, 0);
  } finally {
    await inline.close();
  }
});

/** Runs `lines` as an ES module in a child process (importing the pool) and reports how it ended. */
async function runChild(
  lines: string[],
): Promise<{ code: number | null; signal: string | null; out: string; err: string }> {
  const dir = mkdtempSync(join(tmpdir(), "verify-pool-"));
  try {
    const file = join(dir, "child.mjs");
    const pool = JSON.stringify(new URL("./verify-pool.ts", import.meta.url).href);
    writeFileSync(file, [`import { VerifyPool } from ${pool};`, ...lines].join("\n"));
    const child = spawn(process.execPath, [file], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const [code, signal] = (await once(child, "exit")) as [number | null, string | null];
    clearTimeout(timer);
    return { code, signal, out: out.trim(), err };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("a pool keeps its process alive while it has a job, and not when idle", { timeout: 30_000 }, async () => {
  // A child that verifies and never closes its pool: it must see the answer (a job in flight holds the process) and
  // then exit by itself (idle workers do not).
  const child = await runChild([
    "const pool = new VerifyPool(2);",
    `console.log(JSON.stringify(await pool.verify(${JSON.stringify([tx(1), tx(2)])})));`,
  ]);
  assert.equal(child.signal, null, "the process did not exit by itself");
  assert.deepEqual([child.code, child.out], [0, "[true,true]"], child.err);
});

test("close() holds the process until the workers have ended, even with answers still coming", {
  timeout: 30_000,
}, async () => {
  // Jobs left in flight, then close awaited at the top level: an answer arriving meanwhile must not let go of the
  // event loop before the workers are gone (the CLI's verify awaits close this way).
  const child = await runChild([
    "const pool = new VerifyPool(2);",
    `const items = ${JSON.stringify(Array.from({ length: 400 }, (_, i) => tx(i)))};`,
    "pool.verify(items).catch(() => {});",
    // Busy meanwhile (as the CLI is, applying blocks): the answers wait in the port's queue when close() is called.
    "for (const until = Date.now() + 300; Date.now() < until; );",
    "await pool.close();",
    'console.log("closed");',
  ]);
  assert.deepEqual([child.signal, child.code, child.out], [null, 0, "closed"], child.err);
});

test("a node's pool checks small jobs on its own thread only while the machine is busy; larger ones on workers", async () => {
  const machine = { busy: true };
  const nodePool = nodeVerifyPool(2, machine);
  try {
    const small = Array.from({ length: 25 }, (_, i) => tx(4000 + i));
    const large = Array.from({ length: NODE_INLINE_MAX_TXS + 1 }, (_, i) => tx(5000 + i));
    const all = (n: number) => Array.from({ length: n }, () => true);
    assert.deepEqual(await nodePool.verify(small), all(25));
    assert.deepEqual(nodePool.checked, { inline: 25, onWorkers: 0 });
    assert.deepEqual(await nodePool.verify(large), all(large.length));
    assert.deepEqual(nodePool.checked, { inline: 25, onWorkers: large.length });
    // Cores idle: a hand-off waits for nothing and the workers check in parallel.
    machine.busy = false;
    assert.deepEqual(await nodePool.verify(small), all(25));
    assert.deepEqual(nodePool.checked, { inline: 25, onWorkers: large.length + 25 });
    // Asked again for each job.
    machine.busy = true;
    assert.deepEqual(await nodePool.verify(small), all(25));
    assert.deepEqual(nodePool.checked, { inline: 50, onWorkers: large.length + 25 });
  } finally {
    await nodePool.close();
  }
});
