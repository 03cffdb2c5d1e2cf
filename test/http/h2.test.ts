/*
 * HTTP/2 on the front (issue 14 item 2): ALPN h2 on TLS listeners and h2c with prior
 * knowledge, with real clients (curl --http2 / --http2-prior-knowledge, nghttp, h2load,
 * node's http2 client), every gateway behind it with its real peer, the limits, and the
 * rapid-reset and CONTINUATION floods written frame by frame (test/support/h2-frames.ts).
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { connect as h2connect, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2'
import { join } from 'node:path'
import { test } from 'node:test'
import type { GatehouseConfigInput } from '../../src/config.js'
import { FIXTURES, PYTHON, startGatehouse, tempDir } from '../support/helpers.js'
import { FLAG, FRAME, frame, getBlock, rawH2, rstStream, serverSettings } from '../support/h2-frames.js'
import { makeCa, makeCert, type TestCa } from '../support/tls-certs.js'
import { phpFpmUnavailable, startPhpFpm } from '../support/php-fpm.js'
import { startUwsgi } from '../support/peer-uwsgi.js'

const ENV = { PATH: '/usr/bin:/bin' }

function run(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env: ENV, timeout: 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    )
  })
}

const curl = (ca: TestCa | undefined, args: string[]) =>
  run('/usr/bin/curl', ['-sS', '-m', '20', ...(ca ? ['--cacert', ca.cert] : []), ...args])

/** A site with a CA, a certificate for localhost and 127.0.0.1, and a public/ directory. */
function site(t: { after: (fn: () => void) => void }) {
  const dir = tempDir(t, 'gh-h2-')
  const ca = makeCa(dir)
  const leaf = makeCert(ca, 'localhost', ['localhost', 'IP:127.0.0.1'])
  const pub = join(dir, 'public')
  mkdirSync(pub)
  writeFileSync(join(pub, 'hello.txt'), 'hello over h2\n')
  writeFileSync(join(pub, 'big.txt'), 'x'.repeat(64 * 1024))
  return { dir, ca, leaf, pub }
}

type Site = ReturnType<typeof site>

async function serveTls(
  t: { after: (fn: () => Promise<void> | void) => void },
  s: Site,
  config: GatehouseConfigInput,
  listen: Record<string, unknown> = {},
) {
  return startGatehouse(t, {
    ...config,
    listen: [{ address: '127.0.0.1:0', tls: { cert: s.leaf.cert, key: s.leaf.key }, ...listen }],
  } as GatehouseConfigInput)
}

/** One request over a node http2 session: status, headers, body. */
function h2get(
  session: ClientHttp2Session,
  path: string,
  options: { method?: string; body?: Buffer | string; headers?: Record<string, string> } = {},
): Promise<{
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  informational: IncomingHttpHeaders[]
}> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path, ':method': options.method ?? 'GET', ...options.headers })
    const informational: IncomingHttpHeaders[] = []
    req.on('headers', (h) => informational.push(h))
    let headers: IncomingHttpHeaders = {}
    req.on('response', (h) => (headers = h))
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () =>
      resolve({ status: Number(headers[':status']), headers, body: Buffer.concat(chunks), informational }),
    )
    req.on('error', reject)
    req.end(options.body)
  })
}

function tlsSession(t: { after: (fn: () => void) => void }, port: number, ca: TestCa): ClientHttp2Session {
  const session = h2connect(`https://localhost:${port}`, { ca: [readPem(ca.cert)] })
  session.on('error', () => {})
  t.after(() => session.destroy())
  return session
}

const readPem = (file: string) => readFileSync(file)

