import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Decision } from "./decide.ts";
import { DAY, HOUR, Net, START } from "./testkit.ts";

// Fixture patients: 0 has a parental proxy (manage, general), 1 opted out, 2 has a carer proxy (view, general),
// 3–5 are plain. Every patient holds the ten template rules (fixtures.ts `ruleTemplate`):
//  r0 permit team cardiology TREAT/ETREAT read [N]        r5 permit member clinician:gp TREAT read/write [N SEX HIV]
//  r1 permit org trust TREAT read/write [N PSY]           r6 deny role uni researcher HRESCH/CLINTRCH [GDIS]
//  r2 permit study diabetes@uni HRESCH [N] data ≥ 2015    r7 permit any ETREAT read [PSY]
//  r3 deny member trust A&E TREAT/ETREAT read [SEX]       r8 permit org gp TREAT read, 365 days
//  r4 permit role trust nurse TREAT [N] Obs/MedStmt       r9 permit org uni HRESCH [N], 30 days

interface Row {
  name: string;
  setup?: (n: Net) => void;
  ask: (n: Net) => Decision;
  effect: "permit" | "deny";
  step: number;
  /** Policy name, or `r<k>` for rule k of patient `rulePatient` (default 3). */
  rule: string;
  rulePatient?: number;
  warning?: RegExp;
  noWarnings?: boolean;
}

const flag = (n: Net, p: number, opts: { freezeProxies?: boolean; hideFromPatient?: boolean }) =>
  n.ok("clinician:gp", "safeguarding.flag", {
    patient: n.patient(p).id,
    flag: n.uuid(`flag:${p}`),
    active: true,
    freezeProxies: opts.freezeProxies ?? false,
    hideFromPatient: opts.hideFromPatient ?? false,
  });

const breakGlass = (n: Net, label: string, p: number) =>
  n.ok(label, "breakglass.declare", {
    patient: n.patient(p).id,
    basis: "emergency-no-capacity",
    reason: "Unconscious in A&E",
  });

const endsAt = (n: Net) => n.patient(0).proxy?.endsAt as number;

