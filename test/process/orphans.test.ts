/*
 * Nothing outlives the server (issue 18, severe item 4): when `gatehouse serve` itself is
 * SIGKILLed (the OOM killer, an operator's kill -9), every process it started is gone within
 * seconds: php-cgi workers (which never look at their parent), a Python ASGI worker whose
 * event loop is blocked in synchronous code, and CGI scripts. A new start removes what the
 * dead one left on disk.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { connect } from 'node:net'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { request } from 'undici'
import { removeLeftRunDirs } from '../../src/process/run-dir.js'
import { descendants, running } from '../support/procs.js'
import { CLI, eventually, FIXTURES, freePort, PYTHON, stopServe, tempDir } from '../support/helpers.js'

const PHP_CGI = '/usr/bin/php-cgi'

interface Scenario {
  /** Route tables (TOML) after `listen`. */
  routes: string[]
  /** Paths that must answer 200 before anything else (the pools are up). */
  ready: string[]
  /** Requests left in flight when the server dies. */
  inFlight: string[]
  /** The process names (comm) that must have started before the kill. */
  expect: string[]
}

/**
 * Start `gatehouse serve`, leave requests in flight, SIGKILL it, and require every process
 * it had started to be gone within 15 s (those left are killed and named in the failure).
 */
async function killServerAndCheck(t: TestContext, dir: string, scenario: Scenario): Promise<number> {
  const port = await freePort()
  const config = join(dir, 'gatehouse.toml')
  writeFileSync(config, [`listen = ["127.0.0.1:${port}"]`, ...scenario.routes, ''].join('\n'))
  const serve = spawn(process.execPath, [CLI, 'serve', '--config', config], { stdio: 'ignore' })
  t.after(() => stopServe(serve))
  const origin = `http://127.0.0.1:${port}`
  const get = async (path: string) => {
    try {
      const r = await request(`${origin}${path}`)
      return r.statusCode === 200 && (await r.body.text())
    } catch {
      return false
    }
  }
  for (const path of scenario.ready) await eventually(() => get(path), path, 30_000)
  for (const path of scenario.inFlight) {
    const socket = connect(port, '127.0.0.1')
    socket.on('error', () => {})
    socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`)
    t.after(() => socket.destroy())
  }
  await eventually(
    () => {
      const comms = descendants(serve.pid!).map((p) => p.comm)
      return scenario.expect.every(
        (c) => comms.filter((x) => x === c).length >= scenario.expect.filter((x) => x === c).length,
      )
    },
    `${scenario.expect.join(', ')} to run`,
  )
  const below = descendants(serve.pid!)
  const children = below.map((p) => p.pid)
  const names = new Map(below.map((p) => [p.pid, p.comm]))

  serve.kill('SIGKILL')
  await eventually(() => serve.exitCode !== null || serve.signalCode !== null, 'gatehouse to die')
  const survivors = () => children.filter(running)
  await eventually(() => survivors().length === 0, 'every process it started to be gone', 15_000).catch(
    () => {
      const left = survivors().map((pid) => `${pid} ${names.get(pid)}`)
      for (const pid of survivors()) process.kill(pid, 'SIGKILL')
      assert.fail(`still running after its server died: ${left.join(', ')}`)
    },
  )
  return serve.pid!
}

test('kill -9 of gatehouse serve: a CGI script in flight (and the fork server) are gone within seconds', async (t) => {
  const dir = tempDir(t, 'gh-orphans-')
  writeFileSync(
    join(dir, 'hang.sh'),
    '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n"\nsleep 600\n',
    {
      mode: 0o755,
    },
  )
  writeFileSync(join(dir, 'ok.sh'), '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nok"\n', {
    mode: 0o755,
  })
  await killServerAndCheck(t, dir, {
    routes: ['[[routes]]', 'path = "/cgi"', `cgi = { root = ${JSON.stringify(dir)} }`],
    ready: ['/cgi/ok.sh'],
    inFlight: ['/cgi/hang.sh'],
    expect: ['python3', 'hang.sh', 'sleep'],
  })
})

test(
  'kill -9 of gatehouse serve: its php-cgi workers and a Python worker blocked in the app are gone within seconds',
  { skip: existsSync(PHP_CGI) ? false : `${PHP_CGI} not found (Debian package php-cgi)` },
  async (t) => {
    const dir = tempDir(t, 'gh-orphans-')
    writeFileSync(join(dir, 'index.php'), '<?php echo "php";')
    const serve = await killServerAndCheck(t, dir, {
      routes: [
        '[[routes]]',
        'path = "/asgi"',
        `asgi = { app = "blocking:app", chdir = ${JSON.stringify(join(FIXTURES, 'asgi'))}, python = ${JSON.stringify(PYTHON)}, workers = 1 }`,
        '[[routes]]',
        'path = "/"',
        `php = { root = ${JSON.stringify(dir)}, workers = { pm = "static", max_children = 2 } }`,
      ],
      ready: ['/index.php', '/asgi/'],
      // The ASGI app blocks its event loop in time.sleep(): the worker's own loop cannot notice.
      inFlight: ['/asgi/block'],
      expect: ['php-cgi', 'php-cgi', 'python3'],
    })
    // What the dead server left on disk is named after it, and removed by the next start.
    const left = readdirSync(tmpdir()).filter((name) => name.startsWith(`gh-pool-${serve}-`))
    assert.ok(left.length >= 2, `the dead server's socket directories (${left.join(', ')})`)
    const removed = removeLeftRunDirs('gh-pool-')
    for (const name of left) assert.ok(removed.includes(name), `${name} removed`)
    assert.equal(readdirSync(tmpdir()).filter((name) => name.startsWith(`gh-pool-${serve}-`)).length, 0)
  },
)

test('run directories of a live Gatehouse are kept, those of a dead one removed', (t) => {
  const dir = tempDir(t, 'gh-rundirs-')
  const dead = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' })
  const deadPid = Number(dead.stdout.trim())
  for (const name of [
    `gh-pool-${deadPid}-aaaaaa`,
    `gh-pool-${process.pid}-bbbbbb`,
    'gh-pool-cccccc',
    'other-1-x',
  ])
    mkdirSync(join(dir, name))
  assert.deepEqual(removeLeftRunDirs('gh-pool-', dir), [`gh-pool-${deadPid}-aaaaaa`])
  assert.deepEqual(readdirSync(dir).sort(), [`gh-pool-${process.pid}-bbbbbb`, 'gh-pool-cccccc', 'other-1-x'])
})
