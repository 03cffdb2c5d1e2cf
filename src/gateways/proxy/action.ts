/**
 * The `proxy` action (docs/proxy.md): pass requests to an upstream HTTP/1.1 server, like
 * nginx's proxy_pass and Caddy's reverse_proxy. Streams both ways with backpressure (request
 * and response buffering are options), sets X-Forwarded-* and Forwarded, drops hop-by-hop
 * fields, passes Upgrade requests (WebSocket) through, and maps failures to 502/504. The
 * upstream is one server or an upstream group (core/upstream: balancing, health, retries).
 */
import { isIP } from 'node:net'
import { type Duplex, type Readable, Transform } from 'node:stream'
import { z } from 'zod'
import { upstreamNote } from '../../core/access-format.js'
import { parseAllowList } from '../../core/allow-list.js'
import { cancelOnClientClose } from '../../core/cancel.js'
import { GatehouseError } from '../../core/errors.js'
import { bodySource, readRequestBody, type RequestBody, releaseBody } from '../../core/request-body.js'
import { refuse, sendError } from '../../core/respond.js'
import { type BodySink, ResponseBuffer } from '../../core/response-buffer.js'
import { bufferingShape, responseBuffering } from '../../core/schema/buffering.js'
import { strictObject } from '../../core/schema/strict.js'
import { duration } from '../../core/schema/units.js'
import {
  type ActionDefinition,
  type Handler,
  type HandlerServices,
  type RequestContext,
  routePrefix,
  type SchemaEnv,
} from '../../core/types.js'
import {
  type HealthProbe,
  isGroupRef,
  isIdempotent,
  releaseGroup,
  takeGroup,
  tryUpstreams,
  type UpstreamGroup,
  type UpstreamGroupRef,
  type UpstreamLease,
  upstreamTargetSchema,
} from '../../core/upstream/index.js'
import { isRetryable, proxyError } from './errors.js'
import { send, type UpstreamHead } from './exchange.js'
import { requestHeaders, responseHeaders } from './headers.js'
import { createServer, groupServerUrl, type UpstreamServer } from './servers.js'
import { parseUpstreamUrl, type UpstreamUrl, upstreamPath } from './target.js'
import { tunnel } from './tunnel.js'

/** An `[upstreams.NAME]` name (core/upstream/schema.ts): no `:` or `/`. */
const GROUP_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const fieldName = z.string().regex(TOKEN, 'a header name is a token (letters, digits, -)')

/** `host = "$proxy_host"`: the upstream's host:port (nginx's variable of that name). */
export const PROXY_HOST = '$proxy_host'