test('TLS listener: curl --http2 gets static files over HTTP/2 (Range, HEAD, If-None-Match), HTTP/1.1 on the same port, HSTS on both', async (t) => {
  const s = site(t)
  const gh = await startGatehouse(t, {
    listen: [{ address: '127.0.0.1:0', tls: { cert: s.leaf.cert, key: s.leaf.key, hsts: 'max-age=60' } }],
    routes: [{ path: '/', static: { root: s.pub } }],
  })
  const url = `https://127.0.0.1:${gh.port}/hello.txt`
  const h2 = await curl(s.ca, ['--http2', '-i', url])
  assert.match(h2.stdout, /^HTTP\/2 200/)
  assert.match(h2.stdout, /strict-transport-security: max-age=60/)
  assert.match(h2.stdout, /hello over h2/)
  const range = await curl(s.ca, ['--http2', '-i', '-H', 'Range: bytes=6-9', url])
  assert.match(range.stdout, /^HTTP\/2 206/)
  assert.match(range.stdout, /content-range: bytes 6-9\/14/)
  assert.match(range.stdout, /\r\n\r\nover$/)
  const head = await curl(s.ca, ['--http2', '-I', url])
  assert.match(head.stdout, /^HTTP\/2 200/)
  assert.match(head.stdout, /content-length: 14/)
  const etag = /etag: (\S+)/.exec(head.stdout)![1]!
  const cond = await curl(s.ca, ['--http2', '-i', '-H', `If-None-Match: ${etag}`, url])
  assert.match(cond.stdout, /^HTTP\/2 304/)
  const h1 = await curl(s.ca, ['--http1.1', '-i', url])
  assert.match(h1.stdout, /^HTTP\/1.1 200 OK/)
  assert.match(h1.stdout, /strict-transport-security: max-age=60/)
  const missing = await curl(s.ca, ['--http2', '-i', `https://127.0.0.1:${gh.port}/nope`])
  assert.match(missing.stdout, /^HTTP\/2 404/)
})

test('http2 = false on a listen entry: curl --http2 is answered over HTTP/1.1 (no h2 in ALPN)', async (t) => {
  const s = site(t)
  const gh = await serveTls(t, s, { routes: [{ path: '/', static: { root: s.pub } }] }, { http2: false })
  const r = await curl(s.ca, ['--http2', '-i', `https://127.0.0.1:${gh.port}/hello.txt`])
  assert.match(r.stdout, /^HTTP\/1.1 200 OK/)
})

test('h2c = true: curl --http2-prior-knowledge and plain HTTP/1.1 on one port; without h2c the preface is refused', async (t) => {
  const s = site(t)
  const gh = await startGatehouse(t, {
    listen: [{ address: '127.0.0.1:0', h2c: true }, '127.0.0.1:0'],
    routes: [{ path: '/', static: { root: s.pub } }],
  })
  const [, plain] = gh.gatehouse.addresses()
  const h2 = await curl(undefined, ['--http2-prior-knowledge', '-i', `http://127.0.0.1:${gh.port}/hello.txt`])
  assert.match(h2.stdout, /^HTTP\/2 200/)
  assert.match(h2.stdout, /hello over h2/)
  const h1 = await curl(undefined, ['-i', `http://127.0.0.1:${gh.port}/hello.txt`])
  assert.match(h1.stdout, /^HTTP\/1.1 200 OK/)
  const off = await curl(undefined, [
    '--http2-prior-knowledge',
    '-i',
    `http://127.0.0.1:${plain!.port}/hello.txt`,
  ])
  assert.notEqual(off.code, 0)
})

test('nghttp and h2load (a bounded run) against the TLS listener: every request answered 200', async (t) => {
  const s = site(t)
  const gh = await serveTls(t, s, { routes: [{ path: '/', static: { root: s.pub } }] })
  const url = `https://127.0.0.1:${gh.port}/hello.txt`
  const ng = await run('/usr/bin/nghttp', ['-v', '-y', url])
  assert.equal(ng.code, 0, ng.stderr)
  assert.match(ng.stdout, /:status: 200/)
  assert.match(ng.stdout, /hello over h2/)
  assert.match(ng.stdout, /SETTINGS_MAX_CONCURRENT_STREAMS\(0x03\):128/)
  const load = await run('/usr/bin/h2load', ['-n', '400', '-c', '4', '-m', '10', url])
  assert.equal(load.code, 0, load.stderr)
  assert.match(load.stdout, /requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed, 0 errored/)
  assert.match(load.stdout, /status codes: 400 2xx/)
})

