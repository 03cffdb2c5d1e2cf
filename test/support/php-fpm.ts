/*
 * php-fpm as a real peer for the FastCGI tests: one master in the foreground with a static
 * pool on a Unix socket in a temp directory, started without a shell and stopped (master and
 * children) when the suite ends.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

export const PHP_FPM = process.env.GATEHOUSE_TEST_PHP_FPM ?? '/usr/sbin/php-fpm8.2'

/** Why php-fpm cannot run here, or undefined when it can (for `skip`). */
export function phpFpmUnavailable(): string | undefined {
  try {
    accessSync(PHP_FPM, constants.X_OK)
    return undefined
  } catch {
    return `${PHP_FPM} not found (Debian package php-fpm; or set GATEHOUSE_TEST_PHP_FPM)`
  }
}

export interface PhpFpm {
  /** `unix:/tmp/.../fpm.sock` */
  address: string
  socket: string
  /** Temp directory holding the config, socket and logs (a docroot may go here too). */
  dir: string
  /** php-fpm's own error log (what the master and pool report). */
  errorLog: string
  pid: number
  stop(): Promise<void>
}

export interface PhpFpmOptions {
  maxChildren?: number
  /** Extra pool lines, e.g. `php_admin_value[post_max_size] = 32M`. */
  pool?: string[]
  /** Listen on this socket path (to start a server again where it was) instead of one in its own directory. */
  socket?: string
}

/** Start php-fpm and wait until its socket accepts connections. */
export async function startPhpFpm(options: PhpFpmOptions = {}): Promise<PhpFpm> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-fpm-'))
  const socket = options.socket ?? join(dir, 'fpm.sock')
  const errorLog = join(dir, 'fpm.log')
  const conf = join(dir, 'pool.conf')
  writeFileSync(
    conf,
    [
      '[global]',
      `pid = ${join(dir, 'fpm.pid')}`,
      `error_log = ${errorLog}`,
      'daemonize = no',
      '[www]',
      `listen = ${socket}`,
      'listen.mode = 0666',
      'pm = static',
      `pm.max_children = ${options.maxChildren ?? 2}`,
      'pm.status_path = /status',
      // Warnings go to the FastCGI stderr stream (fastcgi.logging), never into the page.
      'php_admin_flag[display_errors] = off',
      'php_admin_flag[log_errors] = on',
      'php_admin_value[error_reporting] = E_ALL',
      `php_admin_value[upload_tmp_dir] = ${dir}`,
      ...(options.pool ?? []),
      '',
    ].join('\n'),
  )
  // As root php-fpm refuses to start without -R (--allow-to-run-as-root).
  const args = [...(process.getuid?.() === 0 ? ['-R'] : []), '-F', '-y', conf]
  const child: ChildProcess = spawn(PHP_FPM, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()))
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let gone = false
  void exited.then(() => (gone = true))
  const stop = async () => {
    if (!gone) {
      // TERM: php-fpm stops its children and exits.
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
    rmSync(dir, { recursive: true, force: true })
  }
  const deadline = Date.now() + 10_000
  for (;;) {
    if (gone) {
      await stop()
      throw new Error(`php-fpm exited before accepting connections:\n${output}`)
    }
    if (await accepts(socket)) break
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`php-fpm did not accept connections on ${socket} within 10 s:\n${output}`)
    }
    await sleep(25)
  }
  return { address: `unix:${socket}`, socket, dir, errorLog, pid: child.pid!, stop }
}

function accepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}
