import { isAbsolute, resolve } from 'node:path'
import type { GatehouseConfigInput } from '../config.js'
import { GatehouseError } from '../core/errors.js'

/** CLI options as commander hands them over; every one maps onto a config key. */
export interface ServeFlags {
  listen?: string[]
  /** -b/--bind: gunicorn's and uvicorn's spelling of --listen. */
  bind?: string[]
  /** --tls-cert/--tls-key: every --listen (or the file's plain listens) serves HTTPS. */
  tlsCert?: string
  tlsKey?: string
  /** --acme-domain (repeatable): the listen entries get `tls = { acme = [...] }` (automatic certificates). */
  acmeDomain?: string[]
  /** --acme-email, --acme-directory, --acme-ca-root: the top-level `acme` table's keys. */
  acmeEmail?: string
  acmeDirectory?: string
  acmeCaRoot?: string
  /** --no-http2: false (commander's negation); `[http2] enabled = false`. */
  http2?: boolean
  /** --h2c: `h2c = true` on every plain listen entry. */
  h2c?: boolean
  maxBodySize?: string
  /** --encode (Caddy's word) or --compress: the top-level `encode`. */
  encode?: boolean
  compress?: boolean
  static?: string[]
  cgi?: string[]
  cgiInterpreter?: string[]
  php?: string[]
  fastcgi?: string
  fastcgiPass?: string[]
  logLevel?: string
  logFormat?: string
  accessLog?: string
  /**
   * Not a flag: set by `serve` when stdout is a terminal. The access log then goes to stdout
   * unless --access-log or the file says otherwise (uvicorn's default; development).
   */
  terminalAccessLog?: boolean
  accessLogFormat?: string
  /** --access-format: the earlier name of --access-log-format. */
  accessFormat?: string
  errorLog?: string
  uwsgiPass?: string[]
  proxy?: string[]
  uwsgiListen?: string[]
  uwsgiAllow?: string[]
  fastcgiListen?: string[]
  fastcgiAllow?: string[]
  phpCgi?: string
  pm?: string
  maxChildren?: string
  startServers?: string
  minSpareServers?: string
  maxSpareServers?: string
  processIdleTimeout?: string
  maxRequests?: string
  requestTerminateTimeout?: string
  requestSlowlogTimeout?: string
  statusPath?: string
  healthPath?: string
  readyPath?: string
  shutdownDelay?: string
  frontProcesses?: string
  pingPath?: string
  wsgi?: string
  asgi?: string
  python?: string
  chdir?: string
  workers?: string
  threads?: string
  rootPath?: string
  env?: string[]
  envFile?: string
  forwardedAllowIps?: string[]
  /** gunicorn's and uvicorn's flags, by their names there. */
  timeout?: string
  gracefulTimeout?: string
  keepAlive?: string
  backlog?: string
  pid?: string
  user?: string
  group?: string
  umask?: string
  maxRequestsJitter?: string
  /** --control ADDR: the control API's socket (the `control` key); --control-state FILE its state file. */
  control?: string
  controlState?: string
  /** --reload (uvicorn's): watch the Python apps' source, roll their workers on a change. */
  reload?: boolean
  reloadDir?: string[]
  reloadInclude?: string[]
}

/**
 * A flag's value as the config file would hold it: a bare number is a count, bytes or
 * seconds; anything else ("10MB", "500ms") is left for the schema to read.
 */
const num = (v: string): number | string => (/^\d+$/.test(v) ? Number(v) : v)

/** The managed pool's flags (named as php-fpm's keys) -> the php action's `workers` table. */
function workerFlags(flags: ServeFlags): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  if (flags.pm !== undefined) out.pm = flags.pm
  if (flags.maxChildren !== undefined) out.max_children = num(flags.maxChildren)
  if (flags.startServers !== undefined) out.start_servers = num(flags.startServers)
  if (flags.minSpareServers !== undefined) out.min_spare_servers = num(flags.minSpareServers)
  if (flags.maxSpareServers !== undefined) out.max_spare_servers = num(flags.maxSpareServers)
  if (flags.maxRequests !== undefined) out.max_requests = num(flags.maxRequests)
  // Durations: a number is seconds, as in the config file ("500ms", "10s" work too).
  if (flags.processIdleTimeout !== undefined) out.process_idle_timeout = num(flags.processIdleTimeout)
  if (flags.requestTerminateTimeout !== undefined)
    out.request_terminate_timeout = num(flags.requestTerminateTimeout)
  if (flags.requestSlowlogTimeout !== undefined)
    out.request_slowlog_timeout = num(flags.requestSlowlogTimeout)
  return out
}

