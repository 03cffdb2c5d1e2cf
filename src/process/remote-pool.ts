/*
 * A front thread's view of a pool that lives in the main thread (front_processes > 1): a
 * lease is asked for over the thread's port and granted by the main thread's WorkerPool
 * (pool-broker.ts); the request then goes straight from this thread to the worker's socket
 * (each front has its own connections to every worker). Timers (terminate, slow log,
 * queue_timeout, the stall rule) run in the main thread, which tells this side when it ends
 * a lease, and why.
 */
import { GatehouseError } from '../core/errors.js'
import { type FrontOp, fromWire, type MainOp, type Port, type WireInfo } from './pool-broker.js'
import { type CancelLike, LeaseEnd, type RequestInfo, type WorkerLease } from './lease.js'
import type { PoolHandle } from './pool-handle.js'
import type { PoolSettings } from './settings.js'

/** How often a worker's progress is told to the main thread at most (its stall rule's clock). */
const PROGRESS_EVERY_MS = 20

interface PendingAcquire {
  pool: RemoteWorkerPool
  info: RequestInfo
  resolve: (lease: WorkerLease) => void
  reject: (err: unknown) => void
  signal: CancelLike | undefined
  onAbort: (() => void) | undefined
}

/** One front thread's link to the main thread's pools: batches both ways. */
export class PoolClient {
  private nextId = 1
  private out: FrontOp[] = []
  private scheduled = false
  /**
   * Leases whose worker showed progress in this turn (one message each per batch), and when
   * each worker's progress was last told: the main thread needs it only for the stall rule
   * (`pipeline_stall`, 200 ms), so once per PROGRESS_EVERY_MS per worker is enough.
   */
  private progressed = new Set<number>()
  private readonly progressTold = new Map<string, number>()
  private readonly pending = new Map<number, PendingAcquire>()
  private readonly leases = new Map<number, RemoteLease>()
  private readonly starts = new Map<number, { resolve: () => void; reject: (e: unknown) => void }>()
  private readonly pools = new Map<number, Set<RemoteWorkerPool>>()
  private readonly flush = () => {
    this.scheduled = false
    for (const id of this.progressed) if (this.leases.has(id)) this.out.push(['p', id])
    this.progressed.clear()
    if (this.out.length === 0) return
    const batch = this.out
    this.out = []
    this.port.postMessage(['pool', batch])
  }

  constructor(private readonly port: Port) {}

  /** A handle on the main thread's pool number `id`. */
  pool(id: number, settings: PoolSettings): RemoteWorkerPool {
    const pool = new RemoteWorkerPool(this, id, settings)
    let set = this.pools.get(id)
    if (!set) this.pools.set(id, (set = new Set()))
    set.add(pool)
    return pool
  }

  /** @internal */
  send(op: FrontOp): void {
    this.out.push(op)
    this.schedule()
  }

  /** @internal */
  progress(id: number, worker: string): void {
    const now = performance.now()
    if (now - (this.progressTold.get(worker) ?? -Infinity) < PROGRESS_EVERY_MS) return
    this.progressTold.set(worker, now)
    this.progressed.add(id)
    this.schedule()
  }

  private schedule(): void {
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.flush)
    }
  }

  /** @internal */
  start(poolId: number): Promise<void> {
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      this.starts.set(id, { resolve, reject })
      this.send(['w', id, poolId])
    })
  }

  /** @internal */
  acquire(pool: RemoteWorkerPool, info: RequestInfo, signal: CancelLike | undefined): Promise<WorkerLease> {
    if (signal?.aborted) return Promise.reject(signal.reason)
    const id = this.nextId++
    const wire: WireInfo = { method: info.method, uri: info.uri }
    if (info.contentLength !== undefined) wire.contentLength = info.contentLength
    if (info.script !== undefined) wire.script = info.script
    if (info.movable) wire.movable = true
    const choice = info.choice
    if (choice) {
      const loads: Record<number, number> = {}
      const full: number[] = []
      for (const w of pool.workerIds) {
        const load = choice.load(w)
        if (load > 0) loads[w] = load
        if (choice.full?.(w)) full.push(w)
      }
      wire.choice = { loads, full, ...(choice.fullReason !== undefined ? { reason: choice.fullReason } : {}) }
    }
    return new Promise((resolve, reject) => {
      const p: PendingAcquire = { pool, info, resolve, reject, signal, onAbort: undefined }
      if (signal) {
        p.onAbort = () => {
          if (!this.pending.delete(id)) return
          this.send(['c', id])
          reject(signal.reason)
        }
        signal.addEventListener('abort', p.onAbort, { once: true })
      }
      this.pending.set(id, p)
      this.send(['a', id, pool.id, wire])
    })
  }

  /** @internal */
  release(id: number, failed: boolean, recycle: boolean): void {
    if (!this.leases.delete(id)) return
    this.send(['r', id, failed, recycle])
  }

  /** A batch from the main thread. */
  handle(ops: readonly MainOp[]): void {
    for (const op of ops) {
      switch (op[0]) {
        case 'g': {
          const [, id, pid, workerId, socketPath, mayHaveStarted] = op
          const p = this.pending.get(id)
          if (!p) {
            // Cancelled while the grant was on its way: given back.
            this.send(['r', id, false, false])
            break
          }
          this.pending.delete(id)
          if (p.signal && p.onAbort) p.signal.removeEventListener('abort', p.onAbort)
          const lease = new RemoteLease(
            this,
            id,
            pid,
            workerId,
            socketPath,
            mayHaveStarted,
            p.info,
            p.pool.settings.name,
            `${p.pool.id}:${workerId}`,
          )
          this.leases.set(id, lease)
          p.pool.granted(workerId)
          p.info.choice?.taken(workerId)
          p.resolve(lease)
          break
        }
        case 'e': {
          const p = this.pending.get(op[1])
          if (!p) break
          this.pending.delete(op[1])
          if (p.signal && p.onAbort) p.signal.removeEventListener('abort', p.onAbort)
          const err = fromWire(op[2])
          if (err instanceof GatehouseError && err.code === 'GH_ERR_WORKER_START') p.pool.failed = err
          p.reject(err)
          break
        }
        case 'x':
          this.leases.get(op[1])?.abort(fromWire(op[2]), op[3])
          break
        case 'f':
          this.leases.get(op[1])?.freeze(op[2])
          break
        case 's':
          this.progressTold.delete(`${op[1]}:${op[2]}`)
          for (const pool of this.pools.get(op[1]) ?? []) pool.stopping(op[2])
          break
        case 'w': {
          const s = this.starts.get(op[1])
          if (!s) break
          this.starts.delete(op[1])
          if (op[2] === null) s.resolve()
          else s.reject(fromWire(op[2]))
          break
        }
      }
    }
  }

  /** @internal A pool handle closed (its route replaced): no more stopping events for it. */
  forget(pool: RemoteWorkerPool): void {
    this.pools.get(pool.id)?.delete(pool)
  }
}

