// The vault's key hierarchy: one master key per node (a 0600 file in the data dir, or a KMS behind the same
// interface) → HKDF subkeys for wrapping per-patient data keys and for the blind (keyed-hash) search indexes.

import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { createSecretFile, readSecretFile, type SecretFileKind } from "./secret-file.ts";

/**
 * What the vault needs from a key store. An interface so that a KMS or HSM can replace the key file: `wrap`/`unwrap`
 * are the only operations on the master secret; the blind-index key must be available in process because every
 * index write and search hashes with it.
 */
export interface KeyProvider {
  /** Encrypts a data key; `aad` binds the result to its owner (a wrapped key moved to another patient fails). */
  wrap(dataKey: Buffer, aad: string): Buffer;
  /** Inverse of `wrap`; throws `VaultKeyError` if the wrapped bytes or the aad do not match. */
  unwrap(wrapped: Buffer, aad: string): Buffer;
  /** 32-byte HMAC key for the blind indexes, as a fresh copy (the vault wipes it after use). */
  blindIndexKey(): Buffer;
}

/** A key file or wrapped key that cannot be used. The message names the file, never key material. */
export class VaultKeyError extends Error {
  override readonly name = "VaultKeyError";
}

const KEY_FILE_KIND = "careledger-vault-master-key";
const WRAP_INFO = "careledger/vault/wrap/v1";
const BLIND_INDEX_INFO = "careledger/vault/blind-index/v1";
/** HKDF salt: fixed and public; the master key is already uniformly random. */
const HKDF_SALT = Buffer.from("careledger/vault/hkdf-salt/v1");
const WRAP_FORMAT = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** Derives a 32-byte subkey for one purpose; distinct `info` strings give independent keys. */
function subkey(master: Buffer, info: string): Buffer {
  return Buffer.from(hkdfSync("sha256", master, HKDF_SALT, info, 32));
}

/**
 * Master key in a file: `{"kind": "careledger-vault-master-key", "key": "<64 hex>"}`, mode 0600. Subkeys by
 * HKDF-SHA256; wrapping is AES-256-GCM with a fresh 12-byte IV (format byte ‖ IV ‖ tag ‖ ciphertext).
 */
const VAULT_KEY_FILE: SecretFileKind = {
  kind: KEY_FILE_KIND,
  what: "vault key",
  valid: "CareLedger vault key",
  fail: (message) => new VaultKeyError(message),
};

export class FileKeyProvider implements KeyProvider {
  private readonly wrapKey: Buffer;
  private readonly indexKey: Buffer;

  private constructor(master: Buffer) {
    this.wrapKey = subkey(master, WRAP_INFO);
    this.indexKey = subkey(master, BLIND_INDEX_INFO);
    master.fill(0);
  }

  /**
   * Opens the key file, or creates it (0600, written to a temporary file, fsynced, then linked into place so two
   * processes racing never both create one, and a crash never leaves a half-written key). Refuses a file that group
   * or others can read, and one that is not exactly a CareLedger vault key.
   */
  static openOrCreate(path: string): FileKeyProvider {
    try {
      return FileKeyProvider.open(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
    // Someone else may create it first: theirs wins, ours was never used.
    createSecretFile(path, KEY_FILE_KIND)?.fill(0);
    return FileKeyProvider.open(path);
  }

  /** Opens an existing key file (throws an ENOENT error if there is none). */
  static open(path: string): FileKeyProvider {
    return new FileKeyProvider(readSecretFile(path, VAULT_KEY_FILE));
  }

  /** A provider over a key held in memory (tests, or a key fetched from elsewhere). The buffer is zeroed. */
  static fromMasterKey(master: Buffer): FileKeyProvider {
    if (master.length !== 32) throw new VaultKeyError("a vault master key is 32 bytes");
    return new FileKeyProvider(Buffer.from(master));
  }

  wrap(dataKey: Buffer, aad: string): Buffer {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.wrapKey, iv);
    cipher.setAAD(Buffer.from(aad, "utf8"));
    const ct = Buffer.concat([cipher.update(dataKey), cipher.final()]);
    return Buffer.concat([Buffer.of(WRAP_FORMAT), iv, cipher.getAuthTag(), ct]);
  }

  unwrap(wrapped: Buffer, aad: string): Buffer {
    if (wrapped.length < 1 + IV_BYTES + TAG_BYTES || wrapped[0] !== WRAP_FORMAT) {
      throw new VaultKeyError("wrapped data key is malformed");
    }
    const iv = wrapped.subarray(1, 1 + IV_BYTES);
    const tag = wrapped.subarray(1 + IV_BYTES, 1 + IV_BYTES + TAG_BYTES);
    const decipher = createDecipheriv("aes-256-gcm", this.wrapKey, iv);
    decipher.setAAD(Buffer.from(aad, "utf8"));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([decipher.update(wrapped.subarray(1 + IV_BYTES + TAG_BYTES)), decipher.final()]);
    } catch {
      throw new VaultKeyError("wrapped data key does not authenticate (wrong vault key, or altered)");
    }
  }

  blindIndexKey(): Buffer {
    return Buffer.from(this.indexKey);
  }
}
