// Deterministic synthetic UK patients as FHIR R4 transaction Bundles, for demos and scale tests (issue 4 point 2).
//
// One Bundle per patient, shaped like Synthea's: every entry is `POST <Type>` with a `urn:uuid:` fullUrl and every
// reference inside the bundle is one of those fullUrls. Each bundle carries its own GP practice (Organization), GP
// (Practitioner) and, when needed, a hospital (Organization), so it imports on its own.
//
// Deterministic: a patient is a function of (seed, index, now) only, through its own seeded PRNG (sfc32 keyed by
// SHA-256); no Math.random, no clock. The same options give byte-identical JSON on every run and machine.
//
// Code tables are a small SAMPLE of real codes, not a terminology: SNOMED CT and LOINC codes with their usual
// displays, dm+d (https://dmd.nhs.uk) medicine and vaccine codes as published in dm+d / NHS England's UK Core and
// EPS examples (a few dm+d VMP ids have since been superseded by newer ids; they remain dm+d codes). Names, addresses,
// practices and hospitals are made up: street, place and outward postcode lists are generic, inward codes random,
// telephone numbers come from Ofcom's ranges reserved for drama, NHS numbers from the 999 test range. No real
// person's data.
//
// Sensitive records carry `meta.security` codings the contract's label table (src/contract/labels.ts) maps to
// sensitive labels: mental health (PSY, MH), sexual health (STD, SEX), HIV, substance use (ETH, SUD), genetics
// (GDIS), gender identity and fertility (local codes) — with the system the table gives for each code.

import type {
  AllergyIntolerance,
  Bundle,
  BundleEntry,
  CarePlan,
  CodeableConcept,
  Coding,
  Condition,
  DiagnosticReport,
  Encounter,
  Immunization,
  MedicationRequest,
  Observation,
  Organization,
  Patient,
  Practitioner,
  Procedure,
  Quantity,
  Reference,
  Resource,
} from "@medplum/fhirtypes";
import { LABELS } from "../contract/labels.ts";
import { sha256 } from "../ledger/hash.ts";
import { NHS_NUMBER_SYSTEM, testNhsNumber, testNhsNumberCount } from "./nhs-number.ts";

export const MAX_PATIENTS = 1_000_000;
/** "Today" in the generated world unless the caller passes `now`: fixed, so output never depends on the clock. */
export const DEFAULT_NOW = "2025-06-30T12:00:00Z";

export interface GenerateOptions {
  /** How many patients (1 … MAX_PATIENTS). */
  patients: number;
  /** Any string; the same seed gives the same patients. */
  seed: string;
  /**
   * Index of the first patient (default 0): a run yields patients start … start+patients−1, so a large set can be
   * generated in slices that together equal one big run.
   */
  start?: number;
  /** The generated world's "today" (default DEFAULT_NOW); nothing is dated after it. */
  now?: Date | string | number;
}

const SNOMED = "http://snomed.info/sct";
const LOINC = "http://loinc.org";
const DMD = "https://dmd.nhs.uk";
const UCUM = "http://unitsofmeasure.org";
const ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code";
const UKCORE = "https://fhir.hl7.org.uk/StructureDefinition";
const ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category";
const CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical";
const CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status";
const CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category";
const ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
const ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";
const COURSE_OF_THERAPY = "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy";

const DAY = 86_400_000;
const YEAR = 365.25 * DAY;

type Code = readonly [code: string, display: string];

// ---------------------------------------------------------------------------------------------------------------
// Security labels, exactly as the contract's table reads them (a code, with the system listed beside it).

/** The label codes this generator writes. Each must be one the contract maps to a sensitive label. */
export type SensitivityCode = "PSY" | "MH" | "STD" | "SEX" | "HIV" | "ETH" | "SUD" | "GDIS" | "GENDER" | "FERTILITY";

const SECURITY_CODINGS = new Map<SensitivityCode, Coding>();
for (const code of ["PSY", "MH", "STD", "SEX", "HIV", "ETH", "SUD", "GDIS", "GENDER", "FERTILITY"] as const) {
  const info = LABELS.find((l) => l.codes.includes(code));
  if (info === undefined || !info.sensitive) throw new Error(`label table no longer has sensitive code ${code}`);
  SECURITY_CODINGS.set(code, { system: info.systems[info.codes.indexOf(code)] as string, code });
}

// ---------------------------------------------------------------------------------------------------------------
// Seeded PRNG: sfc32 (a small, fast, well-tested generator), keyed by SHA-256 of a string.

class Rng {
  a: number;
  b: number;
  c: number;
  d: number;

  constructor(key: string) {
    const h = sha256(key);
    const word = (i: number) =>
      ((h[i] as number) | ((h[i + 1] as number) << 8) | ((h[i + 2] as number) << 16) | ((h[i + 3] as number) << 24)) >>>
      0;
    this.a = word(0);
    this.b = word(4);
    this.c = word(8);
    this.d = word(12);
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.u32() / 4_294_967_296;
  }

  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.float() * items.length)] as T;
  }

  /** Pick by weight: `[[weight, value], …]`. */
  weighted<T>(items: readonly (readonly [number, T])[]): T {
    let total = 0;
    for (const [w] of items) total += w;
    let x = this.float() * total;
    for (const [w, v] of items) {
      x -= w;
      if (x < 0) return v;
    }
    return (items[items.length - 1] as readonly [number, T])[1];
  }

  normal(mean: number, sd: number): number {
    // Box–Muller; 1 − float() is in (0, 1], so the log is finite.
    const u = 1 - this.float();
    const v = this.float();
    return mean + sd * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** A random (version 4 layout) UUID drawn from this generator. */
  uuid(): string {
    const w0 = this.u32();
    const w1 = this.u32();
    const w2 = (this.u32() & 0x3fffffff) | 0x80000000; // variant 10xx
    const w3 = this.u32();
    return (
      `${HEX[w0 >>> 24]}${HEX[(w0 >>> 16) & 255]}${HEX[(w0 >>> 8) & 255]}${HEX[w0 & 255]}-` +
      `${HEX[w1 >>> 24]}${HEX[(w1 >>> 16) & 255]}-4${HEX_DIGITS[(w1 >>> 8) & 15]}${HEX[w1 & 255]}-` +
      `${HEX[w2 >>> 24]}${HEX[(w2 >>> 16) & 255]}-${HEX[(w2 >>> 8) & 255]}${HEX[w2 & 255]}` +
      `${HEX[w3 >>> 24]}${HEX[(w3 >>> 16) & 255]}${HEX[(w3 >>> 8) & 255]}${HEX[w3 & 255]}`
    );
  }
}

const HEX_DIGITS = "0123456789abcdef";
const HEX: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

// ---------------------------------------------------------------------------------------------------------------
// Dates: epoch milliseconds in, FHIR R4 `date` / `dateTime` / `instant` strings out (UTC).

// Formatting by hand (civil-from-days, H. Hinnant) is several times faster than Date#toISOString, and dates are
// most of the work here; the tests check both agree.
const TWO_DIGITS: readonly string[] = Array.from({ length: 100 }, (_, i) => String(i).padStart(2, "0"));

function fhirDate(ms: number): string {
  const z = Math.floor(ms / DAY) + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  const y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  return `${y}-${TWO_DIGITS[m]}-${TWO_DIGITS[d]}`;
}

let lastMs = Number.NaN;
let lastDateTime = "";

function fhirDateTime(ms: number): string {
  // Many elements of one visit share its time.
  if (ms === lastMs) return lastDateTime;
  const t = Math.floor(ms / 1000) - Math.floor(ms / DAY) * 86_400;
  lastMs = ms;
  lastDateTime = `${fhirDate(ms)}T${TWO_DIGITS[Math.floor(t / 3600)]}:${TWO_DIGITS[Math.floor(t / 60) % 60]}:${TWO_DIGITS[t % 60]}Z`;
  return lastDateTime;
}

function startOfDay(ms: number): number {
  return Math.floor(ms / DAY) * DAY;
}

function parseNow(now: GenerateOptions["now"]): number {
  const ms =
    now === undefined ? Date.parse(DEFAULT_NOW) : now instanceof Date ? now.getTime() : new Date(now).getTime();
  if (!Number.isFinite(ms)) throw new RangeError("now is not a valid date");
  return ms;
}

// ---------------------------------------------------------------------------------------------------------------
// Small code tables (a sample; see the file comment).

const FEMALE_GIVEN: readonly string[] = (
  "Olivia Amelia Isla Ava Mia Ivy Lily Isabella Sophia Grace Freya Emily Poppy Ella Charlotte Evie " +
  "Sophie Chloe Jessica Hannah Sarah Emma Rebecca Laura Rachel Claire Helen Karen Susan Margaret " +
  "Patricia Jean Barbara Elizabeth Mary Joan Aisha Fatima Priya Zara Amara Niamh Siobhan Megan Bethan " +
  "Ffion Anjali Mei"
).split(" ");
const MALE_GIVEN: readonly string[] = (
  "Oliver George Noah Arthur Leo Harry Oscar Jack Charlie Jacob Thomas William James Henry Alfie " +
  "Freddie Joshua Daniel Matthew Luke Adam Ryan David Michael Paul Mark Andrew Peter John Robert " +
  "Richard Stephen Brian Kenneth Mohammed Yusuf Ali Arjun Rohan Kwame Chinedu Rhys Dylan Owen Callum " +
  "Connor Wei Tomasz"
).split(" ");
const FAMILY: readonly string[] = (
  "Smith Jones Williams Taylor Brown Davies Evans Wilson Thomas Johnson Roberts Robinson Thompson " +
  "Wright Walker White Edwards Hughes Green Hall Lewis Harris Clarke Patel Jackson Wood Turner Martin " +
  "Cooper Hill Ward Morris Moore Clark Lee King Baker Harrison Morgan Allen James Scott Phillips " +
  "Watson Davis Parker Price Bennett Young Griffiths Mitchell Kelly Cook Carter Richardson Bailey " +
  "Collins Bell Shaw Murphy Miller Cox Richards Khan Begum Ahmed Hussain Singh Kaur Shah Chen Nguyen " +
  "Okafor Mensah Kowalski Nowak O'Brien Murray Campbell Stewart Reid"
).split(" ");
const STREETS: readonly string[] = (
  "High Street|Station Road|Church Lane|Park Avenue|Victoria Road|Mill Lane|Queens Road|Manor Way|" +
  "The Crescent|Albert Street|King Street|Green Lane|Chapel Street|Springfield Road|Orchard Close|" +
  "Meadow View|Windsor Drive|York Road|Elm Grove|Beech Avenue"
).split("|");
/** Letters used in the inward part of a postcode (never C, I, K, M, O, V). */
const INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ";

