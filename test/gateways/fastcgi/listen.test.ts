/**
 * The FastCGI listener (--fastcgi-listen, createFastCGIServer) spoken to over raw sockets:
 * every record is written by the test, so bad input can be exactly what we want. nginx in
 * front is test/gateways/fastcgi/listen-nginx.test.ts; Debian's cgi-fcgi is the real client here.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { describe, test } from 'node:test'
import pino from 'pino'
import { applyFlags } from '../../../src/cli/flags.js'
import { validateConfig } from '../../../src/config.js'
import { GatehouseError } from '../../../src/core/errors.js'
import {
  decodeEndRequest,
  decodeNameValuePairs,
  encodeBeginRequest,
  encodeNameValuePairs,
  encodeParams,
  encodeRecord,
  encodeStream,
  type FcgiRecord,
  ProtocolStatus,
  RecordParser,
  RecordType,
  Role,
} from '../../../src/gateways/fastcgi/codec.js'
import { requestFromGatewayVars } from '../../../src/cgi-vars/request.js'
import { connectionInfo } from '../../../src/http/connection.js'
import {
  createFastCGIServer,
  type FastCGIServer,
  fastcgiRequestInfo,
} from '../../../src/gateways/fastcgi/server.js'
import { CLI, REPO_ROOT, startGatehouse, tempDir, stopServe } from '../../support/helpers.js'

type Pairs = [string, string][]

const GET = (uri: string, extra: Pairs = []): Pairs => [
  ['REQUEST_METHOD', 'GET'],
  ['REQUEST_URI', uri],
  ['SERVER_PROTOCOL', 'HTTP/1.1'],
  ['HTTP_HOST', 'example.com'],
  ['REMOTE_ADDR', '192.0.2.7'],
  ['REMOTE_PORT', '40000'],
  ['SERVER_PORT', '80'],
  ...extra,
]

/** A whole request: BEGIN_REQUEST, PARAMS, STDIN (split into `stdinChunk`-byte records), empty STDIN. */
function requestBytes(
  id: number,
  params: Pairs,
  options: { keepConn?: boolean; body?: Buffer; role?: number; stdinChunk?: number } = {},
): Buffer {
  const parts = [
    ...encodeBeginRequest(id, options.role ?? Role.RESPONDER, options.keepConn ?? false),
    ...encodeParams(id, params),
  ]
  const body = options.body ?? Buffer.alloc(0)
  const step = options.stdinChunk ?? 65528
  for (let off = 0; off < body.length; off += step)
    parts.push(...encodeStream(RecordType.STDIN, id, body.subarray(off, off + step)))
  parts.push(...encodeRecord(RecordType.STDIN, id))
  return Buffer.concat(parts)
}

/** One FastCGI conversation over a raw socket, record by record. */
class Peer {
  readonly records: FcgiRecord[] = []
  closed = false
  private readonly waiters: (() => void)[] = []
  private constructor(readonly socket: Socket) {
    const parser = new RecordParser((r) => {
      this.records.push({ ...r, content: Buffer.from(r.content) })
      this.wake()
    })
    socket.on('data', (c: Buffer) => parser.feed(c))
    socket.on('error', () => {})
    socket.on('close', () => {
      this.closed = true
      this.wake()
    })
  }

  static async open(target: number | string): Promise<Peer> {
    const socket = typeof target === 'number' ? connect(target, '127.0.0.1') : connect(target)
    await once(socket, 'connect')
    return new Peer(socket)
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w()
  }

  send(data: Buffer | Buffer[]): void {
    this.socket.write(Array.isArray(data) ? Buffer.concat(data) : data)
  }

  /** Wait until `done()` holds (or the connection closed: then it must hold anyway). */
  async until(done: () => boolean, what: string): Promise<void> {
    const deadline = setTimeout(() => this.socket.destroy(), 15_000)
    try {
      while (!done()) {
        if (this.closed) assert.fail(`connection closed before ${what}; got types ${this.types()}`)
        await new Promise<void>((resolve) => this.waiters.push(resolve))
      }
    } finally {
      clearTimeout(deadline)
    }
  }

  endOf(id: number): FcgiRecord | undefined {
    return this.records.find((r) => r.type === RecordType.END_REQUEST && r.requestId === id)
  }

  async end(id: number): Promise<{ appStatus: number; protocolStatus: number }> {
    await this.until(() => this.endOf(id) !== undefined, `END_REQUEST ${id}`)
    return decodeEndRequest(this.endOf(id)!.content)
  }

  async closedByServer(): Promise<void> {
    if (!this.closed) await once(this.socket, 'close')
  }

  stdout(id: number): Buffer {
    return Buffer.concat(
      this.records.filter((r) => r.type === RecordType.STDOUT && r.requestId === id).map((r) => r.content),
    )
  }

  types(): string {
    return this.records.map((r) => r.type).join(',')
  }

  /** The STDOUT of a request as a CGI response: status, header lines, body. */
  response(id: number): { status: number; head: string; body: Buffer } {
    const out = this.stdout(id)
    const end = out.indexOf('\r\n\r\n')
    assert.ok(end > 0, `no header block in ${JSON.stringify(out.toString('latin1').slice(0, 200))}`)
    const head = out.toString('latin1', 0, end)
    const m = /^Status: (\d{3})/.exec(head)
    assert.ok(m, `no Status line first: ${head}`)
    return { status: Number(m[1]), head, body: out.subarray(end + 4) }
  }

