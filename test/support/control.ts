/*
 * For the control API's tests (test/control/): a `gatehouse serve` child with a control
 * socket, curl as its client (`--unix-socket`), and `gatehouse ctl` as a child process.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { CLI, stopServe } from './helpers.js'

/** The environment the children get: only what they need (no shell, no inherited token). */
export function childEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...extra }
}

export interface Served {
  child: ChildProcess
  /** The HTTP listener's port. */
  port: number
  /** The control API's address as logged (`unix:/path` or `127.0.0.1:port`). */
  control: string
  /** Everything the server wrote to stderr so far (its JSON log). */
  stderr: () => string
}

/**
 * `gatehouse serve ARGS` in `cwd`, resolved once both the HTTP listener and the control API
 * listen; stopped after the test. Rejects with its stderr if it exits first.
 */
export async function serveWithControl(
  t: { after: (fn: () => Promise<void> | void) => void },
  cwd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<Served> {
  const child = spawn(process.execPath, [CLI, 'serve', ...args], {
    cwd,
    env: childEnv(env),
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  t.after(() => stopServe(child))
  let stderr = ''
  child.stderr!.setEncoding('utf8')
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d: string) => {
      stderr += d
      const listen = /"listen":"[^"]*:(\d+)","msg":"listening"/.exec(stderr)
      const control = /"control":"([^"]+)","msg":"control API listening"/.exec(stderr)
      if (listen && control)
        resolve({ child, port: Number(listen[1]), control: control[1]!, stderr: () => stderr })
    })
    child.on('exit', (code) => reject(new Error(`gatehouse serve exited ${code}: ${stderr}`)))
  })
}

export interface CurlAnswer {
  status: number
  body: string
  /** The body parsed, when it is JSON. */
  json: unknown
}

/**
 * curl against the control API: `--unix-socket PATH` for `unix:PATH`, else the TCP address.
 * `body` is sent as the request body (`--data-binary`); `headers` as -H lines.
 */
export function curl(
  control: string,
  method: string,
  path: string,
  options: { body?: string; headers?: string[] } = {},
): Promise<CurlAnswer> {
  const target = control.startsWith('unix:')
    ? ['--unix-socket', control.slice(5), `http://localhost${path}`]
    : [`http://${control}${path}`]
  const args = [
    '-sS',
    '-X',
    method,
    '-w',
    '\n%{http_code}',
    ...(options.body !== undefined
      ? ['--data-binary', options.body, '-H', 'content-type: application/json']
      : []),
    ...(options.headers ?? []).flatMap((h) => ['-H', h]),
    ...target,
  ]
  return new Promise((resolve, reject) => {
    execFile('curl', args, { env: childEnv(), maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`curl ${args.join(' ')}: ${stderr || err.message}`))
        return
      }
      const cut = stdout.lastIndexOf('\n')
      const body = stdout.slice(0, cut)
      let json: unknown
      try {
        json = JSON.parse(body)
      } catch {
        json = undefined
      }
      resolve({ status: Number(stdout.slice(cut + 1)), body, json })
    })
  })
}

/** `gatehouse ctl ARGS` as a child process: its exit code, stdout and stderr. */
export function ctl(
  args: string[],
  options: { env?: Record<string, string>; stdin?: string; cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, 'ctl', ...args],
      { env: childEnv(options.env), cwd: options.cwd, timeout: 60_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    )
    child.stdin!.end(options.stdin ?? '')
  })
}
