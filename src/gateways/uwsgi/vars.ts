/**
 * What goes into a uwsgi vars block and what comes out of one. Pure.
 *
 * Client side (`buildUwsgiVars`): the variables nginx's `conf/uwsgi_params` sends, then one
 * `HTTP_*` var per request header name, by the rule every gateway shares
 * (cgi-vars/meta.ts headerMetaName). Request data only ever produces `HTTP_*` names:
 * uWSGI reads `UWSGI_FILE`, `UWSGI_SCRIPT`, `UWSGI_APPID`, `UWSGI_CHDIR` ... as orders to
 * load code, so no header can become one.
 *
 * Listener side (`requestFromUwsgiVars`): the HTTP request a web server (nginx `uwsgi_pass`)
 * described in vars.
 */
import { headerMetaName } from '../../cgi-vars/meta.js'
import { type GatewayRequestHead, requestFromGatewayVars } from '../../cgi-vars/request.js'
import type { UwsgiVarPairs, UwsgiVarValue } from './codec.js'

export interface UwsgiVarsInput {
  method: string
  /** The request-target path as received (percent-encoded), for REQUEST_URI. */
  rawPath: string
  /** Query string without '?', never decoded ('' when none). */
  query: string
  /** Decoded, normalized path: PATH_INFO, like nginx's `$document_uri`. Sent as UTF-8. */
  path: string
  /** `1.1`, `1.0` (IncomingMessage.httpVersion). */
  httpVersion: string
  /** Header names and values as received, flat: [name, value, name, value, ...]. */
  rawHeaders: readonly string[]
  /**
   * HTTP_HOST to send instead of the Host header (the authority of an absolute-form
   * request-target, which is what the request is really for).
   */
  host?: string
  /** Body length in bytes; undefined when there is no body. */
  contentLength: number | undefined
  scheme: 'http' | 'https'
  remoteAddress: string
  remotePort: number
  serverPort: number
  serverName: string
  documentRoot: string
  /** SSL_PROTOCOL, SSL_CIPHER, SSL_TLS_SNI of a TLS connection (cgi-vars/script.ts addTlsMeta). */
  tls?: Readonly<Record<string, string>>
  /** Extra vars from configuration (`uwsgi_param`); they replace built-in vars of the same name. */
  params?: Iterable<readonly [string, UwsgiVarValue]>
}

/** The vars for one request, in the order nginx sends them, then HTTP_*, then params. */
export function buildUwsgiVars(input: UwsgiVarsInput): [string, UwsgiVarValue][] {
  let contentType = ''
  const raw = input.rawHeaders
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.length === 12 && raw[i]!.toLowerCase() === 'content-type') {
      contentType = raw[i + 1]!
      break
    }
  }
  const vars = new Map<string, UwsgiVarValue>([
    ['QUERY_STRING', input.query],
    ['REQUEST_METHOD', input.method],
    ['CONTENT_TYPE', contentType],
    ['CONTENT_LENGTH', input.contentLength === undefined ? '' : String(input.contentLength)],
    ['REQUEST_URI', input.query === '' ? input.rawPath : `${input.rawPath}?${input.query}`],
    ['PATH_INFO', Buffer.from(input.path, 'utf8')],
    ['DOCUMENT_ROOT', input.documentRoot],
    ['SERVER_PROTOCOL', `HTTP/${input.httpVersion}`],
    ['REQUEST_SCHEME', input.scheme],
  ])
  if (input.scheme === 'https') vars.set('HTTPS', 'on')
  if (input.tls) for (const name in input.tls) vars.set(name, input.tls[name]!)
  vars.set('REMOTE_ADDR', input.remoteAddress)
  vars.set('REMOTE_PORT', String(input.remotePort))
  vars.set('SERVER_PORT', String(input.serverPort))
  vars.set('SERVER_NAME', input.serverName)
  if (input.host !== undefined) vars.set('HTTP_HOST', input.host)

  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!
    if (input.host !== undefined && name.length === 4 && name.toLowerCase() === 'host') continue
    // uwsgi has no body framing: CONTENT_LENGTH is the framing, and a chunked marker beside it
    // would contradict it (werkzeug, for one, then ignores CONTENT_LENGTH).
    if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') continue
    // Authorization is passed, as nginx's uwsgi_params does.
    const key = headerMetaName(name, true)
    if (key === null) continue
    const value = raw[i + 1]!
    const previous = vars.get(key)
    // One var per name: a Python environ is a dict, where a second var would replace the first.
    if (previous === undefined) vars.set(key, value)
    else vars.set(key, `${String(previous)}${key === 'HTTP_COOKIE' ? '; ' : ', '}${value}`)
  }
  for (const [name, value] of input.params ?? []) {
    vars.delete(name)
    vars.set(name, value)
  }
  return [...vars]
}

/** The HTTP request described by a uwsgi vars block (the same shape as a FastCGI one). */
export type UwsgiRequestHead = GatewayRequestHead

/** Throws GH_ERR_UWSGI_PACKET when the vars cannot describe an HTTP request. */
export function requestFromUwsgiVars(vars: UwsgiVarPairs): UwsgiRequestHead {
  return requestFromGatewayVars(vars, 'GH_ERR_UWSGI_PACKET')
}
