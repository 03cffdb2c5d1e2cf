/*
 * The `asgi` action: a pool of Python workers running an ASGI 3.0 app on an asyncio loop
 * each (uvloop when present), many requests and WebSockets at once per worker, over the
 * bridge protocol (src/gateways/python/codec.ts). docs/asgi.md is the user's view.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { z } from 'zod'
import { strictObject } from '../../core/schema/strict.js'
import { duration, size } from '../../core/schema/units.js'
import { GatehouseError } from '../../core/errors.js'
import { WorkerPool } from '../../process/pool.js'
import { poolSettings } from '../../process/settings.js'
import { type AsgiScopeParts, encodeAsgiRequest } from './asgi-scope.js'
import {
  admitRequest,
  BridgeConnections,
  ForwardedResolver,
  pythonAppShape,
  workerEnvironment,
} from './pool.js'
import { AsgiWebSockets, isWebSocketUpgrade } from './websocket.js'
import { expectsContinue } from './connection.js'
import { CONTINUE_DEFERRED } from '../../http/connection.js'
import { buildContext, parseRequest } from '../../http/context.js'
import { upgradeResponse } from '../../http/upgrade.js'
import type { ActionDefinition, Handler, RequestContext, SchemaEnv } from '../../core/types.js'
import { routePrefix } from '../fastcgi/action.js'
import { actionListener, type ListenerOptions, type RequestListener } from '../../http/library-listener.js'
import { refuse, sendError } from '../../core/respond.js'

export function asgiSchema(env: SchemaEnv) {
  return strictObject({
    ...pythonAppShape(env),
    /** Requests and WebSocket handshakes one worker takes at once (its asyncio loop runs them all). */
    concurrency: z.number().int().min(1).max(100_000).default(1000),
    /**
     * ASGI's current rule: `path` includes `root_path`. false: the older convention
     * (Starlette before 0.33, uvicorn before 0.26), where `path` is what follows `root_path`.
     */
    path_includes_root_path: z.boolean().default(true),
    /** Largest WebSocket message accepted from a client; a larger one closes the socket with 1009. */
    ws_max_message: size.prefault(16 * 1024 * 1024),
    /** Ping every open WebSocket this often; one that has not answered the last ping is dropped (0: off). */
    ws_ping_interval: duration.prefault(20),
    /** Offer permessage-deflate to WebSocket clients. */
    ws_per_message_deflate: z.boolean().default(false),
  })
}

export type AsgiOptions = z.output<ReturnType<typeof asgiSchema>>
export type AsgiOptionsInput = z.input<ReturnType<typeof asgiSchema>>

/** Extra time past `timeout` before the pool takes a worker for stuck (its loop does not answer). */
const STUCK_GRACE_MS = 10_000

export class AsgiHandler implements Handler {
  readonly pool: WorkerPool
  readonly deferContinue = true
  readonly websockets: AsgiWebSockets
  private readonly started: Promise<void>
  private readonly forwarded: ForwardedResolver
  private readonly connections = new BridgeConnections()

