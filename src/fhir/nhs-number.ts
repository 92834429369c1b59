// NHS numbers: the Modulus 11 check digit, validation, display formatting and deterministic numbers from the
// `999` test range (never issued to a real person) for synthetic and imported test patients.
//
// Input forms: `isValidNhsNumber` accepts exactly the stored form, 10 ASCII digits with no spaces, which is what
// a FHIR identifier holds (NHS England's FHIR APIs reject spaced values). People type and read the NHS display
// form `999 123 4567`; `parseNhsNumber` turns that (or the plain form) into the stored form.

import { sha256 } from "../ledger/hash.ts";

export const NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number";

/** The prefix of the range reserved for testing; numbers in it are never allocated to patients. */
export const NHS_TEST_PREFIX = "999";

const NINE_DIGITS = /^[0-9]{9}$/;
const TEN_DIGITS = /^[0-9]{10}$/;
const DISPLAY_FORM = /^([0-9]{3}) ([0-9]{3}) ([0-9]{4})$/;

/**
 * The check digit for the first nine digits: weights 10 down to 2, `11 − (sum mod 11)`, where 11 becomes 0 and 10
 * means no valid NHS number starts with these nine digits (undefined, as for input that is not nine digits).
 */
export function nhsCheckDigit(first9: string): number | undefined {
  if (!NINE_DIGITS.test(first9)) return undefined;
  let sum = 0;
  for (let i = 0; i < 9; i++) sum += (first9.charCodeAt(i) - 48) * (10 - i);
  const check = 11 - (sum % 11);
  if (check === 10) return undefined;
  return check === 11 ? 0 : check;
}

/** True for 10 digits (no spaces) whose last digit is the Modulus 11 check digit of the first nine. */
export function isValidNhsNumber(value: unknown): value is string {
  if (typeof value !== "string" || !TEN_DIGITS.test(value)) return false;
  return nhsCheckDigit(value.slice(0, 9)) === value.charCodeAt(9) - 48;
}

/** True for a valid NHS number in the `999` test range. */
export function isTestNhsNumber(value: unknown): value is string {
  return isValidNhsNumber(value) && value.startsWith(NHS_TEST_PREFIX);
}

/**
 * The stored form of a typed NHS number: `9991234567` or the display form `999 123 4567` (surrounding whitespace
 * ignored). Undefined when it is neither form or the check digit is wrong.
 */
export function parseNhsNumber(input: string): string | undefined {
  const trimmed = input.trim();
  const spaced = DISPLAY_FORM.exec(trimmed);
  const digits = spaced ? `${spaced[1]}${spaced[2]}${spaced[3]}` : trimmed;
  return isValidNhsNumber(digits) ? digits : undefined;
}

/** The NHS display form `999 123 4567`. Throws RangeError (without echoing the value) for an invalid number. */
export function formatNhsNumber(value: string): string {
  const digits = parseNhsNumber(value);
  if (digits === undefined) throw new RangeError("not a valid NHS number");
  return `${digits.slice(0, 3)} ${digits.slice(3, 6)} ${digits.slice(6)}`;
}

// Every valid test number, in ascending order, as its six digits after `999`: about 10/11 of the million, since
// the nine digits of one in eleven have check digit 10. Built on first use (a few milliseconds).
let validSuffixes: Int32Array | undefined;
let multiplier = 0;
let offset = 0;

function suffixes(): Int32Array {
  if (validSuffixes) return validSuffixes;
  const out = new Int32Array(1_000_000);
  let n = 0;
  // Sum of 9·10 + 9·9 + 9·8 for the prefix 999, then the six suffix digits with weights 7..2: the weighted sums of
  // the upper and lower three digits are tabled once, so each suffix costs one addition (first use 37 → 12 ms here,
  // against splitting every number into its digits).
  const prefixSum = 9 * 10 + 9 * 9 + 9 * 8;
  const upper = new Int32Array(1000);
  const lower = new Int32Array(1000);
  for (let t = 0; t < 1000; t++) {
    const [a, b, c] = [Math.floor(t / 100), Math.floor(t / 10) % 10, t % 10];
    upper[t] = 7 * a + 6 * b + 5 * c;
    lower[t] = 4 * a + 3 * b + 2 * c;
  }
  for (let hi = 0; hi < 1000; hi++) {
    const high = prefixSum + (upper[hi] as number);
    for (let lo = 0; lo < 1000; lo++) {
      if ((high + (lower[lo] as number)) % 11 !== 1) out[n++] = hi * 1000 + lo; // remainder 1 is check digit 10: invalid
    }
  }
  validSuffixes = out.slice(0, n);
  // An affine map i → (multiplier·i + offset) mod count is a bijection when gcd(multiplier, count) = 1; a
  // multiplier near count/φ sends neighbouring indexes far apart, so patient 1, 2, 3 do not get 999 000 0001, ….
  multiplier = Math.round(n * 0.6180339887);
  while (gcd(multiplier, n) !== 1) multiplier++;
  offset = 314_159 % n;
  return validSuffixes;
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** How many valid NHS numbers the test range holds (integer seeds below this map to distinct numbers). */
export function testNhsNumberCount(): number {
  return suffixes().length;
}

/**
 * A valid NHS number in the `999` test range, the same for the same seed on every run and machine.
 * - An integer seed `i` (0 ≤ i < `testNhsNumberCount()`, about 909,000) picks the i-th number of a fixed
 *   permutation of the range: distinct seeds give distinct numbers, so numbering patients 0…N−1 gives N distinct
 *   NHS numbers. Larger integers wrap around.
 * - A string seed (e.g. a Synthea patient's id) is hashed (SHA-256) onto the range: well spread, but two strings
 *   may share a number, as with any hash (expect a first clash around a thousand seeds).
 * `testNhsNumber(5)` and `testNhsNumber("5")` differ.
 */
export function testNhsNumber(seed: string | number): string {
  const table = suffixes();
  let index: number;
  if (typeof seed === "number") {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError("seed must be a non-negative safe integer");
    index = (multiplier * (seed % table.length) + offset) % table.length;
  } else {
    const h = sha256(`careledger/nhs-test-number/v1\n${seed}`);
    // 48 bits of the hash, reduced onto the range (bias below 2^-28, irrelevant here).
    let wide = 0;
    for (let i = 0; i < 6; i++) wide = wide * 256 + (h[i] as number);
    index = wide % table.length;
  }
  const first9 = `${NHS_TEST_PREFIX}${String(table[index]).padStart(6, "0")}`;
  return `${first9}${nhsCheckDigit(first9)}`;
}
