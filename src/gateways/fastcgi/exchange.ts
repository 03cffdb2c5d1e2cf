/*
 * One FastCGI request on one connection (Responder role, FastCGI 1.0 section 6.2):
 * BEGIN_REQUEST, PARAMS, STDIN streamed with backpressure; FCGI_STDOUT parsed as a CGI
 * response (the same parser as the CGI handler), FCGI_STDERR handed to a callback,
 * END_REQUEST deciding whether the connection may carry another request. The body of the
 * response is a Readable that pauses the socket when its reader falls behind, so a large
 * download passes through in bounded memory.
 */
import { Readable } from 'node:stream'
import { GatehouseError, type ProtocolError } from '../../core/errors.js'
import { type CgiResponseHead, type CgiResponseKind, CgiResponseParser } from '../../cgi-vars/response.js'
import {
  decodeEndRequest,
  encodeBeginRequest,
  encodeParams,
  encodeRecord,
  encodeStream,
  type FcgiRecord,
  ProtocolStatus,
  RecordType,
  Role,
} from './codec.js'
import type { ConnectionSink, FastCGIConnection } from './connection.js'
import { upstreamError } from './errors.js'
import type { UpstreamNote } from '../../core/access-format.js'
import type { CancelSignal } from '../../core/cancel.js'

export type { CancelSignal } from '../../core/cancel.js'

/** Always 1: one request per connection at a time, like nginx (no multiplexing). */
const REQUEST_ID = 1
/** After ABORT_REQUEST, how long to wait for END_REQUEST before closing the connection. */
export const ABORT_GRACE_MS = 1000
/** How much of one request's FCGI_STDERR reaches the callback; the rest is counted and dropped. */
const STDERR_BYTES = 64 * 1024
const STDERR_LINE_CHARS = 4096
/** The records every request starts or ends its STDIN with, built once. */
const BEGIN_KEEP_CONN = Buffer.concat(encodeBeginRequest(REQUEST_ID, Role.RESPONDER, true))
const BEGIN_CLOSE = Buffer.concat(encodeBeginRequest(REQUEST_ID, Role.RESPONDER, false))
const STDIN_END = Buffer.concat(encodeRecord(RecordType.STDIN, REQUEST_ID))
/** The response body stream's buffer; also what is held before the stream is made. */
const BODY_BUFFER_BYTES = 64 * 1024
/** A request up to this size goes out as one buffer (one write, no scatter list). */
const JOIN_BYTES = 64 * 1024

export interface FastCGIRequest {
  /** PARAMS: the CGI meta-variables and anything else the application reads. */
  params: Record<string, string> | Iterable<readonly [string, string]>
  /**
   * FCGI_STDIN. A Buffer or string is sent whole (CONTENT_LENGTH is added to the params when
   * missing); a Readable is streamed with backpressure, and CONTENT_LENGTH is the caller's to set.
   */
  body?: Buffer | string | Readable
  /** Abort the request: before the response head the promise rejects with the signal's reason. */
  signal?: CancelSignal
  /** Largest body streamed from a Readable; more is GH_ERR_BODY_TOO_LARGE. Default: no limit. */
  maxBodyBytes?: number
  /** Each line the application wrote to FCGI_STDERR (PHP warnings and error_log() land here). */
  onStderr?: (line: string) => void
  /** The request's note for the access log ($upstream_response_time, $pool, $worker_pid). */
  upstream?: UpstreamNote
}

export interface FastCGIResponse {
  /**
   * The status a client should see. A `Location` with a local path and no `Status` (which a
   * CGI server would re-dispatch internally) is a 302, as nginx answers for FastCGI.
   */
  status: number
  /** Reason phrase from `Status: NNN reason`, when the application gave one. */
  reason?: string
  /** Header fields in order, as the application wrote them (repeated Set-Cookie kept); hop-by-hop fields removed. */
  headers: [name: string, value: string][]
  /** document, local-redirect or client-redirect (RFC 3875 6.2). */
  kind: CgiResponseKind
  /** The application's Content-Length, when it sent one: the body is cut to it, or errors if shorter. */
  contentLength?: number
  /** The response body. It errors (GH_ERR_FASTCGI_PROTOCOL, GH_ERR_UPSTREAM_TIMEOUT) if the upstream fails mid-body. */
  body: Readable
  /**
   * true when the whole body had already arrived with the head (a small page): it is all
   * buffered in `body`, which ends without further I/O.
   */
  readonly complete: boolean
  /**
   * When `complete`: the whole body as one Buffer, taken without making the `body` stream
   * (which is then empty); undefined when that is not possible (the stream was made, or
   * the body is not all here). For relays that write a small response in one go.
   */
  takeWhole?(): Buffer | undefined
}

