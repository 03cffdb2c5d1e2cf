/*
 * One connection to one Python worker's Unix socket (docs/python-bridge.md), carrying many
 * requests at once by id. `exchange()` turns a node:http (req, res) pair into frames and
 * back, with flow control both ways: the request body is read from the client only as
 * fast as the worker grants credit (100 Continue goes out on the first grant), and the
 * worker gets response credit back only as the client takes the bytes.
 */
import { once } from 'node:events'
import { createReadStream } from 'node:fs'
import { open } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { type ErrorCode, GatehouseError } from '../../core/errors.js'
import { isFinalStatus, reasonPhrase } from '../../core/http-headers.js'
import { relayEarlyHints } from '../../core/respond.js'
import { type BodySink, ResponseBuffer, type ResponseBufferOptions } from '../../core/response-buffer.js'
import {
  type AnyFrame,
  encodeFrame,
  encodeHttpRequest,
  FrameDecoder,
  FrameType,
  WORKER_PROTOCOL_VERSION,
  type WorkerFrame,
} from './codec.js'
import { workerError } from './errors.js'

const EMPTY = Buffer.alloc(0)

/** Response body bytes a worker may send before Node hands credit back. */
export const RESPONSE_WINDOW = 256 * 1024

export interface WorkerHello {
  pid: number
  requestWindow: number
  capacity: number
}

export interface ExchangeInput {
  environ: Readonly<Record<string, string>>
  /** The request body (already de-chunked by node:http), or null when there is none. */
  body: Readable | null
  /** Largest body accepted from a body without Content-Length (chunked). */
  maxBodyBytes: number
  /** The client sent `Expect: 100-continue`: nothing is read or sent before the app reads. */
  expectContinue: boolean
  res: ServerResponse
  /**
   * Response buffering (core/response-buffer.ts): a body of more than one frame goes through
   * a buffer in front of `res` that takes the bytes at the worker's pace. Absent: the worker
   * gets credit only as the client takes the bytes.
   */
  buffering?: ResponseBufferOptions
  head: boolean
  /**
   * The request's first frame, instead of HTTP_REQUEST from `environ` (ASGI sends its
   * scope). `requestWindow` is the body Node sends before the worker grants more.
   */
  start?: (id: number, hasBody: boolean, responseWindow: number, requestWindow: number) => Buffer
  /**
   * ms, 0 or absent = none: past it the worker is sent CANCEL (it logs the request's stack
   * and cancels it) and the exchange ends with `timeout` once the worker confirms.
   */
  timeoutMs?: number
  /**
   * Registers what takes the request back from a worker that has not started it (the
   * client was answered elsewhere): HTTP_DISCONNECT goes out, and the worker, reaching it,
   * skips it and answers FINISHED.
   */
  onTakeBack?: (takeBack: () => void) => void
}

export type ExchangeOutcome =
  /** The response went out whole. */
  | { kind: 'done' }
  /** The client went away; the worker has finished the request (close() ran). */
  | { kind: 'disconnected' }
  /** The app failed; `headersSent` tells whether a 500 can still be sent. */
  /** `code`: the answer's error code when it is not the interface's app error (500). */
  | { kind: 'app-error'; message: string; code?: ErrorCode }
  /** The request ran past `timeoutMs`; the worker cancelled it. */
  | { kind: 'timeout' }
  /** Taken back before the worker started it: the app never saw it (it may go to another worker). */
  | { kind: 'not-started' }

/**
 * A WebSocket session (or anything else carried by id besides exchanges) on a connection:
 * the connection hands it every frame with its id and tells it when the connection fails.
 */
export interface SessionSink {
  onFrame(frame: WorkerFrame): void
  onConnectionLost(err: GatehouseError): void
}

