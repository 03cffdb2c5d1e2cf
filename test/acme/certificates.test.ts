/*
 * Automatic certificates (issue 14 item 3) against Pebble, Let's Encrypt's ACME test server
 * (test/support/pebble.ts): HTTP-01 and TLS-ALPN-01 issuance end to end, checked by an HTTPS
 * client trusting only Pebble's issuing root; the files on disk and their modes; a reload and
 * a restart serving the stored certificate without a new order; renewal ahead of expiry
 * without a restart; a failed renewal (Pebble stopped) keeping the old certificate, logged.
 */
import assert from 'node:assert/strict'
import { statSync } from 'node:fs'
import { request } from 'node:https'
import { join } from 'node:path'
import { test } from 'node:test'
import type { TLSSocket } from 'node:tls'
import { createGatehouse, type Gatehouse } from '../../src/gatehouse.js'
import type { GatehouseConfigInput } from '../../src/config.js'
import { validateConfig } from '../../src/config.js'
import { caFolderName } from '../../src/acme/store.js'
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import {
  CLI,
  eventually,
  freePort,
  listeningAddress,
  logLines,
  stopServe,
  tempDir,
} from '../support/helpers.js'
import { type Pebble, startPebble } from '../support/pebble.js'

/** The one name Pebble's resolver (the system's) takes to 127.0.0.1: `*.localhost` does not resolve there. */
const HOST = 'localhost'

interface Served {
  status: number
  body: string
  serial: string
  san: string
}

/** GET / over HTTPS to 127.0.0.1:port with SNI `localhost`, trusting only `root` (certificate checks on). */
function httpsGet(port: number, root: string): Promise<Served> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        servername: HOST,
        path: '/',
        ca: root,
        agent: false,
        headers: { host: HOST },
      },
      (res) => {
        const cert = (res.socket as TLSSocket).getPeerCertificate()
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (body += c))
        res.on('end', () =>
          resolve({
            status: res.statusCode!,
            body,
            serial: cert.serialNumber,
            san: cert.subjectaltname ?? '',
          }),
        )
      },
    )
    req.on('error', reject)
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')))
    req.end()
  })
}

/** The served certificate once it verifies against Pebble's root (not before the order completes). */
function issued(port: number, root: string, what: string, unlike?: string): Promise<Served> {
  return eventually(
    () =>
      httpsGet(port, root).then(
        (r) => (r.serial !== unlike ? r : undefined),
        () => undefined,
      ),
    what,
    60_000,
  )
}

interface Setup {
  dir: string
  storage: string
  log: string
  httpPort: number
  tlsPort: number
  pebble: Pebble
  root: string
  config: (acme?: Record<string, unknown>) => GatehouseConfigInput
  start: (config: GatehouseConfigInput) => Promise<Gatehouse>
}

/** Pebble sending its validations to two free ports, where Gatehouse will listen. */
async function setup(
  t: { after: (fn: () => Promise<void> | void) => void },
  options: { validitySeconds?: number } = {},
): Promise<Setup> {
  const dir = tempDir(t, 'gh-acme-')
  const [httpPort, tlsPort] = [await freePort(), await freePort()]
  const pebble = await startPebble(dir, { httpPort, tlsPort, ...options })
  t.after(() => pebble.stop())
  const storage = join(dir, 'acme')
  const log = join(dir, 'error.log')
  const config = (acme: Record<string, unknown> = {}): GatehouseConfigInput => ({
    listen: [
      // HTTP-01 is answered before redirect_http sends the rest to HTTPS.
      { address: `127.0.0.1:${httpPort}`, redirect_http: true },
      { address: `127.0.0.1:${tlsPort}`, tls: { acme: [HOST] } },
    ],
    routes: [{ path: '/', return: { status: 200, body: 'over acme\n' } }],
    log: { level: 'info', error_log: log },
    acme: { directory: pebble.directory, ca_root: pebble.caRoot, storage, email: 'ops@example.com', ...acme },
  })
  const start = async (input: GatehouseConfigInput) => {
    const gatehouse = createGatehouse(input, { baseDir: dir })
    t.after(() => gatehouse.close(0))
    await gatehouse.listen()
    return gatehouse
  }
  return { dir, storage, log, httpPort, tlsPort, pebble, root: await pebble.issuingRoot(), config, start }
}

const mode = (path: string) => statSync(path).mode & 0o777
const logged = (file: string, msg: string) => logLines(file).filter((l) => l.msg === msg)

test('HTTP-01: a certificate for the host is obtained, stored 0600 in 0700 folders, kept across a reload and a restart', async (t) => {
  const s = await setup(t)
  const input = s.config({ challenges: ['http-01'] })
  const gatehouse = await s.start(input)
  const first = await issued(s.tlsPort, s.root, 'the certificate from pebble')
  assert.equal(first.status, 200)
  assert.equal(first.body, 'over acme\n')
  assert.equal(first.san, `DNS:${HOST}`)
  assert.deepEqual(
    logged(s.log, 'acme: answering a challenge').map((l) => l.challenge),
    ['http-01'],
  )
  const ca = join(s.storage, caFolderName(s.pebble.directory))
  const certDir = join(ca, 'certificates', HOST)
  for (const d of [s.storage, ca, join(ca, 'certificates'), certDir]) assert.equal(mode(d), 0o700, d)
  for (const f of [join(ca, 'account.key'), join(certDir, `${HOST}.crt`), join(certDir, `${HOST}.key`)])
    assert.equal(mode(f), 0o600, f)
  await eventually(() => logged(s.log, 'acme: certificate obtained').length === 1, 'the log line')
  assert.deepEqual(
    gatehouse.acmeStatus().map((h) => [h.host, h.serial]),
    [[HOST, first.serial]],
  )

  // A reload keeps the certificate: served at once, no new order.
  assert.equal(await gatehouse.reload(input, s.dir), true)
  assert.equal((await httpsGet(s.tlsPort, s.root)).serial, first.serial)

  // A restart with the CA out of reach serves the stored certificate from the first handshake.
  await gatehouse.close(0)
  await s.pebble.stop()
  await s.start(input)
  const again = await httpsGet(s.tlsPort, s.root)
  assert.equal(again.serial, first.serial)
  assert.equal(again.body, 'over acme\n')
  assert.equal(logged(s.log, 'acme: certificate obtained').length, 1)
})

