/*
 * One connection of the FastCGI application side, as a state machine over records:
 * BEGIN_REQUEST, PARAMS (into a request for the handler), STDIN (its body), ABORT_REQUEST,
 * the management records; then the reply records, gathered into few writes, END_REQUEST,
 * and keeping or closing the connection. Refusals and protocol violations end here too.
 */
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import { type ErrorCode, GatehouseError, isProtocolError } from '../../core/errors.js'
import { sendStatus } from '../../core/respond.js'
import type { RequestListener } from '../../core/types.js'
import {
  decodeBeginRequest,
  decodeNameValuePairs,
  encodeEndRequest,
  encodeNameValuePairs,
  encodeRecord,
  encodeStream,
  encodeUnknownType,
  type FcgiRecord,
  NameValueDecoder,
  ProtocolStatus,
  RecordParser,
  RecordType,
  Role,
} from './codec.js'
import { type GatewayRequestHead, requestFromGatewayVars } from '../../cgi-vars/request.js'
import { createGatewayExchange, type GatewayExchange } from '../../inbound/exchange.js'
import { endAfterReply, refusal, requestConnection } from '../../inbound/peer.js'
import { type ResponseSink, ResponseStream } from './server-response.js'
import { webServerErrorCode } from './errors.js'

/** What a connection reads of its server (FastCGIServer), when it needs it: settings may change. */
export interface ConnectionHost {
  readonly handler: RequestListener
  readonly authorizer: RequestListener | undefined
  readonly log: Logger
  readonly maxParamsBytes: number
  readonly headerTimeout: number
  readonly idleTimeout: number
  /** Time allowed between two STDIN records of a body, in ms (0: no limit). */
  readonly bodyTimeout: number
  /** close() was called: connections end after their request. */
  readonly closing: boolean
  /** Requests handed to a handler, counted here. */
  requestsStarted: number
  /** The values the server enforces, for GET_VALUES_RESULT. */
  values(): Map<string, string>
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

/**
 * One connection from a web server: records in, requests to the handler, records out. One
 * request at a time; END_REQUEST, then the next one or the end of the connection.
 */
export class ListenerConnection implements ResponseSink {
  private readonly parser: RecordParser
  private current: Current | null = null
  private timer: NodeJS.Timeout | undefined
  /** The body timeout of the request in flight (see armBody). */
  private bodyTimer: NodeJS.Timeout | undefined
  /** No further records are read (closing after a refusal or a request without KEEP_CONN). */
  private stopped = false
  /** Records not yet handed to the socket (see write()). */
  private pending: Buffer[] = []
  private pendingBytes = 0
  private flushTimer: NodeJS.Immediate | null = null

  constructor(
    readonly socket: Socket,
    private readonly server: ConnectionHost,
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
      if (isProtocolError(err, 'fastcgi') && webServerErrorCode(err) === 'GH_ERR_FASTCGI_PARAMS_TOO_LARGE') {
        this.refuse(
          new GatehouseError(
            'GH_ERR_FASTCGI_PARAMS_TOO_LARGE',
            `more than ${this.server.maxParamsBytes} bytes of PARAMS`,
            { cause: err },
          ),
          'GH_ERR_FASTCGI_PARAMS_TOO_LARGE',
        )
        return
      }
      throw new BadInput((err as Error).message, { cause: err })
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
    else this.armBody(current)
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

  /** (Re)start the time allowed until the next STDIN record of the body. */
  private armBody(current: Current): void {
    clearTimeout(this.bodyTimer)
    if (this.server.bodyTimeout <= 0) return
    this.bodyTimer = setTimeout(() => {
      this.bodyFailed(
        current,
        'GH_ERR_BODY_TIMEOUT',
        `no request body bytes for ${this.server.bodyTimeout} ms (${current.remaining} bytes missing)`,
      )
    }, this.server.bodyTimeout).unref()
  }

  /**
   * The body will not complete (STDIN ended short of CONTENT_LENGTH, or stalled past the
   * body timeout): the request is answered with `code` (400 / 408) in place of the
   * handler's response, or, when the handler's response has begun, aborted (application
   * status 1). The connection goes on with its next request.
   */
  private bodyFailed(current: Current, code: ErrorCode, message: string): void {
    clearTimeout(this.bodyTimer)
    if (current.ended || this.current !== current) return
    const started = (current.out?.bytesWritten ?? 0) > 0
    this.log.debug(
      { code, id: current.id, remote_addr: this.socket.remoteAddress },
      `FastCGI request body: ${message}`,
    )
    current.ended = true
    this.cancel(current)
    const parts: Buffer[] = []
    if (!started) {
      const { status, reason, body } = refusal(code, message)
      const head = `Status: ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`
      parts.push(...encodeStream(RecordType.STDOUT, current.id, Buffer.from(head + body)))
    }
    parts.push(
      ...encodeStream(RecordType.STDOUT, current.id, Buffer.alloc(0)),
      ...encodeEndRequest(current.id, started ? 1 : 0, ProtocolStatus.REQUEST_COMPLETE),
    )
    this.write(parts)
    this.current = null
    if (!current.keepConn || this.server.closing) {
      this.closeAfterReply()
      return
    }
    this.socket.resume()
    this.armIdle()
  }

  private endBody(current: Current): void {
    if (current.bodyEnded) return
    current.bodyEnded = true
    clearTimeout(this.bodyTimer)
    current.exchange!.endBody()
  }

  private onStdin(current: Current, content: Buffer): void {
    if (!current.exchange) throw new BadInput('STDIN before the end of the PARAMS stream')
    if (content.length === 0) {
      // The stream ended short of CONTENT_LENGTH: the body is incomplete.
      if (!current.bodyEnded)
        this.bodyFailed(
          current,
          'GH_ERR_BODY_INCOMPLETE',
          `STDIN ended ${current.remaining} bytes short of CONTENT_LENGTH`,
        )
      return
    }
    if (current.bodyEnded) return // past CONTENT_LENGTH (or a body nobody reads any more)
    const data = content.length > current.remaining ? content.subarray(0, current.remaining) : content
    current.remaining -= data.length
    const more = current.exchange.pushBody(data)
    if (current.remaining === 0) this.endBody(current)
    else if (!more) {
      // The handler is not reading: the time between records is not the web server's.
      clearTimeout(this.bodyTimer)
      this.socket.pause()
    } else this.armBody(current)
  }

  /** The response stream was ended (an nph- CGI script ends its "socket"): the reply is complete. */
  endRequestById(id: number): void {
    if (this.current?.id === id) this.endRequest(this.current, 0)
  }

  /** The handler wants more body (req calls socket.resume() on its ResponseStream). */
  resumeInput(id: number): void {
    const current = this.current
    if (current?.id !== id || this.stopped) return
    if (!current.bodyEnded && !current.ended && current.exchange) this.armBody(current)
    this.socket.resume()
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
    clearTimeout(this.bodyTimer)
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
    clearTimeout(this.bodyTimer)
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
    const known = err instanceof BadInput || isProtocolError(err, 'fastcgi') || err instanceof GatehouseError
    if (!known) this.log.error({ err }, 'FastCGI listener failed')
    else
      this.log.warn(
        {
          code: isProtocolError(err, 'fastcgi') ? webServerErrorCode(err) : 'GH_ERR_FASTCGI_BAD_RECORD',
          remote_addr: this.socket.remoteAddress,
        },
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
