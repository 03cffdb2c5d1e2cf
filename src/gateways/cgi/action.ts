/*
 * CGI/1.1 (RFC 3875): one process per request, the request in meta-variables, the body on
 * stdin, the response on stdout. The pure parts live in cgi-vars/meta.ts (environment)
 * and cgi-vars/response.ts (header block); this file owns the processes: spawning
 * without a shell, streaming both ways with backpressure, limits, and killing whole
 * process groups so that nothing outlives its request. docs/cgi.md is the user's view.
 */
import { spawn } from 'node:child_process'
import { constants, realpathSync } from 'node:fs'
import { access, realpath, stat } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { basename, dirname, extname, join, sep } from 'node:path'
import { Readable, type Writable } from 'node:stream'
import type { Logger } from 'pino'
import pino from 'pino'
import { z } from 'zod'
import { existingDir, existingFile } from '../../core/schema/paths.js'
import { strictObject } from '../../core/schema/strict.js'
import { duration, size } from '../../core/schema/units.js'
import { GatehouseError } from '../../core/errors.js'
import { ForkedScript, ForkServer, ForkServerUnavailable } from '../../process/fork-server.js'
import { ConcurrencyLimiter } from '../../process/limiter.js'
import { terminateGroup } from '../../process/process-group.js'
import { type CgiResponseError, type CgiResponseHead, CgiResponseParser } from '../../cgi-vars/response.js'
import { toRequestListener } from '../../http/context.js'
import { BadTargetError, parseTarget } from '../../http/request-target.js'
import type { ActionDefinition, Handler, RequestContext, SchemaEnv } from '../../core/types.js'
import { requestMeta } from '../../cgi-vars/script.js'
import { sendStatus } from '../../core/respond.js'
import { relayResponse } from '../../core/response-relay.js'
import { missingOrThrow } from '../../core/fs-errors.js'
import { type CancelSignal, cancelOnClientClose, ClientGone } from '../../core/cancel.js'
import { type SpooledBody, spoolBody } from '../../core/body-spool.js'

/** What a script inherits from the server's own environment unless configured otherwise. */
export const DEFAULT_PASS_ENV = ['PATH', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR'] as const
/** PATH for scripts when the server has none to pass on (interpreters are looked up in it). */
const FALLBACK_PATH = '/usr/local/bin:/usr/bin:/bin'
/** Chunked request bodies up to this size are held in memory; larger ones go to a temp file. */
const BODY_MEMORY_BYTES = 64 * 1024
/** How much of one request's stderr reaches the error log; the rest is counted and dropped. */
const STDERR_LOG_BYTES = 64 * 1024
const STDERR_LINE_BYTES = 4096

const ENV_NAME = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'not an environment variable name')
const ARG = z
  .string()
  .min(1)
  .refine((s) => !s.includes('\0'), 'NUL in an argument')
const COMMAND = z.union([ARG, z.array(ARG).min(1)]).transform((v) => (typeof v === 'string' ? [v] : v))