test('TLS-ALPN-01: the validation handshake gets the challenge certificate, browsers the issued one', async (t) => {
  const s = await setup(t)
  // No plain listener at all: TLS-ALPN-01 is answered on the TLS port.
  const input = s.config({ challenges: ['tls-alpn-01'] })
  await s.start({ ...input, listen: [{ address: `127.0.0.1:${s.tlsPort}`, tls: { acme: [HOST] } }] })
  const served = await issued(s.tlsPort, s.root, 'the certificate from pebble')
  assert.equal(served.san, `DNS:${HOST}`)
  assert.equal(served.body, 'over acme\n')
  assert.deepEqual(
    logged(s.log, 'acme: answering a challenge').map((l) => l.challenge),
    ['tls-alpn-01'],
  )
})

test('renewal ahead of expiry swaps the certificate without a restart; a failed one keeps it, logged', async (t) => {
  // One-hour certificates renewed two hours ahead: every check renews.
  const s = await setup(t, { validitySeconds: 3600 })
  await s.start(s.config({ renew_before: '2h', check_interval: '1s' }))
  const first = await issued(s.tlsPort, s.root, 'the first certificate')
  const renewed = await issued(s.tlsPort, s.root, 'a renewed certificate', first.serial)
  assert.notEqual(renewed.serial, first.serial)
  assert.ok(logged(s.log, 'acme: certificate renewed').length >= 1)

  // The CA is gone: the renewal fails, is logged with its cause, and the last certificate serves on.
  await s.pebble.stop()
  const failed = await eventually(() => logged(s.log, 'acme: renewal failed')[0], 'a failed renewal logged')
  assert.equal(failed.code, 'GH_ERR_ACME')
  assert.equal(failed.host, HOST)
  assert.match(JSON.stringify(failed.err), /ECONNREFUSED/)
  assert.match(String(failed.serving), /current certificate/)
  const last = await httpsGet(s.tlsPort, s.root)
  assert.equal(last.status, 200)
  const served = logLines(s.log)
    .filter((l) => l.msg === 'acme: certificate renewed')
    .map((l) => l.serial)
  assert.equal(last.serial, served.at(-1))
})

test('gatehouse serve --acme-domain: the certificate is obtained over TLS-ALPN-01 and stored beside the working directory', async (t) => {
  const s = await setup(t)
  const site = join(s.dir, 'site')
  mkdirSync(site)
  writeFileSync(join(site, 'index.html'), 'from the command line\n')
  const child = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      '--listen',
      `127.0.0.1:${s.tlsPort}`,
      '--acme-domain',
      HOST,
      '--acme-email',
      'ops@example.com',
      '--acme-directory',
      s.pebble.directory,
      '--acme-ca-root',
      s.pebble.caRoot,
      '--static',
      site,
      '--log-format',
      'json',
    ],
    { cwd: s.dir, env: { PATH: '/usr/bin:/bin' }, stdio: ['ignore', 'ignore', 'pipe'] },
  )
  t.after(() => stopServe(child))
  const { stderr } = await listeningAddress(child)
  const served = await issued(s.tlsPort, s.root, 'the certificate from pebble')
  assert.equal(served.body, 'from the command line\n')
  assert.equal(served.san, `DNS:${HOST}`)
  assert.match(stderr(), /"challenge":"tls-alpn-01"/)
  const stored = join(s.dir, 'gatehouse-acme', caFolderName(s.pebble.directory), 'certificates', HOST)
  assert.equal(mode(join(stored, `${HOST}.key`)), 0o600)
})

test('config: acme hosts that no listener can validate, acme = true without route hosts, wildcards', () => {
  const problems = (input: unknown) => {
    try {
      validateConfig(input, '/tmp')
      return ''
    } catch (err) {
      return String((err as Error).message)
    }
  }
  assert.match(
    problems({
      listen: [{ address: '127.0.0.1:8443', tls: { acme: ['example.com'] } }],
      acme: { challenges: ['http-01'] },
    }),
    /no plain HTTP listener can answer it/,
  )
  assert.match(
    problems({ listen: [{ address: '127.0.0.1:8443', tls: { acme: true } }], routes: [] }),
    /acme = true takes the host names of the routes/,
  )
  assert.match(
    problems({ listen: [{ address: '127.0.0.1:8443', tls: { acme: ['*.example.com'] } }] }),
    /DNS-01/,
  )
  assert.match(problems({ acme: { directory: 'http://ca.example/dir' } }), /https:\/\/ URL/)
  assert.equal(
    problems({
      listen: ['127.0.0.1:8080', { address: '127.0.0.1:8443', tls: { acme: true } }],
      routes: [{ host: ['example.com', '*.example.org'], return: { status: 204 } }],
      acme: { challenges: ['http-01'], renew_before: '20d' },
    }),
    '',
  )
})
