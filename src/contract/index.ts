// Public surface of the contract layer: a pure, deterministic state machine (applyTx) and consent decision (decide).

export { type ApplyContext, applyTx, checkTx, ruleOfConsentSet, TX_CODES, type TxCode } from "./apply.ts";
export { type Decision, type DecisionRequest, decide, POLICY_RULES } from "./decide.ts";
export {
  codeOfLabel,
  isSensitive,
  LABEL_CODES,
  LABEL_IDS,
  LABELS,
  type LabelId,
  type LabelInfo,
  labelInfo,
  labelOfCode,
  labelsOfCodes,
  SENSITIVE_LABELS,
} from "./labels.ts";
export {
  ACTIONS,
  type Action,
  BREAKGLASS_BASES,
  DEFAULT_POLICY,
  EMERGENCY_RESOURCE_TYPES,
  type NetworkPolicy,
  OPTOUT_PURPOSES,
  PROXY_BASES,
  PURPOSES,
  type Purpose,
  ROLE_PERMISSIONS,
  ROLES,
  type Role,
  roleMayUse,
} from "./policy.ts";
export {
  checkPayload,
  IMPLEMENTED_TX_TYPES,
  type ImplementedType,
  PAYLOAD_SCHEMAS,
  type Payload,
  payloadSchemaOf,
  RESERVED_TX_TYPES,
  TX_TYPES,
} from "./schemas.ts";
export {
  type AnchorRec,
  type BreakGlassRec,
  type FlagRec,
  type Grantee,
  K as STATE_KEYS,
  type KeyRec,
  type MemberRec,
  MemoryState,
  type NetworkRec,
  type OrgRec,
  type PatientRec,
  type ProxyRec,
  type ResourceRec,
  type RuleRec,
  read as readState,
  type StateReader,
  type StateStore,
  type TeamRec,
} from "./state.ts";
