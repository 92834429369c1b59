// Provenance: each version's anchor with an inclusion proof and signed tree head that verify offline with the ledger
// layer's own functions; nothing for callers who may not read the target.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fromHex, toBase64Url } from "../../ledger/encoding.ts";
import { hashLeaf, verifyInclusion } from "../../ledger/merkle.ts";
import { verifyTreeHead } from "../../ledger/sth.ts";
import { txId } from "../../ledger/tx.ts";
import type { SignedTx } from "../../ledger/types.ts";
import { validateResource } from "../validate.ts";
import { LEDGER_ANCHOR_EXTENSION, provenanceSearch } from "./provenance.ts";
import {
  call,
  newId,
  observation,
  openServiceKit,
  type Patient,
  patientResource,
  putRecords,
  request,
  type ServiceKit,
} from "./testkit.ts";

let kit: ServiceKit;
let alice: Patient;
const obsId = newId("obs");
let hiddenId: string;

before(async () => {
  kit = await openServiceKit();
  alice = await kit.registerPatient();
  const hidden = observation(alice, { labels: ["HIV"] });
  hiddenId = hidden.id as string;
  await putRecords(kit, [patientResource(alice), observation(alice, { id: obsId }), hidden]);
  await putRecords(kit, [observation(alice, { id: obsId, status: "amended" })]);
});
after(async () => {
  await kit?.close();
});

interface Ext {
  url: string;
  valueString?: string;
  valueInteger?: number;
  valueDecimal?: number;
  valueBase64Binary?: string;
}

/** Checks one Provenance the way an outside auditor would, with nothing but the ledger layer's functions. */
function verifyOffline(prov: {
  extension: { url: string; extension: Ext[] }[];
  signature: { data: string; who: { identifier: { value: string } } }[];
}): { leafOk: boolean; headOk: boolean; commitment: string; tx: SignedTx } {
  const ext = prov.extension.find((e) => e.url === LEDGER_ANCHOR_EXTENSION)?.extension ?? [];
  const one = (url: string) => ext.find((e) => e.url === url) as Ext;
  const leaf = Buffer.from(one("leaf").valueBase64Binary as string, "base64");
  const path = ext.filter((e) => e.url === "audit-path").map((e) => fromHex(e.valueString as string));
  const size = one("tree-size").valueInteger as number;
  const root = one("tree-root").valueString as string;
  const leafOk = verifyInclusion(hashLeaf(leaf), one("leaf-index").valueInteger as number, size, path, fromHex(root));
  const sig = prov.signature[0];
  const headOk = verifyTreeHead({
    size,
    root,
    height: one("tree-height").valueInteger as number,
    stateDigest: one("state-digest").valueString as string,
    time: one("tree-time").valueDecimal as number,
    signer: sig?.who.identifier.value as string,
    sig: toBase64Url(Buffer.from(sig?.data as string, "base64")),
  });
  const tx = JSON.parse(Buffer.from(one("tx").valueBase64Binary as string, "base64").toString("utf8")) as SignedTx;
  // The leaf commits to the tx id, which is the hash of the tx body.
  const leafJson = JSON.parse(leaf.toString("utf8")) as { id: string; sig: string; valid: boolean };
  assert.equal(txId(tx), leafJson.id);
  assert.equal(tx.sig, leafJson.sig);
  assert.equal(leafJson.valid, true);
  assert.equal(one("tx-id").valueString, leafJson.id);
  return { leafOk, headOk, commitment: one("commitment").valueString as string, tx };
}

