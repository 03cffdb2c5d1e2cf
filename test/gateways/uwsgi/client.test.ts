import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { once } from 'node:events'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { text } from 'node:stream/consumers'
import { after, before, describe, test } from 'node:test'
import { request } from 'undici'
import { GatehouseError } from '../../../src/core/errors.js'
import { uwsgiRequest } from '../../../src/gateways/uwsgi/client.js'
import { UwsgiRequestParser } from '../../../src/gateways/uwsgi/codec.js'
import { type Running, startGatehouse, tempDir } from '../../support/helpers.js'
import { startUwsgi, type UwsgiPeer } from '../../support/peer-uwsgi.js'

const json = async (body: { text(): Promise<string> }) =>
  JSON.parse(await body.text()) as Record<string, unknown>

/** A loopback TCP server that hands each connection to `onConnection`; closed when the test ends. */
async function fakeUpstream(
  t: { after: (fn: () => Promise<void>) => void },
  onConnection: (socket: Socket) => void,
): Promise<{ address: string; server: Server }> {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    socket.once('close', () => sockets.delete(socket))
    onConnection(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { address: `127.0.0.1:${(server.address() as { port: number }).port}`, server }
}

/** Read one uwsgi request from the socket, then call `reply`. */
function onRequest(socket: Socket, reply: (vars: Map<string, string>, body: Buffer) => void): void {
  const parser = new UwsgiRequestParser()
  let vars = new Map<string, string>()
  const body: Buffer[] = []
  socket.on('data', (chunk: Buffer) => {
    for (const e of parser.push(chunk)) {
      if (e.kind === 'request') vars = new Map(e.vars)
      else if (e.kind === 'body') body.push(Buffer.from(e.chunk))
      else reply(vars, Buffer.concat(body))
    }
  })
}

describe('uwsgi action: Gatehouse -> uWSGI 2.0 -> Flask', () => {
  let uwsgi: UwsgiPeer
  let gh: Running
  // Cleanups registered while the suite starts, run (last first) when it ends.
  const cleanups: (() => unknown)[] = []
  const hooks = { after: (fn: () => unknown) => void cleanups.push(fn) }
  after(async () => {
    for (const fn of cleanups.reverse()) await fn()
  })

  before(async () => {
    const dir = tempDir(hooks, 'gh-uwsgi-')
    uwsgi = await startUwsgi(hooks, dir)
    gh = await startGatehouse(hooks, {
      limits: { max_header_bytes: '128k' },
      routes: [
        { path: '/small', max_body_bytes: '64k', uwsgi: { pass: uwsgi.address } },
        {
          path: '/',
          max_body_bytes: '20MB',
          uwsgi: { pass: uwsgi.address, params: { APP_ENV: 'test', SERVER_NAME: 'configured.example' } },
        },
      ],
    })
  })

  test('GET: status, headers and body pass through', async () => {
    const res = await request(`${gh.origin}/hello`)
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['content-type'], 'text/html; charset=utf-8')
    assert.equal(res.headers['content-length'], '16')
    assert.equal(await res.body.text(), 'hello from flask')
  })

  test('HEAD: headers without a body', async () => {
    const res = await request(`${gh.origin}/hello`, { method: 'HEAD' })
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['content-length'], '16')
    assert.equal(await res.body.text(), '')
  })

  test('the app sees the uwsgi_params vars, HTTP_* headers and configured params, and nothing from request data outside HTTP_*', async () => {
    const res = await request(`${gh.origin}/environ?x=1%202`, {
      headers: {
        cookie: 'a=1',
        'x-custom': 'yes',
        'uwsgi-chdir': '/',
        x_under: 'dropped',
        proxy: 'http://evil:3128',
        'proxy-authorization': 'Basic cHJveHk6c2VjcmV0',
      },
    })
    assert.equal(res.statusCode, 200)
    const env = await json(res.body)
    assert.equal(env.REQUEST_METHOD, 'GET')
    assert.equal(env.QUERY_STRING, 'x=1%202')
    assert.equal(env.REQUEST_URI, '/environ?x=1%202')
    assert.equal(env.PATH_INFO, '/environ')
    assert.equal(env.SERVER_PROTOCOL, 'HTTP/1.1')
    assert.equal(env.REQUEST_SCHEME, 'http')
    assert.equal(env.REMOTE_ADDR, '127.0.0.1')
    assert.match(String(env.REMOTE_PORT), /^\d+$/)
    assert.equal(env.SERVER_PORT, String(gh.port))
    assert.equal(env.SERVER_NAME, 'configured.example')
    assert.equal(env.APP_ENV, 'test')
    assert.equal(env.HTTP_HOST, `127.0.0.1:${gh.port}`)
    assert.equal(env.HTTP_COOKIE, 'a=1')
    assert.equal(env.HTTP_X_CUSTOM, 'yes')
    assert.equal(env.HTTP_UWSGI_CHDIR, '/')
    assert.equal(env.HTTP_PROXY, undefined)
    assert.equal(env.HTTP_PROXY_AUTHORIZATION, undefined)
    assert.equal(env.HTTP_X_UNDER, undefined)
    assert.equal(env.CONTENT_LENGTH, '')
    assert.deepEqual(
      Object.keys(env).filter((k) => k.startsWith('UWSGI_')),
      [],
    )
  })

  test('POST: a form reaches Flask', async () => {
    const res = await request(`${gh.origin}/form`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'name=gate+house&n=1',
    })
    assert.equal(res.statusCode, 200)
    assert.deepEqual(await json(res.body), { name: 'gate house', n: '1' })
  })

  test('a 10 MB upload is streamed through intact', async () => {
    const data = randomBytes(10 * 1024 * 1024)
    const res = await request(`${gh.origin}/upload`, { method: 'PUT', body: data })
    assert.equal(res.statusCode, 200)
    assert.deepEqual(await json(res.body), {
      length: data.length,
      sha256: createHash('sha256').update(data).digest('hex'),
      content_length: String(data.length),
    })
  })

  test('a chunked upload is read first (memory, then a temp file) and sent with its CONTENT_LENGTH', async () => {
    for (const size of [1000, 3 * 1024 * 1024]) {
      const data = randomBytes(size)
      const res = await request(`${gh.origin}/upload`, {
        method: 'POST',
        body: Readable.from([data.subarray(0, 500), data.subarray(500)]),
      })
      assert.equal(res.statusCode, 200)
      assert.deepEqual(await json(res.body), {
        length: size,
        sha256: createHash('sha256').update(data).digest('hex'),
        content_length: String(size),
      })
    }
  })

  test('request bodies over the route limit are refused with 413, chunked or not', async () => {
    const chunked = await request(`${gh.origin}/small/upload`, {
      method: 'POST',
      body: Readable.from([randomBytes(40_000), randomBytes(40_000)]),
    })
    assert.equal(chunked.statusCode, 413)
    await chunked.body.dump()
    const declared = await request(`${gh.origin}/small/upload`, { method: 'POST', body: randomBytes(70_000) })
    assert.equal(declared.statusCode, 413)
    await declared.body.dump()
  })

  test('a streamed response (body until close) arrives whole', async () => {
    const res = await request(`${gh.origin}/stream?n=20000&size=100`)
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['content-length'], undefined)
    const body = await res.body.text()
    assert.equal(body.length, 2_000_000)
    assert.equal(body.slice(0, 8), '00000000')
    assert.equal(body.slice(-100, -92), '00019999')
  })

  test('a chunked reply written by the app is de-chunked and re-framed', async () => {
    const res = await request(`${gh.origin}/raw/chunked`)
    assert.equal(res.statusCode, 200)
    assert.equal(await res.body.text(), 'hello world')
  })

  test('cookies: each Set-Cookie is relayed, the Cookie header reaches the app', async () => {
    const res = await request(`${gh.origin}/cookies`, { headers: { cookie: 'x=9; y=8' } })
    assert.equal(res.statusCode, 200)
    const setCookie = res.headers['set-cookie']
    assert.ok(Array.isArray(setCookie))
    assert.equal(setCookie.length, 2)
    assert.match(setCookie[0]!, /^a=1; Path=\//)
    assert.match(setCookie[1]!, /^b=2; HttpOnly; Path=\//)
    assert.deepEqual(await json(res.body), { x: '9', y: '8' })
  })

  test('redirects are relayed, not followed', async () => {
    const res = await request(`${gh.origin}/redirect`)
    assert.equal(res.statusCode, 302)
    assert.equal(res.headers.location, '/hello')
    await res.body.dump()
  })

  test("an app exception: the app's 500 passes through", async () => {
    const res = await request(`${gh.origin}/boom`)
    assert.equal(res.statusCode, 500)
    assert.match(await res.body.text(), /Internal Server Error/)
  })

  test('an exception before start_response (uWSGI closes without a reply) is a 502', async () => {
    const res = await request(`${gh.origin}/raw/raise`)
    assert.equal(res.statusCode, 502)
    assert.equal(await res.body.text(), '502 Bad Gateway\n')
  })

  test('vars that cannot fit in 65535 bytes are refused with 431, never truncated', async () => {
    const res = await request(`${gh.origin}/environ`, { headers: { 'x-big': 'a'.repeat(70_000) } })
    assert.equal(res.statusCode, 431)
    await res.body.dump()
    // Near the limit it still goes through (uWSGI runs with --buffer-size 65535).
    const near = await request(`${gh.origin}/environ`, { headers: { 'x-big': 'a'.repeat(60_000) } })
    assert.equal(near.statusCode, 200)
    assert.equal(String((await json(near.body)).HTTP_X_BIG).length, 60_000)
  })

  test('library: uwsgiRequest() talks to uWSGI directly', async () => {
    const res = await uwsgiRequest(uwsgi.address, {
      method: 'POST',
      path: '/upload',
      headers: { host: 'lib.example' },
      body: 'abc',
    })
    assert.equal(res.status, 200)
    assert.equal(res.framing, 'length')
    assert.deepEqual(JSON.parse(await text(res.body)), {
      length: 3,
      sha256: createHash('sha256').update('abc').digest('hex'),
      content_length: '3',
    })
    const env = JSON.parse(
      await text(
        (await uwsgiRequest(uwsgi.address, { path: '/environ?q=1', headers: { host: 'lib.example:81' } }))
          .body,
      ),
    )
    assert.equal(env.SERVER_NAME, 'lib.example')
    assert.equal(env.SERVER_PORT, '81')
    assert.equal(env.QUERY_STRING, 'q=1')
  })
})