type Input = Record<string, unknown> & GatehouseConfigInput

/**
 * --tls-cert and --tls-key: the listen entries (the flags' or the file's; the default if
 * neither) become HTTPS; an entry of the file with its own `tls` keeps it.
 */
function withTls(listen: Input['listen'], flags: ServeFlags, cwd: string): NonNullable<Input['listen']> {
  const acme = flags.acmeDomain ?? []
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) {
    const problem = '--tls-cert and --tls-key go together'
    throw new GatehouseError('GH_ERR_USAGE', problem, { problems: [problem] })
  }
  const tls = {
    ...(flags.tlsCert !== undefined && flags.tlsKey !== undefined
      ? { cert: resolve(cwd, flags.tlsCert), key: resolve(cwd, flags.tlsKey) }
      : {}),
    ...(acme.length > 0 ? { acme } : {}),
  }
  // Only --acme-domain, nowhere to listen given: as Caddy, HTTPS on 443 and port 80 for
  // HTTP-01 and the redirect (the CA connects to those two ports).
  if (listen === undefined && acme.length > 0 && flags.tlsCert === undefined)
    return [
      { address: '0.0.0.0:443', tls },
      { address: '0.0.0.0:80', redirect_http: true },
    ]
  const entries = listen === undefined ? ['127.0.0.1:8080'] : Array.isArray(listen) ? listen : [listen]
  return entries.map((e) => (typeof e === 'string' ? { address: e, tls } : e))
}

/** --acme-email, --acme-directory, --acme-ca-root over the file's `acme` table. */
function acmeFlags(base: unknown, flags: ServeFlags, cwd: string): Record<string, unknown> | undefined {
  if (flags.acmeEmail === undefined && flags.acmeDirectory === undefined && flags.acmeCaRoot === undefined)
    return undefined
  return {
    ...(base as Record<string, unknown> | undefined),
    ...(flags.acmeEmail !== undefined ? { email: flags.acmeEmail } : {}),
    ...(flags.acmeDirectory !== undefined ? { directory: flags.acmeDirectory } : {}),
    ...(flags.acmeCaRoot !== undefined ? { ca_root: resolve(cwd, flags.acmeCaRoot) } : {}),
  }
}

/** `[PREFIX=]DIR` -> [prefix, absolute dir]. */
export function splitMount(value: string, cwd: string): [string, string] {
  const eq = value.indexOf('=')
  const [prefix, dir] =
    eq > 0 && value.startsWith('/') ? [value.slice(0, eq), value.slice(eq + 1)] : ['/', value]
  return [prefix, isAbsolute(dir) ? dir : resolve(cwd, dir)]
}

/**
 * Lay CLI flags over a config file's contents (or an empty config): scalars given on the
 * command line win, `--listen` replaces the file's list, and routes from flags are added
 * after the file's routes. Paths on the command line resolve against the working directory.
 */
