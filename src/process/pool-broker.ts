/*
 * The main thread's side of leases asked for by front threads (front_processes > 1,
 * src/fronts/): every pool lives here, once, and each front's RemoteWorkerPool
 * (remote-pool.ts) asks this broker for a worker over the front's MessagePort. So the
 * pool's capacity, its bounded queue, queue_timeout's 503, the stall rules and
 * request_terminate_timeout hold for every front at once, exactly as in one thread: the
 * broker calls the same WorkerPool.acquire a local request does.
 *
 * The messages are arrays (cheaper to clone than objects), sent in batches: what one turn
 * of the event loop produced leaves in one postMessage (flushed from setImmediate), except
 * what must arrive before a kill (a lease's freeze and abort), which leaves at once.
 * Measured (bench/probes/lease-cost.mjs, docs/architecture.md): a lease over a port costs
 * the main thread a few microseconds; batching divides the per-message part by the batch.
 */
import { GatehouseError } from '../core/errors.js'
import { type ErrorCode } from '../core/errors.js'
import { type Lease, LeaseMoved, type RequestInfo, type WorkerChoice, type WorkerLease } from './lease.js'
import type { WorkerPool } from './pool.js'

/** The part of a MessagePort (or a Worker) the broker and the client send on (the owner wires their receiving end). */
export interface Port {
  postMessage(value: unknown): void
}

/** A reason or an error as it crosses threads. */
export type WireError =
  | { k: 'gh'; code: ErrorCode; message: string; retryAfter?: number }
  | { k: 'moved'; pid: number }
  | { k: 'err'; message: string }

export function toWire(err: unknown): WireError {
  if (err instanceof LeaseMoved) return { k: 'moved', pid: err.workerPid }
  if (err instanceof GatehouseError)
    return {
      k: 'gh',
      code: err.code,
      message: err.message,
      ...(err.retryAfter !== undefined ? { retryAfter: err.retryAfter } : {}),
    }
  return { k: 'err', message: err instanceof Error ? err.message : String(err) }
}

/** The error again, on the receiving thread (a GatehouseError keeps its code and message). */
export function fromWire(w: WireError): Error {
  if (w.k === 'moved') return new LeaseMoved(w.pid)
  if (w.k === 'err') return new Error(w.message)
  const err = new GatehouseError(
    w.code,
    undefined,
    w.retryAfter !== undefined ? { retryAfter: w.retryAfter } : {},
  )
  err.message = w.message
  return err
}

/** What a front sends of its RequestInfo (no functions: `choice` as a snapshot of its loads). */
export interface WireInfo {
  method: string
  uri: string
  contentLength?: number
  script?: string
  movable?: boolean
  /** ASGI WebSockets: the front's own count per worker id, and the ids it finds full. */
  choice?: { loads: Record<number, number>; full: number[]; reason?: string }
}

/** Front -> main operations (one batch is an array of these). */
export type FrontOp =
  | ['a', number, number, WireInfo] // acquire: lease id, pool id, info
  | ['c', number] // cancel a wait (the client left)
  | ['r', number, boolean, boolean] // release: failed, recycle
  | ['p', number] // the worker made progress on this lease
  | ['w', number, number] // start the pool (resolves when ready): request id, pool id

/** Main -> front operations. */
export type MainOp =
  | ['g', number, number, number, string, boolean] // granted: id, pid, worker id, socket, mayHaveStarted
  | ['e', number, WireError] // refused
  | ['x', number, WireError, boolean] // ended by the pool: reason, neverStarted
  | ['f', number, boolean] // frozen: whether the worker may have started it
  | ['s', number, number] // a worker of pool `id` is stopping
  | ['w', number, WireError | null] // pool start outcome

/** One front thread's link: its leases, and its outgoing batch. */
class FrontLink {
  readonly leases = new Map<number, Lease | WorkerLease>()
  readonly waiting = new Map<number, AbortController>()
  private out: MainOp[] = []
  private scheduled = false
  private readonly flush = () => {
    this.scheduled = false
    if (this.out.length === 0) return
    const batch = this.out
    this.out = []
    this.port.postMessage(['pool', batch])
  }

  constructor(
    readonly port: Port,
    private readonly broker: PoolBroker,
  ) {}

