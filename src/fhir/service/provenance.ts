// `GET /fhir/Provenance?target=Type/id[/_history/n]`: for each anchored version of a record, where it is on the
// ledger — the salted commitment in `record.anchor`, the tx that put it there, the tx's RFC 9162 inclusion proof and
// the signed tree head it proves against — as a FHIR Provenance anyone can check offline:
//   1. leaf = base64-decode(ledger-anchor.leaf); check `hashLeaf(leaf)` is in the tree:
//      `verifyInclusion(hashLeaf(leaf), leafIndex, treeSize, auditPath, treeRoot)` (src/ledger/merkle.ts);
//   2. the tree head (treeSize, treeRoot, height, stateDigest, time) is signed by the node key named in
//      `Provenance.signature.who` (`verifyTreeHead`, src/ledger/sth.ts): `signature.data` is that Ed25519 signature;
//   3. the leaf names the tx id and signature; `ledger-anchor.tx` is the tx body whose canonical JSON hashes to that
//      id, and its payload holds the record's commitment (which only the custodian, holding the salt, can open).
// Only callers allowed to read the target get anything (the same consent gate as a read); for anyone else, and for a
// target that does not exist, the searchset is empty — not a 403 or 404, so nothing is revealed.
//
// Extension (documented here; a complex extension on Provenance):
//   url `urn:careledger:fhir:ledger-anchor`, sub-extensions:
//   `commitment` (valueString, 64 hex), `tx-id` (valueString), `tx` (valueBase64Binary: canonical JSON of the tx),
//   `block-height` (valueInteger), `leaf` (valueBase64Binary: the Merkle leaf bytes), `leaf-index` (valueInteger),
//   `tree-size` (valueInteger), `tree-root` (valueString, hex), `tree-height` (valueInteger), `state-digest`
//   (valueString, hex), `tree-time` (valueDecimal, ms: beyond valueInteger's 32 bits), `audit-path` (valueString, hex; repeated, in order).
// Records of no patient are not anchored on the ledger (the contract anchors patient records only): none is listed.

import type { Bundle, BundleEntry, Extension, Provenance } from "@medplum/fhirtypes";
import type { AnchorRec } from "../../contract/state.ts";
import { K } from "../../contract/state.ts";
import { leafBytes } from "../../ledger/block.ts";
import { canonicalJson } from "../../ledger/canonical.ts";
import { fromBase64Url, toHex } from "../../ledger/encoding.ts";
import { inclusionProof } from "../../ledger/merkle.ts";
import type { BlockEntry, SignedTreeHead } from "../../ledger/types.ts";
import { badRequest } from "../outcome.ts";
import { isResourceType } from "../validate.ts";
import { checkAccess } from "./consent-check.ts";
import type { FhirContext, FhirHandler } from "./context.ts";
import { FHIR_JSON, factsOf, guarded, requireScope } from "./read.ts";

export const LEDGER_ANCHOR_EXTENSION = "urn:careledger:fhir:ledger-anchor";
const KEY_SYSTEM = "urn:careledger:key";
const ORG_SYSTEM = "urn:careledger:org";
const ALLOWED = new Set(["target", "_format", "_pretty"]);

/** `Type/id`, `Type/id/_history/n`, or either under this server's base URL. */
export function parseTarget(ctx: FhirContext, value: string): { type: string; id: string; version?: number } {
  let v = value;
  const base = `${ctx.baseUrl.replace(/\/+$/, "")}/`;
  if (v.startsWith(base)) v = v.slice(base.length);
  const m = /^([A-Z][A-Za-z]{1,63})\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/([1-9][0-9]{0,6}))?$/.exec(v);
  if (m === null || !isResourceType(m[1] as string)) {
    throw badRequest("must be a reference Type/id or Type/id/_history/version", "target");
  }
  const out: { type: string; id: string; version?: number } = { type: m[1] as string, id: m[2] as string };
  if (m[3] !== undefined) out.version = Number(m[3]);
  return out;
}

/** Where one version's anchor is on the ledger: the block, the tx and the entry in its payload. */
interface Located {
  anchor: AnchorRec;
  entry: BlockEntry;
}

function locate(ctx: FhirContext, type: string, id: string, version: string): Located | undefined {
  const anchor = ctx.node.store.state.get(K.anchor(ctx.orgId, type, id, version)) as AnchorRec | undefined;
  if (anchor === undefined) return undefined;
  const row = ctx.node.readBlock(anchor.height);
  if (!row) return undefined;
  for (const entry of JSON.parse(row.txs) as BlockEntry[]) {
    if (entry.tx.type !== "record.anchor" || !entry.result.valid) continue;
    const anchors = (entry.tx.payload as { anchors?: Record<string, unknown>[] }).anchors ?? [];
    if (
      anchors.some(
        (a) =>
          a.custodian === ctx.orgId &&
          a.resourceType === type &&
          a.resourceId === id &&
          a.version === version &&
          a.commitment === anchor.commitment,
      )
    ) {
      return { anchor, entry };
    }
  }
  return undefined;
}

