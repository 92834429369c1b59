// The `import` command's definition, apart from the import itself (the FHIR stack, the vault, the node), which its
// action loads: `careledger --help` and every other command start without it.
import { type Command, InvalidArgumentError } from "commander";
import type { ImportCommandOptions } from "./import.ts";

/** Adds `careledger import` to the program (src/cli/main.ts). */
export function defineImportCommand(cli: Command): Command {
  return cli
    .command("import")
    .description(
      "import FHIR R4 data into a stopped node: transaction Bundles (.json), NDJSON of Bundles (.ndjson from " +
        "careledger generate), bare resources; directories are expanded. Each bundle is stored all or nothing",
    )
    .argument("<files...>", "files or directories to import")
    .requiredOption("--dir <dir>", "the node's data dir")
    .option("--key <file>", "key file that signs patient registrations (default DIR/keys/admin.key)")
    .option("--max-entries <n>", "largest bundle in entries (default 5000)", (v) => {
      if (!/^\d{1,6}$/.test(v) || Number(v) < 1) throw new InvalidArgumentError("must be a whole number ≥ 1");
      return Number(v);
    })
    .action(async (files: string[], options: ImportCommandOptions) => {
      await (await import("./import.ts")).importCommand(files, options);
    });
}
