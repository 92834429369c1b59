// Worker thread for `careledger bench verify`: signs the txs of the ledger the benchmark builds, one chunk at a time,
// and posts each chunk back as a JSON array (so the main thread can write it to disk and keep memory bounded).
//
// The mix is a pure function of the tx index, so any worker can sign any chunk:
//   index < patients                  patient.register, signed by the org's admin
//   index % 20 === 7                  consent.set by the patient (one of 4 rule ids per patient: new rule or update)
//   index % 1000 === 500              access.log naming a patient that was never registered (committed as rejected)
//   otherwise                         access.log by the org's node key (one entry, as bench/ledger-load.ts sends)

import { join } from "node:path";
import { parentPort, workerData } from "node:worker_threads";
import { accessLogPayload } from "../src/contract/fixtures.ts";
import { fromHex } from "../src/ledger/encoding.ts";
import { type KeyPair, keyPairFromSeed } from "../src/ledger/keys.ts";
import type { SignedTx } from "../src/ledger/types.ts";
import { readKeyFile } from "../src/node/datadir.ts";
import { signNew } from "../src/node/network.ts";

export interface SignPlan {
  /** The data dir (its keys/admin.key and node.key sign). */
  dir: string;
  orgId: string;
  /** Registered patients: pseudonym, key seed (hex) and the rule ids their consent.set txs use. */
  patients: { id: string; seed: string; rules: string[] }[];
  /** Pseudonyms that are never registered. */
  ghosts: string[];
}

export interface SignRequest {
  chunk: number;
  start: number;
  count: number;
}

export interface SignAnswer {
  chunk: number;
  json: string;
  kinds: Record<string, number>;
}

export type TxKind = "register" | "consent" | "access" | "access-unknown-patient";

export function kindOf(index: number, patients: number): TxKind {
  if (index < patients) return "register";
  if (index % 20 === 7) return "consent";
  if (index % 1000 === 500) return "access-unknown-patient";
  return "access";
}

class Signer {
  private readonly plan: SignPlan;
  private readonly admin: KeyPair;
  private readonly node: KeyPair;
  private readonly patientKeys: KeyPair[];

  constructor(plan: SignPlan) {
    this.plan = plan;
    this.admin = readKeyFile(join(plan.dir, "keys", "admin.key"));
    this.node = readKeyFile(join(plan.dir, "node.key"));
    this.patientKeys = plan.patients.map((p) => keyPairFromSeed(fromHex(p.seed)));
  }

  sign(index: number, kind: TxKind, now: number): SignedTx {
    const { patients, ghosts, orgId } = this.plan;
    const p = patients.length;
    switch (kind) {
      case "register": {
        const patient = patients[index] as SignPlan["patients"][number];
        const key = (this.patientKeys[index] as KeyPair).keyId;
        return signNew(this.admin, "patient.register", { patient: patient.id, org: orgId, key }, now);
      }
      case "consent": {
        const slot = Math.floor(index / 20);
        const who = slot % p;
        const patient = patients[who] as SignPlan["patients"][number];
        const rule = patient.rules[Math.floor(slot / p) % patient.rules.length] as string;
        return signNew(
          this.patientKeys[who] as KeyPair,
          "consent.set",
          {
            patient: patient.id,
            rule,
            effect: slot % 3 === 0 ? "deny" : "permit",
            grantee: { kind: "org", id: orgId },
            resourceTypes: ["Observation", "Condition"],
            labels: [],
            purposes: ["TREAT"],
            actions: ["read"],
          },
          now,
        );
      }
      case "access":
      case "access-unknown-patient": {
        const patient =
          kind === "access"
            ? (patients[index % p] as SignPlan["patients"][number]).id
            : (ghosts[index % ghosts.length] as string);
        return signNew(
          this.node,
          "access.log",
          accessLogPayload({
            requester: this.node.keyId,
            patient,
            custodian: orgId,
            resourceId: `obs-${index}`,
            height: 1,
          }),
          now,
        );
      }
    }
  }
}

if (parentPort) {
  const port = parentPort;
  const plan = workerData as SignPlan;
  const signer = new Signer(plan);
  port.on("message", (request: SignRequest) => {
    const txs: SignedTx[] = new Array(request.count);
    const kinds: Record<string, number> = {};
    const now = Date.now();
    for (let i = 0; i < request.count; i++) {
      const index = request.start + i;
      const kind = kindOf(index, plan.patients.length);
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      txs[i] = signer.sign(index, kind, now);
    }
    port.postMessage({ chunk: request.chunk, json: JSON.stringify(txs), kinds } satisfies SignAnswer);
  });
}
