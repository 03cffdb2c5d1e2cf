import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { gatehouseSchema, loadConfigFile, validateConfig } from '../../src/config.js'
import { configSchema } from '../../src/config/schema.js'
import type { GatewayDefinition } from '../../src/core/types.js'
import { GATEWAYS } from '../../src/gateways/all.js'
import { ACTION_NAMES } from '../../src/gateways/index.js'
import { parseDuration, parseSize } from '../../src/core/schema/units.js'
import { GatehouseError } from '../../src/core/errors.js'
import { tempDir } from '../support/helpers.js'

function problemsOf(input: unknown, baseDir?: string): string[] {
  try {
    validateConfig(input, baseDir)
  } catch (err) {
    assert.ok(err instanceof GatehouseError)
    assert.equal(err.code, 'GH_ERR_CONFIG')
    return [...err.problems]
  }
  assert.fail('config was accepted')
}

describe('config schema', () => {
  test('defaults: loopback listener, limits on, durations in ms, sizes in bytes', () => {
    const c = validateConfig({})
    assert.deepEqual(c.listen, ['127.0.0.1:8080'])
    assert.equal(c.limits.header_timeout, 10_000)
    assert.equal(c.limits.keepalive_timeout, 5_000)
    assert.equal(c.limits.max_header_bytes, 16 * 1024)
    assert.equal(c.limits.max_body_bytes, 1024 * 1024 * 1024)
    assert.equal(c.limits.max_headers, 100)
    assert.equal(c.shutdown_grace, 10_000)
    assert.equal(c.log.access_log, 'off')
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.limits))
  })

  test('units: numbers are seconds/bytes, strings carry units', () => {
    assert.equal(parseDuration('500ms'), 500)
    assert.equal(parseDuration('2m'), 120_000)
    assert.equal(parseDuration(1.5), 1500)
    assert.equal(parseDuration('soon'), null)
    assert.equal(parseSize('16k'), 16384)
    assert.equal(parseSize('10MB'), 10 * 1024 * 1024)
    assert.equal(parseSize('1GiB'), 1024 ** 3)
    assert.equal(parseSize(-1), null)
    const c = validateConfig({ limits: { header_timeout: '2s', max_body_bytes: '64k' } })
    assert.equal(c.limits.header_timeout, 2000)
    assert.equal(c.limits.max_body_bytes, 65536)
  })

  test('unknown keys are rejected with a hint naming the closest key', () => {
    assert.deepEqual(problemsOf({ lisen: ['127.0.0.1:1'] }), [
      '(top level): unknown key "lisen" (did you mean "listen"?)',
    ])
    const [p] = problemsOf({ limits: { max_header_byte: 1 } })
    assert.equal(p, 'limits: unknown key "max_header_byte" (did you mean "max_header_bytes"?)')
    const [q] = problemsOf({ routes: [{ path: '/', statc: { root: '.' } }] })
    assert.match(q!, /^routes\[0\]: unknown key "statc" \(did you mean "static"\?\)/)
  })

  test('every problem is reported at once, each with its path', (t) => {
    const dir = tempDir(t)
    const problems = problemsOf(
      {
        listen: ['127.0.0.1:99999', 'nowhere'],
        limits: { header_timeout: 'soon' },
        routes: [
          { path: '/', static: { root: dir } },
          { path: '/a' },
          { path: '/b', static: { root: 'missing-dir' } },
          { path: 'no-slash', return: { status: 200 } },
          { path: '/c', exact: '/c', return: { status: 301 } },
          { regex: '(', return: {} },
        ],
      },
      dir,
    )
    const expect = [
      /^listen\[0\]: port out of range: 99999$/,
      /^listen\[1\]: expected host:port/,
      /^limits\.header_timeout: not a duration/,
      /^routes\[1\]: a route needs one action: static, return/,
      /^routes\[2\]\.static\.root: no such directory \(.*missing-dir\)$/,
      /^routes\[3\]\.path: a path starts with "\/"/,
      /^routes\[4\]: give one of path, exact, regex \(got path and exact\)$/,
      /^routes\[4\]\.return\.location: status 301 needs a location$/,
      /^routes\[5\]\.regex: not a valid regular expression$/,
    ]
    for (const re of expect)
      assert.ok(
        problems.some((p) => re.test(p)),
        `missing ${re} in\n${problems.join('\n')}`,
      )
  })

  test('a route with two actions is refused', (t) => {
    const dir = tempDir(t)
    const [p] = problemsOf({ routes: [{ path: '/', static: { root: dir }, return: {} }] })
    assert.equal(p, 'routes[0]: a route has exactly one action (got static and return)')
  })

  test('header_timeout may not exceed request_timeout', () => {
    const [p] = problemsOf({ limits: { header_timeout: 30, request_timeout: 10 } })
    assert.equal(p, 'limits.header_timeout: must not exceed request_timeout')
  })

  test('return: CR/LF in header values and unknown placeholders are refused', () => {
    const problems = problemsOf({
      routes: [{ path: '/', return: { headers: { 'x-a': 'a\r\nb' }, body: '{nope}' } }],
    })
    assert.ok(
      problems.some((p) => p === 'routes[0].return.headers.x-a: CR, LF or NUL in a header value'),
      problems.join('\n'),
    )
    assert.ok(
      problems.some((p) => p.startsWith('routes[0].return: unknown placeholder {nope}')),
      problems.join('\n'),
    )
  })

  test('listen accepts host:port, [v6]:port, a bare port and unix:/path', () => {
    const c = validateConfig({ listen: ['0.0.0.0:80', '[::1]:8080', '9000', 'unix:/run/gh.sock'] })
    assert.equal(c.listen.length, 4)
    assert.match(problemsOf({ listen: ['::1:80'] })[0]!, /IPv6 addresses need brackets/)
    assert.equal(
      problemsOf({ listen: ['http://127.0.0.1:18050'] })[0]!,
      'listen[0]: a scheme is not part of an address: write "127.0.0.1:18050", not "http://127.0.0.1:18050" (http:// is not needed)',
    )
    assert.match(problemsOf({ listen: ['https://[::1]:8443/'] })[0]!, /write "\[::1\]:8443"/)
  })

  test('TOML files: relative paths resolve against the file; syntax errors name the line', (t) => {
    const dir = tempDir(t)
    mkdirSync(join(dir, 'public'))
    writeFileSync(
      join(dir, 'good.toml'),
      'listen = "127.0.0.1:0"\n[[routes]]\npath = "/"\nstatic = { root = "public" }\n',
    )
    const c = loadConfigFile(join(dir, 'good.toml'))
    assert.deepEqual(c.listen, ['127.0.0.1:0'])
    assert.equal((c.routes[0]!.static as { root: string }).root, join(dir, 'public'))

    writeFileSync(join(dir, 'bad.toml'), 'listen = ["a"\n[log\n')
    assert.throws(
      () => loadConfigFile(join(dir, 'bad.toml')),
      (err: unknown) => err instanceof GatehouseError && /bad\.toml:\d+:\d+: /.test(err.problems[0] ?? ''),
    )
  })

  test('JSON config files are accepted too', (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ routes: [{ exact: '/x', return: { body: 'x' } }] }))
    assert.equal(loadConfigFile(join(dir, 'c.json')).routes.length, 1)
  })

  test('an empty config file is a config error, not a server with every default (a reload catching a file mid-write)', (t) => {
    const dir = tempDir(t)
    for (const text of ['', '  \n\n']) {
      writeFileSync(join(dir, 'empty.toml'), text)
      assert.throws(
        () => loadConfigFile(join(dir, 'empty.toml')),
        (err: unknown) =>
          err instanceof GatehouseError && /empty\.toml: the file is empty/.test(err.problems[0] ?? ''),
      )
    }
  })

  test('a missing config file is a config error naming it', () => {
    assert.throws(
      () => loadConfigFile('/nonexistent/gatehouse.toml'),
      (err: unknown) =>
        err instanceof GatehouseError && err.problems[0] === '/nonexistent/gatehouse.toml: no such file',
    )
  })
})

