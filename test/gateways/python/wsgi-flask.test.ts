import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import pino from 'pino'
import { GatehouseError, wsgi } from '../../../src/index.js'
import { PYTHON_PACKAGE_DIR } from '../../../src/gateways/python/locate.js'
import { CLI, FIXTURES, PYTHON, eventually, listeningAddress } from '../../support/helpers.js'

const APPS = join(FIXTURES, 'wsgi')

function memoryLog() {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line))
      cb()
    },
  })
  return { log: pino({ level: 'info' }, stream), lines }
}

describe('Flask through the library API: wsgi({ app, python, workers })', () => {
  const { log, lines } = memoryLog()
  const listener = wsgi({
    app: 'flask_app:app',
    python: PYTHON,
    chdir: APPS,
    workers: 2,
    log,
    max_body_bytes: '20MB',
  })
  const server = createServer(listener)
  let origin = ''

  before(async () => {
    await listener.handler.ready()
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`
  })
  after(async () => {
    server.closeAllConnections()
    await listener.close()
    await new Promise((r) => server.close(r))
  })

  test('a route', async () => {
    const res = await fetch(`${origin}/`)
    assert.equal(res.status, 200)
    assert.equal(await res.text(), 'Hello from Flask')
  })

  test('JSON in and out', async () => {
    const res = await fetch(`${origin}/json`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ a: [1, 2], b: 'é' }),
    })
    assert.deepEqual(await res.json(), { got: { a: [1, 2], b: 'é' }, method: 'POST' })
  })

  test('a form with a 10 MB file upload', async () => {
    const file = Buffer.alloc(10 * 1024 * 1024)
    for (let i = 0; i < file.length; i += 4096) file[i] = i % 255
    const form = new FormData()
    form.append('name', 'upload test')
    form.append('file', new Blob([file]), 'big.bin')
    const res = await fetch(`${origin}/form`, { method: 'POST', body: form })
    assert.equal(res.status, 200)
    assert.deepEqual(await res.json(), {
      name: 'upload test',
      file: 'big.bin',
      sha256: createHash('sha256').update(file).digest('hex'),
    })
  })

  test('a streaming generator response', async () => {
    const res = await fetch(`${origin}/stream`)
    assert.equal(res.headers.get('transfer-encoding'), 'chunked')
    assert.equal(await res.text(), 'line 0\nline 1\nline 2\nline 3\nline 4\n')
  })

  test('cookies and the session', async () => {
    const login = await fetch(`${origin}/login?user=ada`)
    const cookies = login.headers.getSetCookie().map((c) => c.split(';')[0]!)
    assert.ok(cookies.some((c) => c.startsWith('session=')))
    assert.ok(cookies.includes('plain=cookie-value'))
    const who = await fetch(`${origin}/whoami`, { headers: { cookie: cookies.join('; ') } })
    assert.deepEqual(await who.json(), { user: 'ada', plain: 'cookie-value' })
  })

  test('a view that raises: 500, Flask logs the traceback to our error log', async () => {
    const res = await fetch(`${origin}/error`)
    assert.equal(res.status, 500)
    await eventually(
      () => lines.find((l) => /Exception on \/error \[GET\]/.test(String(l.msg))),
      'Flask log line',
    )
    await eventually(
      () => lines.find((l) => /ValueError: flask view failed/.test(String(l.msg))),
      'traceback',
    )
  })

  test('request.url and remote_addr from the environ', async () => {
    const res = await fetch(`${origin}/url?x=1`)
    const body = (await res.json()) as Record<string, string>
    assert.equal(body.url, `${origin}/url?x=1`)
    assert.equal(body.remote, '127.0.0.1')
    assert.equal(body.scheme, 'http')
  })
})

describe('WSGI app import errors', () => {
  test('the worker prints the traceback and exits non-zero, before it listens', () => {
    const r = spawnSync(
      PYTHON,
      [
        '-m',
        'gatehouse_worker',
        '--socket',
        '/nonexistent/dir/w.sock',
        '--wsgi',
        'broken:application',
        '--chdir',
        APPS,
      ],
      {
        env: { PYTHONPATH: PYTHON_PACKAGE_DIR, PATH: process.env.PATH ?? '/usr/bin' },
        encoding: 'utf8',
        timeout: 20_000,
      },
    )
    assert.equal(r.status, 1)
    assert.match(r.stderr, /Traceback \(most recent call last\)/)
    assert.match(r.stderr, /ModuleNotFoundError: No module named 'this_module_does_not_exist_anywhere'/)
  })

  test('the library handler: ready() rejects with GH_ERR_WORKER_START, the traceback is in the log', async () => {
    const { log, lines } = memoryLog()
    const listener = wsgi({ app: 'broken:application', python: PYTHON, chdir: APPS, workers: 1, log })
    try {
      await assert.rejects(listener.handler.ready(), (err: unknown) => {
        assert.ok(err instanceof GatehouseError)
        assert.equal(err.code, 'GH_ERR_WORKER_START')
        return true
      })
      assert.ok(lines.some((l) => /ModuleNotFoundError/.test(String(l.msg))))
    } finally {
      await listener.close()
    }
  })

  test('gatehouse serve --wsgi exits 1 showing the traceback', async () => {
    const child = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--listen',
        '127.0.0.1:0',
        '--wsgi',
        'broken:application',
        '--chdir',
        APPS,
        '--python',
        PYTHON,
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    let stderr = ''
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (d: string) => (stderr += d))
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
    assert.equal(code, 1)
    assert.match(stderr, /cannot start/)
    assert.match(stderr, /ModuleNotFoundError/)
  })

  test('gatehouse serve --wsgi serves the app (flags: workers, threads, env, root-path)', async (t) => {
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
        '--python',
        PYTHON,
        '--workers',
        '1',
        '--threads',
        '2',
        '--env',
        'GREETING=hi',
        '--root-path',
        '/app',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    t.after(() => {
      if (child.exitCode === null) child.kill('SIGKILL')
    })
    const { address } = await listeningAddress(child)
    const env = (await (await fetch(`http://${address}/environ`)).json()) as Record<string, unknown>
    assert.equal(env.SCRIPT_NAME, '/app')
    assert.equal(env.PATH_INFO, '/environ')
    assert.equal(env['wsgi.multithread'], true)
    const exited = new Promise((resolve) => child.on('exit', resolve))
    child.kill('SIGTERM')
    assert.equal(await exited, 0)
  })
})
