/*
 * Relaying a gateway's parsed response (a CGI header block turned into status and fields,
 * and a streamed body) to the client, with backpressure both ways: the body is read only
 * as fast as the client takes it.
 */
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { Logger } from 'pino'
import { GatehouseError } from '../errors.js'
import type { RequestContext } from '../types.js'

export interface GatewayResponse {
  status: number
  reason?: string
  headers: readonly (readonly [string, string])[]
  body: Readable
}

/**
 * Write the head and stream the body. HEAD, 204 and 304 send no body (what the upstream
 * sends anyway is read and dropped, so its connection stays usable). A body that fails
 * half-way cuts the client's connection (its framing cannot be finished honestly), logged
 * as a warning; a client that leaves ends the relay quietly.
 */
export async function relayResponse(
  ctx: RequestContext,
  response: GatewayResponse,
  log: Logger,
  tags: Record<string, string>,
): Promise<void> {
  const { res } = ctx
  const flat: string[] = []
  for (const [name, value] of response.headers) flat.push(name, value)
  try {
    if (response.reason !== undefined) res.writeHead(response.status, response.reason, flat)
    else res.writeHead(response.status, flat)
  } catch (err) {
    response.body.destroy()
    throw new GatehouseError('GH_ERR_UPSTREAM', `response head refused: ${(err as Error).message}`, {
      cause: err,
    })
  }
  if (ctx.method === 'HEAD' || response.status === 204 || response.status === 304) {
    response.body.resume()
    res.end()
    return
  }
  try {
    await pipeline(response.body, res)
  } catch (err) {
    if (err instanceof GatehouseError)
      log.warn({ ...tags, err }, 'response cut short: upstream failed mid-body')
    else
      log.debug(
        { ...tags, code: (err as NodeJS.ErrnoException).code },
        'client went away during the response',
      )
    res.destroy()
  }
}
