import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { connect, createServer } from "node:tls";
import { createCa, issueCertificate } from "./pki.ts";

const dir = mkdtempSync(join(tmpdir(), "careledger-pki-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A TLS handshake with `server` files, as a client trusting `trustCa`; resolves with the error, if any. */
async function handshake(server: { cert: string; key: string; ca: string }, trustCa: string, servername = "localhost") {
  const srv = createServer(
    { cert: readFileSync(server.cert), key: readFileSync(server.key), ca: readFileSync(server.ca), requestCert: true },
    (socket) => socket.end("hello"),
  );
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const port = (srv.address() as { port: number }).port;
  try {
    return await new Promise<string | undefined>((resolve) => {
      const socket = connect({
        host: "127.0.0.1",
        port,
        servername,
        ca: readFileSync(trustCa),
        cert: readFileSync(server.cert),
        key: readFileSync(server.key),
      });
      socket.once("secureConnect", () => {
        socket.end();
        resolve(undefined);
      });
      socket.once("error", (error) => resolve(error.message));
    });
  } finally {
    srv.close();
  }
}

test("a certificate issued by the network CA is trusted by a client that holds the CA, for TLS both ways", async () => {
  const ca = await createCa(join(dir, "ca"), "test-net");
  assert.equal(statSync(ca.key).mode & 0o777, 0o600);
  const node = await issueCertificate(ca, join(dir, "node-a"), "node-a");
  assert.equal(statSync(node.key).mode & 0o777, 0o600);
  const cert = new X509Certificate(readFileSync(node.cert));
  assert.ok(cert.verify(new X509Certificate(readFileSync(ca.cert)).publicKey), "signed by the CA");
  assert.match(cert.subjectAltName ?? "", /DNS:localhost/);
  assert.match(cert.subjectAltName ?? "", /IP Address:127\.0\.0\.1/);
  assert.equal(await handshake(node, ca.cert), undefined);
});

test("a client that trusts another CA refuses the certificate; a wrong host name is refused", async () => {
  const ca = await createCa(join(dir, "ca2"), "net-2");
  const other = await createCa(join(dir, "other"), "other-net");
  const node = await issueCertificate(ca, join(dir, "node-b"), "node-b");
  assert.match((await handshake(node, other.cert)) ?? "", /certificate/i);
  assert.match((await handshake(node, ca.cert, "evil.example")) ?? "", /altnames|not in the cert/i);
});
