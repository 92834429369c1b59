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
// - Records of no patient (Organization, Practitioner, …) are anchored on the ledger like the rest (write.ts).

import { randomUUID } from "node:crypto";
import { createReadStream, readdirSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Bundle } from "@medplum/fhirtypes";
import type { KeyPair } from "../../ledger/keys.ts";
import { type PutItem, type StagedWrite, VaultConflictError, type VaultResource } from "../../vault/vault.ts";
import { type PreparedEntry, prepareTransaction, transactionResponse } from "../bundle.ts";
import { NHS_NUMBER_SYSTEM, testNhsNumber } from "../nhs-number.ts";
import { OperationOutcomeError } from "../outcome.ts";
import { patientOf } from "../resource-facts.ts";
import { STORED_TYPES } from "../validate.ts";
import type { FhirContext } from "./context.ts";
import {
  ensurePatients,
  isRegistered,
  type PatientRegistry,
  type PatientRequest,
  RegistrationError,
} from "./patients.ts";
import { entryResults, type ItemFacts, itemFacts, itemsOf, MAX_TRANSACTION_ENTRIES } from "./transaction.ts";
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

/** Rewrites `reference` values found in `local` or `earlier`; true when any changed. */
function rewriteReferences(
  value: unknown,
  local: ReadonlyMap<string, string>,
  earlier: ReadonlyMap<string, string>,
): boolean {
  let changed = false;
  if (Array.isArray(value)) {
    for (const v of value)
      if (typeof v === "object" && v !== null && rewriteReferences(v, local, earlier)) changed = true;
    return changed;
  }
  if (!isObject(value)) return false;
  for (const key in value) {
    const v = value[key];
    if (key === "reference" && typeof v === "string") {
      const to = local.get(v) ?? earlier.get(v);
      if (to !== undefined) {
        value[key] = to;
        changed = true;
      }
    } else if (typeof v === "object" && v !== null && rewriteReferences(v, local, earlier)) {
      changed = true;
    }
  }
  return changed;
}

/**
 * The part of planning that needs no ledger (a worker thread could do it): the bundle made importable and checked
 * whole (`prepareTransaction`), each Patient given a proposed pseudonym per NHS number, and every entry's labels, date
 * and search values read. Throws OperationOutcomeError naming the entry.
 */
export interface LocalPlan {
  prepared: PreparedEntry[];
  facts: ItemFacts[];
  /** [NHS number, proposed pseudonym] of the bundle's Patients. */
  proposals: [string, string][];
  /** [entry index, source names] (see `PlannedBundle.sourceNames`). */
  sourceNames: [number, string[]][];
}

export function planLocally(input: unknown, session: ImportSession, maxEntries?: number): LocalPlan {
  const { bundle, sourceNames } = importable(input, session);
  const proposed = new Map<string, string>();
  const prepared = prepareTransaction(bundle, {
    newId: randomUUID,
    maxEntries: maxEntries ?? MAX_TRANSACTION_ENTRIES,
    types: STORED_TYPES,
    idFor: (type, resource) => {
      if (type !== "Patient") return undefined;
      const nhsNumber = nhsNumberOf(resource);
      if (nhsNumber === undefined) return undefined;
      let patient = proposed.get(nhsNumber);
      if (patient === undefined) {
        patient = randomUUID();
        proposed.set(nhsNumber, patient);
      }
      return patient;
    },
  });
  return {
    prepared,
    facts: prepared.map((p) => itemFacts(p.resource as unknown as VaultResource)),
    proposals: [...proposed],
    sourceNames: [...sourceNames],
  };
}

/**
 * The ledger part: a proposed pseudonym whose NHS number is already registered becomes the registered one; a record
 * whose patient is neither in the bundle nor registered names a patient known elsewhere by that source id, which gets
 * the test-range NHS number the id seeds (as a Patient without one would), hence a pseudonym; the rest are to be
 * registered. Then every record's patient is checked (`itemsOf`). Nothing is written.
 */