  send(op: MainOp, urgent = false): void {
    this.out.push(op)
    if (urgent) this.flush()
    else if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.flush)
    }
  }

  handle(ops: readonly FrontOp[]): void {
    for (const op of ops) {
      switch (op[0]) {
        case 'a':
          this.acquire(op[1], op[2], op[3])
          break
        case 'c': {
          const wait = this.waiting.get(op[1])
          if (wait) wait.abort(new Error('client closed the connection'))
          else this.release(op[1], false, false)
          break
        }
        case 'r':
          this.release(op[1], op[2], op[3])
          break
        case 'p':
          this.leases.get(op[1])?.progress()
          break
        case 'w': {
          const [, id, poolId] = op
          const pool = this.broker.pool(poolId)
          if (!pool) this.send(['w', id, toWire(retired())])
          else
            pool.start().then(
              () => this.send(['w', id, null]),
              (err: unknown) => this.send(['w', id, toWire(err)]),
            )
          break
        }
      }
    }
  }

  private acquire(id: number, poolId: number, wire: WireInfo): void {
    const pool = this.broker.pool(poolId)
    if (!pool) {
      this.send(['e', id, toWire(retired())])
      return
    }
    const info: RequestInfo = { method: wire.method, uri: wire.uri }
    if (wire.contentLength !== undefined) info.contentLength = wire.contentLength
    if (wire.script !== undefined) info.script = wire.script
    if (wire.movable) info.movable = true
    if (wire.choice) info.choice = snapshotChoice(wire.choice)
    const now = pool.tryAcquire(info)
    if (now) {
      this.grant(id, now)
      return
    }
    const wait = new AbortController()
    this.waiting.set(id, wait)
    pool.acquire(info, wait.signal).then(
      (lease) => {
        this.waiting.delete(id)
        // Cancelled while the grant was on its way here: given back at once.
        if (wait.signal.aborted) lease.release()
        else this.grant(id, lease)
      },
      (err: unknown) => {
        this.waiting.delete(id)
        if (!wait.signal.aborted) this.send(['e', id, toWire(err)])
      },
    )
  }

  private grant(id: number, lease: WorkerLease): void {
    this.leases.set(id, lease)
    const local = lease as Lease
    local.onFreeze = (started) => this.send(['f', id, started], true)
    lease.onAbort((reason) => this.send(['x', id, toWire(reason), lease.neverStarted], true))
    this.send(['g', id, lease.pid, lease.workerId, lease.socketPath, lease.mayHaveStarted])
  }

  private release(id: number, failed: boolean, recycle: boolean): void {
    const lease = this.leases.get(id)
    if (!lease) return
    this.leases.delete(id)
    lease.release(failed || recycle ? { failed, recycle } : undefined)
  }

  /** The front is gone (it exited or was replaced): what it held goes back, what it waited for is dropped. */
  detach(): void {
    for (const wait of this.waiting.values()) wait.abort(new Error('front thread gone'))
    this.waiting.clear()
    for (const lease of this.leases.values()) lease.release()
    this.leases.clear()
  }
}

function retired(): GatehouseError {
  return new GatehouseError('GH_ERR_OVERLOADED', 'the pool was replaced by a reload', {
    retryAfter: 1,
  })
}

/** A front's WorkerChoice as the pool reads it: the front's counts, taken as they were at the ask. */
function snapshotChoice(c: NonNullable<WireInfo['choice']>): WorkerChoice {
  return {
    load: (id) => c.loads[id] ?? 0,
    full: (id) => c.full.includes(id),
    ...(c.reason !== undefined ? { fullReason: c.reason } : {}),
    taken: () => {},
  }
}

/** A pool as a front learns of it: the number its messages name it by, and its settings. */
export interface PoolEntry {
  id: number
  settings: WorkerPool['settings']
}

/**
 * Every pool of the main thread by its route key (the action and its table, and which
 * occurrence: src/gatehouse.ts), and the fronts' links. Messages name a pool by a number
 * (a key is a whole action table as JSON: too long to send and hash per request).
 */
export class PoolBroker {
  private readonly byKey = new Map<string, PoolEntry & { pool: WorkerPool }>()
  private readonly byId = new Map<number, WorkerPool>()
  private nextId = 1
  private readonly links = new Set<FrontLink>()

  pool(id: number): WorkerPool | undefined {
    return this.byId.get(id)
  }

  /** Pools by key, for a front starting or reloading. */
  entries(): Record<string, PoolEntry> {
    const out: Record<string, PoolEntry> = {}
    for (const [key, e] of this.byKey) if (!e.pool.isClosing) out[key] = { id: e.id, settings: e.settings }
    return out
  }

  /** A pool the main thread made for the route of `key`: fronts lease its workers from now on. */
  register(key: string, pool: WorkerPool): void {
    if (this.byKey.get(key)?.pool === pool) return
    // Pools closed by earlier reloads are forgotten (a front still naming one is told it was replaced).
    for (const [id, p] of this.byId) if (p.isClosing) this.byId.delete(id)
    const id = this.nextId++
    this.byKey.set(key, { id, settings: pool.settings, pool })
    this.byId.set(id, pool)
    pool.shared = true
    pool.onWorkerStopping((worker) => {
      for (const link of this.links) link.send(['s', id, worker])
    })
  }

  /** A front thread's port: its messages are served until detach. */
  attach(port: Port): { handle(ops: readonly FrontOp[]): void; detach(): void } {
    const link = new FrontLink(port, this)
    this.links.add(link)
    return {
      handle: (ops) => link.handle(ops),
      detach: () => {
        this.links.delete(link)
        link.detach()
      },
    }
  }
}
