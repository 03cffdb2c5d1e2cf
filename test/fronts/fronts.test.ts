/*
 * front_processes > 1 (src/fronts/): several front threads share the listening sockets and
 * lease the main thread's pools. Real workers: Python WSGI workers (test/fixtures/wsgi) and
 * php-cgi. The control API tells which front served what (GET /status: fronts).
 */
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { curl, serveWithControl } from '../support/control.js'
import { getOnce } from '../support/helpers.js'

const here = dirname(fileURLToPath(import.meta.url))
const WSGI_APPS = join(here, '../../../test/fixtures/wsgi')

interface FrontRow {
  index: number
  requests: number
  inFlight: number
  openConnections: number
}

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'gh-fronts-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A config file: the control API on port 0, `front_processes = N`, then `routes`. */
function config(dir: string, fronts: number, routes: string): string {
  const file = join(dir, 'gatehouse.toml')
  writeFileSync(
    file,
    `listen = "127.0.0.1:0"\nfront_processes = ${fronts}\ncontrol = { listen = "127.0.0.1:0" }\n${routes}`,
  )
  return file
}

async function fronts(control: string): Promise<FrontRow[]> {
  const answer = await curl(control, 'GET', '/status')
  assert.equal(answer.status, 200)
  return (answer.json as { fronts: FrontRow[] }).fronts
}

/** The pools JSON at /pools (rendered by the main thread whichever front is asked). */
const POOLS_ROUTE = `
[[routes]]
exact = "/pools"
status = { show = "pools" }
`

const WSGI_ROUTE = (app: string, extra = '') => `
[[routes]]
path = "/"
wsgi = { app = "${app}", chdir = "${WSGI_APPS}", workers = 2${extra} }
`

test('requests land on every front thread, and the pool counts them all', async (t) => {
  const dir = tempDir(t)
  const file = config(
    dir,
    3,
    `
${POOLS_ROUTE}[[routes]]
exact = "/metrics"
metrics = {}
[[routes]]
path = "/"
wsgi = { app = "apps:pid", chdir = "${WSGI_APPS}", workers = 2 }
`,
  )
  const served = await serveWithControl(t, dir, ['--config', file])
  assert.equal((await fronts(served.control)).length, 3)
  // New connections go to whichever front accepts first: keep connecting until each front
  // has taken some (bounded: a front that never accepts fails the test).
  let sent = 0
  for (; sent < 600; sent++) {
    const r = await getOnce(served.port, '/')
    assert.equal(r.status, 200)
    if (sent % 20 === 19 && (await fronts(served.control)).every((f) => f.requests > 0)) break
  }
  sent++
  const rows = await fronts(served.control)
  assert.deepEqual(
    rows.map((f) => f.index),
    [0, 1, 2],
  )
  for (const f of rows) assert.ok(f.requests > 0, `front ${f.index} took no request in ${sent}`)
  assert.equal(
    rows.reduce((a, f) => a + f.requests, 0),
    sent,
  )
  // The one pool leased a worker for each of them, whichever front asked.
  const pools = JSON.parse((await getOnce(served.port, '/pools')).body) as {
    pools: { 'accepted conn': number }[]
  }
  assert.equal(pools.pools.length, 1)
  assert.equal(pools.pools[0]!['accepted conn'], sent)
  // /metrics (served by any front) sums every front's requests.
  const metrics = (await getOnce(served.port, '/metrics')).body
  const line = /gatehouse_http_requests_total\{route="\/",method="GET",status="2xx"\} (\d+)/.exec(metrics)
  assert.ok(line, metrics)
  assert.equal(Number(line[1]), sent)
})

