/*
 * The `wsgi` action: a pool of Python workers running a WSGI app (PEP 3333), reached over
 * the bridge protocol (src/gateways/python/codec.ts, docs/python-bridge.md). docs/wsgi.md is the
 * user's view.
 */
import type { Logger } from 'pino'
import { z } from 'zod'
import { duration } from '../../core/schema/units.js'
import { strictObject } from '../../core/schema/strict.js'
import { continueDeferred, exchangeInput, PythonAppHandler, pythonAppShape } from './pool.js'
import { spoolBody, type SpooledBody } from '../../core/body-spool.js'
import { GatehouseError } from '../../core/errors.js'
import { sendError } from '../../core/respond.js'
import type { ResponseBufferOptions } from '../../core/response-buffer.js'
import { bufferingShape, responseBuffering } from '../../core/schema/buffering.js'
import type { ActionDefinition, Handler, PoolSite, RequestContext, SchemaEnv } from '../../core/types.js'
import { requestMeta } from '../../cgi-vars/script.js'
import { routePrefix } from '../../core/types.js'
import { actionListener, type ListenerOptions, type RequestListener } from '../../http/library-listener.js'

export function wsgiSchema(env: SchemaEnv) {
  return strictObject({
    ...pythonAppShape(env),
    /** Requests one worker runs at once (threads; 1 runs the app on the connection's thread). */
    threads: z.number().int().min(1).max(1024).default(1),
    /**
     * Requests queued on a worker's connection while all its threads are busy (and every
     * other worker's too): they run back to back without a wake-up of Node in between.
     */
    pipeline: z.number().int().min(0).max(64).default(64),
    /**
     * A worker whose threads are all busy and that has sent nothing for this long is
     * stalled: nothing more is pipelined onto it; what waits on it unstarted goes to another
     * worker (idempotent requests whose body can be sent again) or is answered 503 at
     * queue_timeout (0: pipeline regardless, the old behaviour).
     */
    pipeline_stall: duration.prefault('200ms'),
    /** Request and response buffering (docs/reliability.md): on by default, as nginx's. */
    ...bufferingShape,
  })
}

export type WsgiOptions = z.output<ReturnType<typeof wsgiSchema>>
export type WsgiOptionsInput = z.input<ReturnType<typeof wsgiSchema>>

const NON_ASCII = /[^\x00-\x7f]/

/** A decoded path as a WSGI native string: its UTF-8 bytes, one char each (latin-1). */
function nativePath(path: string): string {
  return NON_ASCII.test(path) ? Buffer.from(path, 'utf8').toString('latin1') : path
}

export class WsgiHandler extends PythonAppHandler implements Handler {
  private readonly buffering: ResponseBufferOptions | undefined

  constructor(
    private readonly options: WsgiOptions,
    log: Logger,
    pools?: PoolSite,
  ) {
    super(
      options,
      {
        interface: 'wsgi',
        args: ['--threads', String(options.threads)],
        // Threads, plus requests pipelined onto a worker whose threads are all busy.
        capacity: options.threads + options.pipeline,
        parallel: options.threads,
        stall_timeout: options.pipeline_stall,
        request_terminate_timeout: options.timeout,
      },
      log,
      pools,
    )
    this.buffering = responseBuffering(options, 'gatehouse-wsgi-')
  }

  environ(ctx: RequestContext, contentLength: number | undefined): Record<string, string> {
    const prefix = routePrefix(ctx)
    const meta = requestMeta(
      ctx,
      { scriptName: prefix, pathInfo: ctx.path.slice(prefix.length), scriptFilename: '', documentRoot: '' },
      { contentLength, passAuthorization: true, applicationOnly: true },
    )
    meta.SCRIPT_NAME = nativePath(this.options.root_path + prefix)
    meta.PATH_INFO = nativePath(ctx.path.slice(prefix.length))
    // The nearest X-Forwarded-For address that is not one of our proxies is the client.
    const fwd = this.forwarded.resolve(ctx.req, ctx.conn.remoteAddress)
    if (fwd.address !== null) meta.REMOTE_ADDR = fwd.address
    const scheme: string = fwd.scheme ?? ctx.scheme
    meta['wsgi.url_scheme'] = scheme
    if (scheme === 'https') meta.HTTPS = 'on'
    else if (meta.HTTPS !== undefined) delete meta.HTTPS
    return meta
  }

  handle(ctx: RequestContext): Promise<void> {
    const { headers } = ctx.req
    if (
      this.options.request_buffering &&
      (headers['transfer-encoding'] !== undefined || Number(headers['content-length'] ?? 0) > 0)
    )
      return this.serveSpooled(ctx)
    return this.serve(ctx, ({ contentLength, hasBody }) => {
      const input = exchangeInput(ctx, hasBody, this.environ(ctx, contentLength))
      if (this.buffering) input.buffering = this.buffering
      return input
    })
  }

  /**
   * request_buffering: the body is read whole (memory, then a temporary file) before a
   * worker is taken, so a slow upload holds none; the app then reads it at disk speed, with
   * its CONTENT_LENGTH even when the client sent it chunked. A request whose worker died
   * before starting it can be sent again.
   */
  private async serveSpooled(ctx: RequestContext): Promise<void> {
    const { req, res } = ctx
    if (continueDeferred(ctx)) res.writeContinue()
    let spool: SpooledBody
    try {
      spool = await spoolBody(req, ctx.maxBodyBytes, { prefix: 'gatehouse-wsgi-' })
    } catch (err) {
      if (err instanceof GatehouseError && err.code === 'GH_ERR_BODY_TOO_LARGE') {
        if (!res.headersSent) sendError(res, err.code, { close: true })
        return
      }
      // The client left (or its connection failed) mid-upload: nobody to answer.
      if (req.destroyed || res.destroyed) return
      throw err
    }
    try {
      await this.serve(
        ctx,
        () => {
          const input = exchangeInput(ctx, spool.length > 0, this.environ(ctx, spool.length))
          input.body = spool.length > 0 ? spool.stream() : null
          input.expectContinue = false
          if (this.buffering) input.buffering = this.buffering
          return input
        },
        true,
      )
    } finally {
      await spool.dispose()
    }
  }
}

export const wsgiAction: ActionDefinition<WsgiOptions> = {
  name: 'wsgi',
  summary: 'run a Python WSGI app (PEP 3333) in a pool of Gatehouse Python workers',
  schema: wsgiSchema,
  create: (options, services) => new WsgiHandler(options, services.log, services.pools),
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