/** A pool of the main thread, as a front thread's gateways use it (PoolHandle). */
export class RemoteWorkerPool implements PoolHandle {
  readonly shared = true
  readonly traffic = { framesSent: 0, framesReceived: 0 }
  failed: GatehouseError | null = null
  /** The workers this front was given, for a WebSocket choice's snapshot. */
  readonly workerIds = new Set<number>()
  private readonly stoppingListeners: ((workerId: number) => void)[] = []

  constructor(
    private readonly client: PoolClient,
    readonly id: number,
    readonly settings: PoolSettings,
  ) {}

  get failure(): GatehouseError | null {
    return this.failed
  }

  start(): Promise<void> {
    return this.client.start(this.id).then(
      () => {
        this.failed = null
      },
      (err: unknown) => {
        if (err instanceof GatehouseError && err.code === 'GH_ERR_WORKER_START') this.failed = err
        throw err
      },
    )
  }

  acquire(info: RequestInfo, signal?: CancelLike): Promise<WorkerLease> {
    return this.client.acquire(this, info, signal)
  }

  /** Never at once: the grant comes from the main thread. */
  tryAcquire(): WorkerLease | undefined {
    return undefined
  }

  /** The main thread reloads its pools (SIGUSR2, a reload): nothing to do here. */
  reload(): Promise<void> {
    return Promise.resolve()
  }

  /** The pool stays the main thread's; this front stops hearing of it. */
  close(): Promise<void> {
    this.client.forget(this)
    return Promise.resolve()
  }

  onWorkerStopping(listener: (workerId: number) => void): void {
    this.stoppingListeners.push(listener)
  }

  /** @internal */
  granted(workerId: number): void {
    this.failed = null
    this.workerIds.add(workerId)
  }

  /** @internal */
  stopping(workerId: number): void {
    this.workerIds.delete(workerId)
    for (const listener of this.stoppingListeners) listener(workerId)
  }
}

/** A lease the main thread granted: the worker's socket, and the main thread's word on its end. */
class RemoteLease extends LeaseEnd implements WorkerLease {
  readonly start = performance.now()
  private released = false

  constructor(
    private readonly client: PoolClient,
    private readonly id: number,
    readonly pid: number,
    readonly workerId: number,
    readonly socketPath: string,
    readonly mayHaveStarted: boolean,
    private readonly info: RequestInfo,
    poolName: string,
    /** The pool's key and the worker's id: whose progress this lease reports. */
    private readonly worker: string,
  ) {
    super()
    const note = info.upstream
    if (note) {
      note.pool = poolName
      note.pid = pid
      note.start = this.start
      note.end = undefined
    }
  }

  progress(): void {
    this.client.progress(this.id, this.worker)
  }

  freeze(started: boolean): void {
    this.startedWhenStopped ??= started
  }

  abort(reason: unknown, neverStarted: boolean): void {
    this.end(reason, !neverStarted)
  }

  release(outcome: { recycle?: boolean; failed?: boolean } = {}): void {
    if (this.released) return
    this.released = true
    const note = this.info.upstream
    if (note && note.start === this.start) note.end = performance.now()
    this.client.release(this.id, outcome.failed === true, outcome.recycle === true)
  }
}
