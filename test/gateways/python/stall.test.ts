/*
 * A stuck WSGI request costs only itself (issue 18, severe item 1): no request is pipelined
 * onto a worker that has stopped making progress, and a request that already waits on one
 * (not started) gets the 503 that queue_timeout promises, and is never run afterwards.
 * timeout = 0 (no kill), so a request stuck behind the hung one would never be answered:
 * each check below has a generous deadline that only a hang reaches.
 */
import assert from 'node:assert/strict'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { eventually, FIXTURES, PYTHON, startGatehouse, tempDir } from '../../support/helpers.js'

const DEADLINE_MS = 20_000

async function start(
  t: TestContext,
  workers: number,
  kind: 'wsgi' | 'asgi' = 'wsgi',
  limits: { timeout: number; queue_timeout: number; pipeline?: number; pipeline_stall?: string } = {
    timeout: 0,
    queue_timeout: 2,
  },
) {
  const dir = tempDir(t, 'gh-stall-')
  const app = {
    python: PYTHON,
    workers,
    ...limits,
    env: { STALL_DIR: dir },
  }
  const running = await startGatehouse(t, {
    routes: [
      { exact: '/metrics', metrics: {} },
      kind === 'wsgi'
        ? { path: '/', wsgi: { ...app, app: 'stall:application', chdir: join(FIXTURES, 'wsgi') } }
        : { path: '/', asgi: { ...app, app: 'stall:app', chdir: join(FIXTURES, 'asgi') } },
    ],
  })
  // Whatever the outcome, the hung requests end with the test.
  t.after(() => {
    if (existsSync(dir)) writeFileSync(join(dir, 'release'), '')
  })
  const get = async (path: string) => {
    const r = await request(`${running.origin}${path}`)
    return { status: r.statusCode, body: await r.body.text() }
  }
  const hang = () => {
    const done = get('/hang')
    done.catch(() => {})
    return done
  }
  const hung = () =>
    readdirSync(dir)
      .filter((f) => f.startsWith('hung-'))
      .map((f) => f.slice(5))
  const started = () => (existsSync(join(dir, 'started')) ? readFileSync(join(dir, 'started'), 'utf8') : '')
  const moved = async () =>
    Number(/^gatehouse_pool_moved_requests_total\{[^}]*\} (\d+)$/m.exec((await get('/metrics')).body)?.[1])
  await eventually(async () => (await get('/fast')).status === 200, 'the pool')
  return { dir, get, hang, hung, started, moved }
}

function withinDeadline<T>(what: string, p: Promise<T>): Promise<T> {
  return Promise.race([
    p,
    sleep(DEADLINE_MS).then(() =>
      assert.fail(`${what}: still waiting after ${DEADLINE_MS} ms (stuck behind the hung request)`),
    ),
  ])
}

for (const kind of ['wsgi', 'asgi'] as const)
  test(`${kind}: one of two workers hung: 64 requests from 16 clients are all served by the other`, async (t) => {
    await oneOfTwoHung(t, kind)
  })

async function oneOfTwoHung(t: TestContext, kind: 'wsgi' | 'asgi') {
  const app = await start(t, 2, kind)
  void app.hang()
  const [hungPid] = await eventually(() => app.hung().length === 1 && app.hung(), 'the hung request')
  // Past pipeline_stall (WSGI, 200 ms) or loop_stall (ASGI, 1 s): the worker has sent nothing since.
  await sleep(kind === 'wsgi' ? 500 : 1500)
  let next = 0
  const client = async () => {
    const pids: string[] = []
    while (next < 64) {
      next++
      const r = await app.get('/fast')
      assert.equal(r.status, 200)
      pids.push(r.body)
    }
    return pids
  }
  const pids = (await withinDeadline('16 clients', Promise.all(Array.from({ length: 16 }, client)))).flat()
  assert.equal(pids.length, 64)
  assert.ok(!pids.includes(hungPid!), 'none was served by the hung worker')
}

for (const kind of ['wsgi', 'asgi'] as const)
  test(`${kind}: both workers hung: other requests get the 503 of queue_timeout, not a wait for the hung ones`, async (t) => {
    await bothHung(t, kind)
  })

