// The `careledger` command as a user runs it, in real child processes: --help for every command, usage errors as
// one line and exit 2, init (new network, joining from a genesis file, refusing a tampered one), export to stdout
// and to a file, and verify of a data dir and of an export — including exports altered after the fact.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { MemoryState } from "../src/contract/index.ts";
import { blockHash, GENESIS_PREV_HASH, INITIAL_STATE_DIGEST } from "../src/ledger/block.ts";
import { EMPTY_FRONTIER } from "../src/ledger/merkle.ts";
import { txId } from "../src/ledger/tx.ts";
import type { Block } from "../src/ledger/types.ts";
import { buildBlock } from "../src/node/block-builder.ts";
import { CLI, type CliResult, runCli, startNode, stopNode, tempDir } from "./helpers.ts";
import { accessLogTx, call, enrolTx, newNetwork, openTestNode, registerTx } from "./support-net.ts";

const work = tempDir("cli");
after(() => work.remove());

/** Exit 2, nothing on stdout, exactly one line on stderr starting "careledger: ", matching `message`. */
function assertUsageError(result: CliResult, message: RegExp): void {
  assert.equal(result.code, 2, `exit code: ${result.stdout} ${result.stderr}`);
  assert.equal(result.stdout, "");
  const lines = result.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `one line on stderr, got: ${result.stderr}`);
  assert.match(lines[0] as string, /^careledger: /);
  assert.match(lines[0] as string, message);
}

describe("--help", () => {
  // The forms README documents, flag by flag.
  const commands: [string, RegExp[]][] = [
    ["init", [/--dir <dir>/, /--org <name>/, /--genesis <file>/]],
    ["start", [/--dir <dir>/, /--port <port>/]],
    ["demo", [/--dir <dir>/, /--port <port>/, /--patients <n>/, /--fresh/]],
    ["verify", [/--dir <dir>/, /--export <file>/]],
    ["export", [/--dir <dir>/, /--out <file>/]],
    ["bench", [/ledger/, /consent/, /verify/, /--json/]],
  ];
  for (const [command, forms] of commands) {
    test(`careledger ${command} --help`, async () => {
      const result = await runCli([command, "--help"]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, new RegExp(`^Usage: careledger ${command} `));
      for (const form of forms) assert.match(result.stdout, form);
      assert.equal(result.stderr, "");
    });
  }

  test("careledger --help lists every command", async () => {
    const result = await runCli(["--help"]);
    assert.equal(result.code, 0);
    for (const [command] of commands) assert.match(result.stdout, new RegExp(`^\\s+${command}\\b`, "m"));
  });
});

describe("usage errors: one line on stderr, exit 2", () => {
  const missing = join(work.path, "no-such-dir");
  const cases: [string, string[], RegExp][] = [
    ["an unknown flag (init)", ["init", "--dir", join(work.path, "x"), "--wat"], /unknown option '--wat'/],
    ["an unknown flag (start)", ["start", "--dir", missing, "--bogus"], /unknown option '--bogus'/],
    ["an unknown flag (verify)", ["verify", "--dir", missing, "--deep"], /unknown option '--deep'/],
    ["an unknown flag (export)", ["export", "--dir", missing, "--gzip"], /unknown option '--gzip'/],
    ["an unknown flag (demo)", ["demo", "--nodes", "5"], /unknown option '--nodes'/],
    ["an unknown flag (bench)", ["bench", "ledger", "--fast"], /unknown option '--fast'/],
    ["an unknown command", ["frobnicate"], /unknown command 'frobnicate'/],
    ["a bad port", ["start", "--dir", missing, "--port", "99999"], /--port.*port number 0-65535/],
    ["a bad patient count", ["demo", "--patients", "0"], /--patients.*whole number/],
    ["start without --dir", ["start"], /required option '--dir <dir>' not specified/],
    ["export without --dir", ["export"], /required option '--dir <dir>' not specified/],
    ["verify without --dir or --export", ["verify"], /verify needs --dir DIR or --export FILE/],
    ["verify with both --dir and --export", ["verify", "--dir", missing, "--export", "f"], /cannot be used with/],
    ["an unknown benchmark", ["bench", "nope"], /unknown benchmark nope; choose one of: ledger, consent, verify/],
    [
      "start: a missing data dir",
      ["start", "--dir", missing],
      /data dir .*no-such-dir does not exist; create one with: careledger init/,
    ],
    ["verify: a missing data dir", ["verify", "--dir", missing], /data dir .*no-such-dir does not exist/],
    ["export: a missing data dir", ["export", "--dir", missing], /data dir .*no-such-dir does not exist/],
    [
      "verify: a missing export file",
      ["verify", "--export", join(missing, "x.jsonl")],
      /export file .* does not exist/,
    ],
  ];
  for (const [name, args, message] of cases) {
    test(name, async () => assertUsageError(await runCli(args), message));
  }

  test("start, verify and export on a dir that is not a data dir", async () => {
    const empty = join(work.path, "just-a-dir");
    mkdirSync(empty);
    for (const command of ["start", "verify", "export"]) {
      assertUsageError(await runCli([command, "--dir", empty]), /is not a CareLedger data dir/);
    }
  });

  for (const [name, config, message] of [
    ["an unknown setting", '{"prot": 1}', /unknown setting prot in .*config\.json; known: host, port/],
    ["a setting named like an Object property", '{"constructor": 1}', /unknown setting constructor in .*config\.json/],
    ["__proto__ as a setting", '{"__proto__": {"port": 1}}', /unknown setting __proto__ in .*config\.json/],
    ["a bad value", '{"port": "high"}', /setting port in .*config\.json/],
    ["not JSON", "{port: 1}", /config\.json is not valid JSON/],
  ] as const) {
    test(`config.json with ${name} is refused by start, naming it`, async () => {
      const dir = join(work.path, `config-${name.replaceAll(" ", "-")}`);
      assert.equal((await runCli(["init", "--dir", dir])).code, 0);
      writeFileSync(join(dir, "config.json"), config);
      assertUsageError(await runCli(["start", "--dir", dir]), message);
    });
  }

  test("a bad setting in the environment names the setting and where it came from", async () => {
    const dir = join(work.path, "env-setting");
    assert.equal((await runCli(["init", "--dir", dir])).code, 0);
    const result = await runCli(["start", "--dir", dir], { env: { CARELEDGER_BATCH_MAX_TXS: "0" } });
    assertUsageError(result, /batchMaxTxs in the environment \(CARELEDGER_\*\)/);
  });
});

