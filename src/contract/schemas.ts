// Payload schemas of every transaction type (typebox; additionalProperties false everywhere, bounded strings and
// arrays, id formats). `PAYLOAD_SCHEMAS` is the single source of truth for which types exist.

import { type Static, type TSchema, Type } from "typebox";
import { Compile } from "typebox/compile";
import { LABEL_CODES } from "./labels.ts";
import { ACTIONS, BREAKGLASS_BASES, ORG_KINDS, PROXY_BASES, PURPOSES, ROLES } from "./policy.ts";

const closed = { additionalProperties: false } as const;
/** The most entries an `access.log` or anchors a `record.anchor` tx may hold. */
export const MAX_LIST_ITEMS = 1000;

function oneOf<const T extends readonly string[]>(values: T) {
  return Type.Union(values.map((v) => Type.Literal(v)));
}

// ---- primitives -----------------------------------------------------------------------------------------------

export const HEX32_PATTERN = "^[0-9a-f]{64}$";
export const UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$";
export const ORG_ID_PATTERN = "^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$";
export const NONCE_PATTERN = "^[0-9a-f]{16,64}$";

/** Lowercase hex of 32 bytes: key ids, commitments, HMAC lookups. */
export const Hex32 = Type.String({ pattern: HEX32_PATTERN, minLength: 64, maxLength: 64 });
/** Random (v4) UUID, lowercase: members, patients (pseudonyms), teams, rules, proxies, flags, studies. */
export const Uuid = Type.String({ pattern: UUID_PATTERN, minLength: 36, maxLength: 36 });
/** Organisation id: lowercase slug (e.g. an ODS code or short name), 2–64 chars. */
export const OrgId = Type.String({ pattern: ORG_ID_PATTERN, minLength: 2, maxLength: 64 });
/** Milliseconds since the epoch. */
export const Millis = Type.Integer({ minimum: 0, maximum: 8_640_000_000_000_000 });
/** ISO calendar date YYYY-MM-DD. */
export const IsoDate = Type.String({ pattern: "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$", maxLength: 10 });
/** FHIR resource type name. */
export const ResourceType = Type.String({ pattern: "^[A-Z][A-Za-z]{1,63}$", maxLength: 64 });
/** FHIR logical id / version id. */
export const FhirId = Type.String({ pattern: "^[A-Za-z0-9.-]{1,64}$", maxLength: 64 });
/** Organisational text (org, network and team names). Never a person's name. */
export const Name = Type.String({ minLength: 1, maxLength: 120 });
/** Short free-text reason. Portals offer fixed phrases; no clinical detail. */
export const Reason = Type.String({ minLength: 1, maxLength: 280 });
/** A label code from the labels table. */
export const LabelCode = oneOf(LABEL_CODES);
/** Any security-label code a resource may carry (known or not). */
export const AnyLabelCode = Type.String({ pattern: "^[A-Za-z0-9_-]{1,32}$", maxLength: 32 });

export const Role = oneOf(ROLES);
export const Purpose = oneOf(PURPOSES);
export const Action = oneOf(ACTIONS);

// ---- shared objects -------------------------------------------------------------------------------------------

export const PolicyInput = Type.Object(
  {
    quorum: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    suspendQuorum: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    replayBackMs: Type.Optional(Type.Integer({ minimum: 60_000, maximum: 30 * 86_400_000 })),
    replayAheadMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 3_600_000 })),
    breakGlassWindowMs: Type.Optional(Type.Integer({ minimum: 60_000, maximum: 86_400_000 })),
    emergencyRecentDays: Type.Optional(Type.Integer({ minimum: 1, maximum: 3650 })),
    proxyEndAge: Type.Optional(Type.Integer({ minimum: 13, maximum: 16 })),
    proxyWarnDays: Type.Optional(Type.Integer({ minimum: 0, maximum: 365 })),
    custodianTreat: Type.Optional(Type.Boolean()),
    recoverWindowMs: Type.Optional(Type.Integer({ minimum: 3_600_000, maximum: 90 * 86_400_000 })),
    maxRulesPerPatient: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
  },
  closed,
);

export const AdminSpec = Type.Object({ member: Uuid, key: Hex32 }, closed);

export const OrgSpec = Type.Object(
  {
    id: OrgId,
    name: Name,
    kind: oneOf(ORG_KINDS),
    admins: Type.Array(AdminSpec, { minItems: 1, maxItems: 16 }),
    nodes: Type.Array(Hex32, { minItems: 0, maxItems: 16, uniqueItems: true }),
  },
  closed,
);

