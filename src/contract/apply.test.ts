import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { txId } from "../ledger/index.ts";
import { applyTx, checkTx, TX_CODES } from "./apply.ts";
import { decide } from "./decide.ts";
import { buildScenario, firstOfMonthUtc, makeTx, TxFactory, uuidFor } from "./fixtures.ts";
import { IMPLEMENTED_TX_TYPES, RESERVED_TX_TYPES, TX_TYPES } from "./schemas.ts";
import { MemoryState, type OrgRec, type PatientRec, read } from "./state.ts";
import { DAY, FreezingState, HOUR, Net, START, seedFor, snapshot } from "./testkit.ts";

type Sample = {
  label: string;
  payload: (n: Net) => Record<string, unknown>;
  setup?: (n: Net) => void;
  /** A signer that must be refused with `unauthorised`. */
  wrong: string;
};

const fixtureRes = (custodian: string, type: string, i: number) => uuidFor(seedFor, `res:${custodian}:${type}:${i}`);

const acmeSpec = (n: Net) => ({
  id: "pharma-acme",
  name: "Acme Pharmaceuticals",
  kind: "commercial",
  admins: [{ member: n.uuid("admin:acme"), key: n.keyId("admin:acme") }],
  nodes: [n.keyId("node:acme")],
});

/** A valid payload of every implemented type except genesis, in a fresh fixture network. */
const SAMPLES: Record<string, Sample> = {
  "org.propose": { label: "admin:gp", payload: (n) => ({ org: acmeSpec(n) }), wrong: "clinician:gp" },
  "org.approve": {
    label: "admin:trust",
    setup: (n) => n.ok("admin:gp", "org.propose", { org: acmeSpec(n) }),
    payload: () => ({ org: "pharma-acme" }),
    wrong: "clinician:trust-cardio",
  },
  "org.suspend": {
    label: "admin:gp",
    payload: () => ({ org: "trust-northgate", action: "suspend", reason: "Security incident under review" }),
    wrong: "clinician:gp",
  },
  "key.rotate": {
    label: "clinician:gp",
    payload: (n) => ({ old: n.keyId("clinician:gp"), new: n.keyId("gp-new") }),
    wrong: "admin:trust",
  },
  "member.enrol": {
    label: "admin:gp",
    payload: (n) => ({ member: n.uuid("m:new"), org: "gp-riverside", role: "clinician", key: n.keyId("m:new") }),
    wrong: "clinician:gp",
  },
  "member.revoke": { label: "admin:gp", payload: (n) => ({ member: n.member("nurse:gp") }), wrong: "admin:trust" },
  "team.set": {
    label: "admin:trust",
    payload: (n) => ({
      team: n.sc.teams.cardiology.id,
      org: "trust-northgate",
      name: "Cardiology",
      members: [n.member("clinician:trust-cardio"), n.member("clinician:trust-ae")],
    }),
    wrong: "clinician:trust-cardio",
  },
  "patient.register": {
    label: "clinician:gp",
    payload: (n) => ({
      patient: n.uuid("p:new"),
      org: "gp-riverside",
      key: n.keyId("p:new"),
      lookup: "ab".repeat(32),
    }),
    wrong: "nurse:gp",
  },
  "patient.recover": {
    label: "clinician:gp",
    payload: (n) => ({ patient: n.patient(3).id, key: n.keyId("p3:new") }),
    wrong: "nurse:gp",
  },
  "proxy.appoint": {
    label: "patient:3",
    payload: (n) => ({
      patient: n.patient(3).id,
      proxy: n.uuid("proxy:3"),
      key: n.keyId("carer:3"),
      basis: "lasting-power-of-attorney",
      scope: "manage",
      labels: ["N", "PSY"],
    }),
    wrong: "clinician:trust-cardio",
  },
  "proxy.end": {
    label: "patient:2",
    payload: (n) => ({ patient: n.patient(2).id, proxy: n.patient(2).proxy?.id }),
    wrong: "patient:3",
  },
  "proxy.keep": {
    label: "patient:0",
    payload: (n) => ({ patient: n.patient(0).id, proxy: n.patient(0).proxy?.id }),
    wrong: "proxy:parent-0",
  },
  "safeguarding.flag": {
    label: "clinician:gp",
    payload: (n) => ({
      patient: n.patient(3).id,
      flag: n.uuid("flag"),
      active: true,
      freezeProxies: true,
      hideFromPatient: false,
    }),
    wrong: "nurse:gp",
  },
  "consent.set": {
    label: "patient:3",
    payload: (n) => ({
      patient: n.patient(3).id,
      rule: n.uuid("rule:new"),
      effect: "permit",
      grantee: { kind: "org", id: "gp-riverside" },
      resourceTypes: ["Observation"],
      labels: ["N"],
      purposes: ["TREAT"],
      actions: ["read"],
      period: { start: START, end: START + 400 * DAY },
      dataPeriod: { start: "2020-01-01", end: "2024-12-31" },
    }),
    wrong: "clinician:gp",
  },
  "consent.revoke": {
    label: "patient:3",
    payload: (n) => ({ patient: n.patient(3).id, rule: n.patient(3).ruleIds[0] }),
    wrong: "proxy:carer-2",
  },
  "optout.set": {
    label: "patient:3",
    payload: (n) => ({ patient: n.patient(3).id, optout: true }),
    wrong: "clinician:gp",
  },
  "record.anchor": {
    label: "node:gp",
    payload: (n) => ({
      anchors: [3, 4].map((i) => ({
        custodian: "gp-riverside",
        patient: n.patient(i).id,
        resourceType: "Condition",
        resourceId: `cond-${i}`,
        version: "1",
        commitment: "cd".repeat(32),
        labels: ["N", "R"],
        date: "2023-02-01",
      })),
    }),
    wrong: "node:trust",
  },
  "record.erase": {
    label: "node:gp",
    payload: (n) => ({
      custodian: "gp-riverside",
      patient: n.patient(3).id,
      resources: [{ resourceType: "Observation", resourceId: fixtureRes("gp-riverside", "Observation", 3) }],
      erasePatient: false,
    }),
    wrong: "clinician:gp",
  },
  "access.log": {
    label: "node:trust",
    payload: (n) => ({
      entries: [
        {
          requester: n.keyId("clinician:trust-cardio"),
          patient: n.patient(3).id,
          custodian: "trust-northgate",
          resourceType: "Condition",
          resourceId: fixtureRes("trust-northgate", "Condition", 3),
          purpose: "TREAT",
          action: "read",
          decision: "permit",
          step: 6,
          rule: n.patient(3).ruleIds[0],
          height: n.height,
        },
      ],
    }),
    wrong: "node:gp",
  },
  "breakglass.declare": {
    label: "clinician:trust-ae",
    payload: (n) => ({
      patient: n.patient(3).id,
      basis: "already-treating",
      reason: "Collapsed in the waiting room",
    }),
    wrong: "nurse:trust",
  },
};

