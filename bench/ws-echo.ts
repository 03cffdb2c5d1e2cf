/*
 * WebSocket echo messages per second: Gatehouse's asgi action vs uvicorn (uvloop,
 * websockets), the same raw ASGI echo app and worker count. 64 `ws` clients each send a
 * 64-byte text message and wait for its echo, over and over, for the duration; the sides
 * alternate, `--repeat` times each.
 *
 *   npm run build && node dist/bench/ws-echo.js [--duration 5] [--repeat 2] [--clients 64]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import WebSocket from 'ws'
import { fileURLToPath } from 'node:url'
import { spawnServer } from './processes.js'

const WORKERS = 2
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url))
const ECHO = `async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": m.get("text"), "bytes": m.get("bytes")})
`

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? Number(process.argv[i + 1]) : fallback
}

async function run(url: string, clients: number, seconds: number): Promise<number> {
  const payload = 'x'.repeat(64)
  const end = Date.now() + seconds * 1000
  let count = 0
  await Promise.all(
    [...Array(clients)].map(async () => {
      const ws = new WebSocket(url)
      await new Promise((resolve, reject) => {
        ws.once('open', resolve)
        ws.once('error', reject)
      })
      await new Promise<void>((resolve) => {
        ws.on('message', () => {
          count++
          if (Date.now() < end) ws.send(payload)
          else resolve()
        })
        ws.send(payload)
      })
      ws.terminate()
    }),
  )
  return count / seconds
}

async function waitPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`)
      await new Promise((resolve, reject) => {
        ws.once('open', resolve)
        ws.once('error', reject)
      })
      ws.terminate()
      return
    } catch {
      await sleep(50)
    }
  }
  throw new Error(`nothing on port ${port}`)
}

async function main(): Promise<void> {
  const seconds = arg('duration', 5)
  const repeat = arg('repeat', 2)
  const clients = arg('clients', 64)
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-ws-'))
  writeFileSync(join(dir, 'echo.py'), ECHO)
  const results: Record<string, number[]> = { gatehouse: [], uvicorn: [] }
  try {
    for (let r = 0; r < repeat; r++) {
      // Gatehouse in its own process, like uvicorn: the clients here do not share its thread.
      const ghPort = 20000 + Math.floor(Math.random() * 20000)
      const gh = spawnServer(process.execPath, [
        CLI,
        'serve',
        '--listen',
        `127.0.0.1:${ghPort}`,
        '--asgi',
        'echo:app',
        '--chdir',
        dir,
        '--workers',
        String(WORKERS),
        '--log-level',
        'error',
      ])
      await waitPort(ghPort)
      await run(`ws://127.0.0.1:${ghPort}/`, clients, 1)
      results.gatehouse!.push(await run(`ws://127.0.0.1:${ghPort}/`, clients, seconds))
      await gh.stop()
      const port = 20000 + Math.floor(Math.random() * 20000)
      const uv = spawnServer('/usr/bin/python3', [
        '-m',
        'uvicorn',
        '--app-dir',
        dir,
        '--port',
        String(port),
        '--workers',
        String(WORKERS),
        '--loop',
        'uvloop',
        '--ws',
        'websockets',
        '--log-level',
        'warning',
        'echo:app',
      ])
      await waitPort(port)
      await run(`ws://127.0.0.1:${port}/`, clients, 1)
      results.uvicorn!.push(await run(`ws://127.0.0.1:${port}/`, clients, seconds))
      await uv.stop()
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  const g = median(results.gatehouse!)
  const u = median(results.uvicorn!)
  console.log(`WebSocket echo, ${clients} clients, 64-byte text, ${WORKERS} workers, ${seconds}s x ${repeat}`)
  console.log(`gatehouse ${Math.round(g)} msg/s  ${results.gatehouse!.map(Math.round).join(' ')}`)
  console.log(`uvicorn   ${Math.round(u)} msg/s  ${results.uvicorn!.map(Math.round).join(' ')}`)
  console.log(`ratio ${(g / u).toFixed(2)}`)
}

await main()
