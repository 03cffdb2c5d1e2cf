/*
 * The `php` action over an upstream group of two real php-fpm pools (issue 15 item 2): each
 * pool answers with its own name, one is stopped under load and started again, and the
 * balancing, max_conns and an all-down group are checked against what the pools answer.
 */
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { Agent, request } from 'undici'
import type { GatehouseConfigInput } from '../../../src/config.js'
import { eventually, startGatehouse, tempDir } from '../../support/helpers.js'
import { get, loadWhile, upstreamServers } from '../../support/upstreams.js'
import { type PhpFpm, phpFpmUnavailable, startPhpFpm } from '../../support/php-fpm.js'

const skip = phpFpmUnavailable()

interface Setup {
  root: string
  sockets: { a: string; b: string }
  start(name: 'a' | 'b'): Promise<PhpFpm>
}

/** A document root with who.php (the pool's name) and slow.php, and a way to start pool a or b. */
function setup(t: { after: (fn: () => Promise<void> | void) => void }): Setup {
  const dir = tempDir(t, 'gh-upstreams-php-')
  const root = join(dir, 'www')
  mkdirSync(root)
  writeFileSync(join(root, 'who.php'), `<?php echo getenv('POOL');`)
  writeFileSync(
    join(root, 'slow.php'),
    `<?php usleep((int)($_GET['ms'] ?? 300) * 1000); echo getenv('POOL');`,
  )
  const sockets = { a: join(dir, 'a.sock'), b: join(dir, 'b.sock') }
  const start = async (name: 'a' | 'b') => {
    const fpm = await startPhpFpm({
      socket: sockets[name],
      maxChildren: 4,
      pool: [`env[POOL] = ${name}`, 'ping.path = /ping'],
    })
    t.after(() => fpm.stop())
    return fpm
  }
  return { root, sockets, start }
}

type GroupInput = NonNullable<GatehouseConfigInput['upstreams']>[string]

/** Start the pools in `running`, then a Gatehouse whose group is `group(a, b)` (the two pools' addresses). */
async function serve(
  t: { after: (fn: () => Promise<void> | void) => void },
  running: ('a' | 'b')[],
  group: (a: string, b: string) => GroupInput,
) {
  const s = setup(t)
  const pools: Partial<Record<'a' | 'b', PhpFpm>> = {}
  for (const name of running) pools[name] = await s.start(name)
  const { origin } = await startGatehouse(t, config(s, group(`unix:${s.sockets.a}`, `unix:${s.sockets.b}`)))
  return { origin, pools, s }
}

function config(s: Setup, group: GroupInput): GatehouseConfigInput {
  return {
    upstreams: { php: group },
    routes: [
      { exact: '/upstreams', status: { show: 'upstreams' } },
      { path: '/', php: { root: s.root, upstream: 'php' } },
    ],
  }
}

const servers = (origin: string) => upstreamServers(origin, 'php')

test(
  'a group of two php-fpm pools: one stopped under load loses no GET, is marked down, and is back in rotation once restarted',
  { skip },
  async (t) => {
    const { origin, pools, s } = await serve(t, ['a', 'b'], (a, b) => ({
      servers: [a, b],
      health: { interval: '200ms', timeout: '1s', path: '/ping' },
    }))
    const a = pools.a!
    const agent = new Agent({ connections: 8, pipelining: 1 })
    t.after(() => agent.close())

    const seen = new Set<string>()
    for (let i = 0; i < 4; i++) seen.add((await get(origin, '/who.php', agent)).body)
    assert.deepEqual([...seen].sort(), ['a', 'b'])

    // Load: 6 clients in keep-alive loops of GETs (each request waits a little in php, so
    // some are in flight on pool a when it stops); bounded by count and by the stop below.
    const statuses = await loadWhile(origin, '/slow.php?ms=5', agent, () => a.stop())
    assert.deepEqual([...statuses.keys()], [200], `every GET answered 200: ${JSON.stringify([...statuses])}`)

    await eventually(
      async () => (await servers(origin)).find((v) => v.address.endsWith('a.sock'))?.state === 'down',
      'pool a marked down on the status page',
    )
    for (let i = 0; i < 6; i++) assert.equal((await get(origin, '/who.php', agent)).body, 'b')

    await s.start('a')
    await eventually(
      async () => (await get(origin, '/who.php', agent)).body === 'a',
      'pool a back in rotation',
      20_000,
    )
    const view = await servers(origin)
    assert.equal(view.find((v) => v.address.endsWith('a.sock'))!.state, 'up')
    assert.ok(view.find((v) => v.address.endsWith('a.sock'))!.failures >= 1)
  },
)