const ORG_OF: Record<string, string> = { gp: "gp-riverside", trust: "trust-northgate", uni: "uni-research" };

function orgOf(n: Net, label: string): string {
  return n.sc.members[label]?.org ?? (ORG_OF[label.split(":")[1] as string] as string);
}

function adminOf(org: string): string {
  return `admin:${Object.keys(ORG_OF).find((k) => ORG_OF[k] === org)}`;
}

/** Makes `label` revoked: patient and node keys are rotated away, members are revoked by their org's admin. */
function revoke(n: Net, label: string): void {
  if (label.startsWith("patient:")) {
    n.ok(label, "key.rotate", { old: n.keyId(label), new: n.keyId(`${label}:rotated`) });
  } else if (label.startsWith("node:")) {
    n.ok(adminOf(orgOf(n, label)), "key.rotate", { old: n.keyId(label), new: n.keyId(`${label}:rotated`) });
  } else {
    const org = orgOf(n, label);
    const admin = adminOf(org);
    if (label === admin) {
      n.ok(admin, "member.enrol", { member: n.uuid("admin2"), org, role: "admin", key: n.keyId("admin2") });
      n.ok("admin2", "member.revoke", { member: n.member(label) });
    } else {
      n.ok(admin, "member.revoke", { member: n.member(label) });
    }
  }
}

function suspendOrgOf(n: Net, label: string): void {
  const org = orgOf(n, label);
  for (const a of ["admin:gp", "admin:trust", "admin:uni"]) {
    if (orgOf(n, a) !== org) n.ok(a, "org.suspend", { org, action: "suspend", reason: "Incident" });
  }
  assert.equal(read.org(n.state, org)?.status, "suspended");
}

describe("applyTx: every tx type", () => {
  test("TX_TYPES lists every DESIGN type", () => {
    const design = [
      "network.genesis",
      "org.propose",
      "org.approve",
      "org.suspend",
      "key.rotate",
      "member.enrol",
      "member.revoke",
      "team.set",
      "patient.register",
      "patient.recover",
      "proxy.appoint",
      "proxy.end",
      "safeguarding.flag",
      "consent.set",
      "consent.revoke",
      "optout.set",
      "record.anchor",
      "record.erase",
      "access.log",
      "breakglass.declare",
      "study.register",
      "study.approve",
      "study.enrol",
      "study.withdraw",
      "release.anchor",
      "aggregate.spend",
      "payment",
    ];
    for (const t of design) assert.ok(TX_TYPES.includes(t), t);
    assert.deepEqual(Object.keys(SAMPLES).sort(), IMPLEMENTED_TX_TYPES.filter((t) => t !== "network.genesis").sort());
  });

  for (const [type, s] of Object.entries(SAMPLES)) {
    describe(type, () => {
      test("accepted", () => {
        const n = new Net();
        s.setup?.(n);
        const before = n.state.get("network");
        const r = n.submit(s.label, type, s.payload(n));
        assert.deepEqual(r, { valid: true, code: "ok" });
        assert.equal(n.state.get("network") === before || type === "org.propose", true);
      });
      test("unknown field → malformed-payload, state untouched", () => {
        const n = new Net();
        s.setup?.(n);
        const snap = snapshot(n.state as MemoryState);
        assert.equal(n.submit(s.label, type, { ...s.payload(n), fullName: "Jane Smith" }).code, "malformed-payload");
        assert.equal(snapshot(n.state as MemoryState), snap);
      });
      test("wrong signer → unauthorised, state untouched", () => {
        const n = new Net();
        s.setup?.(n);
        const snap = snapshot(n.state as MemoryState);
        assert.equal(n.submit(s.wrong, type, s.payload(n)).code, "unauthorised");
        assert.equal(snapshot(n.state as MemoryState), snap);
      });
      test("unregistered signer → unauthorised", () => {
        const n = new Net();
        s.setup?.(n);
        assert.equal(n.submit("stranger", type, s.payload(n)).code, "unauthorised");
      });
      test("revoked signer → revoked-signer", () => {
        const n = new Net();
        s.setup?.(n);
        revoke(n, s.label);
        assert.equal(n.submit(s.label, type, s.payload(n)).code, "revoked-signer");
      });
      if (!s.label.startsWith("patient:")) {
        test("signer's org suspended → suspended-org", () => {
          const n = new Net();
          s.setup?.(n);
          suspendOrgOf(n, s.label);
          assert.equal(n.submit(s.label, type, s.payload(n)).code, "suspended-org");
        });
      }
      test("replayed (signer, nonce) → replay", () => {
        const n = new Net();
        s.setup?.(n);
        const nonce = "ab".repeat(16);
        n.nonces.add(`${n.keyId(s.label)}:${nonce}`);
        assert.equal(n.submit(s.label, type, s.payload(n), { nonce }).code, "replay");
      });
      test("createdAt outside the replay window → stale / future", () => {
        const n = new Net();
        s.setup?.(n);
        assert.equal(n.submit(s.label, type, s.payload(n), { createdAt: n.now - DAY - 1 }).code, "stale");
        assert.equal(n.submit(s.label, type, s.payload(n), { createdAt: n.now + 5 * 60_000 + 1 }).code, "future");
        assert.equal(n.submit(s.label, type, s.payload(n), { createdAt: n.now - DAY + 10 }).valid, true);
      });
      test("before genesis → no-network", () => {
        const n = new Net(new MemoryState());
        assert.equal(n.submit(s.label, type, s.payload(n)).code, "no-network");
      });
      test("a type-confused field → malformed-payload", () => {
        const n = new Net();
        s.setup?.(n);
        const p = s.payload(n);
        const k = Object.keys(p)[0] as string;
        assert.equal(n.submit(s.label, type, { ...p, [k]: 12345 }).code, "malformed-payload");
        const { [k]: _, ...missing } = p;
        assert.equal(n.submit(s.label, type, missing).code, "malformed-payload");
      });
    });
  }
});

