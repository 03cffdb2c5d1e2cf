/** The `gatehouse` command (its entry, main.ts, loads it after startup-heap.ts). */
import type { FrontThreads } from '../fronts/manager.js'
import { availableParallelism } from 'node:os'
import { existsSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs'
import { isAbsolute, relative, resolve } from 'node:path'
import { Command, CommanderError, Option } from 'commander'
import type { Logger } from 'pino'
import { readConfigFile } from '../config/load.js'
import { type GatehouseConfig, loadConfigGateways, validateConfig } from '../config.js'
import { GatehouseError } from '../core/errors.js'
import { Gatehouse } from '../gatehouse.js'
import { listenUrl } from '../core/bind.js'
import { loadListenTls } from '../core/tls.js'
import { killAllWorkers } from '../process/pool.js'
import type { Json } from '../control/config-tree.js'
import type { ControlServer, ControlSettings } from '../control/server.js'
import { ConfigStore, fingerprint, type StartConfig, startConfig, stateFilePath } from '../control/state.js'
import { applyFlags, type ReloadFlags, reloadFlags, type ServeFlags } from './flags.js'
import { ctlCommand } from './ctl.js'
import type { SourceWatcher } from './reload.js'
import { dropPrivileges, prepare, type RunAs, resolveRunAs } from './privileges.js'
import { startupDone } from './startup-heap.js'
import { Notifier, socketActivation } from './systemd.js'

const EXIT_USAGE = 2
const DEFAULT_CONFIG = 'gatehouse.toml'

const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
  version: string
}

function fail(lines: readonly string[], code: number): never {
  for (const line of lines) process.stderr.write(`gatehouse: ${line}\n`)
  process.exit(code)
}

function configProblems(err: unknown): never {
  if (err instanceof GatehouseError && (err.code === 'GH_ERR_CONFIG' || err.code === 'GH_ERR_USAGE')) {
    const problems = err.problems.length > 0 ? err.problems : [err.message]
    fail(
      [
        `${problems.length} problem${problems.length === 1 ? '' : 's'} in the configuration:`,
        ...problems.map((p) => `  ${p}`),
      ],
      EXIT_USAGE,
    )
  }
  throw err
}

/**
 * Build the validated config from a config file (explicit or ./gatehouse.toml) and the flags,
 * loading the gateways it names (and only those: issue 13 item 4).
 */
async function resolveConfig(flags: ServeFlags & { config?: string }, requireSomething: boolean) {
  const cwd = process.cwd()
  const file = flags.config ?? (existsSync(resolve(cwd, DEFAULT_CONFIG)) ? DEFAULT_CONFIG : undefined)
  try {
    const { input, baseDir } = file ? readConfigFile(file) : { input: {}, baseDir: cwd }
    const merged = applyFlags(input, flags, cwd)
    if (requireSomething && !file && (merged.routes as unknown[] | undefined)?.length === undefined) {
      fail(
        [
          'nothing to serve: give --static [PREFIX=]DIR, --cgi [PREFIX=]DIR, --php DOCROOT [--fastcgi ADDR], --fastcgi-pass or --uwsgi-pass [PREFIX=]ADDR, --proxy [PREFIX=]URL, --wsgi MODULE:CALLABLE, --asgi MODULE:APP, or --config FILE, or put a gatehouse.toml in this directory.',
          'Try `gatehouse serve --help`.',
        ],
        EXIT_USAGE,
      )
    }
    await loadConfigGateways(merged, baseDir)
    return {
      config: validateConfig(merged, baseDir),
      file: file ? resolve(cwd, file) : undefined,
      input: merged as Record<string, Json>,
      baseDir,
    }
  } catch (err) {
    configProblems(err)
  }
}

/** The actions whose workers --reload rolls (PHP reads its scripts afresh on every request). */
const PYTHON_ACTIONS = ['wsgi', 'asgi'] as const

