/*
 * ASGI WebSockets on the Node side: the upgrade request is held while the app decides
 * (websocket.accept, websocket.close -> 403, or its own websocket.http.response), then the
 * `ws` package completes the handshake and carries messages both ways as WS_* frames.
 * Messages from the client go to the worker within the credit it grants (the socket is
 * paused past it); the app's messages get credit back as they are written out. Ping/pong
 * keepalive is Node's business: the app never sees it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { WebSocket, WebSocketServer } from 'ws'
import { upstreamNote } from '../../core/access-format.js'
import { GatehouseError } from '../../core/errors.js'
import { sendError } from '../../core/respond.js'
import { FrameType, type WorkerFrame } from './codec.js'
import type { WorkerChoice, WorkerLease } from '../../process/lease.js'
import type { PoolHandle } from '../../process/pool-handle.js'
import { type AsgiScopeParts, encodeWsConnect } from './asgi-scope.js'
import type { BridgeConnections } from './pool.js'
import type { SessionSink, WorkerConnection } from './connection.js'

export interface WebSocketSettings {
  /** Largest message accepted from a client (bytes); a larger one closes with 1009. */
  maxMessageBytes: number
  /** ms between pings (0: none); a client that has not answered the previous ping is dropped. */
  pingInterval: number
  /** permessage-deflate offered to clients. */
  perMessageDeflate: boolean
  /** ms the app has to accept or refuse (0: no limit); past it 504 and the app is cancelled. */
  handshakeTimeout: number
  /** WebSockets one worker holds at most (handshakes included; 0: no limit); past it 503. */
  maxPerWorker: number
}

const KEY = /^[+/0-9A-Za-z]{22}==$/
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** Headers the handshake itself sets: an app's own are dropped. */
const HANDSHAKE_HEADERS = new Set(['upgrade', 'connection', 'sec-websocket-accept', 'sec-websocket-protocol'])

/** Is this an upgrade to WebSocket (rather than h2c or something else, served as plain HTTP)? */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade
  return typeof upgrade === 'string' && upgrade.trim().toLowerCase() === 'websocket'
}

/** The offered subprotocols, or null when the header is malformed. */
function offeredSubprotocols(req: IncomingMessage): string[] | null {
  const header = req.headers['sec-websocket-protocol']
  if (header === undefined) return []
  const out: string[] = []
  for (const part of header.split(',')) {
    const p = part.trim()
    if (!TOKEN.test(p) || out.includes(p)) return null
    out.push(p)
  }
  return out
}

interface Pending {
  subprotocol: string | null
  headers: readonly (readonly [string, string])[]
}

export class AsgiWebSockets {
  readonly wss: WebSocketServer
  /** The app's accept (subprotocol, headers) for the handshake ws is completing. */
  private readonly pending = new WeakMap<IncomingMessage, Pending>()
  readonly open = new Set<WsSession>()
  /**
   * WebSockets per worker id, from the lease of their handshake until they close: their
   * lease ends with the handshake, so the pool learns of them through `choice`.
   */
  readonly perWorker = new Map<number, number>()
  /** Fewest WebSockets first; a worker at maxPerWorker takes no more. */
  readonly choice: WorkerChoice
  private pinger: NodeJS.Timeout | undefined

