import type { IncomingMessage } from 'node:http'
import type { ConnectionInfo } from '../core/types.js'

/**
 * Listeners that are not plain HTTP (FastCGI, uwsgi) know the real client from the
 * protocol's variables, not from the socket; they attach it to the request under this key.
 */
export const CONNECTION_INFO: unique symbol = Symbol.for('gatehouse.connection')

type WithInfo = IncomingMessage & { [CONNECTION_INFO]?: ConnectionInfo }

const stripMapped = (addr: string | undefined) => (addr?.startsWith('::ffff:') ? addr.slice(7) : (addr ?? ''))

/**
 * Set on a ServerResponse when the front held back `100 Continue` for a handler that sends
 * it itself when the application first reads the body (Handler.deferContinue).
 */
export const CONTINUE_DEFERRED: unique symbol = Symbol.for('gatehouse.continueDeferred')

export function connectionInfo(req: IncomingMessage): ConnectionInfo {
  const given = (req as WithInfo)[CONNECTION_INFO]
  if (given) return given
  const socket = req.socket
  return {
    // A Unix-socket peer has no address: '' (docs/configuration.md, "Client address").
    remoteAddress: stripMapped(socket.remoteAddress),
    remotePort: socket.remotePort ?? 0,
    localAddress: stripMapped(socket.localAddress),
    localPort: socket.localPort ?? 0,
    secure: (socket as { encrypted?: boolean }).encrypted === true,
  }
}

/**
 * A request that came over HTTP/2 (node:http2's compat request, src/http/h2.ts), not an
 * HTTP/1.x request line claiming version 2 (which is refused).
 */
export const isHttp2 = (req: IncomingMessage): boolean =>
  req.httpVersionMajor === 2 && (req as { stream?: unknown }).stream !== undefined

export function setConnectionInfo(req: IncomingMessage, info: ConnectionInfo): void {
  ;(req as WithInfo)[CONNECTION_INFO] = info
}
