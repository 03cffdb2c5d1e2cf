import { GatehouseError } from '../core/errors.js'

export interface LimiterOptions {
  /** Work items allowed at once. */
  max: number
  /** Waiters allowed beyond `max`; one more is refused at once. */
  queue: number
  /** How long a waiter may wait before it is refused (ms; 0 = no limit). */
  queueTimeoutMs: number
}

/**
 * What a wait can be cancelled with: an AbortSignal, or anything with the part of its
 * surface used here (the FastCGI gateways pass a lighter one per request, and most of their
 * requests wait when the pool is smaller than the client concurrency).
 */
export interface LimiterSignal {
  readonly aborted: boolean
  readonly reason?: unknown
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void
  removeEventListener(type: 'abort', listener: () => void): void
}

interface Waiter {
  grant: (release: () => void) => void
  refuse: (err: unknown) => void
  timer: NodeJS.Timeout | undefined
  signal: LimiterSignal | undefined
  onAbort: (() => void) | undefined
}

/**
 * Backpressure measured in requests (DESIGN.md): at most `max` at once, a bounded FIFO
 * queue behind them, and GH_ERR_OVERLOADED (503) past either bound.
 */
export class ConcurrencyLimiter {
  private running = 0
  private readonly waiters: Waiter[] = []
  private closed = false

  constructor(private readonly options: LimiterOptions) {}

  get active(): number {
    return this.running
  }

  get queued(): number {
    return this.waiters.length
  }

  /**
   * Resolves with a release function once a slot is free. Rejects with GH_ERR_OVERLOADED when
   * the queue is full, the wait times out or the limiter is closed, and with the signal's
   * reason when it aborts first. Call release exactly once (extra calls are ignored).
   */
  acquire(signal?: LimiterSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason)
    if (this.closed) return Promise.reject(new GatehouseError('GH_ERR_OVERLOADED', 'shutting down'))
    if (this.running < this.options.max) {
      this.running++
      return Promise.resolve(this.releaser())
    }
    if (this.waiters.length >= this.options.queue) {
      return Promise.reject(
        new GatehouseError(
          'GH_ERR_OVERLOADED',
          `${this.options.max} running and ${this.waiters.length} waiting (queue full)`,
        ),
      )
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { grant: resolve, refuse: reject, timer: undefined, signal, onAbort: undefined }
      if (this.options.queueTimeoutMs > 0) {
        waiter.timer = setTimeout(() => {
          this.remove(waiter)
          reject(
            new GatehouseError('GH_ERR_OVERLOADED', `no slot free within ${this.options.queueTimeoutMs} ms`),
          )
        }, this.options.queueTimeoutMs)
      }
      if (signal) {
        waiter.onAbort = () => {
          this.remove(waiter)
          reject(signal.reason)
        }
        signal.addEventListener('abort', waiter.onAbort, { once: true })
      }
      this.waiters.push(waiter)
    })
  }

  /** Refuse every waiter and any later acquire; running holders keep their slots. */
  close(): void {
    this.closed = true
    for (const w of this.waiters.splice(0)) {
      this.disarm(w)
      w.refuse(new GatehouseError('GH_ERR_OVERLOADED', 'shutting down'))
    }
  }

  private releaser(): () => void {
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.waiters.shift()
      if (next) {
        this.disarm(next)
        next.grant(this.releaser())
      } else this.running--
    }
  }

  private remove(waiter: Waiter): void {
    const i = this.waiters.indexOf(waiter)
    if (i !== -1) this.waiters.splice(i, 1)
    this.disarm(waiter)
  }

  private disarm(waiter: Waiter): void {
    if (waiter.timer) clearTimeout(waiter.timer)
    if (waiter.signal && waiter.onAbort) waiter.signal.removeEventListener('abort', waiter.onAbort)
  }
}
