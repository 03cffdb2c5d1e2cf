import { GatehouseError } from '../core/errors.js'
import type { CancelLike } from './lease.js'
import { WaitQueue } from './wait-queue.js'

export interface LimiterOptions {
  /** Work items allowed at once. */
  max: number
  /** Waiters allowed beyond `max`; one more is refused at once. */
  queue: number
  /** How long a waiter may wait before it is refused (ms; 0 = no limit). */
  queueTimeoutMs: number
}

/**
 * Backpressure measured in requests: at most `max` at once, a bounded FIFO
 * queue behind them, and GH_ERR_OVERLOADED (503) past either bound.
 */
export class ConcurrencyLimiter {
  private running = 0
  private readonly waiters = new WaitQueue<() => void>()
  private closed = false
  private readonly timeoutError = () =>
    new GatehouseError('GH_ERR_OVERLOADED', `no slot free within ${this.options.queueTimeoutMs} ms`)

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
   * reason when it aborts first. Call release exactly once (extra calls are ignored). The
   * signal may be an AbortSignal or a lighter CancelLike (the FastCGI gateways pass one per
   * request, and most of their requests wait when the pool is smaller than the client
   * concurrency).
   */
  acquire(signal?: CancelLike): Promise<() => void> {
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
    return this.waiters.wait(undefined, signal, this.options.queueTimeoutMs, this.timeoutError)
  }

  /** Refuse every waiter and any later acquire; running holders keep their slots. */
  close(): void {
    this.closed = true
    this.waiters.rejectAll(() => new GatehouseError('GH_ERR_OVERLOADED', 'shutting down'))
  }

  private releaser(): () => void {
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.waiters.shift()
      if (next) next.resolve(this.releaser())
      else this.running--
    }
  }
}
