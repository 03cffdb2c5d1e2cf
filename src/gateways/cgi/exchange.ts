/*
 * One run of a CGI script (RFC 3875): started without a shell, in its own process group;
 * the request body on its stdin; its stderr to the error log; its stdout parsed as a CGI
 * response (cgi-vars/response.ts) and relayed to the client (core/response-relay.ts), or
 * for an nph- script passed to the socket as it is. The run is bounded by a timeout, and
 * the whole process group is stopped when the client leaves or the gateway closes, so
 * that nothing outlives its request.
 */
import { spawn } from 'node:child_process'
import type { IncomingMessage } from 'node:http'
import { dirname } from 'node:path'
import { Readable, Transform, type Writable } from 'node:stream'
import type { Logger } from 'pino'
import type { SpooledBody } from '../../core/body-spool.js'
import type { CancelSignal } from '../../core/cancel.js'
import { GatehouseError } from '../../core/errors.js'
import { relayResponse } from '../../core/response-relay.js'
import type { ResponseBufferOptions } from '../../core/response-buffer.js'
import type { RequestContext } from '../../core/types.js'
import { type CgiResponseHead, CgiResponseParser } from '../../cgi-vars/response.js'
import { ForkedScript, ForkServer, ForkServerUnavailable } from '../../process/fork-server.js'
import { terminateGroup } from '../../process/process-group.js'
import type { ScriptTarget } from './resolve.js'
import { isHttp2 } from '../../http/connection.js'
import { childIdentity } from '../../process/identity.js'
import { type HeadProblem, responseError } from './errors.js'

/** How much of one request's stderr reaches the error log; the rest is counted and dropped. */
const STDERR_LOG_BYTES = 64 * 1024
const STDERR_LINE_BYTES = 4096

export type Body =
  | { kind: 'none' }
  /** Read from the request as it arrives; `length` is CONTENT_LENGTH (undefined: unknown). */
  | { kind: 'stream'; length: number | undefined }
  /** Read whole first (chunked_body = "buffer"); its file, once it needs one, is the script's stdin. */
  | { kind: 'spooled'; spool: SpooledBody }

/** The request a script is run for: the client's, or the GET of a local redirect. */
export interface Dispatch {
  method: string
  rawPath: string
  query: string
  path: string
  rawHeaders: readonly string[]
  body: Body
}

export type Outcome = { kind: 'done' } | { kind: 'local-redirect'; location: string }

/** A run as the gateway keeps count of it, to stop it on close(). */
export interface Running {
  stop(): void
  closed: Promise<void>
}

/** What CgiExchange needs of a started script: a ChildProcess, or a ForkedScript. */
export interface ScriptChild {
  readonly pid?: number | undefined
  readonly stdin: Writable | null
  readonly stdout: Readable | null
  readonly stderr: Readable | null
  once(event: 'error', listener: (err: Error) => void): this
  once(event: 'exit', listener: (code: number | null, signal: NodeJS.Signals | null) => void): this
  once(event: 'close', listener: () => void): this
}

/** What a run needs of its gateway (CgiHandler). */
export interface RunSettings {
  /** Longest run, from start to the last byte of output, in ms (0: no limit). */
  timeout: number
  /** Between SIGTERM and SIGKILL, in ms. */
  killGrace: number
  maxHeaderBytes: number
  /** Response buffering (core/response-buffer.ts); undefined: the script waits for the client. */
  buffering?: ResponseBufferOptions | undefined
  log: Logger
  /** Count a run among the gateway's until it is over (the returned function). */
  track(run: Running): () => void
}

/** Starts scripts: through the fork server while it works, else with child_process.spawn. */
export class ScriptSpawner {
  private forkServer: ForkServer | null

  constructor(
    spawner: 'forkserver' | 'direct',
    python: string,
    private readonly log: Logger,
  ) {
    this.forkServer = spawner === 'forkserver' ? new ForkServer(python, log) : null
  }