/** Per-request state on the Node side. */
class Stream {
  credit = 0
  started = false
  /** `100 Continue` went out (or is not wanted): once per request, not once per grant. */
  continueSent = false
  /** The worker sent its last frame for this request. */
  finished = false
  disconnectSent = false
  body: Readable | null = null
  held: Buffer | null = null
  bodyDone = false
  owed = 0
  /** Where the body goes once it spans frames: `input.res`, or a buffer in front of it. */
  out: BodySink | null = null
  /** How the exchange ended for the client, decided before the worker's last frame. */
  outcome: ExchangeOutcome | null = null
  failure: GatehouseError | null = null
  resolve!: (outcome: ExchangeOutcome) => void
  reject!: (err: unknown) => void
  readonly done: Promise<ExchangeOutcome>
  bytesIn = 0
  /** What exchange() set up for the request (a listener, a timer), undone when it settles. */
  cleanup: (() => void) | null = null

  constructor(
    readonly id: number,
    readonly input: ExchangeInput,
  ) {
    this.done = new Promise((resolve, reject) => {
      this.resolve = resolve
      this.reject = reject
    })
  }
}

/**
 * How far a request had got when its worker's connection failed under it, for the pool's
 * retry rule (a vanished worker costs only what it had begun to answer): `unsent`, the
 * connection was gone before anything of the request was written; `unanswered`, it was
 * written but the worker sent nothing for it before the connection closed.
 */
export type LostAt = 'unsent' | 'unanswered'

/** The rejection of an exchange whose worker vanished before answering it (see LostAt). */
export class RequestLostError extends Error {
  constructor(
    readonly lostAt: LostAt,
    readonly reason: GatehouseError,
  ) {
    super(reason.message, { cause: reason })
    this.name = 'RequestLostError'
  }
}

/** Frames over a pool's bridge connections, for its metrics (WorkerPool.traffic). */
export interface BridgeTraffic {
  framesSent: number
  framesReceived: number
}

export class WorkerConnection {
  readonly hello: WorkerHello
  private readonly decoder = new FrameDecoder()
  private readonly streams = new Map<number, Stream>()
  private readonly sessions = new Map<number, SessionSink>()
  private nextId = 1
  private closedError: GatehouseError | null = null
  private readonly closeListeners: ((err: GatehouseError) => void)[] = []

  private constructor(
    private readonly socket: Socket,
    hello: WorkerHello,
    pending: Buffer,
    private readonly traffic: BridgeTraffic,
  ) {
    this.hello = hello
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('error', () => {})
    socket.on('close', () =>
      this.fail(new GatehouseError('GH_ERR_WORKER_DIED', `worker ${hello.pid} closed the connection`)),
    )
    if (pending.length > 0) this.onData(pending)
  }

  /** Connect and read the worker's HELLO. */
  static async connect(
    path: string,
    timeoutMs = 10_000,
    traffic: BridgeTraffic = { framesSent: 0, framesReceived: 0 },
  ): Promise<WorkerConnection> {
    const socket = connect({ path })
    socket.setNoDelay?.(true)
    const timer = setTimeout(() => socket.destroy(new Error('no HELLO from the worker in time')), timeoutMs)
    try {
      await once(socket, 'connect')
      const decoder = new FrameDecoder({ maxFrameBytes: 4096 })
      const chunks: Buffer[] = []
      for (;;) {
        const [chunk] = (await once(socket, 'data')) as [Buffer]
        chunks.push(chunk)
        const all = Buffer.concat(chunks)
        if (all.length < 4) continue
        const n = all.readUInt32LE(0)
        if (all.length < 4 + n) continue
        const [frame] = decoder.push(all.subarray(0, 4 + n))
        if (!frame || frame.type !== FrameType.HELLO)
          throw new GatehouseError('GH_ERR_WORKER_PROTOCOL', 'the first frame is not HELLO')
        if (frame.version !== WORKER_PROTOCOL_VERSION)
          throw new GatehouseError(
            'GH_ERR_WORKER_PROTOCOL',
            `worker speaks protocol version ${frame.version}`,
          )
        socket.pause()
        const conn = new WorkerConnection(
          socket,
          { pid: frame.pid, requestWindow: frame.requestWindow, capacity: frame.capacity },
          all.subarray(4 + n),
          traffic,
        )
        socket.resume()
        return conn
      }
    } catch (caught) {
      socket.destroy()
      const err = workerError(caught)
      throw err instanceof GatehouseError
        ? err
        : new GatehouseError('GH_ERR_UPSTREAM_CONNECT', `worker socket ${path}: ${(err as Error).message}`, {
            cause: err,
          })
    } finally {
      clearTimeout(timer)
    }
  }

