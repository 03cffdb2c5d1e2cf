/**
 * The application side of FastCGI: accept FastCGI requests (nginx `fastcgi_pass`, Apache
 * mod_proxy_fcgi, `cgi-fcgi`) and hand them to a node:http-shaped handler as real
 * IncomingMessage / ServerResponse objects (gateway-request.ts). docs/fastcgi.md,
 * "Application side", is the user's view.
 *
 * Per connection: one request at a time (FCGI_MPXS_CONNS=0; a second BEGIN_REQUEST while
 * one runs gets END_REQUEST FCGI_CANT_MPX_CONN), any number in sequence while the web
 * server sets FCGI_KEEP_CONN. The handler's response, which node serializes as HTTP/1.1,
 * is turned into a CGI header block (`Status: 200 OK`) and FCGI_STDOUT records by a
 * socket-like stream (ResponseStream), then END_REQUEST.
 *
 * A FastCGI peer is trusted: it names the client (REMOTE_ADDR) and the scheme. TCP
 * connections are accepted only from an allow-list (loopback by default); Unix sockets are
 * guarded by their file permissions.
 */
import type { IncomingMessage } from 'node:http'
import { Server, type Socket } from 'node:net'
import { Duplex } from 'node:stream'
import pino, { type Logger } from 'pino'
import { type ErrorCode, GatehouseError } from '../../core/errors.js'
import { sendStatus } from '../../core/respond.js'
import { HOP_BY_HOP } from '../../core/http-headers.js'
import { ChunkedDecoder } from '../../core/chunked.js'
import {
  decodeBeginRequest,
  decodeNameValuePairs,
  encodeEndRequest,
  encodeNameValuePairs,
  encodeRecord,
  encodeStream,
  encodeUnknownType,
  FastCGIProtocolError,
  type FcgiRecord,
  NameValueDecoder,
  ProtocolStatus,
  RecordParser,
  RecordType,
  Role,
} from './codec.js'
import { type GatewayRequestHead, requestFromGatewayVars } from '../../cgi-vars/request.js'
import { createGatewayExchange, type GatewayExchange } from '../../inbound/exchange.js'
import { admitPeer, endAfterReply, refusal, requestConnection } from '../../inbound/peer.js'
import { parseAllowList, type RequestListener } from '../uwsgi/server.js'

export type { RequestListener } from '../uwsgi/server.js'

export const DEFAULT_FASTCGI_ALLOW: readonly string[] = ['127.0.0.1', '::1']
/** Largest PARAMS stream accepted by default: what nginx can send (it puts them in one record). */
export const FASTCGI_DEFAULT_MAX_PARAMS_BYTES = 65535
/** Hard ceiling for `maxParamsBytes`. */
export const FASTCGI_MAX_PARAMS_BYTES = 1024 * 1024

export interface FastCGIServerOptions {
  /**
   * Addresses and CIDR blocks (`10.0.0.0/8`, `fd00::/8`) that may connect over TCP.
   * Default loopback: 127.0.0.1 and ::1. Unix-socket clients are always accepted.
   */
  allow?: readonly string[]
  /** Largest PARAMS stream (all name-value pairs of a request), in bytes (default 65535). */
  maxParamsBytes?: number
  /** Time for BEGIN_REQUEST's PARAMS to arrive, in ms (default 10 s; 0 disables). */
  headerTimeout?: number
  /**
   * A connection with no request in flight is closed after this, in ms (default 75 s:
   * longer than nginx's upstream `keepalive_timeout`, so nginx closes first; 0 disables).
   */
  idleTimeout?: number
  /**
   * Connections served at once; more are closed on accept. Announced to web servers as
   * FCGI_MAX_CONNS and FCGI_MAX_REQS in GET_VALUES_RESULT. Default: no limit (not announced).
   */
  maxConnections?: number
  /**
   * Handler for the FCGI_AUTHORIZER role: it sees the request (no body) and answers 200,
   * with `Variable-NAME` headers the web server passes on, to allow it, or any other status
   * to deny it (that response goes to the client). Without one, authorizer requests get
   * END_REQUEST FCGI_UNKNOWN_ROLE. FILTER requests always do.
   */
  authorizer?: RequestListener
  log?: Logger
}

