import { attachFhir } from "../fhir/server.ts";
import { openNode } from "../node/runtime.ts";

const STOP_DEADLINE_MS = 20_000;

export async function startCommand(options: { dir: string; port?: number; host?: string }): Promise<void> {
  const running = await openNode(options.dir, {
    flags: { port: options.port, host: options.host },
    extend: attachFhir,
  });
  // Signal handlers go in before the node says where it listens: whoever reads that line may stop it at once.
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      process.stdout.write(`${signal}: stopping (finishing txs already accepted)…\n`);
      // Whatever hangs (an unreachable etcd, a stuck peer), the process ends: every write is already durable or not
      // acknowledged, so exiting is safe.
      setTimeout(() => {
        process.stderr.write(`careledger: did not stop within ${STOP_DEADLINE_MS / 1000} s; exiting anyway\n`);
        process.exit(1);
      }, STOP_DEADLINE_MS).unref();
      running
        .close()
        .catch((error: Error) => process.stderr.write(`careledger: error while stopping: ${error.message}\n`))
        .finally(() => {
          resolve();
          // Closed: nothing is left to write. gRPC's channels to an etcd member that went away can keep reconnect and
          // keepalive timers alive for a while; they must not keep the process.
          setTimeout(() => process.exit(process.exitCode ?? 0), 1000).unref();
        });
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
    running.node.once("halt", (reason: string) => {
      process.stderr.write(`careledger: node halted and refuses writes: ${reason}\n`);
    });
  });
  const head = running.node.store.head();
  process.stdout.write(
    `careledger node ${running.node.key.keyId.slice(0, 16)}… at height ${head?.height ?? 0}, listening on ${running.url}\n` +
      `  try: curl ${running.url}/ledger/head\n`,
  );
  await stopped;
}
