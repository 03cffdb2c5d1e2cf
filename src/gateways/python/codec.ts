/**
 * The Python bridge protocol (docs/python-bridge.md): frames between the Node front and a
 * Python worker over one Unix socket, both ways.
 *
 * A frame is `u32le length` then `length` bytes of Python `marshal` data: one tuple
 * `(type, id, ...fields)`. Python decodes a frame with one `marshal.loads` call (C code,
 * no per-field Python work) and gets the WSGI environ as a ready dict; Node writes the
 * marshal bytes directly. Python encodes its frames with `marshal.dumps`; the decoder here
 * reads what CPython's marshal writes for the value kinds frames use (None, bools, ints,
 * bytes, str, tuples, lists, dicts, and back-references).
 *
 * Pure: no sockets, no timers. The decoder is fed bytes split anywhere, holds at most one
 * frame's bytes (a larger declared frame is refused) and throws a ProtocolError of protocol
 * 'bridge' (codes: BridgeErrorCode) on anything it cannot read; it must not be fed again
 * after that. The connection (connection.ts) makes it a GH_ERR_WORKER_PROTOCOL.
 */
import { ProtocolError } from '../../core/errors.js'

export type BridgeErrorCode =
  /** Marshal bytes this reader cannot read (truncated, too deep, an unsupported type...). */
  | 'BRIDGE_BAD_MARSHAL'
  /** A value that marshal cannot carry as the bridge uses it (an integer that is not safe). */
  | 'BRIDGE_BAD_VALUE'
  /** A frame that is not the tuple its type calls for. */
  | 'BRIDGE_BAD_FRAME'
  | 'BRIDGE_UNKNOWN_FRAME'
  | 'BRIDGE_EMPTY_FRAME'
  | 'BRIDGE_FRAME_TOO_LARGE'
  /** The connection closed inside a frame. */
  | 'BRIDGE_TRUNCATED'

export const WORKER_PROTOCOL_VERSION = 1
export const FRAME_HEADER_BYTES = 4
/** Default largest frame accepted by the decoder (payload bytes). */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024

/** Frame types. Node -> Python are below 64, Python -> Node from 64. */
export const FrameType = {
  // Node -> Python
  /** (1, id, environ: dict, body: bytes, more_body: bool, response_window: int) */
  HTTP_REQUEST: 1,
  /** (2, id, body: bytes, more_body: bool) */
  HTTP_BODY: 2,
  /** (3, id): the client went away; the worker stops the app (close() runs) and answers FINISHED. */
  HTTP_DISCONNECT: 3,
  /** (4, id, bytes: int): the worker may send this many more response body bytes. */
  RESPONSE_CREDIT: 4,
  /**
   * (8, id, scope: dict, body: bytes, more_body: bool, response_window: int, request_window: int):
   * an ASGI HTTP request; `scope` is the ASGI scope but for `state` (headers a tuple of
   * (bytes, bytes) tuples); `request_window` is the body Node sends before being granted more.
   */
  ASGI_REQUEST: 8,
  /** (9, id): the request ran past its timeout: the worker logs its stack, cancels it, answers FINISHED. */
  CANCEL: 9,
  /** (16, id, scope: dict): websocket.connect (ASGI). */
  WS_CONNECT: 16,
  /** (17, id, bytes | None, text | None): websocket.receive. */
  WS_RECEIVE: 17,
  /** (18, id, code: int): websocket.disconnect. */
  WS_DISCONNECT: 18,
  /** (24, 0, state: dict): lifespan.startup. */
  LIFESPAN_STARTUP: 24,
  /** (25, 0): lifespan.shutdown. */
  LIFESPAN_SHUTDOWN: 25,

  // Python -> Node
  /** (64, 0, version, pid, request_window, capacity): first frame on every connection. */
  HELLO: 64,
  /** (65, id, status: int, reason: str, headers: tuple of (name, value), body: bytes, more_body: bool) */
  RESPONSE_START: 65,
  /** (66, id, body: bytes, more_body: bool) */
  RESPONSE_BODY: 66,
  /**
   * (67, id, path: str, offset: int, length: int, dev: int, ino: int, more_body: bool):
   * send `length` bytes of the file at `path` from `offset` (wsgi.file_wrapper); Node
   * checks that the file it opens is (dev, ino).
   */
  RESPONSE_FILE: 67,
  /** (68, id, bytes: int): Node may send this many more request body bytes (the app reads). */
  REQUEST_CREDIT: 68,
  /** (69, id, message: str): the app failed; the last frame of the request. */
  REQUEST_ERROR: 69,
  /** (70, id): the request is over on the worker's side after an HTTP_DISCONNECT. */
  FINISHED: 70,
  /** (71, 0): the worker's event loop is alive (ASGI, every 100 ms while it holds requests). */
  HEARTBEAT: 71,
  /** (72, id, links: tuple of str): ASGI http.response.early_hint, before RESPONSE_START (a 103). */
  EARLY_HINTS: 72,
  /** (80, id, subprotocol: str | None, headers: tuple): websocket.accept. */
  WS_ACCEPT: 80,
  /** (81, id, bytes | None, text | None): websocket.send. */
  WS_SEND: 81,
  /** (82, id, code: int, reason: str): websocket.close. */
  WS_CLOSE: 82,
  /** (88, 0, phase: 'startup' | 'shutdown', ok: bool, message: str): lifespan.*.complete/failed. */
  LIFESPAN_RESULT: 88,
} as const

