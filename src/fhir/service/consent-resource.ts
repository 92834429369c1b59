// Consent as FHIR R4: a patient's consent rules on the ledger (`rules/<pseudonym>`) read as Consent resources, and
// Consent resources written as the ledger txs that make them — signed by the patient (or a `manage` proxy) with their
// own ledger key, never by the server: the server only checks and submits what the patient signed.
//
// Mapping (one rule ↔ one Consent, id = rule id):
//   status        active (in force now), inactive (its period is over or not yet begun; a revoked rule is no longer
//                 on the ledger and is not listed)
//   scope         consentscope#patient-privacy;  category LOINC 59284-0 (Patient consent)
//   patient       Patient/<pseudonym>;  dateTime, meta.lastUpdated: when the rule was set (block time)
//   policyRule    v3-ActCode OPTIN (permit) / OPTOUT (deny) — R4 needs a policy or policyRule (ppc-1)
//   provision     type permit|deny; period (rule period); dataPeriod (dates of record it covers); purpose
//                 (v3-ActReason); securityLabel (the rule's label codes, systems as labels.ts); class (resource
//                 types, http://hl7.org/fhir/resource-types); action consentaction access (= read) / correct (= write);
//                 actor: one, role v3-ParticipationType PRCP, reference by identifier: member `urn:careledger:member`
//                 (type Practitioner), team `urn:careledger:team` (CareTeam), org `urn:careledger:org` (Organization),
//                 role `urn:careledger:role` value `<org>/<role>` (PractitionerRole), study `urn:careledger:study`
//                 value `<study>/<org>` (Group). No actor = anyone (`{kind: any}`). On input the relative forms
//                 `Practitioner/<member>`, `CareTeam/<team>`, `Organization/<org>` are accepted too.
//
// Writes carry the signed tx in an extension `SIGNED_TX_EXTENSION` (valueString: the signed tx as JSON):
//   POST Consent            consent.set  (a new rule, or an upsert of the rule id the tx names)
//   PUT Consent/<rule>      consent.set  with payload.rule = <rule>  (change a rule)
//   PUT Consent/<rule> with status "inactive"   consent.revoke {patient, rule}  (revocation — chosen over DELETE,
//                           which would need a body to carry the signature)
// The server checks the tx is well formed, signed by the caller's own key (the token's), for the caller's patient,
// and that its payload is exactly what the Consent says (the mapping above, arrays compared as sets); then submits
// it and answers once it committed, with the Consent as the ledger now holds it. Who may read Consents: the patient
// and their proxies (the rules say who may see what, which is itself private).

import { randomUUID } from "node:crypto";
import type { Bundle, Consent, ConsentProvisionActor } from "@medplum/fhirtypes";
import { LOCAL_LABEL_SYSTEM, V3_ACTCODE_SYSTEM, V3_CONFIDENTIALITY_SYSTEM } from "../../contract/labels.ts";
import { checkPayload, UUID_PATTERN } from "../../contract/schemas.ts";
import { type Grantee, type RuleRec, read } from "../../contract/state.ts";
import { canonicalJson } from "../../ledger/canonical.ts";
import { parseSignedTx, verifyTxSignature } from "../../ledger/tx.ts";
import type { SignedTx } from "../../ledger/types.ts";
import type { CommitResult } from "../../node/ledger-node.ts";
import type { Principal } from "../auth/bearer.ts";
import { PURPOSE_SYSTEM, scopesAllow } from "../auth/scopes.ts";
import { badRequest, forbidden, notFound, OperationOutcomeError } from "../outcome.ts";
import { validateResource } from "../validate.ts";
import type { ConsentChange } from "./audit.ts";
import type { FhirContext, FhirHandler, FhirRequest, FhirResponse } from "./context.ts";

/** Extension on a written resource (Consent, Parameters of $break-glass) carrying the caller's signed ledger tx. */
export const SIGNED_TX_EXTENSION = "urn:careledger:extension:signed-tx";
/** Extension on a written Consent's response: the id of the tx that set it. */
export const LEDGER_TX_EXTENSION = "urn:careledger:extension:ledger-tx-id";

