/*
 * The proxy action against a real Node HTTP server as its upstream: methods, bodies both
 * ways, path mapping, forwarding and hop-by-hop fields, timeouts, resets, a client that
 * leaves mid-body, and backpressure from a client that does not read.
 */
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { existsSync, readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { before, describe, test } from 'node:test'
import { request } from 'undici'
import {
  freePort,
  rawRequest,
  type Running,
  startGatehouse,
  tempDir,
  suiteCleanups,
} from '../../support/helpers.js'

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

interface Seen {
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
  rawHeaders: string[]
  length: number
  sha: string
}

/** What the upstream's /flood handler has written, and whether it waits for 'drain'. */
const flood = { written: 0, waiting: false, total: 0 }
/** Requests the upstream saw end before their body did. */
const aborted: string[] = []
/** Resolved by the test: /stream writes its second part only then. */
let release: () => void = () => {}

function upstreamHandler(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url!, 'http://x')
  // Routed by the last segment, whatever prefix the proxy route kept.
  const name = url.pathname.slice(url.pathname.lastIndexOf('/'))
  if (name === '/never') return
  if (name === '/flood') {
    const chunk = Buffer.alloc(64 * 1024, 0x61)
    flood.total = Number(url.searchParams.get('n'))
    flood.written = 0
    res.writeHead(200, { 'content-length': flood.total })
    const pump = () => {
      while (flood.written < flood.total) {
        flood.written += chunk.length
        if (!res.write(chunk)) {
          flood.waiting = true
          res.once('drain', () => {
            flood.waiting = false
            pump()
          })
          return
        }
      }
      res.end()
    }
    pump()
    return
  }
  if (name === '/reset') {
    res.writeHead(200, { 'content-length': 1_000_000 })
    res.write(Buffer.alloc(1000, 0x62), () => res.socket?.destroy())
    return
  }
  if (name === '/stream') {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('first;')
    new Promise<void>((r) => (release = r)).then(() => res.end('second'))
    return
  }
  if (name === '/big') {
    const n = Number(url.searchParams.get('n'))
    const data = Buffer.alloc(n)
    for (let i = 0; i < n; i++) data[i] = (i * 7) & 0xff
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    Readable.from([data.subarray(0, n >> 1), data.subarray(n >> 1)]).pipe(res)
    return
  }
  if (name === '/hop') {
    res.writeHead(
      200,
      [
        ['Connection', 'X-Up-Private'],
        ['X-Up-Private', '1'],
        ['Keep-Alive', 'timeout=77'],
        ['Proxy-Thing', 'x'],
        ['Trailer', 'X-T'],
        ['X-Kept', 'yes'],
      ].flat(),
    )
    res.end('ok')
    return
  }
  const chunks: Buffer[] = []
  req.on('data', (c: Buffer) => {
    inFlight.add(req.url!)
    chunks.push(c)
  })
  req.on('close', () => {
    if (!req.complete) aborted.push(req.url!)
  })
  req.on('end', () => {
    const body = Buffer.concat(chunks)
    const seen: Seen = {
      method: req.method!,
      url: req.url!,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      length: body.length,
      sha: sha(body),
    }
    const out = Buffer.from(JSON.stringify(seen))
    res.writeHead(url.pathname === '/created' ? 201 : 200, {
      'content-type': 'application/json',
      'content-length': out.length,
    })
    res.end(req.method === 'HEAD' ? undefined : out)
  })
}

async function listen(server: Server, at: number | string): Promise<void> {
  server.listen(at as number, ...(typeof at === 'number' ? ['127.0.0.1'] : []))
  await once(server, 'listening')
}

