// For tests only (the FHIR service's handlers, both sides): a real one-organisation network in a temp dir, its node
// opened in process, a vault with a key file, the anchor batcher, the access-log batcher and a FhirContext; helpers
// to enrol staff, register patients with keys, set consent, appoint proxies, issue principals through the real token
// path, and store records (extract → stage → anchor → confirm). Product code never imports this file.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { KeyPair } from "../../ledger/keys.ts";
import { parseSignedTx } from "../../ledger/tx.ts";
import type { BlockEntry, SignedTx } from "../../ledger/types.ts";
import { readKeyFile } from "../../node/datadir.ts";
import type { CommitResult } from "../../node/ledger-node.ts";
import { silentLogger } from "../../node/logger.ts";
import { initNetwork, newKey, signNew } from "../../node/network.ts";
import { openNode, type RunningNode } from "../../node/runtime.ts";
import { AnchorBatcher, ledgerAnchors } from "../../vault/anchorer.ts";
import { FileKeyProvider } from "../../vault/keys.ts";
import { type PutItem, type StagedWrite, Vault, type VaultResource } from "../../vault/vault.ts";
import { BearerCache, type Principal, verifyBearer } from "../auth/bearer.ts";
import { tokenRequestForm } from "../auth/client-assertion.ts";
import { JtiCache } from "../auth/jti-cache.ts";
import { authUrls } from "../auth/smart-configuration.ts";
import { issueToken } from "../auth/token-endpoint.ts";
import { outcomeOf } from "../outcome.ts";
import { clinicalDate, patientOf, securityLabels } from "../resource-facts.ts";
import { extractIndex } from "../search-params.ts";
import { AccessLogBatcher } from "./access-log.ts";
import { AuditIndex } from "./audit.ts";
import type { AccessEntry, FhirContext, FhirHandler, FhirRequest } from "./context.ts";

/** Base URL the kit's tokens and links use (nothing listens on it). */
export const KIT_BASE_URL = "http://127.0.0.1:7600";

export interface Member {
  member: string;
  role: string;
  key: KeyPair;
}

export interface Patient {
  /** Ledger pseudonym = FHIR Patient id. */
  patient: string;
  key: KeyPair;
}

export interface Proxy {
  proxy: string;
  key: KeyPair;
  patient: string;
}

export interface ServiceKit {
  dir: string;
  orgId: string;
  admin: KeyPair;
  adminMember: string;
  nodeKey: KeyPair;
  running: RunningNode;
  vault: Vault;
  anchorer: AnchorBatcher;
  accessLog: AccessLogBatcher;
  /** The access-log index (`DIR/audit.db`), following the node. */
  audit: AuditIndex;
  ctx: FhirContext;
  /**
   * Commitments of records that belong to no patient (the contract anchors only patient records): kept off-ledger
   * here so that the vault's integrity check has something to compare them with.
   */
  localAnchors: Map<string, string>;
  /** Submits signed txs and waits for their commit; asserts each is valid unless `expectValid` is false. */
  commit(txs: SignedTx[], expectValid?: boolean): Promise<CommitResult[]>;
  enrol(role: "clinician" | "nurse" | "researcher" | "analyst" | "admin"): Promise<Member>;
  registerPatient(): Promise<Patient>;
  registerPatients(n: number): Promise<Patient[]>;
  /** `consent.set` signed by the patient; returns the rule id. */
  setConsent(patient: Patient, rule: Partial<ConsentRule>): Promise<string>;
  /** `proxy.appoint` signed by the patient. */
  appointProxy(
    patient: Patient,
    options?: { scope?: "view" | "manage"; labels?: string[]; basis?: string },
  ): Promise<Proxy>;
  revokeMember(member: Member): Promise<void>;
  setOptout(patient: Patient, optout: boolean): Promise<void>;
  /** A principal for `key` through the real token path (assertion → token endpoint → bearer verification). */
  principalFor(key: KeyPair, options?: { patient?: string; purpose?: string; scope?: string }): Promise<Principal>;
  /** The bearer token itself (for checking that a revoked identity's token is then refused). */
  tokenFor(key: KeyPair, options?: { patient?: string; purpose?: string; scope?: string }): Promise<string>;
  /** Verifies a bearer token now, as the server does on each request. */
  verify(token: string): ReturnType<typeof verifyBearer>;
  close(): Promise<void>;
}

