/*
 * One request through an undici Pool, with undici's low-level handler (dispatch), in two
 * steps: send() resolves at the response head (undici's parser paused there), so that an
 * upstream group can still try another server (nothing has reached the client yet); then
 * relay() writes the body to the client as it arrives, with no stream in between.
 *
 * Backpressure both ways: the request body is a stream undici reads only as fast as the
 * upstream socket takes it, and a response chunk the client cannot take yet pauses undici's
 * parser (onData returns false) until the client's 'drain', so a slow client stops the
 * upstream's socket, not our memory.
 */
import type { ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { Dispatcher } from 'undici'
import type { CancelSignal } from '../../core/cancel.js'
import { relayEarlyHints } from '../../core/respond.js'
import type { BodySink } from '../../core/response-buffer.js'
import { latin1Headers } from './headers.js'

export interface ExchangeRequest {
  method: string
  path: string
  headers: string[]
  body: Readable | null
  signal: CancelSignal
}

export interface UpstreamHead {
  status: number
  statusText: string
  /** The response's fields as received (flat name/value pairs). */
  fields: string[]
  /**
   * Stream the body into `sink` (the head is the caller's to write first); `null`: a
   * response without a body (HEAD, 204, 304), whose end is awaited. Resolves true when the
   * body was relayed whole, false when it broke (the client's connection is then destroyed,
   * as its framing cannot be finished).
   */
  relay(sink: BodySink | null): Promise<boolean>
  /** Drop the response unread (a retried 502): its connection is closed. */
  discard(): void
}

class Discarded extends Error {}

/** Send the request; resolves at the final response head, rejects with undici's error before it. */
export function send(
  pool: Dispatcher,
  request: ExchangeRequest,
  res: ServerResponse,
  log: Logger,
  upstream: string,
): Promise<UpstreamHead> {
  return new Promise((resolve, reject) => {
    const { signal } = request
    let abort: ((reason?: Error) => void) | undefined
    let sink: BodySink | null | undefined
    let headSeen = false
    let finished: ((whole: boolean) => void) | undefined
    let outcome: boolean | undefined
    const onCancel = () => abort?.(signal.reason as Error)
    const end = (whole: boolean) => {
      signal.removeEventListener('abort', onCancel)
      if (outcome !== undefined) return
      outcome = whole
      finished?.(whole)
    }
    signal.addEventListener('abort', onCancel)
    const handler: Dispatcher.DispatchHandlers = {
      onConnect(a) {
        abort = a
        if (signal.aborted) a(signal.reason as Error)
      },
      onHeaders(status, raw, resumeParser, statusText) {
        const fields = latin1Headers(raw as unknown as Buffer[])
        if (status < 200) {
          if (status === 103) relayEarlyHints(res, fields, log)
          return true
        }
        headSeen = true
        resolve({
          status,
          statusText,
          fields,
          relay(out) {
            sink = out
            // Ended already (HEAD, or a body undici read with the head): nothing to wait for.
            if (outcome !== undefined) {
              if (outcome) (out ?? res).end()
              else res.destroy()
              return Promise.resolve(outcome)
            }
            out?.on('drain', resumeParser)
            return new Promise<boolean>((done) => {
              finished = done
              resumeParser()
            })
          },
          discard() {
            abort?.(new Discarded('response discarded'))
          },
        })
        // Paused until relay(): the body waits in the socket.
        return false
      },
      onData(chunk) {
        if (!sink) return true
        return sink.write(chunk)
      },
      onComplete() {
        if (sink !== undefined) (sink ?? res).end()
        end(true)
      },
      onError(err) {
        if (!headSeen) {
          signal.removeEventListener('abort', onCancel)
          reject(err)
          return
        }
        if (!signal.aborted && !(err instanceof Discarded) && sink !== undefined)
          log.warn({ upstream, err }, 'response cut short: upstream failed mid-body')
        if (sink !== undefined) res.destroy()
        end(false)
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
