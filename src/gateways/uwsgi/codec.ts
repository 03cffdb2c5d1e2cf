/**
 * The uwsgi packet (uWSGI docs, "The uwsgi Protocol"; core/protocol.c): a 4-byte header
 * `modifier1 (u8), datasize (u16 little-endian), modifier2 (u8)`, then for modifier1 0 a
 * vars block of `datasize` bytes made of `u16le keylen, key, u16le vallen, value` pairs,
 * then the request body (CONTENT_LENGTH bytes, no framing). The reply is raw HTTP and is
 * not part of this codec (see http-response.ts).
 *
 * Pure: no sockets, no timers. Encoders return Buffers; the parser is fed bytes split
 * anywhere and returns typed events. Strings are bytes: keys and values are read and
 * written as latin1 (one char per byte, how node:http represents header bytes); pass a
 * Buffer to send UTF-8 text.
 *
 * Bad bytes (or vars that cannot be encoded) throw a ProtocolError of protocol 'uwsgi'
 * with a UwsgiErrorCode; errors.ts says what each means for the listener and the client.
 */
import { ProtocolError } from '../../core/errors.js'

export type UwsgiErrorCode =
  /** An empty, truncated or non-latin1 var name or value, or one running past the block. */
  | 'UWSGI_BAD_VAR'
  /** CONTENT_LENGTH that is not a number, or given twice with different values. */
  | 'UWSGI_BAD_CONTENT_LENGTH'
  /** The peer closed before a whole packet (header, vars, body) arrived. */
  | 'UWSGI_TRUNCATED'
  /** An HTTP request line where a uwsgi header should be. */
  | 'UWSGI_PLAIN_HTTP'
  /** A modifier1 the parser was not asked to accept. */
  | 'UWSGI_BAD_MODIFIER'
  /** A vars block over the limit (or over the 16-bit datasize). */
  | 'UWSGI_VARS_TOO_LARGE'

function uwsgiError(code: UwsgiErrorCode, message: string): ProtocolError {
  return new ProtocolError('uwsgi', code, message)
}

export const UWSGI_HEADER_BYTES = 4
/** The largest vars block the 16-bit datasize can describe. */
export const UWSGI_MAX_VARS_BYTES = 65535
/**
 * "ET" of "GET " read as a little-endian u16: what a uwsgi socket sees when someone points
 * a browser or curl at it.
 */
export const PLAIN_HTTP_DATASIZE = 21573

export interface UwsgiHeader {
  modifier1: number
  /** Size of the vars block that follows the header. */
  datasize: number
  modifier2: number
}

export type UwsgiVarValue = string | Buffer
/** Vars in order; names may repeat (nginx sends one HTTP_* var per header line). */
export type UwsgiVarList = Iterable<readonly [string, UwsgiVarValue]>
/** Decoded vars: [name, value] pairs in the order received, values as latin1 strings. */
export type UwsgiVarPairs = [string, string][]

export function encodeUwsgiHeader(header: UwsgiHeader): Buffer {
  const buf = Buffer.allocUnsafe(UWSGI_HEADER_BYTES)
  buf.writeUInt8(header.modifier1, 0)
  buf.writeUInt16LE(header.datasize, 1)
  buf.writeUInt8(header.modifier2, 3)
  return buf
}

export function decodeUwsgiHeader(buf: Buffer, offset = 0): UwsgiHeader {
  if (buf.length - offset < UWSGI_HEADER_BYTES) throw new RangeError('a uwsgi header is 4 bytes')
  return {
    modifier1: buf.readUInt8(offset),
    datasize: buf.readUInt16LE(offset + 1),
    modifier2: buf.readUInt8(offset + 3),
  }
}

const HTTP_METHOD_PREFIXES = ['GET ', 'HEAD', 'POST', 'PUT ', 'DELE', 'PATC', 'OPTI', 'CONN', 'TRAC', 'PRI ']

/** True when the first four bytes are the start of an HTTP request line, not a uwsgi header. */
export function looksLikeHttp(first4: Buffer): boolean {
  const header = decodeUwsgiHeader(first4)
  if (header.datasize === PLAIN_HTTP_DATASIZE) return true
  return HTTP_METHOD_PREFIXES.includes(first4.toString('latin1', 0, 4))
}

const NOT_LATIN1 = /[^\x00-\xff]/

function bytesOf(name: string, value: UwsgiVarValue): Buffer {
  if (typeof value !== 'string') return value
  // latin1 would silently replace such characters: refuse rather than send other bytes.
  if (NOT_LATIN1.test(value))
    throw uwsgiError(
      'UWSGI_BAD_VAR',
      `value of ${name} has characters beyond latin1 (pass a Buffer with the bytes to send)`,
    )
  return Buffer.from(value, 'latin1')
}