/** What the FastCGI listener knows about a request beyond its HTTP shape. */
export interface FastCGIRequestInfo {
  role: 'responder' | 'authorizer'
  requestId: number
  keepConn: boolean
  /** Every PARAMS pair, in order (SCRIPT_FILENAME, DOCUMENT_ROOT, anything `fastcgi_param` set). */
  params: readonly (readonly [string, string])[]
}

const requestInfo = new WeakMap<IncomingMessage, FastCGIRequestInfo>()

/** For a request that arrived over FastCGI: its role, request id and the raw params. */
export function fastcgiRequestInfo(req: IncomingMessage): FastCGIRequestInfo | undefined {
  return requestInfo.get(req)
}

/** Records held for one writev at most (see ListenerConnection.write). */
const FLUSH_BYTES = 64 * 1024

/** Bytes of management replies (GET_VALUES_RESULT, UNKNOWN_TYPE) a peer may leave unread. */
const MAX_UNREAD_REPLIES = 1024 * 1024

export class FastCGIServer extends Server {
  readonly handler: RequestListener
  readonly authorizer: RequestListener | undefined
  readonly log: Logger
  private allowList: ReturnType<typeof parseAllowList>
  maxParamsBytes: number
  headerTimeout: number
  idleTimeout: number
  /** Connections accepted since the server started (refused ones not counted). */
  connectionsAccepted = 0
  /** Requests handed to a handler since the server started. */
  requestsStarted = 0
  /** Set once close() was called: connections end after their request. */
  closing = false
  private readonly active = new Set<ListenerConnection>()

  constructor(handler: RequestListener, options: FastCGIServerOptions = {}) {
    super({ allowHalfOpen: true })
    this.handler = handler
    this.authorizer = options.authorizer
    this.log = options.log ?? pino({ level: 'warn' })
    this.allowList = parseAllowList(options.allow ?? DEFAULT_FASTCGI_ALLOW)
    this.maxParamsBytes = Math.min(
      options.maxParamsBytes ?? FASTCGI_DEFAULT_MAX_PARAMS_BYTES,
      FASTCGI_MAX_PARAMS_BYTES,
    )
    this.headerTimeout = options.headerTimeout ?? 10_000
    this.idleTimeout = options.idleTimeout ?? 75_000
    if (options.maxConnections !== undefined) this.maxConnections = options.maxConnections
    this.on('connection', (socket: Socket) => this.accept(socket))
  }

  /** Replace the allow-list (takes effect for new connections). */
  setAllow(entries: readonly string[]): void {
    this.allowList = parseAllowList(entries)
  }

  override close(callback?: (err?: Error) => void): this {
    this.closing = true
    return super.close(callback)
  }

  /** Close connections with no request in flight. */
  closeIdleConnections(): void {
    for (const c of this.active) if (!c.busy) c.socket.destroy()
  }

  closeAllConnections(): void {
    for (const c of this.active) c.socket.destroy()
  }

  /** The values this server enforces, for GET_VALUES_RESULT. */
  values(): Map<string, string> {
    const values = new Map<string, string>()
    // Node's server.maxConnections closes connections past the limit; with one request per
    // connection that bounds requests too.
    if (Number.isFinite(this.maxConnections) && this.maxConnections > 0) {
      values.set('FCGI_MAX_CONNS', String(this.maxConnections))
      values.set('FCGI_MAX_REQS', String(this.maxConnections))
    }
    values.set('FCGI_MPXS_CONNS', '0')
    return values
  }

