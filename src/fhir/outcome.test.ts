import assert from "node:assert/strict";
import { test } from "node:test";
import {
  badRequest,
  conflict,
  forbidden,
  integrity,
  notAcceptable,
  notFound,
  type OperationOutcomeError,
  operationOutcome,
  outcomeOf,
  preconditionFailed,
  required,
  tooLarge,
  unauthorised,
} from "./outcome.ts";

test("each constructor carries the HTTP status and R4 issue code of its case", () => {
  const cases: [OperationOutcomeError, number, string][] = [
    [badRequest("bad", "birthdate"), 400, "invalid"],
    [required("Observation.status"), 400, "required"],
    [notFound(), 404, "not-found"],
    [conflict("version conflict"), 409, "conflict"],
    [preconditionFailed(), 412, "conflict"],
    [forbidden(), 403, "forbidden"],
    [unauthorised(), 401, "login"],
    [notAcceptable(), 406, "not-supported"],
    [tooLarge("too many entries", "Bundle.entry"), 413, "too-costly"],
    [integrity(), 500, "exception"],
  ];
  for (const [error, status, code] of cases) {
    assert.ok(error instanceof Error);
    assert.equal(error.status, status);
    assert.equal(error.issueCode, code);
    const outcome = error.toOutcome();
    assert.equal(outcome.resourceType, "OperationOutcome");
    assert.equal(outcome.issue.length, 1);
    assert.equal(outcome.issue[0]?.code, code);
    assert.equal(outcome.issue[0]?.severity, status >= 500 ? "fatal" : "error");
  }
});

test("the expression names the element or parameter, and within() places it under a bundle entry", () => {
  const e = required("Observation.status");
  assert.deepEqual(e.toOutcome().issue[0]?.expression, ["Observation.status"]);
  assert.equal(e.within("Bundle.entry[3].resource").expression, "Bundle.entry[3].resource.status");
  assert.equal(
    badRequest("x", "Observation").within("Bundle.entry[0].resource").expression,
    "Bundle.entry[0].resource",
  );
  assert.equal(badRequest("x").within("Bundle.entry[1]").expression, "Bundle.entry[1]");
  assert.equal(badRequest("no expression").toOutcome().issue[0]?.expression, undefined);
});

test("a hidden and a missing resource get the same 404 body", () => {
  assert.deepEqual(notFound("Patient/abc").toOutcome(), notFound("Patient/abc").toOutcome());
  assert.equal(notFound().toOutcome().issue[0]?.diagnostics, "not found");
});

test("outcomeOf keeps our errors and hides anything else behind a generic 500", () => {
  const ours = outcomeOf(conflict("version 3 is not current"));
  assert.equal(ours.status, 409);
  assert.equal(ours.body.issue[0]?.diagnostics, "version 3 is not current");
  const secret = new Error("SQLITE_CORRUPT at /var/lib/careledger/vault.db for patient Jane Smith");
  const hidden = outcomeOf(secret);
  assert.equal(hidden.status, 500);
  assert.equal(hidden.body.issue[0]?.diagnostics, "internal error");
  assert.doesNotMatch(JSON.stringify(hidden.body), /Jane|SQLITE|vault/);
  assert.equal(outcomeOf("a string").status, 500);
});

test("operationOutcome builds several issues", () => {
  const o = operationOutcome([
    { severity: "warning", code: "processing", diagnostics: "kept under Art. 17(3)" },
    { severity: "error", code: "value", expression: ["Patient.birthDate"] },
  ]);
  assert.equal(o.issue.length, 2);
  assert.deepEqual(o.issue[1], { severity: "error", code: "value", expression: ["Patient.birthDate"] });
});
