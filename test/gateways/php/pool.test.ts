/*
 * The managed php-cgi pool (`php` action without `fastcgi`) with real php-cgi workers: each
 * process manager mode, a worker killed under load, request_terminate_timeout, max_requests,
 * the crash-loop guard, reloads under load (SIGUSR2-style and config reload), and the status
 * page against what the pool did and against a real php-fpm's page.
 */
import assert from 'node:assert/strict'
import { accessSync, constants, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import type { GatehouseConfigInput } from '../../../src/config.js'
import { fastcgiRequest } from '../../../src/gateways/fastcgi/pool.js'
import type { Gatehouse } from '../../../src/gatehouse.js'
import type { PhpHandler } from '../../../src/gateways/php/action.js'
import type { PoolConfigInput } from '../../../src/process/settings.js'
import { startGatehouse, tempDir } from '../../support/helpers.js'
import { phpFpmUnavailable, startPhpFpm } from '../../support/php-fpm.js'

const PHP_CGI = '/usr/bin/php-cgi'

function phpCgiUnavailable(): string | undefined {
  try {
    accessSync(PHP_CGI, constants.X_OK)
    return undefined
  } catch {
    return `${PHP_CGI} not found (Debian package php-cgi)`
  }
}

const SCRIPTS: Record<string, string> = {
  'index.php': `<?php echo getmypid();`,
  'sleep.php': `<?php usleep((int)($_GET['ms'] ?? 200) * 1000); echo getmypid();`,
}

type Workers = PoolConfigInput

interface Pool {
  origin: string
  gatehouse: Gatehouse
  handler: () => PhpHandler
  logFile: string
  log: () => string
}

async function startPool(
  t: { after: (fn: () => Promise<void> | void) => void },
  workers: Workers,
  extra: Record<string, unknown> = {},
): Promise<Pool> {
  const dir = tempDir(t, 'gh-pool-test-')
  for (const [name, body] of Object.entries(SCRIPTS)) writeFileSync(join(dir, name), body)
  const logFile = join(dir, 'error.log')
  const running = await startGatehouse(t, {
    log: { level: 'debug', error_log: logFile },
    routes: [
      { exact: '/status', status: { pool: workers.name ?? 'php' } },
      { exact: '/ping', status: { show: 'ping' } },
      { exact: '/pools', status: { show: 'pools' } },
      { path: '/', php: { root: dir, workers, ...extra } },
    ],
  })
  const handler = () =>
    (running.gatehouse as unknown as { state: { handlers: unknown[] } }).state.handlers[3] as PhpHandler
  return {
    origin: running.origin,
    gatehouse: running.gatehouse,
    handler,
    logFile,
    log: () => {
      running.gatehouse.logs.flush()
      try {
        return readFileSync(logFile, 'utf8')
      } catch {
        return ''
      }
    },
  }
}

async function get(
  origin: string,
  path: string,
): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  const r = await request(`${origin}${path}`)
  return { status: r.statusCode, body: await r.body.text(), headers: r.headers }
}

async function status(
  origin: string,
): Promise<Record<string, unknown> & { processes: Record<string, unknown>[] }> {
  const r = await get(origin, '/status?json&full')
  assert.equal(r.status, 200, r.body)
  return JSON.parse(r.body)
}

