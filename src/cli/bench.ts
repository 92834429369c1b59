import { ConfigError } from "../node/datadir.ts";
import { interruptible } from "./interruptible.ts";

const BENCHMARKS = ["ledger", "consent", "verify", "fhir", "import", "cluster"] as const;

interface InterruptModule {
  runInterruptCleanups(): Promise<number>;
}

export interface BenchModule {
  run(options: { quick?: boolean; log?: (line: string) => void }): Promise<Record<string, unknown>>;
}

/**
 * `careledger bench NAME [--json]`: runs bench/NAME.ts. Progress goes to stderr; with --json the last line of stdout
 * is one JSON object holding the figures, the parameters and the machine limits measured in the same run.
 */
export async function benchCommand(name: string, options: { json?: boolean; quick?: boolean }): Promise<void> {
  if (!(BENCHMARKS as readonly string[]).includes(name)) {
    throw new ConfigError(`unknown benchmark ${name}; choose one of: ${BENCHMARKS.join(", ")}`);
  }
  const module = (await import(new URL(`../../bench/${name}.ts`, import.meta.url).href)) as BenchModule;
  const interrupt = (await import(new URL("../../bench/interrupt.ts", import.meta.url).href)) as InterruptModule;
  const log = (line: string) => process.stderr.write(`${line}\n`);
  // Ctrl-C or SIGTERM: stop what the benchmark started (`bench cluster`'s cluster runs detached from the terminal) and
  // remove its files.
  const result = await interruptible(
    `bench ${name}`,
    () => module.run({ quick: options.quick, log }),
    async () => {
      const failed = await interrupt.runInterruptCleanups();
      return failed === 0
        ? "stopped the processes it started and removed its files"
        : `stopped; ${failed} clean-up step(s) failed`;
    },
    log,
  );
  const line = JSON.stringify({ bench: name, date: new Date().toISOString(), ...result });
  if (options.json) process.stdout.write(`${line}\n`);
  else {
    for (const [key, value] of Object.entries(result)) process.stdout.write(`${key}: ${JSON.stringify(value)}\n`);
  }
}