export const CONSENT_SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope";
export const CONSENT_ACTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentaction";
export const RESOURCE_TYPES_SYSTEM = "http://hl7.org/fhir/resource-types";
const PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const LOINC = "http://loinc.org";

const GRANTEE_SYSTEMS = {
  member: "urn:careledger:member",
  team: "urn:careledger:team",
  org: "urn:careledger:org",
  role: "urn:careledger:role",
  study: "urn:careledger:study",
} as const;
const GRANTEE_TYPES = {
  member: "Practitioner",
  team: "CareTeam",
  org: "Organization",
  role: "PractitionerRole",
  study: "Group",
} as const;

const ACTION_CODE: Readonly<Record<string, string>> = { read: "access", write: "correct" };
const ACTION_OF_CODE: Readonly<Record<string, string>> = { access: "read", correct: "write" };
const PSEUDONYM_RE = new RegExp(UUID_PATTERN);

// ---- ledger → FHIR --------------------------------------------------------------------------------------------

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function labelSystem(code: string): string {
  if (code === "N") return V3_CONFIDENTIALITY_SYSTEM;
  if (code === "GENDER" || code === "FERTILITY" || code === "SOCIAL") return LOCAL_LABEL_SYSTEM;
  return V3_ACTCODE_SYSTEM;
}

/** The actor reference of a grantee (undefined for `any`). */
export function granteeReference(g: Grantee): ConsentProvisionActor["reference"] | undefined {
  switch (g.kind) {
    case "any":
      return undefined;
    case "role":
      return { type: GRANTEE_TYPES.role, identifier: { system: GRANTEE_SYSTEMS.role, value: `${g.org}/${g.role}` } };
    case "study":
      return { type: GRANTEE_TYPES.study, identifier: { system: GRANTEE_SYSTEMS.study, value: `${g.id}/${g.org}` } };
    default:
      return { type: GRANTEE_TYPES[g.kind], identifier: { system: GRANTEE_SYSTEMS[g.kind], value: g.id } };
  }
}

/** Whether a rule is in force at `at` (its period holds it). */
function inForce(rule: Pick<RuleRec, "start" | "end">, at: number): boolean {
  return (rule.start === undefined || rule.start <= at) && (rule.end === undefined || at < rule.end);
}

/** A rule as a FHIR R4 Consent (see the file comment). */
export function ruleToConsent(patient: string, rule: RuleRec, at: number, status?: "active" | "inactive"): Consent {
  const provision: NonNullable<Consent["provision"]> = { type: rule.effect };
  if (rule.start !== undefined || rule.end !== undefined) {
    provision.period = {
      ...(rule.start === undefined ? {} : { start: iso(rule.start) }),
      ...(rule.end === undefined ? {} : { end: iso(rule.end) }),
    };
  }
  const reference = granteeReference(rule.grantee);
  if (reference !== undefined) {
    const actor: ConsentProvisionActor = {
      role: { coding: [{ system: PARTICIPATION_SYSTEM, code: "PRCP" }] },
      reference,
    };
    provision.actor = [actor];
  }
  provision.action = rule.actions.map((a) => ({
    coding: [{ system: CONSENT_ACTION_SYSTEM, code: ACTION_CODE[a] ?? a }],
  }));
  if (rule.codes.length > 0) provision.securityLabel = rule.codes.map((c) => ({ system: labelSystem(c), code: c }));
  provision.purpose = rule.purposes.map((p) => ({ system: PURPOSE_SYSTEM, code: p }));
  if (rule.types.length > 0) provision.class = rule.types.map((t) => ({ system: RESOURCE_TYPES_SYSTEM, code: t }));
  if (rule.dataStart !== undefined || rule.dataEnd !== undefined) {
    provision.dataPeriod = {
      ...(rule.dataStart === undefined ? {} : { start: rule.dataStart }),
      ...(rule.dataEnd === undefined ? {} : { end: rule.dataEnd }),
    };
  }
  return {
    resourceType: "Consent",
    id: rule.id,
    meta: { lastUpdated: iso(rule.setAt) },
    status: status ?? (inForce(rule, at) ? "active" : "inactive"),
    scope: { coding: [{ system: CONSENT_SCOPE_SYSTEM, code: "patient-privacy" }] },
    category: [{ coding: [{ system: LOINC, code: "59284-0", display: "Patient consent" }] }],
    patient: { reference: `Patient/${patient}` },
    dateTime: iso(rule.setAt),
    policyRule: { coding: [{ system: V3_ACTCODE_SYSTEM, code: rule.effect === "permit" ? "OPTIN" : "OPTOUT" }] },
    provision,
  };
}

