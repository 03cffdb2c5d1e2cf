import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { connect } from 'node:net'
import { Readable } from 'node:stream'
import { text } from 'node:stream/consumers'
import { pipeline } from 'node:stream/promises'
import { test } from 'node:test'
import express from 'express'
import pino from 'pino'
import { request } from 'undici'
import { uwsgiRequest } from '../../../src/gateways/uwsgi/client.js'
import { encodeUwsgiPacket } from '../../../src/gateways/uwsgi/codec.js'
import { connectionInfo } from '../../../src/http/connection.js'
import {
  createUwsgiServer,
  type UwsgiServer,
  type UwsgiServerOptions,
} from '../../../src/gateways/uwsgi/server.js'
import { eventually } from '../../support/helpers.js'

type Handler = (req: IncomingMessage, res: ServerResponse) => void

async function serve(
  t: { after: (fn: () => Promise<void>) => void },
  handler: Handler,
  options: UwsgiServerOptions = {},
): Promise<{ server: UwsgiServer; address: string; port: number }> {
  const server = createUwsgiServer(handler, options)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const { port } = server.address() as { port: number }
  return { server, address: `127.0.0.1:${port}`, port }
}

/** Write raw bytes, collect the whole reply (uwsgi replies end with close). */
function exchange(port: number, data: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(data))
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', reject)
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')))
  })
}

const packet = (vars: [string, string][], body = '') =>
  Buffer.concat([encodeUwsgiPacket(vars), Buffer.from(body)])

const echo: Handler = (req, res) => {
  const hash = createHash('sha256')
  let length = 0
  req.on('data', (c: Buffer) => {
    hash.update(c)
    length += c.length
  })
  req.on('end', () => {
    res.setHeader('content-type', 'application/json')
    res.end(
      JSON.stringify({
        method: req.method,
        url: req.url,
        httpVersion: req.httpVersion,
        headers: req.headers,
        conn: connectionInfo(req),
        length,
        sha256: hash.digest('hex'),
      }),
    )
  })
}

test('createUwsgiServer runs a node:http handler: request, body and client as the vars describe them', async (t) => {
  const { address } = await serve(t, echo)
  const body = randomBytes(5 * 1024 * 1024)
  const res = await uwsgiRequest(address, {
    method: 'POST',
    path: '/x/y?z=1',
    headers: { host: 'app.example', cookie: ['a=1', 'b=2'], 'x-id': '7' },
    body,
    remoteAddress: '203.0.113.5',
    remotePort: 4321,
    serverPort: 8443,
    scheme: 'https',
  })
  assert.equal(res.status, 200)
  const got = JSON.parse(await text(res.body))
  assert.equal(got.method, 'POST')
  assert.equal(got.url, '/x/y?z=1')
  assert.equal(got.httpVersion, '1.1')
  assert.equal(got.headers.host, 'app.example')
  assert.equal(got.headers.cookie, 'a=1; b=2')
  assert.equal(got.headers['x-id'], '7')
  assert.equal(got.headers['content-length'], String(body.length))
  assert.deepEqual(got.conn, {
    remoteAddress: '203.0.113.5',
    remotePort: 4321,
    localAddress: '127.0.0.1',
    localPort: 8443,
    secure: true,
  })
  assert.equal(got.length, body.length)
  assert.equal(got.sha256, createHash('sha256').update(body).digest('hex'))
})

test('the same handler works unchanged in http.createServer and as an Express app', async (t) => {
  const http = createHttpServer(echo).listen(0, '127.0.0.1')
  await once(http, 'listening')
  t.after(() => new Promise<void>((resolve) => http.close(() => resolve())))
  const viaHttp = await request(`http://127.0.0.1:${(http.address() as { port: number }).port}/h`, {
    method: 'POST',
    body: 'abc',
  })
  assert.equal(((await viaHttp.body.json()) as { length: number }).length, 3)

  const app = express()
  app.use(express.json())
  app.post('/api/:id', (req, res) => {
    res.status(201).json({ id: req.params.id, body: req.body as unknown, ip: req.ip })
  })
  const { address } = await serve(t, app)
  const res = await uwsgiRequest(address, {
    method: 'POST',
    path: '/api/42',
    headers: { host: 'x', 'content-type': 'application/json' },
    body: JSON.stringify({ hello: 'world' }),
    remoteAddress: '198.51.100.1',
  })
  assert.equal(res.status, 201)
  assert.match(String(res.headers['content-type']), /application\/json/)
  const got = JSON.parse(await text(res.body))
  assert.deepEqual({ id: got.id, body: got.body }, { id: '42', body: { hello: 'world' } })
  // Express reads req.ip from req.socket, which is the web server's connection; the client
  // named by REMOTE_ADDR is connectionInfo(req) (docs/uwsgi.md).
  assert.equal(got.ip, '127.0.0.1')
})