export function resolvePlan(
  ctx: Pick<FhirContext, "node">,
  local: LocalPlan,
  registry: PatientRegistry,
  session?: ImportSession,
): PlannedBundle {
  const state = ctx.node.store.state;
  let facts: ItemFacts[] | undefined = local.facts;
  // Planned without the run's memory: references to earlier bundles' resources resolve here.
  if (session !== undefined && session.aliases.size > 0) {
    let changed = false;
    for (const p of local.prepared) if (rewriteReferences(p.resource, new Map(), session.aliases)) changed = true;
    if (changed) {
      for (const p of local.prepared) {
        if (p.resourceType !== "Patient") {
          const patient = patientOf(p.resource);
          if (patient === undefined) delete p.patient;
          else p.patient = patient;
        }
      }
      facts = undefined;
    }
  }
  const registrations: PatientRequest[] = [];
  const byNhs = new Map<string, string>();
  const renames = new Map<string, string>();
  const pending = new Set<string>();
  const pseudonymFor = (nhsNumber: string, proposal: string): string => {
    const had = byNhs.get(nhsNumber);
    if (had !== undefined) return had;
    const known = state.get(`nhs/${registry.lookup.lookupOf(nhsNumber)}`);
    const patient = typeof known === "string" ? known : proposal;
    if (typeof known !== "string") {
      registrations.push({ nhsNumber, patient });
      pending.add(patient);
    }
    byNhs.set(nhsNumber, patient);
    return patient;
  };
  for (const [nhsNumber, proposal] of local.proposals) {
    const patient = pseudonymFor(nhsNumber, proposal);
    if (patient !== proposal) renames.set(proposal, patient);
  }
  const proposals = new Set(local.proposals.map(([, p]) => p));
  for (const p of local.prepared) {
    const source = p.patient;
    if (p.resourceType === "Patient" || source === undefined || proposals.has(source) || renames.has(source)) continue;
    if (isRegistered(ctx, source)) continue;
    renames.set(source, pseudonymFor(testNhsNumber(source), randomUUID()));
  }
  if (renames.size > 0) {
    const refs = new Map([...renames].map(([from, to]) => [`Patient/${from}`, `Patient/${to}`]));
    for (const p of local.prepared) {
      const to = p.resourceType === "Patient" ? renames.get(p.id) : undefined;
      if (to !== undefined) {
        p.id = to;
        (p.resource as { id?: string }).id = to;
      }
      rewriteReferences(p.resource, refs, new Map());
      if (p.patient !== undefined) p.patient = renames.get(p.patient) ?? p.patient;
      if (p.resourceType === "Patient") p.patient = p.id;
    }
    // Search values hold references: read them again from the rewritten resources.
    facts = undefined;
  }
  const items = itemsOf(ctx, local.prepared, pending, facts);
  return { prepared: local.prepared, items, registrations, sourceNames: new Map(local.sourceNames), created: 0 };
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
  return resolvePlan(ctx, planLocally(input, session, options.maxEntries), options.registry, session);
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
    staged = ctx.vault.stage(plan.items);
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

/**
 * One bundle to import and where it came from (`file`, `file:line` for NDJSON): its JSON text, or the value. A bare
 * resource (not a Bundle) is gathered with the run's other bare resources into one transaction, imported last.
 */
export interface ImportSource {
  name: string;
  text?: string;
  bundle?: unknown;
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

/** A file that cannot be read as FHIR JSON (names the file and, for NDJSON, the line). */
export class SourceError extends Error {
  override name = "SourceError";
}

export interface ImportFilesOptions extends ImportOptions {
  onProgress?: (progress: ImportProgress) => void;
  /** Resources per pipeline group (default 10,000): one registration submit, one vault stage, one anchoring each. */
  groupResources?: number;
}

/**
 * Resources per pipeline group. Each group is one vault transaction and (mostly) one block, and every commit rewrites
 * each B-tree page it touches; index keys are random (blind-index hashes, state keys with UUIDs), so a commit touches
 * most pages of those trees whatever its size. Fewer, bigger commits write less: 47k generated resources wrote 924 MB
 * in groups of 2,000 and 580 MB in groups of 5,000 (strace), and ran ~10 % faster in groups of 10,000 than of 2,000
 * (peak RSS 649 → 729 MB).
 */
const DEFAULT_GROUP_RESOURCES = 10_000;

/** Where a failure points: the source, or for a gathered bundle the file of the entry named in the expression. */
function sourceOf(source: ImportSource, error: OperationOutcomeError): string {
  const m = /^Bundle\.entry\[(\d+)\]/.exec(error.expression ?? "");
  if (m && source.entrySources) {
    const file = source.entrySources[Number(m[1])];
    if (file !== undefined) return file;
  }
  return source.name;
}

function failure(source: ImportSource, error: unknown): Error {
  if (error instanceof SourceError) return error;
  const outcome = error instanceof OperationOutcomeError ? error : writeError(error);
  return new ImportError(sourceOf(source, outcome), outcome);
}

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new SourceError(`${where}: not valid JSON`);
  }
}

/** What planning a source gave: a plan, a bare resource to gather, or the error. */
type Planned =
  | { source: ImportSource; local: LocalPlan; entries: number }
  | { source: ImportSource; bare: unknown }
  | { source: ImportSource; error: Error };