describe('proxy action: Gatehouse -> a Node HTTP server', () => {
  let upstream: Server
  let unixUpstream: Server
  let up: string
  let gh: Running
  const hooks = suiteCleanups()

  before(async () => {
    upstream = createServer(upstreamHandler)
    await listen(upstream, 0)
    hooks.after(() => {
      upstream.closeAllConnections()
      return new Promise((r) => upstream.close(r))
    })
    up = `http://127.0.0.1:${(upstream.address() as { port: number }).port}`
    const dir = tempDir(hooks)
    unixUpstream = createServer(upstreamHandler)
    await listen(unixUpstream, join(dir, 'up.sock'))
    hooks.after(() => {
      unixUpstream.closeAllConnections()
      return new Promise((r) => unixUpstream.close(r))
    })
    const refused = await freePort()
    gh = await startGatehouse(hooks, {
      limits: { max_body_bytes: '8MiB' },
      routes: [
        { path: '/base/', proxy: { upstream: `${up}/inner/` } },
        { path: '/strip/', proxy: { upstream: up, strip_prefix: true } },
        { path: '/upstream-host/', proxy: { upstream: up, host: '$proxy_host' } },
        {
          path: '/edit/',
          proxy: {
            upstream: up,
            set_headers: { 'X-Added': 'a', 'User-Agent': '' },
            remove_headers: ['X-Drop'],
          },
        },
        { path: '/trusting/', proxy: { upstream: up, trusted_proxies: ['127.0.0.0/8'] } },
        { path: '/buffered/', proxy: { upstream: up, request_buffering: true } },
        { path: '/slow/', proxy: { upstream: up, first_byte_timeout: '300ms' } },
        { path: '/refused/', proxy: { upstream: `http://127.0.0.1:${refused}` } },
        { path: '/unix/', proxy: { upstream: `unix:${join(dir, 'up.sock')}` } },
        { path: '/', proxy: { upstream: up } },
      ],
    })
  })

  const seen = async (path: string, init: Parameters<typeof request>[1] = {}) => {
    const res = await request(`${gh.origin}${path}`, init)
    assert.equal(res.statusCode, 200, path)
    return (await res.body.json()) as Seen
  }

  test('path and query pass unchanged; the client Host is passed', async () => {
    const s = await seen('/a/b%20c?x=1&y=%2F', { headers: { host: 'example.test' } })
    assert.equal(s.url, '/a/b%20c?x=1&y=%2F')
    assert.equal(s.headers.host, 'example.test')
    assert.equal(s.headers['x-forwarded-host'], 'example.test')
  })

  test('an upstream URL with a path replaces the route prefix; strip_prefix removes it', async () => {
    assert.equal((await seen('/base/x/y?q=1')).url, '/inner/x/y?q=1')
    assert.equal((await seen('/strip/x/y')).url, '/x/y')
    assert.equal((await seen('/strip/')).url, '/')
  })

  test('host = "$proxy_host" sends the upstream authority', async () => {
    const s = await seen('/upstream-host/', { headers: { host: 'example.test' } })
    assert.equal(s.headers.host, new URL(up).host)
    assert.equal(s.headers['x-forwarded-host'], 'example.test')
  })

  test('methods: PUT, DELETE, PATCH, OPTIONS, and HEAD without a body', async () => {
    for (const method of ['PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const) {
      const s = await seen('/m', { method, body: method === 'DELETE' ? null : 'xyz' })
      assert.equal(s.method, method)
    }
    const head = await request(`${gh.origin}/m`, { method: 'HEAD' })
    assert.equal(head.statusCode, 200)
    assert.ok(Number(head.headers['content-length']) > 0)
    assert.equal((await head.body.arrayBuffer()).byteLength, 0)
    const created = await request(`${gh.origin}/created`, { method: 'POST', body: 'x' })
    assert.equal(created.statusCode, 201)
    await created.body.dump()
  })

  test('a large body both ways, with a Content-Length and chunked', async () => {
    const data = randomBytes(5 * 1024 * 1024)
    const s = await seen('/upload', { method: 'POST', body: data })
    assert.equal(s.length, data.length)
    assert.equal(s.sha, sha(data))
    assert.equal(s.headers['content-length'], String(data.length))
    const parts = [data.subarray(0, 1000), data.subarray(1000, 3_000_000), data.subarray(3_000_000)]
    const c = await seen('/chunked', { method: 'POST', body: Readable.from(parts) })
    assert.equal(c.headers['transfer-encoding'], 'chunked')
    assert.equal(c.sha, sha(data))
    const res = await request(`${gh.origin}/big?n=${20 * 1024 * 1024}`)
    const got = Buffer.from(await res.body.arrayBuffer())
    assert.equal(got.length, 20 * 1024 * 1024)
    assert.equal(got[12345], (12345 * 7) & 0xff)
  })

  test('request_buffering: a chunked upload reaches the upstream with a Content-Length', async () => {
    const data = randomBytes(300_000)
    const s = await seen('/buffered/up', {
      method: 'POST',
      body: Readable.from([data.subarray(0, 10), data.subarray(10)]),
    })
    assert.equal(s.headers['transfer-encoding'], undefined)
    assert.equal(s.headers['content-length'], String(data.length))
    assert.equal(s.sha, sha(data))
  })

  test('a chunked upload over max_body_bytes is refused with 413', async () => {
    const big = Readable.from(
      (function* () {
        for (let i = 0; i < 20; i++) yield Buffer.alloc(1024 * 1024)
      })(),
    )
    const res = await request(`${gh.origin}/too-big`, { method: 'POST', body: big }).catch(
      (err: Error) => err,
    )
    if (!(res instanceof Error)) {
      assert.equal(res.statusCode, 413)
      await res.body.dump()
    }
    assert.equal((await seen('/after')).url, '/after')
  })

  test('the response streams: its first part arrives before the upstream wrote the rest', async () => {
    const res = await request(`${gh.origin}/stream`)
    const it = res.body[Symbol.asyncIterator]()
    const first = await it.next()
    assert.equal(Buffer.from(first.value as Buffer).toString(), 'first;')
    release()
    let rest = ''
    for (let r = await it.next(); !r.done; r = await it.next())
      rest += Buffer.from(r.value as Buffer).toString()
    assert.equal(rest, 'second')
  })

  test('hop-by-hop fields are dropped both ways; others pass', async () => {
    // Raw bytes: undici (the test's client) refuses to send Connection and Keep-Alive itself.
    const raw = await rawRequest(
      gh.port,
      'GET /h HTTP/1.1\r\nHost: x\r\nConnection: close, X-Private\r\nX-Private: secret\r\n' +
        'Keep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Normal: kept\r\n\r\n',
      { waitMs: 10_000 },
    )
    const s = JSON.parse(raw.text.slice(raw.text.indexOf('\r\n\r\n') + 4)) as Seen
    for (const name of ['x-private', 'keep-alive', 'te', 'proxy-authorization'])
      assert.equal(s.headers[name], undefined, name)
    assert.equal(s.headers['x-normal'], 'kept')
    const res = await request(`${gh.origin}/hop`)
    await res.body.dump()
    for (const name of ['x-up-private', 'proxy-thing', 'trailer'])
      assert.equal(res.headers[name], undefined, name)
    assert.notEqual(res.headers['keep-alive'], 'timeout=77')
    assert.equal(res.headers['x-kept'], 'yes')
  })

  test('forwarding fields: a spoofed X-Forwarded-For from an untrusted client is replaced', async () => {
    const spoof = {
      'x-forwarded-for': '6.6.6.6',
      'x-forwarded-proto': 'https',
      'x-forwarded-host': 'evil.test',
      forwarded: 'for=6.6.6.6',
      host: 'site.test:8080',
    }
    const s = await seen('/f', { headers: spoof })
    assert.equal(s.headers['x-forwarded-for'], '127.0.0.1')
    assert.equal(s.headers['x-forwarded-proto'], 'http')
    assert.equal(s.headers['x-forwarded-host'], 'site.test:8080')
    assert.equal(s.headers.forwarded, 'for=127.0.0.1;host="site.test:8080";proto=http')
    const t = await seen('/trusting/f', { headers: spoof })
    assert.equal(t.headers['x-forwarded-for'], '6.6.6.6, 127.0.0.1')
    assert.equal(t.headers['x-forwarded-proto'], 'https')
    assert.equal(t.headers['x-forwarded-host'], 'evil.test')
    assert.equal(t.headers.forwarded, 'for=6.6.6.6, for=127.0.0.1;host="site.test:8080";proto=http')
  })

  test('set_headers and remove_headers edit the request fields', async () => {
    const s = await seen('/edit/', { headers: { 'x-drop': '1', 'user-agent': 'ua', 'x-added': 'client' } })
    assert.equal(s.headers['x-added'], 'a')
    assert.equal(s.headers['x-drop'], undefined)
    assert.equal(s.headers['user-agent'], undefined)
  })

  test('a Unix socket upstream', async () => {
    const s = await seen('/unix/u?z')
    assert.equal(s.url, '/unix/u?z')
  })

  test('an upstream that never answers: 504; a refused port: 502', async () => {
    const slow = await request(`${gh.origin}/slow/never`)
    assert.equal(slow.statusCode, 504)
    await slow.body.dump()
    const refused = await request(`${gh.origin}/refused/`)
    assert.equal(refused.statusCode, 502)
    await refused.body.dump()
    assert.equal((await seen('/still')).url, '/still')
  })

  test('an upstream reset mid-response cuts the client connection; others are served', async () => {
    const raw = await rawRequest(gh.port, 'GET /reset HTTP/1.1\r\nHost: x\r\n\r\n', { waitMs: 10_000 })
    assert.equal(raw.status, 200)
    assert.ok(raw.closedByServer)
    assert.ok(raw.text.length < 1_000_000)
    assert.equal((await seen('/still')).url, '/still')
  })

  test('a client that leaves mid-body aborts the upstream request', async () => {
    const socket = connect(gh.port, '127.0.0.1')
    await once(socket, 'connect')
    socket.write('POST /leaving HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n')
    socket.write(Buffer.alloc(100_000))
    await waitFor(() => upstreamHasOpen('/leaving'))
    socket.destroy()
    await waitFor(() => aborted.includes('/leaving'))
    assert.equal((await seen('/still')).url, '/still')
  })

  test('backpressure: a client that does not read pauses the upstream writes', async () => {
    const total = 256 * 1024 * 1024
    const socket: Socket = connect(gh.port, '127.0.0.1')
    await once(socket, 'connect')
    socket.pause()
    socket.write(`GET /flood?n=${total} HTTP/1.1\r\nHost: x\r\n\r\n`)
    // The upstream fills the sockets and buffers on its way, then waits for 'drain'.
    await waitFor(() => flood.waiting && flood.written > 0)
    const at = flood.written
    assert.ok(at < 64 * 1024 * 1024, `upstream wrote ${at} bytes before waiting`)
    // Reading resumes the flow to the end.
    let got = 0
    socket.on('data', (c: Buffer) => (got += c.length))
    socket.resume()
    await waitFor(() => got >= total)
    socket.destroy()
    assert.equal(flood.written, total)
  })
})

/** Requests in flight at the upstream, by URL (the request has been seen). */
const inFlight = new Set<string>()
function upstreamHasOpen(url: string): boolean {
  return inFlight.has(url)
}

async function waitFor(check: () => boolean, limitMs = 20_000): Promise<void> {
  const end = Date.now() + limitMs
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 20))
  }
}

test('the access log names the upstream: $upstream_addr and $upstream_response_time', async (t) => {
  const upstream = createServer((_req, res) => res.end('ok'))
  await listen(upstream, 0)
  t.after(() => {
    upstream.closeAllConnections()
    return new Promise<void>((r) => upstream.close(() => r()))
  })
  const origin = `http://127.0.0.1:${(upstream.address() as { port: number }).port}`
  const log = join(tempDir(t), 'access.log')
  const gh = await startGatehouse(t, {
    log: { access_log: log, access_format: '$upstream_addr $upstream_response_time $status' },
    routes: [{ path: '/', proxy: { upstream: origin } }],
  })
  const res = await request(`${gh.origin}/logged`)
  await res.body.dump()
  await waitFor(() => existsSync(log) && readFileSync(log, 'utf8').includes('\n'))
  assert.match(readFileSync(log, 'utf8'), new RegExp(`^${origin} \\d+\\.\\d{3} 200\\n`))
})
