/**
 * uwsgi client: one connection per request (a uwsgi reply ends when the connection closes),
 * the packet and body written with backpressure, the raw HTTP reply parsed incrementally
 * and its body handed out as a Readable that pauses the socket when its reader does.
 *
 * Errors are GatehouseErrors: GH_ERR_UPSTREAM_CONNECT (502) when the server cannot be
 * reached, GH_ERR_UPSTREAM (502) for an invalid or truncated reply, GH_ERR_UPSTREAM_TIMEOUT
 * (504) when it stops making progress. The timeout clock stops while Gatehouse waits on its
 * own client (a slow upload, a slow reader): that is the HTTP front's business.
 */
import { connect, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import { GatehouseError } from '../../core/errors.js'
import type { CancelSignal } from '../../core/cancel.js'
import { type BodyFraming, type HttpResponseEvent, HttpResponseParser } from './http-response.js'
import { encodeUwsgiPacket, type UwsgiVarList, type UwsgiVarValue } from './codec.js'
import { clientError } from './errors.js'
import { buildUwsgiVars } from './vars.js'
import { type ResolvedUpstream, resolveUpstreamAddress, type UpstreamAddress } from '../../core/address.js'
import { BadTargetError, parseTarget } from '../../http/request-target.js'

/** Where a uwsgi server listens: `unix:/path`, `host:port`, `[v6]:port`, or the parsed form. */
export type UwsgiAddress = UpstreamAddress

export interface UwsgiCallOptions {
  /** The vars block (see buildUwsgiVars). CONTENT_LENGTH must give the body's length. */
  vars: UwsgiVarList
  modifier1?: number
  modifier2?: number
  /** Exactly CONTENT_LENGTH bytes. */
  body?: Readable | Buffer | null
  /** The request is HEAD: the reply has no body, whatever its headers say. */
  head?: boolean
  /** Milliseconds to establish the connection (default 5000). */
  connectTimeout?: number
  /**
   * Milliseconds the server may go without making progress (reading the body, sending the
   * reply) while we wait on it (default 60000; 0 disables).
   */
  timeout?: number
  /** Limit on the reply's status line and headers (default 64 KiB). */
  maxHeaderBytes?: number
  /** Limit on the reply's header fields (default 100). */
  maxHeaders?: number
  /** An AbortSignal, or anything with its `aborted`/`reason`/listener surface. */
  signal?: CancelSignal
  /** A 103 Early Hints before the reply's head: its fields, flat. */
  onEarlyHints?(rawHeaders: string[]): void
}

export interface UwsgiResponse {
  status: number
  statusMessage: string
  httpVersion: string
  /** As received, flat: [name, value, ...]. */
  rawHeaders: string[]
  /** Lower-case names; `set-cookie` is always a list, other repeated fields are joined with ", ". */
  headers: Record<string, string | string[]>
  /** How the reply's body is delimited: Content-Length, chunked, close, or none. */
  framing: BodyFraming
  /** The body, de-chunked. Errors with a GatehouseError if the reply is cut short. */
  body: Readable
  /**
   * true when the whole reply had already arrived with its head (a small page): the body is
   * all buffered in `body`, which ends without further I/O.
   */
  readonly complete: boolean
}

function headersObject(raw: readonly string[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase()
    const value = raw[i + 1]!
    const previous = out[name]
    if (name === 'set-cookie') out[name] = [...((previous as string[] | undefined) ?? []), value]
    else out[name] = previous === undefined ? value : `${String(previous)}, ${value}`
  }
  return out
}

function contentLengthVar(vars: UwsgiVarList): number | undefined {
  let found: UwsgiVarValue | undefined
  for (const [name, value] of vars) if (name === 'CONTENT_LENGTH') found = value
  const text = found === undefined ? '' : String(found)
  return /^\d+$/.test(text) ? Number(text) : undefined
}

const CONNECT_ERRORS = new Set([
  'ECONNREFUSED',
  'ENOENT',
  'EACCES',
  'ENOTSOCK',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ENOTFOUND',
  'EAI_AGAIN',
])

/** One request to a uwsgi server. Resolves when the reply's head has arrived. */
export function uwsgiCall(address: UwsgiAddress, options: UwsgiCallOptions): Promise<UwsgiResponse> {
  return new Promise((resolve, reject) => {
    try {
      new UwsgiCall(resolveUpstreamAddress(address), options, resolve, reject)
    } catch (err) {
      reject(clientError(err))
    }
  })
}

class UwsgiCall {
  private readonly socket: Socket
  private readonly parser: HttpResponseParser
  private readonly timeout: number
  private connected = false
  private response: UwsgiResponse | null = null
  private body: Readable | null = null
  /** The reply is complete, or the call failed: nothing more happens. */
  private over = false
  /** Every body byte has been handed to the socket. */
  private requestSent = false
  /** The reply's reader is not keeping up; the socket is paused for it. */
  private readerPaused = false
  /** The whole reply body has been pushed into `body`. */
  private bodyComplete = false
  private timer: NodeJS.Timeout | undefined
  private readonly onAbort: () => void
  /** A streamed request body still being written. */
  private source: Readable | null = null

  constructor(
    private readonly address: ResolvedUpstream,
    private readonly options: UwsgiCallOptions,
    private readonly resolve: (r: UwsgiResponse) => void,
    private readonly reject: (err: unknown) => void,
  ) {
    const packet = encodeUwsgiPacket(options.vars, {
      modifier1: options.modifier1 ?? 0,
      modifier2: options.modifier2 ?? 0,
    })
    const expected = contentLengthVar(options.vars) ?? 0
    const body = options.body ?? null
    if (body !== null && Buffer.isBuffer(body) && body.length !== expected)
      throw new TypeError(`body is ${body.length} bytes but CONTENT_LENGTH says ${expected}`)
    if (body !== null && !Buffer.isBuffer(body) && contentLengthVar(options.vars) === undefined)
      throw new TypeError('a streamed body needs CONTENT_LENGTH in the vars (uwsgi has no body framing)')
    this.parser = new HttpResponseParser({
      noBody: options.head ?? false,
      maxHeaderBytes: options.maxHeaderBytes ?? 64 * 1024,
      maxHeaders: options.maxHeaders ?? 100,
    })
    this.timeout = options.timeout ?? 60_000
    this.onAbort = () => this.fail(options.signal?.reason ?? new Error('aborted'))
    if (options.signal?.aborted) throw options.signal.reason
    options.signal?.addEventListener('abort', this.onAbort, { once: true })

    this.socket =
      'path' in address ? connect(address.path) : connect({ host: address.host, port: address.port })
    const socket = this.socket
    this.timer = setTimeout(
      () => this.fail(new GatehouseError('GH_ERR_UPSTREAM_TIMEOUT', `connecting to ${address.text}`)),
      options.connectTimeout ?? 5000,
    )
    socket.once('connect', () => {
      this.connected = true
      clearTimeout(this.timer)
      this.touch()
      socket.setNoDelay(true)
      socket.write(packet)
      if (body === null || (Buffer.isBuffer(body) && body.length === 0)) this.requestSent = true
      else if (Buffer.isBuffer(body)) socket.write(body, () => (this.requestSent = true))
      else this.pump(body, expected)
    })
    socket.on('data', (chunk: Buffer) => {
      this.touch()
      let events: HttpResponseEvent[]
      try {
        events = this.parser.push(chunk)
      } catch (err) {
        this.fail(clientError(err))
        return
      }
      this.handle(events)
    })
    socket.on('drain', () => this.touch())
    socket.on('end', () => {
      if (this.over) return
      let events: HttpResponseEvent[]
      try {
        events = this.parser.finish()
      } catch (err) {
        this.fail(clientError(err))
        return
      }
      this.handle(events)
    })
    socket.on('error', (err: NodeJS.ErrnoException) => this.fail(this.socketError(err)))
    socket.on('close', () => {
      if (!this.over)
        this.fail(new GatehouseError('GH_ERR_UPSTREAM', `${address.text} closed the connection`))
    })
  }

  private socketError(err: NodeJS.ErrnoException): GatehouseError {
    if (!this.connected && CONNECT_ERRORS.has(err.code ?? ''))
      return new GatehouseError('GH_ERR_UPSTREAM_CONNECT', `${this.address.text}: ${err.code}`, {
        cause: err,
      })
    return new GatehouseError('GH_ERR_UPSTREAM', `${this.address.text}: ${err.code ?? err.message}`, {
      cause: err,
    })
  }

  /** Write a streamed body, never more or less than CONTENT_LENGTH, pausing it while the socket is full. */
  private pump(source: Readable, expected: number): void {
    this.source = source
    let sent = 0
    let ended = false
    source.on('data', (chunk: Buffer) => {
      if (this.over) return
      sent += chunk.length
      if (sent > expected) {
        this.fail(new GatehouseError('GH_ERR_BAD_REQUEST', 'request body longer than CONTENT_LENGTH'))
        return
      }
      if (!this.socket.write(chunk)) source.pause()
    })
    this.socket.on('drain', () => {
      if (!this.over && !ended) source.resume()
    })
    source.once('end', () => {
      ended = true
      if (sent !== expected) {
        this.fail(
          new GatehouseError('GH_ERR_BAD_REQUEST', `request body ended ${expected - sent} bytes short`),
        )
        return
      }
      this.requestSent = true
    })
    const broken = (err?: unknown) => {
      if (ended || this.over) return
      this.fail(new GatehouseError('GH_ERR_BAD_REQUEST', 'request body aborted', { cause: err }))
    }
    source.once('error', broken)
    source.once('close', () => broken())
    source.resume()
  }

  private handle(events: HttpResponseEvent[]): void {
    for (const event of events) {
      if (this.over) return
      if (event.kind === 'early-hints') {
        this.options.onEarlyHints?.(event.rawHeaders)
        continue
      }
      if (event.kind === 'head') {
        const { head } = event
        this.body = new Readable({
          highWaterMark: 64 * 1024,
          read: () => {
            if (!this.readerPaused || this.over) return
            this.readerPaused = false
            this.socket.resume()
            this.touch()
          },
          destroy: (err, callback) => {
            // The reader gave up before the end: drop the connection.
            if (!this.over) this.finish()
            this.socket.destroy()
            callback(err)
          },
        })
        const isComplete = () => this.bodyComplete
        this.response = {
          get complete() {
            return isComplete()
          },
          status: head.status,
          statusMessage: head.statusMessage,
          httpVersion: head.httpVersion,
          rawHeaders: head.rawHeaders,
          headers: headersObject(head.rawHeaders),
          framing: head.framing,
          body: this.body,
        }
        this.resolve(this.response)
      } else if (event.kind === 'body') {
        if (!this.body!.push(event.chunk) && !this.readerPaused) {
          this.readerPaused = true
          this.socket.pause()
        }
      } else {
        this.finish()
        this.bodyComplete = true
        this.body!.push(null)
        // The reply is complete; if the server answered before reading the whole body, the
        // rest is not wanted any more.
        this.socket.destroy()
      }
    }
  }

  private touch(): void {
    if (this.over || !this.connected || this.timeout <= 0) return
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.onTimeout(), this.timeout)
  }

  private onTimeout(): void {
    if (this.over) return
    // Waiting on our own side (the reader, or the source of the request body): not the
    // server's fault; the HTTP front's own timeouts cover clients.
    if (this.readerPaused || (!this.requestSent && this.socket.writableLength === 0)) {
      this.touch()
      return
    }
    const what = this.response ? 'the reply stalled' : 'no reply'
    this.fail(
      new GatehouseError(
        'GH_ERR_UPSTREAM_TIMEOUT',
        `${what} from ${this.address.text} for ${this.timeout} ms`,
      ),
    )
  }

  /** Stop timers and listeners; the call is over. */
  private finish(): void {
    this.over = true
    clearTimeout(this.timer)
    this.options.signal?.removeEventListener('abort', this.onAbort)
    // A body the server no longer wants is drained rather than left paused: an HTTP client's
    // connection can only be reused once its request body has been read.
    if (this.source && !this.source.readableEnded && !this.source.destroyed) this.source.resume()
  }

  private fail(err: unknown): void {
    if (this.over) return
    this.finish()
    this.socket.destroy()
    if (this.response === null) this.reject(err)
    else this.body!.destroy(err as Error)
  }
}

