/*
 * A lease: one request's hold on one worker of a pool, from acquire() to release(). The
 * pool may end it under the caller (request_terminate_timeout, the worker died): the
 * caller learns why through `signal`, `aborted` or `onAbort`.
 */
import type { UpstreamNote } from '../core/access-format.js'
import type { CancelSignal } from '../core/cancel.js'
import type { Deadline } from './deadlines.js'

/** What a lease is for: named in the slow log, the terminate log and the status page. */
export interface RequestInfo {
  method: string
  uri: string
  /** Request body length, for the status page's `content length` (0 when unknown). */
  contentLength?: number
  /** The script run, for the status page's `script` (php: SCRIPT_FILENAME). */
  script?: string
  /** Which worker suits it, when more than the leases matter (ASGI WebSockets). */
  choice?: WorkerChoice
  /** The request's note for the access log: the pool, the worker's pid, the lease's times. */
  upstream?: UpstreamNote
  /**
   * The holder can send the request to another worker if this one has not started it (no
   * body, or a body it can send again): a lease pipelined onto a worker that stalls is then
   * ended with LeaseMoved instead of waiting for queue_timeout's 503.
   */
  movable?: boolean
}

/**
 * Why a pipelined lease was ended: its worker stalled (sent nothing for stall_timeout)
 * while the request still waited on it unstarted, and the holder said it can go elsewhere
 * (RequestInfo.movable). The holder takes it back from the worker and, once the worker
 * confirms it never started it, asks the pool again.
 */
export class LeaseMoved extends Error {
  constructor(readonly workerPid: number) {
    super(`its worker (pid ${workerPid}) stalled before starting it`)
  }
}

/**
 * A caller's own weighing of the workers, for work that stays on a worker past its lease
 * (an ASGI WebSocket: its lease ends with the handshake, the socket stays open on the worker).
 */
export interface WorkerChoice {
  /** What the caller holds on the worker outside leases: the least loaded eligible worker wins. */
  load(workerId: number): number
  /** The worker takes no more of these (a cap reached): it is passed over. */
  full?(workerId: number): boolean
  /** Named in the 503 when every worker is full, e.g. `holds ws_max_per_worker (2) WebSockets`. */
  fullReason?: string
  /** Called at once (synchronously) when a worker is leased for it, so `load` counts it from then on. */
  taken(workerId: number): void
}

/** An AbortSignal, or anything with the part of its surface a wait uses. */
export type CancelLike = CancelSignal

/** One request's hold on one worker. */
export interface WorkerLease {
  readonly pid: number
  readonly workerId: number
  /** The worker's Unix socket: connect to it to send the request. */
  readonly socketPath: string
  /**
   * Aborted when the pool ends the request under the caller: reason GH_ERR_WORKER_TIMEOUT
   * (504, request_terminate_timeout) or GH_ERR_WORKER_DIED (502, the worker exited).
   */
  readonly signal: AbortSignal
  /** The pool ended the lease (the same as `signal.aborted`, without creating the signal). */
  readonly aborted: boolean
  /** Why (`signal.reason`), once aborted. */
  readonly abortReason: unknown
  /**
   * Call `listener` once with the reason if the pool ends the lease; returns an unsubscribe.
   * A cheaper `signal.addEventListener('abort', ...)` for per-request hot paths.
   */
  onAbort(listener: (reason: unknown) => void): () => void
  /**
   * Give the worker back (exactly once; later calls are ignored). `recycle`: stop this
   * worker and start another; `failed`: the exchange broke in a way that leaves the worker
   * suspect (it is recycled too).
   */
  release(outcome?: { recycle?: boolean; failed?: boolean }): void
  /** The worker sent something (a frame, a byte): it is making progress (see `stall_timeout`). */
  progress(): void
  /**
   * Whether the worker may have started this request. False while it waits on the worker
   * behind `parallel` requests leased before it (a pipelined request): a worker takes its
   * requests in the order they were sent, so such a request has certainly not started.
   */
  readonly mayHaveStarted: boolean
  /**
   * Its worker is gone or going (killed under a stuck request, or dead) while this request
   * still waited behind others: nothing of it ran, so a request without a body may be sent
   * to another worker.
   */
  readonly neverStarted: boolean
}