test('gateways over HTTP/2: return, CGI (HTTP/2.0, HTTPS, SSL_*), nph- CGI, WSGI environ, ASGI http_version 2 with bodies streamed both ways, gzip, Early Hints, status metrics', async (t) => {
  const s = site(t)
  const gh = await serveTls(t, s, {
    encode: { types: ['text/plain'], min_length: 1 },
    routes: [
      { exact: '/return', return: { status: 201, body: 'made' } },
      { path: '/cgi-bin', encode: false, cgi: { root: join(FIXTURES, 'cgi'), pass_env: ['PATH'] } },
      {
        path: '/wsgi',
        encode: false,
        wsgi: { app: 'apps:environ_app', python: PYTHON, chdir: join(FIXTURES, 'wsgi'), workers: 1 },
      },
      {
        path: '/hints',
        encode: false,
        asgi: { app: 'hints:app', python: PYTHON, chdir: join(FIXTURES, 'asgi'), workers: 1 },
      },
      {
        path: '/asgi',
        encode: false,
        asgi: { app: 'apps:app', python: PYTHON, chdir: join(FIXTURES, 'asgi'), workers: 1 },
      },
      { exact: '/metrics', metrics: {} },
      { path: '/', static: { root: s.pub } },
    ],
  } as GatehouseConfigInput)
  const session = tlsSession(t, gh.port, s.ca)
  const ret = await h2get(session, '/return')
  assert.equal(ret.status, 201)
  assert.equal(ret.body.toString(), 'made')

  const cgi = await h2get(session, '/cgi-bin/env.sh')
  assert.equal(cgi.status, 200)
  const env = cgi.body.toString()
  assert.match(env, /^SERVER_PROTOCOL=HTTP\/2.0$/m)
  assert.match(env, /^HTTPS=on$/m)
  assert.match(env, /^SSL_PROTOCOL=TLSv1.3$/m)
  assert.match(env, /^HTTP_HOST=localhost:\d+$/m)
  assert.doesNotMatch(env, /^HTTP_:/m)

  const nph = await h2get(session, '/cgi-bin/nph-teapot.sh')
  assert.equal(nph.status, 418)
  assert.equal(nph.headers['x-nph'], 'yes')
  assert.equal(nph.body.toString(), 'short and stout\n')

  const wsgi = await h2get(session, '/wsgi/x?q=1')
  assert.equal(wsgi.status, 200)
  const environ = JSON.parse(wsgi.body.toString()) as Record<string, string>
  assert.equal(environ.SERVER_PROTOCOL, 'HTTP/2.0')
  assert.equal(environ['wsgi.url_scheme'], 'https')
  assert.equal(environ.QUERY_STRING, 'q=1')
  assert.match(environ.HTTP_HOST!, /^localhost:\d+$/)

  const scope = await h2get(session, '/asgi/scope')
  const sc = JSON.parse(scope.body.toString()) as {
    http_version: string
    scheme: string
    headers: [string, string][]
  }
  assert.equal(sc.http_version, '2')
  assert.equal(sc.scheme, 'https')
  assert.doesNotMatch(scope.body.toString(), /":(method|path|authority|scheme)"/)
  // The request body in several DATA frames, streamed to the app; the response streamed back.
  const big = Buffer.alloc(300_000, 'a')
  const echo = await h2get(session, '/asgi/chunks', { method: 'POST', body: big })
  const chunks = JSON.parse(echo.body.toString()) as { total: number; messages: number }
  assert.equal(chunks.total, big.length)
  assert.ok(chunks.messages > 1)
  const stream = await h2get(session, '/asgi/stream?n=50')
  assert.equal(stream.body.toString().split('\n').length, 51)

  const hints = await h2get(session, '/hints')
  assert.equal(hints.body.toString(), 'offered')
  assert.equal(hints.informational[0]?.[':status'], 103)
  assert.match(String(hints.informational[0]?.link), /style.css/)

  const gz = await h2get(session, '/big.txt', { headers: { 'accept-encoding': 'gzip' } })
  assert.equal(gz.headers['content-encoding'], 'gzip')
  assert.ok(gz.body.length < 64 * 1024)

  const metrics = await h2get(session, '/metrics')
  assert.equal(metrics.status, 200)
  assert.match(metrics.body.toString(), /gatehouse_http_requests_total\{[^}]*status="2xx"/)
})

