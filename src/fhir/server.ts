/**
 * The FHIR R4 API and its OAuth endpoints on a node's fastify server: content negotiation, bearer tokens, body
 * limits and OperationOutcome errors here; what each interaction does is in the framework-independent handlers of
 * `./service` (as Medplum's fhir-router).
 */
import { existsSync } from "node:fs";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Dispatcher } from "undici";
import type { Extension, ExtensionContext } from "../node/runtime.ts";
import {
  authUrls,
  BearerCache,
  JtiCache,
  nodeBaseUrl,
  nodeJwks,
  smartConfiguration,
  verifyBearer,
} from "./auth/index.ts";
import { issueToken } from "./auth/token-endpoint.ts";
import { capabilityStatement, type TypeInteraction } from "./capability.ts";
import { type PeerDirectory, RegistryPeerDirectory } from "./exchange/directory.ts";
import { registerPeerRoutes } from "./exchange/peer-server.ts";
import {
  methodNotAllowed,
  notAcceptable,
  notFound,
  OperationOutcomeError,
  outcomeOf,
  requestErrorOutcome,
  unsupportedMediaType,
} from "./outcome.ts";
import { fhirPaths } from "./paths.ts";
import type { FhirContext, FhirHandler, FhirRequest, FhirResponse } from "./service/context.ts";
import { type FhirHandlers, openServices } from "./service/index.ts";
import { LOOKUP_KEY_FILE, LookupKey } from "./service/patients.ts";
import { openCustodianStore } from "./service/write.ts";
import { STORED_TYPES } from "./validate.ts";

export { fhirPaths } from "./paths.ts";

const FHIR_JSON = "application/fhir+json";
/** Transaction bundles (a Synthea patient is up to ~2 MB); a bigger body is refused with 413. */
export const MAX_FHIR_BODY_BYTES = 32 * 1024 * 1024;
const TYPE_RE = /^[A-Z][A-Za-z]{1,63}$/;
const ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;

const contexts = new WeakMap<object, FhirContext>();

/** The FHIR context `attachFhir` opened for this node (the demo loads its records through it). */
export function fhirContextOf(node: object): FhirContext | undefined {
  return contexts.get(node);
}

/** Options of the FHIR API beyond the data dir's. */
export interface FhirOptions {
  /** Where other custodians' nodes listen: `$everything` includes their records when given. */
  peers?: PeerDirectory;
  /** Longest wait for each other custodian in `$everything`, ms (default 3000). */
  exchangeDeadlineMs?: number;
  /** undici dispatcher for node-to-node requests (e.g. an Agent with TLS settings). */
  dispatcher?: Dispatcher;
}

/** `attachFhir` with options, as an `extend` hook for `openNode`. */
export function fhirExtension(
  options: FhirOptions,
): (app: FastifyInstance, ext: ExtensionContext) => Promise<Extension> {
  return (app, ext) => attachFhir(app, ext, options);
}

