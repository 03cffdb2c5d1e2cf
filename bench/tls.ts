/*
 * The certificate both sides of a TLS scenario serve: one throwaway CA and a certificate for
 * localhost and 127.0.0.1 in the scenario's temporary directory (test/support/tls-certs.ts).
 */
import { chmodSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { makeCa, makeCert } from '../test/support/tls-certs.js'

export interface BenchCertificate {
  cert: string
  key: string
}

const tlsDir = (tmpDir: string) => join(tmpDir, 'tls')

/** Where the scenario's certificate is (written by writeBenchCertificate). */
export function benchCertificate(tmpDir: string): BenchCertificate {
  return { cert: join(tlsDir(tmpDir), 'server.pem'), key: join(tlsDir(tmpDir), 'server.key') }
}

export function writeBenchCertificate(tmpDir: string): BenchCertificate {
  mkdirSync(tlsDir(tmpDir), { mode: 0o755 })
  const ca = makeCa(tlsDir(tmpDir))
  const leaf = makeCert(ca, 'server', ['localhost', 'IP:127.0.0.1'])
  // nginx's worker may run unprivileged: it reads the key after the master did (root only).
  chmodSync(leaf.key, 0o644)
  return { cert: leaf.cert, key: leaf.key }
}
