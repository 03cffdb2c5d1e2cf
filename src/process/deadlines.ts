/*
 * Many timeouts of one length behind one timer (issue 13). A pool arms up to three timeouts
 * per request (the queue wait, request_terminate_timeout, the take-back of a pipelined
 * request) and nearly all of them are cancelled a few milliseconds later: a setTimeout and
 * clearTimeout pair costs about 0.8 us here, a push and a flag a few nanoseconds. Entries of
 * one length expire in the order they were added (performance.now() only grows), so one
 * timer, armed for the oldest entry still pending, serves them all.
 *
 * Written by hand: a timer wheel package would add a tick (a wake-up every few ms even when
 * idle) for what is a FIFO with one timer.
 */

/** One pending timeout: `cancel()` it when what it guards ends first. */
export interface Deadline {
  cancel(): void
}

class Entry implements Deadline {
  done = false
  constructor(
    readonly at: number,
    readonly fire: () => void,
    private readonly list: Deadlines,
  ) {}

  cancel(): void {
    if (this.done) return
    this.done = true
    this.list.cancelled()
  }
}

/**
 * A FIFO of timeouts that all last `ms`, behind one timer. The timer holds the event loop
 * only while an entry is pending, as the timeouts it replaces did.
 */
export class Deadlines {
  private entries: Entry[] = []
  /** Index of the oldest entry that may still be pending. */
  private head = 0
  /** Cancelled entries still in `entries`. */
  private dead = 0
  private timer: NodeJS.Timeout | undefined
  /** When the armed timer fires (performance.now() clock). */
  private armedAt = Infinity

  constructor(readonly ms: number) {}

  /** Call `fire` in `ms` unless cancelled first. */
  add(fire: () => void): Deadline {
    const entry = new Entry(performance.now() + this.ms, fire, this)
    if (this.size === 0) this.timer?.ref()
    this.entries.push(entry)
    if (this.timer === undefined) this.arm(entry.at)
    return entry
  }

  /** Pending entries (for tests and the status page). */
  get size(): number {
    return this.entries.length - this.head - this.dead
  }

  /** Called by an entry when cancelled: compacts once most of the list is dead. */
  cancelled(): void {
    this.dead++
    const held = this.entries.length - this.head
    // Nothing pending: the timer stays armed (the next add needs no new one) but no longer
    // holds the event loop.
    if (held === this.dead) this.timer?.unref()
    else if (held > 64 && this.dead * 2 > held) this.compact()
  }

  /** Stop the timer; pending entries never fire. */
  clear(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    this.armedAt = Infinity
    for (let i = this.head; i < this.entries.length; i++) this.entries[i]!.done = true
    this.entries = []
    this.head = 0
    this.dead = 0
  }

  private compact(): void {
    this.entries = this.entries.slice(this.head).filter((e) => !e.done)
    this.head = 0
    this.dead = 0
  }

  private arm(at: number): void {
    this.armedAt = at
    this.timer = setTimeout(this.onTimer, Math.max(1, Math.ceil(at - performance.now())))
  }

  private readonly onTimer = (): void => {
    this.timer = undefined
    this.armedAt = Infinity
    const now = performance.now()
    const due: Entry[] = []
    while (this.head < this.entries.length) {
      const entry = this.entries[this.head]!
      if (entry.done) {
        this.head++
        this.dead--
        continue
      }
      // setTimeout may fire up to a millisecond early against performance.now().
      if (entry.at > now + 1) break
      entry.done = true
      this.head++
      due.push(entry)
    }
    if (this.head === this.entries.length) {
      this.entries = []
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > this.entries.length) this.compact()
    if (this.head < this.entries.length) {
      this.arm(this.entries[this.head]!.at)
      if (this.size === 0) this.timer!.unref()
    }
    // Fired after the list is consistent: a callback may add or cancel entries.
    for (const entry of due) entry.fire()
  }

  /** For tests: when the timer fires next (Infinity when none is armed). */
  get nextAt(): number {
    return this.armedAt
  }
}
