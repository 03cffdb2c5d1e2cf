/*
 * The `fastcgi` action: pass requests to a FastCGI application with the CGI meta-variables
 * and explicit extra parameters, like nginx's `fastcgi_pass` + `fastcgi_param`. The PHP
 * front controller (gateways/php/action.ts) is the same gateway with its own script resolution.
 * docs/fastcgi.md is the user's view.
 */
import type { Logger } from 'pino'
import { z } from 'zod'
import { existingDir } from '../../core/schema/paths.js'
import { strictObject } from '../../core/schema/strict.js'
import type { FastCGIRequest, FastCGIResponse } from './exchange.js'
import type { FastCGIUpstream } from './managed-pool.js'
import { FastCGIPool, type FastCGIPoolOptions, fastcgiPoolShape } from './pool.js'
import { FastCGIGroupUpstream, type FastCGIProbeBase } from './group.js'
import { GatehouseError } from '../../core/errors.js'
import {
  isGroupRef,
  isIdempotent,
  type UpstreamGroupRef,
  type UpstreamLease,
  upstreamTargetShape,
  withUpstreamAlias,
} from '../../core/upstream/index.js'
import type { ActionDefinition, Handler, RequestContext, SchemaEnv } from '../../core/types.js'
import { routePrefix } from '../../core/types.js'
import { upstreamNote } from '../../core/access-format.js'
import { cancelOnClientClose } from '../../core/cancel.js'
import { requestMeta, type ScriptLocation } from '../../cgi-vars/script.js'
import { relayResponse } from '../../core/response-relay.js'
import type { ResponseBufferOptions } from '../../core/response-buffer.js'
import { type BufferingOptions, bufferingShape, responseBuffering } from '../../core/schema/buffering.js'
import { actionListener, type ListenerOptions, type RequestListener } from '../../http/library-listener.js'
import {
  bodyLength,
  bodySource,
  immediateBody,
  NO_BODY,
  readRequestBody,
  type RequestBody,
  releaseBody,
} from '../../core/request-body.js'

/** Parameter names: what FastCGI applications read (letters, digits, `_`, `.`, `-`). */
const PARAM_NAME = z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, 'not a parameter name')
/** PHP reads parameters as C strings: a NUL would cut the value short. */
const PARAM_VALUE = z.string().refine((v) => !v.includes('\0'), 'NUL in a value')

/** Keys every FastCGI gateway has: the pool's, plus how requests are passed on. */
export const fastcgiGatewayShape = {
  ...fastcgiPoolShape,
  /**
   * Extra parameters sent with every request, after the meta-variables (so they win), like
   * `fastcgi_param`. Static values: SCRIPT_FILENAME, APP_ENV, even PHP_VALUE (config is trusted;
   * request data can only ever produce HTTP_* names).
   */
  params: z.record(PARAM_NAME, PARAM_VALUE).default({}),
  /** Pass the Authorization header as HTTP_AUTHORIZATION (nginx and Caddy do; CGI's default is not to). */
  pass_authorization: z.boolean().default(true),
  /**
   * request_buffering (read every body whole before connecting; chunked bodies always are)
   * and response_buffering (take the response at the app's pace, so its worker is free when
   * it is done): both on by default, as nginx's fastcgi_request_buffering/fastcgi_buffering.
   */
  ...bufferingShape,
}

export function fastcgiSchema(env: SchemaEnv) {
  return withUpstreamAlias(
    'pass',
    strictObject({
      /**
       * `unix:/path`, `host:port` or `[v6]:port` of the FastCGI server; or a list of them, or
       * the name of an `[upstreams.NAME]` group (`upstream` is the same key).
       */
      ...upstreamTargetShape(env, 'pass'),
      /** DOCUMENT_ROOT and the base of PATH_TRANSLATED (unset when not given). */
      document_root: existingDir(env).optional(),
      ...fastcgiGatewayShape,
    }),
    true,
  )
}

export type FastCGIOptions = z.output<ReturnType<typeof fastcgiSchema>>
export type FastCGIOptionsInput = z.input<ReturnType<typeof fastcgiSchema>>

export type FastCGIGatewayOptions = FastCGIPoolOptions &
  BufferingOptions & {
    params: Record<string, string>
    pass_authorization: boolean
  }

/** A pool to one upstream (or one per server of a group) and the request path through it: body, parameters, response. */
export class FastCGIGateway {
  /** The upstream: one server's pool, a managed pool, or a group of servers. */
  readonly pool: FastCGIUpstream | FastCGIGroupUpstream
  /** When the upstream is a group: its servers' pools, the balancing and the retries. */
  readonly group: FastCGIGroupUpstream | undefined
  private readonly params: [string, string][]
  private readonly buffering: ResponseBufferOptions | undefined

