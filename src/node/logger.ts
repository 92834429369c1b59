import { pino } from "pino";

export type Logger = pino.Logger;

/**
 * Structured logs on stderr, so stdout stays free for command output (export, bench JSON). Keys and tokens are never
 * logged; the redact list is a second line of defence for fields that might carry them.
 */
export function createLogger(level: string = process.env.CARELEDGER_LOG_LEVEL ?? "info"): Logger {
  return pino(
    {
      level,
      base: { app: "careledger" },
      redact: {
        paths: ["seed", "privateKey", "*.seed", "*.privateKey", "authorization", "*.authorization"],
        censor: "[redacted]",
      },
    },
    pino.destination({ fd: 2, sync: false }),
  );
}

export const silentLogger: Logger = pino({ level: "silent" });