/** Poll until `check` holds; fails with `what` after a generous deadline (not a timing assertion). */
async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for: ${what}`)
    await sleep(50)
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe('managed php-cgi pool', { skip: phpCgiUnavailable() }, () => {
  test('static holds max_children workers, under load and after', async (t) => {
    const p = await startPool(t, { pm: 'static', max_children: 3 })
    const s0 = await status(p.origin)
    assert.equal(s0['process manager'], 'static')
    assert.equal(s0['total processes'], 3)
    assert.equal(s0['idle processes'], 3)
    const pids = new Set((s0.processes as { pid: number }[]).map((w) => w.pid))
    const bodies = await Promise.all(Array.from({ length: 12 }, () => get(p.origin, '/sleep.php?ms=100')))
    for (const b of bodies) {
      assert.equal(b.status, 200)
      assert.ok(pids.has(Number(b.body)), `pid ${b.body} is one of the pool's`)
    }
    const s1 = await status(p.origin)
    assert.equal(s1['total processes'], 3)
    assert.equal(s1['max children reached'], 0, 'static never reports max children')
    assert.deepEqual(new Set((s1.processes as { pid: number }[]).map((w) => w.pid)), pids)
  })

  test('ondemand starts none, grows to max_children under load, and shrinks after the idle timeout', async (t) => {
    const p = await startPool(t, { pm: 'ondemand', max_children: 3, process_idle_timeout: '300ms' })
    assert.equal((await status(p.origin))['total processes'], 0)
    const bodies = await Promise.all(Array.from({ length: 9 }, () => get(p.origin, '/sleep.php?ms=300')))
    assert.ok(bodies.every((b) => b.status === 200))
    const pids = new Set(bodies.map((b) => b.body))
    assert.equal(pids.size, 3, 'as many workers as max_children served the load')
    const s = await status(p.origin)
    assert.equal(s['max active processes'], 3)
    assert.ok((s['max children reached'] as number) >= 1, 'the pool hit max_children')
    assert.ok((s['max listen queue'] as number) >= 6 - 3, 'requests waited for a worker')
    assert.match(p.log(), /server reached max_children setting \(3\), consider raising it/)
    await waitFor('idle workers stopped', async () => (await status(p.origin))['total processes'] === 0)
    for (const pid of pids) await waitFor(`pid ${pid} exited`, () => !alive(Number(pid)))
  })

  test('dynamic starts start_servers and keeps idle spares within min/max spare', async (t) => {
    const p = await startPool(t, {
      pm: 'dynamic',
      max_children: 6,
      start_servers: 2,
      min_spare_servers: 1,
      max_spare_servers: 2,
    })
    const s0 = await status(p.origin)
    assert.equal(s0['total processes'], 2)
    const bodies = await Promise.all(Array.from({ length: 6 }, () => get(p.origin, '/sleep.php?ms=400')))
    assert.ok(bodies.every((b) => b.status === 200))
    assert.ok(new Set(bodies.map((b) => b.body)).size > 2, 'the pool grew past start_servers under load')
    // Above max_spare_servers idle, the oldest idle is stopped, one per maintenance round.
    await waitFor('idle back within max_spare_servers', async () => {
      const s = await status(p.origin)
      return (s['idle processes'] as number) <= 2 && (s['total processes'] as number) <= 2
    })
    const s1 = await status(p.origin)
    assert.ok((s1['idle processes'] as number) >= 1, 'min_spare_servers idle are kept')
  })

  test('kill -9 of a busy worker: its POST gets 502, the others succeed, a replacement starts', async (t) => {
    const p = await startPool(t, { pm: 'static', max_children: 2 })
    // A POST: the script may have begun, so it is not sent again (a GET would go to the
    // other worker: test/process/vanish.test.ts).
    const slow = request(`${p.origin}/sleep.php?ms=5000`, { method: 'POST', body: 'x' }).then(async (r) => ({
      status: r.statusCode,
      body: await r.body.text(),
    }))
    let victim = 0
    await waitFor('the slow request runs', async () => {
      const w = (await status(p.origin)).processes.find(
        (x) => x.state === 'Running' && String(x['request uri']).includes('ms=5000'),
      )
      victim = (w?.pid as number) ?? 0
      return victim > 0
    })
    const others = Promise.all(Array.from({ length: 20 }, () => get(p.origin, '/index.php')))
    process.kill(victim, 'SIGKILL')
    const r = await slow
    assert.equal(r.status, 502)
    const rest = await others
    assert.deepEqual(
      rest.map((x) => x.status),
      rest.map(() => 200),
    )
    await waitFor('a replacement worker', async () => {
      const s = await status(p.origin)
      return (
        s['total processes'] === 2 && s.processes.every((w) => w.pid !== victim && w.state !== 'Starting')
      )
    })
    // "unexpectedly" only when the exit was seen before the broken connection (which retires
    // the worker at once, so no other request is sent to it).
    assert.match(p.log(), new RegExp(`"worker":${victim}[^\\n]*killed by SIGKILL`))
    // Which the request sees first is a race: the worker's exit (GH_ERR_WORKER_DIED) or its
    // FastCGI connection closing under the request (GH_ERR_FASTCGI_PROTOCOL); both are a 502.
    assert.match(p.log(), /"code":"(GH_ERR_WORKER_DIED|GH_ERR_FASTCGI_PROTOCOL)"/)
  })

  test('a request past request_terminate_timeout gets 504; its worker is killed and replaced; slow log', async (t) => {
    const p = await startPool(t, {
      pm: 'static',
      max_children: 1,
      request_terminate_timeout: '500ms',
      request_slowlog_timeout: '200ms',
    })
    const before = Number((await get(p.origin, '/index.php')).body)
    const r = await get(p.origin, '/sleep.php?ms=20000')
    assert.equal(r.status, 504)
    await waitFor('the stuck worker is gone', () => !alive(before))
    const after = await get(p.origin, '/index.php')
    assert.equal(after.status, 200)
    assert.notEqual(Number(after.body), before)
    const log = p.log()
    assert.match(log, /request terminated: past request_terminate_timeout \(500 ms\)/)
    assert.match(log, /"uri":"\/sleep.php\?ms=20000"[^\n]*request terminated/)
    assert.match(log, /"method":"GET","uri":"\/sleep.php\?ms=20000"[^\n]*slow request/)
    const s = await status(p.origin)
    assert.equal(s['slow requests'], 1)
    const all = JSON.parse((await get(p.origin, '/pools')).body) as { pools: Record<string, unknown>[] }
    assert.equal(all.pools[0]!['terminated requests'], 1)
  })

  /**
   * Sequential requests to a one-worker pool until `pids` distinct workers served: every
   * request is answered, and the pool never holds more than two php-cgi processes (the
   * worker and its replacement, issue 18 item 10: the replacement starts first).
   */
  async function untilReplaced(origin: string, want: number): Promise<number[]> {
    const pids: number[] = []
    let most = 0
    const deadline = Date.now() + 20_000
    while (new Set(pids).size < want) {
      assert.ok(Date.now() < deadline, `only ${new Set(pids).size} workers seen in 20 s`)
      const r = await get(origin, '/index.php')
      assert.equal(r.status, 200)
      pids.push(Number(r.body))
      most = Math.max(most, (await status(origin))['total processes'] as number)
    }
    assert.ok(most <= 2, `${most} php-cgi processes at once for max_children 1`)
    return pids
  }

  test('max_requests recycles a worker after that many requests; its replacement starts first', async (t) => {
    const p = await startPool(t, { pm: 'static', max_children: 1, max_requests: 3 })
    const pids = await untilReplaced(p.origin, 3)
    // Each worker served at least its 3 requests (and serves on while its replacement starts).
    const served = new Map<number, number>()
    for (const pid of pids) served.set(pid, (served.get(pid) ?? 0) + 1)
    const [first, second] = [...served.values()]
    assert.ok(first! >= 3 && second! >= 3, `served ${[...served.values()].join(', ')}`)
    assert.equal(new Set(pids.slice(0, 3)).size, 1)
    assert.match(p.log(), /max_requests reached: recycling/)
  })

  test('max_rss: a worker above it is replaced, the replacement started first', async (t) => {
    // Every php-cgi worker is well above 1 MB resident: each is replaced after it is measured.
    const p = await startPool(t, { pm: 'static', max_children: 1, max_rss: '1MB' })
    await untilReplaced(p.origin, 3)
    assert.match(p.log(), /worker above max_rss: recycling/)
  })

  test("php-cgi's own request limit is off (PHP_FCGI_MAX_REQUESTS=0): one worker serves past 500", async (t) => {
    const p = await startPool(t, { pm: 'static', max_children: 1 })
    const first = (await get(p.origin, '/index.php')).body
    for (let i = 0; i < 520; i++) assert.equal((await get(p.origin, '/index.php')).body, first)
    assert.equal((await status(p.origin)).processes[0]!.requests, 521)
  })

  test('status page fields match what the pool did', async (t) => {
    const p = await startPool(t, { pm: 'static', max_children: 2, name: 'web' })
    for (let i = 0; i < 5; i++) await get(p.origin, '/index.php?n=' + i)
    const text = (await get(p.origin, '/status')).body
    assert.match(text, /^pool: {17}web\nprocess manager: {6}static\n/)
    assert.match(text, /\naccepted conn: {8}5\n/)
    assert.match(text, /\nlisten queue len: {5}256\n/)
    assert.match(text, /\ntotal processes: {6}2\n/)
    const s = await status(p.origin)
    assert.equal(s['accepted conn'], 5)
    const served = s.processes.reduce((n, w) => n + (w.requests as number), 0)
    assert.equal(served, 5)
    const last = s.processes.find((w) => w['request uri'] === '/index.php?n=4')
    assert.ok(last, 'the last request is shown with its URI')
    assert.equal(last['request method'], 'GET')
    assert.match(String(last.script), /index\.php$/)
    assert.equal(last.state, 'Idle')
    const om = await get(p.origin, '/status?openmetrics')
    assert.match(String(om.headers['content-type']), /^application\/openmetrics-text/)
    assert.match(om.body, /\nphpfpm_accepted_connections 5\n/)
    assert.match(om.body, /# EOF\n$/)
    const ping = await get(p.origin, '/ping')
    assert.equal(ping.body, 'pong')
  })

  test('a command that exits at once: the crash-loop guard stops respawning with a clear error', async (t) => {
    const dir = tempDir(t)
    const { createGatehouse } = await import('../../../src/gatehouse.js')
    const g = createGatehouse({
      listen: ['127.0.0.1:0'],
      log: { level: 'silent' },
      routes: [
        { path: '/', php: { root: dir, php_cgi: '/bin/false', workers: { pm: 'static', max_children: 2 } } },
      ],
    })
    t.after(() => g.close(0))
    await assert.rejects(g.listen(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'GH_ERR_WORKER_START')
      assert.match(err.message, /\/bin\/false exited with status 1, 5 workers in a row died/)
      assert.match(err.message, /respawning stopped/)
      return true
    })
    // A php-cgi that does not exist is known before anything starts.
    assert.throws(
      () =>
        createGatehouse({
          listen: ['127.0.0.1:0'],
          log: { level: 'silent' },
          routes: [
            {
              path: '/',
              php: { root: dir, php_cgi: '/nonexistent/php-cgi', workers: { pm: 'static', max_children: 1 } },
            },
          ],
        }),
      (err: Error & { code?: string }) =>
        err.code === 'GH_ERR_WORKER_START' &&
        /php-cgi \/nonexistent\/php-cgi: no such file/.test(err.message),
    )
  })

  test('reloading workers under concurrent load drops nothing; new workers replace the old', async (t) => {
    const p = await startPool(t, { pm: 'static', max_children: 2 })
    const oldPids = new Set((await status(p.origin)).processes.map((w) => w.pid))
    let stop = false
    const statuses: number[] = []
    const client = async () => {
      while (!stop) statuses.push((await get(p.origin, '/sleep.php?ms=20')).status)
    }
    const clients = Array.from({ length: 8 }, client)
    await sleep(200)
    await p.gatehouse.reloadWorkers()
    await sleep(200)
    await p.gatehouse.reloadWorkers()
    await sleep(200)
    stop = true
    await Promise.all(clients)
    assert.ok(statuses.length > 16)
    assert.deepEqual(
      statuses.filter((s) => s !== 200),
      [],
    )
    const s = await status(p.origin)
    for (const w of s.processes) assert.ok(!oldPids.has(w.pid as number), 'only new workers left')
    for (const pid of oldPids) await waitFor(`old worker ${pid} exited`, () => !alive(pid as number))
  })

  test('a config reload under load starts a new pool, drains the old one, drops nothing', async (t) => {
    const p = await startPool(t, { pm: 'static', max_children: 2 })
    const oldPids = new Set((await status(p.origin)).processes.map((w) => w.pid as number))
    let stop = false
    const statuses: number[] = []
    const client = async () => {
      while (!stop) statuses.push((await get(p.origin, '/sleep.php?ms=20')).status)
    }
    const clients = Array.from({ length: 8 }, client)
    await sleep(200)
    const config = p.gatehouse.config
    const route = config.routes[3]!
    await p.gatehouse.reload({
      ...config,
      listen: config.listen,
      routes: [
        ...config.routes.slice(0, 3),
        { path: '/', php: { root: route.php!.root, workers: { pm: 'static', max_children: 3 } } },
      ],
    } as unknown as GatehouseConfigInput)
    await sleep(300)
    stop = true
    await Promise.all(clients)
    assert.deepEqual(
      statuses.filter((s) => s !== 200),
      [],
    )
    for (const pid of oldPids) await waitFor(`old worker ${pid} exited`, () => !alive(pid))
    assert.equal((await status(p.origin))['total processes'], 3)
  })

  test('pool keys are validated with their path; a status page with no such pool is 503', async (t) => {
    const { validateConfig } = await import('../../../src/config.js')
    const dir = tempDir(t)
    assert.throws(
      () =>
        validateConfig({
          routes: [
            {
              path: '/',
              php: { root: dir, workers: { pm: 'dynamic', max_children: 2, max_spare_servers: 4 } },
            },
          ],
        }),
      (err: Error & { problems: string[] }) => {
        assert.ok(
          err.problems.some((p) =>
            p.startsWith('routes[0].php.workers.max_spare_servers: must not exceed max_children'),
          ),
          err.problems.join('\n'),
        )
        return true
      },
    )
    const p = await startPool(t, { pm: 'ondemand', max_children: 1, name: 'mine' })
    const other = await startGatehouse(t, { routes: [{ exact: '/status', status: { pool: 'nope' } }] })
    const r = await get(other.origin, '/status')
    assert.equal(r.status, 503)
    assert.match(r.body, /no worker pool named nope/)
    assert.equal((await get(p.origin, '/status')).status, 200)
  })

  test('a full queue answers 503 with Retry-After', async (t) => {
    const p = await startPool(t, { pm: 'static', max_children: 1, queue: 1 })
    const results = await Promise.all(Array.from({ length: 4 }, () => get(p.origin, '/sleep.php?ms=300')))
    const refused = results.filter((r) => r.status === 503)
    assert.ok(refused.length >= 1, 'at least one request found the queue full')
    for (const r of refused) assert.equal(r.headers['retry-after'], '1')
    assert.ok(results.some((r) => r.status === 200))
  })
})

