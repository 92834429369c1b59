// `careledger org propose|approve`: a new organisation joins a running network. Its operator initialises a node from
// the network's genesis (`careledger init --genesis …`), then proposes the organisation with that node's key and a
// new admin key; admins of existing organisations approve it until the network's quorum is reached, and from then on
// the new node's batches are ordered and its anchors count.

import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Agent, request } from "undici";
import { ORG_KINDS } from "../contract/policy.ts";
import type { KeyPair } from "../ledger/keys.ts";
import type { SignedTx } from "../ledger/types.ts";
import { ConfigError, dataPaths, ensureDir, readKeyFile, requireDataDir, writeKeyFile } from "../node/datadir.ts";
import { newKey, signNew, slug } from "../node/network.ts";

async function submit(
  url: string,
  tx: SignedTx,
  ca?: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const dispatcher = ca ? new Agent({ connect: { ca: readFileSync(ca) } }) : undefined;
  try {
    const response = await request(`${url.replace(/\/+$/, "")}/ledger/tx`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(tx),
      dispatcher,
      headersTimeout: 40_000,
    });
    const text = await response.body.text();
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = { text };
    }
    return { status: response.statusCode, body };
  } catch (error) {
    throw new ConfigError(`cannot reach the node at ${url}: ${(error as Error).message}`);
  } finally {
    await dispatcher?.close();
  }
}

function outcome(result: { status: number; body: Record<string, unknown> }): string {
  if (typeof result.body.code === "string") return result.body.code;
  const issue = (result.body.issue as { diagnostics?: string }[] | undefined)?.[0]?.diagnostics;
  return issue ?? `HTTP ${result.status}`;
}

/** `careledger org propose`: signed by the new org's own admin key (made now, kept in DIR/keys/admin.key). */
export async function orgProposeCommand(options: {
  dir: string;
  name: string;
  kind: string;
  url: string;
  ca?: string;
}): Promise<void> {
  const paths = requireDataDir(options.dir);
  if (!(ORG_KINDS as readonly string[]).includes(options.kind))
    throw new ConfigError(`--kind must be one of ${ORG_KINDS.join(", ")}`);
  if (options.name.trim().length < 2) throw new ConfigError("--name must have 2 characters or more");
  const node = readKeyFile(paths.nodeKey);
  const adminFile = join(dataPaths(options.dir).keys, "admin.key");
  let admin: KeyPair;
  if (existsSync(adminFile)) admin = readKeyFile(adminFile);
  else {
    admin = newKey();
    ensureDir(dataPaths(options.dir).keys);
    writeKeyFile(adminFile, admin, "admin");
  }
  const orgId = slug(options.name);
  const tx = signNew(
    admin,
    "org.propose",
    {
      org: {
        id: orgId,
        name: options.name.trim().slice(0, 120),
        kind: options.kind,
        admins: [{ member: randomUUID(), key: admin.keyId }],
        nodes: [node.keyId],
      },
    },
    Date.now(),
  );
  const result = await submit(options.url, tx, options.ca);
  if (result.status !== 200) throw new ConfigError(`the proposal of ${orgId} was refused: ${outcome(result)}`);
  process.stdout.write(
    `proposed ${orgId} (node key ${node.keyId.slice(0, 16)}…, admin key ${adminFile})\n` +
      `  admins of existing organisations approve it with: careledger org approve --key ADMIN_KEY --org ${orgId} --url ${options.url}\n` +
      `  once approved, restart this node so its FHIR API starts: careledger start --dir ${options.dir}\n`,
  );
}

/** `careledger org approve`: one existing organisation's vote for a proposed one. */
export async function orgApproveCommand(options: {
  key: string;
  org: string;
  url: string;
  ca?: string;
}): Promise<void> {
  if (!/^[a-z0-9][a-z0-9-]{1,63}$/.test(options.org)) throw new ConfigError("--org must be an organisation id");
  const admin = readKeyFile(options.key);
  const tx = signNew(admin, "org.approve", { org: options.org }, Date.now());
  const result = await submit(options.url, tx, options.ca);
  if (result.status !== 200) throw new ConfigError(`the approval was refused: ${outcome(result)}`);
  process.stdout.write(`approved ${options.org}\n`);
}