describe("applyTx: envelope and dispatch", () => {
  test("unknown type", () => {
    const n = new Net();
    assert.equal(n.submit("admin:gp", "org.merge", {}).code, "unknown-type");
  });
  test("reserved research types are not implemented yet", () => {
    const n = new Net();
    for (const t of RESERVED_TX_TYPES) {
      assert.equal(
        applyTx(n.state, { ...n.tx("admin:gp", "org.approve", {}), type: t }, "0".repeat(64), ctx(n)).code,
        "not-implemented",
      );
    }
  });
  test("malformed envelopes", () => {
    const n = new Net();
    const good = n.tx("admin:gp", "org.approve", { org: "uni-research" });
    const bad: unknown[] = [
      null,
      42,
      "tx",
      [],
      { ...good, extra: 1 },
      { ...good, nonce: "XYZ" },
      { ...good, signer: "abc" },
      { ...good, createdAt: -1 },
      { ...good, createdAt: 1.5 },
      { ...good, payload: [] },
      { ...good, payload: null },
      (({ sig: _, ...rest }) => rest)(good),
    ];
    for (const b of bad)
      assert.equal(applyTx(n.state, b as never, "0".repeat(64), ctx(n)).code, "malformed-tx", JSON.stringify(b));
  });
  test("every code is in TX_CODES", () => {
    assert.ok(TX_CODES.includes("ok") && TX_CODES.includes("malformed-payload"));
  });
  test("checkTx never writes", () => {
    const n = new Net();
    const snap = snapshot(n.state as MemoryState);
    const tx = n.tx("patient:3", "optout.set", { patient: n.patient(3).id, optout: true });
    assert.equal(checkTx(n.state, tx, txId(tx), ctx(n)).valid, true);
    assert.equal(snapshot(n.state as MemoryState), snap);
  });
  test("ctx.nonceUsed throwing is contained", () => {
    const n = new Net();
    const tx = n.tx("patient:3", "optout.set", { patient: n.patient(3).id, optout: true });
    const r = applyTx(n.state, tx, txId(tx), {
      height: 1,
      time: n.now,
      nonceUsed: () => {
        throw new Error("boom");
      },
    });
    assert.deepEqual(r, { valid: false, code: "internal-error" });
  });
});

function ctx(n: Net) {
  return { height: n.height + 1, time: n.now, nonceUsed: () => false };
}

describe("network.genesis", () => {
  const spec = (n: Net, id: string) => ({
    id,
    name: id,
    kind: "hospital",
    admins: [{ member: n.uuid(`a:${id}`), key: n.keyId(`a:${id}`) }],
    nodes: [n.keyId(`n:${id}`)],
  });
  const payload = (n: Net, policy?: Record<string, unknown>) => ({
    network: { id: "test-net", name: "Test" },
    ...(policy === undefined ? {} : { policy }),
    orgs: [spec(n, "org-a"), spec(n, "org-b")],
  });

  test("accepted when signed by a founding admin; policy defaults filled", () => {
    const n = new Net(new MemoryState());
    n.ok("a:org-a", "network.genesis", payload(n, { quorum: 1, custodianTreat: false }));
    const net = read.network(n.state);
    assert.equal(net?.policy.quorum, 1);
    assert.equal(net?.policy.custodianTreat, false);
    assert.equal(net?.policy.replayBackMs, DAY);
    assert.equal(net?.policy.breakGlassWindowMs, 4 * HOUR);
    assert.equal(read.org(n.state, "org-b")?.status, "active");
  });
  test("custodianTreat false turns step 7 off", () => {
    const n = new Net(new MemoryState());
    n.ok("a:org-a", "network.genesis", payload(n, { custodianTreat: false }));
    n.ok("a:org-a", "member.enrol", { member: n.uuid("doc"), org: "org-a", role: "clinician", key: n.keyId("doc") });
    n.ok("doc", "patient.register", { patient: n.uuid("pt"), org: "org-a", key: n.keyId("pt") });
    const d = decide(n.state, {
      requester: n.keyId("doc"),
      patient: n.uuid("pt"),
      purpose: "TREAT",
      action: "read",
      resource: { type: "Observation", custodian: "org-a", labels: [] },
      at: n.now,
    });
    assert.equal(d.rule, "default-deny");
  });
  test("signed by anyone else → unauthorised", () => {
    const n = new Net(new MemoryState());
    assert.equal(n.submit("stranger", "network.genesis", payload(n)).code, "unauthorised");
  });
  test("a second genesis → already-exists", () => {
    const n = new Net();
    assert.equal(n.submit("a:org-a", "network.genesis", payload(n)).code, "already-exists");
  });
  test("duplicate org ids / keys / members", () => {
    const n = new Net(new MemoryState());
    const p = payload(n);
    assert.equal(
      n.submit("a:org-a", "network.genesis", { ...p, orgs: [spec(n, "org-a"), spec(n, "org-a")] }).code,
      "already-exists",
    );
    const shared = { ...spec(n, "org-b"), nodes: [n.keyId("a:org-a")] };
    assert.equal(n.submit("a:org-a", "network.genesis", { ...p, orgs: [spec(n, "org-a"), shared] }).code, "key-in-use");
    assert.equal(n.state.get("network"), undefined);
  });
  test("unknown policy field, out-of-range policy, unknown field → malformed-payload", () => {
    const n = new Net(new MemoryState());
    assert.equal(n.submit("a:org-a", "network.genesis", payload(n, { quorum: 0 })).code, "malformed-payload");
    assert.equal(n.submit("a:org-a", "network.genesis", payload(n, { proxyEndAge: 18 })).code, "malformed-payload");
    assert.equal(n.submit("a:org-a", "network.genesis", payload(n, { votes: 3 })).code, "malformed-payload");
    assert.equal(n.submit("a:org-a", "network.genesis", { ...payload(n), admin: "x" }).code, "malformed-payload");
    assert.equal(
      n.submit("a:org-a", "network.genesis", { ...payload(n), orgs: [{ ...spec(n, "Org A"), id: "Org A" }] }).code,
      "malformed-payload",
    );
  });
  test("the genesis replay window comes from its own policy", () => {
    const n = new Net(new MemoryState());
    const p = payload(n, { replayBackMs: HOUR });
    assert.equal(n.submit("a:org-a", "network.genesis", p, { createdAt: n.now - 2 * HOUR }).code, "stale");
    assert.equal(n.submit("a:org-a", "network.genesis", p, { createdAt: n.now - HOUR + 5 }).valid, true);
    // later txs use it too
    assert.equal(n.submit("a:org-a", "org.approve", { org: "org-b" }, { createdAt: n.now - HOUR - 5 }).code, "stale");
  });
});

