import { ConfigError } from "../node/datadir.ts";

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
  // Ctrl-C or SIGTERM: stop what the benchmark started (its cluster runs detached from the terminal) and remove its
  // files, then exit as the signal would have. A second signal exits at once.
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    const code = signal === "SIGINT" ? 130 : 143;
    if (interrupted) process.exit(code);
    interrupted = true;
    log(`\nbench ${name}: ${signal}; stopping the processes it started and removing its files…`);
    interrupt.runInterruptCleanups().then((failed) => {
      log(failed === 0 ? `bench ${name}: stopped` : `bench ${name}: stopped; ${failed} clean-up step(s) failed`);
      process.exit(code);
    });
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  // Once interrupted, what the run does next (fail as its processes are killed, most likely) is not reported: the
  // clean-ups finish and exit.
  const outcome = await module.run({ quick: options.quick, log }).then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  if (interrupted) await new Promise<never>(() => {});
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  if ("error" in outcome) throw outcome.error;
  const result = outcome.value;
  const line = JSON.stringify({ bench: name, date: new Date().toISOString(), ...result });
  if (options.json) process.stdout.write(`${line}\n`);
  else {
    for (const [key, value] of Object.entries(result)) process.stdout.write(`${key}: ${JSON.stringify(value)}\n`);
  }
}
