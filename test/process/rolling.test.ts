/*
 * Rolling replacement (issue 18 item 10): a reload, and a wave of max_requests recycles,
 * replace workers reload_surge at a time, each replacement ready before the worker it
 * replaces is retired. Under load, the pool never holds more than its workers + surge
 * (a whole second generation is what OOM-kills a one-worker pod, gunicorn#1642), and no
 * request fails. The generic worker (test/fixtures/supervisor/worker.py) starts slowly here,
 * as an app with a heavy import does, so that starting and serving overlap.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { WorkerPool } from '../../src/process/pool.js'
import { ask, makePool } from '../support/generic-pool.js'
import { tempDir } from '../support/helpers.js'

const info = { method: 'GET', uri: '/x' }
/** The worker's environment for a start that takes `ms` (an app with a heavy import). */
const slow = (ms: number) => ({ WORKER_START_DELAY_MS: String(ms) })

/**
 * `clients` loops of acquire, a 5 ms request, release, while `during` runs; the most
 * processes the pool held at once (sampled every 5 ms), the pids that answered, the failures.
 */
async function underLoad(
  pool: WorkerPool,
  clients: number,
  during: (pids: ReadonlySet<number>) => Promise<void>,
) {
  let running = true
  let most = 0
  const pids = new Set<number>()
  const failures: unknown[] = []
  let served = 0
  const sampler = (async () => {
    while (running) {
      most = Math.max(most, pool.status().totalProcesses)
      await sleep(5)
    }
  })()
  const loops = Array.from({ length: clients }, async () => {
    while (running) {
      try {
        const lease = await pool.acquire(info)
        try {
          pids.add(await ask(lease, 5))
          served++
        } finally {
          lease.release()
        }
      } catch (err) {
        failures.push(err)
      }
    }
  })
  try {
    await during(pids)
  } finally {
    running = false
    await Promise.all([...loops, sampler])
  }
  return { most, pids, failures, served }
}

describe('rolling replacement', () => {
  test('a rolling reload under load: never more than workers + reload_surge, nothing fails, every worker replaced', async (t) => {
    const { pool, lines } = makePool(t, { pm: 'static', max_children: 3 }, {}, slow(200))
    await pool.start()
    const first = pool.status().workers.map((w) => w.pid)
    const load = await underLoad(pool, 6, async () => {
      await sleep(100)
      await pool.reload()
      await pool.reload()
      await sleep(100)
    })
    assert.deepEqual(load.failures, [])
    assert.ok(load.most <= 4, `${load.most} workers at once for max_children 3, reload_surge 1`)
    const now = pool.status().workers.filter((w) => w.state !== 'Finishing')
    assert.equal(now.length, 3)
    for (const w of now) assert.ok(!first.includes(w.pid), 'every worker was replaced')
    assert.ok(lines.some((l) => /replacing 3 workers, 1 at a time/.test(String(l.msg))))
  })

  test('reload_surge 2 replaces two at a time; reload_strategy "generation" starts them all at once', async (t) => {
    const rolling = makePool(t, { pm: 'static', max_children: 4, reload_surge: 2 }, {}, slow(200)).pool
    await rolling.start()
    const a = await underLoad(rolling, 4, () => rolling.reload())
    assert.deepEqual(a.failures, [])
    assert.ok(a.most <= 6, `${a.most} workers at once for max_children 4, reload_surge 2`)

    const whole = makePool(
      t,
      { pm: 'static', max_children: 4, reload_strategy: 'generation' },
      {},
      slow(200),
    ).pool
    await whole.start()
    const b = await underLoad(whole, 4, () => whole.reload())
    assert.deepEqual(b.failures, [])
    assert.equal(b.most, 8, 'the whole new generation beside the old one')
  })

  test('max_requests: a worker past it serves on until its replacement is ready', async (t) => {
    const { pool } = makePool(t, { pm: 'static', max_children: 1, max_requests: 2 }, {}, slow(1000))
    await pool.start()
    const pids: number[] = []
    for (let i = 0; i < 3; i++) {
      const lease = await pool.acquire(info)
      pids.push(await ask(lease, 0))
      lease.release()
    }
    // The replacement takes a second to start: the third request did not wait for it.
    assert.equal(new Set(pids).size, 1, 'served by the worker being replaced')
    assert.equal(pool.status().totalProcesses, 2)
    const deadline = Date.now() + 20_000
    let next = pids[0]
    while (next === pids[0]) {
      assert.ok(Date.now() < deadline, 'the replacement never took over')
      await sleep(50)
      const lease = await pool.acquire(info)
      next = await ask(lease, 0)
      lease.release()
    }
    const waitGone = Date.now() + 20_000
    while (pool.status().totalProcesses > 1) {
      assert.ok(Date.now() < waitGone, 'the replaced worker did not stop')
      await sleep(20)
    }
  })

  test('a wave of max_requests recycles under load: never more than workers + 1, nothing fails', async (t) => {
    const { pool } = makePool(t, { pm: 'static', max_children: 3, max_requests: 20 }, {}, slow(100))
    await pool.start()
    const load = await underLoad(pool, 6, async (pids) => {
      // Three generations of workers: each worker recycled twice.
      const deadline = Date.now() + 30_000
      while (pids.size < 9) {
        assert.ok(Date.now() < deadline, `only ${pids.size} workers served in 30 s`)
        await sleep(20)
      }
    })
    assert.deepEqual(load.failures, [])
    assert.ok(load.most <= 4, `${load.most} workers at once for max_children 3`)
  })

  test('replacements that stop starting mid-roll: the workers they were to replace keep serving, the pool does not fail', async (t) => {
    const flag = join(tempDir(t), 'broken')
    const { pool, lines } = makePool(
      t,
      { pm: 'static', max_children: 3 },
      {},
      { ...slow(100), WORKER_FAIL_IF_EXISTS: flag },
    )
    await pool.start()
    const first = pool.status().workers.map((w) => w.pid)
    // The app breaks (a bad deploy half-way) once the first replacement has taken over.
    const breaker = (async () => {
      while (!lines.some((l) => /replacement ready/.test(String(l.msg)))) await sleep(5)
      writeFileSync(flag, '')
    })()
    const load = await underLoad(pool, 3, async () => {
      await pool.reload()
    })
    await breaker
    assert.deepEqual(load.failures, [], 'every request served')
    const now = pool.status()
    assert.equal(now.failed, false)
    const serving = now.workers.filter((w) => w.state !== 'Finishing').map((w) => w.pid)
    assert.equal(serving.length, 3)
    assert.equal(serving.filter((pid) => first.includes(pid)).length, 2, 'two old workers kept')
    assert.ok(lines.some((l) => /the 2 workers they were to replace keep serving/.test(String(l.msg))))
    // Fixed: the next reload replaces them.
    rmSync(flag)
    await pool.reload()
    assert.ok(pool.status().workers.every((w) => !first.includes(w.pid) || w.state === 'Finishing'))
  })
})
