import { lstatSync, unlinkSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse, STATUS_CODES } from 'node:http'
import { connect } from 'node:net'
import type { Duplex } from 'node:stream'
import { validateConfig } from './config/load.js'
import type { GatehouseConfig, GatehouseConfigInput, LimitsConfig } from './config/schema.js'
import { GatehouseError } from './errors.js'
import { ACTION_NAMES, ACTIONS } from './handlers/registry.js'
import { sendStatus, statusOf } from './handlers/respond.js'
import { Logs } from './logging.js'
import { Router } from './router/router.js'
import { connectionInfo } from './server/connection.js'
import { type ListenAddress, parseListenAddress } from './server/listen-address.js'
import { BadTargetError, parseHost, parseTarget } from './server/request-target.js'
import type { ActionDefinition, Handler, RequestContext } from './types.js'

interface RouteEntry {
  handler: Handler
  maxBodyBytes: number
}

/** Everything derived from one config; swapped as a whole on reload. */
interface State {
  config: GatehouseConfig
  router: Router<RouteEntry>
  handlers: Handler[]
}

export interface ListeningAddress {
  address: string
  /** For TCP listeners: the bound port (useful with port 0). */
  port?: number
  /** For Unix listeners: the socket path. */
  path?: string
}

interface Listener {
  spec: ListenAddress
  server: Server
  bound: ListeningAddress
}

function buildState(config: GatehouseConfig, logs: Logs): State {
  const handlers: Handler[] = []
  const specs = config.routes.map((route) => {
    const name = ACTION_NAMES.find((n) => route[n] !== undefined)!
    const def = ACTIONS[name] as ActionDefinition<unknown>
    const handler = def.create(route[name], { log: logs.error })
    handlers.push(handler)
    const methods = route.methods ?? def.defaultMethods
    return {
      ...(route.host ? { hosts: route.host } : {}),
      ...(route.path !== undefined ? { path: route.path } : {}),
      ...(route.exact !== undefined ? { exact: route.exact } : {}),
      ...(route.regex !== undefined ? { regex: route.regex } : {}),
      ...(methods ? { methods } : {}),
      target: { handler, maxBodyBytes: route.max_body_bytes ?? config.limits.max_body_bytes },
    }
  })
  return { config, router: new Router(specs), handlers }
}

function serverOptions(limits: LimitsConfig) {
  return {
    maxHeaderSize: limits.max_header_bytes,
    headersTimeout: limits.header_timeout,
    requestTimeout: limits.request_timeout,
    keepAliveTimeout: limits.keepalive_timeout,
    // How often node checks header/request timeouts; the default (30 s) would let a
    // slow client outlive a short header_timeout by far.
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.header_timeout / 4) || 1000)),
    requireHostHeader: true,
    joinDuplicateHeaders: false,
  }
}

function applyLimits(server: Server, limits: LimitsConfig): void {
  server.headersTimeout = limits.header_timeout
  server.requestTimeout = limits.request_timeout
  server.keepAliveTimeout = limits.keepalive_timeout
  server.maxRequestsPerSocket = limits.max_requests_per_connection || null
  // One more than the limit so that an excess is seen (and refused with 431) rather than
  // silently dropped, which is what node does with headers past maxHeadersCount.
  server.maxHeadersCount = limits.max_headers + 1
}

/** Status for the parse errors node's HTTP parser (llhttp) reports through 'clientError'. */
function clientErrorStatus(code: string | undefined): number {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return 431
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return 408
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return 413
    default:
      return 400
  }
}

export class Gatehouse {
  readonly logs: Logs
  private state: State
  private readonly listeners: Listener[] = []
  private inFlight = 0
  private closing = false
  private drained: (() => void) | null = null
  private readonly requestsOnSocket = new WeakMap<object, number>()

  /** A node:http request listener: usable in `http.createServer`, Express, Fastify's raw handler. */
  readonly handler: (req: IncomingMessage, res: ServerResponse) => void

  constructor(config: GatehouseConfig) {
    this.logs = new Logs(config.log)
    this.state = buildState(config, this.logs)
    this.handler = (req, res) => this.handle(req, res)
  }

  get config(): GatehouseConfig {
    return this.state.config
  }

  /** Open every configured listener. A busy address fails with GH_ERR_LISTEN naming it. */
  async listen(): Promise<ListeningAddress[]> {
    for (const text of this.state.config.listen) await this.openListener(parseListenAddress(text))
    return this.addresses()
  }

  addresses(): ListeningAddress[] {
    return this.listeners.map((l) => l.bound)
  }

