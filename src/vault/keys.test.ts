// The vault key file (0600, refused when exposed or malformed), HKDF subkeys, data-key wrapping, the blind-index
// HMAC and the record commitment.

import assert from "node:assert/strict";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { canonicalJson } from "../ledger/canonical.ts";
import { BlindHasher } from "./blind-index.ts";
import { COMMITMENT_PREFIX, recordCommitment, recordCommitmentOfJson } from "./commitment.ts";
import { FileKeyProvider, VaultKeyError } from "./keys.ts";
import { payloadJson } from "./vault.ts";

const dir = mkdtempSync(join(tmpdir(), "careledger-vault-keys-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(dir, `vault-${n++}.key`);

describe("FileKeyProvider", () => {
  it("creates a 0600 key file and opens the same key again", () => {
    const path = fresh();
    const first = FileKeyProvider.openOrCreate(path);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const body = JSON.parse(readFileSync(path, "utf8"));
    assert.equal(body.kind, "careledger-vault-master-key");
    assert.match(body.key, /^[0-9a-f]{64}$/);
    const second = FileKeyProvider.openOrCreate(path);
    const wrapped = first.wrap(Buffer.alloc(32, 7), "careledger/vault/data-key/v1\npatient-1");
    assert.deepEqual(second.unwrap(wrapped, "careledger/vault/data-key/v1\npatient-1"), Buffer.alloc(32, 7));
    assert.deepEqual(first.blindIndexKey(), second.blindIndexKey());
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.endsWith(".tmp")),
      [],
      "no temporary files left behind",
    );
  });

  it("refuses a key file readable by group or others", () => {
    for (const mode of [0o640, 0o604, 0o644]) {
      const path = fresh();
      FileKeyProvider.openOrCreate(path);
      chmodSync(path, mode);
      assert.throws(
        () => FileKeyProvider.openOrCreate(path),
        (e: unknown) => e instanceof VaultKeyError && e.message.includes("chmod 600"),
      );
    }
  });

  it("refuses malformed key files without echoing their content", () => {
    const secret = "0123456789abcdef".repeat(4);
    const bodies = [
      "not json",
      JSON.stringify({ kind: "ed25519-seed", key: secret }),
      JSON.stringify({ kind: "careledger-vault-master-key", key: secret.slice(2) }),
      JSON.stringify({ kind: "careledger-vault-master-key", key: secret.toUpperCase() }),
      JSON.stringify({ kind: "careledger-vault-master-key" }),
      "null",
    ];
    for (const body of bodies) {
      const path = fresh();
      writeFileSync(path, body, { mode: 0o600 });
      assert.throws(
        () => FileKeyProvider.openOrCreate(path),
        (e: unknown) =>
          e instanceof VaultKeyError &&
          /not a CareLedger vault key/.test(e.message) &&
          !e.message.includes(secret.slice(0, 16)),
        body,
      );
    }
    const sub = join(dir, "a-directory");
    mkdirSync(sub);
    assert.throws(() => FileKeyProvider.openOrCreate(sub), /not a regular file/);
  });

  it("derives separate subkeys: the blind-index key is neither the master key nor another vault's", () => {
    const path = fresh();
    const keys = FileKeyProvider.openOrCreate(path);
    const master = Buffer.from(JSON.parse(readFileSync(path, "utf8")).key, "hex");
    const indexKey = keys.blindIndexKey();
    assert.equal(indexKey.length, 32);
    assert.notDeepEqual(indexKey, master);
    assert.notDeepEqual(indexKey, FileKeyProvider.openOrCreate(fresh()).blindIndexKey());
    // HKDF-SHA256 with the documented salt and info, so another implementation can derive the same keys.
    const expected = createHmac("sha256", createHmac("sha256", "careledger/vault/hkdf-salt/v1").update(master).digest())
      .update(Buffer.concat([Buffer.from("careledger/vault/blind-index/v1"), Buffer.of(1)]))
      .digest();
    assert.deepEqual(indexKey, expected);
  });

  it("binds a wrapped key to its aad and to the master key, and detects tampering", () => {
    const keys = FileKeyProvider.fromMasterKey(randomBytes(32));
    const dataKey = randomBytes(32);
    const wrapped = keys.wrap(dataKey, "owner-a");
    assert.notDeepEqual(keys.wrap(dataKey, "owner-a"), wrapped, "a fresh IV each time");
    assert.deepEqual(keys.unwrap(wrapped, "owner-a"), dataKey);
    assert.throws(() => keys.unwrap(wrapped, "owner-b"), VaultKeyError);
    assert.throws(() => FileKeyProvider.fromMasterKey(randomBytes(32)).unwrap(wrapped, "owner-a"), VaultKeyError);
    for (const i of [0, 5, 20, wrapped.length - 1]) {
      const bad = Buffer.from(wrapped);
      bad[i] = (bad[i] as number) ^ 0x40;
      assert.throws(() => keys.unwrap(bad, "owner-a"), VaultKeyError, `byte ${i}`);
    }
    assert.throws(() => keys.unwrap(wrapped.subarray(0, 20), "owner-a"), /malformed/);
    assert.throws(() => FileKeyProvider.fromMasterKey(randomBytes(16)), /32 bytes/);
  });
});

