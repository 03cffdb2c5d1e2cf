/**
 * The request/response pair for a listener that is not HTTP (uwsgi, FastCGI):
 * given the method, target, headers and client of a request that arrived in another
 * protocol, produce a real `http.IncomingMessage` and `http.ServerResponse`, so that the
 * router and every handler see exactly what the HTTP front gives them (docs/architecture.md: "the
 * request path").
 *
 * Why a real ServerResponse rather than a look-alike writer: handlers (and Express, and
 * whatever users mount) rely on the whole node:http surface, writeHead with arrays,
 * setHeader/appendHeader, header validation against CR/LF injection, HEAD and 204/304
 * without a body, the Date header, `headersSent`, `writableNeedDrain`. Re-implementing that
 * would drift; node's own class on the connection cannot. What node's HTTP server normally
 * adds around it is small and done here: attach the socket, forward 'drain', end the
 * exchange on 'finish' and emit 'close' once. The response is serialized as HTTP/1.1 with
 * keep-alive and chunked coding off, so a body without Content-Length runs until the
 * connection closes: exactly a uwsgi reply. A FastCGI listener passes a socket-like Duplex
 * that turns those bytes into STDOUT records.
 */
import { IncomingMessage, OutgoingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { ConnectionInfo } from '../core/types.js'
import { setConnectionInfo } from '../http/connection.js'

export interface GatewayRequestInit {
  /**
   * The connection. Response bytes are written to it; `req` resumes it when the handler
   * wants more body (like node's HTTP server does with its socket).
   */
  socket: Socket
  method: string
  /** Request-target as received (origin-form or absolute-form). */
  url: string
  /** `1.1` or `1.0`. */
  httpVersion: string
  /** Header names and values, flat: [name, value, name, value, ...]. */
  rawHeaders: readonly string[]
  /** The real client, as the protocol's variables describe it. */
  conn: ConnectionInfo
  /** Called once when the response is complete (every byte handed to the socket). */
  onResponseEnd(): void
}

export interface GatewayExchange {
  req: IncomingMessage
  res: ServerResponse
  /**
   * Body bytes as they arrive. Returns false when the handler is not keeping up: pause the
   * source; `req` calls `socket.resume()` when it wants more.
   */
  pushBody(chunk: Buffer): boolean
  /** The whole body has arrived. */
  endBody(): void
  /** The connection broke before the body was complete: `req` emits 'aborted' (ECONNRESET). */
  abortBody(): void
}

// node's HTTP server clears this flag before emitting 'drain' on a response (socketOnDrain
// in lib/_http_server.js); without it `res.writableNeedDrain` would stay true. It is not
// exported, so it is found by its description; if a future node renames it, 'drain' is
// still emitted and only `writableNeedDrain` is left stale.
const kNeedDrain = Object.getOwnPropertySymbols(new OutgoingMessage()).find(
  (s) => s.description === 'kNeedDrain',
)

interface IncomingInternals {
  _addHeaderLines(headers: readonly string[], n: number): void
  _dump?: () => void
}

export function createGatewayExchange(init: GatewayRequestInit): GatewayExchange {
  const { socket } = init
  const req = new IncomingMessage(socket)
  req.method = init.method
  req.url = init.url
  req.httpVersion = init.httpVersion
  req.httpVersionMajor = Number(init.httpVersion.split('.')[0]) || 1
  req.httpVersionMinor = Number(init.httpVersion.split('.')[1]) || 0
  // The same header folding rules as node's HTTP parser (Cookie joined with '; ', Set-Cookie
  // kept as a list, duplicates of single-valued fields dropped).
  ;(req as unknown as IncomingInternals)._addHeaderLines([...init.rawHeaders], init.rawHeaders.length)
  setConnectionInfo(req, init.conn)

  const res = new ServerResponse(req)
  res.shouldKeepAlive = false
  res.useChunkedEncodingByDefault = false
  // Interim 1xx responses would be read by the web server in front as the final response.
  res.writeContinue = (callback?: () => void) => {
    if (callback) process.nextTick(callback)
  }
  res.writeProcessing = () => {}
  res.writeEarlyHints = (_hints, callback) => {
    if (callback) process.nextTick(callback)
  }
  res.assignSocket(socket)

  const onDrain = () => {
    if (!res.writableNeedDrain) return
    if (kNeedDrain) (res as unknown as Record<symbol, boolean>)[kNeedDrain] = false
    res.emit('drain')
  }
  socket.on('drain', onDrain)
  let closed = false
  res.once('close', () => {
    closed = true
    socket.off('drain', onDrain)
  })
  res.once('finish', () => {
    // As node's resOnFinish: a body nobody read is drained, so the connection can end cleanly.
    if (!req.readableEnded && !req.destroyed) {
      const internals = req as unknown as IncomingInternals
      if (internals._dump) internals._dump()
      else req.resume()
    }
    res.detachSocket(socket)
    process.nextTick(() => {
      if (closed) return
      res.destroyed = true
      res.emit('close')
    })
    init.onResponseEnd()
  })

  return {
    req,
    res,
    pushBody: (chunk) => req.push(chunk),
    endBody: () => {
      req.complete = true
      req.push(null)
    },
    abortBody: () => {
      if (req.complete || req.destroyed) return
      req.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }))
    },
  }
}
