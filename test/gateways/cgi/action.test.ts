import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, copyFileSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer, get } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import pino from 'pino'
import { applyFlags } from '../../../src/cli/flags.js'
import { GatehouseError } from '../../../src/core/errors.js'
import { type CgiLibraryOptions, type CgiRequestListener, cgi } from '../../../src/gateways/cgi/action.js'
import { envLines, eventually, fetchText, parseRawResponse } from '../../support/cgi-client.js'
import { CLI, FIXTURES, PYTHON, rawRequest, startGatehouse, tempDir } from '../../support/helpers.js'

const CGI = join(FIXTURES, 'cgi')
const INTERPRETERS = { '.py': PYTHON, '.pl': 'perl', '.php': 'php-cgi' }
/** startGatehouse's cleanup for the server shared by a describe block (run by its after hook). */
const sharedCleanups: (() => unknown)[] = []
const hooks = { after: (fn: () => unknown) => void sharedCleanups.push(fn) }
after(async () => {
  for (const fn of sharedCleanups.splice(0)) await fn()
})

/** A standalone cgi() listener on an OS-chosen port; closed when the test ends. */
async function startCgi(
  t: { after: (fn: () => Promise<void>) => void },
  options: CgiLibraryOptions,
): Promise<{ port: number; handler: CgiRequestListener }> {
  const listener = cgi({ log: pino({ level: 'silent' }), ...options })
  const server = createServer(listener)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.after(async () => {
    server.closeAllConnections()
    await listener.close()
    await new Promise((r) => server.close(r))
  })
  return { port: (server.address() as { port: number }).port, handler: listener }
}

/** A log sink that keeps every line, for asserting on what reached the error log. */
function memoryLog() {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line))
      cb()
    },
  })
  return { log: pino({ level: 'debug' }, stream), lines }
}