describe("init", () => {
  test("a new network: admin key, node key and genesis; a second init into it is refused", async () => {
    const dir = join(work.path, "init-new");
    const result = await runCli(["init", "--dir", dir, "--org", "St Elsewhere GP"]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /a new network with one organisation, st-elsewhere-gp/);
    for (const file of ["genesis.json", "node.key", "keys/admin.key"]) assert.ok(existsSync(join(dir, file)), file);
    const genesis = JSON.parse(readFileSync(join(dir, "genesis.json"), "utf8")) as Block;
    assert.match(result.stdout, new RegExp(`give it to nodes that join, with its hash ${blockHash(genesis)}`));
    assertUsageError(await runCli(["init", "--dir", dir]), /is not empty; choose a new directory/);
    // A dir with any file in it counts as in use.
    const used = join(work.path, "init-used");
    mkdirSync(used);
    writeFileSync(join(used, "notes.txt"), "mine\n");
    assertUsageError(await runCli(["init", "--dir", used]), /is not empty/);
  });

  test("--genesis FILE: a node joins, starts and holds the same genesis block", async () => {
    const founder = join(work.path, "join-founder");
    const joiner = join(work.path, "join-joiner");
    assert.equal((await runCli(["init", "--dir", founder])).code, 0);
    const genesisFile = join(founder, "genesis.json");
    const result = await runCli(["init", "--dir", joiner, "--genesis", genesisFile]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /a node joining the network/);
    assert.ok(existsSync(join(joiner, "node.key")));
    assert.ok(!existsSync(join(joiner, "keys", "admin.key")), "a joining node gets no admin key");
    const genesis = JSON.parse(readFileSync(genesisFile, "utf8")) as Block;
    const node = await startNode(joiner);
    try {
      const block0 = (await (await fetch(`${node.url}/ledger/blocks/0`)).json()) as { hash: string };
      assert.equal(block0.hash, blockHash(genesis));
    } finally {
      assert.equal((await stopNode(node))[0], 0);
    }
  });

  describe("a tampered genesis file is refused and no data dir is created", () => {
    let genesis: Block;
    before(async () => {
      const founder = join(work.path, "tamper-founder");
      assert.equal((await runCli(["init", "--dir", founder])).code, 0);
      genesis = JSON.parse(readFileSync(join(founder, "genesis.json"), "utf8"));
    });
    const cases: [string, () => string, RegExp][] = [
      [
        "its txRoot changed",
        () => JSON.stringify({ ...genesis, txRoot: "0".repeat(64) }),
        /does not rebuild to the block it holds/,
      ],
      [
        "its stateDigest changed",
        () => JSON.stringify({ ...genesis, stateDigest: "1".repeat(64) }),
        /does not rebuild/,
      ],
      [
        "the genesis tx's payload changed",
        () => {
          const [entry] = genesis.txs;
          const tx = { ...entry?.tx, payload: { ...entry?.tx.payload, policy: { quorum: 1 } } };
          return JSON.stringify({ ...genesis, txs: [{ ...entry, tx }] });
        },
        /tx 0 \([0-9a-f]{16}…\) has an invalid signature/,
      ],
      [
        "a forgery rebuilt consistently around a changed payload (only the signature gives it away)",
        () => {
          const tx = genesis.txs[0]?.tx as Block["txs"][number]["tx"];
          const network = { ...(tx.payload.network as object), name: "Forged network" };
          // Built as the node builds blocks, skipping only the signature check that genesisBlock makes.
          const forged = { ...tx, payload: { ...tx.payload, network } };
          const built = buildBlock(
            { height: -1, hash: GENESIS_PREV_HASH, stateDigest: INITIAL_STATE_DIGEST, frontier: EMPTY_FRONTIER },
            {
              height: 0,
              time: genesis.time,
              proposer: genesis.proposer,
              txs: [{ tx: forged, id: txId(forged), sigOk: true }],
            },
            new MemoryState(),
            { inLog: () => false, nonceUsed: () => false },
          );
          return JSON.stringify(built.block);
        },
        /tx 0 \([0-9a-f]{16}…\) has an invalid signature/,
      ],
      ["not JSON", () => "{ genesis", /is not valid JSON/],
      ["not a block", () => '{"hello": "world"}', /does not hold a block/],
    ];
    test("a genesis with another time is another network's: init cannot tell, so it prints the hash to compare", async () => {
      const file = join(work.path, "other-time-genesis.json");
      const other = { ...genesis, time: genesis.time + 1 };
      writeFileSync(file, JSON.stringify(other));
      const result = await runCli(["init", "--dir", join(work.path, "other-time-joiner"), "--genesis", file]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, new RegExp(`genesis block hash: ${blockHash(other)}`));
      assert.notEqual(blockHash(other), blockHash(genesis));
    });
    for (const [i, [name, content, message]] of cases.entries()) {
      test(name, async () => {
        const file = join(work.path, `tampered-genesis-${i}.json`);
        writeFileSync(file, content());
        const dir = join(work.path, `tampered-joiner-${i}`);
        assertUsageError(await runCli(["init", "--dir", dir, "--genesis", file]), message);
        assert.equal(existsSync(dir), false);
      });
    }
  });
});

