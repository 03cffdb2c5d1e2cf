/*
 * FastCGI to a managed pool of workers (php-cgi -b): the supervisor (process/pool.ts)
 * leases one idle worker per request, and the request goes over a kept-alive connection to
 * that worker's own socket with the same exchange as the address pool (pool.ts). A worker
 * the supervisor kills mid-request (request_terminate_timeout, or one that died) turns into
 * the lease's reason: GH_ERR_WORKER_TIMEOUT (504) or GH_ERR_WORKER_DIED (502).
 */
import { connect } from 'node:net'
import { GatehouseError } from '../../core/errors.js'
import { IDEMPOTENT_METHODS } from '../../core/http-headers.js'
import type { RequestInfo, WorkerLease } from '../../process/lease.js'
import type { PoolHandle } from '../../process/pool-handle.js'
import { FastCGIConnection } from './connection.js'
import { FastCGIExchange, type FastCGIRequest, type FastCGIResponse } from './exchange.js'

/** What a FastCGI gateway sends requests through: an address pool or a managed pool. */
export interface FastCGIUpstream {
  /** For logs: `unix:/run/php.sock`, or `pool:php`. */
  readonly upstream: string
  request(request: FastCGIRequest): Promise<FastCGIResponse>
  close(): Promise<void>
}

export interface ManagedFastCGIOptions {
  connect_timeout: number
  read_timeout: number
  max_header_bytes: number
}

/** Workers a request tries when they vanish before answering it, before it fails (502). */
const ATTEMPTS = 3

const AGAIN = Symbol('again')

/** The pool ended the lease because its worker died (not for a timeout: that 504 stands). */
function diedUnder(lease: WorkerLease): boolean {
  return (
    lease.aborted &&
    lease.abortReason instanceof GatehouseError &&
    lease.abortReason.code === 'GH_ERR_WORKER_DIED'
  )
}

export class ManagedFastCGI implements FastCGIUpstream {
  readonly upstream: string
  /** Kept-alive connections by worker id (a php-cgi worker serves one connection at a time). */
  private readonly idle = new Map<number, FastCGIConnection[]>()

  constructor(
    readonly workers: PoolHandle,
    private readonly options: ManagedFastCGIOptions,
  ) {
    this.upstream = `pool:${workers.settings.name}`
    workers.onWorkerStopping((id) => {
      for (const conn of this.idle.get(id) ?? []) conn.destroy()
      this.idle.delete(id)
    })
  }

  async request(request: FastCGIRequest): Promise<FastCGIResponse> {
    for (let attempt = 1; ; attempt++) {
      const tried = await this.attempt(request, attempt < ATTEMPTS)
      if (tried !== AGAIN) return tried
    }
  }

  /**
   * One worker's try at a request. AGAIN when the worker vanished before it was given
   * anything (its socket refused the connection: it died and its exit is not seen yet), or
   * before it answered anything of an idempotent request whose body can be sent again (a
   * kept-alive connection to a worker that just died fails on the write); the failed worker
   * is retired and the request goes to another (chaos test, issue 18).
   */
  private async attempt(request: FastCGIRequest, mayRetry: boolean): Promise<FastCGIResponse | typeof AGAIN> {
    const signal = request.signal
    const info = requestInfo(request.params)
    if (request.upstream) info.upstream = request.upstream
    const lease = await this.workers.acquire(info, signal)
    let conn: FastCGIConnection
    try {
      conn = this.take(lease.workerId) ?? (await this.open(lease))
    } catch (err) {
      lease.release({ failed: !lease.aborted })
      // Refused, or its death was seen while connecting: nothing was sent either way.
      const refused =
        !signal?.aborted &&
        (diedUnder(lease) ||
          (!lease.aborted && err instanceof GatehouseError && err.code === 'GH_ERR_UPSTREAM_CONNECT'))
      if (refused && mayRetry) return AGAIN
      throw lease.aborted ? lease.abortReason : err
    }
    // The request ends when the client goes away or the supervisor ends it (kill, death).
    const cancel = new EitherCancel(signal, lease)
    const exchange = new FastCGIExchange(
      conn,
      { ...request, signal: cancel },
      {
        // A php-cgi worker serves one connection at a time: with front threads (the pool
        // shared), a connection kept by one front would block the worker for the others.
        keepConn: !this.workers.shared,
        readTimeoutMs: this.options.read_timeout,
        maxHeaderBytes: this.options.max_header_bytes,
        // Errors name the worker: `pool:php worker pid 1234 closed the connection ...`.
        upstream: `${this.upstream} worker pid ${lease.pid}`,
        // A client that gives up does not end the script: the worker stays leased (busy on
        // the status page, given no request) until its END_REQUEST, or until it is replaced.
        drainAfterAbort: true,
        // The connection and the worker go back as soon as the exchange is over.
        onFinished: (reusable, failure) => {
          cancel.dispose()
          if (reusable && !lease.aborted && !conn.closed) this.putBack(lease.workerId, conn)
          else conn.destroy()
          // A worker that broke the protocol or closed the connection under a request (it is
          // dying: its exit may not have been seen yet) must not take the next request.
          const broken = failure !== null && failure.code === 'GH_ERR_FASTCGI_PROTOCOL'
          lease.release({ failed: broken && !lease.aborted })
        },
      },
    )
    try {
      return await exchange.response
    } catch (err) {
      // Killed for its timeout: the reason (504) stands, and a stuck request is not sent again.
      const vanished =
        !exchange.received &&
        exchange.replayable &&
        IDEMPOTENT_METHODS.has(info.method) &&
        !signal?.aborted &&
        (diedUnder(lease) ||
          (!lease.aborted &&
            err instanceof GatehouseError &&
            (err.code === 'GH_ERR_FASTCGI_PROTOCOL' || err.code === 'GH_ERR_WORKER_DIED')))
      if (vanished && mayRetry) {
        await exchange.finished
        return AGAIN
      }
      if (lease.aborted) throw lease.abortReason
      throw err
    }
  }

