/*
 * The `php` action: a PHP front controller in front of php-fpm (or any PHP FastCGI server),
 * doing what nginx's `fastcgi_split_path_info ^(.+?\.php)(/.*)$` + `try_files $uri $uri/
 * /index.php?$query_string` and Caddy's `php_fastcgi` do, without their traps:
 *
 * - The path is split after its first segment that ends in `.php`; that file must exist,
 *   be a regular file and resolve (symlinks included) inside the root, or the answer is
 *   404. Nothing else is tried: `/uploads/x.jpg/a.php` runs a.php if it exists and nothing
 *   otherwise, never x.jpg, never the front controller.
 * - The split is a scan for a segment, not a regular expression: a newline in the path
 *   (`%0a`) stays in PATH_INFO instead of emptying it (php-fpm CVE-2019-11043).
 * - Files that exist are served by the static handler, except PHP sources (`.php` in any
 *   case, `.phtml`, `.phar`, `.phps`, `.php5`...), which are never sent as they are.
 * - Everything else goes to the front controller (`index`) with the original REQUEST_URI.
 *
 * docs/fastcgi.md is the user's view.
 */
import { realpathSync } from 'node:fs'
import { realpath, stat } from 'node:fs/promises'
import { join, sep } from 'node:path'
import type { Logger } from 'pino'
import { z } from 'zod'
import { existingDir, existingFile } from '../../core/schema/paths.js'
import { strictObject } from '../../core/schema/strict.js'
import { duration } from '../../core/schema/units.js'
import { ManagedFastCGI } from '../fastcgi/managed-pool.js'
import { upstreamTargetShape, withUpstreamAlias } from '../../core/upstream/schema.js'
import { poolIdentity } from '../../process/identity.js'
import { WorkerPool } from '../../process/pool.js'
import { assertRunnable } from '../../process/spawn.js'
import { poolSettings, poolSettingsSchema } from '../../process/settings.js'
import type { ActionDefinition, Handler, PoolSite, RequestContext, SchemaEnv } from '../../core/types.js'
import type { PoolHandle } from '../../process/pool-handle.js'
import { FastCGIGateway, fastcgiGatewayShape } from '../fastcgi/action.js'
import { routePrefix } from '../../core/types.js'
import type { ScriptLocation } from '../../cgi-vars/script.js'
import { actionListener, type ListenerOptions, type RequestListener } from '../../http/library-listener.js'
import { sendStatus } from '../../core/respond.js'
import { createStaticHandler, staticAction } from '../static/action.js'

export function phpSchema(env: SchemaEnv) {
  return withUpstreamAlias('fastcgi', phpShape(env), false)
}

function phpShape(env: SchemaEnv) {
  return strictObject({
    /** Document root: scripts and static files live under it. */
    root: existingDir(env),
    /**
     * The PHP FastCGI server (php-fpm's `listen`): `unix:/path` or `host:port`; or a list of
     * them, or the name of an `[upstreams.NAME]` group (`upstream` is the same key). Without
     * it, Gatehouse runs a pool of php-cgi workers itself (`workers`).
     */
    ...upstreamTargetShape(env, 'fastcgi'),
    /** The php-cgi executable for the managed pool (Debian: php-cgi). */
    php_cgi: z.string().min(1).default('/usr/bin/php-cgi'),
    /** A php.ini for the managed workers (`php-cgi -c FILE`); default: php-cgi's own. */
    php_ini: existingFile(env).optional(),
    /** php.ini settings for the managed workers (`php-cgi -d NAME=VALUE`, like php-fpm's php_admin_value). */
    ini: z
      .record(
        z.string().regex(/^[A-Za-z0-9_.[\]-]+$/, 'not an ini setting name'),
        z
          .union([z.string(), z.number(), z.boolean()])
          .transform((v) => (typeof v === 'boolean' ? (v ? '1' : '0') : String(v)))
          .refine((v) => !/[\0\n]/.test(v), 'NUL or newline in a value'),
      )
      .default({}),
    /** Extra environment of the managed workers (they inherit nothing else but PATH). */
    env: z
      .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'not a variable name'), z.string())
      .default({}),
    /** The managed pool: php-fpm's keys (pm, max_children, ..., request_terminate_timeout). */
    workers: poolSettingsSchema().prefault({}),
    /** The front controller, and the script run for a directory that has one. */
    index: z
      .string()
      .regex(/^[^/]+\.php$/, 'a file name ending in .php (relative to root)')
      .default('index.php'),
    /** Send requests that match no file to the front controller (false: 404). */
    front_controller: z.boolean().default(true),
    /** Serve existing files that are not PHP directly (false: they go to the front controller). */
    static: z.boolean().default(true),
    /** How long a path's file lookups (stat, realpath) are reused, like nginx's open_file_cache_valid (0: never). */
    cache_ttl: duration.prefault(1),
    ...fastcgiGatewayShape,
  })
}