describe("export and verify", () => {
  let dir: string;
  let exported: string;
  let lines: string[];

  /** A ledger of 6 blocks after genesis: enrolments, registrations, access logs and one rejected tx. */
  before(async () => {
    const net = newNetwork(join(work.path, "ledger"), "Export Test Practice");
    dir = net.dir;
    const running = await openTestNode(dir);
    const post = async (txs: unknown[]) => {
      const answer = await call(running.app, "POST", "/ledger/txs", txs);
      assert.equal(answer.status, 200, answer.text);
    };
    const patients = [registerTx(net), registerTx(net)];
    await post(patients.map((p) => p.tx));
    await post([enrolTx(net, "clinician").tx, enrolTx(net, "nurse").tx]);
    await post([accessLogTx(net, patients[0]?.patient as string), accessLogTx(net, patients[1]?.patient as string)]);
    await post([registerTx(net, net.nodeKey).tx, registerTx(net).tx]); // the first is rejected: unauthorised
    await post([accessLogTx(net, patients[0]?.patient as string), registerTx(net).tx, registerTx(net).tx]);
    await post([enrolTx(net, "researcher").tx]);
    await running.close();
    const result = await runCli(["export", "--dir", dir]);
    assert.equal(result.code, 0, result.stderr);
    exported = result.stdout;
    lines = exported.trimEnd().split("\n");
    assert.equal(lines.length, 7);
    const rejected = (JSON.parse(lines[4] as string) as Block).txs[0]?.result;
    assert.deepEqual(rejected, { valid: false, code: "unauthorised" });
  });

  test("export writes one block per line in height order, to stdout or --out FILE alike", async () => {
    assert.deepEqual(
      lines.map((l) => (JSON.parse(l) as Block).height),
      [0, 1, 2, 3, 4, 5, 6],
    );
    for (const line of lines) {
      const block = JSON.parse(line) as Block;
      assert.ok(Array.isArray(block.txs));
      assert.equal(typeof block.stateDigest, "string");
    }
    const file = join(work.path, "ledger.jsonl");
    const result = await runCli(["export", "--dir", dir, "--out", file]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, "");
    assert.match(result.stderr, /^exported 7 blocks to .*ledger\.jsonl\n$/);
    assert.equal(readFileSync(file, "utf8"), exported);
    assert.equal(existsSync(`${file}.partial`), false);
  });

  test("export --out to a place it cannot write is a usage error, and leaves nothing behind", async () => {
    const missingDir = join(work.path, "no-such-out-dir", "ledger.jsonl");
    assertUsageError(
      await runCli(["export", "--dir", dir, "--out", missingDir]),
      /cannot write .*no-such-out-dir.*ENOENT/,
    );
    const aDir = join(work.path, "out-is-a-dir");
    mkdirSync(aDir);
    assertUsageError(await runCli(["export", "--dir", dir, "--out", aDir]), /cannot write .*out-is-a-dir/);
    assert.equal(existsSync(`${aDir}.partial`), false);
  });

  test("verify --export on the export passes and prints the same root as verify --dir", async () => {
    const file = join(work.path, "roots.jsonl");
    writeFileSync(file, exported);
    const fromDir = await runCli(["verify", "--dir", dir]);
    const fromExport = await runCli(["verify", "--export", file]);
    for (const result of [fromDir, fromExport]) {
      assert.equal(result.code, 0, result.stdout + result.stderr);
      assert.match(
        result.stdout,
        /^ok: 7 blocks, 13 txs replayed .*; log size 13, root [0-9a-f]{64}, state digest [0-9a-f]{64}\n$/,
      );
    }
    const summary = (out: string) => /log size \d+, root [0-9a-f]{64}, state digest [0-9a-f]{64}/.exec(out)?.[0];
    assert.equal(summary(fromExport.stdout), summary(fromDir.stdout));
    const json = await runCli(["verify", "--export", file, "--json"]);
    const report = JSON.parse(json.stdout) as { ok: boolean; root: string; size: number };
    assert.equal(report.ok, true);
    assert.match(fromDir.stdout, new RegExp(`root ${report.root}`));
  });

  const edit = (height: number, change: (block: Block) => void) => (all: string[]) => {
    const copy = [...all];
    const block = JSON.parse(copy[height] as string) as Block;
    change(block);
    copy[height] = JSON.stringify(block);
    return copy;
  };
  const altered: [string, (all: string[]) => string[], RegExp][] = [
    [
      "one tx's payload changed",
      edit(3, (b) => {
        const [entry] = (b.txs[1] as Block["txs"][number]).tx.payload.entries as { purpose: string }[];
        (entry as { purpose: string }).purpose = "HMARKT";
      }),
      /^FAILED at height 3: tx 1: its id is not the hash of its content$/,
    ],
    [
      "a tx's recorded result changed",
      edit(4, (b) => {
        (b.txs[0] as Block["txs"][number]).result = { valid: true, code: "ok" };
      }),
      /^FAILED at height 4: tx 0 \([0-9a-f]{16}…\) is recorded as valid but replays as rejected \(unauthorised\)$/,
    ],
    [
      "a tx's signature swapped for another's",
      edit(5, (b) => {
        (b.txs[1] as Block["txs"][number]).tx.sig = (b.txs[2] as Block["txs"][number]).tx.sig;
      }),
      /^FAILED at height 5: tx 1 \([0-9a-f]{16}…\): its signature does not verify$/,
    ],
    [
      "a line removed",
      (all) => all.filter((_, h) => h !== 2),
      /^FAILED at height 2: expected block height 2, found 3$/,
    ],
    [
      "two lines swapped",
      (all) => [...all.slice(0, 3), all[4] as string, all[3] as string, ...all.slice(5)],
      /^FAILED at height 3: expected block height 3, found 4$/,
    ],
    ["the genesis line removed", (all) => all.slice(1), /^FAILED at height 0: expected block height 0, found 1$/],
    [
      "a line cut short",
      (all) => [...all.slice(0, 5), (all[5] as string).slice(0, 200), ...all.slice(6)],
      /^FAILED at height 5: line 6 of .* is not valid JSON$/,
    ],
  ];
  for (const [i, [name, change, failure]] of altered.entries()) {
    test(`verify --export fails on an export with ${name}, naming the height`, async () => {
      const file = join(work.path, `altered-${i}.jsonl`);
      writeFileSync(file, `${change(lines).join("\n")}\n`);
      const result = await runCli(["verify", "--export", file]);
      assert.equal(result.code, 1, result.stdout + result.stderr);
      assert.match(result.stdout.trimEnd(), failure);
    });
  }
});

test("a reader that goes away (careledger … | head) ends the command quietly, not with a broken-pipe stack trace", async () => {
  const child = spawn(process.execPath, [CLI, "--help"], { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.destroy();
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const [code] = (await once(child, "exit")) as [number | null];
  assert.equal(code, 0);
  assert.doesNotMatch(stderr, /EPIPE|Error/);
});
