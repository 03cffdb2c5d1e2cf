/*
 * One socket to a FastCGI server. It carries one request at a time, always with request id
 * 1 (as nginx and Apache do: php-fpm answers FCGI_MPXS_CONNS=0), and owns nothing but the
 * socket and the record parser; the request in flight (an exchange) is plugged in as the
 * sink and receives the records, the drain and the close.
 */
import type { Socket } from 'node:net'
import { isProtocolError, type ProtocolError } from '../../core/errors.js'
import { type FcgiRecord, RecordParser } from './codec.js'

export interface ConnectionSink {
  onRecord(record: FcgiRecord): void
  /** After each chunk from the socket was parsed (for the read timer). */
  onActivity(): void
  /** The server's bytes broke FastCGI (the socket is already destroyed). */
  onProtocolError(err: ProtocolError): void
  onDrain(): void
  onClose(err: Error | undefined): void
}

let nextId = 1

export class FastCGIConnection {
  readonly id = nextId++
  /** Requests that ran to END_REQUEST on this connection. */
  served = 0
  /** A new connection whose first request has not received a byte yet (the server may not have accepted it). */
  awaitingFirstByte = false
  /** When the connection was opened (performance.now()). */
  readonly openedAt = performance.now()
  private sink: ConnectionSink | null = null
  private readonly parser: RecordParser
  private lastError: Error | undefined
  private closedFlag = false

  constructor(
    readonly socket: Socket,
    onClosed: (conn: FastCGIConnection) => void,
  ) {
    this.parser = new RecordParser((record) => this.dispatch(record))
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('drain', () => this.sink?.onDrain())
    socket.on('error', (err) => {
      this.lastError = err
    })
    socket.on('close', () => {
      this.closedFlag = true
      const sink = this.sink
      this.sink = null
      sink?.onClose(this.lastError)
      onClosed(this)
    })
  }

  get closed(): boolean {
    return this.closedFlag || this.socket.destroyed
  }

  /** Bytes of a record started but not complete. */
  get pendingBytes(): number {
    return this.parser.pending
  }

  attach(sink: ConnectionSink): void {
    this.sink = sink
  }

  detach(sink: ConnectionSink): void {
    if (this.sink === sink) this.sink = null
  }

  /** Write records (header, content, padding as separate buffers); false when the socket buffer is full. */
  write(parts: readonly Buffer[]): boolean {
    const socket = this.socket
    if (parts.length === 1) return socket.write(parts[0]!)
    socket.cork()
    let ok = true
    for (const part of parts) ok = socket.write(part)
    socket.uncork()
    return ok
  }

  pause(): void {
    this.socket.pause()
  }

  resume(): void {
    this.socket.resume()
  }

  destroy(): void {
    this.socket.destroy()
  }

  private onData(chunk: Buffer): void {
    const sink = this.sink
    if (!sink) {
      // Nothing is in flight: bytes now are a server out of step with us.
      this.socket.destroy()
      return
    }
    try {
      this.parser.feed(chunk)
    } catch (err) {
      if (!isProtocolError(err, 'fastcgi')) throw err
      this.socket.destroy()
      sink.onProtocolError(err)
      return
    }
    this.sink?.onActivity()
  }

  private dispatch(record: FcgiRecord): void {
    if (this.sink) this.sink.onRecord(record)
    // Records after the request ended (and before the next began) are a broken server.
    else this.socket.destroy()
  }
}
