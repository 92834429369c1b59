// Errors the command line reports as one line (exit code 2). Apart from the modules that throw them, so that the CLI's
// entry module can recognise them without loading those modules for every command.

/** A user-facing problem with the data dir or configuration: reported as one line, exit code 2. */
export class ConfigError extends Error {}

/** A node refusing a request (halted, busy, a bad tx…), with the HTTP status it maps to. */
export class NodeError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(code: string, status: number, message: string) {
    super(message);
    this.code = code;
    this.status = status;
  }
}