  /**
   * Start `target` with `env`, in the script's directory. A spooled body in a file becomes
   * its stdin (it is then the child's, and `dispatch.body` is none). Throws GH_ERR_CGI_SPAWN.
   */
  async start(target: ScriptTarget, env: Record<string, string>, dispatch: Dispatch): Promise<ScriptChild> {
    if (this.forkServer) {
      const forkServer = this.forkServer
      try {
        return await forkServer.spawn({
          argv: target.argv,
          env,
          cwd: dirname(target.filename),
          stdin: dispatch.body.kind !== 'none',
        })
      } catch (err) {
        if (!(err instanceof ForkServerUnavailable)) {
          throw new GatehouseError('GH_ERR_CGI_SPAWN', `${target.argv[0]}: ${(err as Error).message}`, {
            cause: err,
          })
        }
        // No interpreter (or one that cannot run the fork server): say so once, and run
        // scripts the slow way from now on.
        if (this.forkServer === forkServer) {
          this.log.warn({ err }, 'cgi: fork server unavailable; starting scripts with child_process.spawn')
          this.forkServer = null
          void forkServer.close()
        }
      }
    }
    let child: ScriptChild
    try {
      const body = dispatch.body
      const file = body.kind === 'spooled' ? body.spool.file : undefined
      const stdin = body.kind === 'none' ? 'ignore' : file ? file.fd : 'pipe'
      child = spawn(target.argv[0]!, target.argv.slice(1), {
        cwd: dirname(target.filename),
        env,
        stdio: [stdin, 'pipe', 'pipe'],
        // Its own process group (setsid), so the script and everything it starts can be
        // signalled as one; and never a shell in between.
        detached: true,
        shell: false,
        ...childIdentity(),
      })
    } catch (err) {
      throw new GatehouseError('GH_ERR_CGI_SPAWN', `${target.filename}: ${(err as Error).message}`, {
        cause: err,
      })
    }
    if (dispatch.body.kind === 'spooled' && dispatch.body.spool.file) {
      // The child holds its own copy of the descriptor now.
      const spool = dispatch.body.spool
      dispatch.body = { kind: 'none' }
      void spool.dispose()
    }
    return child
  }

  close(): Promise<void> {
    return this.forkServer?.close() ?? Promise.resolve()
  }
}

/**
 * Run a started script for `ctx` and stream its response. Resolves when the response is
 * done (or the client left), or with the local redirect the script asked for; rejects
 * before any response went out. `release` frees its process slot once it is gone.
 */
export function runScript(
  settings: RunSettings,
  ctx: RequestContext,
  target: ScriptTarget,
  dispatch: Dispatch,
  child: ScriptChild,
  release: () => void,
  signal: CancelSignal,
): Promise<Outcome> {
  return new CgiExchange(settings, ctx, target, dispatch, child, release, signal).promise
}

/** One script run: wires stdin, stdout, stderr, the timeout and the client's disconnect. */
class CgiExchange {
  readonly promise: Promise<Outcome>
  private resolveOutcome!: (o: Outcome) => void
  private rejectOutcome!: (e: unknown) => void
  private settled = false
  private exited = false
  private closed = false
  private exitCode: number | null = null
  private exitSignal: NodeJS.Signals | null = null
  private stopping: Promise<void> | null = null
  private readonly exitSeen: Promise<void>
  private timer: NodeJS.Timeout | undefined
  /** Headers (or, for nph-, the first bytes) went to the client. */
  private headSent = false
  /** The script's response is complete: what is left is the relay's, or nothing. */
  private responseDone = false
  private head: CgiResponseHead | null = null
  /** The response body as the relay (core/response-relay.ts) reads it; null for nph- scripts. */
  private body: Readable | null = null
  /** Bytes still allowed by the script's own Content-Length. */
  private remaining: number | undefined
  /** Output after the head is read and dropped (HEAD, 204/304, local redirect, a full Content-Length). */
  private discard = false
  /** stdout ended before the header block was complete: reported once the exit status is known. */
  private pendingHeadError: HeadProblem | null = null
  private readonly parser: CgiResponseParser | null
  private readonly log: Logger
  private readonly untrack: () => void

