import { DEFAULT_MAX_BODY_BYTES } from '../core/schema/units.js'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import pino from 'pino'
import { type ErrorCode, GatehouseError } from '../core/errors.js'
import { refuse, sendStatus, statusOf } from '../core/respond.js'
import type { ConnectionInfo, Handler, RequestContext, RouteMatch } from '../core/types.js'
import { connectionInfo, isHttp2 } from './connection.js'
import { BadTargetError, type ParsedTarget, parseHost, parseTarget } from './request-target.js'

export interface ParsedRequest {
  method: string
  target: ParsedTarget
  host: string
  port: number
  conn: ConnectionInfo
}

/**
 * The checks every entry point makes before routing, whatever the listener: header count,
 * Transfer-Encoding framing, the request-target and Host. Returns the error code to refuse
 * with (the connection is then closed) or the parsed request.
 */
export function parseRequest(
  req: IncomingMessage,
  maxHeaders: number,
  conn: ConnectionInfo = connectionInfo(req),
): ParsedRequest | ErrorCode {
  if (req.rawHeaders.length / 2 > maxHeaders) return 'GH_ERR_TOO_MANY_HEADERS'
  // llhttp lets `HTTP/2.0` and `HTTP/0.9` (and a request line with no version) through;
  // only HTTP/1.x is spoken in that syntax (RFC 9110 15.6.6). HTTP/2 comes in frames.
  if (req.httpVersionMajor !== 1 && !isHttp2(req)) return 'GH_ERR_HTTP_VERSION'
  // RFC 9112 3.2: more than one Host line is a 400; node keeps the first and drops the rest.
  let hostLines = 0
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!
    if (name.length === 4 && name.toLowerCase() === 'host') hostLines++
  }
  if (hostLines > 1) return 'GH_ERR_BAD_REQUEST'
  const te = req.headers['transfer-encoding']
  if (te !== undefined) {
    // RFC 9112 6.1: chunked must be the final (and here the only) coding, and HTTP/1.0
    // has no chunked framing at all; anything else leaves the body length unknown.
    if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0) return 'GH_ERR_TRANSFER_ENCODING'
    if (te.trim().toLowerCase() !== 'chunked') return 'GH_ERR_TRANSFER_ENCODING'
  }
  let target: ParsedTarget
  try {
    target = parseTarget(req.url ?? '/')
  } catch (err) {
    if (err instanceof BadTargetError) return 'GH_ERR_BAD_PATH'
    throw err
  }
  const host = parseHost(target.authority ?? req.headers.host ?? '')
  if (!host) return 'GH_ERR_BAD_REQUEST'
  return { method: req.method ?? 'GET', target, host: host[0], port: host[1] ?? conn.localPort, conn }
}

export function buildContext(
  req: IncomingMessage,
  res: ServerResponse,
  parsed: ParsedRequest,
  route: RouteMatch,
  maxBodyBytes: number,
  log: Logger,
): RequestContext {
  return {
    req,
    res,
    method: parsed.method,
    rawPath: parsed.target.rawPath,
    query: parsed.target.query,
    path: parsed.target.path,
    host: parsed.host,
    port: parsed.port,
    scheme: parsed.conn.secure ? 'https' : 'http',
    conn: parsed.conn,
    route,
    maxBodyBytes,
    log,
  }
}

/** Map a handler's failure to a response: its status before headers went out, a reset after. */
export function failRequest(ctx: RequestContext, err: unknown): void {
  // The client went away mid-response (a stream to it was cut): nothing to answer, not a fault.
  const errno = (err as NodeJS.ErrnoException | undefined)?.code
  if (
    ctx.res.destroyed ||
    errno === 'ERR_STREAM_PREMATURE_CLOSE' ||
    errno === 'EPIPE' ||
    errno === 'ECONNRESET'
  ) {
    ctx.log.debug({ code: errno, uri: ctx.req.url }, 'client went away before the response was complete')
    ctx.res.destroy()
    return
  }
  const status = statusOf(err)
  const code = err instanceof GatehouseError ? err.code : 'GH_ERR_INTERNAL'
  if (status >= 500) ctx.log.error({ err, code, method: ctx.method, uri: ctx.req.url }, 'request failed')
  else ctx.log.debug({ code, uri: ctx.req.url }, 'request refused')
  // A body over the limit is left unread: close rather than read it to find the next request.
  const close = code === 'GH_ERR_BODY_TOO_LARGE'
  if (ctx.res.headersSent) ctx.res.destroy()
  else {
    const retryAfter = err instanceof GatehouseError ? err.retryAfter : undefined
    const headers = retryAfter === undefined ? {} : { 'retry-after': String(retryAfter) }
    sendStatus(ctx.res, status, { head: ctx.method === 'HEAD', close, headers })
  }
}

/** Run a handler for one request; sync throws and rejected promises both end in failRequest. */
export function runHandler(handler: Handler, ctx: RequestContext): void {
  try {
    const result = handler.handle(ctx)
    if (result) result.catch((err: unknown) => failRequest(ctx, err))
  } catch (err) {
    failRequest(ctx, err)
  }
}

export interface StandaloneOptions {
  /** URL prefix the handler is mounted at (for SCRIPT_NAME and the like). Default '/'. */
  prefix?: string
  maxBodyBytes?: number
  maxHeaders?: number
  log?: Logger
}

/**
 * Turn a Handler into a plain node:http request listener, for use without the router
 * (`http.createServer(cgi({...}))`, Express, Fastify's raw handler). The same front checks
 * run as in the full server.
 */
export function toRequestListener(
  handler: Handler,
  options: StandaloneOptions = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  const prefix = options.prefix ?? '/'
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  const maxHeaders = options.maxHeaders ?? 100
  const log = options.log ?? pino({ level: 'warn' })
  return (req, res) => {
    // Mounted by Express or Connect (`app.use('/flask', wsgi(...))`): req.url has lost the
    // mount point, which is the app's SCRIPT_NAME (url_for builds links from it). The
    // request as the client sent it is in originalUrl, and the mount point in baseUrl.
    let mount = prefix
    const { baseUrl, originalUrl } = req as IncomingMessage & { baseUrl?: unknown; originalUrl?: unknown }
    if (typeof baseUrl === 'string' && baseUrl !== '' && typeof originalUrl === 'string') {
      req.url = originalUrl
      mount = prefix === '/' ? baseUrl : baseUrl + prefix
    }
    const parsed = parseRequest(req, maxHeaders)
    if (typeof parsed === 'string') {
      refuse(res, parsed, log)
      return
    }
    const contentLength = req.headers['content-length']
    if (contentLength !== undefined && Number(contentLength) > maxBodyBytes) {
      refuse(res, 'GH_ERR_BODY_TOO_LARGE', log)
      return
    }
    runHandler(
      handler,
      buildContext(req, res, parsed, { index: 0, prefix: mount, params: [] }, maxBodyBytes, log),
    )
  }
}