export function cgiSchema(env: SchemaEnv) {
  return strictObject({
    /** Directory URL paths under the route's prefix map to. */
    root: existingDir(env).optional(),
    /** One program for the whole prefix (SCRIPT_NAME = prefix, PATH_INFO = the rest), like git-http-backend. */
    script: existingFile(env).optional(),
    /** DOCUMENT_ROOT and the base of PATH_TRANSLATED (default: root, or the script's directory). */
    document_root: existingDir(env).optional(),
    /** Scripts to run when the URL names a directory, e.g. ["index.cgi"]. */
    index: z
      .array(
        z
          .string()
          .min(1)
          .regex(/^[^/]+$/, 'an index is a file name, not a path'),
      )
      .default([]),
    /** Extension -> interpreter command: { ".py" = "/usr/bin/python3", ".pl" = ["perl", "-T"] }. */
    interpreters: z
      .record(z.string().regex(/^\.?[^./\s]+$/, 'an extension such as ".py"'), COMMAND)
      .default({}),
    /** Variables set for every script (they win over meta-variables of the same name). */
    env: z
      .record(
        ENV_NAME,
        z.string().refine((s) => !s.includes('\0'), 'NUL in a value'),
      )
      .default({}),
    /** Variables taken from the server's environment; nothing else of it is inherited. */
    pass_env: z.array(ENV_NAME).default([...DEFAULT_PASS_ENV]),
    /** Pass the Authorization header as HTTP_AUTHORIZATION. */
    pass_authorization: z.boolean().default(false),
    /** Chunked request bodies: "buffer" to set CONTENT_LENGTH (RFC 3875), "stream" to pipe them without it. */
    chunked_body: z.enum(['buffer', 'stream']).default('buffer'),
    /** Longest a script may run, from start to its last byte of output (0 = no limit). */
    timeout: duration.prefault(60),
    /** Between SIGTERM and SIGKILL when a script is stopped. */
    kill_grace: duration.prefault(2),
    max_processes: z.number().int().min(1).max(100_000).default(16),
    /** Requests that may wait for a free process slot; more get 503. */
    queue: z.number().int().min(0).default(100),
    queue_timeout: duration.prefault(10),
    max_header_bytes: size.prefault(32 * 1024),
    max_redirects: z.number().int().min(0).max(100).default(10),
    /**
     * How scripts are started: "forkserver" (a small Python process forks them, so a spawn
     * does not cost in proportion to Node's memory) or "direct" (child_process.spawn).
     */
    spawner: z.enum(['forkserver', 'direct']).default('forkserver'),
    /** The Python 3 (>= 3.9, standard library only) that runs the fork server. */
    spawner_python: z
      .string()
      .min(1)
      .refine((s) => !s.includes('\0'), 'NUL in a path')
      .default('/usr/bin/python3'),
  }).superRefine((value, ctx) => {
    if ((value.root === undefined) === (value.script === undefined)) {
      ctx.addIssue({
        code: 'custom',
        message: 'give one of root (a directory of scripts) or script (one program)',
      })
    }
  })
}

export type CgiOptions = z.output<ReturnType<typeof cgiSchema>>
export type CgiOptionsInput = z.input<ReturnType<typeof cgiSchema>>

interface ScriptTarget {
  filename: string
  scriptName: string
  pathInfo: string
  argv: string[]
  /** `nph-` scripts write the whole HTTP response themselves. */
  nph: boolean
}

type Resolution =
  { kind: 'script'; target: ScriptTarget } | { kind: 'respond'; status: number; location?: string }

type Body =
  | { kind: 'none' }
  /** Read from the request as it arrives; `length` is CONTENT_LENGTH (undefined: unknown). */
  | { kind: 'stream'; length: number | undefined }
  /** Read whole first (chunked_body = "buffer"); its file, once it needs one, is the script's stdin. */
  | { kind: 'spooled'; spool: SpooledBody }

interface Dispatch {
  method: string
  rawPath: string
  query: string
  path: string
  rawHeaders: readonly string[]
  body: Body
}

type Outcome = { kind: 'done' } | { kind: 'local-redirect'; location: string }

interface Running {
  stop(): void
  closed: Promise<void>
}

/** What CgiExchange needs of a started script: a ChildProcess, or a ForkedScript. */
interface ScriptChild {
  readonly pid?: number | undefined
  readonly stdin: Writable | null
  readonly stdout: Readable | null
  readonly stderr: Readable | null
  once(event: 'error', listener: (err: Error) => void): this
  once(event: 'exit', listener: (code: number | null, signal: NodeJS.Signals | null) => void): this
  once(event: 'close', listener: () => void): this
}

const HEADERS_DROPPED_ON_REDIRECT = new Set(['content-type', 'content-length', 'transfer-encoding'])

export class CgiHandler implements Handler {
  private readonly limiter: ConcurrencyLimiter
  private readonly interpreters = new Map<string, string[]>()
  private readonly realRoot: string | undefined
  private readonly documentRoot: string
  private readonly baseEnv: Record<string, string>
  private readonly running = new Set<Running>()
  private forkServer: ForkServer | null

  constructor(
    private readonly options: CgiOptions,
    private readonly log: Logger,
  ) {
    this.limiter = new ConcurrencyLimiter({
      max: options.max_processes,
      queue: options.queue,
      queueTimeoutMs: options.queue_timeout,
    })
    for (const [ext, command] of Object.entries(options.interpreters)) {
      this.interpreters.set((ext.startsWith('.') ? ext : `.${ext}`).toLowerCase(), command)
    }
    this.realRoot = options.root === undefined ? undefined : realpathSync(options.root)
    this.documentRoot = options.document_root ?? options.root ?? dirname(options.script!)
    const base: Record<string, string> = {}
    for (const name of options.pass_env) {
      const value = process.env[name]
      if (value !== undefined) base[name] = value
    }
    base.PATH ??= FALLBACK_PATH
    this.baseEnv = base
    this.forkServer = options.spawner === 'forkserver' ? new ForkServer(options.spawner_python, log) : null
  }