  constructor(
    private readonly settings: RunSettings,
    private readonly ctx: RequestContext,
    private readonly target: ScriptTarget,
    private readonly dispatch: Dispatch,
    private readonly child: ScriptChild,
    private readonly release: () => void,
    signal: CancelSignal,
  ) {
    this.log = settings.log
    // HTTP/2 has no socket to write an nph- script's bytes to: its response is parsed as a
    // CGI response, the status line read as a Status field (nphStatusLine).
    this.nphParsed = target.nph === true && isHttp2(ctx.req)
    this.parser =
      target.nph && !this.nphParsed
        ? null
        : new CgiResponseParser({ maxHeaderBytes: settings.maxHeaderBytes })
    this.promise = new Promise<Outcome>((resolve, reject) => {
      this.resolveOutcome = resolve
      this.rejectOutcome = reject
    })
    let closedResolve!: () => void
    const closed = new Promise<void>((r) => {
      closedResolve = r
    })
    this.untrack = settings.track({ stop: () => this.stop('server shutting down'), closed })
    this.exitSeen = new Promise<void>((r) => child.once('exit', () => r()))

    child.once('error', (err) => {
      if (child instanceof ForkedScript && child.lost) {
        // The fork server died: no exit status or stderr will come; stop the script and
        // give up on its response (502, or a cut response).
        this.log.warn({ err, script: target.filename, script_pid: child.pid }, 'cgi: fork server lost')
        if (this.responseDone) this.stop('fork server lost')
        else
          this.fail(
            new GatehouseError('GH_ERR_UPSTREAM', `${target.filename}: ${err.message}`, { cause: err }),
          )
      } else if (child.pid === undefined || child instanceof ForkedScript) {
        // Never ran: spawn() failed, or the fork server's execve did.
        this.fail(new GatehouseError('GH_ERR_CGI_SPAWN', `${target.argv[0]}: ${err.message}`, { cause: err }))
      } else this.log.warn({ err, script: target.filename }, 'cgi: process error')
    })
    child.once('exit', (code, signal) => {
      this.exited = true
      this.exitCode = code
      this.exitSignal = signal
      if (this.pendingHeadError) this.failHead(this.pendingHeadError)
    })
    child.once('close', () => {
      this.closed = true
      clearTimeout(this.timer)
      this.release()
      this.untrack()
      closedResolve()
      if (this.exitCode !== 0 && this.exitCode !== null)
        this.log.debug(
          { script: target.filename, code: this.exitCode },
          'cgi: script exited with an error status',
        )
      if (this.head?.kind === 'local-redirect')
        this.settle(() => this.resolveOutcome({ kind: 'local-redirect', location: this.head!.location! }))
      else if (!this.settled && !this.responseDone) {
        // stdout closed with no head and no exit event (spawn failure is handled by 'error').
        this.failHead(this.parser?.end() ?? { code: 'empty', message: 'no output' })
      }
    })

    const { timeout } = settings
    if (timeout > 0) this.timer = setTimeout(() => this.onTimeout(timeout), timeout)
    if (signal.aborted) this.onAbort()
    else signal.addEventListener('abort', () => this.onAbort(), { once: true })

    this.feedStdin()
    this.readStderr(child.stderr!)
    this.readStdout(child.stdout!)
  }

  private settle(fn: () => void): void {
    if (this.settled) return
    this.settled = true
    fn()
  }

  private fail(err: unknown): void {
    this.stop('failed')
    if (this.headSent) {
      // The relay cuts the client's connection (its framing cannot be finished) and logs why.
      if (this.body) this.body.destroy(err as Error)
      else {
        this.log.warn({ err, script: this.target.filename }, 'cgi: response cut short')
        this.ctx.res.destroy()
      }
      this.settle(() => this.resolveOutcome({ kind: 'done' }))
    } else this.settle(() => this.rejectOutcome(err))
  }

