/*
 * Pebble, Let's Encrypt's ACME test server (Debian package pebble), on loopback for one
 * test: its HTTPS certificate from a throwaway CA (tls-certs.ts), its HTTP-01 and
 * TLS-ALPN-01 validations sent to the ports the test names, and its issuing root fetched
 * from the management interface for the clients that check what Gatehouse serves.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { get } from 'node:https'
import { join } from 'node:path'
import { freePort } from './helpers.js'
import { makeCa, makeCert } from './tls-certs.js'

const PEBBLE = '/usr/bin/pebble'

export interface Pebble {
  /** The ACME directory URL. */
  directory: string
  /** The PEM file of the CA that signed Pebble's own HTTPS certificate (Gatehouse's `ca_root`). */
  caRoot: string
  /** Pebble's issuing root (PEM), fetched from /roots/0: what a client of Gatehouse trusts. */
  issuingRoot: () => Promise<string>
  /** Everything Pebble has written to stdout and stderr so far. */
  output: () => string
  stop: () => Promise<void>
}

export interface PebbleOptions {
  /** Where HTTP-01 validations go (Gatehouse's plain listener). */
  httpPort: number
  /** Where TLS-ALPN-01 validations go (Gatehouse's TLS listener). */
  tlsPort: number
  /** Lifetime of the certificates issued, in seconds (Pebble's default: 5 years). */
  validitySeconds?: number
  /** Extra environment (PEBBLE_VA_ALWAYS_VALID=1 and the like). */
  env?: Record<string, string>
}

function fetchPem(url: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get(url, { ca }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () =>
        res.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: ${res.statusCode}`)),
      )
    }).on('error', reject)
  })
}

/** Start Pebble in `dir`; resolves once its directory answers. Stop it with stop() (t.after). */
export async function startPebble(dir: string, options: PebbleOptions): Promise<Pebble> {
  const ca = makeCa(dir)
  const own = makeCert(ca, 'pebble', ['localhost', 'IP:127.0.0.1'])
  const caPem = readFileSync(ca.cert, 'utf8')
  const [port, mgmt] = [await freePort(), await freePort()]
  const config = join(dir, 'pebble.json')
  writeFileSync(
    config,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${port}`,
        managementListenAddress: `127.0.0.1:${mgmt}`,
        certificate: own.cert,
        privateKey: own.key,
        httpPort: options.httpPort,
        tlsPort: options.tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        ...(options.validitySeconds ? { certificateValidityPeriod: options.validitySeconds } : {}),
      },
    }),
  )
  let output = ''
  const child: ChildProcess = spawn(PEBBLE, ['-config', config], {
    cwd: dir,
    // No random 0-15 s pause before each validation (the VA's default, to catch clients that race).
    env: { PATH: '/usr/bin:/bin', PEBBLE_VA_NOSLEEP: '1', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()))
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    await exited
  }
  const directory = `https://localhost:${port}/dir`
  const deadline = Date.now() + 15_000
  for (;;) {
    try {
      await fetchPem(directory, caPem)
      break
    } catch (err) {
      if (Date.now() > deadline || child.exitCode !== null) {
        await stop()
        throw new Error(`pebble did not start: ${(err as Error).message}\n${output}`)
      }
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  return {
    directory,
    caRoot: ca.cert,
    issuingRoot: () => fetchPem(`https://localhost:${mgmt}/roots/0`, caPem),
    output: () => output,
    stop,
  }
}
