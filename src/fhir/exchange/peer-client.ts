// The requesting side of record exchange: for `$everything` at this node, ask every other custodian that holds
// records of the patient (from this node's own ledger copy, `holders/<patient>`) in parallel, each within a deadline,
// and keep only what checks out against that custodian's anchors on this node's ledger copy. A custodian that is
// down, slow or refuses yields a PartialResult with an error (a warning in the Bundle); the request still succeeds.

import type { BundleEntry } from "@medplum/fhirtypes";
import { type Dispatcher, request } from "undici";
import { type AnchorRec, K, type ResourceRec, read } from "../../contract/state.ts";
import { recordCommitment } from "../../vault/commitment.ts";
import type { Principal } from "../auth/bearer.ts";
import { purposeOf } from "../service/consent-check.ts";
import type { FhirContext } from "../service/context.ts";
import type { PartialResult } from "../service/everything.ts";
import { ID_RE, isResourceType } from "../validate.ts";
import type { PeerDirectory } from "./directory.ts";
import { signPeerRequest } from "./peer-request.ts";
import { PEER_EVERYTHING_PATH } from "./peer-server.ts";

export const DEFAULT_EXCHANGE_DEADLINE_MS = 3000;
/** Largest answer read from one custodian (a patient's whole record at one custodian is a few MB). */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;
const SALT_RE = /^[0-9a-f]{64}$/;

export interface ExchangeOptions {
  directory: PeerDirectory;
  /** Longest wait for each custodian, ms (default 3000). */
  deadlineMs?: number;
  /** undici dispatcher for the requests (e.g. an Agent with TLS settings); default undici's global one. */
  dispatcher?: Dispatcher;
}

/**
 * Other custodians' parts of `Patient/<patient>/$everything` for `principal`, in the order of the ledger's holders
 * index. Clinicians (members) only: a patient's or proxy's request would need their own signature to be trusted by
 * another custodian (this node cannot vouch for them as it does for its staff), so for them each other holder is
 * reported as not included.
 */
export async function otherCustodians(
  ctx: FhirContext,
  principal: Principal,
  patient: string,
  types: ReadonlySet<string> | undefined,
  options: ExchangeOptions,
): Promise<PartialResult[]> {
  const holders = (read.holders(ctx.node.store.state, patient) ?? []).filter((org) => org !== ctx.orgId);
  if (holders.length === 0) return [];
  const identity = principal.identity;
  if (identity.kind === "node") return [];
  if (identity.kind !== "member") {
    return holders.map((custodian) => ({
      custodian,
      error: "requests on a patient's own behalf are not yet sent to other custodians",
    }));
  }
  const deadlineMs = options.deadlineMs ?? DEFAULT_EXCHANGE_DEADLINE_MS;
  return Promise.all(
    holders.map((custodian) =>
      askCustodian(ctx, principal, identity, custodian, patient, types, options, deadlineMs).catch(() => ({
        custodian,
        error: "its answer could not be used",
      })),
    ),
  );
}

async function askCustodian(
  ctx: FhirContext,
  principal: Principal,
  member: { member: string; role: string },
  custodian: string,
  patient: string,
  types: ReadonlySet<string> | undefined,
  options: ExchangeOptions,
  deadlineMs: number,
): Promise<PartialResult> {
  let base = options.directory.urlOf(custodian)?.replace(/\/+$/, "");
  if (base === undefined && options.directory.refresh) {
    // A node that joined or moved since the directory last looked: look again, within the deadline.
    await Promise.race([
      options.directory.refresh(),
      new Promise((resolve) => setTimeout(resolve, deadlineMs / 2).unref()),
    ]);
    base = options.directory.urlOf(custodian)?.replace(/\/+$/, "");
  }
  if (base === undefined) return { custodian, error: "its node's address is not known here" };
  const purpose = purposeOf(principal);
  const jws = await signPeerRequest(
    ctx.nodeKey,
    {
      custodian,
      org: ctx.orgId,
      practitioner: member.member,
      role: member.role,
      purpose,
      patient,
      ...(types === undefined ? {} : { types: [...types].sort() }),
    },
    { now: ctx.now(), lifetimeSec: Math.min(60, Math.ceil(deadlineMs / 1000) + 10) },
  );
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), deadlineMs);
  let status: number;
  let text: string;
  try {
    const response = await request(`${base}${PEER_EVERYTHING_PATH}`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ request: jws }),
      signal: controller.signal,
      ...(options.dispatcher === undefined ? {} : { dispatcher: options.dispatcher }),
    });
    status = response.statusCode;
    text = await readCapped(response.body, MAX_ANSWER_BYTES);
  } catch {
    return {
      custodian,
      error: controller.signal.aborted ? `it did not answer within ${deadlineMs} ms` : "its node could not be reached",
    };
  } finally {
    clearTimeout(timer);
  }
  if (status !== 200) return { custodian, error: `it refused the request (HTTP ${status})` };
  let answer: unknown;
  try {
    answer = JSON.parse(text);
  } catch {
    return { custodian, error: "its answer was not JSON" };
  }
  return checkAnswer(ctx, principal, custodian, `${base}/fhir`, patient, types, answer);
}

