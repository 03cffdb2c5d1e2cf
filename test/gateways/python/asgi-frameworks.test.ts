import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { asgi } from '../../../src/index.js'
import { FIXTURES, PYTHON, startGatehouse, tempDir, eventually } from '../../support/helpers.js'
import { closed, nextMessage, openWs } from '../../support/ws-helpers.js'

const APPS = join(FIXTURES, 'asgi')
const ENV = { PYTHONDONTWRITEBYTECODE: '1' }

const sharedCleanups: (() => unknown)[] = []
const hooks = { after: (fn: () => unknown) => void sharedCleanups.push(fn) }
after(async () => {
  for (const fn of sharedCleanups.splice(0)) await fn()
})

/** Run a Python script to its end; its stdout. */
function python(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...ENV } })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`exit ${code}: ${err}`))))
  })
}

describe('Starlette (python3-starlette) on the asgi action', () => {
  let origin = ''
  before(async () => {
    const running = await startGatehouse(hooks, {
      limits: { max_body_bytes: '20MB' },
      routes: [
        {
          // Starlette 0.26 routes on `path` without root_path (the older convention).
          path: '/old',
          asgi: {
            app: 'starlette_app:app',
            python: PYTHON,
            chdir: APPS,
            workers: 1,
            env: ENV,
            path_includes_root_path: false,
          },
        },
        {
          path: '/',
          asgi: { app: 'starlette_app:app', python: PYTHON, chdir: APPS, workers: 1, env: ENV },
        },
      ],
    })
    origin = running.origin
  })

  test('routes with path parameters and query strings; request.url', async () => {
    assert.equal(await (await fetch(`${origin}/`)).text(), 'hello from starlette')
    const res = await fetch(`${origin}/users/42?q=x%20y`)
    assert.equal(res.status, 200)
    const body = (await res.json()) as Record<string, unknown>
    assert.equal(body.id, 42)
    assert.equal(body.q, 'x y')
    assert.match(String(body.url), /^http:\/\/127\.0\.0\.1:\d+\/users\/42\?q=x%20y$/)
    assert.equal(body.client, '127.0.0.1')
    assert.equal((await fetch(`${origin}/users/abc`)).status, 404)
  })

  test('mounted under a prefix with path_includes_root_path = false (Starlette before 0.33)', async () => {
    const body = (await (await fetch(`${origin}/old/users/7?q=1`)).json()) as Record<string, unknown>
    assert.equal(body.id, 7)
    assert.equal(body.root_path, '/old')
    assert.match(String(body.url), /\/old\/users\/7\?q=1$/)
  })

  test('JSON request body', async () => {
    const res = await fetch(`${origin}/json`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ a: [1, 2, 3] }),
    })
    assert.deepEqual(await res.json(), { got: { a: [1, 2, 3] }, type: 'application/json' })
  })

  test('streaming response (StreamingResponse over an async generator)', async () => {
    const res = await fetch(`${origin}/stream`)
    assert.equal(res.headers.get('transfer-encoding'), 'chunked')
    assert.equal(await res.text(), [...Array(10).keys()].map((i) => `line ${i}\n`).join(''))
  })

  test('request.stream() over a 5 MB upload', async () => {
    const res = await fetch(`${origin}/upload`, { method: 'POST', body: Buffer.alloc(5 * 1024 * 1024, 1) })
    assert.deepEqual(await res.json(), { total: 5 * 1024 * 1024 })
  })

  test('lifespan state: what the lifespan yielded is request.state', async () => {
    const body = (await (await fetch(`${origin}/db`)).json()) as { db: string }
    assert.match(body.db, /^connected-\d+$/)
  })

  test('WebSocket echo (WebSocketEndpoint)', async () => {
    const { ws } = await openWs(`${origin.replace('http', 'ws')}/ws/echo`)
    ws.send('ping')
    assert.equal((await nextMessage(ws)).data.toString(), 'echo: ping')
    ws.close()
    await closed(ws)
  })

  test('WebSocket broadcast: every member of the room gets every message', async () => {
    const wsOrigin = origin.replace('http', 'ws')
    const members = await Promise.all([...Array(5)].map(() => openWs(`${wsOrigin}/ws/room`)))
    // The room (lifespan state, shared by the worker's requests) has them all.
    const counter = await openWs(`${wsOrigin}/ws/count`)
    assert.deepEqual(JSON.parse((await nextMessage(counter.ws)).data.toString()), { members: 5 })
    members[0]!.ws.send('to everyone')
    for (const { ws } of members) assert.equal((await nextMessage(ws)).data.toString(), 'to everyone')
    await Promise.all(
      members.map(({ ws }) => {
        const c = closed(ws)
        ws.close()
        return c
      }),
    )
  })

  test("Python's websockets client: 50 concurrent connections to a WebSocketEndpoint", async () => {
    const out = await python([
      join(APPS, 'ws_client.py'),
      `${origin.replace('http', 'ws')}/ws/echo`,
      '50',
      '0',
    ])
    const r = JSON.parse(out) as { connections: number; text_ok: number }
    assert.equal(r.text_ok, 50)
  })
})

