/* WebSocket client helpers for the ASGI tests (the `ws` package as the client). */
import WebSocket from 'ws'

/** Messages of a WebSocket, queued from the moment it exists (none is missed). */
const queues = new WeakMap<
  WebSocket,
  { items: { data: Buffer; binary: boolean }[]; waiters: (() => void)[] }
>()

/** Open a WebSocket and resolve once open (or reject with the HTTP refusal). */
export function openWs(
  url: string,
  protocols?: string[],
): Promise<{ ws: WebSocket; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols)
    const q = { items: [] as { data: Buffer; binary: boolean }[], waiters: [] as (() => void)[] }
    queues.set(ws, q)
    ws.on('message', (data: Buffer, binary: boolean) => {
      q.items.push({ data, binary })
      for (const w of q.waiters.splice(0)) w()
    })
    ws.on('close', () => {
      for (const w of q.waiters.splice(0)) w()
    })
    ws.once('upgrade', (res) => {
      ws.once('open', () => resolve({ ws, headers: res.headers }))
    })
    ws.once('unexpected-response', (_req, res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () =>
        reject(
          Object.assign(new Error(`HTTP ${res.statusCode}`), {
            status: res.statusCode,
            body,
            headers: res.headers,
          }),
        ),
      )
    })
    ws.once('error', reject)
  })
}

export async function nextMessage(ws: WebSocket): Promise<{ data: Buffer; binary: boolean }> {
  const q = queues.get(ws)!
  for (;;) {
    const item = q.items.shift()
    if (item) return item
    if (ws.readyState === WebSocket.CLOSED) throw new Error('closed')
    await new Promise<void>((r) => q.waiters.push(r))
  }
}

export function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  )
}
