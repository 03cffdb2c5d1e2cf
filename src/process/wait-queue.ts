/*
 * A FIFO of waits, each one ended by a grant, by its time running out or by its signal
 * aborting: the ConcurrencyLimiter's queue for a slot and the WorkerPool's for a worker.
 * Bounding it is the caller's business (it knows `length` before it calls wait()).
 */
import { type Deadline, Deadlines } from './deadlines.js'
import type { CancelLike } from './lease.js'

interface Waiter<T, D> {
  data: D
  resolve: (value: T) => void
  reject: (err: unknown) => void
  timer: Deadline | undefined
  /** performance.now() when it joined the queue. */
  since: number
  signal: CancelLike | undefined
  onAbort: (() => void) | undefined
}

/** A queued wait for a `T`, carrying `data` for whoever grants it. */
export class WaitQueue<T, D = undefined> {
  private readonly waiters: Waiter<T, D>[] = []
  /** The time limits of waits, one timer per length (a queue nearly always has one length). */
  private readonly deadlines = new Map<number, Deadlines>()

  get length(): number {
    return this.waiters.length
  }

  /** The first wait's data (what shift() would hand out next), or undefined. */
  get first(): D | undefined {
    return this.waiters[0]?.data
  }

  /**
   * Wait at the back of the queue until shift() hands this wait out. Rejects with
   * `timeoutError()` after `timeoutMs` (0: no limit) and with the signal's reason when it
   * aborts; either way the wait leaves the queue.
   */
  wait(data: D, signal: CancelLike | undefined, timeoutMs: number, timeoutError: () => unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      const waiter: Waiter<T, D> = {
        data,
        resolve,
        reject,
        timer: undefined,
        since: performance.now(),
        signal,
        onAbort: undefined,
      }
      if (timeoutMs > 0) {
        let deadlines = this.deadlines.get(timeoutMs)
        if (!deadlines) this.deadlines.set(timeoutMs, (deadlines = new Deadlines(timeoutMs)))
        waiter.timer = deadlines.add(() => {
          this.remove(waiter)
          reject(timeoutError())
        })
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

  /** The first wait, out of the queue (its timer and signal let go): grant it with `resolve`. */
  shift(): { readonly data: D; readonly since: number; readonly resolve: (value: T) => void } | undefined {
    const waiter = this.waiters.shift()
    if (waiter) this.disarm(waiter)
    return waiter
  }

  /** End every wait, each with its own `reason()`. */
  rejectAll(reason: () => unknown): void {
    for (const waiter of this.waiters.splice(0)) {
      this.disarm(waiter)
      waiter.reject(reason())
    }
  }

  private remove(waiter: Waiter<T, D>): void {
    const i = this.waiters.indexOf(waiter)
    if (i !== -1) this.waiters.splice(i, 1)
    this.disarm(waiter)
  }

  private disarm(waiter: Waiter<T, D>): void {
    waiter.timer?.cancel()
    if (waiter.signal && waiter.onAbort) waiter.signal.removeEventListener('abort', waiter.onAbort)
  }
}
