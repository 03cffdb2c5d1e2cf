/*
 * HTTP/2 on the front (issue 14 item 2): ALPN `h2` on a TLS listener, and cleartext h2c with
 * prior knowledge on a plain one. The listener stays the node:https (or node:http) server it
 * was: its HTTP/1.1 connections keep every option, timeout and the connection tracking that
 * graceful stop uses. Only a connection that speaks HTTP/2 is handed to a node:http2 server
 * that never listens itself (`emit('connection')`), which makes a session of it and emits
 * the compat API's requests (Http2ServerRequest/Response) to the same request listener.
 *
 * (node:http2's createSecureServer({ allowHTTP1 }) would do the ALPN switch too, but its
 * HTTP/1.1 side is a different server object: none of the node:http server options
 * (maxHeaderSize, requireHostHeader, keepAliveTimeout...) reach it.)
 *
 * Limits (docs/http-front.md, HTTP/2): SETTINGS_MAX_CONCURRENT_STREAMS, a header list bound
 * tied to limits.max_header_bytes, an ACK of our SETTINGS within settings_timeout, an idle
 * session closed after keepalive_timeout, and a bound on the streams a client resets (the
 * rapid-reset flood, CVE-2023-44487): node runs the handler of a stream that a RST_STREAM
 * in the same packet cancels, so a reset costs us a handler start; past max_resets in
 * reset_window the session gets GOAWAY (ENHANCE_YOUR_CALM) and is closed. nghttp2 itself
 * ends a session that floods CONTINUATION frames (CVE-2024-27316 class).
 */
import http2, {
  type Http2Server,
  Http2ServerRequest,
  Http2ServerResponse,
  type Http2Session,
  type ServerHttp2Stream,
} from 'node:http2'
import type { IncomingMessage, OutgoingHttpHeaders, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import { refuse } from '../core/respond.js'

/** The `[http2]` settings (docs/configuration.md). */
export interface Http2Settings {
  /** HTTP/2 on TLS listeners unless a listen entry says `http2 = false` (`--no-http2`: false). */
  enabled: boolean
  /** SETTINGS_MAX_CONCURRENT_STREAMS (nginx's http2_max_concurrent_streams, 128). */
  max_concurrent_streams: number
  /** Our SETTINGS must be acknowledged within this (ms); else the session is closed. */
  settings_timeout: number
  /** Streams a client may reset within reset_window before its session is closed. */
  max_resets: number
  /** ms. */
  reset_window: number
}

export const HTTP2_DEFAULTS: Http2Settings = {
  enabled: true,
  max_concurrent_streams: 128,
  settings_timeout: 10_000,
  max_resets: 200,
  reset_window: 10_000,
}

/** What a front's HTTP/2 side needs from the listener's limits. */
export interface Http2Limits {
  /** limits.max_header_bytes: SETTINGS_MAX_HEADER_LIST_SIZE. */
  maxHeaderBytes: number
  /** limits.max_headers (plus the four pseudo-headers): more fields end the stream. */
  maxHeaders: number
  /** limits.keepalive_timeout (ms): a session with no open stream for this long gets GOAWAY. */
  idleTimeout: number
}

/** RFC 9113 8.2.2: fields that are connection-specific, never sent in an HTTP/2 response. */
const CONNECTION_SPECIFIC = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
])

const dropped = (name: string) => CONNECTION_SPECIFIC.has(name.trim().toLowerCase())

/** The compat request's own getter of `name`, read for `req`. */
const parentGetter = <T>(name: string, req: Http2ServerRequest): T =>
  Reflect.get(Http2ServerRequest.prototype, name, req) as T

const PLAIN_RAW = Symbol('gatehouse.h2.rawHeaders')
const PLAIN_HEADERS = Symbol('gatehouse.h2.headers')
type Plain = Http2ServerRequest & {
  [PLAIN_RAW]?: string[]
  [PLAIN_HEADERS]?: IncomingMessage['headers']
}

/**
 * A request body without Content-Length (HEADERS without END_STREAM): what HTTP/1.1 calls
 * chunked. The HTTP/1.1 view says `Transfer-Encoding: chunked`, so every gateway reads (or
 * spools) it as it reads a chunked body; HTTP/2 itself frames it in DATA frames.
 */
function bodyOfUnknownLength(req: Http2ServerRequest): boolean {
  const all = parentGetter<IncomingMessage['headers']>('headers', req)
  return all['content-length'] === undefined && !req.stream.endAfterHeaders
}

