import type { ServerResponse } from 'node:http'
import { mkdirSync, openSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import pino, { type DestinationStream, type Logger } from 'pino'
import { z } from 'zod'
import {
  type AccessFormatter,
  type AccessRecord,
  type BodyCount,
  bodyBytes,
  combinedLine,
  compileAccessFormat,
} from './access-format.js'
import { GatehouseError } from './errors.js'
import { textSink } from './log-text.js'
import { filePath } from './schema/paths.js'
import { strictObject } from './schema/strict.js'
import type { SchemaEnv } from './types.js'

export {
  type AccessRecord,
  type BodyCount,
  clfEscape,
  clfQuote,
  clfTime,
  type UpstreamNote,
  upstreamNote,
} from './access-format.js'

/** The config's `log` table. */
export function logSchema(env: SchemaEnv) {
  return strictObject({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    /** "stderr" (default), "stdout", a file path, or "off". */
    error_log: z.union([z.enum(['stderr', 'stdout']), filePath(env)]).default('stderr'),
    access_log: z.union([z.enum(['stderr', 'stdout', 'off']), filePath(env)]).default('off'),
    /**
     * "combined" (nginx's), "json", or a template of nginx variables (`$remote_addr "$request"
     * $status $request_time $pool`, docs/configuration.md), compiled once at start.
     */
    access_format: z
      .string()
      .superRefine((format, ctx) => {
        if (format === 'combined' || format === 'json') return
        try {
          compileAccessFormat(format)
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: (err as Error).message })
        }
      })
      .default('combined'),
    /**
     * The error log's format: "text" (a line a person reads), "json" (pino's JSON lines), or
     * "auto" (default): text when error_log is stderr or stdout and that is a terminal, JSON
     * otherwise (a file, a pipe, CI).
     */
    format: z.enum(['auto', 'text', 'json']).default('auto'),
  })
}

export type LogConfig = z.output<ReturnType<typeof logSchema>>
type Sink = DestinationStream & { reopen?: () => void; flushSync?: () => void; end?: () => void }

function errnoText(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code
  const what: Record<string, string> = {
    ENOENT: 'no such file or directory',
    ENOTDIR: 'not a directory',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EROFS: 'read-only file system',
    EISDIR: 'is a directory',
  }
  return code === undefined ? (err as Error).message : `${what[code] ?? code} (${code})`
}

function logFileError(target: string, why: string, cause: unknown): GatehouseError {
  return new GatehouseError('GH_ERR_LOG_FILE', `${target}: ${why}`, { cause })
}

/**
 * The log file's directory, made one level at a time below its nearest existing ancestor
 * (never a recursive mkdir, which spins forever under /proc): an ancestor that is a file
 * (ENOTDIR), a directory that cannot be made (ENOENT under /proc, EACCES) is one error
 * naming that directory.
 */
function makeLogDir(target: string): void {
  const missing: string[] = []
  let dir = dirname(target)
  for (;;) {
    let isDir: boolean
    try {
      isDir = statSync(dir).isDirectory()
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' && dirname(dir) !== dir) {
        missing.unshift(dir)
        dir = dirname(dir)
        continue
      }
      throw logFileError(target, `cannot look at ${dir}: ${errnoText(err)}`, err)
    }
    if (!isDir) throw logFileError(target, `${dir} is not a directory (ENOTDIR)`, undefined)
    break
  }
  for (const d of missing) {
    try {
      mkdirSync(d)
    } catch (err) {
      if (
        (err as NodeJS.ErrnoException).code === 'EEXIST' &&
        statSync(d, { throwIfNoEntry: false })?.isDirectory()
      )
        continue
      throw logFileError(target, `cannot create the directory ${d}: ${errnoText(err)}`, err)
    }
  }
}

function destination(target: string): Sink {
  if (target === 'stderr' || target === 'stdout') {
    const sink: Sink =
      target === 'stderr'
        ? pino.destination({ dest: 2, sync: true })
        : pino.destination({ dest: 1, sync: false })
    // Nothing to reopen on SIGUSR1 (SonicBoom would throw for a descriptor).
    sink.reopen = () => {}
    return sink
  }
  // The file is opened here, synchronously: a path that cannot be opened is an error at
  // start (not a crash later), and nothing is left opening in the background when the
  // server stops at once (or its directory is removed). SIGUSR1 reopens it by path.
  let fd: number
  makeLogDir(target)
  try {
    fd = openSync(target, 'a')
  } catch (err) {
    throw logFileError(target, `cannot open it: ${errnoText(err)}`, err)
  }
  const sink: Sink = pino.destination({ dest: fd, sync: false })
  const boom = sink as Sink & { file: string | null; on: (e: 'error', f: (err: Error) => void) => void }
  // SonicBoom reopens by its `file`, which a destination made from a descriptor lacks.
  boom.file = target
  // A write that fails later (disk full, file removed with its directory) is reported on
  // stderr once, not thrown into the server.
  let reported = false
  boom.on('error', (err) => {
    if (reported) return
    reported = true
    process.stderr.write(`gatehouse: log file ${target}: ${err.message}\n`)
  })
  return sink
}

