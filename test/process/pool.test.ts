/*
 * The pool (WorkerPool) with a generic worker that is not PHP: a small Python program
 * (test/fixtures/supervisor/worker.py) binding the socket it is given. Dispatch with
 * capacity > 1, the bounded queue, dump_signal on terminate, the crash-loop guard, output
 * tagging, close without leftovers, and php-fpm's validation of the pool keys.
 */
import assert from 'node:assert/strict'
import { existsSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { type GatehouseError } from '../../src/core/errors.js'
import type { WorkerLease } from '../../src/process/lease.js'
import { poolSettings, poolSettingsSchema } from '../../src/process/settings.js'
import { ask, makePool } from '../support/generic-pool.js'
import { tempDir } from '../support/helpers.js'

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for: ${what}`)
    await sleep(20)
  }
}

const info = { method: 'GET', uri: '/x' }

describe('WorkerPool with a generic worker', () => {
  test('capacity > 1: leases go to the least loaded worker; past capacity they wait their turn', async (t) => {
    const { pool } = makePool(t, { pm: 'static', max_children: 2 }, { capacity: 3 })
    await pool.start()
    const leases = await Promise.all(Array.from({ length: 6 }, () => pool.acquire(info)))
    const perWorker = new Map<number, number>()
    for (const l of leases) perWorker.set(l.pid, (perWorker.get(l.pid) ?? 0) + 1)
    assert.deepEqual([...perWorker.values()], [3, 3])
    // The answers come from the leased worker, over its own socket.
    const pids = await Promise.all(leases.map((l) => ask(l)))
    assert.deepEqual(
      pids,
      leases.map((l) => l.pid),
    )
    let seventh: WorkerLease | undefined
    const waiting = pool.acquire(info).then((l) => (seventh = l))
    await sleep(50)
    assert.equal(seventh, undefined, 'no worker has room')
    assert.equal(pool.status().listenQueue, 1)
    leases[4]!.release()
    leases[4]!.release() // a second release is ignored
    await waiting
    assert.equal(seventh!.pid, leases[4]!.pid, 'the freed slot went to the waiter')
    for (const l of [...leases, seventh!]) l.release()
    const s = pool.status()
    assert.equal(s.acceptedConn, 7)
    assert.equal(s.activeProcesses, 0)
    assert.equal(s.maxActiveProcesses, 2)
    // The seventh waited (at least the 50 ms slept above) and is counted with its wait.
    assert.equal(s.queuedRequests, 1)
    assert.ok(s.queueWaitMs >= 45, `waited ${s.queueWaitMs} ms`)
  })

  test('a choice (ASGI WebSockets): its load counts first, full workers are passed over, all full is 503 at once', async (t) => {
    const { pool } = makePool(t, { pm: 'static', max_children: 2 }, { capacity: 3 })
    await pool.start()
    // What the caller holds per worker after its leases end (open WebSockets), capped at 2.
    const held = new Map<number, number>()
    const load = (id: number) => held.get(id) ?? 0
    const choice = {
      load,
      full: (id: number) => load(id) >= 2,
      fullReason: 'holds 2 of these',
      taken: (id: number) => held.set(id, load(id) + 1),
    }
    const ws = { ...info, choice }
    const pids: number[] = []
    // Each lease ends at once (a handshake), so without the choice the same idle worker
    // would take every one.
    for (let i = 0; i < 4; i++) {
      const l = await pool.acquire(ws)
      pids.push(l.pid)
      l.release()
    }
    assert.equal(new Set(pids).size, 2, `pids ${pids.join(' ')}`)
    assert.deepEqual([...held.values()], [2, 2])
    await assert.rejects(pool.acquire(ws), (err: GatehouseError) => {
      assert.equal(err.code, 'GH_ERR_OVERLOADED')
      assert.equal(err.retryAfter, 1)
      assert.match(err.message, /every worker holds 2 of these/)
      return true
    })
    // A plain request ignores the choice.
    const plain = await pool.acquire(info)
    plain.release()
    // One of them ends: the next goes to its worker.
    const [freed] = [...held.keys()]
    held.set(freed!, 1)
    const next = await pool.acquire(ws)
    assert.equal(next.workerId, freed)
    next.release()
    assert.equal(pool.status().acceptedConn, 6)
  })

  test('queue full and queue_timeout: GH_ERR_OVERLOADED with Retry-After; an aborted wait leaves the queue', async (t) => {
    const { pool } = makePool(t, { pm: 'static', max_children: 1, queue: 1, queue_timeout: '100ms' })
    await pool.start()
    const held = await pool.acquire(info)
    const timedOut = pool.acquire(info)
    await assert.rejects(pool.acquire(info), (err: GatehouseError) => {
      assert.equal(err.code, 'GH_ERR_OVERLOADED')
      assert.equal(err.retryAfter, 1)
      assert.match(err.message, /queue full/)
      return true
    })
    await assert.rejects(timedOut, /no worker free within 100 ms/)
    const ac = new AbortController()
    const aborted = pool.acquire(info, ac.signal)
    ac.abort(new Error('client left'))
    await assert.rejects(aborted, /client left/)
    assert.equal(pool.status().listenQueue, 0)
    held.release()
  })

  test('terminate timeout with dump_signal: the worker prints its stack, is killed, the lease aborts with 504', async (t) => {
    const { pool, lines } = makePool(
      t,
      { pm: 'static', max_children: 1, request_terminate_timeout: '300ms' },
      { dump_signal: 'SIGUSR1' },
    )
    await pool.start()
    const lease = await pool.acquire({ method: 'POST', uri: '/stuck' })
    const pid = lease.pid
    const answer = ask(lease, 60_000).catch((e: unknown) => e)
    await new Promise((resolve) => lease.signal.addEventListener('abort', resolve, { once: true }))
    const reason = lease.signal.reason as GatehouseError
    assert.equal(reason.code, 'GH_ERR_WORKER_TIMEOUT')
    assert.equal(reason.status, 504)
    assert.match(reason.message, /POST \/stuck ran past 300 ms; worker pid \d+ killed/)
    await waitFor('the stuck worker exits', () => !alive(pid))
    assert.ok((await answer) instanceof Error)
    lease.release()
    // faulthandler's dump on SIGUSR1 reaches the log, tagged with the pool and the pid.
    await waitFor('the stack dump in the log', () =>
      lines.some(
        (l) =>
          l.pool === 'py' &&
          l.worker === pid &&
          l.stream === 'stderr' &&
          /most recent call first/.test(String(l.msg)),
      ),
    )
    assert.ok(lines.some((l) => l.uri === '/stuck' && /request terminated/.test(String(l.msg))))
    const next = await pool.acquire(info)
    assert.notEqual(next.pid, pid, 'a replacement serves the next request')
    next.release()
    assert.equal(pool.status().terminatedRequests, 1)
  })

  test('worker output lines go to the log with pool name, worker pid and stream', async (t) => {
    const { pool, lines } = makePool(t, { pm: 'static', max_children: 1 })
    await pool.start()
    const pid = pool.status().workers[0]!.pid
    await waitFor('the start line', () =>
      lines.some(
        (l) =>
          l.pool === 'py' && l.worker === pid && l.stream === 'stdout' && /listening on/.test(String(l.msg)),
      ),
    )
    // The worker's pid is `worker`; `pid` stays the server's (pino's base), not a second key.
    const line = lines.find((l) => l.worker === pid && l.stream === 'stdout')!
    assert.equal(line.pid, process.pid)
  })

  test('a worker that exits at once: start() rejects after the crash-loop guard, acquire() too', async (t) => {
    const { pool, lines } = makePool(t, { pm: 'dynamic', max_children: 4 }, {}, { WORKER_EXIT_AT_ONCE: '1' })
    await assert.rejects(pool.start(), (err: GatehouseError) => {
      assert.equal(err.code, 'GH_ERR_WORKER_START')
      assert.match(
        err.message,
        /exited with status 3, 5 workers in a row died without serving a request; respawning stopped/,
      )
      return true
    })
    assert.equal(pool.status().failed, true)
    await assert.rejects(pool.acquire(info), { code: 'GH_ERR_WORKER_START' })
    const spawned = lines.filter((l) => /unexpectedly/.test(String(l.msg))).length
    await sleep(300)
    assert.equal(
      lines.filter((l) => /unexpectedly/.test(String(l.msg))).length,
      spawned,
      'respawning stopped',
    )
    assert.equal(pool.status().totalProcesses, 0)
  })

  test('reload: new workers replace the old; a generation that cannot start leaves the old one serving', async (t) => {
    const flag = join(tempDir(t), 'broken')
    const { pool } = makePool(t, { pm: 'static', max_children: 2 }, {}, { WORKER_FAIL_IF_EXISTS: flag })
    await pool.start()
    const first = pool.status().workers.map((w) => w.pid)
    const held = await pool.acquire(info)
    await pool.reload()
    const second = pool
      .status()
      .workers.filter((w) => w.state === 'Idle')
      .map((w) => w.pid)
    assert.equal(second.length, 2)
    for (const pid of second) assert.ok(!first.includes(pid))
    assert.ok(alive(held.pid), 'the old worker finishes its lease')
    assert.equal(await ask(held), held.pid)
    held.release()
    await waitFor('old workers gone', () => first.every((pid) => !alive(pid)))

    writeFileSync(flag, '')
    await assert.rejects(pool.reload(), { code: 'GH_ERR_WORKER_START' })
    assert.deepEqual(
      pool.status().workers.map((w) => w.pid),
      second,
    )
    const lease = await pool.acquire(info)
    assert.ok(second.includes(lease.pid), 'the old generation still serves')
    lease.release()
    assert.equal(pool.status().failed, false)
    rmSync(flag)
    await pool.reload()
    await waitFor('the second generation gone', () => second.every((pid) => !alive(pid)))
    assert.ok(pool.status().workers.every((w) => !second.includes(w.pid)))
    assert.equal(pool.status().reloads, 3)
  })

  test('close() waits for leases within the grace, then stops every worker; nothing is left behind', async (t) => {
    const { pool } = makePool(t, { pm: 'static', max_children: 3 })
    await pool.start()
    const pids = pool.status().workers.map((w) => w.pid)
    const sockets = pool.status().workers.map(() => '')
    const lease = await pool.acquire(info)
    sockets[0] = lease.socketPath
    let closed = false
    const closing = pool.close(10_000).then(() => (closed = true))
    await assert.rejects(pool.acquire(info), /shutting down/)
    await sleep(100)
    assert.equal(closed, false, 'a lease in flight holds the close')
    assert.equal(await ask(lease), lease.pid, 'the busy worker still serves its request')
    lease.release()
    await closing
    for (const pid of pids) assert.equal(alive(pid), false, `pid ${pid} reaped`)
    assert.equal(existsSync(sockets[0]!), false, 'socket directory removed')
  })

  test('ondemand: a worker per waiting request up to max_children, then the max_children warning', async (t) => {
    const { pool, lines } = makePool(t, { pm: 'ondemand', max_children: 2 })
    await pool.start()
    assert.equal(pool.status().totalProcesses, 0)
    const leases = await Promise.all([pool.acquire(info), pool.acquire(info)])
    assert.notEqual(leases[0].pid, leases[1].pid)
    const third = pool.acquire(info)
    await waitFor('max_children warning', () =>
      lines.some((l) => /server reached max_children setting \(2\), consider raising it/.test(String(l.msg))),
    )
    assert.equal(pool.status().maxChildrenReached, 1)
    leases[0].release()
    ;(await third).release()
    leases[1].release()
  })
})

describe('pool settings validation (php-fpm rules)', () => {
  test('every problem is reported at once', () => {
    const r = poolSettingsSchema().safeParse({
      pm: 'dynamic',
      max_children: 2,
      min_spare_servers: 3,
      max_spare_servers: 1,
      start_servers: 5,
      bogus: 1,
    })
    assert.equal(r.success, false)
    const messages = r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`)
    assert.ok(messages.some((m) => m.startsWith('min_spare_servers: must not exceed max_children')))
    assert.ok(messages.some((m) => m.startsWith('min_spare_servers: must not exceed max_spare_servers')))
    assert.ok(messages.some((m) => m.startsWith('start_servers: must be between')))
    assert.ok(messages.some((m) => /bogus/.test(m)))
  })

  test('defaults are php-fpm www.conf: dynamic, 5 children, start 2, spares 1..3', () => {
    const s = poolSettings('www', poolSettingsSchema().parse({}))
    assert.equal(s.mode, 'dynamic')
    assert.equal(s.max_children, 5)
    assert.equal(s.start_servers, 2)
    assert.equal(s.min_spare_servers, 1)
    assert.equal(s.max_spare_servers, 3)
    assert.equal(s.process_idle_timeout, 10_000)
    assert.equal(s.stop_signal, 'SIGQUIT')
    // Unlike php-fpm, a memory limit per worker is on by default (issue 18, item 14).
    assert.equal(s.max_rss, 512 * 1024 * 1024)
  })
})