test('php-fpm and uWSGI behind an HTTP/2 listener', { skip: phpFpmUnavailable() }, async (t) => {
  const s = site(t)
  writeFileSync(
    join(s.pub, 'info.php'),
    '<?php header("Connection: close"); echo $_SERVER["SERVER_PROTOCOL"], " ", $_SERVER["HTTPS"], " ", $_SERVER["HTTP_HOST"];',
  )
  // php-fpm's workers run as its pool user: the temporary directory must be readable to them.
  chmodSync(s.dir, 0o755)
  const fpm = await startPhpFpm()
  t.after(() => fpm.stop())
  const uw = await startUwsgi(t, s.dir, { processes: 1 })
  const gh = await serveTls(t, s, {
    routes: [
      { exact: '/hello', uwsgi: { pass: uw.address } },
      { exact: '/environ', uwsgi: { pass: uw.address } },
      { path: '/', php: { root: s.pub, fastcgi: fpm.address } },
    ],
  } as GatehouseConfigInput)
  const session = tlsSession(t, gh.port, s.ca)
  const php = await h2get(session, '/info.php')
  assert.equal(php.status, 200, php.body.toString())
  assert.match(php.body.toString(), /^HTTP\/2.0 on localhost:\d+$/)
  const hello = await h2get(session, '/hello')
  assert.equal(hello.status, 200, hello.body.toString())
  assert.equal(hello.body.toString(), 'hello from flask')
  const environ = JSON.parse((await h2get(session, '/environ')).body.toString()) as Record<string, string>
  assert.equal(environ.SERVER_PROTOCOL, 'HTTP/2.0')
})

test('limits: SETTINGS carry max_concurrent_streams and the header list size; a header list over max_header_bytes costs only its stream', async (t) => {
  const s = site(t)
  const gh = await startGatehouse(t, {
    listen: [{ address: '127.0.0.1:0', h2c: true }],
    limits: { max_header_bytes: 8192 },
    http2: { max_concurrent_streams: 4 },
    routes: [{ path: '/', static: { root: s.pub } }],
  })
  const raw = await rawH2(gh.port)
  t.after(() => raw.socket.destroy())
  await new Promise((r) => setTimeout(r, 200))
  const settings = serverSettings(raw.frames)
  assert.equal(settings.get(3), 4) // SETTINGS_MAX_CONCURRENT_STREAMS
  assert.equal(settings.get(6), 8192) // SETTINGS_MAX_HEADER_LIST_SIZE
  // A header block past the list size: that stream is answered 431 or reset; others are served.
  const session = h2connect(`http://127.0.0.1:${gh.port}`)
  session.on('error', () => {})
  t.after(() => session.destroy())
  const huge = await h2get(session, '/hello.txt', { headers: { 'x-big': 'y'.repeat(9000) } }).catch(
    (err: Error) => ({ status: 0, err }),
  )
  assert.ok(huge.status === 431 || huge.status === 0, `status ${huge.status}`)
  const ok = await h2get(
    h2connect(`http://127.0.0.1:${gh.port}`).on('error', () => {}),
    '/hello.txt',
  )
  assert.equal(ok.status, 200)
})

/** Another client served while a flood runs. */
async function otherClientServed(port: number): Promise<void> {
  const session = h2connect(`http://127.0.0.1:${port}`)
  session.on('error', () => {})
  try {
    const r = await h2get(session, '/hello.txt')
    assert.equal(r.status, 200)
    assert.equal(r.body.toString(), 'hello over h2\n')
  } finally {
    session.close()
  }
}

test('rapid reset flood (CVE-2023-44487): HEADERS then RST_STREAM repeated costs the attacker its connection (GOAWAY ENHANCE_YOUR_CALM); another client is served', async (t) => {
  const s = site(t)
  let batches = 0
  const gh = await startGatehouse(t, {
    listen: [{ address: '127.0.0.1:0', h2c: true }],
    routes: [{ path: '/', static: { root: s.pub } }],
  })
  gh.gatehouse.logs.error.level = 'silent'
  const raw = await rawH2(gh.port)
  const block = getBlock('localhost', '/hello.txt')
  let id = 1
  // Batches of 500 pairs until the server ends the connection (bounded: 20 batches).
  for (let batch = 0; batch < 20 && !raw.socket.destroyed; batch++) {
    const frames: Buffer[] = []
    for (let i = 0; i < 500; i++) {
      frames.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, block), rstStream(id))
      id += 2
    }
    raw.socket.write(Buffer.concat(frames))
    batches++
    await otherClientServed(gh.port)
  }
  await Promise.race([raw.closed, new Promise((r) => setTimeout(r, 5000))])
  assert.equal(raw.socket.destroyed, true, 'the flooding connection was closed')
  assert.equal(raw.goaway(), 11) // ENHANCE_YOUR_CALM
  assert.ok(batches < 20)
  await otherClientServed(gh.port)
})