interface Town {
  city: string;
  outward: readonly string[];
  /** Ofcom drama range prefix: append three digits. */
  phone: string;
}

// England and Wales only: NHS numbers are the England/Wales identifier (Scotland uses CHI, Northern Ireland H&C).
const TOWNS: readonly Town[] = [
  { city: "LEEDS", outward: ["LS1", "LS6", "LS7", "LS8", "LS11", "LS12", "LS15", "LS17", "LS28"], phone: "0113 496 0" },
  { city: "SHEFFIELD", outward: ["S1", "S2", "S5", "S6", "S7", "S8", "S10", "S11", "S17"], phone: "0114 496 0" },
  { city: "MANCHESTER", outward: ["M1", "M4", "M8", "M13", "M14", "M16", "M20", "M21", "M40"], phone: "0161 496 0" },
  { city: "BIRMINGHAM", outward: ["B1", "B5", "B11", "B13", "B15", "B17", "B23", "B29", "B31"], phone: "0121 496 0" },
  { city: "BRISTOL", outward: ["BS1", "BS2", "BS3", "BS5", "BS6", "BS7", "BS9", "BS16"], phone: "0117 496 0" },
  { city: "NOTTINGHAM", outward: ["NG1", "NG2", "NG3", "NG5", "NG7", "NG8", "NG9"], phone: "0115 496 0" },
  { city: "LEICESTER", outward: ["LE1", "LE2", "LE3", "LE4", "LE5"], phone: "0116 496 0" },
  { city: "LIVERPOOL", outward: ["L1", "L4", "L6", "L8", "L13", "L15", "L17", "L18", "L25"], phone: "0151 496 0" },
  { city: "NEWCASTLE UPON TYNE", outward: ["NE1", "NE2", "NE3", "NE4", "NE5", "NE6", "NE7"], phone: "0191 498 0" },
  {
    city: "LONDON",
    outward: ["E1", "E8", "E17", "N1", "N7", "N16", "SE1", "SE15", "SW2", "SW11", "NW3", "W12"],
    phone: "020 7946 0",
  },
  { city: "CARDIFF", outward: ["CF5", "CF10", "CF11", "CF14", "CF23", "CF24"], phone: "029 2018 0" },
  { city: "READING", outward: ["RG1", "RG2", "RG4", "RG6", "RG30", "RG31"], phone: "0118 496 0" },
];

const PRACTICE_WORDS: readonly string[] = (
  "Riverside|Parkview|Oakwood|Northgate|Elmfield|Bridge Street|Westfield|Hillside|Beechwood|Meadowbank|" +
  "Kingsway|Abbey|Fernlea|Castlegate|Moorside|Willow Bank|Ashgrove|Larchfield"
).split("|");
const PRACTICE_KINDS = ["Medical Centre", "Surgery", "Health Centre", "Medical Practice"];
const HOSPITAL_WORDS = ["Riverside", "Northern", "Royal Park", "St Aidan's", "Valley", "Heathfield"] as const;

interface Practice {
  ods: string;
  name: string;
  town: number;
  gps: readonly { family: string; given: string; gender: "female" | "male" }[];
}

// A fixed, seed-independent directory: the same practice has the same (made-up) ODS-format code, name and GPs in
// every run, so patients of one practice agree.
const PRACTICES: readonly Practice[] = (() => {
  const rng = new Rng("careledger/generate/practices/v1");
  const out: Practice[] = [];
  for (let t = 0; t < TOWNS.length; t++) {
    for (let k = 0; k < 3; k++) {
      const gps = [];
      for (let g = 0; g < 3; g++) {
        const gender = rng.chance(0.55) ? ("female" as const) : ("male" as const);
        gps.push({
          family: rng.pick(FAMILY),
          given: rng.pick(gender === "female" ? FEMALE_GIVEN : MALE_GIVEN),
          gender,
        });
      }
      out.push({
        ods: `Y9${String(t).padStart(2, "0")}${String(k + 1).padStart(2, "0")}`,
        name: `${PRACTICE_WORDS[(t * 3 + k) % PRACTICE_WORDS.length]} ${PRACTICE_KINDS[(t + k) % PRACTICE_KINDS.length]}`,
        town: t,
        gps,
      });
    }
  }
  return out;
})();

function titleCase(s: string): string {
  return s.toLowerCase().replace(/\b[a-z]/g, (c) => c.toUpperCase());
}

// UK Core EthnicCategoryEngland, weights roughly as the 2021 census in England.
const ETHNICITY: readonly (readonly [number, Code])[] = [
  [74, ["A", "White - British"]],
  [1, ["B", "White - Irish"]],
  [6, ["C", "White - Any other White background"]],
  [0.9, ["D", "Mixed - White and Black Caribbean"]],
  [0.5, ["E", "Mixed - White and Black African"]],
  [0.9, ["F", "Mixed - White and Asian"]],
  [0.8, ["G", "Mixed - Any other mixed background"]],
  [3.3, ["H", "Asian or Asian British - Indian"]],
  [2.7, ["J", "Asian or Asian British - Pakistani"]],
  [1.1, ["K", "Asian or Asian British - Bangladeshi"]],
  [1.6, ["L", "Asian or Asian British - Any other Asian background"]],
  [1.1, ["M", "Black or Black British - Caribbean"]],
  [2.5, ["N", "Black or Black British - African"]],
  [0.5, ["P", "Black or Black British - Any other Black background"]],
  [0.8, ["R", "Other Ethnic Groups - Chinese"]],
  [1.6, ["S", "Other Ethnic Groups - Any other ethnic group"]],
  [1.2, ["Z", "Not stated"]],
];

// Encounter types (SNOMED CT).
const ENC_CHECKUP: Code = ["185349003", "Encounter for check up"];
const ENC_SYMPTOM: Code = ["185345009", "Encounter for symptom"];
const ENC_PROBLEM: Code = ["185347001", "Encounter for problem"];
const ENC_EMERGENCY: Code = ["50849002", "Emergency room admission"];
const ENC_SURGICAL: Code = ["305408004", "Admission to surgical department"];
const ENC_PRENATAL: Code = ["424441002", "Prenatal initial visit"];

// Medicines: dm+d codes (VMPs). A sample.
const MED = {
  metformin: ["325278007", "Metformin 500mg tablets"],
  gliclazide: ["325242002", "Gliclazide 80mg tablets"],
  ramipril: ["318901006", "Ramipril 2.5mg capsules"],
  lisinopril: ["318859000", "Lisinopril 10mg tablets"],
  losartan: ["318956006", "Losartan 50mg tablets"],
  aspirin: ["319773006", "Aspirin 75mg dispersible tablets"],
  clopidogrel: ["319799004", "Clopidogrel 75mg tablets"],
  apixaban: ["703908001", "Apixaban 5mg tablets"],
  furosemide: ["317972000", "Furosemide 40mg tablets"],
  omeprazole: ["317291008", "Omeprazole 20mg gastro-resistant capsules"],
  salbutamol: ["39113611000001102", "Salbutamol 100micrograms/dose inhaler CFC free"],
  budesonide: ["320567001", "Budesonide 200micrograms/dose dry powder inhaler"],
  paracetamol: ["322236009", "Paracetamol 500mg tablets"],
  ibuprofen: ["329653008", "Ibuprofen 400mg tablets"],
  naproxen: ["329807003", "Naproxen 500mg tablets"],
  prednisolone: ["325427002", "Prednisolone 5mg tablets"],
  amoxicillin250: ["39732311000001104", "Amoxicillin 250mg capsules"],
  amoxicillin500: ["39732411000001106", "Amoxicillin 500mg capsules"],
  clarithromycin: ["41946511000001109", "Clarithromycin 500mg tablets"],
  doxycycline: ["41948311000001104", "Doxycycline 100mg capsules"],
  ciprofloxacin: ["39687811000001107", "Ciprofloxacin 500mg tablets"],
  sertraline: ["321959007", "Sertraline 50mg tablets"],
  citalopram: ["321987003", "Citalopram 20mg tablets"],
  fluoxetine: ["321949006", "Fluoxetine 20mg capsules"],
  mirtazapine: ["375193003", "Mirtazapine 15mg tablets"],
  lithium: ["321730000", "Lithium carbonate 250mg tablets"],
  chlordiazepoxide: ["321249002", "Chlordiazepoxide 5mg capsules"],
  dolutegravir: ["23946111000001105", "Dolutegravir 50mg tablets"],
} as const satisfies Record<string, Code>;
type Med = keyof typeof MED;

// Vaccines: dm+d codes.
const VACCINE = {
  dtapIpvHib: [
    "10795711000001100",
    "Diphtheria / Tetanus / Pertussis (acellular component) / Poliomyelitis (inactivated) / Haemophilus type b conjugate vaccine (adsorbed) powder and suspension for suspension for injection 0.5ml pre-filled syringes",
  ],
  pcv: [
    "10245211000001108",
    "Pneumococcal polysaccharide conjugated vaccine (adsorbed) suspension for injection 0.5ml pre-filled syringes",
  ],
  mmr: [
    "34938511000001103",
    "Measles, Mumps and Rubella vaccine (live) powder and solvent for solution for injection 0.5ml pre-filled syringes",
  ],
  flu: [
    "11278411000001109",
    "Influenza vaccine (split virion, inactivated) suspension for injection 0.5ml pre-filled syringes (Pfizer Ltd)",
  ],
  covidPfizer: [
    "39115611000001103",
    "Comirnaty COVID-19 mRNA Vaccine 30micrograms/0.3ml dose concentrate for dispersion for injection multidose vials (Pfizer Ltd)",
  ],
  covidAz: [
    "39114911000001105",
    "COVID-19 Vaccine Vaxzevria (ChAdOx1 S [recombinant]) not less than 2.5x100,000,000 infectious units/0.5ml dose suspension for injection multidose vials (AstraZeneca UK Ltd)",
  ],
} as const satisfies Record<string, Code>;

