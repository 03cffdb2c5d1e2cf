import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
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

/** nginx's lingering_timeout and lingering_time. */
const LINGER_IDLE_MS = 5_000
const LINGER_MAX_MS = 30_000

/**
 * nginx's lingering close, for a response that refuses a body the client is still sending
 * (413). Node closes such a connection once the response is written; the client's next body
 * bytes then meet a closed socket, and its reset can destroy the 413 in the client's buffer
 * before it is read (the client sees EPIPE or ECONNRESET, not the status). Instead the
 * connection is half-closed and the rest of the body read and dropped, until it ends,
 * LINGER_IDLE_MS pass without any of it, or LINGER_MAX_MS in all.
 */
function lingerOnClose(res: ServerResponse): void {
  const socket = res.socket as (Socket & { destroySoon?: () => void }) | null
  const req = res.req as IncomingMessage | undefined
  if (!socket || socket.destroyed || !req || req.complete) return
  socket.destroySoon = () => {
    const stop = () => socket.destroy()
    const idle = setTimeout(stop, LINGER_IDLE_MS).unref()
    const cap = setTimeout(stop, LINGER_MAX_MS).unref()
    socket.once('close', () => {
      clearTimeout(idle)
      clearTimeout(cap)
    })
    socket.end()
    req.on('data', () => idle.refresh())
    req.once('end', stop)
    req.once('error', stop)
    req.resume()
  }
}

/** Answer with the status and message of a registered error code. */
export function sendError(res: ServerResponse, code: ErrorCode, options: SimpleResponse = {}): void {
  if (code === 'GH_ERR_BODY_TOO_LARGE') {
    ;(res as ServerResponse & { [BODY_REFUSED]?: true })[BODY_REFUSED] = true
    if (options.close) lingerOnClose(res)
  }
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

/**
 * Relay an upstream's 103 Early Hints (RFC 8297) to the client: its Link fields, before the
 * final head. Only to HTTP/1.1 and HTTP/2 clients (RFC 9110 15.2: no 1xx to an HTTP/1.0 client) and
 * only while the head is not out; hints without a valid Link are dropped (node's
 * writeEarlyHints sends nothing else of use, and refuses a malformed Link by throwing).
 * On a uwsgi/FastCGI listener writeEarlyHints does nothing (inbound/exchange.ts): the web
 * server in front would take the 103 for the final response.
 */
export function relayEarlyHints(res: ServerResponse, rawHeaders: readonly string[], log?: Logger): void {
  const version = res.req?.httpVersion
  if (res.headersSent || (version !== '1.1' && version !== '2.0')) return
  const links: string[] = []
  for (let i = 0; i + 1 < rawHeaders.length; i += 2)
    if (rawHeaders[i]!.toLowerCase() === 'link') links.push(rawHeaders[i + 1]!)
  if (links.length === 0) return
  try {
    res.writeEarlyHints({ link: links })
  } catch (err) {
    log?.debug({ err, link: links }, '103 Early Hints dropped: a Link node refuses')
  }
}
