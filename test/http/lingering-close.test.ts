/*
 * A 413 refusing a body the client is still sending reaches the client (nginx's lingering
 * close): the server half-closes and reads the rest of the body instead of closing at once,
 * whose reset would destroy the 413 in the client's buffer (seen as EPIPE/ECONNRESET in place
 * of the status: a flaky --max-body-size test under load).
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect } from 'node:net'
import { test } from 'node:test'
import { startGatehouse } from '../support/helpers.js'

test('a 413 for a declared body over the limit: the client writes its 4 MB whole, then reads the 413', async (t) => {
  const { port } = await startGatehouse(t, {
    limits: { max_body_bytes: 1024 },
    routes: [{ path: '/', return: { status: 200, body: 'hello' } }],
  })
  for (let round = 0; round < 3; round++) {
    const socket = connect({ port, host: '127.0.0.1' })
    t.after(() => socket.destroy())
    await once(socket, 'connect')
    const size = 4 * 1024 * 1024
    let text = ''
    let error = ''
    socket.on('error', (err) => (error = err.message))
    // Headers and the whole body in one write; the response is read after it is all sent.
    const written = await new Promise<boolean>((resolve) =>
      socket.write(
        Buffer.concat([
          Buffer.from(`POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${size}\r\n\r\n`),
          Buffer.alloc(size, 0x61),
        ]),
        (err) => resolve(!err),
      ),
    )
    socket.setEncoding('latin1')
    socket.on('data', (d: string) => (text += d))
    if (!socket.destroyed) await once(socket, 'close')
    assert.ok(written, `round ${round}: the body could not be written whole: ${error}`)
    assert.match(
      text,
      /^HTTP\/1\.1 413 /,
      `round ${round}: got ${JSON.stringify(text.slice(0, 40))} ${error}`,
    )
  }
})
