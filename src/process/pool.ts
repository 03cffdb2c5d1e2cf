/*
 * The one process manager of Gatehouse: pools of worker processes with PHP-FPM's process
 * management (static, dynamic, ondemand; max_requests, request_terminate_timeout, slow log,
 * reload without loss) for any worker that serves requests on a Unix socket of its own:
 * php-cgi (FastCGI), the Python WSGI/ASGI workers, anything else.
 *
 * Each worker binds its own socket (a path in a private temp directory), so the pool knows
 * exactly which worker is idle and leases it to one request (or to `capacity` requests at
 * once). What goes over the socket is the caller's business: the pool only starts, watches,
 * dispatches to, recycles and stops processes. docs/process-manager.md is the user's view.
 */
import type { PoolHandle } from './pool-handle.js'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { GatehouseError } from '../core/errors.js'
import {
  type CancelLike,
  Lease,
  LeaseMoved,
  type ReleaseOutcome,
  type RequestInfo,
  type WorkerChoice,
  type WorkerLease,
} from './lease.js'
import { readRss, rssOf } from './proc.js'
import { signalGroup } from './process-group.js'
import { WaitQueue } from './wait-queue.js'
import type { PoolMode, PoolSettings } from './settings.js'
import { makeRunDir } from './run-dir.js'
import { Deadlines } from './deadlines.js'
import { escalate, probeSocket, spawnWorker, type WorkerCommand } from './spawn.js'

/** One worker on the status page (`&full`). */
export interface WorkerStatus {
  pid: number
  workerId: number
  generation: number
  /** php-fpm's process states: Idle, Running, Starting, Finishing (stopping or draining). */
  state: 'Idle' | 'Running' | 'Starting' | 'Finishing'
  /** Unix time (s) the worker started. */
  startTime: number
  requests: number
  /** Leases in progress (0..capacity). */
  active: number
  /** The current (Running) or last request: how long it ran (µs), what it was. */
  requestDuration: number
  requestMethod: string
  requestUri: string
  contentLength: number
  script: string
  /** Resident memory (bytes) read from /proc when the status was asked for, 0 when unknown. */
  lastRequestMemory: number
}

/** php-fpm's status figures for one pool, plus Gatehouse's own. */
export interface PoolStatus {
  pool: string
  /** What the workers run (`php`, `wsgi`, `asgi`), when known. */
  kind: string | undefined
  processManager: PoolMode
  /** Unix time (s) the pool started, and seconds since. */
  startTime: number
  startSince: number
  /** Requests leased since start. */
  acceptedConn: number
  /** Requests waiting for a worker now; the most ever; the bound. */
  listenQueue: number
  maxListenQueue: number
  listenQueueLen: number
  idleProcesses: number
  activeProcesses: number
  totalProcesses: number
  maxActiveProcesses: number
  maxChildrenReached: number
  slowRequests: number
  /** Gatehouse's own: requests ended by request_terminate_timeout; workers respawned after dying; reloads. */
  terminatedRequests: number
  workerDeaths: number
  reloads: number
  /** The pool stopped respawning after a crash loop (GH_ERR_WORKER_START). */
  failed: boolean
  /** Why (the crash loop's message), while failed; null otherwise. */
  failedReason: string | null
  /** Unix time (s) of the next try to start a worker while failed (crash_retry); null when none is due. */
  nextRetry: number | null
  /** Tries to start a failed pool again since it started (crash_retry). */
  startRetries: number
  /** Workers replaced past max_requests, past max_rss, and by reloads. */
  recycledMaxRequests: number
  recycledMaxRss: number
  reloadedWorkers: number
  /** Requests that waited in the queue for a worker and got one, and their total wait (ms). */
  queuedRequests: number
  queueWaitMs: number
  /** Pipelined requests moved to another worker because theirs stalled before starting them. */
  movedRequests: number
  /** Frames over the Python bridge (WSGI/ASGI pools; 0 for others): sent to workers, received. */
  framesSent: number
  framesReceived: number
  workers: WorkerStatus[]
}

/**
 * max_rss is checked after a request, at most this often per worker (the first request
 * always): a /proc read takes the worker out of dispatch for a moment, which every request
 * would pay for a limit that is on by default.
 */
const RSS_CHECK_INTERVAL_MS = 1000

/** Consecutive unexpected worker exits (no request served in between) that make a crash loop. */
const CRASH_LOOP_EXITS = 5
/** A worker that lived this long before dying does not count towards a crash loop. */
const CRASH_WINDOW_MS = 30_000
/** After dump_signal, how long a stuck worker has to print before SIGKILL. */
const DUMP_GRACE_MS = 1000
/** How often the pool looks at its spares and idle timeouts (php-fpm: once a second). */
const MAINTENANCE_MS = 1000

type WorkerPhase = 'starting' | 'ready' | 'stopping'

interface LastRequest {
  method: string
  uri: string
  contentLength: number
  script: string
  /** performance.now() when it started. */
  start: number
  /** µs; -1 while it runs. */
  duration: number
}

interface Worker {
  id: number
  generation: number
  pid: number
  socketPath: string
  phase: WorkerPhase
  /** Taken out of dispatch: recycled, drained (old generation), or being measured (max_rss). */
  retiring: boolean
  /**
   * To be replaced (a rolling reload's old generation, past max_requests or max_rss): it
   * serves on until a replacement is ready, then is retired (see replaceDue).
   */
  due: boolean
  /** Spawned to replace a due worker; cleared once it is ready or gone. */
  replacement: boolean
  /** Its replacements could not start: it serves on, not recycled, until the next reload. */
  kept: boolean
  measuring: boolean
  leases: Set<Lease<Worker>>
  requests: number
  /** max_requests with this worker's jitter (Infinity: no limit). */
  limit: number
  /** Date.now() at spawn, and performance.now() at spawn and when it last became idle. */
  startedAt: number
  spawnedAt: number
  idleSince: number
  /** performance.now() when it last sent something or took a request while idle. */
  lastProgress: number
  /** performance.now() of its last max_rss check (-Infinity: never). */
  lastMeasured: number
  last: LastRequest | null
  /** The pool stopped it (recycle, idle, drain, terminate): its exit is not a failure. */
  expected: boolean
  /** Why its leases are aborted when it exits (default GH_ERR_WORKER_DIED). */
  killReason: GatehouseError | null
  timers: NodeJS.Timeout[]
  exited: Promise<void>
  kill(signal: NodeJS.Signals): void
}

