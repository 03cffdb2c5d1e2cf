import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { join } from 'node:path'
import { test } from 'node:test'
import { FIXTURES, PYTHON, startGatehouse } from '../../support/helpers.js'

/** A body several request windows long: the worker grants credit many times over. */
const BODY = Buffer.alloc(3 * 1024 * 1024, 'x')

/**
 * POST `path` with `Expect: 100-continue` over a raw socket, the body only once the 100 has
 * arrived, and return every byte the server wrote until it closed the connection.
 */
function postExpecting(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let bodySent = false
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no complete response: ${Buffer.concat(chunks).toString('latin1').slice(0, 300)}`))
    }, 20_000)
    socket.on('connect', () => {
      socket.write(
        `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${BODY.length}\r\n` +
          'Expect: 100-continue\r\nConnection: close\r\n\r\n',
      )
    })
    socket.on('data', (chunk) => {
      chunks.push(chunk)
      if (!bodySent && Buffer.concat(chunks).toString('latin1').includes('100 Continue\r\n\r\n')) {
        bodySent = true
        socket.write(BODY)
      }
    })
    socket.on('error', reject)
    socket.on('close', () => {
      clearTimeout(timer)
      resolve(Buffer.concat(chunks).toString('latin1'))
    })
  })
}

const count100 = (text: string) => text.split('HTTP/1.1 100 Continue\r\n').length - 1

test('Expect: 100-continue with a body of many credit grants: exactly one 100 Continue (WSGI, ASGI)', async (t) => {
  const common = { python: PYTHON, workers: 1 }
  const { port } = await startGatehouse(t, {
    limits: { max_body_bytes: '20MB' },
    routes: [
      {
        path: '/wsgi-streamed',
        wsgi: { ...common, app: 'apps:application', chdir: join(FIXTURES, 'wsgi'), request_buffering: false },
      },
      { path: '/wsgi', wsgi: { ...common, app: 'apps:application', chdir: join(FIXTURES, 'wsgi') } },
      { path: '/asgi', asgi: { ...common, app: 'apps:app', chdir: join(FIXTURES, 'asgi') } },
    ],
  })
  for (const [path, expected] of [
    ['/wsgi-streamed/continue?read', `read ${BODY.length}`],
    ['/wsgi/continue?read', `read ${BODY.length}`],
    ['/asgi/chunks', `"total": ${BODY.length}`],
  ] as const) {
    const text = await postExpecting(port, path)
    assert.match(text, /HTTP\/1\.1 200 OK/, `${path}: ${text.slice(0, 300)}`)
    assert.ok(text.includes(expected), `${path}: the app read the whole body: ${text.slice(-200)}`)
    assert.equal(count100(text), 1, `${path}: 100 Continue lines`)
  }
})
