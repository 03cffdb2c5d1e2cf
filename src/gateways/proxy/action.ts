/**
 * The `proxy` action (docs/proxy.md): pass requests to an upstream HTTP/1.1 server, like
 * nginx's proxy_pass and Caddy's reverse_proxy. Streams both ways with backpressure (request
 * and response buffering are options), sets X-Forwarded-* and Forwarded, drops hop-by-hop
 * fields, passes Upgrade requests (WebSocket) through, and maps failures to 502/504.
 */
import { isIP } from 'node:net'
import { Transform, type Readable } from 'node:stream'
import { z } from 'zod'
import { upstreamNote } from '../../core/access-format.js'
import { parseAllowList } from '../../core/allow-list.js'
import { cancelOnClientClose } from '../../core/cancel.js'
import { GatehouseError } from '../../core/errors.js'
import { IDEMPOTENT_METHODS } from '../../core/http-headers.js'
import { bodySource, readRequestBody, type RequestBody, releaseBody } from '../../core/request-body.js'
import { refuse } from '../../core/respond.js'
import { bufferingShape, responseBuffering } from '../../core/schema/buffering.js'
import { strictObject } from '../../core/schema/strict.js'
import { duration } from '../../core/schema/units.js'
import {
  type ActionDefinition,
  type Handler,
  type RequestContext,
  routePrefix,
  type SchemaEnv,
} from '../../core/types.js'
import { isRetryable, proxyError } from './errors.js'
import { exchange } from './exchange.js'
import { requestHeaders } from './headers.js'
import { createServer, type UpstreamServer, UpstreamSet } from './servers.js'
import { parseUpstreamUrl, upstreamPath } from './target.js'
import { tunnel } from './tunnel.js'

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const fieldName = z.string().regex(TOKEN, 'a header name is a token (letters, digits, -)')

/** `host = "$proxy_host"`: the upstream's host:port (nginx's variable of that name). */
export const PROXY_HOST = '$proxy_host'

const proxySchema = (env: SchemaEnv) =>
  strictObject({
    /** `http://host:port[/path]`, `https://...`, or `unix:/path/to.sock`. */
    upstream: z.string().transform((value, ctx) => {
      try {
        return parseUpstreamUrl(value, env.baseDir)
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message })
        return z.NEVER
      }
    }),
    connect_timeout: duration.prefault(5),
    /** From the request sent to the response's head (nginx's proxy_read_timeout, for the first byte). */
    first_byte_timeout: duration.prefault(60),
    /** Between two reads of the response body. */
    idle_timeout: duration.prefault(60),
    /** How long an unused kept-alive upstream connection is kept. */
    keepalive_timeout: duration.prefault(4),
    /** The Host sent upstream: absent, the client's (Caddy's default); "$proxy_host", the upstream's; else this value. */
    host: z
      .string()
      .regex(/^[\x21-\x7e]+$/, 'a host is printable ASCII without spaces')
      .optional(),
    /** Remove the route's prefix from the path; default: true when `upstream` has a path part (nginx). */
    strip_prefix: z.boolean().optional(),
    /** Request fields set (replacing the client's); an empty value removes the field. */
    set_headers: z
      .record(fieldName, z.string().regex(/^[\t\x20-\x7e\x80-\xff]*$/, 'no control characters'))
      .default({}),
    /** Request fields removed. */
    remove_headers: z.array(fieldName).default([]),
    /** Peers (IPs, CIDR blocks) whose X-Forwarded-* and Forwarded are kept and appended to. */
    trusted_proxies: z
      .array(z.string())
      .default([])
      .superRefine((entries, ctx) => {
        try {
          parseAllowList(entries)
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: (err as Error).message })
        }
      }),
    ...bufferingShape,
    /** Streamed by default (Caddy's choice): the upstream is an HTTP server with its own event loop. */
    request_buffering: z.boolean().default(false),
    response_buffering: z.boolean().default(false),
  })

export type ProxyOptions = z.output<ReturnType<typeof proxySchema>>

/** A chunked body streamed upstream, counted against the route's limit on the way. */
function limited(req: Readable, limit: number): Readable {
  let seen = 0
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length
      if (seen > limit) cb(new GatehouseError('GH_ERR_BODY_TOO_LARGE', `over ${limit} bytes`))
      else cb(null, chunk)
    },
  })
  req.on('error', (err) => counter.destroy(err))
  return req.pipe(counter)
}