test('a POST is not retried on another server (it may have run), a GET is', { skip }, async (t) => {
  // Server a is not running: its socket does not exist.
  const { origin } = await serve(t, ['b'], (a, b) => ({ servers: [a, b] }))
  // Equal weights: the first request goes to a, the first server.
  const post = await request(`${origin}/who.php`, { method: 'POST', body: 'x=1' })
  assert.equal(post.statusCode, 502)
  await post.body.text()
  // a is now down (max_fails 1): every request goes to b.
  for (let i = 0; i < 4; i++) {
    const r = await get(origin, '/who.php')
    assert.deepEqual([r.status, r.body], [200, 'b'])
  }
})

test(
  'a GET finds a working server when the first one is refused, and is answered by it',
  { skip },
  async (t) => {
    const { origin } = await serve(t, ['b'], (a, b) => ({ servers: [a, b] }))
    const r = await get(origin, '/who.php')
    assert.equal(r.status, 200)
    assert.equal(r.body, 'b')
    const view = await servers(origin)
    assert.deepEqual(
      view.map((v) => [v.state, v.requests, v.failures]),
      [
        ['down', 1, 1],
        ['up', 1, 0],
      ],
    )
  },
)

test('weights: requests follow the weights of the servers', { skip }, async (t) => {
  const { origin } = await serve(t, ['a', 'b'], (a, b) => ({ servers: [{ address: a, weight: 3 }, b] }))
  const counts = { a: 0, b: 0 } as Record<string, number>
  for (let i = 0; i < 40; i++) counts[(await get(origin, '/who.php')).body]!++
  // Smooth round robin gives exactly 30 and 10 when every request succeeds; the bound is loose.
  assert.ok(counts.a! >= 25 && counts.b! >= 5, JSON.stringify(counts))
})

test('least_conn sends requests away from the server that is busy', { skip }, async (t) => {
  const { origin } = await serve(t, ['a', 'b'], (a, b) => ({ balance: 'least_conn', servers: [a, b] }))
  const long = get(origin, '/slow.php?ms=3000')
  const busy = await eventually(
    async () => (await servers(origin)).find((v) => v.active === 1)?.address,
    'the long request in flight',
  )
  const other = busy.endsWith('a.sock') ? 'b' : 'a'
  for (let i = 0; i < 5; i++) assert.equal((await get(origin, '/who.php')).body, other)
  assert.equal((await long).status, 200)
})

test(
  'max_conns: a group whose servers are all at max_conns answers 503 with Retry-After; all down answers 502',
  { skip },
  async (t) => {
    const { origin } = await serve(t, ['a'], (a) => ({ servers: [{ address: a, max_conns: 1 }] }))
    const long = get(origin, '/slow.php?ms=2000')
    await eventually(async () => (await servers(origin))[0]!.active === 1, 'the long request in flight')
    const busy = await get(origin, '/who.php')
    assert.equal(busy.status, 503)
    assert.equal(busy.headers['retry-after'], '1')
    assert.equal((await long).status, 200)
    assert.equal((await get(origin, '/who.php')).status, 200)
  },
)

test('a group whose servers are all down answers 502', { skip }, async (t) => {
  const { origin } = await serve(t, [], (a, b) => ({ servers: [a, b] }))
  // Both refused (each tried once), then both marked down: 502 either way.
  assert.equal((await get(origin, '/who.php')).status, 502)
  assert.deepEqual(
    (await servers(origin)).map((v) => v.state),
    ['down', 'down'],
  )
  assert.equal((await get(origin, '/who.php')).status, 502)
})

