/*
 * Starting, watching and stopping the servers under test: a free loopback port, a
 * poll-connect readiness check, the process tree under a pid (from /proc, since
 * /proc/PID/task/TID/children is not available on every kernel) and its summed VmRSS.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

/** What a scenario's server start returns: something the runner can measure and stop. */
export interface ServerHandle {
  /** Root of the process tree whose RSS is measured. */
  readonly pid: number
  /** Other process-tree roots that belong to this side (e.g. a FastCGI pool next to nginx). */
  readonly extraPids?: readonly number[]
  /** Stop every process of this side; resolves once they are gone. Safe to call twice. */
  stop(): Promise<void>
  /** How the root process ended ("code 1", "SIGKILL"), or undefined while it runs. */
  exitStatus?(): string | undefined
  /** The last few KB the process wrote to stdout and stderr, for error messages. */
  output?(): string
}

/**
 * A port the OS considers free right now. There is a small window before the server binds
 * it; nothing else on loopback competes for ports in practice, and a clash fails loudly.
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, host, () => {
      const address = server.address()
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port)
        else reject(new Error('no port from the OS'))
      })
    })
  })
}

function tryConnect(port: number | string, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = typeof port === 'string' ? connect({ path: port }) : connect({ port, host })
    socket.setTimeout(500)
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.once('connect', () => done(true))
    socket.once('error', () => done(false))
    socket.once('timeout', () => done(false))
  })
}

/** Poll-connect until the port accepts, the child exits, or `timeoutMs` passes. */
/** Wait until a Unix socket accepts connections (a backend such as fcgiwrap or uWSGI). */
export function waitForUnixSocket(
  path: string,
  opts: { timeoutMs?: number; server?: ServerHandle; what: string },
): Promise<void> {
  return waitForPort(path, opts)
}

export async function waitForPort(
  port: number | string,
  opts: { host?: string; timeoutMs?: number; server?: ServerHandle; what: string },
): Promise<void> {
  const host = opts.host ?? '127.0.0.1'
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000)
  while (Date.now() < deadline) {
    const status = opts.server?.exitStatus?.()
    if (status !== undefined) {
      const output = opts.server?.output?.().trim()
      throw new Error(
        `${opts.what} exited (${status}) before accepting connections${output ? `:\n${output}` : ''}`,
      )
    }
    if (await tryConnect(port, host)) return
    await sleep(50)
  }
  throw new Error(
    `${opts.what} did not accept connections on ${typeof port === 'string' ? port : `${host}:${port}`} within ${opts.timeoutMs ?? 10_000} ms`,
  )
}

/** pid -> parent pid for every process visible in /proc. */
function parentMap(): Map<number, number> {
  const parents = new Map<number, number>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'latin1')
      // The command name (field 2) is in parentheses and may contain spaces or ')'.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      parents.set(Number(entry), Number(rest[1]))
    } catch {
      // the process exited while we looked
    }
  }
  return parents
}

/** The roots and all their descendants that are alive now. */
export function processTree(roots: readonly number[]): number[] {
  const parents = parentMap()
  const children = new Map<number, number[]>()
  for (const [pid, ppid] of parents) {
    const list = children.get(ppid)
    if (list) list.push(pid)
    else children.set(ppid, [pid])
  }
  const out: number[] = []
  const queue = roots.filter((r) => parents.has(r))
  const seen = new Set<number>()
  while (queue.length > 0) {
    const pid = queue.shift()!
    if (seen.has(pid)) continue
    seen.add(pid)
    out.push(pid)
    queue.push(...(children.get(pid) ?? []))
  }
  return out
}

/** VmRSS of one process in bytes (0 for a kernel thread or a process that just exited). */
function rssBytes(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))
    return m ? Number(m[1]) * 1024 : 0
  } catch {
    return 0
  }
}

/** Sum of VmRSS over the trees under `roots`. */
export function treeRssBytes(roots: readonly number[]): number {
  let sum = 0
  for (const pid of processTree(roots)) sum += rssBytes(pid)
  return sum
}

/**
 * Samples the summed RSS of a process tree every `intervalMs` until stopped; the sampling
 * itself is a few hundred small /proc reads, negligible next to wrk and the server.
 */
export class RssSampler {
  private peak = 0
  private samples = 0
  private readonly timer: NodeJS.Timeout

  constructor(
    private readonly roots: readonly number[],
    intervalMs = 250,
  ) {
    this.sample()
    this.timer = setInterval(() => this.sample(), intervalMs)
  }

