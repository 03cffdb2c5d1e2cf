/*
 * What an undici failure means for the client (docs/proxy.md, "Errors"): connection refused
 * or unreachable -> 502 GH_ERR_UPSTREAM_CONNECT; any of the three timeouts -> 504
 * GH_ERR_UPSTREAM_TIMEOUT; a reset, an early close or an invalid reply -> 502
 * GH_ERR_UPSTREAM. Our own errors (a body over the limit) pass through.
 */
import { GatehouseError } from '../../core/errors.js'

const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'ENOENT',
  'EACCES',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EADDRNOTAVAIL',
])

const TIMEOUT_CODES: Record<string, string> = {
  UND_ERR_CONNECT_TIMEOUT: 'connect timeout',
  UND_ERR_HEADERS_TIMEOUT: 'no response head within first_byte_timeout',
  UND_ERR_BODY_TIMEOUT: 'response body idle past idle_timeout',
}

export function proxyError(err: unknown, upstream: string): unknown {
  if (err instanceof GatehouseError) return err
  const code = (err as { code?: unknown } | null)?.code
  const message = (err as Error | null)?.message ?? String(err)
  if (typeof code === 'string') {
    if (CONNECT_CODES.has(code))
      return new GatehouseError('GH_ERR_UPSTREAM_CONNECT', `${upstream}: ${message}`, { cause: err })
    const timeout = TIMEOUT_CODES[code]
    if (timeout !== undefined)
      return new GatehouseError('GH_ERR_UPSTREAM_TIMEOUT', `${upstream}: ${timeout}`, { cause: err })
  }
  return new GatehouseError('GH_ERR_UPSTREAM', `${upstream}: ${message}`, { cause: err })
}

/** A failure after which an idempotent request may be sent again: the connection broke before any answer. */
export function isRetryable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE'
}