export type Headers = readonly (readonly [string, string])[]

/** Frames Node sends. */
export type NodeFrame =
  | {
      type: typeof FrameType.HTTP_REQUEST
      id: number
      environ: Readonly<Record<string, string>>
      body: Buffer
      moreBody: boolean
      responseWindow: number
    }
  | { type: typeof FrameType.HTTP_BODY; id: number; body: Buffer; moreBody: boolean }
  | { type: typeof FrameType.HTTP_DISCONNECT; id: number }
  | { type: typeof FrameType.RESPONSE_CREDIT; id: number; bytes: number }
  | {
      type: typeof FrameType.ASGI_REQUEST
      id: number
      scope: Readonly<Record<string, MarshalValue>>
      body: Buffer
      moreBody: boolean
      responseWindow: number
      requestWindow: number
    }
  | { type: typeof FrameType.CANCEL; id: number }
  | { type: typeof FrameType.WS_CONNECT; id: number; scope: Readonly<Record<string, MarshalValue>> }
  | { type: typeof FrameType.WS_RECEIVE; id: number; bytes: Buffer | null; text: string | null }
  | { type: typeof FrameType.WS_DISCONNECT; id: number; code: number }
  | { type: typeof FrameType.LIFESPAN_STARTUP; id: 0; state: Readonly<Record<string, MarshalValue>> }
  | { type: typeof FrameType.LIFESPAN_SHUTDOWN; id: 0 }

/** Frames the worker sends. */
export type WorkerFrame =
  | {
      type: typeof FrameType.HELLO
      id: 0
      version: number
      pid: number
      requestWindow: number
      capacity: number
    }
  | {
      type: typeof FrameType.RESPONSE_START
      id: number
      status: number
      reason: string
      headers: Headers
      body: Buffer
      moreBody: boolean
    }
  | { type: typeof FrameType.RESPONSE_BODY; id: number; body: Buffer; moreBody: boolean }
  | {
      type: typeof FrameType.RESPONSE_FILE
      id: number
      path: string
      offset: number
      length: number
      dev: number
      ino: number
      moreBody: boolean
    }
  | { type: typeof FrameType.REQUEST_CREDIT; id: number; bytes: number }
  | { type: typeof FrameType.REQUEST_ERROR; id: number; message: string }
  /** `started` false: the worker dropped it without starting the app (it was taken back first). */
  | { type: typeof FrameType.FINISHED; id: number; started?: boolean }
  | { type: typeof FrameType.HEARTBEAT; id: number }
  | { type: typeof FrameType.EARLY_HINTS; id: number; links: readonly string[] }
  | { type: typeof FrameType.WS_ACCEPT; id: number; subprotocol: string | null; headers: Headers }
  | { type: typeof FrameType.WS_SEND; id: number; bytes: Buffer | null; text: string | null }
  | { type: typeof FrameType.WS_CLOSE; id: number; code: number; reason: string }
  | {
      type: typeof FrameType.LIFESPAN_RESULT
      id: 0
      phase: 'startup' | 'shutdown'
      ok: boolean
      message: string
    }