/** The national data opt-out's policy (NHS England), for `optout.set` in a consent history. */
export const NATIONAL_OPT_OUT_POLICY = "https://digital.nhs.uk/services/national-data-opt-out";

/**
 * A patient's consent history as Consent resource versions, oldest first: each `consent.set` is the rule as it was
 * then (status as at that moment), each `consent.revoke` the rule's last version marked inactive, each `optout.set`
 * a Consent under the national data opt-out policy. Every version carries its ledger tx id and the version id
 * `<height>-<position>`, so the patient can prove each one against the ledger.
 */
export function consentHistory(
  patient: string,
  changes: readonly ConsentChange[],
  toRule: (payload: Record<string, unknown>, time: number) => RuleRec,
): Consent[] {
  const last = new Map<string, Consent>();
  const out: Consent[] = [];
  for (const change of changes) {
    const meta = {
      versionId: `${change.block}-${change.position}`,
      lastUpdated: iso(change.time),
      extension: [{ url: LEDGER_TX_EXTENSION, valueString: change.tx }],
    };
    let consent: Consent | undefined;
    if (change.type === "consent.set") {
      consent = ruleToConsent(patient, toRule(change.payload, change.time), change.time);
    } else if (change.type === "consent.revoke") {
      const before = last.get(String(change.payload.rule));
      if (before !== undefined) consent = { ...before, status: "inactive", dateTime: iso(change.time) };
    } else {
      const optout = change.payload.optout === true;
      consent = {
        resourceType: "Consent",
        id: `optout-${patient}`,
        status: "active",
        scope: { coding: [{ system: CONSENT_SCOPE_SYSTEM, code: "research" }] },
        category: [{ coding: [{ system: LOINC, code: "59284-0", display: "Patient consent" }] }],
        patient: { reference: `Patient/${patient}` },
        dateTime: iso(change.time),
        policy: [{ uri: NATIONAL_OPT_OUT_POLICY }],
        provision: { type: optout ? "deny" : "permit" },
      };
    }
    if (consent === undefined) continue;
    consent = { ...consent, meta: { ...consent.meta, ...meta } };
    if (change.type !== "optout.set") last.set(consent.id as string, consent);
    out.push(consent);
  }
  return out;
}

// ---- FHIR → ledger --------------------------------------------------------------------------------------------

type Payload = Record<string, unknown>;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function codesOf(list: unknown, where: string, system?: string): string[] {
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw badRequest("must be an array", where, "structure");
  return list.map((c, i) => {
    const coding = isObject(c) && Array.isArray(c.coding) ? c.coding[0] : c;
    if (!isObject(coding) || typeof coding.code !== "string") throw badRequest("needs a code", `${where}[${i}]`);
    if (system !== undefined && coding.system !== undefined && coding.system !== system) {
      throw badRequest(`system must be ${system}`, `${where}[${i}].system`, "value");
    }
    return coding.code;
  });
}

