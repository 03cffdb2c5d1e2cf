/**
 * One error type with stable codes (fastify-style registry). Every code has a message
 * template and, where one applies, the HTTP status a client sees. docs/errors.md is
 * checked against this table by test/core/errors.test.ts so the two never drift.
 */
export const ERROR_CODES = {
  GH_ERR_CONFIG: { status: undefined, message: 'invalid configuration' },
  GH_ERR_USAGE: { status: undefined, message: 'invalid command-line usage' },
  GH_ERR_LISTEN: { status: undefined, message: 'cannot listen on the address' },
  GH_ERR_LOG_FILE: { status: undefined, message: 'cannot open the log file' },
  GH_ERR_TLS: { status: undefined, message: 'cannot use the TLS certificate or key' },
  GH_ERR_ACME: { status: undefined, message: 'cannot obtain or renew a certificate (ACME)' },
  GH_ERR_BAD_REQUEST: { status: 400, message: 'malformed request' },
  GH_ERR_BAD_PATH: { status: 400, message: 'request path is malformed or leaves the root' },
  GH_ERR_NOT_FOUND: { status: 404, message: 'no such resource' },
  GH_ERR_FORBIDDEN: { status: 403, message: 'access to the resource is forbidden' },
  GH_ERR_METHOD_NOT_ALLOWED: { status: 405, message: 'method not allowed on this route' },
  GH_ERR_BODY_TOO_LARGE: { status: 413, message: 'request body exceeds the route limit' },
  GH_ERR_HEADERS_TOO_LARGE: { status: 431, message: 'request header block exceeds the limit' },
  GH_ERR_TOO_MANY_HEADERS: { status: 431, message: 'request has more header fields than the limit' },
  GH_ERR_TRANSFER_ENCODING: { status: 400, message: 'unsupported or ambiguous Transfer-Encoding' },
  GH_ERR_HTTP_VERSION: { status: 505, message: 'only HTTP/1.0 and HTTP/1.1 are served' },
  GH_ERR_HEADER_TIMEOUT: { status: 408, message: 'request headers not received in time' },
  GH_ERR_BODY_TIMEOUT: { status: 408, message: 'request body stalled past the body timeout' },
  GH_ERR_BODY_INCOMPLETE: { status: 400, message: 'request body ended before its Content-Length' },
  GH_ERR_RANGE: { status: 416, message: 'range not satisfiable' },
  GH_ERR_UPSTREAM: { status: 502, message: 'upstream failed or sent an invalid response' },
  GH_ERR_FASTCGI_PROTOCOL: {
    status: 502,
    message: 'FastCGI upstream broke the protocol or sent an invalid response',
  },
  GH_ERR_UPSTREAM_TIMEOUT: { status: 504, message: 'upstream did not answer in time' },
  GH_ERR_UPSTREAM_CONNECT: { status: 502, message: 'cannot connect to the upstream' },
  GH_ERR_UPSTREAM_DOWN: { status: 502, message: 'no server of the upstream group is up' },
  GH_ERR_UPSTREAM_BUSY: {
    status: 503,
    message: 'every server of the upstream group that is up is at max_conns',
  },
  GH_ERR_UWSGI_PACKET: { status: 400, message: 'malformed uwsgi packet' },
  GH_ERR_UWSGI_PLAIN_HTTP: { status: 400, message: 'plain HTTP sent to a uwsgi socket' },
  GH_ERR_UWSGI_VARS_TOO_LARGE: { status: 431, message: 'uwsgi vars block exceeds the limit' },
  GH_ERR_UWSGI_MODIFIER: { status: 501, message: 'unsupported uwsgi modifier1' },
  GH_ERR_FASTCGI_BAD_RECORD: { status: 400, message: 'malformed FastCGI input from the web server' },
  GH_ERR_FASTCGI_PARAMS_TOO_LARGE: { status: 431, message: 'FastCGI params exceed the limit' },
  GH_ERR_FASTCGI_ROLE: { status: undefined, message: 'FastCGI role not supported' },
  GH_ERR_FASTCGI_UNKNOWN_TYPE: { status: undefined, message: 'FastCGI record type not understood' },
  GH_ERR_FASTCGI_MPX: { status: undefined, message: 'second concurrent FastCGI request on one connection' },
  GH_ERR_CGI_SPAWN: { status: 502, message: 'CGI script could not be started' },
  GH_ERR_CGI_RESPONSE: { status: 502, message: 'CGI script sent no valid response header block' },
  GH_ERR_CGI_REDIRECT: { status: 502, message: 'CGI local redirect failed (loop, or outside the route)' },
  GH_ERR_SENDFILE_PATH: { status: 403, message: 'X-Sendfile names a file outside sendfile.root' },
  GH_ERR_ACCEL_REDIRECT: { status: 404, message: 'X-Accel-Redirect names a URI no internal route serves' },
  GH_ERR_WORKER_PROTOCOL: { status: 502, message: 'Python worker broke the bridge protocol' },
  GH_ERR_WSGI_APP: { status: 500, message: 'the WSGI application failed' },
  GH_ERR_ASGI_APP: { status: 500, message: 'the ASGI application failed' },
  GH_ERR_ASGI_TIMEOUT: { status: 504, message: 'the ASGI request ran past its timeout and was cancelled' },
  GH_ERR_WEBSOCKET_HANDSHAKE: { status: 400, message: 'invalid WebSocket handshake' },
  GH_ERR_WEBSOCKET_DENIED: { status: 403, message: 'the application refused the WebSocket' },
  GH_ERR_OVERLOADED: { status: 503, message: 'server is overloaded; retry later' },
  GH_ERR_CONN_LIMIT: { status: 503, message: 'too many connections from this address' },
  GH_ERR_HTTP2: { status: undefined, message: 'HTTP/2 session ended for a protocol error' },
  GH_ERR_HTTP2_FLOOD: { status: undefined, message: 'HTTP/2 client reset too many streams' },
  GH_ERR_WORKER_START: { status: 503, message: 'worker pool cannot start its workers' },
  GH_ERR_WORKER_TIMEOUT: {
    status: 504,
    message: 'worker exceeded request_terminate_timeout and was killed',
  },
  GH_ERR_WORKER_DIED: { status: 502, message: 'worker died or closed its connection during the request' },
  GH_ERR_INTERNAL: { status: 500, message: 'internal server error' },
  GH_ERR_CONTROL_AUTH: { status: 401, message: 'control API request without the right bearer token' },
  GH_ERR_CONTROL_PATH: { status: 404, message: 'no such path in the configuration' },
  GH_ERR_CONTROL_REQUEST: { status: 400, message: 'control API request cannot be applied as given' },
  GH_ERR_CONTROL_APPLY: {
    status: 409,
    message: 'the new configuration was not applied; the old one still serves',
  },
  GH_ERR_CONTROL_STATE: { status: 500, message: 'cannot write the control state file' },
} as const satisfies Record<string, { status: number | undefined; message: string }>