  constructor(
    readonly settings: WebSocketSettings,
    readonly pool: PoolHandle,
    readonly connections: BridgeConnections,
    readonly log: Logger,
  ) {
    const count = (id: number) => this.perWorker.get(id) ?? 0
    const max = settings.maxPerWorker
    this.choice = {
      load: count,
      taken: (id) => this.perWorker.set(id, count(id) + 1),
      ...(max > 0
        ? {
            full: (id: number) => count(id) >= max,
            fullReason: `holds ws_max_per_worker (${max}) WebSockets`,
          }
        : {}),
    }
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      maxPayload: settings.maxMessageBytes,
      perMessageDeflate: settings.perMessageDeflate,
      handleProtocols: (_offered, req) => this.pending.get(req)?.subprotocol ?? false,
    })
    this.wss.on('headers', (headers: string[], req: IncomingMessage) => {
      for (const [name, value] of this.pending.get(req)?.headers ?? []) {
        if (HANDSHAKE_HEADERS.has(name.toLowerCase())) continue
        if (/[\r\n]/.test(name) || /[\r\n]/.test(value)) continue
        headers.push(`${name}: ${value}`)
      }
    })
    if (settings.pingInterval > 0) {
      this.pinger = setInterval(() => {
        for (const s of this.open) s.keepalive()
      }, settings.pingInterval)
      this.pinger.unref()
    }
  }

  /**
   * Serve one upgrade request. `res` is a ServerResponse on the socket for answers that
   * are not a handshake (400, 403, 500, 504 or the app's websocket.http.response).
   */
  async upgrade(
    req: IncomingMessage,
    res: ServerResponse,
    socket: Duplex,
    head: Buffer,
    scope: AsgiScopeParts,
    started: Promise<void>,
  ): Promise<void> {
    if (req.method !== 'GET') {
      sendError(res, 'GH_ERR_WEBSOCKET_HANDSHAKE', { headers: {} })
      return
    }
    const key = req.headers['sec-websocket-key']
    const version = req.headers['sec-websocket-version']
    const subprotocols = offeredSubprotocols(req)
    if (key === undefined || !KEY.test(key.trim()) || subprotocols === null) {
      sendError(res, 'GH_ERR_WEBSOCKET_HANDSHAKE')
      return
    }
    if (version !== '13' && version !== '8') {
      sendError(res, 'GH_ERR_WEBSOCKET_HANDSHAKE', { headers: { 'sec-websocket-version': '13, 8' } })
      return
    }
    try {
      await started
    } catch {
      // The pool tries again after a crash loop (crash_retry): 503 only while it is still failed.
      if (this.pool.failure !== null) {
        sendError(res, 'GH_ERR_WORKER_START')
        return
      }
    }
    const session = new WsSession(this, req, res, socket, head, { ...scope, subprotocols })
    await session.run()
  }

  /** @internal A WebSocket counted on worker `id` by choice.taken is over. */
  untake(id: number): void {
    const n = (this.perWorker.get(id) ?? 0) - 1
    if (n > 0) this.perWorker.set(id, n)
    else this.perWorker.delete(id)
  }

  /** @internal */
  setPending(req: IncomingMessage, p: Pending): void {
    this.pending.set(req, p)
  }

  /** Close every open WebSocket (1001, going away) and stop pinging. */
  close(): void {
    clearInterval(this.pinger)
    for (const s of this.open) s.goingAway()
  }
}

type Phase = 'handshake' | 'open' | 'denying' | 'done'

