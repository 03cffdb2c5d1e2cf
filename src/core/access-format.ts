/*
 * The access log's line formats: nginx's combined format, and a template of nginx variables
 * (`log.access_format = '$remote_addr "$request" $status $request_time $pool'`, as nginx's
 * log_format and gunicorn's --access-logformat name their fields), compiled once into a list
 * of parts and filled in per request.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'

export interface AccessRecord {
  req: IncomingMessage
  res: ServerResponse
  remoteAddress: string
  start: number
  route: number | undefined
  /** socket.bytesWritten when the request arrived, for responses written past `res`. */
  written0: number
  /** The body bytes handed to `res` (countBody), when counted. */
  body?: BodyCount
}

export interface BodyCount {
  bytes: number
}

/**
 * What a gateway tells the access log of the upstream it used ($pool, $worker_pid,
 * $upstream_response_time): filled in by the worker pool when it leases a worker (and when
 * the lease ends), or by the gateway around its exchange with an upstream of its own.
 */
export interface UpstreamNote {
  /** The managed pool's name. */
  pool?: string
  /** The leased worker's pid. */
  pid?: number
  /** The upstream servers the request was sent to, in order (several when it was retried): $upstream_addr. */
  addr?: string[]
  /** performance.now() when the upstream was given the request, and when it was done with it. */
  start?: number
  end?: number
}

const NOTES = new WeakMap<IncomingMessage, UpstreamNote>()

