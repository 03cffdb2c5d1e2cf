/**
 * The header block of a CGI response (RFC 3875 section 6), fed as bytes in any split.
 * No I/O: the CGI handler feeds it a script's stdout, the FastCGI client feeds it the
 * FCGI_STDOUT stream, and both get the same typed result.
 *
 *   const parser = new CgiResponseParser({ maxHeaderBytes: 32768 })
 *   const r = parser.push(chunk) // { type: 'incomplete' } | 'complete' | 'error' | 'body'
 *   ...
 *   parser.end()                // at EOF: an error unless the head was complete
 *
 * It throws nothing: a refused header block is returned as a CgiResponseError, a
 * ProtocolError of protocol 'cgi' whose code is a CgiResponseErrorCode. The CGI and FastCGI
 * gateways make it GH_ERR_CGI_RESPONSE or GH_ERR_FASTCGI_PROTOCOL.
 */
import { ProtocolError } from '../core/errors.js'
import { HOP_BY_HOP, isFinalStatus, parseFieldLine } from '../core/http-headers.js'

/** Why a header block was refused. Stable names, so callers and logs can tell them apart. */
export type CgiResponseErrorCode =
  /** Nothing at all on stdout. */
  | 'empty'
  /** stdout ended inside the header block (no empty line). */
  | 'truncated'
  /** The header block grew past maxHeaderBytes before its empty line. */
  | 'header_too_large'
  /** A line that is not `name: value`, a bad field name, or a control character in a value. */
  | 'malformed_field'
  /** A line starting with space or tab: obsolete line folding (RFC 9112 5.2), refused. */
  | 'line_folding'
  /** `Status:` that is not three digits (200-599) and an optional reason phrase. */
  | 'invalid_status'
  /** Status, Location or Content-Type given twice, or Content-Length with two values. */
  | 'duplicate_field'
  /** Content-Length that is not a decimal number. */
  | 'invalid_content_length'
  /** No Content-Type, no Status and no Location: RFC 3875 6.2 needs one of them. */
  | 'missing_content_type'

/** A refused header block: a ProtocolError of protocol 'cgi'. */
export interface CgiResponseError extends ProtocolError {
  readonly protocol: 'cgi'
  readonly code: CgiResponseErrorCode
  /** 1-based line of the header block the problem is on, when it is about one line. */
  readonly line?: number
}

/** What the checks below find, before it is made a CgiResponseError. */
interface Problem {
  code: CgiResponseErrorCode
  message: string
  line?: number
}

function cgiError(problem: Problem): CgiResponseError {
  const err = new ProtocolError('cgi', problem.code, problem.message)
  if (problem.line !== undefined) Object.assign(err, { line: problem.line })
  return err as CgiResponseError
}

/**
 * RFC 3875 6.2: a document (Content-Type, optional Status), a local redirect (Location with
 * an absolute path, nothing that overrides the status: the server re-dispatches it), or a
 * client redirect (Location with anything else; 302 unless Status says otherwise).
 */
export type CgiResponseKind = 'document' | 'local-redirect' | 'client-redirect'

export interface CgiResponseHead {
  kind: CgiResponseKind
  status: number
  /** Reason phrase from `Status: NNN reason`, when one was given. */
  reason?: string
  /**
   * Fields to send to the client in order, names as the script wrote them, repeated fields
   * (Set-Cookie) kept. Status is not among them (it is `status`), nor are hop-by-hop fields.
   */
  headers: [name: string, value: string][]
  location?: string
  contentType?: string
  contentLength?: number
  /** Hop-by-hop fields the script sent, which were dropped (lower-case names). */
  dropped: string[]
}

export type CgiParseResult =
  | { type: 'incomplete' }
  | {
      type: 'complete'
      head: CgiResponseHead /** Body bytes that followed the header block in the same push. */
      body: Buffer
    }
  | { type: 'error'; error: CgiResponseError }
  /** push() after the head was complete: the bytes are body. */
  | { type: 'body'; body: Buffer }

export interface CgiResponseParserOptions {
  /** Largest header block accepted, line endings included. Default 32 KiB. */
  maxHeaderBytes?: number
}

/** A reason phrase (RFC 9112 4): the characters of a field value (RFC 9110 5.5). */
const STATUS_VALUE = /^(\d{3})(?:[ \t]+([\t\x20-\x7e\x80-\xff]*))?$/

const LF = 0x0a
const CR = 0x0d

type State = 'head' | 'done' | 'failed'

export class CgiResponseParser {
  private readonly maxHeaderBytes: number
  private state: State = 'head'
  /** Bytes of the line being assembled (a line may span pushes). */
  private partial: Buffer[] = []
  private partialLength = 0
  /** Header bytes consumed so far, line endings included. */
  private consumed = 0
  private lineNumber = 0
  private readonly fields: [string, string][] = []
  private failure: CgiResponseError | null = null

  constructor(options: CgiResponseParserOptions = {}) {
    this.maxHeaderBytes = options.maxHeaderBytes ?? 32 * 1024
  }

  /** true once the header block was parsed (push() then returns body bytes as they are). */
  get complete(): boolean {
    return this.state === 'done'
  }