function granteeOf(actors: unknown): Grantee {
  if (actors === undefined) return { kind: "any" };
  if (!Array.isArray(actors) || actors.length !== 1) {
    throw badRequest("a rule has exactly one grantee: one actor, or none for anyone", "Consent.provision.actor");
  }
  const ref = (actors[0] as { reference?: unknown }).reference;
  const where = "Consent.provision.actor[0].reference";
  if (!isObject(ref)) throw badRequest("needs a reference", where, "required");
  if (isObject(ref.identifier)) {
    const { system, value } = ref.identifier as { system?: unknown; value?: unknown };
    if (typeof value !== "string") throw badRequest("identifier needs a value", `${where}.identifier`);
    const [a = "", b = ""] = value.split("/");
    switch (system) {
      case GRANTEE_SYSTEMS.member:
        return { kind: "member", id: value };
      case GRANTEE_SYSTEMS.team:
        return { kind: "team", id: value };
      case GRANTEE_SYSTEMS.org:
        return { kind: "org", id: value };
      case GRANTEE_SYSTEMS.role:
        return { kind: "role", org: a, role: b };
      case GRANTEE_SYSTEMS.study:
        return { kind: "study", id: a, org: b };
      default:
        throw badRequest("identifier system names no kind of grantee", `${where}.identifier.system`, "value");
    }
  }
  if (typeof ref.reference === "string") {
    const m = /^(Practitioner|CareTeam|Organization)\/([A-Za-z0-9\-.]{1,64})$/.exec(ref.reference);
    if (m) {
      const id = m[2] as string;
      if (m[1] === "Practitioner") return { kind: "member", id };
      if (m[1] === "CareTeam") return { kind: "team", id };
      return { kind: "org", id };
    }
  }
  throw badRequest("the grantee must be a member, team, organisation, role or study", where, "value");
}

function millis(value: unknown, where: string): number {
  const t = typeof value === "string" ? Date.parse(value) : Number.NaN;
  if (!Number.isFinite(t)) throw badRequest("must be a dateTime", where, "value");
  return t;
}

/**
 * The `consent.set` payload a Consent describes (without `rule`, which the tx names). Throws 400 naming the element
 * for what a rule cannot express (nested provisions, several actors, …).
 */
export function payloadOfConsent(consent: Consent): Payload {
  const patientRef = consent.patient?.reference ?? "";
  const m = /^Patient\/(.+)$/.exec(patientRef);
  if (!m || !PSEUDONYM_RE.test(m[1] as string)) {
    throw badRequest("must be Patient/<pseudonym>", "Consent.patient", "value");
  }
  const p = consent.provision;
  if (typeof p !== "object" || p === null || Array.isArray(p))
    throw badRequest("a consent rule needs a provision", "Consent.provision", "required");
  if (p.provision !== undefined)
    throw badRequest("nested provisions are not supported", "Consent.provision.provision", "not-supported");
  if (p.type !== "permit" && p.type !== "deny") throw badRequest("must be permit or deny", "Consent.provision.type");
  for (const key of ["data", "code"] as const) {
    if (p[key] !== undefined)
      throw badRequest("not supported in a consent rule", `Consent.provision.${key}`, "not-supported");
  }
  const actions = codesOf(p.action, "Consent.provision.action", CONSENT_ACTION_SYSTEM).map((c, i) => {
    const a = ACTION_OF_CODE[c];
    if (a === undefined)
      throw badRequest("actions are access (read) and correct (write)", `Consent.provision.action[${i}]`, "value");
    return a;
  });
  const payload: Payload = {
    patient: m[1],
    effect: p.type,
    grantee: granteeOf(p.actor),
    resourceTypes: codesOf(p.class, "Consent.provision.class", RESOURCE_TYPES_SYSTEM),
    labels: (p.securityLabel ?? []).map((c, i) => {
      if (typeof c?.code !== "string") throw badRequest("needs a code", `Consent.provision.securityLabel[${i}]`);
      return c.code;
    }),
    purposes: (p.purpose ?? []).map((c, i) => {
      if (typeof c?.code !== "string") throw badRequest("needs a code", `Consent.provision.purpose[${i}]`);
      return c.code;
    }),
    actions,
  };
  if (p.period !== undefined) {
    const period: Record<string, number> = {};
    if (p.period.start !== undefined) period.start = millis(p.period.start, "Consent.provision.period.start");
    if (p.period.end !== undefined) period.end = millis(p.period.end, "Consent.provision.period.end");
    payload.period = period;
  }
  if (p.dataPeriod !== undefined) {
    const dataPeriod: Record<string, string> = {};
    if (p.dataPeriod.start !== undefined) dataPeriod.start = String(p.dataPeriod.start).slice(0, 10);
    if (p.dataPeriod.end !== undefined) dataPeriod.end = String(p.dataPeriod.end).slice(0, 10);
    payload.dataPeriod = dataPeriod;
  }
  return payload;
}

