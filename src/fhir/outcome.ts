// The one error type of the FHIR layer and the OperationOutcome it becomes on the wire. Handlers throw
// `OperationOutcomeError`; the HTTP layer turns any error into `{status, body}` with `outcomeOf`. Messages name the
// element or parameter at fault (FHIRPath-style) but never carry stored values: what a message may echo is only what
// the caller itself sent (e.g. a parameter name), so an error can never leak someone else's data.

import type { OperationOutcome } from "@medplum/fhirtypes";

/** R4 IssueType codes (http://hl7.org/fhir/R4/valueset-issue-type.html) that this server uses. */
export type IssueCode =
  | "invalid"
  | "structure"
  | "required"
  | "value"
  | "invariant"
  | "security"
  | "login"
  | "forbidden"
  | "processing"
  | "not-supported"
  | "duplicate"
  | "not-found"
  | "deleted"
  | "too-long"
  | "too-costly"
  | "conflict"
  | "exception"
  | "throttled"
  | "transient";

export type IssueSeverity = "fatal" | "error" | "warning" | "information";

export interface Issue {
  severity: IssueSeverity;
  code: IssueCode;
  diagnostics?: string;
  /** FHIRPath of the element at fault (`Observation.status`, `Bundle.entry[3].resource.subject`) or a parameter name. */
  expression?: string[];
}

export class OperationOutcomeError extends Error {
  readonly status: number;
  readonly issueCode: IssueCode;
  readonly diagnostics: string;
  readonly expression: string | undefined;

  constructor(status: number, issueCode: IssueCode, diagnostics: string, expression?: string) {
    super(expression === undefined ? diagnostics : `${expression}: ${diagnostics}`);
    this.name = "OperationOutcomeError";
    this.status = status;
    this.issueCode = issueCode;
    this.diagnostics = diagnostics;
    this.expression = expression;
  }

  /** The same error with its expression placed under `prefix` (e.g. a bundle entry's path). */
  within(prefix: string): OperationOutcomeError {
    const expression = this.expression === undefined ? prefix : joinExpression(prefix, this.expression);
    return new OperationOutcomeError(this.status, this.issueCode, this.diagnostics, expression);
  }

  toOutcome(): OperationOutcome {
    return operationOutcome([
      {
        severity: this.status >= 500 ? "fatal" : "error",
        code: this.issueCode,
        diagnostics: this.diagnostics,
        ...(this.expression === undefined ? {} : { expression: [this.expression] }),
      },
    ]);
  }
}

/** `Bundle.entry[2].resource` + `Observation.status` → `Bundle.entry[2].resource.status` (the type name is the root). */
function joinExpression(prefix: string, expression: string): string {
  const dot = expression.indexOf(".");
  if (dot > 0 && /^[A-Z]/.test(expression)) return `${prefix}${expression.slice(dot)}`;
  if (/^[A-Z][A-Za-z]*$/.test(expression)) return prefix;
  return `${prefix}.${expression}`;
}

export function operationOutcome(issues: readonly Issue[]): OperationOutcome {
  return {
    resourceType: "OperationOutcome",
    issue: issues.map((i) => ({
      severity: i.severity,
      code: i.code,
      ...(i.diagnostics === undefined ? {} : { diagnostics: i.diagnostics }),
      ...(i.expression === undefined ? {} : { expression: [...i.expression] }),
    })),
  };
}

/** An informational outcome (e.g. the body of a successful DELETE or an erasure note). */
export function informationOutcome(diagnostics: string): OperationOutcome {
  return operationOutcome([{ severity: "information", code: "processing", diagnostics }]);
}

// --- constructors for the common cases -------------------------------------------------------------------------

/** 400: the request or resource is malformed. `expression` names the parameter or element. */
export function badRequest(
  diagnostics: string,
  expression?: string,
  code: IssueCode = "invalid",
): OperationOutcomeError {
  return new OperationOutcomeError(400, code, diagnostics, expression);
}

/** 400 `required`: a mandatory element is missing. */
export function required(expression: string): OperationOutcomeError {
  return new OperationOutcomeError(400, "required", "required element is missing", expression);
}

/** 400 `not-supported`: a well-formed request this server does not implement (a modifier, a method, a type). */
export function notSupported(diagnostics: string, expression?: string, status = 400): OperationOutcomeError {
  return new OperationOutcomeError(status, "not-supported", diagnostics, expression);
}