async function bothHung(t: TestContext, kind: 'wsgi' | 'asgi') {
  const app = await start(t, 2, kind)
  void app.hang()
  void app.hang()
  await eventually(() => app.hung().length === 2, 'both hung requests')
  await sleep(kind === 'wsgi' ? 500 : 1500)
  const answers = await withinDeadline(
    'requests while both workers hang',
    Promise.all(Array.from({ length: 4 }, () => app.get('/fast'))),
  )
  assert.deepEqual(
    answers.map((a) => a.status),
    [503, 503, 503, 503],
  )
}

test('a request pipelined behind a request that then hangs gets 503 at queue_timeout and never runs', async (t) => {
  const app = await start(t, 1)
  const hanging = app.hang()
  // Sent at once: the worker is busy but has not yet been seen stalled, so these wait on it.
  const waiting = [app.get('/fast?one'), app.get('/fast?two')]
  const answers = await withinDeadline('the pipelined requests', Promise.all(waiting))
  assert.deepEqual(
    answers.map((a) => a.status),
    [503, 503],
  )
  writeFileSync(join(app.dir, 'release'), '')
  assert.equal((await hanging).status, 200)
  // The worker skips what was taken back, and serves what comes next.
  assert.equal((await app.get('/fast?three')).status, 200)
  const ran = app.started()
  assert.ok(!ran.includes('/fastone') && !ran.includes('/fasttwo'), `the app never ran them:\n${ran}`)
  assert.ok(ran.includes('/fastthree'))
})

test('GETs pipelined onto a worker that then hangs move to the other worker at pipeline_stall, and run once', async (t) => {
  // queue_timeout 60 and no timeout: without the move they would wait for the hung request.
  // pipeline_stall 1s: a window in which the pool still pipelines onto the hung worker.
  const app = await start(t, 2, 'wsgi', { timeout: 0, queue_timeout: 60, pipeline: 8, pipeline_stall: '1s' })
  const hanging = app.hang()
  const [hangPid] = await eventually(() => app.hung().length === 1 && app.hung(), 'the hung request')
  // Sent at once, before the hung worker has been silent for pipeline_stall: the pool
  // spreads them over both workers, pipelining some behind /hang. Repeated until some were.
  let round = 0
  const pids: string[] = []
  while ((await app.moved()) === 0 && round < 20) {
    round++
    const answers = await withinDeadline(
      'the GETs behind the hung request',
      Promise.all(Array.from({ length: 12 }, (_, i) => app.get(`/fast?r${round}n${i}`))),
    )
    for (const a of answers) {
      assert.equal(a.status, 200)
      pids.push(a.body)
    }
  }
  assert.ok((await app.moved()) > 0, 'some GETs were pipelined onto the hung worker and moved')
  assert.ok(!pids.includes(hangPid!), 'the hung worker served none of them')
  writeFileSync(join(app.dir, 'release'), '')
  assert.equal((await hanging).status, 200)
  // The hung worker, released, drops what was moved away instead of running it again.
  await eventually(
    async () => (await app.get('/fast?after')).body === hangPid,
    'the released worker serving again',
  )
  const ran = app
    .started()
    .split('\n')
    .filter((l) => l.startsWith('/fastr'))
  assert.equal(ran.length, round * 12, 'each GET ran exactly once')
  assert.equal(new Set(ran).size, ran.length)
})

test('requests waiting behind one killed by the timeout are served by the replacement worker', async (t) => {
  const app = await start(t, 1, 'wsgi', { timeout: 2, queue_timeout: 30 })
  const hanging = app.hang()
  // Sent at once: they wait on the worker behind /hang, which the timeout then kills.
  const waiting = [app.get('/fast?one'), app.get('/fast?two')]
  const [hangPid] = await eventually(() => app.hung().length === 1 && app.hung(), 'the hung request')
  assert.equal((await withinDeadline('the hung request', hanging)).status, 504)
  const answers = await withinDeadline('the requeued requests', Promise.all(waiting))
  assert.deepEqual(
    answers.map((a) => a.status),
    [200, 200],
  )
  for (const a of answers) assert.notEqual(a.body, hangPid, 'served by the replacement worker')
  const ran = app.started().split('\n')
  assert.equal(ran.filter((l) => l === '/fastone').length, 1, 'run once')
  assert.equal(ran.filter((l) => l === '/fasttwo').length, 1, 'run once')
})
