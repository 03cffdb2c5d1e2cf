/*
 * The crash-loop guard tries again (issue 18 item 6): a WSGI app that stops importing (a
 * file of it broken on disk) makes its workers die at start until the guard stops
 * respawning; meanwhile the route answers 503, the readiness route 503 naming the pool,
 * the status page says `failed`. Once the file is fixed, the pool serves again by itself,
 * without a reload, and nothing is left once the server stops.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { test } from 'node:test'
import { CLI, eventually, freePort, PYTHON, stopServe, tempDir } from '../support/helpers.js'
import { descendants, liveWorkers, running } from '../support/procs.js'

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

const GOOD = 'MESSAGE = "fine"\n'
const BROKEN = 'raise RuntimeError("settings are broken")\n'

test(
  'a pool failed by a crash loop answers 503 and says so on /ready and the status page, then serves again once the app is fixed, without a reload',
  { timeout: 120_000 },
  async (t) => {
    const dir = tempDir(t, 'gh-crash-retry-')
    writeFileSync(join(dir, 'settings.py'), GOOD)
    writeFileSync(
      join(dir, 'app.py'),
      [
        'import os',
        'import settings',
        '',
        'def application(environ, start_response):',
        '    body = f"{settings.MESSAGE} {os.getpid()}".encode()',
        '    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])',
        '    return [body]',
        '',
      ].join('\n'),
    )
    const port = await freePort()
    const config = join(dir, 'gatehouse.toml')
    writeFileSync(
      config,
      [
        `listen = ["127.0.0.1:${port}"]`,
        `log = { level = "info", error_log = ${JSON.stringify(join(dir, 'error.log'))} }`,
        '[[routes]]',
        'exact = "/ready"',
        'status = { show = "ready" }',
        '[[routes]]',
        'exact = "/status"',
        'status = { pool = "wsgi" }',
        '[[routes]]',
        'exact = "/pools"',
        'status = { show = "pools" }',
        '[[routes]]',
        'path = "/app"',
        `wsgi = { app = "app:application", chdir = ${JSON.stringify(dir)}, python = ${JSON.stringify(PYTHON)}, workers = 2, crash_retry = "300ms", crash_retry_max = "2s" }`,
        '',
      ].join('\n'),
    )
    const serve = spawn(process.execPath, [CLI, 'serve', '--config', config], { stdio: 'ignore' })
    const seen = new Set<number>()
    const look = () => {
      for (const p of descendants(serve.pid!)) seen.add(p.pid)
    }
    t.after(async () => {
      await stopServe(serve)
      for (const pid of seen) if (running(pid)) process.kill(pid, 'SIGKILL')
    })
    await eventually(
      async () => (await get(port, '/app/').catch(() => ({ status: 0 }))).status === 200,
      'the app',
    )
    assert.equal((await get(port, '/ready')).status, 200)
    look()

    // Break the app, then kill the workers: their replacements cannot import it.
    writeFileSync(join(dir, 'settings.py'), BROKEN)
    for (const pid of liveWorkers(serve.pid!).wsgi) process.kill(pid, 'SIGKILL')
    const failedPools = await eventually(async () => {
      look()
      const pools = JSON.parse((await get(port, '/pools')).body) as { pools: Record<string, unknown>[] }
      return pools.pools[0]!.failed === true ? pools.pools[0]! : false
    }, 'the crash-loop guard to trip')
    assert.match(String(failedPools['failed reason']), /died without serving a request/)

    // While failed: 503 on the route and on /ready, `failed` on the status page. The retries
    // (every 300 ms doubling to 2 s) keep failing while the file is broken.
    const app = await get(port, '/app/')
    assert.equal(app.status, 503, app.body)
    const ready = await get(port, '/ready')
    assert.equal(ready.status, 503)
    assert.match(ready.body, /^pool wsgi failed: /)
    const status = await get(port, '/status')
    assert.equal(status.status, 200)
    assert.match(status.body, /^failed: +.*pool wsgi: .*respawning stopped$/m)
    assert.match(status.body, /^next retry: +\d\d\/\w+\/\d{4}:/m)
    const statusJson = JSON.parse((await get(port, '/status?json')).body) as Record<string, unknown>
    assert.match(String(statusJson.failed), /died without serving a request/)
    await eventually(async () => {
      look()
      const pools = JSON.parse((await get(port, '/pools')).body) as { pools: Record<string, number>[] }
      return pools.pools[0]!['start retries']! >= 2
    }, 'two retries while still broken')
    assert.equal((await get(port, '/app/')).status, 503)

    // Fixed: the next retry starts a worker, and the pool serves again, no reload.
    writeFileSync(join(dir, 'settings.py'), GOOD)
    const back = await eventually(
      async () => {
        look()
        const r = await get(port, '/app/')
        return r.status === 200 ? r : false
      },
      'the pool to serve again',
      30_000,
    )
    assert.match(back.body, /^fine \d+$/)
    assert.equal((await get(port, '/ready')).status, 200)
    const pools = JSON.parse((await get(port, '/pools')).body) as { pools: Record<string, unknown>[] }
    assert.equal(pools.pools[0]!.failed, false)
    assert.equal(pools.pools[0]!.reloads, 0)
    assert.equal(pools.pools[0]!['failed reason'], null)
    assert.doesNotMatch((await get(port, '/status')).body, /^failed:/m)
    // Back to its two workers.
    await eventually(() => {
      look()
      return liveWorkers(serve.pid!).wsgi.length === 2
    }, 'two workers again')

    await stopServe(serve)
    assert.deepEqual([...seen].filter(running), [], 'no process the server started is left after it stopped')
  },
)