  /** Processes running and requests waiting for one. */
  stats(): { running: number; queued: number } {
    return { running: this.limiter.active, queued: this.limiter.queued }
  }

  async handle(ctx: RequestContext): Promise<void> {
    const { cancel, done } = cancelOnClientClose(ctx.res)
    let dispatch: Dispatch = {
      method: ctx.method,
      rawPath: ctx.rawPath,
      query: ctx.query,
      path: ctx.path,
      rawHeaders: ctx.req.rawHeaders,
      body: { kind: 'none' },
    }
    const first = dispatch
    try {
      for (let redirects = 0; ; redirects++) {
        const resolution = await this.resolve(ctx, dispatch)
        if (resolution.kind === 'respond') {
          const headers = resolution.location ? { location: resolution.location } : {}
          sendStatus(ctx.res, resolution.status, { headers, head: dispatch.method === 'HEAD' })
          return
        }
        if (redirects === 0) {
          dispatch.body = await this.requestBody(ctx, cancel)
          if (cancel.aborted) return
        }
        const outcome = await this.run(ctx, resolution.target, dispatch, cancel)
        if (outcome.kind === 'done') return
        if (redirects >= this.options.max_redirects) {
          throw new GatehouseError(
            'GH_ERR_CGI_REDIRECT',
            `more than ${this.options.max_redirects} local redirects (last to ${outcome.location})`,
          )
        }
        dispatch = this.redirected(ctx, outcome.location)
      }
    } catch (err) {
      if (err instanceof ClientGone || cancel.aborted) return
      throw err
    } finally {
      done()
      // Unless a script took it over (it is then disposed of when the script is done with it).
      if (first.body.kind === 'spooled') await first.body.spool.dispose()
    }
  }

