// Import of FHIR data from elsewhere (`careledger import`, and the generated and third-party test data): transaction
// Bundles, NDJSON of Bundles, or bare resources. Each bundle is all or nothing: checked whole (`prepareTransaction`;
// an OperationOutcome names the entry and the problem), its new patients registered on the ledger, then ONE vault
// stage, anchored, confirmed — or aborted. Many bundles are pipelined: the next group is checked, registered and
// staged while the previous one is being anchored.
//
// What import does to the data, beyond `prepareTransaction`:
// - ids: every resource gets a new random id (source ids could carry personal data, and the vault stores ids in the
//   clear); a PUT entry is imported as a POST. A Patient's id is its ledger pseudonym (patients.ts). Relative
//   references to an entry of the same bundle (by its PUT url, the tail of its absolute fullUrl, or — for bare
//   resources and collections — its own id) and to resources imported earlier in the same run are rewritten to
//   the new ids; so are `urn:uuid:` ones (bundle.ts).
// - A record whose patient link names a Patient that is neither in the run nor registered (`Patient/72` in an HL7
//   example) is taken to name a patient known elsewhere by that source id: it is registered under the test-range NHS
//   number the id seeds, exactly as a Patient with that id and no NHS number would be, so the two meet if it comes.
// - Patients: identifiers are kept (US MRN, SSN, … stay as received, encrypted like everything else); a Patient with
//   no valid NHS number gets one from the 999 test range, seeded by its source id (or fullUrl), so importing the
//   same data again finds the same pseudonym; an invalid NHS number in the source is kept as data but not used.
// - Re-import: a Patient already registered (same NHS number) is updated (a new version), not duplicated; other
//   resources are created again (their source ids are not kept, so there is nothing to match them by).
// - Records of no patient (Organization, Practitioner, …) are stored with local commitments (write.ts).

import { randomUUID } from "node:crypto";
import { createReadStream, readdirSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Bundle } from "@medplum/fhirtypes";
import type { KeyPair } from "../../ledger/keys.ts";
import { type PutItem, type StagedWrite, VaultConflictError } from "../../vault/vault.ts";
import { type PreparedEntry, prepareTransaction, transactionResponse } from "../bundle.ts";
import { NHS_NUMBER_SYSTEM, testNhsNumber } from "../nhs-number.ts";
import { OperationOutcomeError } from "../outcome.ts";
import { STORED_TYPES } from "../validate.ts";
import type { FhirContext } from "./context.ts";
import {
  ensurePatients,
  isRegistered,
  type PatientRegistry,
  type PatientRequest,
  RegistrationError,
} from "./patients.ts";
import { entryResults, itemsOf, MAX_TRANSACTION_ENTRIES } from "./transaction.ts";
import { abortQuietly, nhsNumberOf, writeError } from "./write.ts";

export interface ImportOptions {
  /** Signs `patient.register`: an admin or clinician key of this organisation (`DIR/keys/admin.key`). */
  signer: KeyPair;
  registry: PatientRegistry;
  /** Largest bundle (entries); more is 413. Default 5,000. */
  maxEntries?: number;
}

/** What one run remembers across bundles: source `Type/id` → stored `Type/id`, for references between files. */
export interface ImportSession {
  aliases: Map<string, string>;
}

export function newSession(): ImportSession {
  return { aliases: new Map() };
}