export type AnyFrame = NodeFrame | WorkerFrame

// ---------------------------------------------------------------------------------------
// marshal

/** What frames are made of. Arrays are tuples; plain objects are dicts with str keys. */
export type MarshalValue =
  | null
  | boolean
  | number
  | string
  | Buffer
  | readonly MarshalValue[]
  | { readonly [key: string]: MarshalValue }

const FLAG_REF = 0x80
/** Strings shorter than this are tried as ASCII in JS first (Writer.str). */
const SHORT_STR = 64
/** marshal's type codes (CPython's Python/marshal.c), for encoders of hot frames elsewhere too. */
export const MarshalType = {
  NULL: 0x30, // '0'
  NONE: 0x4e, // 'N'
  FALSE: 0x46, // 'F'
  TRUE: 0x54, // 'T'
  INT: 0x69, // 'i'
  LONG: 0x6c, // 'l'
  BYTES: 0x73, // 's'
  INTERNED: 0x74, // 't'
  UNICODE: 0x75, // 'u'
  ASCII: 0x61, // 'a'
  ASCII_INTERNED: 0x41, // 'A'
  SHORT_ASCII: 0x7a, // 'z'
  SHORT_ASCII_INTERNED: 0x5a, // 'Z'
  TUPLE: 0x28, // '('
  SMALL_TUPLE: 0x29, // ')'
  LIST: 0x5b, // '['
  DICT: 0x7b, // '{'
  REF: 0x72, // 'r'
} as const
const T = MarshalType

function protocolError(code: BridgeErrorCode, detail: string): ProtocolError {
  return new ProtocolError('bridge', code, detail)
}

/** Growable output buffer for one frame (exported for encoders of hot frames elsewhere). */
export class Writer {
  buf: Buffer
  pos = FRAME_HEADER_BYTES

