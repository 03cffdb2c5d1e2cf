/*
 * The reload race (issue 18 item 5): SIGHUP with the configuration changing every 0.2 s
 * while clients keep a WSGI pool and a php-cgi pool busy. Reloads overlap (a new config's
 * pools are still starting when the next SIGHUP comes), which used to leave whole old
 * generations running: every superseded pool must be stopped, including one superseded
 * while it was still starting. Afterwards the live workers under the server are exactly what
 * the config says, the status lists only the current pools, no request failed, and once the
 * server stops nothing it started is left. No timing threshold: deadlines only catch a hang.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { Agent } from 'node:http'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  agentGet,
  CLI,
  eventually,
  FIXTURES,
  freePort,
  logLines,
  PYTHON,
  stopServe,
  tempDir,
} from '../support/helpers.js'
import { descendants, liveWorkers, running } from '../support/procs.js'

const PHP_CGI = '/usr/bin/php-cgi'
const APP_DIR = join(FIXTURES, 'chaos')
const RELOADS = 25
const RELOAD_EVERY_MS = 200
const CLIENTS_PER_POOL = 3
const WSGI_WORKERS = 2
const PHP_WORKERS = 3

const get = agentGet

/** The config: a first route (`first`: its lines), a WSGI pool and a php-cgi pool, both with `poolKey`. */
function configText(port: number, dir: string, first: string[], poolKey: string): string {
  const env = `env = { CHAOS_DIR = ${JSON.stringify(dir)} }`
  return [
    `listen = ["127.0.0.1:${port}"]`,
    `log = { level = "info", error_log = ${JSON.stringify(join(dir, 'error.log'))} }`,
    // Longer than the test: a kept-alive socket the server closes for idleness just as the
    // client reuses it is reset (the keep-alive race every HTTP client has), which is not
    // what this test looks for.
    'limits = { keepalive_timeout = "120s" }',
    '[[routes]]',
    ...first,
    '[[routes]]',
    'path = "/wsgi"',
    `wsgi = { app = "slow_start:application", chdir = ${JSON.stringify(APP_DIR)}, python = ${JSON.stringify(PYTHON)}, workers = ${WSGI_WORKERS}, ${poolKey}, ${env} }`,
    '[[routes]]',
    'path = "/php"',
    `php = { root = ${JSON.stringify(APP_DIR)}, ${env}, workers = { pm = "static", max_children = ${PHP_WORKERS}, ${poolKey} } }`,
    '',
  ].join('\n')
}

/**
 * `gatehouse serve --config` with configText: `first(i)` and `poolKey(i)` for the i-th
 * version, written by `write(i)` (version 0 before the start); resolves once both pools
 * answer. Stopped after the test, with every process it was seen to start (`seen`).
 */
async function startServe(
  t: TestContext,
  prefix: string,
  first: (i: number) => string[],
  poolKey: (i: number) => string,
) {
  const dir = tempDir(t, prefix)
  const port = await freePort()
  const config = join(dir, 'gatehouse.toml')
  const write = (i: number) => writeFileSync(config, configText(port, dir, first(i), poolKey(i)))
  write(0)
  const serve = spawn(process.execPath, [CLI, 'serve', '--config', config], { stdio: 'ignore' })
  const seen = new Set<number>()
  const agent = new Agent({ keepAlive: true, maxSockets: 2 * CLIENTS_PER_POOL + 1 })
  t.after(async () => {
    agent.destroy()
    await stopServe(serve)
    for (const pid of seen) if (running(pid)) process.kill(pid, 'SIGKILL')
  })
  const paths = { wsgi: '/wsgi/', php: '/php/chaos.php' }
  for (const path of Object.values(paths))
    await eventually(async () => (await get(agent, port, `${path}?id=ready`)).status === 200, path, 30_000)
  return { serve, agent, seen, port, dir, write, paths }
}