/**
 * The compat request with HTTP/1.1's view of the header fields: `rawHeaders` and `headers`
 * without the pseudo-headers, and `:authority` as `Host` (RFC 9113 8.3.1) when the client
 * sent none, and a body of unknown length as chunked (bodyOfUnknownLength), so the CGI
 * variables, the WSGI environ and the ASGI scope are built as for HTTP/1.1. `method` and `url` still come from `:method` and `:path`. (Accessors defined on
 * the prototype: node's typings declare these as fields.)
 */
class FrontHttp2Request extends Http2ServerRequest {}

Object.defineProperties(FrontHttp2Request.prototype, {
  rawHeaders: {
    get(this: Plain): string[] {
      const cached = this[PLAIN_RAW]
      if (cached) return cached
      const raw = parentGetter<string[]>('rawHeaders', this)
      const out: string[] = []
      let authority: string | undefined
      let host = false
      for (let i = 0; i + 1 < raw.length; i += 2) {
        const name = raw[i]!
        if (name.charCodeAt(0) === 58 /* ':' */) {
          if (name === ':authority') authority = raw[i + 1]
          continue
        }
        if (name === 'host') host = true
        out.push(name, raw[i + 1]!)
      }
      if (!host && authority !== undefined) out.unshift('host', authority)
      if (bodyOfUnknownLength(this)) out.push('transfer-encoding', 'chunked')
      return (this[PLAIN_RAW] = out)
    },
  },
  headers: {
    get(this: Plain): IncomingMessage['headers'] {
      const cached = this[PLAIN_HEADERS]
      if (cached) return cached
      const all = parentGetter<IncomingMessage['headers']>('headers', this)
      const out: IncomingMessage['headers'] = {}
      for (const name of Object.keys(all)) if (name.charCodeAt(0) !== 58) out[name] = all[name]
      const authority = all[':authority']
      if (out.host === undefined && typeof authority === 'string') out.host = authority
      if (bodyOfUnknownLength(this)) out['transfer-encoding'] = 'chunked'
      return (this[PLAIN_HEADERS] = out)
    },
  },
})

/**
 * The compat response that takes what every handler writes for HTTP/1.1: connection-specific
 * fields (an app's `Connection: close`, `Transfer-Encoding: chunked`, our own close on a
 * refusal) are dropped instead of failing the response (node throws
 * ERR_HTTP2_INVALID_CONNECTION_HEADERS), and a reason phrase is ignored without node's
 * warning (HTTP/2 has none, RFC 9113 8.3.2).
 */
class FrontHttp2Response extends Http2ServerResponse {
  override setHeader(name: string, value: number | string | readonly string[]): this {
    if (!dropped(name)) super.setHeader(name, value)
    return this
  }

  override appendHeader(name: string, value: string | readonly string[]): this {
    if (!dropped(name)) super.appendHeader(name, value as string | string[])
    return this
  }

  override writeHead(
    statusCode: number,
    reasonOrHeaders?: string | OutgoingHttpHeaders | readonly string[],
    maybeHeaders?: OutgoingHttpHeaders | readonly string[],
  ): this {
    let headers = typeof reasonOrHeaders === 'string' ? maybeHeaders : reasonOrHeaders
    if (Array.isArray(headers)) {
      const flat: string[] = Array.isArray(headers[0])
        ? (headers as unknown as string[][]).flat()
        : [...(headers as string[])]
      const kept: string[] = []
      for (let i = 0; i + 1 < flat.length; i += 2) if (!dropped(flat[i]!)) kept.push(flat[i]!, flat[i + 1]!)
      headers = kept
    } else if (headers) {
      const kept: OutgoingHttpHeaders = {}
      for (const name of Object.keys(headers))
        if (!dropped(name)) kept[name] = (headers as OutgoingHttpHeaders)[name]
      headers = kept
    }
    return headers === undefined
      ? super.writeHead(statusCode)
      : super.writeHead(statusCode, headers as OutgoingHttpHeaders)
  }
}

Object.defineProperties(FrontHttp2Response.prototype, {
  statusMessage: { get: () => '', set: () => {} },
  // node says a stream its client reset has finished writing (it emits 'finish' then
  // 'close' on the response either way): not finished unless it ended before it closed, as
  // HTTP/1.1's response says, which is how every gateway tells that a client went away.
  writableFinished: {
    get(this: Http2ServerResponse): boolean {
      return this.stream.writableFinished && !this.stream.aborted
    },
  },
})

/** RFC 9113 3.4: the client connection preface. */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')