/** A bundle checked and ready to store. */
export interface PlannedBundle {
  prepared: PreparedEntry[];
  items: PutItem[];
  /** New patients to register before staging: NHS number and the pseudonym proposed for it. */
  registrations: PatientRequest[];
  /** Entry index → the source names (`Type/srcId`) that entry was known by, for the session. */
  sourceNames: Map<number, string[]>;
  /** Patients this import registered (filled in by `registerPlanned`). */
  created: number;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const RELATIVE_RE = /^([A-Z][A-Za-z]{1,63})\/([A-Za-z0-9\-.]{1,64})$/;

/**
 * Makes a source bundle importable in place (see the file comment): a bare resource becomes a one-entry transaction,
 * a collection a transaction of POSTs; every entry gets a fullUrl; PUTs become POSTs; relative references to entries
 * of the bundle become references to their fullUrls, those to resources of earlier bundles of the run their stored
 * `Type/id`; Patients without a valid NHS number get a test-range one. Malformed parts are left for
 * `prepareTransaction` to report.
 */
export function importable(
  input: unknown,
  session: ImportSession,
): { bundle: unknown; sourceNames: Map<number, string[]> } {
  const sourceNames = new Map<number, string[]>();
  if (!isObject(input)) return { bundle: input, sourceNames };
  let bundle: Record<string, unknown> = input;
  // Bare resources and collections have no requests: each of their entries is a create.
  let creates = false;
  if (bundle.resourceType !== "Bundle") {
    bundle = { resourceType: "Bundle", type: "transaction", entry: [{ resource: input }] };
    creates = true;
  } else if (bundle.type === "collection") {
    bundle.type = "transaction";
    creates = true;
  }
  if (bundle.type !== "transaction" || !Array.isArray(bundle.entry)) return { bundle, sourceNames };
  const aliases = new Map<string, string>();
  const resources: Record<string, unknown>[] = [];
  for (const [index, entry] of (bundle.entry as unknown[]).entries()) {
    if (!isObject(entry) || !isObject(entry.resource)) continue;
    const resource = entry.resource;
    const type = resource.resourceType;
    if (typeof type !== "string") continue;
    resources.push(resource);
    if (entry.fullUrl === undefined) entry.fullUrl = `urn:uuid:${randomUUID()}`;
    const fullUrl = entry.fullUrl;
    if (typeof fullUrl !== "string") continue;
    const names: string[] = [];
    const alias = (name: string) => {
      if (!RELATIVE_RE.test(name) || !name.startsWith(`${type}/`)) return;
      if (!aliases.has(name)) aliases.set(name, fullUrl);
      names.push(name);
    };
    const request = entry.request;
    if (request === undefined && creates) {
      entry.request = { method: "POST", url: type };
    } else if (isObject(request) && request.method === "PUT" && typeof request.url === "string") {
      alias(request.url);
      entry.request = { method: "POST", url: type };
    }
    // A gathered resource is known to its neighbours by its own id; a bundle entry by its absolute fullUrl's tail.
    if (creates && typeof resource.id === "string") alias(`${type}/${resource.id}`);
    const absolute = /\/([A-Z][A-Za-z]{1,63}\/[A-Za-z0-9\-.]{1,64})$/.exec(fullUrl);
    if (absolute && !fullUrl.startsWith("urn:")) alias(absolute[1] as string);
    if (names.length > 0) sourceNames.set(index, names);
    if (type === "Patient") ensureNhsNumber(resource, typeof resource.id === "string" ? resource.id : fullUrl);
  }
  if (aliases.size > 0 || session.aliases.size > 0)
    for (const r of resources) rewriteReferences(r, aliases, session.aliases);
  return { bundle, sourceNames };
}

/** Adds a test-range NHS number to a Patient that has no valid one (the same for the same seed on every run). */
function ensureNhsNumber(patient: Record<string, unknown>, seed: string): void {
  if (nhsNumberOf(patient) !== undefined) return;
  if (patient.identifier !== undefined && !Array.isArray(patient.identifier)) return;
  const identifiers = (patient.identifier as unknown[] | undefined) ?? [];
  identifiers.push({ system: NHS_NUMBER_SYSTEM, value: testNhsNumber(seed) });
  patient.identifier = identifiers;
}

function rewriteReferences(
  value: unknown,
  local: ReadonlyMap<string, string>,
  earlier: ReadonlyMap<string, string>,
): void {
  if (Array.isArray(value)) {
    for (const v of value) if (typeof v === "object" && v !== null) rewriteReferences(v, local, earlier);
    return;
  }
  if (!isObject(value)) return;
  for (const key in value) {
    const v = value[key];
    if (key === "reference" && typeof v === "string") {
      const to = local.get(v) ?? earlier.get(v);
      if (to !== undefined) value[key] = to;
    } else if (typeof v === "object" && v !== null) {
      rewriteReferences(v, local, earlier);
    }
  }
}

/**
 * Checks one bundle and turns it into vault items (synchronous; nothing stored, nothing registered). Patients get
 * their pseudonym: the registered one for their NHS number, or a new one to register. Throws OperationOutcomeError
 * naming the entry.
 */
export function planBundle(
  ctx: Pick<FhirContext, "node">,
  input: unknown,
  options: Pick<ImportOptions, "registry" | "maxEntries">,
  session: ImportSession = newSession(),
): PlannedBundle {
  const { bundle, sourceNames } = importable(input, session);
  const registrations: PatientRequest[] = [];
  const proposed = new Map<string, string>();
  const state = ctx.node.store.state;
  const prepared = prepareTransaction(bundle, {
    newId: randomUUID,
    maxEntries: options.maxEntries ?? MAX_TRANSACTION_ENTRIES,
    types: STORED_TYPES,
    idFor: (type, resource) => {
      if (type !== "Patient") return undefined;
      const nhsNumber = nhsNumberOf(resource);
      if (nhsNumber === undefined) return undefined;
      const known = state.get(`nhs/${options.registry.lookup.lookupOf(nhsNumber)}`);
      if (typeof known === "string") return known;
      let patient = proposed.get(nhsNumber);
      if (patient === undefined) {
        patient = randomUUID();
        proposed.set(nhsNumber, patient);
        registrations.push({ nhsNumber, patient });
      }
      return patient;
    },
  });
  // A record whose patient is neither in the bundle nor registered names a patient known elsewhere by that source id:
  // it gets the test-range NHS number that id seeds (as a Patient without one would), hence a pseudonym.
  const pending = new Set(proposed.values());
  const renamed = new Map<string, string>();
  for (const p of prepared) {
    const source = p.patient;
    if (p.resourceType === "Patient" || source === undefined || pending.has(source) || isRegistered(ctx, source))
      continue;
    let patient = renamed.get(source);
    if (patient === undefined) {
      const nhsNumber = testNhsNumber(source);
      const known = state.get(`nhs/${options.registry.lookup.lookupOf(nhsNumber)}`);
      patient = typeof known === "string" ? known : proposed.get(nhsNumber);
      if (patient === undefined) {
        patient = randomUUID();
        proposed.set(nhsNumber, patient);
        registrations.push({ nhsNumber, patient });
      }
      renamed.set(source, patient);
    }
    rewriteReferences(p.resource, new Map([[`Patient/${source}`, `Patient/${patient}`]]), new Map());
    p.patient = patient;
  }
  const items = itemsOf(ctx, prepared, new Set(proposed.values()));
  return { prepared, items, registrations, sourceNames, created: 0 };
}

/**
 * Registers the new patients of several planned bundles in one `node.submit`. Where the ledger answers with another
 * pseudonym (the NHS number was registered meanwhile), the bundle is rewritten to it.
 */
export async function registerPlanned(
  ctx: FhirContext,
  plans: readonly PlannedBundle[],
  options: Pick<ImportOptions, "signer" | "registry">,
): Promise<void> {
  const requests = plans.flatMap((p) => p.registrations);
  if (requests.length === 0) return;
  let results: Awaited<ReturnType<typeof ensurePatients>>;
  try {
    results = await ensurePatients(ctx, requests, options.signer, options.registry);
  } catch (error) {
    if (error instanceof RegistrationError) {
      const status = error.code === "unauthorised" || error.code === "revoked-signer" ? 403 : 503;
      throw new OperationOutcomeError(status, status === 403 ? "forbidden" : "exception", error.message);
    }
    throw error;
  }
  let k = 0;
  for (const plan of plans) {
    for (const request of plan.registrations) {
      const result = results[k++];
      if (result === undefined) continue;
      if (result.created) plan.created++;
      if (result.patient !== request.patient) renamePatient(ctx, plan, request.patient as string, result.patient);
    }
  }
}

/** Moves a planned bundle from one pseudonym to another (rare: a registration race). */
function renamePatient(ctx: Pick<FhirContext, "node">, plan: PlannedBundle, from: string, to: string): void {
  const ref = `Patient/${from}`;
  const target = `Patient/${to}`;
  const walk = (value: unknown): void => {
    if (Array.isArray(value)) {
      for (const v of value) walk(v);
      return;
    }
    if (!isObject(value)) return;
    for (const key in value) {
      const v = value[key];
      if (key === "reference" && v === ref) value[key] = target;
      else if (typeof v === "object" && v !== null) walk(v);
    }
  };
  for (const p of plan.prepared) {
    if (p.resourceType === "Patient" && p.id === from) {
      p.id = to;
      (p.resource as { id?: string }).id = to;
    }
    walk(p.resource);
    if (p.patient === from) p.patient = to;
  }
  plan.items = itemsOf(ctx, plan.prepared);
}

/** Stages a planned bundle (ONE vault stage). */
function stagePlanned(ctx: FhirContext, plan: PlannedBundle): StagedWrite {
  return ctx.vault.stage(plan.items);
}

function remember(session: ImportSession, plan: PlannedBundle): void {
  for (const p of plan.prepared) {
    const names = plan.sourceNames.get(p.index);
    if (names) for (const n of names) session.aliases.set(n, `${p.resourceType}/${p.id}`);
  }
}

/**
 * Imports one bundle (or bare resource) all or nothing and returns the transaction-response Bundle. A bad bundle
 * throws an OperationOutcomeError naming the entry and the problem, with nothing stored, registered or anchored.
 */
export async function importBundle(
  ctx: FhirContext,
  bundle: unknown,
  options: ImportOptions,
  session: ImportSession = newSession(),
): Promise<Bundle> {
  const plan = planBundle(ctx, bundle, options, session);
  if (plan.items.length === 0) return transactionResponse([], { baseUrl: ctx.baseUrl });
  await registerPlanned(ctx, [plan], options);
  let staged: StagedWrite;
  try {
    staged = stagePlanned(ctx, plan);
  } catch (error) {
    throw writeError(error);
  }
  try {
    await ctx.anchorer.anchor(staged.anchors);
    ctx.vault.confirm(staged);
  } catch (error) {
    abortQuietly(ctx, staged);
    throw writeError(error);
  }
  remember(session, plan);
  return transactionResponse(entryResults(plan.prepared, staged), { baseUrl: ctx.baseUrl });
}

// ---- many bundles ---------------------------------------------------------------------------------------------

/** One bundle to import and where it came from (`file`, `file:line` for NDJSON). */
export interface ImportSource {
  name: string;
  bundle: unknown;
  /** For bundles gathered from several files: the file of each entry. */
  entrySources?: string[];
}

export interface ImportProgress {
  bundles: number;
  resources: number;
  /** Patients registered on the ledger by this run. */
  patients: number;
}

export interface ImportSummary extends ImportProgress {
  seconds: number;
  /** resources / seconds */
  rate: number;
}

/** A bundle that could not be imported: where it came from and why (the OperationOutcome). Nothing of it is stored. */
export class ImportError extends Error {
  override name = "ImportError";
  readonly source: string;
  readonly outcome: OperationOutcomeError;
  constructor(source: string, outcome: OperationOutcomeError) {
    super(`${source}: ${outcome.message}`);
    this.source = source;
    this.outcome = outcome;
  }
}

export interface ImportFilesOptions extends ImportOptions {
  onProgress?: (progress: ImportProgress) => void;
  /** Resources per pipeline group (default 2,000): a group's patients are registered in one submit. */
  groupResources?: number;
}

/** Where a failure points: the source, or for a gathered bundle the file of the entry named in the expression. */
function sourceOf(source: ImportSource, error: OperationOutcomeError): string {
  const m = /^Bundle\.entry\[(\d+)\]/.exec(error.expression ?? "");
  if (m && source.entrySources) {
    const file = source.entrySources[Number(m[1])];
    if (file !== undefined) return file;
  }
  return source.name;
}

function failure(source: ImportSource, error: unknown): ImportError {
  const outcome = error instanceof OperationOutcomeError ? error : writeError(error);
  return new ImportError(sourceOf(source, outcome), outcome);
}

/**
 * Imports bundles in order, each all or nothing, pipelined: while one group's anchors are committing, the next group
 * is checked, its patients registered (one submit per group) and its bundles staged (one stage per bundle). Stops at
 * the first bundle that fails (ImportError naming the source and the entry); bundles before it are stored.
 */
export async function importBundles(
  ctx: FhirContext,
  sources: AsyncIterable<ImportSource> | Iterable<ImportSource>,
  options: ImportFilesOptions,
): Promise<ImportSummary> {
  const started = performance.now();
  const session = newSession();
  const groupResources = options.groupResources ?? 2000;
  const progress: ImportProgress = { bundles: 0, resources: 0, patients: 0 };
  let previous: Promise<void> = Promise.resolve();
  let failed: Error | undefined;

  const runGroup = async (group: ImportSource[]): Promise<void> => {
    const plans: PlannedBundle[] = [];
    for (const source of group) {
      // Gathered bare resources may refer to what earlier bundles stored: let those settle first.
      if (source.entrySources !== undefined) await previous.catch(() => {});
      try {
        plans.push(planBundle(ctx, source.bundle, options, session));
      } catch (error) {
        throw failure(source, error);
      }
    }
    try {
      await registerPlanned(ctx, plans, options);
    } catch (error) {
      throw failure(group[0] as ImportSource, error);
    }
    const staged: { plan: PlannedBundle; write: StagedWrite; source: ImportSource }[] = [];
    try {
      for (const [i, plan] of plans.entries()) {
        if (plan.items.length === 0) continue;
        const source = group[i] as ImportSource;
        let write: StagedWrite;
        try {
          write = stagePlanned(ctx, plan);
        } catch (error) {
          // The same resource (a re-imported patient) may still be pending in the previous group.
          if (!(error instanceof VaultConflictError && error.code === "pending")) throw failure(source, error);
          await previous.catch(() => {});
          try {
            write = stagePlanned(ctx, plan);
          } catch (again) {
            throw failure(source, again);
          }
        }
        staged.push({ plan, write, source });
      }
    } catch (error) {
      for (const s of staged) abortQuietly(ctx, s.write);
      throw error;
    }
    const anchoring = Promise.allSettled(staged.map((s) => ctx.anchorer.anchor(s.write.anchors)));
    const settle = anchoring.then((outcomes) => {
      let first: ImportError | undefined;
      for (const [i, outcome] of outcomes.entries()) {
        const s = staged[i] as (typeof staged)[number];
        if (outcome.status === "fulfilled") {
          try {
            ctx.vault.confirm(s.write);
          } catch (error) {
            first ??= failure(s.source, error);
            continue;
          }
          remember(session, s.plan);
          progress.bundles++;
          progress.resources += s.write.items.length;
        } else {
          abortQuietly(ctx, s.write);
          first ??= failure(s.source, outcome.reason);
        }
      }
      for (const plan of plans) progress.patients += plan.created;
      options.onProgress?.({ ...progress });
      if (first) throw first;
    });
    // Pipeline: this group anchors while the caller goes on to the next; the previous group must be done first.
    const before = previous;
    previous = before.then(() => settle);
    settle.catch(() => {});
    await before;
  };

  let group: ImportSource[] = [];
  let groupSize = 0;
  try {
    for await (const source of sources) {
      group.push(source);
      groupSize += entryCount(source.bundle);
      if (groupSize >= groupResources) {
        const current = group;
        group = [];
        groupSize = 0;
        await runGroup(current);
      }
    }
    if (group.length > 0) await runGroup(group);
    await previous;
  } catch (error) {
    failed =
      error instanceof ImportError || error instanceof SourceError
        ? error
        : new ImportError("import", writeError(error));
    await previous.catch(() => {});
  }
  if (failed) throw failed;
  const seconds = (performance.now() - started) / 1000;
  return { ...progress, seconds, rate: seconds > 0 ? progress.resources / seconds : 0 };
}

function entryCount(bundle: unknown): number {
  if (!isObject(bundle)) return 1;
  return bundle.resourceType === "Bundle" && Array.isArray(bundle.entry) ? bundle.entry.length : 1;
}

/** A file that cannot be read as FHIR JSON (names the file and, for NDJSON, the line). */
export class SourceError extends Error {
  override name = "SourceError";
}

/**
 * The bundles of files and directories (expanded: their `.json` and `.ndjson` files, sorted): a `.json` file holds a
 * Bundle or one bare resource; a `.ndjson` file one Bundle (or resource) per line. Bare resources from `.json` files
 * are gathered into one transaction at the end (up to `maxEntries` each), so references between them resolve.
 */
export async function* readSources(
  paths: readonly string[],
  options: { maxEntries?: number } = {},
): AsyncGenerator<ImportSource> {
  const loose: { file: string; resource: unknown }[] = [];
  for (const file of expand(paths)) {
    if (file.endsWith(".ndjson")) {
      const lines = createInterface({ input: createReadStream(file, "utf8"), crlfDelay: Number.POSITIVE_INFINITY });
      let n = 0;
      for await (const line of lines) {
        n++;
        if (line.trim() === "") continue;
        yield { name: `${file}:${n}`, bundle: parseJson(line, `${file}:${n}`) };
      }
      continue;
    }
    const value = parseJson(await readText(file), file);
    if (isObject(value) && value.resourceType !== "Bundle") loose.push({ file, resource: value });
    else yield { name: file, bundle: value };
  }
  const max = options.maxEntries ?? MAX_TRANSACTION_ENTRIES;
  for (let i = 0; i < loose.length; i += max) {
    const part = loose.slice(i, i + max);
    yield {
      name: part.length === 1 ? (part[0]?.file as string) : `${part.length} resources (${part[0]?.file} …)`,
      bundle: {
        resourceType: "Bundle",
        type: "collection",
        entry: part.map((p) => ({ resource: p.resource })),
      },
      entrySources: part.map((p) => p.file),
    };
  }
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    throw new SourceError(`${file}: cannot be read (${(error as NodeJS.ErrnoException).code ?? "error"})`);
  }
}

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new SourceError(`${where}: not valid JSON`);
  }
}

/** Files of `paths`, directories expanded (recursively, sorted) to their .json/.ndjson files. */
export function expand(paths: readonly string[]): string[] {
  const out: string[] = [];
  for (const path of paths) {
    let stat: ReturnType<typeof statSync>;
    try {
      stat = statSync(path);
    } catch {
      throw new SourceError(`${path}: no such file or directory`);
    }
    if (stat.isDirectory()) {
      const names = readdirSync(path).sort();
      out.push(
        ...expand(
          names
            .filter((n) => !n.startsWith("."))
            .map((n) => join(path, n))
            .filter((p) => statSync(p).isDirectory() || /\.(nd)?json$/.test(p)),
        ),
      );
    } else {
      out.push(path);
    }
  }
  return out;
}

/** `importBundles` over files (see `readSources`). */
export async function importFiles(
  ctx: FhirContext,
  files: readonly string[],
  options: ImportFilesOptions,
): Promise<ImportSummary> {
  return importBundles(ctx, readSources(files, options), options);
}
