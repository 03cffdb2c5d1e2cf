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
import type { Logger } from 'pino'
import { z } from 'zod'
import { strictObject } from '../config/strict.js'
import { duration, size } from '../config/units.js'

/** How a worker is started: execve semantics, no shell, an explicit environment. */
export interface WorkerCommand {
  /** Executable path (absolute, or found on the PATH given in `env`). */
  command: string
  /** Arguments; `{socket}` anywhere in one is replaced with the worker's Unix socket path. */
  args: string[]
  /** The whole environment of the worker (nothing is inherited); `{socket}` is replaced too. */
  env: Record<string, string>
  cwd?: string
}

export type PoolMode = 'static' | 'dynamic' | 'ondemand'

/** PHP-FPM's pool keys (pm.*, request_*), with its meanings; durations in ms, sizes in bytes. */
export interface PoolSettings {
  /** For logs and the status page (php-fpm's pool name, `[www]`). */
  name: string
  /** pm: static (max_children always), dynamic (spares within bounds), ondemand (spawn on demand). */
  mode: PoolMode
  /** pm.max_children: workers at most (per generation). */
  max_children: number
  /** pm.start_servers (dynamic): workers started at first. */
  start_servers: number
  /** pm.min_spare_servers (dynamic): fewer idle workers than this and more are spawned. */
  min_spare_servers: number
  /** pm.max_spare_servers (dynamic): more idle workers than this and the oldest idle is stopped. */
  max_spare_servers: number
  /** pm.max_spawn_rate (dynamic): most workers spawned in one maintenance round (the rate doubles up to it). */
  max_spawn_rate: number
  /** pm.process_idle_timeout (ondemand): an idle worker is stopped after this (ms). */
  process_idle_timeout: number
  /** Requests one worker takes at once: 1 for php-cgi, N threads for WSGI, many for ASGI. */
  capacity: number
  /** pm.max_requests: a worker is replaced after this many requests (0: never). */
  max_requests: number
  /** pm.max_requests_jitter: each worker's limit is max_requests + random(0..jitter). */
  max_requests_jitter: number
  /** ms, 0 = off: the worker is killed and the lease aborted with GH_ERR_WORKER_TIMEOUT (504). */
  request_terminate_timeout: number
  /** ms, 0 = off: a slow-request log line (pool, pid, method, URI, duration). */
  request_slowlog_timeout: number
  /** bytes, 0 = off: recycle the worker after a request when its RSS (/proc/PID/status) exceeds this. */
  max_rss: number
  /** Requests that may wait for a worker; one more gets GH_ERR_OVERLOADED (503, Retry-After). */
  queue: number
  /** How long a request may wait for a worker (ms; 0: no limit) before GH_ERR_OVERLOADED. */
  queue_timeout: number
  /** How long a new worker has to accept a connection on its socket (ms). */
  ready_timeout: number
  /** How long a stopping worker gets between stop_signal, SIGTERM and SIGKILL (ms). */
  process_control_timeout: number
  /** The graceful stop signal (php-fpm sends SIGQUIT; php-cgi stops cleanly on SIGTERM). */
  stop_signal: NodeJS.Signals
  /**
   * Sent first when request_terminate_timeout fires (a Python worker prints the stuck
   * traceback on it), then SIGKILL after a short grace. Without it: SIGKILL at once.
   */
  dump_signal?: NodeJS.Signals
}

/** What a lease is for: named in the slow log, the terminate log and the status page. */
export interface RequestInfo {
  method: string
  uri: string
  /** Request body length, for the status page's `content length` (0 when unknown). */
  contentLength?: number
  /** The script run, for the status page's `script` (php: SCRIPT_FILENAME). */
  script?: string
}

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
  /**
   * Give the worker back (exactly once; later calls are ignored). `recycle`: stop this
   * worker and start another; `failed`: the exchange broke in a way that leaves the worker
   * suspect (it is recycled too).
   */
  release(outcome?: { recycle?: boolean; failed?: boolean }): void
}

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
  workers: WorkerStatus[]
}

/** The config keys of a pool (PHP-FPM's names without `pm.`; `pm` is the mode). */
export const poolSettingsShape = {
  pm: z.enum(['static', 'dynamic', 'ondemand']).default('dynamic'),
  max_children: z.number().int().min(1).max(10_000).default(5),
  /** Default as php-fpm's: min_spare + (max_spare - min_spare) / 2. */
  start_servers: z.number().int().min(0).optional(),
  min_spare_servers: z.number().int().min(1).default(1),
  max_spare_servers: z.number().int().min(1).default(3),
  max_spawn_rate: z.number().int().min(1).max(10_000).default(32),
  process_idle_timeout: duration.prefault(10),
  max_requests: z.number().int().min(0).default(0),
  max_requests_jitter: z.number().int().min(0).default(0),
  request_terminate_timeout: duration.prefault(0),
  request_slowlog_timeout: duration.prefault(0),
  max_rss: size.prefault(0),
  queue: z.number().int().min(0).max(1_000_000).default(256),
  queue_timeout: duration.prefault(10),
  ready_timeout: duration.prefault(10),
  process_control_timeout: duration.prefault(5),
}