/** What a lease shows of its worker. */
export interface LeasedWorker {
  readonly id: number
  readonly pid: number
  readonly socketPath: string
  /** Its leases in the order they were given (a Set keeps insertion order). */
  readonly leases: ReadonlySet<unknown>
  /** performance.now() when it last showed progress. */
  lastProgress: number
}

export type ReleaseOutcome = { recycle?: boolean; failed?: boolean }

/**
 * How a lease ends under its holder, shared by the pool's Lease and a front thread's
 * (src/process/remote-pool.ts): the reason, the listeners, the signal made on first use,
 * and whether the worker had started the request when it ended.
 */
export abstract class LeaseEnd {
  aborted = false
  abortReason: unknown = undefined
  /** Created on first use of `signal`: most requests never need an EventTarget. */
  private controller: AbortController | undefined
  private listeners: ((reason: unknown) => void)[] = []
  /** Whether the worker may have started it, as judged when its worker began to stop. */
  protected startedWhenStopped: boolean | undefined
  private startedAtAbort: boolean | undefined

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController()
      if (this.aborted) this.controller.abort(this.abortReason)
    }
    return this.controller.signal
  }

  onAbort(listener: (reason: unknown) => void): () => void {
    if (this.aborted) {
      listener(this.abortReason)
      return () => {}
    }
    this.listeners.push(listener)
    return () => {
      const i = this.listeners.indexOf(listener)
      if (i !== -1) this.listeners.splice(i, 1)
    }
  }

  get neverStarted(): boolean {
    return this.startedWhenStopped === false || this.startedAtAbort === false
  }

  /** End it with `reason` (once); `started`: whether the worker may have started it by then. */
  protected end(reason: unknown, started: boolean): void {
    if (this.aborted) return
    this.startedAtAbort = started
    this.aborted = true
    this.abortReason = reason
    this.controller?.abort(reason)
    for (const listener of this.listeners.splice(0)) listener(reason)
  }
}

/**
 * The pool's side of a WorkerLease: its timers (slow log, terminate), and the call back
 * into the pool on release.
 */
export class Lease<W extends LeasedWorker = LeasedWorker> extends LeaseEnd implements WorkerLease {
  readonly start = performance.now()
  released = false
  timers: Deadline[] = []

  constructor(
    readonly worker: W,
    readonly info: RequestInfo,
    private readonly onRelease: (lease: Lease<W>, outcome: ReleaseOutcome) => void,
    /** Requests the worker runs at once (its threads); later ones wait on it in order. */
    private readonly parallel = Infinity,
  ) {
    super()
  }

  progress(): void {
    this.worker.lastProgress = performance.now()
  }

  get mayHaveStarted(): boolean {
    if (this.parallel === Infinity) return true
    let before = 0
    for (const other of this.worker.leases) {
      if (other === this) return true
      if (++before >= this.parallel) return false
    }
    return true
  }

  get pid(): number {
    return this.worker.pid
  }

  get workerId(): number {
    return this.worker.id
  }

  get socketPath(): string {
    return this.worker.socketPath
  }

  /**
   * Its worker is being stopped under it (killed for a stuck request): judge now, while the
   * requests before it are still counted, whether the worker may have started it.
   */
  freezeStarted(): void {
    if (this.startedWhenStopped !== undefined) return
    this.startedWhenStopped = this.mayHaveStarted
    this.onFreeze?.(this.startedWhenStopped)
  }

  /** Told the judgement of freezeStarted (a front thread's lease learns it before the kill: src/process/pool-broker.ts). */
  onFreeze: ((started: boolean) => void) | undefined

  abort(reason: unknown): void {
    if (!this.aborted) this.end(reason, this.startedWhenStopped ?? this.mayHaveStarted)
  }

  release(outcome: ReleaseOutcome = {}): void {
    if (this.released) return
    this.released = true
    for (const t of this.timers) t.cancel()
    // $upstream_response_time ends here (unless a later lease, a retry, has taken the note).
    const note = this.info.upstream
    if (note && note.start === this.start) note.end = performance.now()
    this.onRelease(this, outcome)
  }
}