// LOINC observation codes with UCUM units.
interface Measure {
  code: Code;
  unit: string;
  ucum: string;
  category: "vital-signs" | "laboratory" | "survey" | "social-history";
}
const M = {
  height: { code: ["8302-2", "Body height"], unit: "cm", ucum: "cm", category: "vital-signs" },
  weight: { code: ["29463-7", "Body weight"], unit: "kg", ucum: "kg", category: "vital-signs" },
  bmi: { code: ["39156-5", "Body mass index (BMI) [Ratio]"], unit: "kg/m2", ucum: "kg/m2", category: "vital-signs" },
  head: {
    code: ["9843-4", "Head Occipital-frontal circumference"],
    unit: "cm",
    ucum: "cm",
    category: "vital-signs",
  },
  heartRate: { code: ["8867-4", "Heart rate"], unit: "beats/minute", ucum: "/min", category: "vital-signs" },
  respRate: { code: ["9279-1", "Respiratory rate"], unit: "breaths/minute", ucum: "/min", category: "vital-signs" },
  temperature: { code: ["8310-5", "Body temperature"], unit: "°C", ucum: "Cel", category: "vital-signs" },
  spo2: { code: ["2708-6", "Oxygen saturation in Arterial blood"], unit: "%", ucum: "%", category: "vital-signs" },
  systolic: { code: ["8480-6", "Systolic blood pressure"], unit: "mmHg", ucum: "mm[Hg]", category: "vital-signs" },
  diastolic: { code: ["8462-4", "Diastolic blood pressure"], unit: "mmHg", ucum: "mm[Hg]", category: "vital-signs" },
  haemoglobin: {
    code: ["718-7", "Hemoglobin [Mass/volume] in Blood"],
    unit: "g/L",
    ucum: "g/L",
    category: "laboratory",
  },
  wbc: {
    code: ["6690-2", "Leukocytes [#/volume] in Blood by Automated count"],
    unit: "10*9/L",
    ucum: "10*9/L",
    category: "laboratory",
  },
  platelets: {
    code: ["777-3", "Platelets [#/volume] in Blood by Automated count"],
    unit: "10*9/L",
    ucum: "10*9/L",
    category: "laboratory",
  },
  sodium: {
    code: ["2951-2", "Sodium [Moles/volume] in Serum or Plasma"],
    unit: "mmol/L",
    ucum: "mmol/L",
    category: "laboratory",
  },
  potassium: {
    code: ["2823-3", "Potassium [Moles/volume] in Serum or Plasma"],
    unit: "mmol/L",
    ucum: "mmol/L",
    category: "laboratory",
  },
  creatinine: {
    code: ["14682-9", "Creatinine [Moles/volume] in Serum or Plasma"],
    unit: "umol/L",
    ucum: "umol/L",
    category: "laboratory",
  },
  egfr: {
    code: [
      "33914-3",
      "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma by Creatinine-based formula (MDRD)",
    ],
    unit: "mL/min/1.73m2",
    ucum: "mL/min/{1.73_m2}",
    category: "laboratory",
  },
  cholesterol: {
    code: ["14647-2", "Cholesterol [Moles/volume] in Serum or Plasma"],
    unit: "mmol/L",
    ucum: "mmol/L",
    category: "laboratory",
  },
  hdl: {
    code: ["14646-4", "Cholesterol in HDL [Moles/volume] in Serum or Plasma"],
    unit: "mmol/L",
    ucum: "mmol/L",
    category: "laboratory",
  },
  triglycerides: {
    code: ["14927-8", "Triglyceride [Moles/volume] in Serum or Plasma"],
    unit: "mmol/L",
    ucum: "mmol/L",
    category: "laboratory",
  },
  hba1c: {
    code: ["59261-8", "Hemoglobin A1c/Hemoglobin.total in Blood by IFCC protocol"],
    unit: "mmol/mol",
    ucum: "mmol/mol",
    category: "laboratory",
  },
  viralLoad: {
    code: ["25836-8", "HIV 1 RNA [#/volume] (viral load) in Serum or Plasma by NAA with probe detection"],
    unit: "copies/mL",
    ucum: "{copies}/mL",
    category: "laboratory",
  },
  cd4: {
    code: ["24467-3", "CD3+CD4+ (T4 helper) cells [#/volume] in Blood"],
    unit: "cells/uL",
    ucum: "/uL",
    category: "laboratory",
  },
  phq9: {
    code: ["44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"],
    unit: "score",
    ucum: "{score}",
    category: "survey",
  },
  gad7: {
    code: ["70274-6", "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]"],
    unit: "score",
    ucum: "{score}",
    category: "survey",
  },
  auditC: { code: ["75626-2", "Total score [AUDIT-C]"], unit: "score", ucum: "{score}", category: "survey" },
} as const satisfies Record<string, Measure>;

const BP_PANEL: Code = ["85354-9", "Blood pressure panel with all children optional"];
const SMOKING_STATUS: Code = ["72166-2", "Tobacco smoking status"];
const CHLAMYDIA_TEST: Code = [
  "21613-5",
  "Chlamydia trachomatis DNA [Presence] in Specimen by NAA with probe detection",
];
const FBC_PANEL: Code = ["58410-2", "Complete blood count (hemogram) panel - Blood by Automated count"];
const METABOLIC_PANEL: Code = ["51990-0", "Basic metabolic panel - Blood"];
const LIPID_PANEL: Code = ["57698-3", "Lipid panel with direct LDL - Serum or Plasma"];
const POSITIVE: Code = ["10828004", "Positive"];
const NEGATIVE: Code = ["260385009", "Negative"];

interface ChronicCondition {
  code: Code;
  /** Chance of having it by current age in years (0 for no). */
  prevalence: (age: number, sex: "female" | "male") => number;
  minOnsetAge: number;
  meds: readonly Med[];
  plan?: { category: Code; activities: readonly Code[] };
  /** What each annual review measures. */
  review?: "hba1c" | "bp" | "renal" | "breathing";
}

const band = (age: number, lo: number, hi: number, p: number) => (age >= lo && age <= hi ? p : 0);

const CHRONIC: readonly ChronicCondition[] = [
  {
    code: ["38341003", "Hypertension"],
    prevalence: (a) => (a < 30 ? 0 : a < 45 ? 0.06 : a < 65 ? 0.2 : 0.45),
    minOnsetAge: 30,
    meds: ["ramipril"],
    review: "bp",
  },
  {
    code: ["44054006", "Diabetes mellitus type 2"],
    prevalence: (a) => (a < 30 ? 0 : a < 50 ? 0.04 : a < 70 ? 0.1 : 0.16),
    minOnsetAge: 30,
    meds: ["metformin"],
    plan: { category: ["698360004", "Diabetes self management plan"], activities: [["160670007", "Diabetic diet"]] },
    review: "hba1c",
  },
  {
    code: ["195967001", "Asthma"],
    prevalence: (a) => (a < 3 ? 0 : 0.09),
    minOnsetAge: 3,
    meds: ["salbutamol", "budesonide"],
    plan: {
      category: ["699728000", "Asthma self management"],
      activities: [["710818004", "Inhaled steroid therapy"]],
    },
    review: "breathing",
  },
  {
    code: ["13645005", "Chronic obstructive lung disease"],
    prevalence: (a) => (a < 45 ? 0 : a < 65 ? 0.03 : 0.08),
    minOnsetAge: 45,
    meds: ["salbutamol"],
    plan: {
      category: ["53950000", "Respiratory therapy"],
      activities: [["371605008", "Deep breathing and coughing exercises"]],
    },
    review: "breathing",
  },
  {
    code: ["49436004", "Atrial fibrillation"],
    prevalence: (a) => band(a, 60, 200, a < 75 ? 0.05 : 0.1),
    minOnsetAge: 60,
    meds: ["apixaban"],
  },
  {
    code: ["84114007", "Heart failure"],
    prevalence: (a) => band(a, 65, 200, 0.04),
    minOnsetAge: 65,
    meds: ["furosemide"],
    review: "renal",
  },
  {
    code: ["709044004", "Chronic kidney disease"],
    prevalence: (a) => band(a, 60, 200, 0.08),
    minOnsetAge: 60,
    meds: [],
    review: "renal",
  },
  {
    code: ["396275006", "Osteoarthritis"],
    prevalence: (a) => band(a, 50, 200, 0.15),
    minOnsetAge: 50,
    meds: ["paracetamol"],
    plan: {
      category: ["872781000000100", "Musculoskeletal care"],
      activities: [["229070002", "Stretching exercises"]],
    },
  },
  {
    code: ["69896004", "Rheumatoid arthritis"],
    prevalence: (a) => band(a, 30, 200, 0.01),
    minOnsetAge: 30,
    meds: ["prednisolone", "omeprazole"],
  },
  {
    code: ["37796009", "Migraine"],
    prevalence: (a, s) => band(a, 12, 70, s === "female" ? 0.08 : 0.03),
    minOnsetAge: 12,
    meds: ["ibuprofen"],
  },
  {
    code: ["26929004", "Alzheimer's disease"],
    prevalence: (a) => band(a, 75, 200, a < 85 ? 0.05 : 0.15),
    minOnsetAge: 72,
    meds: [],
    plan: {
      category: ["386257007", "Dementia management"],
      activities: [["850261000000100", "Education about dementia"]],
    },
  },
  {
    code: ["64859006", "Osteoporosis"],
    prevalence: (a, s) => band(a, 60, 200, s === "female" ? 0.12 : 0.02),
    minOnsetAge: 55,
    meds: [],
  },
  {
    code: ["84757009", "Epilepsy"],
    prevalence: () => 0.008,
    minOnsetAge: 1,
    meds: [],
  },
];

interface AcuteCondition {
  code: Code;
  minAge: number;
  maxAge: number;
  /** Antibiotic or pain relief, by age; undefined for none. */
  med?: (age: number) => Med;
  procedure?: Code;
  fever: boolean;
}

const ACUTE: readonly AcuteCondition[] = [
  { code: ["444814009", "Viral sinusitis"], minAge: 5, maxAge: 200, fever: false },
  { code: ["195662009", "Acute viral pharyngitis"], minAge: 2, maxAge: 200, fever: true },
  {
    code: ["43878008", "Streptococcal sore throat"],
    minAge: 3,
    maxAge: 200,
    med: (a) => (a < 12 ? "amoxicillin250" : "amoxicillin500"),
    procedure: ["117015009", "Throat culture"],
    fever: true,
  },
  {
    code: ["10509002", "Acute bronchitis"],
    minAge: 1,
    maxAge: 200,
    med: (a) => (a < 12 ? "amoxicillin250" : "clarithromycin"),
    fever: true,
  },
  { code: ["65363002", "Otitis media"], minAge: 0, maxAge: 12, med: () => "amoxicillin250", fever: true },
  {
    code: ["301011002", "Escherichia coli urinary tract infection"],
    minAge: 16,
    maxAge: 200,
    med: () => "ciprofloxacin",
    fever: false,
  },
  { code: ["840539006", "COVID-19"], minAge: 0, maxAge: 200, med: () => "paracetamol", fever: true },
  { code: ["24079001", "Atopic dermatitis"], minAge: 0, maxAge: 16, fever: false },
];

