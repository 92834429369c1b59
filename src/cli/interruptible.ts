/**
 * Runs `work`, and on SIGINT or SIGTERM meanwhile runs `undo` instead of reporting what `work` does next, then exits as
 * the signal would have (130 / 143); a second signal exits at once. For commands that start detached processes
 * (`cluster up`, `bench cluster`): a signal ends the command without running its `finally` blocks, and processes
 * detached from the terminal do not get its SIGINT, so without this they would be left running.
 */
export async function interruptible<T>(
  label: string,
  work: () => Promise<T>,
  undo: () => Promise<string>,
  log: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): Promise<T> {
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    const code = signal === "SIGINT" ? 130 : 143;
    if (interrupted) process.exit(code);
    interrupted = true;
    log(`\n${label}: ${signal}; stopping what it started…`);
    undo().then(
      (done) => {
        log(`${label}: ${done}`);
        process.exit(code);
      },
      (error: Error) => {
        log(`${label}: could not undo everything: ${error.message}`);
        process.exit(code);
      },
    );
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const outcome = await work().then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  // Interrupted: whatever `work` did next (most likely fail as its processes were stopped) is not reported; `undo`
  // finishes and exits.
  if (interrupted) await new Promise<never>(() => {});
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  if ("error" in outcome) throw outcome.error;
  return outcome.value;
}