export type PhpOptions = z.output<ReturnType<typeof phpSchema>>
export type PhpOptionsInput = z.input<ReturnType<typeof phpSchema>>

/**
 * PHP sources and their variants, and the leftovers editors and tools make of them
 * (`index.php~`, `index.php.bak`, `.orig`, `.save`, `.swp`, `#index.php#`): never served as
 * static files, since each holds the source of a script.
 */
const PHP_SOURCE = /\.(php\d?|phtml|phar|phps)(~|#|\.(bak|orig|save|old|swp|swo|tmp|dist|rej|\d+))*$/i
/** Hidden segments (.git, .env, .user.ini) are never served or run; .well-known is. */
const HIDDEN = /\/\.(?!well-known(?:\/|$))/

type Resolution =
  | { kind: 'script'; where: ScriptLocation }
  | { kind: 'static' }
  | { kind: 'status'; status: number; location?: string }

const NOT_FOUND: Resolution = { kind: 'status', status: 404 }
/** Paths whose resolution is remembered at most; past it the memory starts over. */
const LOOKUP_CACHE_ENTRIES = 10_000

/** The first segment ending in `.php`: [script path, path info], or null. */
export function splitPhpPath(path: string): [script: string, pathInfo: string] | null {
  let from = 0
  for (;;) {
    const at = path.indexOf('.php', from)
    if (at === -1) return null
    const end = at + 4
    if (end === path.length || path[end] === '/') {
      // `/.php` (a segment that is only the extension) is a hidden file, not a script.
      if (at > 0 && path[at - 1] !== '/') return [path.slice(0, end), path.slice(end)]
    }
    from = at + 1
  }
}

/**
 * The managed pool for a php action without `fastcgi`: php-cgi workers, each bound to its own
 * socket (`-b`), single-process (PHP_FCGI_CHILDREN=0: no forking of its own) and with no
 * request limit of its own (PHP_FCGI_MAX_REQUESTS=0: php-cgi would otherwise exit after 500
 * requests), so that recycling is the supervisor's decision (`max_requests`).
 */
export function phpWorkerPool(options: PhpOptions, log: Logger): WorkerPool {
  const args = ['-b', '{socket}']
  if (options.php_ini) args.push('-c', options.php_ini)
  for (const [name, value] of Object.entries(options.ini)) args.push('-d', `${name}=${value}`)
  const command = {
    command: options.php_cgi,
    args,
    env: {
      PATH: '/usr/local/bin:/usr/bin:/bin',
      ...options.env,
      PHP_FCGI_CHILDREN: '0',
      PHP_FCGI_MAX_REQUESTS: '0',
    },
    cwd: options.root,
    identity: poolIdentity(options.workers.name ?? 'php', options.workers.user, options.workers.group),
  }
  assertRunnable('php-cgi', command)
  return new WorkerPool(
    command,
    // php-cgi finishes its request and exits on SIGTERM (fcgi_signal_handler); SIGQUIT would dump core.
    poolSettings('php', options.workers, { capacity: 1, stop_signal: 'SIGTERM', kind: 'php' }),
    log,
  )
}

export class PhpHandler implements Handler {
  readonly gateway: FastCGIGateway
  /** The php-cgi pool when the action runs its own workers (no `fastcgi` address). */
  readonly workers: PoolHandle | undefined
  private readonly staticFiles: Handler
  private readonly realRoot: string
  /** ctx.path -> how it resolved, and when (redirects are not kept: they carry the query). */
  private readonly lookups = new Map<string, { at: number; resolution: Resolution }>()

  constructor(
    private readonly options: PhpOptions,
    log: Logger,
    pools?: PoolSite,
  ) {
    if (options.fastcgi === undefined) {
      const build = () => phpWorkerPool(options, log)
      this.workers = pools ? pools.provide<PoolHandle>(build) : build()
      this.gateway = new FastCGIGateway(new ManagedFastCGI(this.workers, options), options, log)
    } else
      this.gateway = new FastCGIGateway(options.fastcgi, options, log, {
        params: options.params,
        root: options.root,
      })
    this.realRoot = realpathSync(options.root)
    const staticOptions = staticAction.schema({ baseDir: options.root }).parse({ root: options.root })
    this.staticFiles = createStaticHandler(staticOptions)
  }

  async handle(ctx: RequestContext): Promise<void> {
    const resolution = await this.lookup(ctx)
    switch (resolution.kind) {
      case 'script':
        return this.gateway.serve(ctx, resolution.where)
      case 'static':
        return this.staticFiles.handle(ctx)
      case 'status': {
        const headers = resolution.location ? { location: resolution.location } : {}
        sendStatus(ctx.res, resolution.status, { headers, head: ctx.method === 'HEAD' })
      }
    }
  }

  /** The managed pool's first workers are up (nothing to wait for with an external server). */
  ready(): Promise<void> {
    return this.workers ? this.workers.start() : Promise.resolve()
  }

  /** SIGUSR2: a new generation of workers, the old one drained. */
  reloadWorkers(): Promise<void> {
    return this.workers ? this.workers.reload() : Promise.resolve()
  }

  close(): Promise<void> {
    return this.gateway.close()
  }

  private async lookup(ctx: RequestContext): Promise<Resolution> {
    const ttl = this.options.cache_ttl
    if (ttl === 0) return this.resolve(ctx)
    const now = Date.now()
    const hit = this.lookups.get(ctx.path)
    if (hit && now - hit.at < ttl) return hit.resolution
    const resolution = await this.resolve(ctx)
    if (resolution.kind !== 'status' || resolution.location === undefined) {
      if (this.lookups.size >= LOOKUP_CACHE_ENTRIES) this.lookups.clear()
      this.lookups.set(ctx.path, { at: now, resolution })
    }
    return resolution
  }

  private async resolve(ctx: RequestContext): Promise<Resolution> {
    const prefix = routePrefix(ctx)
    const rel = ctx.path.slice(prefix.length) || '/'
    if (HIDDEN.test(rel)) return NOT_FOUND
    const split = splitPhpPath(rel)
    if (split) return this.script(prefix, split[0], split[1])
    // `.PHP`, `.phtml`, `.phar`: not run (php-fpm's security.limit_extensions is `.php`) and not shown.
    if (rel.split('/').some((segment) => PHP_SOURCE.test(segment))) return NOT_FOUND

    const path = join(this.options.root, rel)
    const st = await statOrNull(path)
    if (st?.isFile() && this.options.static) return { kind: 'static' }
    if (st?.isDirectory()) {
      const index = await this.script(prefix, `${rel.replace(/\/$/, '')}/${this.options.index}`, '')
      if (index.kind === 'script') {
        if (!rel.endsWith('/')) {
          // As the static handler does: from the normalized path, so `//host` cannot come back.
          const canonical = ctx.path.split('/').map(encodeURIComponent).join('/')
          return { kind: 'status', status: 301, location: `${canonical}/${ctx.query ? `?${ctx.query}` : ''}` }
        }
        return index
      }
      if (this.options.static && (await this.hasStaticIndex(path))) return { kind: 'static' }
    }
    if (!this.options.front_controller) return NOT_FOUND
    return this.script(prefix, `/${this.options.index}`, '')
  }

  /** A script: a regular file ending in .php whose real path is inside the real root. */
  private async script(prefix: string, scriptPath: string, pathInfo: string): Promise<Resolution> {
    const filename = join(this.options.root, scriptPath)
    const st = await statOrNull(filename)
    if (!st?.isFile()) return NOT_FOUND
    let real: string
    try {
      real = await realpath(filename)
    } catch {
      return NOT_FOUND
    }
    if (!real.startsWith(this.realRoot + sep)) return NOT_FOUND
    return {
      kind: 'script',
      where: {
        scriptName: prefix + scriptPath,
        pathInfo,
        scriptFilename: filename,
        documentRoot: this.options.root,
      },
    }
  }

  private async hasStaticIndex(dir: string): Promise<boolean> {
    return (await statOrNull(join(dir, 'index.html')))?.isFile() === true
  }
}

async function statOrNull(path: string) {
  try {
    return await stat(path)
  } catch {
    return null
  }
}

export const phpAction: ActionDefinition<PhpOptions> = {
  name: 'php',
  summary: 'PHP front controller over FastCGI (php-fpm): static files direct, .php split, index.php fallback',
  schema: phpSchema,
  create: (options, services) => new PhpHandler(options, services.log, services.pools),
}

/**
 * The PHP front controller as a node:http request listener:
 *
 *   createServer(php({ root: './public', fastcgi: 'unix:/run/php/php-fpm.sock' })).listen(8080)
 */
export function php(options: PhpOptionsInput & ListenerOptions): RequestListener<PhpHandler> {
  return actionListener(phpSchema, options, (o, log) => new PhpHandler(o, log))
}
