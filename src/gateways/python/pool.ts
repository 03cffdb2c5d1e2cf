/*
 * What the wsgi and asgi actions share: their config keys, their pool of workers (command
 * line, environment, settings), one bridge connection per worker, which proxies'
 * X-Forwarded-For / X-Forwarded-Proto are believed, and the course of one HTTP request.
 */
import { readFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { type BlockList, isIP } from 'node:net'
import { parseEnv } from 'node:util'
import { z } from 'zod'
import { existingDir, existingFile } from '../../core/schema/paths.js'
import { duration, size } from '../../core/schema/units.js'
import type { Logger } from 'pino'
import { GatehouseError } from '../../core/errors.js'
import { IDEMPOTENT_METHODS } from '../../core/http-headers.js'
import { upstreamNote } from '../../core/access-format.js'
import { ClientCancel } from '../../core/cancel.js'
import { sendError } from '../../core/respond.js'
import { LeaseMoved, type RequestInfo, type WorkerLease } from '../../process/lease.js'
import { type StartFailure, WorkerPool } from '../../process/pool.js'
import { poolIdentity } from '../../process/identity.js'
import { assertRunnable } from '../../process/spawn.js'
import { poolSettings, reloadShape } from '../../process/settings.js'
import type { PoolSite, RequestContext, SchemaEnv } from '../../core/types.js'
import type { PoolHandle } from '../../process/pool-handle.js'
import { parseAllowList } from '../../core/allow-list.js'
import { defaultPython, logInterpreter, PYTHON_PACKAGE_DIR } from './locate.js'
import {
  type BridgeTraffic,
  type ExchangeInput,
  type ExchangeOutcome,
  expectsContinue,
  RequestLostError,
  WorkerConnection,
} from './connection.js'
import { CONTINUE_DEFERRED } from '../../http/connection.js'

/** MODULE:NAME, MODULE:obj.attr, or the factory form MODULE:create_app(...). */
export const APP_SPEC = z
  .string()
  .regex(
    /^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*(\(.*\))?)?$/,
    'MODULE:APP (e.g. main:app or myproject.wsgi:application) or MODULE:factory()',
  )

/** One entry of forwarded_allow_ips: an IP or a CIDR block. */
export const ALLOW_ENTRY = z.string().superRefine((value, ctx) => {
  try {
    parseAllowList([value])
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
  }
})

/**
 * Variables of the server's environment a worker never inherits: they describe the server
 * process, not the app, and would mislead a worker that read them: systemd's socket
 * activation and notification (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, NOTIFY_SOCKET,
 * WATCHDOG_USEC/WATCHDOG_PID: the worker would take over our sockets or speak for us),
 * Node's (NODE_OPTIONS, NODE_CHANNEL_FD, NODE_UNIQUE_ID: IPC and cluster state of the Node
 * process) and our own (GATEHOUSE_*: the bridge sets what a worker needs).
 */
export const WITHHELD_ENV =
  /^(LISTEN_|WATCHDOG_|NODE_CHANNEL_|GATEHOUSE_)|^(NOTIFY_SOCKET|NODE_OPTIONS|NODE_UNIQUE_ID)$/

/** With inherit_env = false, the only variables a worker gets from ours, besides the app's own. */
export const PASSED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR', 'USER', 'LOGNAME']

/**
 * The whole environment of a Python worker: the server's (all of it but WITHHELD_ENV, as
 * gunicorn and uvicorn pass theirs; with `inherit` false, PASSED_ENV only), then the
 * `env_file`'s variables, then the app's `env`, and the bridge package first on PYTHONPATH.
 */
export function workerEnvironment(
  appEnv: Readonly<Record<string, string>>,
  inherit = true,
  fileEnv: Readonly<Record<string, string>> = {},
): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (value === undefined) continue
    if (inherit ? !WITHHELD_ENV.test(name) : PASSED_ENV.includes(name)) env[name] = value
  }
  Object.assign(env, fileEnv, appEnv)
  env.PYTHONPATH = env.PYTHONPATH ? `${PYTHON_PACKAGE_DIR}:${env.PYTHONPATH}` : PYTHON_PACKAGE_DIR
  env.PYTHONUNBUFFERED = '1'
  env.GATEHOUSE_PARENT_PID = String(process.pid)
  return env
}

