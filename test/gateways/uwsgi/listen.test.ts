import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { connect, createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import { text } from 'node:stream/consumers'
import { describe, test, type TestContext } from 'node:test'
import { request } from 'undici'
import { applyFlags } from '../../../src/cli/flags.js'
import { validateConfig } from '../../../src/config.js'
import { GatehouseError } from '../../../src/core/errors.js'
import { uwsgiRequest } from '../../../src/gateways/uwsgi/client.js'
import {
  encodeUwsgiHeader,
  encodeUwsgiPacket,
  UwsgiRequestParser,
} from '../../../src/gateways/uwsgi/codec.js'
import {
  CLI,
  eventually,
  FIXTURES,
  logLines,
  PYTHON,
  REPO_ROOT,
  startGatehouse,
  tempDir,
} from '../../support/helpers.js'

type Vars = [string, string][]
const packet = (vars: Vars, body = '') => Buffer.concat([encodeUwsgiPacket(vars), Buffer.from(body)])
const get = (uri: string, extra: Vars = []): Vars => [
  ['REQUEST_METHOD', 'GET'],
  ['REQUEST_URI', uri],
  ['SERVER_PROTOCOL', 'HTTP/1.1'],
  ['HTTP_HOST', 'example.com'],
  ...extra,
]

interface Reply {
  text: string
  status: number | null
  /** The server closed the connection without writing anything. */
  dropped: boolean
}

/** Raw bytes to a uwsgi listener (TCP port or Unix path); the reply until the server closes. */
function send(
  target: number | string,
  data: Buffer | Buffer[],
  options: { end?: boolean } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const socket: Socket = typeof target === 'number' ? connect(target, '127.0.0.1') : connect(target)
    const chunks: Buffer[] = []
    const timer = setTimeout(() => socket.destroy(new Error('no reply within 10 s')), 10_000)
    socket.on('connect', () => {
      for (const d of Array.isArray(data) ? data : [data]) socket.write(d)
      if (options.end) socket.end()
    })
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ECONNRESET' && err.code !== 'EPIPE') reject(err)
    })
    socket.on('close', () => {
      clearTimeout(timer)
      const text = Buffer.concat(chunks).toString('latin1')
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text)
      resolve({ text, status: m ? Number(m[1]) : null, dropped: text === '' })
    })
  })
}

