/*
 * A minimal pool of Python workers, used until the generic supervisor
 * (src/process/supervisor.ts, another branch) is merged: N processes started with an
 * explicit environment (no shell), each listening on its own Unix socket, one bridge
 * connection to each, requests dispatched to the least busy worker under its capacity
 * (--threads), a bounded queue past that (GH_ERR_OVERLOADED), a dead worker replaced, and a
 * stuck request's worker asked for tracebacks (dump signal) before it is killed.
 *
 * The lease shape (pid, workerId, socketPath, release) is the supervisor's, so the WSGI
 * handler can switch to WorkerPool without changing.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import { GatehouseError } from '../errors.js'
import { WorkerConnection } from './worker-client.js'

/** python/ of the installed package (the npm package ships it). */
export const PYTHON_PACKAGE_DIR = fileURLToPath(new URL('../../../python/', import.meta.url))

/** /usr/bin/python3 when it exists (Debian's, with its packages), else `python3` on PATH. */
export function defaultPython(): string {
  return existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
}

export interface PythonPoolOptions {
  python: string
  /** Arguments after the interpreter; '{socket}' is replaced with the worker's socket path. */
  args: string[]
  env: Record<string, string>
  cwd: string
  workers: number
  /** Concurrent requests per worker (its --threads). */
  capacity: number
  /**
   * Requests sent ahead to a worker whose threads are all busy, when every worker is: they
   * wait in the worker's connection and run as soon as a thread frees, saving a round trip
   * of process wake-ups per request. 0 keeps every waiting request in Node's queue.
   */
  pipeline: number
  /** Requests waiting for a worker beyond which GH_ERR_OVERLOADED is answered. */
  maxQueue: number
  startTimeoutMs: number
  dumpSignal: NodeJS.Signals
}

export interface WorkerLease {
  pid: number
  workerId: number
  socketPath: string
  connection: WorkerConnection
  release(options?: { recycle?: boolean; failed?: boolean }): void
}

interface Slot {
  id: number
  socketPath: string
  child: ChildProcess | null
  conn: WorkerConnection | null
  busy: number
  ready: boolean
  starting: Promise<void> | null
  stderrTail: string
}

interface Waiter {
  resolve: (lease: WorkerLease) => void
  reject: (err: unknown) => void
  signal: AbortSignal | undefined
  onAbort: () => void
}

export class PythonWorkerPool {
  private readonly dir: string
  private readonly slots: Slot[] = []
  private readonly queue: Waiter[] = []
  private closing = false

