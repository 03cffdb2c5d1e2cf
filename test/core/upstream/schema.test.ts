import assert from 'node:assert/strict'
import { test } from 'node:test'
import { validateConfig } from '../../../src/config.js'
import '../../../src/gateways/all.js'
import { GatehouseError } from '../../../src/core/errors.js'

function problems(input: unknown): string[] {
  try {
    validateConfig(input, '/srv')
  } catch (err) {
    assert.ok(err instanceof GatehouseError)
    return [...err.problems]
  }
  return []
}

test('an upstream key takes one address as before, a list, or a group name; upstream is its alias', () => {
  const config = validateConfig(
    {
      upstreams: {
        app: {
          servers: [
            '10.0.0.5:3031',
            { address: 'unix:./app.sock', weight: 3, fail_timeout: '30s', backup: true },
          ],
          balance: 'least_conn',
          health: { path: '/healthz' },
        },
      },
      routes: [
        { path: '/a', fastcgi: { pass: '9000' } },
        { path: '/b', fastcgi: { upstream: ['10.0.0.5:9000', '10.0.0.6:9000'] } },
        { path: '/c', uwsgi: { upstream: 'app' } },
      ],
    },
    '/srv',
  )
  const [a, b, c] = config.routes as unknown as { [k: string]: { pass: unknown } }[]
  assert.equal(a!.fastcgi!.pass, '127.0.0.1:9000')
  assert.deepEqual(
    (b!.fastcgi!.pass as { spec: { servers: { address: string }[] } }).spec.servers.map((s) => s.address),
    ['10.0.0.5:9000', '10.0.0.6:9000'],
  )
  const group = c!.uwsgi!.pass as { kind: string; name: string; spec: Record<string, unknown> }
  assert.equal(group.kind, 'upstream-group')
  assert.equal(group.name, 'app')
  assert.deepEqual(group.spec.servers, [
    { address: '10.0.0.5:3031', weight: 1, max_fails: 1, fail_timeout: 10_000, max_conns: 0, backup: false },
    {
      address: 'unix:/srv/app.sock',
      weight: 3,
      max_fails: 1,
      fail_timeout: 30_000,
      max_conns: 0,
      backup: true,
    },
  ])
  assert.equal(group.spec.balance, 'least_conn')
  assert.deepEqual(group.spec.health, {
    interval: 5000,
    timeout: 2000,
    passes: 1,
    fails: 1,
    path: '/healthz',
    status: [],
  })
  assert.deepEqual(group.spec.next_upstream, ['error', 'timeout'])
})

test('upstream config errors are reported at their paths, all at once', () => {
  const found = problems({
    upstreams: { app: { servers: [], balance: 'random' }, 'bad/name': { servers: ['1.2.3.4:5'] } },
    routes: [
      { path: '/a', fastcgi: { pass: '10.0.0.5:9000', upstream: 'app' } },
      { path: '/b', uwsgi: { pass: 'nosuch' } },
      { path: '/c', fastcgi: {} },
      { path: '/d', uwsgi: { pass: [{ address: 'x', weight: 0 }] } },
    ],
  }).join('\n')
  assert.match(found, /upstreams\.app\.servers: a group needs at least one server/)
  assert.match(found, /upstreams\.app\.balance/)
  assert.match(found, /upstreams\.bad\/name: a group name is letters/)
  assert.match(found, /routes\[0\]\.fastcgi\.upstream: give pass or upstream, not both/)
  assert.match(found, /routes\[1\]\.uwsgi\.pass: no upstream group "nosuch"/)
  assert.match(found, /routes\[2\]\.fastcgi\.pass: give pass \(or upstream\)/)
  assert.match(found, /routes\[3\]\.uwsgi\.pass\[0\]\.address: expected host:port/)
  assert.match(found, /routes\[3\]\.uwsgi\.pass\[0\]\.weight/)
})