export function applyFlags(base: Record<string, unknown>, flags: ServeFlags, cwd: string): Input {
  const out: Input = { ...base }
  const listen = [...(flags.listen ?? []), ...(flags.bind ?? [])]
  if (listen.length > 0) out.listen = listen
  if (flags.tlsCert !== undefined || flags.tlsKey !== undefined || (flags.acmeDomain ?? []).length > 0)
    out.listen = withTls(out.listen, flags, cwd)
  const acme = acmeFlags(base.acme, flags, cwd)
  if (acme !== undefined) out.acme = acme as Input['acme']
  if (flags.http2 === false)
    out.http2 = { ...((base.http2 as Record<string, unknown> | undefined) ?? {}), enabled: false }
  if (flags.h2c) {
    const entries = out.listen === undefined ? ['127.0.0.1:8080'] : [out.listen].flat()
    out.listen = entries.map((e) => (typeof e === 'string' ? { address: e, h2c: true } : e))
  }
  const limits = { ...((base.limits as Record<string, unknown> | undefined) ?? {}) }
  if (flags.maxBodySize !== undefined) limits.max_body_bytes = num(flags.maxBodySize)
  if (flags.keepAlive !== undefined) limits.keepalive_timeout = num(flags.keepAlive)
  if (flags.backlog !== undefined) limits.backlog = num(flags.backlog)
  if (Object.keys(limits).length > 0) out.limits = limits
  if ((flags.encode || flags.compress) && (base.encode === undefined || base.encode === false))
    out.encode = true
  if (flags.gracefulTimeout !== undefined) out.shutdown_grace = num(flags.gracefulTimeout)
  if (flags.shutdownDelay !== undefined) out.shutdown_delay = num(flags.shutdownDelay)
  if (flags.frontProcesses !== undefined)
    out.front_processes = (flags.frontProcesses === 'auto' ? 'auto' : num(flags.frontProcesses)) as number
  if (flags.user !== undefined) out.user = flags.user
  if (flags.group !== undefined) out.group = flags.group
  if (flags.umask !== undefined) out.umask = flags.umask
  const log = { ...((base.log as Record<string, unknown> | undefined) ?? {}) }
  if (flags.logLevel !== undefined) log.level = flags.logLevel
  if (flags.logFormat !== undefined) log.format = flags.logFormat
  if (flags.accessLog !== undefined) log.access_log = fileOrStream(flags.accessLog, cwd)
  else if (flags.terminalAccessLog && log.access_log === undefined) log.access_log = 'stdout'
  const accessFormat = flags.accessLogFormat ?? flags.accessFormat
  if (accessFormat !== undefined) log.access_format = accessFormat
  if (flags.errorLog !== undefined) log.error_log = fileOrStream(flags.errorLog, cwd)
  if (Object.keys(log).length > 0) out.log = log
  const control = controlFlags(base.control, flags, cwd)
  if (control !== undefined) out.control = control as Input['control']
  // Health checks first: no route of the file or of other flags takes their paths.
  const routes = [
    ...(flags.healthPath !== undefined ? [{ exact: flags.healthPath, status: { show: 'live' } }] : []),
    ...(flags.readyPath !== undefined ? [{ exact: flags.readyPath, status: { show: 'ready' } }] : []),
    ...((base.routes as unknown[] | undefined) ?? []),
  ]
  for (const value of flags.static ?? []) {
    const [path, root] = splitMount(value, cwd)
    routes.push({ path, static: { root } })
  }
  for (const value of flags.uwsgiPass ?? []) {
    const [path, pass] = splitPrefixed(value, cwd)
    routes.push({ path, uwsgi: { pass } })
  }
  for (const value of flags.proxy ?? []) {
    const [path, upstream] = splitPrefixed(value, cwd)
    routes.push({ path, proxy: { upstream } })
  }
  if (flags.uwsgiListen && flags.uwsgiListen.length > 0)
    out.uwsgi_listen = flags.uwsgiListen.map((a) => unixPathFrom(a, cwd))
  if (flags.uwsgiAllow && flags.uwsgiAllow.length > 0) out.uwsgi_allow = flags.uwsgiAllow
  if (flags.fastcgiListen && flags.fastcgiListen.length > 0)
    out.fastcgi_listen = flags.fastcgiListen.map((a) => unixPathFrom(a, cwd))
  if (flags.fastcgiAllow && flags.fastcgiAllow.length > 0) out.fastcgi_allow = flags.fastcgiAllow
  const interpreters = cgiInterpreters(flags.cgiInterpreter ?? [])
  if (interpreters && (flags.cgi ?? []).length === 0) {
    const problem = '--cgi-interpreter applies to the routes that --cgi adds, and no --cgi was given'
    throw new GatehouseError('GH_ERR_USAGE', problem, { problems: [problem] })
  }
  for (const value of flags.cgi ?? []) {
    const [path, root] = splitMount(value, cwd)
    routes.push({ path, cgi: { root, ...(interpreters ? { interpreters } : {}) } })
  }
  routes.push(...fastcgiRoutes(flags, cwd))
  const wsgi = wsgiRoute(flags, cwd)
  if (wsgi) routes.push(wsgi)
  if (routes.length > 0) out.routes = routes as Input['routes']
  return out
}

/**
 * `--control ADDR` replaces the file's `control` address (its token, mode and state are
 * kept); `--control-state FILE` sets its state file.
 */
function controlFlags(base: unknown, flags: ServeFlags, cwd: string): unknown {
  if (flags.control === undefined && flags.controlState === undefined) return base
  if (base === undefined && flags.control === undefined) {
    const problem = '--control-state goes with --control ADDR (or a `control` key in the config file)'
    throw new GatehouseError('GH_ERR_USAGE', problem, { problems: [problem] })
  }
  const table: Record<string, unknown> =
    typeof base === 'string' ? { listen: base } : { ...(base as Record<string, unknown> | undefined) }
  if (flags.control !== undefined) table.listen = unixPathFrom(flags.control, cwd)
  if (flags.controlState !== undefined)
    table.state = isAbsolute(flags.controlState) ? flags.controlState : resolve(cwd, flags.controlState)
  return Object.keys(table).length === 1 ? table.listen : table
}