/** The variables of an env file (KEY=value lines, `#` comments, quotes: node:util parseEnv). */
export function readEnvFile(path: string): Record<string, string> {
  try {
    return parseEnv(readFileSync(path, 'utf8')) as Record<string, string>
  } catch (err) {
    const problem = `env_file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`
    throw new GatehouseError('GH_ERR_WORKER_START', problem, { problems: [problem] })
  }
}

/** One bridge connection per worker, opened on its first request and dropped when it closes. */
export class BridgeConnections {
  /** `traffic`: where the frames its connections carry are counted (the pool's). */
  constructor(private readonly traffic?: BridgeTraffic) {}

  private readonly connections = new Map<number, Promise<WorkerConnection>>()
  /** The connections that are open, by worker id: taken without awaiting (issue 13). */
  private readonly open = new Map<number, WorkerConnection>()

  get(lease: WorkerLease): Promise<WorkerConnection> {
    let conn = this.connections.get(lease.workerId)
    if (!conn) {
      const id = lease.workerId
      conn = WorkerConnection.connect(lease.socketPath, undefined, this.traffic)
      this.connections.set(id, conn)
      conn.then(
        (c) => {
          if (c.closed) return void this.connections.delete(id)
          this.open.set(id, c)
          c.onClose(() => {
            this.connections.delete(id)
            this.open.delete(id)
          })
        },
        () => this.connections.delete(id),
      )
    }
    return conn
  }

  /** The open connection to the lease's worker, when there is one. */
  ready(lease: WorkerLease): WorkerConnection | undefined {
    return this.open.get(lease.workerId)
  }

  closeAll(): void {
    for (const conn of this.connections.values())
      void conn.then(
        (c) => c.close(),
        () => {},
      )
  }
}

/** The client address and scheme, believing X-Forwarded-* only from the listed proxies. */
export class ForwardedResolver {
  private readonly trusted: BlockList | null

  /** `*` (gunicorn's and uvicorn's spelling) trusts every peer: for a proxy on another host. */
  constructor(allow: readonly string[]) {
    const entries = allow.includes('*') ? ['0.0.0.0/0', '::/0'] : allow
    this.trusted = entries.length > 0 ? parseAllowList([...entries]) : null
  }

  isTrusted(address: string): boolean {
    if (!this.trusted || address === '') return false
    const family = isIP(address)
    return family !== 0 && this.trusted.check(address, family === 6 ? 'ipv6' : 'ipv4')
  }

  /**
   * The client's address (the nearest X-Forwarded-For hop that is not one of our proxies)
   * and the scheme (X-Forwarded-Proto), when the peer is a trusted proxy; `null` fields
   * when nothing is to be believed.
   */
  resolve(req: IncomingMessage, peer: string): { address: string | null; scheme: 'http' | 'https' | null } {
    if (!this.isTrusted(peer)) return { address: null, scheme: null }
    let address: string | null = null
    let scheme: 'http' | 'https' | null = null
    const xff = req.headers['x-forwarded-for']
    if (typeof xff === 'string') {
      const hops = xff.split(',').map((h) => h.trim())
      for (let i = hops.length - 1; i >= 0; i--) {
        const hop = hops[i]!
        if (isIP(hop) === 0) break
        address = hop
        if (!this.isTrusted(hop)) break
      }
    }
    const proto = req.headers['x-forwarded-proto']
    if (typeof proto === 'string') {
      const p = proto.split(',')[0]!.trim().toLowerCase()
      if (p === 'http' || p === 'https') scheme = p
    }
    return { address, scheme }
  }
}

/** What the request's headers say of its body. */
export interface RequestBodyInfo {
  /** From Content-Length; undefined for a chunked body. */
  contentLength: number | undefined
  hasBody: boolean
}

/** A request that has a worker: its lease, and what it says of its body. */
export interface AdmittedRequest extends RequestBodyInfo {
  lease: WorkerLease
}

function bodyOf(req: IncomingMessage): RequestBodyInfo {
  const chunked = req.headers['transfer-encoding'] !== undefined
  const declared = req.headers['content-length']
  const contentLength = chunked ? undefined : declared !== undefined ? Number(declared) : undefined
  return { contentLength, hasBody: chunked || (contentLength !== undefined && contentLength > 0) }
}