  push(chunk: Buffer): CgiParseResult {
    if (this.state === 'done') return { type: 'body', body: chunk }
    if (this.state === 'failed') return { type: 'error', error: this.failure! }
    let pos = 0
    while (pos < chunk.length) {
      const lf = chunk.indexOf(LF, pos)
      const end = lf === -1 ? chunk.length : lf
      const take = end - pos + (lf === -1 ? 0 : 1)
      if (this.consumed + this.partialLength + take > this.maxHeaderBytes) {
        return this.fail({
          code: 'header_too_large',
          message: `header block exceeds ${this.maxHeaderBytes} bytes`,
        })
      }
      if (lf === -1) {
        this.partial.push(chunk.subarray(pos))
        this.partialLength += chunk.length - pos
        return { type: 'incomplete' }
      }
      let line =
        this.partialLength === 0
          ? chunk.subarray(pos, lf)
          : Buffer.concat([...this.partial, chunk.subarray(pos, lf)])
      this.consumed += line.length + 1
      this.partial = []
      this.partialLength = 0
      pos = lf + 1
      this.lineNumber++
      if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, -1)
      if (line.length === 0) {
        if (this.fields.length === 0) {
          return this.fail({
            code: 'missing_content_type',
            message: 'empty header block: no Content-Type, Status or Location',
            line: this.lineNumber,
          })
        }
        return this.finish(chunk.subarray(pos))
      }
      const error = this.addField(line.toString('latin1'))
      if (error) return this.fail(error)
    }
    return { type: 'incomplete' }
  }

  /** The script's output ended. Returns the error to report, or null when the head was complete. */
  end(): CgiResponseError | null {
    if (this.state === 'done') return null
    if (this.state === 'failed') return this.failure
    const empty = this.consumed === 0 && this.partialLength === 0
    this.state = 'failed'
    this.failure = cgiError(
      empty
        ? { code: 'empty', message: 'no output (expected a CGI header block)' }
        : {
            code: 'truncated',
            message: 'output ended inside the header block (no empty line after the fields)',
          },
    )
    return this.failure
  }

  private fail(problem: Problem): CgiParseResult {
    const error = cgiError(problem)
    this.state = 'failed'
    this.failure = error
    this.partial = []
    return { type: 'error', error }
  }

  private addField(text: string): Problem | null {
    const line = this.lineNumber
    if (text.charCodeAt(0) === 0x20 || text.charCodeAt(0) === 0x09) {
      return { code: 'line_folding', message: 'continuation line (obsolete line folding)', line }
    }
    const { name, value, problem } = parseFieldLine(text)
    if (problem === 'no-colon') return { code: 'malformed_field', message: 'line is not `name: value`', line }
    if (problem === 'name') return { code: 'malformed_field', message: 'invalid field name', line }
    if (problem === 'value') {
      return { code: 'malformed_field', message: `control character in the value of ${name}`, line }
    }
    this.fields.push([name, value])
    return null
  }

  private finish(body: Buffer): CgiParseResult {
    let status: number | undefined
    let reason: string | undefined
    let location: string | undefined
    let contentType: string | undefined
    let contentLength: number | undefined
    const headers: [string, string][] = []
    const dropped: string[] = []
    for (const [name, value] of this.fields) {
      const lower = name.toLowerCase()
      const once = (seen: unknown) =>
        seen === undefined ? null : ({ code: 'duplicate_field', message: `${name} given twice` } as const)
      switch (lower) {
        case 'status': {
          const dup = once(status)
          if (dup) return this.fail(dup)
          const m = STATUS_VALUE.exec(value)
          const code = m ? Number(m[1]) : 0
          if (!m || !isFinalStatus(code)) {
            return this.fail({ code: 'invalid_status', message: `Status: ${JSON.stringify(value)}` })
          }
          status = code
          if (m[2]) reason = m[2]
          continue
        }
        case 'location': {
          const dup = once(location)
          if (dup) return this.fail(dup)
          if (value === '') return this.fail({ code: 'malformed_field', message: 'empty Location' })
          location = value
          break
        }
        case 'content-type': {
          const dup = once(contentType)
          if (dup) return this.fail(dup)
          contentType = value
          break
        }
        case 'content-length': {
          if (!/^\d{1,15}$/.test(value)) {
            return this.fail({
              code: 'invalid_content_length',
              message: `Content-Length: ${JSON.stringify(value)}`,
            })
          }
          const n = Number(value)
          if (contentLength !== undefined) {
            if (contentLength !== n)
              return this.fail({ code: 'duplicate_field', message: 'Content-Length with two values' })
            continue
          }
          contentLength = n
          break
        }
        default:
          if (HOP_BY_HOP.has(lower)) {
            dropped.push(lower)
            continue
          }
      }
      headers.push([name, value])
    }

    let kind: CgiResponseKind = 'document'
    if (location !== undefined) {
      // RFC 3875 6.2.2: a local redirect is an abs-path (not "//authority", which is a
      // network-path reference for the client). A Status other than 200 makes it the
      // script's own response, passed to the client as it is (Apache does the same).
      const local = location.startsWith('/') && !location.startsWith('//')
      if (local && (status === undefined || status === 200)) kind = 'local-redirect'
      else if (status === undefined) {
        // RFC 3875 6.2.3: a client redirect without Status is a 302.
        kind = 'client-redirect'
        status = 302
      } else if (status >= 300 && status < 400) kind = 'client-redirect'
      // else: e.g. `Status: 201` with Location naming what was created — a document.
    } else if (contentType === undefined && status === undefined) {
      return this.fail({
        code: 'missing_content_type',
        message: 'header block has no Content-Type, Status or Location',
      })
    }

    this.state = 'done'
    this.fields.length = 0
    const head: CgiResponseHead = { kind, status: status ?? 200, headers, dropped }
    if (reason !== undefined) head.reason = reason
    if (location !== undefined) head.location = location
    if (contentType !== undefined) head.contentType = contentType
    if (contentLength !== undefined) head.contentLength = contentLength
    return { type: 'complete', head, body }
  }
}