/** The directories of the config's Python apps (their `chdir`), in route order. */
function pythonAppDirs(config: GatehouseConfig): string[] {
  return config.routes.flatMap((route) =>
    PYTHON_ACTIONS.map((a) => (route as Record<string, { chdir?: string } | undefined>)[a]?.chdir).filter(
      (d): d is string => d !== undefined,
    ),
  )
}

/**
 * --reload: watch the Python apps' directories and --reload-dir, and roll the wsgi and asgi
 * workers (new ones ready before old ones retire) once a matching file changed. A new
 * generation that cannot start (the edited app no longer imports) is undone by the pool:
 * the old workers keep serving, and the next change tries again.
 */
async function startReloader(gatehouse: Gatehouse, options: ReloadFlags): Promise<SourceWatcher> {
  // Loaded with --reload only: chokidar is of no use to a server that does not watch.
  const { DEFAULT_RELOAD_INCLUDE, latestReloads, SourceWatcher } = await import('./reload.js')
  const log = gatehouse.logs.error
  const dirs = () => [...pythonAppDirs(gatehouse.config), ...options.dirs]
  if (pythonAppDirs(gatehouse.config).length === 0)
    log.warn('--reload: no wsgi or asgi route; PHP and the other routes need no reload')
  const include = options.include ?? DEFAULT_RELOAD_INCLUDE
  log.info({ dirs: dirs(), include }, `watching for changes in ${dirs().join(', ')} (${include.join(', ')})`)
  const shown = (file: string) => {
    const rel = relative(process.cwd(), file)
    return rel.startsWith('..') || isAbsolute(rel) ? file : rel
  }
  const reload = latestReloads(
    () => gatehouse.reloadWorkers(PYTHON_ACTIONS),
    (outcome) => {
      if (outcome.ok) log.info('workers reloaded')
      else
        log.error(
          { err: outcome.err instanceof Error ? outcome.err.message : String(outcome.err) },
          'reload failed: the old workers keep serving; the next change tries again',
        )
    },
  )
  const changed = (files: string[]) => {
    log.info({ files }, `detected changes in ${files.map((f) => `'${shown(f)}'`).join(', ')}. Reloading...`)
    reload()
  }
  const watcher = new SourceWatcher({
    dirs: dirs(),
    ...(options.include ? { include: options.include } : {}),
    onChange: changed,
    onError: (err) => log.warn({ err }, '--reload: watching failed'),
  })
  return watcher
}

/**
 * --pid FILE (gunicorn's --pid): the server's pid once it listens, written atomically
 * (a temp file renamed over it); removed when the process exits, if it still holds our pid.
 */
function writePidFile(file: string, log: Logger): void {
  const tmp = `${file}.${process.pid}.tmp`
  writeFileSync(tmp, `${process.pid}\n`)
  renameSync(tmp, file)
  log.info({ pid_file: file }, 'pid file written')
  process.on('exit', () => {
    try {
      if (readFileSync(file, 'utf8').trim() === String(process.pid)) unlinkSync(file)
    } catch {
      // Gone already, or its directory: nothing to remove.
    }
  })
}

/**
 * With a control API, the configuration to start with: the state file's (the changes made
 * through the API) or the config file and flags (docs/control-api.md, "The state file").
 */
async function chooseStart(resolved: Awaited<ReturnType<typeof resolveConfig>>): Promise<{
  config: GatehouseConfig
  input: Record<string, Json>
  baseDir: string
  stateFile: string | undefined
  start: StartConfig | undefined
}> {
  const { config, file, input, baseDir } = resolved
  if (!config.control) return { config, input, baseDir, stateFile: undefined, start: undefined }
  const stateFile = stateFilePath(config.control, file)
  const start = startConfig(input, baseDir, stateFile, file)
  if (start.from === 'config') return { config, input, baseDir, stateFile, start }
  try {
    // The state file may name gateways the config file did not.
    await loadConfigGateways(start.input, start.baseDir)
    return {
      config: validateConfig(start.input, start.baseDir),
      input: start.input,
      baseDir: start.baseDir,
      stateFile,
      start,
    }
  } catch (err) {
    const problems = err instanceof GatehouseError ? err.problems.join('; ') : String(err)
    return {
      config,
      input,
      baseDir,
      stateFile,
      start: { ...start, from: 'config', reason: `the state file's configuration is invalid (${problems})` },
    }
  }
}

