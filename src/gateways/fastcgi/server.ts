/**
 * The application side of FastCGI: accept FastCGI requests (nginx `fastcgi_pass`, Apache
 * mod_proxy_fcgi, `cgi-fcgi`) and hand them to a node:http-shaped handler as real
 * IncomingMessage / ServerResponse objects (inbound/exchange.ts). docs/fastcgi.md,
 * "Application side", is the user's view.
 *
 * Per connection: one request at a time (FCGI_MPXS_CONNS=0; a second BEGIN_REQUEST while
 * one runs gets END_REQUEST FCGI_CANT_MPX_CONN), any number in sequence while the web
 * server sets FCGI_KEEP_CONN. The records of a connection are server-connection.ts; the
 * handler's response, which node serializes as HTTP/1.1, is turned into a CGI header
 * block (`Status: 200 OK`) and FCGI_STDOUT records by server-response.ts, then END_REQUEST.
 *
 * A FastCGI peer is trusted: it names the client (REMOTE_ADDR) and the scheme. TCP
 * connections are accepted only from an allow-list (loopback by default); Unix sockets are
 * guarded by their file permissions (inbound/peer.ts).
 */
import { Server, type Socket } from 'node:net'
import pino, { type Logger } from 'pino'
import { admitPeer } from '../../inbound/peer.js'
import { ListenerConnection } from './server-connection.js'
import { parseAllowList } from '../../core/allow-list.js'
import type { RequestListener } from '../../core/types.js'

export type { RequestListener } from '../../core/types.js'
export { type FastCGIRequestInfo, fastcgiRequestInfo } from './server-connection.js'

export const DEFAULT_FASTCGI_ALLOW: readonly string[] = ['127.0.0.1', '::1']
/** Largest PARAMS stream accepted by default: what nginx can send (it puts them in one record). */
export const FASTCGI_DEFAULT_MAX_PARAMS_BYTES = 65535
/** Hard ceiling for `maxParamsBytes`. */
export const FASTCGI_MAX_PARAMS_BYTES = 1024 * 1024

export interface FastCGIServerOptions {
  /**
   * Addresses and CIDR blocks (`10.0.0.0/8`, `fd00::/8`) that may connect over TCP.
   * Default loopback: 127.0.0.1 and ::1. Unix-socket clients are always accepted.
   */
  allow?: readonly string[]
  /** Largest PARAMS stream (all name-value pairs of a request), in bytes (default 65535). */
  maxParamsBytes?: number
  /** Time for BEGIN_REQUEST's PARAMS to arrive, in ms (default 10 s; 0 disables). */
  headerTimeout?: number
  /**
   * A connection with no request in flight is closed after this, in ms (default 75 s:
   * longer than nginx's upstream `keepalive_timeout`, so nginx closes first; 0 disables).
   */
  idleTimeout?: number
  /**
   * Time allowed between two STDIN records of a request body, in ms (default 60 s, like
   * nginx's client_body_timeout; 0 disables): past it the request is answered 408.
   */
  bodyTimeout?: number
  /**
   * Connections served at once; more are closed on accept. Announced to web servers as
   * FCGI_MAX_CONNS and FCGI_MAX_REQS in GET_VALUES_RESULT. Default: no limit (not announced).
   */
  maxConnections?: number
  /**
   * Handler for the FCGI_AUTHORIZER role: it sees the request (no body) and answers 200,
   * with `Variable-NAME` headers the web server passes on, to allow it, or any other status
   * to deny it (that response goes to the client). Without one, authorizer requests get
   * END_REQUEST FCGI_UNKNOWN_ROLE. FILTER requests always do.
   */
  authorizer?: RequestListener
  log?: Logger
}

export class FastCGIServer extends Server {
  readonly handler: RequestListener
  readonly authorizer: RequestListener | undefined
  readonly log: Logger
  private allowList: ReturnType<typeof parseAllowList>
  maxParamsBytes: number
  headerTimeout: number
  idleTimeout: number
  bodyTimeout: number
  /** Connections accepted since the server started (refused ones not counted). */
  connectionsAccepted = 0
  /** Requests handed to a handler since the server started. */
  requestsStarted = 0
  /** Set once close() was called: connections end after their request. */
  closing = false
  private readonly active = new Set<ListenerConnection>()

  constructor(handler: RequestListener, options: FastCGIServerOptions = {}) {
    super({ allowHalfOpen: true })
    this.handler = handler
    this.authorizer = options.authorizer
    this.log = options.log ?? pino({ level: 'warn' })
    this.allowList = parseAllowList(options.allow ?? DEFAULT_FASTCGI_ALLOW)
    this.maxParamsBytes = Math.min(
      options.maxParamsBytes ?? FASTCGI_DEFAULT_MAX_PARAMS_BYTES,
      FASTCGI_MAX_PARAMS_BYTES,
    )
    this.headerTimeout = options.headerTimeout ?? 10_000
    this.idleTimeout = options.idleTimeout ?? 75_000
    this.bodyTimeout = options.bodyTimeout ?? 60_000
    if (options.maxConnections !== undefined) this.maxConnections = options.maxConnections
    this.on('connection', (socket: Socket) => this.accept(socket))
  }

  /** Replace the allow-list (takes effect for new connections). */
  setAllow(entries: readonly string[]): void {
    this.allowList = parseAllowList(entries)
  }

  override close(callback?: (err?: Error) => void): this {
    this.closing = true
    return super.close(callback)
  }

  /** Close connections with no request in flight. */
  closeIdleConnections(): void {
    for (const c of this.active) if (!c.busy) c.socket.destroy()
  }

  closeAllConnections(): void {
    for (const c of this.active) c.socket.destroy()
  }

  /** The values this server enforces, for GET_VALUES_RESULT. */
  values(): Map<string, string> {
    const values = new Map<string, string>()
    // Node's server.maxConnections closes connections past the limit; with one request per
    // connection that bounds requests too.
    if (Number.isFinite(this.maxConnections) && this.maxConnections > 0) {
      values.set('FCGI_MAX_CONNS', String(this.maxConnections))
      values.set('FCGI_MAX_REQS', String(this.maxConnections))
    }
    values.set('FCGI_MPXS_CONNS', '0')
    return values
  }

  private accept(socket: Socket): void {
    if (!admitPeer(socket, this.allowList, this.log, 'FastCGI', 'fastcgi_allow')) return
    this.connectionsAccepted++
    const connection = new ListenerConnection(socket, this)
    this.active.add(connection)
    socket.once('close', () => this.active.delete(connection))
  }
}

/**
 * A FastCGI server for a node:http-shaped handler: `createFastCGIServer(app).listen(9000)`
 * (or a Unix socket path). The same handler works in `http.createServer(app)`.
 */
export function createFastCGIServer(
  handler: RequestListener,
  options: FastCGIServerOptions = {},
): FastCGIServer {
  return new FastCGIServer(handler, options)
}
