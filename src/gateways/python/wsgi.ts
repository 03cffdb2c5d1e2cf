/*
 * The `wsgi` action: a pool of Python workers running a WSGI app (PEP 3333), reached over
 * the bridge protocol (src/gateways/python/codec.ts, docs/python-bridge.md). docs/wsgi.md is the
 * user's view.
 */
import type { Logger } from 'pino'
import { z } from 'zod'
import { strictObject } from '../../core/schema/strict.js'
import { GatehouseError } from '../../core/errors.js'
import { WorkerPool } from '../../process/pool.js'
import { poolSettings } from '../../process/settings.js'
import {
  admitRequest,
  BridgeConnections,
  ForwardedResolver,
  pythonAppShape,
  workerEnvironment,
} from './pool.js'
import { expectsContinue } from './connection.js'
import { CONTINUE_DEFERRED } from '../../http/connection.js'
import type { ActionDefinition, Handler, RequestContext, SchemaEnv } from '../../core/types.js'
import { requestMeta } from '../../cgi-vars/script.js'
import { routePrefix } from '../fastcgi/action.js'
import { actionListener, type ListenerOptions, type RequestListener } from '../../http/library-listener.js'
import { sendError } from '../../core/respond.js'

export function wsgiSchema(env: SchemaEnv) {
  return strictObject({
    ...pythonAppShape(env),
    /** Requests one worker runs at once (threads; 1 runs the app on the connection's thread). */
    threads: z.number().int().min(1).max(1024).default(1),
    /**
     * Requests queued on a worker's connection while all its threads are busy (and every
     * other worker's too): they run back to back without a wake-up of Node in between.
     */
    pipeline: z.number().int().min(0).max(64).default(4),
  })
}

export type WsgiOptions = z.output<ReturnType<typeof wsgiSchema>>
export type WsgiOptionsInput = z.input<ReturnType<typeof wsgiSchema>>

const NON_ASCII = /[^\x00-\x7f]/

/** A decoded path as a WSGI native string: its UTF-8 bytes, one char each (latin-1). */
function nativePath(path: string): string {
  return NON_ASCII.test(path) ? Buffer.from(path, 'utf8').toString('latin1') : path
}

export class WsgiHandler implements Handler {
  readonly pool: WorkerPool
  readonly deferContinue = true
  private readonly started: Promise<void>
  private readonly forwarded: ForwardedResolver
  /** One bridge connection per worker, opened on its first request. */
  private readonly connections = new BridgeConnections()