interface Injury {
  code: Code;
  procedure?: Code;
  med: Med;
}

const INJURIES: readonly Injury[] = [
  { code: ["44465007", "Sprain of ankle"], med: "ibuprofen" },
  { code: ["65966004", "Fracture of forearm"], procedure: ["274474001", "Bone immobilization"], med: "paracetamol" },
  { code: ["284549007", "Laceration of hand"], procedure: ["288086009", "Suture open wound"], med: "paracetamol" },
  { code: ["62106007", "Concussion with no loss of consciousness"], med: "paracetamol" },
];

const ALLERGIES: readonly { code: Code; category: "food" | "medication" | "environment"; high?: boolean }[] = [
  { code: ["91936005", "Allergy to penicillin"], category: "medication" },
  { code: ["91935009", "Allergy to peanuts"], category: "food", high: true },
  { code: ["91934008", "Allergy to nut"], category: "food", high: true },
  { code: ["300913006", "Shellfish allergy"], category: "food" },
  { code: ["300916003", "Latex allergy"], category: "environment" },
  { code: ["232350006", "House dust mite allergy"], category: "environment" },
  { code: ["232347008", "Dander (animal) allergy"], category: "environment" },
  { code: ["418689008", "Allergy to grass pollen"], category: "environment" },
  { code: ["419263009", "Allergy to tree pollen"], category: "environment" },
  { code: ["424213003", "Allergy to bee venom"], category: "environment", high: true },
];
const REACTIONS_MILD: readonly Code[] = [
  ["247472004", "Urticarial rash"],
  ["49727002", "Cough"],
  ["76067001", "Sneezing"],
];
const ANAPHYLAXIS: Code = ["39579001", "Anaphylaxis"];

const DOSAGE: Record<Med, string> = {
  metformin: "Take one tablet twice a day with food",
  gliclazide: "Take one tablet each morning with breakfast",
  ramipril: "Take one capsule once a day",
  lisinopril: "Take one tablet once a day",
  losartan: "Take one tablet once a day",
  aspirin: "Take one tablet once a day",
  clopidogrel: "Take one tablet once a day",
  apixaban: "Take one tablet twice a day",
  furosemide: "Take one tablet each morning",
  omeprazole: "Take one capsule once a day",
  salbutamol: "Inhale two doses when required",
  budesonide: "Inhale one dose twice a day",
  paracetamol: "Take one or two tablets up to four times a day when required",
  ibuprofen: "Take one tablet three times a day with food when required",
  naproxen: "Take one tablet twice a day with food",
  prednisolone: "Take one tablet each morning",
  amoxicillin250: "Take one capsule three times a day for 5 days",
  amoxicillin500: "Take one capsule three times a day for 5 days",
  clarithromycin: "Take one tablet twice a day for 5 days",
  doxycycline: "Take one capsule twice a day for 7 days",
  ciprofloxacin: "Take one tablet twice a day for 3 days",
  sertraline: "Take one tablet once a day",
  citalopram: "Take one tablet once a day",
  fluoxetine: "Take one capsule once a day",
  mirtazapine: "Take one tablet at night",
  lithium: "Take as directed by the specialist team",
  chlordiazepoxide: "Reducing course as directed",
  dolutegravir: "Take one tablet once a day",
};

// ---------------------------------------------------------------------------------------------------------------
// Building one patient.

interface Visit {
  ref: string;
  start: number;
  end: number;
}

interface Group {
  at: number;
  seq: number;
  entries: BundleEntry[];
}

const round = (x: number, decimals: number) => {
  const f = 10 ** decimals;
  return Math.round(x * f) / f;
};
const clamp = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));

function concept(system: string, [code, display]: Code): CodeableConcept {
  return { coding: [{ system, code, display }] };
}

/** A literal reference (assignable to a Reference of any target type). */
function ref(reference: string): { reference: string } {
  return { reference };
}

class PatientBuilder {
  rng: Rng;
  now: number;
  sex: "female" | "male";
  birth: number;
  /** End of the record: now, or the date of death. */
  end: number;
  /** Latest day an event may start (events never run past the end of the record). */
  latest: number;
  /** Earliest date of the adult record kept here (children: birth). */
  historyStart: number;
  adultHeight: number;
  bmiBase: number;
  smoker: "never" | "ex" | "current";
  town: number;
  practice: Practice;
  gp: Practice["gps"][number];
  patientRef = "";
  practiceRef = "";
  gpRef = "";
  hospitalRef: string | undefined;
  groups: Group[] = [];
  current: Group | undefined;
  head: BundleEntry[] = [];
  /** Adds flu vaccinations (asthma, diabetes, COPD, heart failure). */
  atRisk = false;

  constructor(seed: string, index: number, now: number) {
    this.rng = new Rng(`careledger/generate/v1\n${seed}\n${index}`);
    this.now = now;
    const rng = this.rng;
    this.sex = rng.chance(0.51) ? "female" : "male";
    // Age bands roughly as the UK population; every patient is at least a month old.
    const [lo, hi] = rng.weighted<readonly [number, number]>([
      [6, [1 / 12, 5]],
      [15, [5, 18]],
      [28, [18, 40]],
      [32, [40, 65]],
      [16, [65, 85]],
      [3, [85, 101]],
    ]);
    const ageYears = lo + rng.float() * (hi - lo);
    this.birth = startOfDay(now - ageYears * YEAR);
    this.end = now;
    if (ageYears >= 70 && rng.chance(0.06)) {
      this.end = startOfDay(now - rng.int(30, 4 * 365) * DAY) + rng.int(0, 23) * 3_600_000;
    }
    this.latest = this.end - 14 * DAY;
    const ageAtEnd = (this.end - this.birth) / YEAR;
    this.historyStart = ageAtEnd < 18 ? this.birth : Math.max(this.birth, this.end - 12 * YEAR);
    this.adultHeight = this.sex === "female" ? rng.normal(163, 6.5) : rng.normal(176.5, 7);
    this.bmiBase = clamp(rng.normal(26.5, 4.5), 17.5, 46);
    this.smoker = rng.weighted([
      [62, "never" as const],
      [25, "ex" as const],
      [13, "current" as const],
    ]);
    this.practice = rng.pick(PRACTICES);
    this.town = this.practice.town;
    this.gp = rng.pick(this.practice.gps);
  }

  ageAt(ms: number): number {
    return (ms - this.birth) / YEAR;
  }

  /** A random moment of a working day in [lo, hi] (clinic hours, UTC), or undefined when the range is empty. */
  dayIn(lo: number, hi: number): number | undefined {
    const from = Math.max(lo, this.birth + DAY);
    const to = Math.min(hi, this.latest);
    if (from > to) return undefined;
    const day = startOfDay(from + this.rng.float() * (to - from));
    return day + (8 * 60 + this.rng.int(0, 9 * 60 - 1)) * 60_000;
  }

  add<T extends Resource>(resource: T, label?: SensitivityCode): string {
    const uuid = this.rng.uuid();
    if (label !== undefined) {
      resource.meta = { ...resource.meta, security: [{ ...(SECURITY_CODINGS.get(label) as Coding) }] };
    }
    const entry: BundleEntry = {
      fullUrl: `urn:uuid:${uuid}`,
      resource,
      request: { method: "POST", url: resource.resourceType },
    };
    (this.current ? this.current.entries : this.head).push(entry);
    return `urn:uuid:${uuid}`;
  }

  /** Runs `fill` with new entries grouped at `at`, so the bundle comes out in date order. */
  at(at: number, fill: () => void): void {
    const group: Group = { at, seq: this.groups.length, entries: [] };
    this.groups.push(group);
    const outer = this.current;
    this.current = group;
    try {
      fill();
    } finally {
      this.current = outer;
    }
  }

  hospital(): string {
    if (this.hospitalRef === undefined) {
      const town = TOWNS[this.town] as Town;
      const org: Organization = {
        resourceType: "Organization",
        active: true,
        type: [concept("http://terminology.hl7.org/CodeSystem/organization-type", ["prov", "Healthcare Provider"])],
        name: `${titleCase(town.city)} ${HOSPITAL_WORDS[this.town % HOSPITAL_WORDS.length]} Hospital`,
        telecom: [{ system: "phone", value: `${town.phone}${String(900 + (this.town % 100)).slice(-3)}`, use: "work" }],
        address: [{ use: "work", city: town.city, postalCode: `${town.outward[0]} 1AA` }],
      };
      const outer = this.current;
      this.current = undefined;
      this.hospitalRef = this.add(org);
      this.current = outer;
    }
    return this.hospitalRef;
  }

  encounter(
    start: number,
    type: Code,
    setting: "gp" | "emergency" | "inpatient" | "virtual",
    label?: SensitivityCode,
    reason?: string,
  ): Visit {
    const rng = this.rng;
    const minutes =
      setting === "inpatient" ? rng.int(2, 7) * 24 * 60 : setting === "emergency" ? rng.int(90, 360) : rng.int(10, 25);
    const end = Math.min(start + minutes * 60_000, this.end);
    const classCode: Code =
      setting === "inpatient"
        ? ["IMP", "inpatient encounter"]
        : setting === "emergency"
          ? ["EMER", "emergency"]
          : setting === "virtual"
            ? ["VR", "virtual"]
            : ["AMB", "ambulatory"];
    const encounter: Encounter = {
      resourceType: "Encounter",
      status: "finished",
      class: { system: ACT_CODE, code: classCode[0], display: classCode[1] },
      type: [concept(SNOMED, type)],
      subject: ref(this.patientRef),
      period: { start: fhirDateTime(start), end: fhirDateTime(end) },
    };
    if (setting === "gp" || setting === "virtual") {
      encounter.participant = [{ individual: { ...ref(this.gpRef), type: "Practitioner" } }];
      encounter.serviceProvider = ref(this.practiceRef);
    } else {
      encounter.serviceProvider = ref(this.hospital());
    }
    if (reason !== undefined) encounter.reasonReference = [ref(reason)];
    return { ref: this.add(encounter, label), start, end };
  }

