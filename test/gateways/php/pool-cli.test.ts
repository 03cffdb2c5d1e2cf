/*
 * `gatehouse serve --php DOCROOT` without --fastcgi, end to end through the CLI with real
 * php-cgi workers: reloads (SIGUSR2 and SIGHUP) under wrk load with zero socket errors and
 * zero non-2xx responses, the status page, and SIGQUIT leaving no worker behind.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { accessSync, constants, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { parseWrkOutput, runWrk, totalSocketErrors } from '../../../bench/wrk.js'
import { CLI, freePort, stopServe, tempDir } from '../../support/helpers.js'

const WRK = '/usr/bin/wrk'

function unavailable(): string | undefined {
  for (const [path, pkg] of [
    ['/usr/bin/php-cgi', 'php-cgi'],
    [WRK, 'wrk'],
  ] as const) {
    try {
      accessSync(path, constants.X_OK)
    } catch {
      return `${path} not found (Debian package ${pkg})`
    }
  }
  return undefined
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for: ${what}`)
    await sleep(50)
  }
}

async function statusJson(
  origin: string,
): Promise<{ processes: { pid: number }[] } & Record<string, unknown>> {
  const r = await request(`${origin}/status?json&full`)
  return JSON.parse(await r.body.text())
}

describe('gatehouse serve --php with a managed pool', { skip: unavailable() }, () => {
  test('SIGUSR2 and SIGHUP reloads under wrk load: zero socket errors, zero non-2xx; SIGQUIT leaves no worker', async (t) => {
    const dir = tempDir(t)
    writeFileSync(join(dir, 'index.php'), '<?php echo "hello";')
    const port = await freePort()
    const origin = `http://127.0.0.1:${port}`
    const config = join(dir, 'gatehouse.toml')
    const write = (children: number) =>
      writeFileSync(
        config,
        [
          `listen = ["127.0.0.1:${port}"]`,
          '[[routes]]',
          'exact = "/status"',
          'status = {}',
          '[[routes]]',
          'path = "/"',
          `php = { root = "${dir}", workers = { pm = "static", max_children = ${children} } }`,
          '',
        ].join('\n'),
      )
    write(2)
    const child: ChildProcess = spawn(process.execPath, [CLI, 'serve', '--config', config], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    t.after(() => stopServe(child))
    await waitFor('listening', async () => {
      try {
        return (await request(`${origin}/index.php`)).statusCode === 200
      } catch {
        return false
      }
    })
    const first = await statusJson(origin)
    const firstPids = first.processes.map((p) => p.pid)
    assert.equal(firstPids.length, 2)

    const load = runWrk({
      wrk: WRK,
      url: `${origin}/index.php`,
      threads: 1,
      connections: 16,
      durationSeconds: 4,
    })
    await sleep(800)
    child.kill('SIGUSR2')
    await waitFor('workers reloaded', () => stderr.includes('workers reloaded'))
    write(3)
    child.kill('SIGHUP')
    await waitFor('configuration reloaded', () => stderr.includes('configuration reloaded'))
    const result = parseWrkOutput(await load)
    assert.ok(result.requests > 0)
    assert.equal(totalSocketErrors(result.socketErrors), 0, JSON.stringify(result.socketErrors))
    assert.equal(result.non2xx3xx, 0)

    const after = await statusJson(origin)
    assert.equal(after.processes.length, 3, 'the new config runs three workers')
    for (const pid of firstPids) await waitFor(`first-generation worker ${pid} gone`, () => !alive(pid))
    const last = after.processes.map((p) => p.pid)

    child.kill('SIGQUIT')
    assert.equal(await exited, 0)
    for (const pid of last) assert.equal(alive(pid), false, `worker ${pid} stopped with the server`)
  })

  /** Start `serve --php` on a docroot with a script that sleeps; resolves once it answers. */
  async function serveSleepy(t: { after: (fn: () => void) => void }, dir: string) {
    writeFileSync(join(dir, 'index.php'), '<?php echo "hello";')
    writeFileSync(join(dir, 'sleep.php'), '<?php sleep(3); echo "slept";')
    const port = await freePort()
    const origin = `http://127.0.0.1:${port}`
    const child: ChildProcess = spawn(
      process.execPath,
      [CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--php', dir, '--pm', 'static', '--max-children', '2'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    )
    child.stderr!.resume()
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    t.after(() => stopServe(child))
    await waitFor('listening', async () => {
      try {
        return (await request(`${origin}/index.php`)).statusCode === 200
      } catch {
        return false
      }
    })
    return { child, exited, origin }
  }

  test('SIGTERM drains: a request in flight still gets its answer, then exit 0', async (t) => {
    const { child, exited, origin } = await serveSleepy(t, tempDir(t))
    const inFlight = request(`${origin}/sleep.php`).then(async (r) => [r.statusCode, await r.body.text()])
    await sleep(500)
    child.kill('SIGTERM')
    assert.deepEqual(await inFlight, [200, 'slept'])
    assert.equal(await exited, 0)
  })

  test('SIGINT is the fast stop: a request in flight is cut, workers are stopped, exit 0', async (t) => {
    const { child, exited, origin } = await serveSleepy(t, tempDir(t))
    const workers = execFileSync('pgrep', ['-P', String(child.pid)], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number)
    assert.equal(workers.length, 2, 'two php-cgi workers')
    const inFlight = request(`${origin}/sleep.php`).then(
      (r) => r.body.text().then(() => `answered ${r.statusCode}`),
      (err: Error) => `failed: ${err.message}`,
    )
    await sleep(500)
    child.kill('SIGINT')
    assert.equal(await exited, 0)
    assert.match(await inFlight, /^failed/)
    for (const pid of workers) await waitFor(`worker ${pid} gone`, () => !alive(pid))
  })
})