/** The Provenance of one anchored version, with its inclusion proof against `treeHead`. */
export function provenanceOf(
  ctx: FhirContext,
  target: { type: string; id: string; version: number; deleted: boolean },
  located: Located,
  treeHead: SignedTreeHead,
): Provenance {
  const { anchor, entry } = located;
  const stored = ctx.node.readTx(entry.id);
  if (stored === undefined) throw new Error("an anchoring tx is missing from the tx index");
  const path = inclusionProof(ctx.node.store, stored.index, treeHead.size).map(toHex);
  const ext = (url: string, value: Omit<Extension, "url">): Extension => ({ url, ...value });
  const extension: Extension = {
    url: LEDGER_ANCHOR_EXTENSION,
    extension: [
      ext("commitment", { valueString: anchor.commitment }),
      ext("tx-id", { valueString: entry.id }),
      ext("tx", { valueBase64Binary: Buffer.from(canonicalJson(entry.tx)).toString("base64") }),
      ext("block-height", { valueInteger: stored.height }),
      ext("leaf", { valueBase64Binary: Buffer.from(leafBytes(stored.entry)).toString("base64") }),
      ext("leaf-index", { valueInteger: stored.index }),
      ext("tree-size", { valueInteger: treeHead.size }),
      ext("tree-root", { valueString: treeHead.root }),
      ext("tree-height", { valueInteger: treeHead.height }),
      ext("state-digest", { valueString: treeHead.stateDigest }),
      ext("tree-time", { valueDecimal: treeHead.time }),
      ...path.map((p) => ext("audit-path", { valueString: p })),
    ],
  };
  const operation = target.deleted ? "DELETE" : target.version === 1 ? "CREATE" : "UPDATE";
  return {
    resourceType: "Provenance",
    id: `${entry.id.slice(0, 48)}.${target.version}`,
    extension: [extension],
    target: [{ reference: `${target.type}/${target.id}/_history/${target.version}` }],
    recorded: new Date(anchor.at).toISOString(),
    activity: {
      coding: [{ system: "http://terminology.hl7.org/CodeSystem/v3-DataOperation", code: operation }],
    },
    agent: [
      {
        type: {
          coding: [{ system: "http://terminology.hl7.org/CodeSystem/provenance-participant-type", code: "custodian" }],
        },
        who: { identifier: { system: ORG_SYSTEM, value: ctx.orgId } },
      },
      {
        type: {
          coding: [{ system: "http://terminology.hl7.org/CodeSystem/provenance-participant-type", code: "assembler" }],
        },
        who: { identifier: { system: KEY_SYSTEM, value: entry.tx.signer } },
        onBehalfOf: { identifier: { system: ORG_SYSTEM, value: ctx.orgId } },
      },
    ],
    signature: [
      {
        type: [{ system: "urn:iso-astm:E1762-95:2013", code: "1.2.840.10065.1.12.1.14", display: "Source Signature" }],
        when: new Date(treeHead.time).toISOString(),
        who: { identifier: { system: KEY_SYSTEM, value: treeHead.signer } },
        targetFormat: "application/json",
        sigFormat: "application/octet-stream",
        data: Buffer.from(fromBase64Url(treeHead.sig)).toString("base64"),
      },
    ],
  };
}

/** GET [base]/Provenance?target=… */
export const provenanceSearch: FhirHandler = async (ctx, req) => {
  requireScope(req.principal, "Provenance", "search");
  for (const name of new Set(req.query.keys())) {
    if (!ALLOWED.has(name)) throw badRequest("parameter not supported on Provenance", name, "not-supported");
  }
  const targets = req.query.getAll("target");
  if (targets.length !== 1) throw badRequest("exactly one target is required", "target");
  const target = parseTarget(ctx, targets[0] as string);
  requireScope(req.principal, target.type, "read");
  const base = ctx.baseUrl.replace(/\/+$/, "");
  const self = `${base}/Provenance?${new URLSearchParams([["target", targets[0] as string]]).toString()}`;
  const empty = (): Bundle => ({
    resourceType: "Bundle",
    type: "searchset",
    total: 0,
    link: [{ relation: "self", url: self }],
    entry: [],
  });
  const reply = (bundle: Bundle) => ({ status: 200, body: bundle, headers: { "content-type": FHIR_JSON } });

  const versions = guarded(ctx, target.type, () => ctx.vault.history(target.type, target.id));
  const current = versions[0];
  if (current === undefined) return reply(empty());
  const access = checkAccess(
    ctx,
    req.principal,
    factsOf(
      target.type,
      target.id,
      current,
      versions.flatMap((v) => v.labels),
    ),
    "read",
    "read",
  );
  if (!access.allowed) return reply(empty());
  const treeHead = ctx.node.store.latestTreeHead();
  if (treeHead === undefined) return reply(empty());
  const entry: BundleEntry[] = [];
  for (const v of versions) {
    if (target.version !== undefined && v.version !== target.version) continue;
    const located = locate(ctx, target.type, target.id, String(v.version));
    if (located === undefined) continue;
    const resource = provenanceOf(
      ctx,
      { type: target.type, id: target.id, version: v.version, deleted: v.deleted },
      located,
      treeHead,
    );
    entry.push({ fullUrl: `${base}/Provenance/${resource.id}`, resource, search: { mode: "match" } });
  }
  return reply({
    resourceType: "Bundle",
    type: "searchset",
    total: entry.length,
    link: [{ relation: "self", url: self }],
    entry,
  });
};