  /** Close the idle connections and stop the workers. */
  async close(): Promise<void> {
    for (const list of this.idle.values()) for (const conn of list) conn.destroy()
    this.idle.clear()
    await this.workers.close(this.workers.settings.process_control_timeout)
  }

  private take(workerId: number): FastCGIConnection | undefined {
    const list = this.idle.get(workerId)
    while (list && list.length > 0) {
      const conn = list.pop()!
      if (!conn.closed) {
        conn.socket.ref()
        return conn
      }
    }
    return undefined
  }

  private putBack(workerId: number, conn: FastCGIConnection): void {
    conn.socket.unref()
    let list = this.idle.get(workerId)
    if (!list) this.idle.set(workerId, (list = []))
    list.push(conn)
  }

  private forget(conn: FastCGIConnection): void {
    for (const [id, list] of this.idle) {
      const i = list.indexOf(conn)
      if (i === -1) continue
      list.splice(i, 1)
      if (list.length === 0) this.idle.delete(id)
      return
    }
  }

  private open(lease: WorkerLease): Promise<FastCGIConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect(lease.socketPath)
      const done = () => {
        clearTimeout(timer)
        socket.off('connect', onConnect)
        socket.off('error', onError)
      }
      const onConnect = () => {
        done()
        resolve(new FastCGIConnection(socket, (c) => this.forget(c)))
      }
      const onError = (err: NodeJS.ErrnoException) => {
        done()
        socket.destroy()
        reject(
          new GatehouseError(
            'GH_ERR_UPSTREAM_CONNECT',
            `${this.upstream} worker pid ${lease.pid}: ${err.code}`,
            {
              cause: err,
            },
          ),
        )
      }
      const timer = setTimeout(() => {
        done()
        socket.destroy()
        reject(
          new GatehouseError(
            'GH_ERR_UPSTREAM_TIMEOUT',
            `connect to ${this.upstream} worker pid ${lease.pid}: no answer within ${this.options.connect_timeout} ms`,
          ),
        )
      }, this.options.connect_timeout)
      socket.once('connect', onConnect)
      socket.once('error', onError)
    })
  }
}

/** Method, URI and script for the status page and the slow log, from the CGI meta-variables. */
function requestInfo(params: FastCGIRequest['params']): RequestInfo {
  const get = (name: string): string | undefined => {
    if (Symbol.iterator in params) {
      for (const [k, v] of params as Iterable<readonly [string, string]>) if (k === name) return v
      return undefined
    }
    return (params as Record<string, string>)[name]
  }
  const length = Number(get('CONTENT_LENGTH') ?? 0)
  return {
    method: get('REQUEST_METHOD') ?? '-',
    uri: get('REQUEST_URI') ?? get('SCRIPT_NAME') ?? '-',
    contentLength: Number.isFinite(length) ? length : 0,
    script: get('SCRIPT_FILENAME') ?? '',
  }
}

type Cancellable = NonNullable<FastCGIRequest['signal']>

/**
 * Aborts when the client's signal or the lease does, with that one's reason: the surface of
 * an AbortSignal the exchange uses, without an EventTarget per request.
 */
class EitherCancel implements Cancellable {
  aborted = false
  reason: unknown = undefined
  private listeners: (() => void)[] = []
  private readonly offLease: () => void
  private readonly onClient: (() => void) | undefined

  constructor(
    private readonly client: Cancellable | undefined,
    lease: WorkerLease,
  ) {
    if (client) {
      this.onClient = () => this.abort(client.reason)
      if (client.aborted) this.abort(client.reason)
      else client.addEventListener('abort', this.onClient, { once: true })
    }
    this.offLease = lease.onAbort((reason) => this.abort(reason))
  }

  addEventListener(_type: 'abort', listener: () => void): void {
    this.listeners.push(listener)
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const i = this.listeners.indexOf(listener)
    if (i !== -1) this.listeners.splice(i, 1)
  }

  dispose(): void {
    this.offLease()
    if (this.client && this.onClient) this.client.removeEventListener('abort', this.onClient)
  }

  private abort(reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    for (const listener of this.listeners.splice(0)) listener()
  }
}