export interface ExchangeSettings {
  keepConn: boolean
  readTimeoutMs: number
  maxHeaderBytes: number
  /** For messages: `unix:/run/php/php-fpm.sock`. */
  upstream: string
  /**
   * Called once when the connection is free again (what `finished` resolves with), at once
   * rather than a promise turn later: the pools hand the connection on without a promise
   * per request.
   */
  onFinished?: (reusable: boolean, failure: GatehouseError | null) => void
  /**
   * After ABORT_REQUEST, wait for END_REQUEST however long it takes instead of closing the
   * connection after ABORT_GRACE_MS. For workers of our own (the managed php-cgi pool): php-cgi
   * runs the script to its end whatever the client does, so the worker is busy until then,
   * and must not be handed the next request (or be seen idle) before (issue 18). Its
   * request_terminate_timeout still ends a script that never finishes.
   */
  drainAfterAbort?: boolean
}

type StdinState = 'sending' | 'done' | 'stopped'

/**
 * `finished` resolves once the connection is free again: true when it may carry another
 * request (END_REQUEST arrived, everything was sent, nothing is left over).
 */
export class FastCGIExchange implements ConnectionSink {
  readonly response: Promise<FastCGIResponse>
  /** Any byte arrived from the server for this request. */
  received = false
  /** Why the exchange failed (a protocol error, a timeout), once it has; null otherwise. */
  failure: GatehouseError | null = null
  /** The request could be sent again on another connection (its body is not a stream). */
  readonly replayable: boolean

  private resolveResponse!: (r: FastCGIResponse) => void
  private rejectResponse!: (e: unknown) => void
  /** Made on first use of `finished`; undefined until then. */
  private finishedPromise: Promise<boolean> | undefined
  private resolveFinished: ((reusable: boolean) => void) | undefined
  private reusableResult = false
  private readonly parser: CgiResponseParser
  /**
   * The response body stream, made when someone asks for it (response.body) or when more
   * than a stream's buffer is held; a small complete body can be taken without one.
   */
  private body: Readable | null = null
  private heldBytes = 0
  /** The body was cut (failure, abort) before its stream was made: how to end it. */
  private bodyCut: { err: Error | undefined } | null = null
  /** takeWhole() took the body: the stream, if made later, is empty. */
  private bodyTaken = false
  private headDone = false
  private ended = false
  private done = false
  private aborting = false
  private stdin: StdinState = 'sending'
  private stdinBytes = 0
  private limit = Number.POSITIVE_INFINITY
  private source: Readable | null = null
  private writeBlocked = false
  private paused = false
  private remaining: number | undefined
  /** Body bytes of the records parsed from one read, handed on together by flushBody(). */
  private held: Buffer[] = []
  private timer: NodeJS.Timeout | undefined
  private abortTimer: NodeJS.Timeout | undefined
  private stderrBytes = 0
  private stderrDropped = 0
  private readonly onSignalAbort: (() => void) | undefined

  constructor(
    private readonly conn: FastCGIConnection,
    private readonly request: FastCGIRequest,
    private readonly settings: ExchangeSettings,
  ) {
    this.parser = new CgiResponseParser({ maxHeaderBytes: settings.maxHeaderBytes })
    this.replayable = !(request.body instanceof Readable)
    this.response = new Promise<FastCGIResponse>((resolve, reject) => {
      this.resolveResponse = resolve
      this.rejectResponse = reject
    })
    // The caller may never look at the response once it has aborted.
    this.response.catch(() => {})
    conn.attach(this)
    const signal = request.signal
    if (signal) {
      this.onSignalAbort = () => this.abort(signal.reason)
      signal.addEventListener('abort', this.onSignalAbort, { once: true })
    }
    this.start()
    if (signal?.aborted) this.abort(signal.reason)
  }

  /** Resolves once the connection is free again: true when it may carry another request. */
  get finished(): Promise<boolean> {
    if (!this.finishedPromise) {
      if (this.done) this.finishedPromise = Promise.resolve(this.reusableResult)
      else this.finishedPromise = new Promise<boolean>((resolve) => (this.resolveFinished = resolve))
    }
    return this.finishedPromise
  }

