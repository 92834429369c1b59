// Child process for vault.test.ts: stages a write, prints its anchor entries, then waits to be killed before it can
// confirm — a crash between stage and confirm.

import { randomUUID } from "node:crypto";
import { FileKeyProvider } from "./keys.ts";
import { observationItem } from "./testkit.ts";
import { Vault } from "./vault.ts";

const path = process.env.VAULT_PATH as string;
const master = Buffer.from(process.env.VAULT_MASTER as string, "hex");
const vault = Vault.open(path, { keys: FileKeyProvider.fromMasterKey(master), anchorOf: () => undefined });
const patient = randomUUID();
const write = vault.stage(Array.from({ length: 10 }, (_, i) => observationItem(patient, `crash-${i}`)));
process.stdout.write(`${JSON.stringify({ anchors: write.anchors })}\n`);
setInterval(() => {}, 1000);