describe("governance", () => {
  test("org joins when approvals reach the quorum (2 of 3)", () => {
    const n = new Net();
    n.ok("admin:gp", "org.propose", { org: acmeSpec(n) });
    assert.equal(read.org(n.state, "pharma-acme")?.status, "proposed");
    // its own admin cannot act yet
    assert.equal(n.submit("admin:acme", "org.approve", { org: "pharma-acme" }).code, "unauthorised");
    assert.equal(n.submit("admin:gp", "org.approve", { org: "pharma-acme" }).code, "duplicate-vote");
    n.ok("admin:uni", "org.approve", { org: "pharma-acme" });
    assert.equal(read.org(n.state, "pharma-acme")?.status, "active");
    assert.equal(n.submit("admin:trust", "org.approve", { org: "pharma-acme" }).code, "inactive");
    n.ok("admin:acme", "member.enrol", {
      member: n.uuid("analyst"),
      org: "pharma-acme",
      role: "analyst",
      key: n.keyId("analyst"),
    });
  });
  test("a self-proposal counts no approval", () => {
    const n = new Net();
    n.ok("admin:acme", "org.propose", { org: acmeSpec(n) });
    assert.deepEqual(read.org(n.state, "pharma-acme")?.approvals, []);
    n.ok("admin:gp", "org.approve", { org: "pharma-acme" });
    assert.equal(read.org(n.state, "pharma-acme")?.status, "proposed");
    n.ok("admin:trust", "org.approve", { org: "pharma-acme" });
    assert.equal(read.org(n.state, "pharma-acme")?.status, "active");
  });
  test("propose: existing id, key in use; approve: not-found", () => {
    const n = new Net();
    assert.equal(
      n.submit("admin:gp", "org.propose", { org: { ...acmeSpec(n), id: "uni-research" } }).code,
      "already-exists",
    );
    assert.equal(
      n.submit("admin:gp", "org.propose", { org: { ...acmeSpec(n), nodes: [n.keyId("clinician:gp")] } }).code,
      "key-in-use",
    );
    assert.equal(n.submit("admin:gp", "org.approve", { org: "nobody-here" }).code, "not-found");
  });
  test("suspension needs the quorum of other orgs; reinstatement likewise", () => {
    const n = new Net();
    n.ok("admin:gp", "org.suspend", { org: "trust-northgate", action: "suspend", reason: "Incident" });
    assert.equal(read.org(n.state, "trust-northgate")?.status, "active");
    assert.equal(
      n.submit("admin:gp", "org.suspend", { org: "trust-northgate", action: "suspend", reason: "Incident" }).code,
      "duplicate-vote",
    );
    n.ok("admin:uni", "org.suspend", { org: "trust-northgate", action: "suspend", reason: "Incident" });
    assert.equal(read.org(n.state, "trust-northgate")?.status, "suspended");
    assert.equal(
      n.submit("clinician:trust-cardio", "breakglass.declare", {
        patient: n.patient(3).id,
        basis: "already-treating",
        reason: "x",
      }).code,
      "suspended-org",
    );
    assert.equal(
      n.submit("node:trust", "access.log", SAMPLES["access.log"]?.payload(n) as Record<string, unknown>).code,
      "suspended-org",
    );
    assert.equal(
      n.submit("admin:gp", "org.suspend", { org: "trust-northgate", action: "suspend", reason: "x" }).code,
      "inactive",
    );
    n.ok("admin:gp", "org.suspend", { org: "trust-northgate", action: "reinstate", reason: "Resolved" });
    n.ok("admin:uni", "org.suspend", { org: "trust-northgate", action: "reinstate", reason: "Resolved" });
    assert.equal(read.org(n.state, "trust-northgate")?.status, "active");
    assert.equal(
      n.submit("admin:gp", "org.suspend", { org: "trust-northgate", action: "reinstate", reason: "x" }).code,
      "inactive",
    );
  });
  test("an org may suspend itself at once", () => {
    const n = new Net();
    n.ok("admin:uni", "org.suspend", { org: "uni-research", action: "suspend", reason: "Leaving" });
    assert.equal(read.org(n.state, "uni-research")?.status, "suspended");
  });
});

