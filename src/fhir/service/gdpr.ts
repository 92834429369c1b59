// GDPR for the patient: `Patient/:id/$export` (Art. 15 access and Art. 20 portability) and `Patient/:id/$erase`
// (Art. 17 erasure, with the Art. 17(3) exceptions a custodian of health records has). Both only for the patient
// themself or a `manage` proxy acting for them; anyone else is refused by who they are (403), not by any record.
//
// $export: one Bundle (type collection) holding the current version of every record this custodian holds for the
// patient (each passing the consent gate, so safeguarding-hidden entries stay hidden and each read is logged), the
// patient's consent rules as Consent resources (the rules now in force), the consent history (every `consent.set`,
// `consent.revoke` and `optout.set` tx of the patient as a Consent version with its ledger tx id, from the audit
// index), and the access log as AuditEvents (from the same index, when this node runs one; otherwise an
// OperationOutcome entry says the history and the log are missing).
//
// $erase: records the patient provided themselves and research copies are crypto-shredded (every version deleted,
// the patient's data key replaced, so old copies of the ciphertext are unreadable) and a `record.erase` listing them
// is anchored on the ledger, signed by the node key; every other record is clinical care the custodian must keep, and
// is kept: Art. 17(3)(b) (legal obligation: health records retention, in England the NHS Records Management Code of
// Practice) and 17(3)(c) (public health). The answer is a Parameters resource listing what was erased and what was
// kept, with the reason for each kept record. The patient's registration on the ledger stays (their records
// elsewhere still need it); only the registering organisation could end it.
//
// What counts as patient-provided or a research copy: `meta.tag` `urn:careledger:record-origin` with code
// `patient-provided` or `research-copy`, or `meta.source` `urn:careledger:patient-provided`.

import type { Bundle, BundleEntry, Parameters, ParametersParameter, Resource } from "@medplum/fhirtypes";
import { ruleOfConsentSet } from "../../contract/apply.ts";
import type { Payload } from "../../contract/schemas.ts";
import { K, type ResourceRec, read as readState } from "../../contract/state.ts";
import { parseSignedTx } from "../../ledger/tx.ts";
import type { CommitResult } from "../../node/ledger-node.ts";
import { signNew } from "../../node/network.ts";
import { VaultIntegrityError } from "../../vault/vault.ts";
import type { Principal } from "../auth/bearer.ts";
import { forbidden, notFound, OperationOutcomeError, operationOutcome } from "../outcome.ts";
import { AuditIndex, auditEventsFor } from "./audit.ts";
import { checkAccess } from "./consent-check.ts";
import { consentHistory, ruleToConsent } from "./consent-resource.ts";
import type { FhirContext, FhirHandler } from "./context.ts";
import { guarded } from "./read.ts";

/** `meta.tag` system for where a record came from (codes `patient-provided`, `research-copy`). */
export const RECORD_ORIGIN_SYSTEM = "urn:careledger:record-origin";
/** `meta.source` of a record the patient provided. */
export const PATIENT_PROVIDED_SOURCE = "urn:careledger:patient-provided";

/** Why retained records are kept (Art. 17(3)). */
export const RETENTION_REASON =
  "GDPR Art. 17(3)(b) and (c): a health record the custodian must retain by law (NHS Records Management Code of " +
  "Practice) and for public health; it is kept, encrypted, and still governed by your consent rules";

/** `record.erase` lists at most this many resources per tx (the contract's limit). */
const ERASE_CHUNK = 1000;

type Origin = "patient-provided" | "research-copy" | "clinical";

/** Where a record came from (see the file comment). */
export function originOf(resource: { meta?: unknown }): Origin {
  const meta = resource.meta as { source?: unknown; tag?: unknown } | undefined;
  if (meta?.source === PATIENT_PROVIDED_SOURCE) return "patient-provided";
  if (Array.isArray(meta?.tag)) {
    for (const t of meta.tag as { system?: unknown; code?: unknown }[]) {
      if (t?.system !== RECORD_ORIGIN_SYSTEM) continue;
      if (t.code === "patient-provided" || t.code === "research-copy") return t.code;
    }
  }
  return "clinical";
}

/** The patient themself, or an active `manage` proxy acting for them; anyone else is refused. */
function requireDataSubject(principal: Principal, patient: string, what: string): void {
  const id = principal.identity;
  const own = id.kind === "patient" && id.patient === patient;
  const manager = id.kind === "proxy" && id.patient === patient && id.scope === "manage";
  if (!own && !manager) throw forbidden(`${what} is for the patient themself or a proxy who manages their record`);
}