/** `openNode`'s `extend` hook: the vault, the FHIR API and the token endpoint for this node. */
export async function attachFhir(
  app: FastifyInstance,
  ext: ExtensionContext,
  options: FhirOptions = {},
): Promise<Extension> {
  const { node, dir, config } = ext;
  const paths = fhirPaths(dir);
  const nodeRec = node.store.state.get(`key/${node.key.keyId}`) as { kind?: string; org?: string } | undefined;
  if (nodeRec?.kind !== "node" || typeof nodeRec.org !== "string") {
    // A node that joined from a genesis file before its organisation was approved serves the ledger, not FHIR.
    ext.log.warn("the FHIR API is off: this node's key is not (yet) an organisation's node on the ledger");
    return fhirOff(
      app,
      "the FHIR API starts once this node's key is registered to an organisation on the ledger (then restart the node)",
    );
  }
  const orgId = nodeRec.org;
  const store = openCustodianStore({
    node,
    key: node.key,
    custodian: orgId,
    vaultPath: paths.vault,
    vaultKeyPath: paths.vaultKey,
    journalPath: paths.writeJournal,
  });
  const { vault, anchorer } = store;
  // The network's NHS-number lookup key (copied to each member node): without it a POSTed Patient cannot be matched.
  const lookup = existsSync(paths.lookupKey) ? LookupKey.open(paths.lookupKey) : undefined;
  if (!lookup) ext.log.warn(`no ${LOOKUP_KEY_FILE} in the data dir: Patients cannot be matched by NHS number`);
  let base = nodeBaseUrl(config);
  const ctx: FhirContext = {
    node,
    vault,
    anchorer,
    accessLog: { log: () => {}, flush: async () => {} },
    orgId,
    nodeKey: node.key,
    baseUrl: authUrls(base).fhirBaseUrl,
    now: Date.now,
  };
  let services: Awaited<ReturnType<typeof openServices>>;
  // Without a directory given, custodians are found through the node's peer registry (etcd announcements).
  const registryDirectory = options.peers === undefined ? new RegistryPeerDirectory(ext.registry) : undefined;
  const peers = options.peers ?? registryDirectory;
  const dispatcher = options.dispatcher ?? ext.peerDispatcher;
  try {
    const exchange =
      peers === undefined
        ? undefined
        : {
            directory: peers,
            ...(options.exchangeDeadlineMs === undefined ? {} : { deadlineMs: options.exchangeDeadlineMs }),
            ...(dispatcher === undefined ? {} : { dispatcher }),
          };
    services = await openServices(ctx, { auditPath: paths.audit, dir, log: ext.log, lookup, exchange });
  } catch (error) {
    registryDirectory?.close();
    store.close();
    // A store found altered while the audit index caught up has halted the node: it still starts, so that /healthz
    // can say why, and the FHIR API answers 503 like the ledger's reads.
    if (node.halted) {
      ext.log.error("the FHIR API is off: the node halted while opening it");
      return fhirOff(app, `the node has halted: ${node.halted}`);
    }
    throw error;
  }
  ctx.accessLog = services.accessLog;
  contexts.set(node, ctx);
  const jtiCache = new JtiCache();
  const bearerCache = new BearerCache();

  registerFhirRoutes(app, {
    ctx,
    handlers: services.handlers,
    auth: async (request) => {
      const { tokenUrl, fhirBaseUrl } = authUrls(base);
      const result = await verifyBearer(request.headers.authorization, {
        state: node.store.state,
        issuer: tokenUrl,
        audience: fhirBaseUrl,
        nodeKeyId: node.key.keyId,
        now: Date.now,
        cache: bearerCache,
      });
      if (!result.ok) {
        throw Object.assign(new OperationOutcomeError(401, "login", result.description), {
          headers: { "www-authenticate": result.wwwAuthenticate },
        });
      }
      return result.principal;
    },
  });

  app.addContentTypeParser("application/x-www-form-urlencoded", { parseAs: "string" }, (_request, body, done) => {
    done(null, parseForm(body as string));
  });
  app.post("/auth/token", { bodyLimit: 64 * 1024 }, async (request, reply) => {
    const { tokenUrl, fhirBaseUrl } = authUrls(base);
    const form = request.body;
    if (typeof form !== "object" || form === null || Array.isArray(form)) {
      return reply
        .code(400)
        .header("cache-control", "no-store")
        .send({ error: "invalid_request", error_description: "send an application/x-www-form-urlencoded form" });
    }
    const result = await issueToken(form as Record<string, unknown>, {
      state: node.store.state,
      tokenUrl,
      fhirBaseUrl,
      now: Date.now,
      signer: node.key,
      jtiCache,
    });
    return reply
      .code(result.status)
      .headers(result.headers ?? {})
      .send(result.body);
  });
  const discovery = async (_request: FastifyRequest, reply: FastifyReply) =>
    reply.header("cache-control", "public, max-age=300").send(smartConfiguration(base));
  app.get("/.well-known/smart-configuration", discovery);
  app.get("/fhir/.well-known/smart-configuration", discovery);
  app.get("/auth/jwks", async () => nodeJwks(node.key));
  // Other custodians' nodes asking for what this one holds (signed requests, not bearer tokens).
  registerPeerRoutes(app, ctx);

  return {
    listening(url: string) {
      base = url;
      ctx.baseUrl = authUrls(url).fhirBaseUrl;
      void registryDirectory?.refresh();
    },
    async close() {
      registryDirectory?.close();
      contexts.delete(node);
      await services.close();
      store.close();
    },
  };
}