function requestInfo(ctx: RequestContext, contentLength: number | undefined): RequestInfo {
  return {
    method: ctx.method,
    uri: ctx.req.url ?? '',
    contentLength: contentLength ?? 0,
    upstream: upstreamNote(ctx.req),
  }
}

/**
 * admitRequest without waiting, when it need not: the pool has started and grants a worker
 * at once (nobody queued, a worker has room). Undefined otherwise. Saves the promises, the
 * client-close listener and the cancel signal of a wait that does not happen (issue 13).
 */
export function admitNow(
  pool: PoolHandle,
  body: RequestBodyInfo,
  info: RequestInfo,
): AdmittedRequest | undefined {
  const lease = pool.tryAcquire(info)
  return lease && { lease, ...body }
}

/**
 * The first steps of every Python request (WSGI and ASGI): wait for the pool to start, then
 * for a worker, in the pool's bounded queue. null when the request is already answered: 503
 * GH_ERR_WORKER_START (the pool could not start), 503 GH_ERR_OVERLOADED with Retry-After
 * (the queue is full), or nothing at all (the client left while waiting).
 */
export async function admitRequest(
  ctx: RequestContext,
  pool: PoolHandle,
  started: Promise<unknown>,
  log: Logger,
  body: RequestBodyInfo,
  info: RequestInfo,
): Promise<AdmittedRequest | null> {
  const { req, res } = ctx
  try {
    await started
  } catch {
    // The first start failed (crash loop); the pool tries again (crash_retry) and may serve now.
    if (pool.failure !== null) {
      sendError(res, 'GH_ERR_WORKER_START')
      return null
    }
  }
  const { contentLength, hasBody } = body
  const abort = new ClientCancel()
  const onClose = () => {
    if (!res.writableFinished) abort.abort(new Error('client closed the connection'))
  }
  res.once('close', onClose)
  try {
    const lease = await pool.acquire(info, abort)
    return { lease, contentLength, hasBody }
  } catch (err) {
    if (abort.aborted) return null
    if (err instanceof GatehouseError && err.code === 'GH_ERR_OVERLOADED') {
      log.warn({ method: ctx.method, uri: req.url }, err.message)
      sendError(res, 'GH_ERR_OVERLOADED', { headers: { 'retry-after': '1' } })
      return null
    }
    if (err instanceof GatehouseError && err.code === 'GH_ERR_WORKER_START') {
      sendError(res, 'GH_ERR_WORKER_START')
      return null
    }
    throw err
  } finally {
    res.off('close', onClose)
  }
}

/**
 * The config keys every Python app route has (the `wsgi` and `asgi` actions add their own):
 * the app, its interpreter and workers, and the pool's limits (docs/wsgi.md, docs/asgi.md).
 */