export const Grantee = Type.Union([
  Type.Object({ kind: Type.Literal("member"), id: Uuid }, closed),
  Type.Object({ kind: Type.Literal("team"), id: Uuid }, closed),
  Type.Object({ kind: Type.Literal("org"), id: OrgId }, closed),
  Type.Object({ kind: Type.Literal("role"), org: OrgId, role: Role }, closed),
  Type.Object({ kind: Type.Literal("study"), id: Uuid, org: OrgId }, closed),
  Type.Object({ kind: Type.Literal("any") }, closed),
]);

const PatientRef = { patient: Uuid };

// ---- payloads -------------------------------------------------------------------------------------------------

export const PAYLOAD_SCHEMAS = {
  "network.genesis": Type.Object(
    {
      network: Type.Object({ id: OrgId, name: Name }, closed),
      policy: Type.Optional(PolicyInput),
      orgs: Type.Array(OrgSpec, { minItems: 1, maxItems: 32 }),
    },
    closed,
  ),
  "org.propose": Type.Object({ org: OrgSpec }, closed),
  "org.approve": Type.Object({ org: OrgId }, closed),
  "org.suspend": Type.Object({ org: OrgId, action: oneOf(["suspend", "reinstate"] as const), reason: Reason }, closed),
  "key.rotate": Type.Object({ old: Hex32, new: Hex32 }, closed),
  "member.enrol": Type.Object({ member: Uuid, org: OrgId, role: Role, key: Hex32 }, closed),
  "member.revoke": Type.Object({ member: Uuid, reason: Type.Optional(Reason) }, closed),
  "team.set": Type.Object(
    {
      team: Uuid,
      org: OrgId,
      name: Name,
      members: Type.Array(Uuid, { maxItems: 500, uniqueItems: true }),
    },
    closed,
  ),
  "patient.register": Type.Object({ ...PatientRef, org: OrgId, key: Hex32, lookup: Type.Optional(Hex32) }, closed),
  "patient.recover": Type.Object({ ...PatientRef, key: Hex32 }, closed),
  "proxy.appoint": Type.Object(
    {
      ...PatientRef,
      proxy: Uuid,
      key: Hex32,
      basis: oneOf(PROXY_BASES),
      scope: oneOf(["view", "manage"] as const),
      labels: Type.Array(LabelCode, { minItems: 1, maxItems: 32, uniqueItems: true }),
      endsAt: Type.Optional(Millis),
    },
    closed,
  ),
  "proxy.end": Type.Object({ ...PatientRef, proxy: Uuid }, closed),
  "proxy.keep": Type.Object({ ...PatientRef, proxy: Uuid }, closed),
  "safeguarding.flag": Type.Object(
    {
      ...PatientRef,
      flag: Uuid,
      active: Type.Boolean(),
      freezeProxies: Type.Boolean(),
      hideFromPatient: Type.Boolean(),
    },
    closed,
  ),
  "consent.set": Type.Object(
    {
      ...PatientRef,
      rule: Uuid,
      effect: oneOf(["permit", "deny"] as const),
      grantee: Grantee,
      resourceTypes: Type.Array(ResourceType, { maxItems: 32, uniqueItems: true }),
      labels: Type.Array(LabelCode, { maxItems: 32, uniqueItems: true }),
      purposes: Type.Array(Purpose, { minItems: 1, maxItems: PURPOSES.length, uniqueItems: true }),
      actions: Type.Array(Action, { minItems: 1, maxItems: ACTIONS.length, uniqueItems: true }),
      period: Type.Optional(Type.Object({ start: Type.Optional(Millis), end: Type.Optional(Millis) }, closed)),
      dataPeriod: Type.Optional(Type.Object({ start: Type.Optional(IsoDate), end: Type.Optional(IsoDate) }, closed)),
    },
    closed,
  ),
  "consent.revoke": Type.Object({ ...PatientRef, rule: Uuid }, closed),
  "optout.set": Type.Object({ ...PatientRef, optout: Type.Boolean() }, closed),
  "record.anchor": Type.Object(
    {
      anchors: Type.Array(
        Type.Object(
          {
            custodian: OrgId,
            // Absent for records of no patient (Organization, Practitioner, Medication…): still anchored.
            patient: Type.Optional(Uuid),
            resourceType: ResourceType,
            resourceId: FhirId,
            version: FhirId,
            commitment: Hex32,
            labels: Type.Array(AnyLabelCode, { maxItems: 16, uniqueItems: true }),
            date: Type.Optional(IsoDate),
          },
          closed,
        ),
        { minItems: 1, maxItems: MAX_LIST_ITEMS },
      ),
    },
    closed,
  ),
  "record.erase": Type.Object(
    {
      custodian: OrgId,
      ...PatientRef,
      resources: Type.Array(Type.Object({ resourceType: ResourceType, resourceId: FhirId }, closed), {
        maxItems: 1000,
      }),
      erasePatient: Type.Boolean(),
    },
    closed,
  ),
  "access.log": Type.Object(
    {
      entries: Type.Array(
        Type.Object(
          {
            requester: Hex32,
            patient: Uuid,
            custodian: OrgId,
            resourceType: ResourceType,
            resourceId: Type.Optional(FhirId),
            purpose: Purpose,
            action: Action,
            decision: oneOf(["permit", "deny"] as const),
            step: Type.Integer({ minimum: 1, maximum: 8 }),
            rule: Type.String({ pattern: "^[a-z0-9:.-]{1,64}$", maxLength: 64 }),
            height: Type.Integer({ minimum: 0 }),
          },
          closed,
        ),
        { minItems: 1, maxItems: MAX_LIST_ITEMS },
      ),
    },
    closed,
  ),
  "breakglass.declare": Type.Object(
    {
      ...PatientRef,
      basis: oneOf(BREAKGLASS_BASES),
      reason: Reason,
      windowMs: Type.Optional(Type.Integer({ minimum: 60_000, maximum: 86_400_000 })),
    },
    closed,
  ),
} as const satisfies Record<string, TSchema>;

