/**
 * The application side of uwsgi: accept uwsgi requests (nginx `uwsgi_pass`, uWSGI's own
 * routers) and hand them to a node:http-shaped handler as real IncomingMessage /
 * ServerResponse objects (gateway-request.ts). The reply is the HTTP response the handler
 * writes; the connection closes after it, as the protocol wants.
 *
 * A uwsgi peer is trusted: it names the client (REMOTE_ADDR) and the scheme, and a server
 * that receives uwsgi can be made to see any request. TCP connections are therefore
 * accepted only from an allow-list (loopback by default, like gunicorn's
 * forwarded_allow_ips); Unix sockets are guarded by their file permissions.
 */
import { type BlockList, Server, type Socket } from 'node:net'
import pino, { type Logger } from 'pino'
import { type ErrorCode, GatehouseError } from '../../core/errors.js'
import { sendStatus } from '../../core/respond.js'
import { UWSGI_MAX_VARS_BYTES, UwsgiRequestParser, type UwsgiRequestEvent } from './codec.js'
import { listenerError } from './errors.js'
import { requestFromUwsgiVars } from './vars.js'
import { LOOPBACK, parseAllowList } from '../../core/allow-list.js'
import { createGatewayExchange, type GatewayExchange } from '../../inbound/exchange.js'
import { admitPeer, endAfterReply, refusal, requestConnection } from '../../inbound/peer.js'
import type { RequestListener } from '../../core/types.js'

export type { RequestListener } from '../../core/types.js'

export const DEFAULT_UWSGI_ALLOW: readonly string[] = LOOPBACK

export interface UwsgiServerOptions {
  /**
   * Addresses and CIDR blocks (`10.0.0.0/8`, `fd00::/8`) that may connect over TCP.
   * Default loopback: 127.0.0.1 and ::1. Unix-socket clients are always accepted.
   */
  allow?: readonly string[]
  /** Largest vars block accepted, in bytes (default and maximum 65535). */
  maxVarsBytes?: number
  /** Time for the header and vars block to arrive, in ms (default 10 s; 0 disables). */
  headerTimeout?: number
  /**
   * Time allowed between two reads of a request body, in ms (default 60 s, like nginx's
   * client_body_timeout; 0 disables): past it the request is answered 408.
   */
  bodyTimeout?: number
  log?: Logger
}

export class UwsgiServer extends Server {
  private readonly handler: RequestListener
  private readonly log: Logger
  private allowList: BlockList
  maxVarsBytes: number
  headerTimeout: number
  bodyTimeout: number
  private readonly active = new Set<UwsgiConnection>()

  constructor(handler: RequestListener, options: UwsgiServerOptions = {}) {
    // Half-open: a client may shut down its sending side after the request and still read
    // the reply.
    super({ allowHalfOpen: true })
    this.handler = handler
    this.log = options.log ?? pino({ level: 'warn' })
    this.allowList = parseAllowList(options.allow ?? DEFAULT_UWSGI_ALLOW)
    this.maxVarsBytes = Math.min(options.maxVarsBytes ?? UWSGI_MAX_VARS_BYTES, UWSGI_MAX_VARS_BYTES)
    this.headerTimeout = options.headerTimeout ?? 10_000
    this.bodyTimeout = options.bodyTimeout ?? 60_000
    this.on('connection', (socket: Socket) => this.accept(socket))
  }

  /** Replace the allow-list (takes effect for new connections). */
  setAllow(entries: readonly string[]): void {
    this.allowList = parseAllowList(entries)
  }

  /** Close connections whose request has not arrived yet. */
  closeIdleConnections(): void {
    for (const c of this.active) if (!c.started) c.socket.destroy()
  }

  closeAllConnections(): void {
    for (const c of this.active) c.socket.destroy()
  }

  private accept(socket: Socket): void {
    if (!admitPeer(socket, this.allowList, this.log, 'uwsgi', 'uwsgi_allow')) return
    const connection = new UwsgiConnection(socket, this.handler, this.log, this)
    this.active.add(connection)
    socket.once('close', () => this.active.delete(connection))
  }
}

/** One connection, one request, one reply. */
class UwsgiConnection {
  private readonly parser: UwsgiRequestParser
  private exchange: GatewayExchange | null = null
  private headerTimer: NodeJS.Timeout | undefined
  /** The time allowed until the next body bytes (see armBody). */
  private bodyTimer: NodeJS.Timeout | undefined
  private done = false

  constructor(
    readonly socket: Socket,
    private readonly handler: RequestListener,
    private readonly log: Logger,
    private readonly server: UwsgiServer,
  ) {
    this.parser = new UwsgiRequestParser({ maxVarsBytes: server.maxVarsBytes })
    socket.on('data', this.onData)
    // req resumes the socket when the handler wants more body: the wait is the peer's again.
    socket.on('resume', () => {
      if (this.exchange && !this.done && !this.parser.complete) this.armBody()
    })
    socket.on('end', () => this.onEnd())
    socket.on('error', (err) => this.log.debug({ err }, 'uwsgi connection error'))
    socket.on('close', () => this.onClose())
    if (server.headerTimeout > 0) {
      this.headerTimer = setTimeout(
        () => this.refuse(new GatehouseError('GH_ERR_HEADER_TIMEOUT', 'uwsgi request not received in time')),
        server.headerTimeout,
      )
    }
  }

  /** True once the request has been handed to the handler. */
  get started(): boolean {
    return this.exchange !== null
  }