  // ---- sending ----------------------------------------------------------------------

  private start(): void {
    const { params, body } = this.request
    const parts: Buffer[] = [this.settings.keepConn ? BEGIN_KEEP_CONN : BEGIN_CLOSE]
    let pairs = params
    let whole: Buffer | null = null
    if (typeof body === 'string' || Buffer.isBuffer(body)) {
      whole = typeof body === 'string' ? Buffer.from(body) : body
      pairs = withContentLength(params, whole.length)
    }
    parts.push(...encodeParams(REQUEST_ID, pairs))
    if (body instanceof Readable) {
      this.writeBlocked = !this.conn.write(joined(parts))
      this.pump(body)
    } else {
      if (whole && whole.length > 0) parts.push(...encodeStream(RecordType.STDIN, REQUEST_ID, whole))
      parts.push(STDIN_END)
      this.stdin = 'done'
      this.writeBlocked = !this.conn.write(joined(parts))
    }
    this.updateTimer()
  }

  /** Request body -> STDIN records, pausing the source while the socket's buffer is full. */
  private pump(source: Readable): void {
    this.source = source
    this.limit = this.request.maxBodyBytes ?? Number.POSITIVE_INFINITY
    source.on('data', this.onSourceData)
    source.on('end', this.onSourceEnd)
    source.on('error', this.onSourceError)
    source.on('close', this.onSourceClose)
    if (this.writeBlocked) source.pause()
    else source.resume()
  }

  private readonly onSourceData = (chunk: Buffer | string): void => {
    if (this.stdin !== 'sending') return
    const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
    this.stdinBytes += data.length
    if (this.stdinBytes > this.limit) {
      this.stopSource()
      this.fail(new GatehouseError('GH_ERR_BODY_TOO_LARGE', `request body over ${this.limit} bytes`))
      return
    }
    if (data.length === 0) return
    if (!this.conn.write(encodeStream(RecordType.STDIN, REQUEST_ID, data))) {
      this.writeBlocked = true
      this.source?.pause()
      this.updateTimer()
    }
  }

  private readonly onSourceEnd = (): void => {
    if (this.stdin !== 'sending') return
    this.detachSource()
    this.stdin = 'done'
    this.writeBlocked = !this.conn.write([STDIN_END])
    this.updateTimer()
  }

  private readonly onSourceError = (err: Error): void => {
    if (this.stdin !== 'sending') return
    // The client's upload broke off (it went away); nothing more will come.
    this.stopSource()
    this.abort(err)
  }

  private readonly onSourceClose = (): void => {
    if (this.stdin === 'sending' && !this.source?.readableEnded)
      this.onSourceError(new Error('request body closed'))
  }

  private detachSource(): void {
    const s = this.source
    if (!s) return
    this.source = null
    s.off('data', this.onSourceData)
    s.off('end', this.onSourceEnd)
    s.off('error', this.onSourceError)
    s.off('close', this.onSourceClose)
    // An aborted client stream may still emit 'error'.
    s.on('error', () => {})
  }

  /** Stop sending the body; what the source still holds is read and dropped. */
  private stopSource(): void {
    if (this.stdin === 'sending') this.stdin = 'stopped'
    const s = this.source
    this.detachSource()
    if (s && !s.destroyed) s.resume()
  }

  // ---- receiving --------------------------------------------------------------------

  onRecord(record: FcgiRecord): void {
    this.received = true
    this.conn.awaitingFirstByte = false
    if (record.requestId !== REQUEST_ID) {
      // Management records (id 0) in answer to nothing we sent are ignored (spec 4.2).
      if (record.requestId === 0) return
      this.protocolFailure(`record for request id ${record.requestId}, expected ${REQUEST_ID}`)
      return
    }
    switch (record.type) {
      case RecordType.STDOUT:
        if (record.content.length > 0) this.onStdout(record.content)
        return
      case RecordType.STDERR:
        if (record.content.length > 0) this.onStderr(record.content)
        return
      case RecordType.END_REQUEST:
        this.onEndRequest(record.content)
        return
      default:
        this.protocolFailure(`unexpected record type ${record.type}`)
    }
  }

  onActivity(): void {
    this.flushBody()
    if (this.timer && !this.paused) this.timer.refresh()
  }

