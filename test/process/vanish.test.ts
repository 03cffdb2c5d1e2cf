/*
 * A worker that vanishes before answering costs only what it had begun (issue 18; the
 * defect the chaos test found): a GET written to a worker that then dies without a byte of
 * answer goes to another worker, as nginx's proxy_next_upstream does; a POST, which the app
 * may have begun, gets its 502 and is not run twice. The worker here SIGKILLs itself on
 * /vanish once (a marker file), the deterministic form of a worker killed just as a request
 * reaches it. Without the retry the GET gets 502.
 */
import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { request } from 'undici'
import { eventually, FIXTURES, PYTHON, startGatehouse, tempDir } from '../support/helpers.js'

const PHP_VANISH = `<?php
$dir = getenv('STALL_DIR') ?: __DIR__;
file_put_contents("$dir/started", $_SERVER['REQUEST_URI'] . "\\n", FILE_APPEND);
if (file_exists("$dir/vanish")) { unlink("$dir/vanish"); posix_kill(getmypid(), 9); }
echo getmypid();
`

type Kind = 'wsgi' | 'asgi' | 'php'

async function start(t: TestContext, kind: Kind) {
  const dir = tempDir(t, 'gh-vanish-')
  const python = { python: PYTHON, workers: 2, env: { STALL_DIR: dir } }
  let route: Record<string, unknown>
  if (kind === 'php') {
    writeFileSync(join(dir, 'vanish.php'), PHP_VANISH)
    writeFileSync(join(dir, 'fast.php'), '<?php echo getmypid();')
    route = { path: '/', php: { root: dir, workers: { pm: 'static', max_children: 2 } } }
  } else
    route = {
      path: '/',
      [kind]: {
        ...python,
        app: kind === 'wsgi' ? 'stall:application' : 'stall:app',
        chdir: join(FIXTURES, kind),
      },
    }
  const running = await startGatehouse(t, { routes: [route] })
  const suffix = kind === 'php' ? '.php' : ''
  const call = async (method: 'GET' | 'POST', path: string) => {
    const r = await request(`${running.origin}${path}${suffix}`, {
      method,
      body: method === 'POST' ? 'x' : undefined,
    })
    return { status: r.statusCode, body: await r.body.text() }
  }
  await eventually(async () => (await call('GET', '/fast')).status === 200, 'the pool')
  const started = () =>
    existsSync(join(dir, 'started'))
      ? readFileSync(join(dir, 'started'), 'utf8')
          .split('\n')
          .filter((l) => l.includes('vanish'))
      : []
  const arm = () => writeFileSync(join(dir, 'vanish'), '')
  return { call, started, arm }
}

for (const kind of ['wsgi', 'asgi', 'php'] as const) {
  test(`${kind}: a GET whose worker dies before answering is served by another worker`, async (t) => {
    const app = await start(t, kind)
    app.arm()
    const r = await app.call('GET', '/vanish')
    assert.equal(r.status, 200, `the GET was sent again to another worker: ${r.body}`)
    assert.equal(app.started().length, 2, 'run by the vanished worker, then once more by another')
    // The pool replaces the dead worker and serves on.
    await eventually(async () => (await app.call('GET', '/fast')).status === 200, 'the pool after the death')
  })

  test(`${kind}: a POST whose worker dies before answering gets 502 and is not run again`, async (t) => {
    const app = await start(t, kind)
    app.arm()
    const r = await app.call('POST', '/vanish')
    assert.equal(r.status, 502)
    assert.equal(app.started().length, 1, 'the POST ran once')
    await eventually(async () => (await app.call('GET', '/fast')).status === 200, 'the pool after the death')
  })
}