  close(): void {
    this.socket.destroy()
  }
}

/** A pino logger writing into an array, to check which error codes were logged. */
function captureLog(): { log: pino.Logger; codes: () => string[]; lines: string[] } {
  const lines: string[] = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString())
      cb()
    },
  })
  const log = pino({ level: 'debug' }, sink)
  return {
    log,
    lines,
    codes: () => lines.map((l) => (JSON.parse(l) as { code?: string }).code ?? '').filter(Boolean),
  }
}

async function listen(
  server: FastCGIServer,
  t: { after: (fn: () => Promise<void>) => void },
): Promise<number> {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  return (server.address() as { port: number }).port
}

/** Echo: method, url, headers, connection info, body length and digest, as JSON. */
function echo(req: IncomingMessage, res: ServerResponse): void {
  const hash = createHash('sha256')
  let length = 0
  req.on('data', (c: Buffer) => {
    length += c.length
    hash.update(c)
  })
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(
      JSON.stringify({
        method: req.method,
        url: req.url,
        headers: req.headers,
        conn: connectionInfo(req),
        length,
        sha256: hash.digest('hex'),
        info: fastcgiRequestInfo(req)?.role,
      }),
    )
  })
}

describe('FastCGI listener: responder requests over raw records', () => {
  test('Gatehouse routes answer over FastCGI: CGI header block, STDOUT, END_REQUEST; no KEEP_CONN closes', async (t) => {
    const dir = tempDir(t)
    const { gatehouse } = await startGatehouse(t, {
      fastcgi_listen: ['127.0.0.1:0', `unix:${join(dir, 'gh.sock')}`],
      routes: [
        {
          exact: '/who',
          max_body_bytes: '1MB',
          return: { body: '{remote_addr} {scheme} {host} {request_uri}' },
        },
        { exact: '/go', return: { status: 302, location: 'https://{host}/there' } },
        { exact: '/post-only', methods: ['POST'], return: { body: 'posted' } },
      ],
    })
    const [tcp, unix] = gatehouse.fastcgiAddresses()
    assert.ok(tcp?.port && unix?.path)
    for (const target of [tcp.port, unix.path]) {
      const peer = await Peer.open(target)
      peer.send(requestBytes(1, GET('/who?x=1', [['HTTPS', 'on']])))
      assert.deepEqual(await peer.end(1), { appStatus: 0, protocolStatus: ProtocolStatus.REQUEST_COMPLETE })
      const r = peer.response(1)
      assert.equal(r.status, 200)
      assert.match(r.head, /^Status: 200 OK\r\n/)
      assert.doesNotMatch(r.head, /\r\nconnection:/i)
      assert.equal(r.body.toString(), '192.0.2.7 https example.com /who?x=1')
      // The last STDOUT record is the empty end-of-stream one, before END_REQUEST.
      const last = peer.records.at(-2)!
      assert.equal(last.type, RecordType.STDOUT)
      assert.equal(last.content.length, 0)
      // Without FCGI_KEEP_CONN the application closes the connection.
      await peer.closedByServer()
    }

    const peer = await Peer.open(tcp.port)
    peer.send(requestBytes(1, GET('/go'), { keepConn: true }))
    await peer.end(1)
    const redirect = peer.response(1)
    assert.match(redirect.head, /^Status: 302 Found\r\n/)
    assert.match(redirect.head, /\r\nlocation: https:\/\/example\.com\/there(\r\n|$)/i)
    // KEEP_CONN: the connection stays and serves the next request (same id, as nginx does).
    peer.records.length = 0
    peer.send(requestBytes(1, GET('/post-only'), { keepConn: true }))
    await peer.end(1)
    assert.equal(peer.response(1).status, 405)
    assert.match(peer.response(1).head, /\r\nallow: POST/i)
    assert.equal(peer.closed, false)
    // A body over the route's limit: 413 before the body is read; the body that follows is
    // dropped and the kept connection serves the next request.
    peer.records.length = 0
    const tooBig = Buffer.alloc(2 * 1024 * 1024, 0x61)
    peer.send(
      requestBytes(
        1,
        [
          ['REQUEST_METHOD', 'POST'],
          ['REQUEST_URI', '/who'],
          ['HTTP_HOST', 'example.com'],
          ['CONTENT_LENGTH', String(tooBig.length)],
        ],
        { keepConn: true, body: tooBig },
      ),
    )
    await peer.end(1)
    assert.equal(peer.response(1).status, 413)
    peer.records.length = 0
    peer.send(requestBytes(1, GET('/who'), { keepConn: true }))
    await peer.end(1)
    assert.equal(peer.response(1).body.toString(), '192.0.2.7 http example.com /who')
    peer.close()
    assert.deepEqual(
      gatehouse.fastcgiStats().map((s) => s.requests),
      [5, 1],
    )
  })

  test('a body in many STDIN records, a 5 MB response with backpressure, a chunked response de-chunked', async (t) => {
    const big = randomBytes(5 * 1024 * 1024)
    const server = createFastCGIServer((req, res) => {
      if (req.url === '/big') {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': big.length })
        let off = 0
        const pump = () => {
          while (off < big.length) {
            const ok = res.write(big.subarray(off, off + 100_000))
            off += 100_000
            if (!ok) return void res.once('drain', pump)
          }
          res.end()
        }
        pump()
        return
      }
      if (req.url === '/chunked') {
        res.writeHead(200, { 'transfer-encoding': 'chunked', 'content-type': 'text/plain' })
        res.write('hello, ')
        res.addTrailers({ 'x-t': '1' })
        res.end('world')
        return
      }
      echo(req, res)
    })
    const port = await listen(server, t)
    const peer = await Peer.open(port)
    const body = randomBytes(300_000)
    peer.send(
      requestBytes(
        1,
        [
          ['REQUEST_METHOD', 'POST'],
          ['REQUEST_URI', '/up'],
          ['CONTENT_LENGTH', String(body.length)],
          ['CONTENT_TYPE', 'application/octet-stream'],
          ['HTTP_COOKIE', 'a=1'],
          ['HTTP_COOKIE', 'b=2'],
          ['SERVER_NAME', 'srv.example'],
        ],
        { keepConn: true, body, stdinChunk: 1000 },
      ),
    )
    await peer.end(1)
    const got = JSON.parse(peer.response(1).body.toString())
    assert.equal(got.method, 'POST')
    assert.equal(got.length, body.length)
    assert.equal(got.sha256, createHash('sha256').update(body).digest('hex'))
    assert.equal(got.headers['content-length'], String(body.length))
    assert.equal(got.headers.cookie, 'a=1; b=2')
    // No HTTP_HOST: the Host is SERVER_NAME.
    assert.equal(got.headers.host, 'srv.example')
    assert.equal(got.info, 'responder')

    peer.records.length = 0
    // Read nothing until the server has had to wait for us: backpressure, then everything.
    peer.socket.pause()
    peer.send(requestBytes(1, GET('/big'), { keepConn: true }))
    await new Promise((r) => setTimeout(r, 200))
    peer.socket.resume()
    await peer.end(1)
    const download = peer.response(1)
    assert.match(download.head, /\r\ncontent-length: 5242880/i)
    assert.ok(download.body.equals(big))
    for (const r of peer.records) assert.ok(r.content.length <= 65535)

    peer.records.length = 0
    peer.send(requestBytes(1, GET('/chunked'), { keepConn: true }))
    await peer.end(1)
    const chunked = peer.response(1)
    assert.doesNotMatch(chunked.head, /transfer-encoding/i)
    assert.equal(chunked.body.toString(), 'hello, world')
    peer.close()
  })

  test('hop-by-hop fields a handler sets stay out of the CGI header block (Upgrade and TE too)', async (t) => {
    const server = createFastCGIServer((_req, res) => {
      res.writeHead(200, {
        'content-type': 'text/plain',
        connection: 'keep-alive',
        'keep-alive': 'timeout=5',
        upgrade: 'h2c',
        te: 'trailers',
        'x-kept': 'yes',
      })
      res.end('ok')
    })
    const port = await listen(server, t)
    const peer = await Peer.open(port)
    peer.send(requestBytes(1, GET('/')))
    await peer.end(1)
    const { head, body } = peer.response(1)
    assert.match(head, /\r\nx-kept: yes/i)
    for (const name of ['connection', 'keep-alive', 'upgrade', 'te'])
      assert.doesNotMatch(head, new RegExp(`\r\n${name}:`, 'i'), name)
    assert.equal(body.toString(), 'ok')
    peer.close()
  })

  test('GET_VALUES is answered with what is enforced; unknown types get FCGI_UNKNOWN_TYPE and the connection goes on', async (t) => {
    const logs = captureLog()
    const server = createFastCGIServer(echo, { log: logs.log })
    const port = await listen(server, t)
    const ask = encodeRecord(
      RecordType.GET_VALUES,
      0,
      encodeNameValuePairs([
        ['FCGI_MAX_CONNS', ''],
        ['FCGI_MAX_REQS', ''],
        ['FCGI_MPXS_CONNS', ''],
        ['X_UNKNOWN', ''],
      ]),
    )
    const result = async (p: Peer) => {
      await p.until(() => p.records.some((r) => r.type === RecordType.GET_VALUES_RESULT), 'GET_VALUES_RESULT')
      const rec = p.records.find((r) => r.type === RecordType.GET_VALUES_RESULT)!
      assert.equal(rec.requestId, 0)
      return decodeNameValuePairs(rec.content)
    }
    const peer = await Peer.open(port)
    peer.send(ask)
    // No connection limit configured: only what is true, no multiplexing.
    assert.deepEqual(await result(peer), [['FCGI_MPXS_CONNS', '0']])

    // A management record of a type nobody defined, then one the application never receives.
    peer.send([...encodeRecord(42, 0, Buffer.from('xyz')), ...encodeRecord(RecordType.STDOUT, 0)])
    await peer.until(
      () => peer.records.filter((r) => r.type === RecordType.UNKNOWN_TYPE).length === 2,
      'UNKNOWN_TYPE x2',
    )
    const unknown = peer.records.filter((r) => r.type === RecordType.UNKNOWN_TYPE)
    assert.deepEqual(
      unknown.map((r) => [r.requestId, r.content[0]]),
      [
        [0, 42],
        [0, RecordType.STDOUT],
      ],
    )
    // The connection still serves requests.
    peer.send(requestBytes(1, GET('/after')))
    await peer.end(1)
    assert.equal(JSON.parse(peer.response(1).body.toString()).url, '/after')
    assert.ok(logs.codes().includes('GH_ERR_FASTCGI_UNKNOWN_TYPE'))

    const limited = createFastCGIServer(echo, { maxConnections: 5 })
    const limitedPeer = await Peer.open(await listen(limited, t))
    limitedPeer.send(ask)
    assert.deepEqual(await result(limitedPeer), [
      ['FCGI_MAX_CONNS', '5'],
      ['FCGI_MAX_REQS', '5'],
      ['FCGI_MPXS_CONNS', '0'],
    ])
    limitedPeer.close()
  })

  test('bad input closes the connection, is logged with its code, and the server keeps serving', async (t) => {
    const logs = captureLog()
    const server = createFastCGIServer(echo, { log: logs.log })
    const port = await listen(server, t)

    const cases: [string, Buffer, boolean][] = [
      ['garbage', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), false],
      ['random bytes', randomBytes(64).fill(0x37, 0, 1), false],
      ['wrong version', Buffer.concat(encodeBeginRequest(1, Role.RESPONDER, true)).fill(2, 0, 1), false],
      [
        'truncated record, then close',
        Buffer.concat(encodeBeginRequest(1, Role.RESPONDER, true)).subarray(0, 11),
        true,
      ],
      [
        'PARAMS truncated mid-pair at end of stream',
        Buffer.concat([
          ...encodeBeginRequest(1, Role.RESPONDER, true),
          ...encodeRecord(RecordType.PARAMS, 1, Buffer.from([5, 5, 0x41])),
          ...encodeRecord(RecordType.PARAMS, 1),
        ]),
        false,
      ],
      [
        'STDIN before the params ended',
        Buffer.concat([
          ...encodeBeginRequest(1, Role.RESPONDER, true),
          ...encodeRecord(RecordType.STDIN, 1, Buffer.from('x')),
        ]),
        false,
      ],
    ]
    for (const [what, bytes, endAfter] of cases) {
      const before = logs.codes().filter((c) => c === 'GH_ERR_FASTCGI_BAD_RECORD').length
      const peer = await Peer.open(port)
      peer.send(bytes)
      if (endAfter) peer.socket.end()
      await peer.closedByServer()
      assert.equal(
        logs.codes().filter((c) => c === 'GH_ERR_FASTCGI_BAD_RECORD').length,
        before + 1,
        `${what}: logged once`,
      )
      // A request that had begun gets END_REQUEST with a failure status before the close.
      const end = peer.endOf(1)
      if (end) assert.equal(decodeEndRequest(end.content).appStatus, 1, what)
      assert.equal(peer.stdout(1).length, 0, `${what}: no response`)
    }

    // No REQUEST_METHOD: the params describe no request; 400 on STDOUT.
    const noMethod = await Peer.open(port)
    noMethod.send(requestBytes(1, [['REQUEST_URI', '/x']], { keepConn: true }))
    await noMethod.end(1)
    assert.equal(noMethod.response(1).status, 400)
    await noMethod.closedByServer()

    // Still serving.
    const ok = await Peer.open(port)
    ok.send(requestBytes(1, GET('/still')))
    await ok.end(1)
    assert.equal(ok.response(1).status, 200)
  })

  test('a response that is not HTTP (an nph- script writing a CGI header) breaks only its connection', async (t) => {
    const dir = tempDir(t)
    writeFileSync(
      join(dir, 'nph-bad.sh'),
      "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nnot HTTP\\n'\n",
      {
        mode: 0o755,
      },
    )
    const { gatehouse } = await startGatehouse(t, {
      fastcgi_listen: ['127.0.0.1:0'],
      routes: [
        { path: '/cgi-bin', cgi: { root: dir } },
        { exact: '/ok', return: { body: 'ok' } },
      ],
    })
    const port = gatehouse.fastcgiAddresses()[0]!.port!
    const peer = await Peer.open(port)
    peer.send(requestBytes(1, GET('/cgi-bin/nph-bad.sh'), { keepConn: true }))
    await peer.closedByServer()
    assert.equal(peer.endOf(1), undefined)
    assert.equal(peer.stdout(1).length, 0)
    const next = await Peer.open(port)
    next.send(requestBytes(1, GET('/ok')))
    await next.end(1)
    assert.equal(next.response(1).body.toString(), 'ok')
  })

  test('a 70,000-byte param is refused with 431 and END_REQUEST, the connection closed', async (t) => {
    const logs = captureLog()
    const server = createFastCGIServer(echo, { log: logs.log })
    const port = await listen(server, t)
    const peer = await Peer.open(port)
    peer.send(requestBytes(1, GET('/big', [['HTTP_X_BIG', 'b'.repeat(70_000)]]), { keepConn: true }))
    assert.deepEqual(await peer.end(1), { appStatus: 1, protocolStatus: 0 })
    const r = peer.response(1)
    assert.equal(r.status, 431)
    assert.match(r.body.toString(), /FastCGI params exceed the limit/)
    await peer.closedByServer()
    assert.ok(logs.codes().includes('GH_ERR_FASTCGI_PARAMS_TOO_LARGE'))

    // Under the (raised) limit the same request passes: the pair straddles PARAMS records.
    const roomy = createFastCGIServer(echo, { maxParamsBytes: 128 * 1024 })
    const roomyPeer = await Peer.open(await listen(roomy, t))
    roomyPeer.send(requestBytes(1, GET('/big', [['HTTP_X_BIG', 'b'.repeat(70_000)]])))
    await roomyPeer.end(1)
    assert.equal(JSON.parse(roomyPeer.response(1).body.toString()).headers['x-big'].length, 70_000)
  })

  test('roles: FILTER and an unconfigured AUTHORIZER get FCGI_UNKNOWN_ROLE; a configured authorizer answers', async (t) => {
    const { gatehouse } = await startGatehouse(t, {
      fastcgi_listen: ['127.0.0.1:0'],
      routes: [{ path: '/', return: { body: 'x' } }],
    })
    const port = gatehouse.fastcgiAddresses()[0]!.port!
    const peer = await Peer.open(port)
    peer.send(requestBytes(1, GET('/'), { role: Role.FILTER, keepConn: true }))
    assert.deepEqual(await peer.end(1), { appStatus: 0, protocolStatus: ProtocolStatus.UNKNOWN_ROLE })
    peer.records.length = 0
    peer.send(requestBytes(2, GET('/'), { role: Role.AUTHORIZER, keepConn: false }))
    assert.deepEqual(await peer.end(2), { appStatus: 0, protocolStatus: ProtocolStatus.UNKNOWN_ROLE })
    assert.equal(peer.stdout(2).length, 0)
    await peer.closedByServer()

    const server = createFastCGIServer(echo, {
      authorizer: (req, res) => {
        const info = fastcgiRequestInfo(req)
        if (req.headers.authorization === 'Bearer good') {
          res.writeHead(200, { 'variable-user': 'alice', 'variable-role': info?.role ?? '' })
          res.end()
        } else {
          res.writeHead(403, { 'content-type': 'text/plain' })
          res.end('no')
        }
      },
    })
    const auth = await Peer.open(await listen(server, t))
    auth.send(
      requestBytes(1, GET('/secret', [['HTTP_AUTHORIZATION', 'Bearer good']]), {
        role: Role.AUTHORIZER,
        keepConn: true,
      }),
    )
    await auth.end(1)
    const allowed = auth.response(1)
    assert.equal(allowed.status, 200)
    assert.match(allowed.head, /\r\nvariable-user: alice\r\n/i)
    assert.match(allowed.head, /\r\nvariable-role: authorizer(\r\n|$)/i)
    auth.records.length = 0
    auth.send(requestBytes(1, GET('/secret'), { role: Role.AUTHORIZER }))
    await auth.end(1)
    assert.equal(auth.response(1).status, 403)
    assert.equal(auth.response(1).body.toString(), 'no')
  })

  test('a second request id while one runs gets FCGI_CANT_MPX_CONN; the first completes', async (t) => {
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    const logs = captureLog()
    const server = createFastCGIServer(
      (req, res) => {
        void held.then(() => res.end(`done ${req.url}`))
      },
      { log: logs.log },
    )
    const peer = await Peer.open(await listen(server, t))
    peer.send(requestBytes(1, GET('/first'), { keepConn: true }))
    peer.send(requestBytes(2, GET('/second'), { keepConn: true }))
    assert.deepEqual(await peer.end(2), { appStatus: 0, protocolStatus: ProtocolStatus.CANT_MPX_CONN })
    assert.equal(peer.endOf(1), undefined)
    release()
    await peer.end(1)
    assert.equal(peer.response(1).body.toString(), 'done /first')
    assert.equal(peer.stdout(2).length, 0)
    assert.ok(logs.codes().includes('GH_ERR_FASTCGI_MPX'))
    peer.close()
  })

  test('ABORT_REQUEST and a web server that disconnects free the request: req and res see it', async (t) => {
    const seen: { url: string; events: string[] }[] = []
    const started: (() => void)[] = []
    const server = createFastCGIServer((req, res) => {
      const entry = { url: req.url!, events: [] as string[] }
      seen.push(entry)
      req.on('aborted', () => entry.events.push('req aborted'))
      req.on('close', () => entry.events.push('req close'))
      res.on('close', () => entry.events.push(`res close finished=${res.writableFinished}`))
      req.resume()
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('partial')
      started.shift()?.()
      // Never ends: only the web server can end this request.
    })
    const port = await listen(server, t)
    const startedOnce = () => new Promise<void>((r) => started.push(r))

    // ABORT_REQUEST in the middle of a body: req 'aborted', res 'close', END_REQUEST, and the
    // kept connection serves another request.
    const peer = await Peer.open(port)
    const whenStarted = startedOnce()
    peer.send([
      ...encodeBeginRequest(1, Role.RESPONDER, true),
      ...encodeParams(1, [
        ['REQUEST_METHOD', 'POST'],
        ['REQUEST_URI', '/abort-me'],
        ['CONTENT_LENGTH', '100'],
      ]),
      ...encodeStream(RecordType.STDIN, 1, Buffer.alloc(10)),
    ])
    await whenStarted
    await peer.until(() => peer.stdout(1).length > 0, 'partial STDOUT')
    peer.send(encodeRecord(RecordType.ABORT_REQUEST, 1))
    await peer.end(1)
    await new Promise((r) => setImmediate(r))
    assert.deepEqual(seen[0]!.events.sort(), ['req aborted', 'req close', 'res close finished=false'])
    assert.equal(peer.closed, false)
    assert.equal(server.connectionsAccepted, 1)

    // The web server goes away mid-response.
    const whenStarted2 = startedOnce()
    peer.send(requestBytes(1, GET('/disconnect'), { keepConn: true }))
    await whenStarted2
    // nginx closes the connection (FIN first) when its client goes away: that frees the request.
    peer.socket.end()
    const deadline = Date.now() + 10_000
    while (!seen[1]!.events.some((e) => e.startsWith('res close'))) {
      assert.ok(Date.now() < deadline, `request not freed: ${seen[1]!.events.join()}`)
      await new Promise((r) => setTimeout(r, 10))
    }
    assert.ok(seen[1]!.events.includes('res close finished=false'), seen[1]!.events.join())
    assert.ok(seen[1]!.events.includes('req close'), seen[1]!.events.join())
  })

  test('PARAMS that do not arrive in time: 408 and END_REQUEST', async (t) => {
    const logs = captureLog()
    const server = createFastCGIServer(echo, { headerTimeout: 200, log: logs.log })
    const peer = await Peer.open(await listen(server, t))
    peer.send([
      ...encodeBeginRequest(1, Role.RESPONDER, true),
      ...encodeRecord(RecordType.PARAMS, 1, Buffer.from([1, 1, 0x41, 0x42])),
    ])
    await peer.end(1)
    assert.equal(peer.response(1).status, 408)
    await peer.closedByServer()
    assert.ok(logs.codes().includes('GH_ERR_HEADER_TIMEOUT'))
  })

  test('STDIN that ends short of CONTENT_LENGTH: 400 GH_ERR_BODY_INCOMPLETE; the connection and others go on', async (t) => {
    const logs = captureLog()
    const server = createFastCGIServer(echo, { log: logs.log })
    const port = await listen(server, t)
    const peer = await Peer.open(port)
    peer.send([
      ...encodeBeginRequest(1, Role.RESPONDER, true),
      ...encodeParams(1, [
        ['REQUEST_METHOD', 'POST'],
        ['REQUEST_URI', '/short'],
        ['CONTENT_LENGTH', '100'],
      ]),
      ...encodeStream(RecordType.STDIN, 1, Buffer.alloc(40)),
      ...encodeRecord(RecordType.STDIN, 1),
    ])
    assert.deepEqual(await peer.end(1), { appStatus: 0, protocolStatus: ProtocolStatus.REQUEST_COMPLETE })
    const reply = peer.response(1)
    assert.equal(reply.status, 400)
    assert.match(reply.body.toString(), /STDIN ended 60 bytes short/)
    assert.ok(logs.codes().includes('GH_ERR_BODY_INCOMPLETE'))
    // Another connection is served, and so is the next request on this one.
    const other = await Peer.open(port)
    other.send(requestBytes(1, GET('/other')))
    await other.end(1)
    assert.equal(other.response(1).status, 200)
    peer.send(requestBytes(2, GET('/next'), { keepConn: true }))
    await peer.end(2)
    assert.equal(peer.response(2).status, 200)
    assert.equal(peer.closed, false)
    peer.close()
  })

  test('a body stalled past the body timeout: 408 GH_ERR_BODY_TIMEOUT; other clients served meanwhile', async (t) => {
    const logs = captureLog()
    const server = createFastCGIServer(echo, { bodyTimeout: 300, log: logs.log })
    const port = await listen(server, t)
    const peer = await Peer.open(port)
    peer.send([
      ...encodeBeginRequest(1, Role.RESPONDER, true),
      ...encodeParams(1, [
        ['REQUEST_METHOD', 'POST'],
        ['REQUEST_URI', '/stalled'],
        ['CONTENT_LENGTH', '100'],
      ]),
      ...encodeStream(RecordType.STDIN, 1, Buffer.alloc(10)),
    ])
    // While it stalls, another client is served.
    const other = await Peer.open(port)
    other.send(requestBytes(1, GET('/other'), { body: Buffer.alloc(0) }))
    await other.end(1)
    assert.equal(other.response(1).status, 200)
    assert.equal(peer.endOf(1), undefined)
    await peer.end(1)
    assert.equal(peer.response(1).status, 408)
    assert.ok(logs.codes().includes('GH_ERR_BODY_TIMEOUT'))
    // The rest of the stalled body, arriving late, is ignored; the kept connection serves on.
    peer.send([...encodeStream(RecordType.STDIN, 1, Buffer.alloc(90)), ...encodeRecord(RecordType.STDIN, 1)])
    peer.send(requestBytes(2, GET('/next'), { keepConn: true }))
    await peer.end(2)
    assert.equal(peer.response(2).status, 200)
    peer.close()
  })

  test('TCP clients outside fastcgi_allow are refused on accept; the allow-list parses CIDRs', async (t) => {
    const logs = captureLog()
    const server = createFastCGIServer(echo, { allow: ['10.0.0.0/8', 'fd00::/8'], log: logs.log })
    const peer = await Peer.open(await listen(server, t))
    peer.send(requestBytes(1, GET('/')))
    await peer.closedByServer()
    assert.equal(peer.records.length, 0)
    assert.equal(server.connectionsAccepted, 0)
    assert.ok(logs.lines.some((l) => /address not in fastcgi_allow/.test(l)))

    server.setAllow(['127.0.0.0/8'])
    const allowed = await Peer.open((server.address() as { port: number }).port)
    allowed.send(requestBytes(1, GET('/')))
    await allowed.end(1)
    assert.equal(allowed.response(1).status, 200)

    assert.throws(
      () => validateConfig({ fastcgi_allow: ['10.0.0.0/33'] }),
      (err: unknown) => {
        return err instanceof GatehouseError && err.problems.some((p) => /fastcgi_allow/.test(p))
      },
    )
    assert.throws(() => validateConfig({ fastcgi_allow: ['example.com'] }), GatehouseError)
    assert.deepEqual(validateConfig({}).fastcgi_allow, ['127.0.0.1', '::1'])
  })
})