const proxySchema = (env: SchemaEnv) =>
  strictObject({
    /**
     * One server: `http://host:port[/path]`, `https://...`, `unix:/path/to.sock`; or an
     * upstream group: a list of servers (`host:port`, `unix:/path`, or objects with weights)
     * or the name of an `[upstreams.NAME]` table.
     */
    upstream: z.union([z.string(), z.array(z.unknown())]).transform((value, ctx): ProxyUpstream => {
      if (typeof value === 'string') {
        // A bare word names an [upstreams.NAME] group (resolved with the whole config).
        if (GROUP_NAME.test(value) && !/^\d+$/.test(value)) return { kind: 'upstream-group', name: value }
        try {
          return value.includes('://') || value.startsWith('unix:')
            ? parseUpstreamUrl(value, env.baseDir)
            : groupServerUrl(value, env.baseDir)
        } catch (err) {
          ctx.addIssue({
            code: 'custom',
            message: `${(err as Error).message} (give http://host:port[/path], unix:/path, host:port, or a group name)`,
          })
          return z.NEVER
        }
      }
      const parsed = upstreamTargetSchema(env).safeParse(value)
      if (!parsed.success) {
        for (const issue of parsed.error.issues)
          ctx.addIssue({ code: 'custom', path: issue.path as (string | number)[], message: issue.message })
        return z.NEVER
      }
      return typeof parsed.data === 'string' ? groupServerUrl(parsed.data, env.baseDir) : parsed.data
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

/** One server, or a group (core/upstream). */
export type ProxyUpstream = UpstreamUrl | UpstreamGroupRef

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

export function createProxyHandler(options: ProxyOptions, services?: HandlerServices): Handler {
  const timeouts = {
    connectMs: options.connect_timeout,
    firstByteMs: options.first_byte_timeout,
    idleMs: options.idle_timeout,
    keepAliveMs: options.keepalive_timeout,
  }
  const target = options.upstream
  // The seam where a server is picked: one server, or a group's lease per try.
  const single = isGroupRef(target) ? null : createServer(target, timeouts)
  const servers = new Map<string, UpstreamServer>()
  const serverFor = (address: string): UpstreamServer => {
    let s = servers.get(address)
    if (!s) servers.set(address, (s = createServer(groupServerUrl(address, process.cwd()), timeouts)))
    return s
  }
  let group: UpstreamGroup | null = null
  if (isGroupRef(target)) {
    const spec = target.spec
    if (!spec)
      throw new GatehouseError(
        'GH_ERR_CONFIG',
        `upstream group ${JSON.stringify(target.name)} is not defined`,
      )
    for (const server of spec.servers) serverFor(server.address)
    const health = spec.health
    const probe: HealthProbe = async (server, signal) => {
      const s = serverFor(server.address)
      const res = await s.pool.request({
        path: health?.path ?? '/',
        method: 'GET',
        signal,
        headers: { host: s.url.authority, 'user-agent': 'gatehouse-health-check' },
      })
      await res.body.dump()
      const ok = health?.status.length
        ? health.status.includes(res.statusCode)
        : res.statusCode >= 200 && res.statusCode < 400
      if (!ok) throw new Error(`health check answered ${res.statusCode}`)
    }
    group = takeGroup(spec, probe, services?.log)
  }
  const trusted = options.trusted_proxies.length > 0 ? parseAllowList(options.trusted_proxies) : null
  const set = new Map(
    Object.entries(options.set_headers).map(([name, value]) => [name.toLowerCase(), [name, value] as const]),
  )
  const remove = new Set(options.remove_headers.map((n) => n.toLowerCase()))
  const basePath = single?.url.basePath ?? ''
  const strip = options.strip_prefix ?? basePath !== ''
  const buffering = responseBuffering(options, 'gatehouse-proxy-')
  const bufferRequest = options.request_buffering

  const isTrusted = (address: string): boolean => {
    if (trusted === null || address === '') return false
    const family = isIP(address)
    return family !== 0 && trusted.check(address, family === 6 ? 'ipv6' : 'ipv4')
  }

  const hostFor = (server: UpstreamServer): string | undefined =>
    options.host === undefined ? undefined : options.host === PROXY_HOST ? server.url.authority : options.host

  const pathFor = (ctx: RequestContext): string =>
    upstreamPath(
      { rawPath: ctx.rawPath, path: ctx.path, query: ctx.query, prefix: routePrefix(ctx) },
      basePath,
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
    const path = pathFor(ctx)
    // Sent again (to another server of a group, or once on a new connection to a single
    // server) only when idempotent, its body can be read again, the connection broke
    // before any answer, and nothing was written to the client.
    const replayable = isIdempotent(ctx.method) && (!hasBody || spooled !== undefined)
    const attempt = async (server: UpstreamServer): Promise<UpstreamHead> => {
      ;(note.addr ??= []).push(server.url.label)
      const body: Readable | null = spooled
        ? (bodySource(spooled, req) ?? null)
        : !hasBody
          ? null
          : chunked
            ? limited(req, ctx.maxBodyBytes)
            : req
      const headers = headersFor(ctx, server, spooled ? spooledLength(spooled) : undefined)
      try {
        return await send(
          server.pool,
          { method: ctx.method, path, headers, body, signal: cancel },
          res,
          ctx.log,
          server.url.label,
        )
      } catch (err) {
        throw cancel.aborted ? err : proxyError(err, server.url.label)
      }
    }
    let lease: UpstreamLease | undefined
    try {
      let head: UpstreamHead
      if (group) {
        const tried = await tryUpstreams({
          group,
          retryable: replayable,
          signal: cancel,
          attempt: (server) => attempt(serverFor(server.address)),
          status: (h) => h.status,
          discard: (h) => h.discard(),
        })
        head = tried.result
        lease = tried.lease
      } else {
        try {
          head = await attempt(single!)
        } catch (err) {
          if (!replayable || cancel.aborted || !isRetryable((err as Error).cause)) throw err
          ctx.log.debug(
            { err, upstream: single!.url.label },
            'upstream connection broke before an answer: retried',
          )
          head = await attempt(single!)
        }
      }
      const whole = await relayHead(ctx, head)
      lease?.release(cancel.aborted ? 'neutral' : whole ? undefined : 'failure')
    } catch (err) {
      if (cancel.aborted) return
      // A body over the limit: the client may still be sending; refuse() lingers.
      if (err instanceof GatehouseError && err.code === 'GH_ERR_BODY_TOO_LARGE') {
        refuse(res, 'GH_ERR_BODY_TOO_LARGE', ctx.log)
        return
      }
      throw err
    } finally {
      note.end ??= performance.now()
      done()
      if (spooled) await releaseBody(spooled)
    }
  }

  /** Write the head to the client and relay the body; false when the body broke. */
  async function relayHead(ctx: RequestContext, head: UpstreamHead): Promise<boolean> {
    const { res } = ctx
    try {
      const flat = responseHeaders(head.fields)
      if (head.statusText) res.writeHead(head.status, head.statusText, flat)
      else res.writeHead(head.status, flat)
    } catch (err) {
      head.discard()
      throw new GatehouseError('GH_ERR_UPSTREAM', `response head refused: ${(err as Error).message}`, {
        cause: err,
      })
    }
    const bodyless = ctx.method === 'HEAD' || head.status === 204 || head.status === 304
    const sink: BodySink | null = bodyless ? null : buffering ? new ResponseBuffer(res, buffering) : res
    return head.relay(sink)
  }

  async function upgrade(ctx: RequestContext, socket: Duplex, head: Buffer): Promise<void> {
    let lease: UpstreamLease | undefined
    let server: UpstreamServer
    try {
      lease = group?.acquire()
      server = lease ? serverFor(lease.server.address) : single!
    } catch (err) {
      const code = err instanceof GatehouseError ? err.code : 'GH_ERR_UPSTREAM'
      sendError(ctx.res, code)
      return
    }
    const note = upstreamNote(ctx.req)
    note.start = performance.now()
    ;(note.addr ??= []).push(server.url.label)
    const protocol = ctx.req.headers.upgrade ?? 'websocket'
    try {
      const ok = await tunnel(
        server.pool,
        ctx,
        socket,
        head,
        { path: pathFor(ctx), headers: headersFor(ctx, server), protocol },
        ctx.log,
        server.url.label,
      )
      lease?.release(ok ? undefined : 'failure')
    } finally {
      note.end = performance.now()
    }
  }

  async function close(): Promise<void> {
    if (group) releaseGroup(group)
    const all = [...servers.values(), ...(single ? [single] : [])]
    await Promise.all(all.map((s) => s.pool.close().catch(() => undefined)))
  }

  return { handle, upgrade, close }
}

function spooledLength(body: RequestBody): number | null {
  return body.kind === 'spooled' ? body.spool.length : body.kind === 'stream' ? body.length : null
}

export const proxyAction: ActionDefinition<ProxyOptions> = {
  name: 'proxy',
  summary: 'pass requests to an upstream HTTP server (nginx `proxy_pass`, Caddy `reverse_proxy`)',
  schema: proxySchema,
  create: (options, services) => createProxyHandler(options, services),
}