describe("keys and members", () => {
  test("member self-rotation: old key revoked, new key signs", () => {
    const n = new Net();
    n.ok("clinician:gp", "key.rotate", { old: n.keyId("clinician:gp"), new: n.keyId("gp-new") });
    assert.equal(
      n.submit("clinician:gp", "patient.register", SAMPLES["patient.register"]?.payload(n) as never).code,
      "revoked-signer",
    );
    n.ok("gp-new", "patient.register", SAMPLES["patient.register"]?.payload(n) as never);
    assert.equal(read.member(n.state, n.member("clinician:gp"))?.key, n.keyId("gp-new"));
  });
  test("an admin rotates a member's and a node's key; another org's admin cannot", () => {
    const n = new Net();
    n.ok("admin:gp", "key.rotate", { old: n.keyId("nurse:gp"), new: n.keyId("nurse-new") });
    n.ok("admin:gp", "key.rotate", { old: n.keyId("node:gp"), new: n.keyId("node-new") });
    assert.deepEqual(read.org(n.state, "gp-riverside")?.nodes, [n.keyId("node-new")]);
    n.ok("node-new", "record.anchor", SAMPLES["record.anchor"]?.payload(n) as never);
    assert.equal(
      n.submit("admin:trust", "key.rotate", { old: n.keyId("clinician:gp"), new: n.keyId("x") }).code,
      "unauthorised",
    );
  });
  test("patient keys: the patient rotates; a clinician cannot", () => {
    const n = new Net();
    assert.equal(
      n.submit("clinician:gp", "key.rotate", { old: n.keyId("patient:3"), new: n.keyId("p3b") }).code,
      "unauthorised",
    );
    n.ok("patient:3", "key.rotate", { old: n.keyId("patient:3"), new: n.keyId("p3b") });
    assert.equal(read.patient(n.state, n.patient(3).id)?.key, n.keyId("p3b"));
    assert.equal(n.decide("p3b", 3, "TREAT").rule, "own-record");
  });
  test("rotate: not-found, key-in-use, same key", () => {
    const n = new Net();
    assert.equal(n.submit("admin:gp", "key.rotate", { old: n.keyId("nobody"), new: n.keyId("x") }).code, "not-found");
    assert.equal(
      n.submit("clinician:gp", "key.rotate", { old: n.keyId("clinician:gp"), new: n.keyId("nurse:gp") }).code,
      "key-in-use",
    );
    assert.equal(
      n.submit("clinician:gp", "key.rotate", { old: n.keyId("clinician:gp"), new: n.keyId("clinician:gp") }).code,
      "key-in-use",
    );
  });
  test("enrol: roles, duplicates, other org", () => {
    const n = new Net();
    const p = SAMPLES["member.enrol"]?.payload(n) as Record<string, unknown>;
    assert.equal(n.submit("admin:gp", "member.enrol", { ...p, role: "surgeon" }).code, "malformed-payload");
    assert.equal(n.submit("admin:trust", "member.enrol", p).code, "unauthorised");
    n.ok("admin:gp", "member.enrol", p);
    assert.equal(n.submit("admin:gp", "member.enrol", p).code, "already-exists");
    assert.equal(n.submit("admin:gp", "member.enrol", { ...p, member: n.uuid("other") }).code, "key-in-use");
    assert.equal(n.submit("admin:gp", "member.enrol", { ...p, member: "not-a-uuid" }).code, "malformed-payload");
  });
  test("revoke: inactive twice, last admin, resignation, not-found", () => {
    const n = new Net();
    n.ok("admin:gp", "member.revoke", { member: n.member("nurse:gp") });
    assert.equal(n.submit("admin:gp", "member.revoke", { member: n.member("nurse:gp") }).code, "inactive");
    assert.equal(n.submit("admin:gp", "member.revoke", { member: n.member("admin:gp") }).code, "last-admin");
    n.ok("clinician:gp", "member.revoke", { member: n.member("clinician:gp"), reason: "Retired" });
    assert.equal(n.submit("admin:gp", "member.revoke", { member: n.uuid("ghost") }).code, "not-found");
  });
  test("team.set: members must be active members of the org; membership is indexed both ways", () => {
    const n = new Net();
    const team = n.sc.teams.cardiology.id;
    const set = (members: string[]) => ({ team, org: "trust-northgate", name: "Cardiology", members });
    assert.equal(n.submit("admin:trust", "team.set", set([n.member("clinician:gp")])).code, "invalid-reference");
    assert.equal(n.submit("admin:trust", "team.set", set([n.uuid("ghost")])).code, "invalid-reference");
    assert.equal(
      n.submit("admin:gp", "team.set", { ...set([]), org: "gp-riverside" }).code,
      "unauthorised",
      "a team belongs to one org",
    );
    n.ok("admin:trust", "team.set", set([n.member("clinician:trust-ae")]));
    assert.deepEqual(read.member(n.state, n.member("clinician:trust-ae"))?.teams, [team]);
    assert.deepEqual(read.member(n.state, n.member("clinician:trust-cardio"))?.teams, []);
    n.ok("admin:trust", "member.revoke", { member: n.member("nurse:trust") });
    assert.equal(n.submit("admin:trust", "team.set", set([n.member("nurse:trust")])).code, "invalid-reference");
  });
});

describe("patients and proxies", () => {
  test("register: admin or clinician of the org; duplicates", () => {
    const n = new Net();
    const p = SAMPLES["patient.register"]?.payload(n) as Record<string, unknown>;
    assert.equal(n.submit("clinician:trust-cardio", "patient.register", p).code, "unauthorised");
    n.ok("admin:gp", "patient.register", p);
    assert.equal(n.submit("clinician:gp", "patient.register", p).code, "already-exists");
    assert.equal(
      n.submit("clinician:gp", "patient.register", { ...p, patient: n.uuid("p2"), key: n.keyId("p2") }).code,
      "already-exists",
      "same NHS lookup",
    );
    assert.equal(
      n.submit("clinician:gp", "patient.register", { ...p, patient: n.uuid("p3"), lookup: "cd".repeat(32) }).code,
      "key-in-use",
    );
    assert.equal(
      n.submit("clinician:gp", "patient.register", { ...p, nhsNumber: "9434765919" }).code,
      "malformed-payload",
    );
    assert.equal(n.submit("clinician:gp", "patient.register", { ...p, name: "Jane" }).code, "malformed-payload");
  });
  test("recover: registering org + one other org, in either order", () => {
    for (const order of [
      ["clinician:gp", "clinician:trust-cardio"],
      ["admin:uni", "admin:gp"],
    ]) {
      const n = new Net();
      const payload = { patient: n.patient(3).id, key: n.keyId("p3:new") };
      n.ok(order[0] as string, "patient.recover", payload);
      assert.equal(read.patient(n.state, n.patient(3).id)?.key, n.keyId("patient:3"));
      assert.equal(n.submit(order[0] as string, "patient.recover", payload).code, "duplicate-vote");
      n.ok(order[1] as string, "patient.recover", payload);
      const pat = read.patient(n.state, n.patient(3).id) as PatientRec;
      assert.equal(pat.key, n.keyId("p3:new"));
      assert.equal(pat.recovery, undefined);
      assert.equal(n.submit("patient:3", "optout.set", { patient: pat.id, optout: true }).code, "revoked-signer");
      n.ok("p3:new", "optout.set", { patient: pat.id, optout: true });
    }
  });
  test("recover: two non-registering orgs are not enough; the window expires", () => {
    const n = new Net();
    const payload = { patient: n.patient(3).id, key: n.keyId("p3:new") };
    n.ok("clinician:trust-cardio", "patient.recover", payload);
    n.ok("admin:uni", "patient.recover", payload);
    assert.equal(read.patient(n.state, n.patient(3).id)?.key, n.keyId("patient:3"));
    n.now += 8 * DAY;
    n.ok("clinician:gp", "patient.recover", payload); // restarts: the earlier approvals lapsed
    assert.deepEqual(read.patient(n.state, n.patient(3).id)?.recovery?.orgs, ["gp-riverside"]);
    assert.equal(
      n.submit("clinician:gp", "patient.recover", { ...payload, key: n.keyId("clinician:gp") }).code,
      "key-in-use",
    );
  });
  test("appoint: by registrar, parental needs a first-of-month endsAt in the future", () => {
    const n = new Net();
    const base = {
      patient: n.patient(4).id,
      proxy: n.uuid("px4"),
      key: n.keyId("parent4"),
      basis: "parental-responsibility",
      scope: "view",
      labels: ["N"],
    };
    assert.equal(n.submit("clinician:gp", "proxy.appoint", base).code, "malformed-payload");
    assert.equal(
      n.submit("clinician:gp", "proxy.appoint", { ...base, endsAt: Date.UTC(2030, 4, 17) }).code,
      "malformed-payload",
    );
    assert.equal(
      n.submit("clinician:gp", "proxy.appoint", { ...base, endsAt: firstOfMonthUtc(START) }).code,
      "expired",
    );
    assert.equal(n.submit("clinician:gp", "proxy.appoint", { ...base, labels: [] }).code, "malformed-payload");
    assert.equal(n.submit("clinician:gp", "proxy.appoint", { ...base, labels: ["XYZ"] }).code, "malformed-payload");
    assert.equal(
      n.submit("clinician:trust-cardio", "proxy.appoint", { ...base, endsAt: Date.UTC(2030, 4, 1) }).code,
      "unauthorised",
    );
    n.ok("clinician:gp", "proxy.appoint", { ...base, endsAt: Date.UTC(2030, 4, 1) });
    assert.equal(
      n.submit("clinician:gp", "proxy.appoint", { ...base, endsAt: Date.UTC(2030, 4, 1) }).code,
      "already-exists",
    );
    assert.equal(
      n.submit("patient:4", "proxy.appoint", {
        ...base,
        proxy: n.uuid("self"),
        key: n.keyId("patient:4"),
        basis: "carer-nominated",
      }).code,
      "invalid-reference",
    );
  });
  test("end: by the proxy itself; not-found afterwards", () => {
    const n = new Net();
    const p = { patient: n.patient(2).id, proxy: n.patient(2).proxy?.id };
    n.ok("proxy:carer-2", "proxy.end", p);
    assert.equal(n.submit("patient:2", "proxy.end", p).code, "not-found");
  });
  test("keep: only for parental proxies, only once", () => {
    const n = new Net();
    const p = { patient: n.patient(2).id, proxy: n.patient(2).proxy?.id };
    assert.equal(n.submit("patient:2", "proxy.keep", p).code, "inactive");
    const p0 = { patient: n.patient(0).id, proxy: n.patient(0).proxy?.id };
    n.ok("patient:0", "proxy.keep", p0);
    assert.equal(n.submit("patient:0", "proxy.keep", p0).code, "inactive");
    assert.equal(n.submit("patient:0", "proxy.keep", { ...p0, proxy: n.uuid("none") }).code, "not-found");
  });
  test("safeguarding: only clinicians; only the raising org lifts; unknown flag", () => {
    const n = new Net();
    const p = SAMPLES["safeguarding.flag"]?.payload(n) as Record<string, unknown>;
    n.ok("clinician:gp", "safeguarding.flag", p);
    assert.equal(n.submit("clinician:trust-ae", "safeguarding.flag", { ...p, active: false }).code, "unauthorised");
    assert.equal(
      n.submit("clinician:gp", "safeguarding.flag", { ...p, flag: n.uuid("other"), active: false }).code,
      "not-found",
    );
    n.ok("clinician:gp", "safeguarding.flag", { ...p, active: false });
    assert.deepEqual(read.patient(n.state, n.patient(3).id)?.safeguarding, []);
  });
});