async function serve(flags: ServeFlags & { config?: string }): Promise<void> {
  // systemd passed the listening sockets: they replace `listen` (and --listen), now and on reload.
  // Someone watches the terminal: show them the requests (uvicorn does); --access-log off stops it.
  flags.terminalAccessLog = process.stdout.isTTY === true
  const activated = socketActivation()
  if (activated) {
    flags.listen = activated
    flags.bind = undefined
  }
  const resolved = await resolveConfig(flags, true)
  const { file } = resolved
  const { config, input, baseDir, stateFile, start } = await chooseStart(resolved)
  let runAs: RunAs | null = null
  if (config.user !== undefined) {
    const who = resolveRunAs(config.user, config.group)
    if (typeof who === 'string') fail([who], 1)
    runAs = who
  } else if (config.group !== undefined) fail(['group needs user (the group alone is not switched)'], 1)
  prepare(runAs, config.umask)
  let reloadOptions: ReloadFlags | null = null
  let control: ControlSettings | undefined
  try {
    reloadOptions = reloadFlags(flags, process.cwd())
    // Loaded only when configured: it brings the status gateway (its pools JSON) with it.
    if (config.control) control = (await import('../control/server.js')).controlSettings(config.control)
  } catch (err) {
    configProblems(err)
  }
  let gatehouse: Gatehouse
  // front_processes > 1: the pools are made here and lent to the front threads.
  // `auto`: one per core. Loaded only when there is more than one front.
  const frontTotal = config.front_processes === 'auto' ? availableParallelism() : config.front_processes
  const frontModule = frontTotal > 1 ? await import('../fronts/manager.js') : undefined
  const frontPools = frontModule && new frontModule.FrontPools()
  let fronts: FrontThreads | undefined
  try {
    gatehouse = new Gatehouse(
      config,
      frontPools
        ? { poolSite: frontPools.site, swapped: (next) => fronts?.swapped(next) ?? Promise.resolve() }
        : {},
    )
  } catch (err) {
    if (
      err instanceof GatehouseError &&
      (err.code === 'GH_ERR_LOG_FILE' || err.code === 'GH_ERR_WORKER_START')
    )
      fail([err.message], 1)
    throw err
  }
  const log = gatehouse.logs.error
  if (activated)
    log.info(
      { sockets: activated },
      'socket activation: serving on the sockets systemd passed (listen is ignored)',
    )
  const notifier = new Notifier(log)
  if (start)
    log.info(
      { config: file ?? '(flags)', state: stateFile, reason: start.reason },
      start.from === 'state'
        ? `configuration from the state file ${stateFile}: ${start.reason}`
        : `configuration from ${file ? `the config file ${file}` : 'the flags'}: ${start.reason}`,
    )
  const store = new ConfigStore(gatehouse, input, baseDir, stateFile, fingerprint(resolved.input), log)
  let controlServer: ControlServer | null = null
  // Watching before the listening line: an edit made once it is logged is seen.
  const watcher = reloadOptions ? await startReloader(gatehouse, reloadOptions) : null
  await watcher?.ready
  // A change (SIGHUP, the control API) may move an app: --reload watches where the apps are now.
  if (watcher)
    store.onApplied = () =>
      watcher.setDirs([...pythonAppDirs(gatehouse.config), ...(reloadOptions?.dirs ?? [])])
  // Before listening: a stop signal right after the listening line is a graceful stop, not
  // the default action (death). One during start-up stops the start.
  let stopping = false
  /**
   * SIGTERM and SIGQUIT drain: no new connections, requests in flight get shutdown_grace
   * (what Kubernetes and gunicorn users expect of SIGTERM, php-fpm's SIGQUIT). SIGINT is
   * the fast stop of nginx and php-fpm: in-flight requests are cut and workers are stopped
   * at once (stop signal, then SIGTERM, then SIGKILL). A second signal exits at once.
   */
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting without waiting')
      killAllWorkers()
      gatehouse.logs.flush()
      process.exit(1)
    }
    stopping = true
    notifier.stopping()
    void watcher?.close()
    void controlServer?.close()
    const fast = signal === 'SIGINT'
    const grace = fast ? 0 : gatehouse.config.shutdown_grace
    log.info({ signal, grace_ms: grace }, fast ? 'shutting down now' : 'shutting down gracefully')
    // SIGINT: no shutdown_delay either.
    const delay = fast ? 0 : undefined
    Promise.all([fronts?.close(grace, delay), gatehouse.close(grace, delay)]).then(
      () => notifier.flushed().then(() => process.exit(0)),
      (err: unknown) => {
        log.error({ err }, 'error during shutdown')
        process.exit(1)
      },
    )
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  process.on('SIGQUIT', stop)
  try {
    await gatehouse.listen()
  } catch (err) {
    if (stopping) return // the stop signal's close() ends the process
    if (err instanceof GatehouseError && err.code === 'GH_ERR_LISTEN') {
      await gatehouse.close(0, 0)
      fail([`cannot listen on ${err.message.replace(/^cannot listen on the address: /, '')}`], 1)
    }
    if (err instanceof GatehouseError && (err.code === 'GH_ERR_WORKER_START' || err.code === 'GH_ERR_TLS')) {
      await gatehouse.close(0, 0)
      fail([err.message], 1)
    }
    throw err
  }

  if (frontPools) {
    fronts = new frontModule!.FrontThreads(gatehouse, frontPools, frontTotal, log)
    try {
      await fronts.start()
    } catch (err) {
      if (stopping) return
      await fronts.close(0, 0)
      await gatehouse.close(0, 0)
      fail([err instanceof Error ? err.message : String(err)], 1)
    }
  }

  if (control) {
    const { ControlServer } = await import('../control/server.js')
    controlServer = new ControlServer(gatehouse, store, control, log)
    try {
      await controlServer.listen()
    } catch (err) {
      if (stopping) return
      await gatehouse.close(0, 0)
      if (err instanceof GatehouseError && err.code === 'GH_ERR_LISTEN')
        fail([`control API: ${err.message}`], 1)
      throw err
    }
  }

  if (flags.pid !== undefined) writePidFile(resolve(flags.pid), log)
  dropPrivileges(runAs, log)
  notifier.ready(`serving on ${gatehouse.addresses().map(listenUrl).join(', ')}`)
  startupDone()

  // php-fpm's graceful reload: new workers for every managed pool, the old ones drained.
  process.on('SIGUSR2', () => {
    log.info('SIGUSR2: reloading workers')
    gatehouse.reloadWorkers().then(
      () => log.info('workers reloaded'),
      (err: unknown) => log.error({ err }, 'worker reload failed'),
    )
  })
  process.on('SIGUSR1', () => {
    gatehouse.reopenLogs()
    fronts?.reopenLogs()
  })
  const reload = async (configFile: string) => {
    notifier.reloading()
    try {
      const { input } = readConfigFile(configFile)
      // Through the store: the control API then shows it, and the state file keeps it.
      if (await store.replace(applyFlags(input, flags, process.cwd()) as Record<string, Json>)) {
        log.info({ config: configFile }, 'configuration reloaded')
      }
    } catch (err) {
      if (err instanceof GatehouseError && err.code === 'GH_ERR_CONFIG') {
        log.error(
          { config: configFile, problems: err.problems },
          'reload refused: invalid configuration; keeping the old one',
        )
      } else {
        log.error({ err, config: configFile }, 'reload failed; keeping the old configuration')
      }
    } finally {
      // Serving again (the new configuration, or the old one kept).
      notifier.ready(`serving on ${gatehouse.addresses().map(listenUrl).join(', ')}`)
    }
  }
  process.on('SIGHUP', () => {
    if (!file) {
      log.warn('SIGHUP: no config file to reload (started from flags only)')
      return
    }
    void reload(file)
  })
}