describe('FastCGI listener: reload and stop', () => {
  test('reload opens new fastcgi_listen addresses and closes removed ones', async (t) => {
    const dir = tempDir(t)
    const routes = [{ path: '/', return: { body: 'ok' } }]
    const { gatehouse } = await startGatehouse(t, { fastcgi_listen: [`unix:${join(dir, 'a.sock')}`], routes })
    await gatehouse.reload({
      listen: ['127.0.0.1:0'],
      fastcgi_listen: [`unix:${join(dir, 'b.sock')}`],
      routes,
    })
    assert.deepEqual(
      gatehouse.fastcgiAddresses().map((a) => a.path),
      [join(dir, 'b.sock')],
    )
    const peer = await Peer.open(join(dir, 'b.sock'))
    peer.send(requestBytes(1, GET('/')))
    await peer.end(1)
    assert.equal(peer.response(1).body.toString(), 'ok')
  })

  test('close(): a request in flight on a kept connection completes, then the connection is closed', async (t) => {
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    let started!: () => void
    const began = new Promise<void>((r) => (started = r))
    const server = createFastCGIServer((_req, res) => {
      started()
      void held.then(() => res.end('finished'))
    })
    const port = await listen(server, t)
    const busy = await Peer.open(port)
    const idle = await Peer.open(port)
    busy.send(requestBytes(1, GET('/slow'), { keepConn: true }))
    await began
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    server.closeIdleConnections()
    await idle.closedByServer()
    assert.equal(busy.closed, false)
    release()
    await busy.end(1)
    assert.equal(busy.response(1).body.toString(), 'finished')
    await busy.closedByServer()
    await closed
  })
})

