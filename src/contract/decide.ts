// decide: DESIGN's 8-step consent procedure. The first step that applies wins; every decision names the rule (a
// consent rule id or a stable policy name) that decided it and says why in one sentence.
//
// Cost per call: a fixed handful of Map gets (patient, key, member, org, network, rules, and breakglass for ETREAT)
// plus one pass over the patient's own rules (≤ maxRulesPerPatient). Grantees are matched by string key against
// the requester's few keys (member, teams, org, role-in-org, study, any), never by scanning other patients.

import type { KeyId } from "../ledger/types.ts";
import { isSensitive, type LabelId, labelInfo, labelsOfCodes } from "./labels.ts";
import {
  DEFAULT_POLICY,
  EMERGENCY_RECENT_ONLY,
  EMERGENCY_RESOURCE_TYPES,
  type NetworkPolicy,
  OPTOUT_PURPOSES,
  roleMayUse,
} from "./policy.ts";
import { type PatientRec, type ProxyRec, type RuleRec, read, type StateReader } from "./state.ts";

export interface DecisionRequest {
  requester: KeyId;
  /** Patient pseudonym. */
  patient: string;
  /** v3 PurposeOfUse code. */
  purpose: string;
  action: "read" | "write";
  resource: {
    type: string;
    /** Org id of the custodian holding the resource. */
    custodian: string;
    /** Security-label codes on the resource (e.g. `N`, `PSY`, `HIV`). */
    labels: string[];
    /** Clinical date, ISO (date or date-time). */
    date?: string;
    /** The entry is under a safeguarding flag. */
    safeguarding?: boolean;
  };
  /** Time of the request, ms. */
  at: number;
  /** Research requests: the named study the requester works under (matches study grants of the requester's org). */
  study?: string;
}

export interface Decision {
  effect: "permit" | "deny";
  /** 1..8, the step of DESIGN's procedure that decided. */
  step: number;
  /** Id of the deciding consent rule, or a stable policy name. */
  rule: string;
  /** One sentence for the portal. */
  reason: string;
  warnings?: string[];
}

/** Stable policy names `Decision.rule` may take besides consent rule ids. */
export const POLICY_RULES = [
  "own-record",
  "proxy",
  "safeguarding",
  "unknown-patient",
  "unknown-requester",
  "revoked-requester",
  "suspended-org",
  "erased-patient",
  "purpose-not-allowed",
  "break-glass",
  "deny:sensitive-label",
  "deny:opt-out",
  "default:custodian-treat",
  "default-deny",
  "invalid-request",
] as const;

const DAY = 86_400_000;

function permit(step: number, rule: string, reason: string, warnings?: string[]): Decision {
  return warnings === undefined || warnings.length === 0
    ? { effect: "permit", step, rule, reason }
    : { effect: "permit", step, rule, reason, warnings };
}

function deny(step: number, rule: string, reason: string): Decision {
  return { effect: "deny", step, rule, reason };
}

function isoDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

function titleOf(l: LabelId): string {
  return labelInfo(l)?.title.toLowerCase() ?? l;
}

/** Decides a request against the state. Never throws; a request it cannot read is denied (step 8). */
export function decide(state: StateReader, req: DecisionRequest): Decision {
  try {
    return run(state, req);
  } catch {
    return deny(8, "invalid-request", "The request could not be understood, so it is refused.");
  }
}

