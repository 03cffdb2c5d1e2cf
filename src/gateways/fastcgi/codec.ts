/**
 * FastCGI 1.0 codec: records, name-value pairs, and the typed bodies of the management and
 * request records. Pure: bytes in, typed records out, Buffers back; no sockets, no timers.
 * All integers are big-endian (FastCGI spec, section 3.3). Bad bytes throw a ProtocolError
 * of protocol 'fastcgi' (codes: FastCGIErrorCode).
 */
import { ProtocolError } from '../../core/errors.js'

export const FCGI_VERSION_1 = 1
export const FCGI_HEADER_LEN = 8
/** php-fpm refuses records whose content + padding exceed 65535: keep content at 65528 (a multiple of 8). */
export const FCGI_MAX_CONTENT = 65528

export const RecordType = {
  BEGIN_REQUEST: 1,
  ABORT_REQUEST: 2,
  END_REQUEST: 3,
  PARAMS: 4,
  STDIN: 5,
  STDOUT: 6,
  STDERR: 7,
  DATA: 8,
  GET_VALUES: 9,
  GET_VALUES_RESULT: 10,
  UNKNOWN_TYPE: 11,
} as const
export type RecordTypeCode = (typeof RecordType)[keyof typeof RecordType]

export const Role = { RESPONDER: 1, AUTHORIZER: 2, FILTER: 3 } as const
export const FCGI_KEEP_CONN = 1

export const ProtocolStatus = {
  REQUEST_COMPLETE: 0,
  CANT_MPX_CONN: 1,
  OVERLOADED: 2,
  UNKNOWN_ROLE: 3,
} as const

export interface FcgiRecord {
  type: number
  requestId: number
  content: Buffer
}

export type FastCGIErrorCode =
  | 'FCGI_BAD_VERSION'
  | 'FCGI_BAD_NAME_VALUE'
  | 'FCGI_BAD_BODY'
  | 'FCGI_PARAMS_TOO_LARGE'
  | 'FCGI_PAIR_TOO_LARGE'

/**
 * The one error the codec raises: a ProtocolError of protocol 'fastcgi' whose `code` (a
 * FastCGIErrorCode) says what was wrong with the bytes. errors.ts says what it means at
 * each edge.
 */
function fcgiError(code: FastCGIErrorCode, message: string): ProtocolError {
  return new ProtocolError('fastcgi', code, message)
}

// ---------------------------------------------------------------------------------------
// Encoding

function header(type: number, requestId: number, contentLength: number, paddingLength: number): Buffer {
  const h = Buffer.allocUnsafe(FCGI_HEADER_LEN)
  writeHeader(h, 0, type, requestId, contentLength, paddingLength)
  return h
}

const ZEROS = Buffer.alloc(8)

/** One record; content must be at most 65535 bytes. Padding rounds the record to 8 bytes. */
export function encodeRecord(
  type: number,
  requestId: number,
  content: Buffer = ZEROS.subarray(0, 0),
): Buffer[] {
  if (content.length > 0xffff) throw new RangeError(`FastCGI record content of ${content.length} bytes`)
  const padding = (8 - (content.length % 8)) % 8
  const parts = [header(type, requestId, content.length, padding)]
  if (content.length > 0) parts.push(content)
  if (padding > 0) parts.push(ZEROS.subarray(0, padding))
  return parts
}

/**
 * A stream (PARAMS, STDIN, STDOUT, STDERR, DATA) chunk as as many records as it takes,
 * each at most FCGI_MAX_CONTENT bytes. An empty `data` is the end-of-stream record.
 */
export function encodeStream(type: number, requestId: number, data: Buffer): Buffer[] {
  if (data.length === 0) return encodeRecord(type, requestId)
  const out: Buffer[] = []
  for (let off = 0; off < data.length; off += FCGI_MAX_CONTENT) {
    out.push(...encodeRecord(type, requestId, data.subarray(off, off + FCGI_MAX_CONTENT)))
  }
  return out
}

