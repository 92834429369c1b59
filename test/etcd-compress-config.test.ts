// `compressBatches` in a data dir's config.json reaches the etcd orderer a node opens: the batches it writes into etcd
// are deflated by default (a 0x00 byte, then raw deflate) and plain canonical JSON when the config says false.

import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { initNetwork } from "../src/node/network.ts";
import { etcdClient } from "../src/ordering/etcd-client.ts";
import { commitOne, etcdForThisFile } from "./support-commit.ts";

const work = etcdForThisFile("etcd-compress-config");

/** Commits one tx through a node whose config has `compressBatches` as given; returns the first bytes of its batches. */
async function batchesWritten(name: string, compressBatches: boolean | undefined): Promise<number[]> {
  const dir = join(work.path, name);
  const prefix = `/careledger/compress-${name}/`;
  initNetwork(dir, {
    orgName: `Compress ${name}`,
    config: {
      orderer: {
        kind: "etcd",
        endpoints: work.etcd().endpoints,
        prefix,
        ...(compressBatches === undefined ? {} : { compressBatches }),
      },
    },
  });
  await commitOne(dir);
  const client = etcdClient(work.etcd().endpoints);
  try {
    const values = await client.getAll().prefix(`${prefix}b/`).buffers();
    return Object.values(values).map((value) => value[0] as number);
  } finally {
    client.close();
  }
}

test("a node's etcd batches are deflated by default and plain when config.json says compressBatches: false", async () => {
  const deflated = await batchesWritten("default", undefined);
  assert.ok(deflated.length >= 1, "the node wrote its batch");
  assert.ok(
    deflated.every((first) => first === 0x00),
    `deflated: ${deflated}`,
  );
  const plain = await batchesWritten("plain", false);
  assert.ok(plain.length >= 1, "the node wrote its batch");
  assert.ok(
    plain.every((first) => first === "{".charCodeAt(0)),
    `plain JSON: ${plain}`,
  );
});
