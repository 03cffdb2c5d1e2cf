/*
 * log.access_format as a template of nginx variables (issue 17: nginx's log_format,
 * gunicorn's --access-logformat): the line a real request writes, escaping, the pool's
 * worker, an unknown variable refused by the schema, and the combined format unchanged.
 */
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { applyFlags } from '../../src/cli/flags.js'
import { validateConfig } from '../../src/config.js'
import { GatehouseError } from '../../src/core/errors.js'
import { FIXTURES, PYTHON, startGatehouse, tempDir } from '../support/helpers.js'
import { startUwsgi } from '../support/peer-uwsgi.js'

/** The access log's lines once it has `count` of them (the file is written asynchronously). */
async function logLines(file: string, count = 1): Promise<string[]> {
  const deadline = Date.now() + 5000
  for (;;) {
    let text = ''
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      // not created yet
    }
    const lines = text.split('\n').filter((l) => l !== '')
    if (lines.length >= count) return lines
    if (Date.now() > deadline) assert.fail(`${file}: ${lines.length} of ${count} lines: ${text}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

function problemsOf(input: unknown): string[] {
  try {
    validateConfig(input)
  } catch (err) {
    assert.ok(err instanceof GatehouseError)
    assert.equal(err.code, 'GH_ERR_CONFIG')
    return [...err.problems]
  }
  assert.fail('config was accepted')
}

describe('access log template (log.access_format with $variables)', () => {
  test('a template of several variables: the line of a request with a custom header and a query string', async (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'a.txt'), 'hello')
    const log = join(dir, 'access.log')
    const format =
      '$remote_addr $remote_user [$time_local] "$request" $request_method $request_uri $uri args=$args ' +
      '$server_protocol $status $body_bytes_sent $bytes_sent $host "$http_x_request_id" "$http_user_agent" ' +
      '$sent_http_content_length ${sent_http_content_type} rt=$request_time urt=$upstream_response_time ' +
      'pool=$pool pid=$worker_pid $time_iso8601 $msec'
    const { port, origin } = await startGatehouse(t, {
      log: { access_log: log, access_format: format },
      routes: [{ path: '/', static: { root: dir } }],
    })
    const r = await fetch(`${origin}/a.txt?x=1&y=two`, {
      headers: {
        'X-Request-Id': 'req-42',
        'User-Agent': 'tester/1.0',
        Authorization: `Basic ${Buffer.from('alice:secret').toString('base64')}`,
      },
    })
    assert.equal(await r.text(), 'hello')
    const [line] = await logLines(log)
    const m =
      /^127\.0\.0\.1 alice \[(\d{2}\/\w{3}\/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] "GET \/a\.txt\?x=1&y=two HTTP\/1\.1" GET \/a\.txt\?x=1&y=two \/a\.txt args=x=1&y=two HTTP\/1\.1 200 5 (\d+) 127\.0\.0\.1 "req-42" "tester\/1\.0" 5 text\/plain; charset=utf-8 rt=(\d+\.\d{3}) urt=- pool=- pid=- (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00) (\d+\.\d{3})$/.exec(
        line!,
      )
    assert.ok(m, line)
    const [, , bytesSent, requestTime, , msec] = m
    // The head and the 5 body bytes.
    assert.ok(Number(bytesSent) > 5 + 'HTTP/1.1 200 OK\r\n'.length, line)
    assert.ok(Number(requestTime) < 5, line)
    assert.ok(Math.abs(Number(msec) * 1000 - Date.now()) < 10_000, line)
    assert.ok(port > 0)
  })

  test('values are escaped as nginx escapes them: a quote and a backslash in $http_user_agent', async (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'a.txt'), 'A')
    const log = join(dir, 'access.log')
    const { origin } = await startGatehouse(t, {
      log: { access_log: log, access_format: '"$http_user_agent" "$http_referer" $args' },
      routes: [{ path: '/', static: { root: dir } }],
    })
    const r = await fetch(`${origin}/a.txt`, { headers: { 'user-agent': 'a"b\\', referer: 'x\t\u00e9' } })
    assert.equal(r.status, 200)
    await r.arrayBuffer()
    const [line] = await logLines(log)
    assert.equal(line, '"a\\x22b\\x5C" "x\\x09\\xE9" -')
  })

  test('a pooled request names its pool (wsgi, the default name), worker pid and the time the worker took', async (t) => {
    const dir = tempDir(t)
    const log = join(dir, 'access.log')
    const { origin } = await startGatehouse(t, {
      log: {
        access_log: log,
        access_format: '$uri $status $pool $worker_pid $upstream_response_time $request_time',
      },
      routes: [
        {
          path: '/',
          wsgi: { app: 'apps:application', python: PYTHON, chdir: join(FIXTURES, 'wsgi'), workers: 1 },
        },
      ],
    })
    const pid = await (await fetch(`${origin}/pid`)).text()
    assert.match(pid, /^\d+$/)
    assert.equal(await (await fetch(`${origin}/sleep?0.2`)).text(), 'slept')
    const lines = await logLines(log, 2)
    assert.match(lines[0]!, new RegExp(`^/pid 200 wsgi ${pid} \\d+\\.\\d{3} \\d+\\.\\d{3}$`))
    const m = new RegExp(`^/sleep 200 wsgi ${pid} (\\d+\\.\\d{3}) (\\d+\\.\\d{3})$`).exec(lines[1]!)
    assert.ok(m, lines[1])
    const [, upstream, total] = m.map(Number)
    assert.ok(upstream! >= 0.19 && upstream! <= total! + 0.001, lines[1])
  })

  test('$upstream_response_time for uwsgi (a real uWSGI) and CGI: the upstream time; "-" for a static file', async (t) => {
    const dir = tempDir(t)
    const log = join(dir, 'access.log')
    const uwsgi = await startUwsgi(t, dir, { processes: 1 })
    writeFileSync(join(dir, 'a.txt'), 'a')
    const { origin } = await startGatehouse(t, {
      log: { access_log: log, access_format: '$uri $status $upstream_response_time $upstream_addr' },
      routes: [
        { path: '/u/', uwsgi: { pass: uwsgi.address } },
        { path: '/cgi/', cgi: { root: join(FIXTURES, 'cgi') } },
        { path: '/', static: { root: dir } },
      ],
    })
    for (const path of ['/u/', '/cgi/cookies.sh', '/a.txt'])
      await (await fetch(`${origin}${path}`)).arrayBuffer()
    const lines = await logLines(log, 3)
    assert.match(lines[0]!, /^\/u\/ \d{3} \d+\.\d{3} unix:\/\S+\/uwsgi\.sock$/)
    assert.match(lines[1]!, /^\/cgi\/cookies\.sh 299 \d+\.\d{3} -$/)
    assert.equal(lines[2], '/a.txt 200 - -')
  })

  test('an unknown variable is a config error naming it and the known ones', () => {
    const problems = problemsOf({ log: { access_format: '$remote_addr $reqest_time $status' } })
    assert.equal(problems.length, 1, problems.join('\n'))
    assert.match(problems[0]!, /^log\.access_format: unknown variable "\$reqest_time"; known: /)
    assert.match(problems[0]!, /\$request_time/)
    assert.match(problems[0]!, /\$http_NAME/)
    assert.match(problemsOf({ log: { access_format: 'comined' } })[0]!, /"combined", "json" or a template/)
    assert.match(problemsOf({ log: { access_format: '$status $' } })[0]!, /names no variable/)
    assert.equal(
      validateConfig({ log: { access_format: '$status ${http_x_a}' } }).log.access_format,
      '$status ${http_x_a}',
    )
  })

  test('--access-log-format sets log.access_format; --access-format is its alias', () => {
    const fmt = '$remote_addr $status'
    assert.deepEqual(applyFlags({}, { accessLogFormat: fmt }, '/').log, { access_format: fmt })
    assert.deepEqual(applyFlags({}, { accessFormat: 'json' }, '/').log, { access_format: 'json' })
  })

  test("'combined' is unchanged", async (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'a.txt'), 'hello')
    const log = join(dir, 'access.log')
    const { origin } = await startGatehouse(t, {
      log: { access_log: log, access_format: 'combined' },
      routes: [{ path: '/', static: { root: dir } }],
    })
    const r = await fetch(`${origin}/a.txt?q=1`, { headers: { 'user-agent': 'a"b\\', referer: 'http://r/' } })
    await r.text()
    const [line] = await logLines(log)
    assert.match(
      line!,
      /^127\.0\.0\.1 - - \[\d{2}\/\w{3}\/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "GET \/a\.txt\?q=1 HTTP\/1\.1" 200 5 "http:\/\/r\/" "a\\x22b\\x5C"$/,
    )
  })
})
