// Ports for etcd members: picked where no outgoing connection can take them before etcd binds them.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { test } from "node:test";
import { freeServerPort } from "./etcd-launcher.ts";

test("freeServerPort: distinct, bindable ports below the kernel's ephemeral range", async () => {
  const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
  const ports = [];
  for (let i = 0; i < 20; i++) ports.push(await freeServerPort());
  assert.equal(new Set(ports).size, ports.length, "never the same port twice");
  for (const port of ports) {
    assert.ok(port >= 10_000 && port < low, `${port} is outside [10000, ${low})`);
    await new Promise<void>((resolve, reject) => {
      const server = createServer();
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => server.close(() => resolve()));
    });
  }
});
