/*
 * One worker process of a pool, from spawn to stop: started with execve semantics as the
 * leader of its own process group (so whatever it starts can be signalled with it), its
 * output read line by line, its readiness seen on its Unix socket, its stop escalated.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { accessSync, constants, rmSync, statSync } from 'node:fs'
import { connect } from 'node:net'
import { createInterface } from 'node:readline'
import { isAbsolute, join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { GatehouseError } from '../core/errors.js'
import { childIdentity, type Identity } from './identity.js'
import { signalGroup } from './process-group.js'

/** How a worker is started: execve semantics, no shell, an explicit environment. */
export interface WorkerCommand {
  /** Executable path (absolute, or found on the PATH given in `env`). */
  command: string
  /** Arguments; `{socket}` anywhere in one is replaced with the worker's Unix socket path. */
  args: string[]
  /** The whole environment of the worker (nothing is inherited); `{socket}` is replaced too. */
  env: Record<string, string>
  cwd?: string
  /** Run as this user and group (a pool's own `user`); default: the server's children identity. */
  identity?: Identity
}

/**
 * util-linux's setpriv (in every Debian and most other systems): sets a parent-death signal
 * (prctl PR_SET_PDEATHSIG) and execs the worker in the same process, so a worker never
 * outlives a Gatehouse that was SIGKILLed (php-cgi never looks at its parent; a Python
 * worker blocked in the app's code cannot). Without it, workers start as before.
 */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find(isExecutable) ?? null

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return statSync(path).isFile()
  } catch {
    return false
  }
}