/** `/fhir` answers 503 with the reason: the node serves its ledger but not FHIR. */
function fhirOff(app: FastifyInstance, reason: string): Extension {
  const off = new OperationOutcomeError(503, "processing", reason);
  app.all("/fhir", async (_request, reply) => sendError(reply, off));
  app.all("/fhir/*", async (_request, reply) => sendError(reply, off));
  return { close: async () => {} };
}

function parseForm(body: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of new URLSearchParams(body)) {
    const had = out[name];
    out[name] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value];
  }
  return out;
}

interface RouteOptions {
  ctx: FhirContext;
  handlers: FhirHandlers;
  auth: (request: FastifyRequest) => Promise<FhirRequest["principal"]>;
}

/** Interactions and operations the routes below serve, for the CapabilityStatement. */
function capability(ctx: FhirContext, handlers: FhirHandlers) {
  const interactions: TypeInteraction[] = ["read", "vread", "history-instance", "search-type"];
  if (handlers.create) interactions.push("create");
  if (handlers.update) interactions.push("update");
  const resources: Record<string, TypeInteraction[]> = {};
  for (const type of [...STORED_TYPES].sort()) {
    if (type === "Consent")
      resources[type] = ["read", "search-type", ...(handlers.consentCreate ? (["create"] as const) : [])];
    else if (type === "AuditEvent" || type === "Provenance") resources[type] = ["search-type"];
    else resources[type] = interactions;
  }
  const op = (name: string, documentation: string) => ({
    name,
    definition: `http://hl7.org/fhir/OperationDefinition/Patient-${name}`,
    documentation,
  });
  const patientOps = [
    handlers.everything && op("everything", "every record of the patient this caller may see"),
    handlers.exportPatient && op("export", "GDPR Art. 15/20: records, consent history and access log as one Bundle"),
    handlers.erasePatient && op("erase", "GDPR Art. 17: crypto-shreds what may be erased, says what is kept and why"),
    handlers.breakGlass &&
      op("break-glass", "emergency access for a clinician, with a reason, logged and time-limited"),
  ].filter((o) => Boolean(o)) as { name: string; definition: string; documentation: string }[];
  return capabilityStatement({
    baseUrl: ctx.baseUrl,
    resources,
    operations: { Patient: patientOps },
    systemInteractions: handlers.transaction ? ["transaction"] : [],
    smart: { tokenUrl: ctx.baseUrl.replace(/\/fhir$/, "/auth/token") },
    software: { name: "CareLedger", version: "0.1.0" },
  });
}

export function registerFhirRoutes(app: FastifyInstance, options: RouteOptions): void {
  const { ctx, handlers, auth } = options;
  app.register(
    async (fhir) => {
      fhir.removeAllContentTypeParsers();
      fhir.addContentTypeParser(
        ["application/fhir+json", "application/json"],
        { parseAs: "string", bodyLimit: MAX_FHIR_BODY_BYTES },
        (_request, body, done) => {
          try {
            done(null, JSON.parse(body as string));
          } catch {
            done(new OperationOutcomeError(400, "structure", "the body is not valid JSON"), undefined);
          }
        },
      );
      fhir.addContentTypeParser("*", (_request, _payload, done) => done(unsupportedMediaType(), undefined));
      fhir.setErrorHandler((error, _request, reply) => sendError(reply, error));
      fhir.setNotFoundHandler((_request, reply) => sendError(reply, notFound("no such FHIR endpoint")));
      fhir.addHook("onRequest", async (request) => negotiate(request));

      fhir.get("/metadata", async (_request, reply) => send(reply, { status: 200, body: capability(ctx, handlers) }));

      const run =
        (pick: (request: FastifyRequest) => FhirHandler | undefined) =>
        async (request: FastifyRequest, reply: FastifyReply) => {
          const principal = await auth(request);
          const params = request.params as FhirRequest["params"];
          checkParams(params);
          const req: FhirRequest = {
            principal,
            params,
            query: queryOf(request),
            body: request.body,
            ifMatch: parseIfMatch(request.headers["if-match"]),
          };
          const handler = pick(request);
          if (!handler) throw methodNotAllowed();
          return send(reply, await handler(ctx, req));
        };

      fhir.post(
        "/",
        run(() => handlers.transaction),
      );
      fhir.get(
        "/:type",
        run((r) => {
          const type = (r.params as { type: string }).type;
          if (type === "Consent") return handlers.consentSearch;
          if (type === "AuditEvent") return handlers.auditEventSearch;
          if (type === "Provenance") return handlers.provenanceSearch;
          return handlers.search;
        }),
      );
      fhir.post(
        "/:type",
        run((r) => ((r.params as { type: string }).type === "Consent" ? handlers.consentCreate : handlers.create)),
      );
      fhir.get(
        "/:type/:id",
        run((r) => ((r.params as { type: string }).type === "Consent" ? handlers.consentRead : handlers.read)),
      );
      fhir.put(
        "/:type/:id",
        run((r) => ((r.params as { type: string }).type === "Consent" ? handlers.consentUpdate : handlers.update)),
      );
      fhir.get(
        "/:type/:id/_history",
        run(() => handlers.history),
      );
      fhir.get(
        "/:type/:id/_history/:vid",
        run(() => handlers.vread),
      );
      const operation = (method: "GET" | "POST") => (r: FastifyRequest) => {
        const { type, op } = r.params as { type: string; op: string };
        if (type !== "Patient") return undefined;
        if (method === "GET" && op === "$everything") return handlers.everything;
        if (method === "GET" && op === "$export") return handlers.exportPatient;
        if (method === "POST" && op === "$erase") return handlers.erasePatient;
        if (method === "POST" && op === "$break-glass") return handlers.breakGlass;
        return undefined;
      };
      fhir.get("/:type/:id/:op", run(operation("GET")));
      fhir.post("/:type/:id/:op", run(operation("POST")));
    },
    { prefix: "/fhir" },
  );
}