  constructor(
    private readonly options: AsgiOptions,
    readonly log: Logger,
  ) {
    this.pool = new WorkerPool(
      {
        command: options.python,
        args: [
          '-m',
          'gatehouse_worker',
          '--socket',
          '{socket}',
          '--asgi',
          options.app,
          '--chdir',
          options.chdir,
        ],
        env: workerEnvironment(options.env),
        cwd: options.chdir,
      },
      poolSettings(
        'asgi',
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
          // The worker cancels a request at `timeout` itself; the pool steps in only when
          // the worker's loop is stuck (it dumps the stacks and kills it).
          request_terminate_timeout: options.timeout > 0 ? options.timeout + STUCK_GRACE_MS : 0,
          request_slowlog_timeout: options.slowlog_timeout,
          max_rss: options.max_rss,
          queue: options.max_queue,
          queue_timeout: options.queue_timeout,
          ready_timeout: options.start_timeout,
          process_control_timeout: options.graceful_timeout,
        },
        { capacity: options.concurrency, stop_signal: 'SIGTERM', dump_signal: 'SIGUSR1' },
      ),
      log,
    )
    this.forwarded = new ForwardedResolver(options.forwarded_allow_ips)
    this.websockets = new AsgiWebSockets(
      {
        maxMessageBytes: options.ws_max_message,
        pingInterval: options.ws_ping_interval,
        perMessageDeflate: options.ws_per_message_deflate,
        handshakeTimeout: options.timeout,
      },
      this.pool,
      this.connections,
      log,
    )
    this.started = this.pool.start()
    this.started.catch(() => {})
  }

  /** Resolves once the workers are listening (lifespan startup done); rejects with GH_ERR_WORKER_START. */
  ready(): Promise<void> {
    return this.started
  }

  /** SIGUSR2 / reload: a new generation of workers, the old one drained. */
  reloadWorkers(): Promise<void> {
    return this.pool.reload()
  }

  /** The scope of this request, but for `state` (the worker adds it) and `subprotocols`. */
  scope(ctx: RequestContext, type: 'http' | 'websocket'): AsgiScopeParts {
    const { req } = ctx
    const prefix = routePrefix(ctx)
    const rootPath = this.options.root_path + prefix
    const fwd = this.forwarded.resolve(req, ctx.conn.remoteAddress)
    const secure = (fwd.scheme ?? ctx.scheme) === 'https'
    const conn = ctx.conn
    return {
      type,
      httpVersion: req.httpVersion,
      method: ctx.method,
      scheme: type === 'http' ? (secure ? 'https' : 'http') : secure ? 'wss' : 'ws',
      path: this.options.path_includes_root_path
        ? this.options.root_path + ctx.path
        : ctx.path.slice(prefix.length),
      rawPath: ctx.rawPath,
      query: ctx.query,
      rootPath,
      rawHeaders: req.rawHeaders,
      client: fwd.address
        ? [fwd.address, 0]
        : conn.remoteAddress
          ? [conn.remoteAddress, conn.remotePort]
          : null,
      server: conn.localAddress ? [conn.localAddress, conn.localPort] : null,
    }
  }

  async handle(ctx: RequestContext): Promise<void> {
    const { req, res } = ctx
    const tags = { method: ctx.method, uri: req.url }
    const admitted = await admitRequest(ctx, this.pool, this.started, this.log)
    if (admitted === null) return
    const { lease, hasBody } = admitted
    let failed = false
    try {
      const connection = await this.connections.get(lease)
      const scope = this.scope(ctx, 'http')
      const outcome = await connection.exchange({
        environ: [],
        start: (id, more, responseWindow, requestWindow) =>
          encodeAsgiRequest(id, scope, more, responseWindow, requestWindow),
        body: hasBody ? req : null,
        maxBodyBytes: ctx.maxBodyBytes,
        expectContinue:
          expectsContinue(req) && (res as { [CONTINUE_DEFERRED]?: boolean })[CONTINUE_DEFERRED] === true,
        res,
        head: ctx.method === 'HEAD',
        timeoutMs: this.options.timeout,
      })
      if (outcome.kind === 'app-error') {
        this.log.error({ ...tags, worker: lease.pid, code: 'GH_ERR_ASGI_APP' }, outcome.message.trimEnd())
        if (!res.headersSent) sendError(res, 'GH_ERR_ASGI_APP')
        else res.destroy()
      } else if (outcome.kind === 'timeout') {
        this.log.error(
          { ...tags, worker: lease.pid, code: 'GH_ERR_ASGI_TIMEOUT' },
          `ASGI request ran past ${this.options.timeout} ms (timeout); cancelled (the worker logged its stack)`,
        )
        if (!res.headersSent) sendError(res, 'GH_ERR_ASGI_TIMEOUT', { close: true })
        else res.destroy()
      }
    } catch (err) {
      // The pool ended the lease (stuck loop: 504, worker died: 502): its reason names why.
      const why = lease.aborted ? lease.abortReason : err
      const code = why instanceof GatehouseError ? why.code : 'GH_ERR_WORKER_PROTOCOL'
      if (code !== 'GH_ERR_BODY_TOO_LARGE') {
        failed = true
        this.log.error({ ...tags, worker: lease.pid, code, err: why }, 'ASGI request failed')
      }
      if (!res.headersSent) sendError(res, code, code === 'GH_ERR_BODY_TOO_LARGE' ? { close: true } : {})
      else res.destroy()
    } finally {
      lease.release({ failed })
    }
  }

  /** An upgrade request routed here: WebSocket, or plain HTTP for any other protocol. */
  async upgrade(ctx: RequestContext, socket: Duplex, head: Buffer): Promise<void> {
    if (!isWebSocketUpgrade(ctx.req)) {
      await this.handle(ctx)
      return
    }
    await this.websockets.upgrade(ctx.req, ctx.res, socket, head, this.scope(ctx, 'websocket'), this.started)
  }

  async close(): Promise<void> {
    await this.pool.close(this.options.graceful_timeout)
    this.websockets.close()
    this.connections.closeAll()
  }
}

export const asgiAction: ActionDefinition<AsgiOptions> = {
  name: 'asgi',
  summary: 'run a Python ASGI 3.0 app (HTTP, WebSocket, lifespan) in a pool of Gatehouse Python workers',
  schema: asgiSchema,
  create: (options, services) => new AsgiHandler(options, services.log),
}

export type AsgiListener = RequestListener<AsgiHandler> & {
  /** For `server.on('upgrade', app.upgrade)`: WebSockets to the app. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void
}

/**
 * The asgi action as a node:http request listener, with `upgrade`, `close()` and `handler`:
 *
 *   const app = asgi({ app: 'main:app', chdir: '/srv/site', workers: 4 })
 *   const server = createServer(app).listen(8000)
 *   server.on('upgrade', app.upgrade)
 */
export function asgi(options: AsgiOptionsInput & ListenerOptions): AsgiListener {
  const listener = actionListener(asgiSchema, options, (o, log) => new AsgiHandler(o, log))
  const handler = listener.handler
  const log = handler.log
  const prefix = options.prefix ?? '/'
  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const res: ServerResponse = upgradeResponse(req, socket)
    const parsed = parseRequest(req, 100)
    if (typeof parsed === 'string') {
      refuse(res, parsed, log)
      return
    }
    const ctx = buildContext(req, res, parsed, { index: 0, prefix, params: [] }, 1024 * 1024, log)
    handler.upgrade(ctx, socket, head).catch((err: unknown) => {
      log.error({ err, uri: req.url }, 'WebSocket upgrade failed')
      if (!res.headersSent && !socket.destroyed) sendError(res, 'GH_ERR_INTERNAL')
      else socket.destroy()
    })
  }
  return Object.assign(listener, { upgrade })
}