export type ImplementedType = keyof typeof PAYLOAD_SCHEMAS;
export type Payload<T extends ImplementedType> = Static<(typeof PAYLOAD_SCHEMAS)[T]>;

/** Research types: names reserved; applyTx answers `not-implemented` until the research layer lands. */
export const RESERVED_TX_TYPES = [
  "study.register",
  "study.approve",
  "study.enrol",
  "study.withdraw",
  "release.anchor",
  "aggregate.spend",
  "payment",
] as const;

export const IMPLEMENTED_TX_TYPES = Object.keys(PAYLOAD_SCHEMAS) as ImplementedType[];

/** Every on-ledger tx type, implemented first, then reserved. */
export const TX_TYPES: readonly string[] = Object.freeze([...IMPLEMENTED_TX_TYPES, ...RESERVED_TX_TYPES]);

const VALIDATORS = new Map<string, { Check(v: unknown): boolean }>();
for (const t of IMPLEMENTED_TX_TYPES) VALIDATORS.set(t, Compile(PAYLOAD_SCHEMAS[t]));

/** The JSON Schema of a tx type's payload, or undefined for unknown and reserved types. */
export function payloadSchemaOf(type: string): TSchema | undefined {
  return Object.hasOwn(PAYLOAD_SCHEMAS, type) ? PAYLOAD_SCHEMAS[type as ImplementedType] : undefined;
}

export function isImplementedType(type: string): type is ImplementedType {
  return VALIDATORS.has(type);
}

/** True when `payload` matches the type's schema exactly (unknown fields rejected). */
export function checkPayload(type: string, payload: unknown): boolean {
  const v = VALIDATORS.get(type);
  return v?.Check(payload) === true;
}

/**
 * The index of the first item of `items` that `type`'s schema refuses as the lone item of its `field` list, or -1
 * when it takes them all. Checks chunks as whole payloads (the contract's lists hold up to 1,000), one item at a time
 * only in a chunk that fails: batchers of the node's own txs check every entry before signing.
 */
export function firstRefusedItem(type: string, field: string, items: readonly unknown[]): number {
  for (let at = 0; at < items.length; at += MAX_LIST_ITEMS) {
    const chunk = items.slice(at, at + MAX_LIST_ITEMS);
    if (checkPayload(type, { [field]: chunk })) continue;
    const bad = chunk.findIndex((item) => !checkPayload(type, { [field]: [item] }));
    return at + (bad === -1 ? 0 : bad); // -1: each alone passes, together they do not (a list-wide rule)
  }
  return -1;
}

export const Envelope = Type.Object(
  {
    type: Type.String({ minLength: 1, maxLength: 64 }),
    payload: Type.Object({}, { additionalProperties: true }),
    signer: Hex32,
    nonce: Type.String({ pattern: NONCE_PATTERN, minLength: 16, maxLength: 64 }),
    createdAt: Millis,
    sig: Type.String({ maxLength: 200 }),
  },
  closed,
);
const ENVELOPE = Compile(Envelope);

/** True when `tx` has the envelope shape (the node has already checked the signature). */
export function checkEnvelope(tx: unknown): boolean {
  return ENVELOPE.Check(tx);
}