  observation(
    visit: Visit,
    measure: Measure,
    value: number,
    decimals: number,
    label?: SensitivityCode,
    referenceRange?: readonly [number, number],
  ): string {
    const obs: Observation = {
      resourceType: "Observation",
      status: "final",
      category: [concept(OBS_CATEGORY, [measure.category, categoryDisplay(measure.category)])],
      code: concept(LOINC, measure.code),
      subject: ref(this.patientRef),
      encounter: ref(visit.ref),
      effectiveDateTime: fhirDateTime(visit.start),
      issued: fhirDateTime(this.issuedAfter(visit.start, measure.category === "laboratory")),
      valueQuantity: quantity(round(value, decimals), measure),
    };
    if (referenceRange) {
      obs.referenceRange = [
        {
          low: quantity(referenceRange[0], measure),
          high: quantity(referenceRange[1], measure),
        },
      ];
    }
    return this.add(obs, label);
  }

  issuedAfter(at: number, lab: boolean): number {
    return Math.min(at + (lab ? this.rng.int(4, 48) * 3_600_000 : this.rng.int(1, 15) * 60_000), this.end);
  }

  vitals(visit: Visit, full: boolean, measureHeight = true, askSmoking = false): void {
    const rng = this.rng;
    const age = this.ageAt(visit.start);
    const height = heightAt(age, this.sex, this.adultHeight) + rng.normal(0, 0.6);
    const bmi = bmiAt(age, this.bmiBase) + rng.normal(0, 0.4);
    const weight = bmi * (height / 100) ** 2;
    if (measureHeight) this.observation(visit, M.height, height, 1);
    this.observation(visit, M.weight, weight, 1);
    if (age < 2) {
      this.observation(visit, M.head, 35 + 11 * Math.sqrt(Math.max(age, 0)) + rng.normal(0, 0.5), 1);
      return;
    }
    this.observation(visit, M.bmi, weight / (height / 100) ** 2, 1);
    if (!full) return;
    if (age >= 16) {
      const hypertensive = this.hasCondition("38341003");
      const sys = 112 + 0.45 * (age - 16) + (hypertensive ? 14 : 0) + rng.normal(0, 8);
      const dia = 72 + 0.15 * (age - 16) + (hypertensive ? 8 : 0) + rng.normal(0, 5);
      this.bloodPressure(visit, sys, dia);
      if (askSmoking) this.smokingStatus(visit);
    }
    this.observation(visit, M.heartRate, age < 12 ? rng.normal(95, 10) : rng.normal(72, 9), 0);
  }

  bloodPressure(visit: Visit, systolic: number, diastolic: number): void {
    const obs: Observation = {
      resourceType: "Observation",
      status: "final",
      category: [concept(OBS_CATEGORY, ["vital-signs", "Vital Signs"])],
      code: concept(LOINC, BP_PANEL),
      subject: ref(this.patientRef),
      encounter: ref(visit.ref),
      effectiveDateTime: fhirDateTime(visit.start),
      issued: fhirDateTime(this.issuedAfter(visit.start, false)),
      component: [
        { code: concept(LOINC, M.systolic.code), valueQuantity: quantity(Math.round(systolic), M.systolic) },
        { code: concept(LOINC, M.diastolic.code), valueQuantity: quantity(Math.round(diastolic), M.diastolic) },
      ],
    };
    this.add(obs);
  }

  smokingStatus(visit: Visit): void {
    const value: Code =
      this.smoker === "never"
        ? ["266919005", "Never smoked tobacco"]
        : this.smoker === "ex"
          ? ["8517006", "Ex-smoker"]
          : ["77176002", "Smoker"];
    this.add({
      resourceType: "Observation",
      status: "final",
      category: [concept(OBS_CATEGORY, ["social-history", "Social History"])],
      code: concept(LOINC, SMOKING_STATUS),
      subject: ref(this.patientRef),
      encounter: ref(visit.ref),
      effectiveDateTime: fhirDateTime(visit.start),
      issued: fhirDateTime(this.issuedAfter(visit.start, false)),
      valueCodeableConcept: concept(SNOMED, value),
    } satisfies Observation);
  }

  /** A lab report: the panel's results as Observations and a DiagnosticReport listing them. */
  labReport(
    visit: Visit,
    panel: Code,
    results: readonly (readonly [Measure, number, number, (readonly [number, number])?])[],
    label?: SensitivityCode,
  ): string {
    const refs = results.map(([measure, value, decimals, range]) =>
      this.observation(visit, measure, value, decimals, label, range),
    );
    const report: DiagnosticReport = {
      resourceType: "DiagnosticReport",
      status: "final",
      category: [concept("http://terminology.hl7.org/CodeSystem/v2-0074", ["LAB", "Laboratory"])],
      code: concept(LOINC, panel),
      subject: ref(this.patientRef),
      encounter: ref(visit.ref),
      effectiveDateTime: fhirDateTime(visit.start),
      issued: fhirDateTime(this.issuedAfter(visit.start, true)),
      performer: [ref(this.hospital())],
      result: refs.map(ref),
    };
    return this.add(report, label);
  }

  condition(
    visit: Visit,
    code: Code,
    onset: number,
    options: { resolvedAt?: number; problem?: boolean; label?: SensitivityCode } = {},
  ): string {
    const resolved = options.resolvedAt !== undefined && options.resolvedAt <= this.end;
    const condition: Condition = {
      resourceType: "Condition",
      clinicalStatus: concept(CONDITION_CLINICAL, resolved ? ["resolved", "Resolved"] : ["active", "Active"]),
      verificationStatus: concept(CONDITION_VERIFICATION, ["confirmed", "Confirmed"]),
      category: [
        concept(
          CONDITION_CATEGORY,
          options.problem ? ["problem-list-item", "Problem List Item"] : ["encounter-diagnosis", "Encounter Diagnosis"],
        ),
      ],
      code: concept(SNOMED, code),
      subject: ref(this.patientRef),
      encounter: ref(visit.ref),
      onsetDateTime: fhirDateTime(Math.max(this.birth, Math.min(onset, visit.start))),
      recordedDate: fhirDateTime(visit.start),
    };
    if (resolved) condition.abatementDateTime = fhirDateTime(options.resolvedAt as number);
    const reference = this.add(condition, options.label);
    this.conditions.push(code[0]);
    return reference;
  }

  conditions: string[] = [];

  hasCondition(code: string): boolean {
    return this.conditions.includes(code);
  }

  medication(visit: Visit, med: Med, reason: string | undefined, chronic: boolean, label?: SensitivityCode): string {
    const status: MedicationRequest["status"] = chronic ? (this.end < this.now ? "stopped" : "active") : "completed";
    const request: MedicationRequest = {
      resourceType: "MedicationRequest",
      status,
      intent: "order",
      medicationCodeableConcept: { ...concept(DMD, MED[med]), text: MED[med][1] },
      subject: ref(this.patientRef),
      encounter: ref(visit.ref),
      authoredOn: fhirDateTime(visit.start),
      requester: { ...ref(this.gpRef), type: "Practitioner" },
      courseOfTherapyType: concept(
        COURSE_OF_THERAPY,
        chronic ? ["continuous", "Continuous long term therapy"] : ["acute", "Short course (acute) therapy"],
      ),
      dosageInstruction: [{ text: DOSAGE[med] }],
    };
    if (reason !== undefined) request.reasonReference = [ref(reason)];
    return this.add(request, label);
  }

  procedure(visit: Visit, code: Code, reason: string | undefined, label?: SensitivityCode): string {
    const procedure: Procedure = {
      resourceType: "Procedure",
      status: "completed",
      code: concept(SNOMED, code),
      subject: ref(this.patientRef),
      encounter: ref(visit.ref),
      performedPeriod: { start: fhirDateTime(visit.start), end: fhirDateTime(visit.end) },
    };
    if (reason !== undefined) procedure.reasonReference = [ref(reason)];
    return this.add(procedure, label);
  }

  carePlan(
    visit: Visit,
    title: string,
    category: Code | undefined,
    activities: readonly Code[],
    addresses: string,
    label?: SensitivityCode,
  ): string {
    const active = this.end >= this.now;
    const plan: CarePlan = {
      resourceType: "CarePlan",
      status: active ? "active" : "completed",
      intent: "plan",
      title,
      subject: ref(this.patientRef),
      encounter: ref(visit.ref),
      period: active
        ? { start: fhirDateTime(visit.start) }
        : { start: fhirDateTime(visit.start), end: fhirDateTime(this.end) },
      created: fhirDateTime(visit.start),
      author: { ...ref(this.gpRef), type: "Practitioner" },
      addresses: [ref(addresses)],
      activity: activities.map((code) => ({
        detail: { code: concept(SNOMED, code), status: active ? "in-progress" : "completed" },
      })),
    };
    if (category) plan.category = [concept(SNOMED, category)];
    return this.add(plan, label);
  }

  immunization(visit: Visit, vaccine: keyof typeof VACCINE, dose?: number): void {
    const imm: Immunization = {
      resourceType: "Immunization",
      status: "completed",
      vaccineCode: concept(DMD, VACCINE[vaccine]),
      patient: ref(this.patientRef),
      encounter: ref(visit.ref),
      occurrenceDateTime: fhirDateTime(visit.start),
      recorded: fhirDateTime(visit.start),
      primarySource: true,
      lotNumber: `${String.fromCharCode(65 + this.rng.int(0, 25))}${this.rng.int(10000, 99999)}`,
      site: concept(SNOMED, ["368208006", "Left upper arm structure"]),
      route: concept(SNOMED, ["78421000", "Intramuscular route"]),
      doseQuantity: { value: 0.5, unit: "mL", system: UCUM, code: "mL" },
      performer: [{ actor: ref(this.gpRef) }],
    };
    if (dose !== undefined) imm.protocolApplied = [{ doseNumberPositiveInt: dose }];
    this.add(imm);
  }

  // -------------------------------------------------------------------------------------------------------------
  // The record, module by module.