/**
 * Counts the body bytes a response is given (res.write, res.end) for the access log: the
 * header block is node's business and is not read back.
 */
export function countBody(res: ServerResponse): BodyCount {
  const count: BodyCount = { bytes: 0 }
  const size = (chunk: unknown, encoding: unknown) =>
    typeof chunk === 'string'
      ? Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
      : chunk instanceof Uint8Array
        ? chunk.byteLength
        : 0
  const write = res.write
  const end = res.end
  res.write = function (this: ServerResponse, chunk: unknown, encoding?: unknown, cb?: unknown) {
    count.bytes += size(chunk, encoding)
    return (write as (...args: unknown[]) => boolean).call(this, chunk, encoding, cb)
  } as ServerResponse['write']
  res.end = function (this: ServerResponse, chunk?: unknown, encoding?: unknown, cb?: unknown) {
    if (typeof chunk !== 'function') count.bytes += size(chunk, encoding)
    return (end as (...args: unknown[]) => ServerResponse).call(this, chunk, encoding, cb)
  } as ServerResponse['end']
  return count
}

/** Is `target` (stderr, stdout or a file) a terminal? */
function isTerminal(target: string): boolean {
  if (target === 'stderr') return process.stderr.isTTY === true
  if (target === 'stdout') return process.stdout.isTTY === true
  return false
}

/**
 * The error log's format as `log.format` asks for it: auto is text on a terminal. Text is
 * coloured on a terminal unless NO_COLOR is set (https://no-color.org: to anything non-empty).
 */
export function errorLogFormat(
  config: Pick<LogConfig, 'format' | 'error_log'>,
  env: NodeJS.ProcessEnv = process.env,
): { text: boolean; colour: boolean } {
  const tty = isTerminal(config.error_log)
  const text = config.format === 'text' || (config.format === 'auto' && tty)
  return { text, colour: text && tty && !env.NO_COLOR }
}

/** Error log and access log; both go through pino's destinations (SonicBoom). */
export class Logs {
  readonly error: Logger
  /** The error log is text (log.format, or auto on a terminal), not JSON lines. */
  readonly text: boolean
  private readonly errorSink: Sink
  private readonly accessSink: Sink | null
  private readonly accessJson: Logger | null
  /** log.access_format's template, compiled; null for combined and json. */
  private readonly accessTemplate: AccessFormatter | null

  constructor(config: LogConfig) {
    const { text, colour } = errorLogFormat(config)
    this.text = text
    const sink = destination(config.error_log)
    this.errorSink = text ? textSink(sink, colour) : sink
    this.error = pino(
      { level: config.level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
      this.errorSink,
    )
    if (config.access_log === 'off') {
      this.accessSink = null
      this.accessJson = null
      this.accessTemplate = null
    } else {
      this.accessSink = destination(config.access_log)
      this.accessJson =
        config.access_format === 'json'
          ? pino({ base: null, timestamp: pino.stdTimeFunctions.isoTime, messageKey: 'msg' }, this.accessSink)
          : null
      const { access_format: format } = config
      this.accessTemplate = format === 'combined' || format === 'json' ? null : compileAccessFormat(format)
    }
  }

  get accessEnabled(): boolean {
    return this.accessSink !== null
  }

  access(r: AccessRecord): void {
    if (!this.accessSink) return
    if (this.accessTemplate) {
      this.accessSink.write(`${this.accessTemplate(r)}\n`)
      return
    }
    const { req, res } = r
    const status = res.statusCode
    const bytes = bodyBytes(r)
    if (this.accessJson) {
      this.accessJson.info({
        remote_addr: r.remoteAddress,
        method: req.method,
        uri: req.url,
        protocol: `HTTP/${req.httpVersion}`,
        status,
        bytes,
        duration_ms: Math.round((performance.now() - r.start) * 1000) / 1000,
        host: req.headers.host,
        referer: req.headers.referer,
        user_agent: req.headers['user-agent'],
        route: r.route,
        completed: res.writableFinished,
      })
      return
    }
    this.accessSink.write(`${combinedLine(r, bytes)}\n`)
  }

  /** SIGUSR1: reopen log files (after logrotate moved them). */
  reopen(): void {
    this.errorSink.reopen?.()
    this.accessSink?.reopen?.()
  }

  flush(): void {
    try {
      this.errorSink.flushSync?.()
      this.accessSink?.flushSync?.()
    } catch {
      // a destination that is not ready yet has nothing to flush
    }
  }
}