export interface ConsentRule {
  rule: string;
  effect: "permit" | "deny";
  grantee: Record<string, unknown>;
  resourceTypes: string[];
  labels: string[];
  purposes: string[];
  actions: string[];
  period?: { start?: number; end?: number };
  dataPeriod?: { start?: string; end?: string };
}

/** What to store: a resource (with id), and optionally facts that override those read from it. */
export interface RecordInput {
  resource: VaultResource;
  patient?: string | null;
  labels?: string[];
  date?: string;
}

function parsed(tx: SignedTx): { tx: SignedTx; id: string } {
  const p = parseSignedTx(tx);
  if (!p.ok) throw new Error(`malformed tx: ${p.error}`);
  return { tx: p.tx, id: p.id };
}

/** Opens a fresh network, node, vault and service context in a temp dir. Call `close()` when done. */
export async function openServiceKit(options: { orgName?: string; now?: () => number } = {}): Promise<ServiceKit> {
  const dir = mkdtempSync(join(tmpdir(), "careledger-fhir-service-"));
  const created = initNetwork(dir, { orgName: options.orgName ?? "Kit Practice" });
  const admin = readKeyFile(join(dir, "keys", "admin.key"));
  const nodeKey = readKeyFile(join(dir, "node.key"));
  const orgId = created.orgId;
  const running = await openNode(dir, {
    listen: false,
    log: silentLogger,
    flags: { port: 0, logLevel: "silent", batchMaxWaitMs: 1, auditOnStart: false, workers: 1 },
  });
  const node = running.node;
  const now = options.now ?? Date.now;
  const ledger = ledgerAnchors(node.store.state, orgId);
  const localAnchors = new Map<string, string>();
  const anchorOf = (type: string, id: string, version: string): string | undefined =>
    ledger.anchorOf(type, id, version) ?? localAnchors.get(`${type}/${id}/${version}`);
  const vault = Vault.open(join(dir, "vault.db"), {
    keys: FileKeyProvider.openOrCreate(join(dir, "vault.key")),
    anchorOf,
    now,
  });
  const anchorer = new AnchorBatcher({ node, key: nodeKey, custodian: orgId, now });
  const accessLog = new AccessLogBatcher({ node, key: nodeKey, now });
  const audit = AuditIndex.open(join(dir, "audit.db"), node);
  const { fhirBaseUrl, tokenUrl } = authUrls(KIT_BASE_URL);
  const ctx: FhirContext = {
    node,
    vault,
    anchorer,
    accessLog,
    orgId,
    nodeKey,
    baseUrl: fhirBaseUrl,
    now,
  };
  const jtiCache = new JtiCache();
  const bearerCache = new BearerCache();

  const kit: ServiceKit = {
    dir,
    orgId,
    admin,
    adminMember: created.adminMember,
    nodeKey,
    running,
    vault,
    anchorer,
    accessLog,
    audit,
    ctx,
    localAnchors,
    async commit(txs, expectValid = true) {
      const answers = await node.submit(txs.map(parsed));
      const results = await Promise.all(answers);
      if (expectValid) {
        for (const [i, r] of results.entries()) {
          assert.ok(r.valid, `tx ${i} (${txs[i]?.type}) rejected: ${r.code}`);
        }
      }
      return results;
    },
    async enrol(role) {
      const key = newKey();
      const member = randomUUID();
      await kit.commit([signNew(admin, "member.enrol", { member, org: orgId, role, key: key.keyId }, now())]);
      return { member, role, key };
    },
    async registerPatient() {
      const [p] = await kit.registerPatients(1);
      return p as Patient;
    },
    async registerPatients(n) {
      const out: Patient[] = [];
      const txs: SignedTx[] = [];
      for (let i = 0; i < n; i++) {
        const key = newKey();
        const patient = randomUUID();
        out.push({ patient, key });
        txs.push(signNew(admin, "patient.register", { patient, org: orgId, key: key.keyId }, now()));
      }
      await kit.commit(txs);
      return out;
    },
    async setConsent(patient, rule) {
      const payload: Record<string, unknown> = {
        patient: patient.patient,
        rule: rule.rule ?? randomUUID(),
        effect: rule.effect ?? "permit",
        grantee: rule.grantee ?? { kind: "any" },
        resourceTypes: rule.resourceTypes ?? [],
        labels: rule.labels ?? [],
        purposes: rule.purposes ?? ["TREAT"],
        actions: rule.actions ?? ["read"],
      };
      if (rule.period !== undefined) payload.period = rule.period;
      if (rule.dataPeriod !== undefined) payload.dataPeriod = rule.dataPeriod;
      await kit.commit([signNew(patient.key, "consent.set", payload, now())]);
      return payload.rule as string;
    },
    async appointProxy(patient, o = {}) {
      const key = newKey();
      const proxy = randomUUID();
      await kit.commit([
        signNew(
          patient.key,
          "proxy.appoint",
          {
            patient: patient.patient,
            proxy,
            key: key.keyId,
            basis: o.basis ?? "carer-nominated",
            scope: o.scope ?? "view",
            labels: o.labels ?? ["N"],
          },
          now(),
        ),
      ]);
      return { proxy, key, patient: patient.patient };
    },
    async revokeMember(member) {
      await kit.commit([signNew(admin, "member.revoke", { member: member.member }, now())]);
    },
    async setOptout(patient, optout) {
      await kit.commit([signNew(patient.key, "optout.set", { patient: patient.patient, optout }, now())]);
    },
    async tokenFor(key, o = {}) {
      const form = await tokenRequestForm(key, tokenUrl, { ...o, now: now() });
      const result = await issueToken(form, {
        state: node.store.state,
        tokenUrl,
        fhirBaseUrl,
        now,
        signer: nodeKey,
        jtiCache,
      });
      if (!result.ok) throw new Error(`token refused: ${JSON.stringify(result.body)}`);
      return (result.body as { access_token: string }).access_token;
    },
    verify(token) {
      return verifyBearer(`Bearer ${token}`, {
        state: node.store.state,
        issuer: tokenUrl,
        audience: fhirBaseUrl,
        nodeKeyId: nodeKey.keyId,
        now,
        cache: bearerCache,
      });
    },
    async principalFor(key, o = {}) {
      const verified = await kit.verify(await kit.tokenFor(key, o));
      if (!verified.ok) throw new Error(`token not accepted: ${verified.description}`);
      return verified.principal;
    },
    async close() {
      await accessLog.close(2000);
      await kit.audit.close();
      vault.close();
      await running.close();
      rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
    },
  };
  return kit;
}