/** Canonical form for comparing a Consent's payload with a tx's: arrays as sorted sets. */
function comparable(payload: Payload): string {
  const out: Payload = {};
  for (const [k, v] of Object.entries(payload)) {
    out[k] = Array.isArray(v) ? [...v].map(String).sort() : v;
  }
  return canonicalJson(out);
}

/** The first field in which two payloads differ (for the error message). */
function firstDifference(a: Payload, b: Payload): string | undefined {
  for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (comparable({ [key]: a[key] ?? null }) !== comparable({ [key]: b[key] ?? null })) return key;
  }
  return undefined;
}

// ---- signed txs from requests ---------------------------------------------------------------------------------

/**
 * The caller's signed tx carried in `SIGNED_TX_EXTENSION`: well formed, of one of `types`, signed (valid signature)
 * by the caller's own key. Undefined when there is no such extension (callers answer 400 explaining what is needed).
 */
export function signedTxOf(
  resource: { extension?: unknown },
  principal: Principal,
  types: readonly string[],
  where: string,
): { tx: SignedTx; id: string } | undefined {
  const ext = Array.isArray(resource.extension)
    ? resource.extension.filter((e) => isObject(e) && e.url === SIGNED_TX_EXTENSION)
    : [];
  if (ext.length === 0) return undefined;
  const at = `${where}.extension`;
  if (ext.length > 1) throw badRequest("one signed tx per request", at);
  return signedTxFromJson((ext[0] as { valueString?: unknown }).valueString, principal, types, at);
}

/** `signedTxOf` for a tx carried elsewhere (a Parameters parameter): `raw` is the signed tx as JSON text. */
export function signedTxFromJson(
  raw: unknown,
  principal: Principal,
  types: readonly string[],
  at: string,
): { tx: SignedTx; id: string } {
  if (typeof raw !== "string") throw badRequest("must hold the signed tx as JSON text", at, "structure");
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw badRequest("the signed tx is not valid JSON", at, "structure");
  }
  const parsed = parseSignedTx(json);
  if (!parsed.ok) throw badRequest(`the signed tx is malformed: ${parsed.error}`, at, "structure");
  if (!types.includes(parsed.tx.type)) throw badRequest(`the signed tx must be ${types.join(" or ")}`, at, "value");
  if (parsed.tx.signer !== principal.keyId) {
    throw forbidden("the tx must be signed with the caller's own ledger key (the key the token was issued to)");
  }
  if (!verifyTxSignature(parsed.tx, parsed.id)) throw badRequest("the tx signature does not verify", at, "security");
  if (!checkPayload(parsed.tx.type, parsed.tx.payload)) {
    throw badRequest(`the ${parsed.tx.type} payload does not match the contract's schema`, at, "value");
  }
  return { tx: parsed.tx, id: parsed.id };
}

/** Submits one signed tx and waits for its commit; a rejected tx becomes the FHIR error its code means. */
export async function submitSigned(ctx: FhirContext, signed: { tx: SignedTx; id: string }): Promise<CommitResult> {
  let result: CommitResult;
  try {
    const [answer] = await ctx.node.submit([signed]);
    result = await (answer as Promise<CommitResult>);
  } catch {
    throw new OperationOutcomeError(503, "exception", "the ledger node cannot take writes now; retry");
  }
  if (result.valid) return result;
  throw rejected(result.code);
}

/** A contract result code as a FHIR error (the code is named: it says what the ledger decided, nothing stored). */
export function rejected(code: string): OperationOutcomeError {
  const message = `the ledger rejected the tx: ${code}`;
  switch (code) {
    case "unauthorised":
    case "revoked-signer":
    case "suspended-org":
      return new OperationOutcomeError(403, "forbidden", message);
    case "not-found":
      return new OperationOutcomeError(404, "not-found", message);
    case "erased":
      return new OperationOutcomeError(410, "deleted", message);
    case "replay":
    case "already-exists":
      return new OperationOutcomeError(409, "conflict", message);
    case "limit":
      return new OperationOutcomeError(422, "too-costly", message);
    default:
      return new OperationOutcomeError(400, "invalid", message);
  }
}

