import assert from 'node:assert/strict'
import { once } from 'node:events'
import { writeFileSync } from 'node:fs'
import type { Server } from 'node:http'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import type { GatehouseConfigInput } from '../../src/config.js'
import { type RawResponse, rawRequest, startGatehouse, tempDir } from '../support/helpers.js'

type TestContext = Parameters<typeof tempDir>[0] & Parameters<typeof startGatehouse>[0]

const HOST = 'Host: localhost\r\n'
const LIMITS = { max_headers: 20, max_header_bytes: '4k', max_body_bytes: 1000 }

/**
 * A front with small limits: `/small` takes 10-byte bodies, `/files` is a static route (its
 * handler answers only after a stat, so a broken body is seen before the response), and `/`
 * echoes the method and path so that every response names its request.
 */
async function startFront(t: TestContext, limits: NonNullable<GatehouseConfigInput['limits']> = {}) {
  const root = tempDir(t, 'gh-front-')
  writeFileSync(join(root, 'f.txt'), 'file\n')
  return startGatehouse(t, {
    limits: { ...LIMITS, ...limits },
    routes: [
      { path: '/small', max_body_bytes: 10, return: { body: 'small\n' } },
      { path: '/files', static: { root, cache_ttl: 0 } },
      { path: '/', return: { body: 'ok {method} {path}\n' } },
    ],
  })
}

/** Status codes of every response in a raw exchange, in order. */
function statuses(res: RawResponse): number[] {
  return [...res.text.matchAll(/(?:^|\n)HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]))
}

/** A plain request on a fresh connection still gets its answer. */
async function assertHealthy(port: number, label: string): Promise<void> {
  const res = await rawRequest(port, `GET /health HTTP/1.1\r\n${HOST}Connection: close\r\n\r\n`)
  assert.equal(res.status, 200, `after ${label}`)
  assert.ok(res.text.endsWith('ok GET /health\n'), `after ${label}`)
}

interface RefusalCase {
  name: string
  request: string
  /** Acceptable statuses. */
  status: number[]
}

async function assertRefused(port: number, c: RefusalCase): Promise<void> {
  const res = await rawRequest(port, c.request, { waitMs: 5000 })
  assert.ok(
    res.status !== null && c.status.includes(res.status),
    `${c.name}: expected ${c.status.join('/')}, got ${res.status} ${JSON.stringify(res.text.slice(0, 80))}`,
  )
  assert.ok(res.closedByServer, `${c.name}: the server must close the connection`)
  assert.equal(statuses(res).length, 1, `${c.name}: exactly one response`)
  assert.ok(!res.text.includes('ok '), `${c.name}: the request must not reach a handler`)
}

const post = (headers: string, body = '') => `POST / HTTP/1.1\r\n${HOST}${headers}\r\n${body}`