  build(nhsNumber: string): Bundle {
    this.demographics(nhsNumber);
    const age = this.ageAt(this.end);
    if (age < 18) this.childhood();
    this.chronicConditions();
    this.healthChecks();
    this.acuteIllnesses();
    this.emergencies();
    this.bloodTests();
    this.allergies();
    this.adultImmunisations();
    this.pregnancy();
    this.mentalHealth();
    this.sexualHealth();
    this.hiv();
    this.substanceUse();
    this.genetics();
    this.genderIdentity();
    this.fertility();
    this.groups.sort((x, y) => x.at - y.at || x.seq - y.seq);
    const entry = [...this.head];
    for (const g of this.groups) for (const e of g.entries) entry.push(e);
    return { resourceType: "Bundle", type: "transaction", entry };
  }

  demographics(nhsNumber: string): void {
    const rng = this.rng;
    const town = TOWNS[this.town] as Town;
    const practice = this.practice;
    this.patientRef = `urn:uuid:${rng.uuid()}`;
    const org: Organization = {
      resourceType: "Organization",
      identifier: [{ system: ODS_SYSTEM, value: practice.ods }],
      active: true,
      type: [concept("http://terminology.hl7.org/CodeSystem/organization-type", ["prov", "Healthcare Provider"])],
      name: practice.name,
      telecom: [{ system: "phone", value: `${town.phone}${String(100 + practice.ods.charCodeAt(5)).slice(-3)}` }],
      address: [
        {
          use: "work",
          line: [`${1 + (practice.ods.charCodeAt(4) % 9)} ${STREETS[practice.ods.charCodeAt(5) % STREETS.length]}`],
          city: town.city,
          postalCode: `${town.outward[practice.ods.charCodeAt(5) % town.outward.length]} 2AB`,
        },
      ],
    };
    const gp = this.gp;
    const practitioner: Practitioner = {
      resourceType: "Practitioner",
      active: true,
      name: [{ use: "official", family: gp.family, given: [gp.given], prefix: ["Dr"] }],
      telecom: [{ system: "phone", value: org.telecom?.[0]?.value as string, use: "work" }],
      gender: gp.gender,
    };
    const given = rng.pick(this.sex === "female" ? FEMALE_GIVEN : MALE_GIVEN);
    const middle = rng.chance(0.4) ? rng.pick(this.sex === "female" ? FEMALE_GIVEN : MALE_GIVEN) : undefined;
    const family = rng.pick(FAMILY);
    const adult = this.ageAt(this.now) >= 18;
    const prefix = adult
      ? this.sex === "male"
        ? "Mr"
        : rng.weighted([
            [45, "Mrs"],
            [35, "Ms"],
            [20, "Miss"],
          ])
      : undefined;
    const ethnicity = rng.weighted(ETHNICITY);
    const patient: Patient = {
      resourceType: "Patient",
      meta: { profile: [`${UKCORE}/UKCore-Patient`] },
      extension: [
        {
          url: `${UKCORE}/Extension-UKCore-EthnicCategory`,
          valueCodeableConcept: concept("https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategoryEngland", ethnicity),
        },
      ],
      identifier: [
        {
          extension: [
            {
              url: `${UKCORE}/Extension-UKCore-NHSNumberVerificationStatus`,
              valueCodeableConcept: concept(
                "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland",
                ["01", "Number present and verified"],
              ),
            },
          ],
          system: NHS_NUMBER_SYSTEM,
          value: nhsNumber,
        },
      ],
      active: true,
      name: [
        {
          use: "official",
          family,
          given: middle !== undefined && middle !== given ? [given, middle] : [given],
          ...(prefix ? { prefix: [prefix] } : {}),
        },
      ],
      telecom: [{ system: "phone", value: `07700 900${String(rng.int(0, 999)).padStart(3, "0")}`, use: "mobile" }],
      gender: this.sex,
      birthDate: fhirDate(this.birth),
      address: [
        {
          use: "home",
          line: [`${rng.int(1, 180)} ${rng.pick(STREETS)}`],
          city: town.city,
          postalCode: `${rng.pick(town.outward)} ${rng.int(1, 9)}${INWARD_LETTERS[rng.int(0, 19)]}${INWARD_LETTERS[rng.int(0, 19)]}`,
        },
      ],
      generalPractitioner: [{ reference: "", type: "Organization", display: practice.name }],
    };
    if (this.end < this.now) patient.deceasedDateTime = fhirDateTime(this.end);
    if (adult) {
      patient.maritalStatus = concept(
        "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
        rng.weighted<Code>([
          [45, ["M", "Married"]],
          [35, ["S", "Never Married"]],
          [12, ["D", "Divorced"]],
          [8, ["W", "Widowed"]],
        ]),
      );
    }
    // Patient first, then the organisations it refers to (the patient's fullUrl is fixed above).
    this.head.push({ fullUrl: this.patientRef, resource: patient, request: { method: "POST", url: "Patient" } });
    this.practiceRef = this.add(org);
    this.gpRef = this.add(practitioner);
    (patient.generalPractitioner as Reference[])[0] = {
      reference: this.practiceRef,
      type: "Organization",
      display: practice.name,
    };
  }

  childhood(): void {
    const b = this.birth;
    // Newborn examination a few days after birth.
    const newborn = b + this.rng.int(1, 3) * DAY + 10 * 3_600_000;
    if (newborn <= this.latest) {
      this.at(newborn, () => this.vitals(this.encounter(newborn, ENC_CHECKUP, "gp"), false));
    }
    // The routine schedule (simplified): 8, 12, 16 weeks; 1 year; 3 years 4 months.
    const schedule: readonly [number, (keyof typeof VACCINE)[], number][] = [
      [8 * 7 * DAY, ["dtapIpvHib"], 1],
      [12 * 7 * DAY, ["dtapIpvHib", "pcv"], 2],
      [16 * 7 * DAY, ["dtapIpvHib"], 3],
      [YEAR, ["mmr", "pcv"], 1],
      [3 * YEAR + 122 * DAY, ["mmr"], 2],
    ];
    for (const [offset, vaccines, dose] of schedule) {
      const at = startOfDay(b + offset + this.rng.int(0, 10) * DAY) + this.rng.int(9, 16) * 3_600_000;
      if (at > this.latest) break;
      this.at(at, () => {
        const visit = this.encounter(at, ENC_CHECKUP, "gp");
        if (offset <= YEAR) this.vitals(visit, false);
        for (const v of vaccines) this.immunization(visit, v, v === "pcv" && offset === YEAR ? 2 : dose);
      });
    }
  }

  healthChecks(): void {
    // Growth checks at 2, 5, 8, 11 and 14, then as an adult a check every few years (yearly past 65), the last
    // three at most; all within the kept record.
    const times: number[] = [];
    for (const years of [2, 5, 8, 11, 14]) times.push(this.birth + years * YEAR + this.rng.int(0, 60) * DAY);
    const every = this.ageAt(this.end) >= 65 ? YEAR : this.rng.int(2, 4) * YEAR;
    const adultFrom = Math.max(this.historyStart, this.birth + 18 * YEAR);
    const adult: number[] = [];
    for (let t = this.latest - this.rng.float() * every; t >= adultFrom && adult.length < 3; t -= every) adult.push(t);
    times.push(...adult.reverse());
    let first = true;
    for (const t of times) {
      if (t < this.historyStart) continue;
      const at = this.dayIn(t, t);
      if (at === undefined) continue;
      const grownUp = this.ageAt(at) >= 18;
      // An adult's height is measured once; smoking status is asked at the first adult check.
      const measureHeight = !grownUp || first;
      const askSmoking = grownUp && first;
      if (grownUp) first = false;
      this.at(at, () => this.vitals(this.encounter(at, ENC_CHECKUP, "gp"), true, measureHeight, askSmoking));
    }
  }

  chronicConditions(): void {
    const rng = this.rng;
    const age = this.ageAt(this.end);
    for (const c of CHRONIC) {
      if (!rng.chance(c.prevalence(age, this.sex))) continue;
      const onsetAge = c.minOnsetAge + rng.float() * Math.max(0, age - c.minOnsetAge);
      const at = this.dayIn(this.birth + onsetAge * YEAR, this.birth + onsetAge * YEAR + 30 * DAY);
      if (at === undefined) continue;
      if (
        c.code[0] === "44054006" ||
        c.code[0] === "195967001" ||
        c.code[0] === "13645005" ||
        c.code[0] === "84114007"
      ) {
        this.atRisk = true;
      }
      let conditionRef = "";
      this.at(at, () => {
        const visit = this.encounter(at, ENC_PROBLEM, "gp");
        conditionRef = this.condition(visit, c.code, at - rng.int(0, 60) * DAY, { problem: true });
        for (const med of c.meds) this.medication(visit, med, conditionRef, true);
        if (c.plan) this.carePlan(visit, `${c.code[1]} care plan`, c.plan.category, c.plan.activities, conditionRef);
        if (c.review === "hba1c") this.hba1c(visit, true);
      });
      if (c.review === undefined) continue;
      // Annual reviews: the last two at most.
      for (let k = 1; k <= 2; k++) {
        const when = this.dayIn(this.latest - k * YEAR + 1, this.latest - (k - 1) * YEAR);
        if (when === undefined || when <= at) continue;
        this.at(when, () => {
          const visit = this.encounter(when, ENC_PROBLEM, "gp", undefined, conditionRef);
          if (c.review === "hba1c") this.hba1c(visit, true);
          else if (c.review === "bp") {
            const a = this.ageAt(when);
            this.bloodPressure(visit, 130 + 0.3 * (a - 30) + rng.normal(0, 9), 82 + rng.normal(0, 6));
          } else if (c.review === "renal") this.renal(visit, true);
          else {
            this.observation(visit, M.respRate, rng.normal(16, 2), 0);
            this.observation(visit, M.spo2, clamp(rng.normal(c.code[0] === "13645005" ? 93 : 97, 1.5), 85, 100), 0);
          }
        });
      }
    }
  }

  hba1c(visit: Visit, diabetic: boolean): void {
    const value = diabetic ? clamp(this.rng.normal(58, 10), 40, 110) : clamp(this.rng.normal(37, 3), 28, 47);
    this.labReport(visit, M.hba1c.code, [[M.hba1c, value, 0, [20, 41]]]);
  }

  renal(visit: Visit, impaired: boolean): void {
    const rng = this.rng;
    const creat = impaired ? rng.normal(150, 30) : rng.normal(this.sex === "female" ? 70 : 85, 12);
    const egfr = clamp((impaired ? 38 : 88) + rng.normal(0, 10), 8, 120);
    this.labReport(visit, METABOLIC_PANEL, [
      [M.sodium, rng.normal(139, 2.5), 0, [133, 146]],
      [M.potassium, rng.normal(4.3, 0.35), 1, [3.5, 5.3]],
      [M.creatinine, creat, 0, this.sex === "female" ? [45, 84] : [59, 104]],
      [M.egfr, egfr, 0],
    ]);
  }

