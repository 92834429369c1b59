import assert from "node:assert/strict";
import { test } from "node:test";
import { throttledLog } from "./etcd.ts";

test("a warning repeated while etcd is away is logged once per 10 s, with the count of repeats", () => {
  const lines: { obj: object; msg: string }[] = [];
  let t = 0;
  const log = throttledLog({ warn: (obj, msg) => lines.push({ obj, msg }), info: () => {} }, () => t);
  for (let i = 0; i < 50; i++) {
    log.warn({ reason: "down" }, "etcd watch interrupted");
    t += 300;
  }
  log.warn({}, "another message");
  assert.deepEqual(
    lines.map((l) => l.msg),
    ["etcd watch interrupted", "etcd watch interrupted", "another message"],
  );
  assert.deepEqual(lines[1]?.obj, { reason: "down", repeated: 33 });
});