  private accept(socket: Socket): void {
    if (!admitPeer(socket, this.allowList, this.log, 'FastCGI', 'fastcgi_allow')) return
    this.connectionsAccepted++
    const connection = new ListenerConnection(socket, this)
    this.active.add(connection)
    socket.once('close', () => this.active.delete(connection))
  }
}

/** One request on a connection, from BEGIN_REQUEST to END_REQUEST. */
interface Current {
  id: number
  role: 'responder' | 'authorizer'
  keepConn: boolean
  params: NameValueDecoder
  /** Set once PARAMS ended and the handler has the request. */
  exchange: GatewayExchange | null
  out: ResponseStream | null
  /** Body bytes still expected (CONTENT_LENGTH minus what arrived). */
  remaining: number
  bodyEnded: boolean
  /** END_REQUEST written: records for this id are ignored from now on. */
  ended: boolean
}

/** A FastCGI protocol violation by the web server: the connection cannot continue. */
class BadInput extends Error {}

class ListenerConnection {
  private readonly parser: RecordParser
  private current: Current | null = null
  private timer: NodeJS.Timeout | undefined
  /** No further records are read (closing after a refusal or a request without KEEP_CONN). */
  private stopped = false
  /** Records not yet handed to the socket (see write()). */
  private pending: Buffer[] = []
  private pendingBytes = 0
  private flushTimer: NodeJS.Immediate | null = null

  constructor(
    readonly socket: Socket,
    private readonly server: FastCGIServer,
  ) {
    this.parser = new RecordParser((record) => this.onRecord(record))
    socket.on('data', this.onData)
    socket.on('end', () => this.onEnd())
    socket.on('error', (err) => this.server.log.debug({ err }, 'FastCGI connection error'))
    socket.on('close', () => this.onClose())
    this.armIdle()
  }

  /** A request is in flight (its response is not complete yet). */
  get busy(): boolean {
    return this.current !== null && !this.current.ended
  }

  private get log(): Logger {
    return this.server.log
  }

