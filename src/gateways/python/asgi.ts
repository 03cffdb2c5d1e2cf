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
import type { WorkerLease } from '../../process/lease.js'
import { type AsgiScopeParts, asgiTls, encodeAsgiRequest } from './asgi-scope.js'
import { tlsSocket } from '../../cgi-vars/script.js'
import { exchangeInput, PythonAppHandler, pythonAppShape } from './pool.js'
import { AsgiWebSockets, isWebSocketUpgrade } from './websocket.js'
import type { ExchangeOutcome } from './connection.js'
import { buildContext, parseRequest } from '../../http/context.js'
import { upgradeResponse } from '../../http/upgrade.js'
import type { ActionDefinition, Handler, PoolSite, RequestContext, SchemaEnv } from '../../core/types.js'
import { routePrefix } from '../../core/types.js'
import { actionListener, type ListenerOptions, type RequestListener } from '../../http/library-listener.js'
import { refuse, sendError } from '../../core/respond.js'

/** ASGI sends its scope (the `start` of the exchange), not an environ. */
const NO_ENVIRON: Readonly<Record<string, string>> = Object.freeze({})

export function asgiSchema(env: SchemaEnv) {
  return strictObject({
    ...pythonAppShape(env),
    /** Requests and WebSocket handshakes one worker takes at once (its asyncio loop runs them all). */
    concurrency: z.number().int().min(1).max(100_000).default(1000),
    /**
     * true: ASGI's current rule, `path` includes `root_path`. false: the older convention
     * (Starlette before 0.33, uvicorn before 0.26), where `path` is what follows `root_path`.
     * "auto" (default): the current rule, unless the app runs on a Starlette older than 0.33
     * (Debian's FastAPI 0.92 does): then the older one, decided by the worker.
     */
    path_includes_root_path: z.union([z.boolean(), z.literal('auto')]).default('auto'),
    /** Largest WebSocket message accepted from a client; a larger one closes the socket with 1009. */
    ws_max_message: size.prefault(16 * 1024 * 1024),
    /** Ping every open WebSocket this often; one that has not answered the last ping is dropped (0: off). */
    ws_ping_interval: duration.prefault(20),
    /** Offer permessage-deflate to WebSocket clients. */
    ws_per_message_deflate: z.boolean().default(false),
    /**
     * WebSockets one worker holds at most (handshakes included): past it on every worker a
     * new upgrade is refused with 503 GH_ERR_OVERLOADED and Retry-After (0: no limit).
     * Whatever the limit, a new WebSocket goes to the worker holding the fewest.
     */
    ws_max_per_worker: z.number().int().min(0).max(1_000_000).default(1000),
    /**
     * A worker holding requests whose event loop has not sent its heartbeat (every 100 ms)
     * for this long is stalled (blocked in synchronous code): new requests go to another
     * worker or wait in the queue, where queue_timeout answers them with 503 (0: off).
     */
    loop_stall: duration.prefault('1s'),
  })
}

export type AsgiOptions = z.output<ReturnType<typeof asgiSchema>>
export type AsgiOptionsInput = z.input<ReturnType<typeof asgiSchema>>

/** Extra time past `timeout` before the pool takes a worker for stuck (its loop does not answer). */
const STUCK_GRACE_MS = 10_000

export class AsgiHandler extends PythonAppHandler implements Handler {
  readonly websockets: AsgiWebSockets

  constructor(
    private readonly options: AsgiOptions,
    log: Logger,
    pools?: PoolSite,
  ) {
    super(
      options,
      {
        interface: 'asgi',
        args: options.path_includes_root_path === 'auto' ? ['--root-path-auto'] : [],
        capacity: options.concurrency,
        // Any request in flight makes the worker's liveness matter: its loop runs them all.
        parallel: 1,
        stall_timeout: options.loop_stall,
        ordered: false,
        // The worker cancels a request at `timeout` itself; the pool steps in only when
        // the worker's loop is stuck (it dumps the stacks and kills it).
        request_terminate_timeout: options.timeout > 0 ? options.timeout + STUCK_GRACE_MS : 0,
      },
      log,
      pools,
    )
    this.websockets = new AsgiWebSockets(
      {
        maxMessageBytes: options.ws_max_message,
        pingInterval: options.ws_ping_interval,
        perMessageDeflate: options.ws_per_message_deflate,
        handshakeTimeout: options.timeout,
        maxPerWorker: options.ws_max_per_worker,
      },
      this.pool,
      this.connections,
      log,
    )
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
      // ASGI spec: "1.0", "1.1" or "2" (node's HTTP/2 request says "2.0").
      httpVersion: req.httpVersionMajor === 2 ? '2' : req.httpVersion,
      method: ctx.method,
      scheme: type === 'http' ? (secure ? 'https' : 'http') : secure ? 'wss' : 'ws',
      path:
        this.options.path_includes_root_path !== false
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
      ...scopeTls(ctx),
    }
  }

  handle(ctx: RequestContext): Promise<void> {
    return this.serve(ctx, ({ hasBody }) => {
      const scope = this.scope(ctx, 'http')
      return exchangeInput(
        ctx,
        hasBody,
        NO_ENVIRON,
        (id, more, responseWindow, requestWindow) =>
          encodeAsgiRequest(id, scope, more, responseWindow, requestWindow),
        this.options.timeout,
      )
    })
  }

  /** Past `timeout` the worker cancelled the request (and logged its stack): 504. */
  protected override settled(ctx: RequestContext, lease: WorkerLease, outcome: ExchangeOutcome): void {
    if (outcome.kind !== 'timeout') return
    const { req, res } = ctx
    this.log.error(
      { method: ctx.method, uri: req.url, worker: lease.pid, code: 'GH_ERR_ASGI_TIMEOUT' },
      `ASGI request ran past ${this.options.timeout} ms (timeout); cancelled (the worker logged its stack)`,
    )
    if (!res.headersSent) sendError(res, 'GH_ERR_ASGI_TIMEOUT', { close: true })
    else res.destroy()
  }

  /** An upgrade request routed here: WebSocket, or plain HTTP for any other protocol. */
  async upgrade(ctx: RequestContext, socket: Duplex, head: Buffer): Promise<void> {
    if (!isWebSocketUpgrade(ctx.req)) {
      await this.handle(ctx)
      return
    }
    await this.websockets.upgrade(ctx.req, ctx.res, socket, head, this.scope(ctx, 'websocket'), this.started)
  }

  protected override closeSessions(): void {
    this.websockets.close()
  }
}

export const asgiAction: ActionDefinition<AsgiOptions> = {
  name: 'asgi',
  summary: 'run a Python ASGI 3.0 app (HTTP, WebSocket, lifespan) in a pool of Gatehouse Python workers',
  schema: asgiSchema,
  create: (options, services) => new AsgiHandler(options, services.log, services.pools),
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

/** The TLS extension of a request whose connection is TLS itself (not one a proxy says was). */
function scopeTls(ctx: RequestContext): Pick<AsgiScopeParts, 'tls'> {
  const socket = tlsSocket(ctx)
  return socket ? { tls: asgiTls(socket.getProtocol(), socket.getCipher()?.standardName) } : {}
}