/** `unix:./x.sock` on the command line resolves against the working directory. */
function unixPathFrom(address: string, cwd: string): string {
  if (!address.startsWith('unix:') || isAbsolute(address.slice(5))) return address
  return `unix:${resolve(cwd, address.slice(5))}`
}

/** `[PREFIX=]ADDR` (`--uwsgi-pass`, `--fastcgi-pass`, `--proxy`) -> [prefix, address]; PREFIX defaults to `/`. */
export function splitPrefixed(value: string, cwd: string): [string, string] {
  const eq = value.indexOf('=')
  const [prefix, address] =
    eq > 0 && value.startsWith('/') ? [value.slice(0, eq), value.slice(eq + 1)] : ['/', value]
  return [prefix, unixPathFrom(address, cwd)]
}

/**
 * `--cgi-interpreter .py=/usr/bin/python3` (repeatable) -> { ".py": ["/usr/bin/python3"] }.
 * The command is split on whitespace into argv (`.pl=perl -T`); no shell is involved.
 */
export function cgiInterpreters(values: readonly string[]): Record<string, string[]> | undefined {
  if (values.length === 0) return undefined
  const out: Record<string, string[]> = {}
  for (const value of values) {
    const eq = value.indexOf('=')
    // Malformed values are passed on as they are, for the schema to report with a path.
    const ext = eq === -1 ? value : value.slice(0, eq)
    const command =
      eq === -1
        ? []
        : value
            .slice(eq + 1)
            .trim()
            .split(/\s+/)
            .filter(Boolean)
    out[ext] = command
  }
  return out
}

/**
 * `--php [PREFIX=]DOCROOT --fastcgi ADDR` -> php routes; `--fastcgi-pass [PREFIX=]ADDR` ->
 * fastcgi routes. ADDR is unix:/path (a relative one resolves against the working
 * directory) or host:port.
 */
export function fastcgiRoutes(flags: ServeFlags, cwd: string): Record<string, unknown>[] {
  const usage = (problem: string) => new GatehouseError('GH_ERR_USAGE', problem, { problems: [problem] })
  const php = flags.php ?? []
  if (php.length === 0 && flags.fastcgi !== undefined)
    throw usage('--fastcgi names the server for --php; use --fastcgi-pass PREFIX=ADDR to pass a prefix')
  const workers = workerFlags(flags)
  // --max-requests with --wsgi/--asgi alone is the Python pool's (wsgiRoute), not php's.
  if (php.length === 0 && (flags.wsgi !== undefined || flags.asgi !== undefined)) delete workers.max_requests
  const managed = flags.fastcgi === undefined
  if (!managed && (Object.keys(workers).length > 0 || flags.phpCgi !== undefined))
    throw usage(
      'the pool flags (--pm, --max-children, --php-cgi, ...) are for a managed php-cgi pool: drop --fastcgi',
    )
  if (php.length === 0 && (Object.keys(workers).length > 0 || flags.phpCgi !== undefined))
    throw usage('the pool flags (--pm, --max-children, --php-cgi, ...) apply to --php')
  const routes: Record<string, unknown>[] = []
  // Status and ping pages come first, so that a --php route at / does not take their paths.
  if (flags.statusPath !== undefined) routes.push({ exact: flags.statusPath, status: { show: 'pool' } })
  if (flags.pingPath !== undefined) routes.push({ exact: flags.pingPath, status: { show: 'ping' } })
  for (const value of php) {
    const [path, root] = splitMount(value, cwd)
    if (managed)
      routes.push({
        path,
        php: {
          root,
          ...(flags.phpCgi === undefined ? {} : { php_cgi: flags.phpCgi }),
          ...(Object.keys(workers).length > 0 ? { workers } : {}),
        },
      })
    else routes.push({ path, php: { root, fastcgi: unixPathFrom(flags.fastcgi!, cwd) } })
  }
  for (const value of flags.fastcgiPass ?? []) {
    const [path, pass] = splitPrefixed(value, cwd)
    routes.push({ path, fastcgi: { pass } })
  }
  return routes
}

function fileOrStream(value: string, cwd: string): string {
  if (value === '-') return 'stdout'
  if (['stdout', 'stderr', 'off'].includes(value)) return value
  return isAbsolute(value) ? value : resolve(cwd, value)
}