describe('CGI gateway with real scripts', () => {
  let port = 0

  before(async () => {
    const running = await startGatehouse(hooks, {
      routes: [
        {
          path: '/cgi-bin',
          max_body_bytes: 4 * 1024 * 1024,
          cgi: {
            root: CGI,
            interpreters: INTERPRETERS,
            pass_env: ['PATH'],
            env: { GH_TEST: 'yes', PYTHONCOERCECLOCALE: '0' },
          },
        },
        {
          path: '/auth-bin',
          cgi: { root: CGI, interpreters: INTERPRETERS, pass_authorization: true },
        },
        {
          path: '/indexed',
          cgi: { root: join(CGI, 'sub'), index: ['index.cgi'] },
        },
        {
          path: '/stream-bin',
          max_body_bytes: 100_000,
          cgi: {
            root: CGI,
            interpreters: INTERPRETERS,
            chunked_body: 'stream',
            request_buffering: false,
            response_buffering: false,
          },
        },
        {
          path: '/small-bin',
          max_body_bytes: 100_000,
          cgi: { root: CGI, interpreters: INTERPRETERS },
        },
      ],
    })
    port = running.port
  })

  test('Python sees exactly the RFC 3875 meta-variables plus the extras, and nothing of ours', async () => {
    const res = await rawRequest(
      port,
      'POST /cgi-bin/env.py/extra/p%20x?a=b&c=%41 HTTP/1.1\r\n' +
        `Host: 127.0.0.1:${port}\r\n` +
        'Content-Type: text/plain\r\n' +
        'Content-Length: 5\r\n' +
        'X-Custom: v1\r\nx-custom: v2\r\n' +
        'Cookie: a=1\r\nCookie: b=2\r\n' +
        'Connection: close\r\n\r\nhello',
    )
    const parsed = parseRawResponse(res.text)
    assert.equal(parsed.status, 200)
    const seen = JSON.parse(parsed.body) as {
      env: Record<string, string>
      argv: string[]
      cwd: string
      body: string
    }
    const { REMOTE_PORT, SERVER_SOFTWARE, ...env } = seen.env
    assert.match(REMOTE_PORT ?? '', /^[1-9]\d*$/)
    assert.match(SERVER_SOFTWARE ?? '', /^Gatehouse\/\d+\.\d+\.\d+$/)
    assert.deepEqual(env, {
      PATH: process.env.PATH,
      GH_TEST: 'yes',
      PYTHONCOERCECLOCALE: '0',
      GATEWAY_INTERFACE: 'CGI/1.1',
      SERVER_NAME: '127.0.0.1',
      SERVER_PORT: String(port),
      SERVER_PROTOCOL: 'HTTP/1.1',
      SERVER_ADDR: '127.0.0.1',
      REQUEST_METHOD: 'POST',
      REQUEST_SCHEME: 'http',
      REQUEST_URI: '/cgi-bin/env.py/extra/p%20x?a=b&c=%41',
      QUERY_STRING: 'a=b&c=%41',
      SCRIPT_NAME: '/cgi-bin/env.py',
      SCRIPT_FILENAME: join(CGI, 'env.py'),
      DOCUMENT_ROOT: CGI,
      PATH_INFO: '/extra/p x',
      PATH_TRANSLATED: join(CGI, 'extra/p x'),
      REMOTE_ADDR: '127.0.0.1',
      REMOTE_HOST: '127.0.0.1',
      REDIRECT_STATUS: '200',
      CONTENT_LENGTH: '5',
      CONTENT_TYPE: 'text/plain',
      HTTP_HOST: `127.0.0.1:${port}`,
      HTTP_X_CUSTOM: 'v1, v2',
      HTTP_COOKIE: 'a=1; b=2',
      HTTP_CONNECTION: 'close',
    })
    // argv is the interpreter and the script, never the query string; cwd is the script's directory.
    assert.deepEqual(seen.argv, [join(CGI, 'env.py')])
    assert.equal(seen.cwd, CGI)
    assert.equal(seen.body, 'hello')
  })

  test('a GET has no CONTENT_LENGTH, no PATH_INFO or PATH_TRANSLATED, and QUERY_STRING ""', async () => {
    const r = await fetchText(port, '/cgi-bin/env.py')
    const { env } = JSON.parse(r.text) as { env: Record<string, string> }
    assert.equal(env.QUERY_STRING, '')
    for (const absent of [
      'CONTENT_LENGTH',
      'CONTENT_TYPE',
      'PATH_INFO',
      'PATH_TRANSLATED',
      'HTTPS',
      'AUTH_TYPE',
    ])
      assert.ok(!(absent in env), `${absent} should be unset`)
  })

  test('Perl: meta-variables, body on stdin, empty @ARGV even for a query without "="', async () => {
    const r = await fetchText(port, '/cgi-bin/env.pl/p?-e+print+1', {
      method: 'PUT',
      body: 'perl body',
      headers: { 'content-type': 'application/x-test' },
    })
    assert.equal(r.status, 200)
    const seen = JSON.parse(r.text) as { env: Record<string, string>; argv: string[]; body: string }
    assert.deepEqual(seen.argv, [])
    assert.equal(seen.body, 'perl body')
    assert.equal(seen.env.REQUEST_METHOD, 'PUT')
    assert.equal(String(seen.env.CONTENT_LENGTH), '9')
    assert.equal(seen.env.CONTENT_TYPE, 'application/x-test')
    assert.equal(seen.env.QUERY_STRING, '-e+print+1')
    assert.equal(seen.env.SCRIPT_NAME, '/cgi-bin/env.pl')
    assert.equal(seen.env.PATH_INFO, '/p')
  })

  test('sh: an executable script with a shebang; shellshock-shaped values arrive verbatim', async () => {
    const shellshock = '() { :; }; echo; echo PWNED-BY-SHELLSHOCK'
    const r = await fetchText(port, '/cgi-bin/env.sh', {
      headers: { 'user-agent': shellshock, 'x-test': '$(id)' },
    })
    assert.equal(r.status, 200)
    assert.equal(r.headers['content-type'], 'text/plain')
    const env = envLines(r.text)
    assert.equal(env.HTTP_USER_AGENT, shellshock)
    assert.equal(env.HTTP_X_TEST, '$(id)')
    // Had a shell imported the value as a function definition, the trailing command would
    // have run and printed the marker on a line of its own.
    assert.ok(!r.text.split('\n').includes('PWNED-BY-SHELLSHOCK'), 'no shell interpreted the header')
    assert.equal(env.GATEWAY_INTERFACE, 'CGI/1.1')
  })

  test('php-cgi runs a page with GET, POST, cookies and PATH_INFO', async () => {
    const r = await fetchText(port, '/cgi-bin/info.php/some/path?x=1&y[]=2', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: 'session=abc' },
      body: 'field=value&n=42',
    })
    assert.equal(r.status, 200)
    assert.equal(r.headers['x-from'], 'php')
    const info = JSON.parse(r.text) as Record<string, unknown>
    assert.equal(info.script_filename, join(CGI, 'info.php'))
    assert.equal(info.script_name, '/cgi-bin/info.php')
    assert.equal(info.path_info, '/some/path')
    assert.deepEqual(info.get, { x: '1', y: ['2'] })
    assert.deepEqual(info.post, { field: 'value', n: '42' })
    assert.deepEqual(info.cookie, { session: 'abc' })
  })

  test('php-cgi: ?-s does not disclose the source (CVE-2012-1823: the query is never argv)', async () => {
    for (const query of ['-s', '-s+%3d', '%ADs', '-w']) {
      const r = await fetchText(port, `/cgi-bin/info.php?${query}`)
      assert.equal(r.status, 200, query)
      assert.ok(!r.text.includes('SOURCE-MARKER'), `source disclosed for ?${query}`)
      assert.ok(!r.text.includes('<code>'), `highlighted source for ?${query}`)
      assert.equal((JSON.parse(r.text) as { query_string: string }).query_string, query)
    }
  })

  test('php-cgi: ?-d allow_url_include / auto_prepend_file change no ini setting', async () => {
    const r = await fetchText(
      port,
      '/cgi-bin/info.php?-d+allow_url_include%3d1+-d+auto_prepend_file%3dphp://input',
      {
        method: 'POST',
        body: '<?php echo "INJECTED-CODE-RAN"; ?>',
        headers: { 'content-type': 'text/plain' },
      },
    )
    assert.equal(r.status, 200)
    assert.ok(!r.text.includes('INJECTED-CODE-RAN'))
    const info = JSON.parse(r.text) as { allow_url_include: string; auto_prepend_file: string }
    assert.ok(info.allow_url_include === '' || info.allow_url_include === '0', info.allow_url_include)
    assert.equal(info.auto_prepend_file, '')
  })

  test('Proxy and underscore headers never reach the script; Content-* are not HTTP_*', async () => {
    const res = await rawRequest(
      port,
      'POST /cgi-bin/env.sh HTTP/1.1\r\nHost: x\r\n' +
        'Proxy: http://evil.example:3128\r\n' +
        'X_Forwarded_For: 10.0.0.1\r\nX-Forwarded-For: 203.0.113.7\r\n' +
        'Authorization: Basic dTpw\r\n' +
        'Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi',
    )
    const env = envLines(parseRawResponse(res.text).body)
    assert.equal(env.GATEWAY_INTERFACE, 'CGI/1.1')
    assert.ok(!('HTTP_PROXY' in env), 'httpoxy')
    assert.equal(env.HTTP_X_FORWARDED_FOR, '203.0.113.7')
    assert.ok(!('HTTP_AUTHORIZATION' in env))
    assert.ok(!('HTTP_CONTENT_TYPE' in env) && !('HTTP_CONTENT_LENGTH' in env))
    assert.equal(env.CONTENT_TYPE, 'text/plain')
    // php-cgi reads HTTP_PROXY through getenv(): still absent.
    const php = await rawRequest(
      port,
      'GET /cgi-bin/info.php HTTP/1.1\r\nHost: x\r\nProxy: http://evil.example:3128\r\nConnection: close\r\n\r\n',
    )
    assert.equal((JSON.parse(parseRawResponse(php.text).body) as { http_proxy: unknown }).http_proxy, false)
  })

  test('Authorization is passed only on a route with pass_authorization', async () => {
    const r = await fetchText(port, '/auth-bin/env.sh', { headers: { authorization: 'Basic dTpw' } })
    assert.equal(envLines(r.text).HTTP_AUTHORIZATION, 'Basic dTpw')
  })

  test('traversal out of the root is refused before any script runs', async () => {
    for (const path of [
      '/cgi-bin/../../bin/sh',
      '/cgi-bin/%2e%2e/%2e%2e/bin/sh',
      '/cgi-bin/..%2f..%2fbin%2fsh',
      '/cgi-bin/%2e%2e%2f%2e%2e%2fbin/sh',
      '/cgi-bin/..%5c..%5cbin%5csh',
      '/cgi-bin/env.sh/../../../bin/sh',
    ]) {
      const res = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
      assert.ok(res.status === 400 || res.status === 404, `${path}: ${res.status}`)
      assert.ok(!res.text.includes('GATEWAY_INTERFACE'), path)
    }
    // Hidden files are not scripts.
    assert.equal((await fetchText(port, '/cgi-bin/.hidden.sh')).status, 404)
  })

  test('a symlink leading out of the root is not run', async (t) => {
    const root = tempDir(t)
    symlinkSync('/bin/sh', join(root, 'sh'))
    copyFileSync(join(CGI, 'env.sh'), join(root, 'ok.sh'))
    chmodSync(join(root, 'ok.sh'), 0o755)
    const running = await startGatehouse(t, { routes: [{ path: '/', cgi: { root } }] })
    assert.equal((await fetchText(running.port, '/sh')).status, 404)
    assert.equal((await fetchText(running.port, '/ok.sh')).status, 200)
  })

  test('a non-executable file without an interpreter is 403; a directory is 403; missing is 404', async () => {
    const noexec = await fetchText(port, '/cgi-bin/noexec.sh')
    assert.equal(noexec.status, 403)
    assert.ok(!noexec.text.includes('should never run'))
    assert.equal((await fetchText(port, '/cgi-bin/dir/')).status, 403)
    assert.equal((await fetchText(port, '/cgi-bin/dir')).status, 403)
    assert.equal((await fetchText(port, '/cgi-bin/')).status, 403)
    assert.equal((await fetchText(port, '/cgi-bin/missing.sh')).status, 404)
    assert.equal((await fetchText(port, '/cgi-bin/missing.sh/x')).status, 404)
  })

  test('index scripts: a directory URL with a slash runs it, without is redirected', async () => {
    const r = await fetchText(port, '/indexed/')
    assert.equal(r.status, 200)
    assert.equal(r.text, 'index of sub: /indexed/index.cgi\n')
    const moved = await fetchText(port, '/indexed?q=1')
    assert.equal(moved.status, 301)
    assert.equal(moved.headers.location, '/indexed/?q=1')
  })

  test('Status with a custom reason; every Set-Cookie kept; hop-by-hop fields from the script dropped', async () => {
    const res = await rawRequest(port, 'GET /cgi-bin/cookies.sh HTTP/1.1\r\nHost: x\r\n\r\n', {
      waitMs: 1000,
    })
    const parsed = parseRawResponse(res.text)
    assert.equal(parsed.status, 299)
    assert.equal(parsed.reason, 'Custom Reason')
    assert.deepEqual(
      parsed.headers.filter(([n]) => n.toLowerCase() === 'set-cookie').map(([, v]) => v),
      ['a=1', 'b=2; Path=/'],
    )
    // The script's "Connection: close" is not ours to send: the connection stays open.
    assert.ok(!parsed.headers.some(([n, v]) => n.toLowerCase() === 'connection' && v === 'close'))
    assert.equal(res.closedByServer, false)
    assert.equal(parsed.body, 'cookies\n')
  })

  test('HEAD gets the headers and no body', async () => {
    const res = await rawRequest(
      port,
      'HEAD /cgi-bin/cookies.sh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    )
    assert.equal(res.status, 299)
    assert.ok(res.text.endsWith('\r\n\r\n'), JSON.stringify(res.text))
    assert.match(res.text, /Set-Cookie: a=1/)
  })

  test('a local redirect is served as a GET of the other script, without the body', async () => {
    const r = await fetchText(port, '/cgi-bin/redirect.sh?orig=1', {
      method: 'POST',
      body: 'dropped',
      headers: { 'content-type': 'text/plain', 'x-kept': 'yes' },
    })
    assert.equal(r.status, 200)
    const env = envLines(r.text)
    assert.equal(env.REQUEST_METHOD, 'GET')
    assert.equal(env.SCRIPT_NAME, '/cgi-bin/env.sh')
    assert.equal(env.PATH_INFO, '/after')
    assert.equal(env.QUERY_STRING, 'from=redirect')
    assert.equal(env.REQUEST_URI, '/cgi-bin/env.sh/after?from=redirect')
    assert.equal(env.HTTP_X_KEPT, 'yes')
    assert.ok(!('CONTENT_LENGTH' in env) && !('CONTENT_TYPE' in env))
  })

  test('a local redirect of a HEAD answers with headers only', async () => {
    const res = await rawRequest(
      port,
      'HEAD /cgi-bin/redirect.sh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    )
    assert.equal(res.status, 200)
    assert.ok(res.text.endsWith('\r\n\r\n'), JSON.stringify(res.text))
    assert.ok(!res.text.includes('REQUEST_METHOD'))
  })

  test('a redirect loop and a redirect out of the route are 502', async () => {
    assert.equal((await fetchText(port, '/cgi-bin/loop.sh')).status, 502)
    assert.equal((await fetchText(port, '/cgi-bin/away.sh')).status, 502)
  })

  test('a Location with an absolute URI is a 302 to the client', async () => {
    const r = await fetchText(port, '/cgi-bin/client-redirect.sh')
    assert.equal(r.status, 302)
    assert.equal(r.headers.location, 'https://example.org/next')
  })

  test('nph- scripts: the response passes through unparsed', async () => {
    const res = await rawRequest(port, 'GET /cgi-bin/nph-teapot.sh HTTP/1.1\r\nHost: x\r\n\r\n', {
      waitMs: 5000,
    })
    assert.equal(
      res.text,
      'HTTP/1.1 418 I am a teapot\r\nContent-Type: text/plain\r\nX-Nph: yes\r\nConnection: close\r\n\r\nshort and stout\n',
    )
    assert.equal(res.closedByServer, true)
  })

  test('a Content-Length from the script is held to: extra output dropped, short output cuts the connection', async () => {
    const long = await fetchText(port, '/cgi-bin/length.sh?long')
    assert.equal(long.text, '0123456789')
    await assert.rejects(fetchText(port, '/cgi-bin/length.sh?short'))
  })

  test('a script writing far past its Content-Length to a slow client is answered, and read to its end so that it exits', async (t) => {
    const root = tempDir(t)
    writeFileSync(
      join(root, 'flood.sh'),
      "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\nContent-Length: 4194304\\n\\n'\nexec head -c 16777216 /dev/zero\n",
      { mode: 0o755 },
    )
    const { port, handler } = await startCgi(t, { root, timeout: '60s' })
    const received = await new Promise<number>((resolve, reject) => {
      get({ host: '127.0.0.1', port, path: '/flood.sh' }, (res) => {
        let n = 0
        // Read nothing at first: the script's output backs up behind the client.
        res.pause()
        setTimeout(() => res.resume(), 300)
        res.on('data', (c: Buffer) => {
          n += c.length
        })
        res.on('end', () => resolve(n))
        res.on('error', reject)
      }).on('error', reject)
    })
    assert.equal(received, 4194304)
    assert.ok(await eventually(() => handler.stats().running === 0), 'the script exited')
  })

  test('a script that answers without reading a large body still gets its answer out', async () => {
    const r = await fetchText(port, '/cgi-bin/no-read.sh', {
      method: 'POST',
      body: Buffer.alloc(1024 * 1024, 0x61),
    })
    assert.equal(r.status, 200)
    assert.equal(r.text, 'ignored your body\n')
  })

  test('with request_buffering = false the body streams to stdin as it arrives and stdout streams back (Content-Length body)', async () => {
    await echoLinesOneByOne(port, '/stream-bin/echo-lines.py', false)
  })

  test('with chunked_body = "stream" a chunked body streams too, without CONTENT_LENGTH', async () => {
    await echoLinesOneByOne(port, '/stream-bin/echo-lines.py', true)
    const r = await fetchText(port, '/stream-bin/count.py', {
      body: ['abc', 'def'],
      chunked: true,
      method: 'POST',
    })
    assert.equal(r.text, `bytes=6 sha1=${sha1('abcdef')} cl=unset\n`)
  })

  test('a chunked body is de-chunked and CONTENT_LENGTH set (in memory and through a temp file)', async () => {
    const before = tempFiles()
    for (const total of [0, 10, 64 * 1024 + 1, 3 * 1024 * 1024]) {
      const data = Buffer.alloc(total)
      for (let i = 0; i < total; i++) data[i] = (i * 7) % 251
      const pieces: Buffer[] = []
      for (let i = 0; i < total; i += 10_000) pieces.push(data.subarray(i, i + 10_000))
      const r = await fetchText(port, '/cgi-bin/count.py', { method: 'POST', body: pieces, chunked: true })
      assert.equal(r.text, `bytes=${total} sha1=${sha1(data)} cl=${total}\n`, `${total} bytes`)
    }
    assert.deepEqual(tempFiles(), before, 'temp files are unlinked')
  })

  test('a chunked body over the route limit is 413, buffered or streamed', async () => {
    for (const prefix of ['/small-bin', '/stream-bin']) {
      const pieces = Array.from({ length: 20 }, () => Buffer.alloc(10_000, 0x62))
      const r = await fetchText(port, `${prefix}/count.py`, {
        method: 'POST',
        body: pieces,
        chunked: true,
      }).catch((err: Error) => err)
      // The server may close while the client is still sending; if a response came, it is a 413.
      if (!(r instanceof Error)) assert.equal(r.status, 413, prefix)
      else assert.match(r.message, /socket hang up|ECONNRESET|EPIPE/)
    }
  })

  test('no Content-Type/Status, a malformed block, an oversized block, no output: 502', async () => {
    for (const script of ['no-type.sh', 'malformed.sh', 'huge-header.sh', 'no-output.sh', 'crash.sh']) {
      const r = await fetchText(port, `/cgi-bin/${script}`)
      assert.equal(r.status, 502, script)
      assert.ok(!r.text.includes('body'), script)
    }
  })

  test('an interpreter that does not exist is 502', async (t) => {
    const running = await startGatehouse(t, {
      routes: [{ path: '/', cgi: { root: CGI, interpreters: { '.py': '/nonexistent/python' } } }],
    })
    assert.equal((await fetchText(running.port, '/env.py')).status, 502)
  })

  test('a timeout before the head is 504 and the whole process group is stopped', async (t) => {
    const { port, handler } = await startCgi(t, { root: CGI, timeout: '500ms', kill_grace: '300ms' })
    const r = await fetchText(port, '/sleep.sh')
    assert.equal(r.status, 504)
    assert.ok(await eventually(() => handler.stats().running === 0))
  })

  test('a timeout after the head cuts the response; a script ignoring SIGTERM is killed', async (t) => {
    const { port, handler } = await startCgi(t, { root: CGI, timeout: '500ms', kill_grace: '300ms' })
    const partial = await rawRequest(port, 'GET /slow-body.sh HTTP/1.1\r\nHost: x\r\n\r\n', {
      waitMs: 10_000,
    })
    assert.equal(partial.status, 200)
    assert.ok(partial.text.includes('partial'))
    assert.ok(partial.closedByServer, 'the connection was cut rather than the response ended')
    assert.ok(!partial.text.endsWith('0\r\n\r\n'), 'no final chunk: the client can tell it is incomplete')
    await assert.rejects(fetchText(port, '/stubborn.sh'))
    assert.ok(await eventually(() => handler.stats().running === 0))
  })

  test('a client that disconnects gets its script stopped', async (t) => {
    const { port, handler } = await startCgi(t, { root: CGI, timeout: '60s' })
    const socket = connect(port, '127.0.0.1')
    socket.write('GET /sleep.sh HTTP/1.1\r\nHost: x\r\n\r\n')
    assert.ok(await eventually(() => handler.stats().running === 1))
    socket.destroy()
    // Far sooner than the 60 s timeout: the disconnect stopped it.
    assert.ok(await eventually(() => handler.stats().running === 0, 10_000))
  })

  test('close() lets a running script finish, then refuses new requests', async (t) => {
    // Streamed, so that the script is running while its body is still on the way.
    const listener = cgi({
      root: CGI,
      interpreters: INTERPRETERS,
      request_buffering: false,
      log: pino({ level: 'silent' }),
    })
    const server = createServer(listener)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    t.after(async () => {
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    })
    const { port } = server.address() as { port: number }
    const socket = connect(port, '127.0.0.1')
    let received = ''
    socket.on('data', (c: Buffer) => {
      received += c.toString('latin1')
    })
    // The body arrives after close() was called; the script is still answered in full.
    socket.write('POST /count.py HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nab')
    assert.ok(await eventually(() => listener.stats().running === 1))
    const closed = listener.close()
    socket.write('cd')
    await closed
    assert.ok(await eventually(() => received.includes(`bytes=4 sha1=${sha1('abcd')} cl=4`)), received)
    assert.equal((await fetchText(port, '/env.sh')).status, 503)
  })

  test('max_processes with a bounded queue: the overflow is 503, the queue drains in order', async (t) => {
    const { port, handler } = await startCgi(t, {
      root: CGI,
      max_processes: 1,
      queue: 1,
      queue_timeout: '30s',
      timeout: '60s',
    })
    const holder = connect(port, '127.0.0.1')
    holder.write('GET /sleep.sh HTTP/1.1\r\nHost: x\r\n\r\n')
    assert.ok(await eventually(() => handler.stats().running === 1))
    const queued = fetchText(port, '/env.sh')
    assert.ok(await eventually(() => handler.stats().queued === 1))
    assert.equal((await fetchText(port, '/env.sh')).status, 503)
    holder.destroy()
    assert.equal((await queued).status, 200)
  })

  test('queue_timeout: a request waiting too long for a slot is 503', async (t) => {
    const { port, handler } = await startCgi(t, {
      root: CGI,
      max_processes: 1,
      queue: 5,
      queue_timeout: '200ms',
    })
    const holder = connect(port, '127.0.0.1')
    t.after(async () => void holder.destroy())
    holder.write('GET /sleep.sh HTTP/1.1\r\nHost: x\r\n\r\n')
    assert.ok(await eventually(() => handler.stats().running === 1))
    assert.equal((await fetchText(port, '/env.sh')).status, 503)
  })

  test('a script writing 1 GiB is served in bounded memory', async () => {
    const baseline = process.memoryUsage().rss
    let peak = baseline
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss)
    }, 20)
    const total = await new Promise<number>((resolve, reject) => {
      get({ host: '127.0.0.1', port, path: '/stream-bin/big.sh' }, (res) => {
        let n = 0
        res.on('data', (c: Buffer) => {
          n += c.length
        })
        res.on('end', () => resolve(n))
        res.on('error', reject)
      }).on('error', reject)
    })
    clearInterval(sampler)
    assert.equal(total, 1024 ** 3)
    // Client and server share this process: together they held far less than the 1 GiB.
    assert.ok(peak - baseline < 200 * 1024 * 1024, `rss grew by ${Math.round((peak - baseline) / 1e6)} MB`)
  })
})

