/**
 * Incremental parser for a raw HTTP/1.x response from an upstream, as uwsgi servers send it
 * (`HTTP/1.1 200 OK`, headers, body; the connection closes at the end). Pure: fed bytes
 * split anywhere, returns typed events, throws a ProtocolError of protocol 'http' (codes:
 * HttpResponseErrorCode) on anything that is not a valid response, or of protocol
 * 'chunked' (core/chunked.ts) for a broken chunked body. The client (client.ts) makes
 * either a GH_ERR_UPSTREAM.
 *
 * Body framing follows RFC 9112 6.3: no body for HEAD, 1xx, 204 and 304; chunked when
 * Transfer-Encoding ends in chunked; otherwise Content-Length; otherwise until close.
 * Interim 1xx responses (other than 101) are skipped, except 103 Early Hints (RFC 8297),
 * which is an event of its own for the client to relay.
 */
import { ChunkedDecoder } from '../../core/chunked.js'
import { ProtocolError } from '../../core/errors.js'
import { isFinalStatus, parseFieldLine } from '../../core/http-headers.js'

export type BodyFraming = 'none' | 'length' | 'chunked' | 'close'

export interface HttpResponseHead {
  /** '1.0' or '1.1'. */
  httpVersion: string
  status: number
  statusMessage: string
  /** Header names and values as received, flat: [name, value, name, value, ...]. */
  rawHeaders: string[]
  framing: BodyFraming
  /** For framing 'length'. */
  contentLength?: number
}

export type HttpResponseEvent =
  | { kind: 'head'; head: HttpResponseHead }
  /** 103 Early Hints before the final head: its fields, flat. */
  | { kind: 'early-hints'; rawHeaders: string[] }
  | { kind: 'body'; chunk: Buffer }
  /** The body is complete; rawTrailers from a chunked body (flat pairs, often empty). */
  | { kind: 'end'; rawTrailers: string[] }

export interface HttpResponseParserOptions {
  /** The request was HEAD: the response has no body whatever its headers say. */
  noBody?: boolean
  /** Limit on the status line and header block (and on trailers), default 64 KiB. */
  maxHeaderBytes?: number
  /** Limit on header fields (and on trailer fields), default 100. */
  maxHeaders?: number
}

/**
 * uWSGI writes back the SERVER_PROTOCOL it was given: `HTTP/2.0` for a request that came over
 * HTTP/2 (as nginx's $server_protocol). Its reply is framed as HTTP/1.1's all the same.
 */
