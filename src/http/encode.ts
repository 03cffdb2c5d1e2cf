/*
 * Compression on the fly (nginx `gzip`, Caddy `encode`): a response leaves gzip-, brotli- or
 * zstd-coded when the client accepts it (Accept-Encoding, RFC 9110 12.5.3, negotiated with
 * `negotiator`), its type is compressible and it is not smaller than `min_length`.
 *
 * It works on the ServerResponse itself, before the handler runs, so that every action is
 * covered the same way (static, return, CGI, FastCGI/PHP, uwsgi, WSGI, ASGI, status pages)
 * however it writes: writeHead with a flat list, setHeader then write, pipeline(), the
 * response buffer. Hand-written rather than the `compression` middleware because that one
 * reads headers only through setHeader (our gateways hand writeHead a flat list, which it
 * does not see), sends 206 coded, keeps a strong ETag, has no per-write flush (a streamed
 * ASGI response would wait for the coder's buffer to fill) and no zstd.
 *
 * Never coded: 1xx, 204, 304, 206 (or any Content-Range), HEAD, a response that already has
 * a Content-Encoding, `Cache-Control: no-transform` (RFC 9111 5.2.2.6), a type not in
 * `types`, a Content-Length below `min_length`. When coded: Content-Length and Accept-Ranges
 * go (the body is chunked; ranges would refer to the coded bytes), the ETag is made weak
 * (nginx: the coded bytes are not the identity's), and every write is flushed through the
 * coder (Z_SYNC_FLUSH, as Caddy does; nginx waits for its buffers), so a streamed body
 * reaches the client as the app sends it. `Vary: Accept-Encoding` is added (merged into
 * an existing Vary) to every response the client's Accept-Encoding decided.
 */
import type { IncomingMessage, OutgoingHttpHeader, ServerResponse } from 'node:http'
import type { Transform } from 'node:stream'
import * as zlib from 'node:zlib'
import Negotiator from 'negotiator'
import type { EncodeConfig } from '../core/schema/encode.js'

/**
 * Types coded when `types` is not given: nginx's gzip_types default (text/html) widened to
 * what Caddy and CDNs code: text, JSON, JavaScript, XML and its dialects (SVG, Atom, RSS,
 * XHTML), WebAssembly, uncompressed font formats and icons. Already-compressed formats
 * (PNG, JPEG, WebP, WOFF2, zip, video) are left out: coding them again only costs CPU.
 */
export const DEFAULT_ENCODE_TYPES: readonly string[] = [
  'text/*',
  'application/json',
  'application/*+json',
  'application/x-ndjson',
  'application/javascript',
  'application/x-javascript',
  'application/ecmascript',
  'application/xml',
  'application/*+xml',
  'image/svg+xml',
  'application/wasm',
  'application/x-font-ttf',
  'application/vnd.ms-fontobject',
  'font/ttf',
  'font/otf',
  'image/x-icon',
  'image/vnd.microsoft.icon',
  'image/bmp',
]

/** Below this many bytes a response is sent as it is (Caddy's minimum_length is 512, express's 1 KiB). */
export const DEFAULT_MIN_LENGTH = 1024

/** zstd is in node:zlib from Node 22.15 / 23.8; on Node 20 it is simply not offered. */
const zstd = zlib as unknown as {
  createZstdCompress?: (options: object) => Transform
  constants: Record<string, number>
}
export const ZSTD_AVAILABLE = typeof zstd.createZstdCompress === 'function'

/** A coding Gatehouse can apply, by its Accept-Encoding token. */
type Coding = 'zstd' | 'br' | 'gzip'

export interface EncodeSettings {
  /** What is offered, in the server's order of preference (a tie in q-values goes to the first). */
  codings: readonly Coding[]
  minLength: number
  types: (type: string) => boolean
  levels: Readonly<Record<Coding, number>>
}

/** `text/*`, `application/*+json` -> one regular expression over `type/subtype`. */
function typeMatcher(patterns: readonly string[]): (type: string) => boolean {
  const alternatives = patterns.map((p) =>
    p
      .split('*')
      .map((s) => s.replace(/[.+^$|\\()[\]{}?]/g, '\\$&'))
      .join('[^/]*'),
  )
  const re = new RegExp(`^(?:${alternatives.join('|')})$`)
  return (type) => re.test(type)
}

/**
 * The settings a route encodes with, or null when it does not: the route's own `encode`
 * over the server-wide one (`route` false or both absent: off, as in Caddy, where nothing
 * is coded unless `encode` is configured).
 */