describe("consent", () => {
  const rule = (n: Net, over: Record<string, unknown> = {}) => ({
    ...(SAMPLES["consent.set"]?.payload(n) as Record<string, unknown>),
    ...over,
  });
  test("set by a manage proxy within its labels; refused outside them", () => {
    const n = new Net();
    const p0 = n.patient(0).id;
    n.ok("proxy:parent-0", "consent.set", rule(n, { patient: p0 }));
    assert.equal(
      n.submit("proxy:parent-0", "consent.set", rule(n, { patient: p0, labels: ["N", "PSY"] })).code,
      "unauthorised",
    );
    assert.equal(n.submit("proxy:parent-0", "consent.set", rule(n, { patient: p0, labels: [] })).code, "unauthorised");
  });
  test("a view proxy, a frozen proxy, a lapsed parental proxy cannot set rules", () => {
    const n = new Net();
    assert.equal(n.submit("proxy:carer-2", "consent.set", rule(n, { patient: n.patient(2).id })).code, "unauthorised");
    const p0 = n.patient(0).id;
    n.ok("clinician:gp", "safeguarding.flag", {
      patient: p0,
      flag: n.uuid("f0"),
      active: true,
      freezeProxies: true,
      hideFromPatient: false,
    });
    assert.equal(n.submit("proxy:parent-0", "consent.set", rule(n, { patient: p0 })).code, "unauthorised");
    const m = new Net();
    m.now = (m.patient(0).proxy?.endsAt as number) + 1;
    assert.equal(
      m.submit("proxy:parent-0", "consent.set", (({ period: _, ...r }) => r)(rule(m, { patient: p0 }))).code,
      "unauthorised",
    );
    m.ok("patient:0", "consent.set", (({ period: _, ...r }) => r)(rule(m, { patient: p0 })));
  });
  test("period checks: expired, end before start", () => {
    const n = new Net();
    assert.equal(
      n.submit("patient:3", "consent.set", rule(n, { period: { start: START, end: n.now - 1 } })).code,
      "expired",
    );
    assert.equal(
      n.submit("patient:3", "consent.set", rule(n, { period: { start: n.now + 10, end: n.now + 5 } })).code,
      "invalid-period",
    );
    assert.equal(
      n.submit("patient:3", "consent.set", rule(n, { dataPeriod: { start: "2020-01-01", end: "2019-01-01" } })).code,
      "invalid-period",
    );
    assert.equal(
      n.submit("patient:3", "consent.set", rule(n, { dataPeriod: { start: "2020-13-01" } })).code,
      "malformed-payload",
    );
  });
  test("grantee must exist; grantee with an extra field is malformed", () => {
    const n = new Net();
    assert.equal(
      n.submit("patient:3", "consent.set", rule(n, { grantee: { kind: "member", id: n.uuid("x") } })).code,
      "invalid-reference",
    );
    assert.equal(
      n.submit("patient:3", "consent.set", rule(n, { grantee: { kind: "team", id: n.uuid("x") } })).code,
      "invalid-reference",
    );
    assert.equal(
      n.submit("patient:3", "consent.set", rule(n, { grantee: { kind: "org", id: "nope-org" } })).code,
      "invalid-reference",
    );
    assert.equal(
      n.submit("patient:3", "consent.set", rule(n, { grantee: { kind: "org", id: "gp-riverside", name: "x" } })).code,
      "malformed-payload",
    );
    assert.equal(n.submit("patient:3", "consent.set", rule(n, { purposes: [] })).code, "malformed-payload");
    assert.equal(
      n.submit("patient:3", "consent.set", rule(n, { purposes: ["TREAT", "TREAT"] })).code,
      "malformed-payload",
    );
    n.ok("patient:3", "consent.set", rule(n, { grantee: { kind: "any" } }));
  });
  test("set is an upsert by rule id; the limit counts rules", () => {
    const n = new Net();
    n.ok("patient:3", "consent.set", rule(n));
    n.ok("patient:3", "consent.set", rule(n, { effect: "deny" }));
    const rules = read.rules(n.state, n.patient(3).id) ?? [];
    assert.equal(rules.length, 11);
    assert.equal(rules.find((r) => r.id === n.uuid("rule:new"))?.effect, "deny");
    for (let i = 11; i < 64; i++) n.ok("patient:3", "consent.set", rule(n, { rule: n.uuid(`r${i}`) }));
    assert.equal(n.submit("patient:3", "consent.set", rule(n, { rule: n.uuid("one-too-many") })).code, "limit");
  });
  test("revoke: not-found; by a clinician unauthorised", () => {
    const n = new Net();
    assert.equal(
      n.submit("patient:3", "consent.revoke", { patient: n.patient(3).id, rule: n.uuid("nope") }).code,
      "not-found",
    );
    assert.equal(
      n.submit("clinician:gp", "consent.revoke", { patient: n.patient(3).id, rule: n.patient(3).ruleIds[0] }).code,
      "unauthorised",
    );
  });
  test("optout: by a manage proxy; unknown patient", () => {
    const n = new Net();
    n.ok("proxy:parent-0", "optout.set", { patient: n.patient(0).id, optout: true });
    assert.equal(read.patient(n.state, n.patient(0).id)?.optout, true);
    assert.equal(n.submit("patient:3", "optout.set", { patient: n.uuid("nobody"), optout: true }).code, "not-found");
  });
});

