/*
 * The ASGI scope of an HTTP request or WebSocket, written straight into its frame
 * (ASGI_REQUEST or WS_CONNECT) as marshal data: Python gets the dict from one
 * `marshal.loads` and only adds `state`.
 */
import { FrameType, Writer } from '../protocol/worker.js'

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

function address(w: Writer, a: readonly [string, number | null] | null): void {
  if (a === null) {
    w.byte(NONE)
    return
  }
  tupleHead(w, 2)
  w.str(a[0])
  if (a[1] === null) w.byte(NONE)
  else w.int(a[1])
}

function writeScope(w: Writer, s: AsgiScopeParts): void {
  w.byte(DICT)
  w.str('type')
  w.str(s.type)
  w.str('asgi')
  w.byte(DICT)
  w.str('version')
  w.str('3.0')
  w.str('spec_version')
  w.str(s.type === 'http' ? '2.3' : '2.4')
  w.byte(NULL)
  w.str('http_version')
  w.str(s.httpVersion)
  if (s.type === 'http') {
    w.str('method')
    w.str(s.method)
  }
  w.str('scheme')
  w.str(s.scheme)
  w.str('path')
  w.str(s.path)
  w.str('raw_path')
  latin1Bytes(w, s.rawPath)
  w.str('query_string')
  latin1Bytes(w, s.query)
  w.str('root_path')
  w.str(s.rootPath)
  w.str('headers')
  const h = s.rawHeaders
  const count = h.length >> 1
  if (count < 256) tupleHead(w, count)
  else {
    w.byte(0x28)
    w.u32(count)
  }
  for (let i = 0; i + 1 < h.length; i += 2) {
    tupleHead(w, 2)
    latin1Bytes(w, h[i]!.toLowerCase())
    latin1Bytes(w, h[i + 1]!)
  }
  w.str('client')
  address(w, s.client)
  w.str('server')
  address(w, s.server)
  if (s.type === 'websocket') {
    w.str('subprotocols')
    const subs = s.subprotocols ?? []
    tupleHead(w, Math.min(subs.length, 255))
    for (const p of subs.slice(0, 255)) w.str(p)
    w.str('extensions')
    w.byte(DICT)
    w.str('websocket.http.response')
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