test('replies are HTTP/1.1 ending with the connection: no chunked coding, HEAD and 204 without a body', async (t) => {
  const { port } = await serve(t, (req, res) => {
    if (req.url === '/empty') {
      res.writeHead(204)
      res.end()
      return
    }
    res.writeHead(200, ['Content-Type', 'text/plain', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2'])
    res.write('streamed ')
    res.end('body')
  })
  const get = await exchange(
    port,
    packet([
      ['REQUEST_METHOD', 'GET'],
      ['REQUEST_URI', '/'],
    ]),
  )
  assert.match(get, /^HTTP\/1\.1 200 OK\r\n/)
  assert.match(get, /\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n/)
  assert.doesNotMatch(get, /Transfer-Encoding/i)
  assert.ok(get.endsWith('\r\n\r\nstreamed body'), get)
  const head = await exchange(
    port,
    packet([
      ['REQUEST_METHOD', 'HEAD'],
      ['REQUEST_URI', '/'],
    ]),
  )
  assert.match(head, /^HTTP\/1\.1 200 OK\r\n/)
  assert.ok(head.endsWith('\r\n\r\n'), head)
  const empty = await exchange(
    port,
    packet([
      ['REQUEST_METHOD', 'GET'],
      ['REQUEST_URI', '/empty'],
    ]),
  )
  assert.match(empty, /^HTTP\/1\.1 204 No Content\r\n/)
  assert.ok(empty.endsWith('\r\n\r\n'))
})

test('a handler that throws gets a 500; the server keeps serving', async (t) => {
  const { port } = await serve(
    t,
    (req, res) => {
      if (req.url === '/throw') throw new Error('handler bug')
      res.end('fine')
    },
    { log: pino({ level: 'silent' }) },
  )
  const bad = await exchange(
    port,
    packet([
      ['REQUEST_METHOD', 'GET'],
      ['REQUEST_URI', '/throw'],
    ]),
  )
  assert.match(bad, /^HTTP\/1\.1 500 /)
  const good = await exchange(
    port,
    packet([
      ['REQUEST_METHOD', 'GET'],
      ['REQUEST_URI', '/'],
    ]),
  )
  assert.ok(good.endsWith('fine'))
})

test('backpressure on the response: the handler is held back while the web server does not read', async (t) => {
  const total = 64 * 1024 * 1024
  let produced = 0
  const { port } = await serve(t, (_req, res) => {
    const source = new Readable({
      read() {
        if (produced >= total) return void this.push(null)
        produced += 64 * 1024
        this.push(Buffer.alloc(64 * 1024, 122))
      },
    })
    void pipeline(source, res).catch(() => {})
  })
  const socket = connect(port, '127.0.0.1')
  t.after(() => void socket.destroy())
  socket.write(
    packet([
      ['REQUEST_METHOD', 'GET'],
      ['REQUEST_URI', '/big'],
    ]),
  )
  socket.pause()
  await new Promise((r) => setTimeout(r, 1000))
  assert.ok(produced < total / 2, `${produced} bytes produced while nobody read`)
  let received = 0
  socket.on('data', (c: Buffer) => (received += c.length))
  socket.resume()
  await once(socket, 'end')
  assert.ok(received > total, `${received} bytes received`)
  assert.equal(produced, total)
})

test('backpressure on the request body: the connection is paused while the handler does not read', async (t) => {
  const total = 64 * 1024 * 1024
  let release: (() => void) | undefined
  const { port } = await serve(t, (req, res) => {
    release = () => {
      let length = 0
      req.on('data', (c: Buffer) => (length += c.length))
      req.on('end', () => res.end(String(length)))
    }
  })
  const socket = connect(port, '127.0.0.1')
  t.after(() => void socket.destroy())
  const replyChunks: Buffer[] = []
  socket.on('data', (c: Buffer) => replyChunks.push(c))
  await once(socket, 'connect')
  socket.write(
    packet([
      ['REQUEST_METHOD', 'PUT'],
      ['REQUEST_URI', '/'],
      ['CONTENT_LENGTH', String(total)],
    ]),
  )
  let written = 0
  const block = Buffer.alloc(64 * 1024, 97)
  const pump = () => {
    while (written < total) {
      written += block.length
      if (!socket.write(block)) {
        socket.once('drain', pump)
        return
      }
    }
  }
  pump()
  await new Promise((r) => setTimeout(r, 1000))
  assert.ok(written < total / 2, `${written} bytes accepted while the handler read nothing`)
  release!()
  await once(socket, 'close')
  assert.ok(Buffer.concat(replyChunks).toString().endsWith(`\r\n\r\n${total}`))
})

test('the web server closing mid-body: the request is aborted, the response closes', async (t) => {
  let resolveSeen: (v: { aborted: boolean; error: string; closed: boolean }) => void
  const seen = new Promise<{ aborted: boolean; error: string; closed: boolean }>((r) => (resolveSeen = r))
  const { port } = await serve(t, (req, res) => {
    let aborted = false
    let error = ''
    req.on('aborted', () => (aborted = true))
    req.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? ''))
    req.resume()
    res.on('close', () => setImmediate(() => resolveSeen({ aborted, error, closed: !res.writableFinished })))
  })
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  socket.write(
    packet(
      [
        ['REQUEST_METHOD', 'POST'],
        ['REQUEST_URI', '/'],
        ['CONTENT_LENGTH', '1000'],
      ],
      'only part',
    ),
  )
  await new Promise((r) => setTimeout(r, 50))
  socket.destroy()
  assert.deepEqual(await seen, { aborted: true, error: 'ECONNRESET', closed: true })
})

