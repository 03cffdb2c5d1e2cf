/*
 * The proxy action in front of real Python servers: uvicorn (an ASGI app, HTTP and
 * WebSocket) and gunicorn (a WSGI app), the stacks nginx usually fronts.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { before, describe, test } from 'node:test'
import { request } from 'undici'
import {
  freePort,
  PYTHON,
  type Running,
  startGatehouse,
  stopServe,
  tempDir,
  suiteCleanups,
} from '../../support/helpers.js'
import { closed, nextMessage, openWs } from '../../support/ws-helpers.js'

const ASGI_APP = `
import json

async def app(scope, receive, send):
    if scope['type'] == 'lifespan':
        while True:
            m = await receive()
            if m['type'] == 'lifespan.startup':
                await send({'type': 'lifespan.startup.complete'})
            else:
                await send({'type': 'lifespan.shutdown.complete'})
                return
    headers = {k.decode('latin1'): v.decode('latin1') for k, v in scope['headers']}
    if scope['type'] == 'websocket':
        await receive()
        if scope['path'].endswith('/deny'):
            await send({'type': 'websocket.close', 'code': 1008})
            return
        await send({'type': 'websocket.accept', 'subprotocol': 'echo',
                    'headers': [(b'x-ws-app', headers.get('x-forwarded-for', '').encode())]})
        while True:
            m = await receive()
            if m['type'] == 'websocket.disconnect':
                return
            if m.get('text') == 'close':
                await send({'type': 'websocket.close', 'code': 4001})
                return
            if m.get('text') is not None:
                await send({'type': 'websocket.send', 'text': 'echo:' + m['text']})
            else:
                await send({'type': 'websocket.send', 'bytes': m['bytes']})
    body = b''
    while True:
        m = await receive()
        body += m.get('body', b'')
        if not m.get('more_body'):
            break
    if scope['path'].endswith('/stream'):
        await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})
        for i in range(100):
            await send({'type': 'http.response.body', 'body': b'x' * 10000, 'more_body': True})
        await send({'type': 'http.response.body', 'body': b'end'})
        return
    out = json.dumps({'method': scope['method'], 'path': scope['path'], 'query': scope['query_string'].decode(),
                      'length': len(body), 'headers': headers}).encode()
    await send({'type': 'http.response.start', 'status': 200,
                'headers': [(b'content-type', b'application/json'), (b'content-length', str(len(out)).encode())]})
    await send({'type': 'http.response.body', 'body': out})
`

const WSGI_APP = `
import json

def application(environ, start_response):
    body = environ['wsgi.input'].read()
    out = json.dumps({'method': environ['REQUEST_METHOD'], 'path': environ['PATH_INFO'],
                      'length': len(body), 'xff': environ.get('HTTP_X_FORWARDED_FOR'),
                      'host': environ.get('HTTP_HOST'), 'proto': environ.get('HTTP_X_FORWARDED_PROTO'),
                      'te': environ.get('HTTP_TRANSFER_ENCODING')}).encode()
    start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(out))),
                              ('Connection', 'close')])
    return [out]
`

/** Start a Python server on a free port and wait until it accepts connections. */
async function startPython(
  args: (port: number) => string[],
  hooks: { after: (fn: () => unknown) => void },
): Promise<string> {
  const port = await freePort()
  const child: ChildProcess = spawn(PYTHON, args(port), {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', PYTHONDONTWRITEBYTECODE: '1' },
  })
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  hooks.after(() => stopServe(child))
  const end = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}: ${stderr}`)
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1')
      s.once('connect', () => {
        s.destroy()
        resolve(true)
      })
      s.once('error', () => resolve(false))
    })
    if (ok) return `http://127.0.0.1:${port}`
    if (Date.now() > end) throw new Error(`not listening after 30 s: ${stderr}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

describe('proxy action: Gatehouse -> uvicorn and gunicorn', () => {
  let gh: Running
  const hooks = suiteCleanups()

  before(async () => {
    const dir = tempDir(hooks)
    writeFileSync(join(dir, 'asgiapp.py'), ASGI_APP)
    writeFileSync(join(dir, 'wsgiapp.py'), WSGI_APP)
    const [uvicorn, gunicorn] = await Promise.all([
      startPython(
        (port) => [
          '-m',
          'uvicorn',
          '--app-dir',
          dir,
          '--host',
          '127.0.0.1',
          '--port',
          String(port),
          'asgiapp:app',
        ],
        hooks,
      ),
      startPython(
        (port) => [
          '-m',
          'gunicorn',
          '-w',
          '1',
          '-b',
          `127.0.0.1:${port}`,
          '--chdir',
          dir,
          'wsgiapp:application',
        ],
        hooks,
      ),
    ])
    gh = await startGatehouse(hooks, {
      routes: [
        { path: '/wsgi/', proxy: { upstream: `${gunicorn}/`, request_buffering: true } },
        { path: '/', proxy: { upstream: uvicorn } },
      ],
    })
  })

  test('uvicorn: methods, query, a large body, forwarded fields', async () => {
    const data = randomBytes(3 * 1024 * 1024)
    const res = await request(`${gh.origin}/a/b?c=d`, {
      method: 'PUT',
      body: data,
      headers: { 'x-forwarded-for': '9.9.9.9', host: 'app.test' },
    })
    assert.equal(res.statusCode, 200)
    const seen = (await res.body.json()) as {
      method: string
      path: string
      query: string
      length: number
      headers: Record<string, string>
    }
    assert.equal(seen.method, 'PUT')
    assert.equal(seen.path, '/a/b')
    assert.equal(seen.query, 'c=d')
    assert.equal(seen.length, data.length)
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1')
    assert.equal(seen.headers.host, 'app.test')
    assert.equal(seen.headers['x-forwarded-proto'], 'http')
  })

  test('uvicorn: a chunked upload and a streamed response', async () => {
    const parts = [Buffer.alloc(70_000, 1), Buffer.alloc(500_000, 2)]
    const res = await request(`${gh.origin}/up`, { method: 'POST', body: Readable.from(parts) })
    const seen = (await res.body.json()) as { length: number; headers: Record<string, string> }
    assert.equal(seen.length, 570_000)
    assert.equal(seen.headers['transfer-encoding'], 'chunked')
    const stream = await request(`${gh.origin}/stream`)
    const text = await stream.body.text()
    assert.equal(text.length, 1_000_003)
    assert.ok(text.endsWith('end'))
  })

  test('gunicorn: the prefix replaced by the URL path; a chunked upload buffered to a Content-Length', async () => {
    const res = await request(`${gh.origin}/wsgi/x/y`, {
      method: 'POST',
      body: Readable.from([Buffer.alloc(1000), Buffer.alloc(2000)]),
      headers: { 'x-forwarded-proto': 'https' },
    })
    assert.equal(res.statusCode, 200)
    // gunicorn said Connection: close; our client keeps its own connection.
    assert.equal(res.headers.connection, 'keep-alive')
    const seen = (await res.body.json()) as Record<string, unknown>
    assert.equal(seen.path, '/x/y')
    assert.equal(seen.length, 3000)
    assert.equal(seen.te, null)
    assert.equal(seen.proto, 'http')
    assert.equal(seen.xff, '127.0.0.1')
    for (let i = 0; i < 5; i++) {
      const again = await request(`${gh.origin}/wsgi/again`)
      assert.equal(again.statusCode, 200)
      await again.body.dump()
    }
  })

  test('WebSocket through the proxy to uvicorn: text, binary, subprotocol, close code', async () => {
    const { ws, headers } = await openWs(`${gh.origin.replace('http', 'ws')}/ws`, ['echo'])
    assert.equal(ws.protocol, 'echo')
    assert.equal(headers['x-ws-app'], '127.0.0.1')
    ws.send('hello')
    assert.equal((await nextMessage(ws)).data.toString(), 'echo:hello')
    const big = randomBytes(200_000)
    ws.send(big)
    assert.deepEqual((await nextMessage(ws)).data, big)
    ws.send('close')
    assert.equal((await closed(ws)).code, 4001)
  })

  test('a WebSocket the app refuses: the upstream answer is relayed', async () => {
    const err = (await openWs(`${gh.origin.replace('http', 'ws')}/ws/deny`).catch((e: unknown) => e)) as {
      status?: number
    }
    assert.equal(err.status, 403)
  })
})