describe('raw ASGI echo with Python websockets clients', () => {
  let wsOrigin = ''
  let markers = ''
  before(async () => {
    const dir = tempDir(hooks, 'gh-asgi-wsc-')
    markers = join(dir, 'm')
    mkdirSync(markers)
    const running = await startGatehouse(hooks, {
      routes: [
        {
          path: '/',
          asgi: {
            app: 'apps:app',
            python: PYTHON,
            chdir: APPS,
            workers: 2,
            env: { ...ENV, MARKER_DIR: markers },
          },
        },
      ],
    })
    wsOrigin = running.origin.replace('http', 'ws')
  })

  test('100 concurrent connections, text and 1 MB binary messages echoed intact', async () => {
    const out = await python([
      join(APPS, 'ws_client.py'),
      `${wsOrigin}/ws/echo?py`,
      '100',
      String(1024 * 1024),
    ])
    assert.deepEqual(JSON.parse(out), { connections: 100, text_ok: 100, binary_ok: 100 })
  })

  test('a client that drops its TCP connection: the app sees websocket.disconnect 1006', async () => {
    await python([join(APPS, 'ws_abrupt.py'), `${wsOrigin}/ws/echo?pyabrupt`])
    const file = join(markers, 'ws-echo-pyabrupt')
    assert.equal(
      await eventually(() => existsSync(file) && readFileSync(file, 'utf8'), 'the disconnect'),
      '1006',
    )
  })
})

test('FastAPI 0.92 (Starlette 0.26) behind a proxy that strips /api, root_path = "/api": served under the default path_includes_root_path = "auto" (issue 17 item 6)', async (t) => {
  const { origin } = await startGatehouse(t, {
    routes: [
      {
        path: '/',
        asgi: {
          app: 'fastapi_app:app',
          python: PYTHON,
          chdir: APPS,
          workers: 1,
          env: ENV,
          root_path: '/api',
        },
      },
    ],
  })
  // The proxy took /api off: the app sees /items with root_path /api (uvicorn --root-path does the same).
  const res = await fetch(`${origin}/items?skip=3`, { headers: { 'x-token': 'secret' } })
  assert.equal(res.status, 200)
  assert.deepEqual(((await res.json()) as { page: unknown }).page, { skip: 3, limit: 10 })
  // Its OpenAPI page names the prefix the client sees.
  const docs = await (await fetch(`${origin}/docs`)).text()
  assert.match(docs, /\/api\/openapi\.json/)
})