  acuteIllnesses(): void {
    const rng = this.rng;
    const age = this.ageAt(this.end);
    const count = rng.int(0, 3) + (age < 10 ? 1 : 0);
    for (let i = 0; i < count; i++) {
      const at = this.dayIn(this.historyStart, this.latest);
      if (at === undefined) return;
      const ageThen = this.ageAt(at);
      const options = ACUTE.filter((c) => ageThen >= c.minAge && ageThen <= c.maxAge);
      if (options.length === 0) continue;
      const c = rng.pick(options);
      // COVID-19 only from 2020.
      if (c.code[0] === "840539006" && at < Date.UTC(2020, 2, 1)) continue;
      this.at(at, () => {
        const visit = this.encounter(at, ENC_SYMPTOM, "gp");
        if (c.fever) this.observation(visit, M.temperature, rng.normal(38.2, 0.4), 1);
        const cond = this.condition(visit, c.code, at - rng.int(1, 5) * DAY, {
          resolvedAt: at + rng.int(7, 21) * DAY,
        });
        if (c.procedure) this.procedure(visit, c.procedure, cond);
        if (c.med) this.medication(visit, c.med(ageThen), cond, false);
      });
    }
  }

  emergencies(): void {
    const rng = this.rng;
    if (rng.chance(0.25)) {
      const at = this.dayIn(this.historyStart, this.latest);
      if (at !== undefined) {
        const injury = rng.pick(INJURIES);
        this.at(at, () => {
          const visit = this.encounter(at, ENC_EMERGENCY, "emergency");
          this.observation(visit, M.heartRate, rng.normal(88, 10), 0);
          const cond = this.condition(visit, injury.code, at - rng.int(1, 6) * 3_600_000, {
            resolvedAt: at + rng.int(14, 60) * DAY,
          });
          if (injury.procedure) this.procedure(visit, injury.procedure, cond);
          this.medication(visit, injury.med, cond, false);
          if (injury.code[0] === "65966004") {
            this.carePlan(
              visit,
              "Fracture care",
              ["385691007", "Fracture care"],
              [["183051005", "Recommendation to rest"]],
              cond,
            );
          }
        });
      }
    }
    // A heart attack for a few older people: emergency admission, PCI, then antiplatelets for life.
    const age = this.ageAt(this.end);
    if (age >= 50 && rng.chance(age >= 70 ? 0.06 : 0.03)) {
      const at = this.dayIn(Math.max(this.historyStart, this.birth + 50 * YEAR), this.latest - 30 * DAY);
      if (at === undefined) return;
      this.at(at, () => {
        const visit = this.encounter(at, ENC_SURGICAL, "inpatient");
        this.observation(visit, M.heartRate, rng.normal(96, 12), 0);
        const mi = this.condition(visit, ["22298006", "Myocardial infarction"], at - rng.int(1, 5) * 3_600_000, {
          resolvedAt: at + 28 * DAY,
        });
        this.procedure(visit, ["415070008", "Percutaneous coronary intervention"], mi);
        this.medication(visit, "aspirin", mi, true);
        this.medication(visit, "clopidogrel", mi, true);
      });
    }
  }

  bloodTests(): void {
    // One routine blood test in the kept record from 40: full blood count, lipids, and kidney function from 60.
    if (this.ageAt(this.end) < 40) return;
    const at = this.dayIn(Math.max(this.historyStart, this.birth + 40 * YEAR), this.latest);
    if (at === undefined) return;
    const rng = this.rng;
    this.at(at, () => {
      const visit = this.encounter(at, ENC_CHECKUP, "gp");
      const female = this.sex === "female";
      this.labReport(visit, FBC_PANEL, [
        [M.haemoglobin, rng.normal(female ? 132 : 148, 10), 0, female ? [115, 165] : [130, 180]],
        [M.wbc, clamp(rng.normal(6.8, 1.5), 3, 14), 1, [4, 11]],
        [M.platelets, clamp(rng.normal(260, 55), 120, 480), 0, [150, 400]],
      ]);
      this.labReport(visit, LIPID_PANEL, [
        [M.cholesterol, clamp(rng.normal(5.1, 0.9), 2.8, 8.5), 1],
        [M.hdl, clamp(rng.normal(female ? 1.6 : 1.3, 0.3), 0.7, 2.8), 1],
        [M.triglycerides, clamp(rng.normal(1.5, 0.6), 0.4, 5), 1],
      ]);
      if (this.ageAt(at) >= 60) this.renal(visit, this.hasCondition("709044004"));
    });
  }

  allergies(): void {
    const rng = this.rng;
    if (!rng.chance(0.18)) return;
    const n = rng.chance(0.25) ? 2 : 1;
    const chosen = new Set<number>();
    for (let i = 0; i < n; i++) chosen.add(rng.int(0, ALLERGIES.length - 1));
    for (const i of [...chosen].sort((x, y) => x - y)) {
      const allergy = ALLERGIES[i] as (typeof ALLERGIES)[number];
      const onset = this.dayIn(this.birth + 180 * DAY, Math.min(this.birth + 25 * YEAR, this.latest));
      if (onset === undefined) continue;
      const recorded = this.dayIn(Math.max(onset, this.historyStart), this.latest) ?? onset;
      const high = allergy.high === true && rng.chance(0.5);
      const resource: AllergyIntolerance = {
        resourceType: "AllergyIntolerance",
        clinicalStatus: concept(ALLERGY_CLINICAL, ["active", "Active"]),
        verificationStatus: concept(ALLERGY_VERIFICATION, ["confirmed", "Confirmed"]),
        type: "allergy",
        category: [allergy.category],
        criticality: high ? "high" : "low",
        code: concept(SNOMED, allergy.code),
        patient: ref(this.patientRef),
        onsetDateTime: fhirDate(onset),
        recordedDate: fhirDateTime(recorded),
        recorder: { ...ref(this.gpRef), type: "Practitioner" },
        reaction: [
          {
            manifestation: [concept(SNOMED, high ? ANAPHYLAXIS : rng.pick(REACTIONS_MILD))],
            severity: high ? "severe" : "mild",
          },
        ],
      };
      this.at(recorded, () => this.add(resource));
    }
  }

  adultImmunisations(): void {
    const rng = this.rng;
    // Flu each autumn for the last three seasons: everyone 65 and over, and adults in a clinical risk group.
    for (let k = 0; k < 3; k++) {
      const year = new Date(this.latest).getUTCFullYear() - k - (new Date(this.latest).getUTCMonth() < 9 ? 1 : 0);
      const at = this.dayIn(Date.UTC(year, 9, 1), Date.UTC(year, 10, 30));
      if (at === undefined) continue;
      const ageThen = this.ageAt(at);
      if (!(ageThen >= 65 || (ageThen >= 18 && this.atRisk))) continue;
      this.at(at, () => this.immunization(this.encounter(at, ENC_CHECKUP, "gp"), "flu"));
    }
    // COVID-19: two doses in the first half of 2021 for most adults.
    const first = this.dayIn(Date.UTC(2021, 0, 4), Date.UTC(2021, 4, 31));
    if (first === undefined || this.ageAt(first) < 18 || !rng.chance(0.85)) return;
    const vaccine = rng.chance(0.5) ? "covidPfizer" : "covidAz";
    const second = this.dayIn(first + 56 * DAY, first + 84 * DAY);
    for (const [dose, at] of [
      [1, first],
      [2, second],
    ] as const) {
      if (at === undefined) continue;
      this.at(at, () => this.immunization(this.encounter(at, ENC_CHECKUP, "gp"), vaccine, dose));
    }
  }

  pregnancy(): void {
    const rng = this.rng;
    if (this.sex !== "female" || !rng.chance(0.12)) return;
    const start = this.dayIn(Math.max(this.historyStart, this.birth + 18 * YEAR), this.birth + 44 * YEAR);
    if (start === undefined || start + 280 * DAY > this.latest) return;
    let pregnancyRef = "";
    this.at(start, () => {
      const visit = this.encounter(start, ENC_PRENATAL, "gp");
      pregnancyRef = this.condition(visit, ["72892002", "Normal pregnancy"], start - rng.int(42, 70) * DAY, {
        problem: true,
        resolvedAt: start + rng.int(200, 225) * DAY,
      });
      this.bloodPressure(visit, rng.normal(112, 8), rng.normal(70, 6));
      this.observation(visit, M.weight, bmiAt(25, this.bmiBase) * (this.adultHeight / 100) ** 2, 1);
    });
    if (rng.chance(0.3)) {
      const at = startOfDay(start + rng.int(200, 215) * DAY) + 9 * 3_600_000;
      this.at(at, () => {
        const visit = this.encounter(at, ENC_SURGICAL, "inpatient");
        this.procedure(visit, ["11466000", "Cesarean section"], pregnancyRef);
      });
    }
  }

  mentalHealth(): void {
    const rng = this.rng;
    const age = this.ageAt(this.end);
    const p = age < 13 ? 0 : age < 18 ? 0.08 : 0.15;
    if (!rng.chance(p)) return;
    const severe = age >= 18 && rng.chance(0.08);
    const code: Code = severe
      ? rng.pick<Code>([
          ["58214004", "Schizophrenia"],
          ["13746004", "Bipolar disorder"],
        ])
      : rng.pick<Code>([
          ["35489007", "Depressive disorder"],
          ["370143000", "Major depressive disorder"],
          ["197480006", "Anxiety disorder"],
          ["21897009", "Generalized anxiety disorder"],
          ["47505003", "Posttraumatic stress disorder"],
        ]);
    // Psychiatric diagnoses carry PSY, common mental health problems MH: both are the contract's mental-health label.
    const label: SensitivityCode = severe ? "PSY" : "MH";
    const at = this.dayIn(Math.max(this.historyStart, this.birth + 13 * YEAR), this.latest);
    if (at === undefined) return;
    const anxiety = code[1].includes("nxiety") || code[1].includes("stress");
    let conditionRef = "";
    this.at(at, () => {
      const visit = this.encounter(at, ENC_PROBLEM, "gp", label);
      this.observation(visit, anxiety ? M.gad7 : M.phq9, anxiety ? rng.int(10, 19) : rng.int(10, 24), 0, label);
      conditionRef = this.condition(visit, code, at - rng.int(14, 120) * DAY, { problem: true, label });
      if (code[0] === "13746004") this.medication(visit, "lithium", conditionRef, true, label);
      else if (!severe && age >= 18) {
        this.medication(
          visit,
          rng.pick<Med>(["sertraline", "citalopram", "fluoxetine", "mirtazapine"]),
          conditionRef,
          true,
          label,
        );
      }
      this.carePlan(
        visit,
        "Mental health care plan",
        undefined,
        [["228557008", "Cognitive and behavioral therapy"]],
        conditionRef,
        label,
      );
    });
    // A course of CBT a couple of months later, and a follow-up score.
    const later = this.dayIn(at + 42 * DAY, at + 120 * DAY);
    if (later === undefined) return;
    this.at(later, () => {
      const visit = this.encounter(later, ENC_PROBLEM, "virtual", label, conditionRef);
      this.procedure(visit, ["228557008", "Cognitive and behavioral therapy"], conditionRef, label);
      this.observation(visit, anxiety ? M.gad7 : M.phq9, rng.int(3, 12), 0, label);
    });
  }