test('the pool capacity and its bounded queue hold for all fronts together', async (t) => {
  const dir = tempDir(t)
  // 2 workers x 1 thread, no pipelining: 2 requests run, 2 more may wait, the rest get 503.
  const file = config(
    dir,
    3,
    `
[[routes]]
path = "/"
wsgi = { app = "apps:sleep", chdir = "${WSGI_APPS}", workers = 2, threads = 1, pipeline = 0, max_queue = 2 }
`,
  )
  const served = await serveWithControl(t, dir, ['--config', file])
  // 9 at once, each on its own connection (spread over the fronts by the kernel).
  const answers = await Promise.all(Array.from({ length: 9 }, () => getOnce(served.port, '/?1.5')))
  const ok = answers.filter((a) => a.status === 200).length
  const refused = answers.filter((a) => a.status === 503).length
  assert.equal(ok + refused, 9, JSON.stringify(answers))
  assert.equal(ok, 4, `2 running + 2 queued pool-wide: ${JSON.stringify(answers.map((a) => a.status))}`)
  assert.equal(refused, 5)
  assert.ok((await fronts(served.control)).filter((f) => f.requests > 0).length >= 2)
})

test('a stuck request past its timeout costs only itself: requests on the other fronts go on', async (t) => {
  const dir = tempDir(t)
  const file = config(
    dir,
    2,
    `
[[routes]]
path = "/"
wsgi = { app = "apps:sleep", chdir = "${WSGI_APPS}", workers = 2, threads = 1, timeout = "1s" }
`,
  )
  const served = await serveWithControl(t, dir, ['--config', file])
  const stuck = getOnce(served.port, '/?60')
  // Meanwhile quick requests keep being answered by the other worker, from every front.
  const quick = await Promise.all(Array.from({ length: 8 }, () => getOnce(served.port, '/?0')))
  for (const q of quick) assert.equal(q.status, 200)
  const s = await stuck
  assert.equal(s.status, 504)
  // The pool replaced the killed worker: both serve again.
  const after = await Promise.all(Array.from({ length: 4 }, () => getOnce(served.port, '/?0.2')))
  for (const a of after) assert.equal(a.status, 200)
})

test('a front thread stopped at once is replaced while the others serve', async (t) => {
  const dir = tempDir(t)
  const file = config(dir, 2, WSGI_ROUTE('apps:pid'))
  const served = await serveWithControl(t, dir, ['--config', file])
  // Clients loop on their own connections (closed after each request) while front 1 dies.
  let stop = false
  const failures: string[] = []
  let answered = 0
  const clients = Array.from({ length: 4 }, async () => {
    while (!stop) {
      try {
        const r = await getOnce(served.port, '/')
        if (r.status === 200) answered++
        else failures.push(String(r.status))
      } catch (err) {
        // A connection front 1 had accepted when it was stopped is cut: that is what the
        // restart does (as kill -9 of one nginx worker). Counted, not fatal.
        failures.push((err as Error).message)
      }
    }
  })
  while (answered < 40) await new Promise((r) => setTimeout(r, 20))
  const restart = await curl(served.control, 'POST', '/control/fronts/1/restart')
  assert.equal(restart.status, 202)
  const before = answered
  while (answered < before + 100) await new Promise((r) => setTimeout(r, 20))
  // Front 1 is back (a new thread) and takes connections again.
  for (let i = 0; i < 400; i++) {
    const rows = await fronts(served.control)
    if (rows.length === 2 && rows[1]!.requests > 0) break
    await getOnce(served.port, '/')
  }
  stop = true
  await Promise.all(clients)
  const rows = await fronts(served.control)
  assert.equal(rows.length, 2)
  assert.ok(rows[1]!.requests > 0, 'the new front 1 serves')
  // At most the connections front 1 held at that instant (one per client) were cut.
  assert.ok(failures.length <= 4, failures.join('; '))
  assert.match(served.stderr(), /front thread 1 exited; starting another/)
  const missing = await curl(served.control, 'POST', '/control/fronts/7/restart')
  assert.equal(missing.status, 404)
})

test('SIGHUP: every front switches to the new configuration; the number of fronts stays until a restart', async (t) => {
  const dir = tempDir(t)
  const routes = (body: string) => `
[[routes]]
exact = "/v"
return = { status = 200, body = "${body}" }
`
  const file = config(dir, 3, routes('one'))
  const served = await serveWithControl(t, dir, ['--config', file])
  for (let i = 0; i < 30; i++) assert.equal((await getOnce(served.port, '/v')).body, 'one')
  // The same file with new routes, and a front count a reload cannot change.
  config(dir, 2, routes('two'))
  served.child.kill('SIGHUP')
  while (!/configuration reloaded/.test(served.stderr())) await new Promise((r) => setTimeout(r, 50))
  assert.match(served.stderr(), /front_processes changes take effect on restart/)
  // Every front answers from the new configuration (whichever accepts each connection).
  for (let i = 0; i < 60; i++) assert.equal((await getOnce(served.port, '/v')).body, 'two')
  const rows = await fronts(served.control)
  assert.equal(rows.length, 3)
  assert.ok(rows.every((f) => f.requests > 0))
})