describe('front: refused framing', () => {
  const cases: RefusalCase[] = [
    {
      name: 'Content-Length with Transfer-Encoding',
      request: post('Content-Length: 5\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n'),
      status: [400],
    },
    {
      name: 'Transfer-Encoding with Content-Length',
      request: post('Transfer-Encoding: chunked\r\nContent-Length: 5\r\n', '0\r\n\r\n'),
      status: [400],
    },
    {
      name: 'duplicate Content-Length, same value',
      request: post('Content-Length: 5\r\nContent-Length: 5\r\n', 'hello'),
      status: [400],
    },
    {
      name: 'duplicate Content-Length, different values',
      request: post('Content-Length: 5\r\nContent-Length: 6\r\n', 'hello!'),
      status: [400],
    },
    { name: 'Content-Length list', request: post('Content-Length: 5, 5\r\n', 'hello'), status: [400] },
    { name: 'non-numeric Content-Length', request: post('Content-Length: abc\r\n'), status: [400] },
    { name: 'negative Content-Length', request: post('Content-Length: -1\r\n'), status: [400] },
    { name: 'Content-Length +1', request: post('Content-Length: +1\r\n', 'x'), status: [400] },
    { name: 'hex Content-Length', request: post('Content-Length: 0x5\r\n', 'hello'), status: [400] },
    { name: 'Content-Length with inner space', request: post('Content-Length: 1 2\r\n'), status: [400] },
    {
      name: 'stacked chunked, chunked',
      request: post('Transfer-Encoding: chunked, chunked\r\n', '0\r\n\r\n'),
      status: [400],
    },
    {
      name: 'repeated Transfer-Encoding lines',
      request: post('Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n'),
      status: [400],
    },
    {
      name: 'non-final chunked',
      request: post('Transfer-Encoding: chunked, gzip\r\n', '0\r\n\r\n'),
      status: [400, 501],
    },
    { name: 'gzip alone', request: post('Transfer-Encoding: gzip\r\n', 'abc'), status: [400, 501] },
    {
      name: 'gzip, chunked',
      request: post('Transfer-Encoding: gzip, chunked\r\n', '0\r\n\r\n'),
      status: [400, 501],
    },
    {
      name: 'chunked on HTTP/1.0',
      request: `POST / HTTP/1.0\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      status: [400],
    },
    {
      name: 'obsolete line folding (space)',
      request: `GET / HTTP/1.1\r\n${HOST}X-A: a\r\n  folded\r\n\r\n`,
      status: [400],
    },
    {
      name: 'obsolete line folding (tab)',
      request: `GET / HTTP/1.1\r\n${HOST}X-A: a\r\n\tfolded\r\n\r\n`,
      status: [400],
    },
    {
      name: 'space before the colon',
      request: `GET / HTTP/1.1\r\n${HOST}Content-Length : 5\r\n\r\nhello`,
      status: [400],
    },
    {
      name: 'CR inside a header value',
      request: `GET / HTTP/1.1\r\n${HOST}X-A: a\rb\r\n\r\n`,
      status: [400],
    },
    {
      name: 'NUL inside a header value',
      request: `GET / HTTP/1.1\r\n${HOST}X-A: a\0b\r\n\r\n`,
      status: [400],
    },
  ]

  for (const c of cases) {
    test(`${c.name}: ${c.status.join(' or ')} and a closed connection; the server keeps serving`, async (t) => {
      const { port } = await startFront(t)
      await assertRefused(port, c)
      await assertHealthy(port, c.name)
    })
  }
})

describe('front: refused sizes', () => {
  test('an oversized request line is refused', async (t) => {
    const { port } = await startFront(t)
    await assertRefused(port, {
      name: 'request line',
      request: `GET /${'a'.repeat(8000)} HTTP/1.1\r\n${HOST}\r\n`,
      status: [431, 414, 400],
    })
    await assertHealthy(port, 'request line')
  })

  test('limits.max_header_bytes: a header block over it is 431, one under it is served', async (t) => {
    const { port } = await startFront(t)
    await assertRefused(port, {
      name: 'header block',
      request: `GET / HTTP/1.1\r\n${HOST}X-Big: ${'b'.repeat(5000)}\r\n\r\n`,
      status: [431],
    })
    await assertRefused(port, {
      name: 'many medium headers',
      request: `GET / HTTP/1.1\r\n${HOST}${Array.from({ length: 10 }, (_, i) => `X-${i}: ${'m'.repeat(500)}\r\n`).join('')}\r\n`,
      status: [431],
    })
    const ok = await rawRequest(
      port,
      `GET / HTTP/1.1\r\n${HOST}X-Big: ${'b'.repeat(3000)}\r\nConnection: close\r\n\r\n`,
    )
    assert.equal(ok.status, 200)
    await assertHealthy(port, 'header block')
  })

  test('limits.max_headers: one header over is 431, exactly the limit is served', async (t) => {
    const { port } = await startFront(t)
    const headers = (n: number) => Array.from({ length: n }, (_, i) => `X-H${i}: v\r\n`).join('')
    // Host + Connection + 18 = 20 headers: at the limit.
    const atLimit = await rawRequest(port, `GET / HTTP/1.1\r\n${HOST}Connection: close\r\n${headers(18)}\r\n`)
    assert.equal(atLimit.status, 200)
    await assertRefused(port, {
      name: 'one header too many',
      request: `GET / HTTP/1.1\r\n${HOST}Connection: close\r\n${headers(19)}\r\n`,
      status: [431],
    })
    await assertRefused(port, {
      name: 'far too many headers',
      request: `GET / HTTP/1.1\r\n${HOST}${headers(500)}\r\n`,
      status: [431],
    })
    await assertHealthy(port, 'too many headers')
  })

  test('limits.max_body_bytes and a route max_body_bytes: 413 by Content-Length before the body is read', async (t) => {
    const { port } = await startFront(t)
    await assertRefused(port, {
      name: 'global limit',
      request: post('Content-Length: 1001\r\n'),
      status: [413],
    })
    await assertRefused(port, {
      name: 'route limit',
      request: `POST /small HTTP/1.1\r\n${HOST}Content-Length: 11\r\n\r\n`,
      status: [413],
    })
    const atLimit = await rawRequest(
      port,
      `POST /small HTTP/1.1\r\n${HOST}Content-Length: 10\r\nConnection: close\r\n\r\n0123456789`,
    )
    assert.equal(atLimit.status, 200)
    const global = await rawRequest(
      port,
      post(`Content-Length: 1000\r\nConnection: close\r\n`, 'x'.repeat(1000)),
    )
    assert.equal(global.status, 200)
    await assertHealthy(port, 'body limits')
  })
})

describe('front: refused request lines and hosts', () => {
  const versions = [
    'HTTP/1.2',
    'HTTP/3.0',
    'HTTP/2.0',
    'HTTP/0.9',
    'http/1.1',
    'HTTP/11',
    'HTTPS/1.1',
    'HTTP/1.1x',
  ]
  for (const version of versions) {
    test(`HTTP version ${version} is refused`, async (t) => {
      const { port } = await startFront(t)
      await assertRefused(port, {
        name: version,
        request: `GET / ${version}\r\n${HOST}\r\n`,
        status: [400, 505],
      })
      await assertHealthy(port, version)
    })
  }

  test('a request line without a version (HTTP/0.9 simple request) is refused', async (t) => {
    const { port } = await startFront(t)
    await assertRefused(port, { name: 'no version', request: `GET /\r\n${HOST}\r\n`, status: [400, 505] })
  })

  test('HTTP/1.1 without Host, with two Host lines, or with a malformed Host is 400', async (t) => {
    const { port } = await startFront(t)
    const cases: RefusalCase[] = [
      { name: 'missing Host', request: 'GET / HTTP/1.1\r\n\r\n', status: [400] },
      {
        name: 'two Host lines',
        request: 'GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n',
        status: [400],
      },
      {
        name: 'two Host lines, same value',
        request: 'GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n',
        status: [400],
      },
      { name: 'Host with a space', request: 'GET / HTTP/1.1\r\nHost: a b\r\n\r\n', status: [400] },
      { name: 'Host with a path', request: 'GET / HTTP/1.1\r\nHost: a/b\r\n\r\n', status: [400] },
      { name: 'Host with a bad port', request: 'GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n', status: [400] },
    ]
    for (const c of cases) {
      await assertRefused(port, c)
      await assertHealthy(port, c.name)
    }
  })

  test('HTTP/1.0 without Host is served', async (t) => {
    const { port } = await startFront(t)
    const res = await rawRequest(port, 'GET /old HTTP/1.0\r\n\r\n')
    assert.equal(res.status, 200)
    assert.ok(res.text.endsWith('ok GET /old\n'))
    assert.ok(res.closedByServer, 'HTTP/1.0 without keep-alive closes')
  })

  test('a request target that is not a path is refused', async (t) => {
    const { port } = await startFront(t)
    const cases: RefusalCase[] = [
      { name: 'relative', request: `GET foo HTTP/1.1\r\n${HOST}\r\n`, status: [400] },
      { name: 'asterisk on GET', request: `GET * HTTP/1.1\r\n${HOST}\r\n`, status: [400] },
      { name: 'authority on GET', request: `GET example.org:443 HTTP/1.1\r\n${HOST}\r\n`, status: [400] },
      { name: 'other scheme', request: `GET ftp://example.org/ HTTP/1.1\r\n${HOST}\r\n`, status: [400] },
      { name: 'fragment', request: `GET /a#b HTTP/1.1\r\n${HOST}\r\n`, status: [400] },
      { name: 'climbs above the root', request: `GET /../x HTTP/1.1\r\n${HOST}\r\n`, status: [400] },
      { name: 'NUL escape', request: `GET /a%00 HTTP/1.1\r\n${HOST}\r\n`, status: [400] },
      { name: 'bad escape', request: `GET /%zz HTTP/1.1\r\n${HOST}\r\n`, status: [400] },
      {
        name: 'CONNECT',
        request: `CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n`,
        status: [501, 405, 400],
      },
    ]
    for (const c of cases) {
      await assertRefused(port, c)
      await assertHealthy(port, c.name)
    }
  })

  test('an absolute-form target is routed by its own authority', async (t) => {
    const { port } = await startFront(t)
    const res = await rawRequest(
      port,
      `GET http://other.example/abs?q HTTP/1.1\r\n${HOST}Connection: close\r\n\r\n`,
    )
    assert.equal(res.status, 200)
    assert.ok(res.text.endsWith('ok GET /abs\n'))
  })
})

