import assert from "node:assert/strict";
import { test } from "node:test";
import { RegistryPeerDirectory, StaticPeerDirectory } from "./directory.ts";

test("a registry directory answers from the last read of the node's peer registry; a failed read keeps it", async () => {
  let entries = [
    { keyId: "a".repeat(64), org: "trust", url: "https://trust.example:7600/" },
    { keyId: "b".repeat(64), org: "trust", url: "https://trust2.example:7600" },
    { keyId: "c".repeat(64), org: "gp", url: "https://gp.example:7600" },
  ];
  let failing = false;
  const directory = new RegistryPeerDirectory(
    {
      list: async () => {
        if (failing) throw new Error("etcd unreachable");
        return entries;
      },
    },
    5000,
    0,
  );
  try {
    assert.equal(directory.urlOf("trust"), undefined, "nothing known before the first read");
    await directory.refresh();
    assert.equal(directory.urlOf("trust"), "https://trust.example:7600", "the first node listed, no trailing slash");
    assert.equal(directory.urlOf("gp"), "https://gp.example:7600");
    assert.equal(directory.urlOf("uni"), undefined);
    failing = true;
    await directory.refresh();
    assert.equal(directory.urlOf("gp"), "https://gp.example:7600", "kept while the registry cannot be read");
    failing = false;
    entries = [{ keyId: "c".repeat(64), org: "gp", url: "https://gp-new.example:7600" }];
    await directory.refresh();
    assert.equal(directory.urlOf("gp"), "https://gp-new.example:7600");
    assert.equal(directory.urlOf("trust"), undefined, "a node no longer announced is forgotten");
  } finally {
    directory.close();
  }
});

test("a registry directory asked again soon after a read reads once more when the interval allows, not never", async () => {
  let entries = [{ keyId: "c".repeat(64), org: "gp", url: "https://gp.example:7600" }];
  let reads = 0;
  const directory = new RegistryPeerDirectory(
    {
      list: async () => {
        reads++;
        return entries;
      },
    },
    60_000,
    200,
  );
  try {
    await directory.refresh();
    assert.equal(directory.urlOf("trust"), undefined);
    // The trust's node announces itself just after the last read; a lookup that misses asks for a refresh.
    entries = [...entries, { keyId: "a".repeat(64), org: "trust", url: "https://trust.example:7600" }];
    const started = performance.now();
    await Promise.all([directory.refresh(), directory.refresh()]);
    assert.equal(directory.urlOf("trust"), "https://trust.example:7600");
    assert.equal(reads, 2, "callers at the same time share one read");
    assert.ok(performance.now() - started >= 150, "no sooner than the minimum interval after the last read");
  } finally {
    directory.close();
  }
});

test("a static directory takes http(s) URLs only", () => {
  const directory = new StaticPeerDirectory({ gp: "http://127.0.0.1:7600/" });
  assert.equal(directory.urlOf("gp"), "http://127.0.0.1:7600");
  assert.throws(() => directory.set("x", "file:///etc/passwd"), RangeError);
});