const STATUS_LINE = /^HTTP\/(1\.[01]|2\.0) (\d{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?$/

export type HttpResponseErrorCode =
  /** The connection closed before the response (head or body) was complete. */
  | 'HTTP_TRUNCATED'
  | 'HTTP_HEAD_TOO_LARGE'
  | 'HTTP_TOO_MANY_HEADERS'
  /** A status line that is not `HTTP/1.x NNN reason`, or a status below 100. */
  | 'HTTP_BAD_STATUS_LINE'
  /** A malformed header line, name or value, or obsolete line folding. */
  | 'HTTP_BAD_HEADER'
  | 'HTTP_BAD_CONTENT_LENGTH'
  /** 101 Switching Protocols: not relayed. */
  | 'HTTP_UPGRADE'

function httpError(code: HttpResponseErrorCode, detail: string): ProtocolError {
  return new ProtocolError('http', code, detail)
}

type State = 'head' | 'length' | 'close' | 'chunked' | 'done'

export class HttpResponseParser {
  private readonly noBody: boolean
  private readonly maxHeaderBytes: number
  private readonly maxHeaders: number
  private state: State = 'head'
  /** Bytes of an unfinished response head. */
  private pending: Buffer[] = []
  private pendingBytes = 0
  private remaining = 0
  private chunked: ChunkedDecoder | null = null
  private readonly rawTrailers: string[] = []

  constructor(options: HttpResponseParserOptions = {}) {
    this.noBody = options.noBody ?? false
    this.maxHeaderBytes = options.maxHeaderBytes ?? 64 * 1024
    this.maxHeaders = options.maxHeaders ?? 100
  }

  /** True once the final response's head has been parsed. */
  get headComplete(): boolean {
    return this.state !== 'head'
  }

  /** True once the body is complete (bytes after it are ignored). */
  get complete(): boolean {
    return this.state === 'done'
  }

  push(chunk: Buffer): HttpResponseEvent[] {
    const events: HttpResponseEvent[] = []
    let data = chunk
    while (data.length > 0 && this.state !== 'done') {
      switch (this.state) {
        case 'head':
          data = this.parseHead(data, events)
          break
        case 'length': {
          const take = Math.min(this.remaining, data.length)
          events.push({ kind: 'body', chunk: data.subarray(0, take) })
          data = data.subarray(take)
          this.remaining -= take
          if (this.remaining === 0) this.end(events)
          break
        }
        case 'close':
          events.push({ kind: 'body', chunk: data })
          data = data.subarray(data.length)
          break
        case 'chunked': {
          const chunked = this.chunked!
          const used = chunked.push(
            data,
            (chunk) => events.push({ kind: 'body', chunk }),
            (line) => this.rawTrailers.push(...parseField(line)),
          )
          data = data.subarray(used)
          if (chunked.done) this.end(events)
          break
        }
      }
    }
    return events
  }

  /**
   * The upstream closed the connection. Ends a body framed by close; anything else not yet
   * complete is a truncated response.
   */
  finish(): HttpResponseEvent[] {
    if (this.state === 'done') return []
    if (this.state === 'close') {
      const events: HttpResponseEvent[] = []
      this.end(events)
      return events
    }
    if (this.state === 'head')
      throw httpError(
        'HTTP_TRUNCATED',
        this.pendingBytes === 0 ? 'closed without a response' : 'closed in the response head',
      )
    if (this.state === 'length')
      throw httpError('HTTP_TRUNCATED', `closed ${this.remaining} bytes short of Content-Length`)
    throw httpError('HTTP_TRUNCATED', 'closed in the middle of a chunked body')
  }

  private end(events: HttpResponseEvent[]): void {
    this.state = 'done'
    events.push({ kind: 'end', rawTrailers: this.rawTrailers })
  }

  /** Collect the head until an empty line; parse it; return the bytes after it. */
  private parseHead(data: Buffer, events: HttpResponseEvent[]): Buffer {
    const prior = this.pendingBytes
    const all = prior > 0 ? Buffer.concat([...this.pending, data]) : data
    // Search from a little before the new bytes so a CRLFCRLF split across pushes is found.
    const end = findHeadEnd(all, Math.max(0, prior - 3))
    if (end === null) {
      if (all.length > this.maxHeaderBytes) throw httpError('HTTP_HEAD_TOO_LARGE', 'response head too large')
      this.pending = [all]
      this.pendingBytes = all.length
      return Buffer.alloc(0)
    }
    if (end.headEnd > this.maxHeaderBytes) throw httpError('HTTP_HEAD_TOO_LARGE', 'response head too large')
    this.pending = []
    this.pendingBytes = 0
    const head = this.parseHeadText(all.toString('latin1', 0, end.headEnd))
    if (head === null) return all.subarray(end.bodyStart) // 1xx: parse the next head
    if (head.status === 103) {
      events.push({ kind: 'early-hints', rawHeaders: head.rawHeaders })
      return all.subarray(end.bodyStart)
    }
    events.push({ kind: 'head', head })
    if (head.framing === 'none' || (head.framing === 'length' && head.contentLength === 0)) this.end(events)
    else if (head.framing === 'length') {
      this.state = 'length'
      this.remaining = head.contentLength!
    } else if (head.framing === 'chunked') {
      this.state = 'chunked'
      this.chunked = new ChunkedDecoder({
        maxTrailerBytes: this.maxHeaderBytes,
        maxTrailers: this.maxHeaders,
      })
    } else this.state = 'close'
    return all.subarray(end.bodyStart)
  }

  /** null for an interim 1xx response. */
  private parseHeadText(text: string): HttpResponseHead | null {
    const lines = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l))
    const m = STATUS_LINE.exec(lines[0]!)
    if (!m)
      throw httpError('HTTP_BAD_STATUS_LINE', `invalid status line ${JSON.stringify(lines[0]!.slice(0, 64))}`)
    const status = Number(m[2])
    // 1xx are interim (below); a final status follows the one rule (core/http-headers.ts).
    if (status < 100 || (status >= 200 && !isFinalStatus(status)))
      throw httpError('HTTP_BAD_STATUS_LINE', `invalid status ${status} (a final status is 200-599)`)
    const rawHeaders: string[] = []
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!
      if (line.startsWith(' ') || line.startsWith('\t'))
        throw httpError('HTTP_BAD_HEADER', 'obsolete header line folding')
      const [name, value] = parseField(line)
      rawHeaders.push(name, value)
      if (rawHeaders.length / 2 > this.maxHeaders)
        throw httpError('HTTP_TOO_MANY_HEADERS', 'too many header fields')
    }
    if (status >= 100 && status < 200) {
      if (status === 101) throw httpError('HTTP_UPGRADE', '101 Switching Protocols is not supported')
      if (status !== 103) return null
      return {
        httpVersion: m[1] === '1.0' ? '1.0' : '1.1',
        status,
        statusMessage: m[3] ?? '',
        rawHeaders,
        framing: 'none',
      }
    }
    const head: HttpResponseHead = {
      httpVersion: m[1] === '1.0' ? '1.0' : '1.1',
      status,
      statusMessage: m[3] ?? '',
      rawHeaders,
      framing: 'close',
    }
    let te: string | undefined
    let cl: string | undefined
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i]!.toLowerCase()
      const value = rawHeaders[i + 1]!
      if (name === 'transfer-encoding') te = te === undefined ? value : `${te}, ${value}`
      else if (name === 'content-length') {
        // RFC 9110 8.6: a list of identical values may be collapsed; differing ones are fatal.
        for (const part of value.split(',')) {
          const v = part.trim()
          if (!/^\d{1,15}$/.test(v))
            throw httpError('HTTP_BAD_CONTENT_LENGTH', `invalid Content-Length ${JSON.stringify(value)}`)
          if (cl !== undefined && cl !== v)
            throw httpError('HTTP_BAD_CONTENT_LENGTH', 'conflicting Content-Length values')
          cl = v
        }
      }
    }
    if (this.noBody || status === 204 || status === 304) head.framing = 'none'
    else if (te !== undefined) {
      // RFC 9112 6.3: Transfer-Encoding wins over Content-Length; if chunked is not the
      // final coding the body runs until close.
      const codings = te.split(',').map((c) => c.trim().toLowerCase())
      head.framing = codings[codings.length - 1] === 'chunked' ? 'chunked' : 'close'
    } else if (cl !== undefined) {
      head.framing = 'length'
      head.contentLength = Number(cl)
    }
    if (cl !== undefined && head.framing !== 'length' && head.framing !== 'none') {
      // Both given: the length is not to be trusted (RFC 9112 6.3, item 3).
      for (let i = rawHeaders.length - 2; i >= 0; i -= 2) {
        if (rawHeaders[i]!.toLowerCase() === 'content-length') rawHeaders.splice(i, 2)
      }
    }
    return head
  }
}