  get closed(): boolean {
    return this.closedError !== null
  }

  /** Requests in flight on this connection. */
  get inflight(): number {
    return this.streams.size
  }

  /**
   * Open a session (a WebSocket): `first(id)` is its first frame; every frame the worker
   * sends with that id goes to `sink` until endSession(id).
   */
  openSession(sink: SessionSink, first: (id: number) => Buffer): number {
    if (this.closedError) throw this.closedError
    const id = this.takeId()
    this.sessions.set(id, sink)
    this.write(first(id))
    return id
  }

  /** Forget a session: later frames with its id are protocol errors. */
  endSession(id: number): void {
    this.sessions.delete(id)
  }

  /** Send one frame (dropped once the connection is closed). */
  sendFrame(frame: AnyFrame): void {
    this.send(frame)
  }

  private takeId(): number {
    let id = this.nextId
    while (this.streams.has(id) || this.sessions.has(id)) id = id >= 0x7fffffff ? 1 : id + 1
    this.nextId = id >= 0x7fffffff ? 1 : id + 1
    return id
  }

  onClose(listener: (err: GatehouseError) => void): void {
    this.closeListeners.push(listener)
  }

  close(): void {
    this.socket.destroy()
  }

  private corked = false
  private readonly uncork = () => {
    this.corked = false
    this.socket.uncork()
  }

  /**
   * Frames written in one event-loop pass go out in one writev: uncorked in the check phase
   * (setImmediate), after every request read in that pass (measured: 15-60% more
   * requests per second than uncorking per tick, when each tick carries one request).
   */
  private write(data: Buffer): void {
    if (this.closed) return
    this.traffic.framesSent++
    if (!this.corked) {
      this.corked = true
      this.socket.cork()
      setImmediate(this.uncork)
    }
    this.socket.write(data)
  }

  private send(frame: AnyFrame): void {
    this.write(encodeFrame(frame))
  }

  /**
   * Run one request. Resolves with how it ended; rejects with GH_ERR_WORKER_DIED or
   * GH_ERR_WORKER_PROTOCOL when the worker fails (the response may be half sent: the
   * caller checks res.headersSent).
   */
  exchange(input: ExchangeInput): Promise<ExchangeOutcome> {
    if (this.closedError) return Promise.reject(new RequestLostError('unsent', this.closedError))
    const id = this.takeId()
    const stream = new Stream(id, input)
    this.streams.set(id, stream)
    stream.body = input.body
    stream.credit = input.expectContinue ? 0 : this.hello.requestWindow
    this.write(
      input.start
        ? input.start(id, input.body !== null, RESPONSE_WINDOW, stream.credit)
        : encodeHttpRequest(id, input.environ, EMPTY, input.body !== null, RESPONSE_WINDOW),
    )
    const { res } = input
    const onClose = () => {
      if (!stream.finished && !res.writableFinished) this.disconnect(stream)
    }
    res.once('close', onClose)
    // Undone when the stream settles (settle()): no promise chain per request (issue 13).
    const timer = input.timeoutMs ? setTimeout(() => this.cancel(stream), input.timeoutMs) : undefined
    stream.cleanup = () => {
      res.off('close', onClose)
      if (timer) clearTimeout(timer)
    }
    input.onTakeBack?.(() => this.disconnect(stream))
    if (input.body) this.pumpBody(stream)
    return stream.done
  }

