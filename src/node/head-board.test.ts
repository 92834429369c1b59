import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { keyPairFromSeed } from "../ledger/keys.ts";
import { signTreeHead } from "../ledger/sth.ts";
import type { SignedTreeHead } from "../ledger/types.ts";
import { MemoryHeadBoard } from "./head-board.ts";

const keyA = keyPairFromSeed(new Uint8Array(32).fill(1));
const keyB = keyPairFromSeed(new Uint8Array(32).fill(2));

function head(key = keyA, size = 1): SignedTreeHead {
  return signTreeHead(
    { size, root: randomBytes(32).toString("hex"), height: size, stateDigest: "0".repeat(64), time: 1000 + size },
    key,
  );
}

const tick = () => new Promise((r) => setTimeout(r, 0));

test("memory board: a late subscriber gets each signer's latest head, then every new one; unsubscribe stops it", async () => {
  const board = new MemoryHeadBoard();
  await board.publish(head(keyA, 1));
  const a2 = head(keyA, 2);
  await board.publish(a2);
  const b1 = head(keyB, 1);
  await board.publish(b1);
  const seen: SignedTreeHead[] = [];
  const unsubscribe = board.subscribe((sth) => seen.push(sth));
  assert.deepEqual(seen, [], "delivered asynchronously, as over a network");
  await tick();
  assert.deepEqual(seen, [a2, b1]);
  const a3 = head(keyA, 3);
  await board.publish(a3);
  await tick();
  assert.deepEqual(seen, [a2, b1, a3]);
  unsubscribe();
  await board.publish(head(keyA, 4));
  await tick();
  assert.equal(seen.length, 3);
  assert.deepEqual(
    board.current().map((h) => [h.signer, h.size]),
    [
      [keyA.keyId, 4],
      [keyB.keyId, 1],
    ],
  );
  await board.close();
  await assert.rejects(board.publish(head()), /closed/);
});

test("memory board: subscribers get copies (one cannot change what another or the board holds)", async () => {
  const board = new MemoryHeadBoard();
  const got: SignedTreeHead[][] = [[], []];
  board.subscribe((sth) => {
    got[0]?.push(sth);
    sth.root = "f".repeat(64);
  });
  board.subscribe((sth) => got[1]?.push(sth));
  const original = head(keyA, 5);
  const root = original.root;
  await board.publish(original);
  await tick();
  assert.equal(got[1]?.[0]?.root, root);
  assert.equal(board.current()[0]?.root, root);
  await board.close();
});