  /**
   * Let running and queued requests finish (each is bounded by `timeout`), then stop what is
   * left (SIGTERM, SIGKILL after kill_grace) and refuse any later request. A reload replaces
   * handlers while requests are in flight; on shutdown the server has already closed the
   * connections, which stops their scripts.
   */
  async close(): Promise<void> {
    const wait = this.options.timeout > 0 ? this.options.timeout + this.options.kill_grace : 30_000
    const deadline = Date.now() + wait
    while (this.limiter.active + this.limiter.queued > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50))
    }
    this.limiter.close()
    const running = [...this.running]
    for (const r of running) r.stop()
    await Promise.all(running.map((r) => r.closed))
    await this.forkServer?.close()
  }

  /** URL path -> script, split into SCRIPT_NAME and PATH_INFO at the first segment that is a file. */
  private async resolve(ctx: RequestContext, dispatch: Dispatch): Promise<Resolution> {
    const { path } = dispatch
    const prefix = ctx.route.prefix.endsWith('/') ? ctx.route.prefix.slice(0, -1) : ctx.route.prefix
    const rel = path.startsWith(prefix) ? path.slice(prefix.length) : path
    if (this.options.script !== undefined) {
      return { kind: 'script', target: this.target(this.options.script, prefix, rel) }
    }
    const root = this.options.root!
    let dir = root
    let scriptName = prefix
    let offset = 0 // rel[0..offset) has been consumed as directories
    for (;;) {
      if (offset >= rel.length || rel === '/' || offset === rel.length - 1) {
        // The URL names a directory.
        if (!rel.endsWith('/')) {
          const location = `${dispatch.rawPath}/${dispatch.query ? `?${dispatch.query}` : ''}`
          return this.options.index.length > 0
            ? { kind: 'respond', status: 301, location }
            : { kind: 'respond', status: 403 }
        }
        for (const name of this.options.index) {
          const candidate = join(dir, name)
          const st = await statOrNull(candidate)
          if (st?.isFile()) return this.checked(candidate, `${scriptName}/${name}`, '')
        }
        return { kind: 'respond', status: 403 }
      }
      const next = rel.indexOf('/', offset + 1)
      const end = next === -1 ? rel.length : next
      const segment = rel.slice(offset + 1, end)
      // Hidden files and directories (.git, .htaccess) are never scripts.
      if (segment.startsWith('.')) return { kind: 'respond', status: 404 }
      const candidate = join(dir, segment)
      const st = await statOrNull(candidate)
      if (!st) return { kind: 'respond', status: 404 }
      if (st.isFile()) return this.checked(candidate, `${scriptName}/${segment}`, rel.slice(end))
      if (!st.isDirectory()) return { kind: 'respond', status: 404 }
      dir = candidate
      scriptName = `${scriptName}/${segment}`
      offset = end
    }
  }

  /** A found file: inside the root (symlinks included), and runnable. */
  private async checked(filename: string, scriptName: string, pathInfo: string): Promise<Resolution> {
    let real: string
    try {
      real = await realpath(filename)
    } catch {
      return { kind: 'respond', status: 404 }
    }
    const root = this.realRoot!
    if (real !== root && !real.startsWith(root + sep)) return { kind: 'respond', status: 404 }
    const target = this.target(filename, scriptName, pathInfo)
    if (target.argv.length === 1) {
      try {
        await access(filename, constants.X_OK)
      } catch {
        this.log.warn({ script: filename }, 'cgi: not executable and no interpreter for its extension')
        return { kind: 'respond', status: 403 }
      }
    }
    return { kind: 'script', target }
  }

  private target(filename: string, scriptName: string, pathInfo: string): ScriptTarget {
    const interpreter = this.interpreters.get(extname(filename).toLowerCase())
    return {
      filename,
      scriptName,
      pathInfo,
      // Never the query string: RFC 3875 4.4's command-line arguments are how php-cgi got
      // `?-s` and `?-d ...` (CVE-2012-1823, CVE-2024-4577).
      argv: interpreter ? [...interpreter, filename] : [filename],
      nph: basename(filename).startsWith('nph-'),
    }
  }

  /**
   * RFC 3875 6.2.2: the local redirect is served as a GET (a HEAD stays a HEAD), without a
   * body, on this same route.
   */
  private redirected(ctx: RequestContext, location: string): Dispatch {
    let target: ReturnType<typeof parseTarget>
    try {
      target = parseTarget(location)
    } catch (err) {
      if (err instanceof BadTargetError)
        throw new GatehouseError('GH_ERR_CGI_REDIRECT', `invalid local redirect ${JSON.stringify(location)}`)
      throw err
    }
    const prefix = ctx.route.prefix.endsWith('/') ? ctx.route.prefix.slice(0, -1) : ctx.route.prefix
    if (prefix !== '' && target.path !== prefix && !target.path.startsWith(`${prefix}/`)) {
      throw new GatehouseError(
        'GH_ERR_CGI_REDIRECT',
        `local redirect to ${location} leaves the route ${prefix}`,
      )
    }
    const raw = ctx.req.rawHeaders
    const rawHeaders: string[] = []
    for (let i = 0; i + 1 < raw.length; i += 2) {
      if (!HEADERS_DROPPED_ON_REDIRECT.has(raw[i]!.toLowerCase())) rawHeaders.push(raw[i]!, raw[i + 1]!)
    }
    return {
      method: ctx.method === 'HEAD' ? 'HEAD' : 'GET',
      rawPath: target.rawPath,
      query: target.query,
      path: target.path,
      rawHeaders,
      body: { kind: 'none' },
    }
  }

  /**
   * How the body reaches stdin. Content-Length bodies stream as they arrive. A chunked body
   * has no length up front: with chunked_body = "buffer" it is read whole first (memory, then
   * an unlinked temp file) so CONTENT_LENGTH can be set as RFC 3875 4.1.2 requires; with
   * "stream" it is piped de-chunked and CONTENT_LENGTH is left unset.
   */
  private async requestBody(ctx: RequestContext, signal: CancelSignal): Promise<Body> {
    const { req } = ctx
    if (req.headers['transfer-encoding'] !== undefined) {
      if (this.options.chunked_body === 'stream') return { kind: 'stream', length: undefined }
      try {
        const spool = await spoolBody(req, ctx.maxBodyBytes, {
          memoryBytes: BODY_MEMORY_BYTES,
          prefix: 'gatehouse-cgi-',
        })
        return { kind: 'spooled', spool }
      } catch (err) {
        if (signal.aborted || req.destroyed) throw new ClientGone('client closed the connection')
        throw err
      }
    }
    const cl = req.headers['content-length']
    if (cl !== undefined) return { kind: 'stream', length: Number(cl) }
    return { kind: 'none' }
  }

  private environment(ctx: RequestContext, target: ScriptTarget, dispatch: Dispatch): Record<string, string> {
    const body = dispatch.body
    const contentLength =
      body.kind === 'none' ? undefined : body.kind === 'stream' ? body.length : body.spool.length
    const where = {
      scriptName: target.scriptName,
      pathInfo: target.pathInfo,
      scriptFilename: target.filename,
      documentRoot: this.documentRoot,
    }
    const meta = requestMeta(ctx, where, {
      contentLength,
      passAuthorization: this.options.pass_authorization,
      request: dispatch,
    })
    return { ...this.baseEnv, ...meta, ...this.options.env }
  }

  /** Wait for a process slot, run the script once, and stream its response. */
  private async run(
    ctx: RequestContext,
    target: ScriptTarget,
    dispatch: Dispatch,
    signal: CancelSignal,
  ): Promise<Outcome> {
    const release = await this.limiter.acquire(signal)
    if (this.forkServer) {
      const forkServer = this.forkServer
      let forked: ForkedScript | undefined
      try {
        forked = await forkServer.spawn({
          argv: target.argv,
          env: this.environment(ctx, target, dispatch),
          cwd: dirname(target.filename),
          stdin: dispatch.body.kind !== 'none',
        })
      } catch (err) {
        if (!(err instanceof ForkServerUnavailable)) {
          release()
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
      if (forked) return new CgiExchange(this, ctx, target, dispatch, forked, release, signal).promise
    }
    let child: ScriptChild
    try {
      const body = dispatch.body
      const file = body.kind === 'spooled' ? body.spool.file : undefined
      const stdin = body.kind === 'none' ? 'ignore' : file ? file.fd : 'pipe'
      child = spawn(target.argv[0]!, target.argv.slice(1), {
        cwd: dirname(target.filename),
        env: this.environment(ctx, target, dispatch),
        stdio: [stdin, 'pipe', 'pipe'],
        // Its own process group (setsid), so the script and everything it starts can be
        // signalled as one; and never a shell in between.
        detached: true,
        shell: false,
      })
    } catch (err) {
      release()
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
    return new CgiExchange(this, ctx, target, dispatch, child, release, signal).promise
  }

  /** @internal for CgiExchange */
  track(r: Running): () => void {
    this.running.add(r)
    return () => this.running.delete(r)
  }

  /** @internal for CgiExchange */
  get settings(): CgiOptions {
    return this.options
  }

  /** @internal for CgiExchange */
  get logger(): Logger {
    return this.log
  }
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
  private pendingHeadError: CgiResponseError | null = null
  private readonly parser: CgiResponseParser | null
  private readonly log: Logger
  private readonly untrack: () => void

  constructor(
    private readonly handler: CgiHandler,
    private readonly ctx: RequestContext,
    private readonly target: ScriptTarget,
    private readonly dispatch: Dispatch,
    private readonly child: ScriptChild,
    private readonly release: () => void,
    signal: CancelSignal,
  ) {
    const options = handler.settings
    this.log = handler.logger
    this.parser = target.nph ? null : new CgiResponseParser({ maxHeaderBytes: options.max_header_bytes })
    this.promise = new Promise<Outcome>((resolve, reject) => {
      this.resolveOutcome = resolve
      this.rejectOutcome = reject
    })
    let closedResolve!: () => void
    const closed = new Promise<void>((r) => {
      closedResolve = r
    })
    this.untrack = handler.track({ stop: () => this.stop('server shutting down'), closed })
    this.exitSeen = new Promise<void>((r) => child.once('exit', () => r()))

    child.once('error', (err) => {
      if (child instanceof ForkedScript && child.lost) {
        // The fork server died: no exit status or stderr will come; stop the script and
        // give up on its response (502, or a cut response).
        this.log.warn({ err, script: target.filename, pid: child.pid }, 'cgi: fork server lost')
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

    if (options.timeout > 0) this.timer = setTimeout(() => this.onTimeout(options.timeout), options.timeout)
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

  private failHead(error: CgiResponseError): void {
    const status = this.exitSignal
      ? ` (killed by ${this.exitSignal})`
      : this.exitCode !== null && this.exitCode !== 0
        ? ` (exit status ${this.exitCode})`
        : ''
    const line = error.line === undefined ? '' : ` at line ${error.line}`
    this.fail(
      new GatehouseError(
        'GH_ERR_CGI_RESPONSE',
        `${this.target.scriptName || this.target.filename}${status}: ${error.code}: ${error.message}${line}`,
      ),
    )
  }

  /** SIGTERM the script's process group, SIGKILL after kill_grace. Idempotent. */
  private stop(why: string): void {
    if (this.closed || this.stopping || this.child.pid === undefined) return
    this.log.debug({ script: this.target.filename, pid: this.child.pid, why }, 'cgi: stopping script')
    // Its output is not wanted any more. Destroying our end also matters when stdout was
    // paused for backpressure: an undrained pipe never closes, and 'close' (which frees the
    // slot) waits for it.
    this.discard = true
    this.child.stdout?.destroy()
    this.stopping = terminateGroup(this.child.pid, this.handler.settings.kill_grace, this.exitSeen).then(() =>
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
      this.log.warn({ script: this.target.filename, pid: this.child.pid }, line)
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

  private readStdout(stdout: Readable): void {
    stdout.on('error', () => {})
    if (this.target.nph) {
      this.pipeNph(stdout)
      return
    }
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

async function statOrNull(path: string) {
  try {
    return await stat(path)
  } catch (err) {
    return missingOrThrow(err, path)
  }
}

export const cgiAction: ActionDefinition<CgiOptions> = {
  name: 'cgi',
  summary: 'run CGI/1.1 scripts (RFC 3875): one process per request, streamed both ways',
  schema: cgiSchema,
  create: (options, services) => new CgiHandler(options, services.log),
}

export interface CgiLibraryOptions extends CgiOptionsInput {
  /** URL prefix the handler is mounted at (the start of SCRIPT_NAME). Default "/". */
  prefix?: string
  /** Largest request body accepted (bytes, or "10MB"). Default 1 MiB. */
  max_body_bytes?: number | string
  /** Where stderr lines and failures are logged. Default: pino at level warn on stdout. */
  log?: Logger
}

export type CgiRequestListener = ((req: IncomingMessage, res: ServerResponse) => void) & {
  /** The listener itself, as `createGatehouse().handler` is: `createServer(app.handler)`. */
  handler: (req: IncomingMessage, res: ServerResponse) => void
  /** Processes running and requests waiting for one. */
  stats(): { running: number; queued: number }
  /** Let running scripts finish (bounded by `timeout`), stop the rest, refuse new requests. */
  close(): Promise<void>
}

/**
 * A CGI gateway as a plain node:http request listener:
 *
 *   createServer(cgi({ root: './cgi-bin', prefix: '/cgi-bin' })).listen(8080)
 *
 * Options are the config file's `cgi` keys, validated by the same schema (relative paths
 * resolve against the working directory); GH_ERR_CONFIG lists every problem.
 */
export function cgi(options: CgiLibraryOptions): CgiRequestListener {
  const { prefix, max_body_bytes, log, ...rest } = options
  const problems: string[] = []
  const parsed = cgiSchema({ baseDir: process.cwd() }).safeParse(rest)
  if (!parsed.success)
    problems.push(
      ...parsed.error.issues.map((i) => `${i.path.map(String).join('.') || '(options)'}: ${i.message}`),
    )
  const maxBody = max_body_bytes === undefined ? undefined : size.safeParse(max_body_bytes)
  if (maxBody && !maxBody.success) problems.push(`max_body_bytes: ${maxBody.error.issues[0]?.message}`)
  if (prefix !== undefined && !/^\/[^?#\s]*$/.test(prefix)) problems.push('prefix: a path starting with "/"')
  if (!parsed.success || problems.length > 0) {
    throw new GatehouseError('GH_ERR_CONFIG', problems.join('; '), { problems })
  }
  const logger = log ?? pino({ level: 'warn' })
  const handler = new CgiHandler(parsed.data, logger)
  const listener = toRequestListener(handler, {
    log: logger,
    prefix: prefix ?? '/',
    ...(maxBody?.success ? { maxBodyBytes: maxBody.data } : {}),
  })
  return Object.assign(listener, {
    handler: listener,
    stats: () => handler.stats(),
    close: () => handler.close(),
  })
}