  private armIdle(): void {
    clearTimeout(this.timer)
    if (this.server.idleTimeout > 0)
      this.timer = setTimeout(() => this.socket.destroy(), this.server.idleTimeout).unref()
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.stopped) return
    try {
      this.parser.feed(chunk)
    } catch (err) {
      this.fail(err)
    }
  }

  private onRecord(record: FcgiRecord): void {
    if (this.stopped) return
    const { type, requestId: id } = record
    if (id === 0) {
      this.onManagement(record)
      return
    }
    if (type === RecordType.BEGIN_REQUEST) {
      this.onBegin(record)
      return
    }
    const current = this.current
    // Records for a request that is not active (ended, refused, never begun) are ignored,
    // as the specification says (section 3.3).
    if (!current || current.id !== id || current.ended) return
    switch (type) {
      case RecordType.PARAMS:
        this.onParams(current, record.content)
        return
      case RecordType.STDIN:
        this.onStdin(current, record.content)
        return
      case RecordType.DATA:
        return // FILTER only, which is refused at BEGIN_REQUEST
      case RecordType.ABORT_REQUEST:
        this.onAbort(current)
        return
      default:
        this.unknownType(type)
    }
  }

  /**
   * Management answers pile up in the socket when the peer sends records without reading
   * ours: past a bound that is abuse, not a web server.
   */
  private checkUnread(): void {
    const unread = this.socket.writableLength + this.pendingBytes
    if (unread > MAX_UNREAD_REPLIES)
      throw new BadInput(`peer does not read its replies (${unread} bytes unread)`)
  }

  private onManagement(record: FcgiRecord): void {
    this.checkUnread()
    if (record.type !== RecordType.GET_VALUES) {
      this.unknownType(record.type)
      return
    }
    let names: [string, string][]
    try {
      names = decodeNameValuePairs(record.content)
    } catch (err) {
      throw new BadInput(`GET_VALUES: ${(err as Error).message}`)
    }
    const known = this.server.values()
    const answer: [string, string][] = []
    for (const [name] of names) {
      const value = known.get(name)
      if (value !== undefined) answer.push([name, value])
    }
    this.write(encodeRecord(RecordType.GET_VALUES_RESULT, 0, encodeNameValuePairs(answer)))
  }

  private unknownType(type: number): void {
    this.checkUnread()
    this.log.debug(
      { code: 'GH_ERR_FASTCGI_UNKNOWN_TYPE', type, remote_addr: this.socket.remoteAddress },
      `FastCGI record type ${type} not understood: answered FCGI_UNKNOWN_TYPE`,
    )
    this.write(encodeUnknownType(type))
  }

  private onBegin(record: FcgiRecord): void {
    const id = record.requestId
    let begin: ReturnType<typeof decodeBeginRequest>
    try {
      begin = decodeBeginRequest(record.content)
    } catch (err) {
      throw new BadInput((err as Error).message)
    }
    const current = this.current
    if (current && !current.ended) {
      if (current.id === id) throw new BadInput(`BEGIN_REQUEST for request ${id}, which is already active`)
      this.log.debug(
        { code: 'GH_ERR_FASTCGI_MPX', id, active: current.id },
        'second concurrent FastCGI request on a connection: answered FCGI_CANT_MPX_CONN',
      )
      this.write(encodeEndRequest(id, 0, ProtocolStatus.CANT_MPX_CONN))
      return
    }
    // The previous request's response is complete; a body it never read is dropped.
    if (current?.exchange && !current.bodyEnded) current.exchange.abortBody()
    this.current = null
    const role =
      begin.role === Role.RESPONDER
        ? 'responder'
        : begin.role === Role.AUTHORIZER && this.server.authorizer
          ? 'authorizer'
          : null
    if (role === null) {
      this.log.debug(
        { code: 'GH_ERR_FASTCGI_ROLE', id, role: begin.role },
        'FastCGI role not supported: answered FCGI_UNKNOWN_ROLE',
      )
      this.write(encodeEndRequest(id, 0, ProtocolStatus.UNKNOWN_ROLE))
      if (!begin.keepConn) this.closeAfterReply()
      return
    }
    clearTimeout(this.timer)
    if (this.server.headerTimeout > 0) {
      this.timer = setTimeout(() => {
        this.refuse(
          new GatehouseError('GH_ERR_HEADER_TIMEOUT', 'FastCGI PARAMS not received in time'),
          'GH_ERR_HEADER_TIMEOUT',
        )
      }, this.server.headerTimeout).unref()
    }
    this.current = {
      id,
      role,
      keepConn: begin.keepConn,
      params: new NameValueDecoder(this.server.maxParamsBytes),
      exchange: null,
      out: null,
      remaining: 0,
      bodyEnded: false,
      ended: false,
    }
  }

  private onParams(current: Current, content: Buffer): void {
    if (current.exchange) throw new BadInput('PARAMS after the end of the PARAMS stream')
    try {
      if (content.length > 0) {
        current.params.feed(content)
        return
      }
      current.params.end()
    } catch (err) {
      if (err instanceof FastCGIProtocolError && err.code === 'FCGI_PARAMS_TOO_LARGE') {
        this.refuse(
          new GatehouseError(
            'GH_ERR_FASTCGI_PARAMS_TOO_LARGE',
            `more than ${this.server.maxParamsBytes} bytes of PARAMS`,
          ),
          'GH_ERR_FASTCGI_PARAMS_TOO_LARGE',
        )
        return
      }
      throw new BadInput((err as Error).message)
    }
    clearTimeout(this.timer)
    this.start(current)
  }

  private start(current: Current): void {
    const pairs = current.params.pairs
    let head: GatewayRequestHead
    try {
      head = requestFromGatewayVars(pairs, 'GH_ERR_FASTCGI_BAD_RECORD')
    } catch (err) {
      this.refuse(err as GatehouseError, 'GH_ERR_FASTCGI_BAD_RECORD')
      return
    }
    const out = new ResponseStream(this, current.id)
    current.out = out
    const exchange = createGatewayExchange({
      socket: out as unknown as Socket,
      method: head.method,
      url: head.url,
      httpVersion: head.httpVersion,
      // An authorizer sees the request without its body (the web server sends none).
      rawHeaders: current.role === 'authorizer' ? withoutBodyHeaders(head.rawHeaders) : head.rawHeaders,
      conn: requestConnection(head, this.socket),
      onResponseEnd: () => this.endRequest(current, 0),
    })
    current.exchange = exchange
    requestInfo.set(exchange.req, {
      role: current.role,
      requestId: current.id,
      keepConn: current.keepConn,
      params: pairs,
    })
    current.remaining = current.role === 'authorizer' ? 0 : (head.contentLength ?? 0)
    if (current.remaining === 0) this.endBody(current)
    this.server.requestsStarted++
    const handler = current.role === 'authorizer' ? this.server.authorizer! : this.server.handler
    try {
      handler(exchange.req, exchange.res)
    } catch (err) {
      this.log.error({ err, uri: head.url }, 'FastCGI request handler threw')
      if (exchange.res.headersSent) exchange.res.destroy()
      else sendStatus(exchange.res, 500)
    }
  }

  private endBody(current: Current): void {
    if (current.bodyEnded) return
    current.bodyEnded = true
    current.exchange!.endBody()
  }

  private onStdin(current: Current, content: Buffer): void {
    if (!current.exchange) throw new BadInput('STDIN before the end of the PARAMS stream')
    if (content.length === 0) {
      // The stream ended short of CONTENT_LENGTH: the body is incomplete.
      if (!current.bodyEnded) {
        current.bodyEnded = true
        current.exchange.abortBody()
      }
      return
    }
    if (current.bodyEnded) return // past CONTENT_LENGTH (or a body nobody reads any more)
    const data = content.length > current.remaining ? content.subarray(0, current.remaining) : content
    current.remaining -= data.length
    const more = current.exchange.pushBody(data)
    if (current.remaining === 0) this.endBody(current)
    else if (!more) this.socket.pause()
  }

  /** The response stream was ended (an nph- CGI script ends its "socket"): the reply is complete. */
  endRequestById(id: number): void {
    if (this.current?.id === id) this.endRequest(this.current, 0)
  }

  /** The handler wants more body (req calls socket.resume() on its ResponseStream). */
  resumeInput(id: number): void {
    if (this.current?.id === id && !this.stopped) this.socket.resume()
  }

  private onAbort(current: Current): void {
    this.log.debug({ id: current.id }, 'FastCGI request aborted by the web server (ABORT_REQUEST)')
    this.cancel(current)
    this.endRequest(current, 1)
  }

  /** Stop the handler's request and response: req emits 'aborted' / 'close', res 'close'. */
  private cancel(current: Current): void {
    const exchange = current.exchange
    if (!exchange) return
    // First the response stream, so that destroying req (which destroys its socket) is not
    // taken for a handler breaking its response.
    current.out?.detach()
    if (!current.bodyEnded) {
      current.bodyEnded = true
      exchange.abortBody()
    }
    if (!exchange.req.destroyed) exchange.req.destroy()
  }

  /**
   * The response is complete (or the request was aborted): the end of STDOUT and
   * END_REQUEST, then the next request, or the end of the connection without KEEP_CONN.
   */
  endRequest(current: Current, appStatus: number): void {
    if (current.ended || this.current !== current) return
    current.ended = true
    current.out?.detach()
    this.write([
      ...encodeStream(RecordType.STDOUT, current.id, Buffer.alloc(0)),
      ...encodeEndRequest(current.id, appStatus, ProtocolStatus.REQUEST_COMPLETE),
    ])
    if (current.bodyEnded || !current.exchange) this.current = null
    if (!current.keepConn || this.server.closing) {
      this.closeAfterReply()
      return
    }
    // Body bytes a handler left unread keep flowing (and are dropped) until the next request.
    this.socket.resume()
    this.armIdle()
  }

  /** The response stream was destroyed by its writer (res.destroy()): the reply is broken. */
  responseBroken(id: number, reason?: string): void {
    if (this.current?.id !== id || this.current.ended) return
    if (reason) this.log.error({ id }, `FastCGI response cannot be sent: ${reason}; closing the connection`)
    else this.log.debug({ id }, 'FastCGI response destroyed by the handler: closing the connection')
    this.current.ended = true
    this.cancel(this.current)
    this.socket.destroy()
  }

  /**
   * Hand whole records to the socket; false when its buffer is full. Records are gathered
   * until the event loop turns (or 64 KB are held) and go out in one writev: a small
   * response (head, body, end of STDOUT, END_REQUEST) is one system call, not four.
   */
  write(parts: Buffer[]): boolean {
    const socket = this.socket
    if (socket.destroyed || !socket.writable) return true
    for (const p of parts) {
      this.pending.push(p)
      this.pendingBytes += p.length
    }
    if (this.pendingBytes >= FLUSH_BYTES) return this.flush()
    this.flushTimer ??= setImmediate(this.flush)
    return !socket.writableNeedDrain
  }

  private readonly flush = (): boolean => {
    if (this.flushTimer) {
      clearImmediate(this.flushTimer)
      this.flushTimer = null
    }
    const socket = this.socket
    const parts = this.pending
    if (parts.length === 0 || socket.destroyed || !socket.writable) {
      this.pending = []
      this.pendingBytes = 0
      return !socket.writableNeedDrain
    }
    this.pending = []
    this.pendingBytes = 0
    if (parts.length === 1) return socket.write(parts[0]!)
    socket.cork()
    for (const p of parts) socket.write(p)
    socket.uncork()
    return !socket.writableNeedDrain
  }

  private closeAfterReply(): void {
    this.flush()
    this.stopped = true
    clearTimeout(this.timer)
    this.socket.off('data', this.onData)
    // Keep reading (and discarding) so that closing does not turn into a reset that could
    // destroy the reply before the peer reads it.
    this.socket.resume()
    endAfterReply(this.socket)
  }

  /** The peer will send no more. */
  private onEnd(): void {
    if (this.stopped) return
    if (this.parser.pending > 0) {
      this.fail(new BadInput(`connection closed inside a record (${this.parser.pending} bytes of it)`))
      return
    }
    const current = this.current
    if (current && !current.ended) {
      // FastCGI has no half-close: a web server that closes the connection mid-request
      // (nginx when its client goes away) has given up on it, as Go's net/http/fcgi reads it.
      this.log.debug({ id: current.id }, 'FastCGI connection closed by the web server mid-request')
      current.ended = true
      this.cancel(current)
      this.stopped = true
      this.socket.destroy()
      return
    }
    this.closeAfterReply()
  }

  private onClose(): void {
    clearTimeout(this.timer)
    if (this.flushTimer) clearImmediate(this.flushTimer)
    const current = this.current
    if (current && !current.ended) {
      current.ended = true
      this.cancel(current)
    }
    current?.out?.destroyFromConnection()
  }

  /**
   * Input the server cannot serve but can answer: an error reply on STDOUT (the web server
   * relays it; its status names the problem), END_REQUEST, and the end of the connection.
   */
  private refuse(err: GatehouseError, code: ErrorCode): void {
    const current = this.current
    const { status, reason, body } = refusal(code, err.message)
    this.log.debug(
      { code, status, remote_addr: this.socket.remoteAddress },
      `FastCGI request refused: ${err.message}`,
    )
    if (!current || current.ended || current.exchange) {
      this.fail(err)
      return
    }
    current.ended = true
    const head = `Status: ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`
    this.write([
      ...encodeStream(RecordType.STDOUT, current.id, Buffer.from(head + body)),
      ...encodeStream(RecordType.STDOUT, current.id, Buffer.alloc(0)),
      ...encodeEndRequest(current.id, 1, ProtocolStatus.REQUEST_COMPLETE),
    ])
    this.closeAfterReply()
  }

  /** Bytes that are not a FastCGI conversation: log, end the request in flight, close. */
  private fail(err: unknown): void {
    if (this.stopped) return
    const known =
      err instanceof BadInput || err instanceof FastCGIProtocolError || err instanceof GatehouseError
    if (!known) this.log.error({ err }, 'FastCGI listener failed')
    else
      this.log.warn(
        { code: 'GH_ERR_FASTCGI_BAD_RECORD', remote_addr: this.socket.remoteAddress },
        `FastCGI connection closed: ${(err as Error).message}`,
      )
    const current = this.current
    if (current && !current.ended) {
      current.ended = true
      this.cancel(current)
      // The request cannot complete: say so (application status 1), then close.
      this.write(encodeEndRequest(current.id, 1, ProtocolStatus.REQUEST_COMPLETE))
    }
    this.closeAfterReply()
  }
}

