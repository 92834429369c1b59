// `npm start` runs `careledger demo`: three nodes sharing one embedded orderer in one process. This runs it for real,
// checks the three nodes agree and answer what the demo suggests, stops it, and verifies every node's data dir.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { CLI, REPO, runCli, tempDir } from "./helpers.ts";

const work = tempDir("demo");
const children: ChildProcess[] = [];
after(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  work.remove();
});

async function runDemo(dir: string) {
  const child = spawn(process.execPath, [CLI, "demo", "--dir", dir, "--port", "0", "--patients", "5"], {
    cwd: REPO,
    env: { ...process.env, CARELEDGER_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
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
  const urls = [...out.matchAll(/(gp|trust|uni)\s+node \S+\s+(http:\/\/\S+)/g)].map((m) => m[2] as string);
  return { child, out, urls, exited, stderr: () => err };
}

test("the demo runs three agreeing nodes on one embedded orderer, says what to try, and stops cleanly", {
  timeout: 180_000,
}, async () => {
  const dir = join(work.path, "demo");
  const first = await runDemo(dir);
  assert.equal(first.urls.length, 3, first.out);
  const heads = await Promise.all(
    first.urls.map(async (u) => (await (await fetch(`${u}/ledger/head`)).json()) as Record<string, unknown>),
  );
  assert.ok((heads[0]?.height as number) >= 1, "the set-up was ordered after genesis");
  for (const head of heads) {
    assert.equal(head.hash, heads[0]?.hash);
    assert.equal(head.stateDigest, heads[0]?.stateDigest);
  }
  // The printed decision examples are real requests with the outcome the demo announced.
  const examples = [
    ...first.out.matchAll(
      /# .*: (permit|deny) \(step (\d)[^\n]*\n\s+curl -s (\S+) -H 'content-type: application\/json' -d '([^']+)'/g,
    ),
  ];
  assert.equal(examples.length, 2, first.out);
  for (const [, effect, step, url, body] of examples) {
    const response = await fetch(url as string, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    const decision = (await response.json()) as { effect: string; step: number };
    assert.equal(decision.effect, effect);
    assert.equal(decision.step, Number(step));
  }
  const users = JSON.parse(readFileSync(join(dir, "demo-users.json"), "utf8")) as {
    kind: string;
    name: string;
    fhirPatientId?: string;
  }[];
  assert.ok(users.some((u) => u.kind === "patient") && users.some((u) => u.kind === "clinician"));

  // The FHIR examples it prints work: a clinician's token (from `careledger token`) lists the patients whose
  // generated records the demo imported, and reaches a patient's $everything.
  const gp = first.urls[0] as string;
  const token = await runCli(["token", "--dir", dir, "--as", "clinician:gp", "--url", gp]);
  assert.equal(token.code, 0, token.stderr);
  const auth = { authorization: `Bearer ${token.stdout.trim()}` };
  const patients = (await (await fetch(`${gp}/fhir/Patient?_count=50`, { headers: auth })).json()) as {
    total: number;
  };
  assert.equal(patients.total, 5);
  const patient0 = users.find((u) => u.name === "patient:0")?.fhirPatientId;
  assert.ok(patient0 && first.out.includes(`/fhir/Patient/${patient0}/$everything'`), first.out);
  const everything = (await (await fetch(`${gp}/fhir/Patient/${patient0}/$everything`, { headers: auth })).json()) as {
    entry: { resource: { resourceType: string } }[];
  };
  assert.ok(everything.entry.length > 10);
  assert.ok(everything.entry.some((e) => e.resource.resourceType === "Observation"));
  assert.equal((await fetch(`${gp}/fhir/Patient`)).status, 401);

  first.child.kill("SIGTERM");
  const [code] = await first.exited;
  assert.equal(code, 0, first.stderr());

  // A second run continues the same ledger rather than generating a new one.
  const second = await runDemo(dir);
  // (The FHIR reads above were logged on the ledger, so it grew: the first run's head is still in it, unchanged.)
  const again = (await (await fetch(`${second.urls[0]}/ledger/head`)).json()) as Record<string, unknown>;
  assert.ok((again.height as number) > (heads[0]?.height as number));
  const earlier = (await (await fetch(`${second.urls[0]}/ledger/blocks/${heads[0]?.height}`)).json()) as {
    hash: string;
  };
  assert.equal(earlier.hash, heads[0]?.hash);
  second.child.kill("SIGINT");
  assert.equal((await second.exited)[0], 0);

  for (const org of ["gp", "trust", "uni"]) {
    const verify = await runCli(["verify", "--dir", join(dir, org)]);
    assert.equal(verify.code, 0, `${org}: ${verify.stdout}${verify.stderr}`);
  }
});