test('CONTINUATION flood (CVE-2024-27316 class): endless CONTINUATION without END_HEADERS closes that connection; another client is served', async (t) => {
  const s = site(t)
  const gh = await startGatehouse(t, {
    listen: [{ address: '127.0.0.1:0', h2c: true }],
    routes: [{ path: '/', static: { root: s.pub } }],
  })
  const raw = await rawH2(gh.port)
  raw.socket.write(frame(FRAME.HEADERS, FLAG.END_STREAM, 1, getBlock('localhost', '/hello.txt')))
  const piece = Buffer.from([0x00, 3, 0x78, 0x2d, 0x61, 1, 0x62]) // x-a: b, again and again
  for (let i = 0; i < 50 && !raw.socket.destroyed; i++) {
    const frames: Buffer[] = []
    for (let j = 0; j < 100; j++) frames.push(frame(FRAME.CONTINUATION, 0, 1, piece))
    raw.socket.write(Buffer.concat(frames))
    await new Promise((r) => setTimeout(r, 10))
  }
  await Promise.race([raw.closed, new Promise((r) => setTimeout(r, 5000))])
  assert.equal(raw.socket.destroyed, true)
  assert.ok(raw.goaway() !== undefined, 'GOAWAY sent')
  await otherClientServed(gh.port)
})

test('a SETTINGS never acknowledged: the session is closed after settings_timeout', async (t) => {
  const s = site(t)
  const gh = await startGatehouse(t, {
    listen: [{ address: '127.0.0.1:0', h2c: true }],
    http2: { settings_timeout: '300ms' },
    routes: [{ path: '/', static: { root: s.pub } }],
  })
  // The preface only: rawH2 sends our SETTINGS but never ACKs the server's.
  const raw = await rawH2(gh.port)
  await Promise.race([raw.closed, new Promise((r) => setTimeout(r, 5000))])
  assert.equal(raw.socket.destroyed, true)
  assert.equal(raw.goaway(), 4) // SETTINGS_TIMEOUT
})

test('a stream reset by its client costs only that stream; graceful close sends GOAWAY and lets an open stream finish', async (t) => {
  const s = site(t)
  const gh = await startGatehouse(t, {
    listen: [{ address: '127.0.0.1:0', h2c: true }],
    routes: [
      { path: '/asgi', asgi: { app: 'apps:app', python: PYTHON, chdir: join(FIXTURES, 'asgi'), workers: 1 } },
      { path: '/', static: { root: s.pub } },
    ],
  } as GatehouseConfigInput)
  const session = h2connect(`http://127.0.0.1:${gh.port}`)
  session.on('error', () => {})
  t.after(() => session.destroy())
  const cut = session.request({ ':path': '/asgi/slow-stream' })
  cut.on('error', () => {})
  await new Promise((r) => cut.once('response', r))
  cut.close(8)
  assert.equal((await h2get(session, '/hello.txt')).status, 200)
  // A slow response in flight while the server stops.
  const slowReq = session.request({ ':path': '/asgi/slow-stream' })
  slowReq.on('error', () => {})
  await new Promise((r) => slowReq.once('response', r))
  const goaway = new Promise((r) => session.once('goaway', r))
  const closing = gh.gatehouse.close(10_000)
  await goaway
  // GOAWAY came; the open stream still flows until the grace ends it.
  let more = 0
  slowReq.on('data', (c: Buffer) => (more += c.length))
  await new Promise((r) => setTimeout(r, 300))
  assert.ok(more > 0, 'the open stream went on after GOAWAY')
  slowReq.close(8)
  // The cut streams cancelled their ASGI requests: nothing holds the stop until the grace.
  await closing
})