test(
  'SIGHUP every 0.2 s with a changed pool setting under load: every superseded pool is stopped, the workers are what the config says, no request fails',
  { skip: existsSync(PHP_CGI) ? false : `${PHP_CGI} not found (Debian package php-cgi)`, timeout: 180_000 },
  async (t) => {
    const { serve, agent, seen, port, dir, write, paths } = await startServe(
      t,
      'gh-reload-race-',
      () => ['exact = "/pools"', 'status = { show = "pools" }'],
      (i) => `max_requests = ${100_000 + i}`,
    )
    const look = () => {
      for (const p of descendants(serve.pid!)) seen.add(p.pid)
    }

    let loading = true
    let sent = 0
    const failures: string[] = []
    const clients = Object.entries(paths).flatMap(([pool, path]) =>
      Array.from({ length: CLIENTS_PER_POOL }, async (_, c) => {
        for (let n = 0; loading; n++) {
          sent++
          const r = await get(agent, port, `${path}?id=${c}-${n}`)
          if (r.status !== 200) failures.push(`${pool} ${r.status} ${r.error ?? r.body.slice(0, 200)}`)
        }
      }),
    )
    for (let i = 1; i <= RELOADS; i++) {
      await sleep(RELOAD_EVERY_MS)
      write(i)
      serve.kill('SIGHUP')
      look()
    }
    await sleep(2000)
    loading = false
    await Promise.all(clients)

    // Settled: only the current pools are live, with the config's workers, and they stay so.
    let last = ''
    const settled = await eventually(
      async () => {
        look()
        const live = liveWorkers(serve.pid!)
        const pools = JSON.parse((await get(agent, port, '/pools')).body) as { pools: { pool: string }[] }
        last = `workers ${JSON.stringify(live)}, pools ${pools.pools.map((p) => p.pool).join(' ')}`
        return live.wsgi.length === WSGI_WORKERS &&
          live.php.length === PHP_WORKERS &&
          pools.pools.length === 2
          ? { live, pools }
          : false
      },
      'the old generations to be gone',
      90_000,
    ).catch((err: Error) => assert.fail(`${err.message}: ${last}`))
    assert.deepEqual(settled.pools.pools.map((p) => p.pool).sort(), ['php', 'wsgi'])
    await sleep(1000)
    const again = liveWorkers(serve.pid!)
    assert.equal(again.wsgi.length, WSGI_WORKERS, 'no WSGI worker beyond the config a second later')
    assert.equal(again.php.length, PHP_WORKERS, 'no php-cgi worker beyond the config a second later')
    t.diagnostic(`${sent} requests during ${RELOADS} reloads, ${failures.length} failed`)
    assert.deepEqual(failures, [], 'no request failed')
    // The last reload applied (the ones before it may have been superseded while starting).
    const events = logLines(join(dir, 'error.log'))
      .map((l) => String(l.msg))
      .filter(
        (m) =>
          m === 'configuration reloaded' ||
          m.startsWith('reload superseded') ||
          m.startsWith('reload failed'),
      )
    t.diagnostic(
      `${events.filter((m) => m === 'configuration reloaded').length} reloads applied, ${events.filter((m) => m.startsWith('reload superseded')).length} superseded`,
    )
    assert.equal(events.filter((m) => m.startsWith('reload failed')).length, 0)
    assert.equal(events.at(-1), 'configuration reloaded')

    await stopServe(serve)
    assert.deepEqual([...seen].filter(running), [], 'no process the server started is left after it stopped')
  },
)

test(
  'SIGHUP with the pools unchanged under load: each pool is kept and rolled, never more than its workers + 1, no request fails',
  { skip: existsSync(PHP_CGI) ? false : `${PHP_CGI} not found (Debian package php-cgi)`, timeout: 180_000 },
  async (t) => {
    // Only a `return` route changes between reloads: the pools' tables stay the same.
    const { serve, agent, seen, port, dir, write, paths } = await startServe(
      t,
      'gh-reload-roll-',
      (i) => ['exact = "/generation"', `return = { status = 200, body = "${i}" }`],
      () => 'max_requests = 0',
    )
    const before = liveWorkers(serve.pid!)

    let loading = true
    const most = { wsgi: 0, php: 0 }
    const sampler = (async () => {
      while (loading) {
        for (const p of descendants(serve.pid!)) seen.add(p.pid)
        const live = liveWorkers(serve.pid!)
        most.wsgi = Math.max(most.wsgi, live.wsgi.length)
        most.php = Math.max(most.php, live.php.length)
        await sleep(20)
      }
    })()
    const failures: string[] = []
    const clients = Object.entries(paths).flatMap(([pool, path]) =>
      Array.from({ length: CLIENTS_PER_POOL }, async (_, c) => {
        for (let n = 0; loading; n++) {
          const r = await get(agent, port, `${path}?id=${c}-${n}`)
          if (r.status !== 200) failures.push(`${pool} ${r.status} ${r.error ?? r.body.slice(0, 200)}`)
        }
      }),
    )
    for (let i = 1; i <= 3; i++) {
      write(i)
      serve.kill('SIGHUP')
      await eventually(
        async () => (await get(agent, port, '/generation')).body === String(i),
        `reload ${i} applied`,
        30_000,
      )
      await sleep(1500)
    }
    await eventually(
      () => {
        const live = liveWorkers(serve.pid!)
        return (
          live.wsgi.length === WSGI_WORKERS &&
          live.php.length === PHP_WORKERS &&
          [...live.wsgi, ...live.php].every((pid) => ![...before.wsgi, ...before.php].includes(pid))
        )
      },
      'every worker of the first start replaced',
      60_000,
    )
    loading = false
    await Promise.all([...clients, sampler])
    t.diagnostic(`most workers at once: wsgi ${most.wsgi}, php ${most.php}`)
    assert.deepEqual(failures, [], 'no request failed')
    assert.ok(most.wsgi <= WSGI_WORKERS + 1, `${most.wsgi} WSGI workers at once for ${WSGI_WORKERS}`)
    assert.ok(most.php <= PHP_WORKERS + 1, `${most.php} php-cgi workers at once for ${PHP_WORKERS}`)
    const log = logLines(join(dir, 'error.log')).map((l) => String(l.msg))
    assert.ok(log.some((m) => /replacing \d workers, 1 at a time/.test(m)))
    await stopServe(serve)
    assert.deepEqual([...seen].filter(running), [], 'no process the server started is left after it stopped')
  },
)