  private sample(): void {
    this.peak = Math.max(this.peak, treeRssBytes(this.roots))
    this.samples++
  }

  /** Stop sampling (taking one last sample) and return the peak. */
  stop(): { peakBytes: number; samples: number } {
    clearInterval(this.timer)
    this.sample()
    return { peakBytes: this.peak, samples: this.samples }
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal)
  } catch {
    // already gone
  }
}

export interface SpawnedServer extends ServerHandle {
  readonly child: ChildProcess
  exitStatus(): string | undefined
  output(): string
}

/** Every server process started by the bench and not yet stopped; see stopAll(). */
const live = new Set<ServerHandle>()

/**
 * Spawn a server process. stop() sends `stopSignal` (default SIGTERM), waits up to
 * `graceMs`, then SIGKILLs whatever is left of the tree it had when stop() began.
 */
export function spawnServer(
  command: string,
  args: readonly string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; stopSignal?: NodeJS.Signals; graceMs?: number } = {},
): SpawnedServer {
  const child = spawn(command, args, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  const keep = (chunk: string) => {
    output = (output + chunk).slice(-8192)
  }
  child.stdout?.setEncoding('utf8').on('data', keep)
  child.stderr?.setEncoding('utf8').on('data', keep)
  child.on('error', (err) => keep(`spawn error: ${err.message}\n`))
  let stopping: Promise<void> | undefined
  const handle: SpawnedServer = {
    pid: child.pid ?? -1,
    child,
    output: () => output,
    exitStatus: () =>
      child.signalCode !== null
        ? child.signalCode
        : child.exitCode !== null
          ? `code ${child.exitCode}`
          : child.pid === undefined
            ? 'not started'
            : undefined,
    stop() {
      stopping ??= (async () => {
        try {
          if (child.pid === undefined) return
          const tree = processTree([child.pid])
          child.kill(opts.stopSignal ?? 'SIGTERM')
          const timedOut = await Promise.race([
            exited(child).then(() => false),
            sleep(opts.graceMs ?? 5000, true, { ref: false }),
          ])
          // Descendants that outlive their parent (or a parent that ignored the signal).
          for (const pid of tree) killQuietly(pid, 'SIGKILL')
          if (timedOut) await exited(child)
        } finally {
          live.delete(handle)
        }
      })()
      return stopping
    },
  }
  live.add(handle)
  return handle
}

/** Stop every server that was spawned and is still running (used by the Ctrl-C handler). */
export async function stopAll(): Promise<void> {
  await Promise.allSettled([...live].map((h) => h.stop()))
}

/** Last resort at process exit: SIGKILL whatever is left, synchronously. */
export function killAllSync(): void {
  for (const handle of live) {
    for (const pid of processTree([handle.pid, ...(handle.extraPids ?? [])])) killQuietly(pid, 'SIGKILL')
  }
}

/** User + system CPU ticks of one process, all its threads (0 once it has exited). */
function cpuTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
    // The fields after the command name (which may hold spaces and parentheses).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return Number(fields[11]) + Number(fields[12])
  } catch {
    return 0
  }
}

/** The kernel's clock ticks per second (USER_HZ): 100 on every Linux this runs on. */
const TICKS_PER_SECOND = 100

/**
 * CPU time of a server's processes over a run, from /proc (the method of
 * ../shared/tools/cpu-per-request): the root (Node for Gatehouse, nginx's master for a
 * peer behind nginx) apart from its descendants (Python or PHP workers, nginx's workers).
 * A process that exits during the run loses what it used since the start (rare: a
 * recycled worker).
 */
export class CpuMeter {
  private readonly before = new Map<number, number>()

  constructor(
    private readonly root: number,
    private readonly extra: readonly number[] = [],
  ) {
    for (const pid of processTree([root, ...extra])) this.before.set(pid, cpuTicks(pid))
  }

  /** Seconds of CPU since construction: the root's, and everything else's. */
  stop(): { rootSeconds: number; othersSeconds: number } {
    let root = 0
    let others = 0
    for (const pid of processTree([this.root, ...this.extra])) {
      const used = cpuTicks(pid) - (this.before.get(pid) ?? 0)
      if (pid === this.root) root += used
      else others += used
    }
    return { rootSeconds: root / TICKS_PER_SECOND, othersSeconds: others / TICKS_PER_SECOND }
  }
}