  constructor(size = 512) {
    this.buf = Buffer.allocUnsafe(size)
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.pos + n) size *= 2
    const next = Buffer.allocUnsafe(size)
    this.buf.copy(next, 0, 0, this.pos)
    this.buf = next
  }

  byte(b: number): void {
    this.ensure(1)
    this.buf[this.pos++] = b
  }

  /** A type code and a u32 length or count, with room made for `room` bytes after them. */
  head32(type: number, n: number, room: number): void {
    this.ensure(5 + room)
    this.buf[this.pos++] = type
    this.buf.writeUInt32LE(n, this.pos)
    this.pos += 4
  }

  /** A type code and a one-byte length or count, with room made for `room` bytes after them. */
  head8(type: number, n: number, room: number): void {
    this.ensure(2 + room)
    this.buf[this.pos++] = type
    this.buf[this.pos++] = n
  }

  /** A tuple's head (its items follow): the short form below 256 items. */
  tuple(n: number): void {
    if (n < 256) this.head8(T.SMALL_TUPLE, n, 0)
    else this.head32(T.TUPLE, n, 0)
  }

  /** A frame's tuple head, its type and its id: `fields` counts them too. */
  frameHead(fields: number, type: number, id: number): void {
    this.head8(T.SMALL_TUPLE, fields, 0)
    this.int(type)
    this.int(id)
  }

  /** Bytes already encoded elsewhere (a cached piece of marshal data), as they are. */
  raw(b: Buffer): void {
    this.ensure(b.length)
    b.copy(this.buf, this.pos)
    this.pos += b.length
  }

  /** Python bytes with one byte per char of `s` (latin-1). */
  latin1Bytes(s: string): void {
    const n = s.length
    this.head32(T.BYTES, n, n)
    this.pos += this.buf.write(s, this.pos, n, 'latin1')
  }

  value(v: MarshalValue): void {
    if (v === null) this.byte(T.NONE)
    else if (v === true) this.byte(T.TRUE)
    else if (v === false) this.byte(T.FALSE)
    else if (typeof v === 'number') this.int(v)
    else if (typeof v === 'string') this.str(v)
    else if (Buffer.isBuffer(v)) {
      this.head32(T.BYTES, v.length, v.length)
      this.pos += v.copy(this.buf, this.pos)
    } else if (Array.isArray(v)) {
      const items = v as readonly MarshalValue[]
      this.tuple(items.length)
      for (const item of items) this.value(item)
    } else {
      this.byte(T.DICT)
      for (const key of Object.keys(v)) {
        this.str(key)
        this.value((v as Record<string, MarshalValue>)[key]!)
      }
      this.byte(T.NULL)
    }
  }

  int(n: number): void {
    if (!Number.isSafeInteger(n)) throw protocolError('BRIDGE_BAD_VALUE', `not a safe integer: ${n}`)
    if (n < -0x80000000 || n > 0x7fffffff) {
      // marshal's long: a signed count of 15-bit digits, least significant first.
      const digits: number[] = []
      for (let m = Math.abs(n); m > 0; m = Math.floor(m / 32768)) digits.push(m % 32768)
      this.ensure(5 + digits.length * 2)
      this.buf[this.pos++] = T.LONG
      this.buf.writeInt32LE(n < 0 ? -digits.length : digits.length, this.pos)
      this.pos += 4
      for (const d of digits) {
        this.buf.writeUInt16LE(d, this.pos)
        this.pos += 2
      }
      return
    }
    this.ensure(5)
    this.buf[this.pos++] = T.INT
    this.buf.writeInt32LE(n, this.pos)
    this.pos += 4
  }

  /** A Python str with the same code points as `s` (latin-1 native strings stay so). */
  str(s: string): void {
    const n = s.length
    if (n < SHORT_STR) {
      // Most environ keys and values: copied char by char in JS, which V8 does faster than
      // the two native calls below (byteLength, write) cost for so few bytes.
      this.ensure(2 + n)
      const buf = this.buf
      const at = this.pos + 2
      let i = 0
      for (; i < n; i++) {
        const c = s.charCodeAt(i)
        if (c > 0x7f) break
        buf[at + i] = c
      }
      if (i === n) {
        buf[this.pos] = T.SHORT_ASCII
        buf[this.pos + 1] = n
        this.pos = at + n
        return
      }
    }
    const bytes = Buffer.byteLength(s, 'utf8')
    if (bytes === s.length) {
      // ASCII: the forms Python decodes fastest.
      if (bytes < 256) this.head8(T.SHORT_ASCII, bytes, bytes)
      else this.head32(T.ASCII, bytes, bytes)
      this.pos += this.buf.write(s, this.pos, bytes, 'latin1')
    } else {
      this.head32(T.UNICODE, bytes, bytes)
      this.pos += this.buf.write(s, this.pos, bytes, 'utf8')
    }
  }

  /** The frame: length prefix filled in. */
  finish(): Buffer {
    this.buf.writeUInt32LE(this.pos - FRAME_HEADER_BYTES, 0)
    return this.buf.subarray(0, this.pos)
  }
}

/** Encode a value as one marshal object (no frame header). */
export function marshalDumps(value: MarshalValue): Buffer {
  const w = new Writer()
  w.value(value)
  return w.buf.subarray(FRAME_HEADER_BYTES, w.pos)
}

class Reader {
  pos = 0
  private readonly refs: MarshalValue[] = []

  constructor(private readonly buf: Buffer) {}

  need(n: number): void {
    if (this.pos + n > this.buf.length)
      throw protocolError('BRIDGE_BAD_MARSHAL', 'marshal data ends inside a value')
  }

  u8(): number {
    this.need(1)
    return this.buf[this.pos++]!
  }

  u32(): number {
    this.need(4)
    const n = this.buf.readUInt32LE(this.pos)
    this.pos += 4
    return n
  }

  i32(): number {
    this.need(4)
    const n = this.buf.readInt32LE(this.pos)
    this.pos += 4
    return n
  }

  /** The next `n` bytes: where they start (checked to be there, then passed). */
  take(n: number): number {
    this.need(n)
    const start = this.pos
    this.pos += n
    return start
  }

  text(n: number, encoding: 'utf8' | 'latin1'): string {
    const start = this.take(n)
    return this.buf.toString(encoding, start, start + n)
  }

  value(depth = 0): MarshalValue {
    if (depth > 32) throw protocolError('BRIDGE_BAD_MARSHAL', 'marshal data nested too deep')
    this.need(1)
    const code = this.buf[this.pos++]!
    const flag = (code & FLAG_REF) !== 0
    const type = code & ~FLAG_REF
    let slot = -1
    if (flag) {
      slot = this.refs.length
      this.refs.push(null)
    }
    const v = this.plain(type, depth)
    if (flag) this.refs[slot] = v
    return v
  }

