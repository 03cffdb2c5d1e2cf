/*
 * Trying a request on the servers of a group, one after another, as nginx's
 * proxy_next_upstream does: a try that fails before anything went to the client is
 * repeated on another server (never the same one) when the request is idempotent and its
 * body can be sent again, up to `tries` servers and for at most `try_timeout`.
 */
import type { CancelSignal } from '../cancel.js'
import { GatehouseError } from '../errors.js'
import type { NextUpstream, UpstreamGroup, UpstreamLease, UpstreamServer } from './group.js'

/** RFC 9110 9.2.2: the methods whose repetition has the effect of one request. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])

export function isIdempotent(method: string): boolean {
  return IDEMPOTENT.has(method.toUpperCase())
}

/**
 * Which next_upstream case an error is: `error` (the connection failed, was reset, or the
 * reply was invalid), `timeout`, or undefined for an error that is not the server's fault
 * (the request body too large, the client gone, our own queue full).
 */
export function failureKind(err: unknown): 'error' | 'timeout' | undefined {
  if (!(err instanceof GatehouseError)) return undefined
  switch (err.code) {
    case 'GH_ERR_UPSTREAM_TIMEOUT':
      return 'timeout'
    case 'GH_ERR_UPSTREAM_CONNECT':
    case 'GH_ERR_UPSTREAM':
    case 'GH_ERR_FASTCGI_PROTOCOL':
    case 'GH_ERR_WORKER_DIED':
      return 'error'
    default:
      return undefined
  }
}

export interface UpstreamTryOptions<T> {
  group: UpstreamGroup
  /**
   * The request may go to another server after a failure: it is idempotent (isIdempotent)
   * and its body can be sent again (none, or buffered). Nothing has reached the client yet
   * while tries run (a try ends with the response head), which is the third condition.
   */
  retryable: boolean
  /** The client went away: no further try, and the lease is released as neutral. */
  signal?: CancelSignal | undefined
  /** One try on `server`: resolves with the response head (its body not yet relayed). */
  attempt(server: UpstreamServer, lease: UpstreamLease): Promise<T>
  /** The response's status, to match next_upstream's http_502/503/504. */
  status?(result: T): number
  /** Drop a response that is not used (a 502 that is retried): its body, its connection. */
  discard?(result: T): void
}

export interface UpstreamTryResult<T> {
  result: T
  /** Still held: release it when the response has been relayed (lease.release(), or 'failure' if that broke). */
  lease: UpstreamLease
  /** Servers tried, this one included. */
  tries: number
}

/**
 * Run `attempt` on a server of the group, and on others while it fails and may be retried.
 * Resolves with the first usable response and its lease (still held). Rejects with the last
 * failure, or the group's GH_ERR_UPSTREAM_DOWN/BUSY when no server could be tried at all.
 * A response whose status is in next_upstream is retried like an error when it may be;
 * when it may not, it is returned (its lease marked 'failure').
 */
export async function tryUpstreams<T>(options: UpstreamTryOptions<T>): Promise<UpstreamTryResult<T>> {
  const { group, signal } = options
  const next = new Set<NextUpstream>(group.spec.next_upstream)
  const started = Date.now()
  const tried = new Set<UpstreamServer>()
  const mayGoOn = () =>
    options.retryable &&
    !signal?.aborted &&
    tried.size < group.maxTries &&
    tried.size < group.servers.length &&
    (group.spec.try_timeout === 0 || Date.now() - started < group.spec.try_timeout)
  let lastError: unknown
  for (;;) {
    let lease: UpstreamLease
    try {
      lease = group.acquire(tried)
    } catch (err) {
      throw tried.size > 0 ? lastError : err
    }
    tried.add(lease.server)
    let result: T
    try {
      result = await options.attempt(lease.server, lease)
    } catch (err) {
      const kind = failureKind(err)
      if (kind === undefined || signal?.aborted) {
        lease.release('neutral')
        throw err
      }
      group.noteError(lease.server, err)
      lease.release('failure')
      lastError = err
      if (next.has(kind) && mayGoOn()) continue
      throw err
    }
    const status = options.status?.(result)
    const failedStatus =
      status !== undefined &&
      (status === 502 || status === 503 || status === 504) &&
      next.has(`http_${status}`)
    if (!failedStatus) return { result, lease, tries: tried.size }
    group.noteError(lease.server, new Error(`answered ${status}`))
    if (!mayGoOn()) {
      lease.outcome = 'failure'
      return { result, lease, tries: tried.size }
    }
    options.discard?.(result)
    lease.release('failure')
    lastError = new GatehouseError('GH_ERR_UPSTREAM', `${lease.server.address} answered ${status}`)
  }
}
