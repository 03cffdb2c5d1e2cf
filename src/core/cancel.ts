/*
 * Cancelling a gateway request when its client leaves. An AbortController is an EventTarget
 * whose abort() builds a DOMException with a stack: measurable on every request of a fast
 * gateway, so the gateways use this lighter object with the part of AbortSignal's surface
 * the clients read (CancelSignal).
 */
import type { ServerResponse } from 'node:http'

/**
 * What a request can be cancelled with: an AbortSignal, or anything with the part of its
 * surface the gateway clients read (ClientCancel, lighter, per HTTP request).
 */
export interface CancelSignal {
  readonly aborted: boolean
  readonly reason?: unknown
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void
  removeEventListener(type: 'abort', listener: () => void): void
}

/** The client went away: nothing to answer. */
export class ClientGone extends Error {}

export class ClientCancel implements CancelSignal {
  aborted = false
  reason: unknown = undefined
  private readonly listeners: (() => void)[] = []

  addEventListener(_type: 'abort', listener: () => void): void {
    this.listeners.push(listener)
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const i = this.listeners.indexOf(listener)
    if (i !== -1) this.listeners.splice(i, 1)
  }

  abort(reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    for (const listener of this.listeners.splice(0)) listener()
  }
}

/**
 * A ClientCancel that fires when `res` closes before it finished. Call the returned
 * `done()` when the request is over, to stop watching.
 */
export function cancelOnClientClose(res: ServerResponse): { cancel: ClientCancel; done: () => void } {
  const cancel = new ClientCancel()
  const onClose = () => {
    if (!res.writableFinished) cancel.abort(new ClientGone('client closed the connection'))
  }
  // on, not once: once wraps the listener in another closure per request; close comes once anyway.
  res.on('close', onClose)
  return { cancel, done: () => res.off('close', onClose) }
}
