/*
 * The ASGI scope of an HTTP request or WebSocket, written straight into its frame
 * (ASGI_REQUEST or WS_CONNECT) as marshal data: Python gets the dict from one
 * `marshal.loads` and only adds `state`.
 */
import { FrameType, MarshalType, Writer } from './codec.js'

const { BYTES, DICT, NULL, NONE, TRUE, FALSE } = MarshalType

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
  /** The connection's TLS facts, when it is TLS itself: the scope's `tls` extension. */
  tls?: AsgiTls
}

/** The ASGI TLS extension's numbers: tls_version (0x0303 for TLS 1.2) and cipher_suite (IANA's). */
export interface AsgiTls {
  version: number | null
  cipherSuite: number | null
}

const TLS_VERSIONS: Readonly<Record<string, number>> = { 'TLSv1.2': 0x0303, 'TLSv1.3': 0x0304 }

/**
 * IANA's numbers of the suites the TLS defaults allow (src/core/tls.ts): Node names a
 * suite but does not number it. A suite outside these (a `ciphers` setting) is None.
 */
const CIPHER_SUITES: Readonly<Record<string, number>> = {
  TLS_AES_128_GCM_SHA256: 0x1301,
  TLS_AES_256_GCM_SHA384: 0x1302,
  TLS_CHACHA20_POLY1305_SHA256: 0x1303,
  TLS_DHE_RSA_WITH_AES_128_GCM_SHA256: 0x009e,
  TLS_DHE_RSA_WITH_AES_256_GCM_SHA384: 0x009f,
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: 0xc02b,
  TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: 0xc02c,
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: 0xc02f,
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: 0xc030,
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: 0xcca8,
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: 0xcca9,
  TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256: 0xccaa,
}

/** The TLS extension's numbers for a TLS socket's protocol and suite. */
export function asgiTls(protocol: string | null, standardName: string | undefined): AsgiTls {
  return {
    version: (protocol && TLS_VERSIONS[protocol]) || null,
    cipherSuite: (standardName && CIPHER_SUITES[standardName]) || null,
  }
}

function nullableInt(w: Writer, value: number | null): void {
  if (value === null) w.byte(NONE)
  else w.int(value)
}

/** `tls`: the ASGI TLS extension's dict (no certificates: server_cert and the client's are None). */
function writeTls(w: Writer, tls: AsgiTls): void {
  constStr(w, 'tls')
  w.byte(DICT)
  constStr(w, 'server_cert')
  w.byte(NONE)
  constStr(w, 'client_cert_chain')
  w.tuple(0)
  constStr(w, 'client_cert_name')
  w.byte(NONE)
  constStr(w, 'client_cert_error')
  w.byte(NONE)
  constStr(w, 'tls_version')
  nullableInt(w, tls.version)
  constStr(w, 'cipher_suite')
  nullableInt(w, tls.cipherSuite)
  w.byte(NULL)
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

/** A str likely to repeat (a key, a method, a scheme), from the cache. */
function constStr(w: Writer, s: string): void {
  let b = strCache.get(s)
  if (!b) {
    b = encodeStr(s)
    if (strCache.size < CACHE_LIMIT) strCache.set(s, b)
  }
  w.raw(b)
}

/** A constant key followed by a str value likely to repeat, as one cached piece. */
function constPair(w: Writer, key: string, value: string): void {
  const k = `${key}\0${value}`
  let b = strCache.get(k)
  if (!b) {
    b = Buffer.concat([encodeStr(key), encodeStr(value)])
    if (strCache.size < CACHE_LIMIT) strCache.set(k, b)
  }
  w.raw(b)
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
  w.raw(b)
}

function address(w: Writer, a: readonly [string, number | null] | null, constant = false): void {
  if (a === null) {
    w.byte(NONE)
    return
  }
  w.tuple(2)
  if (constant) constStr(w, a[0])
  else w.str(a[0])
  if (a[1] === null) w.byte(NONE)
  else w.int(a[1])
}

function writeScope(w: Writer, s: AsgiScopeParts): void {
  w.raw(PREFIX[s.type])
  constPair(w, 'http_version', s.httpVersion)
  if (s.type === 'http') constPair(w, 'method', s.method)
  constPair(w, 'scheme', s.scheme)
  constStr(w, 'path')
  w.str(s.path)
  constStr(w, 'raw_path')
  w.latin1Bytes(s.rawPath)
  constStr(w, 'query_string')
  w.latin1Bytes(s.query)
  constPair(w, 'root_path', s.rootPath)
  constStr(w, 'headers')
  const h = s.rawHeaders
  const count = h.length >> 1
  w.tuple(count)
  for (let i = 0; i + 1 < h.length; i += 2) {
    w.tuple(2)
    headerName(w, h[i]!)
    w.latin1Bytes(h[i + 1]!)
  }
  constStr(w, 'client')
  address(w, s.client)
  constStr(w, 'server')
  address(w, s.server, true)
  // Python moves it into the scope's `extensions`.
  if (s.tls) writeTls(w, s.tls)
  if (s.type === 'websocket') {
    constStr(w, 'subprotocols')
    const subs = s.subprotocols ?? []
    w.tuple(Math.min(subs.length, 255))
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
  w.frameHead(7, FrameType.ASGI_REQUEST, id)
  writeScope(w, scope)
  w.latin1Bytes('')
  w.byte(moreBody ? TRUE : FALSE)
  w.int(responseWindow)
  w.int(requestWindow)
  return w.finish()
}

/** WS_CONNECT: (16, id, scope). */
export function encodeWsConnect(id: number, scope: AsgiScopeParts): Buffer {
  const w = new Writer(1024)
  w.frameHead(3, FrameType.WS_CONNECT, id)
  writeScope(w, scope)
  return w.finish()
}
