/*
 * The `wsgi` action: a pool of Python workers running a WSGI app (PEP 3333), reached over
 * the bridge protocol (src/gateways/python/codec.ts, docs/python-bridge.md). docs/wsgi.md is the
 * user's view.
 */
import type { Logger } from 'pino'
import { z } from 'zod'
import { strictObject } from '../../core/schema/strict.js'
import { exchangeInput, PythonAppHandler, pythonAppShape } from './pool.js'
import type { ActionDefinition, Handler, RequestContext, SchemaEnv } from '../../core/types.js'
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

export class WsgiHandler extends PythonAppHandler implements Handler {
  constructor(
    private readonly options: WsgiOptions,
    log: Logger,
  ) {
    super(
      options,
      {
        interface: 'wsgi',
        args: ['--threads', String(options.threads)],
        // Threads, plus requests pipelined onto a worker whose threads are all busy.
        capacity: options.threads + options.pipeline,
        request_terminate_timeout: options.timeout,
      },
      log,
    )
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

  handle(ctx: RequestContext): Promise<void> {
    return this.serve(ctx, ({ contentLength, hasBody }) =>
      exchangeInput(ctx, hasBody, Object.entries(this.environ(ctx, contentLength))),
    )
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