describe('FastCGI listener: configuration and CLI', () => {
  test('--fastcgi-listen and --fastcgi-allow map onto fastcgi_listen / fastcgi_allow', () => {
    const input = applyFlags(
      {},
      { fastcgiListen: ['9000', 'unix:./gh.sock'], fastcgiAllow: ['10.0.0.0/8'], static: ['/srv'] },
      '/work',
    )
    const config = validateConfig(input)
    assert.deepEqual(config.fastcgi_listen, ['9000', 'unix:/work/gh.sock'])
    assert.deepEqual(config.fastcgi_allow, ['10.0.0.0/8'])
    assert.equal(config.fastcgi_max_params_bytes, 65535)
    assert.equal(config.fastcgi_idle_timeout, 75_000)
    assert.throws(() => validateConfig({ fastcgi_listen: 'nonsense' }), GatehouseError)
    assert.throws(() => validateConfig({ fastcgi_max_params_bytes: '2MB' }), GatehouseError)
  })

  test('CGI-style vars -> request: REQUEST_URI, else SCRIPT_NAME + PATH_INFO + QUERY_STRING', () => {
    const code = 'GH_ERR_FASTCGI_BAD_RECORD'
    const fallback = requestFromGatewayVars(
      [
        ['REQUEST_METHOD', 'GET'],
        ['SCRIPT_NAME', '/app'],
        ['PATH_INFO', '/a b'],
        ['QUERY_STRING', 'q=1'],
        ['SERVER_NAME', 'h.example'],
        ['SERVER_PORT', '8080'],
      ],
      code,
    )
    assert.equal(fallback.url, '/app/a%20b?q=1')
    assert.deepEqual(fallback.rawHeaders, ['host', 'h.example'])
    assert.equal(fallback.serverPort, 8080)
    assert.throws(
      () =>
        requestFromGatewayVars(
          [
            ['REQUEST_METHOD', 'GET'],
            ['CONTENT_LENGTH', '12x'],
          ],
          code,
        ),
      (err: unknown) => err instanceof GatehouseError && err.code === code,
    )
  })
})

