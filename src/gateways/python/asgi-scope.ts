/*
 * The ASGI scope of an HTTP request or WebSocket, written straight into its frame
 * (ASGI_REQUEST or WS_CONNECT) as marshal data: Python gets the dict from one
 * `marshal.loads` and only adds `state`.
 */
import { FrameType, Writer } from './codec.js'

const SMALL_TUPLE = 0x29
const BYTES = 0x73
const DICT = 0x7b
const NULL = 0x30
const NONE = 0x4e
const TRUE = 0x54
const FALSE = 0x46

export interface AsgiScopeParts {
  type: 'http' | 'websocket'
  httpVersion: string
  method: string
  scheme: string
  /** Decoded path, root_path included. */
  path: string
  /** The path as received (percent-encoded), bytes as latin-1 chars. */
  rawPath: string
  /** Query string as received, without '?'. */
  query: string
  rootPath: string
  /** node's req.rawHeaders: name, value, name, value... (names lower-cased here). */
  rawHeaders: readonly string[]
  client: readonly [string, number] | null
  server: readonly [string, number | null] | null
  /** websocket: the offered subprotocols. */
  subprotocols?: readonly string[]
}

/**
 * Marshal encodings of the strings every scope repeats (keys, methods, schemes, header
 * names), made once: a request's scope is then mostly copies (measured: 4.2 -> ~2.4 us per encode).
 */
const strCache = new Map<string, Buffer>()
const headerNameCache = new Map<string, Buffer>()
const CACHE_LIMIT = 512

function encodeStr(s: string): Buffer {
  const w = new Writer(16 + s.length * 3)
  w.str(s)
  return Buffer.from(w.buf.subarray(4, w.pos))
}

function raw(w: Writer, b: Buffer): void {
  w.ensure(b.length)
  b.copy(w.buf, w.pos)
  w.pos += b.length
}

/** A str likely to repeat (a key, a method, a scheme), from the cache. */
function constStr(w: Writer, s: string): void {
  let b = strCache.get(s)
  if (!b) {
    b = encodeStr(s)
    if (strCache.size < CACHE_LIMIT) strCache.set(s, b)
  }
  raw(w, b)
}

/** A constant key followed by a str value likely to repeat, as one cached piece. */
function constPair(w: Writer, key: string, value: string): void {
  const k = `${key}\0${value}`
  let b = strCache.get(k)
  if (!b) {
    b = Buffer.concat([encodeStr(key), encodeStr(value)])
    if (strCache.size < CACHE_LIMIT) strCache.set(k, b)
  }
  raw(w, b)
}

/** `{'type': type, 'asgi': {'version': '3.0', 'spec_version': '2.3'}` (dict still open). */
const PREFIX = {
  http: scopePrefix('http'),
  websocket: scopePrefix('websocket'),
}

function scopePrefix(type: string): Buffer {
  const w = new Writer(128)
  w.byte(DICT)
  w.str('type')
  w.str(type)
  w.str('asgi')
  w.byte(DICT)
  w.str('version')
  w.str('3.0')
  w.str('spec_version')
  w.str('2.3')
  w.byte(NULL)
  return Buffer.from(w.buf.subarray(4, w.pos))
}

/** A header name as lower-case Python bytes, from the cache. */
function headerName(w: Writer, name: string): void {
  let b = headerNameCache.get(name)
  if (!b) {
    const lower = name.toLowerCase()
    b = Buffer.allocUnsafe(5 + lower.length)
    b[0] = BYTES
    b.writeUInt32LE(lower.length, 1)
    b.write(lower, 5, 'latin1')
    if (headerNameCache.size < CACHE_LIMIT) headerNameCache.set(name, b)
  }
  raw(w, b)
}

/** A str of latin-1 chars written as Python bytes (one byte per char). */
function latin1Bytes(w: Writer, s: string): void {
  const n = s.length
  w.ensure(5 + n)
  w.buf[w.pos++] = BYTES
  w.buf.writeUInt32LE(n, w.pos)
  w.pos += 4
  w.pos += w.buf.write(s, w.pos, n, 'latin1')
}

function tupleHead(w: Writer, n: number): void {
  w.ensure(2)
  w.buf[w.pos++] = SMALL_TUPLE
  w.buf[w.pos++] = n
}

function address(w: Writer, a: readonly [string, number | null] | null, constant = false): void {
  if (a === null) {
    w.byte(NONE)
    return
  }
  tupleHead(w, 2)
  if (constant) constStr(w, a[0])
  else w.str(a[0])
  if (a[1] === null) w.byte(NONE)
  else w.int(a[1])
}

function writeScope(w: Writer, s: AsgiScopeParts): void {
  raw(w, PREFIX[s.type])
  constPair(w, 'http_version', s.httpVersion)
  if (s.type === 'http') constPair(w, 'method', s.method)
  constPair(w, 'scheme', s.scheme)
  constStr(w, 'path')
  w.str(s.path)
  constStr(w, 'raw_path')
  latin1Bytes(w, s.rawPath)
  constStr(w, 'query_string')
  latin1Bytes(w, s.query)
  constPair(w, 'root_path', s.rootPath)
  constStr(w, 'headers')
  const h = s.rawHeaders
  const count = h.length >> 1
  if (count < 256) tupleHead(w, count)
  else {
    w.byte(0x28)
    w.u32(count)
  }
  for (let i = 0; i + 1 < h.length; i += 2) {
    tupleHead(w, 2)
    headerName(w, h[i]!)
    latin1Bytes(w, h[i + 1]!)
  }
  constStr(w, 'client')
  address(w, s.client)
  constStr(w, 'server')
  address(w, s.server, true)
  if (s.type === 'websocket') {
    constStr(w, 'subprotocols')
    const subs = s.subprotocols ?? []
    tupleHead(w, Math.min(subs.length, 255))
    for (const p of subs.slice(0, 255)) w.str(p)
    constStr(w, 'extensions')
    w.byte(DICT)
    constStr(w, 'websocket.http.response')
    w.byte(DICT)
    w.byte(NULL)
    w.byte(NULL)
  }
  w.byte(NULL)
}

/** ASGI_REQUEST: (8, id, scope, b'', more_body, response_window, request_window). */
export function encodeAsgiRequest(
  id: number,
  scope: AsgiScopeParts,
  moreBody: boolean,
  responseWindow: number,
  requestWindow: number,
): Buffer {
  const w = new Writer(1024)
  tupleHead(w, 7)
  w.int(FrameType.ASGI_REQUEST)
  w.int(id)
  writeScope(w, scope)
  latin1Bytes(w, '')
  w.byte(moreBody ? TRUE : FALSE)
  w.int(responseWindow)
  w.int(requestWindow)
  return w.finish()
}

/** WS_CONNECT: (16, id, scope). */
export function encodeWsConnect(id: number, scope: AsgiScopeParts): Buffer {
  const w = new Writer(1024)
  tupleHead(w, 3)
  w.int(FrameType.WS_CONNECT)
  w.int(id)
  writeScope(w, scope)
  return w.finish()
}