describe('uwsgi_listen: requests over uwsgi take the same path as HTTP ones', () => {
  test('static files, return routes, 404 and 405 over uwsgi; the client is REMOTE_ADDR', async (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'a.txt'), 'file A')
    const { gatehouse } = await startGatehouse(t, {
      uwsgi_listen: ['127.0.0.1:0', `unix:${join(dir, 'gh.sock')}`],
      routes: [
        { exact: '/who', return: { body: '{remote_addr} {scheme} {host} {request_uri}' } },
        { exact: '/post-only', methods: ['POST'], return: { body: 'posted' } },
        { path: '/files', static: { root: dir } },
      ],
    })
    const [tcp, unix] = gatehouse.uwsgiAddresses()
    assert.ok(tcp?.port && unix?.path)

    const file = await send(tcp.port, packet(get('/files/a.txt')))
    assert.equal(file.status, 200)
    assert.match(file.text, /\r\nContent-Type: text\/plain; charset=utf-8\r\n/i)
    assert.match(file.text, /\r\nETag: "/i)
    assert.ok(file.text.endsWith('\r\n\r\nfile A'))

    const who = await send(
      unix.path,
      packet(
        get('/who?q=1', [
          ['REMOTE_ADDR', '198.51.100.4'],
          ['REMOTE_PORT', '5555'],
          ['HTTPS', 'on'],
        ]),
      ),
    )
    assert.ok(who.text.endsWith('\r\n\r\n198.51.100.4 https example.com /who?q=1'), who.text)

    assert.equal((await send(tcp.port, packet(get('/missing')))).status, 404)
    const wrongMethod = await send(tcp.port, packet(get('/post-only')))
    assert.equal(wrongMethod.status, 405)
    assert.match(wrongMethod.text, /\r\nAllow: POST\r\n/i)

    // The uwsgi client and the listener understand each other.
    const viaClient = await uwsgiRequest(tcp.address, { path: '/files/a.txt', headers: { host: 'x' } })
    assert.equal(viaClient.status, 200)
    assert.equal(await text(viaClient.body), 'file A')
  })

  test('bad input is answered with an HTTP error that says what was wrong, and the listener keeps serving', async (t) => {
    const { gatehouse } = await startGatehouse(t, {
      uwsgi_listen: ['127.0.0.1:0'],
      uwsgi_max_vars_bytes: '4k',
      routes: [{ path: '/', return: { body: 'ok' } }],
    })
    const port = gatehouse.uwsgiAddresses()[0]!.port!
    const cases: [string, Buffer, { end?: boolean }, number, RegExp][] = [
      [
        'plain HTTP',
        Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
        {},
        400,
        /plain HTTP sent to a uwsgi socket/,
      ],
      [
        'garbage',
        Buffer.from('\x99\x12garbage garbage', 'latin1'),
        {},
        501,
        /unsupported uwsgi modifier1: 153/,
      ],
      ['garbage vars', Buffer.from([0, 6, 0, 0, 9, 0, 1, 2, 3, 4]), {}, 400, /var name runs past the block/],
      ['truncated header', Buffer.from([0, 10]), { end: true }, 400, /truncated header/],
      [
        'truncated vars',
        encodeUwsgiPacket(get('/')).subarray(0, 20),
        { end: true },
        400,
        /truncated vars block/,
      ],
      [
        'oversize block',
        encodeUwsgiHeader({ modifier1: 0, datasize: 5000, modifier2: 0 }),
        {},
        431,
        /uwsgi vars block exceeds the limit: 5000 > 4096/,
      ],
      ['modifier1 5 (PSGI)', encodeUwsgiPacket(get('/'), { modifier1: 5 }), {}, 501, /modifier1/],
      ['no REQUEST_METHOD', encodeUwsgiPacket([['REQUEST_URI', '/']]), {}, 400, /no REQUEST_METHOD/],
      [
        'bad CONTENT_LENGTH',
        encodeUwsgiPacket([...get('/'), ['CONTENT_LENGTH', 'ten']]),
        {},
        400,
        /CONTENT_LENGTH/,
      ],
      ['path leaving the root', encodeUwsgiPacket(get('/../etc/passwd')), {}, 400, /^HTTP\/1\.1 400/],
    ]
    for (const [name, bytes, options, status, message] of cases) {
      const reply = await send(port, bytes, options)
      assert.equal(reply.status, status, `${name}: ${reply.text}`)
      assert.match(reply.text, message, name)
    }
    // A block just under the limit is fine.
    const near = await send(port, packet(get('/', [['HTTP_X_PAD', 'p'.repeat(3900)]])))
    assert.equal(near.status, 200)
    assert.ok(near.text.endsWith('ok'))
  })

  test('a request that does not arrive within limits.header_timeout gets 408', async (t) => {
    const { gatehouse } = await startGatehouse(t, {
      uwsgi_listen: ['127.0.0.1:0'],
      limits: { header_timeout: '300ms' },
      routes: [{ path: '/', return: { body: 'ok' } }],
    })
    const reply = await send(gatehouse.uwsgiAddresses()[0]!.port!, Buffer.from([0, 200]))
    assert.equal(reply.status, 408)
  })

  test('TCP peers outside uwsgi_allow are dropped without a reply; Unix-socket peers are let in', async (t) => {
    const dir = tempDir(t)
    const { gatehouse } = await startGatehouse(t, {
      uwsgi_listen: ['127.0.0.1:0', `unix:${join(dir, 'allowed.sock')}`],
      uwsgi_allow: ['192.0.2.0/24', '2001:db8::1'],
      routes: [{ path: '/', return: { body: 'ok' } }],
    })
    const [tcp, unix] = gatehouse.uwsgiAddresses()
    const refused = await send(tcp!.port!, packet(get('/')))
    assert.equal(refused.dropped, true)
    const allowed = await send(unix!.path!, packet(get('/')))
    assert.equal(allowed.status, 200)
    // Loopback is the default.
    const { gatehouse: open } = await startGatehouse(t, {
      uwsgi_listen: ['127.0.0.1:0'],
      routes: [{ path: '/', return: { body: 'ok' } }],
    })
    assert.equal((await send(open.uwsgiAddresses()[0]!.port!, packet(get('/')))).status, 200)
  })

  test('close() lets an in-flight uwsgi request finish, then stops the listener', async (t) => {
    let answer: (() => void) | undefined
    const upstream = createServer((socket) => {
      const parser = new UwsgiRequestParser()
      socket.on('data', (c: Buffer) => {
        for (const e of parser.push(c)) {
          if (e.kind === 'end') answer = () => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate')
        }
      })
    })
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
    t.after(() => new Promise<void>((resolve) => upstream.close(() => resolve())))
    const gh = await startGatehouse(t, {
      uwsgi_listen: ['127.0.0.1:0'],
      routes: [{ path: '/', uwsgi: { pass: `127.0.0.1:${(upstream.address() as { port: number }).port}` } }],
    })
    const port = gh.gatehouse.uwsgiAddresses()[0]!.port!
    const pending = send(port, packet(get('/slow')))
    for (let i = 0; i < 200 && !answer; i++) await new Promise((r) => setTimeout(r, 10))
    assert.ok(answer, 'the request reached the upstream')
    const closing = gh.gatehouse.close(10_000)
    answer()
    const reply = await pending
    assert.equal(reply.status, 200)
    assert.ok(reply.text.endsWith('late'))
    await closing
    const after = await send(port, packet(get('/'))).catch((err: NodeJS.ErrnoException) => err.code)
    assert.equal(after, 'ECONNREFUSED')
  })

  test('reload opens new uwsgi_listen addresses and closes removed ones', async (t) => {
    const dir = tempDir(t)
    const routes = [{ path: '/', return: { body: 'ok' } }]
    const { gatehouse } = await startGatehouse(t, { uwsgi_listen: [`unix:${join(dir, 'a.sock')}`], routes })
    await gatehouse.reload({ listen: ['127.0.0.1:0'], uwsgi_listen: [`unix:${join(dir, 'b.sock')}`], routes })
    assert.deepEqual(
      gatehouse.uwsgiAddresses().map((a) => a.path),
      [join(dir, 'b.sock')],
    )
    assert.equal((await send(join(dir, 'b.sock'), packet(get('/')))).status, 200)
  })
})

