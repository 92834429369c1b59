// Ports for etcd members: picked where no outgoing connection can take them before etcd binds them.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { etcdClient } from "./etcd-client.ts";
import { freeServerPort, startLocalEtcdCluster } from "./etcd-launcher.ts";

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

test("members commit their backend about once a second however often they are written to", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "careledger-etcd-launcher-"));
  const cluster = await startLocalEtcdCluster(join(dir, "etcd"), 1);
  const client = etcdClient(cluster.endpoints);
  t.after(async () => {
    client.close();
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  });
  const endpoint = cluster.endpoints[0] as string;
  const backendCommits = async () => {
    const text = await (await fetch(`${endpoint}/metrics`)).text();
    const line = /^etcd_disk_backend_commit_duration_seconds_count (\d+)/m.exec(text);
    assert.ok(line, "etcd reports its backend commits");
    return Number(line[1]);
  };
  await client.put("warm-up").value("1");
  const before = await backendCommits();
  const started = performance.now();
  let puts = 0;
  while (performance.now() - started < 2000) {
    await client.put(`k/${puts++}`).value("v");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const commits = (await backendCommits()) - before;
  // etcd's default (100 ms) would have committed ~20 times over these 2 s of writes.
  assert.ok(puts > 50, `${puts} puts`);
  assert.ok(commits >= 1 && commits <= 4, `${commits} backend commits for ${puts} puts over 2 s`);
});