/** NGHTTP2_ENHANCE_YOUR_CALM (RFC 9113 7). */
const ENHANCE_YOUR_CALM = http2.constants.NGHTTP2_ENHANCE_YOUR_CALM
const SETTINGS_TIMEOUT = http2.constants.NGHTTP2_SETTINGS_TIMEOUT

/**
 * A listener's HTTP/2 side. `attach` wires it to the listener's server; `closeIdle`,
 * `goAway` and `destroyAll` are graceful stop's steps for HTTP/2 sessions (the listener's
 * own closeIdleConnections/closeAllConnections see only HTTP/1.1 connections).
 */
export class Http2Front {
  private readonly server: Http2Server
  /** Open sessions and how many streams each has open. */
  private readonly sessions = new Map<Http2Session, { streams: number }>()
  /** h2c: connections whose first bytes are still awaited. */
  private readonly sniffing = new Set<Socket>()
  private settings: Http2Settings
  private limits: Http2Limits
  private stopping = false

  constructor(
    settings: Http2Settings,
    limits: Http2Limits,
    handler: (req: IncomingMessage, res: ServerResponse) => void,
    checkContinue: (req: IncomingMessage, res: ServerResponse) => void,
    private readonly log: Logger,
  ) {
    this.settings = settings
    this.limits = limits
    this.server = http2.createServer({
      settings: this.localSettings(),
      // Fields beyond max_headers end the stream (nghttp2 counts the pseudo-headers too).
      maxHeaderListPairs: limits.maxHeaders + 4,
      // A client that keeps opening streams past the limit is not a browser: after this
      // many refused streams (or invalid frames) nghttp2 ends the session.
      maxSessionRejectedStreams: 100,
      maxSessionInvalidFrames: 1000,
      Http2ServerRequest: FrontHttp2Request,
      Http2ServerResponse: FrontHttp2Response as unknown as typeof Http2ServerResponse<FrontHttp2Request>,
    })
    this.server.on('request', this.guard(handler) as never)
    this.server.on('checkContinue', this.guard(checkContinue) as never)
    this.server.on('session', (session: Http2Session) => this.track(session))
    // A session's protocol errors are the client's (logged at debug): its session is ended.
    this.server.on('sessionError', (err: Error) =>
      this.log.debug({ err: err.message, code: 'GH_ERR_HTTP2' }, 'HTTP/2 session error: session closed'),
    )
  }

  /**
   * Before a handler runs: a stream its client already reset is not served at all (the
   * rapid-reset flood's HEADERS+RST_STREAM pairs start no handler), and a header list over
   * max_header_bytes is answered 431 (as HTTP/1.1's; RFC 7541 4.1 counts 32 bytes a field).
   */
  private guard(handler: (req: IncomingMessage, res: ServerResponse) => void) {
    return (req: Http2ServerRequest, res: Http2ServerResponse) => {
      if (req.stream.closed || req.stream.destroyed) return
      const raw = req.rawHeaders
      let size = 0
      for (let i = 0; i + 1 < raw.length; i += 2) size += raw[i]!.length + raw[i + 1]!.length + 32
      if (size > this.limits.maxHeaderBytes) {
        refuse(res as unknown as ServerResponse, 'GH_ERR_HEADERS_TOO_LARGE', this.log)
        return
      }
      handler(req as unknown as IncomingMessage, res as unknown as ServerResponse)
    }
  }

  private localSettings(): http2.Settings {
    return {
      maxConcurrentStreams: this.settings.max_concurrent_streams,
      maxHeaderListSize: this.limits.maxHeaderBytes,
      enablePush: false,
    }
  }

  /** Limits changed on reload: new sessions get them (open ones keep theirs). */
  update(settings: Http2Settings, limits: Http2Limits): void {
    this.settings = settings
    this.limits = limits
    this.server.updateSettings(this.localSettings())
  }

  /**
   * Wire the listener: a TLS listener (ALPN `h2`) hands its `h2` connections over; a plain
   * one with h2c looks at each connection's first bytes for the HTTP/2 preface.
   */
  attach(listener: Server, secure: boolean, headerTimeout: number): void {
    const event = secure ? 'secureConnection' : 'connection'
    // The server's own listener (node:http's connection handling) was added when it was made.
    const http1 = listener.listeners(event) as ((socket: Socket) => void)[]
    listener.removeAllListeners(event)
    const toHttp1 = (socket: Socket) => {
      for (const l of http1) l.call(listener, socket)
    }
    if (secure)
      listener.on(event, (socket: Socket & { alpnProtocol?: string | false }) => {
        if (socket.alpnProtocol === 'h2') this.server.emit('connection', socket)
        else toHttp1(socket)
      })
    else listener.on(event, (socket: Socket) => this.sniff(socket, toHttp1, headerTimeout))
  }

