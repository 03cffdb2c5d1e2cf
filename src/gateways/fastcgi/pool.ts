/*
 * A pool of kept-alive connections to one FastCGI server (php-fpm, php-cgi -b, fcgiwrap, any
 * FastCGI application), over a Unix socket or TCP. At most `max_connections` requests run at
 * once, each on its own connection (FCGI_KEEP_CONN, request id 1, no multiplexing); up to
 * `queue` more wait their turn, and past that the answer is GH_ERR_OVERLOADED (503).
 * docs/fastcgi.md is the user's view.
 */
import { connect, type Socket } from 'node:net'
import type { Logger } from 'pino'
import { z } from 'zod'
import { strictObject } from '../../core/schema/strict.js'
import { duration, size } from '../../core/schema/units.js'
import { GatehouseError } from '../../core/errors.js'
import { ConcurrencyLimiter } from '../../process/limiter.js'
import { type ListenAddress, parseListenAddress } from '../../core/address.js'
import { upstreamAddress } from '../../core/upstream/schema.js'
import { FastCGIConnection } from './connection.js'
import { type CancelSignal, FastCGIExchange, type FastCGIRequest, type FastCGIResponse } from './exchange.js'

export type { CancelSignal, FastCGIRequest, FastCGIResponse } from './exchange.js'

/** How long a new connection may wait for its first byte before it counts as starved (see starving()). */
const STARVING_MS = 25

/** A FastCGI server's address in the config: the rules of every upstream address. */
export const fastcgiAddress = upstreamAddress

/** The pool keys, shared by the `fastcgi` and `php` actions and the library. */
export const fastcgiPoolShape = {
  /** Connections (= requests in flight) at most. With php-fpm, keep it at most pm.max_children. */
  max_connections: z.number().int().min(1).max(10_000).default(16),
  /** Requests that may wait for a connection; more get 503. */
  queue: z.number().int().min(0).max(1_000_000).default(256),
  /** How long a request may wait for a connection before it gets 503. */
  queue_timeout: duration.prefault(10),
  connect_timeout: duration.prefault(5),
  /** Longest silence from the server while it owes us data (between two reads, like nginx's fastcgi_read_timeout). */
  read_timeout: duration.prefault(60),
  /**
   * An unused kept-alive connection is closed after this. Short, because php-fpm gives each
   * connection a worker of its own for as long as it is open, idle or not.
   */
  idle_timeout: duration.prefault(2),
  /** FCGI_KEEP_CONN: reuse connections (false: one connection per request, like nginx's default). */
  keep_conn: z.boolean().default(true),
  /** Largest CGI header block accepted on FCGI_STDOUT. */
  max_header_bytes: size.prefault(32 * 1024),
}

export function fastcgiPoolSchema() {
  return strictObject(fastcgiPoolShape)
}

export type FastCGIPoolOptions = z.output<ReturnType<typeof fastcgiPoolSchema>>
export type FastCGIPoolInput = z.input<ReturnType<typeof fastcgiPoolSchema>>

export interface FastCGIPoolStats {
  upstream: string
  /** Open connections, busy and idle. */
  connections: number
  idle: number
  /** Requests being served. */
  active: number
  /** Requests waiting for a connection. */
  queued: number
  /** Connections opened since the pool started. */
  opened: number
  /** Requests started since the pool started. */
  requests: number
  /** Of those, the ones that went over a connection a previous request had used. */
  reused: number
}

/** Live pools per upstream in this process (routes and library users each may have their own). */
const poolsByUpstream = new Map<string, Set<FastCGIPool>>()

export class FastCGIPool {
  readonly upstream: string
  private readonly address: Exclude<ListenAddress, { kind: 'fd' }>
  private readonly limiter: ConcurrencyLimiter
  private readonly idle: FastCGIConnection[] = []
  private readonly busy = new Set<FastCGIConnection>()
  private readonly idleTimers = new Map<FastCGIConnection, NodeJS.Timeout>()
  private opened = 0
  private requests = 0
  private reused = 0
  private closing = false
  private closedWaiters: (() => void)[] = []

  constructor(
    address: string,
    private readonly options: FastCGIPoolOptions,
    private readonly log?: Logger,
  ) {
    const parsed = parseListenAddress(address)
    if (parsed.kind === 'fd') throw new Error(`a FastCGI upstream is connected to, not inherited: ${address}`)
    this.address = parsed
    this.upstream = this.address.kind === 'unix' ? `unix:${this.address.path}` : this.address.text
    this.limiter = new ConcurrencyLimiter({
      max: options.max_connections,
      queue: options.queue,
      queueTimeoutMs: options.queue_timeout,
    })
    let siblings = poolsByUpstream.get(this.upstream)
    if (!siblings) poolsByUpstream.set(this.upstream, (siblings = new Set()))
    siblings.add(this)
  }

  stats(): FastCGIPoolStats {
    return {
      upstream: this.upstream,
      connections: this.idle.length + this.busy.size,
      idle: this.idle.length,
      active: this.limiter.active,
      queued: this.limiter.queued,
      opened: this.opened,
      requests: this.requests,
      reused: this.reused,
    }
  }