/**
 * `--wsgi MODULE:CALLABLE` with `--python --chdir --workers --threads --root-path --env K=V
 * --forwarded-allow-ips` -> a wsgi route at `/` (after the other routes, so `--static
 * /static=DIR` can sit in front of the app).
 */
export function wsgiRoute(flags: ServeFlags, cwd: string): Record<string, unknown> | null {
  const usage = (problem: string) => new GatehouseError('GH_ERR_USAGE', problem, { problems: [problem] })
  const given = [
    flags.python,
    flags.chdir,
    flags.workers,
    flags.threads,
    flags.rootPath,
    flags.timeout,
    flags.maxRequestsJitter,
  ].some((v) => v !== undefined)
  // --asgi MODULE:APP takes the same flags but --threads (its workers run an asyncio loop).
  if (flags.wsgi !== undefined && flags.asgi !== undefined) throw usage('give --wsgi or --asgi, not both')
  const kind = flags.asgi !== undefined ? 'asgi' : 'wsgi'
  if (kind === 'asgi' && flags.threads !== undefined)
    throw usage('--threads is for --wsgi; an --asgi worker runs its requests on one asyncio loop')
  if (flags.wsgi === undefined && flags.asgi === undefined) {
    if (
      given ||
      flags.envFile !== undefined ||
      (flags.env ?? []).length > 0 ||
      (flags.forwardedAllowIps ?? []).length > 0
    )
      throw usage(
        '--python, --chdir, --workers, --threads, --root-path, --timeout, --max-requests-jitter, --env, --env-file and --forwarded-allow-ips go with --wsgi MODULE:CALLABLE (or --asgi MODULE:APP)',
      )
    return null
  }
  const int = (name: string, value: string | undefined) => {
    if (value === undefined) return undefined
    if (!/^\d+$/.test(value)) throw usage(`${name} takes a whole number, got ${JSON.stringify(value)}`)
    return Number(value)
  }
  const env: Record<string, string> = {}
  for (const pair of flags.env ?? []) {
    const eq = pair.indexOf('=')
    if (eq <= 0) throw usage(`--env takes NAME=VALUE, got ${JSON.stringify(pair)}`)
    env[pair.slice(0, eq)] = pair.slice(eq + 1)
  }
  const wsgi: Record<string, unknown> = {
    app: flags.wsgi ?? flags.asgi,
    chdir:
      flags.chdir === undefined ? cwd : isAbsolute(flags.chdir) ? flags.chdir : resolve(cwd, flags.chdir),
    env,
  }
  if (flags.python !== undefined) wsgi.python = flags.python
  if (flags.envFile !== undefined)
    wsgi.env_file = isAbsolute(flags.envFile) ? flags.envFile : resolve(cwd, flags.envFile)
  const workers = int('--workers', flags.workers)
  if (workers !== undefined) wsgi.workers = workers
  const threads = int('--threads', flags.threads)
  if (threads !== undefined) wsgi.threads = threads
  if (flags.rootPath !== undefined) wsgi.root_path = flags.rootPath
  if (flags.timeout !== undefined) wsgi.timeout = num(flags.timeout)
  const maxRequests = int('--max-requests', flags.maxRequests)
  if (maxRequests !== undefined) wsgi.max_requests = maxRequests
  const jitter = int('--max-requests-jitter', flags.maxRequestsJitter)
  if (jitter !== undefined) wsgi.max_requests_jitter = jitter
  const allow = (flags.forwardedAllowIps ?? [])
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter(Boolean)
  if (allow.length > 0) wsgi.forwarded_allow_ips = allow
  return { path: '/', [kind]: wsgi }
}

/** What `--reload`, `--reload-dir` and `--reload-include` ask for; null when --reload is not given. */
export interface ReloadFlags {
  /** Absolute directories to watch besides the apps' chdir. */
  dirs: string[]
  /** Globs of the files whose change reloads (default: *.py). */
  include: string[] | undefined
}

export function reloadFlags(flags: ServeFlags, cwd: string): ReloadFlags | null {
  if (!flags.reload) {
    if ((flags.reloadDir ?? []).length > 0 || (flags.reloadInclude ?? []).length > 0) {
      const problem = '--reload-dir and --reload-include go with --reload'
      throw new GatehouseError('GH_ERR_USAGE', problem, { problems: [problem] })
    }
    return null
  }
  const include = flags.reloadInclude ?? []
  return {
    dirs: (flags.reloadDir ?? []).map((d) => (isAbsolute(d) ? d : resolve(cwd, d))),
    include: include.length > 0 ? include : undefined,
  }
}