export function encodeBeginRequest(requestId: number, role: number, keepConn: boolean): Buffer[] {
  const body = Buffer.alloc(8)
  body.writeUInt16BE(role, 0)
  body[2] = keepConn ? FCGI_KEEP_CONN : 0
  return encodeRecord(RecordType.BEGIN_REQUEST, requestId, body)
}

export function encodeEndRequest(requestId: number, appStatus: number, protocolStatus: number): Buffer[] {
  const body = Buffer.alloc(8)
  body.writeUInt32BE(appStatus >>> 0, 0)
  body[4] = protocolStatus
  return encodeRecord(RecordType.END_REQUEST, requestId, body)
}

export function encodeUnknownType(type: number): Buffer[] {
  const body = Buffer.alloc(8)
  body[0] = type
  return encodeRecord(RecordType.UNKNOWN_TYPE, 0, body)
}

function lengthBytes(n: number): Buffer {
  if (n <= 127) return Buffer.from([n])
  const b = Buffer.allocUnsafe(4)
  b.writeUInt32BE((n | 0x80000000) >>> 0, 0)
  return b
}

/** Name-value pairs (spec 3.4): each length 1 byte when <= 127, else 4 bytes with the top bit set. */
export function encodeNameValuePairs(
  pairs: Iterable<readonly [string, string]> | Record<string, string>,
): Buffer {
  const parts: Buffer[] = []
  const entries = Symbol.iterator in pairs ? pairs : Object.entries(pairs)
  for (const [name, value] of entries as Iterable<readonly [string, string]>) {
    const n = Buffer.from(name, 'latin1')
    const v = Buffer.from(value, 'latin1')
    if (n.length > 0x7fffffff || v.length > 0x7fffffff) throw new RangeError('FastCGI name or value too long')
    parts.push(lengthBytes(n.length), lengthBytes(v.length), n, v)
  }
  return Buffer.concat(parts)
}

/**
 * The PARAMS stream for a request, then the empty record. Records hold whole pairs: the
 * spec lets a pair straddle records, but php-fpm decodes each PARAMS record on its own and
 * drops the connection when one does (php-src main/fastcgi.c, fcgi_get_params). Only a
 * pair too large for any record is split.
 */
export function encodeParams(
  requestId: number,
  pairs: Iterable<readonly [string, string]> | Record<string, string>,
): Buffer[] {
  // The whole block as one latin1 string (one byte per code unit, lengths included):
  // building it and writing it once is much cheaper than a Buffer per name and value.
  let text = ''
  if (Symbol.iterator in pairs) {
    for (const [name, value] of pairs as Iterable<readonly [string, string]>)
      text += lengthChars(name.length) + lengthChars(value.length) + name + value
  } else {
    for (const name in pairs) {
      const value = pairs[name]!
      text += lengthChars(name.length) + lengthChars(value.length) + name + value
    }
  }
  const total = text.length
  if (total > FCGI_MAX_CONTENT) {
    const entries =
      Symbol.iterator in pairs ? [...(pairs as Iterable<readonly [string, string]>)] : Object.entries(pairs)
    return encodeParamsInRecords(requestId, entries)
  }
  // The usual case, on the hot path: one record and the empty one, in one buffer.
  const padding = (8 - (total % 8)) % 8
  const out = Buffer.alloc(FCGI_HEADER_LEN + total + padding + FCGI_HEADER_LEN)
  writeHeader(out, 0, RecordType.PARAMS, requestId, total, padding)
  out.write(text, FCGI_HEADER_LEN, 'latin1')
  writeHeader(out, FCGI_HEADER_LEN + total + padding, RecordType.PARAMS, requestId, 0, 0)
  return [out]
}

/** A name-value length as latin1 characters: 1 byte up to 127, else 4 with the top bit set. */
function lengthChars(n: number): string {
  if (n <= 127) return String.fromCharCode(n)
  return String.fromCharCode(((n >>> 24) & 0x7f) | 0x80, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff)
}

function writeHeader(
  buf: Buffer,
  off: number,
  type: number,
  requestId: number,
  contentLength: number,
  padding: number,
): void {
  buf[off] = FCGI_VERSION_1
  buf[off + 1] = type
  buf.writeUInt16BE(requestId, off + 2)
  buf.writeUInt16BE(contentLength, off + 4)
  buf[off + 6] = padding
  buf[off + 7] = 0
}

