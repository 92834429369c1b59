import cliProgress from "cli-progress";

/** A progress bar on stderr when it is a terminal; silent otherwise (pipes, CI, tests). */
export function progressBar(label: string, total: number, unit: string) {
  if (!process.stderr.isTTY) {
    return { update(_value: number) {}, stop() {} };
  }
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {percentage}% | {value}/{total} ${unit} | {eta_formatted} left`,
      stream: process.stderr,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0);
  return {
    update(value: number) {
      bar.update(value);
    },
    stop() {
      bar.stop();
    },
  };
}