  onDrain(): void {
    if (!this.writeBlocked) return
    this.writeBlocked = false
    if (this.stdin === 'sending') this.source?.resume()
    this.updateTimer()
  }

  onProtocolError(err: ProtocolError): void {
    this.protocolFailure(`${err.code}: ${err.message}`, false, err)
  }

  onClose(err: Error | undefined): void {
    if (this.done) return
    const why = err ? `: ${(err as NodeJS.ErrnoException).code ?? err.message}` : ''
    if (this.aborting) {
      this.finish(false)
      return
    }
    const where = this.headDone ? 'in the middle of the response' : 'before responding'
    this.fail(
      new GatehouseError(
        'GH_ERR_FASTCGI_PROTOCOL',
        `${this.settings.upstream} closed the connection ${where}${why}`,
        err ? { cause: err } : undefined,
      ),
    )
  }

  private onStdout(content: Buffer): void {
    if (this.aborting || this.done) return
    if (!this.headDone) {
      const r = this.parser.push(content)
      if (r.type === 'incomplete') return
      if (r.type === 'error') {
        const line = r.error.line === undefined ? '' : ` (line ${r.error.line})`
        this.protocolFailure(
          `invalid response header block: ${r.error.code}: ${r.error.message}${line}`,
          false,
          r.error,
        )
        return
      }
      if (r.type === 'complete') {
        this.onHead(r.head)
        if (r.body.length > 0) this.pushBody(r.body)
        return
      }
    }
    this.pushBody(content)
  }

  private onHead(head: CgiResponseHead): void {
    this.headDone = true
    this.remaining = head.contentLength
    this.resolveResponse(new ExchangeResponse(this, head))
  }

  /** For ExchangeResponse: the response is complete (END_REQUEST seen, body not cut). */
  isComplete(): boolean {
    return this.ended && this.bodyCut === null && !(this.body?.destroyed ?? false)
  }

  /** The body stream, made on first use with what is held so far (and its end, if known). */
  bodyStream(): Readable {
    if (this.body) return this.body
    const body = new Readable({
      // Chunks are whole records (up to 64 KiB); a couple of them in the queue is plenty.
      highWaterMark: BODY_BUFFER_BYTES,
      read: () => this.resumeUpstream(),
      destroy: (err, cb) => {
        if (!this.ended && !this.done) this.abort(err ?? new Error('response body destroyed'))
        cb(err)
      },
    })
    // Errors reach whoever reads the body (pipeline, for await, 'error' listeners); one the
    // reader never looked for must not take the process down.
    body.on('error', () => {})
    this.body = body
    if (this.bodyCut) {
      this.held = []
      body.destroy(this.bodyCut.err)
      return body
    }
    this.flushBody()
    if (this.ended) body.push(null)
    return body
  }

  takeWhole(): Buffer | undefined {
    if (this.body || !this.ended || this.bodyCut || this.bodyTaken) return undefined
    this.bodyTaken = true
    const held = this.held
    this.held = []
    this.heldBytes = 0
    return held.length === 1 ? held[0] : Buffer.concat(held)
  }

  private pushBody(chunk: Buffer): void {
    let data = chunk
    if (this.remaining !== undefined) {
      if (this.remaining === 0) return
      // Never more than the application's own Content-Length: the client's framing relies on it.
      if (data.length > this.remaining) data = data.subarray(0, this.remaining)
      this.remaining -= data.length
    }
    this.held.push(data)
    this.heldBytes += data.length
  }

  /**
   * One push per read from the server rather than one per record (php-fpm writes a record
   * per output buffer flush, 4 KiB by default): fewer, larger writes to the client. Before
   * anyone asked for the body stream, up to a stream's buffer is held here instead; past
   * that the stream is made, so that its backpressure applies.
   */
  private flushBody(): void {
    const held = this.held
    if (held.length === 0) return
    if (!this.body) {
      if (this.heldBytes <= BODY_BUFFER_BYTES || this.bodyCut) return
      this.bodyStream()
      return
    }
    this.held = []
    this.heldBytes = 0
    const body = this.body
    if (body.destroyed) return
    // Once the exchange is done the connection is the next request's: never paused for this one.
    if (!body.push(held.length === 1 ? held[0] : Buffer.concat(held)) && !this.paused && !this.done) {
      this.paused = true
      this.conn.pause()
      this.updateTimer()
    }
  }

  private resumeUpstream(): void {
    if (!this.paused || this.done) return
    this.paused = false
    this.conn.resume()
    this.updateTimer()
  }

