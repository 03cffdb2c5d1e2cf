/*
 * Open WebSockets count as load on their ASGI worker (issue 18 item 9): they are spread
 * over the workers, and `ws_max_per_worker` caps them, refusing one more upgrade with 503.
 * Real sockets, real Python workers, the `ws` package as the client.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, test } from 'node:test'
import type WebSocket from 'ws'
import { eventually, FIXTURES, logLines, PYTHON, startGatehouse, tempDir } from '../../support/helpers.js'
import { closed, nextMessage, openWs } from '../../support/ws-helpers.js'

const cleanups: (() => unknown)[] = []
const hooks = { after: (fn: () => unknown) => void cleanups.push(fn) }
after(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

const asgi = (extra: Record<string, unknown> = {}) => ({
  app: 'ws_pid:app',
  python: PYTHON,
  chdir: join(FIXTURES, 'asgi'),
  workers: 2,
  env: { PYTHONDONTWRITEBYTECODE: '1' },
  ...extra,
})

/** Open a WebSocket to the pid app: the socket and the pid of the worker that holds it. */
async function openPid(url: string): Promise<{ ws: WebSocket; pid: number }> {
  const { ws } = await openWs(url)
  const pid = Number((await nextMessage(ws)).data.toString())
  assert.ok(pid > 0)
  return { ws, pid }
}

function spread(socks: { pid: number }[]): number[] {
  const counts = new Map<number, number>()
  for (const { pid } of socks) counts.set(pid, (counts.get(pid) ?? 0) + 1)
  return [...counts.values()].sort()
}

async function closeAll(socks: { ws: WebSocket }[]): Promise<void> {
  await Promise.all(
    socks.map(({ ws }) => {
      const c = closed(ws)
      ws.close()
      return c
    }),
  )
}

test('2 workers: 6 WebSockets opened one after another are spread 3/3, and 6 opened at once too', async () => {
  const { origin } = await startGatehouse(hooks, { routes: [{ path: '/', asgi: asgi() }] })
  const url = `${origin.replace('http:', 'ws:')}/ws`
  const one: { ws: WebSocket; pid: number }[] = []
  // Each one opened after the previous one's handshake is done: its worker is idle again.
  for (let i = 0; i < 6; i++) one.push(await openPid(url))
  assert.deepEqual(spread(one), [3, 3], `pids: ${one.map((s) => s.pid).join(' ')}`)
  // They still echo (the app holds them all).
  for (const { ws } of one) {
    const p = nextMessage(ws)
    ws.send('x')
    assert.equal((await p).data.toString(), 'x')
  }
  await closeAll(one)
  const many = await Promise.all([...Array(6)].map(() => openPid(url)))
  assert.deepEqual(spread(many), [3, 3], `pids: ${many.map((s) => s.pid).join(' ')}`)
  await closeAll(many)
})

test('ws_max_per_worker = 2, 2 workers: the 5th upgrade gets 503 with Retry-After, HTTP is still served, a closed one makes room', async () => {
  const dir = tempDir(hooks, 'gh-ws-cap-')
  const errorLog = join(dir, 'error.log')
  const { origin } = await startGatehouse(hooks, {
    log: { level: 'warn', error_log: errorLog },
    routes: [{ path: '/', asgi: asgi({ ws_max_per_worker: 2 }) }],
  })
  const url = `${origin.replace('http:', 'ws:')}/ws`
  const socks: { ws: WebSocket; pid: number }[] = []
  for (let i = 0; i < 4; i++) socks.push(await openPid(url))
  assert.deepEqual(spread(socks), [2, 2])

  const refused = await openPid(url).then(
    () => assert.fail('a 5th WebSocket was accepted'),
    (err: { status?: number; headers?: Record<string, string> }) => err,
  )
  assert.equal(refused.status, 503)
  assert.equal(refused.headers?.['retry-after'], '1')
  await eventually(
    () => logLines(errorLog).find((l) => /ws_max_per_worker/.test(String(l.msg))),
    'the refusal logged',
  )
  // Several at once past the cap: every one refused, none squeezed in.
  const burst = await Promise.allSettled([...Array(4)].map(() => openPid(url)))
  assert.deepEqual(
    burst.map((r) => (r.status === 'rejected' ? (r.reason as { status?: number }).status : 'accepted')),
    [503, 503, 503, 503],
  )

  // HTTP requests are not counted against the cap.
  const res = await fetch(`${origin}/http`)
  assert.equal(res.status, 200)
  assert.ok(Number(await res.text()) > 0)

  // Closing one makes room on its worker: a new WebSocket is accepted there.
  const gone = socks.shift()!
  const c = closed(gone.ws)
  gone.ws.close()
  await c
  const again = await eventually(
    () => openPid(url).catch(() => undefined),
    'a new WebSocket accepted after one closed',
  )
  assert.equal(again.pid, gone.pid)
  socks.push(again)
  await closeAll(socks)
})