/** Run Debian's cgi-fcgi with an explicit environment; its stdout is the CGI response. */
function cgiFcgi(
  address: string,
  env: Record<string, string>,
  stdin: Buffer = Buffer.alloc(0),
): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/cgi-fcgi', ['-bind', '-connect', address], {
      env,
      stdio: ['pipe', 'pipe', 'inherit'],
    })
    let out = ''
    child.stdout.setEncoding('latin1')
    child.stdout.on('data', (d: string) => (out += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code: code ?? -1, out }))
    child.stdin.end(stdin)
  })
}

describe('FastCGI listener: Debian cgi-fcgi (libfcgi) as the client', () => {
  test('the CLI: gatehouse serve --fastcgi-listen 127.0.0.1:0 --static DIR, asked by cgi-fcgi', async (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'hello.txt'), 'hello from the CLI\n')
    const help = spawnSync(process.execPath, [CLI, 'serve', '--help'], { encoding: 'utf8' })
    assert.match(help.stdout, /--fastcgi-listen <address>/)
    assert.match(help.stdout, /--fastcgi-allow <cidr>/)
    const child = spawn(
      process.execPath,
      [CLI, 'serve', '--listen', '127.0.0.1:0', '--fastcgi-listen', '127.0.0.1:0', '--static', dir],
      { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
    )
    t.after(() => stopServe(child))
    let stderr = ''
    const address = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not listening:\n${stderr}`)), 15_000)
      child.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString()
        const m = /"fastcgi_listen":"([^"]+)","msg":"listening for FastCGI"/.exec(stderr)
        if (m) {
          clearTimeout(timer)
          resolve(m[1]!)
        }
      })
    })
    const r = await cgiFcgi(address, {
      REQUEST_METHOD: 'GET',
      REQUEST_URI: '/hello.txt',
      SERVER_NAME: 'localhost',
    })
    assert.equal(r.code, 0)
    assert.match(r.out, /^Status: 200 OK\r\n/)
    assert.match(r.out, /\r\ncontent-type: text\/plain; charset=utf-8\r\n/i)
    assert.ok(r.out.endsWith('\r\n\r\nhello from the CLI\n'))
    child.kill('SIGTERM')
    await once(child, 'exit')
  })

  test('GET and POST, over TCP and a Unix socket, into Gatehouse routes and a library handler', async (t) => {
    const dir = tempDir(t)
    const { gatehouse } = await startGatehouse(t, {
      fastcgi_listen: ['127.0.0.1:0', `unix:${join(dir, 'gh.sock')}`],
      routes: [{ exact: '/who', return: { body: '{remote_addr} {host} {request_uri}\n' } }],
    })
    const [tcp, unix] = gatehouse.fastcgiAddresses()
    for (const address of [`127.0.0.1:${tcp!.port}`, unix!.path!]) {
      const r = await cgiFcgi(address, {
        REQUEST_METHOD: 'GET',
        REQUEST_URI: '/who?a=1',
        SERVER_NAME: 'cgi.example',
        SERVER_PORT: '80',
        REMOTE_ADDR: '198.51.100.4',
      })
      assert.equal(r.code, 0)
      assert.match(r.out, /^Status: 200 OK\r\n/)
      assert.ok(r.out.endsWith('\r\n\r\n198.51.100.4 cgi.example /who?a=1\n'), r.out)
    }
    // A REMOTE_ADDR that is not an address (here one that would forge an access-log line) is
    // refused; the listener goes on serving.
    const forged = await cgiFcgi(`127.0.0.1:${tcp!.port}`, {
      REQUEST_METHOD: 'GET',
      REQUEST_URI: '/who',
      SERVER_NAME: 'cgi.example',
      REMOTE_ADDR: '198.51.100.4\r\n203.0.113.1 - - [forged]',
    })
    assert.match(forged.out, /^Status: 400 /, forged.out)
    assert.ok(!forged.out.includes('\r\n203.0.113.1'), 'named escaped, never as a line of its own')

    const server = createFastCGIServer(echo)
    const port = await listen(server, t)
    const body = randomBytes(200_000)
    const r = await cgiFcgi(
      `127.0.0.1:${port}`,
      {
        REQUEST_METHOD: 'POST',
        SCRIPT_NAME: '/form',
        PATH_INFO: '/x',
        QUERY_STRING: 'k=v',
        CONTENT_LENGTH: String(body.length),
        CONTENT_TYPE: 'application/octet-stream',
        SERVER_NAME: 'cgi.example',
      },
      body,
    )
    assert.equal(r.code, 0)
    const json = JSON.parse(r.out.slice(r.out.indexOf('\r\n\r\n') + 4))
    assert.equal(json.url, '/form/x?k=v')
    assert.equal(json.length, body.length)
    assert.equal(json.sha256, createHash('sha256').update(body).digest('hex'))
  })
})
