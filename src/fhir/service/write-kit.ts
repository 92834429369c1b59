// For tests only (the write side's): the shared service kit (testkit.ts) with the write side's own pieces wired in as
// a node would: the CustodianAnchorer (local commitments for records of no patient, the write journal) in place of the
// plain AnchorBatcher, the vault reopened on its anchor source, and the network's NHS lookup key. Product code never
// imports this file.

import { join } from "node:path";
import { FileKeyProvider } from "../../vault/keys.ts";
import { Vault } from "../../vault/vault.ts";
import { LOOKUP_KEY_FILE, LookupKey, PATIENT_KEYS_DIR, type PatientRegistry } from "./patients.ts";
import { openServiceKit, type ServiceKit } from "./testkit.ts";
import { CustodianAnchorer } from "./write.ts";

export interface WriteKit extends ServiceKit {
  custodian: CustodianAnchorer;
  registry: PatientRegistry;
  /** Closes and reopens the anchorer and the vault, as a restarted node would (pending writes are settled). */
  reopenVault(): Vault;
}

export async function openWriteKit(options: { now?: () => number } = {}): Promise<WriteKit> {
  const base = await openServiceKit(options);
  const kit = base as WriteKit;
  const now = options.now ?? Date.now;
  const open = () => {
    const custodian = new CustodianAnchorer({
      node: base.running.node,
      key: base.nodeKey,
      custodian: base.orgId,
      now,
      path: join(base.dir, "write-journal.db"),
    });
    const vault = Vault.open(join(base.dir, "vault.db"), {
      keys: FileKeyProvider.openOrCreate(join(base.dir, "vault.key")),
      ...custodian.vaultAnchors(base.running.node.store.state),
      now,
    });
    kit.custodian = custodian;
    kit.vault = vault;
    kit.anchorer = custodian;
    kit.ctx.vault = vault;
    kit.ctx.anchorer = custodian;
    return vault;
  };
  base.vault.close();
  open();
  kit.registry = {
    lookup: LookupKey.create(join(base.dir, LOOKUP_KEY_FILE)),
    keysDir: join(base.dir, PATIENT_KEYS_DIR),
  };
  kit.reopenVault = () => {
    kit.vault.close();
    kit.custodian.close();
    return open();
  };
  const close = base.close;
  kit.close = async () => {
    kit.vault.close();
    kit.custodian.close();
    await close();
  };
  return kit;
}