// ---- handlers -------------------------------------------------------------------------------------------------

/** The patient whose Consents the caller may see or write: only their own (patients) or the one they act for. */
function ownPatient(principal: Principal, asked: string | undefined): string {
  if (principal.patient === undefined) {
    throw forbidden("Consents are read and written by the patient or their proxy");
  }
  if (asked !== undefined && asked !== principal.patient) {
    throw forbidden("a patient's token reaches only that patient's Consents");
  }
  return principal.patient;
}

function requireScope(principal: Principal, interaction: "read" | "search" | "create" | "update"): void {
  if (!scopesAllow(principal.scopes, principal.context, "Consent", interaction)) {
    throw forbidden(`the token's scopes do not allow ${interaction} of Consent`);
  }
}

function patientParam(ctx: FhirContext, req: FhirRequest): string | undefined {
  const values = [...req.query.getAll("patient"), ...req.query.getAll("subject")];
  if (values.length === 0) return undefined;
  if (values.length > 1) throw badRequest("may be given only once", "patient");
  let v = values[0] as string;
  const base = `${ctx.baseUrl.replace(/\/+$/, "")}/`;
  if (v.startsWith(base)) v = v.slice(base.length);
  if (v.startsWith("Patient/")) v = v.slice("Patient/".length);
  if (!/^[A-Za-z0-9\-.]{1,64}$/.test(v)) throw badRequest("must be a Patient reference", "patient");
  return v;
}

const SEARCH_PARAMS = new Set(["patient", "subject", "status", "_id", "_count", "_format", "_pretty"]);

/** `GET /fhir/Consent?patient=…` — the patient's current rules (for patients, `patient` defaults to themselves). */
export const consentSearch: FhirHandler = async (ctx, req) => {
  requireScope(req.principal, "search");
  for (const name of new Set(req.query.keys())) {
    if (!SEARCH_PARAMS.has(name)) throw badRequest("parameter not supported on Consent", name, "not-supported");
  }
  const patient = ownPatient(req.principal, patientParam(ctx, req));
  const status = req.query.get("status");
  if (status !== null && status !== "active" && status !== "inactive") throw badRequest("active or inactive", "status");
  const ids = req.query.get("_id")?.split(",");
  const at = ctx.now();
  const consents = (read.rules(ctx.node.store.state, patient) ?? [])
    .map((rule) => ruleToConsent(patient, rule, at))
    .filter((c) => (status === null || c.status === status) && (ids === undefined || ids.includes(c.id as string)));
  const bundle: Bundle = {
    resourceType: "Bundle",
    type: "searchset",
    total: consents.length,
    link: [{ relation: "self", url: `${ctx.baseUrl}/Consent?patient=${patient}` }],
    entry: consents.map((c) => ({ fullUrl: `${ctx.baseUrl}/Consent/${c.id}`, resource: c, search: { mode: "match" } })),
  };
  return { status: 200, body: bundle };
};

/** `GET /fhir/Consent/:id` — one of the caller's patient's rules; anything else is the same 404. */
export const consentRead: FhirHandler = async (ctx, req) => {
  requireScope(req.principal, "read");
  const id = req.params.id ?? "";
  const missing = () => notFound(`Consent/${id}`);
  if (req.principal.patient === undefined) throw missing();
  const patient = req.principal.patient;
  const rule = (read.rules(ctx.node.store.state, patient) ?? []).find((r) => r.id === id);
  if (rule === undefined) throw missing();
  return { status: 200, body: ruleToConsent(patient, rule, ctx.now()) };
};

function consentBody(req: FhirRequest): Consent {
  const body = req.body;
  if (!isObject(body) || body.resourceType !== "Consent") {
    throw badRequest("the body must be a Consent resource", "resourceType", "structure");
  }
  return validateResource(body, { types: new Set(["Consent"]) }) as Consent;
}

function needSignedTx(payload: Payload, type: string): OperationOutcomeError {
  return badRequest(
    `a Consent is written as a ${type} tx signed with the patient's (or a manage proxy's) own ledger key: ` +
      `sign ${type} with payload ${canonicalJson(payload)} and send it as JSON in the extension ${SIGNED_TX_EXTENSION} ` +
      "(valueString)",
    "Consent.extension",
    "required",
  );
}