describe('CGI library API and CLI', () => {
  test('cgi({ root, ... }) is a plain node:http listener; stderr goes to the log tagged with the script', async (t) => {
    const { log, lines } = memoryLog()
    const app = cgi({ root: CGI, prefix: '/cgi', log, interpreters: { py: PYTHON } })
    // `app` itself is the listener; `app.handler` is the same function, as on a Gatehouse.
    assert.equal(app.handler, app)
    const server = createServer(app.handler)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    t.after(async () => {
      await app.close()
      await new Promise((r) => server.close(r))
    })
    const { port } = server.address() as { port: number }
    const r = await fetchText(port, '/cgi/env.sh/x')
    assert.equal(envLines(r.text).SCRIPT_NAME, '/cgi/env.sh')
    assert.equal(envLines(r.text).PATH_INFO, '/x')
    const py = await fetchText(port, '/cgi/env.py')
    assert.equal(py.status, 200)

    const s = await fetchText(port, '/cgi/stderr.sh')
    assert.equal(s.text, 'ok\n')
    assert.ok(
      await eventually(() => lines.some((l) => l.msg === 'second complaint')),
      'stderr lines reach the log',
    )
    const complaint = lines.find((l) => l.msg === 'first complaint')!
    assert.equal(complaint.script, join(CGI, 'stderr.sh'))

    assert.equal((await fetchText(port, '/cgi/no-type.sh')).status, 502)
    assert.ok(
      await eventually(() =>
        lines.some(
          (l) =>
            l.level === 50 &&
            /no-type\.sh.*missing_content_type/.test(String((l.err as { message?: string })?.message)),
        ),
      ),
      'a 502 leaves a log line naming the script and the reason',
    )
    assert.equal((await fetchText(port, '/cgi/no-output.sh')).status, 502)
    assert.ok(
      await eventually(() =>
        lines.some((l) => /exit status 3/.test(String((l.err as { message?: string })?.message))),
      ),
    )
  })

  test('cgi() validates its options with the config schema and reports every problem', () => {
    assert.throws(
      () => cgi({ root: '/nonexistent/dir', timeout: 'soon', max_proceses: 3 } as never),
      (err: unknown) => {
        assert.ok(err instanceof GatehouseError)
        assert.equal(err.code, 'GH_ERR_CONFIG')
        assert.ok(err.problems.some((p) => p.includes('no such directory')))
        assert.ok(err.problems.some((p) => p.includes('not a duration')))
        assert.ok(err.problems.some((p) => p.includes('did you mean "max_processes"')))
        return true
      },
    )
    assert.throws(() => cgi({}), /one of root .* or script/)
    // Worded as every library listener words them (php(), fastcgi(), wsgi(), asgi()).
    assert.throws(
      () => cgi({ root: CGI, index: ['ok.cgi', 'sub/index.cgi'] }),
      (err: unknown) =>
        err instanceof GatehouseError &&
        err.problems.some((p) => p.startsWith('index[1]: an index is a file name')),
    )
  })

  test('script = one program for the whole prefix: SCRIPT_NAME is the prefix, PATH_INFO the rest', async (t) => {
    const handler = cgi({ script: join(CGI, 'env.sh'), prefix: '/app' })
    const server = createServer(handler)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    t.after(async () => {
      await handler.close()
      await new Promise((r) => server.close(r))
    })
    const { port } = server.address() as { port: number }
    const env = envLines((await fetchText(port, '/app/a/b?c')).text)
    assert.equal(env.SCRIPT_NAME, '/app')
    assert.equal(env.PATH_INFO, '/a/b')
    assert.equal(env.QUERY_STRING, 'c')
  })

  test('--cgi [PREFIX=]DIR and --cgi-interpreter map onto cgi routes', () => {
    const out = applyFlags(
      {},
      { cgi: ['/cgi-bin=./bin', 'other'], cgiInterpreter: ['.py=/usr/bin/python3', '.pl=perl -T'] },
      '/srv',
    )
    const interpreters = { '.py': ['/usr/bin/python3'], '.pl': ['perl', '-T'] }
    assert.deepEqual(out.routes, [
      { path: '/cgi-bin', cgi: { root: '/srv/bin', interpreters } },
      { path: '/', cgi: { root: '/srv/other', interpreters } },
    ])
  })

  test('--cgi-interpreter without --cgi is a usage error, not silently ignored', () => {
    assert.throws(
      () => applyFlags({}, { cgiInterpreter: ['.py=/usr/bin/python3'] }, '/srv'),
      (err: unknown) => err instanceof GatehouseError && err.code === 'GH_ERR_USAGE',
    )
  })

  test('gatehouse serve --cgi runs scripts end to end', async (t) => {
    const dir = tempDir(t)
    mkdirSync(join(dir, 'bin'))
    writeFileSync(join(dir, 'bin', 'hello.py'), 'print("Content-Type: text/plain\\n\\nhello from python")\n')
    const portFile = join(dir, 'log')
    const child = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--listen',
        '127.0.0.1:0',
        '--cgi',
        '/cgi-bin=bin',
        '--cgi-interpreter',
        `.py=${PYTHON}`,
      ],
      { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
    )
    t.after(() => {
      child.kill('SIGKILL')
    })
    let stderr = ''
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString()
    })
    assert.ok(
      await eventually(() => /"listen":"127\.0\.0\.1:\d+"/.test(stderr)),
      `no listen line: ${stderr} ${portFile}`,
    )
    const cliPort = Number(/"listen":"127\.0\.0\.1:(\d+)"/.exec(stderr)![1])
    const r = await fetchText(cliPort, '/cgi-bin/hello.py')
    assert.equal(r.text, 'hello from python\n')
    child.kill('SIGTERM')
    await new Promise((r) => child.once('exit', r))
  })
})

async function echoLinesOneByOne(port: number, path: string, chunked: boolean): Promise<void> {
  const lines = ['first line\n', 'second line\n', 'third line\n']
  const socket = connect(port, '127.0.0.1')
  let received = ''
  socket.on('data', (c: Buffer) => {
    received += c.toString('latin1')
  })
  const framing = chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${lines.join('').length}`
  socket.write(`POST ${path} HTTP/1.1\r\nHost: x\r\n${framing}\r\nConnection: close\r\n\r\n`)
  try {
    for (const line of lines) {
      socket.write(chunked ? `${line.length.toString(16)}\r\n${line}\r\n` : line)
      // The echo of this line must come back before the next line is sent: nothing waits
      // for the whole body.
      assert.ok(await eventually(() => received.includes(`echo:${line}`)), `no echo of ${line}: ${received}`)
    }
    if (chunked) socket.write('0\r\n\r\n')
    assert.ok(await eventually(() => received.includes('done\n')))
  } finally {
    socket.destroy()
  }
}

function sha1(data: string | Buffer): string {
  return createHash('sha1').update(data).digest('hex')
}

function tempFiles(): string[] {
  return readdirSync(tmpdir()).filter((f) => f.startsWith('gatehouse-cgi-'))
}
