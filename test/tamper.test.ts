// A data dir whose SQLite store was changed behind the node's back. `careledger verify --dir` must fail naming the
// height and the reason for every kind of change. `careledger start` runs cheap checks only (genesis, the tip block,
// the signed tree head against the Merkle frontier, the tx index's size): it must refuse to start on what those can
// see, and the cases it cannot see — deep history — are listed here as such, so that nobody mistakes start-up for an
// audit.
//
// Start-up catches: a tip block's txs changed, the Merkle frontier changed, a tx index row deleted, a truncated file,
// the tip block deleted. Only verify catches: a tx changed in an older block, a state row changed, a Merkle node
// below the frontier changed.
import assert from "node:assert/strict";
import { cpSync, existsSync, statSync, truncateSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, test } from "node:test";
import { packTxs, txsText } from "../src/store/block-txs.ts";
import { nonceKey } from "../src/store/ledger-store.ts";
import { runCli, startNode, stopNode, tempDir } from "./helpers.ts";
import { call, newNetwork, openTestNode, registerTx } from "./support-net.ts";

const work = tempDir("tamper");
after(() => work.remove());

const BLOCKS = 6;
const TXS_PER_BLOCK = 3;
let base: string;

/** A ledger of a genesis block and BLOCKS blocks of TXS_PER_BLOCK patient registrations, from a cleanly stopped node. */
before(async () => {
  const net = newNetwork(join(work.path, "base"), "Tamper Test Practice");
  base = net.dir;
  const running = await openTestNode(base);
  for (let b = 0; b < BLOCKS; b++) {
    const answer = await call(
      running.app,
      "POST",
      "/ledger/txs",
      Array.from({ length: TXS_PER_BLOCK }, () => registerTx(net).tx),
    );
    assert.equal(answer.status, 200, answer.text);
    assert.ok(
      answer.json.results.every((r: { height: number }) => r.height === b + 1),
      "one block per request",
    );
  }
  await running.close();
  // A clean stop checkpoints SQLite's write-ahead log into ledger.db: what we change below is what a node would read.
  assert.equal(existsSync(join(base, "ledger.db-wal")) && statSync(join(base, "ledger.db-wal")).size > 0, false);
  const verify = await runCli(["verify", "--dir", base]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});

function withDb(dir: string, change: (db: DatabaseSync) => void): void {
  const db = new DatabaseSync(join(dir, "ledger.db"));
  try {
    change(db);
  } finally {
    db.close();
  }
}

/** Replaces the Merkle nodes stored for block `height` with random bytes (whatever the store's layout). */
/** Deletes the replay-protection row of the tx at `pos` in block `height`. */
function deleteNonceRow(db: DatabaseSync, height: number, pos: number): void {
  const row = db.prepare("SELECT txs FROM blocks WHERE height = ?").get(height) as { txs: Uint8Array };
  const tx = (JSON.parse(txsText(row.txs, height)) as { tx: { signer: string; nonce: string } }[])[pos]?.tx;
  assert.ok(tx);
  const deleted = db.prepare("DELETE FROM nonces WHERE key = ?").run(Buffer.from(nonceKey(tx.signer, tx.nonce), "hex"));
  assert.equal(deleted.changes, 1);
}

function scrambleMerkle(db: DatabaseSync, height: number): void {
  const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map(
    (t) => t.name,
  );
  if (tables.includes("merkle_blocks")) {
    const changed = db
      .prepare("UPDATE merkle_blocks SET nodes = randomblob(length(nodes)) WHERE height = ?")
      .run(height);
    assert.equal(changed.changes, 1);
    return;
  }
  assert.fail(`unknown Merkle layout in the store (tables: ${tables.join(", ")}); teach this test the new one`);
}

function editTxs(
  db: DatabaseSync,
  height: number,
  edit: (txs: { tx: { payload: Record<string, unknown> } }[]) => void,
) {
  const row = db.prepare("SELECT txs FROM blocks WHERE height = ?").get(height) as { txs: Uint8Array };
  const txs = JSON.parse(txsText(row.txs, height));
  edit(txs);
  db.prepare("UPDATE blocks SET txs = ? WHERE height = ?").run(packTxs(JSON.stringify(txs)), height);
}

interface Case {
  name: string;
  tamper: (dir: string) => void;
  /** What `verify` says: the height and the reason. */
  verify: RegExp;
  /** `refuses`: start exits 2 with this one line; `starts`: the change is deep history start-up does not read. */
  start: { refuses: RegExp } | "starts";
}

const cases: Case[] = [
  {
    name: "(a) a tx's stored JSON changed in an older block",
    tamper: (dir) =>
      withDb(dir, (db) =>
        editTxs(db, 2, (txs) => {
          (txs[1] as { tx: { payload: Record<string, unknown> } }).tx.payload.key = "f".repeat(64);
        }),
      ),
    verify: /^FAILED at height 2: tx 1: its id is not the hash of its content$/m,
    start: "starts",
  },
  {
    name: "(a') a tx's stored JSON changed in the tip block",
    tamper: (dir) =>
      withDb(dir, (db) =>
        editTxs(db, BLOCKS, (txs) => {
          (txs[0] as { tx: { payload: Record<string, unknown> } }).tx.payload.org = "another-org";
        }),
      ),
    verify: new RegExp(`^FAILED at height ${BLOCKS}: tx 0: its id is not the hash of its content$`, "m"),
    start: { refuses: new RegExp(`block ${BLOCKS}'s txs do not match its header`) },
  },
  {
    name: "(b) a state row changed",
    tamper: (dir) =>
      withDb(dir, (db) => {
        const row = db.prepare("SELECT key, value FROM state WHERE key LIKE 'patient/%' LIMIT 1").get() as {
          key: string;
          value: string;
        };
        db.prepare("UPDATE state SET value = ? WHERE key = ?").run(
          JSON.stringify({ ...JSON.parse(row.value), status: "erased" }),
          row.key,
        );
      }),
    verify: new RegExp(
      `^FAILED at height ${BLOCKS}: state key patient/[0-9a-f-]{36} differs from the replayed state$`,
      "m",
    ),
    start: "starts",
  },
  {
    name: "(c) a Merkle node row below the frontier changed",
    tamper: (dir) => withDb(dir, (db) => scrambleMerkle(db, 1)),
    verify: /^FAILED at height 1: stored Merkle node \d+\/\d+ was altered$/m,
    start: "starts",
  },
  {
    name: "(c') the Merkle nodes of the tip block (on the frontier) changed",
    tamper: (dir) => withDb(dir, (db) => scrambleMerkle(db, BLOCKS)),
    verify: new RegExp(`^FAILED at height ${BLOCKS}: stored Merkle node \\d+/\\d+ was altered$`, "m"),
    start: { refuses: /the signed tree head does not match the stored Merkle log/ },
  },
  {
    name: "(d) a tx index row deleted",
    tamper: (dir) => withDb(dir, (db) => db.prepare("DELETE FROM txs WHERE height = 3 AND pos = 1").run()),
    verify: /^FAILED at height 3: tx 1 \([0-9a-f]{16}…\) is missing from the store's tx index$/m,
    start: {
      refuses: new RegExp(
        `the tx index holds ${BLOCKS * TXS_PER_BLOCK} rows but the log holds ${BLOCKS * TXS_PER_BLOCK + 1} txs`,
      ),
    },
  },
  {
    name: "(d') a replay-protection (nonce) row deleted",
    tamper: (dir) => withDb(dir, (db) => deleteNonceRow(db, 3, 1)),
    verify: /^FAILED at height 3: tx 1 \([0-9a-f]{16}…\) is missing from the store's replay index$/m,
    start: "starts",
  },
  {
    name: "(d2) a tx index row added for a tx in no block",
    tamper: (dir) =>
      withDb(dir, (db) =>
        db.prepare("INSERT INTO txs (id, height, idx, pos, valid) VALUES (?, 3, 0, 0, 1)").run(Buffer.alloc(32, 7)),
      ),
    verify: new RegExp(
      `^FAILED at height ${BLOCKS}: the store's tx index holds 0707070707070707…, a tx in no block$`,
      "m",
    ),
    start: {
      refuses: new RegExp(
        `the tx index holds ${BLOCKS * TXS_PER_BLOCK + 2} rows but the log holds ${BLOCKS * TXS_PER_BLOCK + 1} txs`,
      ),
    },
  },
  {
    name: "(d3) a replay-protection (nonce) row added for no tx",
    tamper: (dir) => withDb(dir, (db) => db.prepare("INSERT INTO nonces (key) VALUES (?)").run(Buffer.alloc(16, 7))),
    verify: new RegExp(
      `^FAILED at height ${BLOCKS}: the store's replay index holds a key of no tx in the blocks$`,
      "m",
    ),
    start: "starts",
  },
  {
    name: "(d4) a nonce row deleted in block 2 and a Merkle node changed in block 3: the first bad height is named",
    tamper: (dir) =>
      withDb(dir, (db) => {
        deleteNonceRow(db, 2, 1);
        scrambleMerkle(db, 3);
      }),
    verify: /^FAILED at height 2: tx 1 \([0-9a-f]{16}…\) is missing from the store's replay index$/m,
    start: "starts",
  },
  {
    name: "(e) ledger.db truncated to half its size",
    tamper: (dir) => {
      const path = join(dir, "ledger.db");
      truncateSync(path, Math.floor(statSync(path).size / 2));
    },
    verify: /^FAILED at height 0: the ledger store cannot be opened: .*(malformed|damaged|corrupt)/m,
    start: { refuses: /ledger\.db.*(malformed|damaged|corrupt)/ },
  },
  {
    name: "(f) the tip block row deleted",
    tamper: (dir) => withDb(dir, (db) => db.prepare("DELETE FROM blocks WHERE height = ?").run(BLOCKS)),
    verify: new RegExp(
      `^FAILED at height ${BLOCKS - 1}: the signed tree head \\(size ${BLOCKS * TXS_PER_BLOCK + 1}\\) does not match the replayed log`,
      "m",
    ),
    start: { refuses: /the signed tree head does not match the stored Merkle log/ },
  },
];

describe("tampering behind the node's back", () => {
  const caught: string[] = [];
  const missed: string[] = [];
  after(() => {
    // Shown in the test output: what start-up notices, and what only a full verify does.
    console.log(`start-up refuses: ${caught.join("; ")}\nonly verify catches: ${missed.join("; ")}`);
  });

  for (const [i, c] of cases.entries()) {
    test(c.name, { timeout: 120_000 }, async () => {
      const dir = join(work.path, `case-${i}`);
      cpSync(base, dir, { recursive: true });
      c.tamper(dir);

      const verify = await runCli(["verify", "--dir", dir]);
      assert.equal(verify.code, 1, `verify should fail: ${verify.stdout} ${verify.stderr}`);
      assert.match(verify.stdout, c.verify);

      if (c.start === "starts") {
        // Deep history: start-up's cheap checks do not read it, so the node comes up — and the start-up audit (a
        // replay on a worker thread) finds it moments later and halts the node: writes and state reads refused.
        // (Or earlier: the FHIR API's audit index reads every block at start, and a block that fails its check
        // halts the node the same way.)
        const node = await startNode(dir);
        try {
          let health: { status: string; reason?: string } = { status: "ok" };
          for (let i = 0; i < 300 && health.status === "ok"; i++) {
            await new Promise((r) => setTimeout(r, 100));
            health = (await (await fetch(`${node.url}/healthz`)).json()) as typeof health;
          }
          assert.equal(health.status, "halted");
          assert.match(
            health.reason ?? "",
            /^(start-up audit: the store does not replay at height \d+: |block \d+ in the store was altered: )/,
          );
          const head = await fetch(`${node.url}/ledger/head`);
          assert.equal(head.status, 503);
        } finally {
          const [code] = await stopNode(node);
          assert.equal(code, 0, node.stderr());
        }
        missed.push(c.name);
      } else {
        const start = await runCli(["start", "--dir", dir, "--port", "0"], { timeoutMs: 30_000 });
        assert.equal(start.code, 2, `start should refuse: ${start.stdout} ${start.stderr}`);
        assert.equal(start.stderr.trimEnd().split("\n").length, 1, `one line: ${start.stderr}`);
        assert.match(start.stderr, /^careledger: /);
        assert.match(start.stderr, c.start.refuses);
        assert.doesNotMatch(start.stdout, /listening on/);
        caught.push(c.name);
      }
    });
  }
});