  constructor(
    private readonly options: WsgiOptions,
    private readonly log: Logger,
  ) {
    const env = workerEnvironment(options.env)
    this.pool = new WorkerPool(
      {
        command: options.python,
        args: [
          '-m',
          'gatehouse_worker',
          '--socket',
          '{socket}',
          '--wsgi',
          options.app,
          '--threads',
          String(options.threads),
          '--chdir',
          options.chdir,
        ],
        env,
        cwd: options.chdir,
      },
      poolSettings(
        'wsgi',
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
          request_terminate_timeout: options.timeout,
          request_slowlog_timeout: options.slowlog_timeout,
          max_rss: options.max_rss,
          queue: options.max_queue,
          queue_timeout: options.queue_timeout,
          ready_timeout: options.start_timeout,
          process_control_timeout: options.graceful_timeout,
        },
        // Threads, plus requests pipelined onto a worker whose threads are all busy.
        { capacity: options.threads + options.pipeline, stop_signal: 'SIGTERM', dump_signal: 'SIGUSR1' },
      ),
      log,
    )
    this.forwarded = new ForwardedResolver(options.forwarded_allow_ips)
    this.started = this.pool.start()
    this.started.catch(() => {})
  }

  /** Resolves once the workers are listening; rejects with GH_ERR_WORKER_START. */
  ready(): Promise<void> {
    return this.started
  }

  /** SIGUSR2 / reload: a new generation of workers, the old one drained. */
  reloadWorkers(): Promise<void> {
    return this.pool.reload()
  }

  environ(ctx: RequestContext, contentLength: number | undefined): Record<string, string> {
    const prefix = routePrefix(ctx)
    const meta = requestMeta(
      ctx,
      { scriptName: prefix, pathInfo: ctx.path.slice(prefix.length), scriptFilename: '', documentRoot: '' },
      { contentLength, passAuthorization: true },
    )
    delete meta.REDIRECT_STATUS
    delete meta.REMOTE_HOST
    meta.SCRIPT_NAME = nativePath(this.options.root_path + prefix)
    meta.PATH_INFO = nativePath(ctx.path.slice(prefix.length))
    // The nearest X-Forwarded-For address that is not one of our proxies is the client.
    const fwd = this.forwarded.resolve(ctx.req, ctx.conn.remoteAddress)
    if (fwd.address !== null) meta.REMOTE_ADDR = fwd.address
    const scheme: string = fwd.scheme ?? ctx.scheme
    meta['wsgi.url_scheme'] = scheme
    if (scheme === 'https') meta.HTTPS = 'on'
    else delete meta.HTTPS
    return meta
  }

  async handle(ctx: RequestContext): Promise<void> {
    const { req, res } = ctx
    const tags = { method: ctx.method, uri: req.url }
    const admitted = await admitRequest(ctx, this.pool, this.started, this.log)
    if (admitted === null) return
    const { lease, contentLength, hasBody } = admitted
    let failed = false
    try {
      const connection = await this.connections.get(lease)
      const outcome = await connection.exchange({
        environ: Object.entries(this.environ(ctx, contentLength)),
        body: hasBody ? req : null,
        maxBodyBytes: ctx.maxBodyBytes,
        expectContinue:
          expectsContinue(req) && (res as { [CONTINUE_DEFERRED]?: boolean })[CONTINUE_DEFERRED] === true,
        res,
        head: ctx.method === 'HEAD',
      })
      if (outcome.kind === 'app-error') {
        this.log.error({ ...tags, worker: lease.pid, code: 'GH_ERR_WSGI_APP' }, outcome.message.trimEnd())
        if (!res.headersSent) sendError(res, 'GH_ERR_WSGI_APP')
        else res.destroy()
      }
    } catch (err) {
      // The pool ended the lease (timeout: 504, worker died: 502): its reason names why.
      const why = lease.aborted ? lease.abortReason : err
      const code = why instanceof GatehouseError ? why.code : 'GH_ERR_WORKER_PROTOCOL'
      if (code !== 'GH_ERR_BODY_TOO_LARGE') {
        failed = true
        this.log.error({ ...tags, worker: lease.pid, code, err: why }, 'WSGI request failed')
      }
      if (!res.headersSent) sendError(res, code, code === 'GH_ERR_BODY_TOO_LARGE' ? { close: true } : {})
      else res.destroy()
    } finally {
      lease.release({ failed })
    }
  }

  async close(): Promise<void> {
    await this.pool.close(this.options.graceful_timeout)
    this.connections.closeAll()
  }
}

export const wsgiAction: ActionDefinition<WsgiOptions> = {
  name: 'wsgi',
  summary: 'run a Python WSGI app (PEP 3333) in a pool of Gatehouse Python workers',
  schema: wsgiSchema,
  create: (options, services) => new WsgiHandler(options, services.log),
}

/**
 * The wsgi action as a node:http request listener, with `close()` and `handler`:
 *
 *   const app = wsgi({ app: 'myproject.wsgi:application', chdir: '/srv/site', workers: 4 })
 *   createServer(app).listen(8000)
 */
export function wsgi(options: WsgiOptionsInput & ListenerOptions): RequestListener<WsgiHandler> {
  return actionListener(wsgiSchema, options, (o, log) => new WsgiHandler(o, log))
}