  /** Past the timeout: the worker cancels the request; it is over for the client now. */
  private cancel(stream: Stream): void {
    if (stream.finished) return
    stream.outcome = { kind: 'timeout' }
    if (stream.disconnectSent) return
    stream.disconnectSent = true
    stream.body?.pause()
    this.send({ type: FrameType.CANCEL, id: stream.id })
  }

  private disconnect(stream: Stream, destroyBody = true): void {
    if (stream.disconnectSent || stream.finished) return
    stream.disconnectSent = true
    if (destroyBody) stream.body?.destroy()
    else stream.body?.pause()
    this.send({ type: FrameType.HTTP_DISCONNECT, id: stream.id })
  }

  // -- request body -----------------------------------------------------------------

  private pumpBody(stream: Stream): void {
    const body = stream.body!
    body.on('data', (chunk: Buffer) => {
      stream.bytesIn += chunk.length
      if (stream.bytesIn > stream.input.maxBodyBytes) {
        body.pause()
        this.failRequest(stream, new GatehouseError('GH_ERR_BODY_TOO_LARGE'))
        return
      }
      this.sendBody(stream, chunk)
    })
    body.on('end', () => {
      stream.bodyDone = true
      this.flushBodyEnd(stream)
    })
    body.on('error', () => {
      // The client went away in the middle of its body.
      this.disconnect(stream)
    })
    if (stream.credit === 0) body.pause()
  }

  private sendBody(stream: Stream, chunk: Buffer): void {
    if (stream.finished || stream.disconnectSent) return
    let data = chunk
    if (data.length > stream.credit) {
      stream.held = data.subarray(stream.credit)
      data = data.subarray(0, stream.credit)
      stream.body!.pause()
    }
    stream.credit -= data.length
    if (data.length > 0) this.send({ type: FrameType.HTTP_BODY, id: stream.id, body: data, moreBody: true })
  }

  private flushBodyEnd(stream: Stream): void {
    if (!stream.bodyDone || stream.held || stream.finished || stream.disconnectSent) return
    this.send({ type: FrameType.HTTP_BODY, id: stream.id, body: Buffer.alloc(0), moreBody: false })
  }

  private onRequestCredit(stream: Stream, bytes: number): void {
    stream.credit += bytes
    if (!stream.continueSent && stream.input.expectContinue) {
      // The credit falls back to 0 every time the body catches up with the grants: only
      // the first grant answers the client's Expect.
      stream.continueSent = true
      if (!stream.started && !stream.input.res.headersSent) stream.input.res.writeContinue()
    }
    if (stream.held) {
      const held = stream.held
      stream.held = null
      this.sendBody(stream, held)
    }
    if (!stream.held) {
      if (stream.bodyDone) this.flushBodyEnd(stream)
      else stream.body?.resume()
    }
  }

  // -- frames from the worker -------------------------------------------------------

  /** Told of every read: the worker is making progress (the pool's stall_timeout). */
  private activity: { progress(): void } | null = null

  /** Who hears of this worker's progress (any lease of it: they share the worker). */
  onActivity(target: { progress(): void }): void {
    this.activity = target
  }

  private onData(chunk: Buffer): void {
    this.activity?.progress()
    let frames: AnyFrame[]
    try {
      frames = this.decoder.push(chunk)
      this.traffic.framesReceived += frames.length
    } catch (caught) {
      const err = workerError(caught)
      this.fail(
        err instanceof GatehouseError ? err : new GatehouseError('GH_ERR_WORKER_PROTOCOL', String(err)),
      )
      this.socket.destroy()
      return
    }
    for (const frame of frames) {
      try {
        this.onFrame(frame as WorkerFrame)
      } catch (caught) {
        const err = workerError(caught)
        this.fail(
          err instanceof GatehouseError
            ? err
            : new GatehouseError('GH_ERR_WORKER_PROTOCOL', (err as Error).message, { cause: err }),
        )
        this.socket.destroy()
        return
      }
    }
  }