  private failHead(problem: HeadProblem): void {
    const status = this.exitSignal
      ? ` (killed by ${this.exitSignal})`
      : this.exitCode !== null && this.exitCode !== 0
        ? ` (exit status ${this.exitCode})`
        : ''
    this.fail(responseError(problem, `${this.target.scriptName || this.target.filename}${status}`))
  }

  /** SIGTERM the script's process group, SIGKILL after kill_grace. Idempotent. */
  private stop(why: string): void {
    if (this.closed || this.stopping || this.child.pid === undefined) return
    this.log.debug({ script: this.target.filename, script_pid: this.child.pid, why }, 'cgi: stopping script')
    // Its output is not wanted any more. Destroying our end also matters when stdout was
    // paused for backpressure: an undrained pipe never closes, and 'close' (which frees the
    // slot) waits for it.
    this.discard = true
    this.child.stdout?.destroy()
    this.stopping = terminateGroup(this.child.pid, this.settings.killGrace, this.exitSeen).then(() =>
      this.exitSeen.then(() => {
        // A descendant that left the group (setsid) may still hold stderr or stdout open;
        // once the group is dealt with and the leader is gone, stop waiting for those pipes.
        this.child.stdout?.destroy()
        this.child.stderr?.destroy()
      }),
    )
  }

  private onTimeout(ms: number): void {
    this.log.warn({ script: this.target.filename, timeout_ms: ms }, 'cgi: script timed out; stopping it')
    if (this.responseDone) {
      this.stop('timeout after response')
      return
    }
    this.fail(
      new GatehouseError(
        'GH_ERR_UPSTREAM_TIMEOUT',
        `${this.target.scriptName}: no complete response within ${ms} ms`,
      ),
    )
  }

  private onAbort(): void {
    if (this.responseDone) return
    this.stop('client gone')
    this.settle(() => this.resolveOutcome({ kind: 'done' }))
  }

  private feedStdin(): void {
    const stdin = this.child.stdin
    if (!stdin) return
    // EPIPE: the script stopped reading (it may answer without reading the body); fine.
    stdin.on('error', () => {})
    const body = this.dispatch.body
    if (body.kind === 'spooled') {
      // A pipe (or, from the fork server, a socket) rather than the file: copy it. The copy
      // may outlive the request's handling, so it disposes of the spool itself.
      this.dispatch.body = { kind: 'none' }
      const { spool } = body
      const source = spool.stream()
      source.once('close', () => void spool.dispose())
      source.on('error', () => stdin.destroy())
      stdin.once('close', () => source.destroy())
      source.pipe(stdin)
      return
    }
    if (body.kind !== 'stream') {
      stdin.end()
      return
    }
    pumpRequest(
      this.ctx.req,
      stdin,
      body.length === undefined ? this.ctx.maxBodyBytes : Number.POSITIVE_INFINITY,
      () => {
        this.ctx.res.shouldKeepAlive = false
        this.fail(new GatehouseError('GH_ERR_BODY_TOO_LARGE', `over ${this.ctx.maxBodyBytes} bytes`))
      },
    )
  }

  private readStderr(stderr: Readable): void {
    let logged = 0
    let dropped = 0
    let pending = ''
    const emit = (line: string) => {
      if (logged >= STDERR_LOG_BYTES) {
        dropped += line.length
        return
      }
      logged += line.length
      this.log.warn({ script: this.target.filename, script_pid: this.child.pid }, line)
    }
    stderr.setEncoding('utf8')
    stderr.on('data', (text: string) => {
      pending += text
      let nl = pending.indexOf('\n')
      while (nl !== -1) {
        emit(pending.slice(0, nl).replace(/\r$/, ''))
        pending = pending.slice(nl + 1)
        nl = pending.indexOf('\n')
      }
      while (pending.length > STDERR_LINE_BYTES) {
        emit(pending.slice(0, STDERR_LINE_BYTES))
        pending = pending.slice(STDERR_LINE_BYTES)
      }
    })
    stderr.on('end', () => {
      if (pending) emit(pending)
      if (dropped > 0)
        this.log.warn(
          { script: this.target.filename, dropped_chars: dropped },
          'cgi: further stderr output not logged',
        )
    })
    stderr.on('error', () => {})
  }

