// Small pieces every etcd user here shares: a client with the network's TLS files and a deadline for unary calls, and
// the end of a key range for a prefix.
import { readFileSync } from "node:fs";
import { Etcd3 } from "etcd3";

/** PEM file paths of an etcd client's mutual TLS (absolute, or relative to the working directory). */
export interface EtcdTlsFiles {
  ca: string;
  cert: string;
  key: string;
}

/**
 * An etcd3 client for `endpoints`, with mutual TLS when `tls` is given and a deadline of `callTimeoutMs` on unary
 * calls (watches and keep-alives are long-lived streams and have none).
 */
export function etcdClient(endpoints: string[], tls?: EtcdTlsFiles, callTimeoutMs = 5000): Etcd3 {
  return new Etcd3({
    hosts: endpoints,
    credentials: tls
      ? {
          rootCertificate: readFileSync(tls.ca),
          privateKey: readFileSync(tls.key),
          certChain: readFileSync(tls.cert),
        }
      : undefined,
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
  });
}

/** The smallest key after every key that starts with `prefix` (etcd's `range_end` for a prefix). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}
