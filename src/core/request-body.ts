/*
 * A request body as a gateway hands it on. A Content-Length body streams as it arrives; a
 * chunked one (and any body when buffering is asked for) is read whole first by
 * core/body-spool.ts (memory, then a temporary file), so that its length is known
 * (RFC 3875 4.1.2: CONTENT_LENGTH; php-fpm reads no body without it) and a slow client
 * does not hold an upstream worker while it uploads.
 */
import type { IncomingMessage } from 'node:http'
import type { Readable } from 'node:stream'
import { type SpooledBody, spoolBody } from './body-spool.js'

export type RequestBody =
  | { kind: 'none' }
  /** Read from the request as it arrives (Content-Length known). */
  | { kind: 'stream'; length: number }
  | { kind: 'spooled'; spool: SpooledBody }

/** No body: one shared object. */
export const NO_BODY: RequestBody = Object.freeze({ kind: 'none' })

/**
 * The body of `req` when it is known without reading anything (none, or a Content-Length
 * body streamed as it arrives); undefined when it has to be spooled (readRequestBody).
 */
export function immediateBody(req: IncomingMessage, buffer: boolean): RequestBody | undefined {
  const chunked = req.headers['transfer-encoding'] !== undefined
  const cl = req.headers['content-length']
  if (!chunked && cl === undefined) return NO_BODY
  if (!chunked && !buffer) return { kind: 'stream', length: Number(cl) }
  return undefined
}

/**
 * How the body of `req` will be passed on. Spooling counts bytes against `limit`
 * (GH_ERR_BODY_TOO_LARGE); a Content-Length over the limit was refused by the front already.
 */
export async function readRequestBody(
  req: IncomingMessage,
  options: { limit: number; buffer: boolean },
): Promise<RequestBody> {
  return immediateBody(req, options.buffer) ?? { kind: 'spooled', spool: await spoolBody(req, options.limit) }
}

export function bodyLength(body: RequestBody): number | undefined {
  switch (body.kind) {
    case 'none':
      return undefined
    case 'stream':
      return body.length
    case 'spooled':
      return body.spool.length
  }
}

/** The body as a stream from its start; undefined when there is none. */
export function bodySource(body: RequestBody, req: IncomingMessage): Readable | undefined {
  switch (body.kind) {
    case 'none':
      return undefined
    case 'stream':
      return req
    case 'spooled':
      return body.spool.length > 0 ? body.spool.stream() : undefined
  }
}

/** Remove a spooled body's temporary file. */
export async function releaseBody(body: RequestBody): Promise<void> {
  if (body.kind === 'spooled') await body.spool.dispose()
}
