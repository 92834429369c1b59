import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { ConfigError, NodeError } from "../node/errors.ts";
import { StoreError } from "../store/errors.ts";
import { DEFAULT_OUT, DEFAULT_SEED } from "./generate-defaults.ts";
import { defineImportCommand } from "./import-command.ts";

/**
 * grpc-js (under the etcd client) sets TLS SNI to the host even when it is an IP address, and Node warns about that
 * (DEP0123) on every connection to etcd over TLS. The certificate is still checked against the address; to an
 * operator the warning is noise, so this one deprecation (and only it) is not printed.
 */
function quietGrpcServerNameWarning(): void {
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((...args: unknown[]) => {
    const code = typeof args[1] === "object" ? (args[1] as { code?: unknown } | null)?.code : args[2];
    if (code === "DEP0123") return;
    emit(...args);
  }) as typeof process.emitWarning;
}

/** Exit codes: 0 ok, 1 a check failed (verify), 2 bad usage or a problem the user must fix. */
export const EXIT_USAGE = 2;

export function parseCount(raw: string): number {
  if (!/^\d{1,6}$/.test(raw)) throw new InvalidArgumentError("must be a whole number");
  return Number(raw);
}

export function parsePort(raw: string): number {
  if (!/^\d{1,5}$/.test(raw) || Number(raw) > 65535) throw new InvalidArgumentError("must be a port number 0-65535");
  return Number(raw);
}

/**
 * A command's action, loaded when that command runs: each command loads only its own modules (the etcd client, the
 * HTTP stack, X.509 and the benchmarks are hundreds of modules that most commands never touch).
 */
// biome-ignore lint/suspicious/noExplicitAny: commander passes each action its own argument list
function lazy(load: () => Promise<(...args: any[]) => unknown>): (...args: any[]) => Promise<void> {
  return async (...args) => {
    await (await load())(...args);
  };
}

