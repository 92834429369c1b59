import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  formatNhsNumber,
  isTestNhsNumber,
  isValidNhsNumber,
  NHS_NUMBER_SYSTEM,
  nhsCheckDigit,
  parseNhsNumber,
  testNhsNumber,
  testNhsNumberCount,
} from "./nhs-number.ts";

/** Modulus 11 written out the long way, as the NHS Data Dictionary states it, to check the fast code against. */
function referenceValid(s: string): boolean {
  if (!/^\d{10}$/.test(s)) return false;
  const digits = [...s].map(Number);
  const sum = digits.slice(0, 9).reduce((acc, d, i) => acc + d * (10 - i), 0);
  let check = 11 - (sum % 11);
  if (check === 11) check = 0;
  if (check === 10) return false;
  return check === digits[9];
}

const nineDigits = fc.stringMatching(/^\d{9}$/);
const validNumber = nineDigits
  .filter((first9) => nhsCheckDigit(first9) !== undefined)
  .map((first9) => `${first9}${nhsCheckDigit(first9)}`);

describe("NHS number check digit", () => {
  it("accepts published examples and rejects a published bad one", () => {
    assert.equal(NHS_NUMBER_SYSTEM, "https://fhir.nhs.uk/Id/nhs-number");
    // UK Core's RichardSmith example and NHS England's usual documentation example.
    assert.ok(isValidNhsNumber("9912003888"));
    assert.ok(isValidNhsNumber("9434765919"));
    // UK Core's BabyPatient example fails the check (its check digit should be 6).
    assert.ok(!isValidNhsNumber("9912003890"));
    assert.equal(nhsCheckDigit("991200389"), 6);
    assert.ok(isValidNhsNumber("9912003896"));
  });

  it("maps remainder 0 to check digit 0 and refuses nine digits whose check digit would be 10", () => {
    assert.equal(nhsCheckDigit("000000000"), 0);
    assert.ok(isValidNhsNumber("0000000000"));
    assert.equal(nhsCheckDigit("100047514"), undefined);
    for (let d = 0; d <= 9; d++) assert.ok(!isValidNhsNumber(`100047514${d}`));
  });

  it("rejects anything that is not exactly ten ASCII digits", () => {
    for (const bad of [
      "",
      "943476591",
      "94347659190",
      "943 476 5919",
      "943-476-5919",
      "94347659l9",
      "９４３４７６５９１９",
    ]) {
      assert.ok(!isValidNhsNumber(bad), bad);
    }
    for (const bad of [9434765919, null, undefined, ["9434765919"]]) assert.ok(!isValidNhsNumber(bad));
    assert.equal(nhsCheckDigit("94347659"), undefined);
    assert.equal(nhsCheckDigit("94347659a"), undefined);
  });

  it("agrees with the long-hand definition on every ten-digit string", () => {
    fc.assert(
      fc.property(fc.stringMatching(/^\d{10}$/), (s) => isValidNhsNumber(s) === referenceValid(s)),
      { numRuns: 5000 },
    );
  });

  it("detects every single-digit change", () => {
    fc.assert(
      fc.property(validNumber, fc.nat({ max: 9 }), fc.integer({ min: 1, max: 9 }), (n, position, delta) => {
        const changed = (Number(n[position]) + delta) % 10;
        const mutated = `${n.slice(0, position)}${changed}${n.slice(position + 1)}`;
        return !isValidNhsNumber(mutated);
      }),
      { numRuns: 3000 },
    );
  });

  it("detects every transposition of two different adjacent digits", () => {
    fc.assert(
      fc.property(validNumber, fc.nat({ max: 8 }), (n, i) => {
        fc.pre(n[i] !== n[i + 1]);
        const swapped = `${n.slice(0, i)}${n[i + 1]}${n[i]}${n.slice(i + 2)}`;
        return !isValidNhsNumber(swapped);
      }),
      { numRuns: 3000 },
    );
  });
});