  private onFrame(frame: WorkerFrame): void {
    // A heartbeat's whole meaning is its arrival (onData noted the worker's progress).
    if (
      frame.type === FrameType.LIFESPAN_RESULT ||
      frame.type === FrameType.HELLO ||
      frame.type === FrameType.HEARTBEAT
    )
      return
    const session = this.sessions.get(frame.id)
    if (session) {
      session.onFrame(frame)
      return
    }
    const stream = this.streams.get(frame.id)
    if (!stream) throw new GatehouseError('GH_ERR_WORKER_PROTOCOL', `frame for unknown request ${frame.id}`)
    if (stream.finished)
      throw new GatehouseError('GH_ERR_WORKER_PROTOCOL', `frame after the end of ${frame.id}`)
    const { res } = stream.input
    switch (frame.type) {
      case FrameType.REQUEST_CREDIT:
        this.onRequestCredit(stream, frame.bytes)
        return
      case FrameType.RESPONSE_START: {
        if (stream.started) throw new GatehouseError('GH_ERR_WORKER_PROTOCOL', 'second RESPONSE_START')
        stream.started = true
        if (stream.disconnectSent) {
          if (!frame.moreBody) this.end(stream, { kind: 'disconnected' })
          return
        }
        const flat: string[] = []
        let hasLength = false
        for (const [name, value] of frame.headers) {
          flat.push(name, value)
          if (name.length === 14 && name.toLowerCase() === 'content-length') hasLength = true
        }
        // The whole body is in this frame: a length instead of chunked framing.
        if (
          !frame.moreBody &&
          !hasLength &&
          !stream.input.head &&
          frame.status !== 204 &&
          frame.status !== 304
        )
          flat.push('Content-Length', String(frame.body.length))
        if (!isFinalStatus(frame.status)) {
          // The one status rule (core/http-headers.ts): what CGI and FastCGI answer too.
          stream.outcome = {
            kind: 'app-error',
            message: `the application's response status ${frame.status} is not a final status (200-599)`,
            code: 'GH_ERR_UPSTREAM',
          }
          this.disconnect(stream)
          if (!frame.moreBody) this.end(stream, stream.outcome)
          return
        }
        try {
          res.writeHead(frame.status, frame.reason || reasonPhrase(frame.status), flat)
        } catch (err) {
          // Node refuses the head (an invalid name or value): nothing went out yet.
          stream.outcome = {
            kind: 'app-error',
            message: `the application's response head was refused: ${(err as Error).message}`,
          }
          this.disconnect(stream)
          if (!frame.moreBody) this.end(stream, stream.outcome)
          return
        }
        this.onBody(stream, frame.body, frame.moreBody)
        return
      }
      case FrameType.EARLY_HINTS:
        if (stream.started)
          throw new GatehouseError('GH_ERR_WORKER_PROTOCOL', 'early hints after RESPONSE_START')
        if (!stream.disconnectSent)
          relayEarlyHints(
            res,
            frame.links.flatMap((link) => ['Link', link]),
          )
        return
      case FrameType.RESPONSE_BODY:
        if (!stream.started) throw new GatehouseError('GH_ERR_WORKER_PROTOCOL', 'body before RESPONSE_START')
        this.onBody(stream, frame.body, frame.moreBody)
        return
      case FrameType.RESPONSE_FILE:
        if (!stream.started) throw new GatehouseError('GH_ERR_WORKER_PROTOCOL', 'file before RESPONSE_START')
        this.onFile(stream, frame)
        return
      case FrameType.REQUEST_ERROR:
        this.end(
          stream,
          stream.disconnectSent ? { kind: 'disconnected' } : { kind: 'app-error', message: frame.message },
        )
        return
      case FrameType.FINISHED:
        if (!stream.disconnectSent)
          throw new GatehouseError('GH_ERR_WORKER_PROTOCOL', 'FINISHED without a disconnect')
        this.end(stream, frame.started === false ? { kind: 'not-started' } : { kind: 'disconnected' })
        return
      default:
        throw new GatehouseError('GH_ERR_WORKER_PROTOCOL', `unexpected frame type ${frame.type}`)
    }
  }

