// The custodian's side of record exchange: `POST /peer/v1/everything` answers another node's signed request for what
// this custodian holds of a patient. Not under `/fhir` bearer auth: the request carries its own signature
// (peer-request.ts). Each record is decided exactly as a read by that practitioner at this node would be (the consent
// gate on this node's own ledger copy, scopes `user/*.rs` within the role's ceiling) and every decision goes to this
// node's `access.log` (requester = the practitioner, custodian = this org). Records denied are left out without
// trace; each record sent carries its commitment's salt, so the requesting node can check it against this
// custodian's anchor on its own ledger copy before showing it.

import type { FastifyInstance, FastifyReply } from "fastify";
import { Type } from "typebox";
import { Compile } from "typebox/compile";
import { type AnchorRec, K, type ResourceRec, read as readState } from "../../contract/state.ts";
import { VaultIntegrityError, type VaultRecord, type VaultResource } from "../../vault/vault.ts";
import type { Principal } from "../auth/bearer.ts";
import { JtiCache } from "../auth/jti-cache.ts";
import { OperationOutcomeError, outcomeOf, requestErrorOutcome } from "../outcome.ts";
import { assertAuditable, checkAccess, type RecordFacts } from "../service/consent-check.ts";
import type { AccessEntry, FhirContext } from "../service/context.ts";
import { factsOf, integrityFailure } from "../service/read.ts";
import { MAX_PEER_REQUEST_CHARS, verifyPeerRequest } from "./peer-request.ts";

export const PEER_EVERYTHING_PATH = "/peer/v1/everything";
const MAX_PEER_BODY_BYTES = 16 * 1024;

const PeerBodySchema = Type.Object(
  { request: Type.String({ minLength: 1, maxLength: MAX_PEER_REQUEST_CHARS }) },
  { additionalProperties: false },
);
const checkBody = Compile(PeerBodySchema);

/** One record in a custodian's answer: the version as stored (meta.versionId set) and its commitment's opening. */
export interface PeerEntry {
  resource: VaultResource;
  salt: string;
}

/** A custodian's answer to `POST /peer/v1/everything`. */
export interface PeerAnswer {
  custodian: string;
  /** Records the practitioner may see, the patient's Patient resource (if held and visible) first. */
  entries: PeerEntry[];
  /** Records the practitioner may see that failed this custodian's own integrity check and were not sent. */
  withheld: number;
}

export interface PeerServerOptions {
  /** Single use of request ids (one per node). */
  jtiCache?: JtiCache;
}

/** Verifies a peer request and collects what its practitioner may see. Throws OperationOutcomeError on refusal. */
export async function answerPeerEverything(ctx: FhirContext, body: unknown, jtiCache: JtiCache): Promise<PeerAnswer> {
  if (!checkBody.Check(body)) {
    throw new OperationOutcomeError(400, "structure", "send {request: <compact JWS>} and nothing else", "request");
  }
  const verified = await verifyPeerRequest((body as { request: string }).request, {
    state: ctx.node.store.state,
    orgId: ctx.orgId,
    now: ctx.now,
    jtiCache,
  });
  if (!verified.ok) {
    const code = verified.status === 503 ? "throttled" : verified.status === 400 ? "structure" : "security";
    throw new OperationOutcomeError(verified.status, code, verified.message);
  }
  const { claims, principal } = verified;
  return collect(ctx, principal, claims.patient, claims.types === undefined ? undefined : new Set(claims.types));
}

function collect(
  ctx: FhirContext,
  principal: Principal,
  patient: string,
  types: ReadonlySet<string> | undefined,
): PeerAnswer {
  assertAuditable(ctx);
  const at = ctx.now();
  const toLog: AccessEntry[] = [];
  const entries: PeerEntry[] = [];
  let withheld = 0;
  const refs = ctx.vault.byPatient(patient);
  // The Patient resource first, as in a local $everything.
  refs.sort(
    (a, b) => Number(b.type === "Patient" && b.id === patient) - Number(a.type === "Patient" && a.id === patient),
  );
  try {
    for (const ref of refs) {
      if (types !== undefined && !types.has(ref.type)) continue;
      let rec: VaultRecord | undefined;
      try {
        rec = ctx.vault.read(ref.type, ref.id);
      } catch (error) {
        if (!(error instanceof VaultIntegrityError)) throw error;
        integrityFailure(ctx, ref.type);
        // Said to the requester only if they could have seen it (decided on the ledger's facts of the version), so
        // a withheld record reveals nothing a denied one would not.
        const facts = ledgerFacts(ctx, ref.type, ref.id, patient);
        if (facts !== undefined && checkAccess(ctx, principal, facts, "read", "read", { log: false, at }).allowed) {
          withheld++;
        }
        continue;
      }
      if (rec === undefined || rec.deleted) continue;
      const access = checkAccess(ctx, principal, factsOf(ref.type, ref.id, rec), "read", "read", { log: false, at });
      if (access.entry) toLog.push(access.entry);
      if (!access.allowed) continue;
      entries.push({ resource: rec.resource, salt: rec.salt });
    }
  } finally {
    if (toLog.length > 0) ctx.accessLog.log(toLog);
  }
  return { custodian: ctx.orgId, entries, withheld };
}

/** The consent facts of a record's latest version as anchored on this node's ledger copy. */
function ledgerFacts(ctx: FhirContext, type: string, id: string, patient: string): RecordFacts | undefined {
  const state = ctx.node.store.state;
  const res = state.get(K.resource(ctx.orgId, type, id)) as ResourceRec | undefined;
  if (res === undefined || res.patient !== patient || readState.patient(state, patient) === undefined) return undefined;
  const anchor = state.get(K.anchor(ctx.orgId, type, id, res.latest)) as AnchorRec | undefined;
  if (anchor === undefined) return undefined;
  const facts: RecordFacts = { resourceType: type, id, patient, labels: anchor.labels };
  if (anchor.date !== undefined) facts.date = anchor.date;
  return facts;
}

function sendOutcome(reply: FastifyReply, error: unknown) {
  error = requestErrorOutcome(error, {
    maxBodyBytes: MAX_PEER_BODY_BYTES,
    onUnexpected: (kind) => reply.log.error(kind, "peer request failed"),
  });
  const { status, body } = outcomeOf(error);
  return reply.code(status).type("application/fhir+json").send(body);
}

/** Adds `POST /peer/v1/everything` (JSON only, 16 KiB, OperationOutcome errors) to a node's server. */
export function registerPeerRoutes(app: FastifyInstance, ctx: FhirContext, options: PeerServerOptions = {}): void {
  const jtiCache = options.jtiCache ?? new JtiCache();
  app.register(
    async (peer) => {
      peer.removeAllContentTypeParsers();
      peer.addContentTypeParser(
        "application/json",
        { parseAs: "string", bodyLimit: MAX_PEER_BODY_BYTES },
        (_request, body, done) => {
          try {
            done(null, JSON.parse(body as string));
          } catch {
            done(new OperationOutcomeError(400, "structure", "the body is not valid JSON"), undefined);
          }
        },
      );
      peer.addContentTypeParser("*", (_request, _payload, done) =>
        done(new OperationOutcomeError(415, "not-supported", "send application/json"), undefined),
      );
      peer.setErrorHandler((error, _request, reply) => sendOutcome(reply, error));
      peer.post("/everything", { bodyLimit: MAX_PEER_BODY_BYTES }, async (request, reply) => {
        const answer = await answerPeerEverything(ctx, request.body, jtiCache);
        return reply.code(200).header("cache-control", "no-store").type("application/json").send(answer);
      });
    },
    { prefix: "/peer/v1" },
  );
}
