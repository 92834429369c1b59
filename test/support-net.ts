// Shared pieces for the node/HTTP/CLI tests: a real one-organisation network in a temp data dir, signed txs of the
// common types, in-process nodes, and assertions on FHIR OperationOutcome error bodies.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { accessLogPayload } from "../src/contract/fixtures.ts";
import type { KeyPair } from "../src/ledger/keys.ts";
import type { SignedTx } from "../src/ledger/types.ts";
import { readKeyFile } from "../src/node/datadir.ts";
import { silentLogger } from "../src/node/logger.ts";
import { initNetwork, newKey, signNew } from "../src/node/network.ts";
import { type OpenOptions, openNode, type RunningNode } from "../src/node/runtime.ts";

export interface TestNet {
  dir: string;
  orgId: string;
  /** The organisation's admin (a member with role admin): signs enrolments and registrations. */
  admin: KeyPair;
  adminMember: string;
  /** The node key: signs tree heads, anchors and access logs. */
  nodeKey: KeyPair;
}

/** `careledger init` in-process: a data dir for a new one-organisation network. */
export function newNetwork(dir: string, orgName = "Test Practice"): TestNet {
  const created = initNetwork(dir, { orgName });
  return {
    dir,
    orgId: created.orgId,
    admin: readKeyFile(join(dir, "keys", "admin.key")),
    adminMember: created.adminMember,
    nodeKey: readKeyFile(join(dir, "node.key")),
  };
}

/** Opens a node in this process, quiet, on an ephemeral port if it listens at all. */
export function openTestNode(dir: string, options: OpenOptions = {}): Promise<RunningNode> {
  return openNode(dir, {
    listen: false,
    log: silentLogger,
    ...options,
    flags: { port: 0, logLevel: "silent", batchMaxWaitMs: 2, ...options.flags },
  });
}

export interface Member {
  tx: SignedTx;
  member: string;
  key: KeyPair;
}

/** `member.enrol` signed by the org admin. */
export function enrolTx(net: TestNet, role: string, createdAt = Date.now()): Member {
  const key = newKey();
  const member = randomUUID();
  const tx = signNew(net.admin, "member.enrol", { member, org: net.orgId, role, key: key.keyId }, createdAt);
  return { tx, member, key };
}

export interface Patient {
  tx: SignedTx;
  patient: string;
  key: KeyPair;
}

/** `patient.register` signed by `signer` (the org admin unless told otherwise). */
export function registerTx(net: TestNet, signer: KeyPair = net.admin, createdAt = Date.now()): Patient {
  const key = newKey();
  const patient = randomUUID();
  const tx = signNew(signer, "patient.register", { patient, org: net.orgId, key: key.keyId }, createdAt);
  return { tx, patient, key };
}

/** An `access.log` entry about a registered `patient`, signed by the node key: valid, and it writes no state. */
export function accessLogTx(net: TestNet, patient: string, createdAt = Date.now()): SignedTx {
  return signNew(
    net.nodeKey,
    "access.log",
    accessLogPayload({
      requester: net.nodeKey.keyId,
      patient,
      custodian: net.orgId,
      resourceId: `obs-${randomUUID().slice(0, 8)}`,
      decision: "deny",
    }),
    createdAt,
  );
}

export interface Answer {
  status: number;
  contentType: string;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field by the tests
  json: any;
}

/** One request through fastify's injector (no socket); the body goes as JSON unless it is a string. */
export async function call(
  app: FastifyInstance,
  method: "GET" | "POST" | "PUT" | "DELETE",
  url: string,
  body?: unknown,
  headers: Record<string, string> = {},
  remoteAddress?: string,
): Promise<Answer> {
  const response = await app.inject({
    method,
    url,
    headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
    payload:
      body === undefined ? undefined : typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body),
    remoteAddress,
  });
  let json: unknown;
  try {
    json = JSON.parse(response.body);
  } catch {
    json = undefined;
  }
  return {
    status: response.statusCode,
    contentType: String(response.headers["content-type"] ?? ""),
    text: response.body,
    json,
  };
}

/**
 * The error shape every route shares: a FHIR OperationOutcome with one issue, the given status, diagnostics matching
 * `diagnostics`, and nothing of the server's insides (no stack frames, no source paths).
 */
export function assertOutcome(answer: Answer, status: number, diagnostics: RegExp): void {
  assert.equal(answer.status, status, `expected ${status}, got ${answer.status}: ${answer.text}`);
  assert.match(answer.contentType, /^application\/fhir\+json/);
  assert.equal(answer.json?.resourceType, "OperationOutcome", answer.text);
  assert.equal(answer.json.issue?.length, 1);
  const issue = answer.json.issue[0];
  assert.equal(issue.severity, "error");
  assert.equal(typeof issue.code, "string");
  assert.match(issue.diagnostics, diagnostics);
  assertNoInternals(answer.text);
}

export function assertNoInternals(text: string): void {
  assert.doesNotMatch(text, /\bat [^\s]+ \(|\n\s+at /, `stack frames in a response: ${text}`);
  assert.doesNotMatch(text, /\/work\/|\/src\/|node_modules|file:\/\/|\.ts\b/, `source paths in a response: ${text}`);
}

/** Polls until `check` returns a value (not undefined) or the time is up. */
export async function eventually<T>(check: () => T | undefined | Promise<T | undefined>, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