  /**
   * `address`: a FastCGI server's address, an upstream of its own (a managed pool), or an
   * upstream group (`probe`: what its health checks send besides the path).
   */
  constructor(
    address: string | FastCGIUpstream | UpstreamGroupRef,
    private readonly options: FastCGIGatewayOptions,
    private readonly log: Logger,
    probe: FastCGIProbeBase = { params: {}, root: '' },
  ) {
    if (isGroupRef(address)) {
      if (!address.spec)
        throw new GatehouseError(
          'GH_ERR_CONFIG',
          `upstream group ${JSON.stringify(address.name)} is named outside a config that defines it`,
        )
      this.group = new FastCGIGroupUpstream(address.spec, options, log, probe)
      this.pool = this.group
    } else this.pool = typeof address === 'string' ? new FastCGIPool(address, options, log) : address
    this.params = Object.entries(options.params)
    this.buffering = responseBuffering(options, 'gatehouse-fastcgi-')
  }

  async serve(ctx: RequestContext, where: ScriptLocation): Promise<void> {
    const { cancel, done } = cancelOnClientClose(ctx.res)
    const tags = { upstream: this.pool.upstream, script: where.scriptFilename || where.scriptName || '/' }
    let body: RequestBody = NO_BODY
    const note = upstreamNote(ctx.req)
    let lease: UpstreamLease | undefined
    try {
      // Most requests have no body, or a Content-Length one that streams: known at once,
      // without a turn of the event loop. Only a body to spool is awaited.
      body =
        immediateBody(ctx.req, this.options.request_buffering) ??
        (await readRequestBody(ctx.req, { limit: ctx.maxBodyBytes, buffer: this.options.request_buffering }))
      const params = requestMeta(ctx, where, {
        contentLength: bodyLength(body),
        passAuthorization: this.options.pass_authorization,
      })
      for (const [name, value] of this.params) params[name] = value
      const request: FastCGIRequest = {
        params,
        signal: cancel,
        maxBodyBytes: ctx.maxBodyBytes,
        onStderr: (line) => this.log.warn({ ...tags, stream: 'stderr' }, line),
        upstream: note,
      }
      // A managed pool's lease overwrites the start (and sets the end when it is released).
      note.start = performance.now()
      let response: FastCGIResponse
      if (this.group) {
        // A body read from the client as it arrives cannot be sent twice; none, or a spooled one, can.
        const retryable = isIdempotent(ctx.method) && body.kind !== 'stream'
        const taken = await this.group.send(request, () => bodySource(body, ctx.req), retryable)
        lease = taken.lease
        response = taken.response
        tags.upstream = taken.server
      } else {
        const source = bodySource(body, ctx.req)
        if (source !== undefined) request.body = source
        if (this.pool instanceof FastCGIPool) note.addr = [this.pool.upstream]
        response = await (this.pool as FastCGIUpstream).request(request)
      }
      const relaying = relayResponse(ctx, response, this.log, tags, this.buffering)
      if (relaying) await relaying
    } catch (err) {
      // The response broke after its head (the server died mid-body): a failure of the server.
      if (lease) lease.release(cancel.aborted ? 'neutral' : 'failure')
      if (cancel.aborted) return
      throw err
    } finally {
      lease?.release()
      if (note.start !== undefined) note.end ??= performance.now()
      done()
      if (body.kind === 'spooled') await releaseBody(body)
    }
  }

  close(): Promise<void> {
    return this.pool.close()
  }
}

export class FastCGIHandler implements Handler {
  readonly gateway: FastCGIGateway

  constructor(
    private readonly options: FastCGIOptions,
    log: Logger,
  ) {
    this.gateway = new FastCGIGateway(options.pass, options, log, {
      params: options.params,
      root: options.document_root ?? '',
    })
  }

  handle(ctx: RequestContext): Promise<void> {
    // Mounted like an application at the route's prefix: SCRIPT_NAME is the prefix, PATH_INFO the rest.
    const prefix = routePrefix(ctx)
    return this.gateway.serve(ctx, {
      scriptName: prefix,
      pathInfo: ctx.path.slice(prefix.length),
      scriptFilename: '',
      documentRoot: this.options.document_root ?? '',
    })
  }

  close(): Promise<void> {
    return this.gateway.close()
  }
}

export const fastcgiAction: ActionDefinition<FastCGIOptions> = {
  name: 'fastcgi',
  summary:
    'pass requests to a FastCGI application over a pool of kept-alive connections (nginx fastcgi_pass)',
  schema: fastcgiSchema,
  create: (options, services) => new FastCGIHandler(options, services.log),
}

/**
 * The fastcgi action as a node:http request listener:
 *
 *   createServer(fastcgi({ pass: 'unix:/run/app.sock', params: { SCRIPT_FILENAME: '/srv/app.fcgi' } }))
 */
export function fastcgi(options: FastCGIOptionsInput & ListenerOptions): RequestListener<FastCGIHandler> {
  return actionListener(fastcgiSchema, options, (o, log) => new FastCGIHandler(o, log))
}