async function readCapped(body: AsyncIterable<Buffer>, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > max) throw new RangeError("answer too large");
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * Keeps each record of a custodian's answer only if it is the latest version of a record of this patient at that
 * custodian on THIS node's ledger copy, its commitment (recomputed from the resource and the salt sent) equals the
 * anchored one, and this node's own consent decision for the practitioner also permits it (the custodian's ledger
 * copy may lag a revocation this node has applied). Records failing the anchor check are counted in a warning, never
 * shown; records this node's decision denies are dropped silently.
 */
export function checkAnswer(
  ctx: FhirContext,
  principal: Principal,
  custodian: string,
  fhirBase: string,
  patient: string,
  types: ReadonlySet<string> | undefined,
  answer: unknown,
): PartialResult {
  const body = answer as { entries?: unknown; withheld?: unknown } | null;
  if (typeof body !== "object" || body === null || !Array.isArray(body.entries)) {
    return { custodian, error: "its answer was malformed" };
  }
  const state = ctx.node.store.state;
  const purpose = purposeOf(principal);
  const at = ctx.now();
  const entries: BundleEntry[] = [];
  let unverified = 0;
  for (const item of body.entries as unknown[]) {
    const { resource, salt } = (item ?? {}) as { resource?: unknown; salt?: unknown };
    const r = resource as { resourceType?: unknown; id?: unknown; meta?: { versionId?: unknown } } | undefined;
    const type = r?.resourceType;
    const id = r?.id;
    const version = r?.meta?.versionId;
    if (
      typeof type !== "string" ||
      typeof id !== "string" ||
      typeof version !== "string" ||
      typeof salt !== "string" ||
      !SALT_RE.test(salt) ||
      !isResourceType(type) ||
      !ID_RE.test(id) ||
      (types !== undefined && !types.has(type))
    ) {
      unverified++;
      continue;
    }
    const res = state.get(K.resource(custodian, type, id)) as ResourceRec | undefined;
    const anchor = state.get(K.anchor(custodian, type, id, version)) as AnchorRec | undefined;
    if (
      res === undefined ||
      res.patient !== patient ||
      res.erasedAt !== undefined ||
      res.latest !== version ||
      anchor === undefined ||
      recordCommitment(salt, resource) !== anchor.commitment
    ) {
      unverified++;
      continue;
    }
    const decision = ctx.node.decide({
      requester: principal.keyId,
      patient,
      purpose,
      action: "read",
      resource: {
        type,
        custodian,
        labels: [...anchor.labels],
        ...(anchor.date === undefined ? {} : { date: anchor.date }),
      },
      at,
    });
    if (decision.effect !== "permit") continue;
    entries.push({
      fullUrl: `${fhirBase}/${type}/${id}`,
      resource: resource as BundleEntry["resource"],
      search: { mode: "match" },
    });
  }
  const warnings: string[] = [];
  if (unverified > 0) {
    warnings.push(
      `${unverified} record(s) from ${custodian} did not match its anchors on this node's ledger and were left out`,
    );
  }
  const withheld = typeof body.withheld === "number" && Number.isSafeInteger(body.withheld) ? body.withheld : 0;
  if (withheld > 0) {
    warnings.push(`${withheld} record(s) held by ${custodian} failed its own integrity check and were not sent`);
  }
  return warnings.length > 0 ? { custodian, entries, warnings } : { custodian, entries };
}