  private readStdout(script: Readable): void {
    script.on('error', () => {})
    if (this.target.nph && !this.nphParsed) {
      this.pipeNph(script)
      return
    }
    const stdout = this.nphParsed ? script.pipe(nphStatusLine()) : script
    const parser = this.parser!
    stdout.on('data', (chunk: Buffer) => {
      if (this.settled && !this.headSent && this.head?.kind !== 'local-redirect') return
      let body = chunk
      if (!parser.complete) {
        const r = parser.push(chunk)
        if (r.type === 'incomplete') return
        if (r.type === 'error') {
          this.failHead(r.error)
          return
        }
        if (r.type === 'complete') {
          this.onHead(r.head, stdout)
          body = r.body
        }
      }
      if (body.length > 0) this.writeBody(stdout, body)
    })
    stdout.on('end', () => {
      if (!parser.complete) {
        const error = parser.end()!
        if (this.exited || this.child.pid === undefined) this.failHead(error)
        else this.pendingHeadError = error
        return
      }
      if (this.discard || this.settled) return
      this.responseDone = true
      if (this.remaining !== undefined && this.remaining > 0) {
        this.body!.destroy(
          new GatehouseError(
            'GH_ERR_UPSTREAM',
            `${this.target.filename}: output ${this.remaining} bytes short of its Content-Length`,
          ),
        )
      } else this.body!.push(null)
    })
  }

  private onHead(head: CgiResponseHead, stdout: Readable): void {
    this.head = head
    if (head.dropped.length > 0)
      this.log.debug({ script: this.target.filename, fields: head.dropped }, 'cgi: dropped hop-by-hop fields')
    if (head.kind === 'local-redirect') {
      // The rest of the output is ignored; the outcome is settled when the process is gone.
      this.discard = true
      return
    }
    this.remaining = head.contentLength
    const body = new Readable({
      highWaterMark: 64 * 1024,
      read: () => stdout.resume(),
      destroy: (err, callback) => {
        // The relay gave up (the client left: the cancel signal stops the script), or failed.
        this.discard = true
        callback(err)
      },
    })
    this.body = body
    const empty = head.contentLength === 0
    let relaying: Promise<void> | undefined
    try {
      relaying = relayResponse(
        this.ctx,
        {
          status: head.status,
          ...(head.reason !== undefined ? { reason: head.reason } : {}),
          headers: head.headers,
          body,
          ...(empty ? { complete: true, takeWhole: () => Buffer.alloc(0) } : {}),
        },
        this.log,
        { script: this.target.filename },
        this.settings.buffering,
      )
    } catch (err) {
      this.body = null
      const refused = ((err as Error).cause ?? err) as Error
      this.failHead({ code: 'malformed_field', message: refused.message })
      return
    }
    this.headSent = true
    if (relaying) {
      void relaying.then(() => this.settle(() => this.resolveOutcome({ kind: 'done' })))
      return
    }
    // Written whole with the head (HEAD, 204, 304, Content-Length: 0): the rest is not wanted.
    this.discard = true
    this.responseDone = true
    this.settle(() => this.resolveOutcome({ kind: 'done' }))
  }

