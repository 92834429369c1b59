// Apart from the ledger store, so that the CLI's entry module can recognise it without loading the store.

/** The ledger's files are missing, damaged or in use: reported by the CLI as one line. */
export class StoreError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}
