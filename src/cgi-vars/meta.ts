/**
 * CGI/1.1 meta-variables (RFC 3875 section 4.1) from a request. Pure: the CGI handler
 * passes the result as a process environment, the FastCGI client as PARAMS. Which request
 * headers become `HTTP_*` (headerMetaName) is decided here for every gateway that sends
 * meta-variables: CGI, FastCGI, PHP and uwsgi.
 */

export interface CgiMetaInput {
  method: string
  /** The request-target path as received (percent-encoded), for REQUEST_URI. */
  rawPath: string
  /** Query string without '?', never decoded ('' when none). */
  query: string
  /** Decoded URL path of the script (RFC 3875 4.1.13); '' when the script owns the root. */
  scriptName: string
  /** Decoded remainder of the path after SCRIPT_NAME ('' when none). */
  pathInfo: string
  /** The script's file system path. */
  scriptFilename: string
  /** Directory PATH_INFO is mapped under for PATH_TRANSLATED, and DOCUMENT_ROOT. */
  documentRoot: string
  /** `1.1`, `1.0` (IncomingMessage.httpVersion). */
  httpVersion: string
  /** Header names and values as received, flat: [name, value, name, value, ...]. */
  rawHeaders: readonly string[]
  /** Body length in bytes; undefined when the request has no body or its length is not known. */
  contentLength: number | undefined
  /** Host the client asked for (Host header, bracketed for IPv6); '' to use the local address. */
  serverName: string
  serverPort: number
  serverSoftware: string
  remoteAddress: string
  remotePort: number
  localAddress: string
  scheme: 'http' | 'https'
  /** Pass the Authorization header on as HTTP_AUTHORIZATION (default: withheld). */
  passAuthorization: boolean
  /**
   * Leave out what only a CGI script needs and what is empty: REDIRECT_STATUS, REMOTE_HOST,
   * and SCRIPT_FILENAME, DOCUMENT_ROOT and PATH_TRANSLATED when they would be '' (WSGI's
   * environ). Left out, not deleted after: deleting keys makes V8's object slow to walk.
   */
  applicationOnly?: boolean
  /** Set when the server authenticated the client (Gatehouse itself does not yet). */
  authType?: string
  remoteUser?: string
}

/** Headers never passed as HTTP_*, whatever their spelling, by any gateway. */
const WITHHELD = new Set([
  // httpoxy (CVE-2016-5385 and friends): HTTP_PROXY is read as a proxy setting.
  'proxy',
  // RFC 3875 4.1.18: these are CONTENT_LENGTH and CONTENT_TYPE, and a second copy could disagree.
  'content-length',
  'content-type',
  // Credentials for a proxy in front, never for the application (Apache and nginx withhold
  // it too). Authorization is the application's: headerMetaName's passAuthorization.
  'proxy-authorization',
])

const HEADER_NAME = /^[A-Za-z0-9-]+$/

/** Header name as received -> its meta-variable (or null), except Authorization. Bounded. */
const metaNames = new Map<string, string | null>()
const META_CACHE_ENTRIES = 512

/**
 * The meta-variable a request header becomes: `HTTP_` + upper case with '-' -> '_'
 * (RFC 3875 4.1.18), or null when it is withheld. A name with anything but letters,
 * digits and '-' is dropped: `X_Forwarded_For` would otherwise collide with
 * `X-Forwarded-For` (Django CVE-2015-0219).
 */
export function headerMetaName(name: string, passAuthorization: boolean): string | null {
  // The names a client sends repeat from request to request: their meta-variable is kept
  // (the withheld ones as null; Authorization is decided below, not kept).
  const known = metaNames.get(name)
  if (known !== undefined) return known
  const meta = metaNameOf(name)
  if (meta === 'HTTP_AUTHORIZATION') return passAuthorization ? meta : null
  if (name.length <= 64) {
    if (metaNames.size >= META_CACHE_ENTRIES) metaNames.clear()
    metaNames.set(name, meta)
  }
  return meta
}

/** The meta-variable of a header name, Authorization included (headerMetaName decides on it). */
function metaNameOf(name: string): string | null {
  if (!HEADER_NAME.test(name)) return null
  const lower = name.toLowerCase()
  if (WITHHELD.has(lower)) return null
  return `HTTP_${lower.toUpperCase().replaceAll('-', '_')}`
}

function bracketed(address: string): string {
  return address.includes(':') && !address.startsWith('[') ? `[${address}]` : address
}

/** The environment a CGI script sees for one request (meta-variables only, no inherited ones). */
export function buildCgiMeta(input: CgiMetaInput): Record<string, string> {
  const env: Record<string, string> = {
    GATEWAY_INTERFACE: 'CGI/1.1',
    SERVER_SOFTWARE: input.serverSoftware,
    SERVER_NAME: input.serverName || bracketed(input.localAddress),
    SERVER_PORT: String(input.serverPort),
    SERVER_PROTOCOL: `HTTP/${input.httpVersion}`,
    SERVER_ADDR: input.localAddress,
    REQUEST_METHOD: input.method,
    REQUEST_SCHEME: input.scheme,
    REQUEST_URI: input.query === '' ? input.rawPath : `${input.rawPath}?${input.query}`,
    QUERY_STRING: input.query,
    SCRIPT_NAME: input.scriptName,
  }
  const appOnly = input.applicationOnly === true
  if (!appOnly || input.scriptFilename !== '') env.SCRIPT_FILENAME = input.scriptFilename
  if (!appOnly || input.documentRoot !== '') env.DOCUMENT_ROOT = input.documentRoot
  env.REMOTE_ADDR = input.remoteAddress
  // RFC 3875 4.1.9: the server MAY substitute REMOTE_ADDR for the host name; no DNS lookups.
  if (!appOnly) env.REMOTE_HOST = input.remoteAddress
  env.REMOTE_PORT = String(input.remotePort)
  // php-cgi (cgi.force_redirect) refuses to run without it.
  if (!appOnly) env.REDIRECT_STATUS = '200'
  if (input.scheme === 'https') env.HTTPS = 'on'
  // RFC 3875 4.1.5/4.1.6: PATH_TRANSLATED only when there is a PATH_INFO.
  if (input.pathInfo !== '') {
    env.PATH_INFO = input.pathInfo
    if (!appOnly || input.documentRoot !== '')
      env.PATH_TRANSLATED = input.documentRoot.replace(/\/+$/, '') + input.pathInfo
  }
  if (input.authType !== undefined) env.AUTH_TYPE = input.authType
  if (input.remoteUser !== undefined) env.REMOTE_USER = input.remoteUser
  // RFC 3875 4.1.2: set if and only if there is a body.
  if (input.contentLength !== undefined) env.CONTENT_LENGTH = String(input.contentLength)

  const raw = input.rawHeaders
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!
    const value = raw[i + 1]!
    // Environment strings end at NUL; such a value cannot be passed faithfully.
    if (value.includes('\0')) continue
    if (env.CONTENT_TYPE === undefined && name.length === 12 && name.toLowerCase() === 'content-type') {
      env.CONTENT_TYPE = value
      continue
    }
    const meta = headerMetaName(name, input.passAuthorization)
    if (meta === null) continue
    const previous = env[meta]
    if (previous === undefined) env[meta] = value
    else env[meta] = `${previous}${meta === 'HTTP_COOKIE' ? '; ' : ', '}${value}`
  }
  return env
}
