/*
 * CGI/1.1 (RFC 3875): one process per request, the request in meta-variables, the body on
 * stdin, the response on stdout. This file is the `cgi` action: its options, the request
 * loop (which script: resolve.ts; the body; local redirects), the process limit, and the
 * library's cgi(). One run of a script is exchange.ts; the pure parts are cgi-vars/meta.ts
 * (environment) and cgi-vars/response.ts (header block). docs/cgi.md is the user's view.
 */
import { upstreamNote } from '../../core/access-format.js'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { dirname } from 'node:path'
import type { Logger } from 'pino'
import { z } from 'zod'
import { existingDir, existingFile } from '../../core/schema/paths.js'
import { strictObject } from '../../core/schema/strict.js'
import { duration, size } from '../../core/schema/units.js'
import { GatehouseError } from '../../core/errors.js'
import { ConcurrencyLimiter } from '../../process/limiter.js'
import { actionListener } from '../../http/library-listener.js'
import { BadTargetError, parseTarget } from '../../http/request-target.js'
import {
  type ActionDefinition,
  type Handler,
  type RequestContext,
  routePrefix,
  type SchemaEnv,
} from '../../core/types.js'
import { requestMeta } from '../../cgi-vars/script.js'
import { sendStatus } from '../../core/respond.js'
import { type CancelSignal, cancelOnClientClose, ClientGone } from '../../core/cancel.js'
import { spoolBody } from '../../core/body-spool.js'
import { bufferingShape, responseBuffering } from '../../core/schema/buffering.js'
import {
  type Body,
  type Dispatch,
  type Outcome,
  type Running,
  type RunSettings,
  runScript,
  type ScriptChild,
  ScriptSpawner,
} from './exchange.js'
import { ScriptResolver, type ScriptTarget } from './resolve.js'

/** What a script inherits from the server's own environment unless configured otherwise. */
export const DEFAULT_PASS_ENV = ['PATH', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR'] as const
/** PATH for scripts when the server has none to pass on (interpreters are looked up in it). */
const FALLBACK_PATH = '/usr/local/bin:/usr/bin:/bin'
/** Chunked request bodies up to this size are held in memory; larger ones go to a temp file. */
const BODY_MEMORY_BYTES = 64 * 1024

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
    /**
     * Request and response buffering (docs/reliability.md): on by default, so a slow upload
     * or a slow reader holds no script process. request_buffering = false streams a
     * Content-Length body to the script as it arrives.
     */
    ...bufferingShape,
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

const HEADERS_DROPPED_ON_REDIRECT = new Set(['content-type', 'content-length', 'transfer-encoding'])

export class CgiHandler implements Handler {
  private readonly limiter: ConcurrencyLimiter
  private readonly resolver: ScriptResolver
  private readonly spawner: ScriptSpawner
  private readonly documentRoot: string
  private readonly baseEnv: Record<string, string>
  private readonly running = new Set<Running>()
  private readonly runSettings: RunSettings

  constructor(
    private readonly options: CgiOptions,
    log: Logger,
  ) {
    this.limiter = new ConcurrencyLimiter({
      max: options.max_processes,
      queue: options.queue,
      queueTimeoutMs: options.queue_timeout,
    })
    this.resolver = new ScriptResolver(options, log)
    this.documentRoot = options.document_root ?? options.root ?? dirname(options.script!)
    const base: Record<string, string> = {}
    for (const name of options.pass_env) {
      const value = process.env[name]
      if (value !== undefined) base[name] = value
    }
    base.PATH ??= FALLBACK_PATH
    this.baseEnv = base
    this.spawner = new ScriptSpawner(options.spawner, options.spawner_python, log)
    this.runSettings = {
      timeout: options.timeout,
      killGrace: options.kill_grace,
      maxHeaderBytes: options.max_header_bytes,
      buffering: responseBuffering(options, 'gatehouse-cgi-'),
      log,
      track: (run) => {
        this.running.add(run)
        return () => this.running.delete(run)
      },
    }
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
    const note = upstreamNote(ctx.req)
    try {
      for (let redirects = 0; ; redirects++) {
        const resolution = await this.resolver.resolve(routePrefix(ctx), dispatch)
        if (resolution.kind === 'respond') {
          const headers = resolution.location ? { location: resolution.location } : {}
          sendStatus(ctx.res, resolution.status, { headers, head: dispatch.method === 'HEAD' })
          return
        }
        if (redirects === 0) {
          dispatch.body = await this.requestBody(ctx, cancel)
          if (cancel.aborted) return
        }
        // $upstream_response_time: from the script's start to the end of its output (the
        // whole chain of local redirects).
        note.start ??= performance.now()
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
      if (note.start !== undefined) note.end ??= performance.now()
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
    await this.spawner.close()
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
    const prefix = routePrefix(ctx)
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
      return this.spool(ctx, signal)
    }
    const cl = req.headers['content-length']
    if (cl === undefined) return { kind: 'none' }
    if (!this.options.request_buffering || Number(cl) === 0) return { kind: 'stream', length: Number(cl) }
    return this.spool(ctx, signal)
  }

  /** The body read whole: memory, then an unlinked temporary file (the script's stdin). */
  private async spool(ctx: RequestContext, signal: CancelSignal): Promise<Body> {
    const { req } = ctx
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
    let child: ScriptChild
    try {
      child = await this.spawner.start(target, this.environment(ctx, target, dispatch), dispatch)
    } catch (err) {
      release()
      throw err
    }
    return runScript(this.runSettings, ctx, target, dispatch, child, release, signal)
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
  const app = actionListener(cgiSchema, options, (o, log) => new CgiHandler(o, log))
  const listener = (req: IncomingMessage, res: ServerResponse) => app(req, res)
  return Object.assign(listener, {
    handler: listener,
    stats: () => app.handler.stats(),
    close: () => app.close(),
  })
}
