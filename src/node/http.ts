import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from "fastify";
import { toHex } from "../ledger/encoding.ts";
import { consistencyProof, inclusionProof } from "../ledger/merkle.ts";
import { parseSignedTx } from "../ledger/tx.ts";
import type { Hex32, SignedTx } from "../ledger/types.ts";
import { parseDecisionRequest } from "./decision-request.ts";
import { type CommitResult, type LedgerNode, NodeError } from "./ledger-node.ts";
import type { Logger } from "./logger.ts";

/** Body limits: one tx is at most 64 KiB canonical; a batch request carries up to MAX_BATCH of them. */
export const MAX_TX_BODY_BYTES = 128 * 1024;
export const MAX_BATCH = 5000;
export const MAX_BATCH_BODY_BYTES = 16 * 1024 * 1024;
const COMMIT_WAIT_MS = 30_000;

export interface HttpOptions {
  node: LedgerNode;
  log: Logger;
  /** Whether `POST /consent/decide` answers callers that are not on loopback. Off by default. */
  decideFromAnywhere?: boolean;
  /** Serve HTTPS with this key and certificate (PEM). */
  https?: { key: Buffer; cert: Buffer };
  /** Where the orderer's log stood at a block (etcd revision), for peers resuming after catching up from this node. */
  ordererPosition?: (height: number) => { revision: number; time: number } | undefined;
}

/** At most this many blocks, and about this many bytes, in one `GET /ledger/blocks?from=` answer. */
export const MAX_BLOCKS_PER_PAGE = 1000;
const BLOCK_PAGE_BYTES = 8 * 1024 * 1024;

/** A FHIR OperationOutcome: every API error, whatever the route, has this one shape. */
export function operationOutcome(code: string, diagnostics: string, severity: "error" | "warning" = "error") {
  return { resourceType: "OperationOutcome", issue: [{ severity, code, diagnostics }] };
}

const FHIR_ISSUE_BY_STATUS: Record<number, string> = {
  400: "invalid",
  403: "forbidden",
  404: "not-found",
  406: "not-supported",
  409: "conflict",
  413: "too-costly",
  415: "not-supported",
  422: "business-rule",
  429: "throttled",
  503: "transient",
  504: "timeout",
};