/**
 * Stores resources as the write side does: facts from the resource (`patientOf`, `securityLabels`, `clinicalDate`,
 * `extractIndex`) unless given, one `vault.stage`, `anchorer.anchor` for the patient records, `vault.confirm` (or
 * `abort` on failure). Records of no patient get their commitment in `kit.localAnchors`.
 */
export async function putRecords(
  kit: ServiceKit,
  items: readonly (RecordInput | VaultResource)[],
): Promise<StagedWrite> {
  const puts: PutItem[] = items.map((raw) => {
    const input: RecordInput =
      "resource" in raw && typeof raw.resource === "object" ? (raw as RecordInput) : { resource: raw as VaultResource };
    const r = input.resource;
    const put: PutItem = {
      resource: r,
      patient: input.patient !== undefined ? input.patient : (patientOf(r) ?? null),
      labels: input.labels ?? securityLabels(r),
      index: extractIndex(r),
    };
    const date = input.date ?? clinicalDate(r);
    if (date !== undefined) put.date = date;
    return put;
  });
  const staged = kit.vault.stage(puts);
  try {
    const onLedger = staged.anchors.filter((a) => a.patient !== null);
    for (const a of staged.anchors) {
      if (a.patient === null) kit.localAnchors.set(`${a.resourceType}/${a.resourceId}/${a.version}`, a.commitment);
    }
    await kit.anchorer.anchor(onLedger);
  } catch (error) {
    kit.vault.abort(staged);
    throw error;
  }
  kit.vault.confirm(staged);
  return staged;
}

