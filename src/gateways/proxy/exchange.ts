/*
 * One request through an undici Pool, with undici's low-level handler (dispatch): the
 * response is written to the client as it arrives, no stream in between. Backpressure both
 * ways: the request body is a stream undici reads only as fast as the upstream socket takes
 * it, and a response chunk the client cannot take yet pauses undici's parser (onData returns
 * false) until the client's 'drain', so a slow client stops the upstream's socket, not our
 * memory.
 */
import type { ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { Dispatcher } from 'undici'
import type { CancelSignal } from '../../core/cancel.js'
import { GatehouseError } from '../../core/errors.js'
import { relayEarlyHints } from '../../core/respond.js'
import { type BodySink, ResponseBuffer, type ResponseBufferOptions } from '../../core/response-buffer.js'
import { latin1Headers, responseHeaders } from './headers.js'

export interface ExchangeRequest {
  method: string
  path: string
  headers: string[]
  body: Readable | null
  signal: CancelSignal
}

/**
 * Resolves when the response was relayed (or cut short after its head went out: the
 * client's connection is destroyed then, as its framing cannot be finished); rejects with
 * undici's error when nothing was written to the client yet.
 */
export function exchange(
  pool: Dispatcher,
  request: ExchangeRequest,
  res: ServerResponse,
  buffering: ResponseBufferOptions | undefined,
  log: Logger,
  upstream: string,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const { signal } = request
    let abort: ((reason?: Error) => void) | undefined
    let sink: BodySink | null = null
    let bodyless = request.method === 'HEAD'
    let settled = false
    const onCancel = () => abort?.(signal.reason as Error)
    const settle = (err?: unknown) => {
      if (settled) return
      settled = true
      signal.removeEventListener('abort', onCancel)
      if (err === undefined) resolve()
      else reject(err)
    }
    signal.addEventListener('abort', onCancel)
    const handler: Dispatcher.DispatchHandlers = {
      onConnect(a) {
        abort = a
        if (signal.aborted) a(signal.reason as Error)
      },
      onHeaders(status, raw, resume, statusText) {
        const fields = latin1Headers(raw as unknown as Buffer[])
        if (status < 200) {
          if (status === 103) relayEarlyHints(res, fields, log)
          return true
        }
        try {
          const flat = responseHeaders(fields)
          if (statusText) res.writeHead(status, statusText, flat)
          else res.writeHead(status, flat)
        } catch (err) {
          abort?.(new GatehouseError('GH_ERR_UPSTREAM', `response head refused: ${(err as Error).message}`))
          return false
        }
        if (status === 204 || status === 304) bodyless = true
        const out: BodySink = buffering ? new ResponseBuffer(res, buffering) : res
        sink = out
        out.on('drain', resume)
        return true
      },
      onData(chunk) {
        if (bodyless || sink === null) return true
        return sink.write(chunk)
      },
      onComplete() {
        if (sink === null || bodyless) res.end()
        else sink.end()
        settle()
      },
      onError(err) {
        if (sink === null && !res.headersSent) {
          settle(err)
          return
        }
        if (!signal.aborted) log.warn({ upstream, err }, 'response cut short: upstream failed mid-body')
        res.destroy()
        settle()
      },
    }
    pool.dispatch(
      {
        path: request.path,
        method: request.method as Dispatcher.HttpMethod,
        headers: request.headers,
        body: request.body,
      },
      handler,
    )
  })
}