  private async openListener(spec: ListenAddress): Promise<void> {
    const limits = this.state.config.limits
    const server = createServer(serverOptions(limits), this.handler)
    applyLimits(server, limits)
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.onClientError(err, socket))
    server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => this.handle(req, res, true))
    // Without a listener node drops CONNECT connections without a word; no route can serve it.
    // node has taken its own error listener off the socket by now: a reset must not throw.
    server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
      socket.on('error', () => socket.destroy())
      endWithStatus(socket, 501)
    })
    if (spec.kind === 'unix') await removeStaleSocket(spec.path)
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        const reason =
          err.code === 'EADDRINUSE'
            ? 'address already in use'
            : err.code === 'EACCES'
              ? 'permission denied'
              : err.code === 'EADDRNOTAVAIL'
                ? 'address not available on this machine'
                : err.message
        reject(new GatehouseError('GH_ERR_LISTEN', `${spec.text}: ${reason}`, { cause: err }))
      }
      server.once('error', onError)
      const done = () => {
        server.off('error', onError)
        server.on('error', (err) => this.logs.error.error({ err, listen: spec.text }, 'listener error'))
        resolve()
      }
      if (spec.kind === 'unix') server.listen(spec.path, done)
      else server.listen({ host: spec.host, port: spec.port }, done)
    })
    const addr = server.address()
    const bound: ListeningAddress =
      spec.kind === 'unix' || typeof addr === 'string' || addr === null
        ? { address: spec.text, path: spec.kind === 'unix' ? spec.path : String(addr) }
        : {
            address:
              addr.family === 'IPv6' ? `[${addr.address}]:${addr.port}` : `${addr.address}:${addr.port}`,
            port: addr.port,
          }
    this.listeners.push({ spec, server, bound })
    this.logs.error.info({ listen: bound.address }, 'listening')
  }

  private onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    const httpMessage = (socket as Duplex & { _httpMessage?: ServerResponse })._httpMessage
    if (err.code === 'ECONNRESET' || !socket.writable || httpMessage?.headersSent) {
      socket.destroy()
      return
    }
    const status = clientErrorStatus(err.code)
    this.logs.error.debug({ code: err.code, status }, 'refused malformed request')
    endWithStatus(socket, status)
  }

  private handle(req: IncomingMessage, res: ServerResponse, expectsContinue = false): void {
    const state = this.state
    const start = performance.now()
    const conn = connectionInfo(req)
    const written0 = req.socket?.bytesWritten ?? 0
    this.inFlight++
    let routeIndex: number | undefined
    res.once('close', () => {
      this.inFlight--
      if (this.logs.accessEnabled) {
        this.logs.access({ req, res, remoteAddress: conn.remoteAddress, start, route: routeIndex, written0 })
      }
      if (this.closing) {
        for (const l of this.listeners) l.server.closeIdleConnections()
        if (this.inFlight === 0) this.drained?.()
      }
    })
    if (this.closing) res.setHeader('connection', 'close')
    const limits = state.config.limits
    // node's maxRequestsPerSocket sends `Connection: close` on the last allowed response but
    // leaves the connection open (and answers 503 to what follows): close it for real.
    if (limits.max_requests_per_connection > 0 && req.socket) {
      const served = (this.requestsOnSocket.get(req.socket) ?? 0) + 1
      this.requestsOnSocket.set(req.socket, served)
      if (served >= limits.max_requests_per_connection) res.shouldKeepAlive = false
    }
    const refuse = (status: number) => sendStatus(res, status, { close: true })

    if (req.rawHeaders.length / 2 > limits.max_headers) {
      refuse(431)
      return
    }
    // llhttp lets `HTTP/2.0` and `HTTP/0.9` (and a request line with no version) through;
    // only HTTP/1.x is spoken here (RFC 9110 15.6.6).
    if (req.httpVersionMajor !== 1) {
      refuse(505)
      return
    }
    // RFC 9112 3.2: more than one Host line is a 400; node keeps the first and drops the rest.
    let hostLines = 0
    for (let i = 0; i < req.rawHeaders.length; i += 2)
      if (req.rawHeaders[i]!.toLowerCase() === 'host') hostLines++
    if (hostLines > 1) {
      refuse(400)
      return
    }
    const te = req.headers['transfer-encoding']
    if (te !== undefined) {
      // RFC 9112 6.1: chunked must be the final (and here the only) coding, and HTTP/1.0
      // has no chunked framing at all; anything else leaves the body length unknown.
      if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0) {
        refuse(400)
        return
      }
      if (te.trim().toLowerCase() !== 'chunked') {
        refuse(400)
        return
      }
    }
    let target: ReturnType<typeof parseTarget>
    try {
      target = parseTarget(req.url ?? '/')
    } catch (err) {
      if (err instanceof BadTargetError) {
        refuse(400)
        return
      }
      throw err
    }
    const hostText = target.authority ?? req.headers.host ?? ''
    const host = parseHost(hostText)
    if (!host) {
      refuse(400)
      return
    }
    const method = req.method ?? 'GET'
    const match = state.router.match(host[0], target.path, method)
    if (match.kind === 'not_found') {
      sendStatus(res, 404, { head: method === 'HEAD' })
      return
    }
    if (match.kind === 'method_not_allowed') {
      sendStatus(res, 405, { headers: { allow: match.allow.join(', ') }, head: method === 'HEAD' })
      return
    }
    routeIndex = match.index
    const { handler, maxBodyBytes } = match.target
    const contentLength = req.headers['content-length']
    if (contentLength !== undefined && Number(contentLength) > maxBodyBytes) {
      refuse(413)
      return
    }
    if (expectsContinue) res.writeContinue()

    const ctx: RequestContext = {
      req,
      res,
      method,
      rawPath: target.rawPath,
      query: target.query,
      path: target.path,
      host: host[0],
      port: host[1] ?? conn.localPort,
      scheme: conn.secure ? 'https' : 'http',
      conn,
      route: { index: match.index, prefix: match.prefix, params: match.params },
      maxBodyBytes,
      log: this.logs.error,
    }
    try {
      const result = handler.handle(ctx)
      if (result) result.catch((err: unknown) => this.fail(ctx, err))
    } catch (err) {
      this.fail(ctx, err)
    }
  }

  private fail(ctx: RequestContext, err: unknown): void {
    const status = statusOf(err)
    const code = err instanceof GatehouseError ? err.code : 'GH_ERR_INTERNAL'
    if (status >= 500)
      this.logs.error.error({ err, code, method: ctx.method, uri: ctx.req.url }, 'request failed')
    else this.logs.error.debug({ code, uri: ctx.req.url }, 'request refused')
    if (ctx.res.headersSent) ctx.res.destroy()
    else sendStatus(ctx.res, status, { head: ctx.method === 'HEAD' })
  }

  /**
   * Apply a new configuration: routes, handlers, logging level and limits switch at once
   * for new requests; in-flight requests finish on the old handlers, which are closed after.
   * Listen addresses are diffed: new ones opened, removed ones closed.
   */
  async reload(input: GatehouseConfigInput, baseDir?: string): Promise<void> {
    const config = validateConfig(input, baseDir)
    const old = this.state
    this.state = buildState(config, this.logs)
    this.logs.error.level = config.log.level
    if (config.limits.max_header_bytes !== old.config.limits.max_header_bytes) {
      this.logs.error.warn('limits.max_header_bytes changes take effect on restart')
    }
    for (const l of this.listeners) applyLimits(l.server, config.limits)
    if (this.listeners.length > 0) {
      const wanted = config.listen.map(parseListenAddress)
      const keep = (spec: ListenAddress) => wanted.some((w) => w.text === spec.text)
      for (const l of [...this.listeners]) {
        if (!keep(l.spec)) {
          this.listeners.splice(this.listeners.indexOf(l), 1)
          l.server.close()
          l.server.closeIdleConnections()
        }
      }
      for (const w of wanted) {
        if (!this.listeners.some((l) => l.spec.text === w.text)) await this.openListener(w)
      }
    }
    await Promise.allSettled(old.handlers.map((h) => h.close?.()))
  }

  /**
   * Graceful stop: stop accepting, let in-flight requests finish within the grace period
   * (keep-alive connections are closed as they go idle), then close what remains.
   */
  /** SIGUSR1: reopen log files after rotation. */
  reopenLogs(): void {
    this.logs.reopen()
  }

  async close(graceMs: number = this.state.config.shutdown_grace): Promise<void> {
    if (this.closing) return
    this.closing = true
    const closed = this.listeners.map((l) => new Promise<void>((resolve) => l.server.close(() => resolve())))
    for (const l of this.listeners) l.server.closeIdleConnections()
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs)
        timer.unref()
        this.drained = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    for (const l of this.listeners) l.server.closeAllConnections()
    await Promise.all(closed)
    await Promise.allSettled(this.state.handlers.map((h) => h.close?.()))
    this.logs.flush()
  }
}

/** A complete response written straight to a socket that has no usable HTTP framing left, then close. */
function endWithStatus(socket: Duplex, status: number): void {
  const body = `${status} ${STATUS_CODES[status]}\n`
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
  )
  setTimeout(() => socket.destroy(), 1000).unref()
}

/** A Unix socket file left by a dead process is removed; one with a live server is an error. */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket = false
  try {
    isSocket = lstatSync(path).isSocket()
  } catch {
    return
  }
  if (!isSocket) return // listen() reports EADDRINUSE with the path
  const live = await new Promise<boolean>((resolve) => {
    const probe = connect(path)
    probe.once('connect', () => {
      probe.destroy()
      resolve(true)
    })
    probe.once('error', () => resolve(false))
  })
  if (!live) unlinkSync(path)
}

/**
 * Create a Gatehouse from a configuration object (the same schema as the config file).
 * Throws GatehouseError GH_ERR_CONFIG listing every problem. Relative paths resolve
 * against `baseDir` (default: the working directory).
 */
export function createGatehouse(config: GatehouseConfigInput, options: { baseDir?: string } = {}): Gatehouse {
  return new Gatehouse(validateConfig(config, options.baseDir))
}
