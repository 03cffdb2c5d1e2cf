import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { GatehouseError } from '../../../src/core/errors.js'
import {
  type UpstreamGroupSpec,
  type UpstreamLease,
  type UpstreamServer,
  type UpstreamServerSpec,
  UpstreamGroup,
  isIdempotent,
  tryUpstreams,
} from '../../../src/core/upstream/index.js'

function server(address: string, extra: Partial<UpstreamServerSpec> = {}): UpstreamServerSpec {
  return { address, weight: 1, max_fails: 1, fail_timeout: 10_000, max_conns: 0, backup: false, ...extra }
}

function spec(servers: UpstreamServerSpec[], extra: Partial<UpstreamGroupSpec> = {}): UpstreamGroupSpec {
  return {
    name: 'g',
    servers,
    balance: 'round_robin',
    tries: 0,
    try_timeout: 0,
    next_upstream: ['error', 'timeout'],
    ...extra,
  }
}

function clock() {
  let t = 1_000_000
  return { now: () => t, advance: (ms: number) => (t += ms) }
}

/** A lease on `server`: the picks before it are released at once (successes). */
function leaseOn(group: UpstreamGroup, server: UpstreamServer): UpstreamLease {
  for (;;) {
    const lease = group.acquire()
    if (lease.server === server) return lease
    lease.release()
  }
}

/** Acquire and release at once, n times: the addresses picked. */
function picks(group: UpstreamGroup, n: number): string[] {
  const out: string[] = []
  for (let i = 0; i < n; i++) {
    const lease = group.acquire()
    out.push(lease.server.address)
    lease.release()
  }
  return out
}

test('round robin is smooth and weighted, as nginx: weights 5,1,1 give a a b a c a a', () => {
  const group = new UpstreamGroup(spec([server('a', { weight: 5 }), server('b'), server('c')]))
  assert.deepEqual(picks(group, 7), ['a', 'a', 'b', 'a', 'c', 'a', 'a'])
})

test('round robin gives each server exactly its weight in every cycle (property)', () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 10 }), { minLength: 1, maxLength: 6 }),
      fc.integer({ min: 1, max: 4 }),
      (weights, cycles) => {
        const group = new UpstreamGroup(spec(weights.map((w, i) => server(`s${i}`, { weight: w }))))
        const total = weights.reduce((a, b) => a + b, 0)
        const counts = new Map<string, number>()
        for (const a of picks(group, total * cycles)) counts.set(a, (counts.get(a) ?? 0) + 1)
        weights.forEach((w, i) => assert.equal(counts.get(`s${i}`), w * cycles))
      },
    ),
  )
})

test('least_conn takes the server with the fewest requests in flight per weight', () => {
  const group = new UpstreamGroup(spec([server('a'), server('b', { weight: 2 })], { balance: 'least_conn' }))
  const held = [group.acquire(), group.acquire(), group.acquire()]
  // b (weight 2) takes two for every one on a.
  const on = (addr: string) => held.filter((l) => l.server.address === addr).length
  assert.equal(on('a'), 1)
  assert.equal(on('b'), 2)
  held.find((l) => l.server.address === 'b')!.release()
  assert.equal(group.acquire().server.address, 'b')
})

test('max_fails failures within fail_timeout take a server out; after fail_timeout one trial request brings it back', () => {
  const c = clock()
  const group = new UpstreamGroup(spec([server('a', { max_fails: 2, fail_timeout: 1000 }), server('b')]), {
    now: c.now,
  })
  const a = group.servers[0]!
  const fail = () => leaseOn(group, a).release('failure')
  fail()
  assert.equal(a.state(c.now()), 'up')
  fail()
  assert.equal(a.state(c.now()), 'down')
  assert.deepEqual(picks(group, 4), ['b', 'b', 'b', 'b'])
  c.advance(1001)
  assert.equal(a.state(c.now()), 'checking')
  // One trial: while it is in flight, the others go to b.
  const leases = [group.acquire(), group.acquire(), group.acquire()]
  const trials = leases.filter((l) => l.server === a)
  assert.equal(trials.length, 1)
  assert.equal(trials[0]!.trial, true)
  for (const l of leases) if (l.server !== a) l.release()
  trials[0]!.release('success')
  assert.equal(a.state(c.now()), 'up')
  assert.ok(picks(group, 4).includes('a'))
})

test('a failed trial keeps the server down for another fail_timeout; failures spread beyond fail_timeout do not add up', () => {
  const c = clock()
  const group = new UpstreamGroup(spec([server('a', { max_fails: 2, fail_timeout: 1000 }), server('b')]), {
    now: c.now,
  })
  const a = group.servers[0]!
  leaseOn(group, a).release('failure')
  c.advance(1500)
  leaseOn(group, a).release('failure')
  assert.equal(a.state(c.now()), 'up', 'the first failure was outside the window')
  leaseOn(group, a).release('failure')
  assert.equal(a.state(c.now()), 'down')
  c.advance(1001)
  leaseOn(group, a).release('failure')
  assert.equal(a.state(c.now()), 'down')
  c.advance(999)
  assert.deepEqual(picks(group, 2), ['b', 'b'])
  c.advance(2)
  assert.equal(a.state(c.now()), 'checking')
})

test('the only server of a group is never marked down by failures (nginx rule)', () => {
  const group = new UpstreamGroup(spec([server('a')]))
  for (let i = 0; i < 5; i++) group.acquire().release('failure')
  assert.equal(group.servers[0]!.state(Date.now()), 'up')
  assert.equal(group.servers[0]!.failures, 5)
})