const ROWS: Row[] = [
  // ---- step 1 ----
  {
    name: "1: the patient reads their own record",
    ask: (n) => n.decide("patient:3", 3, "TREAT", { labels: ["HIV"] }),
    effect: "permit",
    step: 1,
    rule: "own-record",
  },
  {
    name: "1: a safeguarding entry is hidden from the patient while a hide-from-patient flag is active",
    setup: (n) => flag(n, 3, { hideFromPatient: true }),
    ask: (n) => n.decide("patient:3", 3, "TREAT", { safeguarding: true }),
    effect: "deny",
    step: 1,
    rule: "safeguarding",
  },
  {
    name: "1: safeguarding entries are shown to the patient without such a flag",
    ask: (n) => n.decide("patient:3", 3, "TREAT", { safeguarding: true }),
    effect: "permit",
    step: 1,
    rule: "own-record",
  },
  {
    name: "1: a parental proxy reads general records, no warning months before the end",
    ask: (n) => n.decide("proxy:parent-0", 0, "TREAT"),
    effect: "permit",
    step: 1,
    rule: "proxy",
    noWarnings: true,
  },
  {
    name: "1: a parental proxy is warned within 30 days of the child's 16th",
    ask: (n) => n.decide("proxy:parent-0", 0, "TREAT", {}, { at: endsAt(n) - 10 * DAY }),
    effect: "permit",
    step: 1,
    rule: "proxy",
    warning: /ends on \d{4}-\d{2}-01 unless the young person/,
  },
  {
    name: "1: a parental proxy past its end is refused",
    ask: (n) => n.decide("proxy:parent-0", 0, "TREAT", {}, { at: endsAt(n) }),
    effect: "deny",
    step: 1,
    rule: "proxy",
  },
  {
    name: "1: a parental proxy the young person kept continues past the end, without warnings",
    setup: (n) => n.ok("patient:0", "proxy.keep", { patient: n.patient(0).id, proxy: n.patient(0).proxy?.id }),
    ask: (n) => n.decide("proxy:parent-0", 0, "TREAT", {}, { at: endsAt(n) + 400 * DAY }),
    effect: "permit",
    step: 1,
    rule: "proxy",
    noWarnings: true,
  },
  {
    name: "1: a proxy outside its labels is refused",
    ask: (n) => n.decide("proxy:carer-2", 2, "TREAT", { labels: ["N", "PSY"] }),
    effect: "deny",
    step: 1,
    rule: "proxy",
  },
  {
    name: "1: a view proxy may not write",
    ask: (n) => n.decide("proxy:carer-2", 2, "TREAT", {}, { action: "write" }),
    effect: "deny",
    step: 1,
    rule: "proxy",
  },
  {
    name: "1: a manage proxy may write within its labels",
    ask: (n) => n.decide("proxy:parent-0", 0, "TREAT", {}, { action: "write" }),
    effect: "permit",
    step: 1,
    rule: "proxy",
  },
  {
    name: "1: safeguarding entries are hidden from proxies",
    ask: (n) => n.decide("proxy:carer-2", 2, "TREAT", { safeguarding: true }),
    effect: "deny",
    step: 1,
    rule: "safeguarding",
  },
  {
    name: "1: a safeguarding freeze stops all proxy access",
    setup: (n) => flag(n, 2, { freezeProxies: true }),
    ask: (n) => n.decide("proxy:carer-2", 2, "TREAT"),
    effect: "deny",
    step: 1,
    rule: "safeguarding",
  },
  {
    name: "1: lifting the flag restores proxy access",
    setup: (n) => {
      flag(n, 2, { freezeProxies: true });
      n.ok("clinician:gp", "safeguarding.flag", {
        patient: n.patient(2).id,
        flag: n.uuid("flag:2"),
        active: false,
        freezeProxies: false,
        hideFromPatient: false,
      });
    },
    ask: (n) => n.decide("proxy:carer-2", 2, "TREAT"),
    effect: "permit",
    step: 1,
    rule: "proxy",
  },
  {
    name: "1: a proxy of another patient has no access here (falls to step 2)",
    ask: (n) => n.decide("proxy:carer-2", 3, "TREAT"),
    effect: "deny",
    step: 2,
    rule: "unknown-requester",
  },
  {
    name: "1: an ended proxy is no longer recognised",
    setup: (n) => n.ok("patient:2", "proxy.end", { patient: n.patient(2).id, proxy: n.patient(2).proxy?.id }),
    ask: (n) => n.decide("proxy:carer-2", 2, "TREAT"),
    effect: "deny",
    step: 2,
    rule: "unknown-requester",
  },
  // ---- step 2 ----
  {
    name: "2: unknown patient",
    ask: (n) => n.decide("clinician:gp", n.uuid("nobody"), "TREAT"),
    effect: "deny",
    step: 2,
    rule: "unknown-patient",
  },
  {
    name: "2: unknown requester key",
    ask: (n) => n.decide("stranger", 3, "TREAT"),
    effect: "deny",
    step: 2,
    rule: "unknown-requester",
  },
  {
    name: "2: an org node key is not a practitioner",
    ask: (n) => n.decide("node:trust", 3, "TREAT"),
    effect: "deny",
    step: 2,
    rule: "unknown-requester",
  },
  {
    name: "2: a revoked member is refused although a rule names them",
    setup: (n) => n.ok("admin:gp", "member.revoke", { member: n.member("clinician:gp") }),
    ask: (n) => n.decide("clinician:gp", 3, "TREAT", { custodian: "gp-riverside" }),
    effect: "deny",
    step: 2,
    rule: "revoked-requester",
  },
  {
    name: "2: a rotated-away key is refused",
    setup: (n) => n.ok("clinician:gp", "key.rotate", { old: n.keyId("clinician:gp"), new: n.keyId("gp-new") }),
    ask: (n) => n.decide("clinician:gp", 3, "TREAT"),
    effect: "deny",
    step: 2,
    rule: "revoked-requester",
  },
  {
    name: "2: the rotated-to key works",
    setup: (n) => n.ok("clinician:gp", "key.rotate", { old: n.keyId("clinician:gp"), new: n.keyId("gp-new") }),
    ask: (n) => n.decide("gp-new", 3, "TREAT"),
    effect: "permit",
    step: 6,
    rule: "r5",
  },
  {
    name: "2: a member of a suspended org is refused",
    setup: (n) => {
      n.ok("admin:gp", "org.suspend", { org: "trust-northgate", action: "suspend", reason: "Breach" });
      n.ok("admin:uni", "org.suspend", { org: "trust-northgate", action: "suspend", reason: "Breach" });
    },
    ask: (n) => n.decide("clinician:trust-cardio", 3, "TREAT"),
    effect: "deny",
    step: 2,
    rule: "suspended-org",
  },
  {
    name: "2: an erased patient",
    setup: (n) =>
      n.ok("node:gp", "record.erase", {
        custodian: "gp-riverside",
        patient: n.patient(3).id,
        resources: [],
        erasePatient: true,
      }),
    ask: (n) => n.decide("clinician:trust-cardio", 3, "TREAT"),
    effect: "deny",
    step: 2,
    rule: "erased-patient",
  },
  {
    name: "2: a researcher may not use TREAT",
    ask: (n) => n.decide("researcher:uni", 3, "TREAT"),
    effect: "deny",
    step: 2,
    rule: "purpose-not-allowed",
  },
  {
    name: "2: a clinician may not use HRESCH",
    ask: (n) => n.decide("clinician:trust-cardio", 3, "HRESCH"),
    effect: "deny",
    step: 2,
    rule: "purpose-not-allowed",
  },
  {
    name: "2: admins get no clinical access",
    ask: (n) => n.decide("admin:trust", 3, "TREAT"),
    effect: "deny",
    step: 2,
    rule: "purpose-not-allowed",
  },
  {
    name: "2: researchers never write",
    ask: (n) => n.decide("researcher:uni", 3, "HRESCH", {}, { action: "write" }),
    effect: "deny",
    step: 2,
    rule: "purpose-not-allowed",
  },
  {
    name: "2: an unknown purpose code",
    ask: (n) => n.decide("clinician:gp", 3, "HPAYMT"),
    effect: "deny",
    step: 2,
    rule: "purpose-not-allowed",
  },
  // ---- step 3 ----
  {
    name: "3: break-glass releases the emergency set",
    setup: (n) => breakGlass(n, "clinician:trust-ae", 3),
    ask: (n) => n.decide("clinician:trust-ae", 3, "ETREAT", { type: "AllergyIntolerance" }),
    effect: "permit",
    step: 3,
    rule: "break-glass",
    warning: /privacy officer of Northgate Hospitals NHS Trust/,
  },
  {
    name: "3: break-glass beats a patient deny rule for non-sensitive data",
    setup: (n) => {
      n.ok("patient:4", "consent.set", {
        patient: n.patient(4).id,
        rule: n.uuid("deny-ae-all"),
        effect: "deny",
        grantee: { kind: "member", id: n.member("clinician:trust-ae") },
        resourceTypes: [],
        labels: [],
        purposes: ["TREAT", "ETREAT"],
        actions: ["read"],
      });
      breakGlass(n, "clinician:trust-ae", 4);
    },
    ask: (n) => n.decide("clinician:trust-ae", 4, "ETREAT", { type: "MedicationStatement" }),
    effect: "permit",
    step: 3,
    rule: "break-glass",
  },
  {
    name: "3: break-glass includes mental health the patient released for emergencies (r7)",
    setup: (n) => breakGlass(n, "clinician:trust-ae", 3),
    ask: (n) => n.decide("clinician:trust-ae", 3, "ETREAT", { type: "Condition", labels: ["PSY"] }),
    effect: "permit",
    step: 3,
    rule: "break-glass",
  },
  {
    name: "3: break-glass withholds sensitive labels not released (sexual health → r3 deny)",
    setup: (n) => breakGlass(n, "clinician:trust-ae", 3),
    ask: (n) => n.decide("clinician:trust-ae", 3, "ETREAT", { type: "Condition", labels: ["N", "SEX"] }),
    effect: "deny",
    step: 4,
    rule: "r3",
  },
  {
    name: "3: break-glass withholds HIV (not released) → step 5",
    setup: (n) => breakGlass(n, "clinician:trust-ae", 3),
    ask: (n) => n.decide("clinician:trust-ae", 3, "ETREAT", { type: "Condition", labels: ["HIV"] }),
    effect: "deny",
    step: 5,
    rule: "deny:sensitive-label",
  },
  {
    name: "3: break-glass window over",
    setup: (n) => breakGlass(n, "clinician:trust-ae", 3),
    ask: (n) => n.decide("clinician:trust-ae", 3, "ETREAT", { type: "AllergyIntolerance" }, { at: n.now + 4 * HOUR }),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
  {
    name: "3: break-glass only for its declarer",
    setup: (n) => breakGlass(n, "clinician:trust-ae", 3),
    ask: (n) => n.decide("clinician:trust-cardio", 5, "ETREAT", { type: "AllergyIntolerance" }),
    effect: "permit",
    step: 6,
    rule: "r0",
    rulePatient: 5,
  },
  {
    name: "3: break-glass for another patient does not apply",
    setup: (n) => breakGlass(n, "clinician:trust-ae", 4),
    ask: (n) => n.decide("clinician:trust-ae", 3, "ETREAT", { type: "AllergyIntolerance" }),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
  {
    name: "3: break-glass needs purpose ETREAT",
    setup: (n) => breakGlass(n, "clinician:trust-ae", 3),
    ask: (n) => n.decide("clinician:trust-ae", 3, "TREAT", { type: "AllergyIntolerance" }),
    effect: "permit",
    step: 6,
    rule: "r1",
  },
  {
    name: "3: outside the emergency set (Encounter) break-glass does not apply",
    setup: (n) => breakGlass(n, "clinician:trust-ae", 3),
    ask: (n) => n.decide("clinician:trust-ae", 3, "ETREAT", { type: "Encounter" }),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
  {
    name: "3: old observations are outside the emergency set",
    setup: (n) => breakGlass(n, "clinician:trust-ae", 3),
    ask: (n) => n.decide("clinician:trust-ae", 3, "ETREAT", { type: "Observation", date: "2019-01-01" }),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
  {
    name: "3: recent observations are inside it",
    setup: (n) => breakGlass(n, "clinician:trust-ae", 3),
    ask: (n) => n.decide("clinician:trust-ae", 3, "ETREAT", { type: "Observation", date: "2024-12-01" }),
    effect: "permit",
    step: 3,
    rule: "break-glass",
  },
  // ---- step 4 ----
  {
    name: "4: deny beats permit (A&E doctor, sexual health, trust permit r1 matches too)",
    ask: (n) => n.decide("clinician:trust-ae", 3, "TREAT", { type: "Condition", labels: ["N", "SEX"] }),
    effect: "deny",
    step: 4,
    rule: "r3",
  },
  {
    name: "4: researchers refused genetics even with a study grant",
    ask: (n) => n.decide("researcher:uni", 3, "HRESCH", { labels: ["N", "GDIS"] }, { study: n.sc.studies.diabetes.id }),
    effect: "deny",
    step: 4,
    rule: "r6",
  },
  {
    name: "4: a deny rule with a dataPeriod also covers undated records",
    setup: (n) =>
      n.ok("patient:4", "consent.set", {
        patient: n.patient(4).id,
        rule: n.uuid("deny-old"),
        effect: "deny",
        grantee: { kind: "org", id: "trust-northgate" },
        resourceTypes: [],
        labels: [],
        purposes: ["TREAT"],
        actions: ["read"],
        dataPeriod: { end: "2010-12-31" },
      }),
    ask: (n) => n.decide("clinician:trust-cardio", 4, "TREAT", { date: undefined }),
    effect: "deny",
    step: 4,
    rule: "deny-old",
  },
  // ---- step 5 ----
  {
    name: "5: HIV record with only general permits",
    ask: (n) => n.decide("clinician:trust-cardio", 3, "TREAT", { labels: ["N", "HIV"] }),
    effect: "deny",
    step: 5,
    rule: "deny:sensitive-label",
  },
  {
    name: "5: a permit naming the label (r5: GP, HIV) allows it",
    ask: (n) => n.decide("clinician:gp", 3, "TREAT", { labels: ["N", "HIV"] }),
    effect: "permit",
    step: 6,
    rule: "r5",
  },
  {
    name: "5: codes of the same label are equivalent (MH is named by r1's PSY)",
    ask: (n) => n.decide("clinician:trust-cardio", 3, "TREAT", { labels: ["MH"] }),
    effect: "permit",
    step: 6,
    rule: "r1",
  },
  {
    name: "5: every sensitive label must be named (PSY named, HIV not)",
    ask: (n) => n.decide("clinician:trust-cardio", 3, "TREAT", { labels: ["PSY", "HIV"] }),
    effect: "deny",
    step: 5,
    rule: "deny:sensitive-label",
  },
  {
    name: "5: sensitive records are withheld even from the custodian's own clinicians by default",
    setup: (n) => n.newPatient("bare"),
    ask: (n) => n.decide("clinician:trust-cardio", n.uuid("patient:bare"), "TREAT", { labels: ["PSY"] }),
    effect: "deny",
    step: 5,
    rule: "deny:sensitive-label",
  },
  {
    name: "5: social care is not sensitive (falls to the permit rules)",
    ask: (n) => n.decide("clinician:gp", 3, "TREAT", { labels: ["SOCIAL"], custodian: "gp-riverside" }),
    effect: "permit",
    step: 6,
    rule: "r8",
  },
  // ---- step 6 ----
  {
    name: "6: a care-team grant",
    ask: (n) => n.decide("clinician:trust-cardio", 3, "TREAT"),
    effect: "permit",
    step: 6,
    rule: "r0",
  },
  {
    name: "6: an org grant to a clinician outside the team",
    ask: (n) => n.decide("clinician:trust-ae", 3, "TREAT"),
    effect: "permit",
    step: 6,
    rule: "r1",
  },
  {
    name: "6: a role grant limited to resource types (nurse removed from the team)",
    setup: (n) =>
      n.ok("admin:trust", "team.set", {
        team: n.sc.teams.cardiology.id,
        org: "trust-northgate",
        name: "Cardiology",
        members: [n.member("clinician:trust-cardio")],
      }),
    ask: (n) => n.decide("nurse:trust", 3, "TREAT", { type: "MedicationStatement" }),
    effect: "permit",
    step: 6,
    rule: "r1",
  },
  {
    name: "6: period: the 30-day research grant while current",
    ask: (n) => n.decide("researcher:uni", 3, "HRESCH"),
    effect: "permit",
    step: 6,
    rule: "r9",
  },
  {
    name: "6: expired period: the 30-day research grant after 30 days",
    ask: (n) => n.decide("researcher:uni", 3, "HRESCH", {}, { at: START + 31 * DAY }),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
  {
    name: "6: not-yet-started period",
    ask: (n) => n.decide("researcher:uni", 3, "HRESCH", {}, { at: START - DAY }),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
  {
    name: "6: dataPeriod: the study grant covers records from 2015",
    ask: (n) =>
      n.decide(
        "researcher:uni",
        3,
        "HRESCH",
        { date: "2016-05-01" },
        { at: START + 40 * DAY, study: n.sc.studies.diabetes.id },
      ),
    effect: "permit",
    step: 6,
    rule: "r2",
  },
  {
    name: "6: dataPeriod: not records before 2015",
    ask: (n) =>
      n.decide(
        "researcher:uni",
        3,
        "HRESCH",
        { date: "2014-12-31" },
        { at: START + 40 * DAY, study: n.sc.studies.diabetes.id },
      ),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
  {
    name: "6: dataPeriod: not undated records",
    ask: (n) =>
      n.decide(
        "researcher:uni",
        3,
        "HRESCH",
        { date: undefined },
        { at: START + 40 * DAY, study: n.sc.studies.diabetes.id },
      ),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
  {
    name: "6: a study grant needs the study named in the request",
    ask: (n) => n.decide("researcher:uni", 3, "HRESCH", { date: "2016-05-01" }, { at: START + 40 * DAY }),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
  {
    name: "6: a revoked rule no longer permits",
    setup: (n) => n.ok("patient:3", "consent.revoke", { patient: n.patient(3).id, rule: n.patient(3).ruleIds[9] }),
    ask: (n) => n.decide("researcher:uni", 3, "HRESCH"),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
  {
    name: "6: action: a read-only grant does not permit writes",
    ask: (n) => n.decide("clinician:trust-cardio", 3, "TREAT", {}, { action: "write" }),
    effect: "permit",
    step: 6,
    rule: "r1",
  },
  {
    name: "6: action: GP practice grant r8 is read-only, GP nurse writing falls to the default",
    ask: (n) => n.decide("nurse:gp", 3, "TREAT", { custodian: "trust-northgate" }, { action: "write" }),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
  // ---- step 7 ----
  {
    name: "7: the custodian's own clinicians may read for TREAT by default",
    setup: (n) => n.newPatient("bare"),
    ask: (n) => n.decide("clinician:trust-cardio", n.uuid("patient:bare"), "TREAT"),
    effect: "permit",
    step: 7,
    rule: "default:custodian-treat",
  },
  {
    name: "7: and its nurses",
    setup: (n) => n.newPatient("bare"),
    ask: (n) => n.decide("nurse:gp", n.uuid("patient:bare"), "TREAT", { custodian: "gp-riverside" }),
    effect: "permit",
    step: 7,
    rule: "default:custodian-treat",
  },
  {
    name: "7: not another custodian's records",
    setup: (n) => n.newPatient("bare"),
    ask: (n) => n.decide("clinician:trust-cardio", n.uuid("patient:bare"), "TREAT", { custodian: "gp-riverside" }),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
  {
    name: "7: research is never by default",
    setup: (n) => n.newPatient("bare"),
    ask: (n) => n.decide("researcher:uni", n.uuid("patient:bare"), "HRESCH", { custodian: "uni-research" }),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
  {
    name: "7: opt-out blocks a research grant that is not a named study",
    ask: (n) => n.decide("researcher:uni", 1, "HRESCH"),
    effect: "deny",
    step: 7,
    rule: "deny:opt-out",
  },
  {
    name: "7: opt-out does not block an explicit study enrolment",
    ask: (n) => n.decide("researcher:uni", 1, "HRESCH", {}, { study: n.sc.studies.diabetes.id }),
    effect: "permit",
    step: 6,
    rule: "r2",
    rulePatient: 1,
  },
  {
    name: "7: opt-out does not touch direct care",
    ask: (n) => n.decide("clinician:trust-cardio", 1, "TREAT"),
    effect: "permit",
    step: 6,
    rule: "r0",
    rulePatient: 1,
  },
  {
    name: "7: opting back in restores the research grant",
    setup: (n) => n.ok("patient:1", "optout.set", { patient: n.patient(1).id, optout: false }),
    ask: (n) => n.decide("researcher:uni", 1, "HRESCH"),
    effect: "permit",
    step: 6,
    rule: "r9",
    rulePatient: 1,
  },
  // ---- step 8 ----
  {
    name: "8: nothing applies",
    ask: (n) => n.decide("clinician:gp", 3, "ETREAT", { custodian: "gp-riverside" }),
    effect: "deny",
    step: 8,
    rule: "default-deny",
  },
];

function expectedRule(n: Net, row: Row): string {
  const m = /^r(\d)$/.exec(row.rule);
  if (m !== null) return n.patient(row.rulePatient ?? 3).ruleIds[Number(m[1])] as string;
  if (row.rule === "deny-old") return n.uuid("deny-old");
  return row.rule;
}

describe("decide: the 8-step procedure", () => {
  for (const row of ROWS) {
    test(row.name, () => {
      const n = new Net();
      row.setup?.(n);
      const d = row.ask(n);
      assert.deepEqual(
        { effect: d.effect, step: d.step, rule: d.rule },
        { effect: row.effect, step: row.step, rule: expectedRule(n, row) },
        d.reason,
      );
      assert.equal(typeof d.reason, "string");
      assert.ok(d.reason.length > 0 && !d.reason.includes("undefined"), d.reason);
      if (row.warning !== undefined) assert.match((d.warnings ?? []).join(" "), row.warning);
      if (row.noWarnings === true) assert.equal(d.warnings, undefined);
    });
  }

  test("every step 1..8 is covered by the table", () => {
    assert.deepEqual([...new Set(ROWS.map((r) => r.step))].sort(), [1, 2, 3, 4, 5, 6, 7, 8]);
  });

  test("decisions are deterministic and do not touch state", () => {
    const n = new Net();
    const a = n.decide("clinician:trust-cardio", 3, "TREAT");
    const b = n.decide("clinician:trust-cardio", 3, "TREAT");
    assert.deepEqual(a, b);
  });

  test("a network whose genesis turns the custodian default off", () => {
    const n = new Net();
    // Rewrite the stored policy as a genesis with custodianTreat: false would have stored it.
    const net = n.state.get("network") as { policy: Record<string, unknown> };
    n.state.put("network", { ...net, policy: { ...net.policy, custodianTreat: false } });
    n.newPatient("bare");
    const d = n.decide("clinician:trust-cardio", n.uuid("patient:bare"), "TREAT");
    assert.equal(d.rule, "default-deny");
  });

  test("an unreadable request is refused, never thrown", () => {
    const n = new Net();
    const d = n.decide("clinician:gp", 3, "TREAT", { labels: null as unknown as string[] });
    assert.equal(d.effect, "deny");
  });
});