export function createProxyHandler(options: ProxyOptions): Handler {
  const timeouts = {
    connectMs: options.connect_timeout,
    firstByteMs: options.first_byte_timeout,
    idleMs: options.idle_timeout,
    keepAliveMs: options.keepalive_timeout,
  }
  const servers = new UpstreamSet([createServer(options.upstream, timeouts)])
  const trusted = options.trusted_proxies.length > 0 ? parseAllowList(options.trusted_proxies) : null
  const set = new Map(
    Object.entries(options.set_headers).map(([name, value]) => [name.toLowerCase(), [name, value] as const]),
  )
  const remove = new Set(options.remove_headers.map((n) => n.toLowerCase()))
  const strip = options.strip_prefix ?? options.upstream.basePath !== ''
  const buffering = responseBuffering(options, 'gatehouse-proxy-')
  const bufferRequest = options.request_buffering

  const isTrusted = (address: string): boolean => {
    if (trusted === null || address === '') return false
    const family = isIP(address)
    return family !== 0 && trusted.check(address, family === 6 ? 'ipv6' : 'ipv4')
  }

  const hostFor = (server: UpstreamServer): string | undefined =>
    options.host === undefined ? undefined : options.host === PROXY_HOST ? server.url.authority : options.host

  const pathFor = (ctx: RequestContext, server: UpstreamServer): string =>
    upstreamPath(
      { rawPath: ctx.rawPath, path: ctx.path, query: ctx.query, prefix: routePrefix(ctx) },
      server.url.basePath,
      strip,
    )

  const headersFor = (ctx: RequestContext, server: UpstreamServer, contentLength?: number | null) =>
    requestHeaders({
      raw: ctx.req.rawHeaders,
      remoteAddress: ctx.conn.remoteAddress,
      scheme: ctx.scheme,
      trusted: isTrusted(ctx.conn.remoteAddress),
      host: hostFor(server),
      set,
      remove,
      ...(contentLength !== undefined ? { contentLength } : {}),
    })

  async function handle(ctx: RequestContext): Promise<void> {
    const { req, res } = ctx
    const declared = req.headers['content-length']
    if (declared !== undefined && Number(declared) > ctx.maxBodyBytes) {
      refuse(res, 'GH_ERR_BODY_TOO_LARGE', ctx.log)
      return
    }
    const chunked = req.headers['transfer-encoding'] !== undefined
    const hasBody = chunked || (declared !== undefined && declared !== '0')
    let spooled: RequestBody | undefined
    if (hasBody && bufferRequest) {
      try {
        spooled = await readRequestBody(req, { limit: ctx.maxBodyBytes, buffer: true })
      } catch (err) {
        // The client went away in the middle of its body: nobody to answer.
        if (req.destroyed) return
        throw err
      }
    }
    const { cancel, done } = cancelOnClientClose(res)
    const note = upstreamNote(req)
    note.start = performance.now()
    // A request is sent again (once, to another server when there is one) only when it is
    // idempotent, its body can be read again, the connection broke before any answer, and
    // nothing was written to the client.
    const replayable = IDEMPOTENT_METHODS.has(ctx.method) && (!hasBody || spooled !== undefined)
    const tried: UpstreamServer[] = []
    try {
      for (;;) {
        const server = servers.pick(tried)!
        tried.push(server)
        note.addr = server.url.label
        const body: Readable | null = spooled
          ? (bodySource(spooled, req) ?? null)
          : !hasBody
            ? null
            : chunked
              ? limited(req, ctx.maxBodyBytes)
              : req
        const headers = headersFor(ctx, server, spooled ? (bodySourceLength(spooled) ?? null) : undefined)
        try {
          await exchange(
            server.pool,
            { method: ctx.method, path: pathFor(ctx, server), headers, body, signal: cancel },
            res,
            buffering,
            ctx.log,
            server.url.label,
          )
          return
        } catch (err) {
          if (cancel.aborted) return
          if (replayable && tried.length < 2 && !res.headersSent && isRetryable(err)) {
            ctx.log.debug(
              { err, upstream: server.url.label },
              'upstream connection broke before an answer: retried',
            )
            continue
          }
          // A body over the limit: the client may still be sending; refuse() lingers.
          if (err instanceof GatehouseError && err.code === 'GH_ERR_BODY_TOO_LARGE') {
            refuse(res, 'GH_ERR_BODY_TOO_LARGE', ctx.log)
            return
          }
          throw proxyError(err, server.url.label)
        }
      }
    } finally {
      note.end ??= performance.now()
      done()
      if (spooled) await releaseBody(spooled)
    }
  }

  async function upgrade(
    ctx: RequestContext,
    socket: import('node:stream').Duplex,
    head: Buffer,
  ): Promise<void> {
    const server = servers.pick()!
    const note = upstreamNote(ctx.req)
    note.start = performance.now()
    note.addr = server.url.label
    const protocol = ctx.req.headers.upgrade ?? 'websocket'
    try {
      await tunnel(
        server.pool,
        ctx,
        socket,
        head,
        { path: pathFor(ctx, server), headers: headersFor(ctx, server), protocol },
        ctx.log,
        server.url.label,
      )
    } finally {
      note.end = performance.now()
    }
  }

  return { handle, upgrade, close: () => servers.close() }
}

function bodySourceLength(body: RequestBody): number | undefined {
  return body.kind === 'spooled' ? body.spool.length : body.kind === 'stream' ? body.length : undefined
}

export const proxyAction: ActionDefinition<ProxyOptions> = {
  name: 'proxy',
  summary: 'pass requests to an upstream HTTP server (nginx `proxy_pass`, Caddy `reverse_proxy`)',
  schema: proxySchema,
  create: (options) => createProxyHandler(options),
}
