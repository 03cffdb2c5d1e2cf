import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { type Agent, createServer, request } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after } from 'node:test'
import { fileURLToPath } from 'node:url'
import type { GatehouseConfigInput } from '../../src/config.js'
import { createGatehouse, type Gatehouse } from '../../src/gatehouse.js'
// Every gateway, as the library entry loads them: tests build servers and check configs
// synchronously (the command line loads only the gateways its config names).
import '../../src/gateways/all.js'

/** test/ in the source tree (tests run from dist/test/). */
export const TEST_DIR = fileURLToPath(new URL('../../../test/', import.meta.url))
export const FIXTURES = join(TEST_DIR, 'fixtures')
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url))
export const CLI = join(REPO_ROOT, 'dist/src/cli/main.js')
/** The interpreter that has Debian's Python packages (not the first python3 on PATH). */
export const PYTHON = '/usr/bin/python3'

/**
 * Cleanups of a describe() suite, for its before() to register what it started: `after(fn)`
 * adds one; they run last first when the suite ends. Call it in the describe body.
 */
export function suiteCleanups(): { after: (fn: () => unknown) => void } {
  const fns: (() => unknown)[] = []
  after(async () => {
    for (const fn of fns.splice(0).reverse()) await fn()
  })
  return { after: (fn) => void fns.push(fn) }
}

/** A fresh temporary directory, removed when the test ends. */
export function tempDir(t: { after: (fn: () => void) => void }, prefix = 'gh-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

export interface Running {
  gatehouse: Gatehouse
  port: number
  origin: string
}

/** Start a Gatehouse on 127.0.0.1 with an OS-chosen port; stopped when the test ends. */
export async function startGatehouse(
  t: { after: (fn: () => Promise<void> | void) => void },
  config: GatehouseConfigInput,
  baseDir?: string,
): Promise<Running> {
  const gatehouse = createGatehouse(
    { listen: ['127.0.0.1:0'], ...config, log: { level: 'silent', ...config.log } },
    baseDir ? { baseDir } : {},
  )
  const [first] = await gatehouse.listen()
  t.after(() => gatehouse.close(0))
  const port = first!.port!
  return { gatehouse, port, origin: `http://127.0.0.1:${port}` }
}

export interface RawResponse {
  /** Everything the server wrote, as latin1 text. */
  text: string
  /** Status code of the first response, or null if none arrived. */
  status: number | null
  /** true when the server closed the connection (rather than us timing out). */
  closedByServer: boolean
}

/**
 * Write raw bytes to the server and collect what comes back until the server closes the
 * connection or `waitMs` passes. No client library in between to sanitize the request.
 */
export function rawRequest(
  port: number,
  data: string | Buffer | (string | Buffer)[],
  options: { waitMs?: number; host?: string; gapMs?: number } = {},
): Promise<RawResponse> {
  const waitMs = options.waitMs ?? 2000
  return new Promise((resolve, reject) => {
    const socket = connect(port, options.host ?? '127.0.0.1')
    const chunks: Buffer[] = []
    let closedByServer = false
    const timer = setTimeout(() => socket.destroy(), waitMs)
    socket.on('connect', async () => {
      const parts = Array.isArray(data) ? data : [data]
      for (const part of parts) {
        if (socket.destroyed) break
        socket.write(part)
        if (options.gapMs) await new Promise((r) => setTimeout(r, options.gapMs))
      }
    })
    socket.on('data', (chunk) => chunks.push(chunk))
    socket.on('end', () => {
      closedByServer = true
    })
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') closedByServer = true
      else reject(err)
    })
    socket.on('close', () => {
      clearTimeout(timer)
      const text = Buffer.concat(chunks).toString('latin1')
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text)
      resolve({ text, status: m ? Number(m[1]) : null, closedByServer })
    })
  })
}

/**
 * Stop a `gatehouse serve` child a test started, if it still runs (the test failed half-way):
 * SIGINT first, the fast stop that also stops its workers (a SIGKILLed Gatehouse cannot, and
 * would leave php-cgi workers behind), then SIGKILL if it has not exited within 5 s.
 */
export function stopServe(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    child.once('exit', () => {
      clearTimeout(timer)
      resolve()
    })
    child.kill('SIGINT')
  })
}

/**
 * Poll `fn` every 25 ms until it returns (or resolves to) something truthy; throws naming
 * `what` after `ms`. An async `fn` is awaited: a pending promise is not an answer.
 */
export async function eventually<T>(
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  ms = 15_000,
): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

/** The JSON lines of a log file written so far; a half-written last line does not count. */
export function logLines(file: string): Record<string, unknown>[] {
  if (!existsSync(file)) return []
  const lines = readFileSync(file, 'utf8').split('\n').slice(0, -1)
  return lines.filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
}

/** A loopback port free right now, for a `gatehouse serve` child told to listen on it. */
export async function freePort(): Promise<number> {
  const srv = createServer()
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const port = (srv.address() as { port: number }).port
  await new Promise((r) => srv.close(r))
  return port
}

/**
 * GET `path` through a keep-alive `agent`, never rejecting: a network failure, a response
 * cut short or no answer within `deadlineMs` is status 0 with `error` (the load tests count
 * failures rather than stop at the first).
 */
export function agentGet(
  agent: Agent,
  port: number,
  path: string,
  deadlineMs = 30_000,
): Promise<{ status: number; body: string; error?: string }> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent })
    req.setTimeout(deadlineMs, () => req.destroy(new Error(`no answer in ${deadlineMs} ms`)))
    req.on('error', (err) => resolve({ status: 0, body: '', error: err.message }))
    req.on('response', (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('error', (err) => resolve({ status: res.statusCode ?? 0, body, error: err.message }))
      res.on('end', () =>
        resolve(
          res.complete ? { status: res.statusCode ?? 0, body } : { status: 0, body, error: 'response cut' },
        ),
      )
    })
    req.end()
  })
}

/**
 * Wait for a `gatehouse serve` child (stderr piped) to log that it listens: its address, and
 * everything it has written to stderr so far (kept up to date). Rejects if it exits first.
 */
export function listeningAddress(child: ChildProcess): Promise<{ address: string; stderr: () => string }> {
  let stderr = ''
  child.stderr!.setEncoding('utf8')
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d: string) => {
      stderr += d
      const m = /"listen":"([^"]+)","msg":"listening"/.exec(stderr)
      if (m) resolve({ address: m[1]!, stderr: () => stderr })
    })
    child.on('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)))
  })
}

/**
 * `gatehouse serve ARGS` as a child process (stdin and stdout ignored, PATH only unless `env`),
 * stopped when the test ends; resolves once it listens, with its address and port.
 */
export async function serveCli(
  t: { after: (fn: () => Promise<void>) => void },
  args: readonly string[],
  env: Record<string, string> = { PATH: '/usr/bin:/bin' },
): Promise<{ child: ChildProcess; address: string; port: number; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve', ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] })
  t.after(() => stopServe(child))
  const { address, stderr } = await listeningAddress(child)
  return { child, address, port: Number(address.split(':').pop()), stderr }
}

/**
 * GET `path` on a connection of its own (closed after it, so no socket outlives the server):
 * status and body text. `at` is a port on 127.0.0.1 or an origin (`http://127.0.0.1:8080`).
 */
export function getOnce(at: number | string, path = '/'): Promise<{ status: number; body: string }> {
  const target = typeof at === 'number' ? new URL(`http://127.0.0.1:${at}${path}`) : new URL(`${at}${path}`)
  return new Promise((resolve, reject) => {
    const req = request(target, { agent: false, headers: { connection: 'close' } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode!, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}