describe("records and access", () => {
  test("anchor: by an admin too; batches are atomic; versions are unique; patient must exist", () => {
    const n = new Net();
    const p = SAMPLES["record.anchor"]?.payload(n) as { anchors: Record<string, unknown>[] };
    n.ok("admin:gp", "record.anchor", p);
    assert.equal(n.submit("node:gp", "record.anchor", p).code, "already-exists");
    const first = p.anchors[0] as Record<string, unknown>;
    const snap = snapshot(n.state as MemoryState);
    const batch = {
      anchors: [
        { ...first, resourceId: "new-1" },
        { ...first, resourceId: "new-2", patient: n.uuid("ghost") },
      ],
    };
    assert.equal(n.submit("node:gp", "record.anchor", batch).code, "not-found");
    assert.equal(snapshot(n.state as MemoryState), snap, "first entry not written");
    assert.equal(
      n.submit("node:gp", "record.anchor", { anchors: [{ ...first, version: "2", patient: n.patient(4).id }] }).code,
      "invalid-reference",
    );
    n.ok("node:gp", "record.anchor", { anchors: [{ ...first, version: "2" }] });
    // A record of no patient (an Organization) is anchored too; it may not later claim a patient, nor the reverse.
    const { patient: _patient, ...noPatient } = first;
    const org = { ...noPatient, resourceType: "Organization", resourceId: "org-1" };
    n.ok("node:gp", "record.anchor", { anchors: [org] });
    assert.deepEqual(n.state.get("res/gp-riverside/Organization/org-1"), { latest: "1", versions: 1 });
    assert.equal(
      n.submit("node:gp", "record.anchor", { anchors: [{ ...org, version: "2", patient: first.patient }] }).code,
      "invalid-reference",
    );
    assert.equal(
      n.submit("node:gp", "record.anchor", { anchors: [{ ...noPatient, version: "3" }] }).code,
      "invalid-reference",
    );
    assert.equal(n.submit("clinician:gp", "record.anchor", p).code, "unauthorised");
    assert.equal(
      n.submit("node:gp", "record.anchor", { anchors: [{ ...first, custodian: "trust-northgate", resourceId: "x" }] })
        .code,
      "unauthorised",
    );
    assert.equal(n.submit("node:gp", "record.anchor", { anchors: [] }).code, "malformed-payload");
    assert.equal(
      n.submit("node:gp", "record.anchor", { anchors: [{ ...first, commitment: "XY" }] }).code,
      "malformed-payload",
    );
    assert.equal(
      n.submit("node:gp", "record.anchor", { anchors: [{ ...first, text: "Diabetes" }] }).code,
      "malformed-payload",
    );
  });
  test("anchor: holders/<patient> lists each custodian that anchored a record of the patient, once, sorted", () => {
    const n = new Net();
    const pid = n.patient(3).id;
    const before = read.holders(n.state, pid) ?? [];
    const entry = (custodian: string, resourceId: string, version = "1") => ({
      custodian,
      patient: pid,
      resourceType: "Condition",
      resourceId,
      version,
      commitment: "ab".repeat(32),
      labels: ["N"],
    });
    n.ok("node:trust", "record.anchor", {
      anchors: [entry("trust-northgate", "h-1"), entry("trust-northgate", "h-2")],
    });
    n.ok("node:gp", "record.anchor", { anchors: [entry("gp-riverside", "h-3")] });
    n.ok("node:gp", "record.anchor", { anchors: [entry("gp-riverside", "h-3", "2")] });
    const expected = [...new Set([...before, "gp-riverside", "trust-northgate"])].sort();
    assert.deepEqual(read.holders(n.state, pid), expected);
    // A rejected batch adds nobody; a record of no patient names no patient's holders.
    const snap = snapshot(n.state as MemoryState);
    assert.equal(
      n.submit("node:gp", "record.anchor", {
        anchors: [entry("gp-riverside", "h-4"), { ...entry("gp-riverside", "h-3") }],
      }).code,
      "already-exists",
    );
    assert.equal(snapshot(n.state as MemoryState), snap);
    // Erasing the patient drops the index with the rest of their consent state.
    n.ok("node:gp", "record.erase", { custodian: "gp-riverside", patient: pid, resources: [], erasePatient: true });
    assert.equal(read.holders(n.state, pid), undefined);
  });
  test("erase: resources then no re-anchoring; unknown resource; patient erasure only by the registering org", () => {
    const n = new Net();
    const p = SAMPLES["record.erase"]?.payload(n) as Record<string, unknown>;
    n.ok("node:gp", "record.erase", p);
    assert.equal(n.submit("node:gp", "record.erase", p).code, "erased");
    assert.equal(
      n.submit("node:gp", "record.anchor", {
        anchors: [
          {
            custodian: "gp-riverside",
            patient: n.patient(3).id,
            resourceType: "Observation",
            resourceId: fixtureRes("gp-riverside", "Observation", 3),
            version: "2",
            commitment: "ef".repeat(32),
            labels: [],
          },
        ],
      }).code,
      "erased",
    );
    assert.equal(
      n.submit("node:gp", "record.erase", { ...p, resources: [{ resourceType: "Observation", resourceId: "nope" }] })
        .code,
      "not-found",
    );
    assert.equal(n.submit("node:gp", "record.erase", { ...p, resources: [] }).code, "malformed-payload");
    assert.equal(
      n.submit("node:trust", "record.erase", {
        custodian: "trust-northgate",
        patient: n.patient(3).id,
        resources: [],
        erasePatient: true,
      }).code,
      "unauthorised",
    );
    n.ok("node:gp", "record.erase", { ...p, resources: [], erasePatient: true });
    const pat = read.patient(n.state, n.patient(3).id) as PatientRec;
    assert.equal(pat.status, "erased");
    assert.equal(pat.lookup, undefined);
    assert.equal(read.rules(n.state, pat.id), undefined);
    assert.equal(n.submit("patient:3", "consent.set", SAMPLES["consent.set"]?.payload(n) as never).code, "erased");
  });
  test("access.log: height must not be in the future; unknown patient; admin may log", () => {
    const n = new Net();
    const p = SAMPLES["access.log"]?.payload(n) as { entries: Record<string, unknown>[] };
    const e = p.entries[0] as Record<string, unknown>;
    assert.equal(
      n.submit("node:trust", "access.log", { entries: [{ ...e, height: n.height + 5 }] }).code,
      "invalid-reference",
    );
    assert.equal(n.submit("node:trust", "access.log", { entries: [{ ...e, patient: n.uuid("x") }] }).code, "not-found");
    assert.equal(n.submit("node:trust", "access.log", { entries: [{ ...e, step: 9 }] }).code, "malformed-payload");
    n.ok("admin:trust", "access.log", { entries: [e, { ...e, decision: "deny", step: 8, rule: "default-deny" }] });
  });
  test("break-glass: window bounded by policy; expired entries are pruned", () => {
    const n = new Net();
    const p = SAMPLES["breakglass.declare"]?.payload(n) as Record<string, unknown>;
    assert.equal(
      n.submit("clinician:trust-ae", "breakglass.declare", { ...p, windowMs: 5 * HOUR }).code,
      "invalid-window",
    );
    assert.equal(
      n.submit("clinician:trust-ae", "breakglass.declare", { ...p, basis: "curiosity" }).code,
      "malformed-payload",
    );
    assert.equal(
      n.submit("clinician:trust-ae", "breakglass.declare", { ...p, reason: "x".repeat(281) }).code,
      "malformed-payload",
    );
    assert.equal(n.submit("researcher:uni", "breakglass.declare", p).code, "unauthorised");
    n.ok("clinician:trust-ae", "breakglass.declare", { ...p, windowMs: HOUR });
    assert.equal(read.breakglass(n.state, n.patient(3).id)?.length, 1);
    n.now += 2 * HOUR;
    n.ok("clinician:trust-cardio", "breakglass.declare", p);
    const live = read.breakglass(n.state, n.patient(3).id) ?? [];
    assert.equal(live.length, 1);
    assert.equal(live[0]?.until, (live[0]?.from as number) + 4 * HOUR);
  });
});