/** Why a worker cannot start, as it reported it (a Python app that does not import). */
export interface StartFailure {
  /** One line naming what failed and why, e.g. `cannot load the WSGI application m:app: ...`. */
  message: string
  /** The whole multi-line traceback, or empty. */
  traceback: string
}

export interface WorkerPoolHooks {
  /** Recognizes a worker's stderr line that reports a start failure (null: an ordinary line). */
  startFailure?(line: string): StartFailure | null
}

/**
 * One pool of workers from one command. A Gatehouse holds one per managed route; every
 * live pool is listed by livePools() for the status page.
 */
export class WorkerPool implements PoolHandle {
  /** Leased from front threads too (src/process/pool-broker.ts sets it). */
  shared = false
  private readonly workers = new Set<Worker>()
  private readonly stoppingListeners: ((workerId: number) => void)[] = []
  private readonly queueTimeoutError = () =>
    new GatehouseError(
      'GH_ERR_OVERLOADED',
      `pool ${this.settings.name}: no worker free within ${this.settings.queue_timeout} ms`,
      { retryAfter: 1 },
    )
  private readonly releaseLease = (lease: Lease<Worker>, outcome: ReleaseOutcome) =>
    this.released(lease, outcome)
  private readonly waiters = new WaitQueue<WorkerLease, RequestInfo>()
  /** The per-request time limits, one timer each (made on first use). */
  private terminateDeadlines: Deadlines | undefined
  private takeBackDeadlines: Deadlines | undefined
  private stallDeadlines: Deadlines | undefined
  private slowlogDeadlines: Deadlines | undefined
  private readonly dir: string
  private generation = 1
  private nextWorkerId = 1
  private started = false
  private closing = false
  private closed: Promise<void> | null = null
  private failed: GatehouseError | null = null
  /** Unexpected exits since the last request that went well. */
  private failures = 0
  /**
   * Workers in a row that died before accepting a connection, whatever else went well: a
   * rolling reload's or a recycle's replacements crash-looping while old workers serve
   * (their requests reset `failures`).
   */
  private neverReady = 0
  private respawnTimer: NodeJS.Timeout | undefined
  /** While failed: the next try to start one worker (crash_retry, doubling), and that worker. */
  private retryTimer: NodeJS.Timeout | undefined
  private retryDelay: number
  private nextRetryAt: number | null = null
  private trial: Worker | null = null
  private maintenance: NodeJS.Timeout | undefined
  /** dynamic: workers spawned per maintenance round, doubling while spares are short (php-fpm). */
  private spawnRate = 1
  private atMaxChildren = false
  private startWaiters: {
    generation: number
    need: number
    resolve: () => void
    reject: (e: unknown) => void
  }[] = []
  /** Rolling reloads waiting until no worker older than their generation serves. */
  private rollWaiters: { generation: number; resolve: () => void }[] = []
  private readonly startTime = Date.now()
  /**
   * The start failures logged in this start attempt, each with the pid that reported it
   * first: N workers failing alike log the traceback once (issue 17 item 3). Cleared when a
   * worker starts, at a retry and at a reload.
   */
  private readonly startFailures = new Map<string, number>()
  /** The last start failure a worker reported: the crash-loop error names it. */
  private lastStartFailure: StartFailure | null = null
  private readonly counters = {
    acceptedConn: 0,
    maxListenQueue: 0,
    maxActiveProcesses: 0,
    maxChildrenReached: 0,
    slowRequests: 0,
    terminatedRequests: 0,
    workerDeaths: 0,
    reloads: 0,
    startRetries: 0,
    recycledMaxRequests: 0,
    recycledMaxRss: 0,
    reloadedWorkers: 0,
    queuedRequests: 0,
    movedRequests: 0,
    queueWaitMs: 0,
  }
  /** Counted by whoever talks to the workers (the Python bridge's connections). */
  readonly traffic = { framesSent: 0, framesReceived: 0 }

  constructor(
    readonly command: WorkerCommand,
    readonly settings: PoolSettings,
    readonly log: Logger,
    private readonly hooks: WorkerPoolHooks = {},
  ) {
    this.dir = makeRunDir('gh-pool-', command.identity)
    this.retryDelay = settings.crash_retry
  }

  /** The crash loop that stopped the pool (it tries again every crash_retry, doubling), or null. */
  get failure(): GatehouseError | null {
    return this.failed
  }

  /** Closing or closed: replaced by a reload, or the server is stopping. */
  get isClosing(): boolean {
    return this.closing
  }

  /**
   * Start the initial workers (static: max_children, dynamic: start_servers, ondemand: none)
   * and resolve when they accept connections. Rejects with GH_ERR_WORKER_START when the
   * command cannot be started or its workers keep dying (crash loop).
   */
  start(): Promise<void> {
    if (this.started) return this.readyPromise(this.generation)
    this.started = true
    pools.add(this)
    installExitHook()
    this.maintenance = setInterval(() => this.maintain(true), MAINTENANCE_MS)
    this.maintenance.unref()
    const ready = this.readyPromise(this.generation)
    for (let i = 0; i < this.initialCount(); i++) this.spawn()
    this.log.info(
      { pool: this.settings.name, pm: this.settings.mode, max_children: this.settings.max_children },
      'worker pool started',
    )
    return ready
  }