  private onBody(stream: Stream, body: Buffer, moreBody: boolean): void {
    if (stream.disconnectSent) {
      if (!moreBody) this.end(stream, { kind: 'disconnected' })
      return
    }
    const n = body.length
    if (!moreBody) {
      const out = stream.out ?? stream.input.res
      if (stream.input.head || n === 0) out.end()
      else out.end(body)
      this.end(stream, { kind: 'done' })
      return
    }
    if (n === 0) return
    const { buffering, res } = stream.input
    const out = (stream.out ??= buffering ? new ResponseBuffer(res, buffering) : res)
    if (stream.input.head || out.write(body)) this.giveCredit(stream, n)
    else {
      stream.owed += n
      out.once('drain', () => {
        const owed = stream.owed
        stream.owed = 0
        this.giveCredit(stream, owed)
      })
    }
  }

  private giveCredit(stream: Stream, n: number): void {
    if (n > 0 && !stream.finished && !stream.disconnectSent)
      this.send({ type: FrameType.RESPONSE_CREDIT, id: stream.id, bytes: n })
  }

  private onFile(
    stream: Stream,
    frame: Extract<WorkerFrame, { type: typeof FrameType.RESPONSE_FILE }>,
  ): void {
    // Node reads the file itself: the bytes never pass through Python.
    stream.finished = true
    const { res } = stream.input
    const work = (async () => {
      const fh = await open(frame.path, 'r')
      try {
        const st = await fh.stat({ bigint: true })
        if (Number(st.ino) !== frame.ino || Number(st.dev) !== frame.dev)
          throw new Error(`${frame.path} is not the file the application opened`)
        if (stream.input.head || frame.length === 0) {
          res.end()
          return
        }
        const src = createReadStream('', {
          fd: fh,
          start: frame.offset,
          end: frame.offset + frame.length - 1,
          autoClose: false,
        })
        await pipeline(src, res)
      } finally {
        await fh.close()
      }
    })()
    work.then(
      () => this.end(stream, { kind: 'done' }, true),
      (err: unknown) => {
        res.destroy()
        this.end(
          stream,
          res.writableFinished || stream.disconnectSent
            ? { kind: 'disconnected' }
            : { kind: 'app-error', message: `file_wrapper: ${(err as Error).message}` },
          true,
        )
      },
    )
  }

  /** Fail the request now for the client; the worker is told and its last frame awaited. */
  private failRequest(stream: Stream, err: GatehouseError): void {
    stream.failure = err
    // The client is still there and gets the error's status.
    this.disconnect(stream, false)
  }

  /** The worker's last frame for the request arrived (or, for a file, Node finished sending it). */
  private end(stream: Stream, outcome: ExchangeOutcome, force = false): void {
    if (stream.finished && !force) return
    stream.finished = true
    this.streams.delete(stream.id)
    if (stream.body) {
      stream.body.removeAllListeners('data')
      // The app answered without reading all of the body: drop the rest, as node:http does,
      // so that the client's connection can carry its next request.
      if (!stream.bodyDone && !stream.body.destroyed && !stream.failure) stream.body.resume()
    }
    stream.cleanup?.()
    if (stream.failure) stream.reject(stream.failure)
    else stream.resolve(stream.outcome ?? outcome)
  }

  private fail(err: GatehouseError): void {
    if (this.closedError) return
    this.closedError = err
    for (const stream of this.streams.values()) {
      stream.finished = true
      stream.cleanup?.()
      stream.reject(stream.started ? err : new RequestLostError('unanswered', err))
    }
    this.streams.clear()
    const sessions = [...this.sessions.values()]
    this.sessions.clear()
    for (const session of sessions) session.onConnectionLost(err)
    for (const listener of this.closeListeners.splice(0)) listener(err)
  }
}

/** An IncomingMessage's `Expect: 100-continue`. */
export function expectsContinue(req: IncomingMessage): boolean {
  const expect = req.headers.expect
  return expect !== undefined && expect.toLowerCase() === '100-continue'
}