function program(): Command {
  const cli = new Command("careledger")
    .description("CareLedger: a permissioned ledger through which patients control who may see their health records")
    .version("0.1.0")
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      // commander's own errors become one line; --help and --version still print in full.
      // A suggestion ("Did you mean …?") comes on a second line: fold it into the one line.
      outputError: (message, write) =>
        write(
          `careledger: ${message
            .replace(/^error: /, "")
            .trim()
            .replace(/\s*\n\s*/g, " ")}\n`,
        ),
    });

  cli
    .command("init")
    .description("create a data dir: a new single-organisation network, or a node joining from a genesis file")
    .requiredOption("--dir <dir>", "data dir to create")
    .option("--org <name>", "the organisation's name (a new network)", "My Organisation")
    .option("--genesis <file>", "join an existing network from its genesis file instead")
    .option("--port <port>", "HTTP port to store in the config", parsePort)
    .option("--node-key <file>", "with --genesis: this node's key file (from `network create`) instead of a new key")
    .option("--orderer <url>", "with --genesis: embedded, or etcd://host:port[,host:port…] (etcds:// for TLS)")
    .option("--tls <dir>", "with --genesis: the node's TLS files (ca.pem, node.pem, node.key) from `network create`")
    .action(lazy(async () => (await import("./init.ts")).initCommand));

  const cluster = cli
    .command("cluster")
    .description("a whole network on this machine: etcd members and one node per org");
  cluster
    .command("up")
    .description("start N etcd members and N nodes on loopback (TLS from a generated CA) in the background")
    .requiredOption("--dir <dir>", "where the cluster keeps its data, keys and logs (new, or a cluster stopped before)")
    .option("--orgs <n>", "number of organisations (and etcd members), 1-9", parseCount, 3)
    .option("--base-port <port>", "first HTTP port for the nodes", parsePort, 7700)
    .action(async (options: { dir: string; orgs: number; basePort: number }) => {
      if (options.orgs < 1 || options.orgs > 9) throw new ConfigError("--orgs must be from 1 to 9");
      await (await import("./cluster.ts")).clusterUpCommand(options);
    });
  cluster
    .command("down")
    .description("stop a cluster started with cluster up (nodes first, then etcd); data is kept")
    .requiredOption("--dir <dir>", "the cluster's dir")
    .action(lazy(async () => (await import("./cluster.ts")).clusterDown));
  cluster
    .command("status")
    .description("list the cluster's processes and whether they run")
    .requiredOption("--dir <dir>", "the cluster's dir")
    .action(lazy(async () => (await import("./cluster.ts")).clusterStatus));

  const org = cli.command("org").description("a new organisation joins a running network");
  org
    .command("propose")
    .description("propose this node's organisation (signed by a new admin key kept in DIR/keys/admin.key)")
    .requiredOption("--dir <dir>", "the new organisation's node data dir (from init --genesis)")
    .requiredOption("--name <name>", "the organisation's name")
    .option("--kind <kind>", "gp, hospital, research, commercial or other", "other")
    .requiredOption("--url <url>", "a running node of the network to submit to")
    .option("--ca <file>", "the network's CA certificate, for an https URL")
    .action(lazy(async () => (await import("./org.ts")).orgProposeCommand));
  org
    .command("approve")
    .description("approve a proposed organisation, as an admin of an existing one")
    .requiredOption("--key <file>", "your organisation's admin key file")
    .requiredOption("--org <id>", "the proposed organisation's id")
    .requiredOption("--url <url>", "a running node of the network to submit to")
    .option("--ca <file>", "the network's CA certificate, for an https URL")
    .action(lazy(async () => (await import("./org.ts")).orgApproveCommand));

  const network = cli.command("network").description("found a multi-organisation network and issue certificates");
  network
    .command("create")
    .description("write a genesis for N organisations, their keys, the lookup key and a CA with TLS certificates")
    .requiredOption("--out <dir>", "directory for the founding files (must be new or empty)")
    .option("--orgs <n>", "number of organisations", parseCount, 3)
    .option("--name <name>", "the network's name", "CareLedger Network")
    .option("--names <list>", "the organisations' names, comma-separated")
    .option("--hosts <list>", "host names and IP addresses the node certificates are valid for", "localhost,127.0.0.1")
    .action(lazy(async () => (await import("./network.ts")).networkCreateCommand));
  network
    .command("cert")
    .description("issue a certificate from the network's CA (for an etcd member or another node)")
    .requiredOption("--ca <dir>", "the CA dir `network create` wrote (ca.pem, ca.key)")
    .requiredOption("--name <name>", "the party's name, e.g. etcd-1")
    .requiredOption("--out <dir>", "where to write NAME.pem, NAME.key and ca.pem")
    .option("--hosts <list>", "host names and IP addresses the certificate is valid for", "localhost,127.0.0.1")
    .action(lazy(async () => (await import("./network.ts")).networkCertCommand));

  cli
    .command("start")
    .description("run a node from its data dir until SIGTERM/SIGINT")
    .requiredOption("--dir <dir>", "the node's data dir")
    .option("--port <port>", "HTTP port (overrides config.json and CARELEDGER_PORT)", parsePort)
    .option("--host <host>", "address to listen on (default 127.0.0.1)")
    .action(lazy(async () => (await import("./start.ts")).startCommand));

  cli
    .command("demo")
    .description("generate a demo network (3 organisations, staff, patients, consent) and run its nodes")
    .option("--dir <dir>", "where to put the demo's data dirs", ".data/demo")
    .option("--port <port>", "first HTTP port; the nodes use this and the next two", parsePort, 7600)
    .option("--patients <n>", "how many patients to generate", (v) => positiveInt(v, 10_000), 12)
    .option("--fresh", "delete an existing demo in --dir first")
    .option("--orderer <url>", "embedded (default), or etcd://host:port[,…]: each demo node then orders through etcd")
    .action(lazy(async () => (await import("./demo.ts")).demoCommand));

  cli
    .command("verify")
    .description(
      "replay the ledger from genesis and check everything; exit 0 when all holds, 1 at the first bad height",
    )
    .addOption(new Option("--dir <dir>", "a node's data dir").conflicts("export"))
    .addOption(new Option("--export <file>", "an export file (JSON lines) instead of a data dir"))
    .option("--json", "print the report as JSON")
    .action(lazy(async () => (await import("./verify.ts")).verifyCommand));

  cli
    .command("export")
    .description("write the ledger's blocks as JSON lines, one block per line")
    .requiredOption("--dir <dir>", "the node's data dir")
    .option("--out <file>", "file to write (default: standard output)")
    .action(lazy(async () => (await import("./export.ts")).exportCommand));

  cli
    .command("generate")
    .description("write deterministic synthetic UK patients as FHIR transaction bundles")
    .requiredOption("--patients <n>", "how many patients (1-1000000)")
    .option("--seed <seed>", "the same seed gives the same patients", DEFAULT_SEED)
    .option("--out <dir>", "a directory (one file per patient), - for NDJSON on stdout, or FILE.ndjson", DEFAULT_OUT)
    .option("--now <date>", "the generated world's today (default 2025-06-30T12:00:00Z)")
    .action(lazy(async () => (await import("./generate.ts")).generateCommand));

  defineImportCommand(cli);

  cli
    .command("token")
    .description("print a bearer token for the FHIR API, for an identity whose key is in the data dir")
    .requiredOption("--dir <dir>", "the demo dir, or a node's data dir")
    .requiredOption("--as <name>", "a name from DIR/demo-users.json, or a key file")
    .option("--purpose <code>", "purpose of use (v3 PurposeOfUse: TREAT, ETREAT, HRESCH, …)")
    .option("--scope <scopes>", "SMART scopes to ask for (default: all the identity may have)")
    .option("--patient <id>", "for a proxy: the patient to act for")
    .option("--node <name>", "which node issues the token (a data dir name under --dir)")
    .option("--url <url>", "the node's base URL when its config does not say (port 0)")
    .action(
      lazy(async () => {
        const { tokenCommand } = await import("./token.ts");
        return (options: Parameters<typeof tokenCommand>[0]) => tokenCommand(options); // not commander's 2nd argument
      }),
    );

  cli
    .command("bench")
    .description("run a benchmark: ledger | consent | verify | fhir | import | cluster")
    .argument("<name>", "which benchmark")
    .option("--json", "print the result as one JSON object on the last line")
    .option("--quick", "a short run with smaller parameters (for smoke tests)")
    .action(lazy(async () => (await import("./bench.ts")).benchCommand));

  return cli;
}

