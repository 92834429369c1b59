// Where the FHIR side keeps its files in a node's data dir (apart from the server, so the import command does not
// load the HTTP stack to find them).
import { join } from "node:path";
import { LOOKUP_KEY_FILE } from "./service/patients.ts";
import { WRITE_JOURNAL_FILE } from "./service/write.ts";

export interface FhirPaths {
  vault: string;
  vaultKey: string;
  audit: string;
  writeJournal: string;
  lookupKey: string;
}

export function fhirPaths(dir: string): FhirPaths {
  return {
    vault: join(dir, "vault.db"),
    vaultKey: join(dir, "vault.key"),
    audit: join(dir, "audit.db"),
    writeJournal: join(dir, WRITE_JOURNAL_FILE),
    lookupKey: join(dir, LOOKUP_KEY_FILE),
  };
}
