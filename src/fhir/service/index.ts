/**
 * The FHIR interactions this node serves, and what they need opened beside the vault (the access-log batcher, the
 * audit index). `server.ts` routes requests to these handlers; an interaction without a handler answers 405.
 */
import type { Logger } from "../../node/logger.ts";
import type { ExchangeOptions } from "../exchange/peer-client.ts";
import { AccessLogBatcher } from "./access-log.ts";
import { AuditIndex, auditEventSearchWith } from "./audit.ts";
import { breakGlass } from "./break-glass.ts";
import { consentCreate, consentRead, consentSearch, consentUpdate } from "./consent-resource.ts";
import type { AccessLogger, FhirContext, FhirHandler } from "./context.ts";
import { everythingWith } from "./everything.ts";
import { erasePatient, exportPatient } from "./gdpr.ts";
import type { LookupKey } from "./patients.ts";
import { provenanceSearch } from "./provenance.ts";
import { history, read, vread } from "./read.ts";
import { search } from "./search.ts";
import { transactionHandler } from "./transaction.ts";
import { createHandler, updateHandler } from "./write.ts";

export interface FhirHandlers {
  read?: FhirHandler;
  vread?: FhirHandler;
  history?: FhirHandler;
  search?: FhirHandler;
  create?: FhirHandler;
  update?: FhirHandler;
  transaction?: FhirHandler;
  everything?: FhirHandler;
  exportPatient?: FhirHandler;
  erasePatient?: FhirHandler;
  breakGlass?: FhirHandler;
  consentSearch?: FhirHandler;
  consentRead?: FhirHandler;
  consentCreate?: FhirHandler;
  consentUpdate?: FhirHandler;
  auditEventSearch?: FhirHandler;
  provenanceSearch?: FhirHandler;
}

export interface Services {
  handlers: FhirHandlers;
  accessLog: AccessLogger;
  close(): Promise<void>;
}

export async function openServices(
  ctx: FhirContext,
  options: {
    auditPath: string;
    dir: string;
    log: Logger;
    lookup?: LookupKey | undefined;
    /** Other custodians for `$everything` (absent: this custodian's records only). */
    exchange?: ExchangeOptions | undefined;
  },
): Promise<Services> {
  const accessLog = new AccessLogBatcher({ node: ctx.node, key: ctx.nodeKey, log: options.log });
  const audit = AuditIndex.open(options.auditPath, ctx.node);
  const handlers: FhirHandlers = {
    read,
    vread,
    history,
    search,
    everything: everythingWith(options.exchange),
    create: createHandler(options.lookup ? { lookup: options.lookup } : {}),
    update: updateHandler(options.lookup ? { lookup: options.lookup } : {}),
    transaction: transactionHandler(options.lookup ? { lookup: options.lookup } : {}),
    consentSearch,
    consentRead,
    consentCreate,
    consentUpdate,
    breakGlass,
    exportPatient,
    erasePatient,
    auditEventSearch: auditEventSearchWith(audit),
    provenanceSearch,
  };
  return {
    handlers,
    accessLog,
    async close() {
      // What was read is on the ledger before the node goes.
      await accessLog.close();
      await audit.close();
    },
  };
}
