/*
 * The control API (issue 16 item 1, docs/control-api.md) of a real `gatehouse serve`, with
 * curl over its Unix socket: reading any part of the configuration in the config file's
 * shape, changing it (PUT, POST, DELETE) with the change serving at once, a refused change
 * answering 400 with every problem and changing nothing, the status, the metrics, one
 * pool's rolling restart, and the state file a restart comes back with.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { childEnv, curl, serveWithControl } from '../support/control.js'
import { startControl } from '../../src/index.js'
import {
  eventually,
  FIXTURES,
  PYTHON,
  startGatehouse,
  stopServe,
  tempDir,
  getOnce,
} from '../support/helpers.js'

const WSGI_DIR = join(FIXTURES, 'wsgi')

function configText(): string {
  return [
    'listen = ["127.0.0.1:0"]',
    'control = "unix:./control.sock"',
    '[[routes]]',
    'exact = "/hello"',
    'return = { status = 200, body = "hello" }',
    '[[routes]]',
    'path = "/app"',
    `wsgi = { app = "apps:application", chdir = ${JSON.stringify(WSGI_DIR)}, python = ${JSON.stringify(PYTHON)}, workers = 2 }`,
    '',
  ].join('\n')
}

const get = getOnce

test('GET /config and any sub-path answer the configuration as the config file has it; a missing path is 404 with a JSON error', async (t) => {
  const dir = tempDir(t, 'gh-control-')
  writeFileSync(join(dir, 'gatehouse.toml'), configText())
  const { control } = await serveWithControl(t, dir, ['--config', 'gatehouse.toml'])
  // The socket file is the server user's alone.
  assert.equal(statSync(join(dir, 'control.sock')).mode & 0o777, 0o600)

  const whole = await curl(control, 'GET', '/config')
  assert.equal(whole.status, 200)
  // The input shape: `listen` as written, no defaults filled in (no `limits`, no `log`).
  assert.deepEqual(Object.keys(whole.json as object).sort(), ['control', 'listen', 'routes'])
  assert.deepEqual((await curl(control, 'GET', '/config/routes/0')).json, {
    exact: '/hello',
    return: { status: 200, body: 'hello' },
  })
  const workers = await curl(control, 'GET', '/config/routes/1/wsgi/workers')
  assert.equal(workers.status, 200)
  assert.equal(workers.json, 2)

  for (const path of ['/config/routes/2', '/config/routes/1/wsgi/threads', '/config/nothing/here']) {
    const missing = await curl(control, 'GET', path)
    assert.equal(missing.status, 404, path)
    assert.equal((missing.json as { code: string }).code, 'GH_ERR_CONTROL_PATH', path)
  }
  const unknown = await curl(control, 'GET', '/nowhere')
  assert.equal(unknown.status, 404)
  assert.equal((unknown.json as { code: string }).code, 'GH_ERR_NOT_FOUND')
})

test('PUT, POST and DELETE change the running server at once; a bad change is 400 with every problem and changes nothing', async (t) => {
  const dir = tempDir(t, 'gh-control-')
  writeFileSync(join(dir, 'gatehouse.toml'), configText())
  const { control, port } = await serveWithControl(t, dir, ['--config', 'gatehouse.toml'])

  const added = await curl(control, 'POST', '/config/routes', {
    body: JSON.stringify({ exact: '/added', return: { status: 201, body: 'added' } }),
  })
  assert.equal(added.status, 200, added.body)
  assert.deepEqual(added.json, { success: 'configuration applied', path: '/config/routes/2' })
  assert.deepEqual(await get(port, '/added'), { status: 201, body: 'added' })

  const put = await curl(control, 'PUT', '/config/routes/0/return/body', { body: '"hello again"' })
  assert.equal(put.status, 200, put.body)
  assert.deepEqual(await get(port, '/hello'), { status: 200, body: 'hello again' })

  const before = (await curl(control, 'GET', '/config')).json
  const state = join(dir, 'gatehouse.state.json')
  const savedBefore = readFileSync(state, 'utf8')
  // Three problems in one change: every one is reported, with its path.
  const bad = await curl(control, 'PUT', '/config/routes/0', {
    body: JSON.stringify({ exact: 'no-slash', return: { status: 'teapot' }, colour: 'red' }),
  })
  assert.equal(bad.status, 400)
  const refusal = bad.json as { code: string; problems: string[] }
  assert.equal(refusal.code, 'GH_ERR_CONFIG')
  assert.equal(refusal.problems.length, 3, bad.body)
  assert.ok(
    refusal.problems.some((p) => p.startsWith('routes[0].exact: ')),
    bad.body,
  )
  assert.ok(
    refusal.problems.some((p) => p.startsWith('routes[0].return.status: ')),
    bad.body,
  )
  assert.ok(
    refusal.problems.some((p) => p.startsWith('routes[0]: unknown key "colour"')),
    bad.body,
  )
  const badWorkers = await curl(control, 'PUT', '/config/routes/1/wsgi/workers', { body: '0' })
  assert.equal(badWorkers.status, 400)
  assert.deepEqual((badWorkers.json as { problems: string[] }).problems.length, 1)
  assert.match((badWorkers.json as { problems: string[] }).problems[0]!, /^routes\[1\]\.wsgi\.workers: /)
  const notJson = await curl(control, 'PUT', '/config/routes/0', { body: '{"exact": ' })
  assert.equal(notJson.status, 400)
  assert.equal((notJson.json as { code: string }).code, 'GH_ERR_CONTROL_REQUEST')
  const notArray = await curl(control, 'POST', '/config/routes/0', { body: '{}' })
  assert.equal(notArray.status, 400)
  // Nothing changed: the configuration, the state file, and what the server answers.
  assert.deepEqual((await curl(control, 'GET', '/config')).json, before)
  assert.equal(readFileSync(state, 'utf8'), savedBefore)
  assert.deepEqual(await get(port, '/hello'), { status: 200, body: 'hello again' })
  assert.equal((await get(port, '/app/pid')).status, 200)

  const deleted = await curl(control, 'DELETE', '/config/routes/2')
  assert.equal(deleted.status, 200, deleted.body)
  assert.equal((await get(port, '/added')).status, 404)
  assert.equal((await curl(control, 'DELETE', '/config/routes/2')).status, 404)
  assert.equal(((await curl(control, 'GET', '/config/routes')).json as unknown[]).length, 2)
})

test('GET /status shows the pools, listeners, routes and front counters; GET /metrics is the Prometheus text; POST /control/pools/N/reload rolls that pool', async (t) => {
  const dir = tempDir(t, 'gh-control-')
  writeFileSync(join(dir, 'gatehouse.toml'), configText())
  const { control, port } = await serveWithControl(t, dir, ['--config', 'gatehouse.toml'])
  assert.equal((await get(port, '/hello')).status, 200)
  const pids = new Set<string>()
  for (let i = 0; i < 4; i++) pids.add((await get(port, '/app/pid')).body)

  const status = await curl(control, 'GET', '/status')
  assert.equal(status.status, 200)
  const s = status.json as {
    front: { requests_total: number; requests_by_status: Record<string, number>; open_connections: number }
    listeners: { kind: string; address: string }[]
    routes: { index: number; match: string; action: string; pool: boolean }[]
    pools: { pool: string; 'total processes': number }[]
  }
  assert.ok(s.front.requests_total >= 5, status.body)
  assert.ok((s.front.requests_by_status['2xx'] ?? 0) >= 5, status.body)
  assert.deepEqual(s.listeners, [{ kind: 'http', address: `127.0.0.1:${port}` }])
  assert.deepEqual(
    s.routes.map((r) => [r.index, r.match, r.action, r.pool]),
    [
      [0, '=/hello', 'return', false],
      [1, '/app', 'wsgi', true],
    ],
  )
  assert.deepEqual(
    s.pools.map((p) => [p.pool, p['total processes']]),
    [['wsgi', 2]],
  )

  const metrics = await curl(control, 'GET', '/metrics')
  assert.equal(metrics.status, 200)
  assert.match(
    metrics.body,
    /^gatehouse_http_requests_total\{route="\/hello",method="GET",status="2xx"\} 1$/m,
  )
  assert.match(metrics.body, /^gatehouse_pool_processes\{pool="wsgi",state="idle"\} \d+$/m)
  const promtool = await new Promise<{ code: number; out: string }>((resolve) => {
    const child = execFile('promtool', ['check', 'metrics'], { env: childEnv() }, (err, stdout, stderr) =>
      resolve({ code: err ? 1 : 0, out: stdout + stderr }),
    )
    child.stdin!.end(metrics.body)
  })
  assert.equal(promtool.code, 0, promtool.out)

  const notAPool = await curl(control, 'POST', '/control/pools/0/reload')
  assert.equal(notAPool.status, 400)
  assert.equal((await curl(control, 'POST', '/control/pools/7/reload')).status, 404)
  assert.equal((await curl(control, 'GET', '/control/pools/1/reload')).status, 405)
  const reloaded = await curl(control, 'POST', '/control/pools/1/reload')
  assert.equal(reloaded.status, 200, reloaded.body)
  // The roll is done when the answer comes: the workers are new ones.
  const after = new Set<string>()
  for (let i = 0; i < 4; i++) after.add((await get(port, '/app/pid')).body)
  assert.deepEqual(
    [...after].filter((p) => pids.has(p)),
    [],
    'no worker from before the reload',
  )
})

test('a restart comes back with the changes (the state file), unless the config file is newer; the log says which was used', async (t) => {
  const dir = tempDir(t, 'gh-control-')
  const configFile = join(dir, 'gatehouse.toml')
  writeFileSync(configFile, configText())
  // The config file is older than any state file written from now on.
  utimesSync(configFile, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000))
  const first = await serveWithControl(t, dir, ['--config', 'gatehouse.toml'])
  assert.match(first.stderr(), /"msg":"configuration from the config file [^"]*: no state file"/)
  const added = await curl(first.control, 'POST', '/config/routes', {
    body: JSON.stringify({ exact: '/kept', return: { status: 200, body: 'kept' } }),
  })
  assert.equal(added.status, 200, added.body)
  assert.equal((await curl(first.control, 'PUT', '/config/routes/1/wsgi/workers', { body: '1' })).status, 200)
  await stopServe(first.child)

  const second = await serveWithControl(t, dir, ['--config', 'gatehouse.toml'])
  assert.match(
    second.stderr(),
    /"msg":"configuration from the state file [^"]*: the state file is newer than the config file"/,
  )
  assert.deepEqual(await get(second.port, '/kept'), { status: 200, body: 'kept' })
  assert.equal((await curl(second.control, 'GET', '/config/routes/1/wsgi/workers')).json, 1)
  await stopServe(second.child)

  // Editing the config file makes it win.
  writeFileSync(configFile, configText())
  utimesSync(configFile, new Date(Date.now() + 5_000), new Date(Date.now() + 5_000))
  const third = await serveWithControl(t, dir, ['--config', 'gatehouse.toml'])
  assert.match(
    third.stderr(),
    /"msg":"configuration from the config file [^"]*: the config file is newer than the state file"/,
  )
  assert.equal((await get(third.port, '/kept')).status, 404)
  await eventually(async () => (await get(third.port, '/app/pid')).status === 200, 'the app')
})

test('started from flags, the state file ($STATE_DIRECTORY) brings the changes back with the same flags; other flags win', async (t) => {
  const dir = tempDir(t, 'gh-control-')
  const stateDir = tempDir(t, 'gh-control-state-')
  const env = { STATE_DIRECTORY: stateDir }
  const flags = (readyPath: string) => [
    '--listen',
    '127.0.0.1:0',
    '--control',
    'unix:./control.sock',
    '--static',
    dir,
    '--ready-path',
    readyPath,
  ]
  const first = await serveWithControl(t, dir, flags('/ready'), env)
  assert.match(first.stderr(), /"msg":"configuration from the flags: no state file"/)
  const added = await curl(first.control, 'POST', '/config/routes', {
    body: JSON.stringify({ exact: '/kept', return: { status: 200, body: 'kept' } }),
  })
  assert.equal(added.status, 200, added.body)
  // A route after the --static one at / would never match: put it first.
  const routes = (await curl(first.control, 'GET', '/config/routes')).json as unknown[]
  const put = await curl(first.control, 'PUT', '/config/routes', {
    body: JSON.stringify([routes.at(-1), ...routes.slice(0, -1)]),
  })
  assert.equal(put.status, 200, put.body)
  assert.deepEqual(await get(first.port, '/kept'), { status: 200, body: 'kept' })
  await stopServe(first.child)
  assert.equal(statSync(join(stateDir, 'gatehouse.state.json')).mode & 0o777, 0o600)

  const again = await serveWithControl(t, dir, flags('/ready'), env)
  assert.match(
    again.stderr(),
    /"msg":"configuration from the state file [^"]*: the state file was made with the same flags"/,
  )
  assert.deepEqual(await get(again.port, '/kept'), { status: 200, body: 'kept' })
  await stopServe(again.child)

  const other = await serveWithControl(t, dir, flags('/readyz'), env)
  assert.match(
    other.stderr(),
    /"msg":"configuration from the flags: the flags differ from those the state file was made with"/,
  )
  assert.equal((await get(other.port, '/kept')).status, 404)
})

test('a request in flight when its pool is replaced finishes on the old pool; SIGHUP puts the config file back through the same path (GET /config and the state file follow)', async (t) => {
  const dir = tempDir(t, 'gh-control-')
  writeFileSync(join(dir, 'gatehouse.toml'), configText())
  const { control, port, child } = await serveWithControl(t, dir, ['--config', 'gatehouse.toml'])
  const slow = get(port, '/app/sleep?1')
  await eventually(
    async () =>
      ((await curl(control, 'GET', '/status')).json as { front: { in_flight: number } }).front.in_flight > 0,
    'the slow request to be in flight',
  )
  const put = await curl(control, 'PUT', '/config/routes/1/wsgi/workers', { body: '1' })
  assert.equal(put.status, 200, put.body)
  assert.deepEqual(await slow, { status: 200, body: 'slept' })
  const state = join(dir, 'gatehouse.state.json')
  assert.match(readFileSync(state, 'utf8'), /"workers": 1/)

  child.kill('SIGHUP')
  await eventually(
    async () => (await curl(control, 'GET', '/config/routes/1/wsgi/workers')).json === 2,
    'the config file to be back',
  )
  await eventually(() => /"workers": 2/.test(readFileSync(state, 'utf8')), 'the state file to follow')
  await eventually(
    async () =>
      ((await curl(control, 'GET', '/status')).json as { pools: { 'total processes': number }[] }).pools
        .map((p) => p['total processes'])
        .join() === '2',
    'one pool of two workers',
  )
})

test("with --reload, a change through the API that moves an app's chdir moves the watch", async (t) => {
  const dir = tempDir(t, 'gh-control-')
  const writeApp = (where: string, version: string) =>
    writeFileSync(
      join(where, 'app.py'),
      [
        'def app(environ, start_response):',
        "    start_response('200 OK', [('Content-Type', 'text/plain')])",
        `    return [b${JSON.stringify(version)}]`,
        '',
      ].join('\n'),
    )
  const a = join(dir, 'a')
  const b = join(dir, 'b')
  mkdirSync(a)
  mkdirSync(b)
  writeApp(a, 'from-a')
  writeApp(b, 'from-b')
  const route = (chdir: string) => ({
    path: '/',
    wsgi: { app: 'app:app', python: PYTHON, workers: 1, chdir },
  })
  writeFileSync(
    join(dir, 'gatehouse.json'),
    JSON.stringify({ listen: ['127.0.0.1:0'], control: 'unix:./control.sock', routes: [route(a)] }),
  )
  const { control, port, stderr } = await serveWithControl(t, dir, ['--config', 'gatehouse.json', '--reload'])
  assert.equal((await get(port, '/')).body, 'from-a')
  const put = await curl(control, 'PUT', '/config/routes/0', { body: JSON.stringify(route(b)) })
  assert.equal(put.status, 200, put.body)
  assert.equal((await get(port, '/')).body, 'from-b')
  // The watcher adds b asynchronously (chokidar scans it first): an edit made before that is
  // not seen, so edit again, a debounce apart, until one reloads. Without the move none would.
  let reloaded = false
  for (let i = 1; !reloaded && i <= 20; i++) {
    writeApp(b, `from-b, edit ${'!'.repeat(i)}`)
    reloaded = await eventually(
      async () => (await get(port, '/')).body.startsWith('from-b, edit'),
      'an edit in b to reload',
      2_000,
    ).catch(() => false)
  }
  assert.ok(reloaded, 'an edit in b reloaded the app')
  assert.match(stderr(), /detected changes in '[^']*b\/app\.py'/)
})

test('startControl: the same API for a Gatehouse made with createGatehouse (library use)', async (t) => {
  const dir = tempDir(t, 'gh-control-')
  // The configuration the server was made with: what GET /config shows and changes apply to.
  const input = {
    listen: ['127.0.0.1:0'],
    log: { level: 'silent' as const },
    control: { listen: `unix:${join(dir, 'lib.sock')}`, state: join(dir, 'lib.state.json') },
    routes: [{ exact: '/hello', return: { status: 200, body: 'hello' } }],
  }
  const { gatehouse, port } = await startGatehouse(t, input, dir)
  const control = await startControl(gatehouse, input, { baseDir: dir })
  t.after(() => control.close())
  assert.equal(control.address, `unix:${join(dir, 'lib.sock')}`)
  assert.deepEqual((await curl(control.address, 'GET', '/config/routes/0/return')).json, {
    status: 200,
    body: 'hello',
  })
  const put = await curl(control.address, 'PUT', '/config/routes/0/return/body', { body: '"changed"' })
  assert.equal(put.status, 200, put.body)
  assert.deepEqual(await get(port, '/hello'), { status: 200, body: 'changed' })
  assert.match(readFileSync(join(dir, 'lib.state.json'), 'utf8'), /"body": "changed"/)
  const { createGatehouse } = await import('../../src/index.js')
  await assert.rejects(startControl(createGatehouse({}), {}), { code: 'GH_ERR_CONFIG' })
})