test('the config names a group that does not exist: an error at the route path', { skip }, async () => {
  const { validateConfig } = await import('../../../src/config.js')
  assert.throws(
    () => validateConfig({ routes: [{ path: '/', php: { root: '/tmp', fastcgi: 'nosuch' } }] }),
    (err: { problems: string[] }) =>
      err.problems.some((p) => /routes\[0\]\.php\.fastcgi: no upstream group "nosuch"/.test(p)),
  )
})

test(
  'active health checks with FCGI_GET_VALUES: a server that is not running is marked down before any request reaches it',
  { skip },
  async (t) => {
    const { origin, s } = await serve(t, ['a'], (a, b) => ({
      servers: [a, b],
      health: { interval: '100ms', timeout: '1s' },
    }))
    const view = await eventually(async () => {
      const v = await servers(origin)
      return v[1]!.state === 'down' && v[0]!.checks >= 2 ? v : undefined
    }, 'the health checks')
    assert.equal(view[0]!.state, 'up')
    assert.equal(view[0]!.requests, 0)
    assert.ok(view[1]!.requests === 0)
    for (let i = 0; i < 3; i++) assert.equal((await get(origin, '/who.php')).body, 'a')
    await s.start('b')
    await eventually(async () => (await servers(origin))[1]!.state === 'up', 'b up after passing a check')
  },
)

test('the upstream figures as Prometheus metrics and as an HTML page', { skip }, async (t) => {
  const s = setup(t)
  await s.start('a')
  const base = config(s, { servers: [`unix:${s.sockets.a}`, `unix:${s.sockets.b}`] })
  const { origin } = await startGatehouse(t, {
    ...base,
    routes: [{ exact: '/metrics', metrics: {} }, ...(base.routes ?? [])],
  })
  for (let i = 0; i < 3; i++) assert.equal((await get(origin, '/who.php')).status, 200)
  const metrics = (await get(origin, '/metrics')).body
  const a = `upstream="php",server="unix:${s.sockets.a}"`
  const b = `upstream="php",server="unix:${s.sockets.b}"`
  assert.match(metrics, new RegExp(`gatehouse_upstream_requests_total\\{${a}\\} 3`))
  assert.match(metrics, new RegExp(`gatehouse_upstream_failures_total\\{${b}\\} 1`))
  assert.match(metrics, new RegExp(`gatehouse_upstream_server_state\\{${b},state="down"\\} 1`))
  assert.match(metrics, new RegExp(`gatehouse_upstream_server_state\\{${a},state="up"\\} 1`))
  assert.match(metrics, new RegExp(`gatehouse_upstream_active_requests\\{${a}\\} 0`))
  const html = await request(`${origin}/upstreams?html`)
  assert.equal(html.headers['content-type'], 'text/html;charset=UTF-8')
  const page = await html.body.text()
  assert.match(page, /<h2>php \(round_robin\)<\/h2>/)
  assert.match(page, /<tr class="down"><td>unix:[^<]*b\.sock<\/td>/)
})

test(
  'a php-fpm stopped with requests in flight: the GET is retried on the backup, the POST gets 502',
  { skip },
  async (t) => {
    const { origin, pools } = await serve(t, ['a', 'b'], (a, b) => ({
      servers: [a, { address: b, backup: true }],
    }))
    const a = pools.a!
    const getting = get(origin, '/slow.php?ms=3000')
    const posting = request(`${origin}/slow.php?ms=3000`, { method: 'POST', body: 'x=1' })
    await eventually(async () => (await servers(origin))[0]!.active === 2, 'both requests in flight on a')
    await a.stop()
    const [got, posted] = await Promise.all([getting, posting])
    assert.deepEqual([got.status, got.body], [200, 'b'])
    assert.equal(posted.statusCode, 502)
    await posted.body.text()
  },
)