/** Header lines without CONTENT_LENGTH / CONTENT_TYPE: an authorizer's request has no body. */
function withoutBodyHeaders(raw: readonly string[]): string[] {
  const out: string[] = []
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i] === 'content-length' || raw[i] === 'content-type') continue
    out.push(raw[i]!, raw[i + 1]!)
  }
  return out
}

const CRLF2 = Buffer.from('\r\n\r\n')

/**
 * The `socket` of a FastCGI request's ServerResponse: node writes an HTTP/1.1 response into
 * it; it writes FCGI_STDOUT records to the connection. The status line becomes
 * `Status: NNN reason`, hop-by-hop fields are dropped, a chunked body is de-chunked (the
 * end of STDOUT delimits the body). Backpressure is the connection's: a write completes
 * when the connection took it.
 */
class ResponseStream extends Duplex {
  private head: Buffer[] | null = []
  private headLength = 0
  private chunked: ChunkedDecoder | null = null
  /** What one write de-chunked to (see collect). */
  private decoded: Buffer[] = []
  detached = false
  /** Bytes written by the response (HTTP form), for the access log like socket.bytesWritten. */
  bytesWritten = 0
  private readonly waiters = new Set<() => void>()
  private connectionClosed = false

  constructor(
    private readonly conn: ListenerConnection,
    private readonly id: number,
  ) {
    super({ allowHalfOpen: true })
    // Nothing is read from this stream and writes never fail; an 'error' (a handler that
    // calls res.destroy(err)) is the response's, already handled as a broken reply.
    this.on('error', () => {})
  }

