/*
 * TLS on the HTTP listeners (issue 14 item 1): real clients (curl with the test CA,
 * openssl s_client, Python's ssl/urllib, node's tls) against `--tls-cert/--tls-key` and
 * `listen = [{ address, tls }]`; the gateways see HTTPS; SNI; certificates re-read on reload.
 */
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { Agent, request } from 'node:https'
import { join } from 'node:path'
import { test } from 'node:test'
import { connect, type TLSSocket } from 'node:tls'
import WebSocket from 'ws'
import { createGatehouse } from '../../src/gatehouse.js'
import {
  CLI,
  eventually,
  FIXTURES,
  listeningAddress,
  PYTHON,
  serveCli,
  startGatehouse,
  stopServe,
  tempDir,
} from '../support/helpers.js'
import { makeCa, makeCert, type TestCa } from '../support/tls-certs.js'
import { startUwsgi } from '../support/peer-uwsgi.js'

const ENV = { PATH: '/usr/bin:/bin' }

interface Run {
  code: number
  stdout: string
  stderr: string
}

function run(file: string, args: string[], input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(file, args, { env: ENV, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    )
    if (input !== undefined) child.stdin!.end(input)
    else child.stdin!.end()
  })
}

const curl = (ca: TestCa, args: string[]) => run('/usr/bin/curl', ['-sS', '--cacert', ca.cert, ...args])

/** The certificate a new TLS connection is served for `servername`: its serial and CN. */
function servedCertificate(port: number, servername: string): Promise<{ serial: string; cn: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false }, () => {
      const cert = socket.getPeerCertificate()
      socket.end()
      resolve({ serial: cert.serialNumber, cn: String(cert.subject.CN) })
    })
    socket.once('error', reject)
  })
}

function site(t: { after: (fn: () => void) => void }) {
  const dir = tempDir(t, 'gh-tls-')
  const ca = makeCa(dir)
  const pub = join(dir, 'public')
  mkdirSync(pub)
  writeFileSync(join(pub, 'hello.txt'), 'hello over tls\n')
  return { dir, ca, pub }
}

test('--tls-cert/--tls-key: every --listen serves HTTPS; curl with the CA gets the file; TLS 1.0 and 1.1 and CBC-SHA1 suites are refused', async (t) => {
  const { ca, pub } = site(t)
  const leaf = makeCert(ca, 'localhost', ['localhost', 'IP:127.0.0.1'])
  const { port, stderr } = await serveCli(t, [
    '--listen',
    '127.0.0.1:0',
    '--tls-cert',
    leaf.cert,
    '--tls-key',
    leaf.key,
    '--static',
    pub,
  ])
  assert.match(stderr(), /"url":"https:\/\/127\.0\.0\.1:\d+"/)

  const ok = await curl(ca, [
    '-v',
    `https://localhost:${port}/hello.txt`,
    '--resolve',
    `localhost:${port}:127.0.0.1`,
  ])
  assert.equal(ok.code, 0, ok.stderr)
  assert.equal(ok.stdout, 'hello over tls\n')
  assert.match(ok.stderr, /SSL connection using TLSv1\.3/)
  const tls12 = await curl(ca, ['-v', '--tls-max', '1.2', `https://127.0.0.1:${port}/hello.txt`])
  assert.equal(tls12.code, 0, tls12.stderr)
  assert.match(tls12.stderr, /SSL connection using TLSv1\.2/)

  // Plain HTTP on the TLS port is not served.
  const plain = await run('/usr/bin/curl', ['-sS', `http://127.0.0.1:${port}/hello.txt`])
  assert.notEqual(plain.stdout, 'hello over tls\n')

  // The clients are allowed the old protocols (SECLEVEL=0): the server is what refuses them.
  for (const version of ['-tls1_1', '-tls1']) {
    const old = await run(
      '/usr/bin/openssl',
      ['s_client', '-connect', `127.0.0.1:${port}`, version, '-cipher', 'DEFAULT@SECLEVEL=0'],
      '',
    )
    assert.notEqual(old.code, 0, `${version} handshake must fail: ${old.stdout}`)
    assert.match(old.stderr, /alert protocol version|unsupported protocol|no protocols available/i)
  }
  // TLS 1.2 suites: forward-secret AEAD only; CBC with SHA-1 (in Node's own default) is refused.
  const cbc = await curl(ca, [
    '--tls-max',
    '1.2',
    '--ciphers',
    'ECDHE-ECDSA-AES128-SHA',
    `https://127.0.0.1:${port}/`,
  ])
  assert.equal(cbc.code, 35, cbc.stderr)
  const chacha = await curl(ca, [
    '-v',
    '--tls-max',
    '1.2',
    '--ciphers',
    'ECDHE-ECDSA-CHACHA20-POLY1305',
    `https://127.0.0.1:${port}/hello.txt`,
  ])
  assert.equal(chacha.code, 0, chacha.stderr)
  const tls11 = await curl(ca, [
    '--tls-max',
    '1.1',
    '--ciphers',
    'DEFAULT@SECLEVEL=0',
    `https://127.0.0.1:${port}/`,
  ])
  assert.equal(tls11.code, 35, tls11.stderr)
})

