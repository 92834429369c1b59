/**
 * The FHIR interactions this node serves, and what they need opened beside the vault (the access-log batcher, the
 * audit index). `server.ts` routes requests to these handlers; an interaction without a handler answers 405.
 */
import type { Logger } from "../../node/logger.ts";
import type { AccessLogger, FhirContext, FhirHandler } from "./context.ts";

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
  auditEventSearch?: FhirHandler;
  provenanceSearch?: FhirHandler;
}

export interface Services {
  handlers: FhirHandlers;
  accessLog: AccessLogger;
  close(): Promise<void>;
}

export async function openServices(
  _ctx: FhirContext,
  _options: { auditPath: string; dir: string; log: Logger },
): Promise<Services> {
  // Filled in as the read and write sides land (see docs/STATUS.md).
  return { handlers: {}, accessLog: { log: () => {}, flush: async () => {} }, close: async () => {} };
}