function run(state: StateReader, req: DecisionRequest): Decision {
  const res = req.resource;
  const policy = read.network(state)?.policy ?? DEFAULT_POLICY;
  const pat = read.patient(state, req.patient);
  if (pat === undefined) return deny(2, "unknown-patient", "This patient is not registered on the network.");
  const resLabels = labelsOfCodes(res.labels);

  // 1. The patient themself; an active proxy within its labels.
  if (req.requester === pat.key) {
    if (res.safeguarding === true && pat.safeguarding.some((f) => f.hideFromPatient)) {
      return deny(1, "safeguarding", "This entry is under a safeguarding flag and is withheld for now.");
    }
    return permit(1, "own-record", "Patients may always see their own record.");
  }
  let proxyDenial: Decision | undefined;
  for (const proxy of pat.proxies) {
    if (proxy.key !== req.requester) continue;
    const d = proxyDecision(pat, proxy, req, resLabels, policy);
    if (d.effect === "permit") return d;
    proxyDenial = d;
  }

  // 2. Requester or org suspended/revoked, patient erased, purpose not allowed for the role.
  const kr = read.key(state, req.requester);
  if (kr === undefined || kr.kind !== "member") {
    return proxyDenial ?? deny(2, "unknown-requester", "The requester is not a practitioner on the network.");
  }
  const member = read.member(state, kr.member);
  if (kr.status !== "active" || member === undefined || member.status !== "active") {
    return proxyDenial ?? deny(2, "revoked-requester", "The requester's access has been revoked.");
  }
  const org = read.org(state, member.org);
  if (org === undefined || org.status !== "active") {
    return deny(2, "suspended-org", "The requester's organisation is suspended from the network.");
  }
  if (pat.status === "erased") return deny(2, "erased-patient", "This patient's records have been erased.");
  if (!roleMayUse(member.role, req.purpose, req.action)) {
    return deny(2, "purpose-not-allowed", `A ${member.role} may not ${req.action} records for ${req.purpose}.`);
  }

  const ids = [`m:${member.id}`, `o:${member.org}`, `r:${member.org}:${member.role}`, "*"];
  for (const t of member.teams) ids.push(`t:${t}`);
  if (typeof req.study === "string") ids.push(`s:${req.study}:${member.org}`);
  const rules = read.rules(state, pat.id) ?? [];
  const date = typeof res.date === "string" ? res.date.slice(0, 10) : undefined;

  // 3. Break-glass by this clinician for this patient, ETREAT, within its window: the emergency set, minus
  //    sensitive labels the patient has not released for emergencies (an ETREAT permit naming the label).
  if (req.purpose === "ETREAT" && req.action === "read") {
    const bg = read
      .breakglass(state, pat.id)
      ?.find((b) => b.member === member.id && req.at >= b.from && req.at < b.until);
    if (bg !== undefined && inEmergencySet(res.type, date, req.at, policy)) {
      let released = true;
      for (const l of resLabels) {
        if (!isSensitive(l)) continue;
        if (
          !rules.some((r) => r.effect === "permit" && r.labels.includes(l) && matches(r, ids, req, resLabels, date))
        ) {
          released = false;
          break;
        }
      }
      if (released) {
        return permit(
          3,
          "break-glass",
          `Emergency access declared (${bg.basis}) until ${new Date(bg.until).toISOString()}.`,
          [`Break-glass access: the patient and the privacy officer of ${org.name} are alerted.`],
        );
      }
    }
  }

  // 4–6. The patient's own rules.
  const permits: RuleRec[] = [];
  for (const r of rules) {
    if (!matches(r, ids, req, resLabels, date)) continue;
    if (r.effect === "deny") return deny(4, r.id, "The patient has refused this access.");
    permits.push(r);
  }
  for (const l of resLabels) {
    if (isSensitive(l) && !permits.some((r) => r.labels.includes(l))) {
      return deny(
        5,
        "deny:sensitive-label",
        `This record is labelled ${titleOf(l)} and no permission from the patient names that label.`,
      );
    }
  }
  const optoutBlocks = pat.optout && (OPTOUT_PURPOSES as readonly string[]).includes(req.purpose);
  for (const r of permits) {
    if (optoutBlocks && r.grantee.kind !== "study") continue;
    return permit(6, r.id, "The patient has given permission for this access.");
  }

  // 7. Network default policy.
  if (optoutBlocks) {
    return deny(
      7,
      "deny:opt-out",
      "The patient has opted out of research and planning; only an enrolment in a named study applies.",
    );
  }
  if (
    policy.custodianTreat &&
    req.purpose === "TREAT" &&
    member.org === res.custodian &&
    (member.role === "clinician" || member.role === "nurse")
  ) {
    return permit(7, "default:custodian-treat", `Clinicians at ${org.name} may use the records it holds for care.`);
  }

  // 8.
  return deny(8, "default-deny", "No permission from the patient covers this request.");
}

function matches(
  r: RuleRec,
  ids: readonly string[],
  req: DecisionRequest,
  resLabels: readonly LabelId[],
  date: string | undefined,
): boolean {
  if (!ids.includes(r.gk)) return false;
  if (r.start !== undefined && req.at < r.start) return false;
  if (r.end !== undefined && req.at >= r.end) return false;
  if (!r.purposes.includes(req.purpose) || !r.actions.includes(req.action)) return false;
  if (r.types.length > 0 && !r.types.includes(req.resource.type)) return false;
  if (r.labels.length > 0) {
    let any = false;
    for (const l of resLabels) {
      if (r.labels.includes(l)) {
        any = true;
        break;
      }
    }
    if (!any) return false;
  }
  if (r.dataStart !== undefined || r.dataEnd !== undefined) {
    // An undated record is outside a permit's dataPeriod but inside a deny's (refuse when unsure).
    if (date === undefined) return r.effect === "deny";
    if (r.dataStart !== undefined && date < r.dataStart) return false;
    if (r.dataEnd !== undefined && date > r.dataEnd) return false;
  }
  return true;
}

function inEmergencySet(type: string, date: string | undefined, at: number, policy: NetworkPolicy): boolean {
  if (!EMERGENCY_RESOURCE_TYPES.includes(type)) return false;
  if (!EMERGENCY_RECENT_ONLY.includes(type)) return true;
  if (date === undefined) return false;
  const t = Date.parse(date);
  return Number.isFinite(t) && at - t <= policy.emergencyRecentDays * DAY;
}

function proxyDecision(
  pat: PatientRec,
  proxy: ProxyRec,
  req: DecisionRequest,
  resLabels: readonly LabelId[],
  policy: NetworkPolicy,
): Decision {
  if (req.resource.safeguarding === true) {
    return deny(1, "safeguarding", "Entries under a safeguarding flag are not shown to proxies.");
  }
  if (pat.safeguarding.some((f) => f.freezeProxies)) {
    return deny(1, "safeguarding", "Proxy access is paused while a safeguarding review is open.");
  }
  const ending = proxy.endsAt !== undefined && !proxy.kept;
  if (ending && req.at >= (proxy.endsAt as number)) {
    return deny(
      1,
      "proxy",
      `Parental proxy access ended on ${isoDay(proxy.endsAt as number)}; the young person may choose to keep it.`,
    );
  }
  if (req.action === "write" && proxy.scope !== "manage") {
    return deny(1, "proxy", "A proxy with view access may not change the record.");
  }
  for (const l of resLabels) {
    if (!proxy.labels.includes(l)) return deny(1, "proxy", `This proxy may not see ${titleOf(l)} records.`);
  }
  const warnings: string[] = [];
  if (ending && (proxy.endsAt as number) - req.at <= policy.proxyWarnDays * DAY) {
    warnings.push(`Proxy access ends on ${isoDay(proxy.endsAt as number)} unless the young person chooses to keep it.`);
  }
  return permit(1, "proxy", `Proxy (${proxy.basis}) with ${proxy.scope} access.`, warnings);
}
