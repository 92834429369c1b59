// The `generate` command's defaults, apart from the generator, so that defining the command (for --help) loads nothing
// else.

/** Where `careledger generate` writes when `--out` is not given (`.data/` is git-ignored). */
export const DEFAULT_OUT = ".data/generated";
export const DEFAULT_SEED = "careledger";