/**
 * The vars block. A block that cannot fit the 16-bit datasize is refused, never truncated
 * or wrapped (Apache mod_proxy_uwsgi CVE-2020-11984 was this overflow); so is an empty key.
 */
export function encodeUwsgiVars(vars: UwsgiVarList, maxBytes = UWSGI_MAX_VARS_BYTES): Buffer {
  const limit = Math.min(maxBytes, UWSGI_MAX_VARS_BYTES)
  const parts: Buffer[] = []
  let total = 0
  for (const [name, value] of vars) {
    if (name.length === 0) throw uwsgiError('UWSGI_BAD_VAR', 'empty var name')
    const key = bytesOf('a var name', name)
    const val = bytesOf(name, value)
    total += 4 + key.length + val.length
    // Checked before any length is written, so no u16 field can wrap either.
    if (total > limit)
      throw uwsgiError(
        'UWSGI_VARS_TOO_LARGE',
        `more than ${limit} bytes (at ${JSON.stringify(name.slice(0, 64))})`,
      )
    const lengths = Buffer.allocUnsafe(2)
    lengths.writeUInt16LE(key.length, 0)
    parts.push(lengths, key)
    const vlen = Buffer.allocUnsafe(2)
    vlen.writeUInt16LE(val.length, 0)
    parts.push(vlen, val)
  }
  return Buffer.concat(parts, total)
}

export interface UwsgiPacketOptions {
  modifier1?: number
  modifier2?: number
}

/** Header and vars block, ready to write; the body follows it on the wire. */
export function encodeUwsgiPacket(vars: UwsgiVarList, options: UwsgiPacketOptions = {}): Buffer {
  const block = encodeUwsgiVars(vars)
  const header = encodeUwsgiHeader({
    modifier1: options.modifier1 ?? 0,
    datasize: block.length,
    modifier2: options.modifier2 ?? 0,
  })
  return Buffer.concat([header, block])
}

/** Decode a complete vars block; a var that runs past the block or an empty name is an error. */
export function decodeUwsgiVars(block: Buffer): UwsgiVarPairs {
  const vars: UwsgiVarPairs = []
  let i = 0
  while (i < block.length) {
    if (i + 2 > block.length) throw uwsgiError('UWSGI_BAD_VAR', 'truncated var name length')
    const klen = block.readUInt16LE(i)
    i += 2
    if (klen === 0) throw uwsgiError('UWSGI_BAD_VAR', 'empty var name')
    if (i + klen + 2 > block.length) throw uwsgiError('UWSGI_BAD_VAR', 'var name runs past the block')
    const key = block.toString('latin1', i, i + klen)
    i += klen
    const vlen = block.readUInt16LE(i)
    i += 2
    if (i + vlen > block.length)
      throw uwsgiError('UWSGI_BAD_VAR', `value of ${key.slice(0, 64)} runs past the block`)
    vars.push([key, block.toString('latin1', i, i + vlen)])
    i += vlen
  }
  return vars
}

/** CONTENT_LENGTH from decoded vars: '' or absent is 0; repeated values must agree. */
export function contentLengthOf(vars: UwsgiVarPairs): number {
  let found: string | undefined
  for (const [name, value] of vars) {
    if (name !== 'CONTENT_LENGTH') continue
    if (found !== undefined && found !== value)
      throw uwsgiError('UWSGI_BAD_CONTENT_LENGTH', 'conflicting CONTENT_LENGTH vars')
    found = value
  }
  if (found === undefined || found === '') return 0
  if (!/^\d{1,15}$/.test(found))
    throw uwsgiError('UWSGI_BAD_CONTENT_LENGTH', `CONTENT_LENGTH is not a number: ${found.slice(0, 32)}`)
  return Number(found)
}

export type UwsgiRequestEvent =
  | { kind: 'request'; header: UwsgiHeader; vars: UwsgiVarPairs; contentLength: number }
  | { kind: 'body'; chunk: Buffer }
  /** The body is complete (CONTENT_LENGTH bytes). Bytes after it are discarded. */
  | { kind: 'end' }

export interface UwsgiRequestParserOptions {
  /** Largest vars block accepted (default and maximum 65535). */
  maxVarsBytes?: number
  /** modifier1 values accepted (default [0], WSGI/HTTP request vars). */
  modifier1?: readonly number[]
}

/**
 * Incremental parser for one uwsgi request (the protocol has no pipelining: one request,
 * then the reply, then close). Feed it bytes as they arrive; it throws a ProtocolError
 * (UWSGI_PLAIN_HTTP, UWSGI_BAD_MODIFIER, UWSGI_VARS_TOO_LARGE, UWSGI_BAD_VAR,
 * UWSGI_BAD_CONTENT_LENGTH, UWSGI_TRUNCATED) on the first bad byte, after which it must
 * not be fed again.
 */
