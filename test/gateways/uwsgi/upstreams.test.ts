/*
 * The `uwsgi` action over an upstream group of two real uWSGI servers (issue 15 item 2):
 * each answers with its own name; one is stopped under load and started again; health
 * checks over the uwsgi protocol; a list of addresses given in place.
 */
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { Agent, request } from 'undici'
import type { GatehouseConfigInput } from '../../../src/config.js'
import { startControl } from '../../../src/index.js'
import { curl } from '../../support/control.js'
import { eventually, startGatehouse, tempDir } from '../../support/helpers.js'
import { get, loadWhile, upstreamServers } from '../../support/upstreams.js'
import { startUwsgi, type UwsgiPeer } from '../../support/peer-uwsgi.js'

type GroupInput = NonNullable<GatehouseConfigInput['upstreams']>[string]

interface Setup {
  dir: string
  address(name: 'a' | 'b'): string
  start(name: 'a' | 'b'): Promise<UwsgiPeer>
}

function setup(t: { after: (fn: () => Promise<void> | void) => void }): Setup {
  const dir = tempDir(t, 'gh-upstreams-uwsgi-')
  return {
    dir,
    address: (name) => `unix:${join(dir, `${name}.sock`)}`,
    start: (name) =>
      startUwsgi(t, dir, {
        name,
        module: 'who:application',
        processes: 2,
        env: { POOL: name, HEALTH_FILE: join(dir, `${name}.sick`) },
      }),
  }
}

function config(group: GroupInput | string[]): GatehouseConfigInput {
  const named = !Array.isArray(group)
  return {
    ...(named ? { upstreams: { app: group } } : {}),
    routes: [
      { exact: '/upstreams', status: { show: 'upstreams' } },
      { path: '/', uwsgi: { upstream: named ? 'app' : group } },
    ],
  }
}

const servers = (origin: string) => upstreamServers(origin)
const statusAndBody = (r: { status: number; body: string }) => [r.status, r.body]

test('a group of two uWSGI servers: one stopped under load loses no GET, is marked down, and is back once restarted', async (t) => {
  const s = setup(t)
  const a = await s.start('a')
  await s.start('b')
  const { origin } = await startGatehouse(
    t,
    config({
      servers: [s.address('a'), s.address('b')],
      health: { interval: '200ms', timeout: '1s', path: '/health' },
    }),
  )
  const agent = new Agent({ connections: 8, pipelining: 1 })
  t.after(() => agent.close())
  const seen = new Set<string>()
  for (let i = 0; i < 4; i++) seen.add((await get(origin, '/', agent)).body)
  assert.deepEqual([...seen].sort(), ['a', 'b'])

  const statuses = await loadWhile(origin, '/?ms=5', agent, () => a.stop())
  assert.deepEqual([...statuses.keys()], [200], `every GET answered 200: ${JSON.stringify([...statuses])}`)
  await eventually(async () => (await servers(origin))[0]!.state === 'down', 'server a marked down')
  for (let i = 0; i < 4; i++) assert.equal((await get(origin, '/', agent)).body, 'b')

  await s.start('a')
  await eventually(
    async () => (await get(origin, '/', agent)).body === 'a',
    'server a back in rotation',
    20_000,
  )
  assert.equal((await servers(origin))[0]!.state, 'up')
})

test('a health check that answers 503 takes a uWSGI server out until it answers 200 again', async (t) => {
  const s = setup(t)
  await s.start('a')
  await s.start('b')
  const { origin } = await startGatehouse(
    t,
    config({
      servers: [s.address('a'), s.address('b')],
      health: { interval: '100ms', timeout: '1s', path: '/health', fails: 2, passes: 2 },
    }),
  )
  writeFileSync(join(s.dir, 'a.sick'), '')
  await eventually(async () => (await servers(origin))[0]!.state === 'down', 'a marked down by its checks')
  for (let i = 0; i < 4; i++) assert.equal((await get(origin, '/')).body, 'b')
  const { rmSync } = await import('node:fs')
  rmSync(join(s.dir, 'a.sick'))
  await eventually(async () => (await servers(origin))[0]!.state === 'up', 'a up after two passing checks')
  const seen = new Set<string>()
  for (let i = 0; i < 4; i++) seen.add((await get(origin, '/')).body)
  assert.deepEqual([...seen].sort(), ['a', 'b'])
})

test('a list of addresses in place of one: a POST on the stopped server gets 502, a GET is retried', async (t) => {
  const s = setup(t)
  await s.start('b')
  const { origin } = await startGatehouse(t, config([s.address('a'), s.address('b')]))
  const post = await request(`${origin}/`, { method: 'POST', body: 'x=1' })
  assert.equal(post.statusCode, 502)
  await post.body.text()
  const view = await servers(origin)
  assert.equal(view[0]!.state, 'down')
  const r = await get(origin, '/')
  assert.deepEqual([r.status, r.body], [200, 'b'])
})

test('weights over uWSGI servers', async (t) => {
  const s = setup(t)
  await s.start('a')
  await s.start('b')
  const weighted = await startGatehouse(
    t,
    config({ servers: [{ address: s.address('a'), weight: 4 }, s.address('b')] }),
  )
  const counts: Record<string, number> = { a: 0, b: 0 }
  for (let i = 0; i < 50; i++) counts[(await get(weighted.origin, '/')).body]!++
  assert.ok(counts.a! >= 30 && counts.b! >= 5, JSON.stringify(counts))
})