  constructor(
    private readonly options: PythonPoolOptions,
    private readonly log: Logger,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), 'gatehouse-py-'))
    for (let i = 0; i < options.workers; i++) {
      this.slots.push({
        id: i + 1,
        socketPath: join(this.dir, `w${i + 1}.sock`),
        child: null,
        conn: null,
        busy: 0,
        ready: false,
        starting: null,
        stderrTail: '',
      })
    }
  }

  /** Start every worker; rejects with GH_ERR_WORKER_START when one cannot start. */
  async start(): Promise<void> {
    await Promise.all(this.slots.map((slot) => this.startSlot(slot)))
  }

  private startSlot(slot: Slot): Promise<void> {
    if (slot.starting) return slot.starting
    slot.starting = this.spawnSlot(slot).finally(() => {
      slot.starting = null
    })
    return slot.starting
  }

  private async spawnSlot(slot: Slot): Promise<void> {
    const { python, args, env, cwd } = this.options
    slot.stderrTail = ''
    const child = spawn(
      python,
      args.map((a) => a.replaceAll('{socket}', slot.socketPath)),
      { cwd, env, stdio: ['ignore', 'inherit', 'pipe'] },
    )
    slot.child = child
    const state: {
      exited: { code: number | null; signal: NodeJS.Signals | null } | null
      spawnError: Error | null
    } = { exited: null, spawnError: null }
    child.on('error', (err) => {
      state.spawnError = err
    })
    let partial = ''
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (text: string) => {
      slot.stderrTail = (slot.stderrTail + text).slice(-8192)
      const lines = (partial + text).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) if (line !== '') this.log.warn({ worker: child.pid, stream: 'stderr' }, line)
    })
    const exitedP = new Promise<void>((resolve) =>
      child.once('close', (code, signal) => {
        if (partial !== '') this.log.warn({ worker: child.pid, stream: 'stderr' }, partial)
        state.exited = { code, signal }
        resolve()
      }),
    )
    void exitedP.then(() => this.onExit(slot, child, state.exited!))
    const deadline = Date.now() + this.options.startTimeoutMs
    for (;;) {
      const { exited, spawnError } = state
      if (spawnError || exited || this.closing) {
        const why = spawnError
          ? `${python}: ${spawnError.message}`
          : exited
            ? `exited with ${exited.code ?? exited.signal} before listening:\n${slot.stderrTail.trimEnd()}`
            : 'pool closed'
        throw new GatehouseError('GH_ERR_WORKER_START', why)
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL')
        throw new GatehouseError('GH_ERR_WORKER_START', `no socket after ${this.options.startTimeoutMs} ms`)
      }
      try {
        const conn = await WorkerConnection.connect(slot.socketPath, 5000)
        slot.conn = conn
        slot.ready = true
        conn.onClose(() => {
          if (slot.conn === conn) {
            slot.conn = null
            slot.ready = false
          }
        })
        this.log.debug({ worker: child.pid, socket: slot.socketPath }, 'python worker ready')
        this.drain()
        return
      } catch {
        await new Promise((r) => setTimeout(r, 25))
      }
    }
  }

  private onExit(
    slot: Slot,
    child: ChildProcess,
    how: { code: number | null; signal: NodeJS.Signals | null },
  ): void {
    if (slot.child !== child) return
    slot.child = null
    slot.ready = false
    slot.conn?.close()
    slot.conn = null
    slot.busy = 0
    if (this.closing) return
    this.log.warn(
      { worker: child.pid, code: how.code, signal: how.signal },
      'python worker exited; starting another',
    )
    setTimeout(() => {
      if (this.closing) return
      this.startSlot(slot).catch((err: unknown) => {
        this.log.error({ err }, 'python worker could not be restarted')
        setTimeout(() => this.onExit(slot, child, how), 1000)
      })
    }, 100)
  }

  acquire(signal?: AbortSignal): Promise<WorkerLease> {
    if (this.closing) return Promise.reject(new GatehouseError('GH_ERR_OVERLOADED', 'shutting down'))
    const lease = this.tryLease()
    if (lease) return Promise.resolve(lease)
    if (this.queue.length >= this.options.maxQueue)
      return Promise.reject(
        new GatehouseError('GH_ERR_OVERLOADED', 'every Python worker is busy and the queue is full'),
      )
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          const i = this.queue.indexOf(waiter)
          if (i !== -1) this.queue.splice(i, 1)
          reject(signal!.reason)
        },
      }
      signal?.addEventListener('abort', waiter.onAbort, { once: true })
      this.queue.push(waiter)
    })
  }

  private tryLease(): WorkerLease | null {
    // The least busy worker; one with all threads busy only when no worker has a free one.
    const limit = this.options.capacity + this.options.pipeline
    let best: Slot | null = null
    for (const slot of this.slots) {
      if (!slot.ready || !slot.conn || slot.busy >= limit) continue
      if (!best || slot.busy < best.busy) best = slot
    }
    if (!best) return null
    const slot = best
    const conn = slot.conn!
    slot.busy++
    let released = false
    return {
      pid: slot.child?.pid ?? 0,
      workerId: slot.id,
      socketPath: slot.socketPath,
      connection: conn,
      release: (opts) => {
        if (released) return
        released = true
        if (slot.conn === conn) slot.busy--
        if (opts?.recycle && slot.conn === conn) this.kill(slot)
        this.drain()
      },
    }
  }

  private drain(): void {
    while (this.queue.length > 0) {
      const lease = this.tryLease()
      if (!lease) return
      const waiter = this.queue.shift()!
      waiter.signal?.removeEventListener('abort', waiter.onAbort)
      waiter.resolve(lease)
    }
  }

  /** Ask the worker for its tracebacks (the dump signal), then kill it a moment later. */
  dumpAndKill(pid: number, graceMs = 300): void {
    const slot = this.slots.find((s) => s.child?.pid === pid)
    if (!slot?.child) return
    const child = slot.child
    try {
      child.kill(this.options.dumpSignal)
    } catch {
      // already gone
    }
    setTimeout(() => {
      if (slot.child === child) this.kill(slot)
    }, graceMs).unref()
  }

  private kill(slot: Slot): void {
    slot.ready = false
    slot.child?.kill('SIGKILL')
  }

  status(): { workerId: number; pid: number | undefined; busy: number; ready: boolean }[] {
    return this.slots.map((s) => ({ workerId: s.id, pid: s.child?.pid, busy: s.busy, ready: s.ready }))
  }

  async close(graceMs = 5000): Promise<void> {
    this.closing = true
    for (const waiter of this.queue.splice(0))
      waiter.reject(new GatehouseError('GH_ERR_OVERLOADED', 'shutting down'))
    const children = this.slots.map((s) => s.child).filter((c): c is ChildProcess => c !== null)
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve()
            child.once('close', () => resolve())
            child.kill('SIGTERM')
            setTimeout(() => child.kill('SIGKILL'), graceMs).unref()
          }),
      ),
    )
    for (const slot of this.slots) slot.conn?.close()
    rmSync(this.dir, { recursive: true, force: true })
  }
}
