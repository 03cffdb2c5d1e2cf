/*
 * limits.max_connections_per_ip (issue 18 item 9, nginx's limit_conn): one address holding
 * its quota of connections gets 503 GH_ERR_CONN_LIMIT on one more; other addresses and the
 * connections within the quota are served; a closed connection frees its place.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { test } from 'node:test'
import { eventually, startGatehouse } from '../support/helpers.js'

/** A keep-alive connection from `localAddress` that sends GETs and reads one response each. */
async function open(port: number, localAddress = '127.0.0.1'): Promise<Socket> {
  const socket = connect({ port, host: '127.0.0.1', localAddress })
  socket.setEncoding('latin1')
  await once(socket, 'connect')
  return socket
}

/** Send a GET on `socket` and read what comes back until the response (or the close). */
function get(socket: Socket): Promise<{ head: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = ''
    const done = (closed: boolean) => {
      socket.off('data', onData)
      socket.off('close', onClose)
      resolve({ head: text.split('\r\n\r\n')[0] ?? '', closed })
    }
    // A 200 ends with its body; anything else is followed by the close: wait for that.
    const onData = (chunk: string) => {
      text += chunk
      if (text.startsWith('HTTP/1.1 200') && text.endsWith('\r\n\r\nhello')) done(false)
    }
    const onClose = () => done(true)
    socket.on('data', onData)
    socket.on('close', onClose)
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  })
}

test(
  'max_connections_per_ip: the third connection of an address gets 503; other addresses and freed places are served',
  { timeout: 30_000 },
  async (t) => {
    const { port } = await startGatehouse(t, {
      limits: { max_connections_per_ip: 2 },
      routes: [{ path: '/', return: { status: 200, body: 'hello' } }],
    })
    const sockets: Socket[] = []
    t.after(() => sockets.forEach((s) => s.destroy()))
    const a = await open(port)
    const b = await open(port)
    sockets.push(a, b)
    for (const s of [a, b]) assert.match((await get(s)).head, /^HTTP\/1\.1 200/)

    const c = await open(port)
    sockets.push(c)
    const refused = await get(c)
    assert.match(refused.head, /^HTTP\/1\.1 503/)
    assert.match(refused.head, /retry-after: 1/i)
    assert.ok(refused.closed, 'the refused connection is closed')

    // The two within the quota still serve, again.
    for (const s of [a, b]) assert.match((await get(s)).head, /^HTTP\/1\.1 200/)
    // Another client address is not counted with this one.
    const other = await open(port, '127.0.0.2')
    sockets.push(other)
    assert.match((await get(other)).head, /^HTTP\/1\.1 200/)

    // A closed connection frees its place.
    a.destroy()
    await eventually(async () => {
      const d = await open(port)
      sockets.push(d)
      return /^HTTP\/1\.1 200/.test((await get(d)).head)
    }, 'a place freed by a closed connection')
  },
)

test('max_connections_per_ip = 0 (the default): no limit', { timeout: 30_000 }, async (t) => {
  const { port } = await startGatehouse(t, {
    routes: [{ path: '/', return: { status: 200, body: 'hello' } }],
  })
  const sockets = await Promise.all(Array.from({ length: 20 }, () => open(port)))
  t.after(() => sockets.forEach((s) => s.destroy()))
  for (const s of sockets) assert.match((await get(s)).head, /^HTTP\/1\.1 200/)
})