test('a reload keeps the state of a group whose table did not change, and starts a changed group over', async (t) => {
  const s = setup(t)
  await s.start('b')
  const input = config({ servers: [s.address('a'), s.address('b')] })
  const { gatehouse, origin } = await startGatehouse(t, input)
  assert.equal((await get(origin, '/')).body, 'b')
  assert.equal((await servers(origin))[0]!.state, 'down')
  // The same table: the group (its counters, a down) is kept.
  assert.equal(
    await gatehouse.reload({ ...input, listen: gatehouse.config.listen, log: { level: 'silent' } }),
    true,
  )
  assert.deepEqual(
    (await servers(origin)).map((v) => [v.state, v.requests]),
    [
      ['down', 1],
      ['up', 1],
    ],
  )
  // A changed table (a weight): a new group, every server up again.
  const changed = config({ servers: [s.address('a'), { address: s.address('b'), weight: 2 }] })
  assert.equal(
    await gatehouse.reload({ ...changed, listen: gatehouse.config.listen, log: { level: 'silent' } }),
    true,
  )
  await eventually(
    async () => (await servers(origin)).every((v) => v.state === 'up' && v.requests === 0),
    'the new group',
  )
  assert.equal((await get(origin, '/')).status, 200)
})

test('next_upstream http_503: a GET answered 503 by one server is tried on the other; without it the 503 is relayed', async (t) => {
  const s = setup(t)
  await s.start('a')
  await s.start('b')
  writeFileSync(join(s.dir, 'a.sick'), '')
  const servers2 = [s.address('a'), s.address('b')]
  const retrying = await startGatehouse(
    t,
    config({ servers: servers2, next_upstream: ['error', 'timeout', 'http_503'] }),
  )
  // Round robin starts at a, which answers /health with 503: the client sees b's 200.
  for (let i = 0; i < 3; i++)
    assert.deepEqual(statusAndBody(await get(retrying.origin, '/health')), [200, 'ok'])
  const view = await servers(retrying.origin)
  assert.equal(view[0]!.failures, 1)
  assert.equal(view[0]!.state, 'down')
})

test('the 503 of a server is relayed as it is when next_upstream does not name it', async (t) => {
  const s = setup(t)
  await s.start('a')
  await s.start('b')
  writeFileSync(join(s.dir, 'a.sick'), '')
  const { origin } = await startGatehouse(t, config({ servers: [s.address('a'), s.address('b')] }))
  const answers = new Set<string>()
  for (let i = 0; i < 4; i++) answers.add(statusAndBody(await get(origin, '/health')).join(' '))
  assert.deepEqual([...answers].sort(), ['200 ok', '503 sick'])
  assert.deepEqual(
    (await servers(origin)).map((v) => [v.state, v.failures]),
    [
      ['up', 0],
      ['up', 0],
    ],
  )
})

test('$upstream_addr lists every server a retried request was sent to', async (t) => {
  const s = setup(t)
  await s.start('b')
  const log = join(s.dir, 'access.log')
  const { origin } = await startGatehouse(t, {
    ...config([s.address('a'), s.address('b')]),
    log: { access_log: log, access_format: '$uri $status $upstream_addr' },
  })
  assert.equal((await get(origin, '/x')).body, 'b')
  assert.equal((await get(origin, '/y')).body, 'b')
  const lines = await eventually(() => {
    const l = readFileSync(log, 'utf8').split('\n').filter(Boolean)
    return l.length >= 2 ? l : undefined
  }, 'two access log lines')
  assert.deepEqual(lines, [`/x 200 ${s.address('a')}, ${s.address('b')}`, `/y 200 ${s.address('b')}`])
})

test('the control API: GET /status lists the groups, and a PUT of a server weight applies as a new group', async (t) => {
  const s = setup(t)
  await s.start('a')
  await s.start('b')
  const input = {
    ...config({ servers: [s.address('a'), s.address('b')] }),
    listen: ['127.0.0.1:0'],
    log: { level: 'silent' as const },
    control: { listen: `unix:${join(s.dir, 'control.sock')}`, state: join(s.dir, 'state.json') },
  }
  const { gatehouse, origin } = await startGatehouse(t, input, s.dir)
  const control = await startControl(gatehouse, input, { baseDir: s.dir })
  t.after(() => control.close())
  await get(origin, '/')
  const status = (await curl(control.address, 'GET', '/status')).json as {
    upstreams: { name: string; servers: { address: string; requests: number }[] }[]
    routes: { upstream?: string }[]
  }
  assert.equal(status.upstreams[0]!.name, 'app')
  assert.deepEqual(
    status.upstreams[0]!.servers.map((v) => [v.address, v.requests]),
    [
      [s.address('a'), 1],
      [s.address('b'), 0],
    ],
  )
  assert.equal(status.routes[1]!.upstream, 'app')
  const put = await curl(control.address, 'PUT', '/config/upstreams/app/servers/1', {
    body: JSON.stringify({ address: s.address('b'), weight: 3 }),
  })
  assert.equal(put.status, 200, put.body)
  const counts: Record<string, number> = { a: 0, b: 0 }
  for (let i = 0; i < 8; i++) counts[(await get(origin, '/')).body]!++
  // Weights 1 and 3: 2 and 6 when every request succeeds; the bound is loose.
  assert.ok(counts.b! >= 5, JSON.stringify(counts))
})