describe("BlindHasher", () => {
  it("is HMAC-SHA256 truncated to 16 bytes, for any string", () => {
    const key = randomBytes(32);
    const hasher = new BlindHasher(key);
    const reference = (m: string) => createHmac("sha256", key).update(m, "utf8").digest().subarray(0, 16);
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 300 }), (m) => hasher.digest(m).equals(reference(m))),
      { numRuns: 2000 },
    );
    for (const m of ["", "é".repeat(1366), "x".repeat(1365), "x".repeat(1366), "😀".repeat(5000), "a\0b"]) {
      assert.deepEqual(hasher.digest(m), reference(m), `length ${m.length}`);
    }
    assert.notDeepEqual(new BlindHasher(randomBytes(32)).digest("smith"), hasher.digest("smith"));
  });
});

describe("record commitment", () => {
  it("is sha256 of the prefix, the salt and the canonical resource", () => {
    const salt = "ab".repeat(32);
    const resource = { resourceType: "Observation", id: "o1", status: "final", meta: { versionId: "1" } };
    const expected = createHash("sha256")
      .update(
        `careledger/record/v1\n${salt}{"id":"o1","meta":{"versionId":"1"},"resourceType":"Observation","status":"final"}`,
      )
      .digest("hex");
    assert.equal(COMMITMENT_PREFIX, "careledger/record/v1\n");
    assert.equal(recordCommitment(salt, resource), expected);
    assert.equal(
      recordCommitment(salt, { status: "final", meta: { versionId: "1" }, id: "o1", resourceType: "Observation" }),
      expected,
    );
    assert.notEqual(recordCommitment("cd".repeat(32), resource), expected, "the salt matters");
    assert.equal(recordCommitmentOfJson(salt, canonicalJson(resource)), expected);
  });

  it("the vault's payload is the canonical JSON of {resource, salt, labels, date?}", () => {
    const json = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: "small" },
        fc.string(),
        fc.integer(),
        fc.boolean(),
        fc.constant(null),
        fc.array(tie("value"), { maxLength: 4 }),
        fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), tie("value"), { maxKeys: 4 }),
      ),
    })).value;
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), json, { maxKeys: 6 }),
        fc.uniqueArray(fc.stringMatching(/^[A-Za-z0-9_-]{1,8}$/), { maxLength: 4 }),
        fc.option(fc.constantFrom("2024-01-02", "1999-12-31"), { nil: undefined }),
        (body, labels, date) => {
          const resource = { ...body, resourceType: "Observation", id: "x" };
          const salt = randomBytes(32).toString("hex");
          const object: Record<string, unknown> = { resource, salt, labels };
          if (date !== undefined) object.date = date;
          return payloadJson(canonicalJson(resource), salt, labels, date) === canonicalJson(object);
        },
      ),
      { numRuns: 500 },
    );
  });
});