/** A POST /upload of `length` bytes whose head (and `sent` bytes of body) arrive. */
const upload = (length: number, sent = length, uri = '/upload') =>
  packet(
    [
      ['REQUEST_METHOD', 'POST'],
      ['REQUEST_URI', uri],
      ['SERVER_PROTOCOL', 'HTTP/1.1'],
      ['HTTP_HOST', 'example.com'],
      ['CONTENT_LENGTH', String(length)],
    ],
    'x'.repeat(sent),
  )

/**
 * Request bodies that never arrive whole (issue 18 item 7): the peer ends its side short of
 * CONTENT_LENGTH, or stalls. A real WSGI pool of one worker serves the route, so a request
 * that kept the worker waiting would keep the next one waiting too; the deadlines are
 * generous and only a hang reaches them.
 */
describe('uwsgi_listen: incomplete and stalled request bodies', () => {
  async function start(t: TestContext, config: Record<string, unknown>) {
    const dir = tempDir(t)
    const errorLog = join(dir, 'error.log')
    const wsgi = (request_buffering: boolean) => ({
      app: 'buffering:application',
      chdir: join(FIXTURES, 'uwsgi'),
      python: PYTHON,
      workers: 1,
      pipeline: 0,
      env: { DONE_DIR: dir },
      request_buffering,
    })
    const { gatehouse } = await startGatehouse(t, {
      uwsgi_listen: ['127.0.0.1:0'],
      log: { level: 'debug', error_log: errorLog },
      routes: [
        { path: '/streamed', wsgi: wsgi(false) },
        { path: '/', wsgi: wsgi(true) },
      ],
      ...config,
    })
    const port = gatehouse.uwsgiAddresses()[0]!.port!
    const codes = () => logLines(errorLog).map((l) => l.code)
    // Both pools are up.
    for (const uri of ['/', '/streamed/'])
      await eventually(async () => (await send(port, packet(get(uri)))).status === 200, `the pool at ${uri}`)
    return { port, codes }
  }

  test('a body that ends short of CONTENT_LENGTH: 400 GH_ERR_BODY_INCOMPLETE; no worker is left waiting', async (t) => {
    const { port, codes } = await start(t, {})
    for (const uri of ['/upload', '/streamed/upload']) {
      // The peer half-closes after 40 of 100 bytes.
      const short = await send(port, upload(100, 40, uri), { end: true })
      assert.equal(short.status, 400, `${uri}: ${short.text}`)
      assert.match(short.text, /\r\n\r\n400 Bad Request: body ended 60 bytes short of CONTENT_LENGTH\n$/)
      // The next request, on another connection, is served by the pool's only worker.
      const next = await send(port, upload(100, 100, uri))
      assert.equal(next.status, 200, `${uri}: ${next.text}`)
      assert.ok(next.text.endsWith('got 100'), next.text)
    }
    await eventually(
      () => codes().filter((c) => c === 'GH_ERR_BODY_INCOMPLETE').length === 2,
      'the log lines',
    )
  })

  test('a body stalled past uwsgi_body_timeout: 408 GH_ERR_BODY_TIMEOUT; other clients are served meanwhile', async (t) => {
    const { port, codes } = await start(t, { uwsgi_body_timeout: '300ms' })
    for (const uri of ['/upload', '/streamed/upload']) {
      let answered = false
      const stalled = send(port, upload(100, 10, uri)).then((reply) => {
        answered = true
        return reply
      })
      if (uri === '/upload') {
        // The buffered route's worker is free while the body stalls: another client is served.
        const other = await send(port, upload(5))
        assert.equal(other.status, 200)
        assert.ok(other.text.endsWith('got 5'))
        assert.equal(answered, false, 'the stalled request is still waiting for its body')
      }
      const reply = await stalled
      assert.equal(reply.status, 408, `${uri}: ${reply.text}`)
      assert.match(
        reply.text,
        /408 Request Timeout: no request body bytes for 300 ms \(90 bytes missing\)\n$/,
      )
      // The worker is free again.
      const next = await send(port, upload(3, 3, uri))
      assert.equal(next.status, 200, `${uri}: ${next.text}`)
      assert.ok(next.text.endsWith('got 3'), next.text)
    }
    await eventually(() => codes().filter((c) => c === 'GH_ERR_BODY_TIMEOUT').length === 2, 'the log lines')
  })
})

