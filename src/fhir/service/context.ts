/**
 * What every FHIR handler gets, independent of the web framework (as Medplum's fhir-router): the node (ledger state,
 * consent decisions, tx submission), this custodian's vault, the anchor batcher, the access-log batcher, and the
 * caller as authenticated by a bearer token. Handlers return a `FhirResponse` or throw `OperationOutcomeError`;
 * `src/fhir/server.ts` turns both into HTTP.
 */
import type { KeyPair } from "../../ledger/keys.ts";
import type { LedgerNode } from "../../node/ledger-node.ts";
import type { AnchorBatcher } from "../../vault/anchorer.ts";
import type { Vault } from "../../vault/vault.ts";
import type { Principal } from "../auth/bearer.ts";

/** One entry of a batched `access.log` tx (the contract's schema, src/contract/schemas.ts). */
export interface AccessEntry {
  requester: string;
  patient: string;
  custodian: string;
  resourceType: string;
  resourceId?: string;
  purpose: string;
  action: "read" | "write";
  decision: "permit" | "deny";
  step: number;
  rule: string;
  height: number;
}

/** Batches access-log entries into `access.log` txs signed by the node key. */
export interface AccessLogger {
  /** Queues entries; they reach the ledger within a few ms, batched with others. Never throws. */
  log(entries: readonly AccessEntry[]): void;
  /** Resolves once everything queued so far is committed (tests, shutdown). */
  flush(): Promise<void>;
}

export interface FhirContext {
  node: LedgerNode;
  vault: Vault;
  anchorer: AnchorBatcher;
  accessLog: AccessLogger;
  /** This custodian's org id (the `custodian` of its anchors and access-log entries). */
  orgId: string;
  nodeKey: KeyPair;
  /** Absolute base of the FHIR API, e.g. `http://127.0.0.1:7600/fhir` (for fullUrl, Location, paging links). */
  baseUrl: string;
  now(): number;
}

/** A FHIR interaction as the handlers see it; the server has already authenticated the caller. */
export interface FhirRequest {
  principal: Principal;
  /** Path parameters: type, id, vid, operation (`$everything` → `everything`). */
  params: { type?: string; id?: string; vid?: string; operation?: string };
  query: URLSearchParams;
  body?: unknown;
  /** Parsed conditional headers: `If-Match: W/"3"` → 3. */
  ifMatch?: number;
}

export interface FhirResponse {
  status: number;
  body?: unknown;
  /** `body` already serialised (a stored record's canonical JSON): sent as is, saving a JSON.stringify per read. */
  json?: string;
  headers?: Record<string, string>;
}

export type FhirHandler = (ctx: FhirContext, req: FhirRequest) => Promise<FhirResponse>;