describe("Provenance", () => {
  it("lists each version's anchor with an inclusion proof and signed tree head that verify offline", async () => {
    const doc = await kit.principalFor((await kit.enrol("clinician")).key);
    const r = await call(provenanceSearch, kit.ctx, request(doc, {}, { target: `Observation/${obsId}` }));
    assert.equal(r.status, 200);
    assert.equal(r.body.total, 2);
    const versions = kit.vault.history("Observation", obsId);
    for (const e of r.body.entry) {
      const prov = e.resource;
      validateResource(prov, { types: new Set(["Provenance"]) });
      const v = Number(prov.target[0].reference.split("/").pop());
      const checked = verifyOffline(prov);
      assert.ok(checked.leafOk, "inclusion proof verifies");
      assert.ok(checked.headOk, "tree head signature verifies");
      assert.equal(prov.signature[0].who.identifier.value, kit.nodeKey.keyId);
      const stored = versions.find((x) => x.version === v);
      assert.equal(checked.commitment, stored?.commitment);
      const anchors = (checked.tx.payload as { anchors: { resourceId: string; version: string; commitment: string }[] })
        .anchors;
      assert.ok(
        anchors.some((a) => a.resourceId === obsId && a.version === String(v) && a.commitment === checked.commitment),
      );
      assert.equal(prov.activity.coding[0].code, v === 1 ? "CREATE" : "UPDATE");
      assert.equal(prov.agent[0].who.identifier.value, kit.orgId);
    }
  });

  it("a tampered proof or tree head does not verify", async () => {
    const doc = await kit.principalFor((await kit.enrol("clinician")).key);
    const r = await call(provenanceSearch, kit.ctx, request(doc, {}, { target: `Observation/${obsId}/_history/1` }));
    assert.equal(r.body.total, 1);
    const prov = structuredClone(r.body.entry[0].resource);
    const root = prov.extension[0].extension.find((e: Ext) => e.url === "tree-root");
    root.valueString = `${root.valueString.slice(0, 63)}${root.valueString.endsWith("0") ? "1" : "0"}`;
    const bad = verifyOffline(prov);
    assert.equal(bad.leafOk, false);
    assert.equal(bad.headOk, false);
    const leafTampered = structuredClone(r.body.entry[0].resource);
    const leaf = leafTampered.extension[0].extension.find((e: Ext) => e.url === "leaf");
    const bytes = Buffer.from(leaf.valueBase64Binary, "base64");
    leaf.valueBase64Binary = Buffer.from(bytes.toString("utf8").replace('"valid":true', '"valid":false')).toString(
      "base64",
    );
    const ext = leafTampered.extension[0].extension as Ext[];
    const path = ext.filter((e) => e.url === "audit-path").map((e) => fromHex(e.valueString as string));
    const one = (url: string) => ext.find((e) => e.url === url) as Ext;
    assert.equal(
      verifyInclusion(
        hashLeaf(Buffer.from(leaf.valueBase64Binary, "base64")),
        one("leaf-index").valueInteger as number,
        one("tree-size").valueInteger as number,
        path,
        fromHex(one("tree-root").valueString as string),
      ),
      false,
    );
  });

  it("callers who may not read the target, and missing targets, get an empty searchset", async () => {
    const doc = await kit.principalFor((await kit.enrol("clinician")).key);
    const hidden = await call(provenanceSearch, kit.ctx, request(doc, {}, { target: `Observation/${hiddenId}` }));
    const missing = await call(provenanceSearch, kit.ctx, request(doc, {}, { target: `Observation/${newId("obs")}` }));
    assert.equal(hidden.status, 200);
    assert.equal(hidden.body.total, 0);
    assert.equal(missing.body.total, 0);
    const me = await kit.principalFor(alice.key, { patient: alice.patient });
    const own = await call(
      provenanceSearch,
      kit.ctx,
      request(me, {}, { target: `${kit.ctx.baseUrl}/Observation/${hiddenId}` }),
    );
    assert.equal(own.body.total, 1);
  });

  it("refuses a malformed or missing target with a 400 naming it", async () => {
    const doc = await kit.principalFor((await kit.enrol("clinician")).key);
    const queries: Record<string, string>[] = [
      {},
      { target: "Observation" },
      { target: "http://elsewhere/Observation/1" },
      { target: "x/1" },
    ];
    for (const q of queries) {
      const r = await call(provenanceSearch, kit.ctx, request(doc, {}, q));
      assert.equal(r.status, 400, JSON.stringify(q));
      assert.deepEqual(r.body.issue[0].expression, ["target"]);
    }
  });
});