export function pythonAppShape(env: SchemaEnv) {
  return {
    /** MODULE:CALLABLE, or the factory form MODULE:create_app(). */
    app: APP_SPEC,
    /**
     * The interpreter (a virtualenv's bin/python works). Default: $VIRTUAL_ENV/bin/python
     * when a virtualenv is active, else /usr/bin/python3 if present, else python3.
     */
    python: z.string().min(1).default(defaultPython),
    /** Working directory of the workers, put first on sys.path. Default: the config's directory. */
    chdir: existingDir(env).default(env.baseDir),
    workers: z.number().int().min(1).max(1024).default(2),
    /** The mount point a proxy in front strips (WSGI: prepended to SCRIPT_NAME; ASGI: root_path). */
    root_path: z
      .string()
      .regex(/^(\/[^?#\s]*)?$/, 'a path starting with "/" (or empty)')
      .transform((p) => p.replace(/\/+$/, ''))
      .default(''),
    /** Environment variables for the app, over the inherited ones and env_file's. */
    env: z.record(z.string().regex(/^[^=\0]+$/, 'not a variable name'), z.string()).default({}),
    /** Pass the server's environment to the workers (less WITHHELD_ENV); false: PASSED_ENV only. */
    inherit_env: z.boolean().default(true),
    /** A file of KEY=value lines (a .env) for the workers, read at start and on reload; `env` wins over it. */
    env_file: existingFile(env).optional(),
    /** Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or CIDR blocks). */
    forwarded_allow_ips: z.array(z.union([z.literal('*'), ALLOW_ENTRY])).default([]),
    /**
     * Per-request time limit (0: none), past which 504 is answered. WSGI: the worker prints
     * the stuck request's traceback and is replaced. ASGI: the task's stack is logged and the
     * task cancelled (WebSockets are timed until accepted only); a worker whose loop is stuck
     * is dumped and killed by the pool.
     */
    timeout: duration.prefault(60),
    /** A slow-request log line after this long (0: off). */
    slowlog_timeout: duration.prefault(0),
    /** Replace a worker after this many requests (0: never), plus random(0..jitter). */
    max_requests: z.number().int().min(0).default(0),
    max_requests_jitter: z.number().int().min(0).default(0),
    /** Replace a worker after a request when its RSS exceeds this (0: off). */
    max_rss: size.prefault(0),
    /** Requests waiting for room on a worker beyond which 503 is answered. */
    max_queue: z.number().int().min(0).default(1024),
    /** How long a request may wait for a worker before 503 (0: no limit). */
    queue_timeout: duration.prefault(30),
    /** How long a starting worker has to import the app (ASGI: and run lifespan startup) and listen. */
    start_timeout: duration.prefault(30),
    /** How long a stopping worker gets to finish its requests (ASGI: and lifespan shutdown) before SIGKILL. */
    graceful_timeout: duration.prefault(30),
    /** After a crash loop (the app cannot start), try again after this long (0: never), doubling up to crash_retry_max. */
    crash_retry: duration.prefault(1),
    crash_retry_max: duration.prefault(60),
    ...reloadShape,
  }
}

/** The keys of pythonAppShape, parsed. */
export type PythonAppOptions = z.output<z.ZodObject<ReturnType<typeof pythonAppShape>>>

/** What a wsgi pool and an asgi pool differ in. */
export interface PythonPoolSpec {
  /** The worker's mode: `--wsgi APP` or `--asgi APP`. */
  interface: 'wsgi' | 'asgi'
  /** Worker arguments after the app (`--threads N`). */
  args: readonly string[]
  /** Requests one worker is leased for at once. */
  capacity: number
  /** Requests one worker runs at once; leases past it are pipelined (WSGI). Default: capacity. */
  parallel?: number
  /** ms, 0 or absent = off: see PoolSettings.stall_timeout. */
  stall_timeout?: number
  /** See PoolSettings.ordered (default true). */
  ordered?: boolean
  /** ms, 0 = off: the pool kills a worker whose request runs this long. */
  request_terminate_timeout: number
}

/**
 * The pool of a Python app route: `python -m gatehouse_worker` in `chdir`, with the
 * workers' environment, `workers` of them always (pm static), the route's limits as the
 * pool's keys, SIGTERM to stop one and SIGUSR1 to make a stuck one print its stacks.
 */
export function pythonWorkerPool(options: PythonAppOptions, spec: PythonPoolSpec, log: Logger): WorkerPool {
  const env = workerEnvironment(
    options.env,
    options.inherit_env,
    options.env_file === undefined ? {} : readEnvFile(options.env_file),
  )
  assertRunnable('the Python interpreter', { command: options.python, args: [], env, cwd: options.chdir })
  logInterpreter(log, spec.interface, options.python, env, options.chdir)
  return new WorkerPool(
    {
      command: options.python,
      args: [
        '-m',
        'gatehouse_worker',
        '--socket',
        '{socket}',
        `--${spec.interface}`,
        options.app,
        ...spec.args,
        '--chdir',
        options.chdir,
      ],
      env,
      cwd: options.chdir,
      identity: poolIdentity(spec.interface, options.user, options.group),
    },
    poolSettings(
      spec.interface,
      {
        name: undefined,
        pm: 'static',
        max_children: options.workers,
        start_servers: options.workers,
        min_spare_servers: 1,
        max_spare_servers: options.workers,
        max_spawn_rate: 32,
        process_idle_timeout: 10_000,
        max_requests: options.max_requests,
        max_requests_jitter: options.max_requests_jitter,
        request_terminate_timeout: spec.request_terminate_timeout,
        request_slowlog_timeout: options.slowlog_timeout,
        max_rss: options.max_rss,
        queue: options.max_queue,
        queue_timeout: options.queue_timeout,
        ready_timeout: options.start_timeout,
        process_control_timeout: options.graceful_timeout,
        crash_retry: options.crash_retry,
        crash_retry_max: options.crash_retry_max,
        reload_strategy: options.reload_strategy,
        reload_surge: options.reload_surge,
      },
      {
        kind: spec.interface,
        capacity: spec.capacity,
        ...(spec.parallel !== undefined ? { parallel: spec.parallel } : {}),
        ...(spec.stall_timeout !== undefined ? { stall_timeout: spec.stall_timeout } : {}),
        ...(spec.ordered !== undefined ? { ordered: spec.ordered } : {}),
        stop_signal: 'SIGTERM',
        dump_signal: 'SIGUSR1',
      },
    ),
    log,
    { startFailure: parseStartFailure },
  )
}

const START_FAILED = /^gatehouse_worker\[\d+\]: start failed: (\{.*\})$/

/**
 * The worker's report that the app cannot start (report_start_failure in
 * python/gatehouse_worker/connection.py): one JSON line, so the pool logs its traceback as
 * one entry, once for all the workers that fail alike.
 */
export function parseStartFailure(line: string): StartFailure | null {
  const m = START_FAILED.exec(line)
  if (!m) return null
  try {
    const { message, traceback } = JSON.parse(m[1]!) as { message?: unknown; traceback?: unknown }
    if (typeof message !== 'string') return null
    return { message, traceback: typeof traceback === 'string' ? traceback : '' }
  } catch {
    return null
  }
}

/** How often one request is sent to another worker after its worker stopped before starting it. */
const MAX_REQUEUES = 2

const INTERFACE_NAMES = {
  wsgi: { name: 'WSGI', appError: 'GH_ERR_WSGI_APP' },
  asgi: { name: 'ASGI', appError: 'GH_ERR_ASGI_APP' },
} as const

/**
 * A wsgi or asgi handler but for what its interface adds: its pool (started at once), one
 * bridge connection per worker, the proxies it believes, reload, close, and the course of
 * one HTTP request (serve).
 */
export abstract class PythonAppHandler {
  readonly pool: PoolHandle
  readonly deferContinue = true
  protected readonly started: Promise<void>
  protected readonly forwarded: ForwardedResolver
  /** One bridge connection per worker, opened on its first request. */
  protected readonly connections: BridgeConnections
  private readonly names: (typeof INTERFACE_NAMES)[PythonPoolSpec['interface']]

  constructor(
    private readonly app: PythonAppOptions,
    spec: PythonPoolSpec,
    readonly log: Logger,
    pools?: PoolSite,
  ) {
    this.names = INTERFACE_NAMES[spec.interface]
    const build = () => pythonWorkerPool(app, spec, log)
    this.pool = pools ? pools.provide<PoolHandle>(build) : build()
    this.connections = new BridgeConnections(this.pool.traffic)
    this.forwarded = new ForwardedResolver(app.forwarded_allow_ips)
    this.started = this.pool.start()
    this.started.then(
      () => (this.startedOk = true),
      () => {},
    )
  }

  /** `started` has resolved: a request may be admitted without awaiting it. */
  private startedOk = false

  /** Resolves once the workers are listening (ASGI: lifespan startup done); rejects with GH_ERR_WORKER_START. */
  ready(): Promise<void> {
    return this.started
  }

  /** SIGUSR2 / reload: a new generation of workers, the old one drained. */
  reloadWorkers(): Promise<void> {
    return this.pool.reload()
  }

  async close(): Promise<void> {
    await this.pool.close(this.app.graceful_timeout)
    this.closeSessions()
    this.connections.closeAll()
  }

  /** After the pool closed, before the bridge connections do: what else the handler holds (ASGI: WebSockets). */
  protected closeSessions(): void {}

  /**
   * One HTTP request: a worker leased (admitRequest), the exchange `input` describes run on
   * that worker's bridge connection, the outcome answered. When the pool ended the lease
   * (504 past request_terminate_timeout, 502 when the worker died) or the connection failed,
   * the answer is that error's status and the worker is recycled.
   */
  protected async serve(
    ctx: RequestContext,
    input: (admitted: AdmittedRequest) => ExchangeInput,
    replayableBody = false,
  ): Promise<void> {
    for (
      let attempt = 0;
      await this.serveOnce(ctx, input, attempt < MAX_REQUEUES, replayableBody);
      attempt++
    );
  }

  /**
   * One try of serve(); true when the request is to be tried again: its worker was killed
   * (or died) while the request still waited behind others on it, so nothing of it ran, and
   * it has no body that was already sent, or its body can be sent again (read whole first,
   * `replayableBody`: `input` gives a fresh stream of it each time) (issue 18: requeue what
   * a worker had not started).
   */
  private async serveOnce(
    ctx: RequestContext,
    input: (admitted: AdmittedRequest) => ExchangeInput,
    mayRequeue: boolean,
    replayableBody: boolean,
  ): Promise<boolean> {
    const { req, res } = ctx
    const tags = { method: ctx.method, uri: req.url }
    // Read once for both ways in: at once (admitNow) or after a wait (admitRequest).
    const body = bodyOf(req)
    const info = requestInfo(ctx, body.contentLength)
    // Pipelined onto a worker that then stalls, it may go to another one (LeaseMoved): an
    // idempotent request with nothing of its body lost. The stalled worker (one thread,
    // running the app) cannot confirm in time that it has not started it, and in the
    // moment its stuck request ends it might: idempotent requests only, as nginx's
    // proxy_next_upstream.
    if (mayRequeue && IDEMPOTENT_METHODS.has(ctx.method) && (replayableBody || !body.hasBody))
      info.movable = true
    const admitted =
      (this.startedOk ? admitNow(this.pool, body, info) : undefined) ??
      (await admitRequest(ctx, this.pool, this.started, this.log, body, info))
    if (admitted === null) return false
    const { lease } = admitted
    let failed = false
    // Answered 503 while it waited on a stalled worker (queue_timeout): nothing more to say.
    let takenBack = false
    // Taken back from a stalled worker to go to another one (LeaseMoved).
    let moved: LeaseMoved | undefined
    let onMoved: ((value: 'moved') => void) | undefined
    try {
      const connection =
        this.connections.ready(lease) ??
        (await this.connections.get(lease).catch((err: unknown) => {
          // The worker's socket refused or vanished (it died a moment ago): nothing was sent.
          throw new RequestLostError(
            'unsent',
            new GatehouseError('GH_ERR_WORKER_DIED', String(err), { cause: err }),
          )
        }))
      connection.onActivity(lease)
      const exchange = input(admitted)
      if (!lease.mayHaveStarted) {
        // Pipelined behind requests the worker still runs: the pool takes it back with 503
        // at queue_timeout if the worker has not started it by then.
        exchange.onTakeBack = (takeBack) =>
          lease.onAbort((reason) => {
            if (reason instanceof LeaseMoved) {
              moved = reason
              takeBack()
              onMoved?.('moved')
              return
            }
            if (!(reason instanceof GatehouseError) || reason.code !== 'GH_ERR_OVERLOADED') return
            takenBack = true
            this.log.warn(
              { ...tags, worker: lease.pid },
              `${reason.message}: it waited behind a stalled request`,
            )
            takeBack()
            if (!res.headersSent) sendError(res, 'GH_ERR_OVERLOADED', { headers: { 'retry-after': '1' } })
          })
      }
      // Made before the exchange starts: a lease ended already is taken back within it.
      const movedAway =
        info.movable && !lease.mayHaveStarted
          ? new Promise<'moved'>((resolve) => (onMoved = resolve))
          : undefined
      const pending = connection.exchange(exchange)
      const outcome = movedAway ? await Promise.race([pending, movedAway]) : await pending
      if (takenBack) return false
      if (moved || outcome === 'moved') {
        // Sent again at once; the stalled worker drops it when it gets there (FINISHED,
        // started: false), or, if its stuck request ended as it was taken back, runs it
        // for a client that has left (logged: an idempotent request ran twice).
        const pid = lease.pid
        pending.then(
          (o) => {
            if (o.kind !== 'not-started')
              this.log.warn(
                { ...tags, worker: pid },
                `${moved!.message}, but it had started: it ran on two workers`,
              )
          },
          () => {},
        )
        this.log.debug({ ...tags, worker: pid }, `${this.names.name} request moved: ${moved!.message}`)
        return true
      }
      if (outcome.kind === 'app-error') {
        const code = outcome.code ?? this.names.appError
        this.log.error({ ...tags, worker: lease.pid, code }, outcome.message.trimEnd())
        if (!res.headersSent) sendError(res, code)
        else res.destroy()
      } else this.settled(ctx, lease, outcome)
    } catch (err) {
      if (takenBack) return false
      const again =
        mayRequeue && !res.headersSent && this.mayRetry(ctx, lease, err, replayableBody || !admitted.hasBody)
      if (again) {
        this.log.warn({ ...tags, worker: lease.pid }, `${this.names.name} request requeued: ${again}`)
        // A worker that vanished under a request is suspect until its pool has seen it go.
        failed = err instanceof RequestLostError
        return true
      }
      // The pool ended the lease (timeout: 504, worker died: 502): its reason names why.
      const ended = lease.aborted && !(lease.abortReason instanceof LeaseMoved)
      const why = ended ? lease.abortReason : err instanceof RequestLostError ? err.reason : err
      const code = why instanceof GatehouseError ? why.code : 'GH_ERR_WORKER_PROTOCOL'
      if (code !== 'GH_ERR_BODY_TOO_LARGE') {
        failed = true
        this.log.error({ ...tags, worker: lease.pid, code, err: why }, `${this.names.name} request failed`)
      }
      if (!res.headersSent) sendError(res, code, code === 'GH_ERR_BODY_TOO_LARGE' ? { close: true } : {})
      else res.destroy()
    } finally {
      lease.release({ failed })
    }
    return false
  }

  /**
   * Whether a request whose exchange failed may go to another worker, and why (for the log);
   * '' when not. `replayable`: it has no body, or its body was read whole and can be sent
   * again. Never after the pool timed it out (a stuck request stays one request).
   */
  private mayRetry(ctx: RequestContext, lease: WorkerLease, err: unknown, replayable: boolean): string {
    if (lease.neverStarted && replayable) return 'its worker stopped before starting it'
    if (!(err instanceof RequestLostError)) return ''
    const reason = lease.aborted ? lease.abortReason : err.reason
    if (!(reason instanceof GatehouseError) || reason.code !== 'GH_ERR_WORKER_DIED') return ''
    // Nothing of it was written: even a streamed body is still unread.
    if (err.lostAt === 'unsent') return 'its worker was gone before it was sent'
    if (IDEMPOTENT_METHODS.has(ctx.method) && replayable)
      return `its worker vanished before answering it (${ctx.method} is idempotent)`
    return ''
  }

  /** An outcome other than the app's failure (ASGI answers its timeout here). */
  protected settled(_ctx: RequestContext, _lease: WorkerLease, _outcome: ExchangeOutcome): void {}
}

/**
 * An exchange of one HTTP request: `environ` (WSGI) or `start` (ASGI's scope) first, then
 * the request body if it has one, under 100-continue when the client asked for it.
 */
/** Whether the client's 100 Continue is still owed (the front left it to the handler). */
export function continueDeferred(ctx: RequestContext): boolean {
  return (
    expectsContinue(ctx.req) && (ctx.res as { [CONTINUE_DEFERRED]?: boolean })[CONTINUE_DEFERRED] === true
  )
}

export function exchangeInput(
  ctx: RequestContext,
  hasBody: boolean,
  environ: Readonly<Record<string, string>>,
  start?: ExchangeInput['start'],
  timeoutMs?: number,
): ExchangeInput {
  const { req, res } = ctx
  return {
    environ,
    start,
    body: hasBody ? req : null,
    maxBodyBytes: ctx.maxBodyBytes,
    expectContinue: continueDeferred(ctx),
    res,
    head: ctx.method === 'HEAD',
    timeoutMs,
  }
}