  /**
   * A worker for one request: an idle one (the least loaded when capacity > 1), a new one
   * when the mode allows, or the first to come free, waiting in a bounded queue. Rejects
   * with GH_ERR_OVERLOADED (503, Retry-After) past the queue or queue_timeout, with
   * GH_ERR_WORKER_START when the pool stopped after a crash loop, or with the signal's reason.
   * `info.choice` weighs the workers beyond their leases; when it finds every worker full
   * (and no other can be started), GH_ERR_OVERLOADED at once.
   */
  acquire(info: RequestInfo, signal?: CancelLike): Promise<WorkerLease> {
    if (signal?.aborted) return Promise.reject(signal.reason)
    if (this.closing)
      return Promise.reject(
        new GatehouseError('GH_ERR_OVERLOADED', `pool ${this.settings.name}: shutting down`),
      )
    if (this.failed) return Promise.reject(this.failed)
    if (!this.started) void this.start().catch(() => {})
    if (info.choice?.full && this.allFull(info.choice))
      return Promise.reject(
        new GatehouseError(
          'GH_ERR_OVERLOADED',
          `pool ${this.settings.name}: every worker ${info.choice.fullReason ?? 'is full'}`,
          { retryAfter: 1 },
        ),
      )
    const worker = this.waiters.length === 0 ? this.pick(info.choice) : undefined
    if (worker) {
      this.atMaxChildren = false
      return Promise.resolve(this.lease(worker, info))
    }
    const s = this.settings
    if (this.waiters.length >= s.queue) {
      return Promise.reject(
        new GatehouseError(
          'GH_ERR_OVERLOADED',
          `pool ${s.name}: every worker is busy and ${this.waiters.length} requests wait (queue full)`,
          { retryAfter: 1 },
        ),
      )
    }
    const leased = this.waiters.wait(info, signal, s.queue_timeout, this.queueTimeoutError)
    if (this.waiters.length > this.counters.maxListenQueue) this.counters.maxListenQueue = this.waiters.length
    this.maintain(false)
    return leased
  }

  /**
   * acquire() when it grants at once (the pool started, nobody waits, a worker has room):
   * the lease, without a promise; undefined when acquire() is needed (issue 13: the common
   * case under light load costs no promise). Never for a `choice` (WebSockets).
   */
  tryAcquire(info: RequestInfo): WorkerLease | undefined {
    if (this.closing || this.failed || !this.started || this.waiters.length > 0 || info.choice)
      return undefined
    const worker = this.pick()
    if (!worker) return undefined
    this.atMaxChildren = false
    return this.lease(worker, info)
  }

  /**
   * Replace every worker, without loss. `rolling` (reload_strategy's default): reload_surge
   * new workers at a time beside the old ones; each one ready retires an old one (which
   * finishes what it holds), so the pool never holds more than its workers + reload_surge
   * (issue 18 item 10: a whole second generation OOM-kills a one-worker pod). `generation`:
   * a whole new generation starts, new requests go to it once it is ready, the old one
   * drains. Either way, if the first new workers cannot start (a broken php.ini, an app that
   * does not import), the old ones keep serving and this rejects with GH_ERR_WORKER_START.
   * Resolves once every old worker is retired.
   */
  async reload(): Promise<void> {
    if (this.closing) return
    if (!this.started) return this.start()
    this.counters.reloads++
    this.forgetStartFailures()
    const wasFailed = this.failed
    this.failed = null
    this.failures = 0
    this.neverReady = 0
    this.clearRetry()
    clearTimeout(this.respawnTimer)
    this.respawnTimer = undefined
    const previous = this.generation
    const generation = ++this.generation
    const s = this.settings
    let due = 0
    if (s.reload_strategy === 'rolling') {
      for (const w of this.workers) {
        // A starting old worker is retired once ready (workerReady), not replaced.
        if (w.generation < generation && w.phase === 'ready' && !w.retiring) {
          w.kept = false
          w.due = true
          this.counters.reloadedWorkers++
          due++
        }
      }
    }
    this.log.info(
      { pool: s.name, generation, strategy: due > 0 ? 'rolling' : 'generation' },
      due > 0
        ? `reloading: replacing ${due} workers, ${s.reload_surge} at a time`
        : 'reloading: starting new workers',
    )
    // Rolling: the first replacements must start before any old worker is retired.
    const ready = this.readyPromise(generation, due > 0 ? Math.min(due, s.reload_surge) : undefined)
    if (due > 0) this.replaceDue()
    else for (let i = 0; i < this.initialCount(); i++) this.spawn()
    // ondemand: no new worker is due until a request needs one; queued requests get one now.
    this.maintain(false)
    try {
      await ready
    } catch (err) {
      if (this.closing) throw err
      // The new generation cannot start (a broken php.ini, say): the old one keeps serving.
      for (const w of this.workers) {
        if (w.generation === generation) this.stopWorker(w)
        else w.due = false
      }
      this.generation = previous
      this.failed = null
      this.failures = 0
      this.clearRetry()
      clearTimeout(this.respawnTimer)
      this.respawnTimer = undefined
      if (wasFailed && !this.current().some((w) => w.phase === 'ready')) {
        // Failed before and nothing serves: still failed, and still trying again.
        this.failed = wasFailed
        this.scheduleRetry()
        throw err
      }
      this.log.error({ pool: s.name, generation: previous }, 'reload failed: the old workers keep serving')
      this.maintain(false)
      this.dispatch()
      throw err
    }
    if (due > 0) {
      await new Promise<void>((resolve) => {
        this.rollWaiters.push({ generation, resolve })
        this.checkRolled()
      })
      this.log.info({ pool: s.name, generation }, 'reloaded: every old worker replaced')
      return
    }
    // Old workers take no new requests; each stops once it has finished what it holds.
    for (const w of this.workers) {
      if (w.generation >= generation) continue
      if (!w.retiring) this.counters.reloadedWorkers++
      this.retire(w)
    }
    this.dispatch()
    this.log.info({ pool: s.name, generation }, 'reloaded: old workers drained')
  }

