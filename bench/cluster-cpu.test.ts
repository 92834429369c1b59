// Unit test of `bench cluster`'s CPU summary: where a load phase's CPU went, per committed tx.
import assert from "node:assert/strict";
import { test } from "node:test";
import { AUDIT_INDEX_THREAD } from "../src/fhir/service/audit.ts";
import { SIGNATURE_THREAD } from "../src/node/verify-pool.ts";
import { CHECKPOINT_THREAD } from "../src/store/checkpointer.ts";
import { cpuPerCommittedTx } from "./cluster.ts";

const processes = [
  { name: "etcd-1", kind: "etcd" as const },
  { name: "etcd-2", kind: "etcd" as const },
  { name: "a", kind: "node" as const },
  { name: "b", kind: "node" as const },
];

test("CPU per committed tx: node threads summed by part over the nodes, etcd's members, the load; two cores' capacity", () => {
  const summary = cpuPerCommittedTx(
    {
      tx_per_s: 2000,
      cpu_cores: { "etcd-1": 0.1, "etcd-2": 0.1, a: 0.5, b: 0.4, load: 0.1 },
      cpu_cores_by_thread: {
        a: { MainThread: 0.25, [SIGNATURE_THREAD]: 0.15, V8Worker: 0.05, "libuv-worker": 0.01 },
        b: { MainThread: 0.2, [SIGNATURE_THREAD]: 0.15, [AUDIT_INDEX_THREAD]: 0.04, [CHECKPOINT_THREAD]: 0.01 },
      },
    },
    processes,
  );
  assert.deepEqual(summary, {
    cpu_us_per_tx: {
      etcd: 100,
      node_main_threads: 225,
      signature_checks: 150,
      v8_gc_and_compiler: 25,
      // a: 0.5 − 0.45 named (its libuv thread is not a part of its own); b: 0.4 − 0.4.
      node_other: 25,
      audit_index: 20,
      checkpoints: 5,
      load: 50,
      total: 600,
    },
    cores_used: 1.2,
    two_core_capacity_tx_per_s: 3333,
  });
});

test("CPU per committed tx: nothing when the phase committed nothing or was not measured by thread", () => {
  const cores = { "etcd-1": 0.1, a: 0.5, load: 0.1 };
  assert.equal(
    cpuPerCommittedTx({ tx_per_s: 0, cpu_cores: cores, cpu_cores_by_thread: { a: {} } }, processes),
    undefined,
  );
  assert.equal(cpuPerCommittedTx({ tx_per_s: 100, cpu_cores: cores }, processes), undefined);
});