  /** Output after the head -> the relay's body, held to the script's Content-Length. */
  private writeBody(stdout: Readable, chunk: Buffer): void {
    if (this.discard || !this.body) return
    let data = chunk
    if (this.remaining !== undefined) {
      if (data.length > this.remaining) {
        this.log.warn(
          { script: this.target.filename },
          'cgi: output longer than its Content-Length; extra dropped',
        )
        data = data.subarray(0, this.remaining)
      }
      this.remaining -= data.length
    }
    if (!this.body.push(data)) stdout.pause()
    if (this.remaining === 0) {
      this.discard = true
      this.responseDone = true
      this.body.push(null)
      // What the script still writes is read and dropped, so that it can exit.
      stdout.resume()
    }
  }

  /** An nph- script answering an HTTP/2 request: its output goes through the CGI parser. */
  private readonly nphParsed: boolean

  /** nph-: the script's bytes are the HTTP response; they go to the socket as they come. */
  private pipeNph(stdout: Readable): void {
    const { res, req } = this.ctx
    const socket = (res.socket ?? req.socket) as Writable
    stdout.on('data', (chunk: Buffer) => {
      if (!this.headSent) {
        this.headSent = true
        // For the access log only: the status the script wrote.
        const m = /^HTTP\/\d\.\d (\d{3})/.exec(chunk.subarray(0, 16).toString('latin1'))
        if (m) res.statusCode = Number(m[1])
      }
      if (!socket.write(chunk)) {
        stdout.pause()
        socket.once('drain', () => stdout.resume())
      }
    })
    stdout.on('end', () => {
      if (this.settled) return
      if (!this.headSent) {
        this.failHead({ code: 'empty', message: 'no output (nph- script)' })
        return
      }
      this.responseDone = true
      // An nph- response is delimited by the end of the connection.
      socket.end()
      this.settle(() => this.resolveOutcome({ kind: 'done' }))
    })
  }
}

/** Request body -> stdin with backpressure; `limit` counts bytes for bodies of unknown length. */
function pumpRequest(req: IncomingMessage, stdin: Writable, limit: number, tooLarge: () => void): void {
  let bytes = 0
  let open = true
  const detach = () => {
    open = false
    req.off('data', onData)
    req.off('end', onEnd)
    stdin.off('drain', onDrain)
  }
  const onData = (chunk: Buffer) => {
    bytes += chunk.length
    if (bytes > limit) {
      detach()
      stdin.destroy()
      req.resume()
      tooLarge()
      return
    }
    if (!stdin.write(chunk)) req.pause()
  }
  const onDrain = () => {
    if (open) req.resume()
  }
  const onEnd = () => {
    detach()
    stdin.end()
  }
  stdin.on('drain', onDrain)
  stdin.once('close', () => {
    if (!open) return
    // The script closed stdin (or exited) before the body was all read: drop the rest.
    detach()
    req.resume()
  })
  // An aborted upload: the response side sees the disconnect and stops the script.
  req.on('error', () => {})
  req.on('data', onData)
  req.on('end', onEnd)
  if (req.readableEnded) onEnd()
}

/**
 * An nph- script's output as a CGI response: its first line `HTTP/1.x 418 Phrase` becomes
 * `Status: 418 Phrase`, the rest passes as it is (for HTTP/2, where the head is re-encoded).
 */
function nphStatusLine(): Transform {
  let line: Buffer | null = Buffer.alloc(0)
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      if (line === null) return done(null, chunk)
      line = Buffer.concat([line, chunk])
      const nl = line.indexOf(10)
      if (nl === -1 && line.length < 256) return done()
      const first = line.subarray(0, nl === -1 ? line.length : nl).toString('latin1')
      const rest = nl === -1 ? Buffer.alloc(0) : line.subarray(nl)
      line = null
      const m = /^HTTP\/\d\.\d (\d{3}.*?)\r?$/.exec(first)
      // Not a status line: left for the parser to refuse (502).
      done(
        null,
        m
          ? Buffer.concat([Buffer.from(`Status: ${m[1]}`, 'latin1'), rest])
          : Buffer.concat([Buffer.from(first, 'latin1'), rest]),
      )
    },
    flush(done) {
      done(null, line && line.length > 0 ? line : undefined)
    },
  })
}