describe("state discipline", () => {
  test("the contract never mutates stored values (deep-frozen store)", () => {
    const sc = buildScenario({ seedFor, start: START, patients: 6 });
    const state = new FreezingState();
    const f = new TxFactory(seedFor, { salt: "frozen" });
    let h = 0;
    for (const tx of sc.txs) {
      const r = applyTx(state, tx, txId(tx), { height: ++h, time: tx.createdAt, nonceUsed: () => false });
      assert.equal(r.code, "ok", tx.type);
    }
    const n = new Net(state);
    // every sample once more on the frozen store
    for (const [type, s] of Object.entries(SAMPLES)) {
      const m = new Net(new FreezingState(n.state instanceof MemoryState ? n.state.map : []));
      s.setup?.(m);
      assert.equal(m.submit(s.label, type, s.payload(m)).code, "ok", type);
    }
    void f;
  });
  test("every stored value is plain JSON (no undefined, no functions)", () => {
    const n = new Net();
    for (const [type, s] of Object.entries(SAMPLES)) {
      const m = new Net();
      s.setup?.(m);
      m.ok(s.label, type, s.payload(m));
      for (const [k, v] of (m.state as MemoryState).entries()) {
        assert.deepEqual(JSON.parse(JSON.stringify(v)), v, `${type}: ${k}`);
      }
    }
    void n;
  });
  test("replaying the same txs gives the same state (determinism)", () => {
    const a = buildScenario({ seedFor, start: START, patients: 4 });
    const b = buildScenario({ seedFor, start: START, patients: 4 });
    assert.deepEqual(a.txs, b.txs);
    const sa = new MemoryState();
    const sb = new MemoryState();
    let h = 0;
    for (const tx of a.txs) applyTx(sa, tx, txId(tx), { height: ++h, time: tx.createdAt, nonceUsed: () => false });
    h = 0;
    for (const tx of b.txs) applyTx(sb, tx, txId(tx), { height: ++h, time: tx.createdAt, nonceUsed: () => false });
    assert.equal(snapshot(sa), snapshot(sb));
  });
  test("no names or NHS numbers: registering stores only pseudonym, org, key and HMAC lookup", () => {
    const n = new Net();
    n.ok("clinician:gp", "patient.register", SAMPLES["patient.register"]?.payload(n) as never);
    const pat = read.patient(n.state, n.uuid("p:new")) as PatientRec;
    assert.deepEqual(Object.keys(pat).sort(), [
      "id",
      "key",
      "lookup",
      "optout",
      "org",
      "proxies",
      "registeredAt",
      "safeguarding",
      "status",
    ]);
    const org = read.org(n.state, "gp-riverside") as OrgRec;
    assert.ok(!("members" in org));
  });
  test("makeTx signs with the given nonce and time", () => {
    const kp = new Net().key("admin:gp");
    const tx = makeTx(kp, "org.approve", { org: "x" }, 1234, "ab".repeat(8));
    assert.equal(tx.signer, kp.keyId);
    assert.equal(tx.nonce, "ab".repeat(8));
    assert.equal(tx.createdAt, 1234);
    assert.match(tx.sig, /^[A-Za-z0-9_-]{86}$/);
  });
});
