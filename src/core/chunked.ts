/*
 * The chunked transfer coding (RFC 9112 7.1) undone incrementally: bytes split anywhere go
 * in, body bytes and trailer lines come out. Pure. A coding that is not valid throws a
 * ProtocolError of protocol 'chunked' (codes CHUNKED_BAD_SIZE, CHUNKED_DATA_TOO_LONG,
 * CHUNKED_SIZE_LINE_TOO_LONG, CHUNKED_TRAILERS_TOO_LARGE, CHUNKED_TOO_MANY_TRAILERS); each caller turns it into its own
 * protocol's error (an upstream's reply is a 502, a local handler's output breaks only its
 * own response).
 */
import { ProtocolError } from './errors.js'

function chunkedError(code: string, message: string): ProtocolError {
  return new ProtocolError('chunked', code, message)
}

export interface ChunkedDecoderOptions {
  /** Longest chunk-size line, extensions included, its line end not (default 4096). */
  maxSizeLineBytes?: number
  /** Longest trailer section, two bytes counted for each line end (default 64 KiB). */
  maxTrailerBytes?: number
  /** Most trailer fields (default 100). */
  maxTrailers?: number
}

/** 13 hex digits: 2^52, lengths a JavaScript number still holds exactly. */
const CHUNK_SIZE = /^([0-9A-Fa-f]{1,13})[ \t]*(?:;.*)?$/
const LF = 0x0a
const CR = 0x0d

type State = 'size' | 'data' | 'data-end' | 'trailers' | 'done'

export class ChunkedDecoder {
  private readonly maxSizeLineBytes: number
  private readonly maxTrailerBytes: number
  private readonly maxTrailers: number
  private state: State = 'size'
  /** Data bytes left in the current chunk. */
  private remaining = 0
  /** The CR of a chunk's CRLF came; its LF has not yet. */
  private sawCR = false
  /** An unfinished line (a size line or a trailer), copied: it outlives the caller's buffer. */
  private pending: Buffer[] = []
  private pendingBytes = 0
  private trailerBytes = 0
  private trailers = 0

  constructor(options: ChunkedDecoderOptions = {}) {
    this.maxSizeLineBytes = options.maxSizeLineBytes ?? 4096
    this.maxTrailerBytes = options.maxTrailerBytes ?? 64 * 1024
    this.maxTrailers = options.maxTrailers ?? 100
  }

  /** The last chunk and the trailer section have come: the body is complete. */
  get done(): boolean {
    return this.state === 'done'
  }

  /**
   * Decode the next bytes. Body bytes go to `onData` (views of `input`, not copies); each
   * trailer field line goes to `onTrailer` without its line end and unparsed (what a field
   * may hold is the caller's rule). Returns how many bytes of `input` the coding took: all of
   * them until the body is complete, then the offset just past its end.
   */
  push(input: Buffer, onData: (chunk: Buffer) => void, onTrailer?: (line: string) => void): number {
    let i = 0
    while (i < input.length) {
      switch (this.state) {
        case 'done':
          return i
        case 'data': {
          const n = Math.min(this.remaining, input.length - i)
          onData(input.subarray(i, i + n))
          i += n
          this.remaining -= n
          if (this.remaining === 0) this.state = 'data-end'
          break
        }
        case 'data-end': {
          const byte = input[i++]
          if (byte === LF) {
            this.state = 'size'
            this.sawCR = false
          } else if (byte === CR && !this.sawCR) this.sawCR = true
          else throw chunkedError('CHUNKED_DATA_TOO_LONG', 'chunk data longer than its size')
          break
        }
        case 'size': {
          const line = this.line(input, i, this.maxSizeLineBytes, 'chunk size line')
          if (line === null) return input.length
          i = line.next
          const m = CHUNK_SIZE.exec(line.text)
          if (!m)
            throw chunkedError(
              'CHUNKED_BAD_SIZE',
              `malformed chunk size ${JSON.stringify(line.text.slice(0, 32))}`,
            )
          this.remaining = Number.parseInt(m[1]!, 16)
          this.state = this.remaining === 0 ? 'trailers' : 'data'
          break
        }
        case 'trailers': {
          const line = this.line(input, i, this.maxTrailerBytes - this.trailerBytes, 'trailer section')
          if (line === null) return input.length
          i = line.next
          this.trailerBytes += line.text.length + 2
          if (line.text === '') {
            this.state = 'done'
            break
          }
          if (++this.trailers > this.maxTrailers)
            throw chunkedError('CHUNKED_TOO_MANY_TRAILERS', 'too many trailer fields')
          onTrailer?.(line.text)
          break
        }
      }
    }
    return i
  }

  /**
   * The line that starts at `from`, CR LF (or a bare LF) removed; null when `input` ends
   * first (the start is kept for the next push). `max` bounds the line without its end.
   */
  private line(
    input: Buffer,
    from: number,
    max: number,
    what: 'chunk size line' | 'trailer section',
  ): { text: string; next: number } | null {
    const code = what === 'chunk size line' ? 'CHUNKED_SIZE_LINE_TOO_LONG' : 'CHUNKED_TRAILERS_TOO_LARGE'
    const lf = input.indexOf(LF, from)
    if (lf === -1) {
      this.pending.push(Buffer.from(input.subarray(from)))
      this.pendingBytes += input.length - from
      // + 1: the CR of the line end may be here already.
      if (this.pendingBytes > max + 1) throw chunkedError(code, `${what} too long`)
      return null
    }
    let line = input.subarray(from, lf)
    if (this.pendingBytes > 0) {
      line = Buffer.concat([...this.pending, line])
      this.pending = []
      this.pendingBytes = 0
    }
    const end = line.length > 0 && line[line.length - 1] === CR ? line.length - 1 : line.length
    if (end > max) throw chunkedError(code, `${what} too long`)
    return { text: line.toString('latin1', 0, end), next: lf + 1 }
  }
}
