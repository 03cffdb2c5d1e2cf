/*
 * HTTP/2 frames written by hand (RFC 9113 4.1), for tests that send what no well-behaved
 * client would: the rapid-reset and CONTINUATION floods. Written here because every HTTP/2
 * client library refuses to produce these sequences. A header block is HPACK without the
 * dynamic table: static-table indexes and literals without indexing (RFC 7541 6.1, 6.2.2).
 */
import { connect as tcpConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, GOAWAY: 7, CONTINUATION: 9 } as const
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const

export function frame(
  type: number,
  flags: number,
  stream: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const head = Buffer.alloc(9)
  head.writeUIntBE(payload.length, 0, 3)
  head[3] = type
  head[4] = flags
  head.writeUInt32BE(stream & 0x7fffffff, 5)
  return Buffer.concat([head, payload])
}

/** A literal header field without indexing, new name (RFC 7541 6.2.2); names and values under 127 bytes. */
export function literal(name: string, value: string): Buffer {
  const n = Buffer.from(name, 'latin1')
  const v = Buffer.from(value, 'latin1')
  return Buffer.concat([Buffer.from([0x00, n.length]), n, Buffer.from([v.length]), v])
}

/** `GET <path>` for `authority`: :method GET (static 2), :scheme (6 http, 7 https), :path literal, :authority literal. */
export function getBlock(authority: string, path = '/', https = false): Buffer {
  const a = Buffer.from(authority, 'latin1')
  const p = Buffer.from(path, 'latin1')
  return Buffer.concat([
    Buffer.from([0x82, https ? 0x87 : 0x86]),
    Buffer.from([0x04, p.length]),
    p,
    Buffer.from([0x01, a.length]),
    a,
  ])
}

export function rstStream(stream: number, code = 8 /* CANCEL */): Buffer {
  const payload = Buffer.alloc(4)
  payload.writeUInt32BE(code)
  return frame(FRAME.RST_STREAM, 0, stream, payload)
}

export interface ParsedFrame {
  type: number
  flags: number
  stream: number
  payload: Buffer
}

/**
 * A connection speaking raw frames: the preface and an empty SETTINGS are sent on connect;
 * `frames` collects what the server sends; `closed` resolves when the server ends it.
 */
export interface RawH2 {
  socket: Socket
  frames: ParsedFrame[]
  closed: Promise<void>
  /** The first GOAWAY's error code, once one came. */
  goaway(): number | undefined
}

export function rawH2(port: number, options: { tls?: boolean } = {}): Promise<RawH2> {
  return new Promise((resolve, reject) => {
    const socket: Socket = options.tls
      ? tlsConnect({
          host: '127.0.0.1',
          port,
          ALPNProtocols: ['h2'],
          rejectUnauthorized: false,
          servername: 'localhost',
        })
      : tcpConnect(port, '127.0.0.1')
    const frames: ParsedFrame[] = []
    let buffered = Buffer.alloc(0)
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk])
      while (buffered.length >= 9) {
        const length = buffered.readUIntBE(0, 3)
        if (buffered.length < 9 + length) break
        frames.push({
          type: buffered[3]!,
          flags: buffered[4]!,
          stream: buffered.readUInt32BE(5) & 0x7fffffff,
          payload: buffered.subarray(9, 9 + length),
        })
        buffered = buffered.subarray(9 + length)
      }
    })
    const closed = new Promise<void>((done) => socket.once('close', () => done()))
    socket.on('error', () => {})
    socket.once(options.tls ? 'secureConnect' : 'connect', () => {
      socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]))
      resolve({
        socket,
        frames,
        closed,
        goaway: () => frames.find((f) => f.type === FRAME.GOAWAY)?.payload.readUInt32BE(4),
      })
    })
    socket.once('error', reject)
  })
}

/** The server's SETTINGS (the first SETTINGS frame without ACK) as id -> value. */
export function serverSettings(frames: readonly ParsedFrame[]): Map<number, number> {
  const settings = new Map<number, number>()
  const f = frames.find((x) => x.type === FRAME.SETTINGS && (x.flags & FLAG.ACK) === 0)
  for (let i = 0; f && i + 6 <= f.payload.length; i += 6)
    settings.set(f.payload.readUInt16BE(i), f.payload.readUInt32BE(i + 2))
  return settings
}