/** The request's upstream note, made on first use. */
export function upstreamNote(req: IncomingMessage): UpstreamNote {
  let note = NOTES.get(req)
  if (!note) NOTES.set(req, (note = {}))
  return note
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
const pad = (n: number) => (n < 10 ? `0${n}` : String(n))

/** `10/Oct/2000:13:55:36 +0000`, the time format of the combined log. */
export function clfTime(d: Date): string {
  return `${pad(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`
}

/** `2000-10-10T13:55:36+00:00`, nginx's $time_iso8601 (in UTC, as $time_local is). */
export function isoTime(d: Date): string {
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}+00:00`
}

const HEX = '0123456789ABCDEF'
const hexByte = (b: number) => `\\x${HEX[b >> 4]}${HEX[b & 15]}`

/**
 * A value escaped as nginx escapes its access log: `"`, `\`, control characters and bytes
 * from 0x7f as `\xHH` (a `\` at the end of a value cannot read as an escaped quote). Header
 * values are latin1 (one byte a character); anything wider is escaped byte by byte as UTF-8.
 */
export function clfEscape(v: string): string {
  if (!/["\\\x00-\x1f\x7f-\uffff]/.test(v)) return v
  let out = ''
  for (const ch of v) {
    const c = ch.codePointAt(0)!
    if (c === 0x22 || c === 0x5c || c < 0x20 || (c >= 0x7f && c <= 0xff)) out += hexByte(c)
    else if (c > 0xff) for (const b of Buffer.from(ch, 'utf8')) out += hexByte(b)
    else out += ch
  }
  return out
}

/** A field of the combined log: quoted, escaped (clfEscape), `"-"` when empty. */
export function clfQuote(v: string | undefined): string {
  return v === undefined || v === '' ? '"-"' : `"${clfEscape(v)}"`
}

/** What the response's socket wrote for it (headers included). */
function socketBytes(r: AccessRecord): number {
  return Math.max(0, (r.req.socket?.bytesWritten ?? 0) - r.written0)
}

/**
 * Body bytes sent: what the response was given (without chunk framing); for a response cut
 * short, at most what the socket wrote. A response written past `res` (nph- CGI, a taken
 * upgrade) is what the socket wrote.
 */
export function bodyBytes(r: AccessRecord): number {
  const { req, res } = r
  if (req.method === 'HEAD' || res.statusCode === 304 || res.statusCode === 204) return 0
  const written = socketBytes(r)
  if (!r.body || !res.headersSent) return written
  return res.writableFinished ? r.body.bytes : Math.min(r.body.bytes, written)
}

/** The combined line (without its newline). */
export function combinedLine(r: AccessRecord, bytes: number): string {
  const { req, res } = r
  return `${r.remoteAddress || '-'} - - [${clfTime(new Date())}] ${clfQuote(`${req.method} ${req.url} HTTP/${req.httpVersion}`)} ${res.statusCode} ${bytes} ${clfQuote(req.headers.referer)} ${clfQuote(req.headers['user-agent'])}`
}

/** One request's values, worked out once for the variables that share them. */
interface Line {
  r: AccessRecord
  now: number
  date?: Date
}

type Value = string | number | undefined
type Getter = (l: Line) => Value

const date = (l: Line) => (l.date ??= new Date(l.now))
const seconds = (ms: number) => (ms / 1000).toFixed(3)
const path = (url: string | undefined) => {
  if (url === undefined) return undefined
  const q = url.indexOf('?')
  return q === -1 ? url : url.slice(0, q)
}
const headerText = (v: string | string[] | number | undefined): string | undefined =>
  v === undefined ? undefined : Array.isArray(v) ? v.join(', ') : String(v)

/** Basic auth's user name, as nginx's $remote_user. */
function remoteUser(req: IncomingMessage): string | undefined {
  const auth = req.headers.authorization
  if (!auth || !/^basic\s/i.test(auth)) return undefined
  const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('latin1')
  const colon = decoded.indexOf(':')
  return colon === -1 ? undefined : decoded.slice(0, colon)
}

/** A response header as sent: set with setHeader, or given to writeHead (read from the head). */
function sentHeader(res: ServerResponse, name: string): string | undefined {
  const set = headerText(res.getHeader(name))
  if (set !== undefined) return set
  const head = (res as ServerResponse & { _header?: string | null })._header
  if (typeof head !== 'string') return undefined
  const values: string[] = []
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':')
    if (colon > 0 && line.slice(0, colon).toLowerCase() === name) values.push(line.slice(colon + 1).trim())
  }
  return values.length > 0 ? values.join(', ') : undefined
}

/** The variables a template may name, as nginx names them (and Gatehouse's own). */
const VARIABLES: Record<string, Getter> = {
  remote_addr: (l) => l.r.remoteAddress,
  remote_user: (l) => remoteUser(l.r.req),
  time_local: (l) => clfTime(date(l)),
  time_iso8601: (l) => isoTime(date(l)),
  msec: (l) => seconds(l.now),
  request: (l) => `${l.r.req.method} ${l.r.req.url} HTTP/${l.r.req.httpVersion}`,
  request_method: (l) => l.r.req.method,
  request_uri: (l) => l.r.req.url,
  uri: (l) => path(l.r.req.url),
  args: (l) => {
    const url = l.r.req.url ?? ''
    const q = url.indexOf('?')
    return q === -1 ? undefined : url.slice(q + 1)
  },
  server_protocol: (l) => `HTTP/${l.r.req.httpVersion}`,
  host: (l) => {
    const host = l.r.req.headers.host
    return host === undefined ? undefined : host.replace(/:\d*$/, '').toLowerCase()
  },
  status: (l) => l.r.res.statusCode,
  body_bytes_sent: (l) => bodyBytes(l.r),
  bytes_sent: (l) => socketBytes(l.r),
  request_time: (l) => seconds(performance.now() - l.r.start),
  upstream_response_time: (l) => {
    const note = NOTES.get(l.r.req)
    return note?.start === undefined ? undefined : seconds((note.end ?? performance.now()) - note.start)
  },
  upstream_addr: (l) => NOTES.get(l.r.req)?.addr?.join(', '),
  pool: (l) => NOTES.get(l.r.req)?.pool,
  worker_pid: (l) => NOTES.get(l.r.req)?.pid,
  route: (l) => l.r.route,
  pid: () => process.pid,
}

/** The names a template may use, for the docs and the config error. */
export const ACCESS_VARIABLES: readonly string[] = [...Object.keys(VARIABLES), 'http_NAME', 'sent_http_NAME']

function variable(name: string): Getter | undefined {
  if (Object.hasOwn(VARIABLES, name)) return VARIABLES[name]
  if (name.startsWith('http_') && name.length > 5) {
    const header = name.slice(5).toLowerCase().replaceAll('_', '-')
    return (l) => headerText(l.r.req.headers[header])
  }
  if (name.startsWith('sent_http_') && name.length > 10) {
    const header = name.slice(10).toLowerCase().replaceAll('_', '-')
    return (l) => sentHeader(l.r.res, header)
  }
  return undefined
}

/** A compiled template: the line for one request (without its newline). */
export type AccessFormatter = (r: AccessRecord) => string

/**
 * Compile a template of `$name` / `${name}` variables into a formatter, once. Values are
 * escaped (clfEscape) and an empty or missing one is `-`, as nginx writes them. Throws an
 * Error naming the unknown variable (and the known ones) or the stray `$`.
 */
export function compileAccessFormat(template: string): AccessFormatter {
  const literals: string[] = []
  const getters: Getter[] = []
  const re = /\$(?:\{([A-Za-z0-9_]*)\}|([A-Za-z0-9_]*))/g
  let last = 0
  for (let m = re.exec(template); m !== null; m = re.exec(template)) {
    const name = m[1] ?? m[2] ?? ''
    if (name === '') throw new Error(`a "$" at offset ${m.index} names no variable (write $name or \${name})`)
    const getter = variable(name)
    if (!getter)
      throw new Error(
        `unknown variable "$${name}"; known: ${ACCESS_VARIABLES.map((v) => `$${v}`).join(', ')}`,
      )
    literals.push(template.slice(last, m.index))
    getters.push(getter)
    last = m.index + m[0].length
  }
  if (getters.length === 0)
    throw new Error(
      'expected "combined", "json" or a template of $variables (e.g. "$remote_addr $request $status")',
    )
  const tail = template.slice(last)
  return (r) => {
    const l: Line = { r, now: Date.now() }
    let out = ''
    for (let i = 0; i < getters.length; i++) {
      const v = getters[i]!(l)
      out +=
        literals[i]! + (v === undefined || v === '' ? '-' : typeof v === 'number' ? String(v) : clfEscape(v))
    }
    return out + tail
  }
}