function isBare(value: unknown): boolean {
  return isObject(value) && value.resourceType !== "Bundle";
}

function planHere(source: ImportSource, maxEntries: number | undefined, session: ImportSession): Planned {
  try {
    const value = source.text !== undefined ? parseJson(source.text, source.name) : source.bundle;
    if (source.entrySources === undefined && isBare(value)) return { source, bare: value };
    const local = planLocally(value, session, maxEntries);
    return { source, local, entries: local.prepared.length };
  } catch (error) {
    return { source, error: failure(source, error) };
  }
}

/**
 * Imports bundles in order, each all or nothing, pipelined: bundles are planned and their patients resolved against
 * the ledger, a group's new patients registered in one submit, the group staged in one vault transaction and
 * anchored, and while that group's anchors commit the next group is prepared. A group is all or
 * nothing (every bundle in it whole either way); a group that fails is retried bundle by bundle, in order, to name
 * the bundle at fault. Stops at the first bundle that fails (ImportError naming the source and the entry, or
 * SourceError for unreadable input); bundles before it are stored. Bare resources are gathered into one transaction
 * per `maxEntries`, imported last.
 */
export async function importBundles(
  ctx: FhirContext,
  sources: AsyncIterable<ImportSource> | Iterable<ImportSource>,
  options: ImportFilesOptions,
): Promise<ImportSummary> {
  const started = performance.now();
  const session = newSession();
  const groupResources = options.groupResources ?? DEFAULT_GROUP_RESOURCES;
  const progress: ImportProgress = { bundles: 0, resources: 0, patients: 0 };
  let previous: Promise<void> = Promise.resolve();
  let failed: Error | undefined;

  const done = (plans: readonly PlannedBundle[], resources: number) => {
    for (const plan of plans) {
      progress.bundles++;
      progress.patients += plan.created;
    }
    progress.resources += resources;
    options.onProgress?.({ ...progress });
  };

  /** Stores bundles one at a time, in order: how a failed group finds the bundle at fault (and keeps those before). */
  const oneByOne = async (plans: readonly PlannedBundle[], group: readonly ImportSource[]): Promise<void> => {
    for (const [i, plan] of plans.entries()) {
      const source = group[i] as ImportSource;
      if (plan.items.length > 0) {
        let write: StagedWrite;
        try {
          write = ctx.vault.stage(plan.items);
        } catch (error) {
          throw failure(source, error);
        }
        try {
          await ctx.anchorer.anchor(write.anchors);
          ctx.vault.confirm(write);
        } catch (error) {
          abortQuietly(ctx, write);
          throw failure(source, error);
        }
      }
      done([plan], plan.items.length);
    }
  };

  /**
   * A group whose patients are being registered, waiting for the next group to be gathered before it is stored and
   * anchored: so each group's `patient.register` txs are submitted before the previous group's `record.anchor` txs
   * and are not ordered behind them.
   */
  let registering: { plans: PlannedBundle[]; sources: ImportSource[]; registered: Promise<void> } | undefined;

  /**
   * Resolves a group's plans (in order) and submits its registrations; returns without waiting for them. A bundle
   * that does not resolve ends the group there: the bundles before it go on (to be stored), `error` names it.
   */
  const startGroup = (group: { source: ImportSource; local: LocalPlan }[]) => {
    const plans: PlannedBundle[] = [];
    const sources: ImportSource[] = [];
    let error: Error | undefined;
    for (const { source, local } of group) {
      try {
        const plan = resolvePlan(ctx, local, options.registry, session);
        // Later bundles may refer to this one's resources by their source ids: remembered now, in order.
        remember(session, plan);
        plans.push(plan);
        sources.push(source);
      } catch (cause) {
        error = failure(source, cause);
        break;
      }
    }
    const registered = registerPlanned(ctx, plans, options).catch((cause: unknown) => {
      throw failure(sources[0] as ImportSource, cause);
    });
    // Observed when the group is stored; until then a failure must not count as unhandled.
    registered.catch(() => {});
    return { plans, sources, registered, error };
  };

  /** Stores and anchors a group once its patients are registered; waits for the group before it to be done. */
  const storeGroup = async ({
    plans,
    sources,
    registered,
  }: {
    plans: PlannedBundle[];
    sources: ImportSource[];
    registered: Promise<void>;
  }): Promise<void> => {
    await registered;
    // The group's bundles are ONE stage and one anchoring: one vault transaction amortises the index pages it
    // dirties over a whole group (DEFAULT_GROUP_RESOURCES). All or nothing, so every bundle in it is whole either way.
    const items = plans.flatMap((p) => p.items);
    let write: StagedWrite | undefined;
    if (items.length > 0) {
      try {
        write = ctx.vault.stage(items);
      } catch (error) {
        // The same resource (a re-imported patient) may still be pending in the previous group: wait, retry once.
        if (error instanceof VaultConflictError && error.code === "pending") {
          await previous.catch(() => {});
          try {
            write = ctx.vault.stage(items);
          } catch {
            write = undefined;
          }
        }
      }
      if (write === undefined) {
        await previous;
        await oneByOne(plans, sources);
        return;
      }
    }
    const staged = write;
    const before = previous;
    const settle = (staged === undefined ? Promise.resolve() : ctx.anchorer.anchor(staged.anchors)).then(
      () => {
        if (staged !== undefined) ctx.vault.confirm(staged);
        done(plans, items.length);
      },
      async () => {
        if (staged !== undefined) abortQuietly(ctx, staged);
        // Find the bundle at fault (after the previous group, in order); if that group failed, its error stands.
        try {
          await before;
        } catch {
          return;
        }
        await oneByOne(plans, sources);
      },
    );
    // Pipeline: this group anchors while the caller goes on to the next; the previous group must be done first.
    previous = before.then(() => settle);
    settle.catch(() => {});
    await before;
  };

  /** Stores the group whose registrations are under way, if any. */
  const flushGroups = async (): Promise<void> => {
    const waiting = registering;
    registering = undefined;
    if (waiting !== undefined) await storeGroup(waiting);
  };

  /** Starts a gathered group's registrations, then stores the group before it (whose registrations are older). */
  const runGroup = async (group: { source: ImportSource; local: LocalPlan }[]): Promise<void> => {
    const started = startGroup(group);
    // Bundles before a failing one are stored: the waiting group first, whatever this one does.
    await flushGroups();
    if (started.error !== undefined) {
      // This group's bundles before the one that failed are stored too, then the run stops at it.
      await storeGroup(started);
      await previous;
      throw started.error;
    }
    registering = started;
  };

  const loose: { file: string; resource: unknown }[] = [];
  let group: { source: ImportSource; local: LocalPlan }[] = [];
  let groupSize = 0;
  /** Adds a planned bundle to the group being gathered; a full group is run. */
  const take = async (planned: Exclude<Planned, { error: Error }>): Promise<void> => {
    if ("bare" in planned) {
      loose.push({ file: planned.source.name, resource: planned.bare });
      return;
    }
    group.push({ source: planned.source, local: planned.local });
    groupSize += planned.entries;
    if (groupSize >= groupResources) {
      const current = group;
      group = [];
      groupSize = 0;
      await runGroup(current);
    }
  };
  try {
    // A source that cannot be read or planned stops the run; the bundles before it are still stored.
    let stop: Error | undefined;
    try {
      for await (const source of sources) {
        const planned = planHere(source, options.maxEntries, session);
        if ("error" in planned) {
          stop = planned.error;
          break;
        }
        await take(planned);
      }
    } catch (error) {
      if (!(error instanceof SourceError)) throw error;
      stop = error;
    }
    const max = options.maxEntries ?? MAX_TRANSACTION_ENTRIES;
    for (let i = 0; stop === undefined && i < loose.length; i += max) {
      const part = loose.slice(i, i + max);
      const gathered: ImportSource = {
        name: part.length === 1 ? (part[0]?.file as string) : `${part.length} resources (${part[0]?.file} …)`,
        bundle: { resourceType: "Bundle", type: "collection", entry: part.map((p) => ({ resource: p.resource })) },
        entrySources: part.map((p) => p.file),
      };
      const planned = planHere(gathered, options.maxEntries, session);
      if ("error" in planned) stop = planned.error;
      else await take(planned);
    }
    if (group.length > 0) await runGroup(group);
    await flushGroups();
    await previous;
    if (stop !== undefined) throw stop;
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

/** The text of every bundle in files and directories (see `expand`): a `.json` file is one, an `.ndjson` line one. */
export async function* readSources(paths: readonly string[]): AsyncGenerator<ImportSource> {
  for (const file of expand(paths)) {
    if (file.endsWith(".ndjson")) {
      const lines = createInterface({ input: createReadStream(file, "utf8"), crlfDelay: Number.POSITIVE_INFINITY });
      let n = 0;
      for await (const line of lines) {
        n++;
        if (line.trim() === "") continue;
        yield { name: `${file}:${n}`, text: line };
      }
      continue;
    }
    yield { name: file, text: await readText(file) };
  }
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    throw new SourceError(`${file}: cannot be read (${(error as NodeJS.ErrnoException).code ?? "error"})`);
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
  return importBundles(ctx, readSources(files), options);
}