describe('front: broken chunked bodies', () => {
  const chunked = (body: string) =>
    `GET /files/f.txt HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n${body}GET /smuggled HTTP/1.1\r\n${HOST}\r\n\r\n`
  const cases: RefusalCase[] = [
    { name: 'non-hex size', request: chunked('zz\r\nabc\r\n0\r\n\r\n'), status: [400] },
    { name: 'negative size', request: chunked('-1\r\nabc\r\n0\r\n\r\n'), status: [400] },
    {
      name: 'size overflows 64 bits',
      request: chunked('1ffffffffffffffff\r\nabc\r\n0\r\n\r\n'),
      status: [400],
    },
    { name: '0x prefix', request: chunked('0x3\r\nabc\r\n0\r\n\r\n'), status: [400] },
    { name: 'data longer than its size', request: chunked('3\r\nabcdef\r\n0\r\n\r\n'), status: [400] },
    { name: 'size without CRLF', request: chunked('3 abc\r\n0\r\n\r\n'), status: [400] },
  ]

  test('an invalid chunk is a 400 and a closed connection; nothing after it is served', async (t) => {
    const { port } = await startFront(t)
    for (const c of cases) {
      const res = await rawRequest(port, c.request, { waitMs: 5000 })
      assert.deepEqual(statuses(res), [400], `${c.name}: ${JSON.stringify(res.text.slice(0, 80))}`)
      assert.ok(res.closedByServer, c.name)
      assert.ok(!res.text.includes('smuggled'), c.name)
      await assertHealthy(port, c.name)
    }
  })

  test('after a handler answered early, an invalid chunk still closes the connection', async (t) => {
    const { port } = await startFront(t)
    // `return` answers without reading the body, so the 200 is out before the bad chunk.
    const res = await rawRequest(
      port,
      [
        post('Transfer-Encoding: chunked\r\n'),
        `zz\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n${HOST}\r\n\r\n`,
      ],
      { waitMs: 5000, gapMs: 100 },
    )
    assert.equal(res.status, 200)
    assert.ok(res.closedByServer)
    assert.ok(!res.text.includes('smuggled'), res.text)
    await assertHealthy(port, 'early answer')
  })
})