/** The file execvp would run for `command` (PATH from the worker's env), or null. */
function resolveExecutable(command: string, env: Record<string, string>, cwd?: string): string | null {
  if (command.includes('/')) {
    const path = isAbsolute(command) ? command : resolve(cwd ?? process.cwd(), command)
    return isExecutable(path) ? path : null
  }
  for (const dir of (env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    const path = join(resolve(cwd ?? process.cwd(), dir || '.'), command)
    if (isExecutable(path)) return path
  }
  return null
}

/**
 * Why `command` cannot be run (one phrase naming the file and the errno), or null when it
 * can: checked before a pool starts, so that a missing interpreter or php-cgi is one clear
 * error at start instead of workers that die one after another.
 */
export function commandProblem(command: string, env: Record<string, string>, cwd?: string): string | null {
  if (!command.includes('/')) {
    const path = env.PATH ?? '/usr/local/bin:/usr/bin:/bin'
    return resolveExecutable(command, env, cwd) ? null : `${command}: not found on PATH (${path})`
  }
  const path = isAbsolute(command) ? command : resolve(cwd ?? process.cwd(), command)
  try {
    if (!statSync(path).isFile()) return `${path}: not a file`
    accessSync(path, constants.X_OK)
    return null
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const why =
      code === 'ENOENT'
        ? 'no such file (ENOENT)'
        : code === 'ENOTDIR'
          ? 'a part of the path is not a directory (ENOTDIR)'
          : code === 'EACCES'
            ? 'not executable, or a directory on the way may not be searched (EACCES)'
            : (code ?? (err as Error).message)
    return `${path}: ${why}`
  }
}

/**
 * Throw GH_ERR_WORKER_START (`gatehouse serve`: one line, exit 1) when the command of a pool
 * cannot be run; `what` names it for the user ("the Python interpreter", "php-cgi").
 */
export function assertRunnable(what: string, command: WorkerCommand): void {
  const problem = commandProblem(command.command, command.env, command.cwd)
  if (problem !== null)
    throw new GatehouseError('GH_ERR_WORKER_START', `${what} ${problem}`, { problems: [problem] })
}

/**
 * The command line that starts a worker: under setpriv with SIGKILL as its parent-death
 * signal when both are there. A command that cannot be found is spawned as given, so the
 * error is spawn's own (`spawn /nope ENOENT`).
 */
export function workerArgv(
  command: string,
  args: string[],
  env: Record<string, string>,
  cwd?: string,
): string[] {
  const file = SETPRIV ? resolveExecutable(command, env, cwd) : null
  return SETPRIV && file ? [SETPRIV, '--pdeathsig', 'KILL', '--', file, ...args] : [command, ...args]
}

/** What becomes of a worker process's output and exit. */
export interface WorkerProcessHooks {
  /** A non-empty line the worker wrote on stdout or stderr. */
  onLine(stream: 'stdout' | 'stderr', line: string): void
  /** Called once: the worker exited, or could not be started (`err`). */
  onGone(code: number | null, signal: NodeJS.Signals | null, err?: Error): void
}

/**
 * Start a worker with `{socket}` in its arguments and environment replaced by `socketPath`
 * (a stale file there is removed first). Returns its pid, or 0 when it could not be
 * started: `onGone` then follows with the error.
 */
export function spawnWorker(command: WorkerCommand, socketPath: string, hooks: WorkerProcessHooks): number {
  rmSync(socketPath, { force: true })
  const sub = (v: string) => v.split('{socket}').join(socketPath)
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(command.env)) env[k] = sub(v)
  let child: ChildProcess
  let gone = false
  const onGone = (code: number | null, signal: NodeJS.Signals | null, err?: Error) => {
    if (gone) return
    gone = true
    hooks.onGone(code, signal, err)
  }
  try {
    const [file, ...argv] = workerArgv(command.command, command.args.map(sub), env, command.cwd)
    child = spawn(file!, argv, {
      ...(command.identity ? { uid: command.identity.uid, gid: command.identity.gid } : childIdentity()),
      env,
      ...(command.cwd ? { cwd: command.cwd } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    })
  } catch (err) {
    queueMicrotask(() => onGone(null, null, err as Error))
    return 0
  }
  child.on('error', (err) => {
    if (child.pid === undefined) onGone(null, null, err)
  })
  child.on('exit', (code, signal) => onGone(code, signal))
  if (child.pid === undefined) return 0
  for (const [stream, name] of [
    [child.stdout, 'stdout'],
    [child.stderr, 'stderr'],
  ] as const) {
    if (!stream) continue
    const lines = createInterface({ input: stream, crlfDelay: Infinity })
    lines.on('line', (line) => {
      if (line.length > 0) hooks.onLine(name, line)
    })
  }
  return child.pid
}

/**
 * Wait for a starting worker's socket to accept a connection, trying again with backoff
 * (5 ms doubling to 100 ms) while `starting()` holds: `ready`; `late` once `timeoutMs`
 * has passed; `abandoned` when `starting()` turned false meanwhile.
 */
export async function probeSocket(
  path: string,
  timeoutMs: number,
  starting: () => boolean,
): Promise<'ready' | 'late' | 'abandoned'> {
  const deadline = performance.now() + timeoutMs
  let delay = 5
  while (starting()) {
    if (await canConnect(path)) return starting() ? 'ready' : 'abandoned'
    if (performance.now() > deadline) return 'late'
    await sleep(delay)
    delay = Math.min(delay * 2, 100)
  }
  return 'abandoned'
}

/**
 * Signal the group led by `pid` with each step's signal once its delay (ms) has passed,
 * the first at once when its delay is 0: a stop that escalates to SIGKILL. Returns the
 * timers, to be cleared once the worker has exited.
 */
export function escalate(
  pid: number,
  steps: readonly (readonly [NodeJS.Signals, number])[],
): NodeJS.Timeout[] {
  const timers: NodeJS.Timeout[] = []
  for (const [signal, after] of steps) {
    if (after === 0) signalGroup(pid, signal)
    else timers.push(setTimeout(() => signalGroup(pid, signal), after))
  }
  return timers
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path)
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => {
      socket.destroy()
      resolve(false)
    })
  })
}