/** Calls a handler and returns what the server would send: its response, or the OperationOutcome of what it threw. */
export async function call(
  handler: FhirHandler,
  ctx: FhirContext,
  req: FhirRequest,
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field by the tests
): Promise<{ status: number; body?: any; headers?: Record<string, string> }> {
  try {
    return await handler(ctx, req);
  } catch (error) {
    return outcomeOf(error);
  }
}

/** Every `access.log` entry committed valid in blocks above `fromHeight`, read from the ledger. */
export function ledgerAccessEntries(kit: ServiceKit, fromHeight = 0): AccessEntry[] {
  const out: AccessEntry[] = [];
  for (let h = fromHeight + 1; h <= kit.running.node.height; h++) {
    const row = kit.running.node.readBlock(h);
    if (!row) continue;
    for (const e of JSON.parse(row.txs) as BlockEntry[]) {
      if (e.tx.type === "access.log" && e.result.valid) {
        out.push(...((e.tx.payload as { entries: AccessEntry[] }).entries ?? []));
      }
    }
  }
  return out;
}

/** A FhirRequest for a handler call. */
export function request(
  principal: Principal,
  params: FhirRequest["params"],
  query: Record<string, string> | URLSearchParams | string = "",
): FhirRequest {
  return { principal, params, query: new URLSearchParams(query) };
}

// ---- resource builders -----------------------------------------------------------------------------------------

let serial = 0;
/** A short unique id for test resources. */
export function newId(prefix = "r"): string {
  serial++;
  return `${prefix}-${serial}-${randomUUID().slice(0, 8)}`;
}

export function patientResource(p: Patient | string, extra: Record<string, unknown> = {}): VaultResource {
  const id = typeof p === "string" ? p : p.patient;
  return {
    resourceType: "Patient",
    id,
    identifier: [{ system: "https://fhir.nhs.uk/Id/nhs-number", value: "9990000018" }],
    name: [{ family: "Testperson", given: ["Kit"] }],
    gender: "unknown",
    birthDate: "1980-01-01",
    ...extra,
  };
}

/** An Observation about `patient`; `labels` become `meta.security` codes. */
export function observation(
  p: Patient | string,
  options: { id?: string; code?: string; date?: string; labels?: string[]; status?: string } = {},
): VaultResource {
  const patient = typeof p === "string" ? p : p.patient;
  const r: VaultResource = {
    resourceType: "Observation",
    id: options.id ?? newId("obs"),
    status: options.status ?? "final",
    code: { coding: [{ system: "http://loinc.org", code: options.code ?? "8867-4", display: "Heart rate" }] },
    subject: { reference: `Patient/${patient}` },
    effectiveDateTime: options.date ?? "2024-05-06T10:00:00Z",
    valueQuantity: { value: 72, unit: "/min", system: "http://unitsofmeasure.org", code: "/min" },
  };
  if (options.labels && options.labels.length > 0) {
    r.meta = {
      security: options.labels.map((code) => ({
        system: "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        code,
      })),
    };
  }
  return r;
}

export function condition(p: Patient | string, options: { id?: string; code?: string; labels?: string[] } = {}) {
  const patient = typeof p === "string" ? p : p.patient;
  const r: VaultResource = {
    resourceType: "Condition",
    id: options.id ?? newId("cond"),
    clinicalStatus: {
      coding: [{ system: "http://terminology.hl7.org/CodeSystem/condition-clinical", code: "active" }],
    },
    code: { coding: [{ system: "http://snomed.info/sct", code: options.code ?? "38341003" }] },
    subject: { reference: `Patient/${patient}` },
    onsetDateTime: "2020-03-01",
  };
  if (options.labels && options.labels.length > 0) {
    r.meta = { security: options.labels.map((code) => ({ code })) };
  }
  return r;
}

export function organization(id = newId("org"), name = "Kit Surgery"): VaultResource {
  return { resourceType: "Organization", id, name, active: true };
}