export interface UwsgiRequestOptions extends Omit<UwsgiCallOptions, 'vars' | 'body' | 'head'> {
  /** Default GET. */
  method?: string
  /** Request-target (path and query), default `/`. */
  path?: string
  headers?: Record<string, string | number | readonly string[] | undefined>
  body?: string | Buffer | Readable
  /** Length of a streamed body (uwsgi needs it up front). */
  contentLength?: number
  scheme?: 'http' | 'https'
  /** REMOTE_ADDR / REMOTE_PORT (default 127.0.0.1 / 0). */
  remoteAddress?: string
  remotePort?: number
  /** SERVER_NAME / SERVER_PORT (default: from the Host header, else localhost / 80). */
  serverName?: string
  serverPort?: number
  documentRoot?: string
  /** Extra vars, sent last; they replace built-in vars of the same name. */
  params?: Record<string, string | Buffer>
}

/**
 * A request to a uwsgi server, described like an HTTP request; the vars are the ones nginx's
 * uwsgi_params sends (docs/uwsgi.md).
 *
 * ```ts
 * const res = await uwsgiRequest('unix:/run/app.sock', { path: '/hello', headers: { host: 'example.com' } })
 * console.log(res.status, await text(res.body))
 * ```
 */
export function uwsgiRequest(
  address: UwsgiAddress,
  options: UwsgiRequestOptions = {},
): Promise<UwsgiResponse> {
  try {
    const method = (options.method ?? 'GET').toUpperCase()
    let target: ReturnType<typeof parseTarget>
    try {
      target = parseTarget(options.path ?? '/')
    } catch (err) {
      if (err instanceof BadTargetError) throw new TypeError(`invalid path: ${err.message}`)
      throw err
    }
    const rawHeaders: string[] = []
    for (const [name, value] of Object.entries(options.headers ?? {})) {
      if (value === undefined) continue
      for (const v of Array.isArray(value) ? value : [value]) rawHeaders.push(name, String(v))
    }
    let body: Buffer | Readable | undefined
    let contentLength: number | undefined
    if (typeof options.body === 'string' || Buffer.isBuffer(options.body)) {
      body = Buffer.isBuffer(options.body) ? options.body : Buffer.from(options.body)
      contentLength = body.length
    } else if (options.body !== undefined) {
      if (options.contentLength === undefined)
        throw new TypeError('uwsgiRequest: a streamed body needs contentLength (uwsgi has no body framing)')
      body = options.body
      contentLength = options.contentLength
    }
    const hostHeader = headersObject(rawHeaders).host
    const host = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(typeof hostHeader === 'string' ? hostHeader : '')
    const vars = buildUwsgiVars({
      method,
      rawPath: target.rawPath,
      query: target.query,
      path: target.path,
      httpVersion: '1.1',
      rawHeaders,
      ...(target.authority !== undefined ? { host: target.authority } : {}),
      contentLength,
      scheme: options.scheme ?? 'http',
      remoteAddress: options.remoteAddress ?? '127.0.0.1',
      remotePort: options.remotePort ?? 0,
      serverName: options.serverName ?? host?.[1] ?? 'localhost',
      serverPort: options.serverPort ?? (host?.[2] ? Number(host[2]) : options.scheme === 'https' ? 443 : 80),
      documentRoot: options.documentRoot ?? '',
      params: Object.entries(options.params ?? {}),
    })
    const call: UwsgiCallOptions = { vars, body: body ?? null, head: method === 'HEAD' }
    for (const key of [
      'modifier1',
      'modifier2',
      'connectTimeout',
      'timeout',
      'maxHeaderBytes',
      'maxHeaders',
      'signal',
    ] as const) {
      if (options[key] !== undefined) Object.assign(call, { [key]: options[key] })
    }
    return uwsgiCall(address, call)
  } catch (err) {
    return Promise.reject(err)
  }
}
