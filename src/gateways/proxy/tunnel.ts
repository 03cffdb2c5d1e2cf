/*
 * An Upgrade request (WebSocket, or any other protocol) passed to the upstream: when it
 * answers 101, its head is relayed (hop-by-hop fields dropped, Upgrade kept) and the two
 * sockets are piped to each other, with backpressure (pipe pauses the faster side) and
 * without any timeout of ours, until either side closes. When it answers anything else, the
 * upgrade is refused: that answer is relayed to the client as a plain response, and the
 * connection closes after it (http/upgrade.ts). Resolves false when the upstream failed.
 */
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { Dispatcher } from 'undici'
import { ClientGone } from '../../core/cancel.js'
import { GatehouseError } from '../../core/errors.js'
import { sendError } from '../../core/respond.js'
import type { RequestContext } from '../../core/types.js'
import { proxyError } from './errors.js'
import { latin1Headers, responseHeaders } from './headers.js'

/** How long a tunnel side that ended waits for the other to finish before both are destroyed. */
const LINGER_MS = 5_000

function join(client: Duplex, upstream: Socket): void {
  upstream.setTimeout(0)
  upstream.setNoDelay(true)
  const destroyBoth = () => {
    client.destroy()
    upstream.destroy()
  }
  client.on('error', destroyBoth)
  upstream.on('error', destroyBoth)
  const lingerThenDestroy = (other: Duplex) => () => {
    if (!other.destroyed) setTimeout(() => other.destroy(), LINGER_MS).unref()
  }
  client.once('close', lingerThenDestroy(upstream))
  upstream.once('close', lingerThenDestroy(client))
  upstream.pipe(client)
  client.pipe(upstream)
}

export function tunnel(
  pool: Dispatcher,
  ctx: RequestContext,
  socket: Duplex,
  head: Buffer,
  request: { path: string; headers: string[]; protocol: string },
  log: Logger,
  upstream: string,
): Promise<boolean> {
  const { res } = ctx
  return new Promise((resolve) => {
    let abort: ((reason?: Error) => void) | undefined
    let resumeUpstream: (() => void) | undefined
    const onClientClose = () => abort?.(new ClientGone('client closed the connection'))
    socket.once('close', onClientClose)
    const done = (ok: boolean) => {
      socket.off('close', onClientClose)
      resolve(ok)
    }
    const handler: Dispatcher.DispatchHandlers = {
      onConnect(a) {
        abort = a
        if (socket.destroyed) a(new ClientGone('client closed the connection'))
      },
      onUpgrade(status, raw, upSocket) {
        socket.off('close', onClientClose)
        const fields = responseHeaders(latin1Headers(raw as unknown as Buffer[]), true)
        let text = `HTTP/1.1 ${status} Switching Protocols\r\n`
        for (let i = 0; i < fields.length; i += 2) text += `${fields[i]}: ${fields[i + 1]}\r\n`
        socket.write(`${text}\r\n`, 'latin1')
        if (head.length > 0) upSocket.write(head)
        join(socket, upSocket as Socket)
        done(true)
      },
      onHeaders(status, raw, resume, statusText) {
        if (status < 200) return true
        resumeUpstream = resume
        const flat = responseHeaders(latin1Headers(raw as unknown as Buffer[]))
        try {
          if (statusText) res.writeHead(status, statusText, flat)
          else res.writeHead(status, flat)
        } catch (err) {
          abort?.(new GatehouseError('GH_ERR_UPSTREAM', `response head refused: ${(err as Error).message}`))
          return false
        }
        res.on('drain', () => resumeUpstream?.())
        return true
      },
      onData(chunk) {
        return res.write(chunk)
      },
      onComplete() {
        res.end()
        done(true)
      },
      onError(err) {
        if (err instanceof ClientGone) {
          socket.destroy()
        } else if (!res.headersSent && !socket.destroyed) {
          const mapped = proxyError(err, upstream) as GatehouseError
          log.error({ err: mapped, upstream, uri: ctx.req.url }, 'upgrade not passed to the upstream')
          sendError(res, mapped.code)
        } else {
          socket.destroy()
        }
        done(err instanceof ClientGone)
      },
    }
    pool.dispatch(
      {
        path: request.path,
        method: ctx.method as Dispatcher.HttpMethod,
        headers: request.headers,
        upgrade: request.protocol,
      },
      handler,
    )
  })
}