  private onStderr(content: Buffer): void {
    const callback = this.request.onStderr
    if (!callback) return
    if (this.stderrBytes >= STDERR_BYTES) {
      this.stderrDropped += content.length
      return
    }
    this.stderrBytes += content.length
    for (const raw of content.toString('utf8').split('\n')) {
      const line = raw.replace(/\r$/, '')
      if (line.trim() === '') continue
      callback(line.length > STDERR_LINE_CHARS ? `${line.slice(0, STDERR_LINE_CHARS)}...` : line)
    }
  }

  private onEndRequest(content: Buffer): void {
    let protocolStatus: number
    try {
      protocolStatus = decodeEndRequest(content).protocolStatus
    } catch (err) {
      this.protocolFailure((err as Error).message)
      return
    }
    this.ended = true
    this.clearTimers()
    if (this.stderrDropped > 0) {
      this.request.onStderr?.(`(${this.stderrDropped} more bytes of stderr output not logged)`)
    }
    if (this.aborting) {
      this.finish(false)
      return
    }
    if (protocolStatus === ProtocolStatus.OVERLOADED) {
      this.fail(
        new GatehouseError('GH_ERR_OVERLOADED', `${this.settings.upstream} answered OVERLOADED`),
        true,
      )
      return
    }
    if (protocolStatus !== ProtocolStatus.REQUEST_COMPLETE) {
      const name =
        protocolStatus === ProtocolStatus.CANT_MPX_CONN
          ? 'CANT_MPX_CONN'
          : protocolStatus === ProtocolStatus.UNKNOWN_ROLE
            ? 'UNKNOWN_ROLE'
            : `protocol status ${protocolStatus}`
      this.protocolFailure(`END_REQUEST with ${name}`)
      return
    }
    if (!this.headDone) {
      const error = this.parser.end()
      const detail = error ? `${error.code}: ${error.message}` : 'no response'
      this.protocolFailure(
        `request ended without a response header block (${detail})`,
        true,
        error ?? undefined,
      )
      return
    }
    this.flushBody()
    // The application ended before reading the whole body: its unread STDIN records would
    // be taken for the next request, so the connection goes.
    const reusable = this.settings.keepConn && this.stdin === 'done' && this.conn.pendingBytes === 0
    if (this.stdin === 'sending') this.stopSource()
    if (this.remaining !== undefined && this.remaining > 0) {
      this.cutBody(
        new GatehouseError(
          'GH_ERR_FASTCGI_PROTOCOL',
          `response body ended ${this.remaining} bytes short of its Content-Length`,
        ),
      )
    } else this.body?.push(null)
    this.finish(reusable)
  }

  // ---- ending -----------------------------------------------------------------------

  private protocolFailure(message: string, ended = false, cause?: ProtocolError): void {
    this.fail(upstreamError(this.settings.upstream, message, cause), ended)
  }

  /**
   * The request failed: before the head the response promise rejects, after it the body
   * errors. `ended`: END_REQUEST was seen, so the connection itself is in step.
   */
  private fail(err: GatehouseError, ended = false): void {
    if (this.done) return
    this.stopSource()
    const reusable =
      ended && this.settings.keepConn && err.code === 'GH_ERR_OVERLOADED' && this.stdin === 'done'
    this.failure = err
    // Settled first, so that destroying the body is not taken for the reader giving up.
    this.finish(reusable)
    if (!this.headDone) this.rejectResponse(err)
    else this.cutBody(err)
  }

  /** The body ends in an error (or, without one, is cut short): now, or when its stream is made. */
  private cutBody(err: Error | undefined): void {
    if (this.body) {
      if (!this.body.destroyed) this.body.destroy(err)
    } else if (!this.bodyCut && !this.bodyTaken) {
      this.bodyCut = { err }
      this.held = []
      this.heldBytes = 0
    }
  }