  /**
   * Send one request. Resolves with the response head and a streamed body once the header
   * block has arrived; rejects with a GatehouseError (GH_ERR_OVERLOADED, GH_ERR_UPSTREAM_CONNECT,
   * GH_ERR_FASTCGI_PROTOCOL, GH_ERR_UPSTREAM_TIMEOUT, GH_ERR_BODY_TOO_LARGE) or the signal's reason.
   * The connection returns to the pool when the body has been read to its end.
   */
  async request(request: FastCGIRequest): Promise<FastCGIResponse> {
    if (this.closing) throw new GatehouseError('GH_ERR_OVERLOADED', `${this.upstream}: pool closed`)
    // A wait in the limiter's queue ends early when the request is cancelled.
    const slot = await this.limiter.acquire(request.signal)
    const release = () => {
      slot()
      if (this.closing && this.limiter.active === 0 && this.limiter.queued === 0) {
        for (const resolve of this.closedWaiters.splice(0)) resolve()
      }
    }
    this.requests++
    try {
      for (let attempt = 0; ; attempt++) {
        const reusedConn = this.takeIdle()
        const conn = reusedConn ?? (await this.open(request.signal))
        if (reusedConn) this.reused++
        this.busy.add(conn)
        // The connection goes back (or is closed) when the exchange is over, then the slot
        // is freed, once the response was handed out (on failure, the catch below frees it).
        let responded = false
        let finished = false
        const exchange = new FastCGIExchange(conn, request, {
          keepConn: this.options.keep_conn,
          readTimeoutMs: this.options.read_timeout,
          maxHeaderBytes: this.options.max_header_bytes,
          upstream: this.upstream,
          onFinished: (reusable) => {
            finished = true
            this.putBack(conn, reusable)
            if (responded) release()
          },
        })
        try {
          const response = await exchange.response
          responded = true
          if (finished) release()
          return response
        } catch (err) {
          if (!finished) await exchange.finished
          // A kept-alive connection the server had closed meanwhile (php-fpm recycling a worker):
          // nothing was read from it, so the request can go again on a fresh connection, once.
          const stale =
            reusedConn !== undefined &&
            attempt === 0 &&
            !exchange.received &&
            exchange.replayable &&
            err instanceof GatehouseError &&
            err.code === 'GH_ERR_FASTCGI_PROTOCOL' &&
            !request.signal?.aborted
          if (!stale) throw err
          this.log?.debug({ upstream: this.upstream }, 'fastcgi: kept-alive connection was closed; retrying')
          // The other idle ones are likely stale too (a restarted server): the retry gets a new one.
          this.dropIdle()
        }
      }
    } catch (err) {
      release()
      throw err
    }
  }

  /**
   * Stop taking requests and close idle connections; resolves when the requests in flight
   * (and those already queued) are done.
   */
  close(): Promise<void> {
    this.closing = true
    const siblings = poolsByUpstream.get(this.upstream)
    siblings?.delete(this)
    if (siblings?.size === 0) poolsByUpstream.delete(this.upstream)
    this.dropIdle()
    if (this.limiter.active === 0 && this.limiter.queued === 0) return Promise.resolve()
    return new Promise((resolve) => this.closedWaiters.push(resolve))
  }

  private takeIdle(): FastCGIConnection | undefined {
    for (;;) {
      const conn = this.idle.pop()
      if (!conn) return undefined
      this.clearIdleTimer(conn)
      if (conn.closed) continue
      conn.socket.ref()
      return conn
    }
  }

  private putBack(conn: FastCGIConnection, reusable: boolean): void {
    this.busy.delete(conn)
    if (reusable && !this.closing && !conn.closed && !this.starving(conn)) {
      conn.socket.unref()
      this.idle.push(conn)
      if (this.options.idle_timeout > 0) {
        const timer = setTimeout(() => {
          this.idleTimers.delete(conn)
          const i = this.idle.indexOf(conn)
          if (i !== -1) this.idle.splice(i, 1)
          conn.destroy()
        }, this.options.idle_timeout)
        timer.unref()
        this.idleTimers.set(conn, timer)
      }
    } else conn.destroy()
  }

  /**
   * A server that serves one connection per worker (php-fpm: a worker stays with a kept-alive
   * connection until it closes) leaves connections opened beyond its worker count waiting in
   * its listen queue for as long as the kept-alive ones are reused. While a new connection
   * has waited more than STARVING_MS for its first byte, a finished connection is closed
   * rather than kept, which frees its worker for the waiting one: under overload the pool
   * falls back to a connection per request instead of starving requests until read_timeout.
   * A new connection younger than that is most likely just being served (counting those
   * made every finished connection close while new ones were being opened, and the pool
   * never settled on kept-alive connections).
   */
  private starving(released: FastCGIConnection): boolean {
    const now = performance.now()
    for (const conn of this.busy)
      if (conn !== released && conn.awaitingFirstByte && now - conn.openedAt > STARVING_MS) return true
    return false
  }

