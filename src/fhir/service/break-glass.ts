// `POST /fhir/Patient/:id/$break-glass` — emergency access, declared by a clinician on the ledger with a reason and a
// basis (`breakglass.declare`, signed with the clinician's own ledger key, as Consent writes are signed by the patient).
// Once committed, the clinician's ETREAT reads of the emergency set (allergies, medications, conditions,
// immunisations, recent observations) are permitted by decision step 3 for the window, minus sensitive labels the
// patient has not released for emergencies; the declaration itself is in the ledger for the patient to see.
//
// Body: a Parameters resource with `reason` (valueString, ≤ 280 characters, no clinical detail), `basis` (valueCode:
// explicit-verbal-consent | already-treating | emergency-no-capacity), optional `windowMinutes` (valueInteger; the
// network's maximum, 4 h by default, when absent) and `signedTx` (valueString: the signed breakglass.declare tx as
// JSON, whose payload must say exactly the same). Parameters has no extensions, hence a parameter for the tx.
// Answer: an information OperationOutcome giving the end of the window.

import type { OperationOutcome } from "@medplum/fhirtypes";
import { BREAKGLASS_BASES } from "../../contract/policy.ts";
import { read } from "../../contract/state.ts";
import { canonicalJson } from "../../ledger/canonical.ts";
import { badRequest, forbidden, OperationOutcomeError, operationOutcome } from "../outcome.ts";
import { signedTxFromJson, submitSigned } from "./consent-resource.ts";
import type { FhirHandler } from "./context.ts";

const ALLOWED = new Set(["reason", "basis", "windowMinutes", "signedTx"]);

interface Declared {
  reason?: string;
  basis?: string;
  windowMinutes?: number;
  signedTx?: string;
}

function parametersOf(body: unknown): Declared {
  if (typeof body !== "object" || body === null || (body as { resourceType?: unknown }).resourceType !== "Parameters") {
    throw badRequest("the body must be a Parameters resource", "resourceType", "structure");
  }
  const list = (body as { parameter?: unknown }).parameter;
  if (!Array.isArray(list)) throw badRequest("reason and basis are required", "Parameters.parameter", "required");
  const out: Declared = {};
  for (const [i, p] of list.entries()) {
    const at = `Parameters.parameter[${i}]`;
    const name = (p as { name?: unknown })?.name;
    if (typeof name !== "string" || !ALLOWED.has(name)) {
      throw badRequest("expected reason, basis, windowMinutes or signedTx", `${at}.name`, "value");
    }
    if (Object.hasOwn(out, name)) throw badRequest("given twice", `${at}.name`, "value");
    const v = p as { valueString?: unknown; valueCode?: unknown; valueInteger?: unknown };
    switch (name) {
      case "reason":
      case "signedTx":
        if (typeof v.valueString !== "string" || v.valueString.length === 0) {
          throw badRequest("needs valueString", `${at}.valueString`, "required");
        }
        out[name] = v.valueString;
        break;
      case "basis":
        if (typeof v.valueCode !== "string") throw badRequest("needs valueCode", `${at}.valueCode`, "required");
        out.basis = v.valueCode;
        break;
      case "windowMinutes":
        if (!Number.isSafeInteger(v.valueInteger) || (v.valueInteger as number) < 1) {
          throw badRequest("needs a positive valueInteger", `${at}.valueInteger`, "value");
        }
        out.windowMinutes = v.valueInteger as number;
        break;
    }
  }
  if (out.reason === undefined) throw badRequest("reason is required", "Parameters.parameter", "required");
  if (out.reason.length > 280) throw badRequest("at most 280 characters", "reason", "too-long");
  if (out.basis === undefined) throw badRequest("basis is required", "Parameters.parameter", "required");
  if (!(BREAKGLASS_BASES as readonly string[]).includes(out.basis)) {
    throw badRequest(`basis must be one of ${BREAKGLASS_BASES.join(", ")}`, "basis", "value");
  }
  return out;
}

/** The handler. Only a clinician (member with role clinician) may declare; the contract checks it again. */
export const breakGlass: FhirHandler = async (ctx, req) => {
  const patient = req.params.id ?? "";
  const principal = req.principal;
  const identity = principal.identity;
  if (identity.kind !== "member" || identity.role !== "clinician") {
    throw forbidden("break-glass is declared by a clinician");
  }
  const declared = parametersOf(req.body);
  const payload: Record<string, unknown> = { patient, basis: declared.basis, reason: declared.reason };
  if (declared.windowMinutes !== undefined) payload.windowMs = declared.windowMinutes * 60_000;
  if (declared.signedTx === undefined) {
    throw badRequest(
      "break-glass is a breakglass.declare tx signed with the clinician's own ledger key: sign breakglass.declare " +
        `with payload ${canonicalJson(payload)} and send it as JSON in the parameter signedTx (valueString)`,
      "Parameters.parameter",
      "required",
    );
  }
  const signed = signedTxFromJson(declared.signedTx, principal, ["breakglass.declare"], "signedTx");
  if (canonicalJson(signed.tx.payload) !== canonicalJson(payload)) {
    throw badRequest("the signed tx does not say what the parameters say (patient, basis, reason, window)", "signedTx");
  }
  const result = await submitSigned(ctx, signed);
  const record = (read.breakglass(ctx.node.store.state, patient) ?? []).find((b) => b.id === result.id);
  if (record === undefined) {
    throw new OperationOutcomeError(500, "exception", "the declaration is not on the ledger after commit");
  }
  const until = new Date(record.until).toISOString();
  const body: OperationOutcome = operationOutcome([
    {
      severity: "information",
      code: "processing",
      diagnostics:
        `break-glass declared for Patient/${patient} until ${until} (ledger tx ${result.id}): reads with purpose ` +
        "ETREAT of allergies, medications, conditions, immunisations and recent observations are permitted until " +
        "then, except sensitive records the patient has not released for emergencies; the patient and the " +
        "organisation's privacy officer are alerted",
    },
  ]);
  return { status: 200, body, headers: { "x-careledger-break-glass-until": until } };
};
