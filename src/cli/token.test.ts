// `careledger token` against a real demo dir: the demo runs once (3 patients), stops, and tokens are issued from its
// data dirs and checked the way a node checks them.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { decodeJwt, decodeProtectedHeader } from "jose";
import { verifyBearer } from "../fhir/auth/bearer.ts";
import { authUrls } from "../fhir/auth/smart-configuration.ts";
import { ConfigError, readKeyFile } from "../node/datadir.ts";
import { LedgerStore } from "../store/ledger-store.ts";
import { type TokenOptions, tokenCommand } from "./token.ts";

const work = mkdtempSync(join(tmpdir(), "careledger-token-"));
const demo = join(work, "demo");
const URL_BASE = "http://127.0.0.1:7999";
const { tokenUrl, fhirBaseUrl } = authUrls(URL_BASE);

before(async () => {
  const cli = new URL("../../bin/careledger.js", import.meta.url).pathname;
  const child = spawn(process.execPath, [cli, "demo", "--dir", demo, "--port", "0", "--patients", "3"], {
    env: { ...process.env, CARELEDGER_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
  const exited = once(child, "exit");
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo did not come up: ${err}`)), 60_000);
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      if (out.includes("Ctrl-C stops the demo")) {
        clearTimeout(timer);
        resolve();
      }
    });
    exited.then(() => reject(new Error(`demo exited early: ${err}`)));
  });
  child.kill("SIGTERM");
  await exited;
});

after(() => rmSync(work, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 }));

/** Runs the command in-process and returns what it printed. */
async function token(options: Partial<TokenOptions> & { as: string }): Promise<string> {
  let printed = "";
  await tokenCommand({ dir: demo, url: URL_BASE, ...options }, (text) => {
    printed += text;
  });
  assert.match(printed, /^[\w-]+\.[\w-]+\.[\w-]+\n$/, "only the token and a newline");
  return printed.trim();
}

/** Verifies as the node named `org` would. */
async function verifyAt(org: string, t: string) {
  const store = LedgerStore.open(join(demo, org, "ledger.db"), { snapshot: true });
  try {
    const r = await verifyBearer(`Bearer ${t}`, {
      state: store.state,
      issuer: tokenUrl,
      audience: fhirBaseUrl,
      nodeKeyId: readKeyFile(join(demo, org, "node.key")).keyId,
      now: Date.now,
    });
    assert.ok(r.ok, r.ok ? "" : r.description);
    return r.principal;
  } finally {
    store.close();
  }
}

function users(): { name: string; kind: string; patient?: string }[] {
  return JSON.parse(readFileSync(join(demo, "demo-users.json"), "utf8"));
}

test("clinicians get a token from their own organisation's node", async () => {
  const gp = await token({ as: "clinician:gp" });
  assert.equal(decodeProtectedHeader(gp).kid, readKeyFile(join(demo, "gp", "node.key")).keyId);
  const p = await verifyAt("gp", gp);
  assert.equal(p.kind, "member");
  assert.equal(p.purpose, "TREAT");
  assert.equal(p.scope, "user/*.crus");
  const trust = await token({ as: "clinician:trust-ae", purpose: "ETREAT", scope: "user/Observation.rs" });
  assert.equal(decodeProtectedHeader(trust).kid, readKeyFile(join(demo, "trust", "node.key")).keyId);
  const q = await verifyAt("trust", trust);
  assert.equal(q.purpose, "ETREAT");
  assert.equal(q.scope, "user/Observation.rs");
  // --node picks another issuer.
  assert.equal(
    decodeProtectedHeader(await token({ as: "clinician:gp", node: "uni" })).kid,
    readKeyFile(join(demo, "uni", "node.key")).keyId,
  );
});

test("patients, and proxies (patient found from demo-users.json), researchers", async () => {
  const patient = users().find((u) => u.name === "patient:1");
  const p = await verifyAt("gp", await token({ as: "patient:1" }));
  assert.equal(p.kind, "patient");
  assert.equal(p.patient, patient?.patient);
  const proxy = await verifyAt("gp", await token({ as: "proxy:parent-0" }));
  assert.equal(proxy.kind, "proxy");
  assert.equal(proxy.patient, users().find((u) => u.name === "patient:0")?.patient);
  const r = await verifyAt("uni", await token({ as: "researcher:uni" }));
  assert.equal(r.purpose, "HRESCH");
  assert.equal(
    decodeJwt(await token({ as: join(demo, "keys", "nurse-gp.key") })).role,
    "nurse",
    "a key file works too",
  );
});

test("refusals and mistakes are one-line ConfigErrors (exit 2)", async () => {
  await assert.rejects(token({ as: "dr-nobody" }), (e: Error) => {
    assert.ok(e instanceof ConfigError);
    assert.match(
      e.message,
      /no identity "dr-nobody" in .*demo-users\.json; the names are listed there \(e\.g\. .*clinician:gp/,
    );
    assert.doesNotMatch(e.message, /\n/);
    return true;
  });
  await assert.rejects(token({ as: "researcher:uni", purpose: "TREAT" }), /token refused \(invalid_scope\)/);
  await assert.rejects(token({ as: "admin:gp", scope: "user/Observation.rs" }), /invalid_scope/);
  await assert.rejects(token({ as: "clinician:gp", node: "nowhere" }), /--node nowhere/);
  // The demo's nodes listen on port 0 (chosen at start): without --url there is no audience to name.
  await assert.rejects(tokenCommand({ dir: demo, as: "clinician:gp" }), /--url/);
  await assert.rejects(tokenCommand({ dir: join(work, "missing"), as: "clinician:gp" }), ConfigError);
  await assert.rejects(tokenCommand({ dir: join(demo, "keys"), as: "clinician:gp" }), /neither a node's data dir/);
});
