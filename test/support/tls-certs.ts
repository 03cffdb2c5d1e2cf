/*
 * A throwaway certificate authority for the TLS tests, made with the openssl command
 * (Debian package openssl): a CA, and certificates it signs for the names a test asks for.
 */
import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

const OPENSSL = '/usr/bin/openssl'
const ENV = { PATH: '/usr/bin:/bin' }

function openssl(args: string[], cwd: string): void {
  execFileSync(OPENSSL, args, { cwd, env: ENV, stdio: ['ignore', 'ignore', 'pipe'] })
}

export interface TestCa {
  dir: string
  cert: string
  key: string
}

/** A self-signed CA (EC P-256) in `dir`: ca.pem, ca.key. */
export function makeCa(dir: string): TestCa {
  const cert = join(dir, 'ca.pem')
  const key = join(dir, 'ca.key')
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '2',
      '-subj',
      '/CN=Gatehouse Test CA',
    ],
    dir,
  )
  return { dir, cert, key }
}

/**
 * A certificate signed by `ca` for `names` (DNS names, or IP addresses written as
 * `IP:127.0.0.1`), with subject CN = the first name; `<base>.pem` and `<base>.key` in the
 * CA's directory. `serial` (hex) lets a test tell two issues apart.
 */
export function makeCert(
  ca: TestCa,
  base: string,
  names: string[],
  serial: string = Math.floor(Math.random() * 2 ** 40).toString(16),
): { cert: string; key: string; serial: string } {
  const cert = join(ca.dir, `${base}.pem`)
  const key = join(ca.dir, `${base}.key`)
  const csr = join(ca.dir, `${base}.csr`)
  const ext = join(ca.dir, `${base}.ext`)
  const san = names.map((n) => (n.startsWith('IP:') ? n : `DNS:${n}`)).join(',')
  writeFileSync(ext, `subjectAltName=${san}\n`)
  const cn = names[0]!.replace(/^IP:/, '')
  openssl(
    [
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      key,
      '-out',
      csr,
      '-subj',
      `/CN=${cn}`,
    ],
    ca.dir,
  )
  openssl(
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-set_serial',
      `0x${serial}`,
      '-days',
      '2',
      '-extfile',
      ext,
      '-out',
      cert,
    ],
    ca.dir,
  )
  return { cert, key, serial: serial.toUpperCase() }
}
