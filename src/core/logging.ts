import type { IncomingMessage, ServerResponse } from 'node:http'
import { mkdirSync, openSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import pino, { type DestinationStream, type Logger } from 'pino'
import { z } from 'zod'
import { GatehouseError } from './errors.js'
import { filePath } from './schema/paths.js'
import { strictObject } from './schema/strict.js'
import type { SchemaEnv } from './types.js'

/** The config's `log` table. */
export function logSchema(env: SchemaEnv) {
  return strictObject({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    /** "stderr" (default), "stdout", a file path, or "off". */
    error_log: z.union([z.enum(['stderr', 'stdout']), filePath(env)]).default('stderr'),
    access_log: z.union([z.enum(['stderr', 'stdout', 'off']), filePath(env)]).default('off'),
    access_format: z.enum(['combined', 'json']).default('combined'),
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

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
const pad = (n: number) => (n < 10 ? `0${n}` : String(n))

/** `10/Oct/2000:13:55:36 +0000`, the time format of the combined log. */
export function clfTime(d: Date): string {
  return `${pad(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`
}

const quote = (v: string | undefined) =>
  v === undefined || v === '' ? '"-"' : JSON.stringify(v).replace(/\\\\/g, '\\')

export interface AccessRecord {
  req: IncomingMessage
  res: ServerResponse
  remoteAddress: string
  start: number
  route: number | undefined
  /** socket.bytesWritten when the request arrived, to count body bytes of streamed responses. */
  written0: number
}

/**
 * Body bytes sent ($body_bytes_sent): Content-Length when the response had one, otherwise
 * what the socket wrote for this response less the header block (chunk framing included).
 */
function bodyBytes(r: AccessRecord): number {
  const { req, res } = r
  if (req.method === 'HEAD' || res.statusCode === 304 || res.statusCode === 204) return 0
  const header = (res as ServerResponse & { _header?: string | null })._header ?? ''
  const cl = /\r\ncontent-length: *(\d+)/i.exec(header)
  if (cl && res.writableFinished) return Number(cl[1])
  return Math.max(0, (req.socket?.bytesWritten ?? 0) - r.written0 - header.length)
}

/** Error log and access log; both go through pino's destinations (SonicBoom). */
export class Logs {
  readonly error: Logger
  private readonly errorSink: Sink
  private readonly accessSink: Sink | null
  private readonly accessJson: Logger | null

  constructor(config: LogConfig) {
    this.errorSink = destination(config.error_log)
    this.error = pino(
      { level: config.level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
      this.errorSink,
    )
    if (config.access_log === 'off') {
      this.accessSink = null
      this.accessJson = null
    } else {
      this.accessSink = destination(config.access_log)
      this.accessJson =
        config.access_format === 'json'
          ? pino({ base: null, timestamp: pino.stdTimeFunctions.isoTime, messageKey: 'msg' }, this.accessSink)
          : null
    }
  }

  get accessEnabled(): boolean {
    return this.accessSink !== null
  }

  access(r: AccessRecord): void {
    if (!this.accessSink) return
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
    const line = `${r.remoteAddress || '-'} - - [${clfTime(new Date())}] ${quote(`${req.method} ${req.url} HTTP/${req.httpVersion}`)} ${status} ${bytes} ${quote(req.headers.referer)} ${quote(req.headers['user-agent'])}\n`
    this.accessSink.write(line)
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