test('an IncomingMessage body nobody reads is drained after the reply, and the connection ends cleanly', async (t) => {
  const { port } = await serve(t, (_req, res) => res.end('did not read it'))
  const reply = await exchange(
    port,
    packet(
      [
        ['REQUEST_METHOD', 'POST'],
        ['REQUEST_URI', '/'],
        ['CONTENT_LENGTH', '300000'],
      ],
      'z'.repeat(300_000),
    ),
  )
  assert.match(reply, /^HTTP\/1\.1 200 OK\r\n/)
  assert.ok(reply.endsWith('did not read it'))
})

test('a body that ends short or stalls: 400 / 408 before the response, the handler is told after it; a begun response is cut', async (t) => {
  const seen: string[] = []
  const { port } = await serve(
    t,
    (req, res) => {
      req.on('aborted', () => seen.push(`${req.url} aborted`))
      res.on('close', () => {
        seen.push(`${req.url} res closed`)
        // Too late: the listener answered; nothing the handler writes now is sent.
        if (req.url === '/late') res.end('late answer')
      })
      if (req.url === '/begun') res.write('partial ')
      req.resume()
    },
    { bodyTimeout: 300 },
  )
  const post = (uri: string) =>
    packet(
      [
        ['REQUEST_METHOD', 'POST'],
        ['REQUEST_URI', uri],
        ['CONTENT_LENGTH', '100'],
      ],
      'x'.repeat(10),
    )
  // The peer half-closes 90 bytes short.
  const short = await new Promise<string>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(post('/late')))
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', reject)
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')))
  })
  assert.match(short, /^HTTP\/1\.1 400 Bad Request\r\n/)
  assert.ok(short.endsWith('\r\n\r\n400 Bad Request: body ended 90 bytes short of CONTENT_LENGTH\n'), short)
  // The body stalls before the response.
  const stalled = await exchange(port, post('/stalled'))
  assert.match(stalled, /^HTTP\/1\.1 408 Request Timeout\r\n/)
  assert.ok(stalled.endsWith('no request body bytes for 300 ms (90 bytes missing)\n'), stalled)
  // The body stalls after the response began: the connection is closed short, no 408.
  const begun = await exchange(port, post('/begun'))
  assert.match(begun, /^HTTP\/1\.1 200 OK\r\n/)
  assert.ok(begun.endsWith('\r\n\r\npartial '), begun)
  // The handler hears of each (the server's side of a close may come after the client's).
  const all = ['/late', '/stalled', '/begun'].flatMap((uri) => [`${uri} aborted`, `${uri} res closed`])
  await eventually(
    () => all.every((e) => seen.includes(e)),
    `${all.join(', ')}; seen: ${seen.join(', ')}`,
    5000,
  )
})