/**
 * 404. The message is fixed so that a resource hidden by consent and one that does not exist answer identically;
 * the caller may pass the type/id it asked for (it sent them, so echoing them leaks nothing).
 */
export function notFound(what?: string): OperationOutcomeError {
  return new OperationOutcomeError(404, "not-found", what === undefined ? "not found" : `${what} not found`);
}

/** 410: the resource was deleted or erased. */
export function gone(what?: string): OperationOutcomeError {
  return new OperationOutcomeError(410, "deleted", what === undefined ? "deleted" : `${what} was deleted`);
}

/** 409: a version conflict or a duplicate. */
export function conflict(diagnostics: string, expression?: string): OperationOutcomeError {
  return new OperationOutcomeError(409, "conflict", diagnostics, expression);
}

/** 412: `If-Match` names a version that is no longer current. */
export function preconditionFailed(diagnostics = "version does not match If-Match"): OperationOutcomeError {
  return new OperationOutcomeError(412, "conflict", diagnostics, "If-Match");
}

/** 403: the requester is known to see that the resource exists but may not have it. */
export function forbidden(diagnostics = "access denied"): OperationOutcomeError {
  return new OperationOutcomeError(403, "forbidden", diagnostics);
}

/** 401: no token, or a token that is expired, tampered with or not for us. The reason stays generic on purpose. */
export function unauthorised(diagnostics = "authentication required"): OperationOutcomeError {
  return new OperationOutcomeError(401, "login", diagnostics);
}

/** 406: a format other than FHIR JSON was asked for. */
export function notAcceptable(diagnostics = "only application/fhir+json is supported"): OperationOutcomeError {
  return new OperationOutcomeError(406, "not-supported", diagnostics, "_format");
}

/** 415: the request body is not FHIR JSON. */
export function unsupportedMediaType(diagnostics = "send application/fhir+json"): OperationOutcomeError {
  return new OperationOutcomeError(415, "not-supported", diagnostics);
}

/** 413: the body, bundle or resource is over a limit. */
export function tooLarge(diagnostics: string, expression?: string): OperationOutcomeError {
  return new OperationOutcomeError(413, "too-costly", diagnostics, expression);
}

/** 405: the interaction is not offered on this endpoint. */
export function methodNotAllowed(diagnostics = "interaction not supported here"): OperationOutcomeError {
  return new OperationOutcomeError(405, "not-supported", diagnostics);
}

/** 500: a stored record failed its integrity check (altered behind the node's back); it is not served. */
export function integrity(diagnostics = "stored record failed its integrity check"): OperationOutcomeError {
  return new OperationOutcomeError(500, "exception", diagnostics);
}

/** 500 with a fixed message: internal detail never reaches the client. */
export function internalError(): OperationOutcomeError {
  return new OperationOutcomeError(500, "exception", "internal error");
}

/**
 * What the HTTP layer sends for any thrown value: an `OperationOutcomeError` as itself, anything else as a generic
 * 500 (its message may hold internals, so it is not sent).
 */
export function outcomeOf(error: unknown): { status: number; body: OperationOutcome } {
  const e = error instanceof OperationOutcomeError ? error : internalError();
  return { status: e.status, body: e.toOutcome() };
}

/**
 * What to answer for an error that reached a route's error handler: the framework's own refusals (body too large,
 * wrong media type, an unreadable request — before any handler ran) become the matching OperationOutcome; an
 * `OperationOutcomeError` stays as it is; anything else is reported through `onUnexpected` (which must log only the
 * kind of error: its message may quote a record) and becomes a 500.
 */
export function requestErrorOutcome(
  error: unknown,
  options: { maxBodyBytes: number; onUnexpected: (kind: { error?: string; code?: string }) => void },
): unknown {
  const framework = error as { statusCode?: number; code?: string };
  if (framework.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
    return tooLarge(`the body is larger than ${options.maxBodyBytes} bytes`);
  }
  if (framework.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") return unsupportedMediaType();
  if (error instanceof OperationOutcomeError) return error;
  if (typeof framework.statusCode === "number" && framework.statusCode >= 400 && framework.statusCode < 500) {
    return new OperationOutcomeError(framework.statusCode, "invalid", "the request could not be read");
  }
  options.onUnexpected({ error: (error as Error)?.name, code: framework.code });
  return error;
}