  /**
   * The same holds across pools to one upstream (two routes, or a route and a library
   * user): a new connection would wait behind the workers their idle connections hold, so
   * opening one closes those. This pool has none idle, or it would not be opening one.
   */
  private releaseSiblingWorkers(): void {
    for (const pool of poolsByUpstream.get(this.upstream) ?? []) if (pool !== this) pool.dropIdle()
  }

  /**
   * Close the idle connections every pool in this process holds to `upstream` (a health
   * probe about to open a connection of its own: see releaseSiblingWorkers).
   */
  static dropIdleTo(upstream: string): void {
    for (const pool of poolsByUpstream.get(upstream) ?? []) pool.dropIdle()
  }

  /** Close the idle connections (the server's workers they hold are freed). */
  dropIdle(): void {
    for (const conn of this.idle.splice(0)) {
      this.clearIdleTimer(conn)
      conn.destroy()
    }
  }

  private clearIdleTimer(conn: FastCGIConnection): void {
    const timer = this.idleTimers.get(conn)
    if (timer) {
      clearTimeout(timer)
      this.idleTimers.delete(conn)
    }
  }

  private forget(conn: FastCGIConnection): void {
    this.clearIdleTimer(conn)
    const i = this.idle.indexOf(conn)
    if (i !== -1) this.idle.splice(i, 1)
  }

  private open(signal: CancelSignal | undefined): Promise<FastCGIConnection> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason)
        return
      }
      this.releaseSiblingWorkers()
      const address = this.address
      const socket: Socket =
        address.kind === 'unix' ? connect(address.path) : connect({ host: address.host, port: address.port })
      const cleanup = () => {
        clearTimeout(timer)
        socket.off('connect', onConnect)
        socket.off('error', onError)
        signal?.removeEventListener('abort', onAbort)
      }
      const onConnect = () => {
        cleanup()
        if (address.kind === 'tcp') socket.setNoDelay(true)
        this.opened++
        const conn = new FastCGIConnection(socket, (c) => this.forget(c))
        conn.awaitingFirstByte = true
        resolve(conn)
      }
      const onError = (err: NodeJS.ErrnoException) => {
        cleanup()
        socket.destroy()
        reject(connectError(this.upstream, err))
      }
      const onAbort = () => {
        cleanup()
        socket.destroy()
        reject(signal!.reason)
      }
      const timer = setTimeout(() => {
        cleanup()
        socket.destroy()
        reject(
          new GatehouseError(
            'GH_ERR_UPSTREAM_TIMEOUT',
            `connect to ${this.upstream}: no answer within ${this.options.connect_timeout} ms (connect_timeout)`,
          ),
        )
      }, this.options.connect_timeout)
      socket.once('connect', onConnect)
      socket.once('error', onError)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }
}

function connectError(upstream: string, err: NodeJS.ErrnoException): GatehouseError {
  // A Unix socket whose listen queue is full refuses with EAGAIN: the server is busy, not gone.
  if (err.code === 'EAGAIN')
    return new GatehouseError('GH_ERR_OVERLOADED', `connect to ${upstream}: listen queue full`, {
      cause: err,
    })
  return new GatehouseError('GH_ERR_UPSTREAM_CONNECT', `${upstream}: ${err.code ?? err.message}`, {
    cause: err,
  })
}

/** Validate pool options (the config file's keys) and create a pool; GH_ERR_CONFIG lists every problem. */
export function createFastCGIPool(
  address: string,
  options: FastCGIPoolInput = {},
  log?: Logger,
): FastCGIPool {
  const problems: string[] = []
  const addr = fastcgiAddress({ baseDir: process.cwd() }).safeParse(address)
  if (!addr.success) problems.push(`address: ${addr.error.issues[0]?.message}`)
  const parsed = fastcgiPoolSchema().safeParse(options)
  if (!parsed.success)
    problems.push(
      ...parsed.error.issues.map((i) => `${i.path.map(String).join('.') || '(options)'}: ${i.message}`),
    )
  if (!parsed.success || problems.length > 0)
    throw new GatehouseError('GH_ERR_CONFIG', problems.join('; '), { problems })
  return new FastCGIPool(addr.data!, parsed.data, log)
}

const sharedPools = new Map<string, FastCGIPool>()

/**
 * One request to a FastCGI server, for use without a route:
 *
 *   const res = await fastcgiRequest('unix:/run/php/php-fpm.sock', {
 *     params: { SCRIPT_FILENAME: '/srv/www/index.php', REQUEST_METHOD: 'GET', ... },
 *   })
 *   res.status; res.headers; res.body.pipe(...)
 *
 * Given an address, the request goes through a pool shared by every call for that address
 * (default options; its idle connections do not keep the process alive). Pass a pool from
 * createFastCGIPool() to choose the limits.
 */
export function fastcgiRequest(
  upstream: string | FastCGIPool,
  request: FastCGIRequest,
): Promise<FastCGIResponse> {
  if (typeof upstream !== 'string') return upstream.request(request)
  let pool = sharedPools.get(upstream)
  if (!pool) {
    pool = createFastCGIPool(upstream)
    sharedPools.set(upstream, pool)
  }
  return pool.request(request)
}