test('listen = [{ address, tls }] from a config file with relative paths: WSGI, ASGI (http and websocket), uwsgi and CGI see HTTPS', async (t) => {
  const { dir, ca } = site(t)
  const uwsgi = await startUwsgi(t, dir)
  const leaf = makeCert(ca, 'site', ['localhost', 'IP:127.0.0.1'])
  mkdirSync(join(dir, 'certs'))
  writeFileSync(join(dir, 'certs', 'site.pem'), readFileSync(leaf.cert))
  writeFileSync(join(dir, 'certs', 'site.key'), readFileSync(leaf.key))
  const config = join(dir, 'gatehouse.toml')
  const common = `python = ${JSON.stringify(PYTHON)}\nworkers = 1`
  writeFileSync(
    config,
    `listen = [{ address = "127.0.0.1:0", tls = { cert = "certs/site.pem", key = "certs/site.key" } }]

[[routes]]
path = "/wsgi"
wsgi = { app = "apps:application", chdir = ${JSON.stringify(join(FIXTURES, 'wsgi'))}, ${common.replace('\n', ', ')} }

[[routes]]
path = "/asgi"
asgi = { app = "apps:app", chdir = ${JSON.stringify(join(FIXTURES, 'asgi'))}, ${common.replace('\n', ', ')} }

[[routes]]
path = "/environ"
uwsgi = { pass = ${JSON.stringify(uwsgi.address)} }

[[routes]]
path = "/cgi-bin"
cgi = { root = ${JSON.stringify(join(FIXTURES, 'cgi'))}, interpreters = { ".py" = ${JSON.stringify(PYTHON)} } }
`,
  )
  const checked = await run(process.execPath, [CLI, 'check', '--config', config])
  assert.equal(checked.code, 0, checked.stderr)
  assert.match(checked.stdout, /listen 127\.0\.0\.1:0 \(tls\)/)

  const child = spawn(process.execPath, [CLI, 'serve', '--config', config], {
    env: ENV,
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  t.after(() => stopServe(child))
  const { address } = await listeningAddress(child)
  const port = Number(address.split(':').pop())
  const origin = `https://localhost:${port}`

  // WSGI through Python's own TLS client, verifying against the test CA.
  const py = await run(PYTHON, [
    '-c',
    'import ssl, sys, urllib.request\n' +
      'ctx = ssl.create_default_context(cafile=sys.argv[1])\n' +
      'print(urllib.request.urlopen(sys.argv[2], context=ctx).read().decode())',
    ca.cert,
    `${origin}/wsgi/environ`,
  ])
  assert.equal(py.code, 0, py.stderr)
  const environ = JSON.parse(py.stdout) as Record<string, string>
  assert.equal(environ['wsgi.url_scheme'], 'https')
  assert.equal(environ.HTTPS, 'on')
  assert.equal(environ.SERVER_PORT, String(port))
  // mod_ssl's names for the connection.
  assert.match(environ.SSL_PROTOCOL!, /^TLSv1\.[23]$/)
  assert.ok((environ.SSL_CIPHER ?? '').length > 0)
  assert.equal(environ.SSL_TLS_SNI, 'localhost')

  const asgi = await curl(ca, ['--resolve', `localhost:${port}:127.0.0.1`, `${origin}/asgi/scope`])
  assert.equal(asgi.code, 0, asgi.stderr)
  const scope = JSON.parse(asgi.stdout) as {
    scheme: string
    server: [string, number]
    extensions: { tls?: Record<string, unknown> }
  }
  assert.equal(scope.scheme, 'https')
  assert.equal(scope.server[1], port)
  // The ASGI TLS extension: TLS 1.3 is 0x0304; curl and Node agree on a TLS 1.3 suite (0x13xx).
  const tls = scope.extensions.tls!
  assert.equal(tls.tls_version, 0x0304)
  assert.equal((tls.cipher_suite as number) >> 8, 0x13, JSON.stringify(tls))
  assert.deepEqual(tls.client_cert_chain, [])
  assert.equal(tls.server_cert, null)

  const uw = await curl(ca, ['--resolve', `localhost:${port}:127.0.0.1`, `${origin}/environ`])
  assert.equal(uw.code, 0, uw.stderr)
  const uwEnv = JSON.parse(uw.stdout) as Record<string, string>
  assert.equal(uwEnv.HTTPS, 'on')
  assert.equal(uwEnv.REQUEST_SCHEME, 'https')
  assert.match(uwEnv.SSL_PROTOCOL!, /^TLSv1\.3$/)
  assert.ok((uwEnv.SSL_CIPHER ?? '').startsWith('TLS_'), uwEnv.SSL_CIPHER)
  assert.equal(uwEnv.SSL_TLS_SNI, 'localhost')

  const ws = new WebSocket(`wss://127.0.0.1:${port}/asgi/ws/scope`, { ca: readFileSync(ca.cert) })
  const wsScope = await new Promise<{ scheme: string; extensions: { tls?: { tls_version: number } } }>(
    (resolve, reject) => {
      ws.once('message', (data: Buffer) => resolve(JSON.parse(data.toString()) as never))
      ws.once('error', reject)
    },
  )
  ws.terminate()
  assert.equal(wsScope.scheme, 'wss')
  assert.equal(wsScope.extensions.tls?.tls_version, 0x0304)

  const cgi = await curl(ca, ['--resolve', `localhost:${port}:127.0.0.1`, `${origin}/cgi-bin/env.py`])
  assert.equal(cgi.code, 0, cgi.stderr)
  const env = (JSON.parse(cgi.stdout) as { env: Record<string, string> }).env
  assert.equal(env.HTTPS, 'on')
  assert.equal(env.REQUEST_SCHEME, 'https')
  assert.equal(env.SERVER_PORT, String(port))
  assert.match(env.SSL_PROTOCOL!, /^TLSv1\.[23]$/)
  assert.ok((env.SSL_CIPHER ?? '').length > 0)
  assert.equal(env.SSL_TLS_SNI, 'localhost', 'curl --resolve sends the name it was given')
})

test('a missing, unreadable or mismatched certificate or key: one line naming the file, exit 1 (check and serve)', async (t) => {
  const { dir, ca, pub } = site(t)
  const a = makeCert(ca, 'a', ['localhost'])
  const b = makeCert(ca, 'b', ['localhost'])
  const unreadable = join(dir, 'unreadable.key')
  writeFileSync(unreadable, readFileSync(a.key), { mode: 0 })
  const cases: [string, string, RegExp][] = [
    [a.cert, join(dir, 'missing.key'), /TLS key .*missing\.key: no such file/],
    [join(dir, 'missing.pem'), a.key, /TLS certificate .*missing\.pem: no such file/],
    [a.cert, b.key, /TLS certificate .*a\.pem: the key .*b\.key is not the key of this certificate/],
    [a.key, a.key, /TLS certificate .*a\.key: not a PEM certificate/],
    [a.cert, dir, /TLS key .*: a directory, not a file/],
  ]
  // Root reads any file: the unreadable case means something only for other users.
  if (process.getuid?.() !== 0)
    cases.push([a.cert, unreadable, /TLS key .*unreadable\.key: permission denied/])
  for (const [cert, key, message] of cases) {
    const config = join(dir, 'bad.toml')
    writeFileSync(
      config,
      `listen = [{ address = "127.0.0.1:0", tls = { cert = ${JSON.stringify(cert)}, key = ${JSON.stringify(key)} } }]\n` +
        `[[routes]]\npath = "/"\nstatic = { root = ${JSON.stringify(pub)} }\n`,
    )
    const checked = await run(process.execPath, [CLI, 'check', '--config', config])
    assert.equal(checked.code, 1, checked.stderr)
    assert.equal(checked.stderr.trim().split('\n').length, 1, checked.stderr)
    assert.match(checked.stderr, message)

    const served = await run(process.execPath, [
      CLI,
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--tls-cert',
      cert,
      '--tls-key',
      key,
      '--static',
      pub,
    ])
    assert.equal(served.code, 1, served.stderr)
    const lines = served.stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('gatehouse:'))
    assert.equal(lines.length, 1, served.stderr)
    assert.match(lines[0]!, message)
  }
  const half = await run(process.execPath, [CLI, 'serve', '--tls-cert', a.cert, '--static', pub])
  assert.equal(half.code, 2, half.stderr)
  assert.match(half.stderr, /--tls-cert and --tls-key go together/)
})

test('min_version = "TLSv1.3" refuses TLS 1.2; ciphers narrows the TLS 1.2 suites', async (t) => {
  const { ca, pub } = site(t)
  const leaf = makeCert(ca, 'localhost', ['localhost', 'IP:127.0.0.1'])
  const only13 = await startGatehouse(t, {
    listen: [{ address: '127.0.0.1:0', tls: { cert: leaf.cert, key: leaf.key, min_version: 'TLSv1.3' } }],
    routes: [{ path: '/', static: { root: pub } }],
  })
  const refused = await curl(ca, ['--tls-max', '1.2', `https://127.0.0.1:${only13.port}/hello.txt`])
  assert.equal(refused.code, 35, refused.stderr)
  const ok = await curl(ca, [`https://127.0.0.1:${only13.port}/hello.txt`])
  assert.equal(ok.stdout, 'hello over tls\n')

  const narrowed = await startGatehouse(t, {
    listen: [
      {
        address: '127.0.0.1:0',
        tls: { cert: leaf.cert, key: leaf.key, ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' },
      },
    ],
    routes: [{ path: '/', static: { root: pub } }],
  })
  const chosen = await curl(ca, ['-v', '--tls-max', '1.2', `https://127.0.0.1:${narrowed.port}/hello.txt`])
  assert.equal(chosen.code, 0, chosen.stderr)
  assert.match(chosen.stderr, /TLSv1\.2 \/ ECDHE-ECDSA-AES128-GCM-SHA256/)
  const other = await curl(ca, [
    '--tls-max',
    '1.2',
    '--ciphers',
    'ECDHE-ECDSA-AES256-GCM-SHA384',
    `https://127.0.0.1:${narrowed.port}/hello.txt`,
  ])
  assert.equal(other.code, 35, other.stderr)
})

test('SNI: the certificate is chosen by its own names (exact, then wildcard); the first is the default', async (t) => {
  const { ca, pub } = site(t)
  const fallback = makeCert(ca, 'default', ['default.test', 'IP:127.0.0.1'])
  const a = makeCert(ca, 'a', ['a.test', 'www.a.test'])
  const wild = makeCert(ca, 'wild', ['*.b.test'])
  const exactB = makeCert(ca, 'exact-b', ['exact.b.test'])
  const { port } = await startGatehouse(t, {
    listen: [
      {
        address: '127.0.0.1:0',
        tls: {
          certificates: [fallback, a, wild, exactB].map(({ cert, key }) => ({ cert, key })),
        },
      },
    ],
    routes: [{ path: '/', static: { root: pub } }],
  })
  for (const [name, cn] of [
    ['a.test', 'a.test'],
    ['www.a.test', 'a.test'],
    ['x.b.test', '*.b.test'],
    ['exact.b.test', 'exact.b.test'],
  ] as const) {
    // curl verifies the name against the CA: only the right certificate passes.
    const got = await curl(ca, [
      '-v',
      '--resolve',
      `${name}:${port}:127.0.0.1`,
      `https://${name}:${port}/hello.txt`,
    ])
    assert.equal(got.code, 0, `${name}: ${got.stderr}`)
    assert.equal(got.stdout, 'hello over tls\n')
    assert.match(got.stderr, new RegExp(`subject: CN=${cn.replace(/[.*]/g, '\\$&')}\\n`))
  }
  // One label only for a wildcard; an unknown name and no SNI at all get the first certificate.
  assert.equal((await servedCertificate(port, 'deep.x.b.test')).cn, 'default.test')
  assert.equal((await servedCertificate(port, 'other.test')).cn, 'default.test')
  const byIp = await curl(ca, [`https://127.0.0.1:${port}/hello.txt`])
  assert.equal(byIp.code, 0, byIp.stderr)
})

test('reload re-reads the certificates: new connections get the new one, a keep-alive connection opened before still works', async (t) => {
  const { dir, ca, pub } = site(t)
  const first = makeCert(ca, 'site', ['localhost', 'IP:127.0.0.1'], '1001')
  const config = {
    listen: [{ address: '127.0.0.1:0', tls: { cert: 'site.pem', key: 'site.key' } }],
    routes: [{ path: '/', static: { root: pub } }],
    log: { level: 'silent' as const },
  }
  const gatehouse = createGatehouse(config, { baseDir: dir })
  const [bound] = await gatehouse.listen()
  t.after(() => gatehouse.close(0))
  const port = bound!.port!
  // The same config: the listener (same address text) is kept, not reopened.
  const reloaded = config

  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: readFileSync(ca.cert) })
  t.after(() => agent.destroy())
  const get = () =>
    new Promise<{ status: number; body: string; socket: TLSSocket; reused: boolean }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/hello.txt', agent }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => (body += d))
        // The agent takes the socket back once the response ends.
        const socket = res.socket as TLSSocket
        res.on('end', () =>
          resolve({
            status: res.statusCode!,
            body,
            socket,
            reused: req.reusedSocket,
          }),
        )
      })
      req.once('error', reject)
      req.end()
    })
  const before = await get()
  assert.equal(before.status, 200)
  assert.equal(before.socket.getPeerCertificate().serialNumber, first.serial)
  assert.equal((await servedCertificate(port, 'localhost')).serial, first.serial)

  const second = makeCert(ca, 'site', ['localhost', 'IP:127.0.0.1'], '2002')
  assert.ok(await gatehouse.reload(reloaded, dir))
  assert.equal(gatehouse.addresses()[0]!.port, port)
  assert.equal((await servedCertificate(port, 'localhost')).serial, second.serial)
  // With no SNI (an IP address) the default context: replaced too.
  const byIp = await curl(ca, ['-v', `https://127.0.0.1:${port}/hello.txt`])
  assert.equal(byIp.code, 0, byIp.stderr)

  const after = await get()
  assert.equal(after.status, 200)
  assert.equal(after.body, 'hello over tls\n')
  assert.ok(after.reused, 'the keep-alive connection opened before the reload served the request')
  assert.equal(after.socket, before.socket)
  assert.equal(after.socket.getPeerCertificate().serialNumber, first.serial)

  // A reload naming a missing key fails and the certificates serving stay.
  await assert.rejects(
    gatehouse.reload(
      { ...reloaded, listen: [{ ...reloaded.listen[0]!, tls: { cert: 'site.pem', key: 'gone.key' } }] },
      dir,
    ),
    /gone\.key: no such file/,
  )
  assert.equal((await servedCertificate(port, 'localhost')).serial, second.serial)
})

