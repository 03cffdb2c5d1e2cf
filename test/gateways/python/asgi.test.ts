import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { type IncomingMessage, request } from 'node:http'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import {
  CLI,
  FIXTURES,
  PYTHON,
  rawRequest,
  startGatehouse,
  tempDir,
  stopServe,
  eventually,
  logLines,
  listeningAddress,
} from '../../support/helpers.js'
import { closed, nextMessage, openWs } from '../../support/ws-helpers.js'

const APPS = join(FIXTURES, 'asgi')

const sharedCleanups: (() => unknown)[] = []
const hooks = { after: (fn: () => unknown) => void sharedCleanups.push(fn) }
after(async () => {
  for (const fn of sharedCleanups.splice(0)) await fn()
})

const bytesOf = (v: unknown) => Buffer.from((v as { bytes: number[] }).bytes).toString('latin1')

describe('ASGI: HTTP and WebSocket scopes through the bridge (raw ASGI apps)', () => {
  let origin = ''
  let port = 0
  let markers = ''
  let errorLog = ''

  before(async () => {
    const dir = tempDir(hooks, 'gh-asgi-')
    markers = join(dir, 'markers')
    errorLog = join(dir, 'error.log')
    mkdirSync(markers)
    const asgi = {
      app: 'apps:app',
      python: PYTHON,
      chdir: APPS,
      workers: 1,
      ws_max_message: '1MB',
      env: { MARKER_DIR: markers, PYTHONDONTWRITEBYTECODE: '1' },
    }
    const running = await startGatehouse(hooks, {
      log: { level: 'info', error_log: errorLog },
      limits: { max_body_bytes: '20MB' },
      routes: [
        { path: '/mnt', asgi: { ...asgi, root_path: '/base' } },
        { path: '/fwd', asgi: { ...asgi, forwarded_allow_ips: ['127.0.0.1'] } },
        { path: '/short', asgi: { ...asgi, timeout: '1s' } },
        { exact: '/plain', return: { status: 200, body: 'plain route' } },
        { path: '/', asgi },
      ],
    })
    origin = running.origin
    port = running.port
  })

  const scopeOf = async (path: string, init?: RequestInit) => {
    const res = await fetch(origin + path, init)
    assert.equal(res.status, 200, await res.clone().text())
    return (await res.json()) as Record<string, unknown>
  }

  test('http scope: version, method, scheme, decoded path, raw_path, query_string, headers in order with duplicates, client, server', async () => {
    const r = await rawRequest(
      port,
      'GET /caf%C3%A9/a%2Fb/scope?x=1&y=%20 HTTP/1.1\r\nHost: localhost\r\nX-Dup: one\r\nX-Other: o\r\nx-dup: two\r\nConnection: close\r\n\r\n',
    )
    assert.equal(r.status, 200, r.text)
    const scope = JSON.parse(r.text.slice(r.text.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>
    assert.equal(scope.type, 'http')
    assert.deepEqual(scope.asgi, { version: '3.0', spec_version: '2.3' })
    assert.equal(scope.http_version, '1.1')
    assert.equal(scope.method, 'GET')
    assert.equal(scope.scheme, 'http')
    assert.equal(scope.path, '/café/a/b/scope')
    assert.equal(bytesOf(scope.raw_path), '/caf%C3%A9/a%2Fb/scope')
    assert.equal(bytesOf(scope.query_string), 'x=1&y=%20')
    assert.equal(scope.root_path, '')
    const headers = (scope.headers as unknown[][]).map(([k, v]) => [bytesOf(k), bytesOf(v)])
    assert.deepEqual(headers, [
      ['host', 'localhost'],
      ['x-dup', 'one'],
      ['x-other', 'o'],
      ['x-dup', 'two'],
      ['connection', 'close'],
    ])
    assert.equal((scope.client as unknown[])[0], '127.0.0.1')
    assert.equal(typeof (scope.client as unknown[])[1], 'number')
    assert.deepEqual(scope.server, ['127.0.0.1', port])
    assert.deepEqual(scope.state_keys, ['shared', 'started_by'])
  })

  test('root_path is the configured root_path + the route prefix; path includes it', async () => {
    const scope = await scopeOf('/mnt/x/scope')
    assert.equal(scope.root_path, '/base/mnt')
    assert.equal(scope.path, '/base/mnt/x/scope')
    assert.equal(bytesOf(scope.raw_path), '/mnt/x/scope')
  })

  test('forwarded_allow_ips: client and scheme from X-Forwarded-For/Proto of a trusted peer only', async () => {
    const headers = { 'x-forwarded-for': '203.0.113.7, 127.0.0.1', 'x-forwarded-proto': 'https' }
    const trusted = await scopeOf('/fwd/scope', { headers })
    assert.deepEqual(trusted.client, ['203.0.113.7', 0])
    assert.equal(trusted.scheme, 'https')
    const untrusted = await scopeOf('/scope', { headers })
    assert.equal((untrusted.client as unknown[])[0], '127.0.0.1')
    assert.equal(untrusted.scheme, 'http')
  })

  test('HTTP/1.0 is http_version "1.0"', async () => {
    const r = await rawRequest(port, 'GET /scope HTTP/1.0\r\nHost: x\r\n\r\n')
    const scope = JSON.parse(r.text.slice(r.text.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>
    assert.equal(scope.http_version, '1.0')
  })

  test('request body: a large body streams in more_body messages within the credit window', async () => {
    const body = Buffer.alloc(3 * 1024 * 1024 + 5)
    for (let i = 0; i < body.length; i++) body[i] = (i * 13) % 256
    const res = await fetch(`${origin}/echo`, { method: 'POST', body })
    const got = Buffer.from(await res.arrayBuffer())
    assert.equal(res.status, 200)
    assert.ok(got.subarray(0, body.length).equals(body))
    assert.equal(got.subarray(body.length).toString(), `|${body.length}`)
  })

  test('chunked request body arrives whole, in several messages, the last with more_body false', async () => {
    const r = await rawRequest(
      port,
      [
        'POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n',
        '5\r\nhello\r\n',
        '6\r\n world\r\n',
        '0\r\n\r\n',
      ],
      { gapMs: 50 },
    )
    const json = JSON.parse(r.text.slice(r.text.indexOf('\r\n\r\n') + 4)) as {
      total: number
      messages: number
    }
    assert.equal(json.total, 11)
    assert.ok(json.messages >= 2, `messages ${json.messages}`)
  })

  test('no body: one http.request with more_body false', async () => {
    const res = await fetch(`${origin}/echo`, { method: 'POST' })
    assert.equal(await res.text(), '|0')
  })

  test('Expect: 100-continue: 100 goes out when the app reads the body', async () => {
    const r = await rawRequest(
      port,
      'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n',
      { waitMs: 1000 },
    )
    assert.match(r.text, /^HTTP\/1\.1 100 Continue\r\n\r\n/)
  })

  test('streamed response: chunked framing, every chunk in order', async () => {
    const res = await fetch(`${origin}/stream?n=7`)
    assert.equal(res.headers.get('transfer-encoding'), 'chunked')
    const text = await res.text()
    assert.equal(text, [...Array(7).keys()].map((i) => `chunk ${i}\n`).join(''))
  })

  test('a whole response in one body message gets a Content-Length', async () => {
    const res = await fetch(`${origin}/pid`)
    assert.equal(res.headers.get('content-length'), String((await res.text()).length))
  })

  test('response headers: order, duplicates and Set-Cookie kept, status 201', async () => {
    const r = await rawRequest(port, 'GET /headers-out HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    assert.match(r.text, /^HTTP\/1\.1 201 Created\r\n/)
    assert.match(r.text, /x-dup: 1\r\nx-dup: 2\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n/)
  })

  test('HEAD: headers, no body', async () => {
    const r = await rawRequest(port, 'HEAD /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    assert.equal(r.status, 200)
    assert.ok(r.text.endsWith('\r\n\r\n'), JSON.stringify(r.text))
  })

  test('flow control: a client that stops reading stops the app (bounded buffering), then all 64 MB arrive', async () => {
    const size = 64 * 1024 * 1024
    const progress = join(markers, 'big-progress')
    const sentSoFar = () => (existsSync(progress) ? Number(readFileSync(progress, 'utf8')) : 0)
    let res!: IncomingMessage
    const req = request(`${origin}/big?size=${size}`)
    await new Promise<void>((resolve, reject) => {
      req.on('response', (r) => {
        res = r
        r.pause()
        resolve()
      })
      req.on('error', reject)
      req.end()
    })
    // The app's send() waits for credit: its progress stops well short of the whole body.
    // Stalled: no progress across 20 looks, 25 ms apart.
    let last = -1
    let same = 0
    await eventually(
      () => {
        const now = sentSoFar()
        same = now === last && now > 0 ? same + 1 : 0
        last = now
        return same >= 20
      },
      'the app to stall',
      60_000,
    )
    assert.ok(last < 16 * 1024 * 1024, `the app sent ${last} bytes to a client that reads nothing`)
    let got = 0
    await new Promise<void>((resolve, reject) => {
      res.on('data', (d: Buffer) => (got += d.length))
      res.on('end', resolve)
      res.on('error', reject)
      res.resume()
    })
    assert.equal(got, size)
  })

  test('client leaves mid-stream: the app sees send() raise an OSError', async () => {
    const r = await rawRequest(port, 'GET /slow-stream HTTP/1.1\r\nHost: x\r\n\r\n', { waitMs: 300 })
    assert.equal(r.status, 200)
    const text = await eventually(
      () => existsSync(join(markers, 'slow-stream')) && readFileSync(join(markers, 'slow-stream'), 'utf8'),
      'the slow-stream marker',
    )
    assert.equal(text, 'ClientDisconnected')
  })

  test('client leaves: receive() returns http.disconnect, a send() after it raises', async () => {
    const r = await rawRequest(port, 'GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n', { waitMs: 300 })
    assert.match(r.text, /waiting/)
    const text = await eventually(
      () =>
        existsSync(join(markers, 'wait-disconnect')) &&
        readFileSync(join(markers, 'wait-disconnect'), 'utf8'),
      'the wait-disconnect marker',
    )
    assert.equal(text, 'disconnect then ClientDisconnected')
  })

  test('an app that raises: 500 and the traceback in the error log', async () => {
    const res = await fetch(`${origin}/raise`)
    assert.equal(res.status, 500)
    await eventually(
      () =>
        logLines(errorLog).find((l) => l.code === 'GH_ERR_ASGI_APP' && /boom in the app/.test(String(l.msg))),
      'the traceback in the log',
    )
  })

  test('an app that raises after the response started: the connection is cut', async () => {
    const r = await rawRequest(port, 'GET /raise-after-start HTTP/1.1\r\nHost: x\r\n\r\n', { waitMs: 3000 })
    assert.equal(r.status, 200)
    assert.ok(r.closedByServer)
    assert.ok(!/0\r\n\r\n$/.test(r.text), 'no clean end of the chunked body')
  })

  test('an app that returns without a response: 500', async () => {
    const res = await fetch(`${origin}/nothing`)
    assert.equal(res.status, 500)
  })

  test('timeout: 504, the task stack is logged, the task cancelled (the worker lives on)', async () => {
    const pidBefore = await (await fetch(`${origin}/short/pid`)).text()
    const res = await fetch(`${origin}/short/sleep`)
    assert.equal(res.status, 504)
    await eventually(() => existsSync(join(markers, 'sleep-cancelled')), 'the app to see CancelledError')
    await eventually(
      () =>
        logLines(errorLog).find(
          (l) =>
            /GET \/short\/sleep ran past its timeout/.test(String(l.msg)) &&
            /asyncio.sleep\(3600\)|sleep/.test(String(l.msg)),
        ),
      'the stack in the log',
    )
    assert.equal(await (await fetch(`${origin}/short/pid`)).text(), pidBefore)
  })

  test('many concurrent requests run at once on one worker', async () => {
    const n = 40
    const all = await Promise.all(
      [...Array(n)].map(() => fetch(`${origin}/concurrent?want=${n}`).then((r) => r.text())),
    )
    assert.deepEqual(new Set(all), new Set(['together']))
  })

  test('lifespan state: set at startup, a shallow copy in each request', async () => {
    const a = (await (await fetch(`${origin}/state`)).json()) as {
      started_by: number
      pid: number
      n: number
    }
    const b = (await (await fetch(`${origin}/state`)).json()) as { n: number }
    assert.equal(a.started_by, a.pid)
    assert.equal(b.n, a.n + 1)
    const keys = (await (await fetch(`${origin}/state-keys`)).json()) as string[]
    assert.deepEqual(keys, ['shared', 'started_by'])
  })

  // -- WebSocket ------------------------------------------------------------------------

  const wsOrigin = () => origin.replace('http:', 'ws:')

  test('websocket scope: scheme ws, path, subprotocols, headers, the http.response extension', async () => {
    const { ws } = await openWs(`${wsOrigin()}/mnt/ws/scope?q=1`, ['p1', 'p2'])
    const msg = await nextMessage(ws)
    const scope = JSON.parse(msg.data.toString()) as Record<string, unknown>
    assert.equal(scope.type, 'websocket')
    assert.equal(scope.scheme, 'ws')
    assert.equal(scope.path, '/base/mnt/ws/scope')
    assert.equal(scope.root_path, '/base/mnt')
    assert.equal(bytesOf(scope.query_string), 'q=1')
    assert.deepEqual(scope.subprotocols, ['p1', 'p2'])
    assert.deepEqual(scope.extensions, { 'websocket.http.response': {} })
    const headers = (scope.headers as unknown[][]).map(([k]) => bytesOf(k))
    assert.ok(headers.includes('sec-websocket-key'))
    const { code } = await closed(ws)
    assert.equal(code, 1000)
  })

  test('echo: text and binary messages both ways', async () => {
    const { ws } = await openWs(`${wsOrigin()}/ws/echo?textbin`)
    ws.send('héllo')
    const t = await nextMessage(ws)
    assert.equal(t.binary, false)
    assert.equal(t.data.toString(), 'héllo')
    const bin = Buffer.from([0, 1, 2, 255])
    ws.send(bin)
    const b = await nextMessage(ws)
    assert.equal(b.binary, true)
    assert.ok(b.data.equals(bin))
    ws.close(4001, 'client done')
    await closed(ws)
    const code = await eventually(
      () =>
        existsSync(join(markers, 'ws-echo-textbin')) &&
        readFileSync(join(markers, 'ws-echo-textbin'), 'utf8'),
      'the app to see the disconnect',
    )
    assert.equal(code, '4001')
  })

  test('a close without a code reaches the app as 1005', async () => {
    const { ws } = await openWs(`${wsOrigin()}/ws/echo?nocode`)
    ws.close()
    await closed(ws)
    const code = await eventually(
      () =>
        existsSync(join(markers, 'ws-echo-nocode')) && readFileSync(join(markers, 'ws-echo-nocode'), 'utf8'),
      'the disconnect',
    )
    assert.equal(code, '1005')
  })

  test('abrupt client disconnect (TCP reset): the app sees websocket.disconnect 1006', async () => {
    const { ws } = await openWs(`${wsOrigin()}/ws/echo?abrupt`)
    ws.send('x')
    await nextMessage(ws)
    ws.terminate()
    const code = await eventually(
      () =>
        existsSync(join(markers, 'ws-echo-abrupt')) && readFileSync(join(markers, 'ws-echo-abrupt'), 'utf8'),
      'the disconnect',
    )
    assert.equal(code, '1006')
  })

  test('accept with a subprotocol and headers; the app closes with a code and reason', async () => {
    const { ws, headers } = await openWs(`${wsOrigin()}/ws/subprotocol`, ['chat', 'superchat'])
    assert.equal(ws.protocol, 'superchat')
    assert.equal(headers['x-app'], 'accepted')
    const { code, reason } = await closed(ws)
    assert.equal(code, 4000)
    assert.equal(reason, 'bye now')
  })

  test('close before accept: HTTP 403', async () => {
    await assert.rejects(openWs(`${wsOrigin()}/ws/deny`), (err: { status?: number }) => err.status === 403)
  })

  test("websocket.http.response: the app's own status, headers and streamed body", async () => {
    await assert.rejects(
      openWs(`${wsOrigin()}/ws/deny-response`),
      (err: { status?: number; body?: string; headers?: Record<string, string> }) => {
        assert.equal(err.status, 401)
        assert.equal(err.body, 'who are you?')
        assert.equal(err.headers?.['www-authenticate'], 'Bearer')
        return true
      },
    )
  })

  test('an app that raises before accept: HTTP 500 and the traceback logged', async () => {
    await assert.rejects(openWs(`${wsOrigin()}/ws/raise`), (err: { status?: number }) => err.status === 500)
    await eventually(
      () => logLines(errorLog).find((l) => /boom before accept/.test(String(l.msg))),
      'the traceback',
    )
  })

  test('a message over ws_max_message closes with 1009 and the app sees 1009', async () => {
    const { ws } = await openWs(`${wsOrigin()}/ws/echo?toobig`)
    ws.send(Buffer.alloc(1024 * 1024 + 1))
    const { code } = await closed(ws)
    assert.equal(code, 1009)
    const seen = await eventually(
      () =>
        existsSync(join(markers, 'ws-echo-toobig')) && readFileSync(join(markers, 'ws-echo-toobig'), 'utf8'),
      'the disconnect',
    )
    assert.equal(seen, '1009')
  })

  test('large messages (900 KB, both ways) and many in flight keep their order', async () => {
    const { ws } = await openWs(`${wsOrigin()}/ws/echo?large`)
    const big = Buffer.alloc(900 * 1024)
    for (let i = 0; i < big.length; i++) big[i] = i % 251
    for (let i = 0; i < 20; i++) ws.send(Buffer.concat([Buffer.from([i]), big]))
    const got: Buffer[] = []
    for (let i = 0; i < 20; i++) got.push((await nextMessage(ws)).data)
    for (let i = 0; i < 20; i++) {
      assert.equal(got[i]![0], i)
      assert.ok(got[i]!.subarray(1).equals(big))
    }
    ws.close()
    await closed(ws)
  })

  test('WebSocket flow control: an app that takes no messages stops reading the client (it buffers), then all arrive', async () => {
    const { ws } = await openWs(`${wsOrigin()}/ws/slow-reader`)
    const piece = Buffer.alloc(512 * 1024, 0x61)
    const total = 64 * piece.length
    for (let i = 0; i < 63; i++) ws.send(piece)
    ws.send(Buffer.concat([Buffer.from('!'), piece.subarray(1)]))
    // Stalled: the client's buffer stops draining across 20 looks, 25 ms apart.
    let last = -1
    let same = 0
    await eventually(
      () => {
        const now = ws.bufferedAmount
        same = now === last ? same + 1 : 0
        last = now
        return same >= 20
      },
      'the client buffer to stop draining',
      60_000,
    )
    assert.ok(last > total / 2, `only ${last} of ${total} bytes left unread by Gatehouse`)
    writeFileSync(join(markers, 'go'), '')
    assert.equal((await nextMessage(ws)).data.toString(), String(total))
    ws.close()
    await closed(ws)
  })

  test('200 concurrent WebSocket connections, each echoing', async () => {
    const n = 200
    const socks = await Promise.all([...Array(n)].map((_, i) => openWs(`${wsOrigin()}/ws/echo?many${i}`)))
    const replies = await Promise.all(
      socks.map(({ ws }, i) => {
        const p = nextMessage(ws)
        ws.send(`m${i}`)
        return p
      }),
    )
    replies.forEach((r, i) => assert.equal(r.data.toString(), `m${i}`))
    await Promise.all(
      socks.map(({ ws }) => {
        const c = closed(ws)
        ws.close()
        return c
      }),
    )
  })

  test('not a valid handshake: 400', async () => {
    const r = await rawRequest(
      port,
      'GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n',
    )
    assert.equal(r.status, 400)
  })

  test('a WebSocket upgrade to a route without WebSockets is served as plain HTTP', async () => {
    const r = await rawRequest(
      port,
      'GET /plain HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    )
    assert.equal(r.status, 200)
    assert.match(r.text, /plain route$/)
    assert.ok(r.closedByServer)
  })

  test('an Upgrade to something else is served as plain HTTP', async () => {
    const r = await rawRequest(
      port,
      'GET /pid HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n',
    )
    assert.equal(r.status, 200)
  })
})

describe('ASGI worker crashes', () => {
  test('a worker that dies: 502 before the response, a cut response after, WebSockets closed 1011; a new worker serves', async (t) => {
    const running = await startGatehouse(
      { after: (fn) => t.after(fn) },
      { routes: [{ path: '/', asgi: { app: 'apps:app', python: PYTHON, chdir: APPS, workers: 1 } }] },
    )
    const { ws } = await openWs(`${running.origin.replace('http', 'ws')}/ws/echo?crash`)
    const wsClosed = closed(ws)
    const early = await fetch(`${running.origin}/crash-early`)
    assert.equal(early.status, 502)
    assert.equal((await wsClosed).code, 1011)
    const r = await rawRequest(running.port, 'GET /crash HTTP/1.1\r\nHost: x\r\n\r\n', { waitMs: 5000 })
    assert.equal(r.status, 200)
    assert.ok(r.closedByServer)
    assert.ok(!r.text.endsWith('0\r\n\r\n'))
    // The pool replaces the worker: requests are served again.
    let pid = ''
    for (let i = 0; i < 200 && !/^\d+$/.test(pid); i++) {
      const x = await fetch(`${running.origin}/pid`).catch(() => null)
      pid = x && x.status === 200 ? await x.text() : ''
      if (!/^\d+$/.test(pid)) await new Promise((resolve) => setTimeout(resolve, 50))
    }
    assert.match(pid, /^\d+$/)
  })
})

describe('ASGI lifespan', () => {
  test('startup failure: the worker says why and `gatehouse serve --asgi` exits 1', async () => {
    const child = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--listen',
        '127.0.0.1:0',
        '--asgi',
        'apps:app',
        '--chdir',
        APPS,
        '--python',
        PYTHON,
        '--workers',
        '1',
        '--env',
        'LIFESPAN_FAIL=1',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let stderr = ''
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (d: string) => (stderr += d))
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
    assert.equal(code, 1)
    assert.match(stderr, /lifespan startup failed: the database is not there/)
    assert.match(stderr, /cannot start/)
  })

  test('shutdown runs on stop; an app without lifespan runs with one log line per worker', async (t) => {
    const dir = tempDir(t, 'gh-asgi-life-')
    const errorLog = join(dir, 'error.log')
    const running = await startGatehouse(
      { after: (fn) => t.after(fn) },
      {
        log: { level: 'info', error_log: errorLog },
        routes: [
          { path: '/plain', asgi: { app: 'apps:no_lifespan', python: PYTHON, chdir: APPS, workers: 2 } },
          {
            path: '/',
            asgi: { app: 'apps:app', python: PYTHON, chdir: APPS, workers: 1, env: { MARKER_DIR: dir } },
          },
        ],
      },
    )
    const res = await fetch(`${running.origin}/plain`)
    assert.equal(await res.text(), 'fine without lifespan')
    const lines = logLines(errorLog).filter((l) => /does not support lifespan/.test(String(l.msg)))
    assert.equal(lines.length, 2)
    assert.match(String(lines[0]!.msg), /ValueError: only HTTP here, not lifespan/)
    const pid = await (await fetch(`${running.origin}/pid`)).text()
    await running.gatehouse.close(5000)
    await eventually(() => existsSync(join(dir, `shutdown-${pid}`)), 'lifespan shutdown')
  })

  test('stop: open WebSockets are closed with 1012 (the app sees it), then lifespan shutdown', async (t) => {
    const dir = tempDir(t, 'gh-asgi-stop-')
    const running = await startGatehouse(
      { after: (fn) => t.after(fn) },
      {
        routes: [
          {
            path: '/',
            asgi: { app: 'apps:app', python: PYTHON, chdir: APPS, workers: 1, env: { MARKER_DIR: dir } },
          },
        ],
      },
    )
    const pid = await (await fetch(`${running.origin}/pid`)).text()
    const { ws } = await openWs(`${running.origin.replace('http', 'ws')}/ws/echo?stop`)
    const wsClosed = closed(ws)
    await running.gatehouse.close(5000)
    assert.equal((await wsClosed).code, 1012)
    assert.equal(readFileSync(join(dir, 'ws-echo-stop'), 'utf8'), '1012')
    assert.equal(readFileSync(join(dir, `shutdown-${pid}`), 'utf8'), 'clean')
  })

  test('factory form MODULE:create_app(...) and the CLI flags', async (t) => {
    const child = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--listen',
        '127.0.0.1:0',
        '--asgi',
        "apps:create_app('hey there')",
        '--chdir',
        APPS,
        '--python',
        PYTHON,
        '--workers',
        '1',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    t.after(() => stopServe(child))
    const { address } = await listeningAddress(child)
    assert.equal(await (await fetch(`http://${address}/`)).text(), 'hey there')
    const exited = new Promise((resolve) => child.on('exit', resolve))
    child.kill('SIGTERM')
    assert.equal(await exited, 0)
    assert.deepEqual(
      readdirSync(APPS).filter((f) => f.endsWith('.sock')),
      [],
    )
  })
})