describe("NHS number input and display forms", () => {
  it("parses the stored and the display form, and nothing looser", () => {
    assert.equal(parseNhsNumber("9434765919"), "9434765919");
    assert.equal(parseNhsNumber("943 476 5919"), "9434765919");
    assert.equal(parseNhsNumber("  943 476 5919 "), "9434765919");
    for (const bad of ["943  476 5919", "9434 765 919", "943-476-5919", "943 476 5918", "nhs 9434765919", ""]) {
      assert.equal(parseNhsNumber(bad), undefined, bad);
    }
  });

  it("formats as 3-3-4 and refuses invalid numbers without echoing them", () => {
    assert.equal(formatNhsNumber("9434765919"), "943 476 5919");
    assert.equal(formatNhsNumber("943 476 5919"), "943 476 5919");
    assert.throws(
      () => formatNhsNumber("9434765918"),
      (error: Error) => error instanceof RangeError && !error.message.includes("943"),
    );
  });
});

describe("test-range NHS numbers", () => {
  it("counts exactly the valid numbers of the 999 range", () => {
    let valid = 0;
    for (let s = 0; s < 1_000_000; s += 1) {
      if (nhsCheckDigit(`999${String(s).padStart(6, "0")}`) !== undefined) valid++;
    }
    assert.equal(testNhsNumberCount(), valid);
    assert.ok(valid > 900_000 && valid < 1_000_000);
  });

  it("is always valid, in the 999 range, and the same for the same seed", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.nat({ max: Number.MAX_SAFE_INTEGER })), (seed) => {
        const n = testNhsNumber(seed);
        return isTestNhsNumber(n) && n.startsWith("999") && referenceValid(n) && testNhsNumber(seed) === n;
      }),
      { numRuns: 3000 },
    );
    assert.equal(testNhsNumber(12345), testNhsNumber(12345));
    assert.notEqual(testNhsNumber(5), testNhsNumber("5"));
  });

  it("keeps the numbers it gave in earlier releases (data dirs and demo data hold them)", () => {
    const given: [string | number, string][] = [
      [0, "9993455768"],
      [1, "9999636101"],
      [2, "9995816431"],
      [12345, "9999733085"],
      [909_000, "9991044965"],
      ["5", "9991513310"],
      ["synthea-patient-id", "9994516353"],
    ];
    for (const [seed, number] of given) assert.equal(testNhsNumber(seed), number, `seed ${JSON.stringify(seed)}`);
    assert.equal(testNhsNumberCount(), 909_091);
  });

  it("gives distinct numbers to the integer seeds 0 … 99,999 and wraps after the range", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 100_000; i++) seen.add(testNhsNumber(i));
    assert.equal(seen.size, 100_000);
    assert.equal(testNhsNumber(testNhsNumberCount() + 7), testNhsNumber(7));
  });

  it("spreads consecutive seeds over the range", () => {
    // Each digit after the 999 prefix should appear about a tenth of the time for seeds 0 … 9,999, and neighbours
    // should not be neighbours.
    const counts = Array.from({ length: 6 }, () => new Array<number>(10).fill(0));
    let adjacent = 0;
    let previous = -1;
    for (let i = 0; i < 10_000; i++) {
      const n = testNhsNumber(i);
      for (let p = 0; p < 6; p++) {
        const row = counts[p] as number[];
        const digit = Number(n[3 + p]);
        row[digit] = (row[digit] as number) + 1;
      }
      const value = Number(n.slice(3, 9));
      if (Math.abs(value - previous) < 100) adjacent++;
      previous = value;
    }
    for (let p = 0; p < 6; p++) {
      for (const c of counts[p] as number[]) assert.ok(c > 800 && c < 1200, `digit ${p + 4}: ${c}`);
    }
    assert.ok(adjacent < 50, `${adjacent} consecutive seeds landed close together`);
    const hashed = new Set<string>();
    for (let i = 0; i < 1000; i++) hashed.add(testNhsNumber(`synthea-${i}`).slice(3, 5));
    assert.ok(hashed.size > 95, "string seeds should cover the leading digits");
  });

  it("refuses seeds that are not non-negative safe integers", () => {
    for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 60]) {
      assert.throws(() => testNhsNumber(bad), RangeError);
    }
  });
});
