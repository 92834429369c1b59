import { Type } from "typebox";
import { Compile } from "typebox/compile";
import type { DecisionRequest } from "../contract/index.ts";
import { UUID_PATTERN } from "../contract/schemas.ts";

const Hex32 = Type.String({ pattern: "^[0-9a-f]{64}$" });
const Code = Type.String({ minLength: 1, maxLength: 64, pattern: "^[A-Za-z0-9._:-]+$" });

const DecisionRequestSchema = Type.Object(
  {
    requester: Hex32,
    patient: Type.String({ minLength: 1, maxLength: 64, pattern: "^[A-Za-z0-9-]+$" }),
    purpose: Code,
    action: Type.Union([Type.Literal("read"), Type.Literal("write")]),
    resource: Type.Object(
      {
        type: Type.String({ minLength: 1, maxLength: 64, pattern: "^[A-Z][A-Za-z]+$" }),
        custodian: Type.String({ minLength: 1, maxLength: 64 }),
        labels: Type.Array(Code, { maxItems: 32 }),
        date: Type.Optional(Type.String({ maxLength: 40, pattern: "^\\d{4}(-\\d{2}(-\\d{2}([T ][0-9:.+Z-]*)?)?)?$" })),
        safeguarding: Type.Optional(Type.Boolean()),
      },
      { additionalProperties: false },
    ),
    at: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
    /** Research requests name the study they are made under (study grants match on it). */
    study: Type.Optional(Type.String({ pattern: UUID_PATTERN, maxLength: 36 })),
  },
  { additionalProperties: false },
);

const check = Compile(DecisionRequestSchema);

/** Validates a decision request from outside; `at` defaults to now, since the endpoint answers "may they, now?". */
export function parseDecisionRequest(
  input: unknown,
  now: () => number = Date.now,
): { ok: true; request: DecisionRequest } | { ok: false; error: string } {
  if (!check.Check(input)) {
    const first = [...check.Errors(input)].at(-1) ?? [...check.Errors(input)][0];
    const where = first?.instancePath ? first.instancePath.slice(1).replaceAll("/", ".") : "body";
    return { ok: false, error: `${where} ${first?.message ?? "is invalid"}` };
  }
  const body = input as Omit<DecisionRequest, "at"> & { at?: number };
  return { ok: true, request: { ...body, at: body.at ?? now() } };
}