  private readonly onData = (chunk: Buffer): void => {
    let events: UwsgiRequestEvent[]
    try {
      events = this.parser.push(chunk)
    } catch (err) {
      this.refuse(listenerError(err))
      return
    }
    for (const event of events) {
      if (event.kind === 'request') {
        if (!this.start(event)) return
      } else if (event.kind === 'body') {
        const more = this.exchange!.pushBody(event.chunk)
        if (this.parser.complete) continue // the 'end' event follows
        if (!more) {
          // The handler is not reading: the time until the next bytes is not the peer's.
          clearTimeout(this.bodyTimer)
          this.socket.pause()
        } else this.armBody()
      } else {
        clearTimeout(this.bodyTimer)
        this.exchange!.endBody()
      }
    }
  }

  private start(event: Extract<UwsgiRequestEvent, { kind: 'request' }>): boolean {
    clearTimeout(this.headerTimer)
    let head: ReturnType<typeof requestFromUwsgiVars>
    try {
      head = requestFromUwsgiVars(event.vars)
    } catch (err) {
      this.refuse(err)
      return false
    }
    const socket = this.socket
    const exchange = createGatewayExchange({
      socket,
      method: head.method,
      url: head.url,
      httpVersion: head.httpVersion,
      rawHeaders: head.rawHeaders,
      conn: requestConnection(head, socket),
      onResponseEnd: () => this.close(),
    })
    this.exchange = exchange
    if (event.contentLength > 0) this.armBody()
    try {
      this.handler(exchange.req, exchange.res)
    } catch (err) {
      this.log.error({ err, uri: head.url }, 'uwsgi request handler threw')
      if (exchange.res.headersSent) socket.destroy()
      else sendStatus(exchange.res, 500)
    }
    return true
  }

  /** The peer will send no more. Before a complete request that is an error worth a reply. */
  private onEnd(): void {
    if (this.done || this.parser.complete) return
    if (this.exchange) {
      this.bodyFailed(
        'GH_ERR_BODY_INCOMPLETE',
        `body ended ${this.parser.bodyRemaining} bytes short of CONTENT_LENGTH`,
      )
      return
    }
    try {
      this.parser.finish()
    } catch (err) {
      this.refuse(listenerError(err))
    }
  }

  private onClose(): void {
    clearTimeout(this.headerTimer)
    clearTimeout(this.bodyTimer)
    if (this.exchange && !this.parser.complete) this.exchange.abortBody()
  }

  /** The reply is complete: end the connection (uwsgi replies are delimited by close). */
  private close(): void {
    this.done = true
    clearTimeout(this.bodyTimer)
    endAfterReply(this.socket)
  }

  /** (Re)start the time allowed until the next bytes of the request body. */
  private armBody(): void {
    clearTimeout(this.bodyTimer)
    const ms = this.server.bodyTimeout
    if (ms <= 0) return
    this.bodyTimer = setTimeout(() => {
      this.bodyFailed(
        'GH_ERR_BODY_TIMEOUT',
        `no request body bytes for ${ms} ms (${this.parser.bodyRemaining} bytes missing)`,
      )
    }, ms).unref()
  }

  /**
   * The body will not complete (the peer ended its side short of CONTENT_LENGTH, or it
   * stalled past the body timeout): the request is answered with `code` (400 / 408) in
   * place of the handler's response, or, when that response has begun, aborted (the
   * connection closes short, which the web server reports as an upstream error).
   *
   * Order matters: req uses this socket, and aborting req destroys it. So the reply is
   * written and the socket ended first; the handler's request is aborted (req 'aborted',
   * res 'close': a worker waiting for the body lets go) once the reply is flushed, or when
   * the connection closes, whichever comes first. Output the handler writes after the
   * socket has ended is never sent.
   */
  private bodyFailed(code: ErrorCode, message: string): void {
    clearTimeout(this.bodyTimer)
    const exchange = this.exchange
    if (this.done || !exchange) return
    this.done = true
    const socket = this.socket
    // Keep reading (and discarding) so that closing does not turn into a reset.
    socket.off('data', this.onData)
    socket.resume()
    const started = socket.bytesWritten > 0
    this.log.debug(
      { code, remote_addr: socket.remoteAddress, uri: exchange.req.url },
      `uwsgi request body: ${message}`,
    )
    if (started || !socket.writable) {
      exchange.abortBody()
      socket.destroy()
      return
    }
    const { status, reason, body } = refusal(code, message)
    socket.once('finish', () => exchange.abortBody())
    endAfterReply(
      socket,
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    )
  }

  /**
   * Refuse bad input with an HTTP error reply that says what was wrong (the web server in
   * front relays it; a person who pointed curl at the uwsgi port reads it), then close.
   */
  private refuse(err: unknown): void {
    if (this.done) return
    this.done = true
    clearTimeout(this.headerTimer)
    clearTimeout(this.bodyTimer)
    const socket = this.socket
    // Keep reading (and discarding) so that closing does not turn into a reset that could
    // destroy the reply before the peer reads it.
    socket.off('data', this.onData)
    socket.resume()
    if (!(err instanceof GatehouseError)) {
      this.log.error({ err }, 'uwsgi listener failed')
      socket.destroy()
      return
    }
    const { status, reason, body } = refusal(err.code, err.message)
    this.log.debug(
      { code: err.code, status, remote_addr: socket.remoteAddress },
      `uwsgi request refused: ${err.message}`,
    )
    if (!socket.writable) {
      socket.destroy()
      return
    }
    endAfterReply(
      socket,
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    )
  }
}

/**
 * A uwsgi server for a node:http-shaped handler: `createUwsgiServer(app).listen(9000)`.
 * The same handler works in `http.createServer(app)`.
 */
export function createUwsgiServer(handler: RequestListener, options: UwsgiServerOptions = {}): UwsgiServer {
  return new UwsgiServer(handler, options)
}
