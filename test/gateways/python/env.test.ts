/*
 * What reaches a Python worker's os.environ (issue 17 items 4, 5): the server's environment
 * (less what describes the server process), --env-file, --env; the active virtualenv's
 * interpreter, named with its version in the log.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { workerEnvironment } from '../../../src/gateways/python/pool.js'
import { CLI, FIXTURES, PYTHON, tempDir, listeningAddress } from '../../support/helpers.js'

const APPS = join(FIXTURES, 'wsgi')

test('gatehouse serve --wsgi: the shell environment, --env-file and --env reach the app; the virtualenv python runs it', async (t) => {
  const dir = tempDir(t)
  // A virtualenv as `source .venv/bin/activate` leaves it: VIRTUAL_ENV, bin/python.
  const venv = join(dir, 'venv')
  mkdirSync(join(venv, 'bin'), { recursive: true })
  symlinkSync(PYTHON, join(venv, 'bin', 'python'))
  const envFile = join(dir, '.env')
  writeFileSync(envFile, '# a comment\nFROM_FILE=file\nBOTH="from file"\nDATABASE_URL=overridden-by-shell?\n')
  const child = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--wsgi',
      'apps:application',
      '--chdir',
      APPS,
      '--workers',
      '1',
      '--env-file',
      envFile,
      '--env',
      'BOTH=flag',
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        VIRTUAL_ENV: venv,
        DATABASE_URL: 'postgres://db/app',
        NOTIFY_SOCKET: '/run/systemd/notify-nope',
        LISTEN_FDNAMES: 'http',
        WATCHDOG_USEC: '1000000',
        GATEHOUSE_SOMETHING: 'ours',
      },
    },
  )
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  const served = await listeningAddress(child)
  const address = served.address
  const names = [
    'DATABASE_URL',
    'FROM_FILE',
    'BOTH',
    'NOTIFY_SOCKET',
    'LISTEN_FDNAMES',
    'WATCHDOG_USEC',
    'GATEHOUSE_SOMETHING',
    'VIRTUAL_ENV',
  ]
  const res = await fetch(`http://${address}/os-environ?${names.join(',')}`)
  const env = (await res.json()) as Record<string, string | null>
  // env_file is laid over the inherited environment, --env over both.
  assert.equal(env.DATABASE_URL, 'overridden-by-shell?')
  assert.equal(env.FROM_FILE, 'file')
  assert.equal(env.BOTH, 'flag')
  assert.equal(env.VIRTUAL_ENV, venv)
  for (const withheld of ['NOTIFY_SOCKET', 'LISTEN_FDNAMES', 'WATCHDOG_USEC', 'GATEHOUSE_SOMETHING'])
    assert.equal(env[withheld], null, withheld)
  assert.equal(env['sys.executable'], join(venv, 'bin', 'python'))
  const deadline = Date.now() + 10_000
  while (!served.stderr().includes('wsgi workers run') && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50))
  assert.match(
    served.stderr(),
    new RegExp(`"msg":"wsgi workers run ${join(venv, 'bin', 'python')} \\(Python 3\\.\\d+\\.\\d+\\)"`),
  )
  const exited = new Promise((resolve) => child.on('exit', resolve))
  child.kill('SIGTERM')
  assert.equal(await exited, 0)
})

test('the shell environment without the env file: DATABASE_URL from the shell reaches the app', async () => {
  const saved = process.env.DATABASE_URL
  process.env.DATABASE_URL = 'postgres://shell'
  try {
    const env = workerEnvironment({ APP: '1' })
    assert.equal(env.DATABASE_URL, 'postgres://shell')
    assert.equal(env.APP, '1')
    assert.ok(env.PYTHONPATH!.length > 0)
    // inherit_env = false: only the basics, and the app's own.
    const bare = workerEnvironment({ APP: '1' }, false)
    assert.equal(bare.DATABASE_URL, undefined)
    assert.equal(bare.PATH, process.env.PATH)
    assert.equal(bare.APP, '1')
  } finally {
    if (saved === undefined) delete process.env.DATABASE_URL
    else process.env.DATABASE_URL = saved
  }
})