  private plain(type: number, depth: number): MarshalValue {
    switch (type) {
      case T.NONE:
        return null
      case T.TRUE:
        return true
      case T.FALSE:
        return false
      case T.INT:
        return this.i32()
      case T.LONG: {
        const digits = this.i32()
        const count = Math.abs(digits)
        if (count > 4) throw protocolError('BRIDGE_BAD_MARSHAL', 'integer too large')
        const start = this.take(count * 2)
        let n = 0
        for (let i = count - 1; i >= 0; i--) n = n * 32768 + this.buf.readUInt16LE(start + i * 2)
        if (!Number.isSafeInteger(n)) throw protocolError('BRIDGE_BAD_MARSHAL', 'integer too large')
        return digits < 0 ? -n : n
      }
      case T.BYTES: {
        const n = this.u32()
        const start = this.take(n)
        return this.buf.subarray(start, start + n)
      }
      case T.UNICODE:
      case T.INTERNED:
        return this.text(this.u32(), 'utf8')
      case T.ASCII:
      case T.ASCII_INTERNED:
        return this.text(this.u32(), 'latin1')
      case T.SHORT_ASCII:
      case T.SHORT_ASCII_INTERNED:
        return this.text(this.u8(), 'latin1')
      case T.TUPLE:
      case T.SMALL_TUPLE:
      case T.LIST: {
        const n = type === T.SMALL_TUPLE ? this.u8() : this.u32()
        // Every item takes at least one byte: a count beyond what is left is a lie.
        if (n > this.buf.length - this.pos)
          throw protocolError('BRIDGE_BAD_MARSHAL', 'tuple longer than its frame')
        const items: MarshalValue[] = new Array<MarshalValue>(n)
        for (let i = 0; i < n; i++) items[i] = this.value(depth + 1)
        return items
      }
      case T.DICT: {
        const out: Record<string, MarshalValue> = Object.create(null) as Record<string, MarshalValue>
        for (;;) {
          this.need(1)
          if (this.buf[this.pos] === T.NULL) {
            this.pos++
            return out
          }
          const key = this.value(depth + 1)
          if (typeof key !== 'string') throw protocolError('BRIDGE_BAD_MARSHAL', 'dict key is not a str')
          out[key] = this.value(depth + 1)
        }
      }
      case T.REF: {
        const i = this.u32()
        if (i >= this.refs.length)
          throw protocolError('BRIDGE_BAD_MARSHAL', 'marshal back-reference to nothing')
        return this.refs[i]!
      }
      default:
        throw protocolError('BRIDGE_BAD_MARSHAL', `unsupported marshal type 0x${type.toString(16)}`)
    }
  }
}

/** Decode one marshal object that fills `buf` exactly. */
export function marshalLoads(buf: Buffer): MarshalValue {
  const r = new Reader(buf)
  const v = r.value()
  if (r.pos !== buf.length) throw protocolError('BRIDGE_BAD_MARSHAL', 'bytes after the marshal value')
  return v
}

// ---------------------------------------------------------------------------------------
// frames