  get remoteAddress(): string | undefined {
    return this.conn.socket.remoteAddress
  }
  get remotePort(): number | undefined {
    return this.conn.socket.remotePort
  }
  get localAddress(): string | undefined {
    return this.conn.socket.localAddress
  }
  get localPort(): number | undefined {
    return this.conn.socket.localPort
  }

  override _read(): void {}

  override resume(): this {
    this.conn.resumeInput(this.id)
    return super.resume()
  }

  setTimeout(_ms: number, callback?: () => void): this {
    if (callback) this.once('timeout', callback)
    return this
  }
  setNoDelay(): this {
    return this
  }
  setKeepAlive(): this {
    return this
  }
  ref(): this {
    return this
  }
  unref(): this {
    return this
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.bytesWritten += chunk.length
    if (this.detached) {
      callback()
      return
    }
    let body = chunk
    if (this.head) {
      this.head.push(chunk)
      this.headLength += chunk.length
      const all = this.head.length === 1 ? chunk : Buffer.concat(this.head, this.headLength)
      const end = all.indexOf(CRLF2)
      if (end < 0) {
        if (this.headLength > 1024 * 1024) {
          this.conn.responseBroken(this.id, 'response header block over 1 MB')
          callback()
          return
        }
        callback()
        return
      }
      this.head = null
      let cgiHead: string
      try {
        cgiHead = this.cgiHead(all.toString('latin1', 0, end))
      } catch (err) {
        this.conn.responseBroken(this.id, (err as Error).message)
        callback()
        return
      }
      body = all.subarray(end + 4)
      this.send(Buffer.from(cgiHead, 'latin1'))
    }
    if (this.chunked) {
      try {
        this.chunked.push(body, this.collect)
      } catch (err) {
        this.conn.responseBroken(this.id, `${(err as Error).message} in the response`)
        callback()
        return
      }
      const decoded = this.decoded
      this.decoded = []
      body = decoded.length === 1 ? decoded[0]! : Buffer.concat(decoded)
    }
    const ok = body.length === 0 ? !this.conn.socket.writableNeedDrain : this.send(body)
    if (ok) callback()
    else this.waitDrain(callback)
  }