describe('gateways', () => {
  test('each action is listed under its own name, and no two gateways share an action or a config key', () => {
    const actionKeys: string[] = []
    const listenerKeys: string[] = []
    for (const gateway of GATEWAYS as readonly GatewayDefinition[]) {
      for (const [key, action] of Object.entries(gateway.actions ?? {})) {
        assert.equal(action.name, key, `gateway ${gateway.name}`)
        actionKeys.push(key)
      }
      if (gateway.listener) listenerKeys.push(...Object.keys(gateway.listener.shape()))
    }
    assert.deepEqual(actionKeys, ACTION_NAMES)
    assert.equal(new Set(actionKeys).size, actionKeys.length)
    assert.equal(new Set(listenerKeys).size, listenerKeys.length)
    assert.deepEqual(ACTION_NAMES, [
      'static',
      'return',
      'uwsgi',
      'cgi',
      'fastcgi',
      'php',
      'status',
      'metrics',
      'wsgi',
      'asgi',
      'proxy',
    ])
    const topLevel = Object.keys(gatehouseSchema({ baseDir: '/' }).shape)
    for (const key of listenerKeys) assert.ok(topLevel.includes(key), key)
  })

  test('configSchema takes the gateways it knows: a route action of no given gateway is an unknown key', () => {
    const schema = configSchema({ baseDir: '/' }, [GATEWAYS[0]])
    assert.ok(schema.safeParse({ routes: [{ path: '/', static: { root: '/' } }] }).success)
    const result = schema.safeParse({ routes: [{ path: '/', return: { body: 'x' } }] })
    assert.ok(!result.success)
    assert.match(result.error.issues.map((i) => i.message).join('\n'), /unknown key "return"/)
  })
})
