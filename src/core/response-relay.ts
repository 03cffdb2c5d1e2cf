/*
 * Relaying a gateway's parsed response (a CGI header block turned into status and fields,
 * and a streamed body) to the client, with backpressure both ways: the body is read only
 * as fast as the client takes it.
 */
import type { ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import { GatehouseError } from './errors.js'
import { type BodySink, ResponseBuffer, type ResponseBufferOptions } from './response-buffer.js'
import type { RequestContext } from './types.js'

export interface GatewayResponse {
  status: number
  reason?: string
  headers: readonly (readonly [string, string])[]
  body: Readable
  /** The whole body is already buffered in `body`: it is sent in one write, with a Content-Length. */
  complete?: boolean
  /** When complete: the body as one Buffer without going through the stream (undefined: use `body`). */
  takeWhole?(): Buffer | undefined
}

/**
 * Write the head and stream the body. HEAD, 204 and 304 send no body (what the upstream
 * sends anyway is read and dropped, so its connection stays usable). A body that fails
 * half-way cuts the client's connection (its framing cannot be finished honestly), logged
 * as a warning; a client that leaves ends the relay quietly.
 *
 * A response whose body is all here (or that has none) is written at once and nothing is
 * returned (no promise to wait for); a streamed one returns the promise of its end. Errors
 * before anything is written are thrown.
 *
 * With `buffering` (core/response-buffer.ts) the body is taken as fast as the upstream sends
 * it, into memory and then a temporary file, and the promise settles when the upstream is
 * done, not the client: its worker is free at once.
 */
export function relayResponse(
  ctx: RequestContext,
  response: GatewayResponse,
  log: Logger,
  tags: Record<string, string>,
  buffering?: ResponseBufferOptions,
): Promise<void> | undefined {
  const { res } = ctx
  const bodyless = ctx.method === 'HEAD' || response.status === 204 || response.status === 304
  // A small response that is all here: its body taken whole, with no stream in between.
  let whole: Buffer | null = (!bodyless && response.complete && response.takeWhole?.()) || null
  const body = whole === null ? response.body : null
  // The whole response came and was found wrong (a body short of its Content-Length):
  // nothing has gone out yet, so the client gets the error's status.
  if (body?.errored) throw body.errored
  const flat: string[] = []
  let hasLength = false
  for (const [name, value] of response.headers) {
    flat.push(name, value)
    if (name.length === 14 && name.toLowerCase() === 'content-length') hasLength = true
  }
  if (body && response.complete && !bodyless) {
    // Everything is here already: one write, and a length instead of chunked framing.
    whole = (body.read() as Buffer | null) ?? Buffer.alloc(0)
  }
  if (whole && !hasLength) flat.push('Content-Length', String(whole.length))
  try {
    if (response.reason !== undefined) res.writeHead(response.status, response.reason, flat)
    else res.writeHead(response.status, flat)
  } catch (err) {
    body?.destroy()
    throw new GatehouseError('GH_ERR_UPSTREAM', `response head refused: ${(err as Error).message}`, {
      cause: err,
    })
  }
  if (bodyless || whole) {
    body?.resume()
    res.end(whole ?? undefined)
    return undefined
  }
  return stream(body!, res, buffering ? new ResponseBuffer(res, buffering) : res, log, tags)
}

function ignore(): void {}

/** body -> sink (res, or a buffer in front of it), pausing the body while the sink is full. */
function stream(
  body: Readable,
  res: ServerResponse,
  sink: BodySink,
  log: Logger,
  tags: Record<string, string>,
): Promise<void> {
  return new Promise((resolve) => {
    const onData = (chunk: Buffer) => {
      if (!sink.write(chunk)) body.pause()
    }
    const onDrain = () => body.resume()
    const done = () => {
      body.off('data', onData)
      body.off('end', onEnd)
      body.off('error', onError)
      // The relay is over; an error the upstream side raises later (it is cancelled because
      // the client left) has nobody to reach.
      body.on('error', ignore)
      sink.off('drain', onDrain)
      res.off('close', onClose)
      resolve()
    }
    const onEnd = () => {
      sink.end()
      done()
    }
    const onError = (err: Error) => {
      if (err instanceof GatehouseError)
        log.warn({ ...tags, err }, 'response cut short: upstream failed mid-body')
      res.destroy()
      done()
    }
    const onClose = () => {
      if (res.writableFinished) return
      log.debug({ ...tags }, 'client went away during the response')
      // The reader gives up: the exchange aborts the upstream request.
      body.destroy()
      done()
    }
    body.on('data', onData)
    body.on('end', onEnd)
    body.on('error', onError)
    sink.on('drain', onDrain)
    res.on('close', onClose)
  })
}