function tupleOf(frame: AnyFrame): MarshalValue[] {
  switch (frame.type) {
    case FrameType.HTTP_REQUEST:
      return [frame.type, frame.id, frame.environ, frame.body, frame.moreBody, frame.responseWindow]
    case FrameType.HTTP_BODY:
    case FrameType.RESPONSE_BODY:
      return [frame.type, frame.id, frame.body, frame.moreBody]
    case FrameType.FINISHED:
      return frame.started === undefined ? [frame.type, frame.id] : [frame.type, frame.id, frame.started]
    case FrameType.HTTP_DISCONNECT:
    case FrameType.HEARTBEAT:
    case FrameType.LIFESPAN_SHUTDOWN:
    case FrameType.CANCEL:
      return [frame.type, frame.id]
    case FrameType.ASGI_REQUEST:
      return [
        frame.type,
        frame.id,
        frame.scope,
        frame.body,
        frame.moreBody,
        frame.responseWindow,
        frame.requestWindow,
      ]
    case FrameType.RESPONSE_CREDIT:
    case FrameType.REQUEST_CREDIT:
      return [frame.type, frame.id, frame.bytes]
    case FrameType.WS_CONNECT:
      return [frame.type, frame.id, frame.scope]
    case FrameType.WS_RECEIVE:
    case FrameType.WS_SEND:
      return [frame.type, frame.id, frame.bytes, frame.text]
    case FrameType.WS_DISCONNECT:
      return [frame.type, frame.id, frame.code]
    case FrameType.LIFESPAN_STARTUP:
      return [frame.type, frame.id, frame.state]
    case FrameType.HELLO:
      return [frame.type, frame.id, frame.version, frame.pid, frame.requestWindow, frame.capacity]
    case FrameType.RESPONSE_START:
      return [
        frame.type,
        frame.id,
        frame.status,
        frame.reason,
        frame.headers as MarshalValue,
        frame.body,
        frame.moreBody,
      ]
    case FrameType.RESPONSE_FILE:
      return [
        frame.type,
        frame.id,
        frame.path,
        frame.offset,
        frame.length,
        frame.dev,
        frame.ino,
        frame.moreBody,
      ]
    case FrameType.REQUEST_ERROR:
      return [frame.type, frame.id, frame.message]
    case FrameType.EARLY_HINTS:
      return [frame.type, frame.id, frame.links as MarshalValue]
    case FrameType.WS_ACCEPT:
      return [frame.type, frame.id, frame.subprotocol, frame.headers as MarshalValue]
    case FrameType.WS_CLOSE:
      return [frame.type, frame.id, frame.code, frame.reason]
    case FrameType.LIFESPAN_RESULT:
      return [frame.type, frame.id, frame.phase, frame.ok, frame.message]
  }
}

/** One frame, length prefix included, ready to write. */
export function encodeFrame(frame: AnyFrame): Buffer {
  const w = new Writer(frame.type === FrameType.HTTP_REQUEST ? 1024 + frame.body.length : 64)
  w.value(tupleOf(frame))
  return w.finish()
}

/**
 * The HTTP_REQUEST frame, written straight from the environ (the hot path: no
 * intermediate object).
 */
export function encodeHttpRequest(
  id: number,
  environ: Readonly<Record<string, string>>,
  body: Buffer,
  moreBody: boolean,
  responseWindow: number,
): Buffer {
  const w = new Writer(1024 + body.length)
  w.frameHead(6, FrameType.HTTP_REQUEST, id)
  w.byte(T.DICT)
  for (const key in environ) {
    w.str(key)
    w.str(environ[key]!)
  }
  w.byte(T.NULL)
  w.value(body)
  w.value(moreBody)
  w.int(responseWindow)
  return w.finish()
}

const isInt = (v: MarshalValue): v is number => typeof v === 'number'
const isStr = (v: MarshalValue): v is string => typeof v === 'string'
const isBool = (v: MarshalValue): v is boolean => typeof v === 'boolean'
const isBytes = (v: MarshalValue): v is Buffer => Buffer.isBuffer(v)
const isDict = (v: MarshalValue): v is Record<string, MarshalValue> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) && !Buffer.isBuffer(v)

function headersOf(v: MarshalValue): Headers {
  if (!Array.isArray(v)) throw protocolError('BRIDGE_BAD_FRAME', 'headers are not a sequence')
  const out: [string, string][] = []
  for (const pair of v as readonly MarshalValue[]) {
    const p = pair as readonly MarshalValue[]
    if (!Array.isArray(p) || p.length !== 2 || typeof p[0] !== 'string' || typeof p[1] !== 'string')
      throw protocolError('BRIDGE_BAD_FRAME', 'a header is not a (name, value) pair of str')
    out.push([p[0], p[1]])
  }
  return out
}

