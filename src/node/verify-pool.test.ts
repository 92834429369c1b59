import assert from "node:assert/strict";
import { after, test } from "node:test";
import { keyPairFromSeed } from "../ledger/keys.ts";
import { signTx, txId } from "../ledger/tx.ts";
import type { SignedTx } from "../ledger/types.ts";
import { VerifyPool } from "./verify-pool.ts";

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
