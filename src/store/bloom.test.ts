import assert from "node:assert/strict";
import { test } from "node:test";
import { BloomFilter } from "./bloom.ts";

test("a Bloom filter never forgets what it holds and rarely claims what it does not", () => {
  const bloom = new BloomFilter(20_000);
  for (let i = 0; i < 20_000; i++) bloom.add(`key-${i}`);
  for (let i = 0; i < 20_000; i++) assert.equal(bloom.mayContain(`key-${i}`), true);
  let falsePositives = 0;
  for (let i = 0; i < 20_000; i++) if (bloom.mayContain(`other-${i}`)) falsePositives++;
  assert.ok(falsePositives < 20_000 * 0.03, `false-positive rate ${falsePositives / 20_000} should stay near 1%`);
  assert.equal(bloom.full, false);
  bloom.add("one more");
  assert.equal(bloom.full, true);
});
