import { type ChildProcess, spawn } from 'node:child_process'
import { join } from 'node:path'
import { FIXTURES } from './helpers.js'

/** The WSGI app in test/fixtures/uwsgi/app.py. */
export const UWSGI_APP_DIR = join(FIXTURES, 'uwsgi')

export interface UwsgiPeer {
  /** `unix:/path` of its uwsgi socket. */
  address: string
  socketPath: string
  /** SIGINT (uWSGI's "brutal" stop with --master) and wait for the exit. */
  stop(): Promise<void>
  output(): string
}

/**
 * Start uWSGI 2.0 (Debian's `uwsgi` + `uwsgi-plugin-python3`) speaking uwsgi on a Unix
 * socket in `dir`, running `module` from test/fixtures/uwsgi. Resolves once a worker is up;
 * stopped when the test ends.
 */
export function startUwsgi(
  t: { after: (fn: () => Promise<void>) => void },
  dir: string,
  options: { module?: string; processes?: number; name?: string; env?: Record<string, string> } = {},
): Promise<UwsgiPeer> {
  const socketPath = join(dir, `${options.name ?? 'uwsgi'}.sock`)
  const args = [
    '--plugin',
    'python3',
    '--socket',
    socketPath,
    '--chmod-socket=666',
    '--chdir',
    UWSGI_APP_DIR,
    '--module',
    options.module ?? 'app:application',
    '--processes',
    String(options.processes ?? 2),
    '--master',
    '--need-app',
    // Room for a vars block near the protocol's 64 KiB limit (the default is 4096).
    '--buffer-size',
    '65535',
    '--disable-logging',
  ]
  const child: ChildProcess = spawn('/usr/bin/uwsgi', args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', PYTHONDONTWRITEBYTECODE: '1', ...options.env },
  })
  let out = ''
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGINT')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    }
  }
  t.after(stop)
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`uWSGI did not start:\n${out}`)), 20_000)
    let started = false
    const onData = (d: Buffer) => {
      out += d.toString()
      if (!started && /spawned uWSGI worker \d+/.test(out)) {
        started = true
        clearTimeout(timer)
        resolve({ address: `unix:${socketPath}`, socketPath, stop, output: () => out })
      }
    }
    child.stdout!.on('data', onData)
    child.stderr!.on('data', onData)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`uWSGI exited (${code ?? signal}):\n${out}`))
    })
  })
}
