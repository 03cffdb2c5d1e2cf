import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { Agent, request as httpRequest } from 'node:http'
import { connect } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import {
  FIXTURES,
  PYTHON,
  rawRequest,
  startGatehouse,
  tempDir,
  eventually,
  logLines,
} from '../../support/helpers.js'

const APPS = join(FIXTURES, 'wsgi')

/** startGatehouse's cleanup for the server shared by a describe block. */
const sharedCleanups: (() => unknown)[] = []
const hooks = { after: (fn: () => unknown) => void sharedCleanups.push(fn) }
after(async () => {
  for (const fn of sharedCleanups.splice(0)) await fn()
})

for (const threads of [1, 3])
  describe(`WSGI: PEP 3333 through the bridge (wsgiref.validate apps), threads = ${threads}`, () => {
    let origin = ''
    let port = 0
    let markers = ''
    let errorLog = ''

    before(async () => {
      const dir = tempDir(hooks, 'gh-wsgi-')
      markers = join(dir, 'markers')
      errorLog = join(dir, 'error.log')
      const { mkdirSync } = await import('node:fs')
      mkdirSync(markers)
      const wsgi = {
        app: 'apps:application',
        python: PYTHON,
        chdir: APPS,
        workers: 1,
        threads,
        env: { MARKER_DIR: markers },
      }
      const running = await startGatehouse(hooks, {
        log: { level: 'info', error_log: errorLog },
        limits: { max_body_bytes: '20MB' },
        routes: [
          { path: '/mnt', wsgi: { ...wsgi, root_path: '/base' } },
          // Both buffering directions off: the body streams to the app, the app waits for the client.
          { path: '/unbuffered', wsgi: { ...wsgi, request_buffering: false, response_buffering: false } },
          { path: '/', wsgi },
        ],
      })
      origin = running.origin
      port = running.port
    })

    const json = async (path: string, init?: RequestInit) => {
      const res = await fetch(origin + path, init)
      assert.equal(res.status, 200, await res.clone().text())
      return (await res.json()) as Record<string, unknown>
    }

    test('environ: native latin-1 strings, CGI keys, wsgi.* keys, no HTTP_CONTENT_*', async () => {
      const env = await json('/environ/caf%C3%A9?x=1&y=%20', {
        method: 'POST',
        body: 'abc',
        headers: { 'content-type': 'text/x-test', 'x-custom': 'v1' },
      })
      assert.equal(env.REQUEST_METHOD, 'POST')
      assert.equal(env.SCRIPT_NAME, '')
      // "/café" as UTF-8 bytes, each byte one character.
      assert.equal(env.PATH_INFO, '/environ/caf\u00c3\u00a9')
      assert.deepEqual(env.path_bytes, [...Buffer.from('/environ/café')])
      assert.equal(env.QUERY_STRING, 'x=1&y=%20')
      assert.equal(env.CONTENT_TYPE, 'text/x-test')
      assert.equal(env.CONTENT_LENGTH, '3')
      assert.equal(env.HTTP_CONTENT_TYPE, undefined)
      assert.equal(env.HTTP_CONTENT_LENGTH, undefined)
      assert.equal(env.HTTP_X_CUSTOM, 'v1')
      assert.equal(env.SERVER_PROTOCOL, 'HTTP/1.1')
      assert.equal(env.SERVER_PORT, String(port))
      assert.equal(env.REMOTE_ADDR, '127.0.0.1')
      assert.equal(env['wsgi.url_scheme'], 'http')
      assert.deepEqual(env['wsgi.version'], [1, 0])
      assert.equal(env['wsgi.multithread'], threads > 1)
      assert.equal(env['wsgi.input_terminated'], true)
      assert.deepEqual(env.types, ['str'])
    })

    test('SCRIPT_NAME is root_path + the route prefix, PATH_INFO the rest; never "/"', async () => {
      const env = await json('/mnt/environ/%C3%BC')
      assert.equal(env.SCRIPT_NAME, '/base/mnt')
      assert.equal(env.PATH_INFO, '/environ/\u00c3\u00bc')
      const root = await json('/')
      assert.equal(root.SCRIPT_NAME, '')
      assert.equal(root.PATH_INFO, '/')
    })

    test('wsgi.input read(n) to EOF at CONTENT_LENGTH; large bodies stream through the credit window', async () => {
      const body = Buffer.alloc(3 * 1024 * 1024 + 17)
      for (let i = 0; i < body.length; i++) body[i] = (i * 7) % 256
      const res = await fetch(`${origin}/echo`, { method: 'POST', body })
      const got = Buffer.from(await res.arrayBuffer())
      assert.equal(res.status, 200)
      assert.ok(got.subarray(0, body.length).equals(body))
      assert.equal(got.subarray(body.length).toString(), `|${body.length}`)
    })

    test('chunked request body: de-chunked; CONTENT_LENGTH set when buffered (the default), absent when streamed', async () => {
      for (const prefix of ['', '/unbuffered']) {
        const r = await rawRequest(
          port,
          [
            `POST ${prefix}/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`,
            '5\r\nhello\r\n',
            '6\r\n world\r\n0\r\n\r\n',
          ],
          { gapMs: 20 },
        )
        assert.equal(r.status, 200)
        assert.match(r.text, /\r\nhello world\r\n/)
        assert.match(r.text, /\r\n\|11\r\n/)
        const env = await rawRequest(
          port,
          `POST ${prefix}/environ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
        )
        const parsed = JSON.parse(env.text.slice(env.text.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>
        assert.equal(parsed.CONTENT_LENGTH, prefix === '' ? '3' : undefined, prefix)
        assert.equal(parsed['wsgi.input_terminated'], true)
      }
    })

    test('readline, readlines and iteration', async () => {
      const body = 'one\ntwo\n\nthree'
      for (const mode of ['readline', 'readlines', 'iter']) {
        const res = await fetch(`${origin}/lines?${mode}`, { method: 'POST', body })
        assert.deepEqual(await res.json(), ['one\n', 'two\n', '\n', 'three'], mode)
      }
    })

    test('the write() callable, then the iterable', async () => {
      const res = await fetch(`${origin}/write`)
      assert.equal(await res.text(), 'written then returned')
    })

    test('a generator response streams; a large one passes the response credit window', async () => {
      const res = await fetch(`${origin}/stream?200`)
      const text = await res.text()
      assert.equal(text.split('\n').length, 201)
      assert.equal(res.headers.get('transfer-encoding'), 'chunked')
      const big = await fetch(`${origin}/big?2000000`)
      const buf = Buffer.from(await big.arrayBuffer())
      assert.equal(buf.length, 2_000_000)
      assert.equal(buf[1_999_999], 1_999_999 % 251)
    })

    test('single-chunk responses get a Content-Length', async () => {
      const res = await fetch(`${origin}/write`)
      await res.text()
      const one = await fetch(`${origin}/pid`)
      assert.equal(one.headers.get('content-length'), String((await one.text()).length))
    })

    test('wsgi.file_wrapper over a file is sent by Node from the offset; other file-likes are iterated', async () => {
      const whole = readFileSync(join(APPS, 'static.txt'))
      const res = await fetch(`${origin}/file?100`)
      assert.equal(res.status, 200)
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(whole.subarray(100)))
      const pipe = await fetch(`${origin}/filepipe`)
      assert.equal(await pipe.text(), 'from a BytesIO')
    })

    test('HEAD: headers only, the app still runs', async () => {
      const r = await rawRequest(port, 'HEAD /stream?3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
      assert.equal(r.status, 200)
      assert.ok(r.text.endsWith('\r\n\r\n'), JSON.stringify(r.text))
      const f = await rawRequest(port, 'HEAD /file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
      assert.equal(f.status, 200)
      assert.ok(f.text.endsWith('\r\n\r\n'))
    })

    for (const [path, what] of [
      ['/hop', 'hop-by-hop header'],
      ['/crlf', 'CR, LF'],
      ['/nonlatin', 'refused'],
      ['/badstatus', 'status must be'],
      ['/twice', 'second time'],
    ] as const) {
      test(`an app that breaks the header rules (${path}) gets a 500 and a log line`, async () => {
        const res = await fetch(origin + path)
        assert.equal(res.status, 500)
        const body = await res.text()
        assert.doesNotMatch(body, /should not be seen/)
        assert.equal(res.headers.get('x-evil'), null)
        await eventually(
          () => logLines(errorLog).find((l) => l.code === 'GH_ERR_WSGI_APP' && String(l.msg).includes(what)),
          `log line for ${path}`,
        )
      })
    }

    test('an exception before the headers: 500 with the traceback, method and URI in the log', async () => {
      const res = await fetch(`${origin}/raise?q=1`)
      assert.equal(res.status, 500)
      const line = await eventually(
        () => logLines(errorLog).find((l) => String(l.msg).includes('boom from the app')),
        'traceback',
      )
      assert.match(String(line.msg), /Traceback \(most recent call last\)/)
      assert.equal(line.method, 'GET')
      assert.equal(line.uri, '/raise?q=1')
    })

    test('an exception after the headers cuts the connection', async () => {
      await assert.rejects(async () => {
        const res = await fetch(`${origin}/raiselate`)
        await res.text()
      })
    })

    test('start_response with exc_info: replaces the head before it is sent, re-raises after', async () => {
      const res = await fetch(`${origin}/excinfo`)
      assert.equal(res.status, 500)
      assert.equal(await res.text(), 'error page')
      await assert.rejects(async () => {
        const late = await fetch(`${origin}/excinfolate`)
        await late.text()
      })
    })

    test('close() is called on success', async () => {
      const res = await fetch(`${origin}/closeok?ok-marker`)
      assert.equal(await res.text(), 'ok')
      await eventually(() => existsSync(join(markers, 'ok-marker')), 'close() marker')
    })

    test('a client that disconnects mid-response: close() runs, the worker serves the next request', async () => {
      const socket = connect(port, '127.0.0.1')
      socket.write('GET /slow?gone-marker HTTP/1.1\r\nHost: x\r\n\r\n')
      await new Promise<void>((resolve) => socket.once('data', () => resolve()))
      socket.destroy()
      await eventually(() => existsSync(join(markers, 'gone-marker')), 'close() after disconnect')
      const res = await fetch(`${origin}/pid`)
      assert.equal(res.status, 200)
    })

    test('Expect: 100-continue, request_buffering = false: 100 only when the app reads the body', async () => {
      const read = await rawRequest(
        port,
        'POST /unbuffered/continue?read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n',
        { waitMs: 1000 },
      )
      // Nothing arrives but the 100 until the body is sent.
      assert.match(read.text, /^HTTP\/1\.1 100 Continue\r\n\r\n$/)
      const full = await rawRequest(
        port,
        [
          'POST /unbuffered/continue?read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n',
          'hello',
        ],
        { gapMs: 300 },
      )
      assert.match(full.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK/)
      assert.match(full.text, /read 5$/)
      const refused = await rawRequest(
        port,
        'POST /unbuffered/continue HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n',
      )
      assert.equal(refused.status, 403)
      assert.doesNotMatch(refused.text, /100 Continue/)
    })

    test('Expect: 100-continue, buffered (the default): one 100 at once, the app answers once the body is in', async () => {
      const r = await rawRequest(
        port,
        [
          'POST /continue HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n',
          'hello',
        ],
        { gapMs: 300 },
      )
      assert.match(r.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 403 /)
      assert.equal(r.text.split('100 Continue').length, 2, 'one 100 Continue')
    })

    test('an app that answers without reading a large body: the keep-alive connection carries on', async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 })
      try {
        const post = () =>
          new Promise<{ status: number; body: string; socket: unknown }>((resolve, reject) => {
            const req = httpRequest(`${origin}/pid`, { method: 'POST', agent }, (res) => {
              let body = ''
              res.setEncoding('utf8')
              res.on('data', (d: string) => (body += d))
              res.on('end', () => resolve({ status: res.statusCode!, body, socket: req.socket }))
            })
            req.on('error', reject)
            req.end(Buffer.alloc(2 * 1024 * 1024, 0x61))
          })
        const first = await post()
        const second = await post()
        assert.equal(first.status, 200)
        assert.equal(second.status, 200)
        assert.equal(first.body, second.body)
        assert.equal(first.socket, second.socket, 'the same connection')
      } finally {
        agent.destroy()
      }
    })

    test('wsgi.errors reaches the error log', async () => {
      await (await fetch(`${origin}/stderr`)).text()
      await eventually(
        () => logLines(errorLog).find((l) => l.msg === 'message to wsgi.errors' && l.stream === 'stderr'),
        'stderr line',
      )
    })

    test('an app that kills its interpreter mid-request: that request 502, the next is served', async () => {
      const before = await (await fetch(`${origin}/pid`)).text()
      const res = await fetch(`${origin}/crash`)
      assert.equal(res.status, 502)
      const next = await fetch(`${origin}/pid`)
      assert.equal(next.status, 200)
      assert.notEqual(await next.text(), before)
    })
  })

describe('WSGI worker options', () => {
  test('threads: requests run concurrently in one worker', async (t) => {
    const { origin } = await startGatehouse(t, {
      routes: [
        { path: '/', wsgi: { app: 'apps:application', python: PYTHON, chdir: APPS, workers: 1, threads: 4 } },
      ],
    })
    const env = (await (await fetch(`${origin}/environ`)).json()) as Record<string, unknown>
    assert.equal(env['wsgi.multithread'], true)
    // Four requests that each wait for the other three: they answer only if they overlap.
    const replies = await Promise.all(
      [1, 2, 3, 4].map(() => fetch(`${origin}/barrier?4`).then((r) => r.text())),
    )
    assert.deepEqual(replies, ['met', 'met', 'met', 'met'])
  })

  test('a chunked body over max_body_bytes: 413, the app stopped', async (t) => {
    const { port } = await startGatehouse(t, {
      routes: [
        {
          path: '/',
          max_body_bytes: '1KB',
          wsgi: { app: 'apps:application', python: PYTHON, chdir: APPS, workers: 1 },
        },
      ],
    })
    const chunk = `400\r\n${'x'.repeat(1024)}\r\n`
    const r = await rawRequest(
      port,
      ['POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n', chunk, chunk, '0\r\n\r\n'],
      { gapMs: 20 },
    )
    assert.equal(r.status, 413)
  })

  // The worker is standard library only and must run on any Python >= 3.9.
  const oldest = process.env.GATEHOUSE_TEST_PYTHON39 ?? '/root/.pyenv/versions/3.9.18/bin/python3'
  test('the worker runs on Python 3.9', { skip: existsSync(oldest) ? false : `no ${oldest}` }, async (t) => {
    const { origin } = await startGatehouse(t, {
      routes: [
        { path: '/', wsgi: { app: 'apps:application', python: oldest, chdir: APPS, workers: 1, threads: 2 } },
      ],
    })
    const env = (await (await fetch(`${origin}/environ/caf%C3%A9`)).json()) as Record<string, unknown>
    assert.equal(env.PATH_INFO, '/environ/caf\u00c3\u00a9')
    const echo = await fetch(`${origin}/echo`, { method: 'POST', body: 'x'.repeat(300_000) })
    assert.equal((await echo.text()).length, 300_000 + '|300000'.length)
    assert.equal((await (await fetch(`${origin}/stream?3`)).text()).split('\n').length, 4)
    const file = await fetch(`${origin}/file`)
    assert.equal((await file.arrayBuffer()).byteLength, readFileSync(join(APPS, 'static.txt')).length)
  })

  test('the factory form MODULE:create_app(args)', async (t) => {
    const { origin } = await startGatehouse(t, {
      routes: [
        { path: '/', wsgi: { app: "apps:create_app('made')", python: PYTHON, chdir: APPS, workers: 1 } },
      ],
    })
    assert.equal(await (await fetch(origin)).text(), 'made')
  })

  test('the status page of a wsgi pool: ?openmetrics names gatehouse_pool_*, ?html its own title, not php-fpm', async (t) => {
    const { origin } = await startGatehouse(t, {
      routes: [
        { exact: '/status', status: { pool: 'wsgi' } },
        { path: '/', wsgi: { app: 'apps:application', python: PYTHON, chdir: APPS, workers: 1 } },
      ],
    })
    assert.equal((await fetch(`${origin}/environ`)).status, 200)
    const r = await fetch(`${origin}/status?openmetrics`)
    assert.equal(r.status, 200)
    assert.match(String(r.headers.get('content-type')), /^application\/openmetrics-text/)
    const text = await r.text()
    assert.match(text, /^gatehouse_pool_up 1$/m)
    assert.match(text, /^# HELP gatehouse_pool_up Could pool wsgi be reached\?$/m)
    assert.match(text, /^gatehouse_pool_accepted_connections_total [1-9]\d*$/m)
    assert.doesNotMatch(text, /phpfpm/)
    assert.doesNotMatch(text, /PHP-FPM|FPM/)
    assert.match(text, /# EOF\n$/)
    // promtool, when installed, reads it as well.
    const promtool = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })
    if (promtool.error === undefined) assert.equal(promtool.status, 0, promtool.stdout + promtool.stderr)
    // The html page names the pool's kind too.
    const html = await (await fetch(`${origin}/status?html`)).text()
    assert.match(html, /<title>Gatehouse wsgi pool status<\/title>/)
  })

  test('a request over its timeout: 504, the stuck traceback with method and URI logged, the worker replaced', async (t) => {
    const dir = tempDir(t)
    const errorLog = join(dir, 'error.log')
    const { origin } = await startGatehouse(t, {
      log: { level: 'info', error_log: errorLog },
      routes: [
        { path: '/', wsgi: { app: 'apps:application', python: PYTHON, chdir: APPS, workers: 1, timeout: 1 } },
      ],
    })
    const res = await fetch(`${origin}/sleep?30`)
    assert.equal(res.status, 504)
    await eventually(
      () => logLines(errorLog).find((l) => /running GET \/sleep\?30/.test(String(l.msg))),
      'dump line naming the request',
    )
    await eventually(
      () => logLines(errorLog).find((l) => /time\.sleep|in sleep/.test(String(l.msg))),
      'stack line',
    )
    const next = await fetch(`${origin}/pid`)
    assert.equal(next.status, 200)
  })

  test('X-Forwarded-For/Proto are believed from forwarded_allow_ips only', async (t) => {
    const base = { app: 'apps:application', python: PYTHON, chdir: APPS, workers: 1 }
    const { origin } = await startGatehouse(t, {
      routes: [
        { path: '/trusted', wsgi: { ...base, forwarded_allow_ips: ['127.0.0.0/8'] } },
        { path: '/any', wsgi: { ...base, forwarded_allow_ips: ['*'] } },
        { path: '/', wsgi: base },
      ],
    })
    const headers = { 'x-forwarded-for': '203.0.113.9, 127.0.0.5', 'x-forwarded-proto': 'https' }
    const trusted = (await (await fetch(`${origin}/trusted/environ`, { headers })).json()) as Record<
      string,
      unknown
    >
    assert.equal(trusted.REMOTE_ADDR, '203.0.113.9')
    assert.equal(trusted['wsgi.url_scheme'], 'https')
    assert.equal(trusted.HTTPS, 'on')
    // '*' (gunicorn's --forwarded-allow-ips '*') believes any peer.
    const any = (await (await fetch(`${origin}/any/environ`, { headers })).json()) as Record<string, unknown>
    assert.equal(any.REMOTE_ADDR, '203.0.113.9')
    assert.equal(any['wsgi.url_scheme'], 'https')
    const plain = (await (await fetch(`${origin}/environ`, { headers })).json()) as Record<string, unknown>
    assert.equal(plain.REMOTE_ADDR, '127.0.0.1')
    assert.equal(plain['wsgi.url_scheme'], 'http')
  })
})

describe('WSGI behind nginx', () => {
  test('nginx uwsgi_pass and fastcgi_pass -> the uwsgi and FastCGI listeners -> the same WSGI pool (Flask)', async (t) => {
    const { startNginx } = await import('../../support/peer-nginx.js')
    const gh = await startGatehouse(t, {
      uwsgi_listen: ['127.0.0.1:0'],
      fastcgi_listen: ['127.0.0.1:0'],
      routes: [{ path: '/', wsgi: { app: 'flask_app:app', python: PYTHON, chdir: APPS, workers: 1 } }],
    })
    const viaUwsgi = await startNginx(t, tempDir(t), {
      server: `location / { include /etc/nginx/uwsgi_params; uwsgi_pass ${gh.gatehouse.uwsgiAddresses()[0]!.address}; }`,
    })
    const viaFastcgi = await startNginx(t, tempDir(t), {
      server: `location / { include /etc/nginx/fastcgi_params; fastcgi_pass ${gh.gatehouse.fastcgiAddresses()[0]!.address}; }`,
    })
    for (const nginx of [viaUwsgi, viaFastcgi]) {
      const hello = await fetch(`${nginx.origin}/`)
      assert.equal(hello.status, 200)
      assert.match(String(hello.headers.get('server')), /^nginx\//)
      assert.equal(await hello.text(), 'Hello from Flask')
      const json = await fetch(`${nginx.origin}/json`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"x": 1}',
      })
      assert.deepEqual(await json.json(), { got: { x: 1 }, method: 'POST' })
      const url = (await (await fetch(`${nginx.origin}/url?q=1`)).json()) as Record<string, string>
      assert.match(url.url!, /^http:\/\/127\.0\.0\.1(:\d+)?\/url\?q=1$/)
    }
    // The same pool straight over HTTP.
    assert.equal(await (await fetch(`${gh.origin}/`)).text(), 'Hello from Flask')
  })
})
