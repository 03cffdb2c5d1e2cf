/**
 * The listener side of the CGI-style gateways (uwsgi, FastCGI): the HTTP request a web
 * server (nginx `uwsgi_pass`, `fastcgi_pass`, Apache, `cgi-fcgi`) described in
 * CGI meta-variables. Pure.
 *
 * REQUEST_METHOD, REQUEST_URI (or SCRIPT_NAME + PATH_INFO re-encoded, and QUERY_STRING),
 * HTTP_* as header lines, CONTENT_TYPE / CONTENT_LENGTH, REMOTE_ADDR / REMOTE_PORT,
 * SERVER_NAME / SERVER_PORT (the Host when no HTTP_HOST came), HTTPS / REQUEST_SCHEME.
 */
import { isIP } from 'node:net'
import { type ErrorCode, GatehouseError } from '../core/errors.js'

/** The HTTP request described by a set of CGI-style variables. */
export interface GatewayRequestHead {
  method: string
  /** Request-target: REQUEST_URI, or SCRIPT_NAME + PATH_INFO (re-encoded) and QUERY_STRING. */
  url: string
  /** `1.1` or `1.0`, from SERVER_PROTOCOL. */
  httpVersion: string
  /**
   * Header names (lower case) and values, flat; from HTTP_*, CONTENT_TYPE, CONTENT_LENGTH,
   * and `host` from SERVER_NAME when there was no HTTP_HOST.
   */
  rawHeaders: string[]
  /** REMOTE_ADDR ('' for a Unix-socket client, which nginx reports as `unix:`). */
  remoteAddress: string | undefined
  remotePort: number | undefined
  /** SERVER_PORT: the port the web server accepted the request on. */
  serverPort: number | undefined
  /** HTTPS=on, or REQUEST_SCHEME / UWSGI_SCHEME https. */
  secure: boolean
  /** CONTENT_LENGTH as a number; undefined when absent or empty (no body). */
  contentLength: number | undefined
}

const METHOD = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/
/** A host name or IPv4 address (SERVER_NAME), as a Host header may carry it. */
const HOST_NAME = /^[A-Za-z0-9._-]+$/
/** Vars whose HTTP_* form the gateway's own framing replaces. */
const IGNORED_HTTP_VARS = new Set(['HTTP_CONTENT_LENGTH', 'HTTP_CONTENT_TYPE', 'HTTP_TRANSFER_ENCODING'])

/** Percent-encode the bytes (one latin1 char each) of a decoded path: PATH_INFO arrives decoded. */
function encodePath(latin1: string): string {
  return latin1.replace(
    /[^A-Za-z0-9\-._~!$&'()*+,;=:@/]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`,
  )
}

/**
 * `HTTP_X_FORWARDED_FOR` -> `x-forwarded-for`, remembered: a web server sends the same few
 * names with every request. Bounded: past NAME_CACHE_ENTRIES names it starts over.
 */
const headerNames = new Map<string, string>()
const NAME_CACHE_ENTRIES = 512

function headerNameOf(name: string): string {
  let header = headerNames.get(name)
  if (header === undefined) {
    header = name.slice(5).toLowerCase().replaceAll('_', '-')
    if (name.length <= 64) {
      if (headerNames.size >= NAME_CACHE_ENTRIES) headerNames.clear()
      headerNames.set(name, header)
    }
  }
  return header
}

const portOf = (value: string | undefined) => {
  if (value === undefined || !/^\d{1,5}$/.test(value)) return undefined
  const port = Number(value)
  return port <= 65535 ? port : undefined
}

/**
 * The request the vars describe. Throws GatehouseError(`code`) when they cannot describe
 * one (no or invalid REQUEST_METHOD, control characters, a bad CONTENT_LENGTH).
 */
export function requestFromGatewayVars(
  vars: Iterable<readonly [string, string]>,
  code: ErrorCode,
): GatewayRequestHead {
  // A repeated var: the last one wins, as in uWSGI's environ (a later `uwsgi_param` overrides
  // one from an included uwsgi_params). Repeated HTTP_* vars are repeated header lines.
  const named = new Map<string, string>()
  const rawHeaders: string[] = []
  let host = false
  for (const [name, value] of vars) {
    if (name.startsWith('HTTP_')) {
      if (IGNORED_HTTP_VARS.has(name) || name.length === 5) continue
      if (BAD_VALUE.test(value)) throw new GatehouseError(code, `control character in ${name.slice(0, 64)}`)
      if (name === 'HTTP_HOST') host = true
      rawHeaders.push(headerNameOf(name), value)
    } else named.set(name, value)
  }
  const method = named.get('REQUEST_METHOD')
  if (method === undefined || !METHOD.test(method))
    throw new GatehouseError(code, method === undefined ? 'no REQUEST_METHOD' : 'invalid REQUEST_METHOD')
  for (const [name, header] of [
    ['CONTENT_TYPE', 'content-type'],
    ['CONTENT_LENGTH', 'content-length'],
  ] as const) {
    const value = named.get(name)
    if (value === undefined || value === '') continue
    if (BAD_VALUE.test(value)) throw new GatehouseError(code, `control character in ${name}`)
    rawHeaders.push(header, value)
  }
  const lengthText = named.get('CONTENT_LENGTH') ?? ''
  if (lengthText !== '' && !/^\d{1,15}$/.test(lengthText))
    throw new GatehouseError(code, 'CONTENT_LENGTH is not a number')
  // A client that names no Host (cgi-fcgi, a hand-written FastCGI client): the server's name.
  const serverName = named.get('SERVER_NAME') ?? ''
  if (!host && serverName !== '' && (HOST_NAME.test(serverName) || /^\[[0-9A-Fa-f:.]+\]$/.test(serverName)))
    rawHeaders.push('host', serverName)
  let url = named.get('REQUEST_URI') ?? ''
  if (url === '') {
    const query = named.get('QUERY_STRING') ?? ''
    const path = (named.get('SCRIPT_NAME') ?? '') + (named.get('PATH_INFO') ?? '')
    url = encodePath(path || '/') + (query === '' ? '' : `?${query}`)
  }
  if (BAD_VALUE.test(url) || url.includes(' ')) throw new GatehouseError(code, 'invalid REQUEST_URI')
  const protocol = /^HTTP\/1\.([01])$/.exec(named.get('SERVER_PROTOCOL') ?? '')
  const remote = named.get('REMOTE_ADDR')
  // The peer is trusted to name the client, but the name reaches the app, the access log
  // and X-Forwarded-For: only an address (or nginx's `unix:` for a Unix-socket client).
  if (remote !== undefined && remote !== '' && remote !== 'unix:' && isIP(remote) === 0)
    throw new GatehouseError(code, `REMOTE_ADDR is not an IP address: ${JSON.stringify(remote.slice(0, 64))}`)
  const https = (named.get('HTTPS') ?? '').toLowerCase()
  return {
    method,
    url,
    httpVersion: protocol ? `1.${protocol[1]}` : '1.1',
    rawHeaders,
    remoteAddress:
      remote === undefined
        ? undefined
        : remote === 'unix:'
          ? ''
          : remote.startsWith('::ffff:')
            ? remote.slice(7)
            : remote,
    remotePort: portOf(named.get('REMOTE_PORT')),
    serverPort: portOf(named.get('SERVER_PORT')),
    secure:
      https === 'on' ||
      https === '1' ||
      named.get('REQUEST_SCHEME') === 'https' ||
      named.get('UWSGI_SCHEME') === 'https',
    contentLength: lengthText === '' ? undefined : Number(lengthText),
  }
}