  /**
   * h2c with prior knowledge (RFC 9113 3.3): a connection whose first 24 bytes are the
   * preface is HTTP/2, anything else HTTP/1.1. The bytes read are put back for whichever
   * takes the socket. A client that sends nothing is closed after header_timeout, as
   * HTTP/1.1's is.
   */
  private sniff(socket: Socket, toHttp1: (socket: Socket) => void, headerTimeout: number): void {
    let seen: Buffer = Buffer.alloc(0)
    this.sniffing.add(socket)
    const timer = headerTimeout > 0 ? setTimeout(() => socket.destroy(), headerTimeout).unref() : undefined
    const done = () => {
      clearTimeout(timer)
      this.sniffing.delete(socket)
      socket.off('data', onData)
      socket.off('close', done)
      socket.off('error', onError)
    }
    const onError = () => socket.destroy()
    const onData = (chunk: Buffer) => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk])
      const n = Math.min(seen.length, PREFACE.length)
      const h2 = seen.subarray(0, n).equals(PREFACE.subarray(0, n))
      if (h2 && seen.length < PREFACE.length) return
      done()
      // Synchronously, before any more bytes can be read: they queue behind these.
      socket.pause()
      socket.unshift(seen)
      if (h2) this.server.emit('connection', socket)
      else {
        toHttp1(socket)
        socket.resume()
      }
    }
    socket.on('data', onData)
    socket.on('error', onError)
    socket.once('close', done)
  }

  private track(session: Http2Session): void {
    const entry = { streams: 0 }
    this.sessions.set(session, entry)
    let resets = 0
    let windowStart = performance.now()
    if (this.stopping) session.close()
    // RFC 9113 6.5.3: a peer that does not acknowledge our SETTINGS in time.
    const settingsTimer = setTimeout(() => {
      this.log.debug({ code: 'GH_ERR_HTTP2' }, 'HTTP/2 SETTINGS not acknowledged in time: session closed')
      session.goaway(SETTINGS_TIMEOUT)
      session.destroy()
    }, this.settings.settings_timeout).unref()
    session.once('localSettings', () => clearTimeout(settingsTimer))
    // Idle (no stream open) past keepalive_timeout: GOAWAY, as nginx's keepalive_timeout.
    session.setTimeout(this.limits.idleTimeout, () => {
      if (entry.streams === 0) session.close()
    })
    const countReset = () => {
      const now = performance.now()
      if (now - windowStart > this.settings.reset_window) {
        windowStart = now
        resets = 0
      }
      if (++resets > this.settings.max_resets && !session.destroyed) {
        this.log.warn(
          { code: 'GH_ERR_HTTP2_FLOOD', remote: session.socket?.remoteAddress, resets },
          'HTTP/2 client reset too many streams: session closed',
        )
        session.goaway(ENHANCE_YOUR_CALM)
        session.destroy()
      }
    }
    session.on('stream', (stream: ServerHttp2Stream) => {
      entry.streams++
      // A RST_STREAM in the same read as its HEADERS has closed the stream already.
      if (stream.closed || stream.destroyed) countReset()
      else stream.once('aborted', countReset)
      stream.once('close', () => {
        entry.streams--
        if (this.stopping && entry.streams === 0) session.close()
      })
    })
    // A session's errors end it (sessionError logs them); an error on no listener would throw.
    session.on('error', () => {})
    session.once('close', () => {
      clearTimeout(settingsTimer)
      this.sessions.delete(session)
    })
  }

  /** Sessions with no stream open are closed now (GOAWAY); a reload's or a stop's step. */
  closeIdle(): void {
    for (const [session, { streams }] of this.sessions) if (streams === 0) session.close()
  }

  /**
   * Graceful stop: every session gets GOAWAY (no new stream), open streams finish, then the
   * session closes; a session made after this (a handshake in flight) is closed at once.
   */
  goAway(): void {
    this.stopping = true
    for (const session of this.sessions.keys()) session.close()
    for (const socket of this.sniffing) socket.destroy()
  }

  /** The end of the grace: what is still open is cut. */
  destroyAll(): void {
    for (const session of this.sessions.keys()) session.destroy()
    for (const socket of this.sniffing) socket.destroy()
  }

  /** Open HTTP/2 sessions (for status). */
  get sessionCount(): number {
    return this.sessions.size
  }
}