function checkParams(params: FhirRequest["params"] & { op?: string }): void {
  if (params.type !== undefined && !TYPE_RE.test(params.type)) throw notFound("no such resource type");
  if (params.type !== undefined && !STORED_TYPES.has(params.type)) {
    throw new OperationOutcomeError(404, "not-supported", `resource type ${params.type} is not supported here`);
  }
  if (params.id !== undefined && !ID_RE.test(params.id)) throw notFound();
  if (params.vid !== undefined && !/^[1-9][0-9]{0,8}$/.test(params.vid)) throw notFound("no such version");
  if (params.op !== undefined) params.operation = params.op.replace(/^\$/, "");
}

function queryOf(request: FastifyRequest): URLSearchParams {
  const at = request.url.indexOf("?");
  return new URLSearchParams(at < 0 ? "" : request.url.slice(at + 1));
}

/** JSON only: `Accept` and `_format` must allow application/fhir+json (or json, or anything). */
function negotiate(request: FastifyRequest): void {
  const format = queryOf(request).get("_format");
  if (format !== null && !["json", "application/json", FHIR_JSON, "application/json+fhir"].includes(format)) {
    throw notAcceptable(`_format ${format.slice(0, 40)} is not supported; only JSON (application/fhir+json)`);
  }
  const accept = request.headers.accept;
  if (accept === undefined || accept === "") return;
  const types = accept.split(",").map((part) => part.split(";")[0]?.trim().toLowerCase() ?? "");
  const ok = types.some((t) =>
    ["*/*", "application/*", FHIR_JSON, "application/json", "application/json+fhir"].includes(t),
  );
  if (!ok) throw notAcceptable();
}

/** `If-Match: W/"3"` → 3; anything else malformed → 400. */
function parseIfMatch(header: string | string[] | undefined): number | undefined {
  if (header === undefined) return undefined;
  const value = Array.isArray(header) ? header[0] : header;
  const m = /^(?:W\/)?"([1-9][0-9]{0,8})"$/.exec(value?.trim() ?? "");
  if (!m) throw new OperationOutcomeError(400, "invalid", 'If-Match must be an ETag such as W/"3"', "If-Match");
  return Number(m[1]);
}

function send(reply: FastifyReply, response: FhirResponse) {
  reply.code(response.status).type(FHIR_JSON);
  if (response.headers) reply.headers(response.headers);
  return reply.send(response.json ?? response.body ?? "");
}

function sendError(reply: FastifyReply, error: unknown) {
  error = requestErrorOutcome(error, {
    maxBodyBytes: MAX_FHIR_BODY_BYTES,
    onUnexpected: (kind) => reply.log.error(kind, "FHIR request failed"),
  });
  const { status, body } = outcomeOf(error);
  const headers = (error as { headers?: Record<string, string> }).headers;
  if (headers) reply.headers(headers);
  return reply.code(status).type(FHIR_JSON).send(body);
}