/** Shape check of a decoded tuple into a typed frame. */
export function frameFromTuple(t: MarshalValue): AnyFrame {
  if (!Array.isArray(t) || t.length < 2)
    throw protocolError('BRIDGE_BAD_FRAME', 'a frame is a tuple (type, id, ...)')
  const f = t as readonly MarshalValue[]
  const type = f[0]!
  const id = f[1]!
  if (!isInt(type) || !isInt(id) || id < 0)
    throw protocolError('BRIDGE_BAD_FRAME', 'frame type and id are ints')
  const want = (n: number, ok: boolean) => {
    if (f.length !== n || !ok) throw protocolError('BRIDGE_BAD_FRAME', `malformed frame of type ${type}`)
  }
  switch (type) {
    case FrameType.HTTP_REQUEST:
      want(6, isDict(f[2]!) && isBytes(f[3]!) && isBool(f[4]!) && isInt(f[5]!))
      for (const v of Object.values(f[2] as Record<string, MarshalValue>))
        if (!isStr(v)) throw protocolError('BRIDGE_BAD_FRAME', 'environ values are str')
      return {
        type,
        id,
        environ: f[2] as Record<string, string>,
        body: f[3] as Buffer,
        moreBody: f[4] as boolean,
        responseWindow: f[5] as number,
      }
    case FrameType.HTTP_BODY:
    case FrameType.RESPONSE_BODY:
      want(4, isBytes(f[2]!) && isBool(f[3]!))
      return { type, id, body: f[2] as Buffer, moreBody: f[3] as boolean }
    case FrameType.FINISHED:
      if (f.length === 3) {
        want(3, isBool(f[2]!))
        return { type, id, started: f[2] as boolean }
      }
      want(2, true)
      return { type, id }
    case FrameType.HTTP_DISCONNECT:
    case FrameType.HEARTBEAT:
    case FrameType.CANCEL:
      want(2, true)
      return { type, id }
    case FrameType.ASGI_REQUEST:
      want(7, isDict(f[2]!) && isBytes(f[3]!) && isBool(f[4]!) && isInt(f[5]!) && isInt(f[6]!))
      return {
        type,
        id,
        scope: f[2] as Record<string, MarshalValue>,
        body: f[3] as Buffer,
        moreBody: f[4] as boolean,
        responseWindow: f[5] as number,
        requestWindow: f[6] as number,
      }
    case FrameType.LIFESPAN_SHUTDOWN:
      want(2, id === 0)
      return { type, id: 0 }
    case FrameType.RESPONSE_CREDIT:
    case FrameType.REQUEST_CREDIT:
      want(3, isInt(f[2]!) && (f[2] as number) >= 0)
      return { type, id, bytes: f[2] as number }
    case FrameType.WS_CONNECT:
      want(3, isDict(f[2]!))
      return { type, id, scope: f[2] as Record<string, MarshalValue> }
    case FrameType.WS_RECEIVE:
    case FrameType.WS_SEND:
      want(4, (f[2] === null || isBytes(f[2]!)) && (f[3] === null || isStr(f[3]!)))
      return { type, id, bytes: f[2] as Buffer | null, text: f[3] as string | null }
    case FrameType.WS_DISCONNECT:
      want(3, isInt(f[2]!))
      return { type, id, code: f[2] as number }
    case FrameType.LIFESPAN_STARTUP:
      want(3, id === 0 && isDict(f[2]!))
      return { type, id: 0, state: f[2] as Record<string, MarshalValue> }
    case FrameType.HELLO:
      want(6, id === 0 && isInt(f[2]!) && isInt(f[3]!) && isInt(f[4]!) && isInt(f[5]!))
      return {
        type,
        id: 0,
        version: f[2] as number,
        pid: f[3] as number,
        requestWindow: f[4] as number,
        capacity: f[5] as number,
      }
    case FrameType.RESPONSE_START:
      want(7, isInt(f[2]!) && isStr(f[3]!) && isBytes(f[5]!) && isBool(f[6]!))
      return {
        type,
        id,
        status: f[2] as number,
        reason: f[3] as string,
        headers: headersOf(f[4]!),
        body: f[5] as Buffer,
        moreBody: f[6] as boolean,
      }
    case FrameType.RESPONSE_FILE:
      want(8, isStr(f[2]!) && isInt(f[3]!) && isInt(f[4]!) && isInt(f[5]!) && isInt(f[6]!) && isBool(f[7]!))
      if ((f[3] as number) < 0 || (f[4] as number) < 0)
        throw protocolError('BRIDGE_BAD_FRAME', 'negative file range')
      return {
        type,
        id,
        path: f[2] as string,
        offset: f[3] as number,
        length: f[4] as number,
        dev: f[5] as number,
        ino: f[6] as number,
        moreBody: f[7] as boolean,
      }
    case FrameType.REQUEST_ERROR:
      want(3, isStr(f[2]!))
      return { type, id, message: f[2] as string }
    case FrameType.EARLY_HINTS:
      want(3, Array.isArray(f[2]) && (f[2] as readonly MarshalValue[]).every(isStr))
      return { type, id, links: f[2] as readonly string[] }
    case FrameType.WS_ACCEPT:
      want(4, f[2] === null || isStr(f[2]!))
      return { type, id, subprotocol: f[2] as string | null, headers: headersOf(f[3]!) }
    case FrameType.WS_CLOSE:
      want(4, isInt(f[2]!) && isStr(f[3]!))
      return { type, id, code: f[2] as number, reason: f[3] as string }
    case FrameType.LIFESPAN_RESULT:
      want(5, id === 0 && (f[2] === 'startup' || f[2] === 'shutdown') && isBool(f[3]!) && isStr(f[4]!))
      return {
        type,
        id: 0,
        phase: f[2] as 'startup' | 'shutdown',
        ok: f[3] as boolean,
        message: f[4] as string,
      }
    default:
      throw protocolError('BRIDGE_UNKNOWN_FRAME', `unknown frame type ${type}`)
  }
}