/** `GET /fhir/Patient/:id/$export` */
export const exportPatient: FhirHandler = async (ctx, req) => {
  const patient = req.params.id ?? "";
  requireDataSubject(req.principal, patient, "$export");
  const state = ctx.node.store.state;
  if (readState.patient(state, patient) === undefined) throw notFound(`Patient/${patient}`);
  const entries: BundleEntry[] = [];
  const refs = ctx.vault.byPatient(patient);
  for (const ref of refs) {
    const rec = guarded(ctx, ref.type, () => ctx.vault.read(ref.type, ref.id));
    if (rec === undefined || rec.deleted) continue;
    const facts = {
      resourceType: ref.type,
      id: ref.id,
      patient: rec.patient,
      labels: rec.labels,
      ...(rec.date === undefined ? {} : { date: rec.date }),
    };
    if (!checkAccess(ctx, req.principal, facts, "read", "read").allowed) continue;
    entries.push({ fullUrl: `${ctx.baseUrl}/${ref.type}/${ref.id}`, resource: rec.resource as unknown as Resource });
  }
  const at = ctx.now();
  for (const rule of readState.rules(state, patient) ?? []) {
    const consent = ruleToConsent(patient, rule, at);
    entries.push({ fullUrl: `${ctx.baseUrl}/Consent/${consent.id}`, resource: consent });
  }
  const index = AuditIndex.of(ctx.node);
  if (index === undefined) {
    entries.push({
      resource: operationOutcome([
        {
          severity: "warning",
          code: "processing",
          diagnostics: "this node keeps no index of the access log: it and the consent history are not included",
        },
      ]),
    });
  } else {
    await index.ready();
    const history = consentHistory(patient, index.consentChanges(patient), (payload, time) =>
      ruleOfConsentSet(payload as Payload<"consent.set">, time),
    );
    for (const version of history) {
      entries.push({
        fullUrl: `${ctx.baseUrl}/Consent/${version.id}/_history/${version.meta?.versionId}`,
        resource: version,
      });
    }
    for (const event of auditEventsFor(ctx, index, patient)) entries.push({ resource: event });
  }
  const bundle: Bundle = {
    resourceType: "Bundle",
    type: "collection",
    timestamp: new Date(at).toISOString(),
    total: entries.length,
    entry: entries,
  } as Bundle;
  return { status: 200, body: bundle };
};

/** `POST /fhir/Patient/:id/$erase` */
export const erasePatient: FhirHandler = async (ctx, req) => {
  const patient = req.params.id ?? "";
  requireDataSubject(req.principal, patient, "$erase");
  const state = ctx.node.store.state;
  if (readState.patient(state, patient) === undefined) throw notFound(`Patient/${patient}`);
  const erase: { type: string; id: string }[] = [];
  const kept: { type: string; id: string }[] = [];
  for (const ref of ctx.vault.byPatient(patient)) {
    let origin: Origin;
    try {
      const rec = ctx.vault.read(ref.type, ref.id);
      origin = rec === undefined ? "clinical" : originOf(rec.resource);
    } catch (error) {
      // A record that fails its integrity check cannot be classified: it is kept, and the failure reported.
      if (error instanceof VaultIntegrityError) {
        kept.push(ref);
        continue;
      }
      throw error;
    }
    (origin === "clinical" ? kept : erase).push(ref);
  }
  // Tell the ledger first, then shred: a failure between leaves records marked erased that are still here, and
  // repeating the request shreds them (records already marked are not marked again). Shredding first could leave
  // records gone but never marked, with nothing left to find them by.
  const unmarked = erase.filter((r) => {
    const res = state.get(K.resource(ctx.orgId, r.type, r.id)) as ResourceRec | undefined;
    return res !== undefined && res.erasedAt === undefined;
  });
  const txs: string[] = [];
  for (let i = 0; i < unmarked.length; i += ERASE_CHUNK) {
    txs.push(await anchorErasure(ctx, patient, unmarked.slice(i, i + ERASE_CHUNK)));
  }
  const erased = erase.length === 0 ? [] : ctx.vault.eraseResources(erase);
  const parameter: ParametersParameter[] = [
    ...erased.map((r) => ({ name: "erased", valueReference: { reference: `${r.type}/${r.id}` } })),
    ...kept.map((r) => ({
      name: "kept",
      part: [
        { name: "record", valueReference: { reference: `${r.type}/${r.id}` } },
        { name: "reason", valueString: RETENTION_REASON },
      ],
    })),
    ...txs.map((id) => ({ name: "ledgerTx", valueString: id })),
    {
      name: "outcome",
      resource: operationOutcome([
        {
          severity: "information",
          code: "processing",
          diagnostics:
            `${erased.length} record(s) you provided or held as research copies were erased (crypto-shredded) and the ` +
            `erasure recorded on the ledger; ${kept.length} clinical record(s) are kept: ${RETENTION_REASON}`,
        },
      ]),
    },
  ];
  const body: Parameters = { resourceType: "Parameters", parameter };
  return { status: 200, body };
};

async function anchorErasure(ctx: FhirContext, patient: string, refs: { type: string; id: string }[]): Promise<string> {
  const tx = signNew(
    ctx.nodeKey,
    "record.erase",
    {
      custodian: ctx.orgId,
      patient,
      resources: refs.map((r) => ({ resourceType: r.type, resourceId: r.id })),
      erasePatient: false,
    },
    ctx.now(),
  );
  const parsed = parseSignedTx(tx);
  if (!parsed.ok) throw new OperationOutcomeError(500, "exception", "internal error");
  let result: CommitResult;
  try {
    const [answer] = await ctx.node.submit([{ tx: parsed.tx, id: parsed.id }]);
    result = await (answer as Promise<CommitResult>);
  } catch {
    throw new OperationOutcomeError(
      503,
      "exception",
      "the ledger node cannot take writes now; nothing was erased; retry",
    );
  }
  if (!result.valid) {
    throw new OperationOutcomeError(500, "exception", `the ledger refused record.erase (${result.code})`);
  }
  return result.id;
}
