import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import type { SignedTx } from "../ledger/types.ts";
import { applyTx, TX_CODES } from "./apply.ts";
import { decide } from "./decide.ts";
import { LABEL_CODES } from "./labels.ts";
import { PURPOSES, ROLE_PERMISSIONS, type Role } from "./policy.ts";
import { TX_TYPES } from "./schemas.ts";
import type { MemoryState } from "./state.ts";
import { Net, snapshot } from "./testkit.ts";

const CODES = new Set<string>(TX_CODES);
const hex = (n: number) => fc.stringMatching(new RegExp(`^[0-9a-f]{${n}}$`));

function assertResult(r: unknown): void {
  assert.ok(r !== null && typeof r === "object");
  const { valid, code } = r as { valid: unknown; code: unknown };
  assert.equal(typeof valid, "boolean");
  assert.ok(typeof code === "string" && CODES.has(code), String(code));
  assert.equal(valid, code === "ok");
}

/** Applies and checks: a TxResult always; an invalid tx leaves the state exactly as it was. */
function applyChecked(n: Net, tx: unknown): void {
  const before = snapshot(n.state as MemoryState);
  const r = applyTx(n.state, tx as SignedTx, "0".repeat(64), {
    height: n.height + 1,
    time: n.now,
    nonceUsed: () => false,
  });
  assertResult(r);
  if (!r.valid) assert.equal(snapshot(n.state as MemoryState), before);
}

describe("fuzz: applyTx never throws", () => {
  test("arbitrary values as txs", () => {
    const n = new Net();
    fc.assert(
      fc.property(fc.anything({ withNullPrototype: true, withObjectString: true }), (tx) => applyChecked(n, tx)),
      { numRuns: 500 },
    );
  });

  test("well-formed envelopes with arbitrary payloads, for every type", () => {
    const n = new Net();
    const signers = ["admin:gp", "clinician:gp", "node:trust", "patient:3", "proxy:parent-0", "stranger"].map((l) =>
      n.keyId(l),
    );
    fc.assert(
      fc.property(
        fc.oneof(fc.constantFrom(...TX_TYPES), fc.string()),
        fc.oneof(fc.dictionary(fc.string(), fc.jsonValue()), fc.object()),
        fc.oneof(fc.constantFrom(...signers), hex(64)),
        hex(32),
        (type, payload, signer, nonce) =>
          applyChecked(n, { type, payload, signer, nonce, createdAt: n.now, sig: "" } satisfies SignedTx),
      ),
      { numRuns: 1500 },
    );
  });

  test("valid fixture payloads with one field replaced or added", () => {
    const base = new Net();
    const txs = base.sc.txs;
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: txs.length - 1 }),
        fc.string({ maxLength: 12 }),
        fc.jsonValue({ maxDepth: 3 }),
        fc.boolean(),
        (i, extraKey, value, replace) => {
          const n = new Net();
          const tx = txs[i] as SignedTx;
          const keys = Object.keys(tx.payload);
          const k = replace ? (keys[extraKey.length % keys.length] as string) : extraKey;
          const payload = { ...tx.payload, [k]: value };
          applyChecked(n, { ...tx, payload, nonce: "f".repeat(32), createdAt: n.now });
        },
      ),
      { numRuns: 400 },
    );
  });
});

describe("fuzz: decide never throws", () => {
  test("arbitrary values as requests are refused", () => {
    const n = new Net();
    fc.assert(
      fc.property(fc.anything(), (req) => {
        const d = decide(n.state, req as never);
        assert.equal(d.effect, "deny");
      }),
      { numRuns: 300 },
    );
  });

  test("plausible requests give well-formed decisions", () => {
    const n = new Net();
    const requesters = [
      "patient:3",
      "proxy:parent-0",
      "proxy:carer-2",
      "clinician:gp",
      "nurse:gp",
      "clinician:trust-ae",
      "clinician:trust-cardio",
      "nurse:trust",
      "researcher:uni",
      "admin:gp",
      "node:gp",
    ].map((l) => n.keyId(l));
    const patients = n.sc.patients.map((p) => p.id);
    fc.assert(
      fc.property(
        fc.oneof(fc.constantFrom(...requesters), hex(64)),
        fc.oneof(fc.constantFrom(...patients), fc.uuid()),
        fc.oneof(fc.constantFrom(...PURPOSES), fc.string()),
        fc.constantFrom("read" as const, "write" as const),
        fc.constantFrom("Observation", "Condition", "AllergyIntolerance", "Encounter", "Patient"),
        fc.constantFrom("gp-riverside", "trust-northgate", "uni-research"),
        fc.array(fc.oneof(fc.constantFrom(...LABEL_CODES), fc.string()), { maxLength: 4 }),
        fc.option(fc.oneof(fc.constant("2016-01-01"), fc.constant("2024-12-01"), fc.string()), { nil: undefined }),
        fc.boolean(),
        fc.integer({ min: n.now - 400 * 86_400_000, max: n.now + 400 * 86_400_000 }),
        (requester, patient, purpose, action, type, custodian, labels, date, safeguarding, at) => {
          const resource = { type, custodian, labels, safeguarding, ...(date === undefined ? {} : { date }) };
          const d = decide(n.state, { requester, patient, purpose, action, resource, at });
          assert.ok(d.effect === "permit" || d.effect === "deny");
          assert.ok(Number.isInteger(d.step) && d.step >= 1 && d.step <= 8);
          assert.ok(typeof d.rule === "string" && d.rule.length > 0);
          assert.ok(typeof d.reason === "string" && d.reason.length > 0);
          if (d.effect === "permit" && d.step >= 2) {
            // practitioners only ever get purposes their role allows
            const m = Object.values(n.sc.members).find((x) => x.keyId === requester);
            assert.ok(m !== undefined);
            assert.ok((ROLE_PERMISSIONS[m.role as Role].purposes as readonly string[]).includes(purpose));
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  test("deny beats permit: a blanket deny leaves only steps 1–3 able to permit", () => {
    const practitioners = ["clinician:gp", "nurse:gp", "clinician:trust-ae", "clinician:trust-cardio", "nurse:trust"];
    const n = new Net();
    const before = n.sc.patients.map((p) => p.id);
    const blanket = (patient: string, i: number) => ({
      patient,
      rule: n.uuid(`blanket:${i}`),
      effect: "deny",
      grantee: { kind: "any" },
      resourceTypes: [],
      labels: [],
      purposes: [...PURPOSES],
      actions: ["read", "write"],
    });
    const labels = ["patient:0", "patient:1", "patient:2", "patient:3", "patient:4", "patient:5"];
    const denied = new Net();
    before.forEach((p, i) => {
      denied.ok(labels[i] as string, "consent.set", blanket(p, i));
    });
    fc.assert(
      fc.property(
        fc.constantFrom(...practitioners),
        fc.integer({ min: 0, max: 5 }),
        fc.constantFrom("TREAT", "ETREAT"),
        fc.subarray([...LABEL_CODES], { maxLength: 3 }),
        fc.constantFrom("Observation", "Condition", "MedicationStatement"),
        (who, p, purpose, codes, type) => {
          const res = { labels: codes, type };
          const d0 = n.decide(who, p, purpose, res);
          const d1 = denied.decide(who, p, purpose, res);
          assert.ok(d1.effect === "deny" || d1.step <= 3, JSON.stringify(d1));
          if (d0.effect === "permit" && d0.step >= 4) assert.equal(d1.step, 4);
          if (d0.effect === "deny") assert.equal(d1.effect, "deny");
        },
      ),
      { numRuns: 1000 },
    );
  });
});