  /**
   * Stop: refuse new requests, let the leases in flight end within `graceMs`, then
   * stop_signal -> SIGTERM -> SIGKILL (process_control_timeout apart). Resolves when every
   * worker has been reaped and the socket directory is gone.
   */
  close(graceMs: number): Promise<void> {
    if (this.closed) return this.closed
    this.closing = true
    for (const rw of this.rollWaiters.splice(0)) rw.resolve()
    clearInterval(this.maintenance)
    clearTimeout(this.respawnTimer)
    this.clearRetry()
    this.waiters.rejectAll(
      () => new GatehouseError('GH_ERR_OVERLOADED', `pool ${this.settings.name}: shutting down`),
    )
    this.failStart(
      new GatehouseError('GH_ERR_WORKER_START', `pool ${this.settings.name}: closed while starting`),
    )
    this.closed = (async () => {
      const busy = [...this.workers].filter((w) => w.leases.size > 0)
      for (const w of this.workers) if (w.leases.size === 0) this.stopWorker(w)
      if (busy.length > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, graceMs)
          timer.unref()
          void Promise.all(busy.map((w) => this.idleOrGone(w))).then(() => {
            clearTimeout(timer)
            resolve()
          })
        })
      }
      for (const w of this.workers) this.stopWorker(w)
      await Promise.all([...this.workers].map((w) => w.exited))
      pools.delete(this)
      rmSync(this.dir, { recursive: true, force: true })
    })()
    return this.closed
  }

  /** php-fpm's status figures and the per-worker list. */
  status(): PoolStatus {
    const now = performance.now()
    let idle = 0
    let active = 0
    const workers: WorkerStatus[] = []
    for (const w of this.workers) {
      const running = w.leases.size > 0
      if (running) active++
      else if (w.phase === 'ready' && !w.retiring) idle++
      const last = w.last
      workers.push({
        pid: w.pid,
        workerId: w.id,
        generation: w.generation,
        state:
          w.phase === 'starting'
            ? 'Starting'
            : running
              ? 'Running'
              : w.phase === 'stopping' || w.retiring
                ? 'Finishing'
                : 'Idle',
        startTime: Math.floor(w.startedAt / 1000),
        requests: w.requests,
        active: w.leases.size,
        requestDuration: last
          ? last.duration >= 0
            ? last.duration
            : Math.round((now - last.start) * 1000)
          : 0,
        requestMethod: last?.method ?? '-',
        requestUri: last?.uri ?? '-',
        contentLength: last?.contentLength ?? 0,
        script: last?.script || '-',
        lastRequestMemory: rssOf(w.pid),
      })
    }
    return {
      pool: this.settings.name,
      kind: this.settings.kind,
      processManager: this.settings.mode,
      startTime: Math.floor(this.startTime / 1000),
      startSince: Math.floor((Date.now() - this.startTime) / 1000),
      acceptedConn: this.counters.acceptedConn,
      listenQueue: this.waiters.length,
      maxListenQueue: this.counters.maxListenQueue,
      listenQueueLen: this.settings.queue,
      idleProcesses: idle,
      activeProcesses: active,
      totalProcesses: this.workers.size,
      maxActiveProcesses: this.counters.maxActiveProcesses,
      maxChildrenReached: this.counters.maxChildrenReached,
      slowRequests: this.counters.slowRequests,
      terminatedRequests: this.counters.terminatedRequests,
      workerDeaths: this.counters.workerDeaths,
      reloads: this.counters.reloads,
      failed: this.failed !== null,
      failedReason: this.failed?.message ?? null,
      nextRetry: this.nextRetryAt === null ? null : Math.ceil(this.nextRetryAt / 1000),
      startRetries: this.counters.startRetries,
      recycledMaxRequests: this.counters.recycledMaxRequests,
      recycledMaxRss: this.counters.recycledMaxRss,
      reloadedWorkers: this.counters.reloadedWorkers,
      queuedRequests: this.counters.queuedRequests,
      movedRequests: this.counters.movedRequests,
      queueWaitMs: this.counters.queueWaitMs,
      framesSent: this.traffic.framesSent,
      framesReceived: this.traffic.framesReceived,
      workers: workers.sort((a, b) => a.workerId - b.workerId),
    }
  }

  /**
   * Call `listener` with a worker's id when the pool starts stopping it (recycled, idle,
   * drained, closing): a client holding idle connections to it closes them now, since a
   * worker such as php-cgi finishes its kept-alive connection before it exits.
   */
  onWorkerStopping(listener: (workerId: number) => void): void {
    this.stoppingListeners.push(listener)
  }

  /** SIGKILL every worker now (see killAllWorkers). */
  killAll(): void {
    for (const w of this.workers) w.kill('SIGKILL')
    rmSync(this.dir, { recursive: true, force: true })
  }

  // --- dispatch -------------------------------------------------------------------------

  /**
   * A ready worker with room: the least loaded, and of those the one idle the shortest time.
   * A request is pipelined (made to wait on a worker whose threads are all busy) only onto a
   * worker that is making progress: behind a stuck request it would share its fate.
   * With a `choice`, its full workers are passed over and its load counts first (the fewest
   * open WebSockets), then the leases.
   */
  private pick(choice?: WorkerChoice): Worker | undefined {
    let best: Worker | undefined
    let bestLoad = 0
    const { capacity, parallel, stall_timeout } = this.settings
    const stalledBefore = stall_timeout > 0 ? performance.now() - stall_timeout : -Infinity
    for (const w of this.workers) {
      if (!takesWork(w) || w.leases.size >= capacity) continue
      if (w.leases.size >= parallel && w.lastProgress < stalledBefore) continue
      if (choice?.full?.(w.id)) continue
      const load = choice ? choice.load(w.id) : 0
      // A worker due for replacement serves only when no other one of the same load can.
      if (
        !best ||
        load < bestLoad ||
        (load === bestLoad &&
          (w.leases.size < best.leases.size ||
            (w.leases.size === best.leases.size &&
              (best.due !== w.due ? best.due : w.idleSince > best.idleSince))))
      ) {
        best = w
        bestLoad = load
      }
    }
    return best
  }

  /** Every worker that serves or will is full for `choice`, and no other may be started. */
  private allFull(choice: WorkerChoice): boolean {
    const live = this.current()
    return live.length >= this.settings.max_children && live.every((w) => choice.full!(w.id))
  }

  private lease(w: Worker, info: RequestInfo): Lease<Worker> {
    const s = this.settings
    const lease = new Lease(w, info, this.releaseLease, s.ordered ? s.parallel : Infinity)
    const pipelined = s.ordered && w.leases.size >= s.parallel
    if (w.leases.size === 0) w.lastProgress = performance.now()
    w.leases.add(lease)
    info.choice?.taken(w.id)
    const note = info.upstream
    if (note) {
      note.pool = s.name
      note.pid = w.pid
      note.start = lease.start
      note.end = undefined
    }
    if (pipelined && s.stall_timeout > 0 && info.movable) this.moveIfStalled(lease, s.stall_timeout)
    if (pipelined && s.stall_timeout > 0 && s.queue_timeout > 0) {
      // The queue's promise holds on the worker too: a request still waiting there (not
      // started) at queue_timeout is taken back with 503, as it would be from the queue.
      this.takeBackDeadlines ??= new Deadlines(s.queue_timeout)
      lease.timers.push(
        this.takeBackDeadlines.add(() => {
          if (!lease.mayHaveStarted) lease.abort(this.queueTimeoutError())
        }),
      )
    }
    w.requests++
    w.last = {
      method: info.method,
      uri: info.uri,
      contentLength: info.contentLength ?? 0,
      script: info.script ?? '',
      start: lease.start,
      duration: -1,
    }
    this.counters.acceptedConn++
    let active = 0
    for (const x of this.workers) if (x.leases.size > 0) active++
    if (active > this.counters.maxActiveProcesses) this.counters.maxActiveProcesses = active
    if (s.request_slowlog_timeout > 0) {
      this.slowlogDeadlines ??= new Deadlines(s.request_slowlog_timeout)
      lease.timers.push(
        this.slowlogDeadlines.add(() => {
          this.counters.slowRequests++
          this.log.warn(
            {
              pool: s.name,
              worker: w.pid,
              method: info.method,
              uri: info.uri,
              duration_ms: Math.round(performance.now() - lease.start),
            },
            `slow request: still running after ${s.request_slowlog_timeout} ms (request_slowlog_timeout)`,
          )
        }),
      )
    }
    if (s.request_terminate_timeout > 0) {
      this.terminateDeadlines ??= new Deadlines(s.request_terminate_timeout)
      lease.timers.push(this.terminateDeadlines.add(() => this.terminate(lease)))
    }
    return lease
  }

  /**
   * A movable request pipelined onto a worker: checked every stall_timeout while it waits
   * there unstarted; once the worker has sent nothing for stall_timeout (stuck behind a slow
   * request) and another worker has a thread free, the lease ends with LeaseMoved and the
   * holder sends it to another worker. So a deep pipeline costs a request behind a stuck one
   * about stall_timeout, not queue_timeout and a 503.
   */
  private moveIfStalled(lease: Lease<Worker>, stallTimeout: number): void {
    this.stallDeadlines ??= new Deadlines(stallTimeout)
    const slot = lease.timers.length
    const check = (): void => {
      if (lease.released || lease.aborted || lease.mayHaveStarted) return
      const w = lease.worker
      if (performance.now() - w.lastProgress >= stallTimeout && this.freeBesides(w)) {
        this.counters.movedRequests++
        lease.abort(new LeaseMoved(w.pid))
      } else lease.timers[slot] = this.stallDeadlines!.add(check)
    }
    lease.timers.push(this.stallDeadlines.add(check))
  }

  /**
   * Another worker has a thread free now: a moved request would start at once. Under
   * overload (none free) nothing is moved: a worker slowed by a busy machine is not stuck,
   * and moving its queue would only add work (and, at the instant it catches up, a second
   * run of a request).
   */
  private freeBesides(stalled: Worker): boolean {
    const { parallel } = this.settings
    for (const w of this.workers) if (w !== stalled && takesWork(w) && w.leases.size < parallel) return true
    return false
  }

  private terminate(lease: Lease<Worker>): void {
    const w = lease.worker
    const s = this.settings
    this.counters.terminatedRequests++
    const reason = new GatehouseError(
      'GH_ERR_WORKER_TIMEOUT',
      `pool ${s.name}: ${lease.info.method} ${lease.info.uri} ran past ${s.request_terminate_timeout} ms; worker pid ${w.pid} killed`,
    )
    this.log.error(
      {
        pool: s.name,
        worker: w.pid,
        method: lease.info.method,
        uri: lease.info.uri,
        duration_ms: Math.round(performance.now() - lease.start),
      },
      `request terminated: past request_terminate_timeout (${s.request_terminate_timeout} ms); killing its worker`,
    )
    w.retiring = true
    w.expected = true
    w.killReason = reason
    // What waits behind the stuck request has not started, and never will on this worker.
    for (const other of w.leases) other.freezeStarted()
    lease.abort(reason)
    if (w.phase === 'stopping') {
      w.kill('SIGKILL')
      return
    }
    w.phase = 'stopping'
    if (s.dump_signal)
      w.timers.push(
        ...escalate(w.pid, [
          [s.dump_signal, 0],
          ['SIGKILL', DUMP_GRACE_MS],
        ]),
      )
    else w.kill('SIGKILL')
    this.maintain(false)
  }

  /** Hand free workers to waiting requests, in order. */
  private dispatch(): void {
    while (this.waiters.length > 0) {
      const w = this.pick(this.waiters.first?.choice)
      if (!w) break
      const waiter = this.waiters.shift()!
      this.counters.queuedRequests++
      this.counters.queueWaitMs += performance.now() - waiter.since
      waiter.resolve(this.lease(w, waiter.data))
    }
    if (this.waiters.length === 0) this.atMaxChildren = false
  }

  /** Called by WorkerLease.release. */
  private released(lease: Lease<Worker>, outcome: ReleaseOutcome): void {
    const w = lease.worker
    if (w.last && w.last.start === lease.start)
      w.last.duration = Math.round((performance.now() - lease.start) * 1000)
    if (!w.leases.delete(lease)) return // the worker is gone already
    if (!outcome.failed && !lease.aborted) {
      this.failures = 0
      this.retryDelay = this.settings.crash_retry
    }
    if (w.leases.size === 0) w.idleSince = performance.now()
    if (outcome.recycle || outcome.failed) {
      this.retire(w)
      this.maintain(false)
    } else if (w.retiring) this.retire(w)
    else if (w.requests >= w.limit) {
      if (this.replaceLater(w)) {
        this.counters.recycledMaxRequests++
        this.log.debug(
          { pool: this.settings.name, worker: w.pid, requests: w.requests },
          'max_requests reached: recycling',
        )
      }
    } else if (
      this.settings.max_rss > 0 &&
      !w.due &&
      w.leases.size === 0 &&
      performance.now() - w.lastMeasured >= RSS_CHECK_INTERVAL_MS
    )
      void this.measure(w)
    this.dispatch()
    if (this.closing) this.notifyIdle(w)
  }

  /** max_rss: look at the worker's memory before it takes the next request. */
  private async measure(w: Worker): Promise<void> {
    w.measuring = true
    w.lastMeasured = performance.now()
    const rss = await readRss(w.pid)
    w.measuring = false
    if (rss > this.settings.max_rss && w.phase === 'ready' && this.replaceLater(w)) {
      this.counters.recycledMaxRss++
      this.log.info(
        { pool: this.settings.name, worker: w.pid, rss, max_rss: this.settings.max_rss },
        'worker above max_rss: recycling',
      )
    }
    this.dispatch()
  }

  // --- process management ---------------------------------------------------------------

  private initialCount(): number {
    const s = this.settings
    if (s.mode === 'static') return s.max_children
    if (s.mode === 'dynamic') return s.start_servers
    return 0
  }

  /**
   * Workers that count against max_children: the current generation's and those due for
   * replacement (they serve until their replacement is ready), not stopping.
   */
  private current(): Worker[] {
    return [...this.workers].filter(
      (w) => (w.generation === this.generation || w.due) && w.phase !== 'stopping' && !w.retiring,
    )
  }

  /**
   * Bring the worker count to what the mode wants. `tick`: the once-a-second round (spare
   * servers, idle timeouts), otherwise only what cannot wait (static refill, queued requests).
   */
  private maintain(tick: boolean): void {
    if (this.closing || this.failed || !this.started) return
    this.replaceDue()
    const s = this.settings
    const current = this.current()
    const now = performance.now()
    if (tick) {
      if (s.mode === 'ondemand') {
        for (const w of current)
          if (w.phase === 'ready' && w.leases.size === 0 && now - w.idleSince > s.process_idle_timeout) {
            this.log.debug({ pool: s.name, worker: w.pid }, 'idle past process_idle_timeout: stopping')
            this.retire(w)
          }
      } else if (s.mode === 'dynamic') {
        const idle = current.filter((w) => w.phase === 'ready' && w.leases.size === 0)
        if (idle.length > s.max_spare_servers) {
          // php-fpm stops one (the oldest idle) per round.
          const oldest = idle.reduce((a, b) => (a.idleSince <= b.idleSince ? a : b))
          this.retire(oldest)
        } else {
          const starting = current.filter((w) => w.phase === 'starting').length
          const short = s.min_spare_servers - idle.length - starting
          if (short > 0 && this.respawnTimer === undefined) {
            const room = s.max_children - current.length
            if (room <= 0) this.reachedMaxChildren()
            const n = Math.min(this.spawnRate, short, room)
            for (let i = 0; i < n; i++) this.spawn()
            if (n < short) this.spawnRate = Math.min(this.spawnRate * 2, s.max_spawn_rate)
          } else this.spawnRate = 1
        }
      }
    }
    if (this.respawnTimer !== undefined) return
    const live = this.current()
    if (s.mode === 'static') {
      for (let n = live.length; n < s.max_children; n++) this.spawn()
      return
    }
    if (s.mode === 'dynamic') {
      const spare = live.filter((w) => w.phase === 'starting' || w.leases.size === 0).length
      // Below min spare right after an exit: refill now rather than at the next round.
      if (!tick && spare < s.min_spare_servers)
        for (let n = live.length; n < s.max_children && n - live.length < s.min_spare_servers - spare; n++)
          this.spawn()
    }
    const waiting = this.waiters.length
    if (waiting > 0) {
      const starting = this.current().filter((w) => w.phase === 'starting').length
      let want = waiting - starting
      let count = this.current().length
      while (want > 0 && count < s.max_children) {
        this.spawn()
        want--
        count++
      }
      if (want > 0 && count >= s.max_children) this.reachedMaxChildren()
    }
  }

  private reachedMaxChildren(): void {
    if (this.atMaxChildren || this.settings.mode === 'static') return
    this.atMaxChildren = true
    this.counters.maxChildrenReached++
    this.log.warn(
      { pool: this.settings.name, max_children: this.settings.max_children },
      `[pool ${this.settings.name}] server reached max_children setting (${this.settings.max_children}), consider raising it`,
    )
  }

  private spawn(): Worker {
    const s = this.settings
    const id = this.nextWorkerId++
    const socketPath = join(this.dir, `w${id}.sock`)
    const limit =
      s.max_requests > 0 ? s.max_requests + Math.floor(Math.random() * (s.max_requests_jitter + 1)) : Infinity
    let resolveExited!: () => void
    const worker: Worker = {
      id,
      generation: this.generation,
      pid: 0,
      socketPath,
      phase: 'starting',
      retiring: false,
      due: false,
      replacement: false,
      kept: false,
      measuring: false,
      leases: new Set(),
      requests: 0,
      limit,
      startedAt: Date.now(),
      spawnedAt: performance.now(),
      idleSince: performance.now(),
      lastProgress: performance.now(),
      lastMeasured: -Infinity,
      last: null,
      expected: false,
      killReason: null,
      timers: [],
      exited: new Promise((resolve) => (resolveExited = resolve)),
      kill: (signal) => {
        if (worker.pid > 0) signalGroup(worker.pid, signal)
      },
    }
    this.workers.add(worker)
    worker.pid = spawnWorker(this.command, socketPath, {
      onLine: (stream, line) => {
        const failure = stream === 'stderr' ? this.hooks.startFailure?.(line) : null
        if (failure) this.startFailed(worker, failure)
        else this.log.warn({ pool: s.name, worker: worker.pid, stream }, line.slice(0, 4096))
      },
      onGone: (code, signal, err) => {
        this.exited(worker, code, signal, err)
        resolveExited()
      },
    })
    if (worker.pid > 0) void this.probe(worker)
    return worker
  }

  /** Log a start failure once per start attempt; a worker failing alike gets one short line. */
  private startFailed(w: Worker, failure: StartFailure): void {
    this.lastStartFailure = failure
    const key = `${failure.message}\n${failure.traceback}`
    const first = this.startFailures.get(key)
    if (first !== undefined) {
      this.log.warn(
        { pool: this.settings.name, worker: w.pid },
        `same ${failure.traceback ? 'traceback' : 'start failure'} as worker ${first}`,
      )
      return
    }
    this.startFailures.set(key, w.pid)
    this.log.error(
      {
        pool: this.settings.name,
        worker: w.pid,
        ...(failure.traceback ? { traceback: failure.traceback } : {}),
      },
      failure.message,
    )
  }

  private forgetStartFailures(): void {
    this.startFailures.clear()
    this.lastStartFailure = null
  }

  /** A worker is ready when its socket accepts a connection. */
  private async probe(w: Worker): Promise<void> {
    const outcome = await probeSocket(w.socketPath, this.settings.ready_timeout, () => w.phase === 'starting')
    if (outcome === 'ready') {
      w.phase = 'ready'
      w.idleSince = performance.now()
      this.log.debug({ pool: this.settings.name, worker: w.pid, worker_id: w.id }, 'worker ready')
      this.workerReady(w)
    } else if (outcome === 'late') {
      this.log.error(
        { pool: this.settings.name, worker: w.pid, socket: w.socketPath },
        `worker did not accept connections within ${this.settings.ready_timeout} ms (ready_timeout); killing it`,
      )
      w.phase = 'stopping'
      w.kill('SIGKILL')
    }
  }

  private workerReady(w: Worker): void {
    this.neverReady = 0
    this.forgetStartFailures()
    if (w === this.trial) this.recovered(w)
    this.checkStarted()
    if (w.generation < this.generation) this.retire(w)
    else if (w.replacement) {
      w.replacement = false
      // The replacement is ready: a due worker (the least busy) goes; more may start now.
      let old: Worker | undefined
      for (const x of this.workers)
        if (x.due && !x.retiring && x.phase !== 'stopping' && (!old || x.leases.size < old.leases.size))
          old = x
      if (old) {
        this.log.debug(
          { pool: this.settings.name, worker: old.pid, replacement: w.pid },
          'replacement ready: retiring the worker it replaces',
        )
        this.retire(old)
      } else if (this.settings.mode === 'static' && this.current().length > this.settings.max_children)
        this.retire(w)
      this.replaceDue()
    }
    this.dispatch()
  }

  /**
   * A worker past max_requests or max_rss: it serves on until its replacement is ready.
   * False when it is already due, kept (its replacements could not start) or going.
   */
  private replaceLater(w: Worker): boolean {
    if (w.due || w.kept || w.retiring || w.phase === 'stopping') return false
    w.due = true
    this.replaceDue()
    return true
  }

  /**
   * Start replacements for due workers (issue 18 item 10): at most reload_surge workers
   * beyond the serving ones exist at once, counting replacements still starting and retired
   * workers not yet gone, so a reload or a wave of max_requests recycles never holds twice
   * the pool. A retired worker still finishing a long request holds its place in the surge.
   */
  private replaceDue(): void {
    if (this.closing || this.failed || !this.started) return
    let due = 0
    let starting = 0
    let extra = 0
    for (const w of this.workers) {
      if (w.phase === 'stopping' || w.retiring) extra++
      else if (w.replacement) starting++
      else if (w.due) due++
    }
    if (this.respawnTimer === undefined) {
      const room = this.settings.reload_surge - extra - starting
      for (let i = 0; i < Math.min(room, due - starting); i++) this.spawn().replacement = true
    }
    this.checkRolled()
  }

  /** Resolve the rolling reloads no worker of an older generation serves for any more. */
  private checkRolled(): void {
    if (this.rollWaiters.length === 0) return
    let oldest = Infinity
    for (const w of this.workers)
      if (w.phase !== 'stopping' && !w.retiring && w.generation < oldest) oldest = w.generation
    for (const rw of [...this.rollWaiters]) {
      if (rw.generation <= oldest) {
        this.rollWaiters.splice(this.rollWaiters.indexOf(rw), 1)
        rw.resolve()
      }
    }
  }

  private readyPromise(generation: number, need = this.initialCount()): Promise<void> {
    return new Promise((resolve, reject) => {
      this.startWaiters.push({ generation, need, resolve, reject })
      this.checkStarted()
    })
  }

  private checkStarted(): void {
    for (const sw of [...this.startWaiters]) {
      let ready = 0
      for (const w of this.workers) if (w.generation === sw.generation && w.phase === 'ready') ready++
      if (ready >= sw.need || sw.generation < this.generation) {
        this.startWaiters.splice(this.startWaiters.indexOf(sw), 1)
        sw.resolve()
      }
    }
  }

  private failStart(err: GatehouseError): void {
    for (const sw of this.startWaiters.splice(0)) sw.reject(err)
  }

  /** Take a worker out of dispatch; stop it once it holds no lease. */
  private retire(w: Worker): void {
    w.retiring = true
    if (w.leases.size === 0) this.stopWorker(w)
  }

  private stopWorker(w: Worker): void {
    w.retiring = true
    w.expected = true
    if (w.phase === 'stopping') return
    w.phase = 'stopping'
    if (w.pid === 0) return
    for (const listener of this.stoppingListeners) listener(w.id)
    const s = this.settings
    w.timers.push(
      ...escalate(w.pid, [
        [s.stop_signal, 0],
        ['SIGTERM', s.process_control_timeout],
        ['SIGKILL', 2 * s.process_control_timeout],
      ]),
    )
  }

  private idleOrGone(w: Worker): Promise<void> {
    if (w.leases.size === 0) return Promise.resolve()
    return new Promise((resolve) => {
      ;(w as Worker & { onIdle?: () => void }).onIdle = resolve
      void w.exited.then(resolve)
    })
  }

  private notifyIdle(w: Worker): void {
    if (w.leases.size === 0) (w as Worker & { onIdle?: () => void }).onIdle?.()
  }

  private exited(w: Worker, code: number | null, signal: NodeJS.Signals | null, err?: Error): void {
    const s = this.settings
    this.workers.delete(w)
    for (const t of w.timers) clearTimeout(t)
    rmSync(w.socketPath, { force: true })
    // Whatever the worker started dies with it: no orphans left behind in its group.
    if (w.pid > 0) signalGroup(w.pid, 'SIGKILL')
    if (w === this.trial) {
      this.trial = null
      if (this.failed && !this.closing) {
        this.log.error(
          { pool: s.name, worker: w.pid, command: this.command.command },
          `pool still failed: the worker started to try again ${err ? `cannot start: ${err.message}` : signal ? `was killed by ${signal}` : `exited with status ${code}`}${this.lastStartFailure ? ` (${this.lastStartFailure.message})` : ''}`,
        )
        this.scheduleRetry()
        return
      }
    }
    const reason =
      w.killReason ??
      new GatehouseError(
        'GH_ERR_WORKER_DIED',
        `pool ${s.name}: worker pid ${w.pid} exited (${signal ? `signal ${signal}` : `status ${code}`})`,
      )
    for (const lease of w.leases) {
      for (const t of lease.timers) t.cancel()
      lease.abort(reason)
    }
    w.leases.clear()
    const how = err
      ? `cannot start: ${err.message}`
      : signal
        ? `killed by ${signal}`
        : `exited with status ${code}`
    if (w.expected || this.closing) {
      this.log.debug({ pool: s.name, worker: w.pid }, `worker ${how}`)
    } else {
      this.counters.workerDeaths++
      const lived = performance.now() - w.spawnedAt
      if (lived < CRASH_WINDOW_MS) this.failures++
      if (w.phase === 'starting') this.neverReady++
      const streak = Math.max(this.failures, this.neverReady)
      this.log.warn(
        { pool: s.name, worker: w.pid, command: this.command.command, lived_ms: Math.round(lived) },
        `worker ${how} unexpectedly`,
      )
      if (streak >= CRASH_LOOP_EXITS && w.generation === this.generation) {
        this.crashLoop(how, streak)
        return
      }
      if (streak > 1 && this.respawnTimer === undefined) {
        const delay = Math.min(100 * 2 ** (streak - 2), 10_000)
        this.respawnTimer = setTimeout(() => {
          this.respawnTimer = undefined
          this.maintain(false)
        }, delay)
        // While start() waits, the timer keeps the process alive, so a crash loop at start is
        // reported (exit 1) instead of the event loop emptying with nothing listening.
        if (this.startWaiters.length === 0) this.respawnTimer.unref()
      }
    }
    if (this.closing) return
    this.maintain(false)
    this.dispatch()
    this.checkRolled()
  }

  private crashLoop(how: string, streak: number): void {
    const s = this.settings
    this.neverReady = 0
    const err = new GatehouseError(
      'GH_ERR_WORKER_START',
      `pool ${s.name}: ${this.lastStartFailure ? `${this.lastStartFailure.message}; ` : ''}${this.command.command} ${how}, ${streak} workers in a row died without serving a request; respawning stopped`,
    )
    clearTimeout(this.respawnTimer)
    this.respawnTimer = undefined
    const reloading = this.startWaiters.some((sw) => sw.generation === this.generation)
    // Past a rolling reload's first replacements (or in a recycle), replacements that cannot
    // start leave the workers they were to replace serving: those are kept, as a failed
    // reload keeps the old generation, rather than the pool failing with workers alive.
    const replaced = [...this.workers].filter((w) => w.due && w.phase === 'ready' && !w.retiring)
    if (!reloading && replaced.length > 0) {
      for (const w of replaced) {
        w.due = false
        w.kept = true
        w.generation = this.generation
      }
      this.failures = 0
      this.log.error(
        { pool: s.name, command: this.command.command, args: this.command.args },
        `${err.message}; the ${replaced.length} workers they were to replace keep serving (not recycled) until the next reload`,
      )
      this.checkRolled()
      this.dispatch()
      return
    }
    this.failed = err
    this.log.error({ pool: s.name, command: this.command.command, args: this.command.args }, err.message)
    // During a reload (its first new workers awaited) the old generation still serves:
    // waiters stay for it. Otherwise, with no worker to keep, the pool fails.
    const fallback =
      reloading &&
      [...this.workers].some((w) => w.generation < this.generation && w.phase === 'ready' && !w.retiring)
    if (!fallback) this.waiters.rejectAll(() => err)
    this.failStart(err)
    // A reload's new generation that cannot start is undone by reload(); otherwise try again later.
    if (!fallback) this.scheduleRetry()
  }

  /**
   * While failed: try one worker again after crash_retry, then twice as long each time it
   * fails, up to crash_retry_max. The pool answers 503 meanwhile; once that worker accepts
   * connections the pool serves again (issue 18: the crash-loop guard never retried).
   */
  private scheduleRetry(): void {
    const s = this.settings
    if (this.closing || !this.failed || s.crash_retry <= 0 || this.retryTimer !== undefined) return
    const delay = this.retryDelay
    this.retryDelay = Math.min(delay * 2, s.crash_retry_max)
    this.nextRetryAt = Date.now() + delay
    this.log.warn(
      { pool: s.name, retry_ms: delay },
      `pool failed: trying to start a worker again in ${delay} ms`,
    )
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      this.nextRetryAt = null
      if (this.closing || !this.failed) return
      this.counters.startRetries++
      // A new attempt: its failure is logged in full again (once per back-off, not per worker).
      this.forgetStartFailures()
      this.trial = this.spawn()
    }, delay)
    this.retryTimer.unref()
  }

  private clearRetry(): void {
    clearTimeout(this.retryTimer)
    this.retryTimer = undefined
    this.nextRetryAt = null
    if (this.trial) {
      this.trial = null
    }
  }

  /** The worker started to try again is ready: the pool serves again. */
  private recovered(w: Worker): void {
    this.trial = null
    this.failed = null
    this.failures = 0
    this.log.info(
      { pool: this.settings.name, worker: w.pid },
      'pool recovered: a worker started; respawning again',
    )
    this.maintain(false)
  }
}

// --- every live pool --------------------------------------------------------------------

/** Pools added by start() and removed once closed; killAllWorkers() runs on process exit. */
const pools = new Set<WorkerPool>()

/** Every pool started in this process and not yet closed (for the status page). */
export function livePools(): readonly WorkerPool[] {
  return [...pools]
}

/**
 * SIGKILL every worker of every live pool, synchronously: for a process about to exit
 * without its graceful close (a second signal, a crash), so no worker outlives it.
 */
export function killAllWorkers(): void {
  for (const pool of pools) pool.killAll()
}

/** A worker the pool may give a request to (ready, not retiring, not being measured), room aside. */
function takesWork(w: Worker): boolean {
  return w.phase === 'ready' && !w.retiring && !w.measuring
}

let exitHookInstalled = false
function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', killAllWorkers)
}