describe('status page format against php-fpm', { skip: phpCgiUnavailable() ?? phpFpmUnavailable() }, () => {
  let fpm: Awaited<ReturnType<typeof startPhpFpm>>
  before(async () => {
    fpm = await startPhpFpm()
  })
  after(() => fpm?.stop())

  const fpmPage = async (query: string) => {
    const r = await fastcgiRequest(fpm.address, {
      params: {
        SCRIPT_NAME: '/status',
        SCRIPT_FILENAME: '/status',
        REQUEST_METHOD: 'GET',
        QUERY_STRING: query,
        REQUEST_URI: `/status?${query}`,
      },
    })
    let body = ''
    for await (const chunk of r.body) body += chunk
    return { body, headers: new Map(r.headers.map(([k, v]) => [k.toLowerCase(), v])) }
  }

  /** Labels in order, and the first column's width (`pool:                 www`). */
  const shape = (text: string) =>
    text
      .split('\n')
      .filter((l) => l.includes(':') && !l.startsWith('*'))
      .map((l) => l.replace(/^([a-zA-Z ]+: *).*$/, '$1'))

  test('text, full, json, json&full and openmetrics have php-fpm 8.2 names, order and layout', async (t) => {
    // As many workers as the php-fpm peer's static pool (2), so the &full pages have as many blocks.
    const p = await startPool(t, { pm: 'static', max_children: 2 })
    await get(p.origin, '/index.php')
    for (const query of ['', 'full']) {
      const ours = (await get(p.origin, `/status?${query}`)).body
      const theirs = (await fpmPage(query)).body
      assert.deepEqual(shape(ours), shape(theirs), `?${query}`)
      assert.equal(
        ours.includes('\n\n************************\n'),
        theirs.includes('\n\n************************\n'),
      )
    }
    for (const query of ['json', 'json&full']) {
      const ours = await get(p.origin, `/status?${query}`)
      const theirs = await fpmPage(query)
      assert.equal(ours.headers['content-type'], theirs.headers.get('content-type'))
      const a = JSON.parse(ours.body) as Record<string, unknown> & { processes?: Record<string, unknown>[] }
      const b = JSON.parse(theirs.body) as Record<string, unknown> & { processes?: Record<string, unknown>[] }
      assert.deepEqual(Object.keys(a), Object.keys(b), query)
      if (b.processes) assert.deepEqual(Object.keys(a.processes![0]!), Object.keys(b.processes[0]!))
      for (const key of Object.keys(b)) assert.equal(typeof a[key], typeof b[key], key)
    }
    for (const [query, tag] of [
      ['html', /<th>[^<]+<\/th>/g],
      ['xml', /<[a-z-]+>/g],
    ] as const) {
      const ours = await get(p.origin, `/status?${query}`)
      const theirs = await fpmPage(query)
      assert.equal(ours.headers['content-type'], theirs.headers.get('content-type'), query)
      assert.deepEqual(ours.body.match(tag), theirs.body.match(tag), query)
    }
    const names = (text: string) =>
      text
        .split('\n')
        .filter((l) => l.startsWith('#'))
        .map((l) => l.replace(/ \d+$/, ''))
    const ours = (await get(p.origin, '/status?openmetrics')).body
    const theirs = (await fpmPage('openmetrics')).body
    assert.deepEqual(
      names(ours).map((l) => l.replace(/pool \S+ using a \S+ PM/, 'pool X using a Y PM')),
      names(theirs).map((l) => l.replace(/pool \S+ using a \S+ PM/, 'pool X using a Y PM')),
    )
  })
})