/** More than one record's worth: pack whole pairs per record, splitting only a pair larger than a record. */
function encodeParamsInRecords(requestId: number, entries: readonly (readonly [string, string])[]): Buffer[] {
  const out: Buffer[] = []
  let batch: Buffer[] = []
  let batchLength = 0
  const flush = () => {
    if (batchLength === 0) return
    out.push(
      ...encodeRecord(RecordType.PARAMS, requestId, batch.length === 1 ? batch[0]! : Buffer.concat(batch)),
    )
    batch = []
    batchLength = 0
  }
  for (const pair of entries) {
    const bytes = encodeNameValuePairs([pair])
    if (bytes.length > FCGI_MAX_CONTENT) {
      flush()
      out.push(...encodeStream(RecordType.PARAMS, requestId, bytes))
      continue
    }
    if (batchLength + bytes.length > FCGI_MAX_CONTENT) flush()
    batch.push(bytes)
    batchLength += bytes.length
  }
  flush()
  out.push(...encodeRecord(RecordType.PARAMS, requestId))
  return out
}

// ---------------------------------------------------------------------------------------
// Decoding

export interface BeginRequestBody {
  role: number
  keepConn: boolean
}

export function decodeBeginRequest(content: Buffer): BeginRequestBody {
  if (content.length < 8) throw fcgiError('FCGI_BAD_BODY', `BEGIN_REQUEST body of ${content.length} bytes`)
  return { role: content.readUInt16BE(0), keepConn: (content[2]! & FCGI_KEEP_CONN) !== 0 }
}

export interface EndRequestBody {
  appStatus: number
  protocolStatus: number
}

export function decodeEndRequest(content: Buffer): EndRequestBody {
  if (content.length < 8) throw fcgiError('FCGI_BAD_BODY', `END_REQUEST body of ${content.length} bytes`)
  return { appStatus: content.readUInt32BE(0), protocolStatus: content[4]! }
}

const EMPTY = Buffer.alloc(0)

/**
 * Incremental record parser (pg-protocol style): feed it bytes split anywhere; it calls
 * `onRecord` for each complete record. What it holds is bounded by one record (8 + 65535
 * + 255 bytes). A wrong version is a ProtocolError (FCGI_BAD_VERSION); after one, the stream is dead.
 */
export class RecordParser {
  private buffer: Buffer = EMPTY
  private failed = false

  constructor(private readonly onRecord: (record: FcgiRecord) => void) {}

  /** Bytes held waiting for the rest of a record. */
  get pending(): number {
    return this.buffer.length
  }

  feed(chunk: Buffer): void {
    if (this.failed) throw fcgiError('FCGI_BAD_VERSION', 'stream already failed')
    const records: FcgiRecord[] = []
    let error: ProtocolError | null = null
    let off = 0
    if (this.buffer.length > 0) {
      // Only the record that straddles the two chunks is assembled: a copy of one record at
      // most, never of the whole new chunk.
      const held = this.buffer
      const head =
        held.length >= FCGI_HEADER_LEN
          ? held
          : Buffer.concat([held, chunk.subarray(0, FCGI_HEADER_LEN - held.length)])
      if (head.length < FCGI_HEADER_LEN) {
        this.buffer = head
        return
      }
      error = versionError(head[0]!)
      if (!error) {
        const total = FCGI_HEADER_LEN + head.readUInt16BE(4) + head[6]!
        const wanted = total - held.length
        if (chunk.length < wanted) {
          this.buffer = Buffer.concat([held, chunk])
          return
        }
        const record = Buffer.concat([held, chunk.subarray(0, wanted)], total)
        records.push(recordAt(record, 0))
        off = wanted
      }
    }
    while (!error && chunk.length - off >= FCGI_HEADER_LEN) {
      error = versionError(chunk[off]!)
      if (error) break
      const total = FCGI_HEADER_LEN + chunk.readUInt16BE(off + 4) + chunk[off + 6]!
      if (chunk.length - off < total) break
      records.push(recordAt(chunk, off))
      off += total
    }
    // Keep only the unparsed tail, copied so the caller's chunk is not retained. State is
    // settled before any callback runs, so a callback that throws leaves the parser sane.
    this.buffer = error || off === chunk.length ? EMPTY : Buffer.from(chunk.subarray(off))
    if (error) this.failed = true
    for (const record of records) this.onRecord(record)
    if (error) throw error
  }
}

