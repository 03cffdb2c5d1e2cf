import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { ERROR_CODES, type ErrorCode, GatehouseError } from './errors.js'
import { reasonPhrase } from './http-headers.js'

export interface SimpleResponse {
  headers?: OutgoingHttpHeaders
  body?: string | Buffer
  /** Close the connection after the response (refused input, errors that leave framing unknown). */
  close?: boolean
  /** HEAD: send the headers (with Content-Length) and no body. */
  head?: boolean
}

/** A complete response with a plain-text body that names the status, e.g. `404 Not Found`. */
export function sendStatus(res: ServerResponse, status: number, options: SimpleResponse = {}): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const body = options.body ?? (status === 204 || status === 304 ? '' : `${status} ${reasonPhrase(status)}\n`)
  const buf = typeof body === 'string' ? Buffer.from(body) : body
  const headers: OutgoingHttpHeaders = { ...options.headers }
  if (buf.length > 0 && headers['content-type'] === undefined)
    headers['content-type'] = 'text/plain; charset=utf-8'
  if (status !== 204 && status !== 304) headers['content-length'] = buf.length
  if (options.close) {
    headers.connection = 'close'
    res.shouldKeepAlive = false
  }
  // The phrase is given: a head that an earlier writeHead refused may have left its own
  // phrase behind (an app's 302 "Found" on our 500).
  res.writeHead(status, reasonPhrase(status), headers)
  res.end(options.head || status === 204 || status === 304 ? undefined : buf)
}

/** Set on a response refused with GH_ERR_BODY_TOO_LARGE: the front logs which setting refused it. */
export const BODY_REFUSED = Symbol('gatehouse.bodyRefused')

/** Answer with the status and message of a registered error code. */
export function sendError(res: ServerResponse, code: ErrorCode, options: SimpleResponse = {}): void {
  if (code === 'GH_ERR_BODY_TOO_LARGE')
    (res as ServerResponse & { [BODY_REFUSED]?: true })[BODY_REFUSED] = true
  const status = ERROR_CODES[code].status ?? 500
  sendStatus(res, status, options)
}

/**
 * Refuse a request whose framing or target is bad: the error's status, then close the
 * connection, since what follows on it cannot be trusted. Logged at debug with the code.
 */
export function refuse(res: ServerResponse, code: ErrorCode, log?: Logger): void {
  log?.debug({ code, uri: res.req?.url }, 'request refused')
  sendError(res, code, { close: true })
}

/** The status a thrown value maps to: GatehouseError carries its own; anything else is a 500. */
export function statusOf(err: unknown): number {
  return err instanceof GatehouseError && err.status !== undefined ? err.status : 500
}