export function encodeSettings(
  server: EncodeConfig | undefined,
  route: EncodeConfig | undefined,
): EncodeSettings | null {
  if (route === false || (route === undefined && (server === undefined || server === false))) return null
  const table = { ...(typeof server === 'object' ? server : {}), ...(typeof route === 'object' ? route : {}) }
  const codings: Coding[] = []
  if (table.zstd !== false && ZSTD_AVAILABLE) codings.push('zstd')
  if (table.br !== false) codings.push('br')
  if (table.gzip !== false) codings.push('gzip')
  if (codings.length === 0) return null
  return {
    codings,
    minLength: table.min_length ?? DEFAULT_MIN_LENGTH,
    types: typeMatcher(table.types ?? DEFAULT_ENCODE_TYPES),
    // gzip 5 as Caddy; brotli 4 and zstd 3: the levels at which on-the-fly coding costs
    // about what gzip does (brotli's default, 11, is for precompressing).
    levels: { gzip: table.gzip_level ?? 5, br: table.br_level ?? 4, zstd: table.zstd_level ?? 3 },
  }
}

function createCoder(coding: Coding, settings: EncodeSettings, length: number | undefined): Transform {
  const level = settings.levels[coding]
  switch (coding) {
    case 'gzip':
      return zlib.createGzip({ level, flush: zlib.constants.Z_SYNC_FLUSH })
    case 'br':
      return zlib.createBrotliCompress({
        flush: zlib.constants.BROTLI_OPERATION_FLUSH,
        params: {
          [zlib.constants.BROTLI_PARAM_QUALITY]: level,
          ...(length !== undefined ? { [zlib.constants.BROTLI_PARAM_SIZE_HINT]: length } : {}),
        },
      })
    case 'zstd':
      return zstd.createZstdCompress!({
        flush: zstd.constants.ZSTD_e_flush,
        params: { [zstd.constants.ZSTD_c_compressionLevel!]: level },
      })
  }
}

const headerText = (v: OutgoingHttpHeader | undefined): string =>
  v === undefined ? '' : Array.isArray(v) ? v.join(', ') : String(v)

/** Add `Accept-Encoding` to Vary unless it (or `*`) is there. */
function addVary(res: ServerResponse): void {
  const vary = headerText(res.getHeader('vary'))
  const fields = vary
    .split(',')
    .map((f) => f.trim().toLowerCase())
    .filter(Boolean)
  if (fields.includes('*') || fields.includes('accept-encoding')) return
  res.setHeader('Vary', fields.length === 0 ? 'Accept-Encoding' : `${vary}, Accept-Encoding`)
}

/** The instance's original accessor (OutgoingMessage.prototype's), read past our own override. */
function protoGetter(res: ServerResponse, name: string): (() => unknown) | undefined {
  for (
    let p = Object.getPrototypeOf(res) as object | null;
    p;
    p = Object.getPrototypeOf(p) as object | null
  ) {
    const d = Object.getOwnPropertyDescriptor(p, name)
    if (d?.get) return d.get
  }
  return undefined
}

/**
 * writeHead's header argument laid onto the response, as node does when setHeader was used
 * before (a field named in the list replaces the earlier one; repeats in the list are kept),
 * so that the decision below sees the whole head.
 */
function applyHeaders(res: ServerResponse, headers: unknown): void {
  if (Array.isArray(headers)) {
    for (let i = 0; i < headers.length; i += 2) res.removeHeader(String(headers[i]))
    for (let i = 0; i < headers.length; i += 2) res.appendHeader(String(headers[i]), headers[i + 1] as string)
  } else if (headers && typeof headers === 'object') {
    for (const [name, value] of Object.entries(headers as Record<string, OutgoingHttpHeader | undefined>))
      if (value !== undefined) res.setHeader(name, value)
  }
}

type Callback = (err?: Error | null) => void

/**
 * Code `res`'s body as `req` accepts and `settings` allow. Installed before the handler
 * writes anything; the response then behaves as before for its writer (write() says false
 * while the coder or the socket is full, 'drain' follows), only its bytes are coded.
 */