export interface FrameDecoderOptions {
  /** Largest frame payload accepted (default 4 MiB): a longer declared length is an error. */
  maxFrameBytes?: number
}

/**
 * Incremental frame decoder. Buffers at most one frame (plus its 4-byte prefix); frames
 * that arrive whole inside one chunk are decoded in place (bytes fields are views of the
 * chunk, not copies).
 */
export class FrameDecoder {
  private readonly maxFrameBytes: number
  private pending: Buffer[] = []
  private pendingBytes = 0
  /** Payload length of the frame being gathered, -1 while its prefix is incomplete. */
  private need = -1

  constructor(options: FrameDecoderOptions = {}) {
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES
  }

  /** Bytes held for a frame not yet complete. */
  get buffered(): number {
    return this.pendingBytes
  }

  push(chunk: Buffer): AnyFrame[] {
    const out: AnyFrame[] = []
    let data = chunk
    // Complete a frame in progress first, copying only its own bytes.
    while (this.pendingBytes > 0 && data.length > 0) {
      const target = this.need < 0 ? FRAME_HEADER_BYTES : FRAME_HEADER_BYTES + this.need
      const take = Math.min(target - this.pendingBytes, data.length)
      this.pending.push(data.subarray(0, take))
      this.pendingBytes += take
      data = data.subarray(take)
      if (this.pendingBytes < target) break
      const whole = Buffer.concat(this.pending, this.pendingBytes)
      if (this.need < 0) {
        this.need = this.lengthOf(whole, 0)
        this.pending = [whole]
        continue
      }
      this.pending = []
      this.pendingBytes = 0
      this.need = -1
      out.push(frameFromTuple(marshalLoads(whole.subarray(FRAME_HEADER_BYTES))))
    }
    if (this.pendingBytes > 0) return out
    // Whole frames inside the chunk are decoded in place.
    let pos = 0
    while (data.length - pos >= FRAME_HEADER_BYTES) {
      const n = this.lengthOf(data, pos)
      if (data.length - pos - FRAME_HEADER_BYTES < n) break
      const start = pos + FRAME_HEADER_BYTES
      out.push(frameFromTuple(marshalLoads(data.subarray(start, start + n))))
      pos = start + n
    }
    if (pos < data.length) {
      const rest = data.subarray(pos)
      this.pending = [rest]
      this.pendingBytes = rest.length
      this.need = rest.length >= FRAME_HEADER_BYTES ? this.lengthOf(rest, 0) : -1
    }
    return out
  }

  private lengthOf(buf: Buffer, at: number): number {
    const n = buf.readUInt32LE(at)
    if (n === 0) throw protocolError('BRIDGE_EMPTY_FRAME', 'empty frame')
    if (n > this.maxFrameBytes)
      throw protocolError('BRIDGE_FRAME_TOO_LARGE', `frame of ${n} bytes > ${this.maxFrameBytes}`)
    return n
  }

  /** The peer closed: an error when a frame was cut short. */
  finish(): void {
    if (this.pendingBytes > 0)
      throw protocolError(
        'BRIDGE_TRUNCATED',
        `connection closed inside a frame (${this.pendingBytes} bytes held)`,
      )
  }
}
