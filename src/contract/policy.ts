// Fixed tables of the contract (one place each) and the network policy with its defaults.

export const ROLES = ["clinician", "nurse", "researcher", "analyst", "admin"] as const;
export type Role = (typeof ROLES)[number];

/**
 * v3 PurposeOfUse codes the contract knows. `PATRQT` (patient requested) is what patients and their proxies act
 * under: no role may use it (decision step 2), so it only ever permits through step 1 (own record, proxy); it is
 * listed so that their reads can be written to `access.log`.
 */
export const PURPOSES = ["TREAT", "ETREAT", "HRESCH", "CLINTRCH", "HMARKT", "HOPERAT", "PUBHLTH", "PATRQT"] as const;
export type Purpose = (typeof PURPOSES)[number];

export const ACTIONS = ["read", "write"] as const;
export type Action = (typeof ACTIONS)[number];

/**
 * Which purposes and actions each role may use (decision step 2). Admins run the organisation and its node; they
 * get no clinical access. Researchers and analysts only ever read.
 */
export const ROLE_PERMISSIONS: Readonly<Record<Role, { purposes: readonly Purpose[]; actions: readonly Action[] }>> = {
  clinician: { purposes: ["TREAT", "ETREAT"], actions: ["read", "write"] },
  nurse: { purposes: ["TREAT", "ETREAT"], actions: ["read", "write"] },
  researcher: { purposes: ["HRESCH", "CLINTRCH"], actions: ["read"] },
  analyst: { purposes: ["HMARKT", "HOPERAT", "PUBHLTH"], actions: ["read"] },
  admin: { purposes: [], actions: [] },
};

/** Purposes covered by the national data opt-out (research and planning; not direct care, not commercial). */
export const OPTOUT_PURPOSES: readonly Purpose[] = ["HRESCH", "CLINTRCH", "HOPERAT", "PUBHLTH"];

/** Resource types released by break-glass (decision step 3): allergies, medications, conditions, immunisations,
 * recent observations. */
export const EMERGENCY_RESOURCE_TYPES: readonly string[] = [
  "AllergyIntolerance",
  "MedicationStatement",
  "MedicationRequest",
  "MedicationAdministration",
  "Condition",
  "Immunization",
  "Observation",
];
/** Types in the emergency set only when their clinical date is within `emergencyRecentDays`. */
export const EMERGENCY_RECENT_ONLY: readonly string[] = ["Observation"];

/** Break-glass bases (DESIGN, step 3). */
export const BREAKGLASS_BASES = ["explicit-verbal-consent", "already-treating", "emergency-no-capacity"] as const;

/** Proxy bases (DAPB3051 and DESIGN). `parental-responsibility` requires `endsAt`. */
export const PROXY_BASES = [
  "parental-responsibility",
  "lasting-power-of-attorney",
  "court-deputy",
  "carer-nominated",
  "best-interests",
] as const;

export const ORG_KINDS = ["gp", "hospital", "research", "commercial", "other"] as const;

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** The network policy as stored (every field filled). Set in genesis; fields omitted there take these defaults. */
export interface NetworkPolicy {
  /** Distinct active orgs whose admins must approve a joining org (capped at the number of active orgs). */
  quorum: number;
  /** Distinct active orgs (other than the target) whose admins must vote to suspend or reinstate an org. */
  suspendQuorum: number;
  /** A tx's createdAt must lie within [time - replayBackMs, time + replayAheadMs] of the block time. */
  replayBackMs: number;
  replayAheadMs: number;
  /** Default (and maximum) break-glass window. */
  breakGlassWindowMs: number;
  /** An Observation counts as "recent" for break-glass when its clinical date is within this many days. */
  emergencyRecentDays: number;
  /** Age at which a parental proxy ends (16, or 13 where the network chooses); informs how clients compute endsAt. */
  proxyEndAge: number;
  /** decide() warns this many days before a parental proxy ends. */
  proxyWarnDays: number;
  /** Step 7: the custodian's own clinicians and nurses may read/write what it holds for TREAT. */
  custodianTreat: boolean;
  /** Window in which the second org must confirm a patient.recover. */
  recoverWindowMs: number;
  /** Maximum consent rules a patient may hold at once. */
  maxRulesPerPatient: number;
}

export const DEFAULT_POLICY: Readonly<NetworkPolicy> = {
  quorum: 2,
  suspendQuorum: 2,
  replayBackMs: DAY,
  replayAheadMs: 5 * 60_000,
  breakGlassWindowMs: 4 * HOUR,
  emergencyRecentDays: 365,
  proxyEndAge: 16,
  proxyWarnDays: 30,
  custodianTreat: true,
  recoverWindowMs: 7 * DAY,
  maxRulesPerPatient: 64,
};

export function withDefaults(p: Partial<NetworkPolicy> | undefined): NetworkPolicy {
  const out: NetworkPolicy = { ...DEFAULT_POLICY };
  if (p === undefined) return out;
  for (const k of Object.keys(DEFAULT_POLICY) as (keyof NetworkPolicy)[]) {
    const v = p[k];
    if (v !== undefined) (out as unknown as Record<string, unknown>)[k] = v;
  }
  return out;
}

export function roleMayUse(role: string, purpose: string, action: string): boolean {
  if (!Object.hasOwn(ROLE_PERMISSIONS, role)) return false;
  const p = ROLE_PERMISSIONS[role as Role];
  return (p.purposes as readonly string[]).includes(purpose) && (p.actions as readonly string[]).includes(action);
}