test('SIGHUP re-reads the certificate files of an unchanged config', async (t) => {
  const { dir, ca, pub } = site(t)
  const first = makeCert(ca, 'site', ['localhost', 'IP:127.0.0.1'], '3003')
  const config = join(dir, 'gatehouse.toml')
  writeFileSync(
    config,
    `listen = [{ address = "127.0.0.1:0", tls = { cert = "site.pem", key = "site.key" } }]\n` +
      `[[routes]]\npath = "/"\nstatic = { root = ${JSON.stringify(pub)} }\n`,
  )
  const child = spawn(process.execPath, [CLI, 'serve', '--config', config], {
    env: ENV,
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  t.after(() => stopServe(child))
  const { address, stderr } = await listeningAddress(child)
  const bound = Number(address.split(':').pop())
  assert.equal((await servedCertificate(bound, 'localhost')).serial, first.serial)
  const second = makeCert(ca, 'site', ['localhost', 'IP:127.0.0.1'], '4004')
  child.kill('SIGHUP')
  await eventually(() => /configuration reloaded/.test(stderr()), 'the reload')
  assert.equal((await servedCertificate(bound, 'localhost')).serial, second.serial)
})

test('redirect_http: a plain listener sends every request to HTTPS (301, 308 keeping the method); hsts on the TLS listener only', async (t) => {
  const { ca, pub } = site(t)
  const leaf = makeCert(ca, 'localhost', ['localhost', 'IP:127.0.0.1'])
  const hsts = 'max-age=63072000; includeSubDomains'
  const { gatehouse } = await startGatehouse(t, {
    listen: [
      { address: '127.0.0.1:0', tls: { cert: leaf.cert, key: leaf.key, hsts } },
      { address: '127.0.0.1:0', redirect_http: true },
      { address: '127.0.0.1:0', redirect_http: 8443 },
    ],
    routes: [{ path: '/', static: { root: pub } }],
  })
  const [tlsPort, plainPort, fixedPort] = gatehouse.addresses().map((a) => a.port!)
  const resolveTo = (port: number) => ['--resolve', `localhost:${port}:127.0.0.1`]

  const get = await curl(ca, [
    '-i',
    ...resolveTo(plainPort!),
    `http://localhost:${plainPort}/hello.txt?a=1&b=2`,
  ])
  assert.match(get.stdout, /^HTTP\/1\.1 301 /, get.stderr)
  assert.match(
    get.stdout,
    new RegExp(`\\r\\nlocation: https://localhost:${tlsPort}/hello\\.txt\\?a=1&b=2\\r\\n`, 'i'),
  )
  assert.doesNotMatch(get.stdout, /strict-transport-security/i, 'no HSTS over plain HTTP (RFC 6797 7.2)')

  // curl follows to the TLS listener: the file, with HSTS.
  const followed = await curl(ca, [
    '-i',
    '-L',
    ...resolveTo(plainPort!),
    ...resolveTo(tlsPort!),
    `http://localhost:${plainPort}/hello.txt`,
  ])
  assert.equal(followed.code, 0, followed.stderr)
  assert.match(
    followed.stdout,
    // HTTP/2 on the TLS listener (ALPN h2, on by default), HTTP/1.1 on the redirecting one.
    /HTTP\/2 200 [\s\S]*strict-transport-security: max-age=63072000; includeSubDomains\r\n/i,
  )
  assert.match(followed.stdout, /hello over tls\n$/)
  const missing = await curl(ca, ['-i', `https://127.0.0.1:${tlsPort}/nope`])
  assert.match(missing.stdout, /^HTTP\/2 404 [\s\S]*strict-transport-security: max-age=63072000/i)

  for (const extra of [[], ['-H', 'Expect: 100-continue']]) {
    const post = await curl(ca, ['-i', '-d', 'x=1', ...extra, `http://127.0.0.1:${plainPort}/form`])
    assert.match(post.stdout, /^HTTP\/1\.1 308 /)
    assert.doesNotMatch(post.stdout, /100 Continue/)
    assert.match(post.stdout, new RegExp(`location: https://127\\.0\\.0\\.1:${tlsPort}/form\\r\\n`, 'i'))
  }
  const fixed = await curl(ca, ['-i', `http://127.0.0.1:${fixedPort}/x`])
  assert.match(fixed.stdout, /location: https:\/\/127\.0\.0\.1:8443\/x\r\n/i)

  assert.throws(
    () => createGatehouse({ listen: [{ address: '127.0.0.1:0', redirect_http: true }] }),
    /no listen entry has tls/,
  )
  assert.throws(
    () =>
      createGatehouse({
        listen: [{ address: '127.0.0.1:0', tls: { cert: leaf.cert, key: leaf.key, hsts: 'one year' } }],
      }),
    /Strict-Transport-Security value/,
  )
})