function recordAt(buf: Buffer, off: number): FcgiRecord {
  const contentLength = buf.readUInt16BE(off + 4)
  return {
    type: buf[off + 1]!,
    requestId: buf.readUInt16BE(off + 2),
    content: buf.subarray(off + FCGI_HEADER_LEN, off + FCGI_HEADER_LEN + contentLength),
  }
}

function versionError(version: number): ProtocolError | null {
  if (version === FCGI_VERSION_1) return null
  const hint =
    version === 0x47 || version === 0x50
      ? ' (plain HTTP sent to a FastCGI socket?)'
      : version === 0x48
        ? ' (plain HTTP from an HTTP server, not a FastCGI one?)'
        : ''
  return fcgiError('FCGI_BAD_VERSION', `record version ${version}, expected 1${hint}`)
}

/**
 * Incremental name-value pair decoder for a PARAMS (or GET_VALUES) stream: pairs may
 * straddle records. `maxBytes` bounds the whole stream, so a peer cannot make us buffer
 * without limit.
 */
export class NameValueDecoder {
  private buffer: Buffer = EMPTY
  private total = 0
  readonly pairs: [string, string][] = []

  constructor(private readonly maxBytes: number = 1024 * 1024) {}

  feed(chunk: Buffer): void {
    this.total += chunk.length
    if (this.total > this.maxBytes) {
      throw fcgiError('FCGI_PARAMS_TOO_LARGE', `params exceed ${this.maxBytes} bytes`)
    }
    const buf = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
    // The block as one latin1 string (a character per byte), made in one call: names and
    // values are then slices of it, rather than a conversion of the buffer per string.
    const text = buf.toString('latin1')
    const length = text.length
    let off = 0
    while (off < length) {
      const start = off
      let nameLength = text.charCodeAt(off)
      if (nameLength & 0x80) {
        if (length - off < 4) break
        nameLength =
          ((nameLength & 0x7f) << 24) |
          (text.charCodeAt(off + 1) << 16) |
          (text.charCodeAt(off + 2) << 8) |
          text.charCodeAt(off + 3)
        off += 4
      } else off += 1
      if (off >= length) {
        off = start
        break
      }
      let valueLength = text.charCodeAt(off)
      if (valueLength & 0x80) {
        if (length - off < 4) {
          off = start
          break
        }
        valueLength =
          ((valueLength & 0x7f) << 24) |
          (text.charCodeAt(off + 1) << 16) |
          (text.charCodeAt(off + 2) << 8) |
          text.charCodeAt(off + 3)
        off += 4
      } else off += 1
      if (length - off < nameLength + valueLength) {
        off = start
        break
      }
      const name = text.slice(off, off + nameLength)
      off += nameLength
      const value = text.slice(off, off + valueLength)
      off += valueLength
      if (name.length === 0) throw fcgiError('FCGI_BAD_NAME_VALUE', 'empty parameter name')
      this.pairs.push([name, value])
    }
    this.buffer = off === buf.length ? EMPTY : Buffer.from(buf.subarray(off))
  }

  /** Call at the end of the stream: leftover bytes are a truncated pair. */
  end(): [string, string][] {
    if (this.buffer.length > 0) {
      throw fcgiError('FCGI_BAD_NAME_VALUE', `${this.buffer.length} bytes of a truncated name-value pair`)
    }
    return this.pairs
  }
}

/** Decode a complete name-value block (GET_VALUES, GET_VALUES_RESULT). */
export function decodeNameValuePairs(content: Buffer, maxBytes = 65535): [string, string][] {
  const d = new NameValueDecoder(maxBytes)
  d.feed(content)
  return d.end()
}
