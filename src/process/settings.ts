/*
 * A pool's settings: PHP-FPM's pool keys as config (the schema, validated with php-fpm's
 * rules) and as the PoolSettings a WorkerPool runs with. docs/process-manager.md lists them.
 */
import { z } from 'zod'
import { strictObject } from '../core/schema/strict.js'
import { duration, size } from '../core/schema/units.js'

export type PoolMode = 'static' | 'dynamic' | 'ondemand'

/** PHP-FPM's pool keys (pm.*, request_*), with its meanings; durations in ms, sizes in bytes. */
export interface PoolSettings {
  /** For logs and the status page (php-fpm's pool name, `[www]`). */
  name: string
  /** What the workers run (`php`, `wsgi`, `asgi`): `php` pools keep php-fpm's metric names. */
  kind?: string
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
  /**
   * Requests one worker runs at once (WSGI: its threads); leases past it wait on the worker,
   * pipelined (WSGI's `pipeline`). Default: capacity (nothing waits on a worker).
   */
  parallel: number
  /**
   * ms, 0 = off. A worker running `parallel` requests that has sent nothing for this long is
   * stalled: no request is pipelined onto it, and one already waiting on it that it has not
   * started is answered 503 once queue_timeout has passed (issue 18: a request never waits
   * behind a stuck one while another worker, or the queue's timeout, could answer it).
   */
  stall_timeout: number
  /**
   * The worker starts its requests in the order they were sent, `parallel` at a time (WSGI),
   * so one behind `parallel` running requests has certainly not started and can be taken
   * back. An ASGI worker runs many at once as its loop reads them: Node cannot tell.
   */
  ordered: boolean
  /** pm.max_requests: a worker is replaced after this many requests (0: never). */
  max_requests: number
  /** pm.max_requests_jitter: each worker's limit is max_requests + random(0..jitter). */
  max_requests_jitter: number
  /** ms, 0 = off: the worker is killed and the lease aborted with GH_ERR_WORKER_TIMEOUT (504). */
  request_terminate_timeout: number
  /** ms, 0 = off: a slow-request log line (pool, worker pid, method, URI, duration). */
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
  /**
   * ms, 0 = never: after the crash-loop guard stopped respawning (the pool is failed), try
   * one worker again after this long, doubling each time it fails, up to crash_retry_max.
   */
  crash_retry: number
  /** ms: the longest wait between two tries of a failed pool. */
  crash_retry_max: number
  /**
   * How a reload (SIGUSR2, SIGHUP) replaces the workers. `rolling` (default): reload_surge
   * at a time, each new worker ready before an old one is retired, so the pool never holds
   * more than its workers + reload_surge (issue 18 item 10). `generation`: a whole new
   * generation beside the old one (twice the workers for a moment), switched at once.
   */
  reload_strategy: ReloadStrategy
  /** Workers started beside the pool at once by a rolling reload or a recycle (max_requests, max_rss). */
  reload_surge: number
}

export type ReloadStrategy = 'rolling' | 'generation'

/** The config keys every pool shares with a Python app's: how a reload replaces workers. */
export const reloadShape = {
  /**
   * The workers' user and group (php-fpm's per-pool `user`/`group`), a name or an id; needs
   * a server started as root unless it is the server's own. Default: the server's `user`.
   */
  user: z.union([z.string().min(1), z.number().int().min(0)]).optional(),
  group: z.union([z.string().min(1), z.number().int().min(0)]).optional(),
  reload_strategy: z.enum(['rolling', 'generation']).default('rolling'),
  reload_surge: z.number().int().min(1).max(10_000).default(1),
}

/** The config keys of a pool (PHP-FPM's names without `pm.`; `pm` is the mode). */
export const poolSettingsShape = {
  /** The pool's name on the status page and in logs (php-fpm's `[www]`). */
  name: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, `_`, `.`, `-`')
    .optional(),
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
  /**
   * On by default (php-fpm has no such limit): one request that makes a php-cgi worker grow
   * (a script with memory_limit = -1, a leak in an extension) would otherwise keep that
   * memory for the worker's life. 512 MB is four times PHP's default memory_limit.
   */
  max_rss: size.prefault('512MB'),
  queue: z.number().int().min(0).max(1_000_000).default(256),
  queue_timeout: duration.prefault(10),
  ready_timeout: duration.prefault(10),
  process_control_timeout: duration.prefault(5),
  /** After a crash loop, the first try to start again (0: never), doubling up to crash_retry_max. */
  crash_retry: duration.prefault(1),
  crash_retry_max: duration.prefault(60),
  ...reloadShape,
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
  defaultName: string,
  config: PoolConfig,
  extra: Partial<
    Pick<
      PoolSettings,
      'capacity' | 'parallel' | 'stall_timeout' | 'ordered' | 'stop_signal' | 'dump_signal' | 'kind'
    >
  > = {},
): PoolSettings {
  const start =
    config.start_servers ||
    config.min_spare_servers + Math.floor((config.max_spare_servers - config.min_spare_servers) / 2)
  return {
    name: config.name ?? defaultName,
    mode: config.pm,
    max_children: config.max_children,
    start_servers: Math.min(start, config.max_children),
    min_spare_servers: config.min_spare_servers,
    max_spare_servers: config.max_spare_servers,
    max_spawn_rate: config.max_spawn_rate,
    process_idle_timeout: config.process_idle_timeout,
    capacity: extra.capacity ?? 1,
    parallel: Math.min(extra.parallel ?? Infinity, extra.capacity ?? 1),
    stall_timeout: extra.stall_timeout ?? 0,
    ordered: extra.ordered ?? true,
    max_requests: config.max_requests,
    max_requests_jitter: config.max_requests_jitter,
    request_terminate_timeout: config.request_terminate_timeout,
    request_slowlog_timeout: config.request_slowlog_timeout,
    max_rss: config.max_rss,
    queue: config.queue,
    queue_timeout: config.queue_timeout,
    ready_timeout: config.ready_timeout,
    process_control_timeout: config.process_control_timeout,
    crash_retry: config.crash_retry,
    crash_retry_max: Math.max(config.crash_retry_max, config.crash_retry),
    reload_strategy: config.reload_strategy,
    reload_surge: config.reload_surge,
    stop_signal: extra.stop_signal ?? 'SIGQUIT',
    ...(extra.dump_signal ? { dump_signal: extra.dump_signal } : {}),
    ...(extra.kind ? { kind: extra.kind } : {}),
  }
}