function parseField(line: string): [string, string] {
  const { name, value, problem } = parseFieldLine(line)
  if (problem === 'no-colon')
    throw httpError('HTTP_BAD_HEADER', `malformed header line ${JSON.stringify(line.slice(0, 64))}`)
  if (problem === 'name')
    throw httpError('HTTP_BAD_HEADER', `invalid header name ${JSON.stringify(name.slice(0, 64))}`)
  if (problem === 'value') throw httpError('HTTP_BAD_HEADER', `control character in the ${name} header`)
  return [name, value]
}

/** End of the head: the index where the blank line starts and where the body starts. */
function findHeadEnd(buf: Buffer, from: number): { headEnd: number; bodyStart: number } | null {
  let i = buf.indexOf(10, from)
  while (i !== -1) {
    // LF LF, or LF CR LF: the blank line (bare LF tolerated, as nginx and node's client do).
    if (buf[i + 1] === 10) return { headEnd: i > 0 && buf[i - 1] === 13 ? i - 1 : i, bodyStart: i + 2 }
    if (buf[i + 1] === 13 && buf[i + 2] === 10)
      return { headEnd: i > 0 && buf[i - 1] === 13 ? i - 1 : i, bodyStart: i + 3 }
    if (i + 2 >= buf.length) return null
    i = buf.indexOf(10, i + 1)
  }
  return null
}