test('max_conns caps a server; every up server capped is GH_ERR_UPSTREAM_BUSY (503), every server down GH_ERR_UPSTREAM_DOWN (502)', () => {
  const group = new UpstreamGroup(spec([server('a', { max_conns: 1 }), server('b', { max_conns: 2 })]))
  const held = [group.acquire(), group.acquire(), group.acquire()]
  assert.throws(
    () => group.acquire(),
    (err: GatehouseError) => err.code === 'GH_ERR_UPSTREAM_BUSY' && err.status === 503,
  )
  for (const l of held) l.release('failure')
  assert.throws(
    () => group.acquire(),
    (err: GatehouseError) => err.code === 'GH_ERR_UPSTREAM_DOWN' && err.status === 502,
  )
})

test('a backup server takes requests only while no primary can', () => {
  const group = new UpstreamGroup(spec([server('a', { max_conns: 1 }), server('z', { backup: true })]))
  assert.deepEqual(picks(group, 3), ['a', 'a', 'a'])
  const held = group.acquire()
  assert.equal(group.acquire().server.address, 'z')
  held.release()
})

test('tryUpstreams retries an idempotent request on another server, never the same one', async () => {
  const group = new UpstreamGroup(spec([server('a'), server('b'), server('c')]))
  const seen: string[] = []
  const { result, lease, tries } = await tryUpstreams({
    group,
    retryable: true,
    attempt: async (s) => {
      seen.push(s.address)
      if (s.address !== 'c') throw new GatehouseError('GH_ERR_UPSTREAM_CONNECT', s.address)
      return 'ok'
    },
  })
  lease.release()
  assert.equal(result, 'ok')
  assert.equal(tries, 3)
  assert.deepEqual(seen, ['a', 'b', 'c'])
  assert.equal(group.servers[0]!.state(Date.now()), 'down')
})

test('tryUpstreams does not retry what may not be retried, nor an error that is not the server fault', async () => {
  const group = new UpstreamGroup(spec([server('a'), server('b')]))
  // How many tries a request that fails with `err` gets.
  const triesOf = async (retryable: boolean, err: GatehouseError) => {
    let n = 0
    await assert.rejects(
      tryUpstreams({
        group,
        retryable,
        attempt: async () => {
          n++
          throw err
        },
      }),
      { code: err.code },
    )
    return n
  }
  assert.equal(await triesOf(false, new GatehouseError('GH_ERR_UPSTREAM_CONNECT')), 1)
  assert.equal(await triesOf(true, new GatehouseError('GH_ERR_BODY_TOO_LARGE')), 1)
  assert.deepEqual(
    group.servers.map((s) => s.active),
    [0, 0],
  )
  assert.equal(
    group.servers.reduce((a, s) => a + s.failures, 0),
    1,
  )
})

test('tryUpstreams stops at tries; a next_upstream status is retried, and returned (marked failed) when it is the last', async () => {
  const group = new UpstreamGroup(
    spec([server('a', { max_fails: 0 }), server('b', { max_fails: 0 }), server('c', { max_fails: 0 })], {
      tries: 2,
      next_upstream: ['error', 'timeout', 'http_503'],
    }),
  )
  const discarded: string[] = []
  const { result, lease, tries } = await tryUpstreams({
    group,
    retryable: true,
    attempt: async (s) => ({ from: s.address, status: 503 }),
    status: (r) => r.status,
    discard: (r) => discarded.push(r.from),
  })
  assert.equal(tries, 2)
  assert.equal(discarded.length, 1)
  assert.notEqual(result.from, discarded[0])
  assert.equal(lease.outcome, 'failure')
  lease.release()
  assert.equal(
    group.servers.reduce((a, s) => a + s.failures, 0),
    2,
  )
})

test('an active health check marks a server down after fails probes and up after passes', async () => {
  const group = new UpstreamGroup(
    spec([server('a'), server('b')], {
      health: { interval: 3_600_000, timeout: 50, passes: 2, fails: 2, status: [] },
    }),
  )
  let healthy = false
  group.startHealthChecks(async (s) => {
    if (s.address === 'a' && !healthy) throw new Error('refused')
  })
  await group.checkNow()
  await group.checkNow()
  const a = group.servers[0]!
  assert.equal(a.state(Date.now()), 'down')
  assert.equal(group.stats().servers[0]!.last_error, 'refused')
  assert.deepEqual(picks(group, 3), ['b', 'b', 'b'])
  healthy = true
  await group.checkNow()
  assert.equal(a.state(Date.now()), 'down')
  await group.checkNow()
  assert.equal(a.state(Date.now()), 'up')
  group.close()
})

test('a probe that does not settle within timeout fails', async () => {
  const group = new UpstreamGroup(
    spec([server('a'), server('b')], {
      health: { interval: 3_600_000, timeout: 20, passes: 1, fails: 1, status: [] },
    }),
  )
  group.startHealthChecks((s, signal) =>
    s.address === 'a'
      ? new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)))
      : Promise.resolve(),
  )
  await group.checkNow()
  assert.equal(group.servers[0]!.state(Date.now()), 'down')
  assert.match(group.servers[0]!.lastError ?? '', /timed out/)
  group.close()
})

test('isIdempotent knows RFC 9110 idempotent methods', () => {
  for (const m of ['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE', 'get']) assert.ok(isIdempotent(m), m)
  for (const m of ['POST', 'PATCH', 'CONNECT']) assert.ok(!isIdempotent(m), m)
})