describe('FastAPI (python3-fastapi) on the asgi action', () => {
  let origin = ''
  let markers = ''
  before(async () => {
    const dir = tempDir(hooks, 'gh-asgi-fa-')
    markers = join(dir, 'm')
    mkdirSync(markers)
    const running = await startGatehouse(hooks, {
      routes: [
        {
          path: '/',
          asgi: {
            app: 'fastapi_app:app',
            python: PYTHON,
            chdir: APPS,
            workers: 2,
            env: { ...ENV, MARKER_DIR: markers },
          },
        },
      ],
    })
    origin = running.origin
  })

  test('JSON body parsed into a model and returned', async () => {
    const res = await fetch(`${origin}/items`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'pen', price: 1.5, tags: ['a'] }),
    })
    assert.equal(res.status, 200)
    assert.deepEqual(await res.json(), { item: { name: 'pen', price: 1.5, tags: ['a'] }, total: 3 })
  })

  test('validation errors: 422 with the details', async () => {
    const res = await fetch(`${origin}/items`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'pen', price: 'not a number' }),
    })
    assert.equal(res.status, 422)
    const body = (await res.json()) as { detail: { loc: string[] }[] }
    assert.deepEqual(body.detail[0]!.loc, ['body', 'price'])
  })

  test('dependency injection: query parameters and a header dependency (401 without it)', async () => {
    assert.equal((await fetch(`${origin}/items`)).status, 401)
    const res = await fetch(`${origin}/items?skip=5&limit=2`, { headers: { 'x-token': 'secret' } })
    assert.deepEqual(await res.json(), { page: { skip: 5, limit: 2 }, user: { user: 'alice' } })
  })

  test('background tasks run after the response', async () => {
    const res = await fetch(`${origin}/notify/n1`, { method: 'POST' })
    assert.deepEqual(await res.json(), { queued: 'n1' })
    const file = join(markers, 'bg-n1')
    assert.equal(
      await eventually(() => existsSync(file) && readFileSync(file, 'utf8'), 'the background task'),
      'done after the response',
    )
  })

  test('a sync endpoint (thread pool) and the OpenAPI document', async () => {
    assert.deepEqual(await (await fetch(`${origin}/sync`)).json(), { sync: true })
    const doc = (await (await fetch(`${origin}/openapi.json`)).json()) as { paths: Record<string, unknown> }
    assert.ok('/items' in doc.paths)
  })
})

describe('Django 3.2 ASGI (get_asgi_application), no lifespan, through the library API', () => {
  test('asgi({...}) on a plain node:http server; the Django app runs without lifespan', async (t) => {
    const dir = tempDir(t, 'gh-asgi-dj-')
    const errorLog = join(dir, 'error.log')
    const pino = (await import('pino')).default
    const log = pino({ level: 'info' }, pino.destination({ dest: errorLog, sync: true }))
    const app = asgi({
      app: 'djsite.asgi:application',
      python: PYTHON,
      chdir: APPS,
      workers: 1,
      env: ENV,
      prefix: '/dj',
      log,
    })
    t.after(() => app.close())
    await app.handler.ready()
    const server = createServer(app)
    server.on('upgrade', app.upgrade)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    t.after(() => new Promise<void>((r) => server.close(() => r())))
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    assert.equal(await (await fetch(`${origin}/dj/`)).text(), 'hello from django')
    const res = await fetch(`${origin}/dj/echo`, {
      method: 'POST',
      body: 'abc',
      headers: { 'x-test': 'yes' },
    })
    const body = (await res.json()) as Record<string, unknown>
    assert.deepEqual(body, {
      method: 'POST',
      path: '/dj/echo',
      script_name: '/dj',
      body: 'abc',
      header: 'yes',
      remote: '127.0.0.1',
    })
    const lines = readFileSync(errorLog, 'utf8')
      .split('\n')
      .filter((l) => /does not support lifespan/.test(l))
    assert.equal(lines.length, 1)
    assert.match(lines[0]!, /Django can only handle ASGI\/HTTP connections, not lifespan/)
    // A WebSocket to a Django app without channels: Django raises on the scope -> 500.
    await assert.rejects(
      openWs(`${origin.replace('http', 'ws')}/dj/ws`),
      (err: { status?: number }) => err.status === 500,
    )
  })
})