/** The pool keys validated with php-fpm's rules (fpm_conf.c), every problem at once. */
export function poolSettingsSchema() {
  return strictObject(poolSettingsShape).superRefine((p, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message })
    if (p.pm === 'dynamic') {
      if (p.min_spare_servers > p.max_children) issue('min_spare_servers', 'must not exceed max_children')
      if (p.max_spare_servers > p.max_children) issue('max_spare_servers', 'must not exceed max_children')
      if (p.min_spare_servers > p.max_spare_servers)
        issue('min_spare_servers', 'must not exceed max_spare_servers')
      if (
        p.start_servers !== undefined &&
        p.start_servers !== 0 &&
        (p.start_servers < p.min_spare_servers || p.start_servers > p.max_spare_servers)
      )
        issue('start_servers', 'must be between min_spare_servers and max_spare_servers')
    }
    if (p.pm === 'ondemand' && p.process_idle_timeout <= 0) issue('process_idle_timeout', 'must be above 0')
  })
}

export type PoolConfig = z.output<ReturnType<typeof poolSettingsSchema>>
export type PoolConfigInput = z.input<ReturnType<typeof poolSettingsSchema>>

/** A validated config table -> PoolSettings. */
export function poolSettings(
  name: string,
  config: PoolConfig,
  extra: Partial<Pick<PoolSettings, 'capacity' | 'stop_signal' | 'dump_signal'>> = {},
): PoolSettings {
  const start =
    config.start_servers ||
    config.min_spare_servers + Math.floor((config.max_spare_servers - config.min_spare_servers) / 2)
  return {
    name,
    mode: config.pm,
    max_children: config.max_children,
    start_servers: Math.min(start, config.max_children),
    min_spare_servers: config.min_spare_servers,
    max_spare_servers: config.max_spare_servers,
    max_spawn_rate: config.max_spawn_rate,
    process_idle_timeout: config.process_idle_timeout,
    capacity: extra.capacity ?? 1,
    max_requests: config.max_requests,
    max_requests_jitter: config.max_requests_jitter,
    request_terminate_timeout: config.request_terminate_timeout,
    request_slowlog_timeout: config.request_slowlog_timeout,
    max_rss: config.max_rss,
    queue: config.queue,
    queue_timeout: config.queue_timeout,
    ready_timeout: config.ready_timeout,
    process_control_timeout: config.process_control_timeout,
    stop_signal: extra.stop_signal ?? 'SIGQUIT',
    ...(extra.dump_signal ? { dump_signal: extra.dump_signal } : {}),
  }
}

/**
 * One pool of workers from one command. A Gatehouse holds one per managed route; every
 * live pool is listed by livePools() for the status page.
 */
export class WorkerPool {
  constructor(
    readonly command: WorkerCommand,
    readonly settings: PoolSettings,
    readonly log: Logger,
  ) {}

  /**
   * Start the initial workers (static: max_children, dynamic: start_servers, ondemand: none)
   * and resolve when they accept connections. Rejects with GH_ERR_WORKER_START when the
   * command cannot be started or its workers keep dying (crash loop).
   */
  start(): Promise<void> {
    throw new Error('not implemented')
  }

  /**
   * A worker for one request: an idle one (the least loaded when capacity > 1), a new one
   * when the mode allows, or the first to come free, waiting in a bounded queue. Rejects
   * with GH_ERR_OVERLOADED (503, Retry-After) past the queue or queue_timeout, with
   * GH_ERR_WORKER_START when the pool stopped after a crash loop, or with the signal's reason.
   */
  acquire(_info: RequestInfo, _signal?: AbortSignal): Promise<WorkerLease> {
    throw new Error('not implemented')
  }

  /**
   * Start a new generation of workers and drain the old one: new requests go to new workers
   * once they are ready, old workers finish what they hold and stop. Nothing is dropped.
   */
  reload(): Promise<void> {
    throw new Error('not implemented')
  }

  /**
   * Stop: refuse new requests, let the leases in flight end within `graceMs`, then
   * stop_signal -> SIGTERM -> SIGKILL (process_control_timeout apart). Resolves when every
   * worker has been reaped and the socket directory is gone.
   */
  close(_graceMs: number): Promise<void> {
    throw new Error('not implemented')
  }

  /** php-fpm's status figures and the per-worker list. */
  status(): PoolStatus {
    throw new Error('not implemented')
  }
}

/** Every pool started in this process and not yet closed (for the status page). */
export function livePools(): readonly WorkerPool[] {
  return []
}
