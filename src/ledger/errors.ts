/**
 * The one error type the ledger layer throws. `code` is a stable machine-readable reason so callers (API handlers,
 * the contract, the CLI) can branch on it without parsing messages.
 */
export class LedgerError extends Error {
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = "LedgerError";
    this.code = code;
  }
}
