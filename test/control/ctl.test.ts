/*
 * `gatehouse ctl` (src/cli/ctl.ts) as a child process against a real `gatehouse serve`'s
 * control socket: every subcommand, a body from a file and from stdin, and exit code 1 with
 * the error printed when the API answers 4xx.
 */
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { ctl, serveWithControl } from '../support/control.js'
import { FIXTURES, PYTHON, tempDir, getOnce } from '../support/helpers.js'

const WSGI_DIR = join(FIXTURES, 'wsgi')

const get = getOnce

test('gatehouse ctl get, put (file and stdin), post, delete, status, reload; exit 1 and the error on stderr for a 4xx', async (t) => {
  const dir = tempDir(t, 'gh-ctl-')
  writeFileSync(
    join(dir, 'gatehouse.toml'),
    [
      'listen = ["127.0.0.1:0"]',
      '[[routes]]',
      'exact = "/hello"',
      'return = { status = 200, body = "hello" }',
      '[[routes]]',
      'path = "/app"',
      `wsgi = { app = "apps:application", chdir = ${JSON.stringify(WSGI_DIR)}, python = ${JSON.stringify(PYTHON)}, workers = 1 }`,
      '',
    ].join('\n'),
  )
  const socket = join(dir, 'api.sock')
  // The address from the flag; ctl finds it in $GATEHOUSE_CONTROL.
  const { port } = await serveWithControl(t, dir, [
    '--config',
    'gatehouse.toml',
    '--control',
    `unix:${socket}`,
  ])
  const env = { GATEHOUSE_CONTROL: `unix:${socket}` }

  const routes = await ctl(['get', '/config/routes'], { env })
  assert.equal(routes.code, 0, routes.stderr)
  assert.equal((JSON.parse(routes.stdout) as unknown[]).length, 2)
  // `routes/0` is short for /config/routes/0; --control names the socket too.
  const first = await ctl(['--control', `unix:${socket}`, 'get', 'routes/0'])
  assert.equal(first.code, 0, first.stderr)
  assert.deepEqual(JSON.parse(first.stdout), { exact: '/hello', return: { status: 200, body: 'hello' } })

  const file = join(dir, 'route.json')
  writeFileSync(file, JSON.stringify({ exact: '/hello', return: { status: 200, body: 'from a file' } }))
  const put = await ctl(['put', '/config/routes/0', file], { env })
  assert.equal(put.code, 0, put.stderr)
  assert.deepEqual(JSON.parse(put.stdout), { success: 'configuration applied', path: '/config/routes/0' })
  assert.deepEqual(await get(port, '/hello'), { status: 200, body: 'from a file' })

  const fromStdin = await ctl(['put', '/config/routes/0/return/body', '-'], { env, stdin: '"from stdin"' })
  assert.equal(fromStdin.code, 0, fromStdin.stderr)
  assert.deepEqual(await get(port, '/hello'), { status: 200, body: 'from stdin' })

  const post = await ctl(['post', 'routes', '-'], {
    env,
    stdin: JSON.stringify({ exact: '/posted', return: { status: 202, body: 'posted' } }),
  })
  assert.equal(post.code, 0, post.stderr)
  assert.equal((JSON.parse(post.stdout) as { path: string }).path, '/config/routes/2')
  assert.deepEqual(await get(port, '/posted'), { status: 202, body: 'posted' })

  const del = await ctl(['delete', '/config/routes/2'], { env })
  assert.equal(del.code, 0, del.stderr)
  assert.equal((await get(port, '/posted')).status, 404)

  const status = await ctl(['status'], { env })
  assert.equal(status.code, 0, status.stderr)
  assert.deepEqual(
    (JSON.parse(status.stdout) as { routes: { action: string }[] }).routes.map((r) => r.action),
    ['return', 'wsgi'],
  )
  const reload = await ctl(['reload', '1'], { env })
  assert.equal(reload.code, 0, reload.stderr)
  assert.deepEqual(JSON.parse(reload.stdout), { success: 'workers reloaded', route: 1 })

  // 4xx: exit 1, the API's JSON error on stderr, nothing on stdout.
  const missing = await ctl(['get', '/config/routes/9'], { env })
  assert.equal(missing.code, 1)
  assert.equal(missing.stdout, '')
  assert.equal((JSON.parse(missing.stderr) as { code: string }).code, 'GH_ERR_CONTROL_PATH')
  const bad = await ctl(['put', '/config/routes/1/wsgi/workers', '-'], { env, stdin: '0' })
  assert.equal(bad.code, 1)
  assert.match(
    (JSON.parse(bad.stderr) as { problems: string[] }).problems[0]!,
    /^routes\[1\]\.wsgi\.workers: /,
  )
  const notAPool = await ctl(['reload', '0'], { env })
  assert.equal(notAPool.code, 1)
  assert.equal((JSON.parse(notAPool.stderr) as { code: string }).code, 'GH_ERR_CONTROL_REQUEST')
  // Nobody there: exit 1, and a line saying where it looked.
  const nobody = await ctl(['--control', `unix:${join(dir, 'none.sock')}`, 'status'])
  assert.equal(nobody.code, 1)
  assert.match(nobody.stderr, /cannot reach the control API at unix:.*none\.sock: ENOENT/)
})