  /**
   * The caller (the client, the signal) gave up. ABORT_REQUEST goes out (spec 5.4), the
   * rest of the response is dropped, and the connection closes once END_REQUEST arrives or
   * ABORT_GRACE_MS passes (or only at END_REQUEST, with drainAfterAbort). It is never reused: php-fpm does not read ABORT_REQUEST while a
   * script runs, and takes a late one for the start of the next request, which makes it
   * close the connection under that request (php-src main/fastcgi.c, fcgi_read_request).
   */
  abort(reason: unknown): void {
    if (this.done || this.aborting) return
    this.aborting = true
    this.stopSource()
    if (!this.headDone) this.rejectResponse(reason)
    else this.cutBody(reason instanceof Error ? reason : undefined)
    this.clearTimers()
    if (this.paused) {
      this.paused = false
      this.conn.resume()
    }
    if (this.conn.closed) {
      this.finish(false)
      return
    }
    this.conn.write(encodeRecord(RecordType.ABORT_REQUEST, REQUEST_ID))
    if (this.settings.drainAfterAbort) return
    this.abortTimer = setTimeout(() => {
      this.conn.destroy()
      this.finish(false)
    }, ABORT_GRACE_MS)
  }

  private finish(reusable: boolean): void {
    if (this.done) return
    this.done = true
    this.clearTimers()
    if (this.onSignalAbort) this.request.signal?.removeEventListener('abort', this.onSignalAbort)
    this.conn.detach(this)
    if (reusable) this.conn.served++
    else this.conn.destroy()
    if (this.paused) {
      // What was read is the body's to hand out; the socket belongs to the next request now.
      this.paused = false
      this.conn.resume()
    }
    this.reusableResult = reusable
    this.resolveFinished?.(reusable)
    this.settings.onFinished?.(reusable, this.failure)
  }

  // ---- read timeout -----------------------------------------------------------------

  /**
   * The read timeout runs while the server owes us something: it has the whole request
   * (or is not taking more of it) and we are not holding it back for a slow client.
   */
  private updateTimer(): void {
    const ms = this.settings.readTimeoutMs
    const waiting =
      ms > 0 &&
      !this.done &&
      !this.ended &&
      !this.aborting &&
      !this.paused &&
      (this.stdin !== 'sending' || this.writeBlocked)
    if (!waiting) {
      if (this.timer) {
        clearTimeout(this.timer)
        this.timer = undefined
      }
      return
    }
    if (this.timer) this.timer.refresh()
    else this.timer = setTimeout(() => this.onReadTimeout(), ms)
  }

  private onReadTimeout(): void {
    this.timer = undefined
    const what = this.writeBlocked ? 'did not take the request body' : 'sent nothing'
    this.fail(
      new GatehouseError(
        'GH_ERR_UPSTREAM_TIMEOUT',
        `${this.settings.upstream} ${what} for ${this.settings.readTimeoutMs} ms (read_timeout)`,
      ),
    )
  }

  private clearTimers(): void {
    if (this.timer) clearTimeout(this.timer)
    if (this.abortTimer) clearTimeout(this.abortTimer)
    this.timer = undefined
    this.abortTimer = undefined
  }
}

/**
 * The response as the caller sees it. A class, so that the accessors live on its prototype:
 * an object literal with getters costs a runtime call per accessor and request.
 */
class ExchangeResponse implements FastCGIResponse {
  readonly status: number
  readonly reason?: string
  readonly headers: [name: string, value: string][]
  readonly kind: CgiResponseKind
  readonly contentLength?: number
  readonly #exchange: FastCGIExchange

  constructor(exchange: FastCGIExchange, head: CgiResponseHead) {
    this.#exchange = exchange
    // nginx (ngx_http_fastcgi_process_header): no Status but a Location is a 302.
    this.status = head.kind === 'local-redirect' ? 302 : head.status
    if (head.reason !== undefined && head.kind !== 'local-redirect') this.reason = head.reason
    this.headers = head.headers
    this.kind = head.kind
    if (head.contentLength !== undefined) this.contentLength = head.contentLength
  }

  get body(): Readable {
    return this.#exchange.bodyStream()
  }

  get complete(): boolean {
    return this.#exchange.isComplete()
  }

  takeWhole(): Buffer | undefined {
    return this.#exchange.takeWhole()
  }
}

function joined(parts: Buffer[]): Buffer[] {
  if (parts.length === 1) return parts
  let length = 0
  for (const p of parts) length += p.length
  return length <= JOIN_BYTES ? [Buffer.concat(parts, length)] : parts
}

function withContentLength(
  params: FastCGIRequest['params'],
  length: number,
): Iterable<readonly [string, string]> {
  const entries: (readonly [string, string])[] =
    Symbol.iterator in params ? [...params] : Object.entries(params)
  if (entries.some(([name]) => name === 'CONTENT_LENGTH')) return entries
  return [...entries, ['CONTENT_LENGTH', String(length)]]
}
