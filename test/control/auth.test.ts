/*
 * Who may use the control API over TCP (docs/control-api.md, "Access"): a non-loopback
 * address without a token is refused at start; with a token (control.token or
 * $GATEHOUSE_CONTROL_TOKEN) every request needs `Authorization: Bearer TOKEN`, and a
 * missing or wrong one is 401. The servers here listen on 127.0.0.1 only.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { childEnv, ctl, curl, serveWithControl } from '../support/control.js'
import { CLI, tempDir } from '../support/helpers.js'

const TOKEN = 'a-long-enough-control-token-0123'

test('a control API on a non-loopback TCP address without a token is refused at start (exit 2, naming the problem)', async (t) => {
  const dir = tempDir(t, 'gh-control-auth-')
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--static', dir, '--listen', '127.0.0.1:0', '--control', '0.0.0.0:0'],
    { cwd: dir, env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'] },
  )
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  assert.equal(code, 2, stderr)
  assert.match(stderr, /control\.listen: 0\.0\.0\.0:0 is not a loopback address: give control\.token/)
  assert.doesNotMatch(stderr, /"msg":"listening"/)
})

test('with a token, a request without it or with another one is 401; the right one is served (curl and gatehouse ctl)', async (t) => {
  const dir = tempDir(t, 'gh-control-auth-')
  writeFileSync(
    join(dir, 'gatehouse.toml'),
    [
      'listen = ["127.0.0.1:0"]',
      `control = { listen = "127.0.0.1:0", token = ${JSON.stringify(TOKEN)} }`,
      '[[routes]]',
      'exact = "/hello"',
      'return = { status = 200, body = "hello" }',
      '',
    ].join('\n'),
  )
  const { control } = await serveWithControl(t, dir, ['--config', 'gatehouse.toml'])
  assert.match(control, /^127\.0\.0\.1:\d+$/)

  const none = await curl(control, 'GET', '/config')
  assert.equal(none.status, 401)
  assert.equal((none.json as { code: string }).code, 'GH_ERR_CONTROL_AUTH')
  const wrong = await curl(control, 'GET', '/config', { headers: [`authorization: Bearer ${TOKEN}x`] })
  assert.equal(wrong.status, 401)
  const change = await curl(control, 'DELETE', '/config/routes/0', {
    headers: ['authorization: Bearer nope'],
  })
  assert.equal(change.status, 401)
  const right = await curl(control, 'GET', '/config/routes/0/exact', {
    headers: [`authorization: Bearer ${TOKEN}`],
  })
  assert.equal(right.status, 200)
  assert.equal(right.json, '/hello')

  const denied = await ctl(['--control', control, 'status'])
  assert.equal(denied.code, 1)
  assert.equal((JSON.parse(denied.stderr) as { code: string }).code, 'GH_ERR_CONTROL_AUTH')
  const allowed = await ctl(['--control', control, 'get', 'routes/0/exact'], {
    env: { GATEHOUSE_CONTROL_TOKEN: TOKEN },
  })
  assert.equal(allowed.code, 0, allowed.stderr)
  assert.equal(JSON.parse(allowed.stdout), '/hello')
})

test('the token may come from $GATEHOUSE_CONTROL_TOKEN instead of the config file', async (t) => {
  const dir = tempDir(t, 'gh-control-auth-')
  const { control } = await serveWithControl(
    t,
    dir,
    [
      '--static',
      dir,
      '--listen',
      '127.0.0.1:0',
      '--control',
      '127.0.0.1:0',
      '--control-state',
      join(dir, 'state.json'),
    ],
    { GATEHOUSE_CONTROL_TOKEN: TOKEN },
  )
  assert.equal((await curl(control, 'GET', '/config')).status, 401)
  const ok = await curl(control, 'GET', '/config/control', { headers: [`authorization: Bearer ${TOKEN}`] })
  assert.equal(ok.status, 200)
  // The token from the environment is not written into the configuration (nor the state file).
  assert.deepEqual(ok.json, { listen: '127.0.0.1:0', state: join(dir, 'state.json') })
})

test("control.mode sets the Unix socket file's mode (default 0600)", async (t) => {
  const dir = tempDir(t, 'gh-control-auth-')
  writeFileSync(
    join(dir, 'gatehouse.toml'),
    ['listen = ["127.0.0.1:0"]', 'control = { listen = "unix:./group.sock", mode = "0660" }', ''].join('\n'),
  )
  const { control } = await serveWithControl(t, dir, ['--config', 'gatehouse.toml'])
  assert.equal(control, `unix:${join(dir, 'group.sock')}`)
  assert.equal(statSync(join(dir, 'group.sock')).mode & 0o777, 0o660)
  assert.equal((await curl(control, 'GET', '/config/control/mode')).json, '0660')
})