describe('front: slow clients', () => {
  test('limits.header_timeout cuts off headers that trickle in', async (t) => {
    const { port } = await startFront(t, { header_timeout: '1s' })
    const parts = [`GET / HTTP/1.1\r\n`, ...Array.from({ length: 100 }, (_, i) => `X-${i}: y\r\n`)]
    // 100 header lines 200 ms apart would take 20 s; the server must end it long before.
    const res = await rawRequest(port, parts, { waitMs: 15_000, gapMs: 200 })
    assert.ok(res.closedByServer, 'the server closed the connection')
    assert.ok(res.status === 408 || res.status === null, `got ${res.status}`)
    assert.ok(!res.text.includes('ok GET'), 'the request was not served')
    await assertHealthy(port, 'slow headers')
  })

  test('a connection that sends nothing is closed by limits.header_timeout', async (t) => {
    const { port } = await startFront(t, { header_timeout: '1s' })
    const res = await rawRequest(port, [], { waitMs: 15_000 })
    assert.ok(res.closedByServer)
    assert.ok(res.status === 408 || res.status === null, `got ${res.status}`)
  })
})

describe('front: keep-alive and request bodies', () => {
  test('two requests on one connection get two responses, pipelined or one after the other', async (t) => {
    const { port } = await startFront(t)
    const pipelined = await rawRequest(
      port,
      `GET /one HTTP/1.1\r\n${HOST}\r\nGET /two HTTP/1.1\r\n${HOST}Connection: close\r\n\r\n`,
    )
    assert.deepEqual(statuses(pipelined), [200, 200])
    assert.ok(pipelined.text.indexOf('ok GET /one\n') < pipelined.text.indexOf('ok GET /two\n'))
    assert.ok(pipelined.closedByServer)

    const sequential = await rawRequest(
      port,
      [`GET /one HTTP/1.1\r\n${HOST}\r\n`, `GET /two HTTP/1.1\r\n${HOST}Connection: close\r\n\r\n`],
      { gapMs: 200 },
    )
    assert.deepEqual(statuses(sequential), [200, 200])
    assert.ok(sequential.text.endsWith('ok GET /two\n'))
  })

  test('chunked request bodies (with extensions and trailers) are accepted and the connection reused', async (t) => {
    const { port } = await startFront(t)
    const res = await rawRequest(
      port,
      [
        post('Transfer-Encoding: chunked\r\n', '5\r\nhello\r\n6;ext=1\r\n world\r\n'),
        `A\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n`,
        `GET /after HTTP/1.1\r\n${HOST}Connection: close\r\n\r\n`,
      ],
      { gapMs: 100 },
    )
    assert.deepEqual(statuses(res), [200, 200], res.text)
    assert.ok(res.text.includes('ok POST /\n'))
    assert.ok(res.text.endsWith('ok GET /after\n'))
  })

  test('a Content-Length body is skipped over for the next request', async (t) => {
    const { port } = await startFront(t)
    const body = `GET /inner HTTP/1.1\r\n${HOST}\r\n`
    const res = await rawRequest(
      port,
      post(`Content-Length: ${body.length}\r\n`, body) +
        `GET /next HTTP/1.1\r\n${HOST}Connection: close\r\n\r\n`,
    )
    assert.deepEqual(statuses(res), [200, 200])
    assert.ok(!res.text.includes('/inner'), 'the body is not parsed as a request')
    assert.ok(res.text.endsWith('ok GET /next\n'))
  })

  test('Expect: 100-continue gets 100 Continue when the size is allowed', async (t) => {
    const { port } = await startFront(t)
    const res = await rawRequest(
      port,
      [
        `POST /small HTTP/1.1\r\n${HOST}Content-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
        'hello',
      ],
      { gapMs: 200 },
    )
    assert.ok(res.text.startsWith('HTTP/1.1 100 Continue\r\n\r\n'), res.text)
    assert.deepEqual(statuses(res), [100, 200])
    assert.ok(res.text.endsWith('small\n'))
  })

  test('Expect: 100-continue over the route limit is 413 without 100 Continue', async (t) => {
    const { port } = await startFront(t)
    for (const [path, length] of [
      ['/small', 11],
      ['/', 5000],
    ] as const) {
      const res = await rawRequest(
        port,
        `POST ${path} HTTP/1.1\r\n${HOST}Content-Length: ${length}\r\nExpect: 100-continue\r\n\r\n`,
      )
      assert.deepEqual(statuses(res), [413], `${path}: ${res.text}`)
      assert.ok(res.closedByServer, path)
    }
  })

  test('an Expect other than 100-continue is 417', async (t) => {
    const { port } = await startFront(t)
    const res = await rawRequest(port, post('Expect: teapot\r\nContent-Length: 0\r\nConnection: close\r\n'))
    assert.equal(res.status, 417)
  })

  test('HEAD gets headers only, and the next response follows right after them', async (t) => {
    const { port } = await startFront(t)
    const res = await rawRequest(
      port,
      `HEAD /h HTTP/1.1\r\n${HOST}\r\nGET /g HTTP/1.1\r\n${HOST}Connection: close\r\n\r\n`,
    )
    assert.deepEqual(statuses(res), [200, 200])
    const headEnd = res.text.indexOf('\r\n\r\n') + 4
    assert.match(res.text.slice(0, headEnd), /\r\ncontent-length: 11\r\n/i, 'HEAD announces the GET length')
    assert.ok(res.text.slice(headEnd).startsWith('HTTP/1.1 200 OK\r\n'), 'no body after the HEAD headers')
    assert.ok(res.text.endsWith('ok GET /g\n'))
  })

  test('Connection: close is honored: one response, then the server closes', async (t) => {
    const { port } = await startFront(t)
    const res = await rawRequest(
      port,
      `GET /first HTTP/1.1\r\n${HOST}Connection: close\r\n\r\nGET /second HTTP/1.1\r\n${HOST}\r\n\r\n`,
    )
    assert.deepEqual(statuses(res), [200])
    assert.match(res.text, /\r\nConnection: close\r\n/i)
    assert.ok(res.closedByServer)
    assert.ok(!res.text.includes('/second'))
  })

  test('limits.max_requests_per_connection closes after that many responses', async (t) => {
    const { port } = await startFront(t, { max_requests_per_connection: 2 })
    const res = await rawRequest(
      port,
      [1, 2, 3].map((i) => `GET /${i} HTTP/1.1\r\n${HOST}\r\n`),
      { gapMs: 100 },
    )
    assert.ok(res.closedByServer, 'the server closed after the second response')
    assert.deepEqual(statuses(res), [200, 200], 'the third request is never answered')
    assert.match(res.text, /\r\nConnection: close\r\n\r\nok GET \/2\n$/i)
  })

  test('a refused client does not disturb a keep-alive connection opened before it', async (t) => {
    const { port } = await startFront(t)
    const socket = connect(port, '127.0.0.1')
    t.after(() => socket.destroy())
    await once(socket, 'connect')
    const responses = responseReader(socket)
    socket.write(`GET /a HTTP/1.1\r\n${HOST}\r\n`)
    assert.ok((await responses.next()).endsWith('ok GET /a\n'))
    await assertRefused(port, {
      name: 'smuggling attempt',
      request: post('Content-Length: 5\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n'),
      status: [400],
    })
    socket.write(`GET /b HTTP/1.1\r\n${HOST}\r\n`)
    assert.ok((await responses.next()).endsWith('ok GET /b\n'))
  })
})

/** Reads whole responses (Content-Length framed) off a raw keep-alive socket. */
function responseReader(socket: Socket) {
  let buffered = ''
  let wake: (() => void) | null = null
  socket.setEncoding('latin1')
  socket.on('data', (chunk: string) => {
    buffered += chunk
    wake?.()
  })
  return {
    async next(): Promise<string> {
      for (;;) {
        const headEnd = buffered.indexOf('\r\n\r\n')
        if (headEnd !== -1) {
          const length = Number(/\r\ncontent-length: (\d+)/i.exec(buffered.slice(0, headEnd))?.[1] ?? 0)
          const end = headEnd + 4 + length
          if (buffered.length >= end) {
            const one = buffered.slice(0, end)
            buffered = buffered.slice(end)
            return one
          }
        }
        await new Promise<void>((resolve) => {
          wake = resolve
        })
      }
    },
  }
}

describe('front: keepalive_timeout', () => {
  test('keepalive_timeout "1s" is the idle socket\'s real timeout (Node adds no buffer of its own)', async (t) => {
    const { gatehouse, port } = await startFront(t, { keepalive_timeout: '1s' })
    const server = (gatehouse as unknown as { listeners: { server: Server }[] }).listeners[0]!.server
    const accepted = once(server, 'connection') as Promise<[Socket & { timeout?: number }]>
    const socket = connect(port, '127.0.0.1')
    t.after(() => socket.destroy())
    const reader = responseReader(socket)
    const [serverSide] = await accepted
    for (const path of ['/one', '/two']) {
      socket.write(`GET ${path} HTTP/1.1\r\n${HOST}\r\n`)
      assert.match(await reader.next(), /^HTTP\/1\.1 200 /)
      await new Promise((r) => setImmediate(r))
      // Node 20 sets keepAliveTimeout + 1000 ms here; newer Node, keepAliveTimeout + keepAliveTimeoutBuffer.
      assert.equal(serverSide.timeout, 1000)
    }
    // And the idle connection is closed by the server (no threshold: only that it happens).
    await once(socket, 'close')
  })
})

describe('front: graceful close', () => {
  const HUGE = 16 * 1024 * 1024

  async function startWithHugeFile(t: TestContext) {
    const root = tempDir(t, 'gh-close-')
    const content = Buffer.alloc(HUGE)
    for (let i = 0; i < HUGE; i += 4) content.writeUInt32LE(i, i)
    writeFileSync(join(root, 'huge.bin'), content)
    writeFileSync(join(root, 'small.txt'), 'small\n')
    const running = await startGatehouse(t, { routes: [{ path: '/', static: { root } }] })
    return { ...running, content }
  }

  /** Connect and ask for the huge file without reading the answer yet (so it stays in flight). */
  async function stalledDownload(port: number): Promise<Socket> {
    const socket = connect(port, '127.0.0.1')
    socket.pause()
    await once(socket, 'connect')
    socket.write(`GET /huge.bin HTTP/1.1\r\n${HOST}\r\n`)
    // The first bytes show the response has started; the stream then stops reading at its
    // highWaterMark, and the 16 MiB cannot fit in the kernel's buffers.
    await once(socket, 'readable')
    return socket
  }

  function readAll(socket: Socket): Promise<Buffer> {
    const chunks: Buffer[] = []
    return new Promise((resolve) => {
      socket.on('data', (c: Buffer) => chunks.push(c))
      socket.on('close', () => resolve(Buffer.concat(chunks)))
      socket.on('error', () => {})
      socket.resume()
    })
  }

  const refusedConnection = (port: number) =>
    new Promise<string>((resolve) => {
      const s = connect(port, '127.0.0.1')
      s.on('connect', () => {
        s.destroy()
        resolve('connected')
      })
      s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
    })

  test('close() stops accepting, lets the in-flight response finish, then resolves', async (t) => {
    const { gatehouse, port, content } = await startWithHugeFile(t)
    const socket = await stalledDownload(port)
    t.after(() => socket.destroy())

    let closed = false
    const closing = gatehouse.close(60_000).then(() => {
      closed = true
    })
    assert.equal(await refusedConnection(port), 'ECONNREFUSED', 'no new connections once closing')
    await new Promise((r) => setTimeout(r, 300))
    assert.equal(closed, false, 'close() waits for the response in flight')

    const received = await readAll(socket)
    await closing
    const headEnd = received.indexOf('\r\n\r\n')
    const head = received.subarray(0, headEnd).toString('latin1')
    assert.match(head, /^HTTP\/1\.1 200 /)
    assert.match(head, new RegExp(`\\r\\ncontent-length: ${HUGE}\\r\\n`, 'i'))
    const body = received.subarray(headEnd + 4)
    assert.equal(body.length, HUGE)
    assert.ok(body.equals(content), 'the whole file arrived intact')
  })

  test('close() closes idle keep-alive connections at once', async (t) => {
    const { gatehouse, port } = await startWithHugeFile(t)
    const socket = connect(port, '127.0.0.1')
    t.after(() => socket.destroy())
    await once(socket, 'connect')
    const responses = responseReader(socket)
    socket.write(`GET /small.txt HTTP/1.1\r\n${HOST}\r\n`)
    assert.match(await responses.next(), /^HTTP\/1\.1 200 [\s\S]*\r\n\r\nsmall\n$/)
    const socketClosed = once(socket, 'close')
    await gatehouse.close(60_000)
    await socketClosed
  })

  test('the grace period bounds close(): a stalled download is cut off', async (t) => {
    const { gatehouse, port } = await startWithHugeFile(t)
    const socket = await stalledDownload(port)
    t.after(() => socket.destroy())
    const socketClosed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
    socket.on('error', () => {})
    await gatehouse.close(300)
    socket.resume()
    await socketClosed
    assert.ok(socket.bytesRead < HUGE, 'the download did not complete')
  })
})