export type ErrorCode = keyof typeof ERROR_CODES

export class GatehouseError extends Error {
  readonly code: ErrorCode
  readonly status: number | undefined
  /** For GH_ERR_CONFIG / GH_ERR_USAGE: every problem found, each `path: message`. */
  readonly problems: readonly string[]
  /** Seconds a client should wait before retrying (sent as Retry-After with a 503). */
  readonly retryAfter: number | undefined

  constructor(
    code: ErrorCode,
    detail?: string,
    options?: { cause?: unknown; problems?: readonly string[]; retryAfter?: number },
  ) {
    const base = ERROR_CODES[code]
    super(detail ? `${base.message}: ${detail}` : base.message, { cause: options?.cause })
    this.name = 'GatehouseError'
    this.code = code
    this.status = base.status
    this.problems = options?.problems ?? []
    this.retryAfter = options?.retryAfter
  }
}

/** The wire protocols whose codecs throw ProtocolError. */
export type Protocol = 'fastcgi' | 'uwsgi' | 'http' | 'chunked' | 'bridge' | 'cgi'

/**
 * The one error a codec throws (undici and pg-protocol style): a pure parser or encoder
 * knows only that bytes broke its protocol, so it says which protocol and which rule, in
 * that protocol's own terms (`FCGI_BAD_VERSION`, `UWSGI_BAD_VAR`, `BRIDGE_FRAME_TOO_LARGE`).
 * What that means for a client is decided by the edge that owns the socket or the request:
 * it maps the ProtocolError to a GatehouseError with a GH_ERR_* code and an HTTP status
 * (each gateway's errors.ts), the ProtocolError as its `cause`. The message is the detail
 * alone; the edge's GatehouseError puts its own text in front of it.
 */
export class ProtocolError extends Error {
  readonly protocol: Protocol
  /** The protocol's own code, stable: tests and logs branch on it. */
  readonly code: string

  constructor(protocol: Protocol, code: string, message: string) {
    super(message)
    this.name = 'ProtocolError'
    this.protocol = protocol
    this.code = code
  }
}

export function isProtocolError(value: unknown, protocol?: Protocol): value is ProtocolError {
  return value instanceof ProtocolError && (protocol === undefined || value.protocol === protocol)
}

export function isGatehouseError(value: unknown): value is GatehouseError {
  return value instanceof GatehouseError
}