function positiveInt(raw: string, max: number): number {
  if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > max) {
    throw new InvalidArgumentError(`must be a whole number from 1 to ${max}`);
  }
  return Number(raw);
}

quietGrpcServerNameWarning();

/**
 * `careledger export | head`, `careledger cluster status | grep …`: when the reader goes away, stop quietly as other
 * command-line tools do, instead of a stack trace from the broken pipe.
 */
function exitQuietlyOnClosedPipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "EPIPE") process.exit(process.exitCode ?? 0);
      throw error;
    });
  }
}
exitQuietlyOnClosedPipe();

export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv, { from: "user" });
    return Number(process.exitCode ?? 0);
  } catch (error) {
    if (error instanceof CommanderError) {
      // help and version are "errors" to commander but successes to the user.
      if (
        error.code === "commander.helpDisplayed" ||
        error.code === "commander.version" ||
        error.code === "commander.help"
      ) {
        return 0;
      }
      return EXIT_USAGE;
    }
    if (error instanceof ConfigError || error instanceof StoreError || error instanceof NodeError) {
      process.stderr.write(`careledger: ${error.message}\n`);
      return EXIT_USAGE;
    }
    process.stderr.write(`careledger: unexpected error: ${(error as Error).message}\n`);
    if (process.env.CARELEDGER_DEBUG) process.stderr.write(`${(error as Error).stack}\n`);
    return 1;
  }
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