describe('uwsgi configuration and command line', () => {
  test('the config schema checks uwsgi_listen, uwsgi_allow, uwsgi_max_vars_bytes and the uwsgi action', () => {
    const config = validateConfig(
      { uwsgi_listen: '127.0.0.1:9000', routes: [{ path: '/', uwsgi: { pass: 'unix:./app.sock' } }] },
      '/srv',
    )
    assert.deepEqual(config.uwsgi_listen, ['127.0.0.1:9000'])
    assert.deepEqual(config.uwsgi_allow, ['127.0.0.1', '::1'])
    assert.equal(config.uwsgi_max_vars_bytes, 65535)
    assert.equal(config.uwsgi_body_timeout, 60_000)
    assert.deepEqual(config.routes[0]!.uwsgi, {
      pass: { path: '/srv/app.sock' },
      connect_timeout: 5000,
      timeout: 60_000,
      modifier1: 0,
      modifier2: 0,
      params: {},
      document_root: '',
      request_buffering: true,
      response_buffering: true,
      response_buffer_memory: 1024 * 1024,
      response_max_temp_file_size: 1024 ** 3,
    })
    assert.throws(
      () =>
        validateConfig({
          uwsgi_listen: ['nowhere'],
          uwsgi_allow: ['10.0.0.0/33', 'localhost'],
          uwsgi_max_vars_bytes: '100k',
          routes: [{ path: '/', uwsgi: { pass: '127.0.0.1:0', timout: '5s' } as never }],
        }),
      (err: unknown) => {
        assert.ok(err instanceof GatehouseError && err.code === 'GH_ERR_CONFIG')
        const problems = err.problems.join('\n')
        assert.match(problems, /uwsgi_listen\[0\]: expected host:port/)
        assert.match(problems, /uwsgi_allow\[0\]: bad prefix length/)
        assert.match(problems, /uwsgi_allow\[1\]: not an IP address or CIDR block/)
        assert.match(problems, /uwsgi_max_vars_bytes: must be between/)
        assert.match(problems, /routes\[0\]\.uwsgi.*needs a port/)
        assert.match(problems, /did you mean "timeout"/)
        return true
      },
    )
  })

  test('--uwsgi-pass, --uwsgi-listen and --uwsgi-allow map onto the config', () => {
    const input = applyFlags(
      {},
      {
        uwsgiPass: ['/app=unix:./app.sock', '127.0.0.1:9001'],
        uwsgiListen: ['127.0.0.1:9000', 'unix:run/gh.sock'],
        uwsgiAllow: ['10.0.0.0/8'],
      },
      '/work',
    )
    assert.deepEqual(input.routes, [
      { path: '/app', uwsgi: { pass: 'unix:/work/app.sock' } },
      { path: '/', uwsgi: { pass: '127.0.0.1:9001' } },
    ])
    assert.deepEqual(input.uwsgi_listen, ['127.0.0.1:9000', 'unix:/work/run/gh.sock'])
    assert.deepEqual(input.uwsgi_allow, ['10.0.0.0/8'])
  })

  test('gatehouse serve --uwsgi-listen --uwsgi-pass: both directions from the command line', async (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'index.html'), '<p>hi</p>')
    // An upstream uwsgi server on a Unix socket, answering with the PATH_INFO it got.
    const upstreamPath = join(dir, 'up.sock')
    const upstream = createServer((socket) => {
      const parser = new UwsgiRequestParser()
      socket.on('data', (c: Buffer) => {
        for (const e of parser.push(c)) {
          if (e.kind !== 'request') continue
          const path = new Map(e.vars).get('PATH_INFO') ?? ''
          socket.end(`HTTP/1.1 200 OK\r\nContent-Length: ${path.length}\r\n\r\n${path}`)
        }
      })
    })
    await new Promise<void>((resolve) => upstream.listen(upstreamPath, resolve))
    t.after(() => new Promise<void>((resolve) => upstream.close(() => resolve())))

    const child = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--listen',
        '127.0.0.1:0',
        '--uwsgi-listen',
        '127.0.0.1:0',
        '--static',
        dir,
        '--uwsgi-pass',
        `/app=unix:${upstreamPath}`,
      ],
      { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
    )
    t.after(() => {
      if (child.exitCode === null) child.kill('SIGKILL')
    })
    let stderr = ''
    const addresses = await new Promise<{ http: string; uwsgi: string }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not listening:\n${stderr}`)), 15_000)
      child.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString()
        const http = /"listen":"([^"]+)","msg":"listening"/.exec(stderr)
        const uwsgi = /"uwsgi_listen":"([^"]+)","msg":"listening for uwsgi"/.exec(stderr)
        if (http && uwsgi) {
          clearTimeout(timer)
          resolve({ http: http[1]!, uwsgi: uwsgi[1]! })
        }
      })
      child.once('exit', (code) => reject(new Error(`exited ${code}:\n${stderr}`)))
    })
    const page = await uwsgiRequest(addresses.uwsgi, { path: '/', headers: { host: 'x' } })
    assert.equal(page.status, 200)
    assert.equal(await text(page.body), '<p>hi</p>')
    const passed = await request(`http://${addresses.http}/app/x%20y`)
    assert.equal(passed.statusCode, 200)
    assert.equal(await passed.body.text(), '/app/x y')
    child.kill('SIGTERM')
    const code = await new Promise((resolve) => child.once('exit', resolve))
    assert.equal(code, 0)
  })
})