test('uWSGI stopped mid-request: 502, and the next request succeeds once it is back', async (t) => {
  const dir = tempDir(t, 'gh-uwsgi-stop-')
  let uwsgi = await startUwsgi(t, dir, { name: 'restart' })
  const gh = await startGatehouse(t, { routes: [{ path: '/', uwsgi: { pass: uwsgi.address } }] })
  const marker = join(dir, 'in-flight')
  const pending = request(`${gh.origin}/slow?marker=${encodeURIComponent(marker)}`)
  for (let i = 0; i < 400 && !existsSync(marker); i++) await new Promise((r) => setTimeout(r, 25))
  assert.ok(existsSync(marker), 'the request reached the worker')
  await uwsgi.stop()
  const res = await pending
  assert.equal(res.statusCode, 502)
  await res.body.dump()
  // Down: the socket file is gone or refuses connections.
  const down = await request(`${gh.origin}/hello`)
  assert.equal(down.statusCode, 502)
  await down.body.dump()
  uwsgi = await startUwsgi(t, dir, { name: 'restart' })
  const back = await request(`${gh.origin}/hello`)
  assert.equal(back.statusCode, 200)
  assert.equal(await back.body.text(), 'hello from flask')
})

describe('uwsgi client against misbehaving upstreams (raw sockets)', () => {
  test('nothing listening: GH_ERR_UPSTREAM_CONNECT, 502', async (t) => {
    const dir = tempDir(t)
    await assert.rejects(uwsgiRequest(`unix:${join(dir, 'missing.sock')}`), (err: unknown) => {
      return err instanceof GatehouseError && err.code === 'GH_ERR_UPSTREAM_CONNECT' && err.status === 502
    })
    const gh = await startGatehouse(t, {
      routes: [{ path: '/', uwsgi: { pass: `unix:${join(dir, 'missing.sock')}` } }],
    })
    const res = await request(`${gh.origin}/`)
    assert.equal(res.statusCode, 502)
    await res.body.dump()
  })

  test('an upstream that never answers: 504 after the timeout', async (t) => {
    const up = await fakeUpstream(t, (socket) => socket.resume())
    const gh = await startGatehouse(t, {
      routes: [{ path: '/', uwsgi: { pass: up.address, timeout: '300ms' } }],
    })
    const res = await request(`${gh.origin}/`)
    assert.equal(res.statusCode, 504)
    await res.body.dump()
    await assert.rejects(uwsgiRequest(up.address, { timeout: 200 }), (err: unknown) => {
      return err instanceof GatehouseError && err.code === 'GH_ERR_UPSTREAM_TIMEOUT'
    })
  })

  test('a reply that is not HTTP: 502', async (t) => {
    const up = await fakeUpstream(t, (socket) =>
      onRequest(socket, () => socket.end('this is not HTTP\r\n\r\n')),
    )
    const gh = await startGatehouse(t, { routes: [{ path: '/', uwsgi: { pass: up.address } }] })
    const res = await request(`${gh.origin}/`)
    assert.equal(res.statusCode, 502)
    await res.body.dump()
  })

  test('a reply cut short after its head: the client sees the body fail, not a complete response', async (t) => {
    const up = await fakeUpstream(t, (socket) =>
      onRequest(socket, () => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc')),
    )
    const gh = await startGatehouse(t, { routes: [{ path: '/', uwsgi: { pass: up.address } }] })
    const res = await request(`${gh.origin}/`)
    assert.equal(res.statusCode, 200)
    await assert.rejects(res.body.text())
  })

  test('hop-by-hop headers are not relayed; an upstream Content-Length frames the reply', async (t) => {
    const up = await fakeUpstream(t, (socket) =>
      onRequest(socket, (vars) =>
        socket.end(
          `HTTP/1.1 201 Made\r\nConnection: close, X-Hop\r\nKeep-Alive: timeout=1\r\nX-Hop: 1\r\nUpgrade: h2c\r\nX-Method: ${vars.get('REQUEST_METHOD')}\r\nContent-Length: 2\r\n\r\nok`,
        ),
      ),
    )
    const gh = await startGatehouse(t, { routes: [{ path: '/', uwsgi: { pass: up.address } }] })
    const res = await request(`${gh.origin}/`, { method: 'DELETE' })
    assert.equal(res.statusCode, 201)
    assert.equal(res.headers['x-method'], 'DELETE')
    assert.equal(res.headers['x-hop'], undefined)
    assert.equal(res.headers.upgrade, undefined)
    assert.equal(res.headers['keep-alive'], 'timeout=5') // Gatehouse's own, not the upstream's
    assert.equal(res.headers['content-length'], '2')
    assert.equal(await res.body.text(), 'ok')
  })

  test('with buffering off, a client that goes away mid-upload or mid-reply: the upstream connection is closed', async (t) => {
    // What the upstream saw: 'connected', then which connection ('upload', 'reply') closed.
    const closed: string[] = []
    const up = await fakeUpstream(t, (socket) => {
      let what = 'upload'
      onRequest(socket, () => {})
      socket.once('data', (c: Buffer) => {
        closed.push('connected')
        if (c.includes('/reply')) {
          what = 'reply'
          socket.write('HTTP/1.1 200 OK\r\n\r\nfirst part, and then nothing')
        }
      })
      socket.once('close', () => closed.push(what))
    })
    const gh = await startGatehouse(t, {
      routes: [
        { path: '/', uwsgi: { pass: up.address, request_buffering: false, response_buffering: false } },
      ],
    })
    const waitFor = async (what: string) => {
      for (let i = 0; i < 500 && !closed.includes(what); i++) await new Promise((r) => setTimeout(r, 10))
      assert.ok(closed.includes(what), `upstream saw: ${what}`)
    }
    const upload = connect(gh.port, '127.0.0.1')
    upload.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n' + 'u'.repeat(1000))
    await waitFor('connected')
    upload.destroy()
    await waitFor('upload')
    const reply = connect(gh.port, '127.0.0.1')
    reply.write('GET /reply HTTP/1.1\r\nHost: x\r\n\r\n')
    await once(reply, 'data')
    reply.destroy()
    await waitFor('reply')
  })

  test('backpressure on the reply: the upstream is held back while the body is not read', async (t) => {
    const total = 64 * 1024 * 1024
    let written = 0
    let finished = false
    const up = await fakeUpstream(t, (socket) =>
      onRequest(socket, () => {
        socket.write('HTTP/1.1 200 OK\r\n\r\n')
        const block = Buffer.alloc(64 * 1024, 120)
        const pump = () => {
          while (written < total) {
            written += block.length
            if (!socket.write(block)) {
              socket.once('drain', pump)
              return
            }
          }
          finished = true
          socket.end()
        }
        pump()
      }),
    )
    const res = await uwsgiRequest(up.address)
    // Not reading: the upstream fills the socket buffers and then has to wait.
    await new Promise((r) => setTimeout(r, 1000))
    assert.equal(finished, false)
    assert.ok(written < total / 2, `${written} bytes written while nobody read`)
    let received = 0
    for await (const chunk of res.body) received += (chunk as Buffer).length
    assert.equal(received, total)
  })

  test('backpressure on the request body: the source is paused while the upstream does not read', async (t) => {
    const total = 64 * 1024 * 1024
    let serverSocket: Socket | undefined
    const up = await fakeUpstream(t, (socket) => {
      serverSocket = socket
      socket.pause()
    })
    let produced = 0
    const source = new Readable({
      read() {
        if (produced >= total) {
          this.push(null)
          return
        }
        produced += 64 * 1024
        this.push(Buffer.alloc(64 * 1024, 121))
      },
    })
    const pending = uwsgiRequest(up.address, { method: 'PUT', body: source, contentLength: total })
    await new Promise((r) => setTimeout(r, 1000))
    assert.ok(produced < total / 2, `${produced} bytes produced while the upstream read nothing`)
    // Now the upstream reads everything and answers.
    let received = 0
    onRequest(serverSocket!, (_vars, body) => {
      received = body.length
      serverSocket!.end('HTTP/1.1 204 No Content\r\n\r\n')
    })
    serverSocket!.resume()
    const res = await pending
    assert.equal(res.status, 204)
    assert.equal(received, total)
  })
})