export function encodeResponse(req: IncomingMessage, res: ServerResponse, settings: EncodeSettings): void {
  const writeHead = res.writeHead
  const write = res.write as (chunk: unknown, encoding?: unknown, cb?: unknown) => boolean
  const end = res.end as (chunk?: unknown, encoding?: unknown, cb?: unknown) => ServerResponse
  const needDrain = protoGetter(res, 'writableNeedDrain')
  const writableLength = protoGetter(res, 'writableLength')
  let decided = false
  let coder: Transform | null = null
  /** A write() was told false because of the coder: 'drain' is owed when it empties. */
  let owed = false
  let ending = false
  /** The coder's output is wired to the socket (at the first body write or end). */
  let started = false
  /** The body's length when it is all given to end() before any head. */
  let endLength: number | undefined

  /** Decide whether to code, with the whole head laid on `res`; returns the coder or null. */
  const decide = (status: number): Transform | null => {
    const bodyless = req.method === 'HEAD' || status === 204 || status === 304
    if (!bodyless && endLength !== undefined && !res.hasHeader('content-length'))
      res.setHeader('Content-Length', endLength)
    if (status === 304) {
      // The client holds the coded variant (its weak ETag): the 304 names that one.
      const etag = headerText(res.getHeader('etag'))
      const inm = headerText(req.headers['if-none-match'])
      if (etag.startsWith('"') && inm.includes(`W/${etag}`)) res.setHeader('ETag', `W/${etag}`)
      return null
    }
    const type = headerText(res.getHeader('content-type')).split(';')[0]!.trim().toLowerCase()
    if (status < 200 || status === 206 || type === '' || !settings.types(type)) return null
    if (res.hasHeader('content-range')) return null
    const coded = headerText(res.getHeader('content-encoding')).trim().toLowerCase()
    if (coded !== '' && coded !== 'identity') return null
    if (/(?:^|,)\s*no-transform\s*(?:,|$)/i.test(headerText(res.getHeader('cache-control')))) return null
    const lengthHeader = res.getHeader('content-length')
    const length = lengthHeader === undefined ? undefined : Number(headerText(lengthHeader))
    if (length !== undefined && length < settings.minLength) return null
    // From here on the client's Accept-Encoding decides: caches must key on it.
    addVary(res)
    if (bodyless) return null
    // negotiator 1.x takes the server's preference for ties (its types predate the option).
    const offered = [...settings.codings, 'identity']
    const encodings = Negotiator.prototype.encodings as (
      this: Negotiator,
      available: string[],
      options: { preferred: string[] },
    ) => string[]
    const choice = encodings.call(new Negotiator(req), offered, { preferred: offered })[0] as
      Coding | 'identity' | undefined
    if (choice === undefined || choice === 'identity') return null
    res.removeHeader('content-length')
    res.removeHeader('accept-ranges')
    res.setHeader('Content-Encoding', choice)
    const etag = headerText(res.getHeader('etag'))
    if (etag.startsWith('"')) res.setHeader('ETag', `W/${etag}`)
    return createCoder(choice, settings, length)
  }

  const start = (c: Transform): void => {
    c.on('data', (out: Buffer) => {
      if (!write.call(res, out)) c.pause()
    })
    c.on('drain', () => {
      if (!owed) return
      owed = false
      // The socket's own 'drain' comes when it empties; otherwise this is the writer's.
      if (!needDrain?.call(res)) res.emit('drain')
    })
    c.once('end', () => end.call(res))
    c.once('error', (err) => res.destroy(err))
    res.on('drain', () => c.resume())
    res.once('close', () => c.destroy())
    // What waits in the coder counts as queued (the response buffer reads writableLength
    // to decide what stays in memory).
    Object.defineProperty(res, 'writableLength', {
      configurable: true,
      get: () => (writableLength?.call(res) as number) + c.writableLength + c.readableLength,
    })
    Object.defineProperty(res, 'writableNeedDrain', {
      configurable: true,
      get: () => owed || (needDrain?.call(res) as boolean),
    })
  }

  res.writeHead = function (this: ServerResponse, status: number, ...rest: unknown[]) {
    if (decided || status < 200)
      return (writeHead as (...a: unknown[]) => ServerResponse).call(this, status, ...rest)
    const reason = typeof rest[0] === 'string' ? (rest.shift() as string) : undefined
    // A head node refuses (a bad name or value) leaves the response as it was, for the error page.
    const before = new Map(res.getHeaderNames().map((n) => [n, res.getHeader(n)!]))
    try {
      applyHeaders(res, rest[0])
      coder = decide(status)
      const head = writeHead as (this: ServerResponse, ...a: unknown[]) => ServerResponse
      const out = reason === undefined ? head.call(this, status) : head.call(this, status, reason)
      decided = true
      return out
    } catch (err) {
      coder = null
      for (const name of res.getHeaderNames()) res.removeHeader(name)
      for (const [name, value] of before) res.setHeader(name, value)
      throw err
    }
  } as ServerResponse['writeHead']

  res.write = function (this: ServerResponse, chunk: unknown, encoding?: unknown, cb?: unknown) {
    if (!decided && !this.headersSent) this.writeHead(this.statusCode)
    if (!coder) return write.call(this, chunk, encoding, cb)
    // A write after end() is the writer's bug; node would drop it too (with an error).
    if (ending) return false
    if (!started) {
      started = true
      start(coder)
    }
    const ok = coder.write(chunk, encoding as BufferEncoding, cb as Callback)
    if (!ok) owed = true
    return ok && !needDrain?.call(res)
  } as ServerResponse['write']

  res.end = function (this: ServerResponse, chunk?: unknown, encoding?: unknown, cb?: unknown) {
    if (typeof chunk === 'function') [cb, chunk, encoding] = [chunk, undefined, undefined]
    else if (typeof encoding === 'function') [cb, encoding] = [encoding, undefined]
    if (!decided && !this.headersSent) {
      endLength =
        chunk == null
          ? 0
          : typeof chunk === 'string'
            ? Buffer.byteLength(chunk, (encoding as BufferEncoding | undefined) ?? 'utf8')
            : (chunk as Uint8Array).byteLength
      this.writeHead(this.statusCode)
    }
    if (!coder) return end.call(this, chunk, encoding, cb)
    if (ending) return this
    ending = true
    if (!started) {
      started = true
      start(coder)
    }
    if (typeof cb === 'function') this.once('finish', cb as () => void)
    if (chunk != null) coder.end(chunk, encoding as BufferEncoding)
    else coder.end()
    return this
  } as ServerResponse['end']
}