class WsSession implements SessionSink {
  private phase: Phase = 'handshake'
  private conn: WorkerConnection | null = null
  private id = 0
  private lease: WorkerLease | null = null
  private ws: WebSocket | null = null
  /** The worker sent its last frame (FINISHED or REQUEST_ERROR) or the connection died. */
  private ended = false
  private disconnectSent = false
  private credit = 0
  private alive = true
  private closeCode = 0
  /** The worker it is counted on (AsgiWebSockets.perWorker) until settle(), or -1. */
  private countedOn = -1
  private decided!: () => void
  private readonly decision = new Promise<void>((resolve) => (this.decided = resolve))
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly owner: AsgiWebSockets,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly socket: Duplex,
    private readonly head: Buffer,
    private readonly scope: AsgiScopeParts,
  ) {}

  private get log(): Logger {
    return this.owner.log
  }

  async run(): Promise<void> {
    const abort = new AbortController()
    const onClose = () => {
      abort.abort(new Error('client closed the connection'))
      this.clientGone(1006)
    }
    this.socket.once('close', onClose)
    try {
      this.lease = await this.owner.pool.acquire(
        {
          method: 'GET',
          uri: this.req.url ?? '',
          choice: this.owner.choice,
          upstream: upstreamNote(this.req),
        },
        abort.signal,
      )
      this.countedOn = this.lease.workerId
    } catch (err) {
      this.socket.off('close', onClose)
      if (abort.signal.aborted) return
      if (err instanceof GatehouseError && err.code === 'GH_ERR_OVERLOADED') {
        this.log.warn({ uri: this.req.url }, err.message)
        sendError(this.res, 'GH_ERR_OVERLOADED', { headers: { 'retry-after': '1' } })
        return
      }
      throw err
    }
    const lease = this.lease
    lease.onAbort((reason) => this.leaseAborted(reason))
    try {
      this.conn = await this.owner.connections.get(lease)
      if (this.socket.destroyed) {
        lease.release()
        this.settle()
        return
      }
      this.id = this.conn.openSession(this, (id) => encodeWsConnect(id, this.scope))
    } catch (err) {
      lease.release({ failed: true })
      this.settle()
      this.socket.off('close', onClose)
      const code = err instanceof GatehouseError ? err.code : 'GH_ERR_WORKER_PROTOCOL'
      this.log.error({ uri: this.req.url, code, err }, 'WebSocket: no worker connection')
      if (!this.socket.destroyed) sendError(this.res, code)
      return
    }
    if (this.owner.settings.handshakeTimeout > 0)
      this.timer = setTimeout(() => this.handshakeTimedOut(), this.owner.settings.handshakeTimeout)
    await this.decision
    clearTimeout(this.timer)
    this.socket.off('close', onClose)
    lease.release()
    // Refused, timed out, or its worker lost: it never opened.
    if (this.phase !== 'open') this.settle()
  }

  /** It no longer counts against its worker (closed, refused, or its worker gone). */
  private settle(): void {
    if (this.countedOn === -1) return
    this.owner.untake(this.countedOn)
    this.countedOn = -1
  }

  // -- frames from the worker -----------------------------------------------------------

  onFrame(frame: WorkerFrame): void {
    switch (frame.type) {
      case FrameType.WS_ACCEPT:
        if (this.phase === 'handshake') this.accept(frame.subprotocol, frame.headers)
        return
      case FrameType.WS_CLOSE:
        if (this.phase === 'handshake') {
          // Closed before accept: HTTP 403 (ASGI).
          this.phase = 'done'
          this.decided()
          if (!this.socket.destroyed) sendError(this.res, 'GH_ERR_WEBSOCKET_DENIED')
        } else if (this.phase === 'open') this.closeWith(frame.code, frame.reason)
        return
      case FrameType.WS_SEND:
        if (this.phase !== 'open' || !this.ws) return
        this.send(frame.bytes, frame.text)
        return
      case FrameType.REQUEST_CREDIT:
        this.credit += frame.bytes
        if (this.credit > 0 && this.ws?.isPaused) this.ws.resume()
        return
      case FrameType.RESPONSE_START:
        if (this.phase !== 'handshake')
          throw this.protocolError('websocket.http.response after the handshake')
        this.phase = 'denying'
        this.decided()
        try {
          this.res.writeHead(frame.status, frame.reason, frame.headers.flat())
        } catch (err) {
          this.log.error(
            { uri: this.req.url, code: 'GH_ERR_ASGI_APP' },
            `websocket.http.response head refused: ${(err as Error).message}`,
          )
          sendError(this.res, 'GH_ERR_ASGI_APP')
          return
        }
        this.denialBody(frame.body, frame.moreBody)
        return
      case FrameType.RESPONSE_BODY:
        if (this.phase !== 'denying') throw this.protocolError('websocket.http.response.body out of place')
        this.denialBody(frame.body, frame.moreBody)
        return
      case FrameType.REQUEST_ERROR:
        this.log.error(
          { uri: this.req.url, worker: this.lease?.pid, code: 'GH_ERR_ASGI_APP' },
          frame.message.trimEnd(),
        )
        this.finish()
        if (this.phase === 'handshake') {
          if (!this.socket.destroyed) sendError(this.res, 'GH_ERR_ASGI_APP')
        } else if (this.phase === 'open') this.closeWith(1011, '')
        else if (!this.res.writableFinished) this.res.destroy()
        this.phase = 'done'
        return
      case FrameType.FINISHED:
        this.finish()
        if (this.phase === 'open') this.closeWith(1000, '')
        else if (this.phase === 'denying' && !this.res.writableEnded) this.res.end()
        else if (this.phase === 'handshake') this.socket.destroy()
        this.phase = 'done'
        return
      default:
        throw this.protocolError(`frame type ${frame.type} on a WebSocket`)
    }
  }

  onConnectionLost(err: GatehouseError): void {
    this.ended = true
    this.decided()
    this.log.error({ uri: this.req.url, code: err.code }, `WebSocket: ${err.message}`)
    if (this.phase === 'handshake') {
      if (!this.socket.destroyed) sendError(this.res, err.code)
    } else if (this.phase === 'open') this.closeWith(1011, '')
    else if (!this.res.writableFinished) this.res.destroy()
    this.phase = 'done'
    this.owner.open.delete(this)
    this.settle()
  }

  private protocolError(detail: string): GatehouseError {
    return new GatehouseError('GH_ERR_WORKER_PROTOCOL', detail)
  }

  /** The worker's last frame for this session. */
  private finish(): void {
    this.ended = true
    this.decided()
    this.conn?.endSession(this.id)
    this.owner.open.delete(this)
    this.settle()
  }

  private denialBody(body: Buffer, more: boolean): void {
    if (this.res.destroyed) return
    if (more) {
      if (body.length > 0) this.res.write(body)
    } else this.res.end(body)
  }

  // -- the handshake --------------------------------------------------------------------

  private accept(subprotocol: string | null, headers: readonly (readonly [string, string])[]): void {
    this.phase = 'open'
    this.decided()
    const socket = this.socket
    if (socket.destroyed) {
      this.clientGone(1006)
      return
    }
    this.owner.setPending(this.req, { subprotocol, headers })
    this.res.statusCode = 101
    this.res.detachSocket(socket as never)
    this.credit = this.conn!.hello.requestWindow
    let called = false
    this.owner.wss.handleUpgrade(this.req, socket, this.head, (ws) => {
      called = true
      this.opened(ws)
    })
    if (!called) this.clientGone(1006)
  }

  private opened(ws: WebSocket): void {
    this.ws = ws
    this.owner.open.add(this)
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (this.disconnectSent || this.ended) return
      this.credit -= data.length
      this.conn!.sendFrame({
        type: FrameType.WS_RECEIVE,
        id: this.id,
        bytes: isBinary ? data : null,
        text: isBinary ? null : data.toString('utf8'),
      })
      if (this.credit <= 0 && !ws.isPaused) ws.pause()
    })
    ws.on('pong', () => (this.alive = true))
    ws.on('error', (err: Error & { code?: string }) => {
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') this.closeCode = 1009
      this.log.debug({ uri: this.req.url, err }, 'WebSocket error')
    })
    ws.on('close', (code: number) => {
      this.owner.open.delete(this)
      this.settle()
      this.clientGone(this.closeCode || code)
    })
  }

  private handshakeTimedOut(): void {
    if (this.phase !== 'handshake' || this.ended) return
    this.log.error(
      { uri: this.req.url, worker: this.lease?.pid, code: 'GH_ERR_ASGI_TIMEOUT' },
      'WebSocket: the application neither accepted nor refused within the timeout; cancelled',
    )
    this.phase = 'done'
    this.disconnectSent = true
    this.conn?.sendFrame({ type: FrameType.CANCEL, id: this.id })
    this.decided()
    if (!this.socket.destroyed) sendError(this.res, 'GH_ERR_ASGI_TIMEOUT')
  }

  private leaseAborted(reason: unknown): void {
    // The worker died (or was killed) under the handshake.
    if (this.phase !== 'handshake') return
    this.phase = 'done'
    this.decided()
    const code = reason instanceof GatehouseError ? reason.code : 'GH_ERR_WORKER_DIED'
    if (!this.socket.destroyed) sendError(this.res, code)
  }

  // -- messages -------------------------------------------------------------------------

  private send(bytes: Buffer | null, text: string | null): void {
    const ws = this.ws!
    if (ws.readyState !== WebSocket.OPEN) return
    const size = bytes ? bytes.length : text!.length
    const data = bytes ?? text!
    ws.send(data, { binary: bytes !== null }, (err) => {
      if (!err && !this.ended)
        this.conn!.sendFrame({ type: FrameType.RESPONSE_CREDIT, id: this.id, bytes: size })
    })
  }

  private closeWith(code: number, reason: string): void {
    const ws = this.ws
    if (!ws || ws.readyState === WebSocket.CLOSING || ws.readyState === WebSocket.CLOSED) return
    try {
      ws.close(code, reason)
    } catch {
      // An invalid code or a reason over 123 bytes from the app.
      ws.close(1011)
    }
  }

  /** The client is gone (or closed): the app gets websocket.disconnect with the code. */
  private clientGone(code: number): void {
    if (this.phase === 'handshake') {
      this.phase = 'done'
      this.decided()
    }
    if (this.disconnectSent || this.ended || !this.conn) return
    this.disconnectSent = true
    this.conn.sendFrame({ type: FrameType.WS_DISCONNECT, id: this.id, code })
  }

  keepalive(): void {
    const ws = this.ws
    if (!ws || ws.readyState !== WebSocket.OPEN) return
    if (!this.alive) {
      this.log.debug({ uri: this.req.url }, 'WebSocket: no pong to the last ping; dropping the client')
      ws.terminate()
      return
    }
    this.alive = false
    ws.ping()
  }

  goingAway(): void {
    this.closeWith(1001, 'server shutting down')
  }
}