test('SIGUSR2: the pool rolls its workers under load from every front, and no request fails', async (t) => {
  const dir = tempDir(t)
  const file = config(dir, 2, WSGI_ROUTE('apps:pid'))
  const served = await serveWithControl(t, dir, ['--config', file])
  const before = new Set<string>()
  for (let i = 0; i < 10; i++) before.add((await getOnce(served.port, '/')).body)
  let stop = false
  const statuses: number[] = []
  const pids = new Set<string>()
  const clients = Array.from({ length: 4 }, async () => {
    while (!stop) {
      const r = await getOnce(served.port, '/')
      statuses.push(r.status)
      pids.add(r.body)
    }
  })
  served.child.kill('SIGUSR2')
  while (!/workers reloaded/.test(served.stderr())) await new Promise((r) => setTimeout(r, 50))
  // A few more rounds on the new workers.
  const done = statuses.length
  while (statuses.length < done + 40) await new Promise((r) => setTimeout(r, 20))
  stop = true
  await Promise.all(clients)
  assert.deepEqual(
    statuses.filter((s) => s !== 200),
    [],
  )
  const now = new Set<string>()
  for (let i = 0; i < 10; i++) now.add((await getOnce(served.port, '/')).body)
  for (const pid of now) assert.ok(!before.has(pid), `worker ${pid} survived the reload`)
  assert.ok((await fronts(served.control)).every((f) => f.requests > 0))
})

test('SIGTERM: requests in flight on every front finish, then the server exits', async (t) => {
  const dir = tempDir(t)
  const file = config(dir, 2, WSGI_ROUTE('apps:sleep', ', threads = 4'))
  const served = await serveWithControl(t, dir, ['--config', file])
  // Six slow requests, spread over the fronts by the kernel.
  const slow = Array.from({ length: 6 }, () => getOnce(served.port, '/?1'))
  await new Promise((r) => setTimeout(r, 300))
  const rows = await fronts(served.control)
  const exited = new Promise<number | null>((resolve) => served.child.once('exit', (code) => resolve(code)))
  served.child.kill('SIGTERM')
  for (const r of await Promise.all(slow)) assert.equal(r.status, 200)
  assert.equal(await exited, 0)
  assert.equal(
    rows.reduce((a, f) => a + f.inFlight, 0),
    6,
  )
})

test('php-cgi workers are leased to every front; each request gets its own connection', async (t) => {
  const dir = tempDir(t)
  const root = join(dir, 'www')
  mkdirSync(root)
  writeFileSync(join(root, 'index.php'), '<?php echo "pid ", getmypid(), " ", $_GET["n"] ?? "", "\\n";')
  const file = config(
    dir,
    2,
    `
${POOLS_ROUTE}[[routes]]
path = "/"
php = { root = "${root}", workers = { pm = "static", max_children = 2 } }
`,
  )
  const served = await serveWithControl(t, dir, ['--config', file])
  const n = 80
  // Eight clients at once, each request on its own connection.
  const answers: { status: number; body: string }[] = []
  await Promise.all(
    Array.from({ length: 8 }, async (_, c) => {
      for (let i = 0; i < n / 8; i++) answers.push(await getOnce(served.port, `/index.php?n=${c}-${i}`))
    }),
  )
  assert.equal(answers.length, n)
  for (const a of answers) {
    assert.equal(a.status, 200)
    assert.match(a.body, /^pid \d+ \d+-\d+\n$/)
  }
  assert.ok((await fronts(served.control)).every((f) => f.requests > 0))
  const pools = JSON.parse((await getOnce(served.port, '/pools')).body) as {
    pools: { 'accepted conn': number; 'total processes': number }[]
  }
  assert.equal(pools.pools[0]!['accepted conn'], n)
  assert.equal(pools.pools[0]!['total processes'], 2)
})