export class UwsgiRequestParser {
  private readonly maxVarsBytes: number
  private readonly modifier1: readonly number[]
  private state: 'header' | 'vars' | 'body' | 'done' = 'header'
  private pending: Buffer[] = []
  private pendingBytes = 0
  private header: UwsgiHeader | null = null
  private remaining = 0

  constructor(options: UwsgiRequestParserOptions = {}) {
    this.maxVarsBytes = Math.min(options.maxVarsBytes ?? UWSGI_MAX_VARS_BYTES, UWSGI_MAX_VARS_BYTES)
    this.modifier1 = options.modifier1 ?? [0]
  }

  /** True once the head (header and vars) has been parsed. */
  get headComplete(): boolean {
    return this.state === 'body' || this.state === 'done'
  }

  /** True once the whole body has been received. */
  get complete(): boolean {
    return this.state === 'done'
  }

  /** Body bytes still expected (CONTENT_LENGTH minus what has arrived); 0 before the head. */
  get bodyRemaining(): number {
    return this.state === 'body' ? this.remaining : 0
  }

  push(chunk: Buffer): UwsgiRequestEvent[] {
    const events: UwsgiRequestEvent[] = []
    let data = chunk
    if (this.state === 'header' || this.state === 'vars') {
      // Header and vars block are parsed whole: gather pieces until the needed size arrived.
      this.pending.push(chunk)
      this.pendingBytes += chunk.length
      const needed = this.state === 'header' ? UWSGI_HEADER_BYTES : this.header!.datasize
      if (this.pendingBytes < needed) return events
      data = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes)
      this.pending = []
      this.pendingBytes = 0
    }
    for (;;) {
      if (this.state === 'header') {
        if (data.length < UWSGI_HEADER_BYTES) break
        this.header = this.checkHeader(data.subarray(0, UWSGI_HEADER_BYTES))
        data = data.subarray(UWSGI_HEADER_BYTES)
        this.state = 'vars'
      } else if (this.state === 'vars') {
        const header = this.header!
        if (data.length < header.datasize) break
        const vars = decodeUwsgiVars(data.subarray(0, header.datasize))
        data = data.subarray(header.datasize)
        const contentLength = contentLengthOf(vars)
        events.push({ kind: 'request', header, vars, contentLength })
        this.remaining = contentLength
        this.state = 'body'
        if (contentLength === 0) this.finishBody(events)
      } else if (this.state === 'body') {
        if (data.length === 0) break
        const take = Math.min(this.remaining, data.length)
        events.push({ kind: 'body', chunk: data.subarray(0, take) })
        data = data.subarray(take)
        this.remaining -= take
        if (this.remaining === 0) this.finishBody(events)
      } else {
        break // done: bytes after the body are discarded (uwsgi has no pipelining)
      }
    }
    if ((this.state === 'header' || this.state === 'vars') && data.length > 0) {
      this.pending = [data]
      this.pendingBytes = data.length
    }
    return events
  }

  /** The peer closed its side: an error unless a whole request (body included) arrived. */
  finish(): void {
    if (this.state === 'done') return
    if (this.state === 'header' && this.pendingBytes === 0)
      throw uwsgiError('UWSGI_TRUNCATED', 'connection closed before a request')
    if (this.state === 'body')
      throw uwsgiError('UWSGI_TRUNCATED', `body ended ${this.remaining} bytes short of CONTENT_LENGTH`)
    throw uwsgiError('UWSGI_TRUNCATED', `truncated ${this.state === 'header' ? 'header' : 'vars block'}`)
  }

  private finishBody(events: UwsgiRequestEvent[]): void {
    this.state = 'done'
    events.push({ kind: 'end' })
  }

  private checkHeader(first4: Buffer): UwsgiHeader {
    if (looksLikeHttp(first4))
      throw uwsgiError('UWSGI_PLAIN_HTTP', 'this port speaks the uwsgi protocol, not HTTP')
    const header = decodeUwsgiHeader(first4)
    if (!this.modifier1.includes(header.modifier1))
      throw uwsgiError(
        'UWSGI_BAD_MODIFIER',
        `${header.modifier1} (served: ${this.modifier1.join(', ')}; 0 is a WSGI/HTTP request)`,
      )
    if (header.datasize > this.maxVarsBytes)
      throw uwsgiError('UWSGI_VARS_TOO_LARGE', `${header.datasize} > ${this.maxVarsBytes} bytes`)
    return header
  }
}