async function check(flags: { config?: string }): Promise<void> {
  if (!flags.config && !existsSync(DEFAULT_CONFIG))
    fail(['check needs --config FILE (or a ./gatehouse.toml)'], EXIT_USAGE)
  const { config, file } = await resolveConfig({ ...flags, config: flags.config ?? DEFAULT_CONFIG }, false)
  try {
    loadListenTls(config.listen)
  } catch (err) {
    if (err instanceof GatehouseError) fail([err.message], 1)
    throw err
  }
  process.stdout.write(
    `${file}: ok (${config.routes.length} route${config.routes.length === 1 ? '' : 's'}, listen ${config.listen.map((e) => (typeof e === 'string' ? e : `${e.address}${e.tls ? (e.tls.acme ? ' (tls, acme)' : ' (tls)') : ''}`)).join(', ')})\n`,
  )
}

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value]

export function buildProgram(): Command {
  const program = new Command()
  program
    .name('gatehouse')
    .description(
      'Polyglot application server and gateway: static files, routing, CGI, FastCGI, uwsgi, WSGI, ASGI',
    )
    .version(pkg.version, '-V, --version')
    .exitOverride()
    .showHelpAfterError('(see `gatehouse --help`)')

  program
    .command('serve')
    .description('start serving (flags are laid over --config FILE, or over ./gatehouse.toml when present)')
    .option('-c, --config <file>', 'TOML (or .json) config file')
    .option(
      '-l, --listen <address>',
      'host:port, [v6]:port, port (loopback), unix:/path or fd://N (an inherited socket); repeatable (default 127.0.0.1:8080)',
      collect,
    )
    .option('-b, --bind <address>', 'the same as --listen (gunicorn and uvicorn users type -b)', collect)
    .option(
      '--tls-cert <file>',
      'PEM certificate (chain): every --listen serves HTTPS with it (needs --tls-key)',
    )
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option(
      '--acme-domain <name>',
      "obtain and renew a certificate for NAME automatically (ACME, Let's Encrypt by default): every --listen serves HTTPS with it; without --listen, 0.0.0.0:443 and a redirect on 0.0.0.0:80; repeatable",
      collect,
    )
    .option('--acme-email <address>', "the ACME account contact (the CA's expiry notices)")
    .option('--acme-directory <url>', "the ACME directory URL (default Let's Encrypt production)")
    .option(
      '--acme-ca-root <file>',
      "PEM CA certificate trusted for the ACME directory's HTTPS (a test CA such as pebble)",
    )
    .option(
      '--no-http2',
      'TLS listeners speak HTTP/1.1 only (HTTP/2 over TLS is on by default): `[http2] enabled = false`',
    )
    .option(
      '--h2c',
      'plain listeners also take cleartext HTTP/2 with prior knowledge: `h2c = true` on each plain listen entry',
    )
    .option(
      '--max-body-size <size>',
      'largest request body of every route without its own max_body_bytes: bytes, or 10MB, 1GiB (default 1GiB)',
    )
    .option(
      '--encode',
      'compress responses on the fly (gzip, br) for clients that accept it: the top-level `encode` (default off)',
    )
    .option('--compress', 'the same as --encode')
    .option(
      '--static <[prefix=]dir>',
      'serve files from DIR under URL PREFIX (default /); repeatable',
      collect,
    )
    .option(
      '--uwsgi-pass <[prefix=]address>',
      'pass requests under URL PREFIX (default /) to a uwsgi server at unix:/path or host:port; repeatable',
      collect,
    )
    .option(
      '--proxy <[prefix=]url>',
      'pass requests under URL PREFIX (default /) to an HTTP server at http://host:port[/path] or unix:/path; repeatable',
      collect,
    )
    .option(
      '--uwsgi-listen <address>',
      'also accept uwsgi requests (nginx uwsgi_pass) on host:port or unix:/path; repeatable',
      collect,
    )
    .option(
      '--uwsgi-allow <cidr>',
      'addresses or CIDR blocks allowed to connect to --uwsgi-listen over TCP (default loopback); repeatable',
      collect,
    )
    .option(
      '--cgi <[prefix=]dir>',
      'run CGI scripts from DIR under URL PREFIX (default /); repeatable',
      collect,
    )
    .option(
      '--cgi-interpreter <.ext=command>',
      'run CGI scripts ending in .ext with command (e.g. .py=/usr/bin/python3); repeatable',
      collect,
    )
    .option(
      '--php <[prefix=]docroot>',
      'PHP front controller for DOCROOT under URL PREFIX (default /): a managed php-cgi pool, or --fastcgi; repeatable',
      collect,
    )
    .option('--fastcgi <address>', 'the PHP FastCGI server for --php (php-fpm): unix:/path or host:port')
    .option('--php-cgi <path>', 'php-cgi executable of the managed pool (default /usr/bin/php-cgi)')
    .addOption(
      new Option('--pm <mode>', 'managed pool: process manager (default dynamic)').choices([
        'static',
        'dynamic',
        'ondemand',
      ]),
    )
    .option('--max-children <n>', 'managed pool: workers at most (pm.max_children, default 5)')
    .option('--start-servers <n>', 'managed pool, dynamic: workers at start (pm.start_servers)')
    .option('--min-spare-servers <n>', 'managed pool, dynamic: idle workers at least (default 1)')
    .option('--max-spare-servers <n>', 'managed pool, dynamic: idle workers at most (default 3)')
    .option(
      '--process-idle-timeout <duration>',
      'managed pool, ondemand: stop a worker idle this long (default 10s)',
    )
    .option(
      '--max-requests <n>',
      'replace a worker after N requests: the --php managed pool, and --wsgi/--asgi workers (default 0: never)',
    )
    .option(
      '--max-requests-jitter <n>',
      "--wsgi/--asgi: add up to N at random to each worker's --max-requests",
    )
    .option(
      '--timeout <duration>',
      '--wsgi/--asgi: a request running longer gets 504 (the `timeout` key, default 60s)',
    )
    .option(
      '--graceful-timeout <duration>',
      'on stop, how long requests in flight may finish (shutdown_grace, default 10s)',
    )
    .option(
      '--keep-alive <duration>',
      'idle keep-alive connections are closed after this (limits.keepalive_timeout, default 5s)',
    )
    .option(
      '--request-terminate-timeout <duration>',
      'managed pool: kill a worker whose request runs this long (504; default 0: off)',
    )
    .option(
      '--request-slowlog-timeout <duration>',
      'managed pool: log requests running this long (default 0: off)',
    )
    .option(
      '--status-path <path>',
      "php-fpm's status page of the managed pool at PATH (?json, ?openmetrics, &full)",
    )
    .option('--ping-path <path>', "php-fpm's ping page (pong) at PATH")
    .option(
      '--backlog <n>',
      'connections the kernel queues before they are accepted (limits.backlog, default 511)',
    )
    .option(
      '--control <address>',
      'the control API (docs/control-api.md) on unix:/path (mode 0600) or 127.0.0.1:port; another TCP address needs $GATEHOUSE_CONTROL_TOKEN',
    )
    .option(
      '--control-state <file>',
      'where the control API keeps the applied configuration (default: next to --config, else $STATE_DIRECTORY or ~/.local/state/gatehouse)',
    )
    .option('--pid <file>', 'write the server process id to FILE once listening; removed on exit')
    .option(
      '--user <name>',
      'started as root: run as this user (name or uid) after binding; workers and CGI scripts run as it from the start',
    )
    .option('--group <name>', "with --user: this group (name or gid) instead of the user's primary group")
    .option('--umask <mask>', 'file mode creation mask of the server and its children, octal (e.g. 027)')
    .option('--health-path <path>', 'a liveness check at PATH: 200 while the server answers')
    .option(
      '--ready-path <path>',
      'a readiness check at PATH: 200, or 503 while a pool is failed or the server drains (--shutdown-delay)',
    )
    .option(
      '--front-processes <n>',
      'front threads sharing the listeners and the worker pools: a number, or auto (one per core) (front_processes, default 1)',
    )
    .option(
      '--shutdown-delay <duration>',
      'on SIGTERM, serve on this long with the readiness check answering 503 before the listeners close (shutdown_delay, default 0)',
    )
    .option(
      '--fastcgi-pass <[prefix=]address>',
      'pass URL PREFIX (default /) to a FastCGI server; repeatable',
      collect,
    )
    .option(
      '--fastcgi-listen <address>',
      'also accept FastCGI requests (nginx fastcgi_pass; responder role) on host:port or unix:/path; repeatable',
      collect,
    )
    .option(
      '--fastcgi-allow <cidr>',
      'addresses or CIDR blocks allowed to connect to --fastcgi-listen over TCP (default loopback); repeatable',
      collect,
    )
    .option(
      '--wsgi <module:callable>',
      'run a Python WSGI app (or MODULE:create_app()) at /, in Python workers',
    )
    .option(
      '--asgi <module:app>',
      'run a Python ASGI app (or MODULE:create_app()) at /, in Python workers: HTTP, WebSocket, lifespan',
    )
    .option(
      '--python <path>',
      'interpreter for --wsgi/--asgi (default $VIRTUAL_ENV/bin/python when a virtualenv is active, else /usr/bin/python3 if present, else python3)',
    )
    .option('--chdir <dir>', 'working directory of the --wsgi/--asgi workers (default: the current one)')
    .option('--workers <n>', 'worker processes for --wsgi/--asgi (default 2)')
    .option('--threads <n>', 'threads per --wsgi worker (default 1)')
    .option(
      '--root-path <path>',
      'prepended to SCRIPT_NAME (--wsgi) or root_path (--asgi) (the app is mounted there by a proxy)',
    )
    .option('--env <name=value>', 'environment variable for the --wsgi/--asgi workers; repeatable', collect)
    .option(
      '--env-file <file>',
      'KEY=value lines (a .env file) for the --wsgi/--asgi workers, over the inherited environment; --env wins',
    )
    .option(
      '--forwarded-allow-ips <cidr,...>',
      'proxies whose X-Forwarded-For/Proto --wsgi/--asgi believe (client address, scheme); repeatable',
      collect,
    )
    .option(
      '--reload',
      "development: watch the --wsgi/--asgi apps' directories (chdir) and roll their workers when a file changes",
    )
    .option('--reload-dir <dir>', 'with --reload: also watch DIR (recursively); repeatable', collect)
    .option(
      '--reload-include <glob>',
      'with --reload: files whose change reloads (default *.py; a glob with / matches the path under the watched directory); repeatable',
      collect,
    )
    .addOption(
      new Option('--log-level <level>', 'error log level').choices([
        'trace',
        'debug',
        'info',
        'warn',
        'error',
        'fatal',
        'silent',
      ]),
    )
    .addOption(
      new Option(
        '--log-format <format>',
        'error log format: auto (default: text on a terminal, JSON lines otherwise), text or json',
      ).choices(['auto', 'text', 'json']),
    )
    .option('--error-log <target>', 'error log: stderr (default), stdout or a file')
    .option(
      '--access-log <target>',
      'access log: off, stdout ("-"), stderr or a file (default: stdout when it is a terminal, else off)',
    )
    .option(
      '--access-log-format <format>',
      'access log format: combined (default), json, or a template of nginx variables ("$remote_addr $request $status $request_time")',
    )
    .option('--access-format <format>', 'the same as --access-log-format')
    .action(async (opts: ServeFlags & { config?: string }) => serve(opts))

  ctlCommand(program)

  program
    .command('check')
    .description('validate a config file and print every problem (exit 2 when there is one)')
    .option('-c, --config <file>', 'TOML (or .json) config file')
    .action(async (opts: { config?: string }) => check(opts))

  return program
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram()
  try {
    await program.parseAsync(argv)
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') process.exit(0)
      process.exit(EXIT_USAGE)
    }
    process.stderr.write(`gatehouse: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  }
}
