import { canonicalJson } from "../ledger/canonical.ts";
import { sha256Hex } from "../ledger/hash.ts";

/** Domain separation: a record commitment can never be mistaken for any other hash the system makes. */
export const COMMITMENT_PREFIX = "careledger/record/v1\n";

/**
 * The salted commitment to one stored version of a FHIR resource, as anchored on the ledger by `record.anchor`:
 * `sha256hex("careledger/record/v1\n" ‖ salt ‖ canonicalJson(resource))`, where `salt` is 64 lowercase hex chars
 * (32 random bytes) and `resource` is the version exactly as stored (with `meta.versionId` and `meta.lastUpdated`).
 *
 * Why salted: a bare hash of a record could be confirmed by anyone who guesses its content (a birth date, a common
 * code). The salt lives only inside the record's ciphertext, so erasing the patient's data key leaves a commitment
 * on the ledger that nobody can link to any content any more — this is how an append-only ledger and GDPR erasure
 * coexist. Anyone holding the record and its salt (an auditor given an export) can recompute and check it.
 */
export function recordCommitment(salt: string, resource: unknown): string {
  return sha256Hex(COMMITMENT_PREFIX + salt + canonicalJson(resource));
}

/** Same as `recordCommitment`, for a resource already serialised as canonical JSON (saves a second serialisation). */
export function recordCommitmentOfJson(salt: string, canonicalResourceJson: string): string {
  return sha256Hex(COMMITMENT_PREFIX + salt + canonicalResourceJson);
}