function fail(reply: FastifyReply, status: number, message: string) {
  return reply
    .code(status)
    .type("application/fhir+json")
    .send(operationOutcome(FHIR_ISSUE_BY_STATUS[status] ?? "exception", message));
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new NodeError("timeout", 504, message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function parseHeight(raw: string): number | undefined {
  if (!/^(0|[1-9]\d{0,14})$/.test(raw)) return undefined;
  return Number(raw);
}

function isLoopback(address: string): boolean {
  return address === "::1" || address.startsWith("127.") || address.startsWith("::ffff:127.");
}

export function buildHttpServer(options: HttpOptions): FastifyInstance {
  const { node } = options;
  const app = Fastify({
    ...(options.https ? { https: options.https } : {}),
    loggerInstance: options.log.child({ component: "http" }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: MAX_TX_BODY_BYTES,
    // A txs body that is valid JSON but deeply nested is refused by the envelope check, not by a stack overflow.
    onProtoPoisoning: "error",
    onConstructorPoisoning: "error",
    return503OnClosing: true,
  });

  // JSON only: fastify's text/plain parser would hand a string to the tx parser (400) where the answer is 415. Its
  // JSON parser drops the parse error's message; this one says where the body breaks and which key was refused.
  app.removeContentTypeParser(["application/json", "text/plain"]);
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_request, body, done) => {
    try {
      done(null, parseJsonBody(body as string));
    } catch (error) {
      done(error as Error, undefined);
    }
  });

  app.setErrorHandler((error: FastifyError, _request, reply) => {
    if (error instanceof NodeError) return fail(reply, error.status, error.message);
    const status = error.statusCode ?? 500;
    if (error.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
      return fail(
        reply,
        413,
        `request body too large: the limit for this endpoint is ${reply.request.routeOptions.bodyLimit} bytes`,
      );
    }
    if (error.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") {
      return fail(reply, 415, "unsupported content type: send application/json");
    }
    if (error.code === "FST_ERR_CTP_INVALID_JSON_BODY" || error instanceof SyntaxError) {
      return fail(reply, 400, "malformed JSON body");
    }
    if (error.code === "FST_ERR_CTP_EMPTY_JSON_BODY") return fail(reply, 400, "empty JSON body");
    if (error.validation) return fail(reply, 400, `invalid request: ${error.message}`);
    if (status >= 400 && status < 500) return fail(reply, status, error.message);
    options.log.error({ err: error.message, stack: error.stack }, "unhandled error in request");
    return fail(reply, 500, "internal error; the node's log has the details");
  });

  app.setNotFoundHandler((request, reply) =>
    fail(reply, 404, `no route ${request.method} ${request.url.split("?")[0]}`),
  );

  const submitOne = async (request: FastifyRequest<{ Querystring: { wait?: string } }>, reply: FastifyReply) => {
    const parsed = parseSignedTx(request.body);
    if (!parsed.ok) return fail(reply, 400, `invalid tx: ${parsed.error}`);
    const wait = parseWait(request.query.wait);
    if (wait === undefined) return fail(reply, 400, "query parameter wait must be true or false");
    const [answer] = await node.submit([{ tx: parsed.tx, id: parsed.id }]);
    if (!wait) {
      answer?.catch(() => {});
      return reply.code(202).send({ id: parsed.id, status: "accepted" });
    }
    const result = await withTimeout(
      answer as Promise<CommitResult>,
      COMMIT_WAIT_MS,
      `tx ${parsed.id} not committed within ${COMMIT_WAIT_MS} ms; ask GET /ledger/tx/${parsed.id} later`,
    );
    return reply.code(result.valid ? 200 : 422).send(commitBody(result));
  };

  app.post("/ledger/tx", submitOne);

  app.post(
    "/ledger/txs",
    { bodyLimit: MAX_BATCH_BODY_BYTES },
    async (request: FastifyRequest<{ Querystring: { wait?: string } }>, reply) => {
      const body = request.body as { txs?: unknown } | unknown[];
      const list = Array.isArray(body) ? body : (body as { txs?: unknown })?.txs;
      if (!Array.isArray(list)) return fail(reply, 400, 'body must be a JSON array of txs, or {"txs": [...]}');
      if (list.length === 0) return fail(reply, 400, "no txs in the batch");
      if (list.length > MAX_BATCH) return fail(reply, 413, `at most ${MAX_BATCH} txs per request (got ${list.length})`);
      const wait = parseWait(request.query.wait);
      if (wait === undefined) return fail(reply, 400, "query parameter wait must be true or false");
      const items: { tx: SignedTx; id: Hex32 }[] = [];
      for (let i = 0; i < list.length; i++) {
        const parsed = parseSignedTx(list[i]);
        if (!parsed.ok)
          return fail(reply, 400, `invalid tx at index ${i}: ${parsed.error}; no tx of the batch was accepted`);
        items.push({ tx: parsed.tx, id: parsed.id });
      }
      const received = performance.now();
      const answers = await node.submit(items);
      if (!wait) {
        for (const a of answers) a.catch(() => {});
        return reply.code(202).send({ accepted: items.map((i) => i.id) });
      }
      const results = await withTimeout(
        Promise.all(answers),
        COMMIT_WAIT_MS,
        `batch not committed within ${COMMIT_WAIT_MS} ms`,
      );
      node.metrics.observe("careledger_tx_request_commit_ms", performance.now() - received);
      return reply.send({ results: results.map(commitBody) });
    },
  );

  app.get("/ledger/head", async (_request, reply) => {
    node.assertReadable();
    const head = node.store.head();
    const treeHead = node.store.latestTreeHead();
    if (!head || !treeHead) return fail(reply, 503, "the ledger has no blocks yet");
    return { height: head.height, hash: head.hash, size: head.size, stateDigest: head.stateDigest, treeHead };
  });

  app.get<{ Params: { h: string } }>("/ledger/blocks/:h", async (request, reply) => {
    const height = parseHeight(request.params.h);
    if (height === undefined) return fail(reply, 400, "block height must be a non-negative integer");
    const row = node.readBlock(height);
    if (!row) return fail(reply, 404, `no block at height ${height} (head is ${node.height})`);
    // Stored JSON is served as is: no parse and re-serialise on the read path.
    return reply
      .type("application/json")
      .send(`{"hash":${JSON.stringify(row.hash)},"block":${row.header.slice(0, -1)},"txs":${row.txs}}}`);
  });

  // Blocks in bulk for a node catching up: JSON lines, one `{hash, block}` per line from `from`, up to `max` blocks
  // (default and cap MAX_BLOCKS_PER_PAGE) or about 8 MiB; each is checked as `/ledger/blocks/:h` checks it.
  app.get<{ Querystring: { from?: string; max?: string } }>("/ledger/blocks", async (request, reply) => {
    const from = parseHeight(request.query.from ?? "");
    if (from === undefined) return fail(reply, 400, "from must be a non-negative integer block height");
    const max = request.query.max === undefined ? MAX_BLOCKS_PER_PAGE : parseHeight(request.query.max);
    if (max === undefined || max < 1) return fail(reply, 400, "max must be a positive integer");
    const lines: string[] = [];
    let bytes = 0;
    for (let h = from; h < from + Math.min(max, MAX_BLOCKS_PER_PAGE) && bytes < BLOCK_PAGE_BYTES; h++) {
      const row = node.readBlock(h);
      if (!row) break;
      const line = `{"hash":${JSON.stringify(row.hash)},"block":${row.header.slice(0, -1)},"txs":${row.txs}}}`;
      lines.push(line);
      bytes += line.length;
    }
    if (lines.length === 0) return fail(reply, 404, `no block at height ${from} (head is ${node.height})`);
    return reply.type("application/x-ndjson").send(`${lines.join("\n")}\n`);
  });

  app.get<{ Params: { h: string } }>("/ledger/orderer-position/:h", async (request, reply) => {
    const height = parseHeight(request.params.h);
    if (height === undefined) return fail(reply, 400, "block height must be a non-negative integer");
    const position = options.ordererPosition?.(height);
    if (!position) return fail(reply, 404, `this node's orderer has no position for block ${height}`);
    return { height, ...position };
  });

  app.get<{ Params: { id: string } }>("/ledger/tx/:id", async (request, reply) => {
    const id = request.params.id;
    if (!/^[0-9a-f]{64}$/.test(id)) return fail(reply, 400, "tx id must be 64 lowercase hex characters");
    const stored = node.readTx(id);
    const treeHead = node.store.latestTreeHead();
    if (!stored || !treeHead) return fail(reply, 404, `no tx ${id} in the ledger`);
    const path = inclusionProof(node.store, stored.index, treeHead.size).map(toHex);
    return {
      ...stored.entry,
      height: stored.height,
      index: stored.index,
      proof: { index: stored.index, size: treeHead.size, path },
      treeHead,
    };
  });

  app.get<{ Querystring: { from?: string; to?: string } }>("/ledger/consistency", async (request, reply) => {
    node.assertReadable();
    const treeHead = node.store.latestTreeHead();
    if (!treeHead) return fail(reply, 503, "the ledger has no blocks yet");
    const from = parseHeight(request.query.from ?? "");
    const to = request.query.to === undefined ? treeHead.size : parseHeight(request.query.to);
    if (from === undefined)
      return fail(reply, 400, "query parameter from (a tree size) is required and must be a non-negative integer");
    if (to === undefined) return fail(reply, 400, "query parameter to must be a non-negative integer");
    // RFC 9162 defines no proof from the empty tree: any root would "extend" it, so there is nothing to prove.
    if (from === 0) return fail(reply, 400, "query parameter from must be at least 1 (there is no proof from size 0)");
    if (from > to) return fail(reply, 400, `from (${from}) must not exceed to (${to})`);
    if (to > treeHead.size) return fail(reply, 400, `to (${to}) exceeds the log size (${treeHead.size})`);
    const path = consistencyProof(node.store, from, to).map(toHex);
    return { from, to, path, treeHead };
  });

  app.post("/consent/decide", async (request, reply) => {
    if (!options.decideFromAnywhere && !isLoopback(request.socket.remoteAddress ?? "")) {
      return fail(reply, 403, "the decision endpoint answers loopback callers only");
    }
    const parsed = parseDecisionRequest(request.body);
    if (!parsed.ok) return fail(reply, 400, `invalid decision request: ${parsed.error}`);
    return { ...node.decide(parsed.request), height: node.height };
  });

  app.get("/healthz", async (_request, reply) => {
    const halted = node.halted;
    const body = { status: halted ? "halted" : "ok", height: node.height, reason: halted };
    return reply.code(halted ? 503 : 200).send(body);
  });

  app.get("/metrics", async (_request, reply) => reply.type("text/plain; version=0.0.4").send(node.metrics.render()));

  return app;
}

/** Parses a request body; a `NodeError` (400) says what is wrong with it. */
export function parseJsonBody(body: string): unknown {
  if (body.length === 0) throw new NodeError("bad-json", 400, "empty JSON body: send a JSON value");
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch (error) {
    throw new NodeError("bad-json", 400, `malformed JSON body: ${(error as Error).message}`);
  }
  // Only a body that spells "proto" can carry __proto__ or constructor.prototype, and only one with a backslash can
  // carry a key that needs escaping (or an escaped "proto").
  if (body.includes("proto") || body.includes("\\")) {
    const problem = forbiddenKey(value);
    if (problem) throw new NodeError("bad-json", 400, `${problem} in the JSON body`);
  }
  return value;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: these are exactly the characters JSON must escape
const NEEDS_ESCAPE_RE = /["\\\u0000-\u001f]/;

/**
 * Why a key makes the body unacceptable, if one does (walks without recursion). `__proto__` and
 * `constructor.prototype` could poison a prototype once merged into an object. A key JSON must escape (quote,
 * backslash, control character) is no key of any schema, and V8's JSON.parse decodes such keys wrongly once it has
 * parsed a backslash key after the same keys (nodejs/node#63785): stored, such a tx would read back differently
 * depending on what the process parsed before — a tampered-looking block, or nodes that disagree.
 */
function forbiddenKey(root: unknown): string | undefined {
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const value = stack.pop();
    if (typeof value !== "object" || value === null) continue;
    if (!Array.isArray(value)) {
      for (const key of Object.keys(value)) {
        if (NEEDS_ESCAPE_RE.test(key)) return `forbidden key ${JSON.stringify(key)} (keys must not need escaping)`;
      }
      if (Object.hasOwn(value, "__proto__")) return "forbidden key __proto__";
      const ctor = Object.hasOwn(value, "constructor") ? (value as { constructor: unknown }).constructor : undefined;
      if (typeof ctor === "object" && ctor !== null && Object.hasOwn(ctor, "prototype")) {
        return "forbidden key constructor.prototype";
      }
    }
    for (const child of Object.values(value)) stack.push(child);
  }
  return undefined;
}

function parseWait(raw: string | undefined): boolean | undefined {
  if (raw === undefined || raw === "true") return true;
  if (raw === "false") return false;
  return undefined;
}

function commitBody(result: CommitResult) {
  return { id: result.id, height: result.height, index: result.index, valid: result.valid, code: result.code };
}
