// A small certificate authority for a CareLedger network: one CA per network, and for each node and each etcd member
// a certificate valid both as a TLS server and as a TLS client (nodes serve HTTPS and present a client certificate
// to etcd; etcd members present theirs to each other). ECDSA P-256, which every TLS stack here (Node, etcd's Go)
// accepts; the ledger's own signatures stay Ed25519.

import { webcrypto } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
// @peculiar/x509 resolves its ASN.1 helpers through tsyringe, which needs the Reflect metadata polyfill loaded first.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { ensureDir, writeFileAtomic } from "../node/datadir.ts";

x509.cryptoProvider.set(webcrypto as never);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;

export interface CaFiles {
  cert: string;
  key: string;
}

interface LoadedCa {
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString("base64");
  return `-----BEGIN ${label}-----\n${b64.replace(/(.{64})/g, "$1\n").replace(/\n$/, "")}\n-----END ${label}-----\n`;
}

function serial(): string {
  return Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
    .toString("hex")
    .replace(/^[89a-f]/, "1");
}

async function exportKey(key: CryptoKey): Promise<string> {
  return pem("PRIVATE KEY", await webcrypto.subtle.exportKey("pkcs8", key));
}

/** Creates the network's CA (10 years) in `dir`: ca.pem (share it) and ca.key (0600; keep it off the nodes). */
export async function createCa(dir: string, name: string, now = Date.now()): Promise<CaFiles> {
  ensureDir(dir);
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"])) as unknown as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${name} CA, O=CareLedger`,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + 3650 * DAY_MS),
    signingAlgorithm: ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const files = { cert: join(dir, "ca.pem"), key: join(dir, "ca.key") };
  writeFileAtomic(files.cert, cert.toString("pem"), 0o644);
  writeFileAtomic(files.key, await exportKey(keys.privateKey), 0o600);
  return files;
}

async function loadCa(files: CaFiles): Promise<LoadedCa> {
  const cert = new x509.X509Certificate(readFileSync(files.cert, "utf8"));
  const keyPem = readFileSync(files.key, "utf8").replace(/-----[A-Z ]+-----|\s+/g, "");
  const privateKey = (await webcrypto.subtle.importKey("pkcs8", Buffer.from(keyPem, "base64"), ALGORITHM, true, [
    "sign",
  ])) as unknown as CryptoKey;
  const publicKey = (await cert.publicKey.export(ALGORITHM, ["verify"])) as CryptoKey;
  return { cert, keys: { privateKey, publicKey } };
}

export interface IssuedFiles {
  ca: string;
  cert: string;
  key: string;
}

/**
 * Issues a certificate (2 years) for one party — a node or an etcd member — valid for TLS server and client auth,
 * for the given DNS names and IP addresses. Writes `<outDir>/<name>.pem`, `<outDir>/<name>.key` (0600) and a copy
 * of the CA certificate as `<outDir>/ca.pem`, so a party's directory is all it needs.
 */
export async function issueCertificate(
  caFiles: CaFiles,
  outDir: string,
  name: string,
  subject: { dns?: string[]; ips?: string[] } = {},
  now = Date.now(),
): Promise<IssuedFiles> {
  const ca = await loadCa(caFiles);
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"])) as unknown as CryptoKeyPair;
  const dns = subject.dns ?? ["localhost"];
  const ips = subject.ips ?? ["127.0.0.1"];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${name}, O=CareLedger`,
    issuer: ca.cert.subject,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + 730 * DAY_MS),
    signingAlgorithm: ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...dns.map((value) => ({ type: "dns" as const, value })),
        ...ips.map((value) => ({ type: "ip" as const, value })),
      ]),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  ensureDir(outDir);
  const files = { ca: join(outDir, "ca.pem"), cert: join(outDir, `${name}.pem`), key: join(outDir, `${name}.key`) };
  writeFileAtomic(files.ca, ca.cert.toString("pem"), 0o644);
  writeFileAtomic(files.cert, cert.toString("pem"), 0o644);
  writeFileAtomic(files.key, await exportKey(keys.privateKey), 0o600);
  return files;
}