  // Trailer fields are dropped: a CGI response has none.
  private readonly collect = (data: Buffer): void => {
    this.decoded.push(data)
  }

  private send(data: Buffer): boolean {
    return this.conn.write(encodeStream(RecordType.STDOUT, this.id, data))
  }

  private waitDrain(callback: () => void): void {
    const socket = this.conn.socket
    const done = () => {
      socket.off('drain', done)
      socket.off('close', done)
      this.waiters.delete(done)
      callback()
    }
    this.waiters.add(done)
    socket.on('drain', done)
    socket.on('close', done)
  }

  /** HTTP/1.1 head -> CGI header block. */
  private cgiHead(http: string): string {
    const lines = http.split('\r\n')
    const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0] ?? '')
    if (!m)
      throw new Error(
        `response does not start with an HTTP/1.x status line: ${JSON.stringify(lines[0]?.slice(0, 40))}`,
      )
    let out = `Status: ${m[1]}${m[2] ? ` ${m[2]}` : ''}\r\n`
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!
      const colon = line.indexOf(':')
      const name = (colon < 0 ? line : line.slice(0, colon)).trim().toLowerCase()
      if (name === 'transfer-encoding') {
        if (/chunked/i.test(line.slice(colon + 1))) this.chunked = new ChunkedDecoder()
        continue
      }
      if (HOP_BY_HOP.has(name)) continue
      out += `${line}\r\n`
    }
    return `${out}\r\n`
  }

  override _final(callback: (err?: Error | null) => void): void {
    // An nph- CGI script ends the "socket" rather than the response: that is its end.
    this.conn.endRequestById(this.id)
    callback()
  }

  /** Stop forwarding: the request is over; later writes are dropped. */
  detach(): void {
    if (this.detached) return
    this.detached = true
    this.connectionClosed = true
    for (const w of [...this.waiters]) w()
    // Destroy after the current tick, so res sees 'close' (node's onServerResponseClose).
    process.nextTick(() => {
      if (!this.destroyed) this.destroyFromConnection()
    })
  }

  destroyFromConnection(): void {
    this.connectionClosed = true
    this.detached = true
    for (const w of [...this.waiters]) w()
    if (!this.destroyed) this.destroy()
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    // Destroyed by the response (res.destroy(), a failed handler) rather than by us: the
    // reply is broken, and only closing the connection tells the web server so.
    if (!this.connectionClosed) this.conn.responseBroken(this.id)
    this.detached = true
    callback(err)
  }
}

/**
 * A FastCGI server for a node:http-shaped handler: `createFastCGIServer(app).listen(9000)`
 * (or a Unix socket path). The same handler works in `http.createServer(app)`.
 */
export function createFastCGIServer(
  handler: RequestListener,
  options: FastCGIServerOptions = {},
): FastCGIServer {
  return new FastCGIServer(handler, options)
}
