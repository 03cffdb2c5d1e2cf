/*
 * The response side of a FastCGI application-side request: node's ServerResponse writes
 * an HTTP/1.1 response into a socket-like stream, which passes it on as a FastCGI responder
 * answers, a CGI header block and FCGI_STDOUT records.
 */
import { Duplex } from 'node:stream'
import type { Socket } from 'node:net'
import { ChunkedDecoder } from '../../core/chunked.js'
import { HOP_BY_HOP } from '../../core/http-headers.js'
import { encodeStream, RecordType } from './codec.js'

/** What a response stream needs of its connection (ListenerConnection). */
export interface ResponseSink {
  readonly socket: Socket
  /** Hand whole records to the socket; false when its buffer is full. */
  write(parts: Buffer[]): boolean
  /** The reply cannot be completed (a broken head, res.destroy()): the connection goes. */
  responseBroken(id: number, reason?: string): void
  /** The response stream was ended: the reply is complete. */
  endRequestById(id: number): void
  /** The handler wants more of the request body. */
  resumeInput(id: number): void
}

const CRLF2 = Buffer.from('\r\n\r\n')

/**
 * The `socket` of a FastCGI request's ServerResponse: node writes an HTTP/1.1 response into
 * it; it writes FCGI_STDOUT records to the connection. The status line becomes
 * `Status: NNN reason`, hop-by-hop fields are dropped, a chunked body is de-chunked (the
 * end of STDOUT delimits the body). Backpressure is the connection's: a write completes
 * when the connection took it.
 */
export class ResponseStream extends Duplex {
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
    private readonly conn: ResponseSink,
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