  sexualHealth(): void {
    const rng = this.rng;
    const age = this.ageAt(this.end);
    if (age < 16) return;
    const window = Math.max(this.historyStart, this.birth + 16 * YEAR);
    const youngEnough = Math.min(this.latest, this.birth + 45 * YEAR);
    // An STI screen at a sexual health clinic; some are positive and treated.
    if (rng.chance(0.07)) {
      const at = this.dayIn(window, youngEnough);
      if (at !== undefined) {
        this.at(at, () => {
          const visit = this.encounter(at, ENC_SYMPTOM, "gp", "STD");
          const positive = rng.chance(0.45);
          this.add(
            {
              resourceType: "Observation",
              status: "final",
              category: [concept(OBS_CATEGORY, ["laboratory", "Laboratory"])],
              code: concept(LOINC, CHLAMYDIA_TEST),
              subject: ref(this.patientRef),
              encounter: ref(visit.ref),
              effectiveDateTime: fhirDateTime(at),
              issued: fhirDateTime(this.issuedAfter(at, true)),
              valueCodeableConcept: concept(SNOMED, positive ? POSITIVE : NEGATIVE),
            } satisfies Observation,
            "STD",
          );
          if (!positive) return;
          const gonorrhoea = rng.chance(0.2);
          const cond = this.condition(
            visit,
            gonorrhoea ? ["15628003", "Gonorrhea"] : ["105629000", "Chlamydial infection"],
            at - rng.int(7, 30) * DAY,
            { resolvedAt: at + rng.int(14, 28) * DAY, label: "STD" },
          );
          if (!gonorrhoea) this.medication(visit, "doxycycline", cond, false, "STD");
        });
      }
    }
    // Contraception (implant) for some women.
    if (this.sex === "female" && rng.chance(0.1)) {
      const at = this.dayIn(window, youngEnough);
      if (at !== undefined) {
        this.at(at, () => {
          const visit = this.encounter(at, ENC_CHECKUP, "gp", "SEX");
          this.procedure(visit, ["169553002", "Insertion of subcutaneous contraceptive"], undefined, "SEX");
        });
      }
    }
  }

  hiv(): void {
    const rng = this.rng;
    if (this.ageAt(this.end) < 18 || !rng.chance(0.012)) return;
    const at = this.dayIn(Math.max(this.historyStart, this.birth + 18 * YEAR), this.latest);
    if (at === undefined) return;
    let conditionRef = "";
    this.at(at, () => {
      const visit = this.encounter(at, ENC_PROBLEM, "gp", "HIV");
      conditionRef = this.condition(visit, ["86406008", "Human immunodeficiency virus infection"], at - 30 * DAY, {
        problem: true,
        label: "HIV",
      });
      this.observation(visit, M.viralLoad, rng.int(5_000, 200_000), 0, "HIV");
      this.observation(visit, M.cd4, rng.int(200, 650), 0, "HIV", [500, 1500]);
      this.medication(visit, "dolutegravir", conditionRef, true, "HIV");
    });
    const review = this.dayIn(at + 90 * DAY, at + 200 * DAY);
    if (review === undefined) return;
    this.at(review, () => {
      const visit = this.encounter(review, ENC_PROBLEM, "gp", "HIV", conditionRef);
      // Undetectable on treatment.
      this.observation(visit, M.viralLoad, rng.int(0, 49), 0, "HIV");
      this.observation(visit, M.cd4, rng.int(450, 900), 0, "HIV", [500, 1500]);
    });
  }

  substanceUse(): void {
    const rng = this.rng;
    if (this.ageAt(this.end) < 18 || !rng.chance(0.04)) return;
    const alcohol = rng.chance(0.7);
    const label: SensitivityCode = alcohol ? "ETH" : "SUD";
    const at = this.dayIn(Math.max(this.historyStart, this.birth + 18 * YEAR), this.latest);
    if (at === undefined) return;
    this.at(at, () => {
      const visit = this.encounter(at, ENC_PROBLEM, "gp", label);
      const code: Code = alcohol ? ["66590003", "Alcohol dependence"] : ["75544000", "Opioid dependence"];
      const cond = this.condition(visit, code, at - rng.int(180, 2000) * DAY, { problem: true, label });
      if (alcohol) {
        this.observation(visit, M.auditC, rng.int(8, 12), 0, label);
        this.medication(visit, "chlordiazepoxide", cond, false, label);
      }
    });
  }

  genetics(): void {
    const rng = this.rng;
    if (!rng.chance(0.006)) return;
    const code: Code = rng.chance(0.5)
      ? ["190905008", "Cystic fibrosis"]
      : ["41040004", "Complete trisomy 21 syndrome"];
    const at = this.dayIn(Math.max(this.historyStart, this.birth + 30 * DAY), this.latest);
    if (at === undefined) return;
    this.at(at, () => {
      const visit = this.encounter(at, ENC_PROBLEM, "gp", "GDIS");
      this.condition(visit, code, this.birth, { problem: true, label: "GDIS" });
    });
  }

  genderIdentity(): void {
    const rng = this.rng;
    if (this.ageAt(this.end) < 16 || !rng.chance(0.006)) return;
    const at = this.dayIn(Math.max(this.historyStart, this.birth + 16 * YEAR), this.latest);
    if (at === undefined) return;
    this.at(at, () => {
      const visit = this.encounter(at, ENC_PROBLEM, "gp", "GENDER");
      this.condition(visit, ["93461009", "Gender dysphoria"], at - rng.int(90, 1000) * DAY, {
        problem: true,
        label: "GENDER",
      });
    });
  }

  fertility(): void {
    const rng = this.rng;
    if (this.sex !== "female" || this.ageAt(this.end) < 25 || !rng.chance(0.03)) return;
    const at = this.dayIn(
      Math.max(this.historyStart, this.birth + 25 * YEAR),
      Math.min(this.latest, this.birth + 43 * YEAR),
    );
    if (at === undefined) return;
    this.at(at, () => {
      const visit = this.encounter(at, ENC_SURGICAL, "inpatient", "FERTILITY");
      this.procedure(visit, ["52637005", "Test tube ovum fertilization"], undefined, "FERTILITY");
    });
  }
}

function categoryDisplay(category: Measure["category"]): string {
  switch (category) {
    case "vital-signs":
      return "Vital Signs";
    case "laboratory":
      return "Laboratory";
    case "survey":
      return "Survey";
    case "social-history":
      return "Social History";
  }
}

function quantity(value: number, measure: Measure): Quantity {
  return { value, unit: measure.unit, system: UCUM, code: measure.ucum };
}

/** Height in cm at an age: a simple growth curve towards the patient's adult height. */
function heightAt(age: number, sex: "female" | "male", adult: number): number {
  const scale = adult / (sex === "female" ? 163 : 176.5);
  if (age < 1) return (50 + 25 * age) * Math.min(1.05, Math.max(0.95, scale));
  if (age < 2) return (75 + 12 * (age - 1)) * scale ** 0.5;
  if (age < 12) return (87 + 6 * (age - 2)) * scale;
  const at12 = 147 * scale;
  if (age < 18) return at12 + (adult - at12) * ((age - 12) / 6);
  // Slow loss of height after 60.
  return adult - Math.max(0, age - 60) * 0.1;
}

/** BMI at an age: a child's BMI curve, then the adult baseline drifting upwards to 60. */
function bmiAt(age: number, base: number): number {
  if (age < 1) return 14 + 3 * age;
  if (age < 6) return 17 - 0.3 * (age - 1);
  if (age < 18) return 15.5 + ((base - 15.5) * (age - 6)) / 12;
  return base + Math.min(age - 18, 42) * 0.05;
}

// ---------------------------------------------------------------------------------------------------------------
// Public API.

/** The NHS number of patient `index` in a run with `seed`: distinct for distinct indexes (mod the test range). */
export function generatedNhsNumber(seed: string, index: number): string {
  const count = testNhsNumberCount();
  const h = sha256(`careledger/generate/nhs/v1\n${seed}`);
  let offset = 0;
  for (let i = 0; i < 6; i++) offset = offset * 256 + (h[i] as number);
  return testNhsNumber((offset + index) % count);
}

/** One patient's transaction Bundle: patient `index` of the run with `seed`, as of `now`. */
export function generatePatient(seed: string, index: number, now?: GenerateOptions["now"]): Bundle {
  if (!Number.isSafeInteger(index) || index < 0) throw new RangeError("index must be a non-negative integer");
  return new PatientBuilder(seed, index, parseNow(now)).build(generatedNhsNumber(seed, index));
}

/** The run's patients, one transaction Bundle each, in index order; lazily, so a million needs no memory. */
export function* generatePatients(options: GenerateOptions): Generator<Bundle, void, undefined> {
  const { patients, seed } = options;
  const start = options.start ?? 0;
  if (!Number.isSafeInteger(patients) || patients < 1 || patients > MAX_PATIENTS) {
    throw new RangeError(`patients must be a whole number from 1 to ${MAX_PATIENTS}`);
  }
  if (!Number.isSafeInteger(start) || start < 0) throw new RangeError("start must be a non-negative integer");
  const now = parseNow(options.now);
  for (let i = start; i < start + patients; i++) {
    yield new PatientBuilder(seed, i, now).build(generatedNhsNumber(seed, i));
  }
}