async function setRule(
  ctx: FhirContext,
  req: FhirRequest,
  consent: Consent,
  fixedRule: string | undefined,
): Promise<FhirResponse> {
  const described = payloadOfConsent(consent);
  const patient = ownPatient(req.principal, described.patient as string);
  const signed = signedTxOf(consent, req.principal, ["consent.set"], "Consent");
  if (signed === undefined) throw needSignedTx({ ...described, rule: fixedRule ?? randomUUID() }, "consent.set");
  const payload = signed.tx.payload as Payload;
  if (fixedRule !== undefined && payload.rule !== fixedRule) {
    throw badRequest("the tx's rule must be the Consent id in the URL", "Consent.extension", "value");
  }
  if (consent.id !== undefined && fixedRule === undefined && consent.id !== payload.rule) {
    throw badRequest("the Consent id must be the tx's rule (or absent)", "Consent.id", "value");
  }
  const { rule: _rule, ...signedRest } = payload;
  if (comparable(signedRest) !== comparable(described)) {
    const field = firstDifference(signedRest, described);
    throw badRequest(`the signed tx does not say what the Consent says (${field ?? "payload"} differs)`, "Consent");
  }
  const existed = (read.rules(ctx.node.store.state, patient) ?? []).some((r) => r.id === payload.rule);
  const result = await submitSigned(ctx, signed);
  const rule = (read.rules(ctx.node.store.state, patient) ?? []).find((r) => r.id === payload.rule);
  if (rule === undefined)
    throw new OperationOutcomeError(500, "exception", "the rule is not on the ledger after commit");
  const body = ruleToConsent(patient, rule, ctx.now());
  body.extension = [{ url: LEDGER_TX_EXTENSION, valueString: result.id }];
  return {
    status: existed ? 200 : 201,
    body,
    headers: { location: `${ctx.baseUrl}/Consent/${rule.id}`, "last-modified": new Date(rule.setAt).toUTCString() },
  };
}

/** `POST /fhir/Consent` — a new rule (or an upsert of the rule the signed tx names). */
export const consentCreate: FhirHandler = async (ctx, req) => {
  requireScope(req.principal, "create");
  const consent = consentBody(req);
  if (consent.status !== "active") {
    throw badRequest("POST a Consent with status active; revoke one with PUT and status inactive", "Consent.status");
  }
  return setRule(ctx, req, consent, undefined);
};

/** `PUT /fhir/Consent/:id` — change a rule (`consent.set`), or revoke it with status inactive (`consent.revoke`). */
export const consentUpdate: FhirHandler = async (ctx, req) => {
  requireScope(req.principal, "update");
  const id = req.params.id ?? "";
  const consent = consentBody(req);
  if (consent.id !== undefined && consent.id !== id)
    throw badRequest("must equal the id in the URL", "Consent.id", "value");
  if (consent.status === "active") return setRule(ctx, req, consent, id);
  if (consent.status !== "inactive")
    throw badRequest("active (set the rule) or inactive (revoke it)", "Consent.status");
  const patient = ownPatient(req.principal, payloadOfConsent(consent).patient as string);
  const rule = (read.rules(ctx.node.store.state, patient) ?? []).find((r) => r.id === id);
  if (rule === undefined) throw notFound(`Consent/${id}`);
  const signed = signedTxOf(consent, req.principal, ["consent.revoke"], "Consent");
  if (signed === undefined) throw needSignedTx({ patient, rule: id }, "consent.revoke");
  const payload = signed.tx.payload as Payload;
  if (payload.patient !== patient || payload.rule !== id) {
    throw badRequest("the signed consent.revoke must name this patient and this rule", "Consent.extension", "value");
  }
  const result = await submitSigned(ctx, signed);
  const body = ruleToConsent(patient, rule, ctx.now(), "inactive");
  body.extension = [{ url: LEDGER_TX_EXTENSION, valueString: result.id }];
  return { status: 200, body };
};
